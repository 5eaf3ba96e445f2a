"""What ``RandomAffine``'s own backward saves against ATen's ``grid_sample`` backward, in a
model: lite0's activation energy at ``_blocks.9`` (8 channels, 8 x 3 x 128 x 128, the
activation-maximization case of ``bench_apps.py``) behind the random affine transform, once
through ``F.grid_sample`` (ATen's backward, which forms the grid's gradient too) and once
through ``RandomAffine.warp`` (input gradient only), against the bare energy.

Rounds alternate the three energy+gradient evaluations; the report gives each one's median
ratio to the bare energy and the per-round paired difference between the two warps.

Usage: python benchmarks/bench_warp.py [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_apps import fwd_bwd  # the same timed energy+gradient loop (benchmarks/ is on the path)

from langevin_images.cpu import tune_malloc
from langevin_images.energies import ActivationEnergy, RandomAffine
from langevin_images.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--evals", type=int, default=8, help="evaluations per round and case")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_malloc()
    model = load_model("lite0")
    energy = ActivationEnergy(model, "_blocks.9", channel=torch.arange(8))
    warp = RandomAffine(8, (0.95, 1.05), 5.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((8, 3, 128, 128), generator=gen)

    def grid_sample_warp(v, u):  # the same grid, through F.grid_sample and ATen's backward
        return F.grid_sample(
            v, warp._grid(v, u), mode="bilinear", padding_mode="reflection", align_corners=False
        )

    cases = {
        "bare": energy,
        "aten_backward": lambda v: energy(grid_sample_warp(v, torch.rand((8, 4), generator=gen))),
        "own_backward": lambda v: energy(warp.warp(v, torch.rand((8, 4), generator=gen))),
    }
    u = torch.rand((8, 4), generator=gen)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(energy(grid_sample_warp(xa, u)).sum(), xa)
    (gb,) = torch.autograd.grad(energy(warp.warp(xb, u)).sum(), xb)
    assert torch.equal(ga, gb), "the two backward passes disagree"

    for fn in cases.values():
        fwd_bwd(fn, x, args.evals)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(fwd_bwd(fn, x, args.evals))
    saved = [a - b for a, b in zip(times["aten_backward"], times["own_backward"], strict=True)]
    q = statistics.quantiles(saved, n=4)
    results = {
        name: {
            "median_s": statistics.median(t),
            "ratio_to_bare_median": statistics.median(
                [a / b for a, b in zip(t, times["bare"], strict=True)]
            ),
        }
        for name, t in times.items()
    }
    results["saved_per_eval_s"] = {"median": statistics.median(saved), "quartiles": [q[0], q[2]]}
    for name in cases:
        r = results[name]
        print(f"{name:14s} {r['median_s'] * 1e3:6.2f} ms, {r['ratio_to_bare_median']:.3f} of bare")
    print(
        f"own backward saves {statistics.median(saved) * 1e3:.2f} ms per evaluation "
        f"(quartiles {q[0] * 1e3:.2f}-{q[2] * 1e3:.2f}, {args.rounds} rounds)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
