"""Energies: algebra, priors against their plain-function twins, gradients, likelihoods,
activation and style energies, hooks, transforms, and terms recorded by the sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_cnn

import langevin_images as li
from langevin_images.energies import (
    ActivationEnergy,
    AdaINStatsEnergy,
    BlurEvery,
    BlurPenalty,
    ClassLikelihood,
    ContentEnergy,
    FeatureHooks,
    FittedGaussianPrior,
    GaussianPrior,
    RandomAffine,
    StationaryGaussianPrior,
    StyleEnergy,
    TotalVariation,
    Transformed,
    blur_penalty,
    capture,
    class_nll,
    gaussian_energy,
    total_variation,
)
from langevin_images.energies.features import _has_hooks
from langevin_images.samplers import Fourier


def images(n=3, c=3, h=8, w=8, seed=0, dtype=torch.float64):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_energy_algebra_and_terms():
    x = images()
    g, tv = GaussianPrior(0.5), TotalVariation()
    e = 2.0 * g + 0.1 * tv
    total, terms = e.evaluate(x)
    torch.testing.assert_close(total, 2 * g(x) + 0.1 * tv(x))
    assert set(terms) == {"prior_gaussian", "prior_tv"}
    torch.testing.assert_close(terms["prior_tv"], 0.1 * tv(x))
    torch.testing.assert_close(sum(terms.values()), total)
    twice = g + g
    assert set(twice.terms(x)) == {"prior_gaussian", "prior_gaussian_2"}
    torch.testing.assert_close((g - 0.5 * g)(x), 0.5 * g(x))
    assert "0.1 * TotalVariation" in repr(e)
    assert (3 * (2 * g)).weight == 6.0


@pytest.mark.parametrize("isotropic", [True, False])
def test_priors_agree_with_their_twins(isotropic):
    x = images(seed=1)
    torch.testing.assert_close(GaussianPrior(0.3, mean=0.4)(x), gaussian_energy(x, 0.3, 0.4))
    torch.testing.assert_close(
        TotalVariation(0.01, isotropic=isotropic)(x), total_variation(x, 0.01, isotropic)
    )
    torch.testing.assert_close(BlurPenalty(1.2)(x), blur_penalty(x, 1.2))


@pytest.mark.parametrize(
    "prior",
    [
        GaussianPrior(0.5),
        TotalVariation(0.05),
        TotalVariation(0.05, isotropic=False),
        BlurPenalty(0.8),
        StationaryGaussianPrior((2, 5, 5)),
    ],
    ids=repr,
)
def test_prior_gradients(prior):
    x = images(2, 2, 5, 5, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(prior, (x,))


def test_fitted_gaussian_dense_and_low_rank():
    data = images(200, 1, 4, 4, seed=3)
    dense = FittedGaussianPrior.fit(data, shrinkage=1e-2)
    low = FittedGaussianPrior.fit(data, shrinkage=1e-2, rank=16, max_dense=8)
    x = images(4, 1, 4, 4, seed=4)
    flat = data.reshape(200, -1)
    mu = flat.mean(0)
    cov = torch.cov(flat.T) + 1e-2 * torch.eye(16, dtype=torch.float64)
    d = x.reshape(4, -1) - mu
    want = 0.5 * ((d @ torch.linalg.inv(cov)) * d).sum(1)
    torch.testing.assert_close(dense(x), want, rtol=1e-5, atol=1e-5)
    # full rank kept in the low-rank form: the same Gaussian
    torch.testing.assert_close(low(x), want, rtol=1e-4, atol=1e-4)
    assert dense.preconditioner.dim == 16
    with pytest.raises(ValueError, match="built for images of shape"):
        dense(images(2, 1, 5, 5))


def test_stationary_prior_pairs_with_fourier():
    p = StationaryGaussianPrior((1, 8, 8), alpha=2.0, sigma=0.2)
    assert isinstance(p.preconditioner, Fourier) and p.preconditioner.decay == 1.0
    assert float(p(torch.full((1, 1, 8, 8), 0.5))) == pytest.approx(0.0, abs=1e-6)


def test_class_likelihood_matches_the_softmax_twin():
    net = tiny_cnn()
    x = images(4)
    lik = ClassLikelihood(net, "class2", temperature=2.0)
    torch.testing.assert_close(lik(x), class_nll(net(x), torch.full((4,), 2), 2.0))
    per_chain = ClassLikelihood(net, [0, 1, 2, 3])
    logp = torch.log_softmax(net(x), 1)
    torch.testing.assert_close(per_chain(x), -logp[torch.arange(4), torch.arange(4)])


def test_class_likelihood_bad_input():
    net = tiny_cnn()
    with pytest.raises(ValueError, match=r"unknown class name 'clas2'; closest: class2"):
        ClassLikelihood(net, "clas2")
    with pytest.raises(ValueError, match="class index 7 out of range: the model has 5 classes"):
        ClassLikelihood(net, 7)
    with pytest.raises(ValueError, match=r"expected 3 channel\(s\), got 1"):
        ClassLikelihood(net, 0)(images(2, 1))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        ClassLikelihood(net, 0)(torch.rand(2, 3, 8))
    with pytest.raises(ValueError, match="3 targets for 2 chains"):
        ClassLikelihood(net, [0, 1, 2])(images(2))


def test_hooks_are_removed_after_a_run_and_after_an_error():
    net = tiny_cnn()
    x = images(2)
    feats = capture(net, ["1", "3"], x)
    assert feats["1"].shape == (2, 6, 8, 8) and feats["3"].shape == (2, 8, 4, 4)
    assert not _has_hooks(net)
    with pytest.raises(RuntimeError, match="boom"), FeatureHooks(net, ["1"]) as hooks:
        hooks.run(x)
        assert _has_hooks(net)
        raise RuntimeError("boom")
    assert not _has_hooks(net)
    with pytest.raises(ValueError, match=r"unknown layer '9'"):
        capture(net, ["9"], x)


def test_stop_early_skips_later_layers():
    net = tiny_cnn()
    calls = []
    handle = net[6].register_forward_hook(lambda *a: calls.append(1))
    capture(net, ["1"], images(2))
    assert calls == []
    capture(net, ["1"], images(2), stop_early=False)
    assert calls == [1]
    handle.remove()


def test_activation_objectives():
    net = tiny_cnn()
    x = images(3)
    act = capture(net, ["3"], x)["3"]
    per_chain = ActivationEnergy(net, "3", channel=torch.tensor([0, 5, 7]))
    torch.testing.assert_close(per_chain(x), -act[[0, 1, 2], [0, 5, 7]].mean((1, 2)))
    neuron = ActivationEnergy(net, "3", channel=2, neuron=(1, 3))
    torch.testing.assert_close(neuron(x), -act[:, 2, 1, 3])
    layer = ActivationEnergy(net, "3")
    torch.testing.assert_close(layer(x), -act.square().mean((1, 2, 3)))
    d = torch.zeros(8, dtype=torch.float64)
    d[4] = 2.0
    torch.testing.assert_close(ActivationEnergy(net, "3", direction=d)(x), -act[:, 4].mean((1, 2)))
    with pytest.raises(ValueError, match="out of range: layer '3' has 8 channels"):
        ActivationEnergy(net, "3", channel=8)(x)


def test_activation_maximization_raises_the_activation():
    net = tiny_cnn()
    energy = ActivationEnergy(net, "3", channel=1) + 0.01 * TotalVariation()
    run = li.sample(energy, images(2), steps=50, method="descent", step_size=0.05, progress=False)
    e = run.stats["energy"]
    assert torch.all(e[:, -1] < e[:, 0])
    assert set(k for k in run.stats if k.startswith("term_")) == {
        "term_activation",
        "term_prior_tv",
    }
    torch.testing.assert_close(run.stats["term_activation"] + run.stats["term_prior_tv"], e)
    assert not _has_hooks(net)
    dt = run.to_datatree()
    assert {"activation", "prior_tv", "energy"} <= set(dt["posterior"].data_vars)


def test_transformed_energy_is_seeded_and_shape_preserving():
    net = tiny_cnn()
    x = images(4)
    t1 = Transformed(ClassLikelihood(net, 1), RandomAffine(2, (0.9, 1.1), 10.0, seed=3))
    t2 = Transformed(ClassLikelihood(net, 1), RandomAffine(2, (0.9, 1.1), 10.0, seed=3))
    a, b = t1(x), t2(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(t1(x), a)  # a fresh transform at every call
    assert RandomAffine(0)(x).shape == x.shape
    torch.testing.assert_close(RandomAffine(0)(x), x, atol=1e-6, rtol=0)


def test_random_affine_grid_is_affine_grid_with_the_same_draws():
    """The broadcast sampling grid equals F.affine_grid's for the same random numbers."""
    x = torch.rand((5, 3, 20, 28), dtype=torch.float64)
    seed, jitter, scale, degrees = 4, 6, (0.8, 1.2), 20.0
    u = torch.rand((5, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    angle = (2 * u[:, 0] - 1) * math.radians(degrees)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    tx, ty = (2 * u[:, 2] - 1) * jitter * 2 / 28, (2 * u[:, 3] - 1) * jitter * 2 / 20
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    got = RandomAffine(jitter, scale, degrees, seed=seed)(x)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_random_affine_is_differentiable_in_its_draws():
    """The grid (a permuted view of (N, 2, H, W) planes) carries gradients to the draws."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand((2, 3, 9, 7), generator=g, dtype=torch.float64)
    u = torch.rand((2, 4), generator=g, dtype=torch.float64).requires_grad_(True)
    t = RandomAffine(2, (0.8, 1.2), 20.0)
    assert not t._grid(x, u).is_contiguous()
    assert torch.autograd.gradcheck(lambda u: t.warp(x, u), (u,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 3, 20, 28), (2, 1, 33, 17), (1, 8, 64, 64)])
def test_random_affine_gradient_is_grid_samples_to_the_bit(dtype, shape):
    """The warp's own backward (input gradient only, a stand-in input) gives ATen's gradient."""
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g, dtype=dtype)
    u = torch.rand((shape[0], 4), generator=g, dtype=dtype)
    n, c, h, w = shape
    # a non-contiguous weight gives the warp a non-contiguous incoming gradient
    weights = torch.randn((n, c, w, h), generator=g, dtype=dtype).transpose(-1, -2)
    t = RandomAffine(5, (0.8, 1.2), 30.0)
    xa = x.clone().requires_grad_(True)
    y = t.warp(xa, u)
    seen = []
    y.register_hook(lambda grad_y: seen.append(grad_y.is_contiguous()))
    (grad,) = torch.autograd.grad((y * weights).sum(), xa)
    assert seen == [False]
    ub = u.clone().requires_grad_(True)  # a differentiated draw takes grid_sample's own path
    xb = x.clone().requires_grad_(True)
    y_ref = t.warp(xb, ub)
    assert y_ref.grad_fn.name() == "GridSampler2DBackward0"
    assert y.grad_fn.name() != y_ref.grad_fn.name()
    (grad_ref,) = torch.autograd.grad((y_ref * weights).sum(), xb)
    assert torch.equal(y, y_ref)
    assert torch.equal(grad, grad_ref) and grad.is_contiguous()


def test_style_energies_vanish_at_their_targets():
    net = tiny_cnn()
    content, style = images(1, seed=5), images(1, seed=6)
    c = ContentEnergy(net, ["1", "3"], content)
    s = StyleEnergy(net, ["1", "3"], style, weights=[1.0, 0.5])
    a = AdaINStatsEnergy(net, ["3"], style)
    assert float(c(content)) == pytest.approx(0.0, abs=1e-12)
    assert float(s(style)) == pytest.approx(0.0, abs=1e-12)
    assert float(a(style)) == pytest.approx(0.0, abs=1e-12)
    assert float(c(style)) > 0 and float(s(content)) > 0 and float(a(content)) > 0


def test_blur_every_is_applied_and_counted():
    run = li.sample(
        GaussianPrior(1.0),
        images(2),
        steps=12,
        method="ula",
        transform=BlurEvery(4, 1.0),
        progress=False,
    )
    assert run.grad_evals == 1 + 12 + 3
    assert "not a Langevin move" in run.config["transform"]
    with pytest.raises(TypeError, match="every"):
        li.sample(GaussianPrior(1.0), images(2), steps=2, transform=lambda x: x, progress=False)
