"""``visualize``: activation maximization of a layer's channels (descent; variety at T > 0)."""

from __future__ import annotations

import argparse
import sys
import time

from ..runs import model_card, save_png, write_card, write_descent_outputs
from .common import (
    BadInput,
    add_common,
    check_layers,
    check_memory,
    device,
    load_model,
    nonneg_float,
    nonneg_int,
    output_folder,
    positive_float,
    positive_int,
    read_image,
    say,
)

__all__ = ["add_parsers"]


def _visualize(args: argparse.Namespace) -> None:
    where = device(args)
    model = load_model(args.model, where, args.weights)
    shapes = check_layers(model, args.layer, name=args.model, side=args.size,
                          what=f"--size {args.size}")  # fmt: skip
    init = read_image(args.init, (args.size,) * 2, option="--init") if args.init else None
    chosen = {}
    for layer in args.layer:
        n = shapes[layer][0]
        if args.channel:
            bad = [c for c in args.channel if not 0 <= c < n]
            if bad:
                raise BadInput(f"--channel {bad[0]}: layer {layer} has channels 0..{n - 1}")
            chosen[layer] = list(args.channel)
        elif args.channels is not None and args.channels > n:
            raise BadInput(f"--channels {args.channels}: layer {layer} has {n} channels")
        else:
            chosen[layer] = list(range(min(args.channels or 8, n)))
    most = max(len(c) for c in chosen.values()) * (args.chains if args.temperature > 0 else 1)
    check_memory(model, (args.size, args.size), most, where, what=f"{most} chains")
    with output_folder(args) as out:
        _run(args, model, chosen, init, out)


def _run(args, model, chosen: dict, init, out) -> None:
    import torch

    from ..apps import visualize, visualize_variety
    from ..diagnostics.plots import image_grid

    card_layers = {}
    rows, trees, table, configs = [], {}, [], {}
    t0 = time.perf_counter()
    for layer, channels in chosen.items():
        say(args, f"visualize: {layer}, channels {channels}")
        vis = visualize(
            model, layer, channels, size=args.size, steps=args.steps, step_size=args.step_size,
            tv=args.tv, blur=args.blur, init=init, seed=args.seed, progress=not args.quiet,
        )  # fmt: skip
        safe = layer.replace(".", "_")
        entry = {"channels": channels, "objective": vis.objective.tolist()}
        rows.append(vis.images.cpu())
        trees[safe] = vis.run.to_datatree(projections=0)
        configs[safe] = vis.run.config
        energy = vis.run.stats["energy"]
        for i, c in enumerate(channels):
            table.append({"layer": layer, "channel": c, "objective": float(vis.objective[i]),
                          "energy_first_step": float(energy[i, 0]),
                          "energy_last_step": float(energy[i, -1])})  # fmt: skip
        if args.temperature > 0:
            var = visualize_variety(
                vis, model, chains_per_channel=args.chains, temperature=args.temperature,
                steps=args.steps, seed=args.seed + 1, progress=not args.quiet,
            )  # fmt: skip
            grid = var.images.reshape(len(channels), args.chains, *var.images.shape[1:])
            save_png(image_grid(grid.transpose(0, 1).cpu().numpy()), out / f"variety_{safe}.png")
            trees[f"{safe}_variety"] = var.run.to_datatree(chain_groups=var.channels)
            configs[f"{safe}_variety"] = var.run.config
            entry["variety_objective"] = var.objective.tolist()
        save_png(image_grid(vis.images[None].cpu().numpy()), out / f"layer_{safe}.png")
        card_layers[layer] = entry
    width = max(r.shape[0] for r in rows)
    padded = [torch.cat([r, torch.ones(width - r.shape[0], *r.shape[1:])]) for r in rows]
    save_png(image_grid(torch.stack(padded).numpy()), out / "layers.png")
    verdicts = write_descent_outputs(out, trees, table)
    write_card(out, {
        "job": "visualize", "argv": sys.argv[1:], "seed": args.seed, "model": model_card(model),
        "config": configs, "diagnostics": verdicts,
        "layers": card_layers, "size": args.size, "steps": args.steps,
        "step_size": args.step_size, "tv": args.tv, "blur": args.blur,
        "temperature": args.temperature,
        "seconds": round(time.perf_counter() - t0, 1),
    })  # fmt: skip
    say(args, f"visualize: wrote {out}/layers.png (one row per layer), run.nc (one group per "
         "layer), summary.csv, energy.png and run.json")  # fmt: skip


def add_parsers(sub) -> None:
    v = sub.add_parser("visualize", help="activation maximization of a layer's channels")
    add_common(v, out="out/visualize")
    v.add_argument("--model", default="vgg19",
                   help="vgg19 (default: crisper, more colourful pictures than lite0; see the "
                        "README), vgg19-avg, lite0, vgg16, mnist, torchvision:NAME")  # fmt: skip
    v.add_argument(
        "--layer", action="append", required=True, help="named_modules() path (repeatable)"
    )
    v.add_argument("--channels", type=positive_int, default=None,
                   help="the first N channels (default 8, or all of a smaller layer)")  # fmt: skip
    v.add_argument("--channel", type=nonneg_int, action="append", help="a channel (repeatable)")
    v.add_argument("--size", type=positive_int, default=96)
    v.add_argument("--steps", type=positive_int, default=128)
    v.add_argument("--step-size", type=positive_float, default=0.05)
    v.add_argument("--tv", type=nonneg_float, default=0.0, help="total-variation prior weight")
    v.add_argument("--blur", type=nonneg_float, default=0.0, help="blur-penalty prior weight")
    v.add_argument("--temperature", type=nonneg_float, default=0.0,
                   help="> 0: also sample the variety around each visualization")  # fmt: skip
    v.add_argument("--chains", type=positive_int, default=4, help="chains per channel at T > 0")
    v.add_argument("--init", default=None, help="start from this image (file or bundled photo)")
    v.set_defaults(func=_visualize)
