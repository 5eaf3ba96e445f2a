"""The Langevin kernel: one proposal serves ULA, MALA and zero-noise descent.

Target ``pi(x) ~ exp(-E(x) / T)``; proposal with step ``eps`` and preconditioner ``M``::

    x' = x - eps * M grad E(x) + sqrt(2 eps T) * M^{1/2} xi,     xi ~ N(0, I)
    q(x' | x) = N(x'; x - eps M grad E(x), 2 eps T M)

MALA accepts ``x'`` with probability ``min(1, pi(x') q(x | x') / (pi(x) q(x' | x)))``; ULA
accepts every finite proposal; descent (``T = 0``) drops the noise and the accept step. A step
is a pure function of (state, step size, generator): the state caches the energy and gradient
of the current point, so each step costs exactly one energy+gradient evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .preconditioners import Preconditioner

__all__ = [
    "EnergyFn",
    "LangevinInfo",
    "LangevinState",
    "energy_and_grad",
    "init",
    "mh_log_ratio",
    "step",
]

EnergyFn = Callable[[Tensor], Tensor]


class LangevinState(NamedTuple):
    """Current point of every chain, with its cached energy and gradient."""

    position: Tensor  # (chains, ...)
    energy: Tensor  # (chains,)
    grad: Tensor  # (chains, ...)


class LangevinInfo(NamedTuple):
    """What one step did, per chain."""

    acceptance_prob: Tensor  # (chains,) float64, min(1, MH ratio); 1/0 for ULA and descent
    is_accepted: Tensor  # (chains,) bool
    diverging: Tensor  # (chains,) bool: the proposal's energy or gradient was not finite
    proposal_energy: Tensor  # (chains,)


def energy_and_grad(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``energy_fn`` at ``x`` and its gradient with respect to ``x``.

    Returns the detached energy, shape ``(chains,)``, and the gradient, shaped like ``x``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        energy = energy_fn(x)
        if not isinstance(energy, Tensor) or energy.shape != x.shape[:1]:
            got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(
                f"the energy must return one value per chain, shape ({x.shape[0]},); got {got}"
            )
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), x, allow_unused=True)
        else:
            grad = None
    if grad is None:  # an energy that does not depend on x is flat
        grad = torch.zeros_like(x)
    return energy.detach(), grad


def init(energy_fn: EnergyFn, position: Tensor) -> LangevinState:
    """The state at ``position``; one energy+gradient evaluation."""
    energy, grad = energy_and_grad(energy_fn, position)
    return LangevinState(position.detach(), energy, grad)


def _per_chain(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``(chains,)`` tensor to broadcast against ``like`` of shape ``(chains, ...)``."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _all_finite(t: Tensor) -> Tensor:
    return torch.isfinite(t.reshape(t.shape[0], -1)).all(1)


def mh_log_ratio(
    state: LangevinState,
    proposal: LangevinState,
    step_size: Tensor,
    temperature: float,
    preconditioner: Preconditioner,
) -> Tensor:
    """``log[pi(x') q(x | x')] - log[pi(x) q(x' | x)]`` per chain, accumulated in float64.

    At image dimension each quadratic term is O(10^5) and their difference O(1), so every
    term is formed in float64 from the stored (float32) positions and gradients.
    """
    f64 = torch.float64
    x, xp = state.position.to(f64), proposal.position.to(f64)
    eps = _per_chain(step_size.to(f64), x)
    fwd = xp - x + eps * preconditioner.apply(state.grad.to(f64))
    rev = x - xp + eps * preconditioner.apply(proposal.grad.to(f64))
    denom = 4.0 * step_size.to(f64) * temperature
    log_q_ratio = (preconditioner.inv_quad(fwd) - preconditioner.inv_quad(rev)) / denom
    log_pi_ratio = -(proposal.energy.to(f64) - state.energy.to(f64)) / temperature
    return log_pi_ratio + log_q_ratio


def step(
    state: LangevinState,
    energy_fn: EnergyFn,
    step_size: Tensor,
    generator: torch.Generator | None,
    *,
    temperature: float,
    adjust: bool,
    preconditioner: Preconditioner,
) -> tuple[LangevinState, LangevinInfo]:
    """One Langevin step for every chain.

    Parameters
    ----------
    state : LangevinState
        Current positions with cached energies and gradients.
    energy_fn : callable
        ``x -> (chains,)`` energies.
    step_size : Tensor
        ``(chains,)`` step sizes ``eps``.
    generator : torch.Generator or None
        Source of the proposal noise and the accept draws.
    temperature : float
        ``T``; 0 means no noise (descent), which requires ``adjust=False``.
    adjust : bool
        Metropolis-Hastings accept step (MALA) or not (ULA, descent).
    preconditioner : Preconditioner
        The fixed ``M``.

    Returns
    -------
    (LangevinState, LangevinInfo)
        A proposal whose energy or gradient is not finite is rejected and flagged diverging.
    """
    if adjust and temperature <= 0:
        raise ValueError("MALA needs temperature > 0; use the descent method for T = 0")
    x = state.position
    eps = _per_chain(step_size.to(x.dtype), x)
    proposal = x - eps * preconditioner.apply(state.grad)
    if temperature > 0:
        noise = preconditioner.noise(x, generator)
        proposal = proposal + torch.sqrt(2.0 * eps * temperature) * noise
    new_energy, new_grad = energy_and_grad(energy_fn, proposal)
    prop_state = LangevinState(proposal.detach(), new_energy, new_grad)
    finite = torch.isfinite(new_energy) & _all_finite(new_grad)

    if adjust:
        log_ratio = mh_log_ratio(state, prop_state, step_size, temperature, preconditioner)
        log_ratio = torch.where(finite & ~torch.isnan(log_ratio), log_ratio, -math.inf)
        acceptance_prob = torch.exp(log_ratio.clamp(max=0.0))
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        accepted = torch.log(u) < log_ratio
    else:
        acceptance_prob = finite.to(torch.float64)
        accepted = finite

    keep = _per_chain(accepted, x)
    new_state = LangevinState(
        torch.where(keep, prop_state.position, x),
        torch.where(accepted, new_energy, state.energy),
        torch.where(keep, new_grad, state.grad),
    )
    return new_state, LangevinInfo(acceptance_prob, accepted, ~finite, new_energy)
