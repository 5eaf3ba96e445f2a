"""Recorders: where a run's draws and per-step statistics go, in memory or streamed to disk.

Both recorders share one interface (after emcee's backends)::

    rec.start(chains=..., warmup=..., steps=..., thin=..., position_shape=..., dtype=...,
              attrs=...)
    rec.save_step(t, position, stats)     # every global step t = 0 .. warmup + steps - 1;
                                          # position may be None where rec.keeps(t) is False
    if rec.due():                         # after a whole step: a block is full (disk only)
        rec.flush(checkpoint)             # writes the block, then the state to resume from
    rec.close(checkpoint)
    rec.get_chain(discard=0, thin=1)      # (chain, draw, ...) draws after warmup, thinned
    rec.get_stats()                       # name -> (chain, step), warmup included

A draw is kept at sampling step ``s = t - warmup`` when ``(s + 1) % thin == 0``, so a run with
``steps`` sampling steps keeps ``steps // thin`` draws.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["MemoryRecorder", "Recorder", "as_recorder", "draw_index"]


def draw_index(t: int, warmup: int, thin: int) -> int | None:
    """The draw that global step ``t`` fills, or None if the step is not kept."""
    s = t - warmup
    if s < 0 or (s + 1) % thin:
        return None
    return (s + 1) // thin - 1


class Recorder:
    """Common bookkeeping of the recorders."""

    def start(
        self,
        *,
        chains: int,
        warmup: int,
        steps: int,
        thin: int,
        position_shape: tuple[int, ...],
        dtype: torch.dtype,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.chains, self.warmup, self.steps, self.thin = chains, warmup, steps, thin
        self.position_shape, self.dtype = tuple(position_shape), dtype
        self.draws = steps // thin
        self.total = warmup + steps
        self.attrs = dict(attrs or {})
        self.completed = 0  # steps saved so far

    def keeps(self, t: int) -> bool:
        """Whether global step ``t`` keeps a draw (the caller may pass no position if not)."""
        return draw_index(t, self.warmup, self.thin) is not None

    def save_step(self, t: int, position: Tensor | None, stats: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def due(self) -> bool:
        """Whether the steps buffered so far should be written now (never, in memory)."""
        return False

    def flush(self, checkpoint: dict | None = None, attrs: dict | None = None) -> None:
        """Write what is buffered, then ``checkpoint`` (what a resumed run needs) and ``attrs``
        (run-level facts such as the gradient count); nothing, in memory."""

    def close(self, checkpoint: dict | None = None, attrs: dict | None = None) -> None:
        """Flush what is buffered; safe to call twice."""

    def get_chain(self, *, discard: int = 0, thin: int = 1) -> Tensor:
        raise NotImplementedError

    def get_stats(self) -> dict[str, Tensor]:
        raise NotImplementedError

    @property
    def completed_draws(self) -> int:
        return max(0, self.completed - self.warmup) // self.thin


class MemoryRecorder(Recorder):
    """Keeps draws in a preallocated CPU tensor and statistics on the sampling device.

    Statistics stay on the device so that recording forces no device-to-host copy per step;
    draws go to the CPU once per kept draw. The statistics of one dtype share a
    ``(step, stat, chain)`` buffer, so a step writes them with one ``torch.stack`` per dtype
    (two) instead of one indexed copy per statistic (six or more): each is a kernel launch on
    a GPU.
    """

    def start(self, **kwargs: Any) -> None:
        super().start(**kwargs)
        self._samples = torch.empty(
            (self.chains, self.draws, *self.position_shape), dtype=self.dtype
        )
        self._groups: list[tuple[list[str], Tensor]] = []  # (names, buffer) per dtype
        self._order: list[str] = []

    def save_step(self, t: int, position: Tensor | None, stats: dict[str, Tensor]) -> None:
        if not self._groups:
            self._order = list(stats)
            by_dtype: dict[torch.dtype, list[str]] = {}
            for k, v in stats.items():
                by_dtype.setdefault(v.dtype, []).append(k)
            for dtype, names in by_dtype.items():
                device = stats[names[0]].device
                buf = torch.empty((self.total, len(names), self.chains), dtype=dtype, device=device)
                self._groups.append((names, buf))
        for names, buf in self._groups:
            torch.stack([stats[k] for k in names], out=buf[t])
        d = draw_index(t, self.warmup, self.thin)
        if d is not None:
            self._samples[:, d] = position.detach().to("cpu", self.dtype)
        self.completed = t + 1

    def get_chain(self, *, discard: int = 0, thin: int = 1) -> Tensor:
        return self._samples[:, : self.completed_draws][:, discard::thin]

    def get_stats(self) -> dict[str, Tensor]:
        out = {}
        for names, buf in self._groups:
            done = buf[: self.completed].cpu()
            out.update({k: done[:, i].T.contiguous() for i, k in enumerate(names)})
        return {k: out[k] for k in self._order}


def as_recorder(record_to: Any) -> Recorder:
    """``None``: in memory; a path: a crash-safe record on disk (``ZarrRecorder``); a Recorder:
    used as it is."""
    if record_to is None:
        return MemoryRecorder()
    if isinstance(record_to, Recorder):
        return record_to
    if isinstance(record_to, str | os.PathLike):
        from .disk import ZarrRecorder

        return ZarrRecorder(record_to)
    raise TypeError(f"record_to must be None, a path or a Recorder, not {type(record_to).__name__}")
