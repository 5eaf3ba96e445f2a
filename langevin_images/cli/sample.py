"""``sample`` and ``demo``: class-conditional sampling into a run folder, resumable."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

from .common import (
    BadInput,
    add_common,
    add_sampling,
    argv_given,
    nonneg_float,
    nonneg_int,
    positive_int,
    prior,
    say,
)

__all__ = ["add_parsers"]

SCHEDULES = ("dual_averaging", "stuck_fallback", "constant", "cosine", "polynomial", "exponential")

# command-line dest -> RunSpec field, for the options a spec is made of
SPEC_FIELDS = {
    "model": "model", "target": "targets", "prior": "priors",
    "likelihood_weight": "likelihood_weight", "method": "method", "schedule": "schedule",
    "step_size": "step_size", "temperature": "temperature", "precondition": "precondition",
    "chains": "chains", "steps": "steps", "warmup": "warmup", "thin": "thin", "seed": "seed",
    "size": "size", "device": "device", "tf32": "tf32", "threads": "threads",
    "checkpoint_every": "checkpoint_every", "weights": "weights", "jitter": "jitter",
}  # fmt: skip


def spec_from_args(args, job: str):
    from ..runs import RunSpec

    eps = (args.eps1, args.eps2, args.eps3)
    if any(e is not None for e in eps) and any(e is None for e in eps):
        raise BadInput("give all three of --eps1, --eps2, --eps3, or none")
    given = argv_given(args.argv, args.parser)
    if eps[0] is not None:
        clash = [f"--{d.replace('_', '-')}" for d in ("step_size", "temperature",
                 "likelihood_weight") if d in given]  # fmt: skip
        if clash:
            raise BadInput(
                f"--eps1/2/3 set the step size, temperature and likelihood weight: drop "
                f"{', '.join(clash)}"
            )
    if args.method == "descent" and "temperature" in given:
        raise BadInput("--method descent runs at temperature 0: drop --temperature")
    fields = {f: getattr(args, dest) for dest, f in SPEC_FIELDS.items()}
    fields["targets"] = tuple(fields["targets"] or ())
    fields["priors"] = tuple(fields["priors"] or ())
    return RunSpec(job=job, three_epsilons=None if eps[0] is None else eps, **fields)


def _run(args, *, job: str) -> int:
    from .. import runs

    try:
        if args.resume:
            stored = runs.spec_from_record(args.resume)
            given = argv_given(args.argv, args.parser) & set(SPEC_FIELDS)
            asked = spec_from_args(args, job)
            differ = sorted(
                f"--{d.replace('_', '-')}"
                for d in given
                if getattr(asked, SPEC_FIELDS[d]) != getattr(stored, SPEC_FIELDS[d])
            )
            if differ:
                raise BadInput(
                    f"--resume {args.resume}: {', '.join(differ)} differ from the run's spec "
                    f"(hash {stored.hash}); drop them to continue the run as it was"
                )
            result = runs.resume_folder(
                args.resume, progress=not args.quiet, argv=args.argv, say=lambda s: say(args, s)
            )
        else:
            result = runs.execute(
                spec_from_args(args, job), args.out, progress=not args.quiet, force=args.force,
                argv=args.argv, say=lambda s: say(args, s),
            )  # fmt: skip
    except (ValueError, runs.RunFolderError) as err:
        raise BadInput(str(err).splitlines()[0]) from None
    except OSError as err:  # a full disk: main() prints it in one line
        if (Path(args.resume or args.out) / runs.RECORD).exists():
            err.add_note(f"free space, then continue: langevin-images {job} --resume "
                         f"{args.resume or args.out}")  # fmt: skip
        raise
    out = result.out
    if result.interrupted:
        c = result.card
        print(
            f"{job}: interrupted at step {c['interrupted_at_step']} of {c['steps_total']}; the "
            f"record is in {out / runs.RECORD} (run.json says so). Continue it with:\n"
            f"  langevin-images {job} --resume {out}",
            flush=True,
        )
        return 130
    if result.verdict is None:
        print(f"{job}: no draws were kept; wrote {out}/run.json, run.nc and the record")
    elif job == "demo":
        _print_demo(args, result)
    else:  # the result, printed even with --quiet
        first = str(result.verdict).splitlines()[0]
        print(f"{job}: {first}\n{job}: wrote {out}/ ({', '.join(result.card['outputs'])})")
    return 0


def _print_demo(args, result) -> None:
    m, verdict, out = result.metrics, result.verdict, result.out
    # the run's own spec: a resumed run's arguments are only the folder
    spec = SimpleNamespace(**{k: result.card["spec"][k] for k in ("chains", "steps", "thin")})
    per_class = " ".join(f"{c}:{v:.2f}" for c, v in m["judge_top1_per_target"].items())
    print(f"demo: 10 digits x {spec.chains} chains, {result.seconds:.1f} s sampling, "
          f"{time.perf_counter() - args.t0:.1f} s in all")  # fmt: skip
    print(f"  judge ({m['judge']}) top-1 on the final draws: {m['judge_top1']:.3f} ({per_class})")
    print(
        f"  diversity within a digit: Vendi {m['vendi_within_target']:.2f} of "
        f"{m['vendi_max']} (centred judge features), "
        f"mean pairwise L2 {m['pairwise_pixel_within_target']:.2f}; Fréchet distance to the "
        f"MNIST test set {m['frechet_to_mnist_test']:.1f}"
    )
    print("  diagnostics: " + str(verdict).replace("\n", "\n  "))
    if not verdict.ok:
        print(_not_converged_in_words(verdict, spec))
    print(f"  wrote {out}/: final.png (digits), samples.png, run.nc, run.json, plots")


def _not_converged_in_words(verdict, spec) -> str:
    """What "NOT converged" means for a newcomer, and how many steps would do, estimated from
    the run itself: a chain's ESS grows in proportion to its steps once it has mixed. ``spec``:
    the run's ``chains``, ``steps`` and ``thin``."""
    table = verdict.table
    ess, rhat = float(table["ess_bulk"].min()), float(table["r_hat"].max())
    per_draw = spec.chains * spec.steps / max(ess, 1.0)  # steps of one chain per independent draw
    words = (
        f"  in words: the {spec.chains} chains of a digit still disagree (R-hat up to "
        f"{rhat:.3f}; 1.01 is the bar), and the least explored summary holds the worth of "
        f"{ess:.0f} independent draws (400 is the bar). The digits look right, but the chains "
        f"have not explored every way of writing them: this target mixes slowly, about one "
        f"independent draw per {per_draw:.0f} steps of a chain, so the samples' frequencies are "
        f"not yet to be trusted.\n"
    )
    if ess < 400:
        needed = 100 * round(400 * per_draw / spec.chains / 100 + 0.5)
        return words + (
            f"  to get there: about {needed} steps per chain would bring every ESS to 400 "
            f"(langevin-images demo --steps {needed}, {needed / spec.steps:.1f}x this run's "
            f"time); R-hat can need more, or more chains (--chains), because chains that settle "
            f"on different ways of writing a digit rarely cross (the README's \"Is the demo "
            f'converged?" shows runs 15x and 45x longer).'
        )
    chance = getattr(verdict, "rhat_chance", None)
    draws = spec.steps // spec.thin
    if chance is not None and rhat <= chance[1]:
        return words + (
            f"  to get there: every ESS is past 400, and R-hat {rhat:.3f} is what chains that "
            f"have mixed give by chance with {draws} kept draws per chain (independent draws "
            f"give {chance[0]:.3f}): 1.01 cannot be judged with so few, it needs about "
            f"{verdict.draws_needed}. The demo keeps 400 draws per chain from 4 000 steps on: "
            f"langevin-images demo --steps {max(4000, spec.steps)} (the README's \"Is the demo "
            f'converged?").'
        )
    return words + (
        f"  to get there: every ESS is past 400; R-hat is what is left, and it falls as the "
        f"chains run longer and cross between ways of writing a digit (langevin-images demo "
        f"--steps {2 * spec.steps}, twice this run's time; the README's \"Is the demo "
        f'converged?" shows runs up to 90x longer).'
    )


def _sample(args: argparse.Namespace) -> int:
    return _run(args, job="sample")


def demo_thin(steps: int) -> int:
    """The demo's thinning: 100 kept draws per chain up to 1 000 steps, then a draw every 10
    steps up to 400 per chain. R-hat needs the draws: with 100 per chain, independent draws
    alone give a largest R-hat of about 1.015 over the demo's 20 summaries x 10 digits, above
    the 1.01 bar, and with 400 about 1.003 (``diagnostics.rhat_chance_level``)."""
    return max(1, min(steps // 100, max(10, steps // 400)))


def _demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: class-conditional MNIST digits of all ten classes
    from the adversarially trained classifier, MALA under the data-fitted Gaussian prior, with
    its diagnostics. 100 kept draws per chain at the default 1 000 steps (``demo_thin``): R-hat
    and ESS need them."""
    args.model, args.target, args.prior = "mnist-robust", None, ["fitted=1"]
    args.schedule, args.precondition = "dual_averaging", "auto"
    args.eps1 = args.eps2 = args.eps3 = None
    args.size, args.jitter = 28, None
    args.thin = demo_thin(args.steps)
    args.t0 = time.perf_counter()
    return _run(args, job="demo")


def add_parsers(sub) -> None:
    from ..energies import PRIORS

    demo = sub.add_parser("demo", help="the main job: class-conditional MNIST with diagnostics")
    add_common(demo, out="out/demo")
    add_sampling(demo, steps=1000, warmup=700, chains=8, temperature=0.3, lik=100.0)
    demo.set_defaults(func=_demo, parser=demo)

    s = sub.add_parser("sample", help="sample images of target classes from a classifier")
    add_common(s, out="out/sample")
    s.add_argument("--model", default="mnist",
                   help="mnist, mnist-robust, mnist-judge, lite0, torchvision:NAME")  # fmt: skip
    s.add_argument(
        "--target",
        action="append",
        help="class index or name (repeatable); 'all' for models with <= 10 classes",
    )
    s.add_argument("--prior", action="append", type=prior,
                   help=f"NAME=WEIGHT[,PARAM=VALUE...], repeatable; NAME one of "
                        f"{', '.join(PRIORS)}")  # fmt: skip
    add_sampling(s, steps=200, warmup=300, chains=4, temperature=0.1, lik=100.0)
    s.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="default: dual_averaging, or constant with --eps1/2/3")  # fmt: skip
    s.add_argument("--precondition", choices=("auto", "none", "fourier", "color-fourier"),
                   default="auto", help="auto: colour x 1/f for the picture recipe, else the "
                   "prior's covariance (fitted for MNIST, stationary for RGB)")  # fmt: skip
    s.add_argument("--jitter", type=nonneg_int, default=None,
                   help="random shift (px), with scale 0.9-1.1 and rotation 5 deg, of the image "
                        "the model sees each step; default size // 16 for the picture recipe, "
                        "else 0 (not with mala: the energy would be random)")  # fmt: skip
    s.add_argument("--size", type=positive_int, default=64, help="image side (RGB models)")
    s.add_argument("--thin", type=positive_int, default=None)
    for k in (1, 2, 3):
        s.add_argument(
            f"--eps{k}",
            type=nonneg_float,
            default=None,
            help="the book's three-epsilon form (give all three): mapped to (eps, T, lambda)",
        )
    s.set_defaults(func=_sample, parser=s)
