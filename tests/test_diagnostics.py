"""Diagnostics: the export's summaries, convergence statistics against known answers, the
``diagnose`` verdict, per-pixel maps against arviz_stats pixel by pixel, diversity and realism
metrics against closed forms, and the plots."""

from __future__ import annotations

import math

import arviz_base as azb
import arviz_stats as azs
import numpy as np
import pytest
import torch
import xarray as xr
from helpers import tiny_cnn, z_crit

import langevin_images as li
from langevin_images import diagnostics as D
from langevin_images.energies import ClassLikelihood, GaussianPrior

RNG_SEED = 20261126


def ar1(rng: np.random.Generator, rho: float, chains: int, draws: int) -> np.ndarray:
    """Stationary AR(1) chains with unit marginal variance."""
    x = np.empty((chains, draws))
    x[:, 0] = rng.standard_normal(chains)
    e = rng.standard_normal((chains, draws)) * math.sqrt(1 - rho**2)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


def tree(**posterior) -> xr.DataTree:
    return azb.from_dict({"posterior": posterior})


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains_matches_the_formula(rho):
    """Bulk ESS of AR(1) chains vs N (1 - rho) / (1 + rho): the mean ratio over independent
    replications lies within its Monte Carlo error of 1, plus 0.05 for the estimator's own
    finite-sample bias (Geyer's truncation; about +4 % at rho = 0.9 with 4 x 1000 draws)."""
    rng = np.random.default_rng(RNG_SEED)
    chains, draws, reps = 4, 2000, 24
    truth = chains * draws * (1 - rho) / (1 + rho)
    ratios = np.array(
        [float(azs.ess(ar1(rng, rho, chains, draws), method="bulk")) / truth for _ in range(reps)]
    )
    se = ratios.std(ddof=1) / math.sqrt(reps)
    assert abs(ratios.mean() - 1) < z_crit(0.01, 3) * se + 0.05, (ratios.mean(), se)


def test_iid_draws_converge_and_diagnose_says_so():
    rng = np.random.default_rng(RNG_SEED)
    dt = tree(energy=rng.standard_normal((4, 1000)), theta=rng.standard_normal((4, 1000, 3)))
    table = D.summary(dt)
    assert list(table.index) == ["energy", "theta[0]", "theta[1]", "theta[2]"]
    assert (table["r_hat"] < 1.01).all()
    assert ((table["ess_bulk"] / 4000 - 1).abs() < 0.15).all()
    verdict = D.diagnose(dt)
    assert verdict.ok and str(verdict).startswith("converged")


@pytest.mark.parametrize("draws", [1, 3])
def test_too_few_draws_are_never_called_converged(draws):
    """With fewer than 4 draws per chain R-hat and ESS are NaN (or meaningless), which no
    threshold flags: the verdict says so instead of "converged"."""
    rng = np.random.default_rng(RNG_SEED)
    verdict = D.diagnose(tree(energy=rng.standard_normal((4, draws))))
    assert not verdict.ok and f"only {draws} draw(s) per chain" in str(verdict)


def test_two_chains_with_different_means_are_not_converged():
    rng = np.random.default_rng(RNG_SEED)
    energy = rng.standard_normal((2, 500)) + np.array([[0.0], [2.0]])
    dt = tree(energy=energy)
    r = float(azs.rhat(dt, var_names="energy")["energy"])
    assert r > 1.2
    verdict = D.diagnose(dt)
    assert not verdict.ok
    text = str(verdict)
    assert "NOT converged" in text and "energy (R-hat" in text and "more chains" in text


def test_the_vectorized_rhat_is_arvizs():
    """``rhat_chance_level``'s estimator against ``arviz_stats``' column by column, even and odd
    draw counts; only tied ranks (the two draws next to the median, in the folded R-hat) are
    broken differently. A split that kept the wrong draws differs by about 0.01."""
    from arviz_stats.base import array_stats

    from langevin_images.diagnostics.convergence import _rank_rhat

    rng = np.random.default_rng(RNG_SEED)
    for shape in [(200, 8, 100), (200, 4, 51)]:
        x = rng.standard_normal(shape)
        x[:50] += 0.5 * rng.standard_normal((50, shape[1], 1))  # some that have not mixed
        theirs = array_stats.rhat(x, chain_axis=-2, draw_axis=-1)
        np.testing.assert_allclose(_rank_rhat(x), theirs, atol=1e-3, rtol=0)


def test_rhat_fails_by_chance_with_too_few_draws_and_diagnose_says_so():
    """The demo's shape, 10 groups x 20 summaries of 8 chains: independent draws, 100 per
    chain, give a largest R-hat over 1.01 (about 1.015, checked here with ArviZ's own R-hat on
    10 replications), 400 per chain under it (about 1.003)."""
    rng = np.random.default_rng(RNG_SEED)
    assert D.rhat_chance_level(8, 100, 200)[0] > 1.01
    assert D.rhat_chance_level(8, 400, 200)[1] < 1.01
    # past max_draws the excess is scaled as 1/draws: near the simulated one
    scaled = D.rhat_chance_level(8, 800, 50, max_draws=400)[0] - 1
    simulated = D.rhat_chance_level(8, 800, 50, max_draws=800)[0] - 1
    assert abs(scaled / simulated - 1) < 0.25, (scaled, simulated)
    maxima = [float(azs.rhat(xr.DataArray(rng.standard_normal((8, 100, 200)),
                                          dims=("chain", "draw", "k"))).max())
              for _ in range(10)]  # fmt: skip
    assert np.median(maxima) > 1.01

    verdict = D.diagnose(tree(s=rng.standard_normal((8, 100, 200))))
    assert not verdict.ok and "what independent draws give by chance" in str(verdict)
    assert verdict.rhat_chance[0] > 1.01 and 200 <= verdict.draws_needed <= 300
    assert "keep more draws per chain" in str(verdict)
    assert verdict.outlier_chains == [] and "disagree" not in str(verdict)
    # a chain that has not mixed is not put down to chance, and is named
    x = rng.standard_normal((8, 100, 20))
    x[3] += 1.0
    verdict = D.diagnose(tree(s=x))
    assert not verdict.ok and "by chance" not in str(verdict)
    assert verdict.outlier_chains == [3]


def test_no_chain_is_named_as_disagreeing_when_rhat_is_at_chance():
    """8 chains x 100 independent draws x 20 values: R-hat is often over 1.01 by chance, and
    leaving one chain out then often brings it under (a third of such draws named a chain
    before ``diagnose`` checked the chance level first); at chance no chain is named."""
    rng = np.random.default_rng(RNG_SEED)
    at_chance = 0
    for _ in range(30):
        verdict = D.diagnose(tree(s=rng.standard_normal((8, 100, 20))))
        if "by chance" in str(verdict):
            at_chance += 1
            assert verdict.outlier_chains == [] and "disagree" not in str(verdict)
    assert at_chance >= 4, at_chance  # 37 of 100 are at chance: P(< 4 of 30) is 6e-4


def test_diagnose_names_the_chain_that_disagrees():
    rng = np.random.default_rng(RNG_SEED)
    energy = rng.standard_normal((6, 400))
    energy[3] += 3.0
    verdict = D.diagnose(tree(energy=energy))
    assert verdict.outlier_chains == [3]
    assert "disagree" in str(verdict) and ": 3" in str(verdict)


def test_chain_groups_are_compared_within_their_group():
    """Chains of different targets differ by design; within each group they agree."""
    rng = np.random.default_rng(RNG_SEED)
    energy = rng.standard_normal((6, 400)) + np.repeat([0.0, 5.0], 3)[:, None]
    dt = tree(energy=energy)
    assert not D.diagnose(dt).ok
    assert D.diagnose(dt, groups=[0, 0, 0, 1, 1, 1]).ok


def test_diagnose_reports_stuck_chains_divergences_and_acceptance():
    rng = np.random.default_rng(RNG_SEED)
    acc = np.full((4, 300), 0.57)
    acc[1] = 0.0
    div = np.zeros((4, 300), bool)
    div[2, 10] = True
    dt = azb.from_dict(
        {
            "posterior": {"energy": rng.standard_normal((4, 300))},
            "sample_stats": {"acceptance_rate": acc, "diverging": div},
        },
        attrs={"sample_stats": {"method": "mala", "target_accept": 0.9}},
    )
    verdict = D.diagnose(dt)
    assert verdict.stuck_chains == [1] and verdict.divergences == 1
    text = str(verdict)
    assert "1 of 4 chains stuck" in text and "1 draws followed a divergence" in text
    assert "far from its target 0.900" in text and "smaller step size" in text
    assert verdict.to_dict()["stuck_chains"] == [1]


def test_pixel_maps_equal_arviz_pixel_by_pixel():
    """Guards the (chain, draw) axis layout of the vectorized maps."""
    rng = np.random.default_rng(RNG_SEED)
    img = rng.standard_normal((3, 50, 2, 3, 4)).cumsum(axis=1)  # slow chains: R-hat varies
    dt = azb.from_dict({"posterior": {"image": img}}, dims={"image": ["channel", "row", "col"]})
    maps = D.pixel_maps(dt, block_rows=2)
    assert maps["r_hat"].dims == ("channel", "row", "col")
    for c, i, j in np.ndindex(2, 3, 4):
        chain = img[:, :, c, i, j]
        assert maps["r_hat"].values[c, i, j] == pytest.approx(float(azs.rhat(chain)), rel=1e-12)
        assert maps["ess_bulk"].values[c, i, j] == pytest.approx(
            float(azs.ess(chain, method="bulk")), rel=1e-12
        )
    worst = D.worst_pixels(maps)
    value, where = worst["r_hat_max"]
    assert value == maps["r_hat"].values.max()
    assert maps["r_hat"].values[where["channel"], where["row"], where["col"]] == value


def test_nested_rhat_of_iid_superchains_is_near_one():
    rng = np.random.default_rng(RNG_SEED)
    dt = tree(energy=rng.standard_normal((16, 50)))
    nr = D.nested_rhat(dt, [i // 4 for i in range(16)])
    assert float(nr["energy"]) < 1.05
    shifted = rng.standard_normal((16, 50)) + np.repeat(np.arange(4.0), 4)[:, None]
    assert float(D.nested_rhat(tree(energy=shifted), [i // 4 for i in range(16)])["energy"]) > 1.5


def test_picture_stats_closed_forms():
    grey = torch.full((2, 3, 8, 8), 0.5)
    assert D.picture_stats(grey) == {"pixel_sd": 0.0, "saturation": 0.0}
    halves = torch.zeros(1, 3, 8, 8)
    halves[:, 0, :4] = 1.0  # pure red above, black below (saturation 0 where max is 0)
    stats = D.picture_stats(halves)
    assert stats["saturation"] == pytest.approx(0.5)
    assert stats["pixel_sd"] == pytest.approx(float(halves.flatten().std()))


def test_vendi_score_closed_forms():
    v = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    assert D.vendi_score(v[:1].repeat(6, 1)) == pytest.approx(1.0, abs=1e-9)
    assert D.vendi_score(torch.eye(5) * 3.0) == pytest.approx(5.0, abs=1e-9)
    two_groups = torch.cat([torch.eye(2)[:1].repeat(3, 1), torch.eye(2)[1:].repeat(3, 1)])
    assert D.vendi_score(two_groups) == pytest.approx(2.0, abs=1e-9)
    assert D.vendi_score(torch.eye(3), kernel="linear") == pytest.approx(3.0, abs=1e-9)
    # centred: the corners of a simplex, N - 1 equally distinct directions, whatever they share
    corners = torch.eye(6, dtype=torch.float64) + 4.0
    assert D.vendi_score(corners) < 1.2
    assert D.vendi_score(corners, centre=True) == pytest.approx(5.0, abs=1e-9)
    with pytest.raises(ValueError, match="unknown kernel"):
        D.vendi_score(v, kernel="rbf")


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    assert D.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert D.frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # Isotropic Gaussians: FD = d (s1 - s2)^2 for covariances s1^2 I and s2^2 I.
    z = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    assert D.frechet_distance(z, 3 * z) == pytest.approx(3 * (3 - 1) ** 2, rel=1e-6)


def test_class_entropy_pixel_std_and_pairwise():
    logits = torch.eye(4).repeat(3, 1)
    assert D.class_entropy(logits) == pytest.approx(math.log(4))
    assert D.class_entropy(torch.eye(4)[[2, 2, 2]]) == 0.0
    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    assert torch.allclose(
        D.pixel_std_map(x), torch.full((1, 2, 2), math.sqrt(0.5), dtype=torch.float64)
    )
    assert D.mean_pairwise_distance(x) == pytest.approx(2.0)


def test_penultimate_takes_the_input_of_the_last_linear_layer():
    net = tiny_cnn()
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = D.penultimate(net, batch_size=2)(x)
    assert f.shape == (5, 32)
    assert torch.allclose(net[-1](f), net(x))
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        D.penultimate(torch.nn.Conv2d(1, 1, 1))


def test_diversity_and_realism_figures():
    net = tiny_cnn()
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    feats = D.penultimate(net)
    div = D.diversity(x, features=feats, classifier=net)
    assert set(div) == {
        "pairwise_pixel",
        "pixel_std_mean",
        "pairwise_feature",
        "vendi_feature",
        "class_entropy",
    }
    assert 1.0 <= div["vendi_feature"] <= 6.0
    real = D.realism(
        x, 2, judge=net, reference_features=feats(x), features=feats, prior=GaussianPrior()
    )
    probs = net(x).softmax(1)[:, 2]
    assert real["judge_prob"] == pytest.approx(float(probs.mean()))
    assert real["frechet"] == pytest.approx(0.0, abs=1e-8)
    assert real["prior_energy"] == pytest.approx(float(GaussianPrior()(x).mean()))
    with pytest.raises(ValueError, match="realism needs"):
        D.realism(x)


def _image_run(steps=30, chains=4, **kwargs):
    net = tiny_cnn(channels=1, classes=3)
    targets = torch.tensor([0, 0, 1, 1][:chains])
    energy = ClassLikelihood(net, targets) * 2.0 + GaussianPrior(sigma=0.5)
    x0 = torch.rand(
        chains, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    kwargs = {"warmup": 10, "step_size": 0.05, **kwargs}
    run = li.sample(energy, x0, steps=steps, progress=False, **kwargs)
    return run, net, targets


def test_export_summaries_projections_and_round_trips(tmp_path):
    run, net, targets = _image_run()
    feats = D.penultimate(net)
    dt = run.to_datatree(
        projections=3, projection_seed=5, features=feats, chain_groups=targets.numpy()
    )
    post = dt["posterior"]
    assert post.attrs["projection_seed"] == 5
    assert list(post["chain_group"].values) == [0, 0, 1, 1]
    # Projections are the pixels on the seeded directions, and the feature projections likewise.
    imgs = run.samples.reshape(4, 30, -1).numpy()
    dirs = D.random_directions(3, 36, 5)
    assert np.allclose(post["pixel_projection"].values, imgs @ dirs.T)
    f = feats(run.samples.reshape(-1, 1, 6, 6)).reshape(4, 30, -1).numpy()
    assert np.allclose(post["feature_projection"].values, f @ D.random_directions(3, 32, 6).T)
    # log p(y = c | x) is recorded unweighted, and the likelihood term weighted by 2.
    logp = torch.log_softmax(net(run.samples.reshape(-1, 1, 6, 6)), 1).reshape(4, 30, 3)
    want = logp.gather(2, targets[:, None, None].expand(4, 30, 1))[..., 0]
    assert np.allclose(post["log_prob_target"].values, want.numpy())
    assert np.allclose(post["likelihood"].values, -2 * want.numpy())
    # Exact round trips.
    dt.to_netcdf(tmp_path / "run.nc")
    dt.to_zarr(tmp_path / "run.zarr", consolidated=False)
    for back in (
        xr.open_datatree(tmp_path / "run.nc"),
        xr.open_datatree(tmp_path / "run.zarr", engine="zarr", consolidated=False),
    ):
        for group in ("posterior", "sample_stats", "warmup_sample_stats"):
            xr.testing.assert_identical(back[group].to_dataset(), dt[group].to_dataset())
    import arviz

    assert "posterior" in arviz.from_netcdf(tmp_path / "run.nc").children


def test_diagnose_a_real_run_with_groups_from_the_export():
    run, net, targets = _image_run(steps=40)
    dt = run.to_datatree(features=D.penultimate(net), chain_groups=targets.numpy())
    verdict = D.diagnose(dt, ess_min=10)
    assert set(verdict.table.index) >= {"energy", "log_prob_target", "pixel_projection[0]"}
    assert verdict.acceptance_rate == pytest.approx(float(run.acceptance_rate.mean()))


def test_diagnose_says_when_the_step_adapted_to_nothing():
    """A step too small to explore meets any acceptance target: the chains barely move, and
    the verdict says so (the lite0 failure of dual averaging at 2.4e-6), while a run that
    moves is not called frozen."""
    frozen_run, _, targets = _image_run(steps=40, step_size=1e-9, schedule=None)
    dt = frozen_run.to_datatree(chain_groups=targets.numpy())
    verdict = D.diagnose(dt, ess_min=10)
    assert not verdict.ok and "the chains barely moved" in str(verdict)
    assert "step size adapted to 1e-09" in str(verdict) and "--method descent" in str(verdict)
    moving, _, _ = _image_run(steps=40)
    assert "barely moved" not in str(D.diagnose(moving.to_datatree(), ess_min=10))


def test_plots_stay_under_the_subplot_limit(tmp_path):
    import matplotlib.pyplot as plt

    from langevin_images.diagnostics import plots as P

    run, net, _ = _image_run(steps=20)
    dt = run.to_datatree(projections=32, features=D.penultimate(net))
    for fn in (P.plot_trace, P.plot_rank, P.plot_autocorr, P.plot_ess_evolution):
        fn(dt).savefig(tmp_path / f"{fn.__name__}.png")
    figs = [
        P.plot_sampler_stats(dt),
        P.plot_pixel_map(D.pixel_maps(dt)),
        P.plot_image_grid(dt, draws=4),
    ]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"fig{i}.png")
    plt.close("all")
    frames = P.chain_frames(dt, chains=[0, 2], every=5, scale=2)
    assert len(frames) == 4 and frames[0].size == (2 * 15, 2 * 8)
    P.save_gif(frames, tmp_path / "chain.gif")
    assert (tmp_path / "chain.gif").stat().st_size > 0
    grid = P.image_grid(np.zeros((2, 3, 1, 4, 4)))
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3) and grid.dtype == np.uint8
    with pytest.raises(ValueError, match="rows, cols"):
        P.image_grid(np.zeros((2, 1, 4, 4)))


def test_descent_runs_are_judged_by_whether_their_energy_levelled_off():
    flat = np.concatenate([np.linspace(10, 1, 50), np.ones(50)])[None].repeat(3, 0)
    dt = azb.from_dict({"posterior": {"energy": flat}}, attrs={"posterior": {"method": "descent"}})
    verdict = D.diagnose(dt)
    assert verdict.ok and "R-hat and ESS do not apply" in str(verdict)
    assert "levelled off in all 3 chains" in str(verdict)
    falling = np.linspace(10, 1, 100)[None].repeat(3, 0)
    dt = azb.from_dict(
        {"posterior": {"energy": falling}}, attrs={"posterior": {"method": "descent"}}
    )
    verdict = D.diagnose(dt)
    assert not verdict.ok and "still falling in 3 of 3 chains" in str(verdict)
    assert verdict.suggestions == ["more steps"]
    # a jittered energy is noisy: levelled off is judged by its trend, and a fall still shows
    rng = np.random.default_rng(RNG_SEED)
    noise = rng.normal(0, 0.2, (3, 100))
    dt = azb.from_dict(
        {"posterior": {"energy": flat + noise}}, attrs={"posterior": {"method": "descent"}}
    )
    assert D.diagnose(dt).ok
    dt = azb.from_dict(
        {"posterior": {"energy": falling + noise}}, attrs={"posterior": {"method": "descent"}}
    )
    assert not D.diagnose(dt).ok
