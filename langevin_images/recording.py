"""Recorders: where a run's draws and per-step statistics go, in memory or streamed to disk.

Both recorders share one interface (after emcee's backends)::

    rec.start(chains=..., warmup=..., steps=..., thin=..., position_shape=..., dtype=...,
              attrs=...)
    rec.save_step(t, position, stats)     # every global step t = 0 .. warmup + steps - 1;
                                          # position may be None where rec.keeps(t) is False
    rec.close()
    rec.get_chain(discard=0, thin=1)      # (chain, draw, ...) draws after warmup, thinned
    rec.get_stats()                       # name -> (chain, step), warmup included

A draw is kept at sampling step ``s = t - warmup`` when ``(s + 1) % thin == 0``, so a run with
``steps`` sampling steps keeps ``steps // thin`` draws.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["MemoryRecorder", "NetCDFRecorder", "Recorder", "as_recorder", "draw_index"]


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

    def close(self) -> None:
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


_NP_DTYPES = {
    torch.float16: "f2",
    torch.bfloat16: "f4",
    torch.float32: "f4",
    torch.float64: "f8",
    torch.bool: "u1",
    torch.int64: "i8",
    torch.int32: "i4",
}


class NetCDFRecorder(Recorder):
    """Streams draws and statistics to a netCDF4 file, so memory does not grow with the steps.

    The file holds ``position (chain, draw, d0, d1, ...)`` and one ``(chain, step)`` variable per
    statistic, preallocated at ``start`` and filled in blocks of ``buffer_steps`` steps. Its
    ``completed_steps`` attribute is updated at every flush, so a run that stops early leaves
    a readable file with everything up to the last flush. The file is this recorder's own
    layout; ``Run.to_datatree()`` turns it into the ArviZ DataTree.

    Parameters
    ----------
    path : str or Path
        File to write (overwritten).
    buffer_steps : int
        Steps held in memory between two writes.
    """

    def __init__(self, path: str | os.PathLike, *, buffer_steps: int = 200):
        if buffer_steps < 1:
            raise ValueError("buffer_steps must be >= 1")
        self.path = Path(path)
        self.buffer_steps = buffer_steps
        self._file = None

    def start(self, **kwargs: Any) -> None:
        import h5netcdf

        super().start(**kwargs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pos_dims = tuple(f"position_dim_{i}" for i in range(len(self.position_shape)))
        f = h5netcdf.File(self.path, "w")
        f.dimensions = {
            "chain": self.chains,
            "draw": self.draws,
            "step": self.total,
            **dict(zip(pos_dims, self.position_shape, strict=True)),
        }
        f.create_variable(
            "position",
            ("chain", "draw", *pos_dims),
            _NP_DTYPES[self.dtype],
            chunks=self._position_chunks() if self.draws else None,
        )
        self._file = f
        for k, v in self.attrs.items():
            f.attrs[k] = v
        f.attrs.update(warmup=self.warmup, steps=self.steps, thin=self.thin, completed_steps=0)
        self._buf_pos = torch.empty(
            (self.chains, max(1, self.buffer_steps // self.thin + 1), *self.position_shape),
            dtype=self.dtype,
        )
        self._buf_stats: dict[str, Tensor] = {}
        self._buf_start, self._buf_draws, self._draw0 = 0, 0, 0

    def _position_chunks(self, target_bytes: int = 4 << 20) -> tuple[int, ...]:
        """Chunks of about ``target_bytes``: all chains and the draws of one flush when they
        fit (few chunks, so the file's chunk index stays small), fewer chains when not."""
        per_draw = int(np.prod(self.position_shape)) * np.dtype(_NP_DTYPES[self.dtype]).itemsize
        per_flush = max(1, min(self.draws, -(-self.buffer_steps // self.thin)))
        chains = max(1, min(self.chains, target_bytes // max(per_draw, 1)))
        draws = max(1, min(per_flush, target_bytes // max(per_draw * chains, 1)))
        return (chains, draws, *self.position_shape)

    def save_step(self, t: int, position: Tensor | None, stats: dict[str, Tensor]) -> None:
        if not self._buf_stats:
            for k, v in stats.items():
                dtype = v.dtype if v.dtype in _NP_DTYPES else torch.float64
                self._buf_stats[k] = torch.empty(
                    (self.chains, self.buffer_steps), dtype=dtype, device=v.device
                )
                self._file.create_variable(
                    k,
                    ("chain", "step"),
                    _NP_DTYPES[dtype],
                    chunks=(self.chains, min(self.total, self.buffer_steps)),
                )
        i = t - self._buf_start
        for k, v in stats.items():
            self._buf_stats[k][:, i] = v
        if draw_index(t, self.warmup, self.thin) is not None:
            self._buf_pos[:, self._buf_draws] = position.detach().to("cpu", self.dtype)
            self._buf_draws += 1
        self.completed = t + 1
        if i + 1 == self.buffer_steps:
            self._flush()

    def _flush(self) -> None:
        f = self._file
        n = self.completed - self._buf_start
        if n > 0:
            for k, buf in self._buf_stats.items():
                f.variables[k][:, self._buf_start : self.completed] = _to_numpy(buf[:, :n])
        if self._buf_draws:
            d0, d1 = self._draw0, self._draw0 + self._buf_draws
            f.variables["position"][:, d0:d1] = _to_numpy(self._buf_pos[:, : self._buf_draws])
        self._draw0 += self._buf_draws
        self._buf_start, self._buf_draws = self.completed, 0
        f.attrs["completed_steps"] = self.completed
        f.flush()

    def close(self) -> None:
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None

    def _read(self):
        import h5netcdf

        if self._file is not None:
            self._flush()
            return self._file, False
        return h5netcdf.File(self.path, "r"), True

    def get_chain(self, *, discard: int = 0, thin: int = 1) -> Tensor:
        f, owned = self._read()
        try:
            arr = f.variables["position"][:, discard : self.completed_draws : thin]
        finally:
            if owned:
                f.close()
        return torch.from_numpy(np.asarray(arr)).to(self.dtype)

    def get_stats(self) -> dict[str, Tensor]:
        f, owned = self._read()
        try:
            out = {}
            for k, buf in self._buf_stats.items():
                arr = np.asarray(f.variables[k][:, : self.completed])
                out[k] = torch.from_numpy(arr).to(buf.dtype)
        finally:
            if owned:
                f.close()
        return out


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def as_recorder(record_to: Any) -> Recorder:
    """``None``: in memory; a path: streamed to a netCDF file; a Recorder: used as it is."""
    if record_to is None:
        return MemoryRecorder()
    if isinstance(record_to, Recorder):
        return record_to
    if isinstance(record_to, str | os.PathLike):
        return NetCDFRecorder(record_to)
    raise TypeError(f"record_to must be None, a path or a Recorder, not {type(record_to).__name__}")
