"""Style-transfer energies (Gatys et al. 2016; Huang & Belongie 2017): content, style, AdaIN.

Feature targets are computed once, at construction, from the content or style image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Energy, check_images
from .features import capture, resolve_layers

__all__ = ["AdaINStatsEnergy", "ContentEnergy", "StyleEnergy", "channel_stats", "gram"]


def gram(f: Tensor) -> Tensor:
    """``G = F F^T / (C H W)`` per image, for features ``(N, C, H, W)``."""
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def channel_stats(f: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over positions, each ``(N, C)``."""
    flat = f.reshape(f.shape[0], f.shape[1], -1)
    return flat.mean(-1), torch.sqrt(flat.var(-1, unbiased=False) + eps)


class _FeatureEnergy(Energy):
    def __init__(
        self, model: nn.Module, layers: list[str], image: Tensor, weights: list[float] | None = None
    ):
        check_images(image, channels=getattr(model, "input_channels", None), who=self.name)
        resolve_layers(model, layers)
        self.model, self.layers = model, list(layers)
        self.weights = list(weights) if weights is not None else [1.0] * len(layers)
        if len(self.weights) != len(self.layers):
            raise ValueError("one weight per layer")
        with torch.no_grad():
            feats = self._features(image)
        self.targets = {k: self.target_of(v).detach() for k, v in feats.items()}

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        return capture(self.model, self.layers, x)

    def energy(self, x: Tensor) -> Tensor:
        check_images(x, channels=getattr(self.model, "input_channels", None), who=self.name)
        feats = self._features(x)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for w, k in zip(self.weights, self.layers, strict=True):
            total = total + w * self.distance(self.target_of(feats[k]), self.targets[k].to(x))
        return total


class ContentEnergy(_FeatureEnergy):
    """``sum_l w_l |F_l(x) - F_l(x_c)|^2`` (mean over feature entries)."""

    name = "content"

    def target_of(self, f: Tensor) -> Tensor:
        return f

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"content features {tuple(a.shape[1:])} vs target "
                f"{tuple(b.shape[1:])}: the image and content sizes must match"
            )
        return (a - b).square().reshape(a.shape[0], -1).mean(1)


class StyleEnergy(_FeatureEnergy):
    """``sum_l w_l |G_l(x) - G_l(x_s)|^2`` with Gram matrices ``G = F F^T / (C H W)``."""

    name = "style"

    def target_of(self, f: Tensor) -> Tensor:
        return gram(f)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        return (a - b).square().reshape(a.shape[0], -1).sum(1)


class AdaINStatsEnergy(_FeatureEnergy):
    """``sum_l w_l (|mu_l(x) - mu_l(x_s)|^2 + |sigma_l(x) - sigma_l(x_s)|^2)``: the style
    statistics that adaptive instance normalization transfers."""

    name = "adain_stats"

    def target_of(self, f: Tensor) -> Tensor:
        return torch.cat(channel_stats(f), 1)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        return (a - b).square().sum(1)
