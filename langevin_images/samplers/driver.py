"""The ``sample()`` driver: warmup and adaptation, thinning, recording, progress, divergences,
interrupts, checkpoints and ``resume()``.

The loop knows no method: it asks the kernel registry (``samplers.kernels``) for one. A run
recorded to disk writes, with every block, the whole state of the loop (kernel state, schedule
state, generator, the energy's own random state, divergence counters, step index), so that
``resume(path, energy)`` continues a killed run and gives, bit for bit, the draws and
statistics the uninterrupted run would have given.
"""

from __future__ import annotations

import hashlib
import numbers
import operator
import os
import signal
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..linalg import as_preconditioner
from ..recording import Recorder, ZarrRecorder, as_recorder, to_datatree
from ..schedules import as_schedule
from . import kernel
from .constraints import Box
from .kernels import KERNELS, build_kernel, with_transform

__all__ = ["METHODS", "SEED_LIMIT", "DivergenceError", "Run", "describe", "resume", "sample"]

METHODS = ("mala", "ula", "descent")  # the built-in kernels; KERNELS has every registered one
SEED_LIMIT = 2**63  # seeds are in [0, SEED_LIMIT): a seed plus a small offset stays an int64


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
    chain_groups: list | None = None

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

    @property
    def interrupted(self) -> bool:
        """Whether the run stopped before its last step (Ctrl-C, SIGTERM)."""
        return bool(self.config.get("interrupted", False))

    def to_datatree(self, **kwargs):
        """The run as an ArviZ 1.x ``xarray.DataTree``; keywords as in
        ``langevin_images.recording.to_datatree`` (projections, features)."""
        return to_datatree(self, **kwargs)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Run(method={c.get('method')!r}, chains={c.get('chains')}, "
            f"draws={self.recorder.completed_draws}, warmup={c.get('warmup')}, "
            f"grad_evals={self.grad_evals})"
        )


def _step_size_tensor(step_size: float | Tensor, chains: int, device) -> Tensor:
    if isinstance(step_size, str | bytes) or not (
        isinstance(step_size, numbers.Real | Tensor) or hasattr(step_size, "__array__")
    ):
        raise TypeError(f"step_size must be a number or a tensor, got {step_size!r}")
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
    """``value`` as a Python int (numpy and 0-d torch integers too), ``>= minimum``."""
    try:
        if isinstance(value, bool) or (isinstance(value, Tensor) and value.is_floating_point()):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: Any) -> float:
    """``value`` as a Python float (numpy and 0-d torch numbers too)."""
    if isinstance(value, bool | str | bytes):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def describe(obj: Any) -> str:
    """A stable description of an energy or option: its repr where the class defines one, else
    its qualified name (never a memory address), for the record and its fingerprint."""
    if obj is None or isinstance(obj, str | int | float):
        return repr(obj)
    if type(obj).__repr__ is object.__repr__ or (callable(obj) and hasattr(obj, "__qualname__")):
        target = obj if hasattr(obj, "__qualname__") else type(obj)
        return f"{getattr(target, '__module__', '')}.{target.__qualname__}"
    return repr(obj)


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Stop:
    """SIGINT and SIGTERM during the loop set a flag that the loop reads between two steps, so
    that an interrupt never leaves half a step in the state, the record or the checkpoint. A
    second Ctrl-C raises KeyboardInterrupt at once. Only the main thread can take signals;
    elsewhere (a worker thread) nothing is installed."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Loop(NamedTuple):
    """Everything the loop carries from one step to the next: what a checkpoint holds."""

    step: int  # the next global step
    state: Any
    sched_state: Any
    grad_evals: int
    in_a_row: Tensor
    longest: Tensor
    longest_end: Tensor
    acc_sum: Tensor


def _as_plain(x: Any) -> Any:
    """NamedTuples (kernel and schedule states) as dicts, for ``torch.load(weights_only=True)``."""
    if hasattr(x, "_asdict"):
        return {k: _as_plain(v) for k, v in x._asdict().items()}
    if isinstance(x, dict):
        return {k: _as_plain(v) for k, v in x.items()}
    return x


def _restore(template: Any, saved: Any, device) -> Any:
    """``saved`` (from ``_as_plain``) rebuilt in the type of ``template``, tensors on ``device``."""
    if hasattr(template, "_asdict"):
        fields = template._asdict()
        return type(template)(**{k: _restore(fields[k], saved[k], device) for k in fields})
    if isinstance(saved, dict):
        return {k: _restore((template or {}).get(k), v, device) for k, v in saved.items()}
    if isinstance(saved, Tensor):
        return saved.to(device)
    return saved


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
    spec: dict | None = None,
    chain_groups: Any = None,
    **kernel_options: Any,
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
    method : {"mala", "ula", "descent", "pcn"} or another registered kernel
        Metropolis-adjusted, unadjusted, zero-noise gradient descent (T = 0, no accept step),
        or preconditioned Crank-Nicolson (``samplers.pcn``); see ``samplers.kernels``.
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
        Fixed symmetric positive-definite ``M`` (``langevin_images.linalg``).
    bounds : (lo, hi) or Box, optional
        Sample the target restricted to ``[lo, hi]`` exactly, through a logistic
        reparameterization with its log-Jacobian (see ``samplers.constraints``).
    thin : int
        Keep one draw every ``thin`` sampling steps.
    seed : int or torch.Generator
        All randomness comes from here; the same seed gives the same run.
    record_to : None, path or Recorder
        None keeps the run in memory; a path streams it to a crash-safe zarr record (bounded
        memory) with a checkpoint at every block, which ``resume(path, energy)`` continues.
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
        google/deepdream recipe).
    spec : dict, optional
        The JSON-friendly description of the job this run is (``runs.RunSpec.to_dict()``),
        kept in the record with its hash; ``resume`` refuses a record whose hash differs.
    chain_groups : sequence, optional
        One label per chain (the target class, say), kept in the record: the diagnostics
        compare chains only within a label (``to_datatree``'s ``chain_groups``).
    **kernel_options
        Options of the kernel (e.g. ``prior_mean`` for ``pcn``).

    Returns
    -------
    Run
        ``run.samples`` ``(chain, draw, ...)``, ``run.stats`` name -> ``(chain, step)``,
        ``run.grad_evals``, ``run.to_datatree()``. Ctrl-C or SIGTERM stops the run between two
        steps and returns it with ``run.interrupted`` set (a record on disk then holds a
        checkpoint at that step).
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        raise ValueError(
            "x0 must be a floating-point tensor of shape (chains, ...), "
            f"got {getattr(x0, 'shape', type(x0).__name__)}"
        )
    if x0.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"x0 is {str(x0.dtype).removeprefix('torch.')}: the sampler's state, its accept "
            "step and its record keep float32 or float64; give x0 in one of them (an energy "
            "may still run its model in lower precision inside)"
        )
    if x0.shape[0] == 0:
        raise ValueError(f"x0 has no chains: its shape is {tuple(x0.shape)}, (chains, ...)")
    steps = _check_int("steps", steps, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    if thin > steps:
        raise ValueError(f"thin = {thin} keeps no draw of steps = {steps}: give thin <= steps")
    max_divergences_in_a_row = _check_int("max_divergences_in_a_row", max_divergences_in_a_row, 1)
    target_accept = _check_float("target_accept", target_accept)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    temperature = _check_float("temperature", temperature)
    chains, device = x0.shape[0], x0.device
    eps0 = _step_size_tensor(step_size, chains, device)
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        seed = _check_int("seed", seed, 0)
        if seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {seed}")
        generator = torch.Generator(device=device).manual_seed(seed)
    config = {
        "method": method,
        "steps": steps,
        "warmup": warmup,
        "thin": thin,
        "temperature": 0.0 if method == "descent" else temperature,
        "step_size": eps0.tolist(),
        "schedule_arg": schedule if schedule is None or isinstance(schedule, str) else None,
        "target_accept": target_accept,
        "bounds": None if bounds is None or isinstance(bounds, Box) else list(bounds),
        "normalize_step": bool(normalize_step),
        "max_divergences_in_a_row": max_divergences_in_a_row,
        "seed": seed if isinstance(seed, int) else "generator",
        "chains": chains,
        "shape": list(x0.shape[1:]),
        "dtype": str(x0.dtype).removeprefix("torch."),
        "device": str(device),
    }
    setup = _setup(
        energy, config, schedule=schedule, preconditioner=preconditioner, bounds=bounds,
        transform=transform, kernel_options=kernel_options,
    )  # fmt: skip
    recorder = as_recorder(record_to)
    attrs = {"method": method, "temperature": setup.kern.temperature, "config": setup.config}
    if spec is not None:
        attrs.update(spec=spec, spec_hash=spec_hash(spec))
    if chain_groups is not None:
        chain_groups = [g.item() if hasattr(g, "item") else g for g in chain_groups]
        if len(chain_groups) != chains:
            raise ValueError(f"chain_groups needs one label per chain ({chains})")
        attrs["chain_groups"] = chain_groups
    recorder.start(
        chains=chains,
        warmup=warmup,
        steps=steps,
        thin=thin,
        position_shape=tuple(x0.shape[1:]),
        dtype=x0.dtype,
        attrs=attrs,
    )
    position = setup.box.to_unconstrained(x0.detach()) if setup.box else x0.detach()
    try:
        state = setup.kern.init(position)
    except BaseException:
        recorder.close()
        raise
    bad = ~torch.isfinite(state.energy)
    if bad.any():
        recorder.close()
        raise ValueError(
            f"the energy at x0 is not finite for chain(s) {bad.nonzero().flatten().tolist()}"
        )
    zeros = torch.zeros(chains, dtype=torch.int64, device=device)
    loop = _Loop(
        0,
        state,
        setup.sched.init(eps0, warmup=warmup, steps=steps, target_accept=target_accept),
        1,
        zeros,
        zeros.clone(),
        zeros.clone(),
        torch.zeros(chains, dtype=torch.float64, device=device),
    )
    return _drive(setup, loop, recorder, generator, energy, progress=progress, groups=chain_groups)


class _Setup(NamedTuple):
    kern: Any
    sched: Any
    box: Box | None
    config: dict
    max_div: int


_DESCRIBED = ("schedule", "preconditioner", "kernel_options", "energy", "energy_hash", "transform")


def _setup(energy, config, *, schedule, preconditioner, bounds, transform, kernel_options):
    """The kernel, schedule and box of a run, checked against each other; ``config`` completed
    with their descriptions."""
    method = config["method"]
    sched = as_schedule(schedule)
    precond = as_preconditioner(preconditioner)
    box = bounds if isinstance(bounds, Box) or bounds is None else Box(*bounds)
    energy_fn = box.wrap(energy, config["temperature"]) if box else energy
    if method not in KERNELS:
        raise ValueError(f"method must be one of {tuple(KERNELS)}, got {method!r}")
    options = dict(kernel_options)
    if config["normalize_step"]:
        if method != "descent":
            raise ValueError("normalize_step is for method='descent' only (it breaks MALA and ULA)")
        options["normalize_step"] = True
    kern = build_kernel(
        method, energy_fn, temperature=config["temperature"], preconditioner=precond, **options
    )
    if getattr(sched, "adaptive", False) and not kern.accepts:
        raise ValueError(
            f"schedule {sched!r} adapts to an acceptance rate, which method={method!r} does not "
            "have; give a constant step or a decay"
        )
    # what is described from the objects given, never carried over from a stored config (a
    # resumed run's are compared with the record's)
    config = {k: v for k, v in config.items() if k not in _DESCRIBED}
    config.update(
        temperature=float(kern.temperature),
        schedule=repr(sched),
        preconditioner=repr(precond),
        kernel_options={k: describe(v) for k, v in kernel_options.items()},
        energy=describe(energy),
    )
    config["energy_hash"] = fingerprint(config["energy"])
    if transform is not None:

        def to_image(z):
            return box.to_constrained(z) if box else z

        def to_position(x):
            return box.to_unconstrained(x) if box else x

        kern = with_transform(kern, transform, to_image, to_position)
        config["transform"] = f"{transform!r} (not a Langevin move: breaks invariance)"
    return _Setup(kern, sched, box, config, config["max_divergences_in_a_row"])


def spec_hash(spec: dict) -> str:
    """The hash of a spec's canonical JSON (sorted keys): two specs of the same job agree."""
    import json

    return fingerprint(json.dumps(spec, sort_keys=True, default=str))


def _random_state(energy) -> dict:
    """The energy's own random state (a stochastic transform's generators), if it has one:
    asked for by duck typing, since any callable is an energy."""
    fn = getattr(energy, "random_state", None)
    return fn() if callable(fn) else {}


def _checkpoint(loop: _Loop, generator: torch.Generator, energy) -> dict:
    return {
        **_as_plain(loop._replace(state=None, sched_state=None)._asdict()),
        "state": _as_plain(loop.state),
        "sched_state": _as_plain(loop.sched_state),
        "generator": generator.get_state(),
        "energy_random_state": _random_state(energy),
    }


def _drive(
    setup: _Setup, loop: _Loop, recorder, generator, energy, *, progress: bool, groups=None
) -> Run:
    """The loop from ``loop.step`` to the end, recording, checkpointing, and stopping cleanly."""
    kern, sched, box, config = setup.kern, setup.sched, setup.box, setup.config
    warmup, total = config["warmup"], config["warmup"] + config["steps"]
    temperature = kern.temperature
    chains = loop.state.position.shape[0]
    device = loop.state.position.device
    run = Run(recorder, loop.state, loop.grad_evals, config, box, groups)

    def to_image(z: Tensor) -> Tensor:
        return box.to_constrained(z) if box else z

    def image_energy(state) -> Tensor:
        if box is None or temperature == 0:
            return state.energy
        return state.energy + temperature * box.log_det_jacobian(state.position)

    # the longest run of divergences per chain and the step it ended at, checked every
    # `refresh` steps so that the loop forces no device sync per step
    refresh = max(1, min(50, total // 100))
    if device.type != "cpu":  # there each look is a device sync, which stalls the GPU's queue
        refresh = max(refresh, 10)
    bar = tqdm(
        total=total,
        initial=loop.step,
        disable=not progress,
        desc="warmup" if loop.step < warmup else "sampling",
        unit="step",
        dynamic_ncols=True,
        leave=True,
    )
    stopped = None
    try:
        with _Stop() as stop:
            for t in range(loop.step, total):
                if stop.signal is not None:
                    stopped = stop.signal
                    break
                state, sched_state, grad_evals, in_a_row, longest, longest_end, acc_sum = loop[1:]
                if t == warmup and warmup:
                    bar.set_description("sampling")
                    acc_sum = torch.zeros_like(acc_sum)
                eps = sched.step_size(sched_state)
                state, info = kern.step(t, state, eps, generator)
                grad_evals += info.evals
                sched_state = sched.update(sched_state, t, info.acceptance_prob)
                stats = {
                    "acceptance_prob": info.acceptance_prob,
                    "is_accepted": info.is_accepted,
                    "step_size": eps.to(torch.float64),
                    "energy": image_energy(state).to(torch.float64),
                }
                if state.grad is not None:
                    stats["grad_norm"] = torch.linalg.vector_norm(
                        state.grad.reshape(chains, -1), dim=1, dtype=torch.float64
                    )
                stats["diverging"] = info.diverging
                for k, v in (state.terms or {}).items():
                    stats[f"term_{k}"] = v.to(torch.float64)
                recorder.save_step(
                    t, to_image(state.position) if recorder.keeps(t) else None, stats
                )
                acc_sum = acc_sum + info.acceptance_prob
                in_a_row = torch.where(info.diverging, in_a_row + 1, 0)
                longer = in_a_row > longest
                longest = torch.where(longer, in_a_row, longest)
                longest_end = torch.where(longer, t, longest_end)
                loop = _Loop(t + 1, state, sched_state, grad_evals, in_a_row, longest,
                             longest_end, acc_sum)  # fmt: skip
                run.final_state, run.grad_evals = state, grad_evals
                if recorder.due():
                    recorder.flush(_checkpoint(loop, generator, energy), {"grad_evals": grad_evals})
                if (t + 1) % refresh == 0 or t + 1 == total:
                    c = int(longest.argmax())
                    worst, end = int(longest[c]), int(longest_end[c])
                    if worst >= setup.max_div:
                        raise DivergenceError(
                            f"chain {c} diverged (non-finite energy or gradient) {worst} steps "
                            f"in a row, steps {end - worst + 1}..{end}; try a smaller step_size, "
                            f"bounds, or a stronger prior",
                            run,
                        )
                    if progress:
                        n_phase = t + 1 - (warmup if t >= warmup else 0)
                        if kern.accepts:
                            shown = {"acc": f"{float(acc_sum.mean()) / n_phase:.3f}"}
                        else:  # every finite step is taken: the energy says how it goes
                            shown = {"energy": f"{float(state.energy.mean()):.4g}"}
                        # a normalized step is the mean move per coordinate, not an eps
                        key = "step" if config["normalize_step"] else "eps"
                        shown[key] = f"{float(eps.mean()):.3g}"
                        bar.set_postfix(**shown, refresh=False)
                        bar.update((t + 1) - bar.n)
    except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last checkpoint stays the one
        stopped = signal.SIGINT
        recorder.close(attrs={"interrupted": True, "grad_evals": loop.grad_evals})
    except Exception as err:
        if not isinstance(err, DivergenceError):
            phase = "warmup" if loop.step < warmup else "sampling"
            err.add_note(f"raised at step {loop.step} of {total} ({phase})")
        if isinstance(recorder, ZarrRecorder):
            err.add_note(
                f"the {recorder.completed} steps done so far are in {recorder.path}"
                + (
                    f"; resume from step {recorder.checkpoint_step} with langevin_images.resume"
                    if recorder.checkpoint_step > 0
                    else ""
                )
            )
        else:
            err.add_note(f"the {recorder.completed} steps done so far are in its .run attribute")
        err.run = run  # what was recorded, as DivergenceError.run has it
        try:
            recorder.close(attrs={"grad_evals": loop.grad_evals, "error": repr(err)})
        except OSError as close_err:  # a full disk fails the last flush too: the blocks
            # written before stay readable, since a block's attrs are written after its data
            err.add_note(f"the last steps could not be written ({close_err})")
        raise
    finally:
        bar.close()
    if stopped is not None:
        config["interrupted"] = True
        config["interrupted_at_step"] = loop.step
        config["signal"] = signal.Signals(stopped).name
        where = ""
        if isinstance(recorder, ZarrRecorder):
            where = f"; resume with langevin_images.resume({str(recorder.path)!r}, energy)"
        warnings.warn(
            f"sampling interrupted ({config['signal']}) after {loop.step} of {total} steps; "
            f"returning the {recorder.completed_draws} draws recorded so far{where}",
            RuntimeWarning,
            stacklevel=3,
        )
    recorder.close(
        _checkpoint(loop, generator, energy),
        {"grad_evals": loop.grad_evals, "interrupted": stopped is not None,
         "interrupted_at_step": loop.step if stopped is not None else None},
    )  # fmt: skip
    run.final_state, run.grad_evals = loop.state, loop.grad_evals
    return run


def resume(
    path: str | os.PathLike,
    energy: kernel.EnergyFn,
    *,
    schedule: Any = None,
    preconditioner: Any = None,
    bounds: Box | None = None,
    transform: Any = None,
    spec: dict | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    **kernel_options: Any,
) -> Run:
    """Continue the run recorded at ``path`` from its last checkpoint, to its last step.

    Give the same energy, and the same objects for whatever the run was given as an object
    (a schedule object, a preconditioner, a Box, a transform, kernel options): only their
    descriptions are in the record, and each is checked against it. Strings and None are
    taken from the record. The continued run writes into the same record, and gives exactly
    (bit for bit, on the same device and thread count) the draws and statistics the
    uninterrupted run would have given.

    Raises
    ------
    ValueError
        In one line, if the record's spec or energy fingerprint differs from the ones given.
    """
    recorder = ZarrRecorder.open(path)
    if recorder.checkpoint_step < 0:
        raise ValueError(
            f"{path}: no checkpoint was written yet (killed before its first block), nothing to "
            "resume: start the run again"
        )
    a = recorder.attrs
    config = {k: v for k, v in (a.get("config") or {}).items()
              if k not in ("interrupted", "interrupted_at_step", "signal")}  # fmt: skip
    if spec is not None and a.get("spec_hash") != spec_hash(spec):
        raise ValueError(
            f"{path}: the record's spec hash {a.get('spec_hash')} differs from the spec given "
            f"({spec_hash(spec)}); resume it with its own spec, or start a new run"
        )
    if fingerprint(describe(energy)) != config.get("energy_hash"):
        raise ValueError(
            f"{path}: recorded for the energy {config.get('energy')!r}, not {describe(energy)!r}"
        )
    sched = schedule if schedule is not None else config.get("schedule_arg")
    bounds = bounds if bounds is not None else config.get("bounds")
    setup = _setup(
        energy, config, schedule=sched, preconditioner=preconditioner, bounds=bounds,
        transform=transform, kernel_options=kernel_options,
    )  # fmt: skip
    for key in ("schedule", "preconditioner", "transform", "kernel_options"):
        if setup.config.get(key) != config.get(key):
            raise ValueError(
                f"{path}: recorded with {key} {config.get(key)!r}, resumed with "
                f"{setup.config.get(key)!r}; pass the same {key}"
            )
    device = torch.device(device or config.get("device", "cpu"))
    checkpoint = recorder.resume(device)
    loop = _restore_loop(setup, checkpoint, config, device)
    generator = torch.Generator(device=device)
    generator.set_state(checkpoint["generator"])
    saved = checkpoint["energy_random_state"]
    if saved:
        energy.set_random_state(saved)
    groups = a.get("chain_groups")
    return _drive(setup, loop, recorder, generator, energy, progress=progress, groups=groups)


def _restore_loop(setup: _Setup, checkpoint: dict, config: dict, device) -> _Loop:
    """The loop's carry from a checkpoint, in the types a fresh run would have."""
    chains = config["chains"]
    eps0 = torch.as_tensor(config["step_size"], dtype=torch.float64, device=device)
    sched_template = setup.sched.init(
        eps0, warmup=config["warmup"], steps=config["steps"], target_accept=config["target_accept"]
    )
    saved_state = checkpoint["state"]
    state = _restore(setup.kern.state_type(**dict.fromkeys(saved_state)), saved_state, device)
    if state.position.shape[0] != chains:
        raise ValueError(f"checkpoint holds {state.position.shape[0]} chains, not {chains}")
    return _Loop(
        int(checkpoint["step"]),
        state,
        _restore(sched_template, checkpoint["sched_state"], device),
        int(checkpoint["grad_evals"]),
        *[checkpoint[k].to(device) for k in ("in_a_row", "longest", "longest_end", "acc_sum")],
    )
