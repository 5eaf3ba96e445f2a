"""``style``: neural style transfer (Gatys et al.) and posterior style transfer (MALA at T > 0)."""

from __future__ import annotations

import argparse
import sys

from ..runs import model_card, save_png, write_card
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


def _read_mask(spec: str, size: tuple[int, int]):
    mask = read_image(spec, size, option="--mask").mean(1, keepdim=True)
    if not bool(mask.max() > 0.5):
        raise BadInput(f"--mask {spec}: no white (styled) region in it")
    return mask


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInput(f"{option}: give at least one layer name")
    return names


def _style(args: argparse.Namespace) -> None:
    args.content_layers = _names(args.content_layers, "--content-layers")
    args.style_layers = _names(args.style_layers, "--style-layers")
    if args.layer_weights is not None:
        try:
            args.layer_weights = [float(w) for w in args.layer_weights.split(",")]
        except ValueError:
            raise BadInput(
                f"--layer-weights {args.layer_weights}: numbers, comma-separated"
            ) from None
        if len(args.layer_weights) != len(args.style_layers):
            raise BadInput(f"--layer-weights gives {len(args.layer_weights)} weight(s) for "
                           f"{len(args.style_layers)} style layer(s)")  # fmt: skip
    where = device(args)
    model = load_model(args.model, where, args.weights)
    if getattr(model, "input_channels", 3) != 3:
        raise BadInput(f"--model {args.model}: style transfer needs an RGB feature model")
    content = read_image(args.content, args.size, option="--content")
    h, w = content.shape[-2:]
    style_size = args.style_size or min(h, w)
    args.style = args.style or ["ihc"]
    styles = [read_image(s, style_size, option="--style") for s in args.style]
    if args.style_weight is not None and len(args.style_weight) != len(args.style):
        raise BadInput(
            f"--style-weight given {len(args.style_weight)} time(s) for {len(args.style)} "
            "--style image(s): give one weight per style image, or none"
        )
    mask = _read_mask(args.mask, (h, w)) if args.mask else None
    if args.method == "gatys" and args.chains not in (None, 1):
        raise BadInput("--chains is for --method posterior (gatys gives one image)")
    args.chains = args.chains or (4 if args.method == "posterior" else 1)
    layers = list(dict.fromkeys([*args.content_layers, *args.style_layers]))
    smallest = min(h, w, *(min(s.shape[-2:]) for s in styles))
    factor = args.scale_factor ** (args.scales - 1)
    side = max(1, round(smallest / factor))
    check_layers(model, layers, name=args.model, side=side,
                 what=f"the coarsest of {args.scales} scale(s) ({side} px a side)")  # fmt: skip
    chains = args.chains if args.method == "posterior" else 1
    check_memory(model, (h, w), chains, where, what=f"{chains} chain(s)")
    with output_folder(args) as out:
        _run(args, model, content, styles, mask, out)


def _run(args, model, content, styles, mask, out) -> None:
    from ..apps.style import style_diversity, transfer
    from ..diagnostics.plots import image_grid

    h, w = content.shape[-2:]
    say(args, f"style: {args.method} ({args.optimizer}) of {args.content} {h}x{w} px in the "
         f"style of {', '.join(args.style)} on {args.model}")  # fmt: skip
    posterior = args.method == "posterior"
    try:
        result = transfer(
            content, styles, model=model, method=args.method, optimizer=args.optimizer,
            steps=args.steps, scales=args.scales, scale_factor=args.scale_factor, init=args.init,
            style_weights=args.style_weight, content_weight=args.content_weight,
            style_weight=args.style_strength, tv_weight=args.tv_weight,
            content_layers=args.content_layers, style_layers=args.style_layers,
            layer_weights=args.layer_weights, preserve_color=args.preserve_color, mask=mask,
            lr=args.lr,
            step_size=args.step_size / 255, temperature=args.temperature, chains=args.chains,
            sample_steps=args.sample_steps, warmup=args.warmup, seed=args.seed,
            record_to=out / "record.zarr" if posterior else None, progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:  # transfer() validates its input before any step
        raise BadInput(str(err).splitlines()[0]) from None
    images = result.images.detach().cpu()

    def png(x, name):
        save_png(image_grid(x[None, None].numpy(), padding=0), out / name)

    png(content[0], "content.png")
    for k, s in enumerate(styles):
        png(s[0], f"style_{k}.png")
    if mask is not None:
        png(mask[0].expand(3, -1, -1), "mask.png")
    if posterior:
        for c in range(images.shape[0]):
            png(images[c], f"stylized_{c}.png")
        save_png(image_grid(images[None].numpy()), out / "stylized.png")
    else:
        png(images[0], "stylized.png")
    files = _write_history(result.history, out)
    card = {
        "job": "style", "argv": sys.argv[1:], "seed": args.seed, "model": model_card(model),
        "content": args.content, "styles": args.style, "size": [h, w],
        "style_sizes": [list(s.shape[-2:]) for s in styles], "mask": args.mask,
        "config": result.config, "seconds": round(result.seconds, 1),
        "evaluations": len(result.history),
        "final_energy": {k: v for k, v in result.history[-1].items()
                         if k not in ("scale", "step", "height", "width", "seconds")},
    }  # fmt: skip
    if posterior:
        run = result.posterior
        card.update(_posterior_outputs(args, model, run, result, out))
        files += ["stylized_<chain>.png", "run.nc", "summary.csv", "trace.png", "..."]
        card["diversity"] = style_diversity(model, result.images.detach())
        card["acceptance_rate"] = float(run.acceptance_rate.mean())
        card["step_size"] = float(run.stats["step_size"][:, -1].mean())
    write_card(out, card)
    say(args, f"style: {result.seconds:.1f} s, {len(result.history)} evaluations; final "
         f"energy {card['final_energy']['energy']:.4g}")  # fmt: skip
    if posterior:
        say(args, f"style: {card['diagnostics']['verdict']}")
    print(f"wrote {out}/stylized.png, {', '.join(files)}, run.json", flush=True)


def _write_history(history: list[dict], out) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..runs import atomic_write

    table = pd.DataFrame(history)
    atomic_write(out / "energy.csv", table.to_csv(index=False, float_format="%.6g"))
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    x = range(len(table))
    for name in [c for c in table.columns if c not in ("scale", "step", "height", "width",
                                                         "seconds")]:  # fmt: skip
        ax.plot(x, table[name], label=name, lw=1.2 if name == "energy" else 0.9)
    for k in table["scale"].unique()[1:]:
        ax.axvline(int(table.index[table["scale"] == k][0]), color="0.7", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("energy+gradient evaluation (dotted: next scale)")
    ax.set_ylabel("energy (normalized units)")
    ax.legend(fontsize=8)
    atomic_write(out / "energy.png", lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return ["content.png", "style_<k>.png", "energy.csv", "energy.png"]


def _posterior_outputs(args, model, run, result, out) -> dict:
    from ..energies import capture
    from ..runs import verdict_card, write_diagnostics, write_netcdf

    layer = result.config["content_layers"][0]

    def features(x):
        return capture(model, [layer], x)[layer].flatten(1)

    dt = run.to_datatree(projections=8, features=features)
    write_netcdf(dt, out / "run.nc")
    verdict, worst, _ = write_diagnostics(dt, out)
    return {"diagnostics": verdict_card(verdict, worst), "grad_evals": run.grad_evals}


def add_parsers(sub) -> None:
    from ..apps.style import CONTENT_LAYERS, DEFAULTS, OPTIMIZERS, STYLE_LAYERS

    r = sub.add_parser(
        "style",
        help="neural style transfer (Gatys et al.), or posterior samples of it at T > 0",
    )
    add_common(r, out="out/style")
    r.add_argument("--model", default="vgg19", help="feature network (default vgg19)")
    r.add_argument("--content", default="chelsea",
                   help="a file, or astronaut/chelsea/coffee/rocket")  # fmt: skip
    r.add_argument("--style", action="append", default=None,
                   help="a style image: a file, or hubble/ihc/brick/grass/gravel (default ihc; "
                        "repeatable: several blend)")  # fmt: skip
    r.add_argument("--style-weight", action="append", type=nonneg_float, default=None,
                   help="blend weight of each --style, in order (default: equal)")  # fmt: skip
    r.add_argument("--method", choices=("gatys", "posterior"), default="gatys")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    r.add_argument("--size", type=positive_int, default=256, help="shorter side of the output")
    r.add_argument("--style-size", type=positive_int, default=None,
                   help="shorter side of the style images (default: the output's)")  # fmt: skip
    r.add_argument("--steps", type=positive_int, default=300,
                   help="energy+gradient evaluations per scale")  # fmt: skip
    r.add_argument("--scales", type=positive_int, default=1, help="coarse-to-fine sizes")
    r.add_argument("--scale-factor", type=positive_float, default=2**0.5)
    r.add_argument("--init", choices=("content", "noise"), default="content")
    r.add_argument("--content-weight", type=nonneg_float, default=DEFAULTS["content_weight"])
    r.add_argument("--style-strength", type=nonneg_float, default=DEFAULTS["style_weight"],
                   help="weight of the style term (normalized units, size-free)")  # fmt: skip
    r.add_argument("--tv-weight", type=nonneg_float, default=DEFAULTS["tv_weight"])
    r.add_argument("--content-layers", default=",".join(CONTENT_LAYERS), metavar="L1,L2")
    r.add_argument("--style-layers", default=",".join(STYLE_LAYERS), metavar="L1,L2,...")
    r.add_argument("--layer-weights", default=None, metavar="W1,W2,...",
                   help="style layer weights (divided by their sum; default equal)")  # fmt: skip
    r.add_argument("--preserve-color", choices=("luminance", "histogram"), default=None)
    r.add_argument("--mask", default=None, help="image, white where the style applies")
    r.add_argument("--lr", type=positive_float, default=0.02, help="Adam's learning rate")
    r.add_argument("--step-size", type=positive_float, default=2.0,
                   help="descent: mean pixel change per step, on 0-255 values")  # fmt: skip
    r.add_argument("--temperature", type=positive_float, default=0.01,
                   help="posterior: T in units of the energy (excess energy ~ T/2)")  # fmt: skip
    r.add_argument("--chains", type=positive_int, default=None,
                   help="posterior: chains (default 4)")  # fmt: skip
    r.add_argument("--sample-steps", type=positive_int, default=200, help="posterior: draws")
    r.add_argument("--warmup", type=nonneg_int, default=100, help="posterior: warmup steps")
    r.set_defaults(func=_style)
