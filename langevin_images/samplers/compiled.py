"""MALA for small targets with the per-step overhead compiled away: a chunk of steps in one
``torch.compile``d call.

On a 100-d Gaussian an eager step of ``sample()`` costs about 330 us on one core, of which the
energy and gradient are 50 us: the rest is Python and the dispatch of a few dozen small tensor
operations. Here a chunk of steps (proposal, energy and gradient through ``torch.func``, the
Metropolis-Hastings test, and per-chain dual averaging during warmup) is one compiled
function: a loop (``torch``'s ``scan``) over blocks of ``unroll`` steps written out in the
graph, so the graph and its compilation stay the same size however many steps a call makes
(up to 1 000), while the steps of a block fuse into a few kernels. On one core that gave 5.9
us a step on the 100-d Gaussian and 1.8 us on the 2-d banana, against BlackJAX's jitted
MALA's 7.2 and 0.83 us (``bench --compiled``), and 6.1 ms against ``sample()``'s 7.8 ms on the
MNIST CNN's energy (16 chains). The noise of a chunk is drawn up front from a seeded
``torch.Generator``; the random stream is therefore not the one ``sample()`` uses, and the
draws agree with ``sample()``'s in distribution, not one by one (the tests compare the moments
of both with the truth). ``compile=False`` runs the very same chunk function eagerly.

What it does not do, against ``sample()``: no recorder (the draws are kept in memory), no
checkpoints or resume, no bounds, transforms or energy terms, and only diagonal
preconditioners. The energy must be built from PyTorch operations that ``torch.func`` and
``torch.compile`` can trace, and a chain's energy must read only its own row (the gradient is
that of the sum over chains: one forward and one backward pass a step). Positions may have any
shape ``(chains, ...)``: images are flattened inside and reshaped for the energy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CompiledRun", "sample_compiled"]


@dataclass
class CompiledRun:
    samples: Tensor  # (chains, draws, dim)
    acceptance_prob: Tensor  # (chains, warmup + steps) float64
    step_size: Tensor  # (chains,) the frozen step after warmup
    grad_evals: int
    compiled: bool
    compile_seconds: float
    seconds: float  # sampling, compilation excluded


def _dual_averaging(state, acc, target, mu, gamma=0.05, t0=10.0, kappa=0.75):
    """Hoffman & Gelman's update of ``(log_step, log_avg, h_avg, count)`` per chain."""
    log_step, log_avg, h_avg, m = state
    m = m + 1
    eta = 1.0 / (m + t0)
    h_avg = (1.0 - eta) * h_avg + eta * (target - acc)
    log_step = mu - torch.sqrt(m) / gamma * h_avg
    w = m ** (-kappa)
    log_avg = w * log_step + (1.0 - w) * log_avg
    return log_step, log_avg, h_avg, m


def _scan():
    try:
        from torch._higher_order_ops.scan import scan
    except ImportError:  # pragma: no cover - older PyTorch: a Python loop over the blocks
        return None
    return scan


def _make_chunk(energy, temperature: float, target_accept: float, unroll: int):
    from torch.func import grad_and_value

    def total(x):
        e = energy(x) / temperature
        return e.sum(), e

    # one forward and one backward pass for the energies and gradients of all chains: the
    # gradient of the sum is each chain's own, since a chain's energy reads only its row
    both = grad_and_value(total, has_aux=True)

    def grad_energy(x):
        gx, (_, e) = both(x)
        return gx, e

    def one_step(x, e, g, em, sd, noise, log_u):
        """One MALA step; ``em = eps m`` and ``sd = sqrt(2 eps m)``. The forward proposal term
        of the MH ratio, ``|x' - mean_fwd|^2_M^-1 / (4 eps)``, is ``|noise|^2 / 2``."""
        prop = x - em * g + sd * noise
        gp, ep = grad_energy(prop)
        back = x - prop + em * gp  # x - mean_bwd
        log_ratio = (e - ep) + 0.5 * noise.square().sum(-1) - (back.square() / em).sum(-1) / 4
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, -math.inf)
        acc = torch.exp(torch.clamp(log_ratio, max=0.0))
        take = log_u < log_ratio
        x = torch.where(take[:, None], prop, x)
        e = torch.where(take, ep, e)
        g = torch.where(take[:, None], gp, g)
        return x, e, g, acc

    def chunk(x, e, g, m, da, mu, noise, log_u, adapt: bool):
        """``noise`` (K, chains, dim) and ``log_u`` (K, chains), the logs of the accept draws,
        K a multiple of ``unroll``; ``m`` the diagonal of M; ``da`` the dual averaging state
        ``(log_step, log_avg, h_avg, count)`` and ``mu`` its shrinkage target. A loop
        (``scan``) over blocks of ``unroll`` steps written out: the graph's size and its
        compilation do not grow with K. While sampling the step sizes are frozen."""
        em_fixed = sd_fixed = m  # while adapting, unused (a set cell for the traced loop)
        if not adapt:
            eps = torch.exp(da[0])[:, None]
            em_fixed, sd_fixed = eps * m, torch.sqrt(2 * eps * m)

        def block(carry, inputs):
            noise_b, log_u_b = inputs
            x, e, g = carry[:3]
            state = carry[3:]
            accs, xs = [], []
            for j in range(unroll):
                if adapt:
                    eps = torch.exp(state[0])[:, None]
                    em, sd = eps * m, torch.sqrt(2 * eps * m)
                else:
                    em, sd = em_fixed, sd_fixed
                x, e, g, acc = one_step(x, e, g, em, sd, noise_b[j], log_u_b[j])
                if adapt:
                    state = _dual_averaging(state, acc.to(state[0].dtype), target_accept, mu)
                accs.append(acc)
                xs.append(x)
            return (x, e, g, *state), (torch.stack(accs), torch.stack(xs))

        k = noise.shape[0]
        blocks = (noise.reshape(k // unroll, unroll, *noise.shape[1:]),
                  log_u.reshape(k // unroll, unroll, *log_u.shape[1:]))  # fmt: skip
        carry = (x, e, g, *da) if adapt else (x, e, g)
        scan = _scan()
        if scan is not None:
            carry, (accs, xs) = scan(block, carry, blocks)
        else:  # pragma: no cover
            outs = []
            for i in range(k // unroll):
                carry, out = block(carry, (blocks[0][i], blocks[1][i]))
                outs.append(out)
            accs, xs = (torch.stack(t) for t in zip(*outs, strict=True))
        x, e, g = carry[:3]
        da = tuple(carry[3:]) if adapt else da
        return x, e, g, da, accs.flatten(0, 1).T, xs.flatten(0, 1).transpose(0, 1)

    return chunk, grad_energy


@contextlib.contextmanager
def _quiet_inductor():
    """Inductor's warnings while it compiles (an op without a C++ shim, which then runs through
    a fallback; no CUDA found on a CPU machine) say nothing a user of the sampler can act on."""
    loggers = [logging.getLogger(name) for name in ("torch._inductor", "torch.utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def sample_compiled(
    energy,
    x0: Tensor,
    *,
    steps: int,
    warmup: int = 0,
    step_size: float = 0.1,
    target_accept: float = 0.574,
    temperature: float = 1.0,
    preconditioner=None,
    seed: int = 0,
    chunk: int | None = None,
    unroll: int | None = None,
    thin: int = 1,
    compile: bool = True,
) -> CompiledRun:
    """MALA with per-chain dual averaging during ``warmup`` (Hoffman & Gelman's constants, as
    ``schedules.DualAveraging``), the step frozen at the averaged iterate after it; see the
    module's docstring for what differs from ``sample()``. ``preconditioner``: None or a
    ``Diagonal``. If compilation fails the run goes on eagerly, with a warning.

    ``chunk`` steps make one call of the compiled function (default: up to 1 000, fewer when
    the noise of a chunk would pass 4 M numbers), a loop over blocks of ``unroll`` steps
    written out in the graph (default 10 for flat positions, whose steps cost microseconds and
    gain from fusion across steps; 1 for images, whose network dwarfs the loop's overhead and
    would only take longer to compile); a phase's last steps that fill no whole chunk run
    through the same function eagerly."""
    from .preconditioners import Diagonal

    if x0.ndim < 2:
        raise ValueError(f"sample_compiled takes positions (chains, ...), got {tuple(x0.shape)}")
    shape = tuple(x0.shape[1:])
    if unroll is None:
        unroll = 1 if len(shape) > 1 else 10
    if len(shape) > 1:  # images: the chunk works on flat positions
        image_energy = energy

        def energy(z):
            return image_energy(z.reshape(z.shape[0], *shape))

        x0 = x0.reshape(x0.shape[0], -1)
    if preconditioner is not None and not isinstance(preconditioner, Diagonal):
        raise ValueError("sample_compiled takes a Diagonal preconditioner or None")
    chains, dim = x0.shape
    if chunk is None:
        chunk = max(unroll, min(1000, (1 << 22) // (chains * dim)))
    if unroll < 1 or chunk < 1 or steps < 1 or warmup < 0 or thin < 1:
        raise ValueError("sample_compiled needs unroll, chunk, steps, thin >= 1 and warmup >= 0")
    dtype, device = x0.dtype, x0.device
    m = (preconditioner.scale.to(dtype).expand(dim).to(device) if preconditioner is not None
         else torch.ones(dim, dtype=dtype, device=device))  # fmt: skip
    fn, grad_energy = _make_chunk(energy, float(temperature), float(target_accept), unroll)
    x = x0.detach().clone()
    g, e = (t.detach() for t in grad_energy(x))
    log0 = torch.full((chains,), math.log(step_size), dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    da, mu = (log0, log0.clone(), torch.zeros_like(log0), zero), log0 + math.log(10.0)
    # each phase runs in calls of k steps (a multiple of unroll), the rest eagerly
    sizes = {"warmup": _call_size(warmup, chunk, unroll),
             "sampling": _call_size(steps, chunk, unroll)}  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(seed)
    compiled, compile_seconds = False, 0.0
    runner = fn
    if compile:
        t0 = time.perf_counter()
        # a C++ wrapper around inductor's kernels drops the Python call of each kernel; if it
        # fails, the plain one
        for options in ({"cpp_wrapper": True}, {}):
            try:
                runner = torch.compile(fn, dynamic=False, fullgraph=True, options=options)
                with _quiet_inductor():
                    for adapt in (True, False):  # compile both graphs on a copy of the state
                        k = sizes["warmup" if adapt else "sampling"]
                        if k:
                            runner(x, e, g, m, da, mu,
                                   torch.zeros((k, chains, dim), dtype=dtype, device=device),
                                   torch.full((k, chains), -0.7, dtype=dtype, device=device),
                                   adapt)  # fmt: skip
                compiled = True
                break
            except Exception as err:  # pragma: no cover - depends on the energy and platform
                failure = err
        compile_seconds = time.perf_counter() - t0
        if not compiled:  # pragma: no cover
            warnings.warn(f"torch.compile failed ({type(failure).__name__}); running eagerly",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
            runner = fn
    rest = _make_chunk(energy, float(temperature), float(target_accept), 1)[0]  # eagerly
    accs, kept = [], []
    t0 = time.perf_counter()
    for phase, total in (("warmup", warmup), ("sampling", steps)):
        adapt = phase == "warmup"
        done, k = 0, sizes[phase]
        while done < total:
            n, call = (k, runner) if k and total - done >= k else (total - done, rest)
            noise = torch.randn((n, chains, dim), generator=gen, dtype=dtype, device=device)
            u = torch.rand((n, chains), generator=gen, dtype=dtype, device=device)
            x, e, g, da, acc, xs = call(x, e, g, m, da, mu, noise, u.log_(), adapt)
            accs.append(acc)
            if not adapt:
                kept.append(xs)
            done += n
        if adapt and warmup:  # freeze at the averaged iterate
            da = (da[1].clone(), *da[1:])
    seconds = time.perf_counter() - t0
    draws = torch.cat(kept, 1)[:, thin - 1 :: thin]
    draws = draws.reshape(*draws.shape[:2], *shape)
    return CompiledRun(draws.detach(), torch.cat(accs, 1).to(torch.float64),
                       torch.exp(da[0]).detach(), warmup + steps + 1, compiled, compile_seconds,
                       seconds)  # fmt: skip


def _call_size(total: int, chunk: int, unroll: int) -> int:
    """Steps per compiled call in a phase of ``total`` steps: ``chunk`` (or ``total`` if
    smaller) rounded down to a multiple of ``unroll``; 0 if the phase is shorter than that."""
    return (min(chunk, total) // unroll) * unroll
