"""Neural style transfer (Gatys et al. 2016) as the zero-noise case of the sampler, and
posterior style transfer: the same energy sampled with MALA at T > 0.

The energy, in the normalized units of ``energies.style`` (each term a weighted mean of
relative squared errors, the same at every image size and layer choice)::

    E(x) = content_weight * content(x) + style_weight * style(x) + tv_weight * mean |grad x|

with content at ``relu4_2`` and Gram-matrix style at ``relu1_1 .. relu5_1`` of VGG19, all terms
on one shared forward pass. Three optimizers find its minimum: L-BFGS (Gatys et al.), Adam, and
the sampler's descent. Coarse to fine (``scales``, each ``scale_factor`` smaller), each scale
starts from the upsampled result of the previous one. Several styles blend their Gram
matrices; colour preservation is luminance-only transfer or matching the style's colour
statistics to the content's (Gatys et al. 2017, "Controlling perceptual factors"); a mask
styles one region and keeps the other region's own statistics (their spatial control).

**Posterior style transfer** samples ``pi(x) ~ exp(-d E(x) / T)``, ``d = 3 H W``: with the
energy scaled by the number of pixel values, ``T`` is in the units of ``E`` itself, and near a
minimum (locally quadratic) a sample's excess energy is about ``T / 2`` at any image size. The
chains start from the optimization's result and are MALA with a colour-times-1/f
preconditioner, on [0, 1] exactly (the sampler's logistic reparameterization).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..energies import (
    ContentEnergy,
    Energy,
    StyleEnergy,
    TotalVariation,
    WassersteinStyleEnergy,
)
from ..energies.base import on_model
from ..energies.style import gram
from .dream import _resize, octave_sizes

__all__ = [
    "CONTENT_LAYERS",
    "OPTIMIZERS",
    "STYLE_LAYERS",
    "Stylized",
    "match_color",
    "sample_posterior",
    "style_diversity",
    "style_energy",
    "transfer",
]

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam", "descent")
METHODS = ("gatys", "posterior")
COLOR_MODES = ("luminance", "histogram")
DEFAULTS = {"content_weight": 1.0, "style_weight": 5.0, "tv_weight": 0.0}
_LUMA = (0.299, 0.587, 0.114)
LBFGS_HISTORY = 100
PRECISIONS = ("float32", "mixed")
STYLE_LOSSES = ("gram", "w2")
# with precision="mixed", the share of each scale's evaluations run in bfloat16. At 128 px on
# VGG19 (astronaut and rocket x ihc, one thread), 9/10 of 300 evaluations ended within 0.05 %
# of 3/4's energy in 84-86 % of its time, and 9/10 of 350 ended lower than 3/4 of 300 in 1-2 %
# more time (benchmarks/README.md)
MIXED_FRACTION = 0.9


@dataclass
class Stylized:
    """The result: ``images`` ``(chains, 3, H, W)`` in [0, 1] (one for ``gatys``), the energy
    at every evaluation (``history``: scale, step, seconds, the precision the network ran in,
    energy and its terms: the bfloat16 evaluations' energies are those of the bfloat16
    network), the sizes of
    the scales, the sampler runs (descent per scale, and the posterior run last) and the
    configuration."""

    images: Tensor
    history: list[dict] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    runs: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def posterior(self):
        """The posterior run (None for ``gatys``)."""
        return self.runs[-1] if self.config.get("method") == "posterior" else None


def luminance(x: Tensor) -> Tensor:
    """``(N, 1, H, W)`` luma (Rec. 601) of RGB images."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def match_color(source: Tensor, reference: Tensor) -> Tensor:
    """``source`` with its pixels' colour mean and covariance made the ``reference``'s:
    ``x' = C_r^{1/2} C_s^{-1/2} (x - mu_s) + mu_r`` (symmetric square roots), clamped to [0, 1].
    Used on the style image, it keeps the content's colours (Gatys et al. 2017)."""

    def stats(img):
        p = img.reshape(3, -1).to(torch.float64)
        return p.mean(1, keepdim=True), torch.cov(p) + 1e-5 * torch.eye(3, dtype=p.dtype)

    def sqrtm(c, power):
        w, v = torch.linalg.eigh(c)
        return (v * w.clamp_min(1e-10).pow(power)) @ v.T

    mu_s, c_s = stats(source[0])
    mu_r, c_r = stats(reference[0])
    a = sqrtm(c_r, 0.5) @ sqrtm(c_s, -0.5)
    p = source[0].reshape(3, -1).to(torch.float64)
    out = (a @ (p - mu_s) + mu_r).reshape(source.shape[1:])
    return out.to(source.dtype).clamp(0, 1)[None]


def _match_luminance(y: Tensor, reference: Tensor) -> Tensor:
    """Luma ``y`` with the mean and standard deviation of ``reference``'s (Gatys et al. 2017)."""
    return ((y - y.mean()) * reference.std() / y.std().clamp_min(1e-6) + reference.mean()).clamp(
        0, 1
    )


def _with_chroma(y: Tensor, rgb: Tensor) -> Tensor:
    """The luma ``y`` ``(N, 1, H, W)`` with the chroma (YIQ's I and Q) of ``rgb``."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        dtype=torch.float64,
    )
    yiq = torch.einsum("ij,njhw->nihw", to_yiq.to(rgb.device), rgb.to(torch.float64))
    yiq = torch.cat([y.to(torch.float64), yiq[:, 1:].expand(y.shape[0], -1, -1, -1)], 1)
    out = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq).to(rgb.device), yiq)
    return out.to(rgb.dtype).clamp(0, 1)


def style_energy(
    model: nn.Module,
    content: Tensor,
    styles: Tensor | Sequence[Tensor],
    *,
    style_weights: Sequence[float] | None = None,
    content_weight: float = DEFAULTS["content_weight"],
    style_weight: float = DEFAULTS["style_weight"],
    tv_weight: float = DEFAULTS["tv_weight"],
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    layer_weights: Sequence[float] | None = None,
    mask: Tensor | None = None,
    style_loss: str = "gram",
) -> Energy:
    """The Gatys energy of images the size of ``content`` (see the module docstring).

    ``mask`` ``(1, 1, h, w)`` in [0, 1] (white: styled): the masked region gets the style's
    Gram matrices, the rest the content's own (over that region), so it keeps its look.
    ``style_loss``: ``"gram"`` (Gatys et al.) or ``"w2"``, the Wasserstein-2 distance between
    Gaussians fitted to the features (``WassersteinStyleEnergy``; no mask)."""
    _check_style_loss(style_loss, mask)
    content = on_model(model, content)
    styles = [on_model(model, s) for s in ([styles] if isinstance(styles, Tensor) else styles)]
    terms: list[Energy] = []
    if content_weight > 0:
        terms.append(content_weight * ContentEnergy(model, content_layers, content))
    if style_weight > 0 and style_loss == "w2":
        w2 = WassersteinStyleEnergy(
            model, style_layers, styles, layer_weights, image_weights=style_weights
        )
        terms.append(style_weight * w2)
    elif style_weight > 0:
        style = StyleEnergy(
            model, style_layers, styles, layer_weights, image_weights=style_weights, mask=mask
        )
        terms.append(style_weight * style)
        if mask is not None and bool((mask < 1).any()):
            keep = 1 - mask
            own = StyleEnergy(
                model, style_layers, content, layer_weights, mask=keep, target_mask=keep
            )
            own.name = "style_outside_mask"
            terms.append(style_weight * own)
    if tv_weight > 0:
        n = content[0].numel()  # the mean over pixel values: the same at every size
        terms.append((tv_weight / n) * TotalVariation(1e-3))
    if not terms:
        raise ValueError("style: content, style and tv weights are all 0")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _check_style_loss(style_loss: str, mask) -> None:
    if style_loss not in STYLE_LOSSES:
        raise ValueError(f"style: style_loss must be one of {', '.join(STYLE_LOSSES)}, got "
                         f"{style_loss!r}")  # fmt: skip
    if style_loss == "w2" and mask is not None:
        raise ValueError("style: the w2 style loss takes no mask (use the gram one)")


def _evaluate(energy: Energy, x: Tensor) -> tuple[Tensor, dict[str, float]]:
    total, terms = energy.evaluate(x)
    return total, {k: float(v.detach().sum()) for k, v in terms.items()}


def _optimize(
    energy: Energy,
    x0: Tensor,
    *,
    optimizer: str,
    steps: int,
    lr: float,
    step_size: float,
    seed: int,
    progress: bool,
    record: Callable[[float, dict], None],
    low_energy: Energy | None = None,
    low_steps: int = 0,
):
    """Minimize ``energy`` from ``x0`` with ``steps`` energy+gradient evaluations, the first
    ``low_steps`` of them on ``low_energy`` (the same energy on a reduced-precision copy of the
    network) if given; the result in [0, 1] and the sampler run (descent) or None."""
    low_steps = low_steps if low_energy is not None else 0
    if optimizer == "descent":
        from ..samplers import sample

        run = sample(
            energy, x0, method="descent", steps=steps, step_size=step_size,
            normalize_step=True, seed=seed, progress=progress,
        )  # fmt: skip
        stats = run.stats
        for t in range(stats["energy"].shape[1]):
            terms = {k[5:]: float(v[:, t].sum()) for k, v in stats.items() if k.startswith("term_")}
            record(float(stats["energy"][:, t].sum()), terms)
        return run.final_position.detach().clamp(0, 1), run
    x = x0.detach().clone().requires_grad_(True)
    bar = _bar(steps, progress, optimizer)
    phases = [(low_energy, low_steps), (energy, steps - low_steps)]
    phases = [(e, n) for e, n in phases if n > 0]
    if optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
        for phase_energy, n in phases:
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                total, terms = _evaluate(phase_energy, x)
                total.sum().backward()
                record(float(total.detach().sum()), terms, _precision(phase_energy, low_energy))
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)  # projected Adam: the image stays an image
                bar.update(1)
    else:  # "lbfgs" (transfer() has checked the name)
        # the PyTorch tutorial's L-BFGS (unit steps, no line search) with the image clamped to
        # [0, 1] before each evaluation, returning the best float32 iterate: clamping can throw
        # L-BFGS's curvature pairs off and the last iterate with them. On VGG19 at 96-128 px
        # it reached lower energies in 300 evaluations than a strong-Wolfe line search with a
        # quadratic wall at the box (0.6010 against 0.6037 on chelsea x ihc at 128 px)
        opt = torch.optim.LBFGS(
            [x], lr=1.0, max_iter=steps, max_eval=steps, tolerance_grad=0.0,
            tolerance_change=0.0, history_size=LBFGS_HISTORY, line_search_fn=None,
        )  # fmt: skip
        best: list = [math.inf, None]
        for phase_energy, n in phases:
            precision = _precision(phase_energy, low_energy)

            def closure(phase_energy=phase_energy, precision=precision):
                with torch.no_grad():
                    x.clamp_(0, 1)
                opt.zero_grad(set_to_none=True)
                total, terms = _evaluate(phase_energy, x)
                value = float(total.detach().sum())
                record(value, terms, precision)
                if precision == "float32" and value < best[0]:
                    best[:] = [value, x.detach().clone()]
                loss = total.sum()
                loss.backward()
                bar.update(1)
                return loss

            # one optimizer for both phases: the curvature pairs of the reduced-precision
            # evaluations carry over to the float32 ones
            opt.param_groups[0].update(max_iter=n, max_eval=n)
            opt.step(closure)
        if best[1] is not None:
            x = best[1]
    bar.close()
    return x.detach().clamp(0, 1), None


def _precision(energy, low_energy) -> str:
    return "bfloat16" if energy is low_energy else "float32"


def _bar(total: int, progress: bool, what: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, disable=not progress, leave=False, unit="eval")


def transfer(
    content: Tensor,
    styles: Tensor | Sequence[Tensor],
    *,
    model: nn.Module,
    method: str = "gatys",
    optimizer: str = "lbfgs",
    steps: int = 300,
    scales: int = 1,
    scale_factor: float = math.sqrt(2),
    init: str = "content",
    style_weights: Sequence[float] | None = None,
    content_weight: float = DEFAULTS["content_weight"],
    style_weight: float = DEFAULTS["style_weight"],
    tv_weight: float = DEFAULTS["tv_weight"],
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    layer_weights: Sequence[float] | None = None,
    preserve_color: str | None = None,
    mask: Tensor | None = None,
    lr: float = 0.02,
    step_size: float = 2.0 / 255,
    temperature: float = 0.01,
    chains: int = 4,
    sample_steps: int = 200,
    warmup: int = 100,
    seed: int = 0,
    spread: float = 0.0,
    precision: str = "float32",
    style_loss: str = "gram",
    record_to=None,
    progress: bool = True,
) -> Stylized:
    """Stylize ``content`` with ``styles``.

    Parameters
    ----------
    content : Tensor
        ``(1, 3, H, W)`` in [0, 1]: the output has its size.
    styles : Tensor or sequence of Tensor
        ``(1, 3, h, w)`` style images, used at their size (rescaled with the coarse scales).
    model : nn.Module
        The feature network (``load_model("vgg19")``).
    method : {"gatys", "posterior"}
        The minimum of the energy, or samples at ``temperature`` started from it.
    optimizer : {"lbfgs", "adam", "descent"}
        L-BFGS (unit steps, the image clamped to [0, 1] before each evaluation, the best
        iterate returned), Adam (``lr`` in pixel units, projected on [0, 1]),
        or the sampler's zero-noise path (``step_size``: mean pixel change per step).
    steps : int
        Energy+gradient evaluations per scale.
    scales, scale_factor : int, float
        Coarse to fine: ``scales`` sizes, each ``scale_factor`` smaller than the next.
    init : {"content", "noise"}
        The start at the coarsest scale: the content image or white noise (seeded).
    style_weights : sequence of float, optional
        Blend weights of several style images.
    content_weight, style_weight, tv_weight : float
        In normalized units (relative errors; TV as the mean absolute gradient).
    preserve_color : {None, "luminance", "histogram"}
        Keep the content's colours: transfer luminance only, or give the style images the
        content's colour mean and covariance first.
    mask : Tensor, optional
        ``(1, 1, h, w)`` in [0, 1], white where the style applies.
    temperature, chains, sample_steps, warmup : float, int, int, int
        The posterior: ``T`` in units of the energy, the number of chains, draws after the
        warmup (dual averaging of the step size to acceptance 0.574).
    spread : float
        The posterior: the chains start this far (root-mean-square over the pixel values, of
        colour x 1/f noise) from the optimization's result, each with its own; 0: all at it.
    seed : int
        Seeds the noise start and the sampler.
    style_loss : {"gram", "w2"}
        Gram matrices (Gatys et al.) or the Wasserstein-2 distance between Gaussians fitted to
        the features (mean and covariance per layer); see ``style_energy``.
    precision : {"float32", "mixed"}
        ``"mixed"``: the first ``MIXED_FRACTION`` of each scale's evaluations run the network
        in bfloat16 (``models.reduced_precision``; losses and Gram matrices stay float32), the
        rest in float32, one L-BFGS or Adam run through both. Fast where bfloat16 is
        (``models.fast_bfloat16``: AMX CPUs, recent GPUs); L-BFGS and Adam only.
    record_to : path, optional
        Stream the posterior run to this zarr record (crash-safe).
    """
    if method not in METHODS:
        raise ValueError(f"style: unknown method {method!r}; one of {', '.join(METHODS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"style: unknown optimizer {optimizer!r}; one of {', '.join(OPTIMIZERS)}")
    if init not in ("content", "noise"):
        raise ValueError(f"style: init must be 'content' or 'noise', got {init!r}")
    if preserve_color not in (None, *COLOR_MODES):
        raise ValueError(
            f"style: preserve_color must be one of {', '.join(COLOR_MODES)}, got {preserve_color!r}"
        )
    if steps < 1 or scales < 1 or not scale_factor >= 1:
        raise ValueError("style: steps >= 1, scales >= 1 and scale_factor >= 1")
    if method == "posterior" and (not temperature > 0 or chains < 1 or sample_steps < 1):
        raise ValueError("style: posterior needs temperature > 0, chains >= 1, sample_steps >= 1")
    if precision not in PRECISIONS:
        raise ValueError(f"style: precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")  # fmt: skip
    if precision == "mixed" and optimizer == "descent":
        raise ValueError("style: precision 'mixed' is for the lbfgs and adam optimizers")
    _check_style_loss(style_loss, mask)
    styles = [styles] if isinstance(styles, Tensor) else list(styles)
    for img, what in [(content, "content"), *[(s, "style") for s in styles]]:
        if img.ndim != 4 or img.shape[:2] != (1, 3):
            raise ValueError(
                f"style: the {what} image must be (1, 3, H, W), got {tuple(img.shape)}"
            )
    content = on_model(model, content)
    styles = [on_model(model, s) for s in styles]
    original = content
    low_model = None
    if precision == "mixed":
        from ..models import reduced_precision

        low_model = reduced_precision(model)
    if preserve_color == "histogram":
        styles = [match_color(s, content) for s in styles]
    elif preserve_color == "luminance":
        y = luminance(content)
        styles = [_match_luminance(luminance(s), y).expand(-1, 3, -1, -1) for s in styles]
        content = y.expand(-1, 3, -1, -1)

    weights = dict(
        style_weights=style_weights, content_weight=content_weight, style_weight=style_weight,
        tv_weight=tv_weight, content_layers=content_layers, style_layers=style_layers,
        layer_weights=layer_weights, style_loss=style_loss,
    )  # fmt: skip
    full = tuple(content.shape[-2:])
    sizes = octave_sizes(full, scales, scale_factor)
    history: list[dict] = []
    runs = []
    t0 = time.perf_counter()
    x = None
    generator = torch.Generator().manual_seed(seed)
    for k, size in enumerate(sizes):
        factor = size[0] / full[0]
        c_k = _resize(content, size)
        s_k = [_resize(s, _scaled(s.shape[-2:], factor)) for s in styles]
        energy = style_energy(model, c_k, s_k, mask=mask, **weights)
        low_energy = None
        if low_model is not None:
            low_energy = style_energy(low_model, c_k, s_k, mask=mask, **weights)
        if x is None:
            x = c_k if init == "content" else torch.rand(c_k.shape, generator=generator).to(c_k)
        else:
            x = _resize(x, size)

        def record(value, terms, precision="float32", k=k, size=size):
            step = sum(h["scale"] == k for h in history)
            seconds = time.perf_counter() - t0
            history.append({"scale": k, "height": size[0], "width": size[1], "step": step,
                            "seconds": seconds, "precision": precision, "energy": value,
                            **terms})  # fmt: skip

        x, run = _optimize(
            energy, x, optimizer=optimizer, steps=steps, lr=lr, step_size=step_size,
            seed=seed + k, progress=progress, record=record, low_energy=low_energy,
            low_steps=_low_steps(steps),
        )  # fmt: skip
        if run is not None:
            runs.append(run)
    images = x
    if method == "posterior":
        run = sample_posterior(
            energy, x, temperature=temperature, chains=chains, steps=sample_steps,
            warmup=warmup, seed=seed, spread=spread, progress=progress, record_to=record_to,
        )  # fmt: skip
        runs.append(run)
        images = run.final_position.detach()
    if preserve_color == "luminance":
        images = _with_chroma(luminance(images), original)
    config = {
        "method": method, "optimizer": optimizer, "steps_per_scale": steps, "scales": sizes,
        "scale_factor": scale_factor, "init": init, "preserve_color": preserve_color,
        "mask": mask is not None, "lr": lr, "step_size": step_size, "seed": seed,
        "content_weight": content_weight, "style_weight": style_weight, "tv_weight": tv_weight,
        "content_layers": list(content_layers), "style_layers": list(style_layers),
        "layer_weights": None if layer_weights is None else list(layer_weights),
        "style_weights": None if style_weights is None else list(style_weights),
        "units": "relative squared errors, layer weights summing to 1; TV: mean |grad x|",
        "precision": precision, "style_loss": style_loss,
    }  # fmt: skip
    if precision == "mixed":
        config["bfloat16_evaluations_per_scale"] = _low_steps(steps)
    if method == "posterior":
        start = "the optimization's result"
        if spread:
            start += f" plus colour x 1/f noise of RMS {spread:g}"
        config.update(temperature=temperature, chains=chains, sample_steps=sample_steps,
                      warmup=warmup, sampler_temperature=temperature / content[0].numel(),
                      spread=spread, start=start)  # fmt: skip
    return Stylized(images, history, sizes, runs, config, time.perf_counter() - t0)


def _low_steps(steps: int) -> int:
    """The bfloat16 evaluations of a mixed-precision scale: ``MIXED_FRACTION`` of them, and at
    least one float32 evaluation after."""
    return min(round(MIXED_FRACTION * steps), steps - 1)


def _scaled(size, factor: float) -> tuple[int, int]:
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def sample_posterior(
    energy: Energy,
    start: Tensor,
    *,
    temperature: float,
    chains: int = 4,
    steps: int = 200,
    warmup: int = 100,
    seed: int = 0,
    spread: float = 0.0,
    progress: bool = True,
    record_to=None,
):
    """MALA on ``pi(x) ~ exp(-d E(x) / T)`` (``d`` pixel values per image), ``chains`` chains
    from ``start`` ``(1, 3, H, W)`` (a minimum of ``energy``), colour x 1/f preconditioned, on
    [0, 1] exactly, the step size adapted to acceptance 0.574 during ``warmup``: the sampler's
    ``Run``.

    ``spread`` > 0 starts each chain at ``start`` plus its own colour x 1/f noise of that
    root-mean-square (clamped to [0.01, 0.99]): over-dispersed starts (Gelman & Rubin 1992).
    On this energy chains from the minimum drift away from it for thousands of steps; chains
    from further out come down towards the same level, so the two runs bracket what the
    equilibrium gives (``benchmarks/bench_style_posterior.py --spread``)."""
    from ..datasets import photo_color_covariance
    from ..linalg import ColorFourier
    from ..samplers import sample

    d = start[0].numel()
    t_sampler = temperature / d
    preconditioner = ColorFourier(tuple(start.shape[-2:]), photo_color_covariance())
    x0 = _posterior_starts(start, chains, spread, preconditioner, seed)
    step0 = initial_step_size(energy, x0[:1], temperature=t_sampler,
                              preconditioner=preconditioner, seed=seed)  # fmt: skip
    return sample(
        energy, x0, method="mala", steps=steps, warmup=warmup, step_size=step0,
        schedule="dual_averaging", temperature=t_sampler, preconditioner=preconditioner,
        bounds=(0.0, 1.0), seed=seed, progress=progress, record_to=record_to,
    )  # fmt: skip


def _posterior_starts(start: Tensor, chains: int, spread: float, preconditioner, seed: int):
    """``chains`` copies of ``start``, each plus its own ``preconditioner`` noise scaled to
    root-mean-square ``spread`` over its pixel values (none for 0), clamped to [0.01, 0.99]."""
    if not spread >= 0:
        raise ValueError(f"sample_posterior: spread must be >= 0, got {spread}")
    x0 = start.detach().expand(chains, -1, -1, -1).contiguous()
    if spread > 0:
        generator = torch.Generator(device=x0.device).manual_seed(seed + 1)
        noise = preconditioner.noise(x0, generator)
        rms = noise.flatten(1).square().mean(1).sqrt().clamp_min(1e-12)
        x0 = x0 + (noise * (spread / rms)[:, None, None, None]).to(x0.dtype)
    return x0.clamp(0.01, 0.99)


def initial_step_size(
    energy, x0: Tensor, *, temperature: float, preconditioner, seed: int = 0, tries: int = 40
) -> float:
    """A MALA step size from which dual averaging can start: from the one that moves a logit
    by about 1/255 through the noise, halved until one step from ``x0`` (in the sampler's
    [0, 1] logistic coordinates) is accepted with probability at least 0.5, as Hoffman &
    Gelman's heuristic does for HMC. Each try costs one energy+gradient evaluation.

    Without it the warmup of a sharply curved energy (style transfer at small T) starts so far
    above the useful step that short warmups never reach it, and every chain is stuck."""
    from ..samplers import kernel
    from ..samplers.constraints import Box

    box = Box(0.0, 1.0)
    z_energy = box.wrap(energy, temperature)
    state = kernel.init(z_energy, box.to_unconstrained(x0), preconditioner)
    eps = (1.0 / 255) ** 2 / (2 * temperature)
    generator = torch.Generator(device=x0.device).manual_seed(seed)
    for _ in range(tries):
        step = torch.full((x0.shape[0],), eps, dtype=torch.float64, device=x0.device)
        _, info = kernel.step(state, z_energy, step, generator, temperature=temperature,
                              adjust=True, preconditioner=preconditioner)  # fmt: skip
        if float(info.acceptance_prob.mean()) >= 0.5:
            break
        eps /= 2
    return eps


def style_diversity(
    model: nn.Module,
    images: Tensor,
    *,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
) -> dict[str, float]:
    """How different stylizations ``(N, 3, H, W)`` (N >= 2) are from one another: mean pairwise
    distance in pixels (RMS per pixel value), in the content layer's features and between the
    Gram matrices of the style layers (both relative to their mean norm), and Vendi scores of
    the content features: on the features as they are (cosine similarity; 1: all alike, N: all
    different) and centred (which is N - 1 for any N distinct images whose differences are
    unrelated, however small: it says how many directions they differ in, not by how much)."""
    from ..diagnostics import mean_pairwise_distance, vendi_score
    from ..energies import capture

    if images.shape[0] < 2:
        raise ValueError("style_diversity needs at least two images")
    images = on_model(model, images)
    with torch.no_grad():
        feats = capture(model, list(dict.fromkeys([*content_layers, *style_layers])), images)
    f = torch.cat([feats[k].flatten(1) for k in content_layers], 1).double()
    g = torch.cat([gram(feats[k]).flatten(1) for k in style_layers], 1).double()
    n = images[0].numel()
    return {
        "pixel_rms": mean_pairwise_distance(images) / math.sqrt(n),
        "feature_relative": mean_pairwise_distance(f) / float(f.norm(dim=1).mean()),
        "gram_relative": mean_pairwise_distance(g) / float(g.norm(dim=1).mean()),
        "vendi_features": vendi_score(f),
        "vendi_centred": vendi_score(f, centre=True),
    }
