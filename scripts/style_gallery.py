"""The style-transfer pictures in docs/: real runs of the ``style`` command, then one panel per
run (content | style | result, or the posterior chains).

Usage: python scripts/style_gallery.py [--size 256] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "chelsea_ihc": ["--content", "chelsea", "--style", "ihc"],
    "astronaut_hubble": ["--content", "astronaut", "--style", "hubble"],
    "coffee_gravel_colour": ["--content", "coffee", "--style", "gravel",
                             "--preserve-color", "histogram"],
    "rocket_ihc_hubble": ["--content", "rocket", "--style", "ihc", "--style", "hubble"],
    "chelsea_ihc_mixed": ["--content", "chelsea", "--style", "ihc", "--precision", "mixed"],
    "chelsea_ihc_w2": ["--content", "chelsea", "--style", "ihc", "--style-loss", "w2"],
}  # fmt: skip


def panel(images: list[Path], out: Path, height: int) -> None:
    tiles = []
    for p in images:
        im = Image.open(p).convert("RGB")
        tiles.append(im.resize((round(im.width * height / im.height), height), Image.LANCZOS))
    gap = 4
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height),
                       "white")  # fmt: skip
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + gap
    canvas.save(out, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args()
    docs = ROOT / "docs"
    exe = [sys.executable, "-m", "langevin_images.cli"]
    for name, argv in RUNS.items():
        if args.only and name not in args.only:
            continue
        out = ROOT / "out" / "gallery" / name
        cmd = [*exe, "style", *argv, "--size", str(args.size), "--steps", str(args.steps),
               "--out", str(out), "--force", "--quiet"]  # fmt: skip
        print(" ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
        styles = sorted(out.glob("style_*.png"))
        panel([out / "content.png", *styles, out / "stylized.png"], docs / f"style_{name}.png",
              args.size)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
