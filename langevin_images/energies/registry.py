"""The one registry of image priors: the command line, the run specs, the studies, the
benchmarks and the notebooks all build their priors here, so a prior's name means the same
energy everywhere.

A prior is named with a weight and, optionally, its parameters: ``"tv=0.5"``,
``"gaussian=1,sigma=0.3"``, ``("stationary", 1.0, {"alpha": 2.5})``. ``build_prior`` turns a list
of them into one energy, the preconditioner that goes with it (the covariance of a Gaussian
prior, when there is one), and the bounds the sampler should keep the pixels in (``(0, 1)``
unless a Gaussian prior keeps them in range by itself).

Defaults, on pixels in [0, 1]:

============  ==========================================================================
none          no prior
gaussian      ``|x - 0.5|^2 / (2 sigma^2)``, sigma 0.5 (the seed's isotropic prior on
              centred pixels)
tv            smoothed total variation, delta 0.05
blur          ``|x - G_sigma * x|^2 / 2``, sigma 1
stationary    stationary Gaussian with a 1/f^alpha power spectrum, alpha 2, pixel sd 0.15,
              mean 0.5; preconditioner: its Fourier covariance
fitted        the Gaussian of the training images (MNIST), covariance shrinkage 1e-3;
              preconditioner: its covariance
============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .base import Energy
from .priors import (
    BlurPenalty,
    FittedGaussianPrior,
    GaussianPrior,
    StationaryGaussianPrior,
    TotalVariation,
)

__all__ = ["PRIORS", "BuiltPrior", "PriorKind", "build_prior", "parse_prior", "prior_names"]


@dataclass(frozen=True)
class PriorKind:
    """One entry of the registry: how to build the prior, and its default parameters."""

    name: str
    build: Callable[..., Energy | None]
    defaults: dict[str, Any] = field(default_factory=dict)
    gaussian: bool = False  # keeps pixels in range by itself: no bounds needed
    needs_data: bool = False  # built from training images


_FITS: dict[tuple, tuple[Tensor, Energy]] = {}


def _fitted(shape, data, *, shrinkage):
    """The Gaussian fitted to ``data``, kept for the next build from the same tensor (a study
    worker builds many runs from one MNIST training set: the fit is 1.3 s of each). The key
    is the tensor itself (held, so its storage is not reused) and its version counter (which
    an in-place change bumps); at most two fits are kept."""
    if data is None:
        raise ValueError(
            "prior 'fitted' needs training images: available for the MNIST models only"
        )
    key = (data.data_ptr(), tuple(data.shape), data.dtype, data._version, float(shrinkage))
    if key not in _FITS:
        while len(_FITS) >= 2:
            _FITS.pop(next(iter(_FITS)))
        _FITS[key] = (data, FittedGaussianPrior.fit(data, shrinkage=shrinkage))
    return _FITS[key][1]


PRIORS: dict[str, PriorKind] = {
    k.name: k
    for k in (
        PriorKind("none", lambda shape, data: None),
        PriorKind(
            "gaussian",
            lambda shape, data, *, sigma, mean: GaussianPrior(sigma=sigma, mean=mean),
            {"sigma": 0.5, "mean": 0.5},
            gaussian=True,
        ),
        PriorKind("tv", lambda shape, data, *, delta: TotalVariation(delta), {"delta": 0.05}),
        PriorKind("blur", lambda shape, data, *, sigma: BlurPenalty(sigma), {"sigma": 1.0}),
        PriorKind(
            "stationary",
            lambda shape, data, *, alpha, sigma, mean: StationaryGaussianPrior(
                shape, alpha=alpha, sigma=sigma, mean=mean
            ),
            {"alpha": 2.0, "sigma": 0.15, "mean": 0.5},
            gaussian=True,
        ),
        PriorKind("fitted", _fitted, {"shrinkage": 1e-3}, gaussian=True, needs_data=True),
    )
}


def prior_names() -> tuple[str, ...]:
    return tuple(PRIORS)


def parse_prior(text: str) -> tuple[str, float, dict[str, float]]:
    """``"NAME[=WEIGHT][,PARAM=VALUE...]"`` -> (name, weight, params), checked against the
    registry; raises ValueError with one line naming what is wrong."""
    head, *rest = [p.strip() for p in text.split(",")]
    name, _, weight_text = head.partition("=")
    name = name.strip().lower()
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {', '.join(PRIORS)}")
    weight = _positive(weight_text, f"prior {name}: weight") if weight_text else 1.0
    params = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or key not in PRIORS[name].defaults:
            allowed = ", ".join(PRIORS[name].defaults) or "none"
            raise ValueError(f"prior {name}: unknown parameter {item!r} (parameters: {allowed})")
        params[key] = _positive(value, f"prior {name}: {key}", allow_zero=key == "mean")
    return name, weight, params


def _positive(text: str, what: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: expected a number, got {text!r}") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {text}")
    return value


@dataclass
class BuiltPrior:
    """The sum of the priors, its preconditioner (or None) and the sampler's bounds (or None)."""

    energy: Energy | None
    preconditioner: Any
    bounds: tuple[float, float] | None
    described: list[dict] = field(default_factory=list)  # name, weight, params of each term


def build_prior(
    priors: Sequence[str | tuple],
    shape: tuple[int, ...],
    *,
    data: Tensor | None = None,
) -> BuiltPrior:
    """Build the weighted sum of ``priors`` for images of ``shape`` ``(C, H, W)``.

    Parameters
    ----------
    priors : sequence
        Each ``"name=weight,param=value"`` or ``(name, weight)`` or ``(name, weight, params)``.
    shape : tuple
        The image shape the priors act on.
    data : Tensor, optional
        Training images ``(N, C, H, W)`` for the priors fitted to data.
    """
    energy, precond, gaussian, described = None, None, False, []
    for p in priors:
        if isinstance(p, str):
            name, weight, params = parse_prior(p)
        else:
            name, weight, params = (*p, {})[:3]
        kind = PRIORS.get(name)
        if kind is None:
            raise ValueError(f"unknown prior {name!r}; expected one of {', '.join(PRIORS)}")
        unknown = set(params) - set(kind.defaults)
        if unknown:
            raise ValueError(f"prior {name}: unknown parameter(s) {sorted(unknown)}")
        full = {**kind.defaults, **params}
        described.append({"name": name, "weight": float(weight), "params": full})
        term = kind.build(tuple(shape), data, **full)
        if term is None:
            continue
        gaussian = gaussian or kind.gaussian
        if precond is None:
            precond = getattr(term, "preconditioner", None)
        if weight != 1.0:
            # M stays the unweighted prior's covariance: a constant factor on M is the same as
            # one on the step size, which dual averaging adapts
            term = float(weight) * term
        energy = term if energy is None else energy + term
    return BuiltPrior(energy, precond, None if gaussian else (0.0, 1.0), described)
