"""What an activation-maximization step and a DeepDream step cost, against one forward and one
backward pass of the same model on the same batch, measured side by side in one run.

- AM: lite0, 8 channels of ``_blocks.9`` at 128 x 128; a step of ``visualize``'s run (random
  affine transform, colour + 1/f preconditioner, logistic bounds, normalized descent,
  recording) vs ``autograd.grad`` of the plain activation energy (no transform), and vs
  ``autograd.grad`` of the energy as sampled (with its random affine transform): the second
  ratio is the sampler's own share.
- Class visualization: the same at the class likelihood of all of lite0 (8 classes), the
  deepest energy there is, with the same transform, preconditioner and bounds.
- DeepDream: lite0, layer ``_blocks.9``, one chelsea photo at 192 px (the last octave's size);
  a step of the octave's run (random roll, normalized descent) vs ``autograd.grad`` of the
  plain ``DreamEnergy``.

A step's time is a whole ``sample()`` run of ``n`` steps divided by its ``n + 1``
energy+gradient evaluations (the start costs one); rounds alternate the two measurements and
the report gives the median ratio and its quartiles.

Usage: python benchmarks/bench_apps.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import langevin_images as li
from langevin_images.apps.visualize import _energy, _preconditioner
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.energies import (
    ActivationEnergy,
    ClassLikelihood,
    DreamEnergy,
    RandomAffine,
    RandomRoll,
    Transformed,
)
from langevin_images.models import load_model

LAYER = "_blocks.9"


def fwd_bwd(energy, x: torch.Tensor, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(energy(xi).sum(), xi)
    return (time.perf_counter() - t0) / n


def step_time(run_fn, n: int) -> float:
    t0 = time.perf_counter()
    run_fn(n)
    return (time.perf_counter() - t0) / (n + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_malloc()
    model = load_model("lite0")
    rounds, n = (2, 3) if args.quick else (7, 20)

    size, channels = 128, list(range(8))
    g = torch.Generator().manual_seed(0)
    x_am = (0.5 + 0.05 * torch.randn((8, 3, size, size), generator=g)).clamp(0.01, 0.99)
    plain_am = ActivationEnergy(model, LAYER, channel=torch.tensor(channels))
    _, am_energy = _energy(model, LAYER, channels, None, size, None, (0.95, 1.05), 5.0, 0.0, 0)
    precond = _preconditioner(3, size, True, 1.0)

    def am_run(steps):
        li.sample(
            am_energy, x_am, steps=steps, method="descent", step_size=0.05,
            preconditioner=precond, bounds=(0.0, 1.0), normalize_step=True, progress=False,
        )  # fmt: skip

    classes = ClassLikelihood(model, list(range(0, 800, 100)))
    cls_energy = Transformed(classes, RandomAffine(8, (0.95, 1.05), 5.0, seed=0))

    def cls_run(steps):
        li.sample(
            cls_energy, x_am, steps=steps, method="descent", step_size=0.05,
            preconditioner=precond, bounds=(0.0, 1.0), normalize_step=True, progress=False,
        )  # fmt: skip

    photo = load_photo("chelsea", 192)
    plain_dd = DreamEnergy(model, [LAYER])
    dd_energy = Transformed(plain_dd, RandomRoll(32, seed=0))

    def dd_run(steps):
        li.sample(
            dd_energy, photo, steps=steps, method="descent", step_size=1.5 / 255,
            normalize_step=True, progress=False,
        )  # fmt: skip

    results = {}
    for name, run_fn, plain, full, x in (
        ("activation_maximization", am_run, plain_am, am_energy, x_am),
        ("class_visualization", cls_run, classes, cls_energy, x_am),
        ("deepdream", dd_run, plain_dd, dd_energy, photo),
    ):
        fwd_bwd(plain, x, 2)
        run_fn(2)
        ratios, steps, bases, full_ratios = [], [], [], []
        for _ in range(rounds):
            base = fwd_bwd(plain, x, n)
            step = step_time(run_fn, n)
            with_transform = fwd_bwd(full, x, n)
            ratios.append(step / base)
            full_ratios.append(step / with_transform)
            steps.append(step)
            bases.append(base)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        results[name] = {
            "batch": list(x.shape),
            "fwd_bwd_s": statistics.median(bases),
            "step_s": statistics.median(steps),
            "ratio_median": statistics.median(ratios),
            "ratio_quartiles": [q[0], q[2]],
            "ratios": ratios,
            "ratio_vs_energy_with_transform_median": statistics.median(full_ratios),
        }
        r = results[name]
        print(
            f"{name:24s} {tuple(x.shape)}: fwd+bwd {r['fwd_bwd_s'] * 1e3:7.1f} ms, step "
            f"{r['step_s'] * 1e3:7.1f} ms, ratio {r['ratio_median']:.3f} "
            f"(quartiles {q[0]:.3f}-{q[2]:.3f}); vs fwd+bwd with the transform "
            f"{r['ratio_vs_energy_with_transform_median']:.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
