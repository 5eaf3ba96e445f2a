"""The preconditioners of the Langevin proposal; they live in ``langevin_images.linalg``, which
the Gaussian priors share (see that module)."""

from ..linalg import (
    ColorFourier,
    Dense,
    Diagonal,
    Fourier,
    Identity,
    LowRankPlusDiagonal,
    Preconditioner,
    as_preconditioner,
)

__all__ = [
    "ColorFourier",
    "Dense",
    "Diagonal",
    "Fourier",
    "Identity",
    "LowRankPlusDiagonal",
    "Preconditioner",
    "as_preconditioner",
]
