"""Convergence diagnostics of a recorded run (an ArviZ 1.x ``DataTree``), with ``arviz_stats``.

R-hat is the rank-normalized, folded split R-hat and ESS the bulk and tail effective sample
sizes of Vehtari et al. (2021); their recommended thresholds, R-hat < 1.01 and a bulk ESS of
at least 400 (100 per chain for four chains), are the defaults. Single pixels say little about
whether an image chain has mixed, so the verdict rests on the scalar summaries the export adds
(energy and its terms, the target class log-probability, random projections of pixels and
features); per-pixel maps show where in the image mixing is slowest.

Chains that target different densities (one class per chain, say) are compared only within
their group: the export's ``chain_groups`` coordinate, or the ``groups`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "Diagnosis",
    "diagnose",
    "nested_rhat",
    "pixel_maps",
    "rhat_chance_level",
    "scalar_names",
    "summary",
    "worst_pixels",
]

SAMPLE_DIMS = ("chain", "draw")
MIN_DRAWS = 4  # split R-hat halves each chain; fewer draws per chain give no usable estimate
IMAGE_VARS = ("image", "x")


def scalar_names(dt: xr.DataTree) -> list[str]:
    """Posterior variables that are not the images: ``(chain, draw)`` or with a small extra
    dim such as ``projection``."""
    post = dt["posterior"]
    return [n for n in post.data_vars if n not in IMAGE_VARS]


def _groups(dt: xr.DataTree, groups) -> np.ndarray:
    chains = dt["posterior"].sizes["chain"]
    if groups is None:
        post = dt["posterior"]
        groups = post["chain_group"].values if "chain_group" in post.coords else np.zeros(chains)
    groups = np.asarray(groups)
    if groups.shape != (chains,):
        raise ValueError(f"groups must have one label per chain ({chains}), got {groups.shape}")
    return groups


def _stat(da: xr.DataArray, kind: str) -> xr.DataArray:
    if kind == "r_hat":
        return azs.rhat(da)
    if kind == "ess_bulk":
        return azs.ess(da, method="bulk")
    if kind == "ess_tail":
        return azs.ess(da, method="tail")
    if kind == "mcse_mean":
        return azs.mcse(da, method="mean")
    raise ValueError(kind)


def rhat_chance_level(
    chains: int, draws: int, values: int, *, quantiles=(0.5, 0.95), reps: int = 50,
    seed: int = 0, max_draws: int = 400,
) -> tuple[float, ...]:  # fmt: skip
    """Quantiles of the largest R-hat over ``values`` quantities when every chain's draws are
    independent draws of one distribution: what R-hat gives by chance alone, the floor under
    any verdict on ``chains`` chains of ``draws`` kept draws.

    R-hat's own sampling error shrinks as 1/draws (its excess over 1 is a ratio of between- to
    within-chain variances, each estimated from the draws), so over many quantities the
    largest can pass 1.01 with no mixing problem at all: with 8 chains of 100 draws, the
    largest of 200 is about 1.015. Simulated ``reps`` times, seeded, with the estimator
    ``diagnose`` reads from ``arviz_stats.rhat`` (rank-normalized and folded split R-hat),
    vectorized in ``_rank_rhat``.

    Past ``max_draws`` draws per chain it is simulated at ``max_draws`` and the excess over 1
    scaled by ``max_draws / draws`` (from 400 to 800 and 1 000 draws this was within 10 % of
    the simulated excess, a little above it), and ``reps`` shrinks to keep the simulation near
    2e7 numbers (at least 20), so the cost stays a few seconds.
    """
    if chains < 2 or draws < MIN_DRAWS or values < 1:
        return tuple(float("nan") for _ in quantiles)
    sim = min(draws, max_draws)
    reps = max(20, min(reps, int(2e7 // (values * chains * sim))))
    rng = np.random.default_rng(seed)
    r = _rank_rhat(rng.standard_normal((reps * values, chains, sim))).reshape(reps, values)
    excess = np.quantile(r.max(1), quantiles) - 1.0
    return tuple(float(1.0 + e * sim / draws) for e in excess)


def _rank_rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalized, folded split R-hat of ``x`` ``(..., chain, draw)``, vectorized over the
    leading axes: the estimator of ``arviz_stats.rhat`` (Vehtari et al. 2021), which loops over
    quantities in Python and is too slow for ``rhat_chance_level``'s tens of thousands of them.
    Equal to it except that tied ranks are broken by order instead of averaged (tested)."""
    from scipy.special import ndtri

    half = x.shape[-1] // 2  # an odd draw count leaves the middle draw out, as ArviZ does
    split = np.concatenate([x[..., :half], x[..., -half:]], axis=-2)

    def z_scores(a):  # Blom's normal scores of the ranks over all chains and draws
        flat = a.reshape(*a.shape[:-2], -1)
        ranks = flat.argsort(-1).argsort(-1) + 1.0  # ties broken by order, not averaged
        return ndtri((ranks - 0.375) / (flat.shape[-1] + 0.25)).reshape(a.shape)

    def rhat(a):
        n = a.shape[-1]
        w = a.var(-1, ddof=1).mean(-1)
        b = n * a.mean(-1).var(-1, ddof=1)
        return np.sqrt(((n - 1) / n * w + b / n) / w)

    median = np.median(split.reshape(*split.shape[:-2], -1), -1)[..., None, None]
    return np.maximum(rhat(z_scores(split)), rhat(z_scores(np.abs(split - median))))


def _worst_over_groups(da: xr.DataArray, groups: np.ndarray, kind: str) -> xr.DataArray:
    """``kind`` (see ``_stat``) within each chain group, then the worst group: the largest
    R-hat or MCSE, the smallest ESS."""
    per = [_stat(da.isel(chain=np.flatnonzero(groups == g)), kind) for g in pd.unique(groups)]
    stacked = xr.concat(per, dim="group")
    return stacked.max("group") if kind in ("r_hat", "mcse_mean") else stacked.min("group")


def summary(
    dt: xr.DataTree,
    *,
    var_names: Sequence[str] | None = None,
    groups=None,
) -> pd.DataFrame:
    """R-hat, bulk and tail ESS, MCSE of the mean, mean and sd of each scalar summary.

    With several chain groups, R-hat is the worst and ESS the smallest over the groups (each
    group is its own target); ``mean`` and ``sd`` are over all chains.
    """
    post = dt["posterior"]
    names = list(var_names) if var_names is not None else scalar_names(dt)
    labels = _groups(dt, groups)
    rows = {}
    for name in names:
        da = post[name]
        extra = [d for d in da.dims if d not in SAMPLE_DIMS]
        stats = {
            kind: _worst_over_groups(da, labels, kind)
            for kind in ("r_hat", "ess_bulk", "ess_tail", "mcse_mean")
        }
        stats["mean"] = da.mean(SAMPLE_DIMS)
        stats["sd"] = da.std(SAMPLE_DIMS)
        if extra:
            flat = {k: v.stack(_i=extra) for k, v in stats.items()}
            for i in range(flat["r_hat"].sizes["_i"]):
                index = flat["r_hat"]["_i"].values[i]
                index = index if isinstance(index, tuple) else (index,)
                label = f"{name}[{', '.join(str(j) for j in index)}]"
                rows[label] = {k: float(v.isel(_i=i)) for k, v in flat.items()}
        else:
            rows[name] = {k: float(v) for k, v in stats.items()}
    cols = ["mean", "sd", "r_hat", "ess_bulk", "ess_tail", "mcse_mean"]
    return pd.DataFrame.from_dict(rows, orient="index")[cols]


def pixel_maps(
    dt: xr.DataTree, *, var_name: str = "image", groups=None, block_rows: int = 16
) -> xr.Dataset:
    """Per-pixel rank-normalized R-hat and bulk ESS, ``(channel, row, col)`` each.

    Vectorized: ``arviz_stats`` works on whole blocks of rows at a time (``block_rows``
    bounds the memory a disk run needs). With chain groups, the worst group per pixel.
    """
    da = dt["posterior"][var_name]
    labels = _groups(dt, groups)
    spatial = "row" if "row" in da.dims else None
    blocks = []
    n = da.sizes[spatial] if spatial else 1
    for start in range(0, n, block_rows):
        part = da.isel({spatial: slice(start, start + block_rows)}) if spatial else da
        part = part.load()
        blocks.append(
            xr.Dataset({k: _worst_over_groups(part, labels, k) for k in ("r_hat", "ess_bulk")})
        )
    return xr.concat(blocks, spatial) if spatial else blocks[0]


def worst_pixels(maps: xr.Dataset) -> dict[str, tuple[float, dict]]:
    """The largest R-hat and the smallest bulk ESS of a ``pixel_maps`` result, with where
    (NaN and no place when every value is NaN)."""

    def at(da: xr.DataArray, largest: bool) -> tuple[float, dict]:
        values = da.values
        if np.isnan(values).all():  # e.g. every pixel constant over the draws
            return float("nan"), {}
        flat = np.nanargmax(values) if largest else np.nanargmin(values)
        index = np.unravel_index(flat, values.shape)
        return float(values[index]), {d: int(i) for d, i in zip(da.dims, index, strict=True)}

    return {"r_hat_max": at(maps["r_hat"], True), "ess_bulk_min": at(maps["ess_bulk"], False)}


def nested_rhat(
    dt: xr.DataTree, superchain_ids: Sequence[int], *, var_names: Sequence[str] | None = None
) -> xr.Dataset:
    """Nested R-hat (Margossian et al. 2024) for many short chains grouped in superchains,
    e.g. chains that started from the same point."""
    names = list(var_names) if var_names is not None else scalar_names(dt)
    post = dt["posterior"].to_dataset()[names]
    return azs.rhat_nested(post, superchain_ids=list(superchain_ids))


@dataclass
class Diagnosis:
    """The verdict of ``diagnose``: ``ok``, the findings, suggestions and the table."""

    ok: bool
    findings: list[str]
    suggestions: list[str]
    table: pd.DataFrame
    stuck_chains: list[int] = field(default_factory=list)
    outlier_chains: list[int] = field(default_factory=list)
    divergences: int = 0
    acceptance_rate: float = float("nan")
    # when R-hat failed: the largest R-hat independent draws give by chance on this run's
    # chains, draws and summaries (median, 95 %; ``rhat_chance_level``), and the kept draws
    # per chain that would bring its 95 % quantile under the bar
    rhat_chance: tuple[float, float] | None = None
    draws_needed: int | None = None

    def __str__(self) -> str:
        head = (
            ("converged" if self.findings else "converged: no problem found")
            if self.ok
            else ("NOT converged")
        )
        lines = [head, *(f"- {f}" for f in self.findings)]
        if self.suggestions:
            lines.append("try: " + "; ".join(self.suggestions))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "findings": self.findings,
            "suggestions": self.suggestions,
            "stuck_chains": self.stuck_chains,
            "outlier_chains": self.outlier_chains,
            "divergences": self.divergences,
            "acceptance_rate": self.acceptance_rate,
            "rhat_chance": None if self.rhat_chance is None else list(self.rhat_chance),
            "draws_needed": self.draws_needed,
            "table": {
                k: {c: (None if not np.isfinite(v) else v) for c, v in row.items()}
                for k, row in self.table.to_dict(orient="index").items()
            },
        }


def _outlier_chains(
    dt: xr.DataTree, names: list[str], labels: np.ndarray, rhat_max: float
) -> list[int]:
    """Chains whose removal brings a non-converged quantity's R-hat under the threshold,
    within its group; needs at least three chains in the group."""
    post = dt["posterior"]
    outliers: set[int] = set()
    for g in pd.unique(labels):
        idx = np.flatnonzero(labels == g)
        if len(idx) < 3:
            continue
        for name in names:
            da = post[name].isel(chain=idx)
            if float(azs.rhat(da).max()) <= rhat_max:
                continue
            loo = []
            for j in range(len(idx)):
                rest = da.isel(chain=[i for i in range(len(idx)) if i != j])
                loo.append(float(azs.rhat(rest).max()))
            best = int(np.argmin(loo))
            if loo[best] <= rhat_max:
                outliers.add(int(idx[best]))
    return sorted(outliers)


def _frozen(post, stats, travel_min: float) -> tuple[str, list[str]] | None:
    """A finding and suggestions when an image run's chains barely moved: dual averaging meets
    its acceptance target with a step that is too small to explore a rough energy."""
    name = next((v for v in IMAGE_VARS if v in post), None)
    if name is None or post.sizes["draw"] < 2 or str(post.attrs.get("method")) == "descent":
        return None
    x = post[name]
    change = (x.isel(draw=-1) - x.isel(draw=0)).values.astype(np.float64)
    travel = float(np.median(np.sqrt((change.reshape(change.shape[0], -1) ** 2).mean(1))))
    if travel >= travel_min:
        return None
    step = (
        f"; the step size adapted to {float(np.median(stats['step_size'].values[:, -1])):.2g}"
        if "step_size" in stats
        else ""
    )
    finding = (
        f"the chains barely moved: the median chain's RMS pixel change over the kept draws is "
        f"{travel:.2g} (under {travel_min:g} of the [0, 1] range){step}. "
        f"The acceptance rate can look fine because the steps are tiny: unless the target is "
        f"truly that narrow, the energy is too rough for MALA here (an ImageNet classifier's "
        f"adversarial directions, say)"
    )
    return finding, [
        "descent (--method descent) for pictures",
        "a smoother energy (a TV or blur prior, a robust model) or a smaller likelihood weight",
    ]


def _diagnose_descent(post: xr.Dataset, table: pd.DataFrame, *, tail: float = 0.1,
                      tolerance: float = 0.01) -> Diagnosis:  # fmt: skip
    """A zero-noise run is an optimization, not a Markov chain: R-hat and ESS do not apply.
    It has converged when the energy has levelled off: over the last ``tail`` of the kept
    draws, each chain's energy fell by less than ``tolerance`` of its total fall. Levels are
    medians over windows of ``tail`` of the draws, and a fall counts only when it is over three
    times the noise of that difference, so that a stochastic energy (a random jitter per step)
    is judged by its trend, not by its noise."""
    energy = post["energy"].values  # (chain, draw)
    n = energy.shape[1]
    k = max(1, round(tail * n))
    if n < 2:
        findings = ["descent run with fewer than two kept draws: nothing to judge"]
        return Diagnosis(False, findings, ["keep more draws (a smaller thin)"], table)
    last_window, window_before = energy[:, -k:], energy[:, max(0, n - 2 * k) : n - k]  # k <= n/2
    last = np.median(last_window, axis=1)
    total = energy[:, 0] - last
    recent = np.median(window_before, axis=1) - last
    # the noise of a difference of two window medians (1.25 sd / sqrt(k) each), three times:
    # a stochastic energy's noise is not a fall
    noise = 3 * 1.25 * np.sqrt((last_window.var(1) + window_before.var(1)) / k)
    recent = np.where(recent > noise, recent, 0.0)
    still = np.flatnonzero(recent > tolerance * np.maximum(np.abs(total), 1e-12))
    findings = ["zero-noise run (descent): an optimization, so R-hat and ESS do not apply"]
    if not len(still):
        findings[0] += f"; the energy has levelled off in all {energy.shape[0]} chains"
        return Diagnosis(True, findings, [], table)
    share = float(np.median(recent[still] / np.maximum(np.abs(total[still]), 1e-12)))
    findings.append(
        f"energy still falling in {len(still)} of {energy.shape[0]} chains (median "
        f"{100 * share:.1f} % of the total fall in the last {k} of {n} draws)"
    )
    return Diagnosis(False, findings, ["more steps"], table)


def diagnose(
    dt: xr.DataTree,
    *,
    var_names: Sequence[str] | None = None,
    groups=None,
    rhat_max: float = 1.01,
    ess_min: float = 400.0,
    target_accept: float | None = None,
    accept_tolerance: float = 0.15,
    stuck_accept: float = 0.02,
    frozen_travel: float = 0.02,
) -> Diagnosis:
    """Say in words whether a run converged, what did not, and what to try.

    Parameters
    ----------
    dt : DataTree
        From ``run.to_datatree()`` or ``xarray.open_datatree("run.nc")``.
    var_names : sequence of str, optional
        Scalar summaries to judge (default: all of them).
    groups : array-like, optional
        One label per chain; chains are compared within a label (default: the
        ``chain_group`` coordinate when the export has one, else one group).
    rhat_max, ess_min : float
        Thresholds per quantity (and per group).
    target_accept : float, optional
        Expected acceptance rate (default: the run's ``target_accept`` attribute, if any).
    accept_tolerance : float
        How far the mean acceptance rate may be from ``target_accept``.
    stuck_accept : float
        A chain whose acceptance rate is under this is reported as stuck.
    frozen_travel : float
        Image runs: when the median chain's root-mean-square pixel change from its first to
        its last kept draw is under this (pixels in [0, 1]), the step size adapted to
        something too small to explore, whatever the acceptance rate says.
    """
    post = dt["posterior"]
    names = list(var_names) if var_names is not None else scalar_names(dt)
    labels = _groups(dt, groups)
    table = summary(dt, var_names=names, groups=labels)
    if post.attrs.get("method") == "descent":
        return _diagnose_descent(post, table)
    findings, suggestions = [], []

    chains, draws = post.sizes["chain"], post.sizes["draw"]
    if draws < MIN_DRAWS:  # R-hat and ESS are NaN or meaningless: never "converged"
        findings.append(
            f"only {draws} draw(s) per chain: too few to judge convergence (R-hat and ESS need "
            f"at least {MIN_DRAWS})"
        )
        suggestions.append("more steps, or a smaller thin")
    bad_rhat = table[table["r_hat"] > rhat_max]
    low_ess = table[table["ess_bulk"] < ess_min]
    if len(bad_rhat):
        worst = bad_rhat["r_hat"].sort_values(ascending=False)
        shown = ", ".join(f"{k} (R-hat {v:.3f})" for k, v in worst.head(5).items())
        more = f" and {len(worst) - 5} more" if len(worst) > 5 else ""
        findings.append(f"not converged (R-hat > {rhat_max}): {shown}{more}")
    if len(low_ess):
        worst = low_ess["ess_bulk"].sort_values()
        shown = ", ".join(f"{k} ({v:.0f})" for k, v in worst.head(5).items())
        more = f" and {len(worst) - 5} more" if len(worst) > 5 else ""
        findings.append(f"bulk ESS under {ess_min:g}: {shown}{more}")

    stuck: list[int] = []
    divergences = 0
    mean_accept = float("nan")
    if "sample_stats" in dt.children:
        stats = dt["sample_stats"]
        if "acceptance_rate" in stats:
            acc = stats["acceptance_rate"]
            per_chain = acc.mean("draw").values
            mean_accept = float(np.mean(per_chain))
            stuck = [int(c) for c in np.flatnonzero(per_chain < stuck_accept)]
            method = str(stats.attrs.get("method", ""))
            if stuck and method != "descent":
                findings.append(
                    f"{len(stuck)} of {chains} chains stuck (acceptance < {stuck_accept:g}): "
                    + ", ".join(map(str, stuck[:10]))
                    + (" ..." if len(stuck) > 10 else "")
                )
            target = target_accept
            if target is None and "target_accept" in stats.attrs:
                target = float(stats.attrs["target_accept"])
            if target is not None and method == "mala":
                if abs(mean_accept - target) > accept_tolerance:
                    findings.append(
                        f"acceptance rate {mean_accept:.3f}, far from its target {target:.3f}"
                    )
                    suggestions.append(
                        "a smaller step size" if mean_accept < target else "a larger step size"
                    )
        frozen = _frozen(post, stats, frozen_travel)
        if frozen:
            findings.append(frozen[0])
            suggestions.extend(frozen[1])
        if "diverging" in stats:
            divergences = int(stats["diverging"].sum())
            if divergences:
                findings.append(f"{divergences} draws followed a divergence")
                suggestions.append("a smaller step size or a longer warmup")

    chance, need, at_chance = None, None, False
    if len(bad_rhat):
        sizes = pd.Series(labels).value_counts()
        values = len(table) * len(sizes)  # each row is the worst of its groups
        chance = rhat_chance_level(int(sizes.min()), draws, values)
        # the draws per chain that bring the chance level's 95 % quantile under the bar
        # (R-hat's excess falls as 1/draws)
        need = max(draws, int(np.ceil(draws * (chance[1] - 1) / (rhat_max - 1) / 100) * 100))
        top = float(bad_rhat["r_hat"].max())
        at_chance = top <= chance[1]
        if at_chance:  # the bar is out of reach of these draws
            findings.append(
                f"R-hat {top:.3f} is what independent draws give by chance: {draws} draws per "
                f"chain in groups of {int(sizes.min())} chains give a largest R-hat of "
                f"{chance[0]:.3f} (95 %: {chance[1]:.3f}) over these {values} values, so "
                f"{rhat_max} cannot be judged with so few; keep about {need} draws per chain"
            )
            suggestions.append(f"keep more draws per chain (about {need}: more steps or a "
                               "smaller thin)")  # fmt: skip
    bad_vars = list(dict.fromkeys(k.split("[")[0] for k in bad_rhat.index))
    # at chance level no chain disagrees: leaving any one out lowers a chance maximum too
    outliers = _outlier_chains(dt, bad_vars, labels, rhat_max) if bad_vars and not at_chance else []
    if outliers:
        findings.append(
            "chains that disagree with the others of their group: "
            + ", ".join(map(str, outliers[:10]))
        )
    if len(bad_rhat):
        suggestions.append("a longer warmup and more steps")
        if chains < 4:
            suggestions.append("more chains (at least 4)")
    elif len(low_ess):
        suggestions.append(f"more steps (ESS grows with the {draws} draws per chain)")
    seen = set()
    suggestions = [s for s in suggestions if not (s in seen or seen.add(s))]
    ok = not findings
    return Diagnosis(
        ok=ok,
        findings=findings,
        suggestions=suggestions,
        table=table,
        stuck_chains=stuck,
        outlier_chains=outliers,
        divergences=divergences,
        acceptance_rate=mean_accept,
        rhat_chance=chance,
        draws_needed=need,
    )
