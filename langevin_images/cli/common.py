"""What the subcommands share: the one-line bad-input error, option types, the options every
job spells the same way, devices, models and images."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..samplers.driver import SEED_LIMIT

__all__ = ["BadInput", "Parser", "add_common", "add_sampling", "device", "load_model", "say"]


class BadInput(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # main() prints "langevin-images: error: ..."; the subcommand's prog would repeat it
        raise BadInput(message)


def number(cast: type, *, positive: bool, below: int | None = None):
    """An argparse type: an int or a finite float, ``> 0`` or ``>= 0`` (and ``< below``)."""
    what = "a whole number" if cast is int else "a number"
    bound = "> 0" if positive else ">= 0"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be < {below}, got {text}")
        return value

    parse.__name__ = f"{'positive' if positive else 'non-negative'} {cast.__name__}"
    return parse


positive_int = number(int, positive=True)
nonneg_int = number(int, positive=False)
positive_float = number(float, positive=True)
nonneg_float = number(float, positive=False)
seed_int = number(int, positive=False, below=SEED_LIMIT)


def prior(text: str) -> str:
    """``NAME[=WEIGHT][,PARAM=VALUE...]`` from the prior registry, in its canonical spelling."""
    from ..energies import parse_prior

    try:
        name, weight, params = parse_prior(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return f"{name}={weight:g}" + "".join(f",{k}={v:g}" for k, v in params.items())


def say(args, *lines: str) -> None:
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line, flush=True)


def device(args):
    """The torch device of ``--device`` (see ``runs.resolve_device``)."""
    from ..runs import resolve_device

    try:
        return resolve_device(getattr(args, "device", "cpu"), tf32=getattr(args, "tf32", False))
    except ValueError as err:
        raise BadInput(str(err)) from None


def load_model(name: str, device=None, weights: str | None = None):
    from ..models import load_model as load

    try:
        model = load(name, weights=weights)
    except (ValueError, FileNotFoundError) as err:
        raise BadInput(str(err).splitlines()[0]) from None
    return model if device is None else model.to(device)


def out_dir(args, *, resume: bool = False) -> Path:
    """``--out`` prepared for a new run: refused (one line) if it holds a run and ``--force``
    was not given, or holds anything else."""
    from ..runs import RunFolderError, prepare_out

    try:
        return prepare_out(args.out, force=getattr(args, "force", False), resume=resume)
    except RunFolderError as err:
        raise BadInput(str(err)) from None


@contextmanager
def output_folder(args):
    """``out_dir(args)`` for a job that writes its outputs at the end: removed again if the job
    fails or is interrupted before it finishes, so no empty or half-written folder is left."""
    out = out_dir(args)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def add_common(
    p: argparse.ArgumentParser,
    *,
    out: str,
    weights_help: str = "the model's weights file (torchvision ones need it offline)",
) -> None:
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--force", action="store_true",
                   help="replace the run already in --out (refused without it)")  # fmt: skip
    p.add_argument("--seed", type=seed_int, default=0, help="0 <= SEED < 2**63")
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (a CUDA GPU if there is one)"
    )
    p.add_argument(
        "--tf32", action="store_true", help="on a GPU, allow TF32 (faster; gradients off by ~5%%)"
    )
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch CPU threads (default: all; 1 beside other jobs)")  # fmt: skip
    p.add_argument("--weights", default=None, metavar="PATH", help=weights_help)


def add_sampling(p: argparse.ArgumentParser, *, steps: int, warmup: int, chains: int,
                 temperature: float, lik: float) -> None:  # fmt: skip
    p.add_argument("--method", choices=("mala", "ula", "descent"), default=None,
                   help="default: mala for MNIST models; for RGB models the picture recipe, "
                        "descent with jitter (give mala or ula to sample at T > 0)")  # fmt: skip
    p.add_argument("--step-size", type=positive_float, default=None,
                   help="initial step size (dual averaging adapts it during warmup); default "
                        "1e-3, or 0.05 (mean change per step) for the picture recipe")  # fmt: skip
    p.add_argument("--temperature", type=nonneg_float, default=temperature)
    p.add_argument("--likelihood-weight", type=positive_float, default=lik)
    p.add_argument("--chains", type=positive_int, default=chains, help="chains per target")
    p.add_argument("--steps", type=positive_int, default=steps)
    p.add_argument("--warmup", type=nonneg_int, default=warmup)
    p.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="steps per block of the record, each with a checkpoint")  # fmt: skip
    p.add_argument("--resume", metavar="RUN_FOLDER", default=None,
                   help="continue the killed or interrupted run in RUN_FOLDER")  # fmt: skip


def _layer_hint(name: str) -> str:
    return f"`langevin-images models {name} --layers` lists them"


def check_memory(model, size: tuple[int, int], chains: int, device, *, what: str) -> None:
    from ..runs import check_memory as check

    try:
        check(model, size, chains, device, what=what)
    except ValueError as err:
        raise BadInput(str(err)) from None


def check_layers(model, layers: list[str], *, name: str, side: int, what: str) -> dict:
    """Each of ``layers`` exists and runs in the forward pass of a ``side`` px image: the output
    shape of each; else one line naming what is wrong (close names, a container's parts, or
    the smallest side on which the layers run)."""
    from ..energies import resolve_layers
    from ..runs import check_input_side

    try:
        resolve_layers(model, layers)
        shapes = check_input_side(model, side, what=what, name=name, layers=layers)
    except (ValueError, KeyError) as err:
        hint = f" ({_layer_hint(name)})" if "unknown layer" in str(err) else ""
        raise BadInput(str(err).splitlines()[0] + hint) from None
    for layer in layers:  # the pass ran to its end without calling it: a container
        if layer not in shapes:
            parts = [n for n in shapes if n.rpartition(".")[0] == layer]
            shown = ", ".join(parts[:3]) + (f", ..., {parts[-1]}" if len(parts) > 3 else "")
            raise BadInput(
                f"--layer {layer}: a container that the forward pass never calls as a whole; "
                + (f"give one of its parts ({shown})" if parts else _layer_hint(name))
            )
    return {layer: shapes[layer] for layer in layers}


MAX_ASPECT = 20  # longer side over shorter side: beyond this an image is a strip, not a photo


def read_image(spec: str, size: int | None, *, option: str = "--image"):
    """A bundled photo or an image file as ``(1, 3, H, W)`` in [0, 1]: 8- and 16-bit, grey,
    palette and alpha images alike; ``size`` the shorter side (None: the file's own size)."""
    from ..datasets import PHOTOS, STYLES, load_photo, resize_image

    if spec in PHOTOS or spec in STYLES:
        return load_photo(spec, size)
    path = Path(spec)
    if not path.is_file():
        names = ", ".join((*PHOTOS, *STYLES))
        raise BadInput(f"{option} {spec}: no such file; give a file or one of {names}")
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            w, h = img.size
            if max(w, h) > MAX_ASPECT * min(w, h):
                raise BadInput(
                    f"{option} {spec}: {w}x{h} px is a strip, not a photo (sides more than "
                    f"{MAX_ASPECT}:1); crop it first"
                )
            x = _as_float_rgb(img, np)
    except Image.DecompressionBombError:
        raise BadInput(
            f"{option} {spec}: larger than PIL's limit of {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} "
            "Mpx (a decompression bomb guard); shrink it first"
        ) from None
    except (UnidentifiedImageError, OSError):
        raise BadInput(f"{option} {spec}: not an image file PIL can read") from None
    return resize_image(torch.from_numpy(x).permute(2, 0, 1)[None], size)


def _as_float_rgb(img, np):
    """``(H, W, 3)`` float32 in [0, 1], by the bit depth of the image's mode (PIL's own
    ``convert("RGB")`` clips 16-bit values to 255, which turns a 16-bit photo white)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img, dtype=np.float64)
        a = a / 65535.0 if mode.startswith("I;16") or a.max() > 255 else a / 255.0
    elif mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = a / 255.0 if a.max() > 1 else a
    else:
        rgba = img.convert("RGBA")
        a = np.asarray(rgba, dtype=np.float64) / 255.0
        alpha = a[..., 3:]
        return (a[..., :3] * alpha + (1 - alpha)).astype(np.float32)  # on white
    a = np.clip(a, 0, 1)
    return np.repeat(a[..., None], 3, axis=2).astype(np.float32)


def save_log_plot(fig, ax, path: Path, *, xlabel: str, ylabel: str) -> None:
    """Finish a figure of curves on a log scale (labels, legend) and write it atomically."""
    import matplotlib.pyplot as plt

    from ..runs import atomic_write

    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def argv_given(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """The ``dest`` of every option spelled out in ``argv`` (not left at its default)."""
    by_flag = {flag: a.dest for a in parser._actions for flag in a.option_strings}
    return {by_flag[tok.split("=", 1)[0]] for tok in argv if tok.split("=", 1)[0] in by_flag}


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
