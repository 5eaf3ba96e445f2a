"""Fixed symmetric positive-definite operators M: the preconditioners of the Langevin proposal
and the covariances of the Gaussian priors.

This module is neutral ground: ``energies`` (the priors' covariances) and ``samplers`` (the
proposal) both import it, and it imports neither, so data flows one way.

The proposal is ``x' = x - eps * M grad E(x) + sqrt(2 eps T) * M^{1/2} xi``, so a preconditioner
needs three operations, all batched over the leading chain dimension:

``apply(v)``
    ``M v``, in ``v``'s dtype (the drift).
``noise(like, generator)``
    a draw of ``N(0, M)`` shaped like ``like`` (the diffusion).
``inv_quad(v)``
    ``v^T M^{-1} v`` per chain, in float64 (the Metropolis-Hastings proposal density).

Any object with these three methods can be passed as ``preconditioner=``. The classes here keep
their tensors on the CPU and copy them to the device and dtype of the input on first use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .devices import on_device

__all__ = [
    "ColorFourier",
    "Dense",
    "Diagonal",
    "Fourier",
    "Identity",
    "LowRankPlusDiagonal",
    "Preconditioner",
]


class Preconditioner:
    """Base class: the identity, ``M = I``. Subclasses override the three operations."""

    def apply(self, v: Tensor) -> Tensor:
        return v

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def inv_quad(self, v: Tensor) -> Tensor:
        return v.to(torch.float64).flatten(1).square().sum(1)

    def _cached(self, name: str, like: Tensor) -> Tensor:
        """The tensor attribute ``name`` on ``like``'s device and dtype, converted once."""
        return on_device(self, name, like, same_dtype=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


Identity = Preconditioner


class Diagonal(Preconditioner):
    """``M = diag(scale)``; ``scale`` broadcasts against one chain's position (e.g. ``(C, H, W)``).

    Parameters
    ----------
    scale : Tensor
        Positive variances, one per coordinate or broadcastable to the position shape.
    """

    def __init__(self, scale: Tensor):
        scale = torch.as_tensor(scale, dtype=torch.float64)
        if not torch.all(scale > 0) or not torch.all(torch.isfinite(scale)):
            raise ValueError("Diagonal preconditioner: every entry of scale must be finite and > 0")
        self.scale = scale
        self.sqrt_scale = scale.sqrt()

    def apply(self, v: Tensor) -> Tensor:
        return v * self._cached("scale", v)

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return super().noise(like, generator) * self._cached("sqrt_scale", like)

    def inv_quad(self, v: Tensor) -> Tensor:
        v = v.to(torch.float64)
        return (v.square() / self._cached("scale", v)).flatten(1).sum(1)

    def __repr__(self) -> str:
        return f"Diagonal(shape={tuple(self.scale.shape)})"


def _flat(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1)


class Dense(Preconditioner):
    """A dense ``M`` given by its covariance matrix or its Cholesky factor (``M = L L^T``).

    The position is flattened per chain, so ``M`` is ``(D, D)`` with ``D`` the number of pixels.
    With ``M`` equal to a Gaussian prior's covariance the prior part of the target becomes
    isotropic, which is what makes a data-fitted Gaussian prior cheap to sample.

    Parameters
    ----------
    cov : Tensor, optional
        Symmetric positive-definite ``(D, D)`` matrix.
    cholesky : Tensor, optional
        Lower-triangular factor ``L``; give this or ``cov``.
    jitter : float
        Added to the diagonal of ``cov`` before factorizing.
    """

    def __init__(
        self, cov: Tensor | None = None, *, cholesky: Tensor | None = None, jitter: float = 0.0
    ):
        if (cov is None) == (cholesky is None):
            raise ValueError("Dense preconditioner: give exactly one of cov or cholesky")
        if cholesky is None:
            cov = torch.as_tensor(cov, dtype=torch.float64)
            if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
                raise ValueError(
                    f"Dense preconditioner: cov must be square, got {tuple(cov.shape)}"
                )
            cov = 0.5 * (cov + cov.T) + jitter * torch.eye(cov.shape[0], dtype=torch.float64)
            chol, info = torch.linalg.cholesky_ex(cov)
            if info.item() != 0:
                raise ValueError(
                    "Dense preconditioner: cov is not positive definite "
                    "(try jitter=1e-6 or a low-rank-plus-diagonal one)"
                )
        else:
            chol = torch.as_tensor(cholesky, dtype=torch.float64).tril()
            if not torch.all(torch.diagonal(chol) > 0):
                raise ValueError("Dense preconditioner: cholesky needs a positive diagonal")
        self.chol = chol
        self.cov = chol @ chol.T
        self.dim = chol.shape[0]

    def _check(self, v: Tensor) -> None:
        if v[0].numel() != self.dim:
            raise ValueError(
                f"Dense preconditioner of dimension {self.dim} applied to positions "
                f"of shape {tuple(v.shape[1:])} ({v[0].numel()} values)"
            )

    def apply(self, v: Tensor) -> Tensor:
        self._check(v)
        return (_flat(v) @ self._cached("cov", v)).reshape(v.shape)

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check(like)
        xi = _flat(super().noise(like, generator))
        return (xi @ self._cached("chol", like).T).reshape(like.shape)

    def inv_quad(self, v: Tensor) -> Tensor:
        self._check(v)
        v = _flat(v.to(torch.float64))
        w = torch.linalg.solve_triangular(self._cached("chol", v), v.T, upper=False)
        return w.square().sum(0)

    def __repr__(self) -> str:
        return f"Dense(dim={self.dim})"


class LowRankPlusDiagonal(Preconditioner):
    """``M = diag(d) + U U^T`` with ``U`` of shape ``(D, k)``, for images too large for a dense M.

    Noise is ``sqrt(d) * xi1 + U xi2`` with ``xi2 ~ N(0, I_k)``; ``M^{-1}`` is applied through
    the Woodbury identity with a ``k x k`` Cholesky factor computed once.

    Parameters
    ----------
    factor : Tensor
        ``U``, shape ``(D, k)``.
    diag : Tensor
        ``d``, shape ``(D,)``, all > 0.
    """

    def __init__(self, factor: Tensor, diag: Tensor):
        u = torch.as_tensor(factor, dtype=torch.float64)
        d = torch.as_tensor(diag, dtype=torch.float64).reshape(-1)
        if u.ndim != 2 or u.shape[0] != d.shape[0]:
            raise ValueError(
                f"LowRankPlusDiagonal: factor must be (D, k) and diag (D,), got "
                f"{tuple(u.shape)} and {tuple(d.shape)}"
            )
        if not torch.all(d > 0):
            raise ValueError("LowRankPlusDiagonal: every entry of diag must be > 0")
        self.factor, self.diag, self.sqrt_diag = u, d, d.sqrt()
        self.dim, self.rank = u.shape
        capacitance = torch.eye(self.rank, dtype=torch.float64) + u.T @ (u / d[:, None])
        self.cap_chol = torch.linalg.cholesky(capacitance)

    def apply(self, v: Tensor) -> Tensor:
        f = _flat(v)
        u = self._cached("factor", v)
        return (f * self._cached("diag", v) + (f @ u) @ u.T).reshape(v.shape)

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        xi = _flat(super().noise(like, generator)) * self._cached("sqrt_diag", like)
        xi2 = torch.randn(
            (like.shape[0], self.rank), generator=generator, device=like.device, dtype=like.dtype
        )
        return (xi + xi2 @ self._cached("factor", like).T).reshape(like.shape)

    def inv_quad(self, v: Tensor) -> Tensor:
        f = _flat(v.to(torch.float64))
        dinv_v = f / self._cached("diag", f)
        w = dinv_v @ self._cached("factor", f)  # (chains, k) = U^T D^-1 v
        s = torch.linalg.solve_triangular(self._cached("cap_chol", f), w.T, upper=False)
        return (f * dinv_v).sum(1) - s.square().sum(0)

    def __repr__(self) -> str:
        return f"LowRankPlusDiagonal(dim={self.dim}, rank={self.rank})"


class Fourier(Preconditioner):
    """A stationary ``M`` diagonal in the 2-D Fourier basis: ``M^{1/2}`` scales spatial frequency
    ``f`` (cycles per image) by ``1 / max(f, f_min)^decay``.

    This is the idea behind Lucid's FFT image parameterization (low frequencies move further
    per step than high ones), kept here as a valid MCMC move: the same ``M`` enters the
    proposal and the Metropolis-Hastings density. The scale is normalized so that
    ``trace(M) / D = 1``, which keeps a step size comparable with the unpreconditioned one.
    ``f_min = 1`` by default, so the constant image moves like the lowest non-zero frequency.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the images; the transform acts on the last two dimensions.
    decay : float
        Exponent; 0 gives the identity, 1 matches natural images' ~1/f amplitude spectrum.
    """

    def __init__(self, shape: tuple[int, int], *, decay: float = 1.0, f_min: float = 1.0):
        h, w = (int(s) for s in shape)
        if h < 1 or w < 1 or decay < 0 or f_min <= 0:
            raise ValueError(
                "Fourier preconditioner: shape must be positive, decay >= 0, f_min > 0"
            )
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] * h
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :] * w
        f = torch.sqrt(fy.square() + fx.square()).clamp_min(f_min)
        scale = f.pow(-decay)
        # Normalize the full (Hermitian) spectrum so that mean(scale^2) over all H*W frequencies
        # is 1; rfft keeps half the columns, so count each kept column by its multiplicity.
        mult = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
        mult[0] = 1.0
        if w % 2 == 0:
            mult[-1] = 1.0
        mean_sq = (scale.square() * mult).sum() / (h * w)
        self.sqrt_spec = scale / mean_sq.sqrt()
        self.spec = self.sqrt_spec.square()
        self.inv_sqrt_spec = 1.0 / self.sqrt_spec
        self.shape, self.decay = (h, w), decay

    def _filter(self, v: Tensor, name: str) -> Tensor:
        if tuple(v.shape[-2:]) != self.shape:
            raise ValueError(
                f"Fourier preconditioner built for {self.shape} images applied to "
                f"shape {tuple(v.shape[-2:])}"
            )
        spec = self._cached(name, v)
        # the default norm pair (unscaled forward, 1/(H W) inverse) composes to the identity as
        # "ortho" does; on the CPU "ortho" made rfft2 two to three times slower
        coeffs = torch.fft.rfft2(v).mul_(spec)
        return torch.fft.irfft2(coeffs, s=self.shape).to(v.dtype)

    def apply(self, v: Tensor) -> Tensor:
        return self._filter(v, "spec")

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._filter(super().noise(like, generator), "sqrt_spec")

    def inv_quad(self, v: Tensor) -> Tensor:
        w = self._filter(v.to(torch.float64), "inv_sqrt_spec")
        return w.flatten(1).square().sum(1)

    def __repr__(self) -> str:
        return f"Fourier(shape={self.shape}, decay={self.decay})"


class ColorFourier(Fourier):
    """``M = C ⊗ F``: the ``Fourier`` spectrum over space times a colour covariance ``C``
    across the channels of ``(N, 3, H, W)`` images.

    Natural images' colour channels are strongly correlated; a step preconditioned by their
    covariance moves mostly along luminance, and the noise at T > 0 has natural colours. This is
    the MCMC counterpart of Lucid's decorrelated colour parameterization (``x = S w`` with
    ``S S^T = C``, on which plain gradient descent is descent preconditioned by ``S S^T``).
    ``C`` is normalized to ``trace(C) = channels``, so ``trace(M) / D = 1`` as for ``Fourier``.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``.
    color_covariance : Tensor
        ``(C, C)`` symmetric positive definite, e.g. ``photo_color_covariance()``.
    decay, f_min : float
        As for ``Fourier``.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        color_covariance: Tensor,
        *,
        decay: float = 1.0,
        f_min: float = 1.0,
    ):
        super().__init__(shape, decay=decay, f_min=f_min)
        c = torch.as_tensor(color_covariance, dtype=torch.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or not torch.allclose(c, c.T):
            raise ValueError("ColorFourier: color_covariance must be a symmetric (C, C) matrix")
        c = c * (c.shape[0] / c.trace())
        w, v = torch.linalg.eigh(c)
        if not bool((w > 0).all()):
            raise ValueError("ColorFourier: color_covariance must be positive definite")
        self.color = c
        self.color_sqrt = (v * w.sqrt()) @ v.T
        self.color_inv_sqrt = (v * w.rsqrt()) @ v.T

    def _mix(self, v: Tensor, name: str) -> Tensor:
        m = self._cached(name, v)
        if v.ndim < 3 or v.shape[-3] != m.shape[0]:
            raise ValueError(
                f"ColorFourier built for {m.shape[0]} channels applied to shape {tuple(v.shape)}"
            )
        return torch.matmul(m, v.flatten(-2)).view(v.shape)  # (C, C) @ (..., C, H*W)

    def apply(self, v: Tensor) -> Tensor:
        return self._mix(super().apply(v), "color")

    def noise(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._mix(super().noise(like, generator), "color_sqrt")

    def inv_quad(self, v: Tensor) -> Tensor:
        return super().inv_quad(self._mix(v.to(torch.float64), "color_inv_sqrt"))

    def __repr__(self) -> str:
        return f"ColorFourier(shape={self.shape}, decay={self.decay})"


def as_preconditioner(obj) -> Preconditioner:
    """``None`` means the identity; anything with the three operations is used as it is."""
    if obj is None:
        return Preconditioner()
    missing = [m for m in ("apply", "noise", "inv_quad") if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"preconditioner {obj!r} lacks {', '.join(missing)}")
    return obj
