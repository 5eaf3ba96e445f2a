"""Sampling a target restricted to [lo, hi] exactly through the logistic reparameterization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_moments
from scipy import stats

import langevin_images as li
from langevin_images.samplers import Box

MU, SD = 0.8, 0.3
TRUNC = stats.truncnorm((0 - MU) / SD, (1 - MU) / SD, loc=MU, scale=SD)


def _energy(x):
    return 0.5 * ((x - MU) / SD).square().flatten(1).sum(1)


def test_truncated_gaussian_moments():
    g = torch.Generator().manual_seed(0)
    x0 = torch.from_numpy(TRUNC.rvs(size=(128, 3), random_state=1)).float()
    run = li.sample(
        _energy,
        x0,
        steps=2000,
        warmup=300,
        bounds=(0.0, 1.0),
        step_size=0.5,
        schedule="dual_averaging",
        seed=2,
        progress=False,
    )
    s = run.samples.numpy()
    assert s.min() > 0 and s.max() < 1
    assert_moments(s, np.full(3, TRUNC.mean()), np.full(3, TRUNC.var()))
    del g


def test_truncated_gaussian_stationarity():
    """Exact truncated-normal draws stay exact after 10 constrained MALA steps (KS test);
    the same steps without the log-Jacobian term drift away (the test has power)."""
    n = 20000
    x0 = torch.from_numpy(TRUNC.rvs(size=(n, 1), random_state=3)).double()
    run = li.sample(_energy, x0, steps=10, bounds=(0.0, 1.0), step_size=1.0, seed=4, progress=False)
    assert 0.3 < float(run.acceptance_rate.mean()) < 0.95
    assert stats.kstest(run.final_position[:, 0].numpy(), TRUNC.cdf).pvalue > 0.01

    box = Box(0.0, 1.0)
    no_jacobian = li.sample(
        lambda z: _energy(box.to_constrained(z)),
        box.to_unconstrained(x0),
        steps=10,
        step_size=1.0,
        seed=4,
        progress=False,
    )
    wrong = box.to_constrained(no_jacobian.final_position)[:, 0].numpy()
    assert stats.kstest(wrong, TRUNC.cdf).pvalue < 1e-6


def test_descent_stays_inside_and_energy_reported_in_image_space():
    x0 = torch.full((2, 4), 0.5)
    run = li.sample(
        lambda x: -x.flatten(1).sum(1),
        x0,
        steps=50,
        method="descent",
        bounds=(0, 1),
        step_size=1.0,
        progress=False,
    )
    assert torch.all(run.samples < 1) and torch.all(run.samples[:, -1] > 0.9)
    assert torch.all(run.samples[:, 1:] > run.samples[:, :-1])
    torch.testing.assert_close(
        run.stats["energy"][:, -1], -run.samples[:, -1].sum(1).double(), rtol=1e-5, atol=1e-5
    )


def test_bounds_reject_starting_points_outside():
    with pytest.raises(ValueError, match="outside the bounds"):
        li.sample(_energy, torch.full((2, 1), 1.5), steps=1, bounds=(0, 1), progress=False)
    with pytest.raises(ValueError, match="lo < hi"):
        Box(1.0, 0.0)


def test_named_terms_are_recorded_under_bounds_too():
    from langevin_images.energies import GaussianPrior, TotalVariation

    energy = GaussianPrior(sigma=0.3) + 0.1 * TotalVariation(0.05)
    x0 = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    run = li.sample(energy, x0, steps=5, bounds=(0.0, 1.0), step_size=0.01, progress=False)
    x = run.samples[:, -1]
    assert set(run.stats) >= {"term_prior_gaussian", "term_prior_tv"}
    torch.testing.assert_close(run.stats["term_prior_gaussian"][:, -1], GaussianPrior(sigma=0.3)(x))


def test_logistic_map_of_any_box():
    z = torch.linspace(-6, 6, 25, dtype=torch.float64)
    for lo, hi in ((0.0, 1.0), (-1.0, 2.5)):
        box = Box(lo, hi)
        torch.testing.assert_close(box.to_constrained(z), lo + (hi - lo) * torch.sigmoid(z))
        torch.testing.assert_close(box.to_constrained(box.to_unconstrained(box.to_constrained(z))),
                                   box.to_constrained(z))  # fmt: skip
