"""``bench``: the sampler on the standard targets (and an image energy), with its ESS per
gradient, microseconds per step and per gradient, and its errors against the truth; beside
BlackJAX's MALA when jax and blackjax are installed (``pip install 'langevin_images[bench]'``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import BadInput, positive_int, say

__all__ = ["add_parsers"]


def _bench(args: argparse.Namespace) -> int:
    from .. import bench as B
    from ..runs import _json, atomic_write, resolve_device

    try:
        device = str(resolve_device(args.device))
    except ValueError as err:
        raise BadInput(str(err)) from None
    if args.blackjax and not B.blackjax_available():
        raise BadInput("--blackjax needs jax and blackjax: pip install 'langevin_images[bench]'")
    with_blackjax = B.blackjax_available() if args.blackjax is None else args.blackjax
    if with_blackjax and device != "cpu":
        say(args, "bench: BlackJAX runs on the CPU only here; its rows are left out on a GPU")
    try:
        rows = B.run_suite(
            args.suite, names=args.target, chains=args.chains, warmup=args.warmup,
            steps=args.steps, seed=args.seed, blackjax=with_blackjax, adapt=args.adapt,
            device=device, schedule=args.schedule, compiled=args.compiled,
            say=lambda line: say(args, line) if not args.quiet else None,
        )  # fmt: skip
    except ValueError as err:
        raise BadInput(str(err).splitlines()[0]) from None
    if args.quiet:
        print(B.format_table(rows))
    if args.json:
        atomic_write(Path(args.json), _json(rows))
        print(f"bench: wrote {args.json} ({len(rows)} rows)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "bench", help="the sampler on standard targets (and an image energy), beside BlackJAX"
    )
    p.add_argument("--suite", choices=("targets", "images", "all"), default="targets")
    p.add_argument("--target", action="append", help="one of the targets (repeatable)")
    p.add_argument("--chains", type=positive_int, default=8)
    p.add_argument("--warmup", type=positive_int, default=1000)
    p.add_argument("--steps", type=positive_int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--json", default=None, metavar="FILE", help="write the rows as JSON")
    p.add_argument(
        "--adapt",
        action="append",
        choices=("diagonal", "lowrank", "dense"),
        default=[],
        help="also a row after this preconditioner warmup (repeatable)",
    )
    p.add_argument("--schedule", choices=("dual_averaging", "stuck_fallback"),
                   default="dual_averaging",
                   help="this package's step-size adaptation (stuck_fallback: a smaller step "
                   "for chains that stop accepting at the end of warmup)")  # fmt: skip
    p.add_argument("--compiled", action="store_true",
                   help="also a row of the compiled sampler (samplers.compiled; about 15 s of "
                   "compilation per target)")  # fmt: skip
    bj = p.add_mutually_exclusive_group()
    bj.add_argument("--blackjax", action="store_true", default=None,
                    help="add BlackJAX's MALA (default: when it is installed)")  # fmt: skip
    bj.add_argument("--no-blackjax", dest="blackjax", action="store_false")
    p.add_argument("--quiet", action="store_true", help="only the table at the end")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="PyTorch CPU threads (default 1: timings on one core)")  # fmt: skip
    p.set_defaults(func=_bench, parser=p)
