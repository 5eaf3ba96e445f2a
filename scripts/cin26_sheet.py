"""All 26 styles of the imported ``multistyle26`` CIN network on one photo (docs/).

Writes docs/cin_multistyle26.jpg.

The network's style images are not shipped with it, so the styles are known by index only.

    .venv/bin/python scripts/cin26_sheet.py [--photo chelsea] [--size 192]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from langevin_images.apps.amortized import stylize
from langevin_images.datasets import load_photo
from langevin_images.models.stylenets import load_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", default="chelsea")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "docs/cin_multistyle26.jpg"))
    args = p.parse_args()
    torch.set_num_threads(1)
    net, _, _ = load_network("multistyle26")
    x = load_photo(args.photo, args.size)
    tiles = [("content", x)] + [(f"style {k}", stylize(net, x, style=k)) for k in range(26)]
    cols = 7
    rows = -(-len(tiles) // cols)
    h, w = x.shape[-2:]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0 * w / h, rows * 2.15))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, tiles, strict=False):
        ax.imshow(img[0].permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"multistyle26 (CIN, 26 styles, imported from ONNX) on {args.photo}, {h}x{w} px")
    fig.tight_layout()
    fig.savefig(args.out, dpi=72, pil_kwargs={"quality": 88})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
