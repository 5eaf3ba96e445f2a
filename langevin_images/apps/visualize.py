"""Activation maximization: what a channel or neuron of a layer responds to, as the
zero-noise case of the sampler, and the variety behind it at T > 0.

The energy is ``-activation(T(x)) + tv * TV(x)`` with a random jitter / scale / rotation ``T``
at every step (Lucid's transformation robustness), sampled on ``[0, 1]`` through the sampler's
logistic reparameterization, and preconditioned by ``M = C ⊗ F``: a 1/f spatial spectrum
(Lucid's FFT parameterization) times the colour covariance of natural photos (its decorrelated
colour space). At T = 0 the sampler descends with each chain's step normalized by its mean
gradient magnitude, so one step size serves every layer; at T > 0, chains start from the
zero-noise result and run unadjusted Langevin on the energy scaled once by that magnitude
(the stochastic transforms make MALA's accept step compare two random energies).

One chain per channel: a layer's grid is one batched run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..datasets import photo_color_covariance
from ..energies import ActivationEnergy, BlurPenalty, RandomAffine, TotalVariation, Transformed
from ..energies.base import model_parameter
from ..energies.features import capture
from ..samplers import Box, ColorFourier, Fourier, Run, sample
from ..samplers.kernel import drift_magnitude
from ..samplers.kernel import init as init_state

__all__ = ["Visualization", "layer_channels", "visualize", "visualize_layers", "visualize_variety"]


SCALE, DEGREES = (0.95, 1.05), 5.0  # the random transform's zoom range and rotation


@dataclass
class Visualization:
    """Images ``(n, C, H, W)`` in [0, 1], one per channel (times ``chains_per_channel`` for
    a T > 0 run), the recorded run, and the activation objective each image reaches."""

    images: Tensor
    run: Run
    layer: str
    channels: list[int]
    objective: Tensor
    temperature: float = 0.0


def layer_channels(model: nn.Module, layer: str, *, size: int = 64, channels: int = 3) -> int:
    """The number of channels of ``layer``'s output (one probe forward pass)."""
    probe = torch.full((1, channels, size, size), 0.5, **_placement(model))
    with torch.no_grad():
        return int(capture(model, [layer], probe)[layer].shape[1])


def _placement(model: nn.Module) -> dict:
    """``dtype`` and ``device`` of the model's parameters (float32 on the CPU if it has none):
    where the images it looks at are made."""
    p = model_parameter(model)
    return {"dtype": p.dtype, "device": p.device} if p is not None else {"dtype": torch.float32}


def _preconditioner(c: int, size: int, decorrelate: bool, decay: float):
    if decorrelate and c == 3:
        return ColorFourier((size, size), photo_color_covariance(), decay=decay)
    return Fourier((size, size), decay=decay)


def _energy(model, layer, channels, neuron, size, jitter, scale, degrees, tv, seed, blur=0.0):
    act = ActivationEnergy(model, layer, channel=torch.tensor(channels), neuron=neuron)
    jitter = max(1, size // 16) if jitter is None else jitter
    if jitter == 0 and tuple(scale) == (1.0, 1.0) and degrees == 0:
        energy = act  # no transform asked for: no identity resampling either
    else:
        energy = Transformed(act, RandomAffine(jitter, scale, degrees, seed=seed))
    if tv:
        energy = energy + tv * TotalVariation(0.01)
    if blur:
        energy = energy + blur * BlurPenalty(1.0)
    return act, energy


def _start(init, n, c, size, placement, seed):
    if init is None:
        g = torch.Generator().manual_seed(seed)  # the same start on every device
        x = 0.5 + 0.01 * torch.randn((n, c, size, size), generator=g, dtype=placement["dtype"])
        return x.to(placement.get("device", "cpu"))
    init = torch.as_tensor(init).to(**placement)
    if init.ndim == 3:
        init = init[None]
    if init.ndim != 4 or init.shape[0] not in (1, n):
        raise ValueError(f"init must be (C, H, W) or (1 or {n}, C, H, W), got {tuple(init.shape)}")
    if tuple(init.shape[-2:]) != (size, size):
        init = nn.functional.interpolate(init, size=(size, size), mode="bilinear", antialias=True)
    return init.expand(n, -1, -1, -1).clone()


def visualize(
    model: nn.Module,
    layer: str,
    channels: Sequence[int] | int | None = None,
    *,
    neuron: tuple[int, int] | str | None = None,
    size: int = 128,
    init: Tensor | None = None,
    steps: int = 256,
    step_size: float = 0.05,
    tv: float = 0.0,
    blur: float = 0.0,
    jitter: int | None = None,
    scale: tuple[float, float] = SCALE,
    degrees: float = DEGREES,
    decorrelate: bool = True,
    decay: float = 1.0,
    seed: int = 0,
    thin: int | None = None,
    progress: bool = True,
    record_to=None,
) -> Visualization:
    """Maximize channels (or single neurons) of ``layer``: one image per channel.

    Parameters
    ----------
    model : nn.Module
        Frozen, eval-mode model taking ``(N, C, H, W)`` images in [0, 1] (zoo models do).
    layer : str
        ``named_modules()`` dotted path.
    channels : sequence of int, int or None
        Which channels; an int ``k`` means the first ``k``; None means all of the layer's.
    neuron : (y, x) or "center", optional
        Maximize one unit of each channel's map instead of the channel's mean.
    size : int
        Image side in pixels.
    init : Tensor, optional
        Start from this image (``(C, H, W)`` or a batch) instead of grey noise.
    steps, step_size : int, float
        Descent steps; mean change of a (logit-space) pixel per step.
    tv : float
        Weight of a total-variation prior (0 for none).
    blur : float
        Weight of a blur penalty ``|x - G_1 * x|^2 / 2`` (0 for none).
    jitter, scale, degrees
        The random transform at each step (``jitter`` defaults to ``size // 16`` pixels).
    decorrelate : bool
        Precondition with the photos' colour covariance as well as the 1/f spectrum.
    decay : float
        Exponent of the 1/f spatial preconditioner (0: none).
    seed : int
        Seeds the start, the transforms and the sampler.
    thin : int, optional
        Keep every ``thin``-th step in the run (default: 8 draws).
    """
    c = getattr(model, "input_channels", 3)
    if channels is None or isinstance(channels, int):
        n_all = layer_channels(model, layer, channels=c)
        channels = list(range(n_all if channels is None else min(channels, n_all)))
    channels = [int(k) for k in channels]
    if not channels:
        raise ValueError("no channels to visualize")
    act, energy = _energy(
        model, layer, channels, neuron, size, jitter, scale, degrees, tv, seed, blur
    )
    x0 = _start(init, len(channels), c, size, _placement(model), seed).clamp(0.01, 0.99)
    run = sample(
        energy,
        x0,
        steps=steps,
        method="descent",
        step_size=step_size,
        preconditioner=_preconditioner(c, size, decorrelate, decay),
        bounds=(0.0, 1.0),
        normalize_step=True,
        thin=thin or max(1, steps // 8),
        seed=seed,
        progress=progress,
        record_to=record_to,
    )
    images = run.final_position.detach()
    with torch.no_grad():
        objective = -act(images)
    return Visualization(images, run, layer, channels, objective)


def visualize_variety(
    vis: Visualization,
    model: nn.Module,
    *,
    chains_per_channel: int = 4,
    temperature: float = 0.01,
    steps: int = 200,
    step_size: float = 0.02,
    tv: float = 0.0,
    decorrelate: bool = True,
    decay: float = 1.0,
    seed: int = 1,
    thin: int | None = None,
    progress: bool = True,
    record_to=None,
) -> Visualization:
    """The variety behind each zero-noise visualization: ``chains_per_channel`` unadjusted
    Langevin chains per channel at ``temperature``, started from ``vis.images``, on the same
    energy scaled once by its mean gradient magnitude there (so ``temperature`` and
    ``step_size`` mean the same for every layer)."""
    if not temperature > 0:
        raise ValueError("visualize_variety needs temperature > 0 (T = 0 is visualize)")
    c, size = vis.images.shape[1], vis.images.shape[-1]
    channels = [k for k in vis.channels for _ in range(chains_per_channel)]
    act, energy = _energy(model, vis.layer, channels, None, size, None, SCALE, DEGREES, tv, seed)
    x0 = vis.images.repeat_interleave(chains_per_channel, 0).clamp(0.01, 0.99)
    precond = _preconditioner(c, size, decorrelate, decay)
    box = Box(0.0, 1.0)
    state = init_state(box.wrap(energy, 0.0), box.to_unconstrained(x0), precond)
    weight = 1.0 / max(float(drift_magnitude(state).mean()), 1e-12)
    run = sample(
        weight * energy,
        x0,
        steps=steps,
        method="ula",
        temperature=temperature,
        step_size=step_size,
        preconditioner=precond,
        bounds=box,
        thin=thin or max(1, steps // 8),
        seed=seed,
        progress=progress,
        record_to=record_to,
    )
    run.config["energy_weight"] = weight
    images = run.final_position.detach()
    with torch.no_grad():
        objective = -act(images)
    return Visualization(images, run, vis.layer, channels, objective, temperature)


def visualize_layers(
    model: nn.Module,
    layers: Sequence[str],
    *,
    channels: int | Sequence[int] = 8,
    **kwargs,
) -> dict[str, Visualization]:
    """``visualize`` for each of ``layers`` (the same channel selection and options)."""
    return {layer: visualize(model, layer, channels, **kwargs) for layer in layers}
