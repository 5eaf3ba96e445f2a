"""Activation maximization and DeepDream: the energy falls at T = 0, hooks are removed after a
run and after an error, same seed same result, the octave pipeline keeps the input's size,
the T > 0 variants give different images; tiny random CNNs, and lite0 at small size."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_cnn

import langevin_images as li
from langevin_images.apps import dream, layer_channels, octave_sizes, visualize, visualize_variety
from langevin_images.energies import (
    ActivationEnergy,
    DreamEnergy,
    RandomRoll,
    activation_objective,
    blur_penalty,
    guided_objective,
)
from langevin_images.energies.features import _has_hooks


def test_normalize_step_moves_each_chain_by_step_size_on_average():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    scales = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)

    def energy(x):
        return (scales * x.flatten(1).square().sum(1)) / 2

    run = li.sample(energy, x0, steps=1, method="descent", step_size=0.01, normalize_step=True,
                    progress=False)  # fmt: skip
    moved = (run.final_position - x0).abs().flatten(1).mean(1)
    torch.testing.assert_close(moved, torch.full((3,), 0.01, dtype=torch.float64))
    with pytest.raises(ValueError, match="normalize_step"):
        li.sample(energy, x0, steps=1, method="mala", normalize_step=True, progress=False)


def test_visualize_raises_each_channels_activation_and_is_reproducible():
    net = tiny_cnn()
    assert layer_channels(net, "2") == 8
    x0 = torch.full((4, 3, 16, 16), 0.5, dtype=torch.float64)
    before = -ActivationEnergy(net, "2", channel=torch.arange(4))(x0)
    vis = visualize(net, "2", 4, size=16, steps=40, step_size=0.1, progress=False, tv=0.01)
    plain = visualize(net, "2", 4, size=16, steps=40, step_size=0.1, progress=False)
    blurred = visualize(net, "2", 4, size=16, steps=40, step_size=0.1, progress=False, blur=5.0)
    assert "term_prior_blur" in blurred.run.stats
    assert float(blur_penalty(blurred.images).sum()) < float(blur_penalty(plain.images).sum())
    assert vis.images.shape == (4, 3, 16, 16) and vis.channels == [0, 1, 2, 3]
    assert bool((vis.objective > before).all()), (before, vis.objective)
    assert float(vis.images.min()) >= 0 and float(vis.images.max()) <= 1
    again = visualize(net, "2", 4, size=16, steps=40, step_size=0.1, progress=False, tv=0.01)
    assert torch.equal(vis.images, again.images)
    other = visualize(net, "2", 4, size=16, steps=40, step_size=0.1, progress=False, seed=1)
    assert not torch.equal(vis.images, other.images)
    assert not _has_hooks(net)


def test_visualize_without_transforms_descends_the_energy():
    net = tiny_cnn()
    vis = visualize(net, "2", [5], size=16, steps=30, step_size=0.05, jitter=0, scale=(1.0, 1.0),
                    degrees=0.0, progress=False, thin=1)  # fmt: skip
    energy = vis.run.stats["energy"][0]
    assert float(energy[-1]) < float(energy[0])
    assert float((energy[1:] <= energy[:-1] + 1e-9).double().mean()) > 0.9


def test_visualize_neurons_from_an_image_and_grayscale_models():
    net = tiny_cnn(channels=1)
    start = torch.rand(1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    vis = visualize(net, "0", [0, 1], neuron="center", size=16, init=start, steps=10,
                    progress=False)  # fmt: skip
    assert vis.images.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="init must be"):
        visualize(net, "0", [0, 1], size=16, init=torch.rand(3, 1, 16, 16), progress=False)


def test_hooks_are_removed_after_an_error():
    net = tiny_cnn()
    with pytest.raises(ValueError, match="out of range"):
        visualize(net, "2", [99], size=16, steps=3, progress=False)
    assert not _has_hooks(net)
    with pytest.raises(ValueError, match="channel"):
        dream(net, torch.rand(1, 1, 16, 16, dtype=torch.float64), "2", progress=False)

    def broken(x):
        raise RuntimeError("layer failed")

    net[3].forward = broken  # fails after the hooked layers "0" and "2" have run
    for call in (
        lambda: dream(net, torch.rand(3, 16, 16, dtype=torch.float64), ["0", "4"], progress=False),
        lambda: visualize(net, "4", [0], size=16, steps=3, progress=False),
    ):
        with pytest.raises(RuntimeError, match="layer failed"):
            call()
        assert not _has_hooks(net)


def test_visualize_variety_gives_different_images_per_channel():
    net = tiny_cnn()
    vis = visualize(net, "2", 2, size=16, steps=20, progress=False)
    var = visualize_variety(vis, net, chains_per_channel=3, temperature=0.05, steps=20,
                            progress=False)  # fmt: skip
    assert var.images.shape == (6, 3, 16, 16) and var.channels == [0, 0, 0, 1, 1, 1]
    assert var.run.config["method"] == "ula" and var.temperature == 0.05
    assert not torch.equal(var.images[0], var.images[1])
    with pytest.raises(ValueError, match="temperature > 0"):
        visualize_variety(vis, net, temperature=0.0, progress=False)


def test_dream_energy_serves_several_layers_with_one_forward_pass():
    net = tiny_cnn()
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    try:
        e = DreamEnergy(net, ["0", "2"], weights=[1.0, 2.0])(x)
    finally:
        handle.remove()
    assert len(calls) <= 1  # stop_early may end before the model's own output
    a0 = ActivationEnergy(net, "0")(x)
    a2 = ActivationEnergy(net, "2")(x)
    torch.testing.assert_close(e, a0 + 2 * a2)


def test_guided_objective_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    act = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    guide = torch.randn(4, 5, generator=g, dtype=torch.float64)
    want = []
    for n in range(2):
        best = [
            max(float(act[n, :, i, j] @ guide[:, q]) for q in range(5))
            for i in range(3)
            for j in range(3)
        ]
        want.append(sum(best) / len(best))
    torch.testing.assert_close(
        guided_objective(act, guide), torch.tensor(want, dtype=torch.float64)
    )
    assert activation_objective(act).shape == (2,)


def test_random_roll_is_a_seeded_per_chain_circular_shift():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).reshape(2, 1, 4, 4)
    a, b = RandomRoll(2, seed=3)(x), RandomRoll(2, seed=3)(x)
    assert torch.equal(a, b)
    for i in range(2):
        assert sorted(a[i].flatten().tolist()) == sorted(x[i].flatten().tolist())
    assert torch.equal(RandomRoll(0)(x), x)


def test_octave_pipeline_keeps_the_size_and_dreams_reproducibly():
    assert octave_sizes((100, 140), 4, 1.4)[-1] == (100, 140)
    assert octave_sizes((100, 140), 4, 1.4)[0] == (36, 51)
    net = tiny_cnn()
    img = torch.rand(3, 30, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = dream(net, img, "2", octaves=3, steps_per_octave=4, jitter=4, progress=False)
    assert d.images.shape == (1, 3, 30, 41) and len(d.runs) == 3
    assert [tuple(r.final_position.shape[-2:]) for r in d.runs] == d.sizes
    assert not torch.equal(d.images, img[None])
    again = dream(net, img, "2", octaves=3, steps_per_octave=4, jitter=4, progress=False)
    assert torch.equal(d.images, again.images)
    # The dream raises the layer's activation over the photo's.
    e = DreamEnergy(net, "2")
    assert float(e(d.images)) < float(e(img[None]))


def test_guided_and_stochastic_dreams():
    net = tiny_cnn()
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 24, 24, dtype=torch.float64, generator=g)
    guide = torch.rand(1, 3, 20, 20, dtype=torch.float64, generator=g)
    d = dream(net, img, ["0", "2"], guide=guide, octaves=2, steps_per_octave=3, progress=False)
    assert d.images.shape == img.shape
    s = dream(net, img, "2", octaves=2, steps_per_octave=3, temperature=0.05, chains=3,
              progress=False)  # fmt: skip
    assert s.images.shape == (3, 3, 24, 24)
    assert not torch.equal(s.images[0], s.images[1])
    with pytest.raises(ValueError, match="one image"):
        dream(net, torch.rand(2, 3, 8, 8), "2", progress=False)


def test_lite0_layer_visualization_and_dream_at_small_size():
    from langevin_images.models import load_model

    model = load_model("lite0")
    vis = visualize(model, "net._blocks.2", 2, size=32, steps=4, progress=False)
    assert vis.images.shape == (2, 3, 32, 32)
    d = dream(model, torch.full((3, 40, 40), 0.5), "net._blocks.4", octaves=2, steps_per_octave=2,
              progress=False)  # fmt: skip
    assert d.images.shape == (1, 3, 40, 40)
    assert not _has_hooks(model)


def test_dream_says_when_the_smallest_octave_is_too_small():
    from langevin_images.models import load_model

    model = load_model("lite0")
    with pytest.raises(ValueError, match="smallest octave, 15x15 px, is too small"):
        dream(model, torch.full((3, 40, 40), 0.5), "_blocks.9", octaves=4, progress=False)
