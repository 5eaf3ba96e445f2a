"""Langevin samplers: the kernel, preconditioners, constraints and the ``sample()`` driver."""

from . import kernel, preconditioners
from .constraints import Box
from .driver import METHODS, DivergenceError, Run, sample
from .parameters import LangevinParameters, from_three_epsilons, sample_three_epsilons
from .preconditioners import (
    ColorFourier,
    Dense,
    Diagonal,
    Fourier,
    Identity,
    LowRankPlusDiagonal,
)

__all__ = [
    "METHODS",
    "Box",
    "ColorFourier",
    "Dense",
    "Diagonal",
    "DivergenceError",
    "Fourier",
    "Identity",
    "LangevinParameters",
    "LowRankPlusDiagonal",
    "Run",
    "from_three_epsilons",
    "kernel",
    "preconditioners",
    "sample",
    "sample_three_epsilons",
]
