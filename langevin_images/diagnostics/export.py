"""A recorded run as an ArviZ 1.x ``xarray.DataTree``.

Groups (dims ``chain, draw`` first):

``posterior``
    ``image (chain, draw, channel, row, col)`` for ``(C, H, W)`` positions, else
    ``x (chain, draw, x_dim_0, ...)``; ``energy (chain, draw)``; one ``(chain, draw)``
    variable per named term of an energy that reports its terms.
``sample_stats``
    one value per kept draw: ``lp = -energy / T``, ``acceptance_rate`` (mean acceptance
    probability over the ``thin`` steps that led to the draw), ``is_accepted`` and ``diverging``
    (any of those steps), ``step_size`` and ``grad_norm`` (at the draw's step).
``warmup_sample_stats``
    the same for every warmup step, when there was a warmup.

A run streamed to disk is opened lazily: its draws are read only when used.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import xarray as xr

from ..recording import NetCDFRecorder

__all__ = ["to_datatree"]


def _position_dims(shape: tuple[int, ...]) -> tuple[str, list[str]]:
    if len(shape) == 3:
        return "image", ["channel", "row", "col"]
    return "x", [f"x_dim_{i}" for i in range(len(shape))]


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
        "grad_norm": window("grad_norm")[..., -1],
    }
    return {k: (["chain", "draw"], v) for k, v in out.items()}, last


def to_datatree(run) -> xr.DataTree:
    """Convert a ``Run`` to an ``xarray.DataTree`` with ArviZ's group and dim names."""
    rec = run.recorder
    stats = {k: v.numpy() for k, v in rec.get_stats().items()}
    temperature = float(run.config.get("temperature", 1.0))
    warmup, thin = rec.warmup, rec.thin
    n_draws = rec.completed_draws
    name, dims = _position_dims(rec.position_shape)

    if isinstance(rec, NetCDFRecorder):
        ds = xr.open_dataset(rec.path, engine="h5netcdf")
        pos = ds["position"].isel(draw=slice(0, n_draws)).variable
        pos = xr.Variable(["chain", "draw", *dims], pos)
    else:
        pos = xr.Variable(["chain", "draw", *dims], rec.get_chain().numpy())

    sample_stats, energy = _stats_block(stats, warmup, warmup + n_draws * thin, thin, temperature)
    coords = {"chain": np.arange(rec.chains), "draw": np.arange(n_draws)}
    attrs = {
        "inference_library": "langevin_images",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": run.config.get("method", ""),
        "temperature": temperature,
        "warmup": warmup,
        "thin": thin,
        "grad_evals": run.grad_evals,
    }
    posterior = {name: pos, "energy": (["chain", "draw"], energy)}
    for key, values in stats.items():  # named energy terms, at each draw
        if key.startswith("term_"):
            term = key.removeprefix("term_")
            kept = values[:, warmup + thin - 1 : warmup + n_draws * thin : thin]
            posterior[term if term not in posterior else key] = (["chain", "draw"], kept)
    groups = {
        "posterior": xr.Dataset(posterior, coords=coords, attrs=attrs),
        "sample_stats": xr.Dataset(sample_stats, coords=coords, attrs=attrs),
    }
    done_warmup = min(warmup, rec.completed)
    if done_warmup:
        warm, _ = _stats_block(stats, 0, done_warmup, 1, temperature)
        groups["warmup_sample_stats"] = xr.Dataset(
            warm, coords={"chain": coords["chain"], "draw": np.arange(done_warmup)}, attrs=attrs
        )
    return xr.DataTree.from_dict(groups)
