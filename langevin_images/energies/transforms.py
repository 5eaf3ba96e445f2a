"""Stochastic transforms inside an energy (jitter, scale, rotate), as Lucid uses them.

``Transformed(energy, RandomAffine(...))`` evaluates ``energy(T(x))`` with a fresh random
transform ``T`` per chain at every call. Its gradient is a *stochastic* gradient of the
transform-averaged energy: the chain then targets the transform-averaged density only
approximately, and MALA's accept step compares two different random energies. Use it for
visualization (zero noise or ULA), not where exactness matters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import Energy

__all__ = ["RandomAffine", "RandomRoll", "Transformed"]


def _col(v: Tensor) -> Tensor:
    """``(N,)`` to ``(N, 1, 1)``."""
    return v[:, None, None]


_BILINEAR, _REFLECTION = 0, 2  # ATen's enums for grid_sample's mode and padding_mode


class _SampleInputGradOnly(torch.autograd.Function):
    """``F.grid_sample(x, grid, "bilinear", "reflection", align_corners=False)`` whose backward
    gives the gradient for ``x`` only.

    ATen's CPU backward computes the gradient for the grid too, whether or not it is asked for:
    at every output pixel it gathers the input at the four corners, per channel. The gradient
    for ``x`` does not depend on ``x`` (the warp is linear in it), so the backward hands ATen a
    stride-0 stand-in for ``x``: those reads then hit one cached number instead of a cold
    image. In a visualization run at 8 x 3 x 128^2 on 2 CPU cores the backward op went from
    2.2 to 1.0 ms per step in the profiler; end to end, an energy+gradient evaluation of lite0
    there is 0.4-1.0 ms (1-2%) shorter (``benchmarks/bench_warp.py``). The result is the same
    to the last bit (``tests/test_energies.py``). The grid is a transform's own draw, never
    differentiated.
    """

    @staticmethod
    def forward(ctx, x: Tensor, grid: Tensor) -> Tensor:
        ctx.save_for_backward(grid)
        ctx.x_shape = x.shape
        return torch.grid_sampler_2d(x, grid, _BILINEAR, _REFLECTION, False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (grid,) = ctx.saved_tensors
        stand_in = grad.new_zeros(()).expand(ctx.x_shape)
        grad_x, _ = torch.ops.aten.grid_sampler_2d_backward(
            grad.contiguous(), stand_in, grid, _BILINEAR, _REFLECTION, False, [True, False]
        )
        return grad_x, None


class RandomAffine:
    """Per-chain random shift (``jitter`` pixels), scale and rotation, reflection-padded.

    Parameters
    ----------
    jitter : int
        Largest shift in pixels, each direction.
    scale : (float, float)
        Range of the zoom factor.
    degrees : float
        Largest rotation, each way.
    seed : int
        Seed of the transform's own generator, one per device: drawing on the images' device
        keeps a host-to-device copy (and the wait for the GPU it forces) out of every step.
    """

    def __init__(
        self,
        jitter: int = 8,
        scale: tuple[float, float] = (1.0, 1.0),
        degrees: float = 0.0,
        *,
        seed: int = 0,
    ):
        if jitter < 0 or degrees < 0 or not 0 < scale[0] <= scale[1]:
            raise ValueError("RandomAffine: jitter >= 0, degrees >= 0, 0 < scale[0] <= scale[1]")
        self.jitter, self.scale, self.degrees, self.seed = jitter, scale, degrees, seed
        self._gens: dict[str, torch.Generator] = {}

    def __call__(self, x: Tensor) -> Tensor:
        key = str(x.device)
        if key not in self._gens:
            self._gens[key] = torch.Generator(device=x.device).manual_seed(self.seed)
        u = torch.rand((x.shape[0], 4), generator=self._gens[key], device=x.device, dtype=x.dtype)
        return self.warp(x, u)

    def warp(self, x: Tensor, u: Tensor) -> Tensor:
        """The transform given by uniform draws ``u (N, 4)``: angle, zoom, shift x, shift y."""
        grid = self._grid(x, u)
        if x.device.type == "cpu" and not grid.requires_grad:
            return _SampleInputGradOnly.apply(x, grid)
        # a differentiated draw, or another device: ATen's own backward (the stand-in is
        # checked against the CPU kernel only)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _grid(self, x: Tensor, u: Tensor) -> Tensor:
        """``grid_sample``'s ``(N, H, W, 2)`` sampling grid for the draws ``u``."""
        _, _, h, w = x.shape
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        tx = (2 * u[:, 2] - 1) * self.jitter * 2 / w
        ty = (2 * u[:, 3] - 1) * self.jitter * 2 / h
        cos, sin = _col(torch.cos(angle) / s), _col(torch.sin(angle) / s)
        # the sampling grid of F.affine_grid(align_corners=False), built by broadcasting the
        # (N, 1, 1) coefficients against pixel-centre coordinates: no (N, H*W, 3) @ (3, 2)
        # batched product, and half the time
        px = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1)[None, None, :]
        py = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1)[None, :, None]
        return torch.stack([cos * px - sin * py + _col(tx), sin * px + cos * py + _col(ty)], -1)

    def __repr__(self) -> str:
        return f"RandomAffine(jitter={self.jitter}, scale={self.scale}, degrees={self.degrees})"


class RandomRoll:
    """Per-chain random circular shift of up to ``max_shift`` pixels each way: the jitter of
    the google/deepdream recipe (no interpolation, no padding).

    Parameters
    ----------
    max_shift : int
        Largest shift in pixels, each direction.
    seed : int
        Seed of the transform's own generator.
    """

    def __init__(self, max_shift: int = 32, *, seed: int = 0):
        if max_shift < 0:
            raise ValueError("RandomRoll: max_shift >= 0")
        self.max_shift, self.seed = int(max_shift), seed
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> Tensor:
        if self.max_shift == 0:
            return x
        shifts = torch.randint(
            -self.max_shift, self.max_shift + 1, (x.shape[0], 2), generator=self._gen
        )
        return torch.stack(
            [
                torch.roll(xi, (int(s[0]), int(s[1])), dims=(-2, -1))
                for xi, s in zip(x, shifts, strict=True)
            ]
        )

    def __repr__(self) -> str:
        return f"RandomRoll(max_shift={self.max_shift})"


class Transformed(Energy):
    """``energy(T(x))`` with a fresh random transform per call (a stochastic energy)."""

    def __init__(self, energy: Energy, transform: RandomAffine | RandomRoll):
        self.inner, self.transform = energy, transform
        self.name = energy.name

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.inner.evaluate(self.transform(x))

    def __repr__(self) -> str:
        return f"Transformed({self.inner!r}, {self.transform!r})"
