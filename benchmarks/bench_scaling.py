"""Microseconds per MALA step against the number of chains (1 ... 1024, 100-d standard
Gaussian) and against the dimension (10 ... 10^5, 8 chains), with a bare energy+gradient of the
same batch measured beside each point, on one CPU thread. The knee is the last point whose
step costs at most twice the smallest configuration's: below it a step is the sampler's fixed
cost, above it the arithmetic.

Usage: python benchmarks/bench_scaling.py [--json FILE] [--plot FILE] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from langevin_images.bench import time_grad
from langevin_images.cpu import tune_malloc
from langevin_images.samplers import sample
from langevin_images.targets import isotropic


def us_per_step(target, chains: int, steps: int, device: str) -> float:
    x0 = torch.zeros((chains, target.dim), device=device)
    sample(target.energy, x0, steps=10, warmup=0, step_size=0.1, progress=False)  # warm up
    t0 = time.perf_counter()
    sample(target.energy, x0, steps=steps, warmup=0, step_size=0.1, progress=False,
           thin=steps)  # fmt: skip
    return (time.perf_counter() - t0) / steps * 1e6


def knee(xs, ys) -> int:
    base = ys[0]
    inside = [x for x, y in zip(xs, ys, strict=True) if y <= 2 * base]
    return inside[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-scaling.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/bench_scaling.png"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_malloc()
    result = {"device": args.device, "threads": 1}
    for axis, points in [("chains", [1, 4, 16, 64, 256, 1024]),
                         ("dim", [10, 100, 1000, 10_000, 100_000])]:  # fmt: skip
        rows = []
        for p in points:
            chains, dim = (p, 100) if axis == "chains" else (8, p)
            target = isotropic(dim)
            step = us_per_step(target, chains, args.steps, args.device)
            grad = time_grad(target, torch.zeros((chains, dim), device=args.device), repeats=50)
            rows.append({axis: p, "us_per_step": round(step, 1), "us_per_grad": round(grad, 1)})
            print(f"{axis}={p:>6}  {step:9.1f} us/step  {grad:9.1f} us/grad", flush=True)
        xs, ys = [r[axis] for r in rows], [r["us_per_step"] for r in rows]
        result[axis] = {"rows": rows, "knee": knee(xs, ys)}
        print(f"knee along {axis}: {result[axis]['knee']}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, axis, fixed in zip(axes, ("chains", "dim"), ("100-d", "8 chains"), strict=True):
        rows = result[axis]["rows"]
        xs = [r[axis] for r in rows]
        ax.loglog(xs, [r["us_per_step"] for r in rows], "o-", label="MALA step")
        ax.loglog(xs, [r["us_per_grad"] for r in rows], "s--", label="bare energy+gradient")
        ax.axvline(result[axis]["knee"], color="k", ls=":", lw=1, label="knee")
        ax.set_xlabel(f"{axis} ({fixed})")
        ax.set_ylabel("µs")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"µs per step, isotropic Gaussian, 1 thread, {args.device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
