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


def _dream(args: argparse.Namespace) -> None:
    from ..apps.dream import octave_sizes
    from ..datasets import PHOTOS

    where = device(args)
    model = load_model(args.model, where, args.weights)
    size = args.size if args.size is not None or args.image not in PHOTOS else 192
    image = read_image(args.image, size)
    h, w = image.shape[-2:]
    guide = read_image(args.guide, (h, w), option="--guide") if args.guide else None
    if getattr(model, "input_channels", 3) == 1:
        image = image.mean(1, keepdim=True)
        guide = guide.mean(1, keepdim=True) if guide is not None else None
    smallest = octave_sizes((h, w), args.octaves, args.octave_scale)[0]
    what = (f"the smallest of {args.octaves} octaves of the {w}x{h} px image "
            f"({smallest[1]}x{smallest[0]} px)")  # fmt: skip
    check_layers(model, args.layer, name=args.model, side=min(smallest), what=what)
    check_memory(model, (h, w), args.chains, where, what=f"{args.chains} dream(s)")
    with output_folder(args) as out:
        _run(args, model, image, guide, out)


def _run(args, model, image, guide, out) -> None:
    from ..apps import dream
    from ..diagnostics import mean_pairwise_distance
    from ..diagnostics.plots import image_grid

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
    # at the photo's own size: no frame
    save_png(image_grid(d.images[:1, None].cpu().numpy(), padding=0), out / "dream.png")
    save_png(image_grid(image[None].cpu().numpy(), padding=0), out / "input.png")
    if args.chains > 1:
        save_png(image_grid(d.images[:, None].cpu().numpy()), out / "dreams.png")
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
    r.add_argument("--model", default="vgg19", help="vgg19 (default), vgg19-avg, lite0, ...")
    r.add_argument("--image", default="chelsea", help="a file, or astronaut/chelsea/coffee/rocket")
    r.add_argument(
        "--layer", action="append", required=True, help="named_modules() path (repeatable)"
    )
    r.add_argument("--guide", default=None, help="guide image: match its features")
    r.add_argument("--size", type=positive_int, default=None,
                   help="shorter side (default: a file's own; 192 for bundled photos)")  # fmt: skip
    r.add_argument("--octaves", type=positive_int, default=4)
    r.add_argument("--octave-scale", type=positive_float, default=1.4)
    r.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    r.add_argument("--step-size", type=positive_float, default=1.5, help="on 0-255 pixel values")
    r.add_argument("--jitter", type=nonneg_int, default=32)
    r.add_argument("--temperature", type=nonneg_float, default=0.0)
    r.add_argument("--chains", type=positive_int, default=1)
    r.set_defaults(func=_dream)
