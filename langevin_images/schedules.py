"""Step-size schedules: constant, decays, and dual averaging to a target acceptance rate.

A schedule is a small object with three methods (the ``init / update`` pieces of BlackJAX's
adaptation, over an explicit state)::

    state = schedule.init(step_size, warmup=..., steps=..., target_accept=...)
    eps = schedule.step_size(state)                  # (chains,) step sizes for the next step
    state = schedule.update(state, t, acceptance_prob)   # after global step t = 0, 1, ...

``step_size`` is a ``(chains,)`` tensor; ``acceptance_prob`` is the ``(chains,)`` acceptance
probability of step ``t``. Any object with these methods can be passed as ``schedule=``.

Deterministic schedules (constant, polynomial, exponential, cosine) are functions of the global
step over warmup and sampling. Each MALA step stays pi-invariant whatever its step size, so a
decaying step keeps MALA exact; ULA's bias changes with the step. Adaptive schedules
(dual averaging) change the step only during warmup and freeze it at the end of warmup, so the
draws after warmup come from a fixed, pi-invariant kernel.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Constant",
    "CosineDecay",
    "DualAveraging",
    "ExponentialDecay",
    "PolynomialDecay",
    "Schedule",
    "StuckFallback",
    "as_schedule",
]


class _TimeState(NamedTuple):
    initial: Tensor  # (chains,)
    t: int  # index of the next step
    total: int  # warmup + steps


class Schedule:
    """Base class of the deterministic schedules: ``eps_t = initial * factor(t, total)``."""

    adaptive = False

    def init(self, step_size: Tensor, *, warmup: int, steps: int, target_accept: float) -> Any:
        return _TimeState(step_size, 0, warmup + steps)

    def factor(self, t: int, total: int) -> float:
        return 1.0

    def step_size(self, state: Any) -> Tensor:
        return state.initial * self.factor(state.t, state.total)

    def update(self, state: Any, t: int, acceptance_prob: Tensor) -> Any:
        return state._replace(t=t + 1)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Constant(Schedule):
    """The same step size at every step."""

    def step_size(self, state: _TimeState) -> Tensor:
        return state.initial  # not initial * 1.0: one kernel fewer per step (never written to)


class PolynomialDecay(Schedule):
    """``eps_t = a (b + t)^(-gamma)``, the Robbins-Monro decay of SGLD (Welling & Teh 2011).

    ``a`` defaults to ``step_size * b^gamma`` so that ``eps_0`` is the given step size.
    ``0.5 < gamma <= 1`` satisfies the Robbins-Monro conditions.
    """

    def __init__(self, gamma: float = 0.55, b: float = 1.0, a: float | None = None):
        if gamma < 0 or b <= 0 or (a is not None and a <= 0):
            raise ValueError("PolynomialDecay needs gamma >= 0, b > 0 and a > 0")
        self.gamma, self.b, self.a = gamma, b, a

    def step_size(self, state: _TimeState) -> Tensor:
        decay = (self.b + state.t) ** (-self.gamma)
        if self.a is not None:
            return torch.full_like(state.initial, self.a * decay)
        return state.initial * self.b**self.gamma * decay


class ExponentialDecay(Schedule):
    """``eps_t = max(eps_0 * rate^t, min_step_size)``."""

    def __init__(self, rate: float = 0.999, min_step_size: float = 0.0):
        if not 0 < rate <= 1 or min_step_size < 0:
            raise ValueError("ExponentialDecay needs 0 < rate <= 1 and min_step_size >= 0")
        self.rate, self.min_step_size = rate, min_step_size

    def step_size(self, state: _TimeState) -> Tensor:
        return (state.initial * self.rate**state.t).clamp_min(self.min_step_size)


class CosineDecay(Schedule):
    """Half a cosine from ``eps_0`` down to ``final_fraction * eps_0`` over ``period`` steps
    (default: the whole run, warmup included), constant after."""

    def __init__(self, final_fraction: float = 0.0, period: int | None = None):
        if not 0 <= final_fraction <= 1 or (period is not None and period < 1):
            raise ValueError("CosineDecay needs 0 <= final_fraction <= 1 and period >= 1")
        self.final_fraction, self.period = final_fraction, period

    def factor(self, t: int, total: int) -> float:
        period = self.period or max(total - 1, 1)
        c = 0.5 * (1.0 + math.cos(math.pi * min(t, period) / period))
        return self.final_fraction + (1.0 - self.final_fraction) * c


class _DualAveragingState(NamedTuple):
    log_step: Tensor  # (chains,) the step used now
    log_step_avg: Tensor  # (chains,) the averaged iterate, frozen in after warmup
    h_avg: Tensor  # (chains,) running average of (target - acceptance)
    mu: Tensor  # (chains,) shrinkage point log(10 eps_0)
    t: int  # adaptation steps done
    warmup: int
    target: float


class DualAveraging(Schedule):
    """Nesterov's dual averaging of the log step size towards a target acceptance rate, as in
    Hoffman & Gelman (2014, NUTS paper, section 3.2), during warmup only.

    Defaults ``gamma = 0.05, t0 = 10, kappa = 0.75`` are theirs; the target defaults to the
    sampler's ``target_accept`` (0.574 for MALA, the optimal rate of Roberts & Rosenthal 1998).
    At the end of warmup the step is frozen at the averaged iterate.

    Parameters
    ----------
    target_accept : float, optional
        Overrides the sampler's ``target_accept``.
    per_chain : bool
        Adapt one step size per chain (default) or one shared by all chains, driven by the
        acceptance probability averaged over chains.
    """

    adaptive = True

    def __init__(
        self,
        target_accept: float | None = None,
        *,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
        per_chain: bool = True,
    ):
        if target_accept is not None and not 0 < target_accept < 1:
            raise ValueError("target_accept must be in (0, 1)")
        self.target_accept, self.gamma, self.t0, self.kappa = target_accept, gamma, t0, kappa
        self.per_chain = per_chain

    def init(
        self, step_size: Tensor, *, warmup: int, steps: int, target_accept: float
    ) -> _DualAveragingState:
        log_step = torch.log(step_size.to(torch.float64))
        target = self.target_accept if self.target_accept is not None else target_accept
        return _DualAveragingState(
            log_step,
            log_step.clone(),
            torch.zeros_like(log_step),
            log_step + math.log(10.0),
            0,
            warmup,
            target,
        )

    def step_size(self, state: _DualAveragingState) -> Tensor:
        return torch.exp(state.log_step)

    def update(
        self, state: _DualAveragingState, t: int, acceptance_prob: Tensor
    ) -> _DualAveragingState:
        if t >= state.warmup:
            return state
        acc = acceptance_prob.to(torch.float64)
        if not self.per_chain:
            acc = acc.mean().expand_as(acc)
        m = state.t + 1
        eta = 1.0 / (m + self.t0)
        h_avg = (1.0 - eta) * state.h_avg + eta * (state.target - acc)
        log_step = state.mu - math.sqrt(m) / self.gamma * h_avg
        weight = m ** (-self.kappa)
        log_step_avg = weight * log_step + (1.0 - weight) * state.log_step_avg
        if t == state.warmup - 1:  # end of warmup: freeze at the averaged iterate
            log_step = log_step_avg
        return state._replace(log_step=log_step, log_step_avg=log_step_avg, h_avg=h_avg, t=m)


class _FallbackState(NamedTuple):
    inner: _DualAveragingState  # dual averaging over the warmup before the probation
    accepted: Tensor  # (chains,) acceptance summed over the probation steps so far
    warmup: int  # the whole warmup, probation included


class StuckFallback(DualAveraging):
    """Dual averaging that ends ``window`` steps before the warmup does; those last warmup
    steps run at the frozen step as a probation, and a chain whose acceptance averaged over
    them is below ``threshold`` gets its step multiplied by ``factor`` for the sampling.

    Neal's funnel: chains that walk into the neck at the end of warmup reject every step at
    the step the rest of the funnel wants. Everything happens during warmup: the step is
    fixed for the sampling, so every chain stays a valid MALA chain.
    """

    def __init__(self, target_accept: float | None = None, *, window: int = 50,
                 threshold: float = 0.05, factor: float = 0.1, **kwargs):  # fmt: skip
        super().__init__(target_accept, **kwargs)
        if window < 1 or not 0 < threshold < 1 or not 0 < factor < 1:
            raise ValueError("StuckFallback needs window >= 1, 0 < threshold < 1, 0 < factor < 1")
        self.window, self.threshold, self.factor = window, threshold, factor

    def __repr__(self) -> str:
        return (f"StuckFallback(window={self.window}, threshold={self.threshold}, "
                f"factor={self.factor})")  # fmt: skip

    def init(self, step_size: Tensor, *, warmup: int, **kwargs) -> _FallbackState:
        inner = super().init(step_size, warmup=max(warmup - self.window, 0), **kwargs)
        return _FallbackState(inner, torch.zeros_like(inner.log_step), warmup)

    def step_size(self, state: _FallbackState) -> Tensor:
        return super().step_size(state.inner)

    def update(self, state: _FallbackState, t: int, acceptance_prob: Tensor) -> _FallbackState:
        start = state.inner.warmup
        if t < start:
            return state._replace(inner=super().update(state.inner, t, acceptance_prob))
        if t >= state.warmup:
            return state
        accepted = state.accepted + acceptance_prob.to(torch.float64)
        inner = state.inner
        if t == state.warmup - 1:
            stuck = accepted / (state.warmup - start) < self.threshold
            shrunk = inner.log_step + math.log(self.factor)
            inner = inner._replace(log_step=torch.where(stuck, shrunk, inner.log_step))
        return state._replace(inner=inner, accepted=accepted)


def as_schedule(schedule: Any) -> Schedule:
    """``None`` is a constant step, ``"dual_averaging"`` the adaptive one, else the object."""
    if schedule is None or schedule == "constant":
        return Constant()
    if isinstance(schedule, str):
        named = {
            "dual_averaging": DualAveraging,
            "stuck_fallback": StuckFallback,
            "polynomial": PolynomialDecay,
            "exponential": ExponentialDecay,
            "cosine": CosineDecay,
        }
        if schedule not in named:
            raise ValueError(
                f"unknown schedule {schedule!r}; expected one of "
                f"{['constant', *named]} or a schedule object"
            )
        return named[schedule]()
    missing = [
        m for m in ("init", "step_size", "update") if not callable(getattr(schedule, m, None))
    ]
    if missing:
        raise TypeError(f"schedule {schedule!r} lacks {', '.join(missing)}")
    return schedule
