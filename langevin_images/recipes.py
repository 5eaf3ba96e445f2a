"""The temperature table: the ``(eps, T, lambda)`` that legacy recipes for sampling or
visualizing a classifier imply, computed from their published settings.

Each recipe's update is written as this package's Langevin step
``x - eps grad E + sqrt(2 eps T) xi`` with ``E = lambda_prior E_prior - lambda_lik log p(y|x)``
and the convention ``lambda_lik = 1``, so T is in units of the classifier's log probability:
the recipe samples ``p(y|x)^(1/T) p(x)^(lambda_prior/T)``. A recipe without noise is T = 0, an
optimization. ``studies/recipes.toml`` runs each implied setting on MNIST next to MALA at
T = 1 (the classifier's own posterior under the fitted prior).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .samplers.parameters import LangevinParameters, from_sgld, from_three_epsilons

__all__ = ["RECIPES", "Recipe", "markdown_table", "temperature_table"]


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    settings: str  # the published settings, as the source gives them
    parameters: LangevinParameters | None  # None: eps is not a fixed number (see ``step``)
    step: str = ""  # how eps is set when it is not a fixed number
    notes: str = ""
    extras: dict = field(default_factory=dict)


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "JEM SGLD",
        "Grathwohl et al. 2020, Your classifier is secretly an energy based model (their "
        "code's defaults --sgld_lr 1.0 --sgld_std 0.01)",
        "x + 1.0 grad log p(x, y) + N(0, 0.01^2), 20 steps from a replay buffer",
        from_sgld(1.0, 0.01),
        notes="T = 5e-5: the chain samples the model's p(x, y)^20000, a near-optimization",
    ),
    Recipe(
        "PPGN",
        "Nguyen et al. 2017, Plug & Play Generative Networks",
        "eps1 = 1e-5, eps2 = 1, eps3 = 1e-17",
        from_three_epsilons(1e-5, 1.0, 1e-17),
        notes="T = 5e-35: noise below float32's resolution, so gradient ascent in practice",
    ),
    Recipe(
        "DeepDream",
        "Mordvintsev, Olah & Tyka 2015 (the deepdream notebook)",
        "step 1.5 / mean|grad|, jitter 32 px, 4 octaves x 1.4, 10 steps each",
        None,
        step="1.5 / mean |grad E| (normalized each step)",
        notes="T = 0; jitter and octaves act as a prior that is not an energy",
        extras={"temperature": 0.0, "prior_weight": 0.0},
    ),
    Recipe(
        "Lucid",
        "Olah, Mordvintsev & Schubert 2017, Feature Visualization (lucid's render_vis)",
        "Adam, learning rate 0.05, 512 steps, decorrelated Fourier parameterization, "
        "jitter/scale/rotate",
        None,
        step="Adam's per-pixel step (lr 0.05) in a Fourier basis",
        notes="T = 0; the Fourier basis is a preconditioner, the transforms a prior",
        extras={"temperature": 0.0, "prior_weight": 0.0},
    ),
    Recipe(
        "Simonyan et al.",
        "Simonyan, Vedaldi & Zisserman 2014, Deep inside convolutional networks",
        "gradient ascent on S_c(x) - l2 |x|^2 (l2 not published)",
        None,
        step="the ascent's learning rate (not published)",
        notes="T = 0; a Gaussian prior of sd 1 (from_gradient_ascent)",
        extras={"temperature": 0.0, "prior_weight": "2 l2"},
    ),
    Recipe(
        "Yosinski et al.",
        "Yosinski et al. 2015, Understanding neural networks through deep visualization",
        "gradient ascent with L2 decay theta_decay, Gaussian blur every few steps, clipping "
        "of small-norm and small-contribution pixels",
        None,
        step="the ascent's learning rate eta",
        notes="T = 0; blur and clipping act as projections, not energies",
        extras={"temperature": 0.0, "prior_weight": "theta_decay / eta"},
    ),
    Recipe(
        "MALA at T = 1",
        "this package: the classifier's own posterior",
        "MALA, dual averaging to acceptance 0.574, lambda_lik = 1, fitted prior weight 1",
        LangevinParameters(step_size=float("nan"), temperature=1.0, prior_weight=1.0),
        step="adapted by dual averaging",
        notes="samples p(y|x) p(x) itself, with its accept step",
    ),
)


def temperature_table() -> list[dict]:
    """One row per recipe: name, source, settings, eps, T, lambda_prior, notes."""
    rows = []
    for r in RECIPES:
        p = r.parameters
        t = p.temperature if p is not None else r.extras.get("temperature")
        lam = p.prior_weight if p is not None else r.extras.get("prior_weight")
        eps = r.step or (f"{p.step_size:g}" if p is not None else "")
        rows.append({"recipe": r.name, "source": r.source, "settings": r.settings, "eps": eps,
                     "temperature": t, "lambda_prior": lam, "notes": r.notes})  # fmt: skip
    return rows


def _cell(v) -> str:
    if isinstance(v, str):
        return v.replace("|", "\\|")
    return "0" if v == 0 else f"{v:.3g}"


def markdown_table() -> str:
    """The table as Markdown (the README's and docs/temperature_table.md's)."""
    lines = ["| recipe | published settings | eps | T | lambda_prior | what it means |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in temperature_table():
        cells = [row[k] for k in ("recipe", "settings", "eps", "temperature", "lambda_prior",
                                  "notes")]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m langevin_images.recipes prints the table
    print(markdown_table(), end="")
