"""Style transfer on VGG19: the shared feature pass, and time to a reference's final loss.

1. **Shared pass.** One energy+gradient evaluation of content (relu4_2) + style (relu1_1 ..
   relu5_1) + TV on the same batch, against one forward+backward pass of VGG19 to relu5_1
   (``autograd.grad`` of the sum of relu5_1's output w.r.t. the input), rounds alternating, the
   median ratio and its quartiles. Also the same energy with each term running its own pass
   (what a sum did before terms shared one), for comparison; and the Gram products alone
   (``F F^T`` and ``(G - T) F`` at the five style layers, on the same features), the floor
   under any exact float32 Gram loss.
2. **Time to the reference's loss.** The reference is written here after the PyTorch
   tutorial's recipe (``torch.optim.LBFGS`` with its defaults: lr 1, 20 iterations a step, no
   line search; the image clamped to [0, 1] in every closure; 300 closure evaluations; start
   from the content image), on the same VGG19 and the same loss (the project's normalized
   energy, computed in a plain forward loop over the network's layers). Then
   ``apps.style.transfer`` (L-BFGS on one scale and coarse to fine, and Adam; 300 evaluations)
   runs; the figure is the time until its full-size energy is at or below the reference's
   final energy, and its best one, over the reference's time. Clamping inside the closure can
   throw L-BFGS's curvature pairs off, so the reference's last iterate can be well above its
   best: both targets are reported. Where bfloat16 is fast (an AMX CPU), also
   ``precision="mixed"``: 9/10 of the evaluations with VGG19 in bfloat16, then float32; only
   float32 evaluations count as reaching the target. Each content photo (``--photos``) is a
   pair with the style; the summary is the median over pairs. The reference's final energy
   is chaotic (about 1 % either way with the thread count, or with a start moved within half
   a grey level): ``--reference-starts K`` runs it from K such starts, and the target is the
   median of their final energies, the time the median of theirs.

Usage: python benchmarks/bench_style.py [--quick] [--size PX] [--threads N] [--photos ...]
       [--reference-starts K] [--json FILE]
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
from langevin_images.datasets import PHOTOS, load_photo
from langevin_images.energies import capture
from langevin_images.energies.style import gram
from langevin_images.models import fast_bfloat16, load_model, reduced_precision

CONTENT, STYLE = "chelsea", "ihc"  # the shared pass's pair; the time runs every photo


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

    with torch.no_grad():
        flats = [f.reshape(chains, f.shape[1], -1)
                 for f in capture(model, list(STYLE_LAYERS), x).values()]  # fmt: skip
        diffs = [torch.randn(chains, f.shape[1], f.shape[1]) for f in flats]

    def gram_products():
        # what any exact float32 Gram loss must compute: G = F F^T and the gradient's (G - T) F
        with torch.no_grad():
            for f, d in zip(flats, diffs, strict=True):
                f @ f.transpose(1, 2)
                d @ f

    for fn in (energy_grad, separate_grad, forward_backward, gram_products):
        fn()  # warm up
    shared, apart, grams, base = [], [], [], []
    for _ in range(rounds):
        b = _timed(forward_backward)
        shared.append(_timed(energy_grad) / b)
        apart.append(_timed(separate_grad) / b)
        grams.append(_timed(gram_products) / b)
        base.append(b)
    q = statistics.quantiles(shared, n=4)
    return {
        "size": list(content.shape[-2:]), "chains": chains, "rounds": rounds,
        "forward_backward_s": statistics.median(base),
        "shared_over_forward_backward": statistics.median(shared),
        "quartiles": [q[0], q[2]],
        "separate_passes_over_forward_backward": statistics.median(apart),
        "gram_products_over_forward_backward": statistics.median(grams),
    }  # fmt: skip


def precision_costs(model, size: int, chains: int, rounds: int) -> dict:
    """Seconds of a forward+backward to relu5_1 and of an energy+gradient evaluation (content +
    style), with VGG19 in float32 and in bfloat16 (``reduced_precision``), rounds alternating."""
    content, style = load_photo(CONTENT, size), load_photo(STYLE, size)
    low = reduced_precision(model)
    x = content.expand(chains, -1, -1, -1).clone().requires_grad_(True)
    fns = {}
    for name, net in (("float32", model), ("bfloat16", low)):
        energy = style_energy(net, content, style)
        fns[f"forward_backward_{name}"] = lambda net=net: torch.autograd.grad(
            capture(net, ["relu5_1"], x)["relu5_1"].float().sum(), x
        )
        fns[f"energy_grad_{name}"] = lambda e=energy: torch.autograd.grad(e(x).sum(), x)
    for fn in fns.values():
        fn()  # warm up
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["size"], out["chains"] = list(content.shape[-2:]), chains
    return out


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


def reference(model, content, style, evals: int, start: torch.Tensor | None = None) -> dict:
    """The tutorial's recipe: LBFGS defaults, clamp in the closure, ``evals`` closures, from
    ``start`` (the content image by default)."""
    from langevin_images.apps.style import DEFAULTS

    loss_fn = _reference_loss(model, content, style, DEFAULTS)
    x = (content if start is None else start).clone().requires_grad_(True)
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
    """Seconds until the full-size float32 energy was at or below ``target`` (None: never; a
    bfloat16 evaluation's energy is the bfloat16 network's, so it does not count)."""
    hit = next((h for h in history if h["scale"] == last_scale and h["energy"] <= target
                and h.get("precision", "float32") == "float32"), None)  # fmt: skip
    return None if hit is None else hit["seconds"]


def _starts(content: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The content image, then ``n - 1`` copies of it moved by uniform noise within half a grey
    level (+-0.5/255, clamped to [0, 1]): starts no one could tell apart in an 8-bit file."""
    g = torch.Generator().manual_seed(0)
    noise = [(torch.rand(content.shape, generator=g) - 0.5) / 255 for _ in range(n - 1)]
    return [content] + [(content + e).clamp(0, 1) for e in noise]


def time_to_reference(
    model, size: int, evals: int, scales: int, content_name: str, reference_starts: int = 1
) -> dict:
    content, style = load_photo(content_name, size), load_photo(STYLE, size)
    energy = style_energy(model, content, style)
    # L-BFGS on this energy is chaotic: a different order of floating-point sums (another thread
    # count) or a start within half a grey level ends it about 1 % higher or lower. With several
    # starts, the target is the median of their final energies, and the time their median.
    refs, finals, agree = [], [], True
    for start in _starts(content, reference_starts):
        r = reference(model, content, style, evals, start)
        with torch.no_grad():
            finals.append(float(energy(r["x"])))
            agree &= abs(float(r["loss_fn"](r["x"])) - finals[-1]) <= 1e-4 * abs(finals[-1])
        refs.append(r)
    ref = {"seconds": statistics.median(r["seconds"] for r in refs),
           "best": statistics.median(r["best"] for r in refs),
           "evaluations": refs[0]["evaluations"]}  # fmt: skip
    ref_final = statistics.median(finals)
    rows = {}
    for label, optimizer, n_scales, precision, steps in _variants(scales, evals):
        result = transfer(content, style, model=model, optimizer=optimizer, steps=steps,
                          scales=n_scales, precision=precision, progress=False)  # fmt: skip
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
        "content": content_name, "size": list(content.shape[-2:]),
        "reference_evaluations": ref["evaluations"], "reference_seconds": ref["seconds"],
        "reference_final_energy": ref_final, "reference_best_energy": ref["best"],
        "reference_starts": len(refs), "reference_final_energies": finals,
        "reference_seconds_each": [r["seconds"] for r in refs],
        "reference_loss_agrees_with_energy": agree,
        "ours": rows,
    }  # fmt: skip


def _variants(scales: int, evals: int) -> list[tuple[str, str, int, str, int]]:
    """(label, optimizer, scales, precision, evaluations per scale); with bfloat16 evaluations
    at 0.37-0.45 of a float32 one here, mixed precision also runs 7/6 as many evaluations."""
    more = evals * 7 // 6
    variants = [("L-BFGS, one scale", "lbfgs", 1, "float32", evals),
                (f"L-BFGS, {scales} scales", "lbfgs", scales, "float32", evals // 2),
                ("Adam, one scale", "adam", 1, "float32", evals)]  # fmt: skip
    if fast_bfloat16("cpu"):
        variants += [("L-BFGS, mixed precision", "lbfgs", 1, "mixed", evals),
                     (f"L-BFGS, mixed precision, {more} evaluations", "lbfgs", 1, "mixed", more),
                     ("Adam, mixed precision", "adam", 1, "mixed", evals)]  # fmt: skip
    return variants


def _summary(pairs: list[dict], variants) -> dict:
    """Per variant, the median over pairs of the time to the reference's final (best) energy
    over its time, and how many pairs reached it; printed too."""
    summary = {}
    for label, *_ in variants:
        rows = [tr["ours"][label] for tr in pairs]
        summary[label] = {
            key: _median([r[f"ratio_to_reference_time_{key}"] for r in rows])
            for key in ("final", "best")
        } | {"reached_final": sum(r["ratio_to_reference_time_final"] is not None for r in rows),
             "pairs": len(rows)}  # fmt: skip
    print("median over pairs of the time to the reference's final (best) energy, over its time:")
    for label, row in summary.items():
        f = "-" if row["final"] is None else f"{row['final']:.2f}"
        b = "-" if row["best"] is None else f"{row['best']:.2f}"
        print(f"  {label}: {f} ({b}); reached in {row['reached_final']} of {row['pairs']}")
    return summary


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--photos", nargs="+", default=list(PHOTOS), help="the contents")
    p.add_argument("--reference-starts", type=int, default=1, metavar="K",
                   help="run the reference from K starts (the content, then K - 1 within half a "
                        "grey level of it); the target is their median final energy")  # fmt: skip
    p.add_argument("--json", default=None)
    p.add_argument(
        "--costs-only",
        action="store_true",
        help="only the shared pass and the precision costs (no optimizations)",
    )
    args = p.parse_args()
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("vgg19")
    quick = args.quick
    photos = args.photos[:1] if quick else args.photos
    out = {
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "shared_pass": shared_pass(model, 64 if quick else args.size, 2, 5 if quick else 15),
        "time_to_reference": [],
    }  # fmt: skip
    sp = out["shared_pass"]
    print(f"shared pass, {sp['size']} x{sp['chains']}: energy+gradient / forward+backward to "
          f"relu5_1 = {sp['shared_over_forward_backward']:.3f} (quartiles "
          f"{sp['quartiles'][0]:.3f}-{sp['quartiles'][1]:.3f}); one pass per term: "
          f"{sp['separate_passes_over_forward_backward']:.3f}; the Gram products alone: "
          f"{sp['gram_products_over_forward_backward']:.3f}", flush=True)  # fmt: skip
    if fast_bfloat16("cpu"):
        pc = precision_costs(model, 64 if quick else args.size, 1, 3 if quick else 11)
        out["precision_costs"] = pc
        print(f"float32 / bfloat16, {pc['size']} x1: forward+backward "
              f"{pc['forward_backward_float32']:.3f} / {pc['forward_backward_bfloat16']:.3f} s, "
              f"energy+gradient {pc['energy_grad_float32']:.3f} / "
              f"{pc['energy_grad_bfloat16']:.3f} s", flush=True)  # fmt: skip
    if args.costs_only:
        photos = []
    evals = 30 if quick else 300
    for name in photos:
        tr = time_to_reference(model, 48 if quick else args.size, evals,
                               args.scales, name, args.reference_starts)  # fmt: skip
        out["time_to_reference"].append(tr)
        each = ", ".join(f"{e:.4f}" for e in tr["reference_final_energies"])
        print(f"{name} x {STYLE}: reference (tutorial L-BFGS, {tr['reference_evaluations']} "
              f"evaluations) {tr['reference_seconds']:.1f} s; final energy "
              f"{tr['reference_final_energy']:.4f} ({each}), "
              f"best {tr['reference_best_energy']:.4f}")  # fmt: skip
        for label, row in tr["ours"].items():
            parts = []
            for key in ("final", "best"):
                r = row[f"ratio_to_reference_time_{key}"]
                parts.append(f"its {key} in " + ("-" if r is None else f"{r:.2f}x its time"))
            print(f"  {label}: {'; '.join(parts)}; own final {row['final_energy']:.4f} after "
                  f"{row['seconds_total']:.1f} s", flush=True)  # fmt: skip
    if out["time_to_reference"]:  # --costs-only runs no pair: no summary
        out["summary"] = _summary(out["time_to_reference"], _variants(args.scales, evals))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
