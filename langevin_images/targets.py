"""Standard targets with known truths, for benchmarking samplers.

Each ``Target`` has ``energy(x)`` (minus the log density up to a constant, ``(chains, dim) ->
(chains,)``, in the target's dtype, float32 by default), the normalized ``log_density`` (float64,
for tests), the exact ``mean`` and ``var`` of every coordinate, ``draw(n, generator)`` exact
draws where they exist, and a starting point. Their moments:

================================  =========================================================
``gaussian(100)``                 N(0, diag(sd^2)), sd = logspace(0, 1): condition 100
``isotropic(100)``                N(0, I)
``dense_gaussian(784)``           N(0, Q diag(lambda) Q^T), lambda = logspace(-3, 0), Q a
                                  seeded random rotation: condition 1000, no axis aligned
``banana()``                      Haario et al. (1999)'s twisted Gaussian: x0 ~ N(0, a^2),
                                  x1 = y + b (x0^2 - a^2), y ~ N(0, 1); a = 10, b = 0.03;
                                  E x1 = 0, Var x1 = 1 + 2 b^2 a^4
``funnel(10)``                    Neal (2003): x0 ~ N(0, 9), x_i | x0 ~ N(0, e^x0);
                                  Var x_i = e^4.5
``mixture()``                     1/2 N((-2, 0), I) + 1/2 N((2, 0), I): Var x0 = 5
``logistic_regression()``         Bayesian logistic regression, N(0, I) prior on 5 weights,
                                  100 generated points; moments from self-normalized
                                  importance sampling (a Student-t around the mode, 2e5
                                  draws), with its own Monte Carlo error far below a
                                  sampler's
================================  =========================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "TARGETS",
    "Target",
    "banana",
    "dense_gaussian",
    "funnel",
    "gaussian",
    "isotropic",
    "logistic_regression",
    "mixture",
]

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Target:
    """A density with known moments (see the module's table)."""

    name: str
    dim: int
    energy: Callable[[Tensor], Tensor]
    log_density: Callable[[Tensor], Tensor]
    mean: Tensor  # (dim,) float64
    var: Tensor  # (dim,) float64
    draw: Callable[[int, torch.Generator], Tensor] | None = None  # exact draws, float64
    covariance: Tensor | None = None  # (dim, dim) float64 of the dense Gaussians
    description: str = ""
    truth_mcse: Tensor | None = None  # Monte Carlo error of a reference's mean, if any
    extras: dict = field(default_factory=dict)

    def init(self, chains: int, generator: torch.Generator, dtype=torch.float32) -> Tensor:
        """Starting points: exact draws where there are some (the benchmark then measures
        mixing, not burn-in), the mean plus N(0, 0.1^2) otherwise."""
        if self.draw is not None:
            return self.draw(chains, generator).to(dtype)
        noise = torch.randn((chains, self.dim), generator=generator, dtype=torch.float64)
        return (self.mean + 0.1 * noise).to(dtype)


def _gaussian(name: str, sd: Tensor | None, cov: Tensor | None, dtype, description) -> Target:
    dim = len(sd) if sd is not None else cov.shape[0]
    if cov is None:
        var = sd.square()
        precision_diag = (1 / var).to(dtype)

        def energy(x: Tensor) -> Tensor:
            return 0.5 * (x.square() * precision_diag).sum(-1)

        def log_density(x: Tensor) -> Tensor:
            x = x.to(torch.float64)
            return -0.5 * (x.square() / var).sum(-1) - 0.5 * dim * LOG_2PI - var.log().sum() / 2

        def draw(n: int, g: torch.Generator) -> Tensor:
            return torch.randn((n, dim), generator=g, dtype=torch.float64) * sd

        zero = torch.zeros(dim, dtype=torch.float64)
        # no dense covariance: a diagonal one is ``var`` (and 10^5 dimensions would be 80 GB)
        return Target(name, dim, energy, log_density, zero, var, draw, None,
                      description, extras={"kind": "diagonal", "var": var})  # fmt: skip
    precision = torch.linalg.inv(cov)
    precision_t = precision.to(dtype)
    chol = torch.linalg.cholesky(cov)
    logdet = 2 * chol.diagonal().log().sum()

    def energy(x: Tensor) -> Tensor:
        return 0.5 * ((x @ precision_t) * x).sum(-1)

    def log_density(x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        return -0.5 * ((x @ precision) * x).sum(-1) - 0.5 * dim * LOG_2PI - 0.5 * logdet

    def draw(n: int, g: torch.Generator) -> Tensor:
        return torch.randn((n, dim), generator=g, dtype=torch.float64) @ chol.T

    return Target(name, dim, energy, log_density, torch.zeros(dim, dtype=torch.float64),
                  cov.diagonal().clone(), draw, cov, description,
                  extras={"kind": "dense", "precision": precision})  # fmt: skip


def gaussian(dim: int = 100, *, low: float = 0.0, high: float = 1.0, dtype=torch.float32):
    """N(0, diag(sd^2)) with sd = logspace(low, high): an ill-conditioned axis-aligned
    Gaussian (condition 10^(2 (high - low)) in variance)."""
    sd = torch.logspace(low, high, dim, dtype=torch.float64)
    return _gaussian(f"gaussian-{dim}d", sd, None, dtype,
                     f"{dim}-d Gaussian, sd logspace({low:g}, {high:g})")  # fmt: skip


def isotropic(dim: int = 100, *, dtype=torch.float32) -> Target:
    """N(0, I)."""
    return _gaussian(f"isotropic-{dim}d", torch.ones(dim, dtype=torch.float64), None, dtype,
                     f"{dim}-d standard Gaussian")  # fmt: skip


def dense_gaussian(
    dim: int = 784, *, low: float = -3.0, high: float = 0.0, seed: int = 0, dtype=torch.float32
) -> Target:
    """N(0, Q diag(logspace(low, high)) Q^T) with Q a random rotation (seeded)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn((dim, dim), generator=g, dtype=torch.float64))
    q = q * torch.sign(r.diagonal())  # Haar-distributed
    lam = torch.logspace(low, high, dim, dtype=torch.float64)
    cov = (q * lam) @ q.T
    cov = 0.5 * (cov + cov.T)
    t = _gaussian(f"dense-gaussian-{dim}d", None, cov, dtype,
                  f"{dim}-d dense Gaussian, eigenvalues logspace({low:g}, {high:g})")  # fmt: skip
    t.extras["eigenvalues"] = lam
    return t


def banana(*, a: float = 10.0, b: float = 0.03, dtype=torch.float32) -> Target:
    """Haario et al. (1999)'s twisted Gaussian in 2-d (see the module's table)."""

    def energy(x: Tensor) -> Tensor:
        x0, x1 = x[..., 0], x[..., 1]
        y = x1 - b * (x0.square() - a * a)
        return 0.5 * x0.square() / (a * a) + 0.5 * y.square()

    def log_density(x: Tensor) -> Tensor:
        return -energy(x.to(torch.float64)) - LOG_2PI - math.log(a)

    def draw(n: int, g: torch.Generator) -> Tensor:
        z = torch.randn((n, 2), generator=g, dtype=torch.float64)
        x0 = a * z[:, 0]
        return torch.stack([x0, z[:, 1] + b * (x0.square() - a * a)], 1)

    mean = torch.zeros(2, dtype=torch.float64)
    var = torch.tensor([a * a, 1 + 2 * b * b * a**4], dtype=torch.float64)
    return Target("banana", 2, energy, log_density, mean, var, draw,
                  description=f"2-d banana (a = {a:g}, b = {b:g})",
                  extras={"kind": "banana", "a": a, "b": b})  # fmt: skip


def funnel(dim: int = 10, *, scale: float = 3.0, dtype=torch.float32) -> Target:
    """Neal's funnel: x0 ~ N(0, scale^2), x_i | x0 ~ N(0, e^x0), i = 1 .. dim - 1."""
    k = dim - 1

    def energy(x: Tensor) -> Tensor:
        x0, rest = x[..., 0], x[..., 1:]
        spread = (rest.square() * torch.exp(-x0)[..., None]).sum(-1)
        return 0.5 * x0.square() / scale**2 + 0.5 * k * x0 + 0.5 * spread

    def log_density(x: Tensor) -> Tensor:
        return -energy(x.to(torch.float64)) - 0.5 * (k + 1) * LOG_2PI - math.log(scale)

    def draw(n: int, g: torch.Generator) -> Tensor:
        z = torch.randn((n, dim), generator=g, dtype=torch.float64)
        x0 = scale * z[:, :1]
        return torch.cat([x0, z[:, 1:] * torch.exp(x0 / 2)], 1)

    mean = torch.zeros(dim, dtype=torch.float64)
    var = torch.full((dim,), math.exp(scale**2 / 2), dtype=torch.float64)
    var[0] = scale**2
    return Target(f"funnel-{dim}d", dim, energy, log_density, mean, var, draw,
                  description=f"{dim}-d Neal funnel",
                  extras={"kind": "funnel", "scale": scale})  # fmt: skip


def mixture(*, separation: float = 2.0, dtype=torch.float32) -> Target:
    """1/2 N((-s, 0), I) + 1/2 N((s, 0), I) in 2-d."""
    s = separation

    def energy(x: Tensor) -> Tensor:
        x0, x1 = x[..., 0], x[..., 1]
        a = -0.5 * (x0 - s).square()
        c = -0.5 * (x0 + s).square()
        return -torch.logaddexp(a, c) + 0.5 * x1.square()

    def log_density(x: Tensor) -> Tensor:
        return -energy(x.to(torch.float64)) - LOG_2PI - math.log(2.0)

    def draw(n: int, g: torch.Generator) -> Tensor:
        z = torch.randn((n, 2), generator=g, dtype=torch.float64)
        sign = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return z + torch.stack([sign * s, torch.zeros(n, dtype=torch.float64)], 1)

    mean = torch.zeros(2, dtype=torch.float64)
    var = torch.tensor([1 + s * s, 1.0], dtype=torch.float64)
    return Target("mixture", 2, energy, log_density, mean, var, draw,
                  description=f"2-d two-mode mixture, modes at ±{s:g}",
                  extras={"kind": "mixture", "separation": s})  # fmt: skip


def logistic_regression(
    *, n: int = 100, features: int = 5, seed: int = 0, reference_draws: int = 200_000,
    dtype=torch.float32,
) -> Target:  # fmt: skip
    """Bayesian logistic regression with a N(0, I) prior on the weights, on ``n`` generated
    points (features N(0, 1), true weights N(0, 1), labels Bernoulli); the moments come from
    self-normalized importance sampling with a multivariate Student-t (5 degrees of freedom)
    at the posterior mode with the Laplace covariance."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn((n, features), generator=g, dtype=torch.float64)
    w_true = torch.randn(features, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w_true)).double()
    Xt, yt = X.to(dtype), y.to(dtype)

    def energy(w: Tensor) -> Tensor:
        logits = w @ Xt.T  # (chains, n)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt.expand_as(logits), reduction="none"
        ).sum(-1)
        return nll + 0.5 * w.square().sum(-1)

    def energy64(w: Tensor) -> Tensor:
        logits = w @ X.T
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y.expand_as(logits), reduction="none"
        ).sum(-1)
        return nll + 0.5 * w.square().sum(-1)

    # the mode by Newton's method, and the Laplace covariance there
    w = torch.zeros(features, dtype=torch.float64)
    for _ in range(50):
        p = torch.sigmoid(X @ w)
        grad = X.T @ (p - y) + w
        hess = (X.T * (p * (1 - p))) @ X + torch.eye(features, dtype=torch.float64)
        delta = torch.linalg.solve(hess, grad)
        w = w - delta
        if delta.abs().max() < 1e-12:
            break
    cov = torch.linalg.inv(hess)
    chol = torch.linalg.cholesky(cov)
    nu = 5.0
    gi = torch.Generator().manual_seed(seed + 1)
    z = torch.randn((reference_draws, features), generator=gi, dtype=torch.float64)
    nu_draws = torch.randn((reference_draws, int(nu)), generator=gi, dtype=torch.float64)
    chi = nu_draws.square().sum(1)  # chi-square with nu degrees of freedom, seeded
    draws = w + (z @ chol.T) / torch.sqrt(chi / nu)[:, None]
    dev = torch.linalg.solve_triangular(chol, (draws - w).T, upper=False).T
    log_q = -0.5 * (nu + features) * torch.log1p(dev.square().sum(1) / nu)
    log_w = -energy64(draws) - log_q
    weights = torch.softmax(log_w, 0)
    mean = (weights[:, None] * draws).sum(0)
    var = (weights[:, None] * (draws - mean).square()).sum(0)
    ess = 1.0 / weights.square().sum()
    mcse = torch.sqrt(var / ess)

    def log_density(x: Tensor) -> Tensor:  # unnormalized (the evidence is not known)
        return -energy64(x.to(torch.float64))

    described = f"Bayesian logistic regression, {features} weights, {n} points"
    t = Target(f"logistic-{features}d", features, energy, log_density, mean, var,
               covariance=None, truth_mcse=mcse, description=described)  # fmt: skip
    t.extras.update(kind="logistic", X=X, y=y, mode=w, laplace_covariance=cov,
                    importance_ess=float(ess))  # fmt: skip
    return t


TARGETS: dict[str, Callable[[], Target]] = {
    "gaussian-100d": gaussian,
    "banana": banana,
    "funnel-10d": funnel,
    "mixture": mixture,
    "dense-gaussian-784d": dense_gaussian,
    "isotropic-100d": isotropic,
    "logistic-5d": logistic_regression,
}
