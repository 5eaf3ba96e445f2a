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

**With the gradients** at the draws (``adapt_preconditioner``'s default), the estimate uses
them too, as nutpie does for HMC (Seyboldt et al. 2023): of the draws' covariance ``S`` and
the gradients' ``G``, ``M`` is the matrix geometric mean ``S # G^{-1}``, the one SPD ``M``
with ``M G M = S``. For a Gaussian target the gradient is ``A (x - mu)``, ``A`` the precision,
so the empirical ``G`` is ``A S A`` *exactly*, and ``S # (A S A)^{-1} = A^{-1}``: the target's
covariance, whatever the draws, as soon as they span the space. The draws' covariance alone
needs the draws to have explored the target, which a warmup of MALA under a bad ``M`` does not
do in the directions it mixes slowly in. On the 784-d dense Gaussian the draws alone gave no
usable ``M`` (min ESS 9 of 32 000 draws); with the gradients, see the benchmark README.

- ``"diagonal"``: ``sqrt(var(x) / var(grad))`` per coordinate;
- ``"dense"``: ``S # G^{-1}`` in the coordinates scaled by that diagonal (each covariance shrunk
  towards its diagonal when there are fewer than ``2 D`` draws);
- ``"lowrank"``: that diagonal times the identity plus the ``rank`` directions of the dense
  estimate (in the scaled coordinates, within the leading ``max(8 rank, 128)`` directions of
  the draws and gradients) with the largest variance above 1.

The gradients cost one energy+gradient evaluation per draw, counted in ``grad_evals``.
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


def estimate_preconditioner(
    draws: Tensor, kind: str = "diagonal", *, rank: int = 16, grads: Tensor | None = None
):
    """The preconditioner of ``kind`` estimated from ``draws`` ``(n, D)`` and, if given, the
    energy's gradients ``grads`` at them (same shape; see the module)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = draws.reshape(draws.shape[0], -1).to(torch.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("estimating a preconditioner needs at least two draws")
    if grads is not None:
        g = grads.reshape(grads.shape[0], -1).to(torch.float64)
        if g.shape != x.shape:
            raise ValueError(f"grads {tuple(grads.shape)} do not match draws {tuple(draws.shape)}")
        return _with_gradients(x, g, kind, rank)
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


def _with_gradients(x: Tensor, g: Tensor, kind: str, rank: int):
    """The gradient-informed estimates of the module's docstring, from flat float64 draws
    ``x`` and gradients ``g`` ``(n, D)``."""
    d = x.shape[1]
    xc, gc = x - x.mean(0), g - g.mean(0)
    tiny = torch.finfo(torch.float64).tiny
    var_x = xc.square().mean(0).clamp_min(tiny)
    var_g = gc.square().mean(0).clamp_min(tiny)
    scale = (var_x / var_g).sqrt()
    flat = (~torch.isfinite(scale)) | (var_g <= tiny)  # coordinates the energy ignores
    if bool(flat.any()):
        scale = torch.where(flat, var_x.clamp_min(1e-3), scale)
    if kind == "diagonal":
        return Diagonal(scale)
    root = scale.sqrt()
    xs, gs = xc / root, gc * root  # coordinates in which the diagonal estimate is I
    if kind == "dense":
        m = _geometric_mean(_shrunk_cov(xs), _shrunk_cov(gs))
        return Dense(root[:, None] * m * root[None, :])
    # lowrank: the dense estimate within the leading directions of the draws and gradients
    # (at most max(8 rank, 128) of them, so that images stay cheap), its largest eigenvalues
    # above 1 kept as U U^T over the identity
    stacked = torch.cat([xs, gs])
    r = min(stacked.shape[0], d, max(8 * rank, 128))
    if r < min(stacked.shape[0], d):
        _, _, basis = torch.svd_lowrank(stacked, q=r, niter=4)
    else:
        basis = torch.linalg.svd(stacked.T, full_matrices=False)[0][:, :r]
    m = _geometric_mean(_shrunk_cov(xs @ basis), _shrunk_cov(gs @ basis))
    lam, vec = torch.linalg.eigh(m)
    keep = lam.argsort(descending=True)[: min(rank, d - 1)]
    extra = (lam[keep] - 1.0).clamp_min(0.0)
    u = (basis @ vec[:, keep]) * extra.sqrt()
    return LowRankPlusDiagonal(root[:, None] * u, scale)


def _shrunk_cov(z: Tensor) -> Tensor:
    """The covariance of centred rows ``z`` ``(n, d)``; with ``n <= 2 d`` (singular, or nearly)
    shrunk towards its diagonal by ``d / (n + d)``. With more rows it is left as it is: for a
    Gaussian target the draws' and the gradients' covariances are then exactly related, and
    any shrinkage would break that (towards the diagonal, it swamps the small eigenvalues of an
    ill-conditioned target's gradient covariance)."""
    n, d = z.shape
    cov = z.T @ z / (n - 1)
    if n > 2 * d:
        return cov
    shrink = n / (n + d)
    return shrink * cov + (1.0 - shrink) * torch.diag(torch.diagonal(cov))


def _spd_power(a: Tensor, power: float) -> Tensor:
    w, v = torch.linalg.eigh(0.5 * (a + a.T))
    floor = float(w.max()) * 1e-12
    return (v * w.clamp_min(floor).pow(power)) @ v.T


def _geometric_mean(s: Tensor, g: Tensor) -> Tensor:
    """``S # G^{-1} = S^{1/2} (S^{1/2} G S^{1/2})^{-1/2} S^{1/2}``: the SPD ``M`` with
    ``M G M = S``."""
    root = _spd_power(s, 0.5)
    m = root @ _spd_power(root @ g @ root, -0.5) @ root
    return 0.5 * (m + m.T)


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
    gradients: bool = True,
    progress: bool = False,
    **kwargs,
) -> Adapted:
    """Windowed warmup of MALA's preconditioner (see the module's docstring).

    ``first`` steps tune the step size with no preconditioner; then each window of
    ``windows`` runs ``w`` steps of step-size tuning and ``w`` steps that collect draws, with
    the preconditioner estimated from the previous window's draws (and, with ``gradients``,
    the energy's gradients at them: one more evaluation per draw, counted in ``grad_evals``).
    Every call of ``sample`` gets its own seed (``seed``, ``seed + 1``, ...), so the warmup is
    reproducible.
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
        grads = None
        if gradients:
            grads = _gradients(energy, draws, position.shape[0])
            evals += -(-draws.shape[0] // position.shape[0])  # per chain, as grad_evals counts
        precond = estimate_preconditioner(draws, kind, rank=rank, grads=grads)
        eps = _median_step(run)
    return Adapted(precond, eps, position.detach(), evals, [first, *windows])


def _gradients(energy, draws: Tensor, batch: int) -> Tensor:
    """The energy's gradient at every draw, ``batch`` draws (the chains' count) at a time."""
    from .kernel import energy_and_grad

    return torch.cat([energy_and_grad(energy, part)[1] for part in draws.split(batch)])


def _median_step(run) -> float:
    return float(run.recorder.get_stats()["step_size"][:, -1].median())
