"""A crash-safe, self-describing record of a run on disk: a zarr directory store.

Layout (zarr format 3; ``xarray.open_datatree(path, engine="zarr", consolidated=False)`` reads
it as it is, and ``langevin_images.open_record(path)`` returns the ArviZ DataTree)::

    /                 attrs: the run's configuration and spec, its shape, and how far it got
                      (completed_steps, grad_evals, checkpoint_slot, checkpoint_step, finished)
    /draws/image      (chain, draw, channel, row, col) kept draws (``x`` for other shapes)
    /steps/<stat>     (chain, step) one value per step, warmup included
    /checkpoint/state_0, state_1
                      the state a resumed run continues from, as the bytes of a
                      ``torch.save`` (read back with ``weights_only=True``), in two slots

Why it survives ``kill -9``: zarr writes every chunk and every metadata file to a temporary
name and renames it into place (zarr >= 3.4's ``LocalStore``), so each file is either its old
or its new whole self. Arrays are preallocated at ``start`` and read as NaN where no block was
written yet, and the root attrs say how many steps are valid. A flush writes, in this order,
the block's chunks, the checkpoint into the slot that is *not* current, and then the root
attrs naming the new step count and slot: a kill between any two of these leaves the old,
consistent record. Files are not fsync'ed: a record survives the death of the process (a
crash, SIGKILL, the OOM killer), and a power cut only as far as the file system keeps renames
ordered with the data they name.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Recorder, draw_index

__all__ = ["FORMAT", "ZarrRecorder", "is_record", "json_safe"]

FORMAT = "langevin_images.record/1"

_TORCH_TO_NP = {
    torch.float16: "float16",
    torch.bfloat16: "float32",  # no bfloat16 in zarr: draws are widened (exactly)
    torch.float32: "float32",
    torch.float64: "float64",
    torch.bool: "bool",
    torch.int64: "int64",
    torch.int32: "int32",
}
_NP_TO_TORCH = {
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
    "int64": torch.int64,
    "int32": torch.int32,
}


def _zarr():
    """zarr, with its I/O thread pool at one worker unless the user configured it: a record
    writes a handful of chunks per block, and each extra worker thread gets a malloc arena of
    its own, which made the resident memory of a run vary by 6 MiB from run to run (26 MiB
    with zarr's default pool, 10-12 MiB with one worker, 2 000 and 20 000 steps alike). Only
    a pool not yet made by this process is affected."""
    import zarr

    if zarr.config.get("threading.max_workers", None) is None:
        zarr.config.set({"threading.max_workers": 1})
    return zarr


def position_dims(shape: tuple[int, ...]) -> tuple[str, list[str]]:
    """The posterior variable and its dims for positions of ``shape``: images ``(C, H, W)``
    are ``image (channel, row, col)``, anything else ``x (x_dim_0, ...)``."""
    if len(shape) == 3:
        return "image", ["channel", "row", "col"]
    return "x", [f"x_dim_{i}" for i in range(len(shape))]


def is_record(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a record this module wrote."""
    meta = Path(path) / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON values: non-finite floats become null, tuples lists, keys and
    anything JSON has no type for strings (zarr attrs, run cards)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


class ZarrRecorder(Recorder):
    """Streams draws and statistics to a crash-safe zarr store, with checkpoints to resume from.

    Memory stays flat in the number of steps: ``buffer_steps`` steps are held between two
    writes. The driver writes a block when ``due()`` says so: when the buffer is full or
    ``flush_seconds`` have passed since the last write (so that a slow model loses at most that
    much work to a kill).

    Parameters
    ----------
    path : str or Path
        The store, a folder (by convention ending in ``.zarr``). An existing record there is
        replaced; anything else there is refused.
    buffer_steps : int
        Steps held in memory between two writes; also the chunk length of the statistics.
    flush_seconds : float
        Write a block at least this often (in wall-clock seconds) on slow runs.
    """

    def __init__(
        self, path: str | os.PathLike, *, buffer_steps: int = 200, flush_seconds: float = 60.0
    ):
        if buffer_steps < 1:
            raise ValueError("buffer_steps must be >= 1")
        if not flush_seconds > 0:
            raise ValueError("flush_seconds must be > 0")
        self.path = Path(path)
        self.buffer_steps, self.flush_seconds = int(buffer_steps), float(flush_seconds)
        self._group = None
        self._writable = False
        self._buf_stats: dict[str, Tensor] = {}

    # ---- writing --------------------------------------------------------------------------

    def start(self, **kwargs: Any) -> None:
        zarr = _zarr()

        super().start(**kwargs)
        if self.path.exists():
            if not is_record(self.path):
                raise FileExistsError(f"{self.path} exists and is not a langevin_images record")
            shutil.rmtree(self.path)
        g = zarr.open_group(self.path, mode="w")
        g.attrs.update(
            json_safe(
                {
                    **self.attrs,
                    "format": FORMAT,
                    "chains": self.chains,
                    "warmup": self.warmup,
                    "steps": self.steps,
                    "thin": self.thin,
                    "buffer_steps": self.buffer_steps,
                    "position_shape": list(self.position_shape),
                    "dtype": str(self.dtype).removeprefix("torch."),
                    "completed_steps": 0,
                    "grad_evals": 0,
                    "checkpoint_slot": -1,
                    "checkpoint_step": -1,
                    "finished": False,
                }
            )
        )
        name, dims = position_dims(self.position_shape)
        g.create_group("draws").create_array(
            name,
            shape=(self.chains, self.draws, *self.position_shape),
            chunks=self._position_chunks(),
            dtype=_TORCH_TO_NP[self.dtype],
            dimension_names=["chain", "draw", *dims],
            fill_value=np.nan,
        )
        g.create_group("steps")
        g.create_group("checkpoint")
        self._group, self._writable = g, True
        self._setup_buffers(0)

    def _setup_buffers(self, completed: int) -> None:
        self.completed = completed
        self._buf_pos = torch.empty(
            (self.chains, max(1, self.buffer_steps // self.thin + 1), *self.position_shape),
            dtype=self.dtype,
        )
        self._buf_start, self._buf_draws = completed, 0
        self._draw0 = self.completed_draws
        self._last_flush = time.monotonic()

    def _position_chunks(self, target_bytes: int = 4 << 20) -> tuple[int, ...]:
        """Chunks of about ``target_bytes``: all chains and the draws of one block when they
        fit (few files), fewer chains when not."""
        itemsize = np.dtype(_TORCH_TO_NP[self.dtype]).itemsize
        per_draw = int(np.prod(self.position_shape)) * itemsize
        per_block = max(1, min(max(self.draws, 1), -(-self.buffer_steps // self.thin)))
        chains = max(1, min(self.chains, target_bytes // max(per_draw, 1)))
        draws = max(1, min(per_block, target_bytes // max(per_draw * chains, 1)))
        return (chains, draws, *self.position_shape)

    def save_step(self, t: int, position: Tensor | None, stats: dict[str, Tensor]) -> None:
        if not self._writable:
            raise RuntimeError(f"{self.path} is open for reading only")
        if t != self.completed:
            raise ValueError(f"steps are saved in order: expected step {self.completed}, got {t}")
        if not self._buf_stats:
            self._create_stats(stats)
        i = t - self._buf_start
        if i >= self.buffer_steps:
            self.flush()  # a caller that never asks due(): write without a checkpoint
            i = 0
        for k, v in stats.items():
            self._buf_stats[k][:, i] = v
        if draw_index(t, self.warmup, self.thin) is not None:
            self._buf_pos[:, self._buf_draws] = position.detach().to("cpu", self.dtype)
            self._buf_draws += 1
        self.completed = t + 1

    def _create_stats(self, stats: dict[str, Tensor]) -> None:
        steps = self._group["steps"]
        self._group.attrs["stat_names"] = list(stats)
        for k, v in stats.items():
            dtype = v.dtype if v.dtype in _TORCH_TO_NP else torch.float64
            self._buf_stats[k] = torch.empty(
                (self.chains, self.buffer_steps), dtype=dtype, device=v.device
            )
            steps.create_array(
                k,
                shape=(self.chains, self.total),
                chunks=(self.chains, min(self.total, self.buffer_steps)),
                dtype=_TORCH_TO_NP[dtype],
                dimension_names=["chain", "step"],
                fill_value=False if dtype == torch.bool else 0,
            )

    def due(self) -> bool:
        n = self.completed - self._buf_start
        return n >= self.buffer_steps or (
            n > 0 and time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def flush(self, checkpoint: dict | None = None, attrs: dict | None = None) -> None:
        if not self._writable:
            return
        g = self._group
        n = self.completed - self._buf_start
        if n > 0:
            steps = g["steps"]
            for k, buf in self._buf_stats.items():
                steps[k][:, self._buf_start : self.completed] = _to_numpy(buf[:, :n])
        if self._buf_draws:
            name, _ = position_dims(self.position_shape)
            d0, d1 = self._draw0, self._draw0 + self._buf_draws
            g["draws"][name][:, d0:d1] = _to_numpy(self._buf_pos[:, : self._buf_draws])
        self._draw0 += self._buf_draws
        self._buf_start, self._buf_draws = self.completed, 0
        update = {"completed_steps": self.completed, **(attrs or {})}
        if checkpoint is not None:
            slot = 1 - max(int(g.attrs.get("checkpoint_slot", -1)), 0)
            blob = io.BytesIO()
            torch.save(checkpoint, blob)
            g["checkpoint"].create_array(
                f"state_{slot}",
                data=np.frombuffer(blob.getbuffer(), dtype=np.uint8),
                chunks=(max(1, blob.getbuffer().nbytes),),
                dimension_names=[f"byte_{slot}"],
                overwrite=True,
            )
            update.update(checkpoint_slot=slot, checkpoint_step=self.completed)
        g.attrs.update(json_safe(update))
        self._last_flush = time.monotonic()

    def close(self, checkpoint: dict | None = None, attrs: dict | None = None) -> None:
        if self._writable:
            self.flush(checkpoint, {**(attrs or {}), "finished": self.completed == self.total})
            self._writable = False

    # ---- reading and resuming ---------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> ZarrRecorder:
        """The record at ``path``, for reading (and ``resume``)."""
        zarr = _zarr()

        if not is_record(path):
            raise FileNotFoundError(f"{path}: not a langevin_images record")
        g = zarr.open_group(path, mode="r")
        a = dict(g.attrs)
        rec = cls(path, buffer_steps=a.get("buffer_steps", 200))
        Recorder.start(
            rec,
            chains=a["chains"],
            warmup=a["warmup"],
            steps=a["steps"],
            thin=a["thin"],
            position_shape=tuple(a["position_shape"]),
            dtype=getattr(torch, a["dtype"]),
            attrs=a,
        )
        rec.completed = int(a["completed_steps"])
        rec._group = g
        try:
            steps = g["steps"]
            rec._stat_dtypes = {
                k: _NP_TO_TORCH[str(steps[k].dtype)] for k in a.get("stat_names", [])
            }
        except KeyError as err:  # killed between writing its attributes and its arrays
            raise ValueError(
                f"{path}: an incomplete record (its array {err} is missing: the run was killed "
                "while the record was being created); nothing to resume, start the run again"
            ) from None
        return rec

    @property
    def checkpoint_step(self) -> int:
        """The step a resumed run continues from (-1: no checkpoint yet)."""
        return int(self._group.attrs.get("checkpoint_step", -1))

    def load_checkpoint(self) -> dict:
        slot = int(self._group.attrs.get("checkpoint_slot", -1))
        if slot < 0:
            raise ValueError(f"{self.path}: no checkpoint was written yet, nothing to resume")
        data = self._group["checkpoint"][f"state_{slot}"][:]
        return torch.load(io.BytesIO(data.tobytes()), weights_only=True, map_location="cpu")

    def resume(self, device: torch.device | str = "cpu") -> dict:
        """Reopen for writing at the last checkpoint and return it: the steps after it (written
        by a block whose checkpoint did not land) are overwritten by the resumed run."""
        zarr = _zarr()

        checkpoint = self.load_checkpoint()
        for partial in self.path.rglob("*.partial"):  # a kill mid-write leaves its temporary
            partial.unlink(missing_ok=True)
        self._group = zarr.open_group(self.path, mode="r+")
        self._writable = True
        self._setup_buffers(int(checkpoint["step"]))
        self._buf_stats = {
            k: torch.empty((self.chains, self.buffer_steps), dtype=dtype, device=device)
            for k, dtype in self._stat_dtypes.items()
        }
        return checkpoint

    def get_chain(self, *, discard: int = 0, thin: int = 1) -> Tensor:
        self.flush()
        name, _ = position_dims(self.position_shape)
        arr = self._group["draws"][name][:, discard : self.completed_draws : thin]
        return torch.from_numpy(np.asarray(arr)).to(self.dtype)

    def get_stats(self) -> dict[str, Tensor]:
        self.flush()
        steps = self._group["steps"]
        names = self._group.attrs.get("stat_names")
        if names is None:  # stopped before its first step: the statistics every run has, empty
            empty = torch.empty((self.chains, 0), dtype=torch.float64)
            return {k: empty for k in ("acceptance_prob", "is_accepted", "step_size", "energy",
                                       "grad_norm", "diverging")}  # fmt: skip
        return {k: torch.from_numpy(np.asarray(steps[k][:, : self.completed])) for k in names}

    def lazy_positions(self):
        """The kept draws as a lazily read ``xarray.Variable`` (read block by block)."""
        import xarray as xr

        self.flush()
        name, dims = position_dims(self.position_shape)
        ds = xr.open_zarr(self.path, group="draws", consolidated=False, chunks=None)
        kept = ds[name].isel(draw=slice(0, self.completed_draws)).variable
        return xr.Variable(["chain", "draw", *dims], kept)


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()
