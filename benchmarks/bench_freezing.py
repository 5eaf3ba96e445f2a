"""What freezing a model's parameters saves per Langevin step: energy+gradient w.r.t. the
image of lite0 (batch 8, 224 x 224) with ``requires_grad_(False)`` on the parameters (the zoo's
default) against parameters left trainable, interleaved in one run.

Usage: python benchmarks/bench_freezing.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from langevin_images.cpu import tune_malloc
from langevin_images.energies import ClassLikelihood
from langevin_images.models import load_model
from langevin_images.samplers.kernel import energy_and_grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    tune_malloc()
    size, batch, rounds = (128, 4, 3) if args.quick else (224, 8, 5)
    frozen = load_model("lite0")
    trainable = load_model("lite0").requires_grad_(True)
    x = torch.rand((batch, 3, size, size), generator=torch.Generator().manual_seed(0))
    energies = {
        "frozen": ClassLikelihood(frozen, "espresso"),
        "trainable": ClassLikelihood(trainable, "espresso"),
    }
    times = {k: [] for k in energies}
    for e in energies.values():
        energy_and_grad(e, x)
    for _ in range(rounds):
        for k, e in energies.items():
            t0 = time.perf_counter()
            energy_and_grad(e, x)
            times[k].append(time.perf_counter() - t0)
    f, t = statistics.median(times["frozen"]), statistics.median(times["trainable"])
    ratios = sorted(b / a for a, b in zip(times["frozen"], times["trainable"], strict=True))
    print(
        f"lite0 energy+grad w.r.t. the image, batch {batch} at {size}: frozen {f:.3f} s, "
        f"parameters trainable {t:.3f} s, ratio {statistics.median(ratios):.2f} "
        f"(per-round {ratios[0]:.2f}..{ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
