"""The "three epsilons" of Plug & Play Generative Networks, mapped to (eps, T, lambda).

The seed text writes the update as::

    x <- x + eps1 * d log p(x)/dx + eps2 * d log p(y=c|x)/dx + N(0, eps3^2)

With ``E = lambda_prior * E_prior + lambda_lik * E_lik`` (``E_prior = -log p(x)``,
``E_lik = -log p(y=c|x)``) the Langevin proposal ``x - eps grad E + sqrt(2 eps T) xi`` is that
update when ``eps1 = eps * lambda_prior``, ``eps2 = eps * lambda_lik`` and
``eps3 = sqrt(2 eps T)``. Three numbers fix four unknowns only up to a common scale; the
convention here is ``lambda_lik = 1`` (temperature in units of the likelihood), so

    eps = eps2,   lambda_prior = eps1 / eps2,   T = eps3^2 / (2 eps2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "LangevinParameters",
    "from_gradient_ascent",
    "from_sgld",
    "from_three_epsilons",
    "sample_three_epsilons",
]


@dataclass(frozen=True)
class LangevinParameters:
    """Step size, temperature and energy weights of one Langevin setting."""

    step_size: float
    temperature: float
    prior_weight: float
    likelihood_weight: float = 1.0

    @property
    def three_epsilons(self) -> tuple[float, float, float]:
        """``(eps1, eps2, eps3)`` of the same update."""
        eps = self.step_size
        return (
            eps * self.prior_weight,
            eps * self.likelihood_weight,
            (2.0 * eps * self.temperature) ** 0.5,
        )

    def describe(self) -> str:
        e1, e2, e3 = self.three_epsilons
        return (
            f"eps1={e1:.4g}, eps2={e2:.4g}, eps3={e3:.4g} means step_size={self.step_size:.4g}, "
            f"temperature={self.temperature:.4g}, prior_weight={self.prior_weight:.4g}, "
            f"likelihood_weight={self.likelihood_weight:.4g}"
        )


def from_three_epsilons(
    eps1: float, eps2: float, eps3: float, *, likelihood_weight: float = 1.0
) -> LangevinParameters:
    """The ``(eps, T, lambda)`` meant by the three epsilons.

    Parameters
    ----------
    eps1 : float
        Weight of the prior gradient, >= 0.
    eps2 : float
        Weight of the likelihood gradient, > 0.
    eps3 : float
        Standard deviation of the added noise, >= 0 (0 is gradient descent).
    likelihood_weight : float
        The free scale: ``lambda_lik``; 1 by default.
    """
    values = (eps1, eps2, eps3, likelihood_weight)
    if not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"three epsilons must be finite numbers, got {values}")
    if eps2 <= 0 or eps1 < 0 or eps3 < 0 or likelihood_weight <= 0:
        raise ValueError(
            "three epsilons need eps1 >= 0, eps2 > 0, eps3 >= 0 (and likelihood_weight > 0)"
        )
    step = eps2 / likelihood_weight
    return LangevinParameters(
        step_size=step,
        temperature=eps3**2 / (2.0 * step),
        prior_weight=eps1 / step,
        likelihood_weight=likelihood_weight,
    )


def from_sgld(
    step_size: float, noise_std: float, *, likelihood_weight: float = 1.0
) -> LangevinParameters:
    """The ``(eps, T, lambda)`` of the stochastic-gradient Langevin update
    ``x + step_size * grad log p(y|x) + N(0, noise_std^2)`` with no separate prior (JEM's
    sampler, for example): the three epsilons ``(0, step_size, noise_std)``, so
    ``T = noise_std^2 / (2 step_size)`` per unit likelihood weight. Welling & Teh's SGLD,
    ``step_size = eps/2`` and ``noise_std = sqrt(eps)``, is ``T = 1``: the posterior itself.
    """
    return from_three_epsilons(0.0, step_size, noise_std, likelihood_weight=likelihood_weight)


def from_gradient_ascent(step_size: float, *, l2: float = 0.0, decay: float = 0.0):
    """The ``(eps, T, lambda)`` of noiseless gradient ascent on a class score (or log
    probability) ``S(x)``: ``x + step_size * (grad S(x) - 2 l2 x)`` (Simonyan et al.'s penalty
    ``l2 |x|^2``), and a decay ``x <- (1 - decay) x`` after each step (Yosinski et al.'s
    ``theta_decay``). Both are a Gaussian prior ``|x|^2 / 2`` of weight
    ``2 l2 + decay / step_size`` at ``T = 0``, with ``lambda_lik = 1``."""
    values = (step_size, l2, decay)
    if not all(math.isfinite(float(v)) for v in values) or step_size <= 0 or l2 < 0 or decay < 0:
        raise ValueError(f"gradient ascent needs step_size > 0, l2 >= 0, decay >= 0, got {values}")
    return LangevinParameters(
        step_size=step_size, temperature=0.0, prior_weight=2.0 * l2 + decay / step_size
    )


def sample_three_epsilons(
    prior_energy, likelihood_energy, x0, *, eps1: float, eps2: float, eps3: float, **kwargs
):
    """Run ``sample()`` with the book's update ``x + eps1 grad log p(x) +
    eps2 grad log p(y|x) + N(0, eps3^2)``.

    ``prior_energy`` is ``-log p(x)`` and ``likelihood_energy`` is ``-log p(y=c|x)``, each
    ``x -> (chains,)``. The run uses ``E = prior_weight * prior + likelihood`` with the step
    size and temperature of ``from_three_epsilons``, and records the three epsilons and their
    meaning in ``run.config``. ``eps3 = 0`` runs gradient descent (``method="descent"``);
    other keywords go to ``sample()`` (``method`` defaults to ``"ula"``, the book's choice).
    """
    from .driver import sample

    p = from_three_epsilons(eps1, eps2, eps3)
    for key in ("step_size", "temperature"):
        if key in kwargs:
            raise TypeError(f"{key} is set by the three epsilons; do not pass it too")

    def energy(x):
        return p.prior_weight * prior_energy(x) + p.likelihood_weight * likelihood_energy(x)

    method = kwargs.pop("method", "ula" if eps3 > 0 else "descent")
    temperature = p.temperature if method != "descent" else 0.0
    if method != "descent" and eps3 == 0:
        raise ValueError("eps3 = 0 means no noise: use method='descent'")
    run = sample(
        energy, x0, step_size=p.step_size, temperature=temperature or 1.0, method=method, **kwargs
    )
    run.config["three_epsilons"] = {
        "eps1": eps1,
        "eps2": eps2,
        "eps3": eps3,
        "means": p.describe(),
        "prior_weight": p.prior_weight,
        "likelihood_weight": p.likelihood_weight,
    }
    return run
