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

from .base import Energy, random_state, set_random_state

__all__ = ["RandomAffine", "RandomRoll", "Transformed"]


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
        self._consts: dict[tuple, tuple[Tensor, ...]] = {}

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
        """``grid_sample``'s ``(N, H, W, 2)`` sampling grid for the draws ``u``.

        The grid of ``F.affine_grid(align_corners=False)``: source point
        ``(c px - s py + tx, s px + c py + ty)`` at pixel centre ``(px, py)``, with
        ``(c, s) = (cos a, sin a) / zoom``, built as ``px (c, s) + [py (-s, c) + t]`` in
        ``(N, 2, H, W)`` planes and handed to ``grid_sample`` as a permuted view, which it reads
        as fast as a contiguous grid. Summing into planes takes a tenth of the time of a sum into
        the ``(..., 2)`` layout, and with the constants made once per image size it is ten
        kernels instead of the 38 that writing the formula out took: at 8 x 3 x 128^2 on
        2 CPU cores 32 instead of 146 us, and on a GPU, where a step at small batches is
        launch-bound, 28 launches fewer per step.
        """
        _, _, h, w = x.shape
        lo, span, sign, px, py = self._constants(h, w, x)
        v = torch.addcmul(lo, u, span)  # (N, 4): angle, zoom, tx, ty
        angle = v[:, :1]
        cs = torch.cat([torch.cos(angle), torch.sin(angle)], 1) / v[:, 1:2]  # (c, s)
        rot = cs.flip(1) * sign  # (-s, c)
        # (N, 2, 1, 1) coefficients against px (1, 1, 1, W) and py (1, 1, H, 1)
        along_x = px * cs[:, :, None, None]
        along_y = torch.addcmul(v[:, 2:, None, None], py, rot[:, :, None, None])
        return (along_x + along_y).permute(0, 2, 3, 1)

    def _constants(self, h: int, w: int, like: Tensor) -> tuple[Tensor, ...]:
        """Affine map from ``u`` to (angle, zoom, tx, ty), the sign flip of ``(s, c)`` to
        ``(-s, c)``, and the pixel-centre coordinates, on ``like``'s device and dtype."""
        key = (h, w, str(like.device), like.dtype)
        if key not in self._consts:
            a, (z0, z1) = math.radians(self.degrees), self.scale
            jx, jy = self.jitter * 2 / w, self.jitter * 2 / h
            f64 = torch.float64
            lo = torch.tensor([-a, z0, -jx, -jy], dtype=f64)
            span = torch.tensor([2 * a, z1 - z0, 2 * jx, 2 * jy], dtype=f64)
            sign = torch.tensor([-1.0, 1.0], dtype=f64)
            px = ((torch.arange(w, dtype=f64) * 2 + 1) / w - 1).reshape(1, 1, 1, w)
            py = ((torch.arange(h, dtype=f64) * 2 + 1) / h - 1).reshape(1, 1, h, 1)
            self._consts[key] = tuple(
                t.to(device=like.device, dtype=like.dtype) for t in (lo, span, sign, px, py)
            )
        return self._consts[key]

    def random_state(self) -> dict[str, Tensor]:
        """The state of the generator of each device it has drawn on, by device name."""
        return {key: g.get_state() for key, g in self._gens.items()}

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        for key, s in state.items():
            g = self._gens.get(key) or torch.Generator(device=key)
            g.set_state(s)
            self._gens[key] = g

    def __getstate__(self) -> dict:
        # generators do not pickle, and the constants are device copies: send the generators'
        # states and rebuild the constants where the transform lands
        out = {k: v for k, v in self.__dict__.items() if k not in ("_gens", "_consts")}
        out["_gen_states"] = self.random_state()
        return out

    def __setstate__(self, state: dict) -> None:
        gens = state.pop("_gen_states")
        self.__dict__.update(state, _gens={}, _consts={})
        self.set_random_state(gens)

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

    def random_state(self) -> dict[str, Tensor]:
        return {"cpu": self._gen.get_state()}

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        if state:
            self._gen.set_state(state["cpu"])

    def __getstate__(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "_gen"}
        out["_gen_state"] = self._gen.get_state()
        return out

    def __setstate__(self, state: dict) -> None:
        gen_state = state.pop("_gen_state")
        self.__dict__.update(state, _gen=torch.Generator())
        self._gen.set_state(gen_state)

    def __repr__(self) -> str:
        return f"RandomRoll(max_shift={self.max_shift})"


class Transformed(Energy):
    """``energy(T(x))`` with a fresh random transform per call (a stochastic energy)."""

    def __init__(self, energy: Energy, transform: RandomAffine | RandomRoll):
        self.inner, self.transform = energy, transform
        self.name = energy.name

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.inner.evaluate(self.transform(x))

    def random_state(self) -> dict[str, Tensor]:
        return {
            **{f"transform.{k}": v for k, v in random_state(self.transform).items()},
            **{f"inner.{k}": v for k, v in random_state(self.inner).items()},
        }

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        for part, obj in (("transform.", self.transform), ("inner.", self.inner)):
            set_random_state(
                obj, {k.removeprefix(part): v for k, v in state.items() if k.startswith(part)}
            )

    def __repr__(self) -> str:
        return f"Transformed({self.inner!r}, {self.transform!r})"
