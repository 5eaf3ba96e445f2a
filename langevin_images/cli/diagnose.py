"""``diagnose``: the convergence verdict and plots of a run folder, a run.nc or a record."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runs import verdict_card, write_diagnostics
from .common import BadInput

__all__ = ["add_parsers"]


def _open(arg: str):
    """(DataTree, where it came from) of a run folder, a run.nc, or a record (also an
    interrupted or killed run's, read up to its last block)."""
    import xarray as xr

    from ..recording import is_record, open_record
    from ..runs import RECORD

    path = Path(arg)
    nc = path / "run.nc" if path.is_dir() else path
    if path.is_dir() and not nc.exists() and is_record(path / RECORD):
        path = path / RECORD
    if is_record(path):
        return open_record(path), path
    if not nc.exists():
        raise BadInput(
            f"no run at {arg}: expected a run folder (run.nc or {RECORD}), a .nc file or a record"
        )
    try:
        return xr.open_datatree(nc), nc
    except (OSError, ValueError) as err:
        raise BadInput(f"{nc}: not a run DataTree ({type(err).__name__})") from None


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"--out {path}: cannot write there ({err.strerror})") from None
    return path


def _diagnose(args: argparse.Namespace) -> None:
    from ..runs import _json, atomic_write

    tree, source = _open(args.run)
    # A sampling run has /posterior; visualize and dream keep one run per layer or octave.
    runs = {"": tree} if "posterior" in tree.children else {
        node.path.strip("/"): node for node in tree.subtree if "posterior" in node.children
    }  # fmt: skip
    if not runs:
        raise BadInput(f"{source}: not a run DataTree (no posterior group)")
    if all(dt["posterior"].sizes.get("draw", 0) == 0 for dt in runs.values()):
        raise BadInput(f"{source}: the run has no draws yet (it stopped before its first draw)")
    out = _mkdir(Path(args.out)) if args.out else source.parent
    for name, dt in runs.items():
        where = _mkdir(out / name) if name else out
        verdict, worst, written = write_diagnostics(dt, where)
        card = verdict_card(verdict, worst)
        card["run"] = f"{source}:{name or '/'}"
        atomic_write(where / "diagnosis.json", _json(card))
        if name:
            print(f"{name}:")
        print(str(verdict))
        if not args.quiet:
            print(verdict.table.to_string(float_format=lambda v: f"{v:.4g}"))
            print(f"wrote {', '.join(written)} and diagnosis.json to {where}/")


def add_parsers(sub) -> None:
    d = sub.add_parser("diagnose", help="convergence verdict and plots of a run folder or run.nc")
    d.add_argument("run", help="a run folder, a run.nc or a record (record.zarr)")
    d.add_argument("--out", default=None, help="where to write (default: next to run.nc)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_diagnose)
