"""Sampler core benchmark: ratios measured side by side in one run.

1. One MALA step / one energy+gradient evaluation of a small CNN energy on the same batch
   (the kernel alone, and a whole ``sample()`` step with recording and progress bookkeeping),
   for the classic MNIST CNN on 64 digits and for a tiny 3-layer CNN on 8 RGB 64x64 images
   (little compute per pixel: the worst case for the sampler's per-pixel work).
2. One MALA step / one ULA step.
3. Energy+gradient time with glibc's default allocator settings vs ``cpu.tune_malloc()``.
4. Peak memory of a disk-recorded run (64 chains of 1x28x28 images, thinned x10) at 2 000 and
   20 000 steps, each in a fresh process; the in-memory recorder alongside for contrast.
5. The crash-safe record's write cost: a ``sample()`` MALA step on the MNIST CNN, batch 64,
   thin 10, recorded to a zarr record with a checkpoint every 100 steps (as the command does)
   / the same step recorded in memory, in alternating rounds.

With ``--device cuda`` only part 1 and 2 run (on the GPU, each timing ending with a
``torch.cuda.synchronize()``); parts 3 and 4 are about the CPU's allocator and memory.

Usage: python benchmarks/bench_sampler.py [--quick] [--device DEVICE] [--json results.json]
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
from langevin_images.cpu import tune_malloc
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


def _sync() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(fns: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each round; the calls are interleaved round by
    round so that slow drifts of the machine's load hit all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync()
            times[k].append((time.perf_counter() - t0) / reps)
    return times


def _ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """Median and quartiles of the per-round ratios a / b."""
    r = sorted(x / y for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(r, n=4)
    return {"median": statistics.median(r), "q1": q[0], "q3": q[2]}


def step_costs(net: torch.nn.Module, x: torch.Tensor, quick: bool) -> dict:
    energy = cnn_energy(net)
    state = kernel.init(energy, x)
    eps = torch.full((x.shape[0],), 1e-3, dtype=torch.float64, device=x.device)
    gen = torch.Generator(device=x.device).manual_seed(0)
    ident = Preconditioner()

    def mala():
        kernel.step(state, energy, eps, gen, temperature=1.0, adjust=True, preconditioner=ident)

    def ula():
        kernel.step(state, energy, eps, gen, temperature=1.0, adjust=False, preconditioner=ident)

    # sample() is timed on runs of n_drv steps against blocks of n_drv + 1 evaluations. Short
    # runs called back to back overstate its cost on the CPU: each run allocates and frees
    # its recorder, which moves glibc's mmap threshold so that the model's activations are
    # page-faulted anew (measured: the sample()/manual-loop ratio fell from ~1.09 to ~1.015
    # with MALLOC_MMAP_THRESHOLD_ set); in one long run the allocator settles.
    n_drv = 5 if quick else 60

    def driver_step():
        li.sample(energy, x, steps=n_drv, step_size=1e-3, progress=False)

    def eval_block():
        for _ in range(n_drv + 1):
            kernel.energy_and_grad(energy, x)

    for fn in (mala, ula, driver_step):  # warm up allocator and kernels
        fn()
    rounds, reps = (5, 3) if quick else (25, 4)
    t = interleaved(
        {
            "energy_grad": lambda: kernel.energy_and_grad(energy, x),
            "mala_step": mala,
            "ula_step": ula,
        },
        rounds,
        reps,
    )
    long = interleaved({"eval_block": eval_block, "sample_loop": driver_step}, 3 if quick else 8, 1)
    # a sample() call of n steps does n + 1 evaluations (the first at x0)
    t["sample_step"] = [v / (n_drv + 1) for v in long["sample_loop"]]
    t["energy_grad_in_blocks"] = [v / (n_drv + 1) for v in long["eval_block"]]
    return {
        "batch": list(x.shape),
        "seconds": {k: statistics.median(v) for k, v in t.items()},
        "mala_over_energy_grad": _ratio(t["mala_step"], t["energy_grad"]),
        "sample_step_over_energy_grad": _ratio(t["sample_step"], t["energy_grad_in_blocks"]),
        "mala_over_ula": _ratio(t["mala_step"], t["ula_step"]),
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


def record_cost(quick: bool) -> dict:
    """Seconds per ``sample()`` step with the crash-safe record (blocks and checkpoints of 100
    steps, the command's default) and in memory, in alternating rounds of one run each."""
    from langevin_images.recording import ZarrRecorder

    energy, x0 = cnn_energy(mnist_cnn()), torch.rand((64, 1, 28, 28))
    steps = 100 if quick else 400
    kw = dict(steps=steps, thin=10, step_size=5e-3, progress=False, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        n = {"i": 0}

        def disk():
            n["i"] += 1
            li.sample(energy, x0, record_to=ZarrRecorder(f"{tmp}/r{n['i']}", buffer_steps=100),
                      **kw)  # fmt: skip

        def mem():
            li.sample(energy, x0, **kw)

        disk(), mem()  # warm-up
        t = interleaved({"zarr_record": disk, "memory": mem}, 3 if quick else 7, 1)
    return {
        "batch": list(x0.shape),
        "steps_per_round": steps,
        "seconds_per_step": {k: statistics.median(v) / (steps + 1) for k, v in t.items()},
        "record_over_memory": _ratio(t["zarr_record"], t["memory"]),
    }


def memory(quick: bool) -> dict:
    """Growth of the peak resident memory during a run over the memory before it, each run in
    a fresh process (the peak is reset after imports and a short warm-up run)."""
    out = {}
    sizes = (200, 2000) if quick else (2000, 20000)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("disk", "memory"):
            for steps in sizes:
                target = str(Path(tmp) / f"run{steps}.zarr") if kind == "disk" else "memory"
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


MALLOC_CHILD = """
import sys, time, torch
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "tuned":
    from langevin_images.cpu import tune_malloc
    tune_malloc()
from bench_sampler import cnn_energy, mnist_cnn
from langevin_images.samplers import kernel
energy, x = cnn_energy(mnist_cnn()), torch.rand((64, 1, 28, 28))
for _ in range(5):
    kernel.energy_and_grad(energy, x)
t0 = time.perf_counter()
for _ in range(int(sys.argv[3])):
    kernel.energy_and_grad(energy, x)
print((time.perf_counter() - t0) / int(sys.argv[3]))
"""


def malloc_ab(quick: bool) -> dict:
    """Energy+gradient time of the MNIST CNN with glibc's default allocator settings and with
    ``tune_malloc()``, in alternating fresh processes (the settings are process-wide)."""
    times = {"default": [], "tuned": []}
    here = str(Path(__file__).parent)
    for _ in range(2 if quick else 4):
        for kind in times:
            res = subprocess.run(
                [sys.executable, "-c", MALLOC_CHILD, kind, here, "20" if quick else "60"],
                capture_output=True,
                text=True,
                check=True,
            )
            times[kind].append(float(res.stdout))
    return {
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "default_over_tuned": _ratio(times["default"], times["tuned"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-malloc-tuning", action="store_true", help="keep glibc's default allocator settings"
    )
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else tune_malloc()
    print(f"glibc malloc tuned: {tuned}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = {"torch_threads": torch.get_num_threads(), "malloc_tuned": tuned, "device": args.device}
    dev = torch.device(args.device)
    cases = {
        "mnist_cnn": (mnist_cnn().to(dev), torch.rand((64, 1, 28, 28)).to(dev)),
        "tiny_cnn_64px": (tiny_cnn().to(dev), torch.rand((8, 3, 64, 64)).to(dev)),
    }
    for name, (net, x) in cases.items():
        s = res[name] = step_costs(net, x, args.quick)
        print(f"{name} energy, batch {s['batch']} ({res['torch_threads']} threads):")
        for k, v in s["seconds"].items():
            print(f"  {k:12s} {v * 1e3:8.2f} ms")
        for key, label in (
            ("mala_over_energy_grad", "MALA kernel step / energy+grad"),
            ("sample_step_over_energy_grad", "sample() step / energy+grad"),
            ("mala_over_ula", "MALA step / ULA step"),
        ):
            r = s[key]
            print(
                f"  {label:32s} {r['median']:.3f}  (per-round quartiles "
                f"{r['q1']:.3f}..{r['q3']:.3f})"
            )
    if dev.type != "cpu":
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return
    rc = res["record_cost"] = record_cost(args.quick)
    r = rc["record_over_memory"]
    print(
        f"MALA sample() step, MNIST CNN x64, thin 10: crash-safe record / in memory "
        f"{r['median']:.3f} (per-round quartiles {r['q1']:.3f}..{r['q3']:.3f})"
    )
    res["memory"] = memory(args.quick)
    m = res["memory"]
    ab = res["malloc"] = malloc_ab(args.quick)
    print(
        f"MNIST CNN energy+grad, glibc defaults / tune_malloc(): "
        f"{ab['default_over_tuned']['median']:.3f} "
        f"({ab['seconds']['default'] * 1e3:.1f} vs {ab['seconds']['tuned'] * 1e3:.1f} ms)"
    )
    print("peak memory growth during a run of 64 chains x 1x28x28, thin 10:")
    for k, v in m.items():
        print(f"  {k:14s} {v['peak_growth_mib']:8.1f} MiB  {v['seconds']:6.2f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
