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
    "energy_grad_terms",
    "evaluate",
    "init",
    "mh_log_ratio",
    "step",
]

EnergyFn = Callable[[Tensor], Tensor]


class LangevinState(NamedTuple):
    """Current point of every chain, with what the next step needs of it cached."""

    position: Tensor  # (chains, ...)
    energy: Tensor  # (chains,)
    grad: Tensor  # (chains, ...)
    drift: Tensor  # (chains, ...) M grad, in the position's dtype
    grad_drift: Tensor  # (chains,) float64 grad^T M grad
    terms: dict[str, Tensor] | None = None  # named energy terms, (chains,) each, if reported


class LangevinInfo(NamedTuple):
    """What one step did, per chain."""

    acceptance_prob: Tensor  # (chains,) float64, min(1, MH ratio); 1/0 for ULA and descent
    is_accepted: Tensor  # (chains,) bool
    diverging: Tensor  # (chains,) bool: the proposal's energy or gradient was not finite
    proposal_energy: Tensor  # (chains,)
    evals: int = 1  # energy(+gradient) evaluations the step spent, per chain


def energy_and_grad(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``energy_fn`` at ``x`` and its gradient with respect to ``x``.

    Returns the detached energy, shape ``(chains,)``, and the gradient, shaped like ``x``.
    """
    energy, grad, _ = energy_grad_terms(energy_fn, x)
    return energy, grad


def drift_magnitude(state: LangevinState) -> Tensor:
    """Mean absolute preconditioned gradient ``mean|M grad E|`` per chain, ``(chains,)``,
    accumulated in float64: the scale ``normalize_step`` divides the step by, and the apps
    scale their energies by."""
    flat = state.drift.flatten(1)
    return torch.linalg.vector_norm(flat, 1, dim=1, dtype=torch.float64).div_(flat.shape[1])


def energy_grad_terms(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``energy_and_grad`` plus the named terms of an energy that reports them through an
    ``evaluate(x) -> (total, terms)`` method (``langevin_images.energies.Energy`` does)."""
    evaluate = getattr(energy_fn, "evaluate", None)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        if callable(evaluate):
            energy, terms = evaluate(x)
        else:
            energy, terms = energy_fn(x), {}
        if not isinstance(energy, Tensor) or energy.shape != x.shape[:1]:
            got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(
                f"the energy must return one value per chain, shape ({x.shape[0]},); got {got}"
            )
        if not energy.is_floating_point():
            raise TypeError(
                f"the energy returned {str(energy.dtype).removeprefix('torch.')} values, which "
                "have no gradient: return floating-point energies"
            )
        grad = None
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), x, allow_unused=True)
    if grad is None:  # silently flat, the run would be a random walk: refuse it
        raise ValueError(
            "the energy's output does not depend on x through autograd (detached, made under "
            "torch.no_grad, or computed outside torch): Langevin needs its gradient"
        )
    return energy.detach(), grad, {k: v.detach() for k, v in terms.items()}


def _flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-chain inner product, accumulated in float64."""
    return torch.linalg.vecdot(
        a.reshape(a.shape[0], -1).to(torch.float64), b.reshape(b.shape[0], -1).to(torch.float64)
    )


def evaluate(
    energy_fn: EnergyFn, position: Tensor, preconditioner: Preconditioner, *, exact: bool = True
) -> LangevinState:
    """The state at ``position``: one energy+gradient evaluation and one application of M.

    ``exact=False`` accumulates ``g^T M g`` in the position's dtype: enough for what ULA and
    descent use it for (a finiteness check), and one pass over the gradient instead of three.
    MALA's accept step needs the float64 sum (the default).
    """
    energy, grad, terms = energy_grad_terms(energy_fn, position)
    drift = preconditioner.apply(grad)
    if exact:
        grad_drift = _flat_dot(grad, drift)
    else:
        grad_drift = torch.linalg.vecdot(grad.flatten(1), drift.flatten(1)).to(torch.float64)
    return LangevinState(position.detach(), energy, grad, drift, grad_drift, terms)


def init(
    energy_fn: EnergyFn,
    position: Tensor,
    preconditioner: Preconditioner | None = None,
    *,
    exact: bool = True,
) -> LangevinState:
    """The state at ``position``; one energy+gradient evaluation (``exact`` as for
    ``evaluate``: MALA's first accept step needs it, ULA and descent do not)."""
    return evaluate(energy_fn, position, preconditioner or Preconditioner(), exact=exact)


def _per_chain(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``(chains,)`` tensor to broadcast against ``like`` of shape ``(chains, ...)``."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def mh_log_ratio(
    state: LangevinState, proposal: LangevinState, step_size: Tensor, temperature: float
) -> Tensor:
    """``log[pi(x') q(x | x')] - log[pi(x) q(x' | x)]`` per chain, in float64.

    With ``d = x' - x``, ``g = grad E(x)``, ``g' = grad E(x')`` and the proposal
    ``q(x' | x) = N(x - eps M g, 2 eps T M)``, the two quadratic forms in ``M^{-1}`` share their
    ``d^T M^{-1} d`` term, which cancels exactly::

        log q(x | x') - log q(x' | x) = [ d^T (g + g') / 2 + eps (g^T M g - g'^T M g') / 4 ] / T

    so ``M^{-1}`` is never applied and no O(D) quadratic terms are subtracted from each
    other. The inner products are accumulated in float64 from the stored positions, gradients
    and drifts, whatever their dtype.
    """
    f64 = torch.float64
    d = proposal.position.to(f64) - state.position.to(f64)
    g_sum = state.grad.to(f64) + proposal.grad.to(f64)
    cross = torch.linalg.vecdot(d.reshape(d.shape[0], -1), g_sum.reshape(d.shape[0], -1))
    log_q_ratio = (
        0.5 * cross + 0.25 * step_size.to(f64) * (state.grad_drift - proposal.grad_drift)
    ) / temperature
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
    proposal = torch.addcmul(x, eps, state.drift, value=-1.0)
    if temperature > 0:
        noise = preconditioner.noise(x, generator)
        proposal = proposal.addcmul_(torch.sqrt(2.0 * eps * temperature), noise)
    prop = evaluate(energy_fn, proposal, preconditioner, exact=adjust)
    # g^T M g is finite exactly when every entry of the gradient is (barring overflow to inf,
    # which is a divergence too), and costs nothing more: it is cached for the next step
    finite = torch.isfinite(prop.energy) & torch.isfinite(prop.grad_drift)

    if adjust:
        log_ratio = mh_log_ratio(state, prop, step_size, temperature)
        log_ratio = torch.where(finite & ~torch.isnan(log_ratio), log_ratio, -math.inf)
        acceptance_prob = torch.exp(log_ratio.clamp(max=0.0))
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        accepted = torch.log(u) < log_ratio
    else:
        acceptance_prob = finite.to(torch.float64)
        accepted = finite

    info = LangevinInfo(acceptance_prob, accepted, ~finite, prop.energy)
    if not adjust and x.device.type == "cpu" and bool(accepted.all()):
        # every chain moves: the proposal is the new state. On the CPU this check is free and
        # saves a pass over three image-sized tensors; on an accelerator it would force a sync
        # per step, and the selection below is cheap there
        return prop, info
    keep = _per_chain(accepted, x)
    new_state = LangevinState(
        torch.where(keep, prop.position, x),
        torch.where(accepted, prop.energy, state.energy),
        torch.where(keep, prop.grad, state.grad),
        torch.where(keep, prop.drift, state.drift),
        torch.where(accepted, prop.grad_drift, state.grad_drift),
        {k: torch.where(accepted, v, state.terms[k]) for k, v in prop.terms.items()},
    )
    return new_state, info
