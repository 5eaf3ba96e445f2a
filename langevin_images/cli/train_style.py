"""``train-style``: train a per-style (johnson), conditional-instance-norm (cin) or AdaIN
network for ``style --method johnson|cin|adain``; checkpoints as it goes, ``--resume`` after a
kill or Ctrl-C."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ..runs import atomic_write, model_card, save_png, write_card
from .common import (
    BadInput,
    add_common,
    argv_given,
    device,
    load_model,
    nonneg_float,
    out_dir,
    positive_float,
    positive_int,
    read_image,
    save_log_plot,
    say,
    set_threads,
    stderr,
)

__all__ = ["add_parsers"]

SPEC = "train.json"  # the settings, written first: --resume reads them back
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARCHS = {"small": None, "paper": {"contract": (32, 64, 128), "blocks": 5, "expand": (64, 32)}}


def _content(folders: list[str], side: int):
    images = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise BadInput(f"--content-dir {folder}: not a folder")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInput(f"--content-dir {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        images += [read_image(str(p), side, option="--content-dir") for p in files]
    return images


def _train_style(args: argparse.Namespace) -> None:
    from ..apps.amortized import KINDS, content_images, train

    resume = args.resume is not None
    if resume:
        args = _resumed(args)
    if args.kind not in KINDS:
        raise BadInput(f"--kind {args.kind}: one of {', '.join(KINDS)}")
    args.style = args.style or ["ihc"]
    if args.kind == "johnson" and len(args.style) != 1:
        raise BadInput(f"--kind johnson trains one network per style: got {len(args.style)} "
                       "--style; use --kind cin for several")  # fmt: skip
    if args.add_to and args.kind != "cin":
        raise BadInput("--add-to is for --kind cin (new styles on a trained CIN network)")
    where = device(args)
    model = load_model(args.model, where, args.weights)
    style_side = args.style_size or args.size
    styles = [read_image(s, style_side, option="--style") for s in args.style]
    for name, s in zip(args.style, styles, strict=True):
        if min(s.shape[-2:]) < args.size:
            raise BadInput(f"--style {name}: {min(s.shape[-2:])} px at --style-size, smaller "
                           f"than the --size {args.size} crops")  # fmt: skip
    if not args.photos and not args.content_dir:
        raise BadInput("--no-photos needs --content-dir: there is nothing else to train on")
    extra = _content(args.content_dir, args.photo_size)
    photos = content_images(extra, photos=None if args.photos else (), side=args.photo_size)
    base = None
    if args.add_to:
        from ..models.stylenets import TransformNet, load_network

        try:
            base, kind, _ = load_network(args.add_to)
        except (ValueError, FileNotFoundError, ImportError) as err:
            raise BadInput(f"--add-to {args.add_to}: {err}") from None
        if not isinstance(base, TransformNet):
            raise BadInput(f"--add-to {args.add_to}: a {kind} network, not a CIN one")
    out = Path(args.out) if resume else out_dir(args)
    command = "langevin-images " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    meta = {"command": getattr(args, "command_line", None) or command}
    if resume:
        meta["resumed_with"] = command
    else:
        args.command_line = command
        skip = ("func", "parser", "argv", "resume")
        spec = {k: v for k, v in vars(args).items() if k not in skip}
        atomic_write(out / SPEC, json.dumps(spec, indent=2))
        # marks the folder as a run's (so --force may replace it) until the final card
        write_card(out, {"job": "train-style", "status": "training (see checkpoint.pt)",
                         "spec": spec})  # fmt: skip
    say(args, f"train-style: {args.kind} for {', '.join(args.style)} on {args.model}, "
         f"{args.steps} steps of {args.batch} crops of {args.size} px"
         + (f" (resuming {out})" if resume else ""))  # fmt: skip
    try:
        result = train(
            args.kind, styles, model=model, out=out, style_names=[Path(s).stem for s in
            args.style], steps=args.steps, batch=args.batch, size=args.size, lr=args.lr,
            content_weight=args.content_weight, style_weight=args.style_strength,
            tv_weight=args.tv_weight, arch=ARCHS[args.arch], width=args.width,
            content=photos, base=base, seed=args.seed, checkpoint_every=args.checkpoint_every,
            resume=resume, progress=not args.quiet, meta=meta,
        )  # fmt: skip
    except KeyboardInterrupt:
        stderr(
            f"train-style: interrupted; the checkpoint in {out} keeps the finished steps: "
            f"langevin-images train-style --resume {out}"
        )
        raise
    except (ValueError, FileNotFoundError) as err:
        if not resume and not (out / "checkpoint.pt").exists():
            shutil.rmtree(out, ignore_errors=True)  # refused before any step: leave nothing
        raise BadInput(str(err).splitlines()[0]) from None
    _outputs(args, model, result, styles, photos, out)


def _resumed(args):
    path = Path(args.resume)
    if not (path / SPEC).is_file() or not (path / "checkpoint.pt").is_file():
        raise BadInput(f"--resume {args.resume}: no training there ({SPEC} and checkpoint.pt)")
    spec = json.loads((path / SPEC).read_text())
    given = argv_given(args.argv or [], args.parser) & {"steps", "quiet", "threads", "device"}
    for k, v in spec.items():
        if k not in given:
            setattr(args, k, v)
    args.out, args.resume = str(path), str(path)
    set_threads(args)  # the spec's thread count: another one changes the arithmetic's rounding
    return args


def _outputs(args, model, result, styles, photos, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    from ..apps.amortized import stylize
    from ..datasets import PHOTOS, load_photo
    from ..diagnostics.plots import image_grid

    table = pd.DataFrame(result.history)
    atomic_write(out / "loss.csv", table.to_csv(index=False, float_format="%.6g"))
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    for col in [c for c in table.columns if c.startswith("loss_")]:
        s = table[["step", col]].dropna()
        smooth = s[col].rolling(max(1, len(s) // 20), min_periods=1).mean()
        ax.plot(s["step"], smooth, lw=1, label=col[5:])
    save_log_plot(fig, ax, out / "loss.png", xlabel="step",
                  ylabel="loss per style (running mean)")  # fmt: skip
    # every style on two bundled photos at the training size
    net = result.net
    dev = next(model.buffers()).device
    rows = []
    for name in PHOTOS[:2]:
        x = load_photo(name, args.size).to(dev)
        top, left = (x.shape[-2] - args.size) // 2, (x.shape[-1] - args.size) // 2
        x = x[..., top : top + args.size, left : left + args.size]
        if args.kind == "adain":
            tiles = [stylize(net, x, styles=[s.to(dev)]) for s in styles]
        else:
            tiles = [stylize(net, x, style=k) for k in range(net.styles)]
        rows.append(torch.cat([x, *tiles]).cpu())
    save_png(image_grid(torch.stack(rows).numpy()), out / "samples.png")
    losses = result.final_losses()
    card = {
        "job": "train-style", "status": "done", "argv": sys.argv[1:], "seed": args.seed,
        "model": model_card(model), "kind": args.kind, "styles": args.style,
        "steps": len(result.history), "resumed_from": result.resumed_from,
        "seconds_this_process": round(result.seconds, 1),
        "final_losses": losses,
    }  # fmt: skip
    write_card(out, card)
    from ..models.zoo import _sha256

    training = torch.load(out / "network.pt", weights_only=True)["meta"]
    model_card_ = {
        "kind": args.kind, "styles": args.style, "command": training.get("command"),
        "resumed_with": training.get("resumed_with"),
        **{k: training["training"][k] for k in ("steps", "batch", "size", "lr", "content_weight",
                                                "style_weight", "arch", "width", "seed")},
        "first_losses": training["training"]["first_losses"], "final_losses": losses,
        "loss_network": model.name if hasattr(model, "name") else args.model,
        "torch": torch.__version__, "sha256": _sha256(out / "network.pt"),
    }  # fmt: skip
    atomic_write(out / "network.json", json.dumps(model_card_, indent=2) + "\n")
    say(args, "train-style: final loss per style (mean of the last 20 steps): "
         + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))  # fmt: skip
    print(
        f"wrote {out}/network.pt, checkpoint.pt, loss.csv, loss.png, samples.png, run.json",
        flush=True,
    )


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "train-style",
        help="train a johnson, cin or adain network for style --method johnson|cin|adain",
    )
    add_common(p, out="out/train-style")
    p.add_argument("--kind", choices=("johnson", "cin", "adain"), default="johnson")
    p.add_argument("--model", default="vgg19", help="loss network (default vgg19)")
    p.add_argument("--style", action="append", default=None,
                   help="a style image: a file, or hubble/ihc/brick/grass/gravel (default ihc;"
                        " repeat for cin and adain)")  # fmt: skip
    p.add_argument(
        "--content-dir",
        action="append",
        default=[],
        help="a folder of content images, besides the bundled photos (repeatable)",
    )
    p.add_argument(
        "--no-photos",
        dest="photos",
        action="store_false",
        help="train on --content-dir only, not on the bundled photos",
    )
    p.add_argument(
        "--photo-size",
        type=positive_int,
        default=256,
        help="shorter side the content images are crop from (default 256)",
    )
    p.add_argument("--size", type=positive_int, default=128, help="side of the training crops")
    p.add_argument("--style-size", type=positive_int, default=None,
                   help="shorter side of the style images (default: --size)")  # fmt: skip
    p.add_argument("--batch", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=400)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--content-weight", type=nonneg_float, default=None,
                   help="default 1 (normalized units as in style)")  # fmt: skip
    p.add_argument(
        "--style-strength",
        type=nonneg_float,
        default=None,
        help="style weight (default 5 for johnson/cin as in style, 1 for adain)",
    )
    p.add_argument("--tv-weight", type=nonneg_float, default=0.0)
    p.add_argument(
        "--arch",
        choices=tuple(ARCHS),
        default="small",
        help="johnson/cin: small (16/32/64 channels) or paper (32/64/128)",
    )
    p.add_argument(
        "--width",
        type=positive_float,
        default=0.5,
        help="adain: decoder channels relative to Huang & Belongie's (default 0.5)",
    )
    p.add_argument("--add-to", default=None, metavar="NET",
                   help="cin: add --style to this trained CIN network, training only their "
                        "gamma, beta")  # fmt: skip
    p.add_argument("--checkpoint-every", type=positive_int, default=50)
    p.add_argument(
        "--resume",
        default=None,
        metavar="OUT",
        help="continue the training in OUT (its settings; --steps may extend it)",
    )
    p.set_defaults(func=_train_style, parser=p)
