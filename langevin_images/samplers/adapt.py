"""A warmup that adapts the preconditioner from the chains' own draws, then freezes it.

Stan's windowed adaptation for HMC, carried over to MALA: a first window tunes only the step
size; each following, twice as long, runs with the preconditioner estimated so far, tunes the
step size again (dual averaging) and collects draws; the covariance of those draws (over all
chains) is the next window's preconditioner. What ``adapt_preconditioner`` returns is fixed:
the caller's ``sample(..., preconditioner=M, step_size=eps)`` from the returned positions is a
time-homogeneous, pi-invariant MALA chain (its own short warmup re-tunes the step size only).

Estimators of the draws' covariance ``S`` (``n`` draws):

- ``"diagonal"``: ``n/(n+5) diag(S) + 1e-3 * 5/(n+5)`` (Stan's regularization, on variances);
- ``"lowrank"``: the top ``rank`` principal directions of ``S`` plus the mean of the others'
  variances as a diagonal (``LowRankPlusDiagonal``): for targets too large for a dense ``M``;
- ``"dense"``: ``n/(n+5) S + 1e-3 * 5/(n+5) I``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .preconditioners import Dense, Diagonal, LowRankPlusDiagonal

__all__ = ["Adapted", "adapt_preconditioner", "estimate_preconditioner"]

KINDS = ("diagonal", "lowrank", "dense")


@dataclass
class Adapted:
    """What the windowed warmup found: the preconditioner, the step size (median over chains)
    and the chains' positions at its end, with the gradient evaluations it spent."""

    preconditioner: object
    step_size: float
    position: Tensor
    grad_evals: int
    windows: list[int] = field(default_factory=list)


def estimate_preconditioner(draws: Tensor, kind: str = "diagonal", *, rank: int = 16):
    """The preconditioner of ``kind`` estimated from ``draws`` ``(n, D)`` (see the module)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = draws.reshape(draws.shape[0], -1).to(torch.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("estimating a preconditioner needs at least two draws")
    shrink, reg = n / (n + 5.0), 1e-3 * 5.0 / (n + 5.0)
    xc = x - x.mean(0)
    if kind == "diagonal":
        return Diagonal(shrink * xc.square().sum(0) / (n - 1) + reg)
    if kind == "dense":
        cov = xc.T @ xc / (n - 1)
        return Dense(shrink * cov + reg * torch.eye(d, dtype=torch.float64))
    k = min(rank, n - 1, d - 1)
    # principal directions from the draws' SVD: no D x D matrix is formed
    _, s, vt = torch.linalg.svd(xc / (n - 1) ** 0.5, full_matrices=False)
    lam = s.square()
    rest = (xc.square().sum() / (n - 1) - lam[:k].sum()) / max(d - k, 1)
    base = shrink * float(rest.clamp_min(0)) + reg
    extra = (shrink * lam[:k] + reg - base).clamp_min(0)  # M = base I + V diag(extra) V^T
    return LowRankPlusDiagonal(vt[:k].T * extra.sqrt(), torch.full((d,), base, dtype=torch.float64))


def adapt_preconditioner(
    energy,
    x0: Tensor,
    *,
    kind: str = "diagonal",
    windows: tuple[int, ...] = (100, 200, 400),
    first: int = 100,
    rank: int = 16,
    step_size: float = 0.1,
    target_accept: float = 0.574,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    **kwargs,
) -> Adapted:
    """Windowed warmup of MALA's preconditioner (see the module's docstring).

    ``first`` steps tune the step size with no preconditioner; then each window of
    ``windows`` runs ``w`` steps of step-size tuning and ``w`` steps that collect draws, with
    the preconditioner estimated from the previous window's draws. Every call of ``sample``
    gets its own seed (``seed``, ``seed + 1``, ...), so the warmup is reproducible.
    """
    from .driver import sample

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    common = dict(method="mala", schedule="dual_averaging", target_accept=target_accept,
                  temperature=temperature, progress=progress, thin=1, **kwargs)  # fmt: skip
    run = sample(energy, x0, warmup=first, steps=1, step_size=step_size, seed=seed, **common)
    evals = run.grad_evals
    position = run.final_state.position
    precond, eps = None, _median_step(run)
    for i, w in enumerate(windows):
        run = sample(energy, position, warmup=w, steps=w, step_size=eps, seed=seed + 1 + i,
                     preconditioner=precond, **common)  # fmt: skip
        evals += run.grad_evals
        position = run.final_state.position
        draws = run.samples.reshape(-1, *position.shape[1:])
        precond = estimate_preconditioner(draws, kind, rank=rank)
        eps = _median_step(run)
    return Adapted(precond, eps, position.detach(), evals, [first, *windows])


def _median_step(run) -> float:
    return float(run.recorder.get_stats()["step_size"][:, -1].median())
