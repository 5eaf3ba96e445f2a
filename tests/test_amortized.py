"""Amortized style transfer: AdaIN, conditional instance norm, the training loop, the ONNX import
and the ``style --method johnson|cin|adain`` and ``train-style`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_style import photo, tiny_vgg

from langevin_images.apps.amortized import random_crops, stylize, train
from langevin_images.cli import main
from langevin_images.models.stylenets import (
    AdaINNet,
    TransformNet,
    adain,
    load_network,
    network_path,
    save_network,
)

TINY = {"contract": (4, 6, 8), "blocks": 1, "expand": (6, 4)}


def tiny_vgg32(seed=0):
    return tiny_vgg(seed).float()


def photos(n=3, size=(40, 48)):
    return [photo(10 + k, size).float() for k in range(n)]


def test_adain_carries_the_style_statistics_and_alpha_0_the_content():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 7, generator=g) * 3 + 1
    y = torch.randn(1, 5, 4, 4, generator=g) * 0.5 - 2
    out = adain(x, y)
    flat_out, flat_y = out.flatten(2), y.flatten(2)
    assert torch.allclose(flat_out.mean(-1), flat_y.mean(-1).expand(2, -1), atol=1e-5)
    sd_out = flat_out.var(-1, unbiased=False).sqrt()
    sd_y = flat_y.var(-1, unbiased=False).sqrt().expand(2, -1)
    assert torch.allclose(sd_out, sd_y, rtol=1e-3)  # up to eps = 1e-5 in the variances
    # through the network: the decoder's input at the AdaIN layer
    net = AdaINNet(tiny_vgg32(), width=0.05, in_channels=8)
    c, s = photo(1, (32, 40)).float(), photo(2, (24, 24)).float()
    t = net.transfer_features(c, s)
    fs, fc = net.encode(s), net.encode(c)
    assert torch.allclose(t.mean((2, 3)), fs.mean((2, 3)), atol=1e-6)
    # var(t) = (var_s + eps) var_c / (var_c + eps): the style's, up to eps (these features are
    # small, so eps shows; the random tensors above show the plain equality)
    var_s, var_c = fs.var((2, 3), unbiased=False), fc.var((2, 3), unbiased=False)
    expected = (var_s + 1e-5) * var_c / (var_c + 1e-5)
    assert torch.allclose(t.var((2, 3), unbiased=False), expected, rtol=1e-4, atol=1e-9)
    assert torch.equal(net.transfer_features(c, s, alpha=0.0), net.encode(c))
    half = net.transfer_features(c, s, alpha=0.5)
    assert torch.allclose(half, 0.5 * t + 0.5 * net.encode(c), atol=1e-6)
    # two styles mixed with weight 1 on the second is the second
    s2 = photo(3, (24, 24)).float()
    assert torch.allclose(
        net.transfer_features(c, [s, s2], style_weights=[0.0, 1.0]),
        net.transfer_features(c, s2),
        atol=1e-6,
    )
    # a style encoded once gives the same result for any content
    stats = net.style_statistics([s, s2], [0.3, 0.7])
    assert torch.allclose(
        net.transfer_features(c, statistics=stats),
        net.transfer_features(c, [s, s2], style_weights=[0.3, 0.7]),
        atol=1e-6,
    )
    assert torch.allclose(
        stylize(net, c, statistics=stats), stylize(net, c, styles=[s, s2], style_weights=[3, 7])
    )
    with pytest.raises(ValueError, match="alpha"):
        net.transfer_features(c, s, alpha=1.5)
    assert net(c, s).shape == c.shape


def test_adain_on_a_zoo_encoder_runs_a_channels_last_copy_of_its_layers():
    from langevin_images.energies import capture
    from langevin_images.models.zoo import ZooModel

    zoo = ZooModel(tiny_vgg32(), name="tiny", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    net = AdaINNet(zoo, width=0.1, in_channels=8)
    assert net.trunk is not None and net.trunk is not zoo.net
    c, s = photo(3, (32, 40)).float(), photo(4, (24, 24)).float()
    # the trunk's features are the zoo model's at relu4_1, read by a hook
    assert torch.allclose(net.encode(c), capture(zoo, ["relu4_1"], c)["relu4_1"], atol=1e-6)
    with torch.no_grad():
        before = net(c, [s])
        net.channels_last()
        after = net(c, [s])
    assert net.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net.decoder[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.is_contiguous() for p in zoo.parameters())  # the zoo model is left as it was
    assert after.is_contiguous() and torch.allclose(after, before, atol=1e-5)


def test_cin_interpolation_at_weight_1_is_that_style_and_halfway_mixes_gamma_beta():
    torch.manual_seed(0)
    net = TransformNet(3, **TINY, style_names=["a", "b", "c"])
    for norm in net.norms():  # distinct styles
        norm.gamma.data.uniform_(0.5, 1.5)
        norm.beta.data.uniform_(-0.5, 0.5)
    x = photo(4, (32, 36)).float()
    for k, name in enumerate(net.style_names):
        one_hot = [0.0] * 3
        one_hot[k] = 1.0
        assert torch.equal(net(x, one_hot), net(x, k))
        assert torch.equal(net(x, name), net(x, k))
    assert not torch.allclose(net(x, 0), net(x, 1))
    # halfway: each norm uses the mean of the two styles' gamma and beta
    norm = net.contract[0].norm
    f = torch.randn(1, norm.gamma.shape[1], 5, 5)
    mixed = norm(f, torch.tensor([[0.5, 0.5, 0.0]]))
    g, b = (norm.gamma[0] + norm.gamma[1]) / 2, (norm.beta[0] + norm.beta[1]) / 2
    expected = torch.nn.functional.instance_norm(f, eps=1e-5) * g[:, None, None] + b[:, None, None]
    assert torch.allclose(mixed, expected, atol=1e-6)
    # any size: padded to the stride, cropped back
    assert net(photo(5, (33, 35)).float(), 2).shape == (1, 3, 33, 35)
    with pytest.raises(ValueError, match="unknown style"):
        net(x, "zebra")
    with pytest.raises(ValueError, match="out of range"):
        net(x, 7)


@pytest.mark.parametrize("kind", ["johnson", "cin", "adain"])
def test_a_short_training_lowers_the_loss_of_every_style(kind, tmp_path):
    torch.manual_seed(0)
    vgg = tiny_vgg32()
    styles = photos(1 if kind == "johnson" else 2, (32, 32))
    result = train(
        kind, styles, model=vgg, out=tmp_path, style_names=["s0", "s1"][: len(styles)],
        steps=60, batch=2, size=32, lr=5e-3, arch=TINY, width=0.1, in_channels=8,
        content=photos(), progress=False,
    )  # fmt: skip
    first = _means(result.history, 8, last=False)
    last = _means(result.history, 8, last=True)
    assert set(first) == {"s0", "s1"} if kind != "johnson" else set(first) == {"s0"}
    for name in first:
        assert last[name] < 0.8 * first[name], (kind, name, first[name], last[name])
    net, loaded_kind, meta = load_network(tmp_path / "network.pt", encoder=vgg)
    assert loaded_kind == kind
    assert meta["training"]["steps"] == 60
    x = photo(7, (32, 32)).float()
    if kind == "adain":
        assert torch.equal(
            stylize(net, x, styles=styles[:1]), stylize(result.net, x, styles=styles[:1])
        )
    else:
        assert torch.equal(stylize(net, x, style=0), stylize(result.net, x, style=0))


def _means(history, window, *, last):
    from langevin_images.apps.amortized import _window_means

    return _window_means(history, window, last=last)


def test_an_interrupted_training_resumes_to_the_same_network_bit_for_bit(tmp_path):
    vgg = tiny_vgg32()
    styles = photos(2, (32, 32))
    kw = dict(model=vgg, style_names=["a", "b"], steps=8, batch=2, size=32, arch=TINY,
              content=photos(), progress=False, checkpoint_every=3)  # fmt: skip
    whole = train("cin", styles, out=tmp_path / "whole", **kw)

    def stop(step, row):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("cin", styles, out=tmp_path / "cut", callback=stop, **kw)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5  # the checkpoint at the interruption, not the earlier one (3)
    resumed = train("cin", styles, out=tmp_path / "cut", resume=True, **kw)
    assert resumed.resumed_from == 5
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]
    with pytest.raises(ValueError, match="other settings"):
        train("cin", styles, out=tmp_path / "cut", resume=True, **{**kw, "steps": 9,
                                                                   "batch": 3})  # fmt: skip


def test_a_style_added_to_a_cin_network_trains_only_its_gamma_beta(tmp_path):
    vgg = tiny_vgg32()
    first = train("cin", photos(2, (32, 32)), model=vgg, out=tmp_path / "a", steps=4, batch=2,
                  size=32, arch=TINY, content=photos(), progress=False)  # fmt: skip
    base, _, _ = load_network(tmp_path / "a" / "network.pt")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    x = photo(8, (32, 32)).float()
    old = [base(x, k) for k in range(2)]
    new = train("cin", [photo(30, (32, 32)).float()], model=vgg, out=tmp_path / "b",
                style_names=["new"], steps=6, batch=2, size=32, lr=1e-2, content=photos(),
                base=base, progress=False)  # fmt: skip
    net = new.net
    assert net.style_names == ["0", "1", "new"] and first.net.styles == 2
    after = net.state_dict()
    for k, v in before.items():
        if k.endswith(("gamma", "beta")):
            assert torch.equal(after[k][:2], v), k  # the old styles' rows are untouched
            assert not torch.equal(after[k][2], torch.ones_like(v[0]) * (k.endswith("gamma")))
        else:
            assert torch.equal(after[k], v), k  # no convolution moved
    for k in range(2):
        assert torch.equal(net(x, k), old[k])


def test_the_training_loss_is_the_gatys_energy_of_each_image():
    from langevin_images.apps.amortized import GatysLoss
    from langevin_images.apps.style import style_energy

    vgg = tiny_vgg32()
    styles = photos(2, (32, 32))
    kw = dict(content_weight=1.0, style_weight=5.0, tv_weight=0.3)
    loss = GatysLoss(vgg, styles, **kw)
    x = torch.cat(photos(3, (32, 32)))
    y = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([1, 0, 1])
    got = loss(y, x, index)
    for n in range(3):
        energy = style_energy(vgg, x[n : n + 1], styles[int(index[n])], **kw)
        assert float(got[n]) == pytest.approx(float(energy(y[n : n + 1])), rel=1e-4)


def test_random_crops_are_seeded_squares_from_the_images():
    imgs = photos(2, (40, 56))
    a = random_crops(imgs, 5, 24, torch.Generator().manual_seed(3))
    b = random_crops(imgs, 5, 24, torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 24, 24) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1


def test_networks_round_trip_weights_only(tmp_path):
    net = TransformNet(2, **TINY, style_names=["x", "y"])
    save_network(net, tmp_path / "n.pt", kind="cin", meta={"note": "test"})
    payload = torch.load(tmp_path / "n.pt", weights_only=True)
    assert payload["config"]["style_names"] == ["x", "y"]
    back, kind, meta = load_network(tmp_path / "n.pt")
    x = photo(9, (32, 32)).float()
    assert kind == "cin" and meta == {"note": "test"}
    assert torch.equal(back(x, "y"), net(x, "y"))
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(ValueError, match="not a network"):
        load_network(tmp_path / "junk.pt")


def test_the_onnx_cin_network_agrees_with_onnxruntime_on_the_bundled_photos():
    ort = pytest.importorskip("onnxruntime")
    from langevin_images.datasets import PHOTOS, load_photo

    net, kind, _ = load_network("multistyle26")
    assert kind == "cin" and net.styles == 26
    session = ort.InferenceSession(str(network_path("multistyle26")),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    worst = 0.0
    for k, name in enumerate(PHOTOS):
        x = load_photo(name, 96)
        x = x[..., : x.shape[-2] // 4 * 4, : x.shape[-1] // 4 * 4]
        for style in (k, 7 + k, 19 + k):
            w = np.zeros(26, np.float32)
            w[style] = 1.0
            ref = session.run(None, {"image": x.numpy(), "style_weights": w})[0]
            ours = net(x, style).numpy()
            worst = max(worst, float(np.abs(ours - ref).max()))
        mix = np.full(26, 1 / 26, np.float32)  # and a mixture of all 26
        ref = session.run(None, {"image": x.numpy(), "style_weights": mix})[0]
        worst = max(worst, float(np.abs(net(x, mix.tolist()).numpy() - ref).max()))
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("method", ["johnson", "cin", "adain"])
def test_style_command_runs_the_committed_networks(method, tmp_path):
    out = tmp_path / method
    extra = {
        "johnson": [],
        "cin": ["--style", "ihc", "--style", "gravel"],
        "adain": ["--style", "hubble", "--alpha", "0.7", "--preserve-color", "histogram"],
    }
    rc = main(["style", "--method", method, "--size", "48", "--out", str(out), "--quiet",
               "--device", "cpu", *extra[method]])  # fmt: skip
    assert rc == 0
    card = json.loads((out / "run.json").read_text())
    assert card["method"] == method and card["seconds"] > 0
    assert card["gatys_energy"]["energy"] > 0  # the style images are known: the gap is measured
    assert (out / "stylized.png").exists() and (out / "style_0.png").exists()


def test_style_command_refuses_what_a_network_cannot_do(tmp_path, capsys):
    def run(*argv):
        return main(["style", "--size", "48", "--out", str(tmp_path / "x"), "--quiet", *argv])

    assert run("--method", "cin", "--style", "26") == 2
    assert "out of range" in capsys.readouterr().err
    assert run("--method", "cin", "--style", "zebra") == 2
    assert "unknown style" in capsys.readouterr().err
    assert run("--method", "johnson", "--alpha", "0.5") == 2
    assert run("--method", "gatys", "--alpha", "0.5") == 2
    assert run("--method", "johnson", "--preserve-color", "histogram") == 2
    assert run("--method", "adain", "--style-weight", "1", "--style-weight", "2") == 2
    assert "one weight per style" in capsys.readouterr().err
    assert run("--method", "adain", "--weights", "cin-3") == 2
    assert "a cin network, not for --method adain" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_style_command_trains_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "t"
    base = ["train-style", "--kind", "cin", "--style", "ihc", "--style", "gravel", "--size",
            "32", "--photo-size", "48", "--batch", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main([*base, "--steps", "2", "--out", str(out)]) == 0
    for name in ("network.pt", "checkpoint.pt", "loss.csv", "loss.png", "samples.png"):
        assert (out / name).exists(), name
    assert main(["train-style", "--resume", str(out), "--steps", "3", "--quiet"]) == 0
    card = json.loads((out / "run.json").read_text())
    assert card["steps"] == 3 and card["resumed_from"] == 2
    rc = main(["style", "--method", "cin", "--weights", str(out / "network.pt"), "--style",
               "gravel", "--size", "32", "--out", str(tmp_path / "s"), "--quiet"])  # fmt: skip
    assert rc == 0
    assert main([*base, "--kind", "johnson", "--steps", "1", "--out", str(tmp_path / "j")]) == 2
    assert main([*base, "--no-photos", "--steps", "1", "--out", str(tmp_path / "j")]) == 2
    assert main([*base, "--style-size", "20", "--steps", "1", "--out", str(tmp_path / "j")]) == 2
    adain = [*base[:2], "adain", *base[3:]]
    assert main([*adain, "--add-to", "cin-3", "--steps", "1", "--out", str(tmp_path / "j")]) == 2
    assert not (tmp_path / "j").exists()  # refused before its folder was made


def test_train_style_trains_on_a_folder_of_the_users_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(2):
        a = (photo(40 + k, (48, 64))[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"p{k}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "t"
    rc = main(["train-style", "--content-dir", str(folder), "--no-photos", "--size", "32",
               "--photo-size", "40", "--batch", "1", "--steps", "2", "--quiet", "--out",
               str(out)])  # fmt: skip
    assert rc == 0
    spec = json.loads((out / "train.json").read_text())
    assert spec["content_dir"] == [str(folder)] and spec["photos"] is False


def test_a_training_killed_with_sigkill_resumes_to_the_uninterrupted_network(tmp_path):
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "langevin_images.cli", "train-style", "--kind", "johnson",
           "--size", "32", "--photo-size", "48", "--batch", "1", "--steps", "60",
           "--checkpoint-every", "4", "--threads", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run([*cmd, "--out", str(whole)], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(cut)], stderr=subprocess.PIPE)
    step, t0 = 0, time.monotonic()
    while step < 8 and time.monotonic() - t0 < 120 and proc.poll() is None:
        time.sleep(0.02)
        try:
            step = torch.load(cut / "checkpoint.pt", weights_only=True)["step"]
        except (FileNotFoundError, EOFError, RuntimeError):
            pass
    proc.kill()
    proc.wait()
    assert 8 <= step < 60 and not (cut / "network.pt").exists(), "the kill came too late"
    subprocess.run([sys.executable, "-m", "langevin_images.cli", "train-style", "--resume",
                    str(cut), "--quiet"], check=True, capture_output=True)  # fmt: skip
    a = torch.load(whole / "network.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "network.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "run.json").read_text())["resumed_from"] >= 8
