"""Execute the notebooks (jupytext percent files in notebooks/) and save them, with their
outputs, as .ipynb under an output folder.

Usage: python scripts/run_notebooks.py [--small] [--out out/notebooks] [NAME ...]

``--small`` sets LANGEVIN_IMAGES_SMALL=1, which each notebook reads to run at small settings
(CI does this). A notebook that raises stops the script with exit status 1, naming the cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small settings (as in CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args()
    if args.small:
        os.environ["LANGEVIN_IMAGES_SMALL"] = "1"
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend keeps the figures
    args.out.mkdir(parents=True, exist_ok=True)
    paths = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
    if args.names:
        paths = [p for p in paths if p.name in args.names or p.stem in args.names]
    for path in paths:
        nb = jupytext.read(path)
        t0 = time.perf_counter()
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3",
            resources={"metadata": {"path": str(ROOT / "notebooks")}},
        )  # fmt: skip
        try:
            client.execute()
        except CellExecutionError as err:
            nbformat.write(nb, args.out / f"{path.stem}.ipynb")
            print(f"{path.name}: FAILED\n{str(err)[-3000:]}", file=sys.stderr)
            return 1
        nbformat.write(nb, args.out / f"{path.stem}.ipynb")
        print(
            f"{path.name}: ok in {time.perf_counter() - t0:.0f} s -> {args.out / path.stem}.ipynb"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
