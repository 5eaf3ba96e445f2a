"""Langevin samplers: the kernel, the kernel registry, preconditioners, constraints and the
``sample()`` / ``resume()`` driver."""

from . import kernel, kernels, pcn, preconditioners
from .constraints import Box
from .driver import METHODS, DivergenceError, Run, resume, sample
from .kernels import KERNELS, build_kernel, register
from .parameters import (
    LangevinParameters,
    from_gradient_ascent,
    from_sgld,
    from_three_epsilons,
    sample_three_epsilons,
)
from .preconditioners import (
    ColorFourier,
    Dense,
    Diagonal,
    Fourier,
    Identity,
    LowRankPlusDiagonal,
)

__all__ = [
    "KERNELS",
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
    "build_kernel",
    "from_gradient_ascent",
    "from_sgld",
    "from_three_epsilons",
    "kernel",
    "kernels",
    "pcn",
    "preconditioners",
    "register",
    "resume",
    "sample",
    "sample_three_epsilons",
]
