"""Sample images from pretrained classifiers with Langevin dynamics, and diagnose the runs.

One subcommand per job, one module per subcommand (each an ``add_parsers(sub)`` and the
function it runs); each job writes into ``--out``. Jobs: ``demo`` (the main job:
class-conditional MNIST with its diagnostics), ``sample``, ``diagnose``, ``visualize``
(activation maximization), ``dream`` (DeepDream), ``style`` (style transfer), ``train-style``
(its amortized networks), ``study`` (a grid of runs, gathered), ``bench`` (the sampler on
standard targets) and ``models`` (the zoo, layers, classes).

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 130 when
interrupted (Ctrl-C or SIGTERM: the run folder says where it stopped and ``--resume`` continues
it), 1 on a full disk (one line: the record keeps its last complete block) or on an internal
error (with the traceback).
"""

from __future__ import annotations

import errno
import signal
import sys
import traceback

from . import bench, diagnose, dream, models, sample, study, style, train_style, visualize
from .common import BadInput, Parser, set_threads

__all__ = ["main"]


def build_parser() -> Parser:
    from .. import __version__

    parser = Parser(prog="langevin-images", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"langevin-images {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (sample, study, bench, diagnose, visualize, dream, style, train_style, models):
        module.add_parsers(sub)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from ..cpu import tune_malloc

    tune_malloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM stops a job as Ctrl-C does (sampling stops between two steps, see samplers.driver)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help and --version print, then exit 0
            return int(done.code or 0)
        args.argv = argv
        set_threads(args)
        return int(args.func(args) or 0)
    except BadInput as err:
        print(f"langevin-images: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langevin-images: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            notes = "; ".join(getattr(err, "__notes__", []))
            print(f"langevin-images: error: {err.strerror} writing {err.filename or 'the outputs'}"
                  + (f"; {notes}" if notes else ""), file=sys.stderr)  # fmt: skip
            return 1
        traceback.print_exc()
        print("langevin-images: internal error (the traceback above says where)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
