"""What the subcommands share: the one-line bad-input error, option types, the options every
job spells the same way, devices, models and images."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["BadInput", "Parser", "add_common", "add_sampling", "device", "load_model", "say"]


class BadInput(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(f"{self.prog}: {message}")


def number(cast: type, *, positive: bool):
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


positive_int = number(int, positive=True)
nonneg_int = number(int, positive=False)
positive_float = number(float, positive=True)
nonneg_float = number(float, positive=False)


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


def load_model(name: str, device=None):
    from ..models import load_model as load

    try:
        model = load(name)
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


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def add_common(p: argparse.ArgumentParser, *, out: str) -> None:
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--force", action="store_true",
                   help="replace the run already in --out (refused without it)")  # fmt: skip
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (a CUDA GPU if there is one)"
    )
    p.add_argument(
        "--tf32", action="store_true", help="on a GPU, allow TF32 (faster; gradients off by ~5%%)"
    )
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch CPU threads (default: all; 1 beside other jobs)")  # fmt: skip


def add_sampling(p: argparse.ArgumentParser, *, steps: int, warmup: int, chains: int,
                 temperature: float, lik: float) -> None:  # fmt: skip
    p.add_argument("--method", choices=("mala", "ula", "descent"), default="mala")
    p.add_argument("--step-size", type=positive_float, default=1e-3,
                   help="initial step size (dual averaging adapts it during warmup)")  # fmt: skip
    p.add_argument("--temperature", type=nonneg_float, default=temperature)
    p.add_argument("--likelihood-weight", type=positive_float, default=lik)
    p.add_argument("--chains", type=positive_int, default=chains, help="chains per target")
    p.add_argument("--steps", type=positive_int, default=steps)
    p.add_argument("--warmup", type=nonneg_int, default=warmup)
    p.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="steps per block of the record, each with a checkpoint")  # fmt: skip
    p.add_argument("--resume", metavar="RUN_FOLDER", default=None,
                   help="continue the killed or interrupted run in RUN_FOLDER")  # fmt: skip


def check_layers(model, layers: list[str]) -> None:
    from ..energies import resolve_layers

    try:
        resolve_layers(model, layers)
    except (ValueError, KeyError) as err:
        raise BadInput(str(err).splitlines()[0]) from None


def read_image(spec: str, size: int | None):
    from ..datasets import PHOTOS, load_photo

    if spec in PHOTOS:
        return load_photo(spec, size)
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"no image {spec!r}: give a file or one of {', '.join(PHOTOS)}")
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from ..datasets import resize_image

    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise BadInput(f"{spec}: not an image file PIL can read") from None
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None] / 255.0
    return resize_image(x, size)


def argv_given(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """The ``dest`` of every option spelled out in ``argv`` (not left at its default)."""
    by_flag = {flag: a.dest for a in parser._actions for flag in a.option_strings}
    return {by_flag[tok.split("=", 1)[0]] for tok in argv if tok.split("=", 1)[0] in by_flag}


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
