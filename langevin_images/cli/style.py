"""``style``: neural style transfer (Gatys et al.), posterior style transfer (MALA at T > 0),
and the amortized kinds: a per-style network (johnson), conditional instance norm (cin), AdaIN."""

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
    save_log_plot,
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


def _check_style_weights(args) -> None:
    n = len(args.style or [None])  # no --style: the method's default, one style
    if args.style_weight is not None and len(args.style_weight) != n:
        raise BadInput(f"--style-weight given {len(args.style_weight)} time(s) for {n} "
                       "--style: give one weight per style, or none")  # fmt: skip


AMORTIZED = ("johnson", "cin", "adain")
DEFAULT_NETWORK = {"johnson": "johnson-ihc", "cin": "cin-3", "adain": "adain"}


def _style(args: argparse.Namespace) -> None:
    if args.method in AMORTIZED:
        return _amortized(args)
    if args.alpha != 1.0:
        raise BadInput("--alpha is AdaIN's strength (--method adain)")
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
    _check_style_weights(args)
    mask = _read_mask(args.mask, (h, w)) if args.mask else None
    if args.method == "gatys" and args.chains not in (None, 1):
        raise BadInput("--chains is for --method posterior (gatys gives one image)")
    if args.method != "posterior" and args.spread:
        raise BadInput("--spread is for --method posterior (where the chains start)")
    if args.precision == "mixed" and args.optimizer == "descent":
        raise BadInput("--precision mixed is for --optimizer lbfgs or adam")
    from ..models import fast_bfloat16

    if args.precision == "mixed" and not fast_bfloat16(where):
        say(args, f"style: bfloat16 is not fast on {where} (no AMX or AVX-512 BF16): "
                  "--precision mixed will be slower than float32 here")  # fmt: skip
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
            spread=args.spread / 255, precision=args.precision, style_loss=args.style_loss,
            record_to=out / "record.zarr" if posterior else None,
            progress=not args.quiet,
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
                         if k not in _NOT_ENERGIES},
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


def _network(args, encoder=None):
    """The stylization network of ``--weights`` (or the method's default), its name or file
    and its training card; ``encoder`` is AdaIN's (the ``--model``)."""
    from ..models.stylenets import load_network

    spec = args.weights
    if spec is None:
        indices = args.style and all(s.isdigit() for s in args.style)
        spec = "multistyle26" if args.method == "cin" and indices else DEFAULT_NETWORK[args.method]
    try:
        net, kind, meta = load_network(spec, encoder=encoder)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise BadInput(f"--weights {spec}: {str(err).splitlines()[0]}") from None
    if kind != args.method and not (kind == "cin" and args.method == "johnson" and net.styles == 1):
        raise BadInput(f"--weights {spec}: a {kind} network, not for --method {args.method}")
    return net, spec, meta


def _amortized(args: argparse.Namespace) -> None:
    """One forward pass of a trained network; the Gatys energy of the result when the style
    images are known (the amortization gap)."""
    import time

    import torch

    from ..apps.amortized import stylize
    from ..datasets import STYLES

    if args.mask:
        raise BadInput(f"--mask is for --method gatys and posterior, not {args.method}")
    if args.chains not in (None, 1):
        raise BadInput("--chains is for --method posterior")
    if args.spread:
        raise BadInput("--spread is for --method posterior")
    if args.preserve_color == "histogram" and args.method != "adain":
        raise BadInput("--preserve-color histogram recolours the style image: --method adain "
                       "only; use luminance")  # fmt: skip
    if args.alpha != 1.0 and args.method != "adain":
        raise BadInput("--alpha is AdaIN's strength (--method adain); cin blends styles "
                       "with --style-weight")  # fmt: skip
    where = device(args)
    _check_style_weights(args)
    # the feature model: AdaIN's encoder, and the Gatys energy of the result (when the style
    # images are known: the amortization gap)
    model = load_model(args.model, where) if args.method == "adain" else None
    net, spec, meta = _network(args, model)
    content = read_image(args.content, args.size, option="--content").to(where)
    h, w = content.shape[-2:]
    style_size = args.style_size or min(h, w)
    if args.method == "adain":
        names = args.style or ["ihc"]
        images = [read_image(s, style_size, option="--style").to(where) for s in names]
        kwargs = {"styles": images, "style_weights": args.style_weight, "alpha": args.alpha}
    else:
        try:
            index = [net.style_index(s) for s in args.style or net.style_names[:1]]
        except ValueError as err:
            raise BadInput(f"--style: {err} (--weights {spec})") from None
        weights = args.style_weight or [1.0] * len(index)
        if sum(weights) <= 0:
            raise BadInput("--style-weight: the weights sum to 0")
        mix = [0.0] * net.styles
        for k, wk in zip(index, weights, strict=True):
            mix[k] += wk / sum(weights)
        kwargs = {"style": mix}
        names = [net.style_names[k] for k in index]
        images = []
        if all(n in STYLES for n in names):
            images = [read_image(n, style_size, option="--style").to(where) for n in names]
            model = load_model(args.model, where)
    net = net.to(where)
    say(args, f"style: {args.method} ({spec}) of {args.content} {h}x{w} px in the style of "
         f"{', '.join(names)}")  # fmt: skip
    with output_folder(args) as out:
        try:
            stylize(net, content, **kwargs, preserve_color=args.preserve_color)  # warm-up
            if where.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            y = stylize(net, content, **kwargs, preserve_color=args.preserve_color)
            if where.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        except ValueError as err:
            raise BadInput(str(err).splitlines()[0]) from None
        _amortized_outputs(args, model, net, spec, meta, content, images, names, y, seconds, out)


def _amortized_outputs(args, model, net, spec, meta, content, images, names, y, seconds, out):
    import torch

    from ..apps.style import style_energy
    from ..diagnostics.plots import image_grid

    def png(x, name):
        save_png(image_grid(x.detach().cpu()[None, None].numpy(), padding=0), out / name)

    png(content[0], "content.png")
    png(y[0], "stylized.png")
    for k, s in enumerate(images):
        png(s[0], f"style_{k}.png")
    card = {
        "job": "style", "method": args.method, "argv": sys.argv[1:], "network": spec,
        "network_meta": meta, "content": args.content, "styles": names,
        "size": list(content.shape[-2:]), "preserve_color": args.preserve_color,
        "alpha": args.alpha, "seconds": seconds,
    }  # fmt: skip
    if images and model is not None:
        energy = style_energy(model, content, images, style_weights=args.style_weight)
        with torch.no_grad():
            total, terms = energy.evaluate(y)
        card["gatys_energy"] = {"energy": float(total.sum()),
                                **{k: float(v.sum()) for k, v in terms.items()}}  # fmt: skip
        card["model"] = model_card(model)
    write_card(out, card)
    energy = card.get("gatys_energy", {}).get("energy")
    say(args, f"style: {1e3 * seconds:.1f} ms"
         + (f"; Gatys energy {energy:.4g}" if energy is not None else ""))  # fmt: skip
    print(f"wrote {out}/stylized.png, content.png"
          + (", style_<k>.png" if images else "") + ", run.json", flush=True)  # fmt: skip


_NOT_ENERGIES = ("scale", "step", "height", "width", "seconds", "precision")


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
    for name in [c for c in table.columns if c not in _NOT_ENERGIES]:
        ax.plot(x, table[name], label=name, lw=1.2 if name == "energy" else 0.9)
    for k in table["scale"].unique()[1:]:
        ax.axvline(int(table.index[table["scale"] == k][0]), color="0.7", lw=0.8, ls=":")
    xlabel = "energy+gradient evaluation (dotted: next scale)"
    if (table["precision"] == "bfloat16").any():
        starts = table.index[(table["precision"] == "float32")
                             & (table["precision"].shift() == "bfloat16")]  # fmt: skip
        for i in starts:
            ax.axvline(int(i), color="tab:red", lw=0.8, ls="--")
        xlabel = "energy+gradient evaluation (dotted: next scale; dashed: bfloat16 to float32)"
    save_log_plot(fig, ax, out / "energy.png", ylabel="energy (normalized units)",
                  xlabel=xlabel)  # fmt: skip
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
    from ..apps.style import (
        CONTENT_LAYERS,
        DEFAULTS,
        OPTIMIZERS,
        PRECISIONS,
        STYLE_LAYERS,
        STYLE_LOSSES,
    )

    r = sub.add_parser(
        "style",
        help="neural style transfer (Gatys et al.), or posterior samples of it at T > 0",
    )
    add_common(r, out="out/style", weights_help="johnson/cin/adain: the network, a name ("
               "multistyle26, johnson-ihc, cin-3, adain) or a file from train-style; otherwise"
               " the --model's weights file")  # fmt: skip
    r.add_argument("--model", default="vgg19", help="feature network (default vgg19)")
    r.add_argument("--content", default="chelsea",
                   help="a file, or astronaut/chelsea/coffee/rocket")  # fmt: skip
    r.add_argument("--style", action="append", default=None,
                   help="a style image: a file, or hubble/ihc/brick/grass/gravel (default ihc; "
                        "repeatable: several blend)")  # fmt: skip
    r.add_argument("--style-weight", action="append", type=nonneg_float, default=None,
                   help="blend weight of each --style, in order (default: equal)")  # fmt: skip
    r.add_argument("--method", choices=("gatys", "posterior", *AMORTIZED), default="gatys",
                   help="gatys, posterior (samples at T > 0), or a trained network: johnson, "
                        "cin (--style names or indices), adain (any --style)")  # fmt: skip
    r.add_argument("--alpha", type=nonneg_float, default=1.0,
                   help="adain: style strength in [0, 1]")  # fmt: skip
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
    r.add_argument("--spread", type=nonneg_float, default=0.0,
                   help="posterior: start the chains this far from the optimization's "
                   "result (RMS of colour x 1/f noise, on 0-255 values; default 0: "
                   "all at it)")  # fmt: skip
    r.add_argument("--style-loss", choices=STYLE_LOSSES, default="gram",
                   help="gram: Gram matrices (Gatys); w2: Wasserstein-2 between Gaussians "
                   "fitted to the features (mean and covariance)")  # fmt: skip
    r.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="mixed: the first 9/10 of each scale's evaluations run VGG in bfloat16, "
                   "the rest in float32 (fast on AMX CPUs, recent GPUs; lbfgs, adam)")  # fmt: skip
    r.set_defaults(func=_style)
