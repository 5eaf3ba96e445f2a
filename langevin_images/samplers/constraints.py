"""Sampling a target restricted to a box ``lo <= x <= hi`` (e.g. pixels in [0, 1]) exactly.

The chain runs on an unconstrained ``z`` with ``x = lo + (hi - lo) * sigmoid(z)``. If ``x`` has
density ``pi_x(x) ~ exp(-E(x) / T)`` on the box, ``z`` has density
``pi_z(z) = pi_x(x(z)) |dx/dz|``, that is energy

    E_z(z) = E(x(z)) - T * sum_i log(dx_i/dz_i),   log(dx/dz) = log(hi - lo) + log s + log(1 - s)

with ``s = sigmoid(z)``. MALA on ``E_z`` is an exact MCMC method for ``pi_z``, so the mapped
draws ``x(z)`` are exact draws of ``pi_x`` restricted to the box: no clipping, no boundary
bias. At ``T = 0`` the Jacobian term vanishes and descent minimizes ``E`` over the open box.
The preconditioner and the step size then act in ``z``-space.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Box"]


class Box:
    """The box ``[lo, hi]`` and its logistic reparameterization.

    Parameters
    ----------
    lo, hi : float
        Bounds, ``lo < hi``.
    margin : float
        Starting points are clamped into ``[lo + m, hi - m]`` with ``m = margin * (hi - lo)``
        so that pixels exactly at a bound (common in images) get a finite ``z``.
    """

    def __init__(self, lo: float, hi: float, *, margin: float = 1e-3):
        if not lo < hi:
            raise ValueError(f"bounds must satisfy lo < hi, got ({lo}, {hi})")
        self.lo, self.hi, self.margin = float(lo), float(hi), margin

    def to_constrained(self, z: Tensor) -> Tensor:
        if self.lo == 0.0 and self.hi == 1.0:  # images' usual box: one op, forward and backward
            return torch.sigmoid(z)
        return torch.sigmoid(z).mul(self.hi - self.lo).add(self.lo)

    def to_unconstrained(self, x: Tensor) -> Tensor:
        if torch.any(x < self.lo) or torch.any(x > self.hi):
            raise ValueError(f"x0 has values outside the bounds [{self.lo}, {self.hi}]")
        u = x if self.lo == 0.0 and self.hi == 1.0 else (x - self.lo) / (self.hi - self.lo)
        return torch.logit(u.clamp(self.margin, 1 - self.margin))

    def log_det_jacobian(self, z: Tensor) -> Tensor:
        """``sum_i log(dx_i/dz_i)`` per chain."""
        log_j = (
            torch.log(torch.tensor(self.hi - self.lo, dtype=z.dtype, device=z.device))
            - F.softplus(-z)
            - F.softplus(z)
        )
        return log_j.reshape(z.shape[0], -1).sum(1)

    def wrap(
        self, energy_fn: Callable[[Tensor], Tensor], temperature: float
    ) -> Callable[[Tensor], Tensor]:
        """The energy ``E_z`` of the unconstrained chain at temperature ``T``; the named terms
        of an energy that reports them pass through (evaluated at ``x(z)``)."""
        return _BoxEnergy(self, energy_fn, temperature)

    def __repr__(self) -> str:
        return f"Box({self.lo}, {self.hi})"


class _BoxEnergy:
    """``E_z(z) = E(x(z)) - T log|dx/dz|``, with ``evaluate`` when ``E`` has one."""

    def __init__(self, box: Box, energy_fn: Callable[[Tensor], Tensor], temperature: float):
        self.box, self.energy_fn, self.temperature = box, energy_fn, float(temperature)
        if callable(getattr(energy_fn, "evaluate", None)):
            self.evaluate = self._evaluate

    def _with_jacobian(self, energy: Tensor, z: Tensor) -> Tensor:
        if not self.temperature:  # descent: no term, and no subtraction of 0 either
            return energy
        return energy - self.temperature * self.box.log_det_jacobian(z)

    def __call__(self, z: Tensor) -> Tensor:
        return self._with_jacobian(self.energy_fn(self.box.to_constrained(z)), z)

    def _evaluate(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total, terms = self.energy_fn.evaluate(self.box.to_constrained(z))
        return self._with_jacobian(total, z), terms
