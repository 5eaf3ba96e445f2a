"""``dream``: DeepDream of a photo (octaves, jitter; several dreams at T > 0)."""

from __future__ import annotations

import argparse
import sys
import time

from ..runs import model_card, save_png, write_card, write_descent_outputs
from .common import (
    BadInput,
    add_common,
    check_layers,
    device,
    load_model,
    nonneg_float,
    nonneg_int,
    out_dir,
    positive_float,
    positive_int,
    read_image,
    say,
)

__all__ = ["add_parsers"]


def _dream(args: argparse.Namespace) -> None:
    from ..apps import dream
    from ..diagnostics import mean_pairwise_distance
    from ..diagnostics.plots import image_grid

    out = out_dir(args)
    model = load_model(args.model, device(args))
    check_layers(model, args.layer)
    image = read_image(args.image, args.size)
    guide = read_image(args.guide, args.size) if args.guide else None
    if getattr(model, "input_channels", 3) == 1:
        image = image.mean(1, keepdim=True)
        guide = guide.mean(1, keepdim=True) if guide is not None else None
    say(args, f"dream: {args.model} {args.layer} on {args.image} {tuple(image.shape[-2:])}")
    t0 = time.perf_counter()
    try:
        d = dream(
            model, image, args.layer, octaves=args.octaves, octave_scale=args.octave_scale,
            steps_per_octave=args.steps, step_size=args.step_size / 255, jitter=args.jitter,
            guide=guide, temperature=args.temperature, chains=args.chains, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:  # dream() validates its input before any step
        raise BadInput(str(err).splitlines()[0]) from None
    seconds = time.perf_counter() - t0
    save_png(image_grid(d.images[:, None].cpu().numpy()), out / "dream.png")
    save_png(image_grid(image[None].numpy()), out / "input.png")
    trees, table = {}, []
    for k, (size, run) in enumerate(zip(d.sizes, d.runs, strict=True)):
        trees[f"octave_{k}"] = run.to_datatree(projections=0)
        energy = run.stats["energy"]
        for c in range(energy.shape[0]):
            table.append({"octave": k, "height": size[0], "width": size[1], "chain": c,
                          "energy_first_step": float(energy[c, 0]),
                          "energy_last_step": float(energy[c, -1])})  # fmt: skip
    verdicts = write_descent_outputs(out, trees, table)
    card = {
        "job": "dream", "argv": sys.argv[1:], "seed": args.seed, "model": model_card(model),
        "config": {f"octave_{k}": run.config for k, run in enumerate(d.runs)},
        "diagnostics": verdicts,
        "layers": args.layer, "image": args.image, "guide": args.guide,
        "octaves": d.sizes, "steps_per_octave": args.steps, "step_size_255": args.step_size,
        "jitter": args.jitter, "temperature": args.temperature, "chains": args.chains,
        "seconds": round(seconds, 1),
    }  # fmt: skip
    if args.chains > 1:
        card["mean_pairwise_l2_between_dreams"] = mean_pairwise_distance(d.images)
    write_card(out, card)
    say(args, f"dream: {seconds:.1f} s; wrote {out}/dream.png, input.png, run.nc (one group "
         "per octave), summary.csv, energy.png, run.json")  # fmt: skip


def add_parsers(sub) -> None:
    r = sub.add_parser("dream", help="DeepDream of a photo")
    add_common(r, out="out/dream")
    r.add_argument("--model", default="lite0")
    r.add_argument("--image", default="chelsea", help="a file, or astronaut/chelsea/coffee/rocket")
    r.add_argument(
        "--layer", action="append", required=True, help="named_modules() path (repeatable)"
    )
    r.add_argument("--guide", default=None, help="guide image: match its features")
    r.add_argument("--size", type=positive_int, default=192, help="shorter side of the photo")
    r.add_argument("--octaves", type=positive_int, default=4)
    r.add_argument("--octave-scale", type=positive_float, default=1.4)
    r.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    r.add_argument("--step-size", type=positive_float, default=1.5, help="on 0-255 pixel values")
    r.add_argument("--jitter", type=nonneg_int, default=32)
    r.add_argument("--temperature", type=nonneg_float, default=0.0)
    r.add_argument("--chains", type=positive_int, default=1)
    r.set_defaults(func=_dream)
