"""Nothing silent through the Python API: a table of bad inputs (each a clear error) and of
legal ones that used to be refused; property-based tests over shapes, dtypes, step sizes and
step counts; and faults inside the energy (NaN, inf, an exception at step k)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from helpers import assert_moments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import langevin_images as li
from langevin_images.recording import ZarrRecorder
from langevin_images.samplers import from_three_epsilons


def quad(x):
    return 0.5 * (x**2).flatten(1).sum(1)


X0 = torch.zeros(4, 3)

BAD = [
    ({"energy": lambda x: quad(x).detach()}, ValueError, "does not depend on x through autograd"),
    ({"energy": lambda x: quad(x).round().long()}, TypeError, "int64 values"),
    ({"energy": lambda x: torch.zeros(x.shape[0])}, ValueError, "does not depend on x"),
    ({"method": "ula", "schedule": "dual_averaging"}, ValueError, "adapts to an acceptance rate"),
    ({"method": "descent", "schedule": "dual_averaging"}, ValueError, "adapts to an acceptance"),
    ({"x0": torch.zeros(0, 3)}, ValueError, "no chains"),
    ({"x0": torch.zeros(4, 3, dtype=torch.bfloat16)}, ValueError, "float32 or float64"),
    ({"x0": torch.zeros(4, 3, dtype=torch.float16)}, ValueError, "float32 or float64"),
    ({"x0": torch.zeros(4, 3, dtype=torch.int64)}, ValueError, "floating-point tensor"),
    ({"step_size": "0.1"}, TypeError, "step_size must be a number"),
    ({"step_size": -1.0}, ValueError, "finite and > 0"),
    ({"step_size": math.nan}, ValueError, "finite and > 0"),
    ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
    ({"steps": 2.5}, TypeError, "steps must be an integer"),
    ({"steps": "5"}, TypeError, "steps must be an integer"),
    ({"thin": 10, "steps": 5}, ValueError, "keeps no draw"),
    ({"seed": 2**70}, ValueError, "seed must be < 2**63"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
    ({"temperature": "warm"}, TypeError, "temperature must be a number"),
    ({"target_accept": 1.5}, ValueError, "target_accept must be in (0, 1)"),
    ({"chain_groups": [0, 1]}, ValueError, "one label per chain"),
    ({"method": "hmc"}, ValueError, "method must be one of"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_python_input_is_a_clear_error(change, error, message):
    args = {"energy": quad, "x0": X0, "steps": 5, "progress": False, **change}
    energy, x0 = args.pop("energy"), args.pop("x0")
    with pytest.raises(error, match=re.escape(message)):
        li.sample(energy, x0, **args)


GOOD = [
    {"temperature": np.float32(1)},
    {"temperature": torch.tensor(1.0)},
    {"steps": np.int64(5)},
    {"steps": torch.tensor(5)},
    {"warmup": np.int32(2), "thin": np.int64(2)},
    {"step_size": np.float64(0.1)},
    {"step_size": torch.full((4,), 0.1)},
    {"seed": np.int64(3)},
    {"seed": 2**63 - 1},
]


@pytest.mark.parametrize("change", GOOD, ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()))
def test_numpy_and_torch_scalars_are_accepted(change):
    run = li.sample(quad, X0, **{"steps": 6, "progress": False, **change})
    reference = li.sample(
        quad, X0, steps=int(change.get("steps", 6)), progress=False,
        **{k: (v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v)
           for k, v in change.items() if k != "steps"},
    )  # fmt: skip
    assert torch.equal(run.samples, reference.samples)


def test_three_epsilons_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        from_three_epsilons(math.nan, 1, 1)
    with pytest.raises(ValueError, match="finite"):
        from_three_epsilons(0.1, math.inf, 1)


def test_bfloat16_models_run_inside_a_float32_sampler():
    """The refusal's advice works: the model in bfloat16, the state and record in float32."""
    lin = torch.nn.Linear(3, 1).to(torch.bfloat16)

    def energy(x):
        return quad(x) + lin(x.to(torch.bfloat16)).squeeze(1).float()

    run = li.sample(energy, X0, steps=8, progress=False)
    assert run.to_datatree()["posterior"]["x"].dtype == np.float32


# ---- faults inside the energy ---------------------------------------------------------------


class Raises:
    """``quad``, raising on its ``k``-th call (the first is the initial state)."""

    def __init__(self, k: int):
        self.k, self.calls = k, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise RuntimeError("the model fell over")
        return quad(x)

    def __repr__(self) -> str:
        return f"Raises({self.k})"


@pytest.mark.parametrize("to_disk", [False, True])
def test_an_energy_that_raises_at_step_k_names_it_and_keeps_the_run(to_disk, tmp_path):
    record = tmp_path / "r.zarr" if to_disk else None
    kw = {"record_to": record} if to_disk else {}
    with pytest.raises(RuntimeError, match="fell over") as info:
        li.sample(Raises(9), X0, steps=20, warmup=3, progress=False, **kw)
    err = info.value
    assert "raised at step 7 of 23 (sampling)" in err.__notes__  # 1 initial call + 7 steps
    run = err.run
    assert run.recorder.completed == 7 and run.samples.shape[:2] == (4, 4)
    assert torch.isfinite(run.samples).all()
    if to_disk:
        tree = li.open_record(record)  # readable up to the last step written
        assert tree["posterior"].sizes["draw"] == 4
        assert ZarrRecorder.open(record).attrs["error"].startswith("RuntimeError")


def test_nan_and_inf_at_random_steps_are_rejected_and_never_reach_the_draws():
    """An energy that returns NaN or inf for random chains at random steps: those proposals are
    rejected and flagged as divergences, the chains stay finite, and the sampler still targets
    N(0, 1) exactly (a rejected proposal is a correct MALA move)."""
    gen = torch.Generator().manual_seed(5)
    calls = {"n": 0}

    def flaky(x):
        e = quad(x)
        calls["n"] += 1
        if calls["n"] == 1:  # the start is finite (a NaN there is refused up front)
            return e
        u = torch.rand(x.shape[0], generator=gen, dtype=x.dtype)
        bad = torch.where(u < 0.5, torch.full_like(e, math.nan), torch.full_like(e, math.inf))
        return torch.where(u < 0.05, bad, e)

    run = li.sample(flaky, torch.zeros(32, 2), steps=1500, warmup=200, step_size=0.8,
                    schedule="dual_averaging", progress=False, seed=2)  # fmt: skip
    div = run.stats["diverging"]
    assert 0.02 < div.float().mean() < 0.08
    assert not run.stats["is_accepted"][div].any()
    assert torch.isfinite(run.samples).all()
    assert_moments(run.samples.numpy(), np.zeros(2), np.ones(2))


def test_divergence_names_the_chain_and_the_steps(tmp_path):
    def wall(x):  # chain 2 is NaN from the start of sampling on
        e = quad(x)
        return torch.where(torch.arange(x.shape[0]) == 2, e + math.nan * (x[:, 0] > -9), e)

    calls = {"n": 0}

    def later(x):
        calls["n"] += 1
        return wall(x) if calls["n"] > 6 else quad(x)

    with pytest.raises(li.DivergenceError, match=r"chain 2 diverged .* steps 5\.\.24") as info:
        li.sample(later, X0, steps=60, progress=False, max_divergences_in_a_row=20,
                  record_to=tmp_path / "r.zarr")  # fmt: skip
    assert info.value.run.recorder.completed >= 24
    assert li.open_record(tmp_path / "r.zarr")["posterior"].sizes["draw"] >= 24


# ---- properties -------------------------------------------------------------------------------

PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@PROPERTY
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    chains=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    method=st.sampled_from(["mala", "ula", "descent", "pcn"]),
    step_size=st.floats(1e-4, 5.0),
    steps=st.integers(1, 12),
    warmup=st.integers(0, 6),
    thin=st.integers(1, 12),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31),
)
def test_sampling_never_breaks_its_invariants(
    shape, chains, dtype, method, step_size, steps, warmup, thin, scale, seed
):
    """Over shapes, dtypes, methods, step sizes and step counts: never a NaN draw, acceptance
    probabilities in [0, 1], draws and statistics of the recorded shapes, the state's dtype."""
    thin = min(thin, steps)

    def energy(x):
        return scale * quad(x - 1.0) + torch.cos(3 * x).flatten(1).sum(1)

    x0 = torch.randn((chains, *shape), generator=torch.Generator().manual_seed(seed)).to(dtype)
    run = li.sample(energy, x0, steps=steps, warmup=warmup, thin=thin, method=method,
                    step_size=step_size, seed=seed, progress=False,
                    max_divergences_in_a_row=10**6,
                    **({"prior_mean": 1.0} if method == "pcn" else {}))  # fmt: skip
    draws = steps // thin
    assert run.samples.shape == (chains, draws, *shape)
    assert run.samples.dtype == dtype
    assert not torch.isnan(run.samples).any()
    acc = run.stats["acceptance_prob"]
    assert acc.shape == (chains, warmup + steps)
    assert ((acc >= 0) & (acc <= 1)).all()
    for name in ("is_accepted", "step_size", "energy", "diverging"):
        assert run.stats[name].shape == (chains, warmup + steps), name
    assert torch.isfinite(run.stats["energy"]).all()  # rejected proposals keep a finite state
    tree = run.to_datatree()
    assert tree["posterior"].sizes == {"chain": chains, "draw": draws, **tree["posterior"].sizes}


@settings(max_examples=6, deadline=None)
@given(thin=st.integers(1, 20), steps=st.integers(1, 60), block=st.integers(1, 25))
def test_a_record_on_disk_holds_what_memory_holds(tmp_path_factory, thin, steps, block):
    thin = min(thin, steps)
    path = tmp_path_factory.mktemp("rec") / "r.zarr"
    recorder = ZarrRecorder(path, buffer_steps=block)
    mem = li.sample(quad, X0, steps=steps, warmup=3, thin=thin, progress=False, seed=1)
    disk = li.sample(quad, X0, steps=steps, warmup=3, thin=thin, progress=False, seed=1,
                     record_to=recorder)  # fmt: skip
    assert torch.equal(mem.samples, disk.samples)
    for name, values in mem.stats.items():
        assert torch.equal(values, disk.stats[name]), name


def test_float32_and_float64_agree_within_monte_carlo_error():
    """The same correlated Gaussian sampled with MALA in float32 and in float64: both match its
    mean and variance within Monte Carlo error (so float32 costs no bias beyond that)."""
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    def energy(x):
        xd = x.to(torch.float64)
        return (0.5 * torch.einsum("ni,ij,nj->n", xd, prec, xd)).to(x.dtype)

    for dtype in (torch.float32, torch.float64):
        x0 = torch.zeros(32, 2, dtype=dtype)
        run = li.sample(energy, x0, steps=1500, warmup=300, step_size=0.5,
                        schedule="dual_averaging", progress=False, seed=11)  # fmt: skip
        assert run.samples.dtype == dtype
        assert_moments(run.samples.double().numpy(), np.zeros(2), cov.diagonal().numpy())


def test_run_specs_refuse_options_that_would_be_ignored():
    from langevin_images.runs import RunSpec

    with pytest.raises(ValueError, match="do not give step_size too"):
        RunSpec(three_epsilons=(0.1, 0.1, 0.1), step_size=0.5)
    with pytest.raises(ValueError, match="temperature 5 would be ignored"):
        RunSpec(method="descent", temperature=5.0)
    with pytest.raises(ValueError, match=re.escape("[0, 2**63)")):
        RunSpec(seed=2**63)
    spec = RunSpec(three_epsilons=(0.1, 0.1, 0.1), method="descent")  # defaults are not clashes
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert "weights" not in RunSpec().to_dict()  # unset: absent, so older specs keep their hash
    assert RunSpec(weights="w.pth").to_dict()["weights"] == "w.pth"
