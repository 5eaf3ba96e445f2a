"""Diagnostic plots of a recorded run: ``arviz_plots`` (matplotlib backend) for the scalar
summaries, matplotlib for the sampler's own statistics and per-pixel maps, and image grids.

``var_names`` selects scalar summaries (default: the first ``max_vars``); ``chains`` the
chains drawn. Functions return figures (``matplotlib.figure.Figure``) or ``arviz_plots``
plot collections; both have ``.savefig(path)``. Image-sized runs would exceed
``arviz_plots``' subplot limit if every pixel were drawn, so the ArviZ plots show the scalar
summaries only, and of each projection the first ``max_projections``; pixels appear as maps
and grids instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import arviz_plots as azp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from PIL import Image

from .convergence import scalar_names

__all__ = [
    "chain_frames",
    "draws_grid",
    "first_group_chains",
    "image_grid",
    "plot_autocorr",
    "plot_energy",
    "plot_ess_evolution",
    "plot_image_grid",
    "plot_pixel_map",
    "plot_rank",
    "plot_sampler_stats",
    "plot_trace",
    "save_gif",
]


def _selection(dt: xr.DataTree, var_names, max_projections: int, max_vars: int):
    names = list(var_names) if var_names is not None else scalar_names(dt)[:max_vars]
    post = dt["posterior"]
    coords = None
    if max_projections is not None and any("projection" in post[n].dims for n in names):
        n = post.sizes["projection"]
        coords = {"projection": list(range(min(n, max_projections)))}
    return names, coords


def first_group_chains(dt: xr.DataTree, max_chains: int = 16) -> list[int]:
    """The chains to draw in per-chain plots: those of the first chain group (chains of
    different targets are not meant to agree), at most ``max_chains``."""
    post = dt["posterior"]
    if "chain_group" in post.coords:
        groups = post["chain_group"].values
        idx = np.flatnonzero(groups == groups[0])
    else:
        idx = np.arange(post.sizes["chain"])
    return [int(i) for i in idx[:max_chains]]


def _arviz(fn, dt, var_names, max_projections, max_vars, chains=None, **kwargs):
    names, coords = _selection(dt, var_names, max_projections, max_vars)
    chains = first_group_chains(dt) if chains is None else list(chains)
    coords = {**(coords or {}), "chain": chains}
    kwargs.setdefault("figure_kwargs", {"layout": "constrained"})  # titles do not overlap
    return fn(dt, var_names=names, coords=coords, backend="matplotlib", **kwargs)


def plot_trace(dt, *, var_names=None, max_projections: int = 3, max_vars: int = 8, chains=None):
    """Trace plot of the scalar summaries, one line per chain (default: the chains of the
    first chain group, at most 16)."""
    return _arviz(azp.plot_trace, dt, var_names, max_projections, max_vars, chains)


def plot_rank(dt, *, var_names=None, max_projections: int = 3, max_vars: int = 8, chains=None):
    """Rank plot (fractional rank ECDF per chain): chains that mix look alike."""
    return _arviz(azp.plot_rank, dt, var_names, max_projections, max_vars, chains)


def plot_autocorr(
    dt, *, var_names=None, max_projections: int = 3, max_vars: int = 8, max_lag=None, chains=None
):
    """Autocorrelation of the scalar summaries."""
    return _arviz(
        azp.plot_autocorr, dt, var_names, max_projections, max_vars, chains, max_lag=max_lag
    )


def plot_ess_evolution(
    dt, *, var_names=None, max_projections: int = 3, max_vars: int = 8, chains=None
):
    """Bulk and tail ESS as the number of draws grows (chains of the first chain group):
    ESS should grow linearly."""
    return _arviz(azp.plot_ess_evolution, dt, var_names, max_projections, max_vars, chains)


def plot_sampler_stats(dt: xr.DataTree):
    """Acceptance rate and step size over the whole run, warmup included (shaded)."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True, constrained_layout=True)
    warm = dt["warmup_sample_stats"] if "warmup_sample_stats" in dt.children else None
    stats = dt["sample_stats"]
    thin = int(stats.attrs.get("thin", 1))
    n_warm = warm.sizes["draw"] if warm is not None else 0
    x_main = n_warm + thin * (np.arange(stats.sizes["draw"]) + 1) - 1
    for ax, name, label in (
        (axes[0], "acceptance_rate", "acceptance rate"),
        (axes[1], "step_size", "step size"),
    ):
        for part, x in ((warm, np.arange(n_warm)), (stats, x_main)):
            if part is None or name not in part:
                continue
            values = part[name].values
            lo, mid, hi = np.quantile(values, [0.1, 0.5, 0.9], axis=0)
            ax.fill_between(x, lo, hi, color="C0", alpha=0.25, lw=0)
            ax.plot(x, mid, color="C0", lw=1)
        if n_warm:
            ax.axvspan(0, n_warm, color="0.9", zorder=-1)
        ax.set_ylabel(label)
    target = stats.attrs.get("target_accept")
    if target is not None:
        axes[0].axhline(float(target), color="C3", ls="--", lw=1, label=f"target {target:g}")
        axes[0].legend(loc="lower right", frameon=False)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step (grey: warmup); median and 10-90 % over chains")
    return fig


def plot_energy(trees: dict[str, xr.DataTree], *, max_chains: int = 16):
    """The energy of each chain over the kept steps, one panel per run (e.g. per layer of an
    activation maximization, or per octave of a dream): the convergence picture of a
    zero-noise run, whose energy should fall and level off."""
    n = len(trees)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.6, 2.8), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, (name, dt) in zip(axes[0], trees.items(), strict=True):
        energy = dt["posterior"]["energy"]
        thin = int(dt["posterior"].attrs.get("thin", 1))
        steps = (np.arange(energy.sizes["draw"]) + 1) * thin
        for c in range(min(max_chains, energy.sizes["chain"])):
            ax.plot(steps, energy.isel(chain=c).values, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("energy")
    return fig


def plot_pixel_map(maps: xr.Dataset, *, var: str = "r_hat", threshold: float | None = 1.01):
    """Per-pixel R-hat (or ``var="ess_bulk"``) map, one panel per channel, from
    ``convergence.pixel_maps``; pixels past ``threshold`` outlined in the colour bar."""
    da = maps[var]
    channels = da.sizes.get("channel", 1)
    fig, axes = plt.subplots(
        1, channels, figsize=(3.2 * channels + 0.8, 3), squeeze=False, constrained_layout=True
    )
    vmin, vmax = float(da.min()), float(da.max())
    for c in range(channels):
        ax = axes[0, c]
        img = da.isel(channel=c).values if "channel" in da.dims else da.values
        im = ax.imshow(img, cmap="magma" if var == "r_hat" else "viridis", vmin=vmin, vmax=vmax)
        ax.set_title(f"{var} channel {c}" if channels > 1 else var)
        ax.set_xticks([]), ax.set_yticks([])
    bar = fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.9)
    if threshold is not None and var == "r_hat" and vmin <= threshold <= vmax:
        bar.ax.axhline(threshold, color="w", lw=1)
    return fig


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def image_grid(
    images,
    *,
    padding: int = 1,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile ``(rows, cols, C, H, W)`` images in [0, 1] into one ``(H', W', 3)`` uint8 array
    (``(chains, draws, ...)`` gives chains as rows and draws as columns)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim != 5:
        raise ValueError(f"image_grid needs (rows, cols, C, H, W), got shape {a.shape}")
    rows, cols, c, h, w = a.shape
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c != 3:
        raise ValueError(f"image_grid shows 1 or 3 channels, got {c}")
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), pad_value)
    for i in range(rows):
        for j in range(cols):
            y, x = padding + i * (h + padding), padding + j * (w + padding)
            grid[y : y + h, x : x + w] = a[i, j].transpose(1, 2, 0)
    return _to_uint8(grid)


def draws_grid(dt: xr.DataTree, *, chains: Sequence[int] | None = None, draws: int = 8):
    """Chains (rows) × evenly spaced draws (columns) of an image run, as a uint8 array."""
    return image_grid(_draws(dt, chains, draws))


def _draws(dt: xr.DataTree, chains, draws: int) -> np.ndarray:
    img = dt["posterior"]["image"]
    chains = range(img.sizes["chain"]) if chains is None else chains
    n = img.sizes["draw"]
    idx = np.unique(np.linspace(0, n - 1, min(draws, n)).round().astype(int))
    return img.isel(chain=list(chains), draw=idx).values


def plot_image_grid(
    dt: xr.DataTree, *, chains: Sequence[int] | None = None, draws: int = 8, scale: float = 1.0
):
    """Chains (rows) × evenly spaced draws (columns) of an image run, as a figure."""
    grid = draws_grid(dt, chains=chains, draws=draws)
    h, w = grid.shape[:2]
    fig = plt.figure(figsize=(scale * w / 60 + 0.5, scale * h / 60 + 0.5))
    ax = fig.add_axes((0.05, 0.05, 0.9, 0.9))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xlabel("draw →"), ax.set_ylabel("chain →")
    ax.set_xticks([]), ax.set_yticks([])
    return fig


def chain_frames(
    dt: xr.DataTree, *, chains: Sequence[int] = (0,), every: int = 1, scale: int = 4
) -> list[Image.Image]:
    """Frames of an animation of ``chains`` side by side, one per ``every``-th draw,
    enlarged ``scale`` times (nearest neighbour)."""
    img = dt["posterior"]["image"].isel(chain=list(chains))
    frames = []
    for d in range(0, img.sizes["draw"], every):
        tile = image_grid(img.isel(draw=[d]).values.transpose(1, 0, 2, 3, 4))
        pil = Image.fromarray(tile)
        frames.append(pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST))
    return frames


def save_gif(frames: Sequence[Image.Image], path, *, duration_ms: int = 80) -> None:
    """Write frames as a looping GIF."""
    if not frames:
        raise ValueError("no frames to save")
    frames[0].save(
        path, save_all=True, append_images=list(frames[1:]), duration=duration_ms, loop=0
    )
