"""``models``: the zoo, and one model's layers (with their output shapes) or class names."""

from __future__ import annotations

import argparse

from .common import BadInput, load_model, positive_int

__all__ = ["add_parsers"]


def _models(args: argparse.Namespace) -> None:
    from ..models import MODEL_NAMES

    if args.name is None:
        if args.layers or args.classes or args.find:
            raise BadInput("--layers, --classes and --find need a model: models NAME --layers")
        for name in MODEL_NAMES:
            if name.startswith("torchvision:"):
                print(f"{name:17s} any torchvision classifier (--weights PATH, or the hub cache)")
                continue
            try:
                model = load_model(name)
            except BadInput as err:  # a zoo model whose weights package is missing here
                print(f"{name:17s} (not available here: {err})")
                continue
            n = len(model.class_names) if model.class_names else 0
            what = f"{n} classes" if n else "features only"
            print(f"{name:17s} {model.description}; {what}")
        _networks()
        return
    model = load_model(args.name, weights=args.weights)
    if not (args.layers or args.classes or args.find):
        args.layers = True
    if args.layers:
        from ..models.probe import probe

        size = args.size or (model.input_size[0] if model.input_size else 224)
        p = probe(model, size)
        if not p.ok:
            raise BadInput(f"{args.name} does not run at --size {size}: {p.error}")
        print(f"# {args.name}: layers that run, output shape at {size}x{size} px (--layer NAME)")
        for layer, shape in p.shapes.items():
            print(f"{layer:48s} {'x'.join(map(str, shape))}")
    if args.classes or args.find:
        names = model.class_names or []
        if not names:
            raise BadInput(f"{args.name} is not a classifier: it has no class names")
        wanted = (args.find or "").lower()
        for i, label in enumerate(names):
            if wanted in label.lower():
                print(f"{i:5d} {label}")


def _networks() -> None:
    from ..models.stylenets import NETWORKS, network_path

    print("# style networks (style --method johnson|cin|adain --weights NAME)")
    for name, what in NETWORKS.items():
        try:
            here = network_path(name).is_file()
        except FileNotFoundError as err:
            here, what = False, f"{what}; not available here: {str(err).splitlines()[0]}"
        print(f"{name:17s} {what}" + ("" if here else " (missing)"))


def add_parsers(sub) -> None:
    m = sub.add_parser("models", help="list the models, one model's layers or its class names")
    m.add_argument("name", nargs="?", default=None, help="a model (none: list the zoo)")
    m.add_argument("--layers", action="store_true", help="its layers and their output shapes")
    m.add_argument("--classes", action="store_true", help="its class indices and names")
    m.add_argument("--find", default=None, metavar="TEXT", help="class names containing TEXT")
    m.add_argument("--size", type=positive_int, default=None, help="image side for --layers")
    m.add_argument("--weights", default=None, metavar="PATH", help="the model's weights file")
    m.set_defaults(func=_models)
