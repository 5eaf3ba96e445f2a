"""Stuck chains in Neal's 10-d funnel with dual averaging and with ``StuckFallback``: 22 seeds
x 16 chains, 1 000 warmup + 4 000 steps each, counting the chains that accept no step after
warmup, with the mean min bulk ESS per gradient and the median max |z| of the means.

Usage: python benchmarks/bench_funnel_fallback.py [--json FILE] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from langevin_images import bench as B
from langevin_images import targets as T
from langevin_images.cpu import tune_malloc
from langevin_images.samplers import sample
from langevin_images.schedules import DualAveraging, StuckFallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path,
                        default=Path("benchmarks/results-funnel-fallback.json"))  # fmt: skip
    parser.add_argument("--seeds", type=int, default=22)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_malloc()
    target = T.funnel()
    out = {}
    for label, make in [("dual averaging", DualAveraging), ("stuck fallback", StuckFallback)]:
        stuck, per_grad, z = 0, [], []
        for seed in range(args.seeds):
            x0 = target.init(16, torch.Generator().manual_seed(seed))
            run = sample(target.energy, x0, warmup=1000, steps=4000, step_size=0.1,
                         schedule=make(), seed=seed, progress=False, thin=1)  # fmt: skip
            accepted = run.recorder.get_stats()["is_accepted"][:, 1000:].double().mean(1)
            stuck += int((accepted == 0).sum())
            draws = run.samples.double().numpy()
            per_grad.append(float(np.nanmin(B._ess(draws))) / run.grad_evals)
            z.append(B.moment_errors(draws, target)[0])
        out[label] = {"stuck": stuck, "chains": args.seeds * 16,
                      "min_ess_per_grad_mean": float(np.mean(per_grad)),
                      "max_z_mean_median": float(np.median(z))}  # fmt: skip
        print(label, out[label], flush=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
