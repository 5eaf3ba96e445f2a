"""DeepDream as the zero-noise case of the sampler, with the google/deepdream recipe:
an image pyramid (``octaves`` levels, each ``octave_scale`` times smaller), dreaming from the
smallest up with the detail carried from octave to octave, a random roll (jitter) at each
step, and each step normalized by the mean gradient magnitude.

The energy is ``DreamEnergy``: minus the mean squared activation of the chosen layers (or,
with a guide image, minus the guided objective). At T = 0 each octave is a run of the
sampler's descent with ``normalize_step``. At T > 0 (stochastic dreams) each octave is an
unadjusted Langevin run on the energy scaled once, at the octave's start, by its mean gradient
magnitude; several chains then give different dreams of one photo, whose diversity the
diagnostics measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..energies import DreamEnergy, RandomRoll, Transformed
from ..energies.base import on_model
from ..samplers import Run, sample
from ..samplers.kernel import drift_magnitude
from ..samplers.kernel import init as init_state

__all__ = ["Dream", "dream", "octave_sizes"]


@dataclass
class Dream:
    """The dreamed images ``(chains, C, H, W)`` in [0, 1] at the input's size, and one
    recorded run per octave (smallest first)."""

    images: Tensor
    runs: list[Run] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


def octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """The pyramid's ``(H, W)`` sizes, smallest first, the last one ``size``."""
    h, w = size
    return [
        (max(1, round(h / scale**k)), max(1, round(w / scale**k))) for k in reversed(range(octaves))
    ]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _check_smallest_octave(energy: DreamEnergy, image: Tensor, size: tuple[int, int]) -> None:
    """One forward pass at the smallest octave. If it fails where the full-size image works,
    the octave is too small for the layers: a one-line error instead of the model's."""
    try:
        with torch.no_grad():
            energy(_resize(image, size))
    except RuntimeError as err:
        with torch.no_grad():
            energy(image)  # a failure here is the model's own: it propagates as it is
        raise ValueError(
            f"the smallest octave, {size[0]}x{size[1]} px, is too small for layers "
            f"{energy.layers} of this model: use fewer octaves or a larger image"
        ) from err


def dream(
    model: nn.Module,
    image: Tensor,
    layers: str | Sequence[str],
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps_per_octave: int = 10,
    step_size: float = 1.5 / 255,
    jitter: int = 32,
    guide: Tensor | None = None,
    temperature: float = 0.0,
    chains: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> Dream:
    """Amplify the features of ``layers`` in ``image``.

    Parameters
    ----------
    model : nn.Module
        Frozen, eval-mode model taking ``(N, C, H, W)`` images in [0, 1].
    image : Tensor
        ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1].
    layers : str or sequence of str
        ``named_modules()`` dotted paths (all served by one forward pass).
    octaves, octave_scale, steps_per_octave : int, float, int
        The pyramid: google/deepdream uses 4 octaves at scale 1.4, 10 steps each.
    step_size : float
        Mean change of a pixel per step (1.5 / 255 is google/deepdream's 1.5 on 0-255 pixels).
    jitter : int
        Largest random roll in pixels, each way, at each step (scaled down with the octave).
    guide : Tensor, optional
        A guide image whose features are matched instead of amplified.
    temperature : float
        0 for the deterministic dream; > 0 for stochastic dreams (unadjusted Langevin), in
        units of the energy normalized by its gradient magnitude: about 0.002-0.01 gives
        dreams that differ in their details, 0.05 mostly adds noise (chelsea at 128 px).
    chains : int
        How many dreams of the same image (useful at T > 0).
    seed : int
        Seeds the rolls and the sampler's noise.
    """
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(
            f"dream takes one image (C, H, W) or (1, C, H, W), got {tuple(image.shape)}"
        )
    if octaves < 1 or octave_scale < 1 or steps_per_octave < 1 or chains < 1:
        raise ValueError(
            "dream: octaves >= 1, octave_scale >= 1, steps_per_octave >= 1, chains >= 1"
        )
    if temperature < 0:
        raise ValueError("dream: temperature must be >= 0")
    image = on_model(model, image)  # the photo goes where the model is
    guide = on_model(model, guide) if guide is not None else None
    base = image.detach().expand(chains, -1, -1, -1).clone()
    sizes = octave_sizes(tuple(base.shape[-2:]), octaves, octave_scale)
    energy_core = DreamEnergy(model, layers, guide=guide)
    _check_smallest_octave(energy_core, base[:1], sizes[0])
    detail = torch.zeros_like(_resize(base, sizes[0]))
    runs = []
    x = base
    for k, size in enumerate(sizes):
        octave_base = _resize(base, size)
        detail = _resize(detail, size)
        x0 = (octave_base + detail).clamp(0, 1)
        shift = max(0, round(jitter * size[0] / sizes[-1][0]))
        energy = Transformed(energy_core, RandomRoll(shift, seed=seed + k))
        common = dict(steps=steps_per_octave, step_size=step_size, seed=seed + k, progress=progress)
        if temperature == 0:
            run = sample(energy, x0, method="descent", normalize_step=True, **common)
        else:
            magnitude = float(drift_magnitude(init_state(energy, x0, None)).mean())
            run = sample(
                (1.0 / max(magnitude, 1e-12)) * energy,
                x0,
                method="ula",
                temperature=temperature,
                **common,
            )
            run.config["energy_weight"] = 1.0 / max(magnitude, 1e-12)
        runs.append(run)
        x = run.final_position.detach().clamp(0, 1)
        detail = x - octave_base
    return Dream(x, runs, sizes)
