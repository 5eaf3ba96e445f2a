"""The sample() driver: divergences, bad input, progress, three epsilons, DataTree export."""

from __future__ import annotations

import math

import arviz_stats as azs
import pytest
import torch
import xarray as xr

import langevin_images as li
from langevin_images.samplers import from_three_epsilons


def quad(x):
    return 0.5 * x.square().flatten(1).sum(1)


def test_nan_proposals_are_rejected_and_flagged():
    """A region where the energy is NaN: proposals into it are rejected, marked diverging,
    and the chains go on; no NaN reaches the draws."""

    def energy(x):
        e = quad(x)
        return torch.where(x[:, 0] > 1.0, torch.full_like(e, float("nan")), e)

    x0 = torch.zeros((32, 3))
    run = li.sample(energy, x0, steps=300, step_size=0.5, seed=1, progress=False)
    div = run.stats["diverging"]
    assert div.any()
    assert not run.stats["is_accepted"][div].any()
    assert torch.isfinite(run.samples).all() and (run.samples[..., 0] <= 1.0).all()
    assert torch.isfinite(run.stats["energy"]).all()
    assert (run.stats["acceptance_prob"][div] == 0).all()


class _InfGradBeyondOne(torch.autograd.Function):
    """Zero energy whose gradient is infinite where x[:, 0] > 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.zeros(x.shape[0], dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        g = torch.zeros_like(x)
        g[x[:, 0] > 1.0] = math.inf
        return g


@pytest.mark.parametrize("method", ["ula", "descent"])
def test_unadjusted_methods_reject_non_finite_proposals(method):
    """ULA and descent accept every finite proposal and keep the chain where a proposal's
    energy is NaN (the path that skips the selection when every chain moved included)."""

    def energy(x):
        e = quad(x - 2.0)  # pulls every chain towards x = 2, through the NaN wall at x0 = 1
        return torch.where(x[:, 0] > 1.0, torch.full_like(e, float("nan")), e)

    x0 = torch.zeros((8, 3))
    run = li.sample(
        energy, x0, steps=60, method=method, step_size=0.2, temperature=0.01, seed=1,
        progress=False,
        max_divergences_in_a_row=1000,
    )  # fmt: skip
    div = run.stats["diverging"]
    assert div.any() and not run.stats["is_accepted"][div].any()
    assert (run.stats["is_accepted"][~div]).all()
    assert torch.isfinite(run.samples).all() and (run.samples[..., 0] <= 1.0).all()
    # every chain moved up to the wall and stays on this side of it
    assert (run.final_position[:, 0] > 0.5).all()


def test_inf_gradient_is_a_divergence_too():
    run = li.sample(
        lambda x: quad(x) + _InfGradBeyondOne.apply(x),
        torch.zeros((16, 2)),
        steps=200,
        step_size=0.5,
        seed=0,
        progress=False,
    )
    assert run.stats["diverging"].any()
    assert torch.isfinite(run.samples).all() and (run.samples[..., 0] <= 1.0).all()


def test_a_chain_that_keeps_diverging_stops_the_run_with_its_name():
    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        poison = torch.zeros(len(x))
        if calls["n"] > 5:  # from the 5th step on, chain 3's energy is NaN (its gradient is not)
            poison[3] = math.nan
        return quad(x) + poison

    with pytest.raises(
        li.DivergenceError,
        match=r"chain 3 diverged .* 20 steps in a row, "
        r"steps 4\.\.23",
    ) as err:
        li.sample(energy, torch.zeros((5, 2)), steps=100, progress=False)
    assert err.value.run.recorder.completed >= 24


def test_energy_not_finite_at_start():
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        li.sample(
            lambda x: quad(x) + torch.tensor([0.0, math.inf]),
            torch.zeros((2, 1)),
            steps=1,
            progress=False,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2.5), "steps must be an integer"),
        (dict(steps=5, warmup=-1), "warmup must be"),
        (dict(steps=5, thin=0), "thin must be"),
        (dict(steps=5, method="hmc"), "method must be one of"),
        (dict(steps=5, temperature=0.0), "use method='descent'"),
        (dict(steps=5, method="ula", temperature=-1.0), "temperature must be > 0"),
        (dict(steps=5, step_size=-0.1), "step_size must be finite and > 0"),
        (dict(steps=5, step_size=torch.ones(3)), r"shape \(2,\)"),
        (dict(steps=5, target_accept=1.0), "target_accept"),
        (dict(steps=5, schedule="nope"), "unknown schedule"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):  # TypeError: a wrong type
        li.sample(quad, torch.zeros((2, 3)), progress=False, **kwargs)


def test_bad_x0_and_energy_shape():
    with pytest.raises(ValueError, match="floating-point tensor of shape"):
        li.sample(quad, torch.zeros((2, 3), dtype=torch.int64), steps=1)
    with pytest.raises(ValueError, match="floating-point tensor of shape"):
        li.sample(quad, torch.zeros(3), steps=1)
    with pytest.raises(ValueError, match=r"one value per chain, shape \(2,\); got \(\)"):
        li.sample(lambda x: x.sum(), torch.zeros((2, 3)), steps=1, progress=False)
    with pytest.raises(TypeError, match="lacks"):
        li.sample(quad, torch.zeros((2, 3)), steps=1, preconditioner="fft", progress=False)


def test_progress_bar_shows_acceptance_and_step(capsys):
    li.sample(
        quad, torch.zeros((2, 3)), steps=200, warmup=50, schedule="dual_averaging", progress=True
    )
    err = capsys.readouterr().err
    assert "sampling" in err and "acc=" in err and "eps=" in err
    # a normalized descent shows the mean move per coordinate it was given
    li.sample(quad, torch.full((2, 3), 1e-9), steps=30, method="descent", step_size=0.05,
              normalize_step=True, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "step=0.05" in err and "eps=" not in err
    # a method without an accept step shows its energy, not an acceptance of 1
    li.sample(quad, torch.ones((2, 3)), steps=30, method="ula", progress=True)
    err = capsys.readouterr().err
    assert "energy=" in err and "acc=" not in err


def test_three_epsilons_map_to_the_same_update():
    eps1, eps2, eps3 = 0.02, 0.5, 0.1
    p = from_three_epsilons(eps1, eps2, eps3)
    assert p.likelihood_weight == 1.0 and p.step_size == eps2
    assert math.isclose(p.prior_weight, eps1 / eps2)
    assert math.isclose(p.temperature, eps3**2 / (2 * eps2))
    assert all(
        math.isclose(a, b) for a, b in zip(p.three_epsilons, (eps1, eps2, eps3), strict=True)
    )
    # the Langevin update of E = prior_weight * Ep + likelihood_weight * El is the book's one
    g = torch.Generator().manual_seed(0)
    x, gp, gl, xi = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(4))
    langevin = (
        x
        - p.step_size * (p.prior_weight * gp + p.likelihood_weight * gl)
        + math.sqrt(2 * p.step_size * p.temperature) * xi
    )
    book = x - eps1 * gp - eps2 * gl + eps3 * xi
    torch.testing.assert_close(langevin, book)
    q = from_three_epsilons(eps1, eps2, eps3, likelihood_weight=5.0)
    assert all(
        math.isclose(a, b) for a, b in zip(q.three_epsilons, (eps1, eps2, eps3), strict=True)
    )
    assert "temperature=" in p.describe()
    with pytest.raises(ValueError):
        from_three_epsilons(0.1, 0.0, 0.1)


def test_datatree_layout_and_netcdf_round_trip(tmp_path):
    x0 = torch.rand((3, 1, 5, 4))
    run = li.sample(quad, x0, steps=40, warmup=10, thin=2, step_size=0.1, progress=False)
    dt = run.to_datatree()
    post, ss = dt["posterior"], dt["sample_stats"]
    assert post["image"].dims == ("chain", "draw", "channel", "row", "col")
    assert post["image"].shape == (3, 20, 1, 5, 4)
    assert set(ss.data_vars) == {
        "lp",
        "acceptance_rate",
        "is_accepted",
        "step_size",
        "diverging",
        "grad_norm",
    }
    assert dt["warmup_sample_stats"]["lp"].shape == (3, 10)
    # the draw is the position after the last step of its thinning window
    stats = run.stats
    torch.testing.assert_close(torch.from_numpy(post["energy"].values), stats["energy"][:, 11::2])
    torch.testing.assert_close(
        torch.from_numpy(ss["acceptance_rate"].values),
        stats["acceptance_prob"][:, 10:].reshape(3, 20, 2).mean(-1),
    )
    path = tmp_path / "run.nc"
    dt.to_netcdf(path)
    back = xr.open_datatree(path)
    xr.testing.assert_identical(back["posterior"].to_dataset(), post.to_dataset())
    assert float(azs.rhat(back, var_names="energy")["energy"]) > 0


def test_datatree_from_a_disk_run(tmp_path):
    run = li.sample(
        quad, torch.rand((2, 1, 3, 3)), steps=20, record_to=tmp_path / "c.zarr", progress=False
    )
    dt = run.to_datatree()
    assert dt["posterior"]["image"].shape == (2, 20, 1, 3, 3)
    assert torch.equal(torch.from_numpy(dt["posterior"]["image"].values), run.samples)


def test_sample_three_epsilons_is_the_mapped_run():
    def prior(x):
        return 0.5 * x.square().flatten(1).sum(1)

    def lik(x):
        return (x[:, 0] - 1.0).square()

    x0 = torch.zeros((4, 3))
    a = li.sample_three_epsilons(
        prior, lik, x0, eps1=0.01, eps2=0.1, eps3=0.05, steps=20, seed=3, progress=False
    )
    p = from_three_epsilons(0.01, 0.1, 0.05)
    b = li.sample(
        lambda x: p.prior_weight * prior(x) + lik(x),
        x0,
        method="ula",
        step_size=p.step_size,
        temperature=p.temperature,
        steps=20,
        seed=3,
        progress=False,
    )
    assert torch.equal(a.samples, b.samples)
    assert a.config["three_epsilons"]["eps3"] == 0.05
    assert a.config["temperature"] == pytest.approx(0.05**2 / 0.2)
    d = li.sample_three_epsilons(
        prior, lik, x0, eps1=0.01, eps2=0.1, eps3=0.0, steps=5, progress=False
    )
    assert d.config["method"] == "descent"
    with pytest.raises(TypeError, match="set by the three epsilons"):
        li.sample_three_epsilons(
            prior, lik, x0, eps1=0.01, eps2=0.1, eps3=0.1, steps=5, step_size=0.3
        )


def test_running_acceptance_rate_restarts_after_warmup():
    run = li.sample(
        quad, torch.zeros((3, 2)), steps=30, warmup=10, step_size=0.5, seed=1, progress=False
    )
    r = run.running_acceptance_rate()
    acc = run.stats["acceptance_prob"]
    assert r.shape == (3, 40)
    torch.testing.assert_close(r[:, 9], acc[:, :10].mean(1))
    torch.testing.assert_close(r[:, 10], acc[:, 10])
    torch.testing.assert_close(r[:, -1], run.acceptance_rate)


def test_tune_malloc_reports_what_it_did():
    import sys

    from langevin_images.cpu import tune_malloc

    assert tune_malloc() is sys.platform.startswith("linux")
