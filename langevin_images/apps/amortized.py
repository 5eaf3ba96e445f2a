"""Amortized style transfer: train a network to predict the optimization's result (section
14.6.5.2 of the book), and stylize with it.

**One training loop** (``train``) for the three kinds of ``models.stylenets``:

- ``johnson``: a per-style ``TransformNet`` (Johnson et al. 2016) trained on the Gatys energy of
  ``apps.style`` (content at ``relu4_2``, Gram style at ``relu1_1 .. relu5_1`` of VGG19, in the
  same normalized units and with the same default weights), so that its amortization gap is
  measured in the energy Gatys minimizes;
- ``cin``: one ``TransformNet`` for N styles (Dumoulin et al. 2017), each image of a batch
  trained for one style in turn; ``base=`` a trained CIN network adds styles to it, training
  only the new styles' ``gamma, beta``;
- ``adain``: the decoder of an ``AdaINNet`` (Huang & Belongie 2017), trained with their loss:
  the content term at ``relu4_1`` against the AdaIN target and the channel mean and standard
  deviation of ``relu1_1 .. relu4_1`` against the style's (both relative errors here).

Content images are the bundled photos and any folder of images, at random crops, scales and
flips; for ``adain`` the styles are random crops of the style images. Training is seeded; a
checkpoint (``weights_only``-loadable: state dicts, the crop generator's state, the loss
history) is written atomically every ``checkpoint_every`` steps and when interrupted, and
``resume=True`` continues from it: a resumed training gives the same network, bit for bit, as
one that was never stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..energies import TotalVariation
from ..energies.features import capture
from ..energies.style import gram
from ..models.stylenets import (
    ENCODER_LAYER,
    AdaINNet,
    TransformNet,
    _stats,
    adain,
    save_atomically,
    save_network,
)
from .style import CONTENT_LAYERS, DEFAULTS, STYLE_LAYERS, _with_chroma, luminance, match_color

__all__ = [
    "ADAIN_LAYERS",
    "KINDS",
    "Training",
    "content_images",
    "random_crops",
    "stylize",
    "train",
]

KINDS = ("johnson", "cin", "adain")
ADAIN_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CHECKPOINT, NETWORK = "checkpoint.pt", "network.pt"
TRAIN_FORMAT = "langevin_images.train/1"
# the project's small CPU networks (the papers': contract (32, 64, 128), 5 blocks, expand (64, 32))
SMALL = {"contract": (16, 32, 64), "blocks": 5, "expand": (32, 16)}


@dataclass
class Training:
    """A trained network, the loss at every step (``history``: ``step``, ``loss`` and one
    ``loss_<style>`` per style seen that step) and the seconds it took (this process)."""

    net: nn.Module
    kind: str
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def final_losses(self, window: int = 20) -> dict[str, float]:
        """Mean loss per style over the last ``window`` steps that trained it."""
        return _window_means(self.history, window, last=True)


def _window_means(history, window, *, last):
    out = {}
    keys = sorted({k for row in history for k in row if k.startswith("loss_")})
    for k in keys:
        vals = [row[k] for row in history if k in row]
        vals = vals[-window:] if last else vals[:window]
        out[k[5:]] = sum(vals) / len(vals)
    return out


# -- content and style images ----------------------------------------------------------------


def content_images(extra: Sequence[Tensor] = (), *, photos=None, side: int = 256):
    """The training photos: the bundled ones (``datasets.PHOTOS``), each ``(1, 3, H, W)`` in
    [0, 1] with its shorter side ``side``, then the ``extra`` images (a user's folder)."""
    from ..datasets import PHOTOS, load_photo, resize_image

    images = [load_photo(p, side) for p in (PHOTOS if photos is None else photos)]
    images += [resize_image(x, side) for x in extra]
    if not images:
        raise ValueError("no content images: give a folder or keep the bundled photos")
    return images


def random_crops(images: Sequence[Tensor], n: int, size: int, generator: torch.Generator):
    """``(n, 3, size, size)``: for each, a random image, a random square crop of side between
    ``size`` and the image's shorter side, resized to ``size``, flipped at random."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = img.shape[-2:]
        top_side = min(h, w)
        side = int(torch.randint(min(size, top_side), top_side + 1, (1,), generator=generator))
        i = int(torch.randint(h - side + 1, (1,), generator=generator))
        j = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = img[..., i : i + side, j : j + side]
        if side != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out).clamp(0, 1)


# -- losses ------------------------------------------------------------------------------------


def _relative_per_image(a: Tensor, b: Tensor) -> Tensor:
    dims = tuple(range(1, a.ndim))
    return (a - b).square().sum(dims) / b.square().sum(dims).clamp_min(1e-30)


class GatysLoss:
    """The Gatys energy of ``apps.style`` per image for a batch whose images each have their
    own content and one of several styles: ``content_weight * content + style_weight * style
    (+ tv)``, relative errors, layer weights divided by their sum."""

    def __init__(self, model, styles: Sequence[Tensor], *, content_weight, style_weight,
                 tv_weight=0.0, content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS,
                 layer_weights=None):  # fmt: skip
        self.model, self.content_layers = model, list(content_layers)
        self.style_layers = list(style_layers)
        w = [1.0] * len(self.style_layers) if layer_weights is None else list(layer_weights)
        self.layer_weights = [x / sum(w) for x in w]
        self.cw, self.sw, self.tv = float(content_weight), float(style_weight), float(tv_weight)
        with torch.no_grad():
            feats = [capture(model, self.style_layers, s) for s in styles]
        # per layer, (styles, C, C) targets and their 1 / |G*|^2
        self.targets = {k: torch.cat([gram(f[k]) for f in feats]) for k in self.style_layers}
        self.scales = {k: 1 / g.square().sum((1, 2)).clamp_min(1e-30) for k, g in
                       self.targets.items()}  # fmt: skip
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    def __call__(self, y: Tensor, x: Tensor, style_index: Tensor) -> Tensor:
        with torch.no_grad():
            target = capture(self.model, self.content_layers, x)
        f = capture(self.model, self.layers, y)
        loss = y.new_zeros(y.shape[0])
        if self.cw > 0:
            c = sum(_relative_per_image(f[k], target[k]) for k in self.content_layers)
            loss = loss + self.cw * c / len(self.content_layers)
        if self.sw > 0:
            for k, lw in zip(self.style_layers, self.layer_weights, strict=True):
                g, t = gram(f[k]), self.targets[k][style_index].to(y)
                err = (g - t).square().sum((1, 2)) * self.scales[k][style_index].to(y)
                loss = loss + self.sw * lw * err
        if self.tv > 0:  # as in apps.style: the smoothed TV per pixel value
            loss = loss + (self.tv / y[0].numel()) * TotalVariation(1e-3).energy(y)
        return loss


class AdaINLoss:
    """Huang & Belongie's loss, per image, in relative errors: ``content_weight`` times the
    error of ``f(g(t))`` at ``relu4_1`` against the AdaIN target ``t``, plus ``style_weight``
    times the mean over ``relu1_1 .. relu4_1`` of the error of the channel means and standard
    deviations against the style's."""

    def __init__(self, model, *, content_weight=1.0, style_weight=1.0, layers=ADAIN_LAYERS):
        self.model, self.layers = model, list(layers)
        self.cw, self.sw = float(content_weight), float(style_weight)
        self.all = list(dict.fromkeys([*self.layers, ENCODER_LAYER]))

    def targets(self, content: Tensor, style: Tensor):
        with torch.no_grad():
            fs = capture(self.model, self.all, style)
            fc = capture(self.model, [ENCODER_LAYER], content)[ENCODER_LAYER]
            t = adain(fc, fs[ENCODER_LAYER])
            stats = {k: torch.cat(_stats(fs[k], 1e-5), 1) for k in self.layers}
        return t, stats

    def __call__(self, y: Tensor, t: Tensor, stats: dict) -> Tensor:
        f = capture(self.model, self.all, y)
        loss = self.cw * _relative_per_image(f[ENCODER_LAYER], t)
        s = sum(_relative_per_image(torch.cat(_stats(f[k], 1e-5), 1), stats[k]) for k in
                self.layers)  # fmt: skip
        return loss + self.sw * s / len(self.layers)


# -- the loop ----------------------------------------------------------------------------------


def train(
    kind: str,
    styles: Sequence[Tensor],
    *,
    model: nn.Module,
    out: str | os.PathLike,
    style_names: Sequence[str] | None = None,
    steps: int = 400,
    batch: int = 4,
    size: int = 128,
    lr: float = 1e-3,
    content_weight: float | None = None,
    style_weight: float | None = None,
    tv_weight: float = 0.0,
    arch: dict | None = None,
    width: float = 0.5,
    in_channels: int = 512,
    content: Sequence[Tensor] | None = None,
    base: nn.Module | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> Training:
    """Train a ``kind`` network (``KINDS``) on ``styles`` (``(1, 3, h, w)`` images in [0, 1]),
    writing ``checkpoint.pt`` into ``out`` as it goes and ``network.pt`` at the end.

    ``model`` is the loss network (the ``vgg19`` zoo model; the AdaIN encoder too). ``arch``
    is the ``TransformNet``'s ``contract``/``blocks``/``expand`` (default ``SMALL``), ``width``
    the AdaIN decoder's (``in_channels``: the loss network's at ``relu4_1``). Weights default
    to ``apps.style``'s (content 1, style 5) for johnson and cin, and to content 1, style 1 for
    adain. ``base`` (cin) is a trained CIN network to which ``styles`` are added, only their
    ``gamma, beta`` trained. ``content`` defaults to ``content_images()``. ``resume`` continues
    the checkpoint in ``out`` (same settings; a larger ``steps`` extends it).
    ``callback(step, row)`` is called after every step."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    styles = list(styles)
    names = [str(n) for n in (style_names or range(len(styles)))]
    if not styles or len(names) != len(styles):
        raise ValueError(f"{len(names)} style name(s) for {len(styles)} style image(s)")
    if kind == "johnson" and len(styles) != 1:
        raise ValueError(f"johnson trains one network per style: got {len(styles)} styles")
    if base is not None and kind != "cin":
        raise ValueError("base= (adding styles to a trained network) is for kind='cin'")
    for s in styles:
        if min(s.shape[-2:]) < size:
            raise ValueError(f"a style image of {tuple(s.shape[-2:])} px is smaller than --size")
    if batch < 1 or steps < 1 or size < 16:
        raise ValueError("steps and batch must be >= 1 and size >= 16")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adain_kind = kind == "adain"
    cw = 1.0 if content_weight is None else content_weight
    sw = (1.0 if adain_kind else DEFAULTS["style_weight"]) if style_weight is None else style_weight
    arch = {**SMALL, **(arch or {})}
    config = {
        "kind": kind, "styles": names, "steps": int(steps), "batch": int(batch),
        "size": int(size), "lr": float(lr), "content_weight": float(cw),
        "style_weight": float(sw), "tv_weight": float(tv_weight), "seed": int(seed),
        "arch": {k: list(v) if isinstance(v, tuple | list) else v for k, v in arch.items()},
        "width": float(width), "in_channels": int(in_channels), "base": base is not None,
        "loss_network": getattr(model, "name", type(model).__name__),
    }  # fmt: skip
    device = next(model.buffers(), next(model.parameters(), torch.empty(0))).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if adain_kind:
            net = AdaINNet(model, width=width, in_channels=in_channels)
        elif base is not None:
            net = base
            trained = net.add_styles(names)
        else:
            net = TransformNet(len(styles), arch["contract"], arch["blocks"], arch["expand"],
                               style_names=names)  # fmt: skip
    net = net.to(device).train()
    if adain_kind:
        params = list(net.decoder.parameters())
    elif base is not None:
        params = _only_styles(net, trained)
    else:
        params = list(net.parameters())
        trained = list(range(net.styles))
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    photos = list(content) if content is not None else content_images()
    history: list[dict] = []
    start = 0
    if resume:
        start, history = _restore(out / CHECKPOINT, net, opt, g, config)
    styles = [s.to(device) for s in styles]
    loss_fn = (
        AdaINLoss(model, content_weight=cw, style_weight=sw)
        if adain_kind
        else GatysLoss(model, styles, content_weight=cw, style_weight=sw, tv_weight=tv_weight)
    )

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc=f"train {kind}", disable=not progress,
               unit="step")  # fmt: skip
    t0 = time.perf_counter()
    try:
        for step in range(start, steps):
            x = random_crops(photos, batch, size, g).to(device)
            opt.zero_grad(set_to_none=True)
            if adain_kind:
                index = torch.randint(len(styles), (batch,), generator=g)  # for the record
                s = torch.cat([random_crops([styles[int(k)]], 1, size, g) for k in index])
                t, stats = loss_fn.targets(x, s.to(device))
                per_image = loss_fn(net.decoder(t), t, stats)
            else:
                which = torch.arange(step * batch, (step + 1) * batch) % len(trained)
                index = torch.tensor(trained)[which]  # the network's style of each image
                y = net(x, F.one_hot(index, net.styles).to(x.dtype).to(device))
                per_image = loss_fn(y, x, which.to(device))  # the loss's targets: styles
            per_image.mean().backward()
            opt.step()
            losses = per_image.detach().cpu()  # one transfer from the device a step
            row = {"step": step + 1, "loss": float(losses.mean())}
            for k in index.unique().tolist():
                label = names[k] if adain_kind else net.style_names[k]
                row[f"loss_{label}"] = float(losses[index == k].mean())
            history.append(row)
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"the loss is {row['loss']} at step {step + 1}")
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
            if callback is not None:
                callback(step + 1, row)
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _checkpoint(out / CHECKPOINT, net, opt, g, config, history)
    except BaseException:
        # a checkpoint at the last finished step (a kill -9 keeps the previous one)
        if len(history) > start:
            _checkpoint(out / CHECKPOINT, net, opt, g, config, history)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _checkpoint(out / CHECKPOINT, net, opt, g, config, history)
    net.eval().requires_grad_(False)
    if adain_kind:  # as load_network gives it: the same numbers from the file as from here
        net.channels_last()
    result = Training(net, kind, history, seconds, resumed_from=start)
    card = {**(meta or {}), "training": {**config, "final_losses": result.final_losses(),
                                         "first_losses": _window_means(history, 20, last=False),
                                         "seconds_this_process": round(seconds, 1),
                                         "resumed_from": start}}  # fmt: skip
    save_network(net, out / NETWORK, kind=kind, meta=card)
    return result


def _only_styles(net: TransformNet, trained: list[int]) -> list[Tensor]:
    """The norms' gamma and beta, with the gradient of every row but ``trained`` zeroed."""
    keep = torch.zeros(net.styles, 1)
    keep[trained] = 1
    params = []
    for norm in net.norms():
        for p in (norm.gamma, norm.beta):
            p.register_hook(lambda grad: grad * keep.to(grad))
            params.append(p)
    for p in net.parameters():
        p.requires_grad_(False)
    return params


def _checkpoint(path: Path, net, opt, g, config, history) -> None:
    state = {
        "format": TRAIN_FORMAT,
        "config": config,
        "step": len(history),
        "network": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "style_names": list(getattr(net, "style_names", config["styles"])),
        "optimizer": opt.state_dict(),
        "generator": g.get_state(),
        "history": [[float(row.get(k, math.nan)) for k in _columns(history)] for row in history],
        "columns": _columns(history),
    }
    save_atomically(state, path)


def _columns(history) -> list[str]:
    return list(dict.fromkeys(k for row in history for k in row))


def _restore(path: Path, net, opt, g, config) -> tuple[int, list[dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint")
    old = {k: v for k, v in state["config"].items() if k != "steps"}
    new = {k: v for k, v in config.items() if k != "steps"}
    if old != new:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new
                         if old.get(k) != new.get(k))  # fmt: skip
        raise ValueError(f"{path}: the checkpoint was trained with other settings ({diff})")
    if state["step"] >= config["steps"]:
        raise ValueError(f"{path}: already trained {state['step']} steps (of {config['steps']})")
    net.load_state_dict(state["network"])
    opt.load_state_dict(state["optimizer"])
    g.set_state(state["generator"])
    cols = state["columns"]
    history = [{k: v for k, v in zip(cols, row, strict=True) if not math.isnan(v)}
               for row in state["history"]]  # fmt: skip
    for row in history:
        row["step"] = int(row["step"])
    return int(state["step"]), history


# -- stylizing -------------------------------------------------------------------------------


def stylize(
    net: nn.Module,
    content: Tensor,
    *,
    style=None,
    styles: Sequence[Tensor] | None = None,
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    preserve_color: str | None = None,
    statistics=None,
) -> Tensor:
    """One forward pass: ``content`` ``(N, 3, H, W)`` stylized, in [0, 1].

    ``TransformNet``: ``style`` is an index, a name or mixture weights (``style_weights``
    over indices 0..). ``AdaINNet``: ``styles`` are style images, mixed by ``style_weights``,
    and ``alpha`` the strength; or ``statistics``, the styles encoded once
    (``AdaINNet.style_statistics``) for many contents. ``preserve_color``: ``"luminance"``
    keeps the content's chroma (every kind); ``"histogram"`` (AdaIN) gives the style images the
    content's colour mean and covariance before encoding them."""
    if preserve_color not in (None, "luminance", "histogram"):
        raise ValueError(f"preserve_color must be luminance or histogram, got {preserve_color!r}")
    with torch.no_grad():
        if isinstance(net, AdaINNet):
            if statistics is not None:
                if preserve_color == "histogram":
                    raise ValueError("preserve_color='histogram' recolours the style images: "
                                     "give them, not their statistics")  # fmt: skip
                y = net(content, alpha=alpha, statistics=statistics)
            elif not styles:
                raise ValueError("AdaIN needs style images")
            else:
                if preserve_color == "histogram":
                    styles = [match_color(s, content[:1]) for s in styles]
                y = net(content, list(styles), alpha=alpha, style_weights=style_weights)
        else:
            if preserve_color == "histogram":
                raise ValueError("preserve_color='histogram' is for AdaIN (it recolours the "
                                 "style image); use 'luminance'")  # fmt: skip
            if alpha != 1.0:
                raise ValueError("alpha is AdaIN's strength; CIN mixes styles by weights")
            if style_weights is not None:
                style = list(style_weights)
            y = net(content, style)
        if preserve_color == "luminance":
            y = _with_chroma(luminance(y), content)
    return y.clamp(0, 1)
