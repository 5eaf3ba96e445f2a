"""The windowed preconditioner warmup: its estimators, and MALA with the frozen result stays
exact (moments within Monte Carlo error)."""

from __future__ import annotations

import pytest
import torch
from helpers import Gaussian, assert_moments, ill_conditioned

from langevin_images.samplers import sample
from langevin_images.samplers.adapt import adapt_preconditioner, estimate_preconditioner


def _axis_gaussian(dim: int = 20) -> Gaussian:
    sd = torch.logspace(0, 1, dim, dtype=torch.float64)
    return Gaussian(torch.zeros(dim, dtype=torch.float64), torch.diag(sd.square()))


def test_the_estimators_recover_a_known_covariance():
    target = ill_conditioned(8, 100.0, seed=3)
    x = target.draw(20_000, torch.Generator().manual_seed(0))
    cov = target.cov
    d = estimate_preconditioner(x, "diagonal")
    assert torch.allclose(d.scale, cov.diagonal(), rtol=0.05)
    dense = estimate_preconditioner(x, "dense")
    m = dense.chol @ dense.chol.T
    assert torch.allclose(m, cov, atol=0.05 * float(cov.abs().max()))
    low = estimate_preconditioner(x, "lowrank", rank=7)  # 7 of 8 directions + the last as d
    full = torch.diag(low.diag) + low.factor @ low.factor.T
    assert torch.allclose(full, cov, atol=0.05 * float(cov.abs().max()))
    with pytest.raises(ValueError, match="kind must be one of"):
        estimate_preconditioner(x, "full")


def test_with_gradients_a_gaussians_covariance_comes_from_draws_that_never_explored_it():
    # draws from a far narrower, other Gaussian: their covariance says nothing of the target's,
    # but with the target's gradients at them the geometric mean S # G^-1 is its covariance
    target = ill_conditioned(12, 1000.0, seed=4)
    g = torch.Generator().manual_seed(1)
    x = target.mean + 0.01 * torch.randn(400, 12, generator=g, dtype=torch.float64)
    grads = (x - target.mean) @ torch.linalg.inv(target.cov)  # grad of E = (x-mu)^T P (x-mu)/2
    cov = target.cov
    dense = estimate_preconditioner(x, "dense", grads=grads)
    assert torch.allclose(dense.cov, cov, atol=0.02 * float(cov.abs().max()))
    alone = estimate_preconditioner(x, "dense")
    assert not torch.allclose(alone.cov, cov, atol=0.5 * float(cov.abs().max()))
    # an axis-aligned Gaussian's variances, exactly, from the diagonal estimate
    axis = _axis_gaussian(6)
    xa = 0.1 * torch.randn(50, 6, generator=g, dtype=torch.float64)
    diag = estimate_preconditioner(xa, "diagonal", grads=xa / axis.cov.diagonal())
    assert torch.allclose(diag.scale, axis.cov.diagonal(), rtol=1e-10)
    low = estimate_preconditioner(x, "lowrank", rank=11, grads=grads)
    m = torch.diag(low.diag) + low.factor @ low.factor.T
    top = torch.linalg.eigvalsh(cov)[-1]
    assert torch.allclose(torch.linalg.eigvalsh(m)[-1], top, rtol=0.05)
    with pytest.raises(ValueError, match="do not match"):
        estimate_preconditioner(x, "dense", grads=grads[:10])


@pytest.mark.parametrize(
    ("kind", "make"), [("diagonal", _axis_gaussian), ("dense", lambda: ill_conditioned(10, 100.0)),
                       ("lowrank", lambda: ill_conditioned(10, 100.0))],
)  # fmt: skip
def test_mala_with_the_adapted_preconditioner_is_exact(kind, make):
    target = make()
    x0 = target.draw(8, torch.Generator().manual_seed(1))
    adapted = adapt_preconditioner(target, x0, kind=kind, first=100, windows=(100, 200),
                                   rank=9, seed=5)  # fmt: skip
    run = sample(target, adapted.position, warmup=100, steps=3000, step_size=adapted.step_size,
                 schedule="dual_averaging", preconditioner=adapted.preconditioner, seed=7,
                 progress=False)  # fmt: skip
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())


def test_the_warmup_is_reproducible():
    target = _axis_gaussian(5)
    x0 = target.draw(4, torch.Generator().manual_seed(1))
    a = adapt_preconditioner(target, x0, first=20, windows=(20, 40), seed=2)
    b = adapt_preconditioner(target, x0, first=20, windows=(20, 40), seed=2)
    assert torch.equal(a.position, b.position) and a.step_size == b.step_size
    assert torch.equal(a.preconditioner.scale, b.preconditioner.scale)
    assert a.grad_evals >= 20 + 2 * (20 + 40)
