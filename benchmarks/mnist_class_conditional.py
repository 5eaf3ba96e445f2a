"""Class-conditional MNIST: MALA with the ``mnist`` CNN as likelihood under each image prior,
scored by ``mnist-judge`` (a classifier never used as the sampling energy).

For every prior (none, isotropic Gaussian, TV, blur, data-fitted Gaussian), likelihood weight
and temperature, 8 chains per digit (80 in all) start from the MNIST mean image plus noise,
warm up with dual averaging to acceptance 0.574, and sample. The report gives the judge's
top-1 rate on the final draws, per class and overall; diversity within a class as the mean
pairwise pixel distance and the Vendi score of the judge's penultimate features (1 = all alike,
8 = all different); the Fréchet distance of those features to the MNIST test set's; and the
acceptance rate. Priors without a Gaussian part are
sampled on [0, 1] (``bounds``) so that their targets are proper; the judge sees the images
clipped to [0, 1].

Usage: python benchmarks/mnist_class_conditional.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import langevin_images as li
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_mnist
from langevin_images.diagnostics import frechet_distance, penultimate, vendi_score
from langevin_images.energies import ClassLikelihood, build_prior
from langevin_images.models import load_model

# the priors as the command line names them (the one registry, langevin_images.energies)
PRIORS = ["none", "gaussian=1", "tv=0.5", "blur=5", "fitted=1"]


def priors(train: torch.Tensor) -> dict:
    """name -> (prior energy or None, preconditioner or None, bounds or None)."""
    built = {p.split("=")[0]: build_prior([p], (1, 28, 28), data=train) for p in PRIORS}
    return {name: (b.energy, b.preconditioner, b.bounds) for name, b in built.items()}


def run_one(
    name, prior, precond, bounds, temperature, weight, x0, targets, models, steps, warmup, ref
):
    mnist, judge = models
    energy = ClassLikelihood(mnist, targets) * weight
    if prior is not None:
        energy = energy + prior
    t0 = time.perf_counter()
    run = li.sample(
        energy,
        x0.clamp(0.001, 0.999) if bounds else x0,
        steps=steps,
        warmup=warmup,
        temperature=temperature,
        step_size=1e-3,
        schedule="dual_averaging",
        preconditioner=precond,
        bounds=bounds,
        thin=max(1, steps // 10),
        seed=0,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    final = run.samples[:, -1].clamp(0, 1)
    with torch.no_grad():
        pred = judge(final).argmax(1)
    hit = (pred == targets).float()
    per_class = [float(hit[targets == c].mean()) for c in range(10)]
    spread, vendi = [], []
    feats = penultimate(judge)(final)
    for c in range(10):
        f = final[targets == c].flatten(1)
        spread.append(float(torch.pdist(f).mean()))
        vendi.append(vendi_score(feats[targets == c]))
    return {
        "prior": name,
        "likelihood_weight": weight,
        "temperature": temperature,
        "judge_top1": float(hit.mean()),
        "judge_top1_per_class": per_class,
        "mean_pairwise_l2_within_class": sum(spread) / 10,
        "vendi_within_class": sum(vendi) / 10,
        "frechet_to_test": frechet_distance(feats, ref),
        "acceptance": float(run.acceptance_rate.mean()),
        "seconds": round(seconds, 1),
    }, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="save the final draws of each run as PNGs here")
    parser.add_argument("--weights", default="5,20,100", help="likelihood weights, comma-separated")
    args = parser.parse_args()
    tune_malloc()
    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    mnist, judge = load_model("mnist"), load_model("mnist-judge")
    ref = penultimate(judge)(test)
    weights = [float(w) for w in args.weights.split(",")]
    per_class = 4 if args.quick else 8
    targets = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(0)
    x0 = train.mean(0, keepdim=True) + 0.1 * torch.randn((len(targets), 1, 28, 28), generator=g)
    steps, warmup = (60, 60) if args.quick else (200, 300)
    temps = [0.1] if args.quick else [0.03, 0.1, 0.3]
    results = []
    print(f"{len(targets)} chains, {warmup} warmup + {steps} steps")
    print(
        f"{'prior':9s} {'w':>4s} {'T':>5s} {'judge':>6s} {'spread':>7s} {'vendi':>6s} "
        f"{'FD':>6s} {'acc':>6s} {'s':>5s}  per class"
    )
    for name, (prior, precond, bounds) in priors(train).items():
        for weight in weights:
            for temp in temps:
                r, final = run_one(
                    name,
                    prior,
                    precond,
                    bounds,
                    temp,
                    weight,
                    x0,
                    targets,
                    (mnist, judge),
                    steps,
                    warmup,
                    ref,
                )
                results.append(r)
                print(
                    f"{name:9s} {weight:4g} {temp:5.2f} {r['judge_top1']:6.3f} "
                    f"{r['mean_pairwise_l2_within_class']:7.2f} {r['vendi_within_class']:6.2f} "
                    f"{r['frechet_to_test']:6.1f} {r['acceptance']:6.3f} {r['seconds']:5.1f}  "
                    + " ".join(f"{v:.2f}" for v in r["judge_top1_per_class"]),
                    flush=True,
                )
                if args.grid:
                    from torchvision.utils import save_image

                    args.grid.mkdir(parents=True, exist_ok=True)
                    grid = (
                        final.reshape(10, per_class, 1, 28, 28)
                        .transpose(0, 1)
                        .reshape(-1, 1, 28, 28)
                    )
                    save_image(
                        grid, args.grid / f"{name}-w{weight:g}-T{temp}.png", nrow=10, padding=1
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
