"""Checkpoints and resume: a run killed with SIGKILL anywhere and resumed gives, bit for bit,
the draws and statistics of the uninterrupted run; the record is readable at every kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import langevin_images as li
from langevin_images.recording import ZarrRecorder

CHILD = Path(__file__).with_name("_resume_child.py")


def _child(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(CHILD), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def _raw(path) -> xr.DataTree:
    return xr.open_datatree(path, engine="zarr", consolidated=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "full.zarr"
    _child(path, 0)
    return _raw(path)


# evaluation 1 is the start, step t is evaluation t + 2; blocks of 8 steps: a checkpoint after
# steps 7, 15, 23, 31, 39; warmup is steps 0..15
KILLS = {"during warmup": (13, 8), "right after a block": (18, 16), "mid-block": (30, 24)}


@pytest.mark.parametrize("where", list(KILLS))
def test_killed_and_resumed_is_bit_identical(tmp_path, reference, where):
    kill_at, checkpoint = KILLS[where]
    path = tmp_path / "run.zarr"
    proc = _child(path, kill_at, check=False)
    assert proc.returncode == -signal.SIGKILL
    # readable as it was left, with xarray alone and as the ArviZ tree, up to its last block
    raw = _raw(path)
    assert raw.attrs["completed_steps"] == raw.attrs["checkpoint_step"] == checkpoint
    assert not raw.attrs["finished"]
    tree = li.open_record(path)
    assert tree["posterior"].sizes["draw"] == max(0, checkpoint - 16) // 2
    _child(path, "resume")
    resumed = _raw(path)
    assert resumed.attrs["finished"] and resumed.attrs["completed_steps"] == 56
    for group in ("steps", "draws"):
        for name, var in reference[group].data_vars.items():
            np.testing.assert_array_equal(resumed[group][name].values, var.values, err_msg=name)
    assert resumed.attrs["grad_evals"] == reference.attrs["grad_evals"] == 57


def test_a_kill_before_the_first_block_leaves_a_readable_empty_record(tmp_path):
    path = tmp_path / "run.zarr"
    assert _child(path, 5, check=False).returncode == -signal.SIGKILL
    assert li.open_record(path)["posterior"].sizes["draw"] == 0
    with pytest.raises(ValueError, match="no checkpoint was written yet"):
        li.resume(path, lambda x: x.sum(1))


def _quad(x):
    return 0.5 * x.square().flatten(1).sum(1)


def test_resume_refuses_another_energy_spec_or_option(tmp_path):
    path = tmp_path / "r.zarr"
    spec = {"job": "test", "seed": 1}
    li.sample(_quad, torch.zeros(2, 3), steps=10, record_to=path, spec=spec, progress=False)
    with pytest.raises(ValueError, match="recorded for the energy"):
        li.resume(path, lambda x: x.square().sum(1), progress=False)
    with pytest.raises(ValueError, match=r"spec hash .* differs"):
        li.resume(path, _quad, spec={**spec, "seed": 2}, progress=False)
    with pytest.raises(ValueError, match="recorded with preconditioner"):
        li.resume(path, _quad, preconditioner=li.samplers.Diagonal(torch.ones(3)))
    # the same spec resumes; a finished run has nothing left to do
    run = li.resume(path, _quad, spec=spec, progress=False)
    assert run.recorder.completed == 10


def test_ctrl_c_during_warmup_leaves_a_checkpoint_and_resumes_exactly(tmp_path):
    """SIGINT is taken between two steps: the record and the checkpoint stop at that step,
    and the resumed run is the uninterrupted one."""
    import os

    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return _quad(x)

    kw = dict(steps=12, warmup=10, schedule="dual_averaging", seed=2, progress=False)
    full = li.sample(_quad, torch.ones(3, 4), record_to=tmp_path / "full.zarr", **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        part = li.sample(energy, torch.ones(3, 4), record_to=tmp_path / "part.zarr", **kw)
    assert part.interrupted and part.config["interrupted_at_step"] == 6
    assert any("resume with langevin_images.resume" in str(w.message) for w in caught)
    raw = _raw(tmp_path / "part.zarr")
    assert raw.attrs["interrupted"] and raw.attrs["checkpoint_step"] == 6
    assert li.open_record(tmp_path / "part.zarr")["posterior"].sizes["draw"] == 0
    resumed = li.resume(tmp_path / "part.zarr", energy, progress=False)
    for k, v in full.stats.items():
        assert torch.equal(v, resumed.stats[k]), k
    assert torch.equal(full.samples, resumed.samples)


def test_pcn_resumes_exactly(tmp_path):
    kw = dict(method="pcn", prior_mean=0.0, steps=30, warmup=0, step_size=0.5, seed=4,
              progress=False)  # fmt: skip
    full = li.sample(_quad, torch.zeros(2, 5), record_to=ZarrRecorder(tmp_path / "a.zarr",
                     buffer_steps=4), **kw)  # fmt: skip
    rec = ZarrRecorder.open(tmp_path / "a.zarr")
    assert rec.checkpoint_step == 30
    del kw["steps"], kw["warmup"], kw["step_size"], kw["seed"], kw["method"]
    del kw["progress"]
    # nothing left to do on a finished record, and the draws are the same
    again = li.resume(tmp_path / "a.zarr", _quad, progress=False, **kw)
    assert torch.equal(again.samples, full.samples)


def test_resume_refuses_a_missing_transform_or_kernel_option(tmp_path):
    from langevin_images.energies import BlurEvery

    path = tmp_path / "t.zarr"
    x0 = torch.rand(2, 1, 6, 6)
    li.sample(_quad, x0, steps=8, method="ula", transform=BlurEvery(2), record_to=path,
              progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="recorded with transform"):
        li.resume(path, _quad, progress=False)
    li.sample(_quad, torch.zeros(2, 3), steps=8, method="pcn", prior_mean=0.0,
              record_to=tmp_path / "p.zarr", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="recorded with kernel_options"):
        li.resume(tmp_path / "p.zarr", _quad, prior_mean=1.0, progress=False)


def test_a_record_with_no_step_yet_reads_as_an_empty_run(tmp_path):
    rec = ZarrRecorder(tmp_path / "e.zarr")
    rec.start(chains=3, warmup=2, steps=4, thin=1, position_shape=(1, 2, 2), dtype=torch.float32)
    tree = li.open_record(tmp_path / "e.zarr")
    assert tree["posterior"].sizes == {"chain": 3, "draw": 0, "channel": 1, "row": 2, "col": 2}


def test_a_stochastic_energy_pickles_with_its_random_stream():
    """A transform's generator travels as its state (a generator does not pickle), so an
    energy sent to a worker draws what the original would have drawn next."""
    import pickle

    from langevin_images.energies import GaussianPrior, RandomAffine, RandomRoll, Transformed

    for transform in (RandomAffine(2, (0.9, 1.1), 10.0, seed=1), RandomRoll(3, seed=2)):
        energy = Transformed(GaussianPrior(0.5), transform)
        x = torch.rand(4, 3, 8, 8)
        energy(x)  # advance the stream
        copy = pickle.loads(pickle.dumps(energy))
        assert torch.equal(energy(x), copy(x))
        assert set(energy.random_state()) == set(copy.random_state())


def test_run_spec_round_trips_through_json_and_toml(tmp_path):
    from langevin_images.runs import RunSpec

    spec = RunSpec(model="mnist", targets=(1, "3"), priors=("tv=0.5",), seed=4, threads=1)
    again = RunSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec and again.hash == spec.hash
    (tmp_path / "s.toml").write_text('model = "mnist"\ntargets = [1, "3"]\npriors = ["tv=0.5"]\n'
                                     "seed = 4\nthreads = 1\n")  # fmt: skip
    assert RunSpec.load(tmp_path / "s.toml") == spec
    assert RunSpec(seed=5).hash != RunSpec(seed=4).hash
    with pytest.raises(ValueError, match="unknown run spec key"):
        RunSpec.from_dict({"sed": 4})


def test_the_record_never_writes_a_file_in_place(tmp_path, monkeypatch):
    """What the crash safety rests on: every file of a block (chunks, checkpoint, attrs) is
    written under a temporary name and renamed into place, never opened for writing where a
    reader looks for it. A zarr that stopped doing so would fail here."""
    import pathlib

    rec = ZarrRecorder(tmp_path / "w.zarr", buffer_steps=2)
    rec.start(chains=2, warmup=0, steps=4, thin=1, position_shape=(3,), dtype=torch.float32)
    opened, real_open = [], pathlib.Path.open

    def spy(self, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            opened.append(self.name)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", spy)
    stats = {"energy": torch.zeros(2, dtype=torch.float64), "diverging": torch.zeros(2).bool()}
    for t in range(2):
        rec.save_step(t, torch.zeros(2, 3), stats)
    rec.flush({"step": 2, "x": torch.ones(3)})
    assert len(opened) >= 4 and all(name.endswith(".partial") for name in opened), opened


def test_default_specs_keep_the_hash_their_records_carry():
    """A record is resumed only by a spec of the same hash: new fields and model-dependent
    defaults must leave the hashes of existing specs alone (these were written by the release
    that fixed the defaults as plain values)."""
    from langevin_images.runs import RunSpec

    assert RunSpec().hash == "30f1e75e324a0081"
    assert RunSpec(three_epsilons=(1e-3, 1e-2, 2e-2)).hash == "c2675dcac801644d"
    assert RunSpec(method="descent", temperature=0).hash == "52bebfb2578d7513"
    # an RGB model's default is the picture recipe, filled in
    lite0 = RunSpec(model="lite0", targets=("espresso",))
    assert (lite0.method, lite0.step_size) == ("descent", 0.05) and lite0.picture_recipe
    assert RunSpec.from_dict(lite0.to_dict()) == lite0
