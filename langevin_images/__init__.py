"""Sample images from pretrained classifiers with Langevin dynamics, and check that it worked."""

from . import recording, samplers, schedules
from .recording import open_record
from .samplers import (
    Box,
    DivergenceError,
    Run,
    from_three_epsilons,
    resume,
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
    "open_record",
    "recording",
    "resume",
    "sample",
    "sample_three_epsilons",
    "samplers",
    "schedules",
]
