"""Statistical tests of the Langevin samplers, with Monte-Carlo-error tolerances.

Every assertion compares an estimate with the known truth in units of its Monte Carlo standard
error (from the draws' effective sample size), at a 99% family-wise level: a correct sampler
fails with probability about 1%, whatever the seed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import (
    Gaussian,
    assert_mean_within_mcse,
    assert_moments,
    ill_conditioned,
    stationary_image_gaussian,
    z_crit,
)
from scipy import stats

import langevin_images as li
from langevin_images.samplers import Dense, Diagonal, Fourier, LowRankPlusDiagonal
from langevin_images.samplers.kernel import LangevinState, mh_log_ratio
from langevin_images.samplers.preconditioners import Preconditioner

torch.set_default_dtype(torch.float32)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mala_isotropic_gaussian_moments():
    target = Gaussian(torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]), torch.eye(5) * 2.0)
    x0 = target.draw(64, _gen(1), torch.float32)
    run = li.sample(
        target,
        x0,
        steps=1500,
        warmup=300,
        step_size=0.5,
        schedule="dual_averaging",
        seed=2,
        progress=False,
    )
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())
    assert abs(float(run.acceptance_rate.mean()) - 0.574) < 0.05


def _precond_for(name: str, target: Gaussian):
    if name == "identity":
        return None
    if name == "diagonal":
        return Diagonal(target.var.reshape(target.shape))
    if name == "dense":
        return Dense(target.cov)
    if name == "lowrank":
        eig, vec = torch.linalg.eigh(target.cov)
        k = 10  # the 10 largest directions, the rest as their mean
        rest = eig[:-k].mean()
        return LowRankPlusDiagonal(
            vec[:, -k:] * (eig[-k:] - rest).sqrt(), torch.full((eig.numel(),), float(rest))
        )
    raise AssertionError(name)


@pytest.mark.parametrize("precond", ["identity", "dense", "lowrank", "diagonal"])
def test_mala_ill_conditioned_gaussian(precond):
    """100-d Gaussian with condition number 100: means and variances within MCSE, dual
    averaging reaches the target acceptance of 0.574 +- 0.05."""
    target = ill_conditioned(100, 100.0, seed=3)
    x0 = target.draw(64, _gen(4), torch.float32)
    steps = 3000 if precond == "identity" else 1000
    run = li.sample(
        target,
        x0,
        steps=steps,
        warmup=500,
        step_size=0.01,
        schedule="dual_averaging",
        preconditioner=_precond_for(precond, target),
        seed=5,
        progress=False,
    )
    assert abs(float(run.acceptance_rate.mean()) - 0.574) < 0.05
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())
    assert run.grad_evals == steps + 500 + 1


def test_dense_preconditioner_whitens_the_target():
    """With M equal to the target covariance, the step size that reaches 0.574 is O(1)
    instead of O(smallest variance): the preconditioner is what makes the target isotropic."""
    target = ill_conditioned(100, 100.0, seed=3)
    x0 = target.draw(32, _gen(4), torch.float32)
    eps = {}
    for name in ("identity", "dense"):
        run = li.sample(
            target,
            x0,
            steps=10,
            warmup=400,
            step_size=0.01,
            schedule="dual_averaging",
            preconditioner=_precond_for(name, target),
            seed=5,
            progress=False,
        )
        eps[name] = float(run.stats["step_size"][:, -1].mean())
    assert eps["dense"] > 20 * eps["identity"]


def test_mala_fourier_preconditioned_image_gaussian():
    target = stationary_image_gaussian(8, 8, decay=1.0)
    x0 = target.draw(64, _gen(6), torch.float32)
    run = li.sample(
        target,
        x0,
        steps=1500,
        warmup=300,
        step_size=0.05,
        schedule="dual_averaging",
        preconditioner=Fourier((8, 8), decay=1.0),
        seed=7,
        progress=False,
    )
    s = run.samples.reshape(64, -1, 64).numpy()
    assert_moments(s, target.mean.numpy(), target.var.numpy())


def test_ula_bias_and_mala_exactness_on_standard_normal():
    """ULA on N(0, 1) at step eps has stationary variance 1 / (1 - eps/2); MALA has 1."""
    eps = 0.5
    x0 = torch.randn((500, 1), generator=_gen(8))
    energy = lambda x: 0.5 * x.square().sum(1)  # noqa: E731
    ula = li.sample(
        energy, x0, steps=2000, warmup=100, method="ula", step_size=eps, seed=10, progress=False
    )
    mala = li.sample(
        energy, x0, steps=2000, warmup=100, method="mala", step_size=eps, seed=10, progress=False
    )
    ula_var = 1.0 / (1.0 - eps / 2)
    assert_mean_within_mcse(ula.samples.numpy() ** 2, ula_var, what="ULA variance")
    assert_mean_within_mcse(mala.samples.numpy() ** 2, 1.0, what="MALA variance")
    # and the bias is resolved: ULA's variance is many standard errors away from 1
    s2 = ula.samples.numpy() ** 2
    from arviz_stats import mcse

    assert (s2.mean() - 1.0) / float(mcse(s2[..., 0], method="mean")) > 10


def _state(x, e, g, precond):
    drift = precond.apply(g)
    return LangevinState(x, e, g, drift, (g.double() * drift.double()).flatten(1).sum(1), {})


def test_mh_log_ratio_closed_form():
    """The float64 log-ratio against the formula written out for a 1-d Gaussian with M = m."""
    torch.manual_seed(0)
    x = torch.randn(6, 1, dtype=torch.float64)
    xp = torch.randn(6, 1, dtype=torch.float64)
    eps, temp, m = torch.full((6,), 0.3, dtype=torch.float64), 0.7, 2.5
    pre = Diagonal(torch.tensor([m]))

    def e(v):
        return 0.5 * v[:, 0] ** 2

    got = mh_log_ratio(
        _state(x, e(x), x.clone(), pre), _state(xp, e(xp), xp.clone(), pre), eps, temp
    )
    x, xp = x[:, 0], xp[:, 0]
    fwd = (xp - x + 0.3 * m * x) ** 2 / m
    rev = (x - xp + 0.3 * m * xp) ** 2 / m
    want = -(e(xp[:, None]) - e(x[:, None])) / temp + (fwd - rev) / (4 * 0.3 * temp)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_mh_log_ratio_dense_matches_explicit_inverse():
    """Against the two Gaussian proposal densities written with M^{-1}, on random points."""
    torch.manual_seed(1)
    a = torch.randn(3, 3, dtype=torch.float64)
    m = a @ a.T + 3 * torch.eye(3, dtype=torch.float64)
    pre = Dense(m)
    x, xp = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    g, gp = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    e, ep = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    eps, temp = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), 1.3
    got = mh_log_ratio(_state(x, e, g, pre), _state(xp, ep, gp, pre), eps, temp)
    minv = torch.linalg.inv(m)

    def log_q(to, frm, grad):
        d = to - frm + eps[:, None] * grad @ m
        return -((d @ minv) * d).sum(1) / (4 * eps * temp)

    want = -(ep - e) / temp + log_q(x, xp, gp) - log_q(xp, x, g)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_mh_log_ratio_keeps_its_precision_at_image_size():
    """At 3x224x224 float32 positions the float64 ratio equals the one computed from float64
    copies of the same numbers to 1e-9, while the naive float32 quadratic forms are off by
    far more than that."""
    g = torch.Generator().manual_seed(0)
    n = 3 * 224 * 224
    x = torch.randn((2, n), generator=g)
    grad = 0.01 * x
    eps = torch.full((2,), 1e-2, dtype=torch.float64)
    xp = x - 1e-2 * grad + (2e-2) ** 0.5 * torch.randn((2, n), generator=g)
    e = lambda v: 0.5 * 0.01 * v.double().square().sum(1)  # noqa: E731
    ident = Preconditioner()
    s32 = _state(x, e(x), grad, ident)
    p32 = _state(xp, e(xp), 0.01 * xp, ident)
    r = mh_log_ratio(s32, p32, eps, 1.0)
    s64 = _state(x.double(), e(x), grad.double(), ident)
    p64 = _state(xp.double(), e(xp), (0.01 * xp).double(), ident)
    torch.testing.assert_close(r, mh_log_ratio(s64, p64, eps, 1.0), rtol=0, atol=1e-9)
    fwd = (xp - x + 1e-2 * grad).square().sum(1)
    rev = (x - xp + 1e-2 * 0.01 * xp).square().sum(1)
    naive32 = -(e(xp) - e(x)) + ((fwd - rev) / (4 * 1e-2)).double()
    assert (naive32 - r).abs().max() > 1e-4


def test_acceptance_tends_to_one_as_step_shrinks():
    target = ill_conditioned(10, 10.0, seed=2)
    x0 = target.draw(200, _gen(3), torch.float32)
    rates = []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        run = li.sample(target, x0, steps=50, step_size=eps, seed=4, progress=False)
        rates.append(float(run.acceptance_rate.mean()))
    assert all(a < b for a, b in itertools.pairwise(rates)), rates
    assert rates[-1] > 0.99


PRECONDITIONERS = {
    "identity": lambda t: None,
    "diagonal": lambda t: Diagonal(t.var.reshape(t.shape) * 0.5 + 0.1),
    "dense": lambda t: Dense(t.cov + 0.1 * torch.eye(t.cov.shape[0], dtype=torch.float64)),
    "lowrank": lambda t: LowRankPlusDiagonal(
        torch.randn(t.cov.shape[0], 3, generator=_gen(0), dtype=torch.float64),
        torch.full((t.cov.shape[0],), 0.3),
    ),
    "fourier": lambda t: Fourier(t.shape[-2:], decay=1.0),
}


def _ks_stationarity(target, method, precond, n=20000, k=10, seed=0):
    """Start n chains at exact draws, run k steps at a step size tuned to MALA acceptance
    0.574, return the smallest marginal KS p-value (Bonferroni-corrected over coordinates)."""
    x0 = target.draw(n, _gen(seed), torch.float64)
    pilot = li.sample(
        target,
        x0[:64],
        steps=1,
        warmup=300,
        step_size=0.1,
        schedule=li.schedules.DualAveraging(per_chain=False),
        preconditioner=precond,
        seed=seed + 2,
        progress=False,
    )
    step_size = float(pilot.stats["step_size"][0, -1])
    run = li.sample(
        target,
        x0,
        steps=k,
        method=method,
        step_size=step_size,
        preconditioner=precond,
        seed=seed + 1,
        progress=False,
    )
    final = run.final_position.reshape(n, -1).numpy()
    sd = target.var.sqrt().numpy()
    mu = target.mean.numpy()
    p = [
        stats.kstest(final[:, i], stats.norm(mu[i], sd[i]).cdf).pvalue
        for i in range(final.shape[1])
    ]
    return min(p) * final.shape[1], float(run.acceptance_rate.mean())


@pytest.mark.parametrize("name", list(PRECONDITIONERS))
def test_mala_leaves_exact_draws_exact(name):
    """Stationarity: exact draws stay exact after k MALA steps at a large step (KS test on
    every marginal), with and without a preconditioner M != I."""
    target = stationary_image_gaussian(4, 4, decay=1.0)
    precond = PRECONDITIONERS[name](target)
    p, acc = _ks_stationarity(target, "mala", precond)
    assert 0.4 < acc < 0.75, f"step tuned badly, acceptance {acc:.2f}"
    assert p > 0.01, f"stationarity rejected with Bonferroni p = {p:.2g}"


def test_stationarity_check_has_power_against_ula():
    """The same check rejects ULA at the same step, whose stationary law is biased."""
    target = stationary_image_gaussian(4, 4, decay=1.0)
    p, _ = _ks_stationarity(target, "ula", None)
    assert p < 1e-6


def _banana(x: torch.Tensor, b: float = 1.0, s: float = 0.5) -> torch.Tensor:
    return 0.5 * x[:, 0] ** 2 + 0.5 * (x[:, 1] - b * x[:, 0] ** 2) ** 2 / s**2


def test_mala_on_banana_matches_exact_moments():
    """x1 ~ N(0, 1), x2 | x1 ~ N(b x1^2, s^2): E[x2] = b, E[x1^2] = 1,
    E[x2^2] = s^2 + 3 b^2, E[x1 x2] = 0 exactly."""
    b, s = 1.0, 0.5
    g = _gen(11)
    x1 = torch.randn(128, generator=g)
    x0 = torch.stack([x1, b * x1**2 + s * torch.randn(128, generator=g)], 1)
    run = li.sample(
        _banana,
        x0,
        steps=4000,
        warmup=500,
        step_size=0.05,
        schedule="dual_averaging",
        seed=12,
        progress=False,
    )
    d = run.samples.numpy().astype(np.float64)
    f = np.stack([d[..., 0], d[..., 1], d[..., 0] ** 2, d[..., 1] ** 2, d[..., 0] * d[..., 1]], -1)
    assert_mean_within_mcse(f, [0.0, b, 1.0, s**2 + 3 * b**2, 0.0], what="banana moments")


def _smooth_cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 3),
    ).double()
    return net.requires_grad_(False).eval()


def test_zero_noise_descends_at_every_step():
    net = _smooth_cnn(0)

    def energy(x):
        return -torch.log_softmax(net(x), 1)[:, 1] + 0.05 * x.square().flatten(1).sum(1)

    x0 = torch.randn((6, 1, 8, 8), generator=_gen(1), dtype=torch.float64)
    run = li.sample(energy, x0, steps=200, method="descent", step_size=1e-2, progress=False)
    e = torch.cat([energy(x0)[:, None], run.stats["energy"]], 1)
    assert torch.all(e[:, 1:] < e[:, :-1])
    assert torch.all(run.stats["is_accepted"])
    assert torch.all(run.stats["acceptance_prob"] == 1)


def test_reproducible_with_same_seed_and_different_with_another():
    target = ill_conditioned(5, 10.0)
    x0 = target.draw(8, _gen(0), torch.float32)
    kw = dict(steps=50, warmup=20, schedule="dual_averaging", step_size=0.1, progress=False)
    a = li.sample(target, x0, seed=3, **kw)
    b = li.sample(target, x0, seed=3, **kw)
    c = li.sample(target, x0, seed=4, **kw)
    assert torch.equal(a.samples, b.samples)
    for k in a.stats:
        assert torch.equal(a.stats[k], b.stats[k]), k
    assert not torch.equal(a.samples, c.samples)
    gen = torch.Generator().manual_seed(3)
    d = li.sample(target, x0, seed=gen, **kw)
    assert torch.equal(a.samples, d.samples)


def test_per_chain_step_sizes_are_used():
    x0 = torch.zeros((3, 2))
    eps = torch.tensor([0.1, 0.2, 0.3])
    run = li.sample(lambda x: 0.5 * x.square().sum(1), x0, steps=5, step_size=eps, progress=False)
    torch.testing.assert_close(run.stats["step_size"][:, 0], eps.double())


def test_z_crit_is_the_bonferroni_quantile():
    assert math.isclose(z_crit(0.01, 1), 2.5758, rel_tol=1e-4)


def test_inexact_grad_drift_of_unadjusted_steps_matches_float64():
    """ULA and descent keep g^T M g in the position's dtype (a finiteness check only)."""
    from langevin_images.samplers import ColorFourier, kernel

    g = torch.Generator().manual_seed(0)
    x = torch.randn((4, 3, 16, 16), generator=g)
    pc = ColorFourier((16, 16), torch.eye(3) + 0.5)
    energy = lambda v: 0.5 * v.square().flatten(1).sum(1) + v.flatten(1)[:, 0]  # noqa: E731
    exact = kernel.evaluate(energy, x, pc)
    fast = kernel.evaluate(energy, x, pc, exact=False)
    assert fast.grad_drift.dtype == torch.float64
    torch.testing.assert_close(fast.grad_drift, exact.grad_drift, rtol=1e-5, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_pcn_gaussian_prior_times_gaussian_likelihood(temperature):
    """pCN (a registered kernel beside MALA, gradient-free) on a 20-d Gaussian prior with a
    dense covariance times a Gaussian likelihood: the posterior is Gaussian in closed form, and
    the draws' means and variances are within MCSE of it, at T = 1 and T = 0.5."""
    prior = ill_conditioned(20, 30.0, seed=8)
    a = torch.randn(20, generator=_gen(9), dtype=torch.float64)
    s2 = 0.5

    def energy(x):
        d = x.reshape(x.shape[0], -1).to(torch.float64)
        return prior(d) + 0.5 * (d - a).square().sum(1) / s2

    # exp(-E/T): precision (C^-1 + I/s2) / T
    precision = (prior.prec + torch.eye(20, dtype=torch.float64) / s2) / temperature
    cov = torch.linalg.inv(precision)
    mean = cov @ ((prior.prec @ prior.mean + a / s2) / temperature)
    x0 = prior.draw(32, _gen(10), torch.float64)
    run = li.sample(
        energy,
        x0,
        steps=3000,
        warmup=500,
        method="pcn",
        prior_mean=prior.mean,
        preconditioner=Dense(prior.cov),
        temperature=temperature,
        step_size=0.3,
        schedule="dual_averaging",
        target_accept=0.3,
        seed=11,
        progress=False,
    )
    assert abs(float(run.acceptance_rate.mean()) - 0.3) < 0.05
    assert "grad_norm" not in run.stats  # gradient-free
    assert_moments(run.samples.numpy(), mean.numpy(), torch.diagonal(cov).numpy())
