"""Each preconditioner's three operations agree with the dense matrix they stand for."""

from __future__ import annotations

import pytest
import torch

from langevin_images.samplers import (
    ColorFourier,
    Dense,
    Diagonal,
    Fourier,
    Identity,
    LowRankPlusDiagonal,
)

SHAPE = (1, 4, 4)
D = 16


def _make(name):
    g = torch.Generator().manual_seed(0)
    if name == "identity":
        return Identity()
    if name == "diagonal":
        return Diagonal(torch.rand(SHAPE, generator=g, dtype=torch.float64) + 0.5)
    if name == "dense":
        a = torch.randn(D, D, generator=g, dtype=torch.float64)
        return Dense(a @ a.T / D + 0.1 * torch.eye(D, dtype=torch.float64))
    if name == "lowrank":
        return LowRankPlusDiagonal(
            torch.randn(D, 3, generator=g, dtype=torch.float64),
            torch.rand(D, generator=g, dtype=torch.float64) + 0.2,
        )
    if name == "fourier":
        return Fourier((4, 4), decay=1.0)
    if name == "colorfourier":
        a = torch.randn(3, 3, generator=g, dtype=torch.float64)
        return ColorFourier((4, 4), a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64), decay=1.0)
    raise AssertionError(name)


NAMES = ["identity", "diagonal", "dense", "lowrank", "fourier", "colorfourier"]


def _shape(p):
    return (3, 4, 4) if isinstance(p, ColorFourier) else SHAPE


def _matrix(p):
    shape = _shape(p)
    d = shape[0] * 16
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return p.apply(basis).reshape(d, d)


@pytest.mark.parametrize("name", NAMES)
def test_apply_is_symmetric_positive_definite(name):
    m = _matrix(_make(name))
    torch.testing.assert_close(m, m.T, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(m).min() > 0


@pytest.mark.parametrize("name", NAMES)
def test_inv_quad_matches_inverse(name):
    p = _make(name)
    m = _matrix(p)
    v = torch.randn(
        (5, *_shape(p)), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    vf = v.reshape(5, -1)
    want = ((vf @ torch.linalg.inv(m)) * vf).sum(1)
    torch.testing.assert_close(p.inv_quad(v), want, rtol=1e-9, atol=1e-9)
    # float32 input still gives a float64 answer
    assert p.inv_quad(v.float()).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_noise_has_covariance_m(name):
    """Empirical covariance of 40 000 draws within 5 standard errors of M, entry by entry."""
    p = _make(name)
    m = _matrix(p)
    n = 40_000
    like = torch.empty((n, *_shape(p)), dtype=torch.float64)
    xi = p.noise(like, torch.Generator().manual_seed(2)).reshape(n, -1)
    cov = xi.T @ xi / n
    se = torch.sqrt((torch.diagonal(m)[:, None] * torch.diagonal(m)[None, :] + m**2) / n)
    assert torch.all((cov - m).abs() < 5 * se)


def test_fourier_decay_zero_is_identity_and_trace_is_normalized():
    p0 = Fourier((4, 4), decay=0.0)
    torch.testing.assert_close(_matrix(p0), torch.eye(D, dtype=torch.float64))
    for shape in [(4, 4), (5, 7), (8, 6)]:
        p = Fourier(shape, decay=1.5)
        n = shape[0] * shape[1]
        basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
        m = p.apply(basis).reshape(n, n)
        assert abs(float(torch.trace(m)) / n - 1.0) < 1e-12


def test_fourier_moves_low_frequencies_further():
    p = Fourier((8, 8), decay=1.0)
    _y, x = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    low = torch.cos(2 * torch.pi * x / 8)[None, None].double()
    high = torch.cos(2 * torch.pi * 4 * x / 8)[None, None].double()
    gain = lambda v: float((p.apply(v) * v).sum() / (v * v).sum())  # noqa: E731
    assert gain(low) > 4 * gain(high)


def test_bad_preconditioners():
    with pytest.raises(ValueError, match="positive definite"):
        Dense(-torch.eye(3))
    with pytest.raises(ValueError, match="> 0"):
        Diagonal(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="dimension 16"):
        _make("dense").apply(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="built for"):
        Fourier((4, 4)).apply(torch.zeros(2, 1, 5, 5))
