"""Image priors as energies (each up to an additive constant), with plain-function twins.

- ``GaussianPrior``: ``|x - mean|^2 / (2 sigma^2)``, the seed's isotropic prior on centred pixels.
- ``FittedGaussianPrior``: ``(x - mu)^T S^{-1} (x - mu) / 2`` with the mean and covariance of
  data; ``S`` full for small images, low-rank plus diagonal for large ones. Its covariance is
  the natural preconditioner (``.preconditioner``): it makes the prior part isotropic.
- ``StationaryGaussianPrior``: a stationary Gaussian whose power spectrum falls as
  ``1/f^alpha`` (natural images: alpha ~ 2); pairs with the ``Fourier`` preconditioner.
- ``TotalVariation``: smoothed isotropic ``sum sqrt(dx^2 + dy^2 + delta^2)`` or anisotropic
  ``sum sqrt(dx^2 + delta^2) + sqrt(dy^2 + delta^2)``, per channel.
- ``BlurPenalty``: ``|x - G_sigma * x|^2 / 2``, penalizing what a Gaussian blur removes.
- ``BlurEvery``: the blur-every-k-steps operator of Yosinski et al. (2015). It is *not* an
  energy and not a Langevin move: applied inside a chain it breaks the chain's invariance, so
  the draws are no longer from any stated target. Use it for visualization, not for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..devices import on_device
from ..linalg import Dense, Fourier, LowRankPlusDiagonal
from .base import Energy, check_images, per_chain_sum

__all__ = [
    "BlurEvery",
    "BlurPenalty",
    "FittedGaussianPrior",
    "GaussianPrior",
    "StationaryGaussianPrior",
    "TotalVariation",
    "blur_penalty",
    "gaussian_blur",
    "gaussian_energy",
    "total_variation",
]


# ---- plain-function twins (written independently of the classes, to test them against) ----


def gaussian_energy(x: Tensor, sigma: float = 1.0, mean: float | Tensor = 0.5) -> Tensor:
    """``sum (x - mean)^2 / (2 sigma^2)`` per chain."""
    d = (x - mean).flatten(1)
    return torch.einsum("ni,ni->n", d, d) / (2.0 * sigma * sigma)


def total_variation(x: Tensor, delta: float = 1e-3, isotropic: bool = True) -> Tensor:
    """TV through the horizontal and vertical difference filters of the seed, per channel."""
    c = x.shape[1]
    kx = torch.tensor([[[[-1.0, 1.0]]]], dtype=x.dtype, device=x.device).repeat(c, 1, 1, 1)
    ky = kx.transpose(2, 3)
    dx = F.conv2d(x, kx, groups=c)[:, :, :-1, :]  # (N, C, H-1, W-1)
    dy = F.conv2d(x, ky, groups=c)[:, :, :, :-1]
    if isotropic:
        return torch.sqrt(dx**2 + dy**2 + delta**2).flatten(1).sum(1)
    return (torch.sqrt(dx**2 + delta**2) + torch.sqrt(dy**2 + delta**2)).flatten(1).sum(1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur, reflect-padded, kernel radius ``ceil(3 sigma)``."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(xp, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def blur_penalty(x: Tensor, sigma: float = 1.0) -> Tensor:
    """``|x - G_sigma * x|^2 / 2`` per chain."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    radius = max(1, math.ceil(3.0 * sigma))
    r = x - tv_blur(x, [2 * radius + 1, 2 * radius + 1], [sigma, sigma])
    return 0.5 * r.square().flatten(1).sum(1)


# ---- energies ----


class GaussianPrior(Energy):
    """Isotropic Gaussian ``N(mean, sigma^2 I)`` on pixels: ``|x - mean|^2 / (2 sigma^2)``."""

    name = "prior_gaussian"

    def __init__(self, sigma: float = 1.0, mean: float | Tensor = 0.5):
        if not sigma > 0:
            raise ValueError("GaussianPrior: sigma must be > 0")
        self.sigma, self.mean = float(sigma), mean

    def energy(self, x: Tensor) -> Tensor:
        return per_chain_sum((x - self.mean).square()) / (2.0 * self.sigma**2)

    def __repr__(self) -> str:
        return f"GaussianPrior(sigma={self.sigma:g})"


class _CovarianceGaussian(Energy):
    """``(x - mean)^T C^{-1} (x - mean) / 2`` with ``C`` given as a preconditioner operator."""

    def __init__(self, mean: Tensor, covariance, shape: tuple[int, ...]):
        self.mean = mean.to(torch.float32).reshape(shape)
        self.covariance = covariance
        self.shape = tuple(shape)

    @property
    def preconditioner(self):
        """The prior covariance as a preconditioner ``M``: with it the prior is isotropic."""
        return self.covariance

    def energy(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"{type(self).__name__}: built for images of shape {self.shape}, got "
                f"{tuple(x.shape[1:])}"
            )
        mean = on_device(self, "mean", x, same_dtype=True)
        return 0.5 * self.covariance.inv_quad(x - mean).to(x.dtype)


class FittedGaussianPrior(_CovarianceGaussian):
    """A Gaussian with the mean and covariance of data, ``N(mu, S + shrinkage * I)``.

    Use ``FittedGaussianPrior.fit(images)``. Up to ``max_dense`` pixels the covariance is
    kept whole (MNIST: 784); above, as its top ``rank`` principal directions plus a diagonal.
    """

    name = "prior_fitted"

    @classmethod
    def fit(
        cls,
        images: Tensor,
        *,
        shrinkage: float = 1e-3,
        rank: int = 64,
        max_dense: int = 4096,
    ) -> FittedGaussianPrior:
        """Fit to ``images`` of shape ``(N, C, H, W)`` (or ``(N, ...)``)."""
        if images.ndim < 2 or images.shape[0] < 2:
            raise ValueError("FittedGaussianPrior.fit needs at least two images (N, ...)")
        if not shrinkage > 0:
            raise ValueError("shrinkage must be > 0 (it keeps the covariance invertible)")
        shape = tuple(images.shape[1:])
        n, d = images.shape[0], math.prod(shape)
        if d <= max_dense:
            # in float64 blocks of rows: the whole set in float64, and again centred, was 0.75
            # GB of a study worker's 1.5 GB peak on MNIST's 60 000 images
            rows, size = images.reshape(n, d), 8192
            blocks = [rows[i : i + size] for i in range(0, n, size)]  # views, no copies
            mean = sum(b.sum(0, dtype=torch.float64) for b in blocks) / n
            cov = torch.zeros(d, d, dtype=torch.float64, device=images.device)
            for b in blocks:
                xc = b.to(torch.float64) - mean
                cov.addmm_(xc.T, xc)
            cov /= n - 1
            cov += shrinkage * torch.eye(d, dtype=torch.float64, device=images.device)
            covariance = Dense(cov)
        else:
            x = images.reshape(n, d).to(torch.float64)
            mean = x.mean(0)
            xc = x - mean
            k = min(rank, x.shape[0] - 1, d)
            _, s, v = torch.linalg.svd(xc, full_matrices=False)
            top = v[:k].T * (s[:k] / math.sqrt(x.shape[0] - 1))  # (D, k): U U^T = top PCA part
            resid = (xc.square().sum(0) / (x.shape[0] - 1) - top.square().sum(1)).clamp_min(0)
            covariance = LowRankPlusDiagonal(top, resid + shrinkage)
        prior = cls(mean, covariance, shape)
        prior.shrinkage, prior.n_images = shrinkage, images.shape[0]
        return prior

    def __repr__(self) -> str:
        return f"FittedGaussianPrior(shape={self.shape}, covariance={self.covariance!r})"


class StationaryGaussianPrior(_CovarianceGaussian):
    """Stationary Gaussian on ``(C, H, W)`` images, independent channels, with power spectrum
    ``~ 1/max(f, 1)^alpha`` and marginal pixel standard deviation ``sigma``.

    Natural images have alpha ~ 2 (amplitude ~ 1/f). ``.preconditioner`` is the matching
    ``Fourier(shape, decay=alpha/2)``.
    """

    name = "prior_stationary"

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        alpha: float = 2.0,
        sigma: float = 0.15,
        mean: float | Tensor = 0.5,
    ):
        if len(shape) != 3 or not sigma > 0 or alpha < 0:
            raise ValueError("StationaryGaussianPrior: shape (C, H, W), sigma > 0, alpha >= 0")
        self.alpha, self.sigma = alpha, sigma
        self.fourier = Fourier(shape[1:], decay=alpha / 2.0)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).expand(shape)
        super().__init__(mean_t, self.fourier, shape)

    @property
    def preconditioner(self):
        return self.fourier

    def energy(self, x: Tensor) -> Tensor:
        return super().energy(x) / self.sigma**2

    def __repr__(self) -> str:
        return (
            f"StationaryGaussianPrior(shape={self.shape}, alpha={self.alpha}, sigma={self.sigma})"
        )


class TotalVariation(Energy):
    """Smoothed total variation; ``delta > 0`` keeps it differentiable for MALA.

    Parameters
    ----------
    delta : float
        Smoothing; the energy is ``sum sqrt(|grad x|^2 + delta^2)``.
    isotropic : bool
        ``sqrt(dx^2 + dy^2 + delta^2)`` (default), or the anisotropic
        ``sqrt(dx^2 + delta^2) + sqrt(dy^2 + delta^2)``.
    """

    def __init__(self, delta: float = 1e-3, *, isotropic: bool = True):
        if not delta > 0:
            raise ValueError("TotalVariation: delta must be > 0")
        self.delta, self.isotropic = float(delta), isotropic
        self.name = "prior_tv" if isotropic else "prior_tv_aniso"

    def energy(self, x: Tensor) -> Tensor:
        check_images(x, who="TotalVariation")
        dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        d2 = self.delta**2
        if self.isotropic:
            return per_chain_sum(torch.sqrt(dx.square() + dy.square() + d2))
        return per_chain_sum(torch.sqrt(dx.square() + d2) + torch.sqrt(dy.square() + d2))

    def __repr__(self) -> str:
        return f"TotalVariation(delta={self.delta:g}, isotropic={self.isotropic})"


class BlurPenalty(Energy):
    """``|x - G_sigma * x|^2 / 2``: the energy of what a Gaussian blur would remove."""

    name = "prior_blur"

    def __init__(self, sigma: float = 1.0):
        if not sigma > 0:
            raise ValueError("BlurPenalty: sigma must be > 0")
        self.sigma = float(sigma)

    def energy(self, x: Tensor) -> Tensor:
        check_images(x, who="BlurPenalty")
        return 0.5 * per_chain_sum((x - gaussian_blur(x, self.sigma)).square())

    def __repr__(self) -> str:
        return f"BlurPenalty(sigma={self.sigma:g})"


class BlurEvery:
    """Blur the chains every ``k`` steps (Yosinski et al. 2015), for ``sample(transform=...)``.

    Not a Langevin move: it breaks the chain's invariance (the draws follow no stated target).
    """

    def __init__(self, k: int = 4, sigma: float = 0.5):
        if k < 1 or not sigma > 0:
            raise ValueError("BlurEvery: k >= 1 and sigma > 0")
        self.every, self.sigma = int(k), float(sigma)

    def __call__(self, x: Tensor) -> Tensor:
        return gaussian_blur(x, self.sigma)

    def __repr__(self) -> str:
        return f"BlurEvery(k={self.every}, sigma={self.sigma:g})"
