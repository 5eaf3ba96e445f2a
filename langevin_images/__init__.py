"""Sample images from pretrained classifiers with Langevin dynamics, and check that it worked."""

from . import recording, samplers, schedules
from .samplers import (
    Box,
    DivergenceError,
    Run,
    from_three_epsilons,
    sample,
    sample_three_epsilons,
)

__version__ = "0.1.0"

__all__ = [
    "Box",
    "DivergenceError",
    "Run",
    "__version__",
    "from_three_epsilons",
    "recording",
    "sample",
    "sample_three_epsilons",
    "samplers",
    "schedules",
]
