"""Sampler benchmarks on the standard targets (and image energies), optionally side by side
with BlackJAX's MALA under the same dual averaging, in the same run.

Every row: the target, the sampler, its final step size (median over chains), acceptance,
min and median bulk ESS over the coordinates (arviz-stats, both sides), min ESS per gradient
evaluation (warmup included: it is what the run cost), microseconds per step (warmup and
sampling, wall time over steps) and per bare energy+gradient of the same batch (measured in the
same run), and the largest |z| of the mean and variance errors against the truth (z in units
of the estimate's Monte Carlo standard error, and of the reference's own where it has one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .targets import TARGETS, Target

__all__ = ["blackjax_available", "format_table", "moment_errors", "run_blackjax", "run_ours",
           "run_suite", "time_grad"]  # fmt: skip


def blackjax_available() -> bool:
    try:
        import blackjax  # noqa: F401
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _ess(draws: np.ndarray) -> np.ndarray:
    import arviz_stats as azs

    return np.asarray(azs.ess(draws, method="bulk"), dtype=float)


def moment_errors(draws: np.ndarray, target: Target) -> tuple[float, float]:
    """Largest |z| over coordinates of the mean and of the variance (about the true mean),
    ``draws`` ``(chain, draw, dim)``."""
    import arviz_stats as azs

    d = np.asarray(draws, dtype=np.float64)
    mu, var = target.mean.numpy(), target.var.numpy()
    if not np.isfinite(mu).any():  # no known truth (an image energy)
        return math.nan, math.nan
    se_mean = np.asarray(azs.mcse(d, method="mean"), dtype=float)
    sq = (d - mu) ** 2
    se_var = np.asarray(azs.mcse(sq, method="mean"), dtype=float)
    if target.truth_mcse is not None:  # the reference's own error, in quadrature
        ref = target.truth_mcse.numpy()
        se_mean = np.sqrt(se_mean**2 + ref**2)
    z_mean = np.abs(d.mean((0, 1)) - mu) / se_mean
    z_var = np.abs(sq.mean((0, 1)) - var) / se_var
    return float(np.nanmax(z_mean)), float(np.nanmax(z_var))


def time_grad(target, x: torch.Tensor, *, repeats: int = 200) -> float:
    """Microseconds per bare energy+gradient of ``target`` (a ``Target`` or an energy
    function) at the batch ``x`` (median of 5 blocks of ``repeats``)."""
    from .samplers.kernel import energy_and_grad

    energy = target.energy if isinstance(target, Target) else target
    for _ in range(min(10, repeats)):
        energy_and_grad(energy, x)
    blocks = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            energy_and_grad(energy, x)
        blocks.append((time.perf_counter() - t0) / repeats)
    return float(np.median(blocks) * 1e6)


def _row(target, sampler, step, accept, draws, grad_evals, us_step, us_grad, extra=None):
    ess = _ess(draws)
    z_mean, z_var = moment_errors(draws, target)
    row = {
        "target": target.name, "sampler": sampler, "dim": target.dim,
        "chains": draws.shape[0], "draws": draws.shape[1],
        "step_size": float(step), "acceptance": float(accept),
        "min_ess": float(np.nanmin(ess)), "median_ess": float(np.nanmedian(ess)),
        "min_ess_per_grad": float(np.nanmin(ess)) / grad_evals,
        "us_per_step": us_step, "us_per_grad": us_grad,
        "max_z_mean": z_mean, "max_z_var": z_var, "grad_evals": int(grad_evals),
    }  # fmt: skip
    row.update(extra or {})
    return row


def run_ours(
    target: Target, *, chains: int = 8, warmup: int = 1000, steps: int = 4000, seed: int = 0,
    preconditioner: Any = None, adapt: str | None = None, label: str | None = None,
    device: str = "cpu", schedule: str = "dual_averaging",
) -> dict:  # fmt: skip
    """This package's MALA with per-chain dual averaging to acceptance 0.574; with ``adapt``
    (``diagonal``, ``lowrank``, ``dense``), after ``adapt_preconditioner``'s windowed warmup
    (windows scaled to ``warmup``: first ``warmup/10``, then ``warmup/10, /5, /2.5``, each run
    twice), whose gradient evaluations and time count in the row."""
    from .samplers import sample
    from .samplers.adapt import adapt_preconditioner

    g = torch.Generator().manual_seed(seed)
    x0 = target.init(chains, g).to(device)
    label = label or ("langevin_images MALA" + (f" + {adapt} warmup" if adapt else "")
                      + ("" if schedule == "dual_averaging" else f", {schedule}"))  # fmt: skip
    t0 = time.perf_counter()
    evals, eps, start, final_warmup = 0, 0.1, x0, warmup
    if adapt:
        w = max(10, warmup // 10)
        adapted = adapt_preconditioner(target.energy, x0, kind=adapt, first=w,
                                       windows=(w, 2 * w, 4 * w), seed=seed + 1000)  # fmt: skip
        preconditioner, eps, start = adapted.preconditioner, adapted.step_size, adapted.position
        evals, final_warmup = adapted.grad_evals, w
    run = sample(target.energy, start, steps=steps, warmup=final_warmup, step_size=eps,
                 schedule=schedule, preconditioner=preconditioner, seed=seed,
                 progress=False, thin=1)  # fmt: skip
    seconds = time.perf_counter() - t0
    total_steps = evals + final_warmup + steps
    draws = run.samples.to(torch.float64).cpu().numpy()
    stats = run.recorder.get_stats()
    step = float(stats["step_size"][:, -1].median())
    accept = float(stats["acceptance_prob"][:, warmup:].mean())
    stuck = int((stats["is_accepted"][:, warmup:].to(torch.float64).mean(1) == 0).sum())
    us_grad = time_grad(target, x0)
    return _row(target, label, step, accept, draws, run.grad_evals + evals,
                seconds / total_steps * 1e6, us_grad, {"stuck_chains": stuck})  # fmt: skip


def run_compiled(
    target: Target, *, chains: int = 8, warmup: int = 1000, steps: int = 4000, seed: int = 0,
    chunk: int | None = None, device: str = "cpu",
) -> dict:  # fmt: skip
    """``samplers.compiled.sample_compiled``: the same MALA and dual averaging, ``chunk``
    steps per compiled call (its default if None); the compilation's seconds are in the row,
    not in us/step."""
    from .samplers.compiled import sample_compiled

    g = torch.Generator().manual_seed(seed)
    x0 = target.init(chains, g).to(device)
    run = sample_compiled(target.energy, x0, steps=steps, warmup=warmup, seed=seed,
                          chunk=chunk)  # fmt: skip
    draws = run.samples.to(torch.float64).cpu().numpy()
    acc = run.acceptance_prob[:, warmup:]
    label = "langevin_images MALA, compiled" + ("" if run.compiled else " (eager)")
    return _row(target, label, float(run.step_size.median()), float(acc.mean()), draws,
                run.grad_evals, run.seconds / (warmup + steps) * 1e6, time_grad(target, x0),
                {"stuck_chains": int((acc.mean(1) == 0).sum()),
                 "compile_seconds": round(run.compile_seconds, 1)})  # fmt: skip


def _jax_logdensity(target: Target):
    import jax.numpy as jnp

    e = target.extras
    kind = e.get("kind")
    f32 = jnp.float32
    if kind == "diagonal":
        prec = jnp.asarray((1 / e["var"]).numpy(), f32)
        return lambda x: -0.5 * jnp.sum(x * x * prec)
    if kind == "dense":
        prec = jnp.asarray(e["precision"].numpy(), f32)
        return lambda x: -0.5 * x @ prec @ x
    if kind == "banana":
        a, b = e["a"], e["b"]
        return lambda x: -(0.5 * x[0] ** 2 / a**2 + 0.5 * (x[1] - b * (x[0] ** 2 - a * a)) ** 2)
    if kind == "funnel":
        s, k = e["scale"], target.dim - 1
        return lambda x: -(0.5 * x[0] ** 2 / s**2 + 0.5 * k * x[0]
                           + 0.5 * jnp.sum(x[1:] ** 2) * jnp.exp(-x[0]))  # fmt: skip
    if kind == "mixture":
        s = e["separation"]
        return lambda x: (jnp.logaddexp(-0.5 * (x[0] - s) ** 2, -0.5 * (x[0] + s) ** 2)
                          - 0.5 * x[1] ** 2)  # fmt: skip
    if kind == "logistic":
        X, y = jnp.asarray(e["X"].numpy(), f32), jnp.asarray(e["y"].numpy(), f32)

        def logdensity(w):
            z = X @ w
            return jnp.sum(y * z - jnp.logaddexp(0.0, z)) - 0.5 * jnp.sum(w * w)

        return logdensity
    raise ValueError(f"no JAX version of target {target.name}")


def run_blackjax(
    target: Target, *, chains: int = 8, warmup: int = 1000, steps: int = 4000, seed: int = 0
) -> dict:
    """BlackJAX's MALA (``blackjax.mala.build_kernel``) with its dual averaging
    (``dual_averaging_adaptation``, the same Hoffman & Gelman constants) per chain, the same
    starting points, jitted with ``lax.scan``; timed on a second call (compilation excluded)."""
    import blackjax
    import jax
    import jax.numpy as jnp

    logdensity = _jax_logdensity(target)
    kernel = blackjax.mala.build_kernel()
    da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(0.574)
    g = torch.Generator().manual_seed(seed)
    x0 = jnp.asarray(target.init(chains, g).numpy(), jnp.float32)

    def one_chain(key, x):
        state = blackjax.mala.init(x, logdensity)

        def warm(carry, key):
            state, da = carry
            state, info = kernel(key, state, logdensity, jnp.exp(da.log_step_size))
            return (state, da_update(da, info.acceptance_rate)), None

        keys = jax.random.split(key, warmup + steps)
        (state, da), _ = jax.lax.scan(warm, (state, da_init(0.1)), keys[:warmup])
        step = da_final(da)

        def draw(state, key):
            state, info = kernel(key, state, logdensity, step)
            return state, (state.position, info.acceptance_rate)

        _, (xs, acc) = jax.lax.scan(draw, state, keys[warmup:])
        return xs, acc, step

    run = jax.jit(jax.vmap(one_chain))
    keys = jax.random.split(jax.random.PRNGKey(seed), chains)
    jax.block_until_ready(run(keys, x0))  # compile
    t0 = time.perf_counter()
    xs, acc, step = jax.block_until_ready(run(keys, x0))
    seconds = time.perf_counter() - t0
    grad = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))
    jax.block_until_ready(grad(x0))
    t1 = time.perf_counter()
    for _ in range(200):
        out = grad(x0)
    jax.block_until_ready(out)
    us_grad = (time.perf_counter() - t1) / 200 * 1e6
    draws = np.asarray(xs, dtype=np.float64)
    acc = np.asarray(acc)
    return _row(target, f"BlackJAX {blackjax.__version__} MALA", float(np.median(step)),
                float(acc.mean()), draws, warmup + steps + 1, seconds / (warmup + steps) * 1e6,
                us_grad, {"stuck_chains": int((acc.mean(1) == 0).sum())})  # fmt: skip


def run_suite(
    suite: str = "targets", *, names: Sequence[str] | None = None, chains: int = 8,
    warmup: int = 1000, steps: int = 4000, seed: int = 0, blackjax: bool = True,
    adapt: Sequence[str] = (), device: str = "cpu", schedule: str = "dual_averaging",
    compiled: bool = False, say=lambda line: None,
) -> list[dict]:  # fmt: skip
    """The rows of a suite (``targets``, ``images`` or ``all``); ``adapt``: also a row per
    target with each of these preconditioner warmups."""
    rows = []
    if suite in ("targets", "all"):
        for name in names or TARGETS:
            if name not in TARGETS:
                raise ValueError(f"unknown target {name!r}; expected some of {', '.join(TARGETS)}")
            target = TARGETS[name]()
            rows.append(run_ours(target, chains=chains, warmup=warmup, steps=steps, seed=seed,
                                 device=device, schedule=schedule))  # fmt: skip
            say(format_table(rows[-1:], header=not rows[:-1]))
            for kind in adapt:
                rows.append(run_ours(target, chains=chains, warmup=warmup, steps=steps,
                                     seed=seed, adapt=kind, device=device,
                                     schedule=schedule))  # fmt: skip
                say(format_table(rows[-1:], header=False))
            if compiled:
                rows.append(run_compiled(target, chains=chains, warmup=warmup, steps=steps,
                                         seed=seed, device=device))  # fmt: skip
                say(format_table(rows[-1:], header=False))
            if blackjax and blackjax_available() and device == "cpu":
                rows.append(run_blackjax(target, chains=chains, warmup=warmup, steps=steps,
                                         seed=seed))  # fmt: skip
                say(format_table(rows[-1:], header=False))
    if suite in ("images", "all"):
        rows.append(_images_row(chains=chains, warmup=warmup, steps=steps, seed=seed,
                                device=device))  # fmt: skip
        say(format_table(rows[-1:], header=suite == "images"))
        if compiled:
            rows += _images_compiled_rows(chains=chains, warmup=warmup, steps=steps, seed=seed,
                                          device=device)  # fmt: skip
            say(format_table(rows[-2:], header=False))
    if suite not in ("targets", "images", "all"):
        raise ValueError(f"--suite must be targets, images or all, not {suite!r}")
    return rows


def _images_row(*, chains, warmup, steps, seed, device) -> dict:
    """Class-conditional MNIST (the demo's energy, one digit): ESS over the scalar summaries
    of the export, per gradient, and a step against a bare gradient."""
    from . import diagnostics as D
    from .runs import RunSpec, build
    from .samplers import sample

    built = build(RunSpec(model="mnist", targets=(3,), chains=chains, steps=steps,
                          warmup=warmup, seed=seed, device=device))  # fmt: skip
    s = dict(built.sampler, thin=1)
    t0 = time.perf_counter()
    run = sample(built.energy, built.x0, **s, progress=False)
    seconds = time.perf_counter() - t0
    dt = run.to_datatree(features=D.penultimate(built.model))
    table = D.summary(dt)
    us_grad = time_grad(built.energy, built.x0, repeats=10)
    stats = run.recorder.get_stats()
    return {
        "target": "mnist-digit-3", "sampler": "langevin_images MALA (fitted prior)",
        "dim": 784, "chains": chains, "draws": steps,
        "step_size": float(stats["step_size"][:, -1].median()),
        "acceptance": float(stats["acceptance_prob"][:, warmup:].mean()),
        "min_ess": float(table["ess_bulk"].min()), "median_ess": float(table["ess_bulk"].median()),
        "min_ess_per_grad": float(table["ess_bulk"].min()) / run.grad_evals,
        "us_per_step": seconds / (warmup + steps) * 1e6, "us_per_grad": us_grad,
        "max_z_mean": math.nan, "max_z_var": math.nan, "grad_evals": run.grad_evals,
        "stuck_chains": int((stats["is_accepted"][:, warmup:].double().mean(1) == 0).sum()),
    }  # fmt: skip


def _images_compiled_rows(*, chains, warmup, steps, seed, device) -> list[dict]:
    """The same MNIST energy without a preconditioner (the compiled sampler takes diagonal ones
    only), by ``sample()`` and by the compiled sampler, side by side: min bulk ESS over the
    pixels, per gradient, and what a step costs."""
    from .runs import RunSpec, build
    from .samplers import sample
    from .samplers.compiled import sample_compiled

    built = build(RunSpec(model="mnist", targets=(3,), chains=chains, steps=steps,
                          warmup=warmup, seed=seed, device=device))  # fmt: skip
    energy, x0, eps = built.energy, built.x0, 1e-3
    unknown = torch.full((x0[0].numel(),), math.nan)  # no known truth
    target = Target("mnist-digit-3, no precond.", x0[0].numel(), energy, energy, unknown, unknown)
    us_grad = time_grad(energy, x0, repeats=10)
    t0 = time.perf_counter()
    run = sample(energy, x0, steps=steps, warmup=warmup, step_size=eps,
                 schedule="dual_averaging", seed=seed, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    stats = run.recorder.get_stats()
    eager = _row(target, "langevin_images MALA", float(stats["step_size"][:, -1].median()),
                 float(stats["acceptance_prob"][:, warmup:].mean()),
                 run.samples.flatten(2).double().cpu().numpy(), run.grad_evals,
                 seconds / (warmup + steps) * 1e6, us_grad,
                 {"stuck_chains": int((stats["is_accepted"][:, warmup:].double().mean(1) == 0)
                                      .sum())})  # fmt: skip
    comp = sample_compiled(energy, x0, steps=steps, warmup=warmup, step_size=eps, seed=seed)
    acc = comp.acceptance_prob[:, warmup:]
    label = "langevin_images MALA, compiled" + ("" if comp.compiled else " (eager)")
    compiled = _row(target, label, float(comp.step_size.median()), float(acc.mean()),
                    comp.samples.flatten(2).double().cpu().numpy(), comp.grad_evals,
                    comp.seconds / (warmup + steps) * 1e6, us_grad,
                    {"stuck_chains": int((acc.mean(1) == 0).sum()),
                     "compile_seconds": round(comp.compile_seconds, 1)})  # fmt: skip
    return [eager, compiled]


COLUMNS = (
    ("target", "target", 20, "s"), ("sampler", "sampler", 40, "s"), ("step_size", "step", 9, ".3g"),
    ("acceptance", "accept", 6, ".3f"), ("min_ess", "minESS", 8, ".0f"),
    ("median_ess", "medESS", 8, ".0f"), ("min_ess_per_grad", "minESS/grad", 11, ".2e"),
    ("us_per_step", "us/step", 9, ".1f"), ("us_per_grad", "us/grad", 9, ".1f"),
    ("max_z_mean", "|z|mean", 7, ".2f"), ("max_z_var", "|z|var", 7, ".2f"),
    ("stuck_chains", "stuck", 5, "d"),
)  # fmt: skip


def format_table(rows: list[dict], *, header: bool = True) -> str:
    """The rows as a fixed-width text table (``header=False``: rows only)."""

    def cell(value, width, spec):
        if spec == "s":
            return str(value)[:width].ljust(width)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-".rjust(width)
        return format(value, spec).rjust(width)

    lines = []
    if header:
        lines.append(" ".join(name.ljust(w) if spec == "s" else name.rjust(w)
                              for _, name, w, spec in COLUMNS))  # fmt: skip
    for r in rows:
        lines.append(" ".join(cell(r.get(k), w, spec) for k, _, w, spec in COLUMNS))
    return "\n".join(lines)
