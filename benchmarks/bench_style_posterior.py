"""Posterior style transfer: how the temperature trades the style energy against diversity.

One content/style pair (chelsea, ihc) on VGG19; the minimum of the Gatys energy by L-BFGS,
then for each temperature ``T`` MALA chains started from it (``apps.style.sample_posterior``:
colour x 1/f preconditioner, [0, 1] exactly, dual averaging to acceptance 0.574 in warmup).
Per ``T``: acceptance, the energy terms over the draws (and the excess energy over the minimum,
which is about ``T / 2`` where the energy is locally quadratic, and over each tenth of the
draws), the worst R-hat and bulk ESS of the scalar summaries (energy terms, pixel and feature
projections), and the diversity of the chains' last draws (pixel RMS distance, relative
distances of VGG features and Gram matrices, Vendi of centred features). Writes the plot of
diversity against style energy and a grid of the chains (a row per T, and with ``--spread``
a row per T for each start: the minimum, then the spread-out one).

The chains drift away from the minimum for thousands of steps, so what they give is below the
equilibrium's. ``--spread S`` also runs each T from chains started S (RMS over the pixel
values) from the minimum, further out than the equilibrium: their excess energy falls. Where
the two have flattened close together, they bracket the equilibrium's (Gelman & Rubin's
over-dispersed starts); the JSON's ``brackets`` gives both ends per T.

Usage: python benchmarks/bench_style_posterior.py [--quick] [--size PX] [--chains N]
       [--steps N] [--warmup N] [--temperatures T ...] [--spread S [--spread-only]] [--json FILE]
       [--plot FILE] [--grid FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from langevin_images.apps.style import (
    sample_posterior,
    style_diversity,
    style_energy,
    transfer,
)
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.diagnostics import diagnose
from langevin_images.energies import capture
from langevin_images.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--model", default="vgg19")
    p.add_argument("--temperatures", type=float, nargs="*",
                   default=[0.003, 0.01, 0.03, 0.1, 0.3])  # fmt: skip
    p.add_argument("--spread", type=float, default=0.0,
                   help="also run each T from chains started this far (RMS over the pixel "
                   "values, 0-1 units) from the minimum, to bracket the equilibrium")  # fmt: skip
    p.add_argument(
        "--spread-only",
        action="store_true",
        help="run only the spread-out starts (the side from the minimum elsewhere)",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--grid", default=None)
    p.add_argument("--replot", default=None, metavar="JSON",
                   help="only redraw --plot from the rows of an earlier --json")  # fmt: skip
    args = p.parse_args()
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        _plot(saved["rows"], saved["minimum"], args.plot)
        return
    if args.quick:
        args.size, args.steps, args.warmup, args.temperatures = 32, 8, 8, [0.01, 0.1]
    tune_malloc()
    model = load_model(args.model)
    content, style = load_photo("chelsea", args.size), load_photo("ihc", args.size)
    energy = style_energy(model, content, style)
    t0 = time.perf_counter()
    mode = transfer(content, style, model=model, steps=10 if args.quick else 200,
                    progress=False).images  # fmt: skip
    with torch.no_grad():
        e0 = {k: float(v) for k, v in energy.terms(mode).items()}
    e0["energy"] = sum(e0.values())
    print(f"T = 0 (L-BFGS): {e0} in {time.perf_counter() - t0:.1f} s", flush=True)

    def features(x):
        return capture(model, ["relu4_2"], x)["relu4_2"].flatten(1)

    rows, finals = [], []
    spreads = ([] if args.spread_only else [0.0]) + ([args.spread] if args.spread else [])
    for temperature, spread in ((temp, s) for temp in args.temperatures for s in spreads):
        t = time.perf_counter()
        run = sample_posterior(energy, mode, temperature=temperature, chains=args.chains,
                               steps=args.steps, warmup=args.warmup, spread=spread,
                               progress=False)  # fmt: skip
        seconds = time.perf_counter() - t
        dt = run.to_datatree(projections=8, features=features)
        verdict = diagnose(dt)
        table = verdict.table
        post = dt["posterior"]
        terms = {k: float(post[k].mean()) for k in ("energy", "content", "style")}
        # the excess energy over each tenth of the draws: still rising means still drifting
        # away from the start (at equilibrium it is flat; T/2 only if every direction is
        # quadratic inside [0, 1], a direction the energy hardly sees adds nothing)
        tenths = torch.tensor(post["energy"].values).chunk(10, dim=1)
        excess_by_tenth = [float(part.mean()) - e0["energy"] for part in tenths]
        final = run.final_position.detach()
        finals.append(final)
        row = {
            "temperature": temperature, "spread": spread, "seconds": seconds,
            "acceptance": float(run.acceptance_rate.mean()),
            "step_size": float(run.stats["step_size"][:, -1].mean()),
            **{f"mean_{k}": v for k, v in terms.items()},
            "excess_energy": terms["energy"] - e0["energy"], "half_t": temperature / 2,
            "excess_by_tenth": excess_by_tenth,
            "max_rhat": float(table["r_hat"].max()), "min_ess_bulk": float(table["ess_bulk"].min()),
            "converged": bool(verdict.ok),
            **style_diversity(model, final),
        }  # fmt: skip
        rows.append(row)
        print(f"T {temperature:g}, spread {spread:g}: acc {row['acceptance']:.2f}, "
              f"style {terms['style']:.4f}, excess by tenth "
              f"{' '.join(f'{v:.3f}' for v in excess_by_tenth)}, "
              f"content {terms['content']:.4f}, excess {row['excess_energy']:.4f} (T/2 "
              f"{temperature / 2:.4f}), R-hat {row['max_rhat']:.2f}, ESS {row['min_ess_bulk']:.0f}"
              f", pixel RMS {row['pixel_rms']:.4f}, Vendi {row['vendi_features']:.2f}, "
              f"{seconds:.0f} s", flush=True)  # fmt: skip
    out = {"size": list(content.shape[-2:]), "model": args.model, "chains": args.chains,
           "steps": args.steps, "warmup": args.warmup, "minimum": e0, "rows": rows}  # fmt: skip
    if args.spread and not args.spread_only:
        out["brackets"] = _brackets(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        _plot(rows, e0, args.plot)
    if args.grid:
        from PIL import Image

        from langevin_images.diagnostics.plots import image_grid

        grid = torch.stack([torch.cat([mode, f]) for f in finals])
        Image.fromarray(image_grid(grid.numpy())).save(args.grid)


def _brackets(rows) -> list[dict]:
    """Per T, the last tenth's excess energy, the mean style energy and the final draws' pixel
    RMS distance, from the chains started at the minimum (rising: below the equilibrium's) and
    from the spread-out starts (falling: above it, once the fall has flattened)."""
    out = []
    for low in (r for r in rows if not r["spread"]):
        high = next(r for r in rows if r["spread"] and r["temperature"] == low["temperature"])
        out.append({
            "temperature": low["temperature"],
            "excess_last_tenth": [low["excess_by_tenth"][-1], high["excess_by_tenth"][-1]],
            "pixel_rms": [low["pixel_rms"], high["pixel_rms"]],
            "style": [low["mean_style"], high["mean_style"]],
        })  # fmt: skip
        b = out[-1]
        print(
            f"T {b['temperature']:g}: excess in the last tenth {b['excess_last_tenth'][0]:.4f} "
            f"from the minimum, {b['excess_last_tenth'][1]:.4f} from the spread starts; "
            f"pixel RMS between chains {b['pixel_rms'][0]:.4f} / {b['pixel_rms'][1]:.4f}"
        )
    return out


def _plot(rows, e0, path) -> None:
    """Diversity against style energy, a line per start (with ``--spread``: from the minimum,
    from below, and from the spread-out starts, from above; the equilibrium lies between)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    spreads = sorted({r.get("spread", 0.0) for r in rows})
    for ax, key, label in ((axes[0], "pixel_rms", "pixel RMS distance between chains"),
                           (axes[1], "gram_relative", "Gram distance between chains")):  # fmt: skip
        for spread in spreads:
            line = [r for r in rows if r.get("spread", 0.0) == spread]
            name = "from the minimum" if not spread else f"from starts {spread:g} RMS away"
            ax.plot([r["mean_style"] for r in line], [r[key] for r in line], "o-", label=name)
            for r in line:
                ax.annotate(f"T={r['temperature']:g}", (r["mean_style"], r[key]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.axvline(e0["style"], color="0.6", ls=":", lw=1)
        ax.set_xlabel("style energy (mean over draws; dotted: T = 0)")
        ax.set_ylabel(label)
    if len(spreads) > 1:
        axes[0].legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
