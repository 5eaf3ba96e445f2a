"""Comparative studies: a grid of run specs, run locally or on a Dask cluster, resumable,
gathered into one DataTree.

A study is a TOML file::

    [study]                 # the ``sample`` options every run shares ("_" for "-")
    model = "mnist"
    targets = [1, 3, 7]
    chains = 8
    seeds = [0, 1]          # one run per grid point and seed

    [grid]                  # every key a list; the grid is their product
    prior = ["fitted=1", "gaussian=1"]
    temperature = [0.1, 1.0]

    [[configs]]             # optional: named sets of options, one more dimension ("config")
    name = "jem-sgld"
    method = "ula"
    three_epsilons = [0, 1, 0.01]

Each grid point x seed is one ``RunSpec`` (one torch thread unless the study says otherwise,
so that a run gives the same numbers, bit for bit, in whatever process runs it) and one run
folder under ``DIR/runs/``. A run works in a hidden ``.NAME.partial`` folder, holding a lock,
and is renamed to ``NAME`` when it is done (with ``study-metrics.json``) or has failed (with
``error.json``, its traceback): a folder without a dot is finished, whatever was killed when.
Running the same study again skips the finished runs, resumes the partial ones from their
record, and leaves the failed ones unless ``retry_failed``.

The executor is any ``concurrent.futures.Executor``: a spawn process pool (the default), a
Dask ``distributed`` client's executor (``scheduler=``), or this process (``workers=0``). The
work function takes a spec as a plain dict and builds the energy in the worker: nothing
stateful is pickled.

``DIR/study.nc`` holds one DataTree: the root has a variable per figure with the grid keys,
``target`` and ``seed`` as dimensions (run-level figures without ``target``); ``samples`` has
the final draws. ``DIR/report.md`` and the plots name the Pareto-optimal configurations of
realism (the judge's probability of the target) against diversity (Vendi of the judge's
centred features within a target).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runs import RunFolderError, RunSpec, atomic_write, judge_reference

__all__ = [
    "Point",
    "Study",
    "StudyResult",
    "configurations",
    "gather",
    "grid_dims",
    "pareto_front",
    "plot_ess_per_grad",
    "plot_samples",
    "plot_tradeoff",
    "report",
    "run_point",
    "run_study",
    "same_numbers",
]

METRICS = "study-metrics.json"
ERROR = "error.json"
RUNS = "runs"
RUNNING = ".running"
LOCKS = ".locks"

# keys of [study] and [grid] as the command line spells them -> RunSpec field
ALIASES = {"target": "targets", "prior": "priors"}
EPSILONS = ("eps1", "eps2", "eps3")
STUDY_KEYS = {"seeds", "plots", "name"}  # not run spec fields
# figures per (point, seed, target) and per (point, seed); "seconds" is the one that is not
# reproducible, so identity checks leave it out
TARGET_VARS = ("judge_prob", "judge_top1", "model_prob", "frechet", "vendi", "pairwise_pixel",
               "pairwise_feature", "rhat_max", "ess_bulk_min", "ess_bulk_min_per_grad")  # fmt: skip
RUN_VARS = ("acceptance", "divergences", "grad_evals", "judge_prob_all", "judge_top1_all",
            "frechet_all", "seconds")  # fmt: skip


# ---- the config -----------------------------------------------------------------------------


def _field(key: str) -> str:
    return ALIASES.get(key, key)


def _value(key: str, value):
    """A TOML value as the RunSpec field wants it (lists to tuples, one prior to a tuple)."""
    if key in ("targets", "priors"):
        return tuple(value) if isinstance(value, list | tuple) else (value,)
    if key == "three_epsilons" and value is not None:
        return tuple(float(v) for v in value)
    return value


def _label(value) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_label(v) for v in value)
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _folder_name(coords: dict[str, Any]) -> str:
    text = "_".join(f"{k}={_label(v)}" for k, v in coords.items())
    return "".join(c if c.isalnum() or c in "=+-._," else "-" for c in text)


@dataclass(frozen=True)
class Point:
    """One run of a study: its folder name, its coordinates (grid keys and seed) and spec."""

    name: str
    coords: dict[str, Any]
    spec: RunSpec


@dataclass
class Study:
    """A parsed study config: the shared options, the grid, the named configs and the seeds."""

    base: dict[str, Any]
    grid: dict[str, list]
    configs: list[dict[str, Any]]
    seeds: list[int]
    plots: bool = False
    name: str = "study"
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike) -> Study:
        import tomllib

        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ValueError(f"{path}: cannot read the study config ({err.strerror})") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
        d.setdefault("study", {}).setdefault("name", path.stem)
        return cls.from_dict(d, source=text)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "") -> Study:
        """From a dict of the TOML's shape; raises ValueError (one line) on a bad config."""
        unknown = sorted(set(d) - {"study", "grid", "configs"})
        if unknown:
            raise ValueError(
                f"unknown table(s) {unknown}: a study has [study], [grid], [[configs]]"
            )
        table = dict(d.get("study", {}))
        seeds = table.pop("seeds", None)
        if seeds is None:
            seeds = [table.pop("seed", 0)]
        elif "seed" in table:
            raise ValueError("give seeds = [...] or seed = N in [study], not both")
        if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
        plots = bool(table.pop("plots", False))
        name = str(table.pop("name", "study"))
        base = _spec_options(table, where="[study]")
        grid = {}
        for key, values in d.get("grid", {}).items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"[grid] {key}: expected a non-empty list, got {values!r}")
            if key in STUDY_KEYS | {"seed"}:
                raise ValueError(f"[grid] {key}: seeds go in [study] seeds = [...]")
            field = _field(key)
            if field in base:
                raise ValueError(f"{key} is both in [study] and in [grid]: give it once")
            _spec_options({key: values[0]}, where="[grid]")
            labels = [_label(v) for v in values]
            if len(set(labels)) != len(labels):
                raise ValueError(f"[grid] {key}: repeated values {values!r}")
            grid[key] = values
        configs = []
        for i, c in enumerate(d.get("configs", [])):
            c = dict(c)
            cname = c.pop("name", None)
            if not cname:
                raise ValueError(f"[[configs]] number {i + 1} has no name")
            configs.append({"name": str(cname), **_spec_options(c, where=f"config {cname}")})
        names = [c["name"] for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"[[configs]] names repeat: {names}")
        study = cls(base, grid, configs, [int(s) for s in seeds], plots, name, source)
        study.points()  # every spec is checked now, not in a worker later
        return study

    @property
    def dims(self) -> list[str]:
        """The dimensions of a point: the grid keys, then ``config`` if there are configs."""
        return [*self.grid, *(["config"] if self.configs else [])]

    def points(self) -> list[Point]:
        """Every grid point x config x seed, in the order the config gives them."""
        axes = [[(k, v) for v in vs] for k, vs in self.grid.items()]
        configs = self.configs or [None]
        out = []
        for combo in itertools.product(*axes):
            for config in configs:
                for seed in self.seeds:
                    fields = {"threads": 1, **self.base}
                    coords: dict[str, Any] = {}
                    if config is not None:
                        fields.update({k: v for k, v in config.items() if k != "name"})
                        coords["config"] = config["name"]
                    for key, value in combo:
                        fields[_field(key)] = _value(_field(key), value)
                        coords[key] = value
                    fields["seed"] = seed
                    ordered = {k: coords[k] for k in self.dims}
                    ordered["seed"] = seed
                    name = _folder_name(ordered)
                    try:
                        spec = RunSpec.from_dict(fields)
                    except (TypeError, ValueError) as err:
                        raise ValueError(f"run {name}: {str(err).splitlines()[0]}") from None
                    out.append(Point(name, ordered, spec))
        names = [p.name for p in out]
        if len(set(names)) != len(names):
            raise ValueError("two grid points give the same folder name; make their values differ")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in self.base.items()},
                "grid": self.grid, "configs": self.configs, "seeds": self.seeds,
                "plots": self.plots}  # fmt: skip


def _spec_options(table: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``sample`` options of a table -> RunSpec fields; unknown keys refused in one line."""
    from .energies import parse_prior

    names = {f.name for f in dataclasses.fields(RunSpec)} - {"job"}
    out = {}
    eps = [table.pop(k) for k in EPSILONS if k in table]
    if eps:
        if len(eps) != 3:
            raise ValueError(f"{where}: give all three of eps1, eps2, eps3, or none")
        out["three_epsilons"] = tuple(float(e) for e in eps)
    for key, value in table.items():
        field = _field(key)
        if field not in names:
            raise ValueError(
                f"{where}: unknown option {key!r}; expected sample options such as model, "
                f"targets, prior, temperature, method, chains, steps, warmup, or seeds"
            )
        out[field] = _value(field, value)
    for p in out.get("priors", ()):
        parse_prior(str(p))
    return out


# ---- one run, in a worker -------------------------------------------------------------------


def _lock(path: Path):
    """An exclusive lock on ``path`` (blocking): two workers never run the same point, and a
    point still running in a process left over from a killed study is waited for."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _state(folder: Path) -> str:
    """``done``, ``failed`` or ``none`` for a finished-run folder name."""
    if (folder / METRICS).exists():
        return "done"
    if (folder / ERROR).exists():
        return "failed"
    return "none"


def _partial(runs: Path, name: str) -> Path:
    return runs / f".{name}.partial"


def run_point(
    spec: dict[str, Any], runs: str, name: str, *, retry_failed: bool = False, plots: bool = False
) -> dict[str, Any]:
    """Run one point of a study into ``runs/name`` (the work function an executor calls).

    Returns ``{"name", "status", "seconds"}`` with status ``done``, ``failed``, ``interrupted``,
    or ``skipped`` (done before) / ``failed-before``; never raises for a failing run: its
    error and traceback go to ``runs/name/error.json``.
    """
    from . import runs as R

    runs_dir = Path(runs)
    final, partial = runs_dir / name, _partial(runs_dir, name)
    fd = _lock(runs_dir / LOCKS / f"{name}.lock")
    marker = runs_dir / RUNNING / f"{name}.json"
    t0 = time.perf_counter()
    try:
        state = _state(final)
        if state == "done":
            return {"name": name, "status": "skipped", "seconds": 0.0}
        if state == "failed":
            if not retry_failed:
                return {"name": name, "status": "failed-before", "seconds": 0.0}
            shutil.rmtree(partial, ignore_errors=True)
            os.replace(final, partial)  # keeps its record: the retry resumes it if it can
            (partial / ERROR).unlink(missing_ok=True)
        elif final.exists():  # neither done nor failed: not one of ours to finish
            shutil.rmtree(final)
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(marker, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "started": time.time()}))  # fmt: skip
        run_spec = RunSpec.from_dict(spec)
        try:
            result = _execute_or_resume(run_spec, partial, plots=plots)
            if result.interrupted:
                return {"name": name, "status": "interrupted", "seconds": time.perf_counter() - t0}
            figures = point_metrics(partial, run_spec, seconds=result.seconds)
            atomic_write(partial / METRICS, R._json(_infinities_as_text(figures)))
        except Exception as err:
            _record_failure(runs_dir, name, spec, err, traceback.format_exc())
            return {"name": name, "status": "failed", "seconds": time.perf_counter() - t0,
                    "error": f"{type(err).__name__}: {err}".splitlines()[0]}  # fmt: skip
        os.replace(partial, final)
        return {"name": name, "status": "done", "seconds": time.perf_counter() - t0}
    finally:
        marker.unlink(missing_ok=True)
        _unlock(fd)


def _infinities_as_text(obj):
    """inf -> "inf" (an R-hat of chains that never moved; strict JSON has no infinity, and
    null is kept for NaN, a figure that does not exist)."""
    if isinstance(obj, dict):
        return {k: _infinities_as_text(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    return obj


def _execute_or_resume(spec: RunSpec, partial: Path, *, plots: bool):
    from . import runs as R

    unreadable = None
    if (partial / R.RECORD).exists():
        try:
            return R.resume_folder(partial, spec=spec, progress=False, plots=plots)
        except (ValueError, RunFolderError):
            pass  # killed before its first checkpoint, or a spec of another study: start again
        except Exception as err:  # a record resume cannot read (a damaged file): the run is
            # seeded, so starting again gives the same numbers; its card says why it restarted
            unreadable = f"{type(err).__name__}: {err}".splitlines()[0]
            print(f"{partial.name}: cannot resume ({unreadable}); starting it again",
                  file=sys.stderr)  # fmt: skip
    shutil.rmtree(partial, ignore_errors=True)
    result = R.execute(spec, partial, progress=False, plots=plots, argv=["study"])
    if unreadable:
        card = json.loads((partial / "run.json").read_text())
        card["restarted"] = f"its record could not be resumed ({unreadable})"
        R.write_card(partial, card)
    return result


def _record_failure(runs_dir: Path, name: str, spec: dict, err: BaseException | str, tb: str):
    """``runs/name/error.json`` (and whatever the run recorded before it failed)."""
    from .runs import _json

    partial = _partial(runs_dir, name)
    partial.mkdir(parents=True, exist_ok=True)
    error = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    atomic_write(partial / ERROR, _json({
        "error": error.splitlines()[0] if error else "", "traceback": tb, "spec": spec,
        "host": socket.gethostname(), "pid": os.getpid(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }))  # fmt: skip
    final = runs_dir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


# ---- what a run gives the study -------------------------------------------------------------


def point_metrics(folder: Path, spec: RunSpec, *, seconds: float) -> dict[str, Any]:
    """The study's figures of the finished run in ``folder``: run-level and per target."""
    import torch
    import xarray as xr

    from . import diagnostics as D
    from .diagnostics.metrics import _logits
    from .models import load_model
    from .recording import ZarrRecorder

    with xr.open_datatree(folder / "run.nc", engine="h5netcdf") as tree:
        dt = tree.load()
    post = dt["posterior"]
    if post.sizes["draw"] == 0:
        raise RuntimeError("the run kept no draws: it diverged before its first kept draw "
                           "(run.json says where); lower step_size or raise warmup")  # fmt: skip
    groups = post["chain_group"].values
    final = torch.from_numpy(post["image"].isel(draw=-1).values).float().clamp(0, 1)
    stats = ZarrRecorder.open(folder / "record.zarr").get_stats()
    warmup = int(post.attrs["warmup"])
    grad_evals = int(post.attrs["grad_evals"])
    judge, test_features, test_labels = judge_reference(spec.model)
    model = load_model(spec.model, weights=spec.weights)
    features = D.penultimate(judge if judge is not None else model)
    feats = features(final)
    with torch.no_grad():
        model_logits = _logits(model, final)
        judge_logits = _logits(judge, final) if judge is not None else None
    labels = torch.as_tensor(groups.astype(np.int64))
    descent = spec.resolved_method == "descent"
    out_targets = {}
    for c in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == c)
        sub = xr.DataTree.from_dict({"posterior": post.isel(chain=idx)})
        with np.errstate(divide="ignore", invalid="ignore"):  # chains that never moved
            table = D.summary(sub) if len(idx) >= 2 and post.sizes["draw"] >= 4 else None
        f = feats[idx]
        t = {
            "model_prob": float(model_logits[idx].softmax(1)[:, c].mean()),
            "vendi": D.vendi_score(f, centre=True) if len(idx) >= 2 else math.nan,
            "pairwise_pixel": D.mean_pairwise_distance(final[idx]) if len(idx) >= 2 else math.nan,
            "pairwise_feature": D.mean_pairwise_distance(f) if len(idx) >= 2 else math.nan,
            "rhat_max": math.nan, "ess_bulk_min": math.nan, "ess_bulk_min_per_grad": math.nan,
        }  # fmt: skip
        if table is not None and not descent:  # an optimization has no R-hat or ESS
            # every summary NaN: chains that never moved (no within-chain variance), which is
            # as far from converged as it gets
            rhat, ess = table["r_hat"], table["ess_bulk"]
            t["rhat_max"] = float(rhat.max()) if rhat.notna().any() else math.inf
            t["ess_bulk_min"] = float(ess.min()) if ess.notna().any() else 0.0
            t["ess_bulk_min_per_grad"] = t["ess_bulk_min"] / max(grad_evals, 1)
        if judge_logits is not None:
            p = judge_logits[idx].softmax(1)
            t["judge_prob"] = float(p[:, c].mean())
            t["judge_top1"] = float((p.argmax(1) == c).double().mean())
            t["frechet"] = D.frechet_distance(f, test_features[test_labels == c])
        out_targets[str(c)] = t
    run = {
        "acceptance": float(stats["acceptance_prob"][:, warmup:].double().mean()),
        "divergences": int(stats["diverging"][:, warmup:].sum()),
        "grad_evals": grad_evals,
        "seconds": float(seconds),
    }
    if judge_logits is not None:
        card = json.loads((folder / "run.json").read_text())["metrics"]  # runs.metrics has
        run["judge_prob_all"] = card["judge_prob"]  # these two of the same draws already
        run["judge_top1_all"] = card["judge_top1"]
        wanted = torch.isin(test_labels, torch.unique(labels))
        run["frechet_all"] = D.frechet_distance(feats, test_features[wanted])
    return {"run": run, "targets": out_targets, "judge": getattr(judge, "name", None),
            "vendi_max": int(spec.chains) - 1}  # fmt: skip


# ---- running a study ------------------------------------------------------------------------


class _InProcess(cf.Executor):
    """Runs each call as it is submitted, in this process (``workers=0``)."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            future.set_exception(err)
        return future


def _worker_init(parent: int) -> None:
    """A pool worker's start: the CPU allocator settings of ``cpu.tune_malloc`` (1.3x faster
    MNIST steps), and exit when the study process ``parent`` is gone (killed), instead of
    finishing a run nobody waits for (the next study would wait on its lock). ``parent`` comes
    from the study process: one killed while its workers were still starting has already
    left them to another parent, and each would otherwise wait for work forever."""
    from .cpu import tune_malloc

    if os.getppid() != parent:
        os._exit(1)
    tune_malloc()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _pool(workers: int) -> cf.Executor:
    import multiprocessing

    # one thread per process: two 2-thread processes on 2 cores ran a small MALA run 23x
    # slower than one thread each. Set before the workers import torch.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(os.getpid(),),
    )  # fmt: skip


@dataclass
class StudyResult:
    out: Path
    points: list[Point]
    status: dict[str, str]  # name -> done, failed, interrupted, pending
    ran: list[str]  # names run (not skipped) by this call
    seconds: float
    tree: Any = None

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.status.items() if s == "failed"]

    @property
    def complete(self) -> bool:
        return all(s in ("done", "failed") for s in self.status.values())


def _check_folders(study: Study, runs_dir: Path) -> None:
    """Refuse (RunFolderError) a study whose run folders hold runs of other specs."""
    for p in study.points():
        card = runs_dir / p.name / "run.json"
        if card.exists():
            try:
                stored = json.loads(card.read_text()).get("spec_hash")
            except (OSError, ValueError):
                continue
            if stored and stored != p.spec.hash:
                raise RunFolderError(
                    f"{runs_dir / p.name} holds a run of another spec (hash {stored}, this "
                    f"study's is {p.spec.hash}): give a new --out, or remove that folder"
                )


def prepare(study: Study, out: str | os.PathLike) -> Path:
    """The study folder, made if needed; refuses a folder that holds something else."""
    if str(out) == "":
        raise RunFolderError("--out is empty: give a folder for the study")
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "study.json").exists():
        raise RunFolderError(f"--out {out}: not empty and not a study folder; give a new one")
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    _check_folders(study, out / RUNS)
    atomic_write(out / "study.json", json.dumps(study.to_dict(), indent=2, default=list))
    if study.source:
        atomic_write(out / "study.toml", study.source)
    shutil.rmtree(out / RUNS / RUNNING, ignore_errors=True)  # markers of a killed study
    return out


def run_study(
    study: Study,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    executor: cf.Executor | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    write: bool = True,
    say: Callable[[str], None] = lambda line: None,
) -> StudyResult:
    """Run every point of ``study`` not finished yet into ``out/runs`` and gather the study.

    ``workers``: processes of the local pool (default: the cores this process may use; 0
    runs in this process). ``scheduler``: a Dask scheduler address (``tcp://HOST:PORT``) or
    ``"local"`` for a ``LocalCluster`` of ``workers`` one-thread workers; ``executor``: any
    ``concurrent.futures.Executor`` (not shut down here). ``write``: gather ``study.nc``,
    the plots and ``report.md`` once every run is done or failed.
    """
    out = prepare(study, out)
    runs_dir = out / RUNS
    points = study.points()
    status = {p.name: _state(runs_dir / p.name) for p in points}
    status = {n: {"none": "pending"}.get(s, s) for n, s in status.items()}
    todo = [p for p in points if status[p.name] == "pending"
            or (retry_failed and status[p.name] == "failed")]  # fmt: skip
    n_workers = workers if workers is not None else len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    ran: list[str] = []
    if todo:
        own = executor is None
        closers: list[Callable[[], None]] = []
        if own:
            executor, closers = _executor(n_workers, scheduler)
        where = scheduler or (f"{n_workers} local worker(s)" if n_workers else "this process")
        say(f"study {study.name}: {len(todo)} of {len(points)} runs to do, on {where}")
        holder = [executor]
        try:
            _drive(study, todo, holder, runs_dir, status, ran, retry_failed, progress)
        except KeyboardInterrupt:
            _interrupt(holder[0])  # the workers stop sampling and keep their records
            raise
        finally:
            if own:
                if isinstance(holder[0], cf.ProcessPoolExecutor):
                    holder[0].shutdown(wait=True, cancel_futures=True)
                else:
                    holder[0].shutdown(wait=False)  # Dask: cancels what is left
                for close in closers:
                    close()
    seconds = time.perf_counter() - t0
    result = StudyResult(out, points, status, ran, seconds)
    if write and result.complete:
        result.tree = write_outputs(study, out)
    return result


def _interrupt(executor: cf.Executor) -> None:
    """Pass a Ctrl-C (or SIGTERM) on to a local pool's workers: their runs stop between two
    steps, as an interrupted ``sample`` does, and resume when the study runs again. A Dask
    cluster's running tasks cannot be stopped; they finish on the cluster."""
    import signal

    for proc in list(getattr(executor, "_processes", None) or {}).copy():
        try:
            os.kill(executor._processes[proc].pid, signal.SIGTERM)
        except (OSError, KeyError, AttributeError):
            pass


def _executor(workers: int, scheduler: str | None) -> tuple[cf.Executor, list]:
    if scheduler is None:
        return (_InProcess() if workers == 0 else _pool(workers)), []
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--scheduler needs Dask distributed: pip install 'langevin_images[dask]'"
        ) from None
    closers = []
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1,
                               processes=True, dashboard_address=None)  # fmt: skip
        client = Client(cluster)
        closers = [client.close, cluster.close]
        from .cpu import tune_malloc

        client.run(tune_malloc)  # our own workers: the pool's allocator settings
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise ValueError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        closers = [client.close]
    return client.get_executor(pure=False), closers


def _drive(study, todo, holder, runs_dir, status, ran, retry_failed, progress) -> None:
    """Submit ``todo`` to ``holder[0]`` and wait, with one bar over the runs; a local pool that
    breaks (a worker killed) is replaced in ``holder``, and the runs it was running are
    recorded as failed."""
    from tqdm.auto import tqdm

    plots = study.plots
    spec_of = {p.name: p.spec.to_dict() for p in todo}
    submitted: dict[cf.Future, str] = {}

    def submit(names):
        for name in names:
            fut = holder[0].submit(run_point, spec_of[name], str(runs_dir), name,
                                  retry_failed=retry_failed, plots=plots)  # fmt: skip
            submitted[fut] = name
            status[name] = "queued"

    bar = tqdm(total=len(todo), desc=f"study {study.name}", unit="run", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    crashes, shown, tty = 0, time.monotonic(), sys.stderr.isatty()
    try:
        submit([p.name for p in todo])
        while submitted:
            done, _ = cf.wait(list(submitted), timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                name = submitted.pop(fut)
                try:
                    r = fut.result()
                except cf.process.BrokenProcessPool:
                    continue  # handled below, once for all the pool's futures
                except cf.CancelledError:
                    status[name] = "pending"
                    continue
                except Exception as err:  # the worker process died (Dask: KilledWorker)
                    _record_failure(runs_dir, name, spec_of[name],
                                    f"the worker running it died: {type(err).__name__}: {err}",
                                    traceback.format_exc())  # fmt: skip
                    r = {"status": "failed"}
                s = {"skipped": "done", "failed-before": "failed"}.get(r["status"], r["status"])
                status[name] = "pending" if s == "interrupted" else s
                if r["status"] in ("done", "failed"):
                    ran.append(name)
                bar.update(1)
            broken = getattr(holder[0], "_broken", False)
            if broken:  # a pool worker died: the runs it held are failed, the others go again
                crashes += 1
                died = [m.stem for m in (runs_dir / RUNNING).glob("*.json")]
                for name in died:
                    _record_failure(runs_dir, name, spec_of.get(name, {}),
                                    "the worker process running it died (killed, or out of "
                                    "memory)", "")  # fmt: skip
                    status[name] = "failed"
                    bar.update(1)
                    ran.append(name)
                shutil.rmtree(runs_dir / RUNNING, ignore_errors=True)
                again = [n for n in spec_of if status[n] == "queued"]
                submitted.clear()
                if not again:
                    break
                if crashes > 3 or not died:
                    raise RuntimeError(
                        "the study's worker processes stopped"
                        + (" before running anything: a script that runs a study on local "
                           "workers needs its code under `if __name__ == '__main__':`"
                           if not died else f" {crashes} times; see the failed runs' error.json")
                    )  # fmt: skip
                holder[0].shutdown(wait=False)
                holder[0] = _pool(holder[0]._max_workers)
                submit(again)
            # each second on a terminal; in a log file, every 30 s (and at each finished run)
            if done or tty or time.monotonic() - shown > 30:
                bar.set_postfix_str(_progress_line(status, runs_dir), refresh=False)
                bar.refresh()
                shown = time.monotonic()
    finally:
        bar.close()


def _progress_line(status: dict[str, str], runs_dir: Path) -> str:
    counts = {k: sum(v == k for v in status.values()) for k in ("done", "failed")}
    running = []
    for m in (runs_dir / RUNNING).glob("*.json"):
        try:
            running.append((json.loads(m.read_text())["started"], m.stem))
        except (OSError, ValueError, KeyError):
            continue
    line = f"done {counts['done']}, failed {counts['failed']}, running {len(running)}"
    if running:
        started, name = min(running)
        line += f"; slowest {name} ({time.time() - started:.0f} s)"
    return line


# ---- gathering ------------------------------------------------------------------------------


def _coord(values: list) -> np.ndarray:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float if any(isinstance(v, float) for v in values)
                          else np.int64)  # fmt: skip
    return np.asarray([_label(v) for v in values], dtype=object).astype(str)


def gather(study: Study, out: str | os.PathLike):
    """The study's DataTree from its run folders: the figures (root) and the final draws
    (``samples``); runs not done are NaN, and ``status`` says which."""
    import torch
    import xarray as xr

    out = Path(out)
    points = study.points()
    dims = study.dims
    axes = {k: list(v) for k, v in study.grid.items()}
    if study.configs:
        axes["config"] = [c["name"] for c in study.configs]
    axes["seed"] = list(study.seeds)
    targets = None
    shape = [len(v) for v in axes.values()]
    run_vars = {k: np.full(shape, np.nan) for k in RUN_VARS}
    status = np.full(shape, "missing", dtype=object)
    per_target: dict[str, np.ndarray] = {}
    finals = None
    judge = None
    vendi_max = None
    index = {k: {_label(v): i for i, v in enumerate(vs)} for k, vs in axes.items()}
    for p in points:
        at = tuple(index[k][_label(p.coords[k])] for k in axes)
        folder = out / RUNS / p.name
        state = _state(folder)
        status[at] = state if state != "none" else "missing"
        if state != "done":
            continue
        m = json.loads((folder / METRICS).read_text())
        judge, vendi_max = m.get("judge") or judge, m.get("vendi_max", vendi_max)
        if targets is None:
            targets = list(m["targets"])
            per_target = {k: np.full([*shape, len(targets)], np.nan) for k in TARGET_VARS}
        for k, v in m["run"].items():
            if k in run_vars and v is not None:
                run_vars[k][at] = float(v)
        for j, c in enumerate(targets):
            for k, v in m["targets"].get(c, {}).items():
                if k in per_target and v is not None:
                    per_target[k][(*at, j)] = float(v)
        dt = xr.open_datatree(folder / "run.nc", engine="h5netcdf")
        image = torch.from_numpy(dt["posterior"]["image"].isel(draw=-1).values)
        groups = dt["posterior"]["chain_group"].values
        image = image.clamp(0, 1).numpy().astype(np.float32)
        if finals is None:
            per = int((groups == groups[0]).sum())
            finals = np.full([*shape, len(targets), per, *image.shape[1:]], np.nan, np.float32)
        for j, c in enumerate(targets):
            finals[(*at, j)] = image[groups == int(c)]
        dt.close()
    coords = {k: _coord(v) for k, v in axes.items()}
    run_dims = list(axes)
    data = {k: (run_dims, v) for k, v in run_vars.items()}
    data["status"] = (run_dims, status.astype(str))
    attrs = {
        "study": json.dumps(study.to_dict(), default=list),
        "judge": judge or "",
        "realism": "judge_prob" if judge else "model_prob",
        "diversity": "vendi",
        "vendi_max": vendi_max if vendi_max is not None else -1,
        "dims": json.dumps(dims),
    }
    root = xr.Dataset(data, coords=coords, attrs=attrs)
    nodes = {"/": root}
    if targets is not None:
        tcoord = np.asarray([int(t) for t in targets])
        for k, v in per_target.items():
            root[k] = xr.DataArray(v, dims=[*run_dims, "target"],
                                   coords={**coords, "target": tcoord})  # fmt: skip
        sample_dims = [*run_dims, "target", "sample", "channel", "row", "col"]
        nodes["samples"] = xr.Dataset(
            {"final": (sample_dims, finals)}, coords={**coords, "target": tcoord}
        )
        nodes["/"] = root
    for k in ("seconds",):
        root[k].attrs["note"] = "wall time: the one figure that is not reproducible"
    return xr.DataTree.from_dict(nodes)


def same_numbers(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """The variables of two studies' ``study.nc`` that differ (``[]``: the same numbers, bit
    for bit, wall time aside): how executors and restarts are compared."""
    import xarray as xr

    differ = []
    with xr.open_datatree(Path(a) / "study.nc") as ta, xr.open_datatree(Path(b) / "study.nc") as tb:
        for node in ta.subtree:
            other, where = tb[node.path].dataset, node.path.rstrip("/")
            for k, v in node.dataset.data_vars.items():
                if k == "seconds":
                    continue
                if k not in other:
                    differ.append(f"{where}/{k}")
                    continue
                w = other[k].values
                equal = (np.array_equal(v.values, w, equal_nan=True) if v.dtype.kind == "f"
                         else np.array_equal(v.values, w))  # fmt: skip
                if not equal:
                    differ.append(f"{where}/{k}")
            differ += [f"{where}/{k}" for k in other.data_vars if k not in node.dataset]
    return differ


def write_outputs(study: Study, out: str | os.PathLike):
    """``study.nc``, the plots and ``report.md``; returns the DataTree. (The figures are made
    with pyplot's current backend, as a notebook shows them, and closed once saved.)"""
    import matplotlib.pyplot as plt

    from .runs import write_netcdf

    out = Path(out)
    tree = gather(study, out)
    write_netcdf(tree, out / "study.nc")
    ds = tree.to_dataset()
    if "judge_prob" in ds or "model_prob" in ds:
        figures = [("tradeoff.png", plot_tradeoff(ds)), ("ess_per_grad.png", plot_ess_per_grad(ds))]
        if "samples" in tree.children:
            figures += [(f"samples{suffix}.png", fig) for suffix, fig in plot_samples(tree)]
        for name, fig in figures:
            if fig is not None:
                atomic_write(out / name, lambda p, fig=fig: fig.savefig(p, format="png", dpi=110))
                plt.close(fig)
    atomic_write(out / "report.md", report(ds))
    return tree


# ---- tables, fronts and plots ---------------------------------------------------------------


def grid_dims(ds) -> list[str]:
    return json.loads(ds.attrs["dims"])


def configurations(ds):
    """One row per configuration (grid point), the figures averaged over targets and seeds:
    a pandas DataFrame with the grid keys as columns, and ``pareto`` marked."""
    import pandas as pd

    dims = grid_dims(ds)
    realism, diversity = ds.attrs["realism"], ds.attrs["diversity"]
    rows = []
    for combo in itertools.product(*[ds[d].values for d in dims]):
        sel = ds.sel(dict(zip(dims, combo, strict=True)))
        row = {d: (v.item() if hasattr(v, "item") else v) for d, v in zip(dims, combo, strict=True)}
        done = sel["status"].values == "done"
        row["runs"] = int(done.sum())
        row["failed"] = int((sel["status"].values == "failed").sum())
        for k in TARGET_VARS:
            if k in sel:
                row[k] = _nanmean(sel[k].values)
        if "ess_bulk_min_per_grad" in sel:  # the worst target of each seed, then the mean
            row["ess_bulk_min_per_grad"] = _nanmean(np.nanmin(sel["ess_bulk_min_per_grad"]
                                                              .values, axis=-1))  # fmt: skip
            row["rhat_max"] = _nanmax(sel["rhat_max"].values)
        for k in RUN_VARS:
            row[k] = _nanmean(sel[k].values)
        seeds = sel[realism].mean("target").values if realism in sel else np.array([np.nan])
        row[f"{realism}_se"] = _se(seeds)
        row[f"{diversity}_se"] = _se(sel[diversity].mean("target").values)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["pareto"] = pareto_front(df[realism].to_numpy(), df[diversity].to_numpy())
    return df


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def _nanmax(a) -> float:
    a = np.asarray(a, dtype=float)
    return float(np.nanmax(a)) if np.isfinite(a).any() else math.nan


def _se(a) -> float:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) >= 2 else math.nan


def pareto_front(realism: Sequence[float], diversity: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points that no other point beats on both (higher is better on
    both; NaN points are never on the front)."""
    r, d = np.asarray(realism, float), np.asarray(diversity, float)
    ok = np.isfinite(r) & np.isfinite(d)
    front = np.zeros(len(r), bool)
    for i in np.flatnonzero(ok):
        beaten = ok & (r >= r[i]) & (d >= d[i]) & ((r > r[i]) | (d > d[i]))
        front[i] = not beaten.any()
    return front


def _roles(dims: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(curve key, along key, panel keys): one curve per prior as T varies, if there are
    both; otherwise the first and second keys."""
    curve = "prior" if "prior" in dims else ("config" if "config" in dims else None)
    along = "temperature" if "temperature" in dims else None
    rest = [d for d in dims if d not in (curve, along)]
    if curve is None and rest:
        curve = rest.pop(0)
    if along is None and rest:
        along = rest.pop(0)
    return curve, along, rest


def _title(keys: list[str], combo) -> str:
    return ", ".join(f"{k}={_label(v)}" for k, v in zip(keys, combo, strict=True))


def plot_tradeoff(ds):
    """Realism against diversity, one curve per prior as the temperature varies (one panel
    per value of the other grid keys), with seed standard errors; the Pareto-optimal
    configurations (over all panels) ringed."""
    import matplotlib.pyplot as plt

    df = configurations(ds)
    realism, diversity = ds.attrs["realism"], ds.attrs["diversity"]
    curve, along, rest = _roles(grid_dims(ds))
    panels = list(itertools.product(*[ds[k].values for k in rest])) or [()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, combo in zip(axes[0], panels, strict=True):
        sub = df
        for k, v in zip(rest, combo, strict=True):
            sub = sub[sub[k] == v]
        for label, g in sub.groupby(curve, sort=False) if curve else [("all", sub)]:
            g = g.sort_values(along) if along else g
            ax.errorbar(g[diversity], g[realism], xerr=g[f"{diversity}_se"],
                        yerr=g[f"{realism}_se"], marker="o", ms=4, capsize=2,
                        label=_label(label))  # fmt: skip
            if along:
                for _, row in g.iterrows():
                    ax.annotate(f"{_label(row[along])}", (row[diversity], row[realism]),
                                textcoords="offset points", xytext=(4, 3), fontsize=7)  # fmt: skip
        front = sub[sub["pareto"]]
        ax.scatter(front[diversity], front[realism], s=150, facecolors="none",
                   edgecolors="k", linewidths=1.4, label="Pareto-optimal", zorder=5)  # fmt: skip
        vmax = ds.attrs.get("vendi_max", -1)
        xl = f"diversity: Vendi of centred judge features (max {vmax})" if vmax > 0 else diversity
        ax.set_xlabel(xl)
        who = ds.attrs.get("judge") or "the sampling model"
        ax.set_ylabel(f"realism: {who}'s p(target)")
        ax.set_title(_title(rest, combo) + (f"  (labels: {along})" if along else ""), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_ess_per_grad(ds):
    """Min bulk ESS per gradient evaluation of each configuration (the worst target of each
    seed, then the mean and range over seeds), log scale. None if no run has one."""
    import matplotlib.pyplot as plt

    df = configurations(ds)
    dims = grid_dims(ds)
    vals = df["ess_bulk_min_per_grad"].to_numpy()
    if not np.isfinite(vals).any():
        return None
    labels = [_title(dims, [row[d] for d in dims]) for _, row in df.iterrows()]
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(df) + 1.2))
    y = np.arange(len(df))
    ax.barh(y, np.where(np.isfinite(vals), vals, 0) * 1e3, color="C0")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("min bulk ESS per gradient evaluation x 10^3 (mean over seeds)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_samples(tree) -> list[tuple[str, Any]]:
    """Final draws, prior (rows) x temperature (columns), seed 0, one figure per value of the
    other grid keys; each cell shows up to 4 chains of every target. [(suffix, figure)]."""
    import matplotlib.pyplot as plt

    from .diagnostics.plots import image_grid

    final = tree["samples"]["final"]
    ds = tree.to_dataset()
    curve, along, rest = _roles(grid_dims(ds))
    final = final.isel(seed=0)
    out = []
    for combo in itertools.product(*[final[k].values for k in rest]) or [()]:
        sel = final.sel(dict(zip(rest, combo, strict=True))) if rest else final
        rows = list(sel[curve].values) if curve else [None]
        cols = list(sel[along].values) if along else [None]
        size = (1.9 * len(cols) + 0.6, 1.9 * len(rows) + 0.4)
        fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, figsize=size)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                cell = sel
                if curve:
                    cell = cell.sel({curve: r})
                if along:
                    cell = cell.sel({along: c})
                a = cell.isel(sample=slice(0, 4)).values  # (target, sample, C, H, W)
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if np.isfinite(a).all():
                    grid = image_grid(a.transpose(1, 0, 2, 3, 4))
                    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None)
                else:
                    ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
                if i == 0 and along:
                    ax.set_title(f"{along}={_label(c)}", fontsize=8)
                if j == 0 and curve:
                    ax.set_ylabel(_label(r), fontsize=8)
        fig.suptitle("final draws, seed 0" + (f": {_title(rest, combo)}" if rest else ""),
                     fontsize=9)  # fmt: skip
        fig.tight_layout()
        suffix = ("_" + _folder_name(dict(zip(rest, combo, strict=True)))) if rest else ""
        out.append((suffix, fig))
    return out


def report(ds) -> str:
    """The study's table (one row per configuration) and the Pareto-optimal ones, Markdown."""
    df = configurations(ds)
    dims = grid_dims(ds)
    realism, diversity = ds.attrs["realism"], ds.attrs["diversity"]
    status = ds["status"].values
    n, done, failed = status.size, int((status == "done").sum()), int((status == "failed").sum())
    study = json.loads(ds.attrs["study"])
    judge = ds.attrs.get("judge") or ""
    lines = [f"# Study {study['name']}", "",
             f"{n} runs: {done} done, {failed} failed, {n - done - failed} not run. Realism: "
             + (f"the judge's ({judge}) probability of the target, never part of the energy"
                if judge else "the sampling model's own probability of the target (no judge)")
             + f"; diversity: Vendi of the centred {'judge' if judge else 'model'} features "
             f"within a target (1 to {ds.attrs['vendi_max']}). Means over targets and seeds "
             "(± standard error over seeds); R-hat is the worst, ESS per gradient the worst "
             "target's.", ""]  # fmt: skip
    cols = [
        *dims,
        realism,
        "judge_top1",
        diversity,
        "frechet",
        "pairwise_pixel",
        "rhat_max",
        "ess_bulk_min_per_grad",
        "acceptance",
        "divergences",
        "seconds",
    ]
    cols = [c for c in cols if c in df and (c in dims or np.isfinite(df[c]).any())]
    head = {realism: f"{realism} ±se", diversity: f"{diversity} ±se",
            "ess_bulk_min_per_grad": "ESS/grad x10^3", "pairwise_pixel": "pairwise px",
            "judge_top1": "top-1", "rhat_max": "max R-hat"}  # fmt: skip
    lines.append("| " + " | ".join(head.get(c, c) for c in cols) + " | Pareto |")
    lines.append("|" + "---|" * (len(cols) + 1))
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c in dims:
                cells.append(_label(v))
            elif c in (realism, diversity):
                se = row[f"{c}_se"]
                cells.append(f"{v:.3f}" + (f" ± {se:.3f}" if np.isfinite(se) else ""))
            elif c == "ess_bulk_min_per_grad":
                cells.append(f"{v * 1e3:.2f}" if np.isfinite(v) else "")
            elif c in ("divergences", "seconds"):
                cells.append(f"{v:.0f}" if np.isfinite(v) else "")
            else:
                cells.append(f"{v:.3g}" if np.isfinite(v) else "")
        lines.append("| " + " | ".join(cells) + " | " + ("**yes**" if row["pareto"] else "")
                     + " |")  # fmt: skip
    lines += ["", f"## Pareto-optimal configurations ({realism} against {diversity})", ""]
    for _, row in df[df["pareto"]].sort_values(realism, ascending=False).iterrows():
        lines.append(f"- {_title(dims, [row[d] for d in dims])}: {realism} {row[realism]:.3f}, "
                     f"{diversity} {row[diversity]:.2f}")  # fmt: skip
    if not df["pareto"].any():
        lines.append("- none: no configuration has both figures")
    return "\n".join(lines) + "\n"
