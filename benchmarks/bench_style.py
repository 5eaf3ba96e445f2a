"""Style transfer on VGG19: the shared feature pass, and time to a reference's final loss.

1. **Shared pass.** One energy+gradient evaluation of content (relu4_2) + style (relu1_1 ..
   relu5_1) + TV on the same batch, against one forward+backward pass of VGG19 to relu5_1
   (``autograd.grad`` of the sum of relu5_1's output w.r.t. the input), rounds alternating, the
   median ratio and its quartiles. Also the same energy with each term running its own pass
   (what a sum did before terms shared one), for comparison.
2. **Time to the reference's loss.** The reference is written here after the PyTorch
   tutorial's recipe (``torch.optim.LBFGS`` with its defaults: lr 1, 20 iterations a step, no
   line search; the image clamped to [0, 1] in every closure; 300 closure evaluations; start
   from the content image), on the same VGG19 and the same loss (the project's normalized
   energy, computed in a plain forward loop over the network's layers). Then
   ``apps.style.transfer`` (L-BFGS with a strong-Wolfe line search on one scale and coarse to
   fine, and Adam) runs; the figure is the time until its full-size energy is at or below the
   reference's final energy, and its best one, over the reference's time. The tutorial's
   clamping inside the closure breaks L-BFGS's curvature pairs, so its last iterate is often
   well above its best: both targets are reported.

Usage: python benchmarks/bench_style.py [--quick] [--size PX] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from langevin_images.apps.style import CONTENT_LAYERS, STYLE_LAYERS, style_energy, transfer
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.energies import capture
from langevin_images.energies.style import gram
from langevin_images.models import load_model

CONTENT, STYLE = "chelsea", "ihc"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def shared_pass(model, size: int, chains: int, rounds: int) -> dict:
    content, style = load_photo(CONTENT, size), load_photo(STYLE, size)
    energy = style_energy(model, content, style, tv_weight=0.1)
    separate = [part for part in energy.parts]
    x = content.expand(chains, -1, -1, -1).clone().requires_grad_(True)

    def energy_grad():
        torch.autograd.grad(energy(x).sum(), x)

    def separate_grad():
        torch.autograd.grad(sum(p(x) for p in separate).sum(), x)

    def forward_backward():
        torch.autograd.grad(capture(model, ["relu5_1"], x)["relu5_1"].sum(), x)

    for fn in (energy_grad, separate_grad, forward_backward):
        fn()  # warm up
    shared, apart, base = [], [], []
    for _ in range(rounds):
        b = _timed(forward_backward)
        shared.append(_timed(energy_grad) / b)
        apart.append(_timed(separate_grad) / b)
        base.append(b)
    q = statistics.quantiles(shared, n=4)
    return {
        "size": list(content.shape[-2:]), "chains": chains, "rounds": rounds,
        "forward_backward_s": statistics.median(base),
        "shared_over_forward_backward": statistics.median(shared),
        "quartiles": [q[0], q[2]],
        "separate_passes_over_forward_backward": statistics.median(apart),
    }  # fmt: skip


def _reference_loss(model, content, style, weights):
    """The same normalized energy as ``style_energy``, in a plain loop over the layers."""
    net = model.net
    wanted = set(CONTENT_LAYERS) | set(STYLE_LAYERS)
    last = max(list(net._modules).index(k) for k in wanted)

    def features(x):
        out, h = {}, model.normalize(x)
        for i, (name, layer) in enumerate(net.named_children()):
            h = layer(h)
            if name in wanted:
                out[name] = h
            if i == last:
                return out

    with torch.no_grad():
        fc, fs = features(content), features(style)
    targets_c = {k: fc[k] for k in CONTENT_LAYERS}
    targets_s = {k: gram(fs[k]) for k in STYLE_LAYERS}

    def loss(x):
        f = features(x)
        c = sum((f[k] - t).square().sum() / t.square().sum() for k, t in targets_c.items())
        s = sum((gram(f[k]) - t).square().sum() / t.square().sum() for k, t in targets_s.items())
        return weights["content_weight"] * c / len(targets_c) + weights["style_weight"] * s / len(
            targets_s
        )

    return loss


def reference(model, content, style, evals: int) -> dict:
    """The tutorial's recipe: LBFGS defaults, clamp in the closure, ``evals`` closures."""
    from langevin_images.apps.style import DEFAULTS

    loss_fn = _reference_loss(model, content, style, DEFAULTS)
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x])
    curve: list[float] = []
    t0 = time.perf_counter()

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        curve.append(float(loss.detach()))
        return loss

    while len(curve) < evals:
        opt.step(closure)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        x.clamp_(0, 1)
    return {"evaluations": len(curve), "seconds": seconds, "x": x.detach(), "loss_fn": loss_fn,
            "best": min(curve)}  # fmt: skip


def _reach(history: list[dict], last_scale: int, target: float) -> float | None:
    """Seconds until the full-size energy was at or below ``target`` (None: never)."""
    hit = next((h for h in history if h["scale"] == last_scale and h["energy"] <= target), None)
    return None if hit is None else hit["seconds"]


def time_to_reference(model, size: int, evals: int, scales: int) -> dict:
    content, style = load_photo(CONTENT, size), load_photo(STYLE, size)
    energy = style_energy(model, content, style)
    ref = reference(model, content, style, evals)
    with torch.no_grad():
        ref_final = float(energy(ref["x"]))
        agree = float(ref["loss_fn"](ref["x"]))
    rows = {}
    variants = (("L-BFGS, one scale", "lbfgs", 1), (f"L-BFGS, {scales} scales", "lbfgs", scales),
                ("Adam, one scale", "adam", 1))  # fmt: skip
    for label, optimizer, n_scales in variants:
        steps = evals if n_scales == 1 else evals // 2
        result = transfer(content, style, model=model, optimizer=optimizer, steps=steps,
                          scales=n_scales, progress=False)  # fmt: skip
        with torch.no_grad():
            final = float(energy(result.images))
        row = {"final_energy": final, "seconds_total": result.seconds,
               "evaluations_total": len(result.history)}  # fmt: skip
        for key, target in (("final", ref_final), ("best", ref["best"])):
            t = _reach(result.history, n_scales - 1, target)
            row[f"seconds_to_reference_{key}"] = t
            row[f"ratio_to_reference_time_{key}"] = None if t is None else t / ref["seconds"]
        rows[label] = row
    return {
        "size": list(content.shape[-2:]), "reference_evaluations": ref["evaluations"],
        "reference_seconds": ref["seconds"], "reference_final_energy": ref_final,
        "reference_best_energy": ref["best"],
        "reference_loss_agrees_with_energy": abs(agree - ref_final) <= 1e-4 * abs(ref_final),
        "ours": rows,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("vgg19")
    quick = args.quick
    out = {
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "shared_pass": shared_pass(model, 64 if quick else args.size, 2, 5 if quick else 15),
        "time_to_reference": time_to_reference(model, 48 if quick else args.size,
                                               30 if quick else 300, args.scales),
    }  # fmt: skip
    sp, tr = out["shared_pass"], out["time_to_reference"]
    print(f"shared pass, {sp['size']} x{sp['chains']}: energy+gradient / forward+backward to "
          f"relu5_1 = {sp['shared_over_forward_backward']:.3f} (quartiles "
          f"{sp['quartiles'][0]:.3f}-{sp['quartiles'][1]:.3f}); one pass per term: "
          f"{sp['separate_passes_over_forward_backward']:.3f}")  # fmt: skip
    print(f"reference (tutorial L-BFGS, {tr['reference_evaluations']} evaluations): "
          f"{tr['reference_seconds']:.1f} s; final energy {tr['reference_final_energy']:.4f}, "
          f"best {tr['reference_best_energy']:.4f}")  # fmt: skip
    for label, row in tr["ours"].items():
        parts = []
        for key in ("final", "best"):
            r = row[f"ratio_to_reference_time_{key}"]
            parts.append(f"its {key} in " + ("-" if r is None else f"{r:.2f}x its time"))
        print(f"  {label}: {'; '.join(parts)}; own final {row['final_energy']:.4f} after "
              f"{row['seconds_total']:.1f} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
