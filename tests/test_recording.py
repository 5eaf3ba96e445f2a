"""Recorders: memory and disk behind one interface; the disk record round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import stationary_image_gaussian

import langevin_images as li
from langevin_images.recording import MemoryRecorder, ZarrRecorder, draw_index


def test_draw_index():
    kept = [t for t in range(10) if draw_index(t, warmup=4, thin=2) is not None]
    assert kept == [5, 7, 9]
    assert [draw_index(t, 4, 2) for t in kept] == [0, 1, 2]


def test_keeps_is_draw_index():
    rec = MemoryRecorder()
    rec.start(chains=1, warmup=4, steps=6, thin=2, position_shape=(1,), dtype=torch.float32)
    assert [t for t in range(10) if rec.keeps(t)] == [5, 7, 9]


def _run(record_to, **kw):
    target = stationary_image_gaussian(6, 6)
    x0 = target.draw(5, torch.Generator().manual_seed(0), torch.float32)
    return li.sample(
        target,
        x0,
        steps=53,
        warmup=11,
        thin=3,
        step_size=0.05,
        schedule="dual_averaging",
        seed=4,
        record_to=record_to,
        progress=False,
        **kw,
    )


def test_disk_recorder_round_trips_exactly(tmp_path):
    mem = _run(None)
    disk = _run(ZarrRecorder(tmp_path / "chain.zarr", buffer_steps=7))
    assert mem.samples.shape == (5, 53 // 3, 1, 6, 6)
    assert torch.equal(mem.samples, disk.samples)
    ms, ds = mem.stats, disk.stats
    assert ms.keys() == ds.keys()
    for k in ms:
        assert torch.equal(ms[k], ds[k]), k
    assert torch.equal(
        mem.recorder.get_chain(discard=2, thin=3), disk.recorder.get_chain(discard=2, thin=3)
    )
    # a path is the same thing as a ZarrRecorder
    by_path = _run(tmp_path / "by_path.zarr")
    assert torch.equal(by_path.samples, mem.samples)
    # the record is plain zarr that xarray reads as it is
    tree = xr.open_datatree(tmp_path / "chain.zarr", engine="zarr", consolidated=False)
    assert tree.attrs["completed_steps"] == 64
    assert tree.attrs["finished"]
    np.testing.assert_array_equal(tree["draws"]["image"].values, mem.samples.numpy())
    np.testing.assert_array_equal(tree["steps"]["energy"].values, ms["energy"].numpy())


def test_disk_recorder_buffers_do_not_grow_with_steps(tmp_path):
    shapes = []
    for steps in (100, 1000):
        rec = ZarrRecorder(tmp_path / f"r{steps}.zarr", buffer_steps=50)
        li.sample(
            lambda x: 0.5 * x.square().flatten(1).sum(1),
            torch.zeros((4, 1, 5, 5)),
            steps=steps,
            thin=10,
            record_to=rec,
            progress=False,
        )
        shapes.append(
            (tuple(rec._buf_pos.shape), {k: tuple(v.shape) for k, v in rec._buf_stats.items()})
        )
    assert shapes[0] == shapes[1]


def test_partial_file_survives_a_failure(tmp_path):
    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        e = 0.5 * x.square().sum(1)
        if calls["n"] > 40:
            e = e.clone()
            e[1] = float("nan")
        return e

    path = tmp_path / "partial.zarr"
    try:
        li.sample(
            energy,
            torch.zeros((3, 2)),
            steps=500,
            record_to=ZarrRecorder(path, buffer_steps=16),
            progress=False,
            max_divergences_in_a_row=10,
        )
    except li.DivergenceError as err:
        partial = err.run
    else:
        raise AssertionError("expected a DivergenceError")
    done = int(xr.open_datatree(path, engine="zarr", consolidated=False).attrs["completed_steps"])
    assert done == partial.recorder.completed >= 40
    assert partial.stats["diverging"][1, 40:done].all()
    assert not partial.stats["diverging"][0].any()


def test_a_record_killed_while_being_created_is_refused_in_one_line(tmp_path):
    """A kill between the record's attributes and its arrays leaves a record without them: it
    is refused with a ValueError (a study then starts the run again), not a KeyError."""
    import shutil

    path = tmp_path / "r.zarr"
    li.sample(lambda x: 0.5 * x.square().sum(1), torch.zeros((2, 3)), steps=4,
              record_to=path, progress=False)  # fmt: skip
    ZarrRecorder.open(path)  # complete: readable
    shutil.rmtree(path / "steps" / "acceptance_prob")
    with pytest.raises(ValueError, match=r"an incomplete record .*start the run again"):
        ZarrRecorder.open(path)


def test_memory_recorder_interface():
    rec = MemoryRecorder()
    run = li.sample(
        lambda x: x.square().sum(1),
        torch.zeros((2, 3)),
        steps=10,
        warmup=5,
        record_to=rec,
        progress=False,
    )
    assert run.recorder is rec
    assert rec.get_chain().shape == (2, 10, 3)
    assert rec.get_chain(discard=4, thin=2).shape == (2, 3, 3)
    assert set(rec.get_stats()) == {
        "acceptance_prob",
        "is_accepted",
        "step_size",
        "energy",
        "grad_norm",
        "diverging",
    }
    assert rec.get_stats()["energy"].shape == (2, 15)


def test_interrupted_run_returns_what_it_recorded(tmp_path):
    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        if calls["n"] == 31:
            raise KeyboardInterrupt
        return 0.5 * x.square().sum(1)

    with pytest.warns(RuntimeWarning, match=r"interrupted \(SIGINT\) after 29 of 100 steps"):
        run = li.sample(
            energy, torch.zeros((2, 3)), steps=100, record_to=tmp_path / "i.zarr", progress=False
        )
    assert run.interrupted
    assert run.samples.shape == (2, 29, 3)
    assert run.config["interrupted_at_step"] == 29
    assert run.to_datatree()["posterior"]["x"].shape == (2, 29, 3)


def test_an_energy_that_raises_says_where_the_steps_are(tmp_path):
    def energy(x):
        if x.abs().max() > 0:
            raise RuntimeError("boom")
        return x.sum(1) * 0

    with pytest.raises(RuntimeError, match="boom") as err:
        li.sample(
            energy, torch.zeros((2, 3)), steps=10, record_to=tmp_path / "r.zarr", progress=False
        )
    assert any("r.zarr" in note for note in err.value.__notes__)
