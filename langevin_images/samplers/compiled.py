"""MALA for small targets with the per-step overhead compiled away: ``chunk`` steps in one
``torch.compile``d graph.

On a 100-d Gaussian an eager step of ``sample()`` costs about 330 us on one core, of which the
energy and gradient are 50 us: the rest is Python and the dispatch of a few dozen small tensor
operations. Here a chunk of steps (proposal, energy and gradient through ``torch.func``, the
Metropolis-Hastings test, and per-chain dual averaging during warmup) is one compiled
function, so that cost is paid once per chunk. The noise of a chunk is drawn up front from a
seeded ``torch.Generator``; the random stream is therefore not the one ``sample()`` uses, and
the draws agree with ``sample()``'s in distribution, not one by one (the tests compare the
moments of both with the truth). ``compile=False`` runs the very same chunk function eagerly.

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


def _dual_averaging(state, acc, target, gamma=0.05, t0=10.0, kappa=0.75):
    log_step, log_avg, h_avg, mu, m = state
    m = m + 1
    eta = 1.0 / (m + t0)
    h_avg = (1.0 - eta) * h_avg + eta * (target - acc)
    log_step = mu - torch.sqrt(m) / gamma * h_avg
    w = m ** (-kappa)
    log_avg = w * log_step + (1.0 - w) * log_avg
    return log_step, log_avg, h_avg, mu, m


def _make_chunk(energy, temperature: float, target_accept: float):
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

    def chunk(x, e, g, m, da, noise, log_u, adapt: bool):
        """``noise`` (K, chains, dim) and ``log_u`` (K, chains), the logs of the accept draws;
        ``m`` the diagonal of M. What does not change from step to step is computed once per
        chunk: the forward proposal term of the MH ratio is ``|noise|^2 / 2`` whatever the
        step, and while sampling the step sizes are frozen."""
        accs, xs = [], []
        half_sq = 0.5 * noise.square().sum(-1)  # (K, chains): |x' - mean_fwd|^2_M^-1 / (4 eps)
        eps = torch.exp(da[0])[:, None]
        em, sd = eps * m, torch.sqrt(2 * eps * m)
        for k in range(noise.shape[0]):
            if adapt and k:
                eps = torch.exp(da[0])[:, None]
                em, sd = eps * m, torch.sqrt(2 * eps * m)
            prop = x - em * g + sd * noise[k]
            gp, ep = grad_energy(prop)
            back = x - prop + em * gp  # x - mean_bwd
            log_ratio = (e - ep) + half_sq[k] - (back.square() / em).sum(-1) / 4
            log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, -math.inf)
            acc = torch.exp(torch.clamp(log_ratio, max=0.0))
            take = log_u[k] < log_ratio
            x = torch.where(take[:, None], prop, x)
            e = torch.where(take, ep, e)
            g = torch.where(take[:, None], gp, g)
            if adapt:
                da = _dual_averaging(da, acc.to(da[0].dtype), target_accept)
            accs.append(acc)
            xs.append(x)
        return x, e, g, da, torch.stack(accs, 1), torch.stack(xs, 1)

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
    chunk: int = 50,
    thin: int = 1,
    compile: bool = True,
) -> CompiledRun:
    """MALA with per-chain dual averaging during ``warmup`` (Hoffman & Gelman's constants, as
    ``schedules.DualAveraging``), the step frozen at the averaged iterate after it; see the
    module's docstring for what differs from ``sample()``. ``preconditioner``: None or a
    ``Diagonal``. If compilation fails the run goes on eagerly, with a warning."""
    from .preconditioners import Diagonal

    if x0.ndim < 2:
        raise ValueError(f"sample_compiled takes positions (chains, ...), got {tuple(x0.shape)}")
    shape = tuple(x0.shape[1:])
    if len(shape) > 1:  # images: the chunk works on flat positions
        image_energy = energy

        def energy(z):
            return image_energy(z.reshape(z.shape[0], *shape))

        x0 = x0.reshape(x0.shape[0], -1)
    if preconditioner is not None and not isinstance(preconditioner, Diagonal):
        raise ValueError("sample_compiled takes a Diagonal preconditioner or None")
    if chunk < 1 or steps < 1 or warmup < 0 or thin < 1:
        raise ValueError("sample_compiled needs chunk >= 1, steps >= 1, warmup >= 0, thin >= 1")
    chains, dim = x0.shape
    dtype, device = x0.dtype, x0.device
    m = (preconditioner.scale.to(dtype).expand(dim).to(device) if preconditioner is not None
         else torch.ones(dim, dtype=dtype, device=device))  # fmt: skip
    fn, grad_energy = _make_chunk(energy, float(temperature), float(target_accept))
    x = x0.detach().clone()
    g, e = (t.detach() for t in grad_energy(x))
    log0 = torch.full((chains,), math.log(step_size), dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    da = (log0, log0.clone(), torch.zeros_like(log0), log0 + math.log(10.0), zero)
    gen = torch.Generator(device=device).manual_seed(seed)
    compiled, compile_seconds = False, 0.0
    runner = fn
    if compile:
        t0 = time.perf_counter()
        # a C++ wrapper around inductor's kernels drops the Python call of each kernel: on the
        # banana a step took 3.6 us with it and 5.3 without; if it fails, the plain one
        for options in ({"cpp_wrapper": True}, {}):
            try:
                runner = torch.compile(fn, dynamic=False, fullgraph=True, options=options)
                with _quiet_inductor():
                    for adapt in (True, False):  # compile both graphs on a copy of the state
                        k = min(chunk, warmup if adapt else steps) or 1
                        runner(x, e, g, m, da,
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
    accs, kept = [], []
    t0 = time.perf_counter()
    for phase, total in (("warmup", warmup), ("sampling", steps)):
        adapt = phase == "warmup"
        done = 0
        while done < total:
            k = min(chunk, total - done)
            noise = torch.randn((k, chains, dim), generator=gen, dtype=dtype, device=device)
            u = torch.rand((k, chains), generator=gen, dtype=dtype, device=device)
            x, e, g, da, acc, xs = runner(x, e, g, m, da, noise, u.log_(), adapt)
            accs.append(acc.to(torch.float64))
            if not adapt:
                kept.append(xs)
            done += k
        if adapt and warmup:  # freeze at the averaged iterate
            da = (da[1].clone(), *da[1:])
    seconds = time.perf_counter() - t0
    draws = torch.cat(kept, 1)[:, thin - 1 :: thin]
    draws = draws.reshape(*draws.shape[:2], *shape)
    return CompiledRun(draws.detach(), torch.cat(accs, 1), torch.exp(da[0]).detach(),
                       warmup + steps + 1, compiled, compile_seconds, seconds)  # fmt: skip
