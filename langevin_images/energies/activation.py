"""Activation energies: a channel, a neuron, a whole layer (DeepDream), or a direction.

The energy is minus the objective (lower energy = stronger activation), so the sampler's
zero-noise path is activation maximization and T > 0 shows the variety behind it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..devices import on_device
from .base import Energy, check_images, per_chain_mean
from .features import capture, resolve_layers

__all__ = ["ActivationEnergy", "DreamEnergy", "activation_objective", "guided_objective"]


def activation_objective(
    act: Tensor,
    *,
    channel: Tensor | None = None,
    neuron: tuple[int, int] | None = None,
    direction: Tensor | None = None,
) -> Tensor:
    """The per-chain objective on a ``(N, C, H, W)`` (or ``(N, C)``) activation.

    - ``direction``: mean over positions of the projection on a ``(C,)`` direction;
    - ``channel`` with ``neuron=(y, x)``: that one unit; ``channel`` alone: the channel's mean;
    - nothing: the mean square of the whole layer (DeepDream's objective, up to scale).
    """
    if direction is not None:
        d = direction.to(act)
        proj = torch.einsum("nc...,c->n...", act, d / d.norm())
        return per_chain_mean(proj)
    if channel is None:
        return per_chain_mean(act.square())
    idx = channel.to(act.device).long().expand(act.shape[0])
    picked = act[torch.arange(act.shape[0], device=act.device), idx]  # (N, H, W) or (N,)
    if neuron is not None:
        if picked.ndim != 3:
            raise ValueError("a neuron (y, x) needs a spatial (N, C, H, W) activation")
        y, x = neuron
        if not (0 <= y < picked.shape[1] and 0 <= x < picked.shape[2]):
            raise ValueError(f"neuron {neuron} outside the layer's {tuple(picked.shape[1:])} map")
        return picked[:, y, x]
    return per_chain_mean(picked)


class ActivationEnergy(Energy):
    """Minus the activation objective of one layer of ``model``.

    Parameters
    ----------
    model : nn.Module
        Frozen, eval-mode model taking the images as sampled.
    layer : str
        ``named_modules()`` dotted path.
    channel : int or Tensor, optional
        One channel for every chain, or a ``(chains,)`` tensor: one channel per chain (a whole
        grid of channel visualizations in one batch).
    neuron : (int, int), optional
        With ``channel``: the unit at ``(y, x)`` of that channel's map (default its centre
        when ``neuron="center"``).
    direction : Tensor, optional
        A ``(C,)`` direction in channel space.
    """

    name = "activation"

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        channel=None,
        neuron=None,
        direction: Tensor | None = None,
    ):
        resolve_layers(model, [layer])
        if direction is not None and channel is not None:
            raise ValueError("give a channel or a direction, not both")
        if neuron is not None and channel is None:
            raise ValueError("a neuron needs its channel")
        self.model, self.layer = model, layer
        self.channel = None if channel is None else torch.as_tensor(channel).reshape(-1)
        self.neuron, self.direction = neuron, direction
        self.channels = getattr(model, "input_channels", None)

    def activation(self, x: Tensor) -> Tensor:
        check_images(x, channels=self.channels, who="ActivationEnergy")
        return capture(self.model, [self.layer], x)[self.layer]

    def energy(self, x: Tensor) -> Tensor:
        act = self.activation(x)
        if self.channel is not None:
            n_ch = act.shape[1]
            if int(self.channel.max()) >= n_ch or int(self.channel.min()) < 0:
                raise ValueError(
                    f"channel {self.channel.tolist()} out of range: layer "
                    f"{self.layer!r} has {n_ch} channels"
                )
            if len(self.channel) not in (1, x.shape[0]):
                raise ValueError(f"{len(self.channel)} channels for {x.shape[0]} chains")
        neuron = self.neuron
        if neuron == "center":
            neuron = (act.shape[2] // 2, act.shape[3] // 2)
        channel = None if self.channel is None else on_device(self, "channel", act)
        return -activation_objective(act, channel=channel, neuron=neuron, direction=self.direction)

    def __repr__(self) -> str:
        what = (
            "layer"
            if self.channel is None and self.direction is None
            else "direction"
            if self.direction is not None
            else f"channel {self.channel.tolist()}"
        )
        return f"ActivationEnergy({self.layer!r}, {what})"


def guided_objective(act: Tensor, guide: Tensor) -> Tensor:
    """Per chain, the mean over positions ``p`` of ``max_q <act_p, guide_q>``: each position's
    features matched with the guide's most similar ones (the guided objective of the
    google/deepdream notebook). ``act (N, C, H, W)``, ``guide (C, Q)``."""
    feats = act.flatten(2)  # (N, C, P)
    scores = torch.einsum("ncp,cq->npq", feats, guide.to(feats))
    return scores.max(dim=2).values.mean(1)


class DreamEnergy(Energy):
    """DeepDream's energy: minus the mean squared activation of one or several layers, all
    served by one forward pass, or, with a ``guide`` image, minus the guided objective
    (features matched to the guide's).

    Parameters
    ----------
    model : nn.Module
        Frozen, eval-mode model taking the images as sampled.
    layers : str or sequence of str
        ``named_modules()`` dotted paths.
    guide : Tensor, optional
        ``(1, C, H, W)`` guide image; its features are computed once and cached.
    weights : sequence of float, optional
        One weight per layer (default 1 each).
    """

    name = "dream"

    def __init__(self, model: nn.Module, layers, *, guide: Tensor | None = None, weights=None):
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        resolve_layers(model, self.layers)
        self.model = model
        self.weights = [1.0] * len(self.layers) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.layers):
            raise ValueError(f"{len(self.weights)} weights for {len(self.layers)} layers")
        self.channels = getattr(model, "input_channels", None)
        self.guide_features = None
        if guide is not None:
            check_images(guide, channels=self.channels, who="DreamEnergy guide")
            with torch.no_grad():
                acts = capture(model, self.layers, guide[:1])
            self.guide_features = {k: v[0].flatten(1) for k, v in acts.items()}

    def energy(self, x: Tensor) -> Tensor:
        check_images(x, channels=self.channels, who="DreamEnergy")
        acts = capture(self.model, self.layers, x)
        total = x.new_zeros(x.shape[0])
        for layer, w in zip(self.layers, self.weights, strict=True):
            if self.guide_features is None:
                total = total - w * activation_objective(acts[layer])
            else:
                total = total - w * guided_objective(acts[layer], self.guide_features[layer])
        return total

    def __repr__(self) -> str:
        guided = ", guided" if self.guide_features is not None else ""
        return f"DreamEnergy({self.layers}{guided})"
