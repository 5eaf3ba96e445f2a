"""A recorded run as an ArviZ 1.x ``xarray.DataTree``.

Groups (dims ``chain, draw`` first):

``posterior``
    ``image (chain, draw, channel, row, col)`` for ``(C, H, W)`` positions, else
    ``x (chain, draw, x_dim_0, ...)``; ``energy (chain, draw)``; one ``(chain, draw)``
    variable per named term of an energy that reports its terms.
``sample_stats``
    one value per kept draw: ``lp = -energy / T``, ``acceptance_rate`` (mean acceptance
    probability over the ``thin`` steps that led to the draw), ``is_accepted`` and ``diverging``
    (any of those steps), ``step_size`` and ``grad_norm`` (at the draw's step; a kernel
    without gradients, pcn, has none).
``warmup_sample_stats``
    the same for every warmup step, when there was a warmup.

Scalar summaries make convergence measurable on images, where R-hat of single pixels says
little: besides ``energy`` and its terms, the target class log-probability
(``log_prob_target``, when the energy has a class likelihood), ``pixel_projection
(chain, draw, projection)``, the pixels projected on fixed random unit directions, and, given
a feature map, ``feature_projection``, the features projected the same way. The directions
are drawn from ``projection_seed`` (kept in the attrs), so two runs of the same shape are
summarized alike.

A run streamed to disk is opened lazily: its draws are read only when used (the projections
read them block by block).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..energies.base import SUMMARY_PREFIX
from .disk import ZarrRecorder, position_dims

__all__ = ["RecordedRun", "open_record", "random_directions", "to_datatree"]


@dataclass
class RecordedRun:
    """A run as read back from its record alone, with no ``Run`` object: what ``to_datatree``
    needs (the recorder, the configuration, the gradient count) and what the record's attrs
    say (the spec, whether it finished or was interrupted)."""

    recorder: Any
    config: dict
    grad_evals: int
    attrs: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> RecordedRun:
        rec = ZarrRecorder.open(path)
        a = rec.attrs
        return cls(rec, dict(a.get("config") or {}), int(a.get("grad_evals", 0)), a)

    @property
    def chain_groups(self) -> list | None:
        return self.attrs.get("chain_groups")

    def to_datatree(self, **kwargs) -> xr.DataTree:
        return to_datatree(self, **kwargs)


def open_record(path: str | os.PathLike, **kwargs) -> xr.DataTree:
    """The ArviZ DataTree of the record at ``path``, read from disk alone (also while the run
    is still being written, or after it was killed: up to its last complete block).

    Keywords as in ``to_datatree`` (projections, features, chain_groups).
    """
    return to_datatree(RecordedRun.open(path), **kwargs)


def _stats_block(
    stats: dict[str, np.ndarray], start: int, stop: int, thin: int, temperature: float
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Statistics of steps ``start .. stop-1`` grouped in windows of ``thin`` steps."""
    n = (stop - start) // thin
    stop = start + n * thin

    def window(name: str) -> np.ndarray:
        a = stats[name][:, start:stop]
        return a.reshape(a.shape[0], n, thin)

    last = window("energy")[..., -1]
    scale = temperature if temperature > 0 else 1.0
    out = {
        "lp": -last / scale,
        "acceptance_rate": window("acceptance_prob").mean(-1),
        "is_accepted": window("is_accepted").astype(bool).any(-1),
        "diverging": window("diverging").astype(bool).any(-1),
        "step_size": window("step_size")[..., -1],
    }
    if "grad_norm" in stats:  # gradient-free kernels (pcn) have none
        out["grad_norm"] = window("grad_norm")[..., -1]
    return {k: (["chain", "draw"], v) for k, v in out.items()}, last


def random_directions(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors in ``R^dim`` (rows), a fixed function of ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    d = torch.randn((n, dim), generator=g, dtype=torch.float64)
    return (d / d.norm(dim=1, keepdim=True)).numpy()


def _projections(
    pos: xr.Variable, n: int, seed: int, features: Callable | None, block: int
) -> dict[str, np.ndarray]:
    """Pixels, and ``features(images)`` if given, projected on ``n`` seeded random unit
    directions (``seed`` and ``seed + 1``) for every (chain, draw), in one pass over the draws,
    ``block`` draws at a time; each direction set is drawn once the dimension is known."""
    chains, draws = pos.shape[:2]
    maps = {"pixel_projection": (None, seed)}
    if features is not None:
        maps["feature_projection"] = (features, seed + 1)
    out = {name: np.empty((chains, draws, n)) for name in maps}
    directions: dict[str, np.ndarray] = {}
    for start in range(0, draws, block):
        x = np.ascontiguousarray(pos[:, start : start + block].values)
        images = torch.from_numpy(x.reshape(-1, *x.shape[2:]))
        for name, (fn, s) in maps.items():
            with torch.no_grad():
                v = images if fn is None else fn(images)
            v = v.reshape(v.shape[0], -1).to(torch.float64).numpy()
            if name not in directions:
                directions[name] = random_directions(n, v.shape[1], s)
            out[name][:, start : start + x.shape[1]] = (v @ directions[name].T).reshape(
                chains, -1, n
            )
    return out


def to_datatree(
    run,
    *,
    projections: int = 8,
    projection_seed: int = 0,
    features: Callable | None = None,
    chain_groups=None,
    block_draws: int = 64,
) -> xr.DataTree:
    """Convert a ``Run`` to an ``xarray.DataTree`` with ArviZ's group and dim names.

    Parameters
    ----------
    run : Run
        A finished (or interrupted) run of ``langevin_images.sample``.
    projections : int
        How many random projections of the pixels (and of ``features``) to add; 0 for none.
    projection_seed : int
        Seed of the projection directions, recorded in the attrs.
    features : callable, optional
        ``images (N, C, H, W) -> (N, F)`` tensor, e.g. a classifier's penultimate layer
        (``diagnostics.metrics.penultimate``); adds ``feature_projection``.
    chain_groups : array-like, optional
        Default: the run's own (``sample(chain_groups=...)``).
        One label per chain (the target class, say): chains with different labels target
        different densities, and the diagnostics compare chains only within a label. Kept as
        the ``chain_group`` coordinate.
    block_draws : int
        Draws read at a time when projecting.
    """
    rec = run.recorder
    stats = {k: v.numpy() for k, v in rec.get_stats().items()}
    temperature = float(run.config.get("temperature", 1.0))
    warmup, thin = rec.warmup, rec.thin
    n_draws = rec.completed_draws
    name, dims = position_dims(rec.position_shape)

    if hasattr(rec, "lazy_positions"):  # on disk: read block by block
        pos = rec.lazy_positions()
    else:
        pos = xr.Variable(["chain", "draw", *dims], rec.get_chain().numpy())

    sample_stats, energy = _stats_block(stats, warmup, warmup + n_draws * thin, thin, temperature)
    coords = {"chain": np.arange(rec.chains), "draw": np.arange(n_draws)}
    if projections > 0 and n_draws > 0:
        coords["projection"] = np.arange(projections)
    if chain_groups is None:
        chain_groups = getattr(run, "chain_groups", None)
    if chain_groups is not None:
        labels = np.asarray(chain_groups)
        if labels.shape != (rec.chains,):
            raise ValueError(f"chain_groups needs one label per chain ({rec.chains})")
        coords["chain_group"] = ("chain", labels)
    attrs = {
        "inference_library": "langevin_images",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": run.config.get("method", ""),
        "temperature": temperature,
        "warmup": warmup,
        "thin": thin,
        "grad_evals": run.grad_evals,
        "schedule": str(run.config.get("schedule", "")),
        "target_accept": float(run.config.get("target_accept", 0.574)),
        "preconditioner": str(run.config.get("preconditioner", "")),
        "config": json.dumps(run.config, default=str),
    }
    rec_attrs = getattr(run, "attrs", None) or getattr(rec, "attrs", {})
    for key in ("spec", "spec_hash", "energy", "energy_hash", "interrupted"):
        if rec_attrs.get(key) is not None:
            value = rec_attrs[key]
            if isinstance(value, bool):
                value = int(value)
            attrs[key] = value if isinstance(value, str | int | float) else json.dumps(value)
    posterior = {name: pos, "energy": (["chain", "draw"], energy)}
    for key, values in stats.items():  # named energy terms and summaries, at each draw
        if key.startswith("term_"):
            term = key.removeprefix("term_").removeprefix(SUMMARY_PREFIX)
            kept = values[:, warmup + thin - 1 : warmup + n_draws * thin : thin]
            posterior[term if term not in posterior else key] = (["chain", "draw"], kept)
    if projections > 0 and n_draws > 0:
        attrs["projection_seed"] = int(projection_seed)
        for name, values in _projections(
            pos, projections, projection_seed, features, block_draws
        ).items():
            posterior[name] = (["chain", "draw", "projection"], values)
    groups = {
        "posterior": xr.Dataset(posterior, coords=coords, attrs=attrs),
        "sample_stats": xr.Dataset(
            sample_stats, coords={k: coords[k] for k in ("chain", "draw")}, attrs=attrs
        ),
    }
    done_warmup = min(warmup, rec.completed)
    if done_warmup:
        warm, _ = _stats_block(stats, 0, done_warmup, 1, temperature)
        groups["warmup_sample_stats"] = xr.Dataset(
            warm, coords={"chain": coords["chain"], "draw": np.arange(done_warmup)}, attrs=attrs
        )
    return xr.DataTree.from_dict(groups)
