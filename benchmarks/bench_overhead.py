"""What a sampler step costs beyond its energy when the energy costs nothing: operations per
step and microseconds per step on tiny images, where every operation's fixed cost (Python,
dispatch, and on a GPU a kernel launch) is all there is.

On a GPU at small batches a step is launch-bound: the step's own operations then cost about as
much as the network's, each one a launch. On the CPU the same fixed cost is what a step pays
on top of the energy for small images (MNIST digits). Three configurations, each on a
quadratic energy ``sum(x^2)``:

- ``am_descent``: ``visualize``'s step: normalized descent with the colour x 1/f
  preconditioner, ``[0, 1]`` bounds and the random affine transform, 8 x 3 x 8 x 8.
- ``mala``: plain MALA, 64 x 1 x 28 x 28.
- ``mala_dense_adapt``: MALA with a dense 784 x 784 preconditioner and dual averaging (warmup
  and sampling, the demo's kind of run), 64 x 1 x 28 x 28.

"ops per step" counts the top-level ATen operations of a run in the profiler (views included:
on a GPU most of the others are one kernel launch each), the difference of a 40-step and an
8-step run over 32 steps. Rounds alternate the configurations; the report gives the median
time per step.

Usage: python benchmarks/bench_overhead.py [--device DEVICE] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import langevin_images as li
from langevin_images.apps.visualize import _preconditioner
from langevin_images.cpu import tune_malloc
from langevin_images.energies import RandomAffine, Transformed
from langevin_images.samplers import Dense


class Quadratic:
    """``sum(x^2)`` per chain: an energy that costs next to nothing."""

    name = "quadratic"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.square().flatten(1).sum(1)

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self(x), {}


def configurations(device: torch.device) -> dict:
    """name -> (run(n), steps per n): each ``run`` is one ``sample()`` call."""
    energy = Quadratic()
    g = torch.Generator().manual_seed(0)
    x_am = torch.full((8, 3, 8, 8), 0.5, device=device)
    am_precond = _preconditioner(3, 8, True, 1.0)
    am_energy = Transformed(energy, RandomAffine(1, (0.95, 1.05), 5.0))
    x_mnist = torch.full((64, 1, 28, 28), 0.5, device=device)
    a = torch.randn((784, 784), generator=g, dtype=torch.float64)
    dense = Dense(a @ a.T / 784 + torch.eye(784, dtype=torch.float64))
    common = {"progress": False, "step_size": 0.05}

    def am_descent(n):
        am = {"normalize_step": True, "preconditioner": am_precond, "bounds": (0.0, 1.0)}
        li.sample(am_energy, x_am, steps=n, method="descent", thin=32, **am, **common)

    def mala(n):
        li.sample(energy, x_mnist, steps=n, method="mala", **common)

    def mala_dense_adapt(n):
        adapt = {"warmup": n, "schedule": "dual_averaging", "preconditioner": dense}
        li.sample(energy, x_mnist, steps=n, method="mala", **adapt, **common)

    return {
        "am_descent": (am_descent, 1),
        "mala": (mala, 1),
        "mala_dense_adapt": (mala_dense_adapt, 2),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_ops(run, per: int) -> float:
    """Top-level ATen operations per step."""
    counts = []
    for n in (8, 40):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(n)
        counts.append(
            sum(
                1
                for e in prof.events()
                if e.name.startswith("aten::")
                and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))
            )
        )
    return (counts[1] - counts[0]) / (32 * per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="steps of a timed run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_malloc()
    device = torch.device(args.device)
    configs = configurations(device)
    results = {name: {"ops_per_step": count_ops(run, per)} for name, (run, per) in configs.items()}
    times = {name: [] for name in configs}
    for run, _ in configs.values():
        run(3)
    for _ in range(args.rounds):
        for name, (run, per) in configs.items():
            _sync(device)
            t0 = time.perf_counter()
            run(args.steps)
            _sync(device)
            # a run of n steps makes n * per + 1 energy+gradient evaluations
            times[name].append((time.perf_counter() - t0) / (args.steps * per + 1))
    for name, r in results.items():
        r["us_per_step"] = statistics.median(times[name]) * 1e6
        r["device"] = str(device)
        print(
            f"{name:18s} {r['ops_per_step']:6.1f} ops per step, "
            f"{r['us_per_step']:7.1f} us per step",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
