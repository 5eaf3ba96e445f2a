"""Diagnostics of recorded runs: ArviZ export, convergence summaries and the ``diagnose``
verdict, diversity and realism metrics. Plots are in ``langevin_images.diagnostics.plots``
(imported on demand: it loads matplotlib)."""

from ..recording import open_record, random_directions, to_datatree
from .convergence import (
    Diagnosis,
    diagnose,
    nested_rhat,
    pixel_maps,
    rhat_chance_level,
    scalar_names,
    summary,
    worst_pixels,
)
from .metrics import (
    class_entropy,
    diversity,
    frechet_distance,
    judge_probability,
    mean_pairwise_distance,
    penultimate,
    picture_stats,
    pixel_std_map,
    realism,
    vendi_score,
)

__all__ = [
    "Diagnosis",
    "class_entropy",
    "diagnose",
    "diversity",
    "frechet_distance",
    "judge_probability",
    "mean_pairwise_distance",
    "nested_rhat",
    "open_record",
    "penultimate",
    "picture_stats",
    "pixel_maps",
    "pixel_std_map",
    "random_directions",
    "realism",
    "rhat_chance_level",
    "scalar_names",
    "summary",
    "to_datatree",
    "vendi_score",
    "worst_pixels",
]
