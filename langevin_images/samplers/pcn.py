"""Preconditioned Crank-Nicolson (Cotter, Roberts, Stuart & White 2013), for energies with a
Gaussian prior part: a gradient-free kernel whose acceptance does not degrade with dimension.

With ``E(x) = Phi(x) + (x - m)^T C^{-1} (x - m) / 2`` and target ``exp(-E / T)``, the reference
Gaussian is ``N(m, T C)`` and the proposal, with ``beta = min(eps, 1)``, ::

    x' = m + sqrt(1 - beta^2) (x - m) + beta sqrt(T) C^{1/2} xi,     xi ~ N(0, I)

is reversible with respect to it, so the Metropolis-Hastings ratio is ``exp(-(Phi(x') - Phi(x)) /
T)``. ``C`` is the run's ``preconditioner`` (a prior's covariance, e.g.
``FittedGaussianPrior.preconditioner``) and ``m`` the option ``prior_mean``; ``Phi`` is the
energy minus that Gaussian part, so the energy given must contain it with weight 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..linalg import Preconditioner
from . import kernel
from .kernels import Kernel, register

__all__ = ["PCNState", "build_pcn"]


class PCNState(NamedTuple):
    position: Tensor
    energy: Tensor
    phi: Tensor  # (chains,) float64: the energy less its Gaussian prior part
    terms: dict[str, Tensor]
    grad: None = None  # gradient-free: nothing to record


@register("pcn")
def build_pcn(
    energy_fn, *, temperature: float, preconditioner: Preconditioner, prior_mean: float | Tensor
) -> Kernel:
    """pCN for ``energy_fn`` with the Gaussian prior part ``N(prior_mean, preconditioner)``."""
    t = kernel_temperature = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError("temperature must be > 0 for pcn")

    def evaluate(x: Tensor) -> PCNState:
        with torch.no_grad():
            fn = getattr(energy_fn, "evaluate", None)
            energy, terms = fn(x) if callable(fn) else (energy_fn(x), {})
            centred = x - torch.as_tensor(prior_mean, dtype=x.dtype, device=x.device)
            phi = energy.to(torch.float64) - 0.5 * preconditioner.inv_quad(centred)
        return PCNState(x, energy.detach(), phi, {k: v.detach() for k, v in terms.items()})

    def step(i, state: PCNState, eps: Tensor, generator):
        x = state.position
        beta = kernel._per_chain(eps.clamp(max=1.0).to(x.dtype), x)
        mean = torch.as_tensor(prior_mean, dtype=x.dtype, device=x.device)
        noise = preconditioner.noise(x, generator)
        proposal = mean + torch.sqrt(1 - beta * beta) * (x - mean) + beta * math.sqrt(t) * noise
        prop = evaluate(proposal)
        finite = torch.isfinite(prop.energy) & torch.isfinite(prop.phi)
        log_ratio = torch.where(finite, -(prop.phi - state.phi) / t, -math.inf)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        accepted = torch.log(u) < log_ratio
        keep = kernel._per_chain(accepted, x)
        new = PCNState(
            torch.where(keep, prop.position, x),
            torch.where(accepted, prop.energy, state.energy),
            torch.where(accepted, prop.phi, state.phi),
            {k: torch.where(accepted, v, state.terms[k]) for k, v in prop.terms.items()},
        )
        info = kernel.LangevinInfo(
            torch.exp(log_ratio.clamp(max=0.0)), accepted, ~finite, prop.energy
        )
        return new, info

    return Kernel(evaluate, step, accepts=True, temperature=kernel_temperature, state_type=PCNState)
