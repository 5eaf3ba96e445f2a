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
preconditioners. The energy must be a function of a ``(chains, dim)`` tensor built from
PyTorch operations that ``torch.func.grad`` and ``torch.compile`` can trace, and evaluate each
row on its own (it is called on single rows for the gradient).
"""

from __future__ import annotations

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
    from torch.func import grad, vmap

    def one(x):
        return energy(x[None])[0] / temperature

    grad_fn = vmap(grad(one))

    def chunk(x, e, g, m, da, noise, u, adapt: bool):
        """``noise`` (K, chains, dim) and ``u`` (K, chains); ``m`` the diagonal of M."""
        accs, xs = [], []
        log_step = da[0]
        for k in range(noise.shape[0]):
            eps = torch.exp(da[0] if adapt else log_step)[:, None]
            mean_fwd = x - eps * m * g
            prop = mean_fwd + torch.sqrt(2 * eps * m) * noise[k]
            ep = energy(prop) / temperature
            gp = grad_fn(prop)
            mean_bwd = prop - eps * m * gp
            fwd = ((prop - mean_fwd).square() / m).sum(-1)
            bwd = ((x - mean_bwd).square() / m).sum(-1)
            log_ratio = (e - ep) + (fwd - bwd) / (4 * eps[:, 0])
            log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, -math.inf)
            acc = torch.exp(torch.clamp(log_ratio, max=0.0))
            take = torch.log(u[k]) < log_ratio
            x = torch.where(take[:, None], prop, x)
            e = torch.where(take, ep, e)
            g = torch.where(take[:, None], gp, g)
            if adapt:
                da = _dual_averaging(da, acc.to(da[0].dtype), target_accept)
            accs.append(acc)
            xs.append(x)
        return x, e, g, da, torch.stack(accs, 1), torch.stack(xs, 1)

    return chunk, grad_fn, one


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

    if x0.ndim != 2:
        raise ValueError(f"sample_compiled takes positions (chains, dim), got {tuple(x0.shape)}")
    if preconditioner is not None and not isinstance(preconditioner, Diagonal):
        raise ValueError("sample_compiled takes a Diagonal preconditioner or None")
    if chunk < 1 or steps < 1 or warmup < 0 or thin < 1:
        raise ValueError("sample_compiled needs chunk >= 1, steps >= 1, warmup >= 0, thin >= 1")
    chains, dim = x0.shape
    dtype, device = x0.dtype, x0.device
    m = (preconditioner.scale.to(dtype).expand(dim).to(device) if preconditioner is not None
         else torch.ones(dim, dtype=dtype, device=device))  # fmt: skip
    fn, grad_fn, _ = _make_chunk(energy, float(temperature), float(target_accept))
    x = x0.detach().clone()
    e = energy(x).detach() / temperature
    g = grad_fn(x)
    log0 = torch.full((chains,), math.log(step_size), dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    da = (log0, log0.clone(), torch.zeros_like(log0), log0 + math.log(10.0), zero)
    gen = torch.Generator(device=device).manual_seed(seed)
    compiled, compile_seconds = False, 0.0
    runner = fn
    if compile:
        try:
            runner = torch.compile(fn, dynamic=False, fullgraph=True)
            t0 = time.perf_counter()  # compile both graphs on a copy of the state
            for adapt in (True, False):
                k = min(chunk, warmup if adapt else steps) or 1
                runner(x, e, g, m, da, torch.zeros((k, chains, dim), dtype=dtype, device=device),
                       torch.full((k, chains), 0.5, dtype=dtype, device=device), adapt)  # fmt: skip
            compile_seconds, compiled = time.perf_counter() - t0, True
        except Exception as err:  # pragma: no cover - depends on the energy and the platform
            warnings.warn(f"torch.compile failed ({type(err).__name__}); running eagerly",
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
            x, e, g, da, acc, xs = runner(x, e, g, m, da, noise, u, adapt)
            accs.append(acc.to(torch.float64))
            if not adapt:
                kept.append(xs)
            done += k
        if adapt and warmup:  # freeze at the averaged iterate
            da = (da[1].clone(), *da[1:])
    seconds = time.perf_counter() - t0
    draws = torch.cat(kept, 1)[:, thin - 1 :: thin]
    return CompiledRun(draws.detach(), torch.cat(accs, 1), torch.exp(da[0]).detach(),
                       warmup + steps + 1, compiled, compile_seconds, seconds)  # fmt: skip
