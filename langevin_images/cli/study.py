"""``study``: a grid of sampling runs from a TOML config, on local workers or a Dask cluster,
gathered into ``study.nc``, plots and ``report.md``; running it again continues it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import BadInput, nonneg_int, say

__all__ = ["add_parsers"]


def _study(args: argparse.Namespace) -> int:
    from .. import study as S
    from ..runs import RunFolderError

    try:
        config = S.Study.load(args.config)
        out = Path(args.out or Path("out") / f"study-{config.name}")
        if args.report:
            if not (out / "study.json").exists():
                raise BadInput(f"--out {out}: no study there to report on")
            S.write_outputs(config, out)
            print((out / "report.md").read_text(), end="")
            return 0
        result = S.run_study(
            config, out, workers=args.workers, scheduler=args.scheduler,
            retry_failed=args.retry_failed, progress=not args.quiet, say=lambda s: say(args, s),
        )  # fmt: skip
    except (ValueError, RunFolderError) as err:
        raise BadInput(str(err).splitlines()[0]) from None
    except KeyboardInterrupt:
        done = sum(
            S._state(Path(out) / S.RUNS / p.name) != "none" for p in config.points()
        )  # fmt: skip
        print(
            f"study: interrupted with {done} of {len(config.points())} runs finished; the "
            f"others continue from their records when the same command runs again:\n"
            f"  langevin-images study {args.config} --out {out}",
            flush=True,
        )
        return 130
    n, failed = len(result.points), result.failed
    say(args, f"study: {len(result.ran)} run(s) made now, {n - len(result.ran)} found done "
              f"before; {result.seconds:.1f} s")  # fmt: skip
    print((result.out / "report.md").read_text(), end="")
    print(f"study: wrote {result.out}/ (study.nc, report.md, tradeoff.png, ess_per_grad.png, "
          f"samples*.png, runs/)")  # fmt: skip
    if failed:
        print(
            f"study: {len(failed)} of {n} runs failed, e.g. {result.out / S.RUNS / failed[0]}"
            f"/error.json; --retry-failed runs them again",
            flush=True,
        )
        return 1
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "study",
        help="a grid of runs (priors x temperatures x ...) from a TOML config, gathered",
        description=(
            "Run every grid point x seed of CONFIG (a TOML file with [study], [grid] and "
            "optionally [[configs]]; see langevin_images.study) into DIR/runs/, then write "
            "DIR/study.nc, report.md and the plots. Running it again skips finished runs and "
            "resumes killed ones."
        ),
    )
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--out", default=None, help="study folder (default out/study-NAME)")
    p.add_argument(
        "--workers",
        type=nonneg_int,
        default=None,
        help="local worker processes, one thread each (default: the cores here; 0 runs in this "
        "process); with --scheduler local, the Dask workers",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a Dask distributed scheduler (tcp://HOST:PORT), or 'local' for a LocalCluster; "
        "needs pip install 'langevin_images[dask]' and --out on a filesystem the workers share",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run the failed runs again (they resume from their record if they can)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="only gather what is in --out into study.nc, the plots and report.md",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or chatter")
    p.set_defaults(func=_study, parser=p)
