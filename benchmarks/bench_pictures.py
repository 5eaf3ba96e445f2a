"""Which network makes better pictures: feature visualizations of lite0 and ImageNet VGG19 with
one recipe, measured by their contrast and saturation (``diagnostics.picture_stats``).

The recipe is ``visualize``'s defaults (1/f and colour preconditioning, logistic bounds,
normalized descent, random jitter/scale/rotation each step) at 96 px for 200 steps, the first
``--channels`` channels of lite0 ``_blocks.9`` and VGG19 ``relu4_3`` (comparable depth: the
middle of each network). It also writes the pictures the README shows:

- ``docs/vgg19_layers.png``: channels of ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3`` and
  ``relu5_3``, one row per layer (edges and colours, textures, patterns, parts);
- ``docs/dream_chelsea_vgg19.png``: the chelsea photo and its DeepDream at ``relu3_3``.

Usage: python benchmarks/bench_pictures.py [--channels 6] [--steps 200] [--size 96]
       [--json benchmarks/results-pictures.json] [--docs docs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from langevin_images.apps import dream, visualize
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.diagnostics import picture_stats
from langevin_images.models import load_model

CASES = (("lite0", "_blocks.9"), ("vgg19", "relu4_3"))
GRID_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-pictures.json"))
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--no-docs", action="store_true", help="measure only")
    args = parser.parse_args()
    tune_malloc()
    rows = []
    for name, layer in CASES:
        model = load_model(name)
        t0 = time.perf_counter()
        vis = visualize(model, layer, args.channels, size=args.size, steps=args.steps,
                        progress=False)  # fmt: skip
        stats = picture_stats(vis.images)
        rows.append({"model": name, "layer": layer, **{k: round(v, 3) for k, v in stats.items()},
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        if not args.no_docs:
            save_image(vis.images, args.docs / f"pictures_{name}.png", nrow=args.channels,
                       padding=2, pad_value=1.0)  # fmt: skip
    result = {"channels": args.channels, "steps": args.steps, "size": args.size, "rows": rows}
    if not args.no_docs:
        vgg = load_model("vgg19")
        grid, per_layer = [], {}
        for layer in GRID_LAYERS:
            vis = visualize(vgg, layer, args.channels, size=args.size, steps=args.steps,
                            progress=False)  # fmt: skip
            grid.append(vis.images)
            per_layer[layer] = {k: round(v, 3) for k, v in picture_stats(vis.images).items()}
            print(layer, per_layer[layer], flush=True)
        save_image(torch.cat(grid), args.docs / "vgg19_layers.png", nrow=args.channels,
                   padding=2, pad_value=1.0)  # fmt: skip
        result["vgg19_layers"] = per_layer
        photo = load_photo("chelsea", 192)
        d = dream(vgg, photo, "relu3_3", progress=False)
        save_image(torch.cat([photo, d.images[:1]]), args.docs / "dream_chelsea_vgg19.png",
                   nrow=2, padding=2, pad_value=1.0)  # fmt: skip
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
