"""Shared test harness: Gaussian targets and Monte-Carlo-error assertions."""

from __future__ import annotations

import arviz_stats as azs
import numpy as np
import torch
from scipy import stats
from torch import nn


def z_crit(alpha: float, k: int) -> float:
    """Two-sided normal quantile with a Bonferroni correction over ``k`` comparisons."""
    return float(stats.norm.ppf(1.0 - alpha / (2.0 * k)))


def assert_mean_within_mcse(draws, truth, *, alpha: float = 0.01, what: str = "mean") -> None:
    """``|mean - truth| / MCSE < z`` for every component, with MCSE from the draws' ESS.

    ``draws`` is ``(chain, draw, k)`` (or ``(chain, draw)``); the family-wise false-alarm
    rate over the ``k`` components is ``alpha``.
    """
    d = np.asarray(draws, dtype=np.float64)
    if d.ndim == 2:
        d = d[..., None]
    d = d.reshape(d.shape[0], d.shape[1], -1)
    truth = np.broadcast_to(np.asarray(truth, dtype=np.float64).reshape(-1), d.shape[2:])
    est = d.mean(axis=(0, 1))
    se = np.asarray(azs.mcse(d, method="mean"))
    z = np.abs(est - truth) / se
    zc = z_crit(alpha, z.size)
    worst = int(np.argmax(z))
    assert np.all(z < zc), (
        f"{what}: component {worst} estimate {est[worst]:.5g} vs truth "
        f"{truth[worst]:.5g}, |z| = {z[worst]:.2f} >= {zc:.2f} "
        f"(MCSE {se[worst]:.3g})"
    )


def assert_moments(draws, mean, var, *, alpha: float = 0.01) -> None:
    """Means and variances of ``(chain, draw, k)`` draws against the truth, within MCSE."""
    d = np.asarray(draws, dtype=np.float64)
    d = d.reshape(d.shape[0], d.shape[1], -1)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    assert_mean_within_mcse(d, mean, alpha=alpha / 2, what="mean")
    assert_mean_within_mcse(
        (d - mean) ** 2, np.asarray(var).reshape(-1), alpha=alpha / 2, what="variance"
    )


class Gaussian:
    """``N(mean, cov)`` in ``dim`` dimensions, as an energy on positions of ``shape``."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, shape: tuple[int, ...] = ()):
        self.mean = mean.to(torch.float64)
        self.cov = cov.to(torch.float64)
        self.prec = torch.linalg.inv(self.cov)
        self.chol = torch.linalg.cholesky(self.cov)
        self.shape = shape or (mean.numel(),)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x.reshape(x.shape[0], -1) - self.mean.to(x)
        return 0.5 * ((d @ self.prec.to(x)) * d).sum(1)

    def draw(self, n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
        z = torch.randn((n, self.mean.numel()), generator=generator, dtype=torch.float64)
        return (self.mean + z @ self.chol.T).to(dtype).reshape(n, *self.shape)

    @property
    def var(self) -> torch.Tensor:
        return torch.diagonal(self.cov)


def ill_conditioned(dim: int, condition: float, seed: int = 0) -> Gaussian:
    """A randomly rotated Gaussian whose covariance has the given condition number."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn((dim, dim), generator=g, dtype=torch.float64))
    eig = torch.logspace(-np.log10(condition), 0.0, dim, dtype=torch.float64)
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    return Gaussian(mean, (q * eig) @ q.T)


def stationary_image_gaussian(h: int, w: int, *, decay: float = 1.0) -> Gaussian:
    """A zero-mean stationary Gaussian on ``(1, h, w)`` images with a power-law spectrum."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] * h
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :] * w
    spec = torch.sqrt(fy**2 + fx**2).clamp_min(1.0) ** (-2 * decay)
    n = h * w
    basis = torch.eye(n, dtype=torch.float64).reshape(n, h, w)
    cov = torch.fft.ifft2(torch.fft.fft2(basis) * spec).real.reshape(n, n)
    return Gaussian(torch.zeros(n, dtype=torch.float64), 0.5 * (cov + cov.T), (1, h, w))


def tiny_cnn(channels: int = 3, classes: int = 5, seed: int = 0) -> nn.Module:
    """A small random CNN classifier in float64, frozen, with class names (global RNG kept)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1), nn.Tanh(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.Tanh(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes),
        )  # fmt: skip
    net.class_names = [f"class{i}" for i in range(classes)]
    net.input_channels = channels
    return net.double().eval().requires_grad_(False)
