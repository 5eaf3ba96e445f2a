"""Kernels behind one small interface, in a registry the driver looks methods up in.

A kernel is built for one energy and fixed options, and is then a pair of functions over an
explicit state (BlackJAX's ``build_kernel``)::

    kern = build_kernel("mala", energy_fn, temperature=1.0, preconditioner=M)
    state = kern.init(position)                       # one evaluation
    state, info = kern.step(t, state, eps, generator)   # global step t, (chains,) step sizes

``info`` is a ``LangevinInfo``: acceptance_prob, is_accepted, diverging, proposal energy, and
how many evaluations the step spent. The state is whatever the kernel needs, as long as it has
``position``, ``energy``, ``grad`` (None for a gradient-free kernel) and ``terms``: the driver
records those and checkpoints the whole state (a NamedTuple of tensors).

Adding a kernel is one module with a ``@register("name")`` build function and one import of it
in ``samplers/__init__.py`` (``pcn.py`` is an example).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..linalg import Preconditioner
from . import kernel

__all__ = ["KERNELS", "Kernel", "build_kernel", "register", "with_transform"]


class Kernel(NamedTuple):
    """A built kernel: ``init(position) -> state`` and ``step(t, state, eps, gen)``.

    ``accepts``: whether its acceptance probability means something (adaptive step sizes tune
    to it); ``temperature``: the T it samples at (0 for descent); ``state_type``: the
    NamedTuple of its state (a checkpoint is rebuilt into it).
    """

    init: Callable[[Tensor], Any]
    step: Callable[[int, Any, Tensor, torch.Generator], tuple[Any, kernel.LangevinInfo]]
    accepts: bool
    temperature: float
    state_type: type = kernel.LangevinState


KERNELS: dict[str, Callable[..., Kernel]] = {}


def register(name: str):
    """Decorator: ``build(energy_fn, *, temperature, preconditioner, **options) -> Kernel``
    becomes the method ``name`` of ``sample(method=name)``."""

    def deco(build):
        KERNELS[name] = build
        return build

    return deco


def build_kernel(method: str, energy_fn, **options) -> Kernel:
    """The kernel of ``method`` for ``energy_fn``; unknown methods and options are refused."""
    if method not in KERNELS:
        raise ValueError(f"method must be one of {tuple(KERNELS)}, got {method!r}")
    return KERNELS[method](energy_fn, **options)


def _langevin(energy_fn, temperature: float, preconditioner: Preconditioner, adjust: bool):
    def init(position: Tensor) -> kernel.LangevinState:
        return kernel.init(energy_fn, position, preconditioner, exact=adjust)

    def step(t, state, eps, generator):
        return kernel.step(
            state,
            energy_fn,
            eps,
            generator,
            temperature=temperature,
            adjust=adjust,
            preconditioner=preconditioner,
        )

    return init, step


def _positive_temperature(method: str, temperature: Any) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"temperature must be > 0 for {method}; use method='descent' for T = 0")
    return value


@register("mala")
def build_mala(energy_fn, *, temperature: float, preconditioner: Preconditioner) -> Kernel:
    """Metropolis-adjusted Langevin: exact for ``exp(-E / T)`` at any step size."""
    t = _positive_temperature("mala", temperature)
    return Kernel(*_langevin(energy_fn, t, preconditioner, True), accepts=True, temperature=t)


@register("ula")
def build_ula(energy_fn, *, temperature: float, preconditioner: Preconditioner) -> Kernel:
    """Unadjusted Langevin: every finite proposal is taken (biased, O(eps))."""
    t = _positive_temperature("ula", temperature)
    return Kernel(*_langevin(energy_fn, t, preconditioner, False), accepts=False, temperature=t)


@register("descent")
def build_descent(
    energy_fn, *, temperature: float = 0.0, preconditioner: Preconditioner,
    normalize_step: bool = False,
) -> Kernel:  # fmt: skip
    """Zero noise, no accept step: preconditioned gradient descent on E.

    ``normalize_step`` divides each chain's step by the mean magnitude of its preconditioned
    gradient, so that the step size is the mean change of a coordinate per step (the
    google/deepdream recipe); MALA and ULA have no such option, since their step must not
    depend on the current gradient.
    """
    init, plain = _langevin(energy_fn, 0.0, preconditioner, False)
    if not normalize_step:
        return Kernel(init, plain, accepts=False, temperature=0.0)

    def step(t, state, eps, generator):
        scaled = eps / kernel.drift_magnitude(state).to(eps).clamp_min(1e-12)
        return plain(t, state, scaled, generator)

    return Kernel(init, step, accepts=False, temperature=0.0)


def with_transform(kern: Kernel, transform, to_image, to_position) -> Kernel:
    """``kern`` followed, after every ``transform.every``-th step, by ``transform`` of the
    images and one more evaluation there (e.g. ``energies.BlurEvery``). Not a Langevin move: it
    breaks the chain's invariance, and the run card says so."""
    every = getattr(transform, "every", None)
    if not callable(transform) or not isinstance(every, int) or every < 1:
        raise TypeError("transform must be callable with an integer attribute every >= 1")

    def step(t, state, eps, generator):
        state, info = kern.step(t, state, eps, generator)
        if (t + 1) % every == 0:
            state = kern.init(to_position(transform(to_image(state.position))))
            info = info._replace(evals=info.evals + 1)
        return state, info

    return kern._replace(step=step)
