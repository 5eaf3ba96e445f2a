"""Class likelihood ``-log p(y = c | x)`` of any torch classifier, as an energy."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..devices import on_device
from .base import SUMMARY_PREFIX, Energy, check_images

__all__ = ["ClassLikelihood", "class_index", "class_nll"]


def class_index(target: int | str, class_names: Sequence[str] | None, n_classes: int | None) -> int:
    """The index of ``target`` (an index or a class name); one-line errors otherwise."""
    if isinstance(target, str):
        if class_names is None:
            raise ValueError(f"target {target!r} is a name but the model has no class names")
        lowered = [n.lower() for n in class_names]
        if target.lower() in lowered:
            return lowered.index(target.lower())
        close = difflib.get_close_matches(target.lower(), lowered, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown class name {target!r}{hint}")
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"target must be a class index or name, got {target!r}")
    n = n_classes if n_classes is not None else (len(class_names) if class_names else None)
    if target < 0 or (n is not None and target >= n):
        raise ValueError(f"class index {target} out of range: the model has {n} classes")
    return target


def class_nll(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """``-log softmax(logits / temperature)[target]`` per row (plain-function twin)."""
    return F.cross_entropy(logits / temperature, target, reduction="none")


class ClassLikelihood(Energy):
    """``-log p(y = c | x)`` for a classifier that returns logits.

    Parameters
    ----------
    model : nn.Module
        Takes the images as sampled (zoo models normalize inside) and returns logits.
    target : int, str, sequence, or Tensor
        One class for every chain, or one per chain (a sequence or a ``(chains,)`` tensor).
    class_names : sequence of str, optional
        Names for ``target``; defaults to ``model.class_names`` when the model has them.
    temperature : float
        Softmax temperature ``tau`` of the classifier: ``-log softmax(logits / tau)[c]``.
    resize : (int, int), optional
        Resize the images (bilinear, differentiable) before the model, e.g. to 224 x 224.
    """

    name = "likelihood"

    def __init__(
        self,
        model: nn.Module,
        target,
        *,
        class_names: Sequence[str] | None = None,
        temperature: float = 1.0,
        resize: tuple[int, int] | None = None,
    ):
        if not temperature > 0:
            raise ValueError("ClassLikelihood: temperature must be > 0")
        self.model = model
        self.class_names = class_names or getattr(model, "class_names", None)
        self.n_classes = getattr(model, "num_classes", None) or (
            len(self.class_names) if self.class_names else None
        )
        self.channels = getattr(model, "input_channels", None)
        targets = target.tolist() if isinstance(target, Tensor) else target
        if isinstance(targets, str | int) and not isinstance(targets, bool):
            self.target = torch.tensor([class_index(targets, self.class_names, self.n_classes)])
        else:
            self.target = torch.tensor(
                [class_index(t, self.class_names, self.n_classes) for t in targets]
            )
        self.temperature, self.resize = float(temperature), resize
        self._max_target = int(self.target.max())  # a number: checked without a tensor op

    def logits(self, x: Tensor) -> Tensor:
        check_images(x, channels=self.channels, who="ClassLikelihood")
        if self.resize is not None and tuple(x.shape[-2:]) != tuple(self.resize):
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        return self.model(x)

    def _targets(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if len(self.target) not in (1, n):
            raise ValueError(f"ClassLikelihood has {len(self.target)} targets for {n} chains")
        return on_device(self, "target", x).expand(n)

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The energy, and the summary ``log_prob_target``: ``log p(y = c | x)`` at the
        classifier's own temperature 1, whatever ``temperature`` and weight the energy has."""
        logits, targets = self._logits_checked(x)
        value = class_nll(logits, targets, self.temperature)
        log_prob = -(value if self.temperature == 1.0 else class_nll(logits, targets))
        return value, {self.name: value, SUMMARY_PREFIX + "log_prob_target": log_prob.detach()}

    def energy(self, x: Tensor) -> Tensor:
        return class_nll(*self._logits_checked(x), self.temperature)

    def _logits_checked(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.logits(x)
        if logits.ndim != 2 or (self.n_classes is not None and logits.shape[1] != self.n_classes):
            raise ValueError(
                f"ClassLikelihood: the model returned logits of shape "
                f"{tuple(logits.shape)}, expected (N, {self.n_classes})"
            )
        if self._max_target >= logits.shape[1]:
            raise ValueError(
                f"class index {self._max_target} out of range: the model "
                f"has {logits.shape[1]} classes"
            )
        return logits, self._targets(x)

    def __repr__(self) -> str:
        t = self.target.tolist()
        shown = t[0] if len(t) == 1 else f"{len(t)} per-chain targets"
        return f"ClassLikelihood({type(self.model).__name__}, target={shown})"
