"""The ``langevin-images`` command. One subcommand per job; each writes into ``--out``.

Jobs: ``demo`` (the main job: class-conditional MNIST with its diagnostics), ``sample``,
``diagnose``, ``visualize`` (activation maximization) and ``dream`` (DeepDream).

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 1 on an internal
error (with the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

__all__ = ["main"]

PRIORS = ("none", "gaussian", "tv", "blur", "fitted", "stationary")
MNIST_MODELS = ("mnist", "mnist-judge")


class BadInput(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(f"{self.prog}: {message}")


# --- argument types: each raises BadInput with one line -----------------------------------


def _number(cast: type, *, positive: bool):
    """An argparse type: an int or a finite float, ``> 0`` or ``>= 0``."""
    what = "a whole number" if cast is int else "a number"
    bound = "> 0" if positive else ">= 0"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = f"{'positive' if positive else 'non-negative'} {cast.__name__}"
    return parse


_positive_int = _number(int, positive=True)
_nonneg_int = _number(int, positive=False)
_positive_float = _number(float, positive=True)
_nonneg_float = _number(float, positive=False)


def _prior(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    name = name.strip().lower()
    if name not in PRIORS:
        raise argparse.ArgumentTypeError(
            f"unknown prior {name!r}; expected one of {', '.join(PRIORS)}"
        )
    if not weight:
        return name, 1.0
    return name, _positive_float(weight)


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BadInput(f"--out {path}: cannot write there ({err.strerror})") from None
    return out


def _say(args, *lines: str) -> None:
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line, flush=True)


# --- shared pieces --------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("langevin_images", "torch", "torchvision", "numpy", "xarray", "arviz-base",
                "arviz-stats", "arviz-plots"):  # fmt: skip
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _model_card(model) -> dict:
    return {
        "name": getattr(model, "name", type(model).__name__),
        "weights_sha256": getattr(model, "weights_sha256", ""),
        "description": getattr(model, "description", ""),
    }


def _json(obj) -> str:
    """JSON with NaN and infinities as null (strict parsers reject them)."""

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=2, default=str)


def _write_card(out: Path, card: dict) -> None:
    import torch

    card.setdefault("versions", _versions())
    if torch.cuda.is_initialized():
        card.setdefault("gpu", {"name": torch.cuda.get_device_name(),
                                "tf32_convolutions": torch.backends.cudnn.allow_tf32})  # fmt: skip
    (out / "run.json").write_text(_json(card))


def _device(args):
    """The torch device of ``--device``: ``auto`` is the first CUDA GPU when there is one.

    On a GPU, TensorFloat-32 is switched off unless ``--tf32``: PyTorch's default computes
    convolutions in TF32 on Ampere and later GPUs, and lite0's gradient then differs from the
    float64 one by 5 % of its largest entry (2.6e-6 without TF32; H100, scripts/gpu_check.sh).
    """
    import torch

    name = getattr(args, "device", "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {name}: no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
        tf32 = bool(getattr(args, "tf32", False))
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    elif device.type != "cpu":
        raise BadInput(f"--device {name}: only cpu and cuda devices are supported")
    return device


def _load_model(name: str, device=None):
    from .models import load_model

    try:
        model = load_model(name)
    except (ValueError, FileNotFoundError) as err:
        raise BadInput(str(err).splitlines()[0]) from None
    return model if device is None else model.to(device)


def _save_png(array, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def _write_diagnostics(dt, out: Path, args) -> tuple:
    """Summary table, verdict and plots of a run's DataTree into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import diagnostics as D
    from .diagnostics import plots as P

    verdict = D.diagnose(dt)
    verdict.table.to_csv(out / "summary.csv", float_format="%.6g")
    written = ["summary.csv"]
    post = dt["posterior"]
    has_images = "image" in post
    if has_images:
        chains = list(range(min(8, post.sizes["chain"])))
        P.save_gif(P.chain_frames(dt, chains=chains, scale=3), out / "chain.gif")
        written.append("chain.gif")
    if post.attrs.get("method") == "descent":  # an optimization: its energy is the picture
        P.plot_energy({"descent": dt}).savefig(out / "energy.png")
        plt.close("all")
        return verdict, None, [*written, "energy.png"]
    several = len(P.first_group_chains(dt)) >= 2  # rank plots and R-hat need two chains
    plots = [("trace.png", P.plot_trace), ("autocorr.png", P.plot_autocorr),
             ("ess_evolution.png", P.plot_ess_evolution)]  # fmt: skip
    if several:
        plots.insert(1, ("rank.png", P.plot_rank))
    for name, fn in plots:
        fn(dt).savefig(out / name)
        written.append(name)
    P.plot_sampler_stats(dt).savefig(out / "sampler_stats.png")
    written.append("sampler_stats.png")
    worst = None
    if has_images and several:
        maps = D.pixel_maps(dt)
        worst = D.worst_pixels(maps)
        P.plot_pixel_map(maps).savefig(out / "pixel_rhat.png")
        P.plot_pixel_map(maps, var="ess_bulk", threshold=None).savefig(out / "pixel_ess.png")
        written += ["pixel_rhat.png", "pixel_ess.png"]
    plt.close("all")
    return verdict, worst, written


def _verdict_card(verdict, worst) -> dict:
    card = verdict.to_dict()
    card["verdict"] = str(verdict)
    if worst is not None:
        card["pixels"] = {k: {"value": v, "at": at} for k, (v, at) in worst.items()}
    return card


# --- sample and demo ------------------------------------------------------------------------


def _build_prior(priors: list[tuple[str, float]], shape, train):
    """The prior energy (or None), a preconditioner (or None), and bounds (or None)."""
    from .energies import (
        BlurPenalty,
        FittedGaussianPrior,
        GaussianPrior,
        StationaryGaussianPrior,
        TotalVariation,
    )

    energy, precond, gaussian = None, None, False
    for name, weight in priors:
        if name == "none":
            continue
        if name == "gaussian":
            term, gaussian = GaussianPrior(sigma=0.5, mean=0.5), True
        elif name == "tv":
            term = TotalVariation(0.05)
        elif name == "blur":
            term = BlurPenalty(1.0)
        elif name == "stationary":
            term = StationaryGaussianPrior(shape, alpha=2.0, sigma=0.15, mean=0.5)
            precond, gaussian = precond or term.preconditioner, True
        else:  # fitted
            if train is None:
                raise BadInput(
                    "prior 'fitted' needs training images: available for the MNIST models only"
                )
            term = FittedGaussianPrior.fit(train, shrinkage=1e-3)
            precond, gaussian = term.preconditioner, True
        if weight != 1.0:
            # M stays the unweighted prior's covariance: a constant factor on M is the same as
            # one on the step size, which dual averaging adapts
            term = weight * term
        energy = term if energy is None else energy + term
    bounds = None if gaussian else (0.0, 1.0)
    return energy, precond, bounds


def _targets(args, model) -> list[int]:
    from .energies import class_index

    names = getattr(model, "class_names", None)
    n = len(names) if names else None
    wanted = args.target or (["all"] if n is not None and n <= 10 else [])
    if not wanted:
        raise BadInput("--target is required for this model (a class index or name)")
    out = []
    for t in wanted:
        if t == "all":
            if n is None or n > 10:
                raise BadInput("--target all works for models with at most 10 classes")
            out.extend(range(n))
            continue
        try:
            out.append(class_index(int(t) if t.lstrip("-").isdigit() else t, names, n))
        except ValueError as err:
            raise BadInput(str(err)) from None
    return out


def _parameters(args):
    """(step_size, temperature, prior_weight_factor, likelihood_weight, card)."""
    from .samplers import from_three_epsilons

    eps = (args.eps1, args.eps2, args.eps3)
    if any(e is not None for e in eps):
        if any(e is None for e in eps):
            raise BadInput("give all three of --eps1, --eps2, --eps3, or none")
        try:
            p = from_three_epsilons(*eps)
        except ValueError as err:
            raise BadInput(str(err)) from None
        card = {
            "three_epsilons": list(eps),
            "epsilon": p.step_size,
            "temperature": p.temperature,
            "lambda_prior": p.prior_weight,
            "lambda_lik": p.likelihood_weight,
            "means": p.describe(),
        }
        return p.step_size, p.temperature, p.prior_weight, p.likelihood_weight, card
    return args.step_size, args.temperature, 1.0, args.likelihood_weight, None


def _sample_job(args, *, job: str = "sample") -> dict:
    import torch

    from . import diagnostics as D
    from .diagnostics.plots import draws_grid, image_grid
    from .energies import ClassLikelihood
    from .samplers import DivergenceError, sample

    out = _out_dir(args.out)
    device = _device(args)
    model = _load_model(args.model, device)
    targets = _targets(args, model)
    step_size, temperature, prior_factor, lik_weight, eps_card = _parameters(args)
    if args.method == "descent":
        temperature = 0.0
    elif temperature <= 0:
        raise BadInput(f"--temperature must be > 0 for --method {args.method}")
    channels = getattr(model, "input_channels", 3)
    size = 28 if args.model in MNIST_MODELS else args.size
    shape = (channels, size, size)
    train = None
    priors = args.prior or (
        [("fitted", 1.0)] if args.model in MNIST_MODELS else [("stationary", 1.0)]
    )
    if any(name == "fitted" for name, _ in priors) and args.model in MNIST_MODELS:
        from .datasets import load_mnist

        train, _ = load_mnist("train")
    priors = [(n, w * prior_factor) for n, w in priors]
    prior, precond, bounds = _build_prior(priors, shape, train)
    if args.precondition == "none":
        precond = None
    elif args.precondition == "fourier":
        from .samplers import Fourier

        precond = Fourier((size, size), decay=1.0)

    per = args.chains
    target_t = torch.tensor(targets).repeat_interleave(per)
    likelihood = ClassLikelihood(model, target_t)
    energy = lik_weight * likelihood + prior if prior is not None else lik_weight * likelihood
    g = torch.Generator().manual_seed(args.seed)
    start = train.mean(0, keepdim=True) if train is not None else torch.full((1, *shape), 0.5)
    x0 = start + 0.1 * torch.randn((len(target_t), *shape), generator=g)
    if bounds is not None:
        x0 = x0.clamp(0.01, 0.99)
    x0 = x0.to(device)  # drawn on the CPU: the same start on every device
    schedule = args.schedule or ("constant" if eps_card else "dual_averaging")
    if eps_card and schedule != "constant":
        eps_card["note"] = f"the {schedule} schedule changes the step size eps over the run"
    schedule = None if schedule == "constant" else schedule
    if args.method != "mala" and schedule == "dual_averaging":
        schedule = None  # adapts to an acceptance rate, which only MALA has
    thin = args.thin or max(1, args.steps // 40)
    _say(
        args,
        f"{job}: {args.model}, {len(targets)} target(s) x {per} chains, {args.method}, "
        f"T = {temperature:g}, {args.warmup} warmup + {args.steps} steps on {device}",
    )
    t0 = time.perf_counter()
    record_to = out / "chain.nc" if args.record_to_disk else None
    try:
        run = sample(
            energy,
            x0,
            steps=args.steps,
            warmup=args.warmup,
            method=args.method,
            step_size=step_size,
            schedule=schedule,
            temperature=temperature if temperature > 0 else 1.0,
            preconditioner=precond,
            bounds=bounds,
            thin=thin,
            seed=args.seed,
            progress=not args.quiet,
            record_to=record_to,
        )
    except DivergenceError as err:
        run = err.run
        print(f"{job}: {str(err).splitlines()[0]}; writing what was recorded", file=sys.stderr)
    seconds = time.perf_counter() - t0

    _say(args, f"{job}: {seconds:.1f} s sampling; exporting, diagnosing and plotting")
    features = D.penultimate(model)
    dt = run.to_datatree(features=features, chain_groups=target_t.numpy())
    dt.to_netcdf(out / "run.nc")
    _save_png(draws_grid(dt), out / "samples.png")
    final = run.samples[:, -1].clamp(0, 1)
    # the final draws, one column per target
    by_target = final.reshape(len(targets), per, *shape).transpose(0, 1)
    _save_png(image_grid(by_target.numpy()), out / "final.png")
    verdict, worst, written = _write_diagnostics(dt, out, args)

    metrics = _metrics(args, model, final, target_t, targets, per, prior)
    card = {
        "job": job,
        "argv": sys.argv[1:],
        "seed": args.seed,
        "model": _model_card(model),
        "targets": targets,
        "chains_per_target": per,
        "priors": [{"name": n, "weight": w} for n, w in priors],
        "likelihood_weight": lik_weight,
        "parameters": eps_card
        or {
            "epsilon": step_size,
            "temperature": temperature,
            "lambda_prior": prior_factor,
            "lambda_lik": lik_weight,
        },
        "config": run.config,
        "diagnostics": _verdict_card(verdict, worst),
        "metrics": metrics,
        "seconds_sampling": round(seconds, 1),
        "outputs": ["run.nc", "samples.png", "final.png", *written, "run.json"],
    }
    _write_card(out, card)
    return {"verdict": verdict, "metrics": metrics, "seconds": seconds, "out": out}


def _metrics(args, model, final, target_t, targets, per, prior) -> dict:
    """Realism (judge, Fréchet distance to real data, prior energy) and diversity figures."""
    import torch

    from . import diagnostics as D
    from .diagnostics.metrics import _logits
    from .energies.base import model_parameter

    out: dict = {}
    judge = None
    if args.model in MNIST_MODELS:
        judge_name = "mnist-judge" if args.model == "mnist" else "mnist"
        judge = _load_model(judge_name, model_parameter(model).device)  # beside the sampler's
        out["judge"] = judge.name
        logits = _logits(judge, final)
        hit = (logits.argmax(1) == target_t).double()
        out["judge_top1"] = float(hit.mean())
        out["judge_top1_per_target"] = {str(c): float(hit[target_t == c].mean()) for c in targets}
        out["judge_prob"] = float(logits.softmax(1).gather(1, target_t[:, None])[:, 0].mean())
        from .datasets import load_mnist

        test, _ = load_mnist("test")
        feats = D.penultimate(judge)
        out["frechet_to_mnist_test"] = D.frechet_distance(feats(final), feats(test))
    features = D.penultimate(judge if judge is not None else model)
    vendi, pairwise = [], []
    for c in targets:
        group = final[target_t == c]
        if len(group) >= 2:
            f = features(group)
            vendi.append(D.vendi_score(f))
            pairwise.append(D.mean_pairwise_distance(group))
    if vendi:
        out["vendi_within_target"] = sum(vendi) / len(vendi)
        out["pairwise_pixel_within_target"] = sum(pairwise) / len(pairwise)
        out["vendi_max"] = per
    with torch.no_grad():
        out["sampling_model_class_entropy"] = D.class_entropy(_logits(model, final))
        if prior is not None:
            out["prior_energy_mean"] = float(prior(final).mean())
    return out


def _demo(args: argparse.Namespace) -> None:
    """The main job on the embedded default: class-conditional MNIST digits of all ten classes
    with MALA under the data-fitted Gaussian prior, with its diagnostics."""
    args.model, args.target = "mnist", ["all"]
    args.prior = [("fitted", 1.0)]
    args.method, args.schedule, args.precondition = "mala", "dual_averaging", "auto"
    args.eps1 = args.eps2 = args.eps3 = None
    args.size, args.thin, args.record_to_disk = 28, None, False
    t0 = time.perf_counter()
    result = _sample_job(args, job="demo")
    m, verdict, out = result["metrics"], result["verdict"], result["out"]
    total = time.perf_counter() - t0
    per_class = " ".join(f"{c}:{v:.2f}" for c, v in m["judge_top1_per_target"].items())
    print(f"demo: 10 digits x {args.chains} chains, {result['seconds']:.1f} s sampling, "
          f"{total:.1f} s in all")  # fmt: skip
    print(f"  judge ({m['judge']}) top-1 on the final draws: {m['judge_top1']:.3f} ({per_class})")
    print(
        f"  diversity within a digit: Vendi {m['vendi_within_target']:.2f} of {args.chains}, "
        f"mean pairwise L2 {m['pairwise_pixel_within_target']:.2f}; Fréchet distance to the "
        f"MNIST test set {m['frechet_to_mnist_test']:.1f}"
    )
    print("  diagnostics: " + str(verdict).replace("\n", "\n  "))
    print(f"  wrote {out}/: final.png (digits), samples.png, run.nc, run.json, plots")


# --- diagnose -------------------------------------------------------------------------------


def _diagnose(args: argparse.Namespace) -> None:
    import xarray as xr

    path = Path(args.run)
    nc = path / "run.nc" if path.is_dir() else path
    if not nc.exists():
        raise BadInput(f"no run at {args.run}: expected a run folder with run.nc, or a .nc file")
    try:
        tree = xr.open_datatree(nc)
    except (OSError, ValueError) as err:
        raise BadInput(f"{nc}: not a run DataTree ({type(err).__name__})") from None
    # A sampling run has /posterior; visualize and dream keep one run per layer or octave.
    runs = {"": tree} if "posterior" in tree.children else {
        node.path.strip("/"): node for node in tree.subtree if "posterior" in node.children
    }  # fmt: skip
    if not runs:
        raise BadInput(f"{nc}: not a run DataTree (no posterior group)")
    out = _out_dir(args.out) if args.out else nc.parent
    for name, dt in runs.items():
        where = _out_dir(str(out / name)) if name else out
        verdict, worst, written = _write_diagnostics(dt, where, args)
        card = _verdict_card(verdict, worst)
        card["run"] = f"{nc}:{name or '/'}"
        (where / "diagnosis.json").write_text(_json(card))
        if name:
            print(f"{name}:")
        print(str(verdict))
        if not args.quiet:
            print(verdict.table.to_string(float_format=lambda v: f"{v:.4g}"))
            print(f"wrote {', '.join(written)} and diagnosis.json to {where}/")


# --- visualize and dream --------------------------------------------------------------------


def _check_layers(model, layers: list[str]) -> None:
    from .energies import resolve_layers

    try:
        resolve_layers(model, layers)
    except (ValueError, KeyError) as err:
        raise BadInput(str(err).splitlines()[0]) from None


def _visualize(args: argparse.Namespace) -> None:
    import torch

    from .apps import layer_channels, visualize, visualize_variety
    from .diagnostics.plots import image_grid

    out = _out_dir(args.out)
    model = _load_model(args.model, _device(args))
    _check_layers(model, args.layer)
    init = _read_image(args.init, args.size) if args.init else None
    card_layers = {}
    rows, trees, table, configs = [], {}, [], {}
    t0 = time.perf_counter()
    for layer in args.layer:
        n = layer_channels(model, layer, channels=getattr(model, "input_channels", 3))
        channels = args.channel or list(range(min(args.channels, n)))
        bad = [c for c in channels if not 0 <= c < n]
        if bad:
            raise BadInput(f"channel {bad[0]} out of range: layer {layer!r} has {n} channels")
        _say(args, f"visualize: {layer}, channels {channels}")
        vis = visualize(
            model, layer, channels, size=args.size, steps=args.steps, step_size=args.step_size,
            tv=args.tv, blur=args.blur, init=init, seed=args.seed, progress=not args.quiet,
        )  # fmt: skip
        safe = layer.replace(".", "_")
        entry = {"channels": channels, "objective": vis.objective.tolist()}
        rows.append(vis.images.cpu())
        trees[safe] = vis.run.to_datatree(projections=0)
        configs[safe] = vis.run.config
        energy = vis.run.stats["energy"]
        for i, c in enumerate(channels):
            table.append({"layer": layer, "channel": c, "objective": float(vis.objective[i]),
                          "energy_first_step": float(energy[i, 0]),
                          "energy_last_step": float(energy[i, -1])})  # fmt: skip
        if args.temperature > 0:
            var = visualize_variety(
                vis, model, chains_per_channel=args.chains, temperature=args.temperature,
                steps=args.steps, seed=args.seed + 1, progress=not args.quiet,
            )  # fmt: skip
            grid = var.images.reshape(len(channels), args.chains, *var.images.shape[1:])
            _save_png(image_grid(grid.transpose(0, 1).cpu().numpy()), out / f"variety_{safe}.png")
            trees[f"{safe}_variety"] = var.run.to_datatree(chain_groups=var.channels)
            configs[f"{safe}_variety"] = var.run.config
            entry["variety_objective"] = var.objective.tolist()
        _save_png(image_grid(vis.images[None].cpu().numpy()), out / f"layer_{safe}.png")
        card_layers[layer] = entry
    width = max(r.shape[0] for r in rows)
    padded = [torch.cat([r, torch.ones(width - r.shape[0], *r.shape[1:])]) for r in rows]
    _save_png(image_grid(torch.stack(padded).numpy()), out / "layers.png")
    verdicts = _write_descent_outputs(out, trees, table)
    _write_card(out, {
        "job": "visualize", "argv": sys.argv[1:], "seed": args.seed, "model": _model_card(model),
        "config": configs, "diagnostics": verdicts,
        "layers": card_layers, "size": args.size, "steps": args.steps,
        "step_size": args.step_size, "tv": args.tv, "blur": args.blur,
        "temperature": args.temperature,
        "seconds": round(time.perf_counter() - t0, 1),
    })  # fmt: skip
    _say(args, f"visualize: wrote {out}/layers.png (one row per layer), run.nc (one group per "
         "layer), summary.csv, energy.png and run.json")  # fmt: skip


def _write_descent_outputs(out: Path, trees: dict, table: list[dict]) -> dict:
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
    xr.DataTree.from_dict(nodes).to_netcdf(out / "run.nc")
    pd.DataFrame(table).to_csv(out / "summary.csv", index=False, float_format="%.6g")
    plot_energy(trees).savefig(out / "energy.png")
    plt.close("all")
    from .diagnostics import diagnose

    return {name: {"verdict": str(v), "ok": v.ok} for name, v in
            ((name, diagnose(dt)) for name, dt in trees.items())}  # fmt: skip


def _read_image(spec: str, size: int | None):
    from .datasets import PHOTOS, load_photo

    if spec in PHOTOS:
        return load_photo(spec, size)
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"no image {spec!r}: give a file or one of {', '.join(PHOTOS)}")
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from .datasets import resize_image

    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise BadInput(f"{spec}: not an image file PIL can read") from None
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None] / 255.0
    return resize_image(x, size)


def _dream(args: argparse.Namespace) -> None:
    from .apps import dream
    from .diagnostics import mean_pairwise_distance
    from .diagnostics.plots import image_grid

    out = _out_dir(args.out)
    model = _load_model(args.model, _device(args))
    _check_layers(model, args.layer)
    image = _read_image(args.image, args.size)
    guide = _read_image(args.guide, args.size) if args.guide else None
    if getattr(model, "input_channels", 3) == 1:
        image = image.mean(1, keepdim=True)
        guide = guide.mean(1, keepdim=True) if guide is not None else None
    _say(args, f"dream: {args.model} {args.layer} on {args.image} {tuple(image.shape[-2:])}")
    t0 = time.perf_counter()
    try:
        d = dream(
            model, image, args.layer, octaves=args.octaves, octave_scale=args.octave_scale,
            steps_per_octave=args.steps, step_size=args.step_size / 255, jitter=args.jitter,
            guide=guide, temperature=args.temperature, chains=args.chains, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:  # dream() validates its input before any step
        raise BadInput(str(err).splitlines()[0]) from None
    seconds = time.perf_counter() - t0
    _save_png(image_grid(d.images[:, None].cpu().numpy()), out / "dream.png")
    _save_png(image_grid(image[None].numpy()), out / "input.png")
    trees, table = {}, []
    for k, (size, run) in enumerate(zip(d.sizes, d.runs, strict=True)):
        trees[f"octave_{k}"] = run.to_datatree(projections=0)
        energy = run.stats["energy"]
        for c in range(energy.shape[0]):
            table.append({"octave": k, "height": size[0], "width": size[1], "chain": c,
                          "energy_first_step": float(energy[c, 0]),
                          "energy_last_step": float(energy[c, -1])})  # fmt: skip
    verdicts = _write_descent_outputs(out, trees, table)
    card = {
        "job": "dream", "argv": sys.argv[1:], "seed": args.seed, "model": _model_card(model),
        "config": {f"octave_{k}": run.config for k, run in enumerate(d.runs)},
        "diagnostics": verdicts,
        "layers": args.layer, "image": args.image, "guide": args.guide,
        "octaves": d.sizes, "steps_per_octave": args.steps, "step_size_255": args.step_size,
        "jitter": args.jitter, "temperature": args.temperature, "chains": args.chains,
        "seconds": round(seconds, 1),
    }  # fmt: skip
    if args.chains > 1:
        card["mean_pairwise_l2_between_dreams"] = mean_pairwise_distance(d.images)
    _write_card(out, card)
    _say(args, f"dream: {seconds:.1f} s; wrote {out}/dream.png, input.png, run.nc (one group "
         "per octave), summary.csv, energy.png, run.json")  # fmt: skip


# --- the parser -----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, out: str) -> None:
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (a CUDA GPU if there is one)"
    )
    p.add_argument(
        "--tf32", action="store_true", help="on a GPU, allow TF32 (faster; gradients off by ~5%%)"
    )


def _sampling_options(p: argparse.ArgumentParser, *, steps: int, warmup: int, chains: int,
                      temperature: float, lik: float) -> None:  # fmt: skip
    p.add_argument("--method", choices=("mala", "ula", "descent"), default="mala")
    p.add_argument("--step-size", type=_positive_float, default=1e-3,
                   help="initial step size (dual averaging adapts it during warmup)")  # fmt: skip
    p.add_argument("--temperature", type=_nonneg_float, default=temperature)
    p.add_argument("--likelihood-weight", type=_positive_float, default=lik)
    p.add_argument("--chains", type=_positive_int, default=chains, help="chains per target")
    p.add_argument("--steps", type=_positive_int, default=steps)
    p.add_argument("--warmup", type=_nonneg_int, default=warmup)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="langevin-images", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="the main job: class-conditional MNIST with diagnostics")
    _common(demo, out="out/demo")
    _sampling_options(demo, steps=1000, warmup=300, chains=8, temperature=0.1, lik=100.0)
    demo.set_defaults(func=_demo)

    s = sub.add_parser("sample", help="sample images of target classes from a classifier")
    _common(s, out="out/sample")
    s.add_argument("--model", default="mnist", help="lite0, mnist, mnist-judge, torchvision:NAME")
    s.add_argument(
        "--target",
        action="append",
        help="class index or name (repeatable); 'all' for models with <= 10 classes",
    )
    s.add_argument("--prior", action="append", type=_prior,
                   help=f"NAME=WEIGHT, repeatable; NAME one of {', '.join(PRIORS)}")  # fmt: skip
    _sampling_options(s, steps=200, warmup=300, chains=4, temperature=0.1, lik=100.0)
    s.add_argument("--schedule", choices=("dual_averaging", "constant", "cosine", "polynomial",
                                          "exponential"), default=None,
                   help="default: dual_averaging, or constant with --eps1/2/3")  # fmt: skip
    s.add_argument("--precondition", choices=("auto", "none", "fourier"), default="auto",
                   help="auto: the fitted or stationary prior's covariance, if any")  # fmt: skip
    s.add_argument("--size", type=_positive_int, default=64, help="image side (RGB models)")
    s.add_argument("--thin", type=_positive_int, default=None)
    s.add_argument("--record-to-disk", action="store_true",
                   help="stream the chain to chain.nc (bounded memory)")  # fmt: skip
    for k in (1, 2, 3):
        s.add_argument(
            f"--eps{k}",
            type=_nonneg_float,
            default=None,
            help="the book's three-epsilon form (give all three): mapped to (eps, T, lambda)",
        )
    s.set_defaults(func=_sample_job)

    d = sub.add_parser("diagnose", help="convergence verdict and plots of a run folder or run.nc")
    d.add_argument("run", help="a run folder (with run.nc) or a .nc file")
    d.add_argument("--out", default=None, help="where to write (default: next to run.nc)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_diagnose)

    v = sub.add_parser("visualize", help="activation maximization of a layer's channels")
    _common(v, out="out/visualize")
    v.add_argument("--model", default="lite0")
    v.add_argument(
        "--layer", action="append", required=True, help="named_modules() path (repeatable)"
    )
    v.add_argument("--channels", type=_positive_int, default=8, help="the first N channels")
    v.add_argument("--channel", type=_nonneg_int, action="append", help="a channel (repeatable)")
    v.add_argument("--size", type=_positive_int, default=96)
    v.add_argument("--steps", type=_positive_int, default=128)
    v.add_argument("--step-size", type=_positive_float, default=0.05)
    v.add_argument("--tv", type=_nonneg_float, default=0.0, help="total-variation prior weight")
    v.add_argument("--blur", type=_nonneg_float, default=0.0, help="blur-penalty prior weight")
    v.add_argument("--temperature", type=_nonneg_float, default=0.0,
                   help="> 0: also sample the variety around each visualization")  # fmt: skip
    v.add_argument("--chains", type=_positive_int, default=4, help="chains per channel at T > 0")
    v.add_argument("--init", default=None, help="start from this image (file or bundled photo)")
    v.set_defaults(func=_visualize)

    r = sub.add_parser("dream", help="DeepDream of a photo")
    _common(r, out="out/dream")
    r.add_argument("--model", default="lite0")
    r.add_argument("--image", default="chelsea", help="a file, or astronaut/chelsea/coffee/rocket")
    r.add_argument(
        "--layer", action="append", required=True, help="named_modules() path (repeatable)"
    )
    r.add_argument("--guide", default=None, help="guide image: match its features")
    r.add_argument("--size", type=_positive_int, default=192, help="shorter side of the photo")
    r.add_argument("--octaves", type=_positive_int, default=4)
    r.add_argument("--octave-scale", type=_positive_float, default=1.4)
    r.add_argument("--steps", type=_positive_int, default=10, help="steps per octave")
    r.add_argument("--step-size", type=_positive_float, default=1.5, help="on 0-255 pixel values")
    r.add_argument("--jitter", type=_nonneg_int, default=32)
    r.add_argument("--temperature", type=_nonneg_float, default=0.0)
    r.add_argument("--chains", type=_positive_int, default=1)
    r.set_defaults(func=_dream)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .cpu import tune_malloc

    tune_malloc()
    try:
        args = _build_parser().parse_args(argv)
        args.func(args)
    except BadInput as err:
        print(f"langevin-images: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langevin-images: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("langevin-images: internal error (the traceback above says where)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
