"""Sampler core benchmark: ratios measured side by side in one run.

1. One MALA step / one energy+gradient evaluation of a small CNN energy on the same batch
   (the kernel alone, and a whole ``sample()`` step with recording and progress bookkeeping),
   for the classic MNIST CNN on 64 digits and for a tiny 3-layer CNN on 8 RGB 64x64 images
   (little compute per pixel: the worst case for the sampler's per-pixel work).
2. One MALA step / one ULA step.
3. Peak memory of a disk-recorded run (64 chains of 1x28x28 images, thinned x10) at 2 000 and
   20 000 steps, each in a fresh process; the in-memory recorder alongside for contrast.

Usage: python benchmarks/bench_sampler.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import langevin_images as li
from langevin_images.samplers import kernel
from langevin_images.samplers.preconditioners import Preconditioner


def mnist_cnn() -> torch.nn.Module:
    """The classic MNIST CNN (two 3x3 convolutions, max-pool, two linear layers), random."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(9216, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )
    return net.eval().requires_grad_(False)


def tiny_cnn() -> torch.nn.Module:
    """Three strided convolutions on 64x64 RGB: little compute per pixel, the worst case for
    the sampler's per-pixel overhead."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )
    return net.eval().requires_grad_(False)


def cnn_energy(net: torch.nn.Module):
    def energy(x: torch.Tensor) -> torch.Tensor:
        return -torch.log_softmax(net(x), 1)[:, 3] + 0.5 * x.square().flatten(1).sum(1)

    return energy


def interleaved(fns: dict, rounds: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round so that
    machine noise hits all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def step_costs(net: torch.nn.Module, x: torch.Tensor, quick: bool) -> dict:
    energy = cnn_energy(net)
    state = kernel.init(energy, x)
    eps = torch.full((x.shape[0],), 1e-3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    ident = Preconditioner()

    def mala():
        kernel.step(state, energy, eps, gen, temperature=1.0, adjust=True, preconditioner=ident)

    def ula():
        kernel.step(state, energy, eps, gen, temperature=1.0, adjust=False, preconditioner=ident)

    n_drv = 5 if quick else 40

    def driver_step():
        li.sample(energy, x, steps=n_drv, step_size=1e-3, progress=False)

    for fn in (mala, ula, driver_step):  # warm up allocator and kernels
        fn()
    rounds, reps = (5, 3) if quick else (15, 5)
    t = interleaved(
        {
            "energy_grad": lambda: kernel.energy_and_grad(energy, x),
            "mala_step": mala,
            "ula_step": ula,
            "sample_loop": driver_step,
        },
        rounds,
        reps,
    )
    # a sample() call of n steps does n + 1 evaluations (the first at x0)
    t["sample_step"] = t.pop("sample_loop") / (n_drv + 1)
    return {
        "batch": list(x.shape),
        "seconds": t,
        "mala_over_energy_grad": t["mala_step"] / t["energy_grad"],
        "sample_step_over_energy_grad": t["sample_step"] / t["energy_grad"],
        "mala_over_ula": t["mala_step"] / t["ula_step"],
    }


CHILD = """
import sys, time, torch, langevin_images as li
steps, path = int(sys.argv[1]), sys.argv[2]
def energy(x):
    return 0.5 * (x - 0.5).square().flatten(1).sum(1) / 0.1**2
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
x0 = torch.rand((64, 1, 28, 28))
kw = dict(thin=10, step_size=5e-3, progress=False)
li.sample(energy, x0, steps=20, record_to=None if path == "memory" else path + ".warm", **kw)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
t0 = time.perf_counter()
run = li.sample(energy, x0, steps=steps, record_to=None if path == "memory" else path, **kw)
wall = time.perf_counter() - t0
print(status("VmHWM:") - base, wall, run.recorder.completed)
"""


def memory(quick: bool) -> dict:
    """Growth of the peak resident memory during a run over the memory before it, each run in
    a fresh process (the peak is reset after imports and a short warm-up run)."""
    out = {}
    sizes = (200, 2000) if quick else (2000, 20000)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("disk", "memory"):
            for steps in sizes:
                target = str(Path(tmp) / f"run{steps}.nc") if kind == "disk" else "memory"
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, str(steps), target],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                growth, wall, done = res.stdout.split()
                out[f"{kind}_{steps}"] = {
                    "peak_growth_mib": round(float(growth), 1),
                    "seconds": round(float(wall), 2),
                    "steps": int(done),
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = {"torch_threads": torch.get_num_threads()}
    cases = {
        "mnist_cnn": (mnist_cnn(), torch.rand((64, 1, 28, 28))),
        "tiny_cnn_64px": (tiny_cnn(), torch.rand((8, 3, 64, 64))),
    }
    for name, (net, x) in cases.items():
        s = res[name] = step_costs(net, x, args.quick)
        print(f"{name} energy, batch {s['batch']} ({res['torch_threads']} threads):")
        for k, v in s["seconds"].items():
            print(f"  {k:12s} {v * 1e3:8.2f} ms")
        print(f"  MALA kernel step / energy+grad   {s['mala_over_energy_grad']:.3f}")
        print(f"  sample() step / energy+grad      {s['sample_step_over_energy_grad']:.3f}")
        print(f"  MALA step / ULA step             {s['mala_over_ula']:.3f}")
    res["memory"] = memory(args.quick)
    m = res["memory"]
    print("peak memory growth during a run of 64 chains x 1x28x28, thin 10:")
    for k, v in m.items():
        print(f"  {k:14s} {v['peak_growth_mib']:8.1f} MiB  {v['seconds']:6.2f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
