"""A run as a value: the spec of a sampling job, ``build(spec)``, and the run folder.

``RunSpec`` is a small frozen description of a job (JSON/TOML-friendly, hashable); ``build``
turns it into the energy, the start and the sampler's arguments in the process that runs it
(a study worker builds its energies there: nothing stateful is pickled); ``execute`` runs it
into a run folder and ``resume_folder`` continues a killed one. The folder::

    record.zarr     the crash-safe record (readable at every moment; holds the spec and the
                    checkpoint that --resume continues from)
    run.json        the run card: spec and its hash, configuration, model and weights hash,
                    versions, and once done the diagnostics verdict and metrics; written when
                    the run starts, when sampling stops (``"interrupted": true`` and the step
                    if it was stopped) and at the end
    run.nc          the ArviZ DataTree with projections and features (``diagnose`` reads it)
    samples.png, final.png, summary.csv and the diagnostic plots

Every file is written to a temporary name and renamed into place, so none is ever half there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MNIST_MODELS",
    "Built",
    "RunFolderError",
    "RunResult",
    "RunSpec",
    "atomic_write",
    "build",
    "execute",
    "prepare_out",
    "resume_folder",
    "spec_from_record",
    "write_card",
    "write_descent_outputs",
]

MNIST_MODELS = ("mnist", "mnist-judge", "mnist-robust")
RECORD = "record.zarr"


class RunFolderError(ValueError):
    """An output folder that cannot take this run (one line, for the command's exit 2)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a sampling job; the same spec gives the same run, bit for bit.

    ``targets`` empty means every class of a model with at most 10; ``priors`` empty means the
    model's default (``fitted`` for MNIST, none for the picture recipe, ``stationary``
    otherwise); ``schedule`` None means dual averaging for MALA (constant with
    ``three_epsilons``, or for a method without an accept step); ``thin`` None keeps about 40
    draws; ``threads`` None leaves PyTorch's default (every core), and a job that runs beside
    others should set 1.

    ``method`` None is the model's default: MALA for the MNIST models, and for RGB models the
    picture recipe, descent (T = 0) on the likelihood of a randomly jittered, scaled and rotated
    image (``jitter`` px, default ``size // 16``), preconditioned by colour x 1/f
    (``ColorFourier``), each chain's step normalized by its gradient's mean magnitude
    (``step_size`` then the mean change of a pixel's logit per step, default 0.05), pixels kept
    in [0, 1] and a grey start. MALA on an ImageNet classifier at T > 0 stays where it starts
    (its adversarial directions make the step adapt to nothing); ``diagnose`` says so.
    ``step_size`` None is 1e-3, the start of dual averaging, or 0.05 for the picture recipe.
    """

    job: str = "sample"
    model: str = "mnist"
    targets: tuple[int | str, ...] = ()
    priors: tuple[str, ...] = ()
    likelihood_weight: float = 100.0
    three_epsilons: tuple[float, float, float] | None = None
    method: str | None = None  # None: mala for MNIST models, descent for RGB (filled in)
    schedule: str | None = None
    step_size: float | None = None  # None: 1e-3, or 0.05 for the picture recipe (filled in)
    temperature: float = 0.1
    target_accept: float = 0.574
    precondition: str = "auto"
    chains: int = 4
    steps: int = 200
    warmup: int = 300
    thin: int | None = None
    seed: int = 0
    size: int = 64
    device: str = "cpu"
    tf32: bool = False
    threads: int | None = None
    checkpoint_every: int = 100
    weights: str | None = None  # a weights file instead of the model's default one
    jitter: int | None = None  # px; None: size // 16 for the picture recipe, else 0

    def __post_init__(self):
        for name in ("targets", "priors", "three_epsilons"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        # The model's defaults are filled in here, so that a spec and its record agree and a
        # default spec keeps the hash it had when the defaults were fixed values. An unknown
        # model keeps None: it is refused by name when the run is built.
        from .models.zoo import MODEL_NAMES

        known = self.model in MODEL_NAMES or str(self.model).startswith("torchvision:")
        defaulted = self.method is None
        if defaulted and known:
            object.__setattr__(self, "method", "mala" if self.model in MNIST_MODELS else "descent")
        default_step = 0.05 if self.picture_recipe else 1e-3
        if self.three_epsilons is not None:
            unset = {  # values that mean "not given"; the filled-in default step is one
                "step_size": (None, default_step),
                "temperature": (defaults["temperature"],),
                "likelihood_weight": (defaults["likelihood_weight"],),
            }
            clash = [k for k, values in unset.items() if getattr(self, k) not in values]
            if clash:
                raise ValueError(
                    f"three_epsilons set the step size, temperature and likelihood weight; "
                    f"do not give {', '.join(clash)} too"
                )
        if self.step_size is None and known:
            object.__setattr__(self, "step_size", default_step)
        if self.method == "descent" and self.temperature not in (0, defaults["temperature"]):
            why = (f"{self.model} is an RGB model: its default is the picture recipe, descent, "
                   "which runs" if defaulted else "method descent runs")  # fmt: skip
            raise ValueError(
                f"{why} at temperature 0; temperature {self.temperature:g} would be ignored: "
                "drop it, or give method mala or ula to sample"
            )
        if self.jitter and self.resolved_method == "mala":
            raise ValueError(
                f"jitter {self.jitter}: a random transform per step makes the energy random, and "
                "MALA's accept step needs a fixed one: give jitter 0, or method ula or descent"
            )
        from .samplers.driver import SEED_LIMIT

        if not (isinstance(self.seed, int) and 0 <= self.seed < SEED_LIMIT):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    @property
    def resolved_method(self) -> str:
        """``method``, or the model's default: mala for MNIST models, descent for RGB ones."""
        return self.method or ("mala" if self.model in MNIST_MODELS else "descent")

    @property
    def picture_recipe(self) -> bool:
        """Descent on an RGB model: jitter, colour x 1/f, normalized steps, a grey start."""
        return self.model not in MNIST_MODELS and self.resolved_method == "descent"

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for key in ("weights", "jitter"):  # absent when unset: older specs keep their hash
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """From ``to_dict()`` or a TOML table; unknown keys are refused (one line)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown run spec key(s) {unknown}; expected some of {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunSpec:
        """From a ``.json`` file (``to_json()``) or a ``.toml`` file (a table of the fields)."""
        path = Path(path)
        if path.suffix == ".toml":
            import tomllib

            return cls.from_dict(tomllib.loads(path.read_text()))
        return cls.from_dict(json.loads(path.read_text()))

    @property
    def hash(self) -> str:
        from .samplers.driver import spec_hash

        return spec_hash(self.to_dict())

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)


@dataclass
class Built:
    """What ``build`` makes of a spec: the model, the energy and everything ``sample`` takes."""

    spec: RunSpec
    model: Any
    energy: Any
    x0: torch.Tensor
    sampler: dict[str, Any]
    targets: list[int]
    target_per_chain: torch.Tensor
    prior: Any
    parameters: dict[str, Any]
    shape: tuple[int, ...]


def _targets(spec: RunSpec, model) -> list[int]:
    from .energies import class_index

    names = getattr(model, "class_names", None)
    n = len(names) if names else None
    wanted = list(spec.targets) or (["all"] if n is not None and n <= 10 else [])
    if not wanted:
        raise ValueError("--target is required for this model (a class index or name)")
    out = []
    for t in wanted:
        if t == "all":
            if n is None or n > 10:
                raise ValueError("--target all works for models with at most 10 classes")
            out.extend(range(n))
            continue
        if isinstance(t, str) and t.lstrip("-").isdigit():
            t = int(t)
        out.append(class_index(t, names, n))
    return out


def _parameters(spec: RunSpec) -> tuple[float, float, float, float, dict | None]:
    """(step_size, temperature, prior weight factor, likelihood weight, three-epsilon card)."""
    from .samplers import from_three_epsilons

    if spec.three_epsilons is not None:
        eps = tuple(float(e) for e in spec.three_epsilons)
        p = from_three_epsilons(*eps)
        card = {
            "three_epsilons": list(eps),
            "epsilon": p.step_size,
            "temperature": p.temperature,
            "lambda_prior": p.prior_weight,
            "lambda_lik": p.likelihood_weight,
            "means": p.describe(),
        }
        return p.step_size, p.temperature, p.prior_weight, p.likelihood_weight, card
    return spec.step_size, spec.temperature, 1.0, spec.likelihood_weight, None


def resolve_device(name: str, *, tf32: bool = False) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one. On a GPU, TensorFloat-32 is off unless
    ``tf32``: PyTorch's default computes convolutions in TF32 on Ampere and later GPUs, and
    lite0's gradient then differs from the float64 one by 5 % of its largest entry (2.6e-6
    without TF32; H100, scripts/gpu_check.sh)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def check_input_side(
    model, side: int, *, what: str, name: str = "the model", layers: Sequence[str] = ()
) -> dict[str, tuple[int, ...]]:
    """Refuse (ValueError, one line) an input side the model's layers cannot take, or with
    ``layers``, on which those layers do not all run before the pass fails; sides over 256 px
    are probed at 256 (kernels only outgrow small inputs). The output shape of every module
    that ran."""
    from .models.probe import probe, smallest_side

    p = probe(model, min(side, 256))
    if p.ok or (layers and all(layer in p.shapes for layer in layers)):
        return p.shapes
    smallest = smallest_side(model, layers=layers or None)
    fixed = getattr(model, "input_size", None)
    if smallest is None and fixed:
        raise ValueError(f"{what}: {name} takes only {fixed[0]}x{fixed[1]} px images")
    needs = f"layer(s) {', '.join(layers)} of {name}: they need" if layers else (
        f"{name}: its layers need")  # fmt: skip
    raise ValueError(f"{what} is too small for {needs} at least {smallest} px a side")


def check_memory(
    model, size: tuple[int, int], chains: int, device, *, draws: int = 0, steps: int = 0,
    what: str = "the run",
) -> None:  # fmt: skip
    """Refuse (ValueError, one line) a job whose memory need is larger than what is free: a
    step's activations and sampler state on ``device``, and at the end the draws and per-step
    statistics held for export and diagnostics (in float64) on the host."""
    from .models.probe import activation_bytes, available_bytes, human_bytes

    channels = getattr(model, "input_channels", 3)
    pixels = channels * size[0] * size[1]
    step_need = activation_bytes(model, size, chains) + 12 * chains * pixels * 4
    end_need = 3 * draws * chains * pixels * 8 + 2 * steps * chains * 8 * 8
    device = torch.device(device)
    needs = [(step_need, device)]
    if device.type == "cpu":
        needs = [(max(step_need, end_need), device)]
    else:
        needs.append((end_need, torch.device("cpu")))
    for need, where in needs:
        free = available_bytes(where)
        if free is not None and need > free:
            raise ValueError(
                f"{what} of {size[0]}x{size[1]} px, {steps} steps and {draws} kept draws need "
                f"about {human_bytes(need)} of memory on {where.type}, and "
                f"{human_bytes(free)} is free: lower --size, --chains or --steps, or raise --thin"
            )


def check_disk(built: Built, out: str | os.PathLike) -> None:
    """Refuse (ValueError, one line) a run whose record and run.nc would not fit on the disk
    that ``out`` is on (their uncompressed size: an upper bound)."""
    from .models.probe import human_bytes

    s = built.sampler
    chains, pixels = len(built.target_per_chain), math.prod(built.shape)
    need = 2 * ((s["steps"] // s["thin"]) * chains * pixels * 4
                + (s["warmup"] + s["steps"]) * chains * 8 * 8)  # fmt: skip
    where = Path(out).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise ValueError(
            f"--out {out}: the run's record and run.nc need up to {human_bytes(need)} on disk "
            f"and {human_bytes(free)} is free there: lower --steps or raise --thin"
        )


@functools.cache
def _mnist_train() -> torch.Tensor:
    """The MNIST training images, loaded once per process (read only: the fitted prior is
    fitted to them, and cached on this tensor)."""
    from .datasets import load_mnist

    return load_mnist("train")[0]


def build(spec: RunSpec) -> Built:
    """The energy, start and sampler arguments of ``spec``, made in this process.

    Raises ValueError with one line on a spec that cannot run (unknown model, class or prior,
    a prior that needs data the model has none of, conflicting options).
    """
    from .energies import ClassLikelihood, build_prior, parse_prior
    from .models import load_model

    if spec.threads is not None:
        torch.set_num_threads(int(spec.threads))
    device = resolve_device(spec.device, tf32=spec.tf32)
    try:
        model = load_model(spec.model, weights=spec.weights).to(device)
    except FileNotFoundError as err:
        raise ValueError(str(err).splitlines()[0]) from None
    targets = _targets(spec, model)
    step_size, temperature, prior_factor, lik_weight, eps_card = _parameters(spec)
    method, picture = spec.resolved_method, spec.picture_recipe
    if method == "descent":
        temperature = 0.0
    elif not temperature > 0:
        raise ValueError(f"--temperature must be > 0 for --method {method}")
    channels = getattr(model, "input_channels", 3)
    size = 28 if spec.model in MNIST_MODELS else spec.size
    shape = (channels, size, size)
    thin = spec.thin or max(1, spec.steps // 40)
    if spec.thin is not None and spec.thin > spec.steps:
        raise ValueError(
            f"--thin {spec.thin} keeps no draw of --steps {spec.steps}: give --thin <= --steps"
        )
    if spec.schedule == "dual_averaging" and method in ("ula", "descent"):
        raise ValueError(
            f"--schedule dual_averaging adapts the step to an acceptance rate, which --method "
            f"{method} does not have: give --schedule constant, cosine, polynomial or "
            "exponential"
        )
    check_input_side(model, size, what=f"--size {size}", name=spec.model)
    check_memory(
        model, (size, size), len(targets) * spec.chains, device,
        draws=spec.steps // thin,
        steps=spec.warmup + spec.steps, what=f"{len(targets) * spec.chains} chains",
    )  # fmt: skip
    # the picture recipe's prior is its jitter and preconditioner: a Gaussian or TV prior at
    # weight 1 washes its pictures out (p(espresso) 0.99, 0.35, 0.02, 0.005 under stationary=1
    # against 1.0, 1.0, 0.97, 0.48 without, lite0 at 64 px)
    priors = list(spec.priors) or (
        ["fitted=1"] if spec.model in MNIST_MODELS else ["none"] if picture else ["stationary=1"]
    )
    parsed = [(n, w * prior_factor, params) for n, w, params in map(parse_prior, priors)]
    train = None
    if spec.model in MNIST_MODELS and any(n == "fitted" for n, _, _ in parsed):
        train = _mnist_train()
    prior = build_prior(parsed, shape, data=train)
    precond = prior.preconditioner
    rgb = channels == 3
    if spec.precondition == "none":
        precond = None
    elif spec.precondition == "fourier":
        from .linalg import Fourier

        precond = Fourier((size, size), decay=1.0)
    elif spec.precondition == "color-fourier" or (spec.precondition == "auto" and picture):
        if not rgb:
            raise ValueError("--precondition color-fourier is for RGB models")
        from .datasets import photo_color_covariance
        from .linalg import ColorFourier

        precond = ColorFourier((size, size), photo_color_covariance(), decay=1.0)
    elif spec.precondition != "auto":
        raise ValueError(
            f"--precondition must be auto, none, fourier or color-fourier, not "
            f"{spec.precondition!r}"
        )

    target_t = torch.tensor(targets).repeat_interleave(spec.chains)
    likelihood = ClassLikelihood(model, target_t)
    jitter = spec.jitter if spec.jitter is not None else (size // 16 if picture else 0)
    if jitter:  # the model sees a randomly moved image; the prior sees the image itself
        from .energies import RandomAffine, Transformed

        likelihood = Transformed(
            likelihood, RandomAffine(jitter=jitter, scale=(0.9, 1.1), degrees=5.0, seed=spec.seed)
        )
    energy = lik_weight * likelihood
    if prior.energy is not None:
        energy = energy + prior.energy
    g = torch.Generator().manual_seed(spec.seed)
    start = train.mean(0, keepdim=True) if train is not None else torch.full((1, *shape), 0.5)
    # MALA's chains start apart (R-hat needs overdispersed starts); a picture starts grey
    x0 = start + (0.02 if picture else 0.1) * torch.randn((len(target_t), *shape), generator=g)
    bounds = prior.bounds if prior.bounds is not None or not picture else (0.0, 1.0)
    if bounds is not None:
        x0 = x0.clamp(0.01, 0.99)
    schedule = spec.schedule or ("constant" if eps_card else "dual_averaging")
    if eps_card and schedule != "constant":
        eps_card["note"] = f"the {schedule} schedule changes the step size eps over the run"
    if method != "mala" and schedule == "dual_averaging" and spec.schedule is None:
        schedule = "constant"  # the default adapts to an acceptance rate, which only MALA has
    sampler = {
        "steps": spec.steps,
        "warmup": spec.warmup,
        "method": method,
        "step_size": step_size,
        "schedule": None if schedule == "constant" else schedule,
        "target_accept": spec.target_accept,
        "temperature": temperature if temperature > 0 else 1.0,
        "preconditioner": precond,
        "bounds": bounds,
        "thin": thin,
        "seed": spec.seed,
    }
    if picture:
        sampler["normalize_step"] = True
    parameters = eps_card or {
        "epsilon": step_size,
        "temperature": temperature,
        "lambda_prior": prior_factor,
        "lambda_lik": lik_weight,
    }
    x0 = x0.to(device)  # drawn on the CPU: the same start on every device
    return Built(spec, model, energy, x0, sampler, targets, target_t, prior, parameters, shape)


# ---- files --------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Path], Any] | str | bytes) -> None:
    """Write ``path`` through a temporary name in the same folder and rename it into place:
    a reader (or a kill) never sees half a file. ``write`` is the content, or a function that
    writes a given path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(write, str):
            tmp.write_text(write)
        elif isinstance(write, bytes):
            tmp.write_bytes(write)
        else:
            write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_netcdf(tree, path: Path) -> None:
    """``tree.to_netcdf`` through ``atomic_write``, refused first (ENOSPC) if the disk has less
    free space than the tree's size: HDF5 failing on a full disk mid-file can crash the
    interpreter as it exits (a segmentation fault), which no ``except`` can catch."""
    import errno

    need = int(sum(node.dataset.nbytes for node in tree.subtree) * 1.05) + (1 << 16)
    free = shutil.disk_usage(Path(path).parent).free
    if need > free:
        raise OSError(errno.ENOSPC, f"No space left on device for {need} bytes", str(path))
    atomic_write(path, lambda p: tree.to_netcdf(p))


def _json(obj) -> str:
    """JSON with NaN and infinities as null (strict parsers reject them)."""
    from .recording.disk import json_safe

    return json.dumps(json_safe(obj), indent=2)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("langevin_images", "torch", "torchvision", "numpy", "xarray", "zarr",
                "arviz-base", "arviz-stats", "arviz-plots"):  # fmt: skip
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def model_card(model) -> dict:
    return {
        "name": getattr(model, "name", type(model).__name__),
        "weights_sha256": getattr(model, "weights_sha256", ""),
        "description": getattr(model, "description", ""),
    }


def write_card(out: Path, card: dict) -> None:
    """``out/run.json``, with the versions, thread count and GPU (if one was used) added."""
    card.setdefault("versions", versions())
    card.setdefault("torch_threads", torch.get_num_threads())
    if torch.cuda.is_initialized():
        card.setdefault("gpu", {"name": torch.cuda.get_device_name(),
                                "tf32_convolutions": torch.backends.cudnn.allow_tf32})  # fmt: skip
    atomic_write(Path(out) / "run.json", _json(card))


def is_run_folder(path: Path) -> bool:
    return (path / "run.json").exists() or (path / RECORD).exists()


def prepare_out(out: str | os.PathLike, *, force: bool = False, resume: bool = False) -> Path:
    """The output folder of a new run (or of a resumed one), made if needed.

    A folder that holds a run is refused unless ``force`` (which clears it first, so no plot of
    an older run survives beside the new one) or ``resume``; a folder that holds anything else
    is refused always (nothing of a user's is deleted). Raises ``RunFolderError`` (one line).
    """
    if str(out) == "":
        raise RunFolderError("--out is empty: give a folder for the run")
    path = Path(out)
    if resume:
        if not (path / RECORD).exists():
            raise RunFolderError(f"--resume {out}: no run record ({RECORD}) there to continue")
        return path
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not is_run_folder(path):
            raise RunFolderError(
                f"--out {out}: not empty and not a run folder; give a new or empty folder"
            )
        if not force:
            raise RunFolderError(
                f"--out {out}: holds a run already; --force replaces it, --resume continues it"
            )
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(f"--out {out}: cannot write there ({err.strerror})") from None
    return path


def save_png(array, path: Path) -> None:
    from PIL import Image

    atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


# ---- diagnostics and metrics of a finished run ---------------------------------------------


def write_diagnostics(dt, out: Path, *, plots: bool = True) -> tuple:
    """Summary table, verdict and plots of a run's DataTree into ``out``: (verdict, worst
    pixels or None, the files written). ``plots=False`` writes the table alone (a study's
    runs: the plots are most of a small run's time, and the study draws its own)."""
    from . import diagnostics as D

    verdict = D.diagnose(dt)
    atomic_write(out / "summary.csv", verdict.table.to_csv(float_format="%.6g"))
    written = ["summary.csv"]
    if not plots:
        return verdict, None, written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .diagnostics import plots as P

    post = dt["posterior"]
    has_images = "image" in post
    if has_images and post.sizes["draw"] > 0:
        chains = list(range(min(8, post.sizes["chain"])))
        P.save_gif(P.chain_frames(dt, chains=chains, scale=3), out / "chain.gif")
        written.append("chain.gif")

    def savefig(fig, name):
        atomic_write(out / name, lambda p: fig.savefig(p, format="png"))
        written.append(name)

    if post.attrs.get("method") == "descent":  # an optimization: its energy is the picture
        savefig(P.plot_energy({"descent": dt}), "energy.png")
        plt.close("all")
        return verdict, None, written
    several = len(P.first_group_chains(dt)) >= 2  # rank plots and R-hat need two chains
    figures = [("trace.png", P.plot_trace), ("autocorr.png", P.plot_autocorr),
               ("ess_evolution.png", P.plot_ess_evolution)]  # fmt: skip
    if several:
        figures.insert(1, ("rank.png", P.plot_rank))
    for name, fn in figures:
        savefig(fn(dt), name)
    savefig(P.plot_sampler_stats(dt), "sampler_stats.png")
    worst = None
    if has_images and several:
        maps = D.pixel_maps(dt)
        worst = D.worst_pixels(maps)
        savefig(P.plot_pixel_map(maps), "pixel_rhat.png")
        savefig(P.plot_pixel_map(maps, var="ess_bulk", threshold=None), "pixel_ess.png")
    plt.close("all")
    return verdict, worst, written


def verdict_card(verdict, worst) -> dict:
    card = verdict.to_dict()
    card["verdict"] = str(verdict)
    if worst is not None:
        card["pixels"] = {k: {"value": v, "at": at} for k, (v, at) in worst.items()}
    return card


@functools.cache
def judge_reference(model_name: str, device: str = "cpu"):
    """(judge, its penultimate features of the MNIST test images, their labels) for an MNIST
    model, loaded once per process and device: the judge is mnist-judge (mnist when sampling
    mnist-judge), never the sampling energy. (None, None, None) for other models."""
    from . import diagnostics as D
    from .models import load_model

    if model_name not in MNIST_MODELS:
        return None, None, None
    from .datasets import load_mnist

    judge = load_model("mnist" if model_name == "mnist-judge" else "mnist-judge").to(device)
    test, labels = load_mnist("test")
    return judge, D.penultimate(judge)(test), labels


def metrics(built: Built, final: torch.Tensor) -> dict:
    """Realism (judge, Fréchet distance to real data, prior energy) and diversity figures of
    the final draws ``(chains, C, H, W)``."""
    from . import diagnostics as D
    from .diagnostics.metrics import _logits
    from .energies.base import model_parameter

    spec, model, target_t = built.spec, built.model, built.target_per_chain
    out: dict = {}
    judge, test_features, _ = judge_reference(spec.model, str(model_parameter(model).device))
    if judge is not None:
        out["judge"] = judge.name
        logits = _logits(judge, final)
        hit = (logits.argmax(1) == target_t).double()
        out["judge_top1"] = float(hit.mean())
        out["judge_top1_per_target"] = {
            str(c): float(hit[target_t == c].mean()) for c in built.targets
        }
        out["judge_prob"] = float(logits.softmax(1).gather(1, target_t[:, None])[:, 0].mean())
        feats = D.penultimate(judge)
        out["frechet_to_mnist_test"] = D.frechet_distance(feats(final), test_features)
    features = D.penultimate(judge if judge is not None else model)
    vendi, pairwise = [], []
    for c in built.targets:
        group = final[target_t == c]
        if len(group) >= 2:
            vendi.append(D.vendi_score(features(group), centre=True))
            pairwise.append(D.mean_pairwise_distance(group))
    if vendi:
        out["vendi_within_target"] = sum(vendi) / len(vendi)
        out["pairwise_pixel_within_target"] = sum(pairwise) / len(pairwise)
        out["vendi_max"] = spec.chains - 1  # centred: N samples span at most N - 1 directions
    with torch.no_grad():
        out["sampling_model_class_entropy"] = D.class_entropy(_logits(model, final))
        if built.prior.energy is not None:
            out["prior_energy_mean"] = float(built.prior.energy(final).mean())
    return out


def write_descent_outputs(out: Path, trees: dict, table: list[dict]) -> dict:
    """run.nc with one group per run, summary.csv, and the energy traces (energy.png);
    returns each run's diagnostics verdict for the run card."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import xarray as xr

    from .diagnostics.plots import plot_energy

    nodes = {f"{name}/{group}": dt[group].to_dataset() for name, dt in trees.items()
             for group in dt.children}  # fmt: skip
    write_netcdf(xr.DataTree.from_dict(nodes), out / "run.nc")
    atomic_write(out / "summary.csv", pd.DataFrame(table).to_csv(index=False, float_format="%.6g"))
    fig = plot_energy(trees)
    atomic_write(out / "energy.png", lambda p: fig.savefig(p, format="png"))
    plt.close("all")
    from .diagnostics import diagnose

    return {name: {"verdict": str(v), "ok": v.ok} for name, v in
            ((name, diagnose(dt)) for name, dt in trees.items())}  # fmt: skip


# ---- running a spec into a folder ----------------------------------------------------------


@dataclass
class RunResult:
    out: Path
    run: Any
    card: dict
    seconds: float
    interrupted: bool
    verdict: Any = None
    metrics: dict = field(default_factory=dict)


def _card(built: Built, argv: Sequence[str] | None) -> dict:
    spec = built.spec
    return {
        "job": spec.job,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "spec": spec.to_dict(),
        "spec_hash": spec.hash,
        "seed": spec.seed,
        "model": model_card(built.model),
        "targets": built.targets,
        "chains_per_target": spec.chains,
        "priors": built.prior.described,
        "likelihood_weight": built.parameters["lambda_lik"],
        "parameters": built.parameters,
        "record": RECORD,
        "status": "running",
    }


def execute(
    spec: RunSpec,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    force: bool = False,
    argv: Sequence[str] | None = None,
    say: Callable[[str], None] = lambda line: None,
    plots: bool = True,
) -> RunResult:
    """Run ``spec`` into the folder ``out`` (see the module's docstring for what it holds);
    ``plots=False`` leaves out the diagnostic plots and chain.gif."""
    from .recording import ZarrRecorder
    from .samplers import sample

    built = build(spec)
    check_disk(built, out)
    path = prepare_out(out, force=force)
    try:
        card = _card(built, argv)
        write_card(path, card)
        recorder = ZarrRecorder(path / RECORD, buffer_steps=spec.checkpoint_every)
        return _sample_into(
            built, path, card, say, resumed=False, plots=plots,
            call=lambda: sample(
                built.energy, built.x0, **built.sampler, progress=progress, record_to=recorder,
                spec=spec.to_dict(), chain_groups=built.target_per_chain.tolist(),
            ),
        )  # fmt: skip
    except BaseException:
        remove_if_nothing_recorded(path)
        raise


def remove_if_nothing_recorded(path: Path) -> None:
    """A run that failed before its first step leaves no folder behind (nothing of it is worth
    keeping, and an empty or half-made folder would block the next ``--out``)."""
    from .recording import is_record

    record = path / RECORD
    if is_record(record):
        try:
            done = json.loads((record / "zarr.json").read_text())["attributes"]
            if int(done.get("completed_steps", 0)) > 0:
                return
        except (OSError, ValueError, KeyError):
            return
    shutil.rmtree(path, ignore_errors=True)


def spec_from_record(path: str | os.PathLike) -> RunSpec:
    """The spec a run folder (or its record) was made from."""
    from .recording import ZarrRecorder

    path = Path(path)
    try:
        rec = ZarrRecorder.open(path / RECORD if (path / RECORD).exists() else path)
    except FileNotFoundError:
        raise RunFolderError(
            f"--resume {path}: no run record ({RECORD}) there to continue"
        ) from None
    stored = dict(rec.attrs.get("spec") or {})
    if not stored:
        raise RunFolderError(f"{path}: the record holds no run spec, so it cannot be resumed here")
    return RunSpec.from_dict(stored)


def resume_folder(
    out: str | os.PathLike,
    *,
    spec: RunSpec | None = None,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    say: Callable[[str], None] = lambda line: None,
    plots: bool = True,
) -> RunResult:
    """Continue the killed or interrupted run in the folder ``out`` to its last step, then
    write its outputs as ``execute`` does. ``spec``, if given, must be the folder's own."""
    from .samplers import resume as resume_run

    path = prepare_out(out, resume=True)
    for stray in path.glob(".*.tmp"):  # what atomic_write was writing when the run was killed
        stray.unlink(missing_ok=True)
    stored = spec_from_record(path)
    if spec is not None and spec.hash != stored.hash:
        raise RunFolderError(
            f"--resume {out}: the run's spec hash {stored.hash} differs from the one asked for "
            f"({spec.hash}); drop the options that differ, or start a new run"
        )
    built = build(stored)
    card = _card(built, argv)
    card["resumed"] = True
    write_card(path, card)
    return _sample_into(
        built, path, card, say, resumed=True, plots=plots,
        call=lambda: resume_run(
            path / RECORD, built.energy, preconditioner=built.sampler["preconditioner"],
            spec=stored.to_dict(), progress=progress,
        ),
    )  # fmt: skip


def _sample_into(
    built: Built, path: Path, card: dict, say, *, resumed: bool, call, plots: bool = True
) -> RunResult:
    """Run ``call()`` (a ``sample`` or a ``resume``), then write the folder's outputs. A run
    stopped by divergence keeps what it recorded; an interrupt is reported by the caller."""
    from .samplers import DivergenceError

    say(_announce(built, resumed=resumed))
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "sampling interrupted", RuntimeWarning)
            run = call()
    except DivergenceError as err:
        run = err.run
        first = str(err).splitlines()[0]
        print(f"{built.spec.job}: {first}; writing what was recorded", file=sys.stderr)
    except Exception as err:
        card.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
        try:
            write_card(path, card)
        except OSError:  # the disk that failed the record fails the card too
            pass
        raise
    return _finish(built, run, path, card, time.perf_counter() - t0, say, plots=plots)


def _announce(built: Built, *, resumed: bool) -> str:
    spec, s = built.spec, built.sampler
    what = "resuming" if resumed else f"{spec.model}, {len(built.targets)} target(s) x"
    head = f"{spec.job}: {what}" + ("" if resumed else f" {spec.chains} chains")
    return (
        f"{head}, {spec.resolved_method}, T = {built.parameters['temperature']:g}, "
        f"{s['warmup']} warmup + {s['steps']} steps on {built.x0.device}, "
        f"{torch.get_num_threads()} thread(s)"
    )


def _finish(
    built: Built, run, path: Path, card: dict, seconds: float, say, *, plots: bool = True
) -> RunResult:
    from . import diagnostics as D
    from .diagnostics.plots import draws_grid, image_grid

    card["config"] = run.config
    card["seconds_sampling"] = round(seconds, 1)
    total = run.config["warmup"] + run.config["steps"]
    if run.interrupted:
        step = run.config["interrupted_at_step"]
        card.update(status="interrupted", interrupted=True, interrupted_at_step=step,
                    steps_total=total)  # fmt: skip
        write_card(path, card)
        return RunResult(path, run, card, seconds, True)
    card.update(status="diagnosing", interrupted=False)
    write_card(path, card)
    say(f"{built.spec.job}: {seconds:.1f} s sampling; exporting, diagnosing and plotting")
    features = D.penultimate(built.model)
    dt = run.to_datatree(features=features)
    write_netcdf(dt, path / "run.nc")
    outputs = ["run.nc", RECORD]
    if run.recorder.completed_draws == 0:  # stopped (diverged) before its first kept draw
        card.update(status="done", outputs=[*outputs, "run.json"], note="no draws were kept")
        write_card(path, card)
        return RunResult(path, run, card, seconds, False)
    save_png(draws_grid(dt), path / "samples.png")
    final = run.samples[:, -1].clamp(0, 1)
    per = built.spec.chains
    by_target = final.reshape(len(built.targets), per, *built.shape).transpose(0, 1)
    save_png(image_grid(by_target.numpy()), path / "final.png")  # one column per target
    verdict, worst, written = write_diagnostics(dt, path, plots=plots)
    found = metrics(built, final)
    card.update(
        status="done",
        diagnostics=verdict_card(verdict, worst),
        metrics=found,
        outputs=[*outputs, "samples.png", "final.png", *written, "run.json"],
    )
    write_card(path, card)
    return RunResult(path, run, card, seconds, False, verdict, found)
