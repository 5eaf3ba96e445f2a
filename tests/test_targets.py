"""The standard targets: energies against their log densities, exact draws against the stated
moments, and `bench --suite targets` at tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import z_crit

from langevin_images import targets as T
from langevin_images.cli import main

NAMES = list(T.TARGETS)


@pytest.mark.parametrize("name", NAMES)
def test_energy_is_minus_the_log_density_up_to_a_constant(name):
    target = T.TARGETS[name]()
    g = torch.Generator().manual_seed(1)
    x = target.init(64, g, dtype=torch.float64) + 0.3 * torch.randn(
        (64, target.dim), generator=g, dtype=torch.float64
    )
    e = target.energy(x.float()).double()
    lp = target.log_density(x)
    total = e + lp  # constant: minus the log normalizer (energies leave it out)
    assert torch.allclose(total, total.mean(), rtol=0, atol=1e-4 * (1 + e.abs().max()))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "logistic-5d"])
def test_exact_draws_have_the_stated_moments(name):
    target = T.TARGETS[name]()
    x = target.draw(200_000, torch.Generator().manual_seed(2))
    k = 2 * target.dim
    z = z_crit(0.01, k)
    mean_se = x.std(0) / np.sqrt(len(x))
    assert ((x.mean(0) - target.mean).abs() / mean_se < z).all()
    sq = (x - target.mean).square()
    check = slice(0, 1) if name.startswith("funnel") else slice(None)  # x_i: too heavy-tailed
    var_se = sq.std(0) / np.sqrt(len(x))
    assert ((sq.mean(0) - target.var).abs() / var_se < z)[check].all()


def test_the_logistic_reference_is_a_good_importance_sample():
    target = T.logistic_regression()
    assert target.extras["importance_ess"] > 0.5 * 200_000
    assert (target.truth_mcse < 0.01 * target.var.sqrt()).all()
    # the posterior mean lies near the mode (a log-concave posterior of 100 points)
    assert ((target.mean - target.extras["mode"]).abs() < 0.5 * target.var.sqrt()).all()


def test_bench_suite_targets_at_tiny_settings(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--suite", "targets", "--target", "banana", "--target", "gaussian-100d",
            "--chains", "4", "--warmup", "50", "--steps", "100", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    ours = [r for r in rows if r["sampler"].startswith("langevin_images")]
    assert [r["target"] for r in ours] == ["banana", "gaussian-100d"]
    for r in rows:
        for key in ("target", "sampler", "min_ess_per_grad", "us_per_step", "us_per_grad"):
            assert key in r
        assert r["min_ess_per_grad"] > 0 and r["us_per_step"] > 0 and r["us_per_grad"] > 0
        assert r["grad_evals"] >= 150
    said = capsys.readouterr().out
    assert "minESS/grad" in said and "us/step" in said


def test_bench_refuses_an_unknown_target(capsys):
    assert main(["bench", "--target", "nosuch", "--steps", "10", "--warmup", "10"]) == 2
    assert "unknown target 'nosuch'" in capsys.readouterr().err


def test_bench_suite_images_at_tiny_settings(tmp_path):
    out = tmp_path / "images.json"
    argv = ["bench", "--suite", "images", "--chains", "2", "--warmup", "10", "--steps", "20",
            "--quiet", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    (row,) = json.loads(out.read_text())
    assert row["target"] == "mnist-digit-3" and row["grad_evals"] >= 30
    assert row["us_per_step"] > 0 and row["us_per_grad"] > 0 and row["min_ess_per_grad"] > 0
