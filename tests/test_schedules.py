"""Step-size schedules: values, the pluggable interface, adaptation frozen after warmup."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ill_conditioned

import langevin_images as li
from langevin_images import schedules as S


def _trace(schedule, n=20, eps0=0.5, warmup=0, chains=2):
    st = schedule.init(
        torch.full((chains,), eps0, dtype=torch.float64),
        warmup=warmup,
        steps=n - warmup,
        target_accept=0.574,
    )
    out = []
    for t in range(n):
        out.append(schedule.step_size(st).clone())
        st = schedule.update(st, t, torch.full((chains,), 0.5, dtype=torch.float64))
    return torch.stack(out, 1)


def test_constant():
    assert torch.all(_trace(S.Constant()) == 0.5)


def test_polynomial_decay_formula():
    tr = _trace(S.PolynomialDecay(gamma=0.6, b=2.0))
    a = 0.5 * 2.0**0.6
    want = torch.tensor([a * (2.0 + t) ** -0.6 for t in range(20)], dtype=torch.float64)
    torch.testing.assert_close(tr[0], want)
    tr = _trace(S.PolynomialDecay(gamma=1.0, b=1.0, a=3.0))
    assert math.isclose(float(tr[0, 4]), 3.0 / 5.0)


def test_exponential_and_cosine():
    tr = _trace(S.ExponentialDecay(rate=0.9, min_step_size=0.2))
    assert math.isclose(float(tr[0, 3]), 0.5 * 0.9**3)
    assert float(tr[0, -1]) == 0.2
    tr = _trace(S.CosineDecay(final_fraction=0.1), n=21)
    assert math.isclose(float(tr[0, 0]), 0.5)
    assert math.isclose(float(tr[0, 10]), 0.5 * (0.1 + 0.9 * 0.5))
    assert math.isclose(float(tr[0, 20]), 0.05)


def test_dual_averaging_frozen_after_warmup_and_shared_option():
    target = ill_conditioned(20, 10.0)
    x0 = target.draw(16, torch.Generator().manual_seed(0), torch.float32)
    run = li.sample(
        target,
        x0,
        steps=100,
        warmup=200,
        step_size=1.0,
        schedule=S.DualAveraging(per_chain=False),
        seed=1,
        progress=False,
    )
    eps = run.stats["step_size"]
    post = eps[:, 200:]
    assert torch.all(post == post[:, :1]), "step size must be frozen after warmup"
    assert torch.all(post == post[:1]), "per_chain=False shares one step size"
    assert not torch.all(eps[:, :200] == eps[:, :1]), "it adapts during warmup"
    per_chain = li.sample(
        target,
        x0,
        steps=10,
        warmup=200,
        step_size=1.0,
        schedule="dual_averaging",
        seed=1,
        progress=False,
    )
    assert len(set(per_chain.stats["step_size"][:, -1].tolist())) > 1


def test_dual_averaging_target_override():
    target = ill_conditioned(20, 10.0)
    x0 = target.draw(32, torch.Generator().manual_seed(0), torch.float32)
    run = li.sample(
        target,
        x0,
        steps=1000,
        warmup=500,
        step_size=0.1,
        schedule=S.DualAveraging(target_accept=0.8),
        seed=2,
        progress=False,
    )
    assert abs(float(run.acceptance_rate.mean()) - 0.8) < 0.05


class HalvingEveryTen:
    """A user schedule: any object with init / step_size / update."""

    def init(self, step_size, *, warmup, steps, target_accept):
        return (step_size, 0)

    def step_size(self, state):
        eps0, t = state
        return eps0 * 0.5 ** (t // 10)

    def update(self, state, t, acceptance_prob):
        return (state[0], t + 1)


def test_user_schedule_plugs_in():
    run = li.sample(
        lambda x: 0.5 * x.square().sum(1),
        torch.zeros((2, 3)),
        steps=30,
        step_size=0.4,
        schedule=HalvingEveryTen(),
        progress=False,
    )
    eps = run.stats["step_size"][0]
    assert float(eps[0]) == 0.4 and float(eps[10]) == 0.2 and float(eps[29]) == 0.1


def test_bad_schedules():
    with pytest.raises(ValueError, match="unknown schedule"):
        S.as_schedule("warp")
    with pytest.raises(TypeError, match="lacks"):
        S.as_schedule(object())
    with pytest.raises(ValueError):
        S.PolynomialDecay(b=0)


def test_stuck_fallback_shrinks_only_the_steps_of_chains_that_stopped_accepting():
    from langevin_images.schedules import DualAveraging, StuckFallback

    eps0 = torch.full((3,), 0.5, dtype=torch.float64)
    plain, fallback = DualAveraging(), StuckFallback(window=10, threshold=0.05, factor=0.1)
    a = plain.init(eps0, warmup=90, steps=10, target_accept=0.574)  # = the probation's start
    b = fallback.init(eps0, warmup=100, steps=10, target_accept=0.574)
    for t in range(110):
        acc = torch.tensor([0.6, 0.6 if t < 92 else 0.0, 0.3], dtype=torch.float64)
        a, b = plain.update(a, t, acc), fallback.update(b, t, acc)
    # chain 1 accepted in 2 of the 10 probation steps: 0.12 > 0.05, kept; then a stuck one
    ratio = fallback.step_size(b) / plain.step_size(a)
    assert torch.allclose(ratio, torch.ones(3, dtype=torch.float64))
    b = fallback.init(eps0, warmup=100, steps=10, target_accept=0.574)
    for t in range(110):
        acc = torch.tensor([0.6, 0.6 if t < 90 else 0.0, 0.3], dtype=torch.float64)
        b = fallback.update(b, t, acc)
    ratio = fallback.step_size(b) / plain.step_size(a)
    assert torch.allclose(ratio, torch.tensor([1.0, 0.1, 1.0], dtype=torch.float64))
    assert S.as_schedule("stuck_fallback").__class__ is StuckFallback
