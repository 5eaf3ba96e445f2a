"""The ``sample()`` driver: warmup and adaptation, thinning, recording, progress, divergences."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..recording import NetCDFRecorder, Recorder, as_recorder
from ..schedules import as_schedule
from . import kernel
from .constraints import Box
from .preconditioners import as_preconditioner

__all__ = ["METHODS", "DivergenceError", "Run", "sample"]

METHODS = ("mala", "ula", "descent")


class DivergenceError(RuntimeError):
    """A chain produced non-finite energies or gradients too many steps in a row.

    ``run`` holds everything recorded up to the failure.
    """

    def __init__(self, message: str, run: Run):
        super().__init__(message)
        self.run = run


@dataclass
class Run:
    """A finished (or stopped) sampling run.

    Attributes
    ----------
    recorder : Recorder
        Where the draws and statistics are.
    final_state : LangevinState
        Last state of every chain, in the sampling space (``z`` when ``bounds`` is set).
    grad_evals : int
        Energy+gradient evaluations per chain, the initial one and warmup included.
    config : dict
        The run's full configuration (JSON-friendly), for run cards.
    """

    recorder: Recorder
    final_state: kernel.LangevinState
    grad_evals: int
    config: dict[str, Any] = field(default_factory=dict)
    box: Box | None = None

    @property
    def samples(self) -> Tensor:
        """``(chain, draw, ...)`` draws after warmup, thinned (read from disk if streamed)."""
        return self.recorder.get_chain()

    @property
    def stats(self) -> dict[str, Tensor]:
        """name -> ``(chain, step)`` for every step, warmup included: ``acceptance_prob``,
        ``is_accepted``, ``step_size``, ``energy``, ``grad_norm``, ``diverging``, and
        ``term_<name>`` for each named term of an energy that reports its terms."""
        return self.recorder.get_stats()

    @property
    def acceptance_rate(self) -> Tensor:
        """Mean acceptance probability per chain over the steps after warmup."""
        acc = self.stats["acceptance_prob"][:, self.recorder.warmup :]
        return acc.mean(1)

    def running_acceptance_rate(self) -> Tensor:
        """``(chain, step)`` mean acceptance probability so far, restarted when warmup ends."""
        acc = self.stats["acceptance_prob"]
        w = min(self.recorder.warmup, acc.shape[1])
        parts = [acc[:, :w], acc[:, w:]]
        return torch.cat(
            [p.cumsum(1) / torch.arange(1, p.shape[1] + 1, dtype=p.dtype) for p in parts], 1
        )

    @property
    def final_position(self) -> Tensor:
        """Last position of every chain, in image space."""
        z = self.final_state.position
        return self.box.to_constrained(z) if self.box is not None else z

    def to_datatree(self, **kwargs):
        """The run as an ArviZ 1.x ``xarray.DataTree``; keywords as in
        ``langevin_images.diagnostics.to_datatree`` (projections, features)."""
        from ..diagnostics.export import to_datatree

        return to_datatree(self, **kwargs)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Run(method={c.get('method')!r}, chains={c.get('chains')}, "
            f"draws={self.recorder.completed_draws}, warmup={c.get('warmup')}, "
            f"grad_evals={self.grad_evals})"
        )


def _step_size_tensor(step_size: float | Tensor, chains: int, device) -> Tensor:
    eps = torch.as_tensor(step_size, dtype=torch.float64, device=device)
    if eps.ndim == 0:
        eps = eps.expand(chains).clone()
    if eps.shape != (chains,):
        raise ValueError(
            f"step_size must be a float or a tensor of shape ({chains},), "
            f"got shape {tuple(eps.shape)}"
        )
    if not torch.all(torch.isfinite(eps) & (eps > 0)):
        raise ValueError("step_size must be finite and > 0 for every chain")
    return eps


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def sample(
    energy: kernel.EnergyFn,
    x0: Tensor,
    *,
    steps: int,
    warmup: int = 0,
    method: str = "mala",
    step_size: float | Tensor = 1e-2,
    schedule: Any = None,
    target_accept: float = 0.574,
    temperature: float = 1.0,
    preconditioner: Any = None,
    bounds: tuple[float, float] | Box | None = None,
    thin: int = 1,
    seed: int | torch.Generator = 0,
    record_to: str | os.PathLike | Recorder | None = None,
    progress: bool = True,
    max_divergences_in_a_row: int = 20,
    transform: Any = None,
    normalize_step: bool = False,
) -> Run:
    """Sample ``pi(x) ~ exp(-E(x) / T)`` with Langevin dynamics, one chain per row of ``x0``.

    Parameters
    ----------
    energy : callable
        ``x -> (chains,)`` energies, lower is more probable; differentiable in ``x``.
    x0 : Tensor
        ``(chains, ...)`` starting points; device and dtype of the run follow it.
    steps : int
        Sampling steps after warmup; ``steps // thin`` draws are kept.
    warmup : int
        Steps before sampling, in which adaptive schedules tune the step size.
    method : {"mala", "ula", "descent"}
        Metropolis-adjusted, unadjusted, or zero-noise gradient descent (T = 0, no accept step).
    step_size : float or Tensor
        ``eps``, shared or one per chain (shape ``(chains,)``); the initial value of a schedule.
    schedule : None, str or schedule object
        None (constant), ``"dual_averaging"``, ``"polynomial"``, ``"exponential"``,
        ``"cosine"`` or an object of ``langevin_images.schedules``.
    target_accept : float
        Target of adaptive schedules; 0.574 is optimal for MALA (Roberts & Rosenthal 1998).
    temperature : float
        ``T`` > 0 for MALA and ULA; ignored (0) for descent.
    preconditioner : None or Preconditioner
        Fixed symmetric positive-definite ``M`` (``langevin_images.samplers.preconditioners``).
    bounds : (lo, hi) or Box, optional
        Sample the target restricted to ``[lo, hi]`` exactly, through a logistic
        reparameterization with its log-Jacobian (see ``samplers.constraints``).
    thin : int
        Keep one draw every ``thin`` sampling steps.
    seed : int or torch.Generator
        All randomness comes from here; the same seed gives the same run.
    record_to : None, path or Recorder
        None keeps the run in memory; a path streams it to a netCDF file (bounded memory).
    progress : bool
        Show a progress bar with the acceptance rate and step size.
    max_divergences_in_a_row : int
        A chain whose proposals have non-finite energy or gradient this many steps in a row
        stops the run with a ``DivergenceError`` naming the chain and the steps.
    transform : callable with an ``every`` attribute, optional
        Applied to the images after every ``transform.every``-th step (e.g.
        ``energies.BlurEvery``), followed by one more energy+gradient evaluation. This is not a
        Langevin move: it breaks the chain's invariance, and the run card says so.
    normalize_step : bool
        Descent only: divide each chain's step by the mean magnitude of its preconditioned
        gradient, so that ``step_size`` is the mean change of a coordinate per step (the
        google/deepdream recipe). Not allowed for MALA and ULA, whose step must not depend on
        the current gradient.

    Returns
    -------
    Run
        ``run.samples`` ``(chain, draw, ...)``, ``run.stats`` name -> ``(chain, step)``,
        ``run.grad_evals``, ``run.to_datatree()``.
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        raise ValueError(
            "x0 must be a floating-point tensor of shape (chains, ...), "
            f"got {getattr(x0, 'shape', type(x0).__name__)}"
        )
    steps = _check_int("steps", steps, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    max_div = _check_int("max_divergences_in_a_row", max_divergences_in_a_row, 1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "descent":
        temperature = 0.0
    elif not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be > 0 for {method}; use method='descent' for T = 0")
    if not 0 < target_accept < 1:
        raise ValueError("target_accept must be in (0, 1)")
    if normalize_step and method != "descent":
        raise ValueError("normalize_step is for method='descent' only (it breaks MALA and ULA)")

    chains, device = x0.shape[0], x0.device
    eps0 = _step_size_tensor(step_size, chains, device)
    sched = as_schedule(schedule)
    precond = as_preconditioner(preconditioner)
    box = bounds if isinstance(bounds, Box) or bounds is None else Box(*bounds)
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator(device=device).manual_seed(int(seed))

    energy_fn = box.wrap(energy, temperature) if box else energy
    position = box.to_unconstrained(x0.detach()) if box else x0.detach()

    def to_image(z: Tensor) -> Tensor:
        return box.to_constrained(z) if box else z

    def image_energy(state: kernel.LangevinState) -> Tensor:
        if box is None or temperature == 0:
            return state.energy
        return state.energy + temperature * box.log_det_jacobian(state.position)

    config = {
        "method": method,
        "steps": steps,
        "warmup": warmup,
        "thin": thin,
        "temperature": float(temperature),
        "step_size": eps0.tolist(),
        "schedule": repr(sched),
        "target_accept": target_accept,
        "preconditioner": repr(precond),
        "bounds": None if box is None else [box.lo, box.hi],
        "normalize_step": bool(normalize_step),
        "seed": seed if isinstance(seed, int) else "generator",
        "chains": chains,
        "shape": list(x0.shape[1:]),
        "dtype": str(x0.dtype).removeprefix("torch."),
        "device": str(device),
    }
    every = 0
    if transform is not None:
        every = getattr(transform, "every", None)
        if not callable(transform) or not isinstance(every, int) or every < 1:
            raise TypeError("transform must be callable with an integer attribute every >= 1")
        config["transform"] = f"{transform!r} (not a Langevin move: breaks invariance)"
    recorder = as_recorder(record_to)
    recorder.start(
        chains=chains,
        warmup=warmup,
        steps=steps,
        thin=thin,
        position_shape=tuple(x0.shape[1:]),
        dtype=x0.dtype,
        attrs={"method": method, "temperature": float(temperature)},
    )

    adjust = method == "mala"  # the float64 g^T M g enters only MALA's accept step
    state = kernel.init(energy_fn, position, precond, exact=adjust)
    bad = ~torch.isfinite(state.energy)
    if bad.any():
        recorder.close()
        raise ValueError(
            f"the energy at x0 is not finite for chain(s) {bad.nonzero().flatten().tolist()}"
        )
    grad_evals = 1
    sched_state = sched.init(eps0, warmup=warmup, steps=steps, target_accept=target_accept)
    run = Run(recorder, state, grad_evals, config, box)

    total = warmup + steps
    in_a_row = torch.zeros(chains, dtype=torch.int64, device=device)
    # the longest run of divergences per chain and the step it ended at, checked every
    # `refresh` steps so that the loop forces no device sync per step
    longest = torch.zeros_like(in_a_row)
    longest_end = torch.zeros_like(in_a_row)
    acc_sum = torch.zeros(chains, dtype=torch.float64, device=device)  # per chain: one add
    refresh = max(1, min(50, total // 100))
    if device.type != "cpu":  # there each look is a device sync, which stalls the GPU's queue
        refresh = max(refresh, 10)
    bar = tqdm(
        total=total,
        disable=not progress,
        desc="warmup" if warmup else "sampling",
        unit="step",
        dynamic_ncols=True,
        leave=True,
    )
    try:
        for t in range(total):
            if t == warmup and warmup:
                bar.set_description("sampling")
                acc_sum.zero_()
            eps = shown = sched.step_size(sched_state)
            if normalize_step:
                eps = eps / kernel.drift_magnitude(state).to(eps).clamp_min(1e-12)
            state, info = kernel.step(
                state,
                energy_fn,
                eps,
                generator,
                temperature=temperature,
                adjust=adjust,
                preconditioner=precond,
            )
            grad_evals += 1
            if every and (t + 1) % every == 0:
                moved = transform(to_image(state.position))
                state = kernel.init(
                    energy_fn, box.to_unconstrained(moved) if box else moved, precond, exact=adjust
                )
                grad_evals += 1
            sched_state = sched.update(sched_state, t, info.acceptance_prob)
            recorder.save_step(
                t,
                to_image(state.position) if recorder.keeps(t) else None,
                {
                    "acceptance_prob": info.acceptance_prob,
                    "is_accepted": info.is_accepted,
                    "step_size": eps.to(torch.float64),
                    "energy": image_energy(state).to(torch.float64),
                    "grad_norm": torch.linalg.vector_norm(
                        state.grad.reshape(chains, -1), dim=1, dtype=torch.float64
                    ),
                    "diverging": info.diverging,
                    **{f"term_{k}": v.to(torch.float64) for k, v in state.terms.items()},
                },
            )
            acc_sum += info.acceptance_prob
            in_a_row = torch.where(info.diverging, in_a_row + 1, 0)
            longer = in_a_row > longest
            longest = torch.where(longer, in_a_row, longest)
            longest_end = torch.where(longer, t, longest_end)
            if (t + 1) % refresh == 0 or t + 1 == total:
                c = int(longest.argmax())
                worst, end = int(longest[c]), int(longest_end[c])
                if worst >= max_div:
                    run.final_state, run.grad_evals = state, grad_evals
                    raise DivergenceError(
                        f"chain {c} diverged (non-finite energy or gradient) {worst} steps "
                        f"in a row, steps {end - worst + 1}..{end}; try a smaller step_size, "
                        f"bounds, or a stronger prior",
                        run,
                    )
                if progress:
                    n_phase = t + 1 - (warmup if t >= warmup else 0)
                    # a normalized step shows the mean move per coordinate, not the huge
                    # eps of a nearly flat energy
                    key, value = ("step", shown) if normalize_step else ("eps", eps)
                    bar.set_postfix(
                        acc=f"{float(acc_sum.mean()) / n_phase:.3f}",
                        **{key: f"{float(value.mean()):.3g}"},
                        refresh=False,
                    )
                    bar.update((t + 1) - bar.n)
    except KeyboardInterrupt:
        # an interrupted run keeps what it has: the caller gets the steps done so far
        run.config["interrupted_at_step"] = recorder.completed
        warnings.warn(
            f"sampling interrupted after {recorder.completed} of {total} steps; returning the "
            f"{recorder.completed_draws} draws recorded so far",
            RuntimeWarning,
            stacklevel=2,
        )
    except Exception as err:
        if isinstance(recorder, NetCDFRecorder):
            err.add_note(f"the {recorder.completed} steps done so far are in {recorder.path}")
        raise
    finally:
        bar.close()
        run.final_state, run.grad_evals = state, grad_evals
        recorder.close()
    return run
