"""The command line: every subcommand end to end at tiny settings, and a table of bad inputs,
each of which exits 2 with one line on stderr and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from langevin_images.cli import main

TINY = ["--steps", "12", "--warmup", "8", "--chains", "2", "--quiet"]


def test_sample_and_diagnose_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["sample", "--model", "mnist", "--target", "3", "--target", "seven", "--out", str(out)]
    assert main([*argv, *TINY]) == 2  # "seven" is not a class name of the MNIST model
    assert "unknown class name 'seven'" in capsys.readouterr().err
    rc = main(["sample", "--model", "mnist", "--target", "3", "--target", "7",
               "--prior", "fitted=1", "--out", str(out), *TINY])  # fmt: skip
    assert rc == 0
    for name in ("run.nc", "samples.png", "final.png", "run.json", "summary.csv", "trace.png",
                 "rank.png", "autocorr.png", "ess_evolution.png", "sampler_stats.png",
                 "pixel_rhat.png", "chain.gif"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    card = json.loads((out / "run.json").read_text())
    assert card["targets"] == [3, 7] and card["model"]["name"] == "mnist"
    assert len(card["model"]["weights_sha256"]) == 64
    assert card["parameters"]["temperature"] == 0.1 and card["parameters"]["lambda_lik"] == 100
    assert "verdict" in card["diagnostics"] and "judge_top1" in card["metrics"]
    assert "torch" in card["versions"]
    dt = xr.open_datatree(out / "run.nc")
    assert list(dt["posterior"]["chain_group"].values) == [3, 3, 7, 7]

    capsys.readouterr()
    assert main(["diagnose", str(out), "--out", str(tmp_path / "diag"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "converged" in printed
    assert (tmp_path / "diag" / "diagnosis.json").exists()
    assert main(["diagnose", str(out / "run.nc"), "--quiet"]) == 0


def test_three_epsilons_are_echoed_as_eps_t_lambda(tmp_path):
    out = tmp_path / "eps"
    rc = main(["sample", "--model", "mnist", "--target", "1", "--prior", "gaussian",
               "--eps1", "0.001", "--eps2", "0.01", "--eps3", "0.02", "--method", "ula",
               "--out", str(out), *TINY])  # fmt: skip
    assert rc == 0
    p = json.loads((out / "run.json").read_text())["parameters"]
    assert p["three_epsilons"] == [0.001, 0.01, 0.02]
    assert p["epsilon"] == pytest.approx(0.01)
    assert p["temperature"] == pytest.approx(0.02**2 / (2 * 0.01))
    assert p["lambda_prior"] == pytest.approx(0.1) and p["lambda_lik"] == 1.0
    steps = json.loads((out / "run.json").read_text())["config"]["schedule"]
    assert steps.startswith("Constant")  # the user's eps is kept, not adapted


def test_demo_at_tiny_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "judge (mnist-judge) top-1" in printed and "Vendi" in printed
    assert "converged" in printed
    assert (out / "final.png").exists() and (out / "run.json").exists()


def test_the_demo_says_what_is_left_to_converge_in_words():
    from types import SimpleNamespace

    import pandas as pd

    from langevin_images.cli.sample import _not_converged_in_words

    args = SimpleNamespace(chains=8, steps=1000, thin=10)

    def words(ess, rhat, args=args, **verdict):
        table = pd.DataFrame({"ess_bulk": [ess, 900.0], "r_hat": [rhat, 1.001]})
        return _not_converged_in_words(SimpleNamespace(table=table, **verdict), args)

    short = words(36.0, 1.16)  # a draw per 222 steps of a chain: 400 over 8 chains in 11 100
    assert "R-hat up to 1.160" in short and "worth of 36 independent draws" in short
    assert "demo --steps 11200" in short
    long = words(583.0, 1.02)  # every ESS past 400: only R-hat is left
    assert "every ESS is past 400" in long and "demo --steps 2000" in long
    assert "would bring every ESS" not in long
    # an R-hat that independent draws give by chance with the run's 100 draws per chain
    chance = words(583.0, 1.0102, SimpleNamespace(chains=8, steps=45000, thin=450),
                   rhat_chance=(1.015, 1.019), draws_needed=200)  # fmt: skip
    assert "cannot be judged" in chance and "100 kept draws per chain" in chance
    assert "about 200" in chance and "demo --steps 45000" in chance


def test_sample_lite0_by_class_name_at_small_size(tmp_path):
    out = tmp_path / "lite0"
    rc = main(["sample", "--model", "lite0", "--target", "espresso", "--size", "32", "--steps",
               "4", "--warmup", "2", "--chains", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    card = json.loads((out / "run.json").read_text())
    assert card["targets"] == [967] and card["priors"][0]["name"] == "none"
    # an RGB model's default is the picture recipe
    config = card["config"]
    assert config["method"] == "descent" and config["normalize_step"] is True
    assert config["preconditioner"].startswith("ColorFourier") and config["bounds"] == [0.0, 1.0]
    assert "RandomAffine(jitter=2" in config["energy"]
    # sampling it at T > 0 is asked for by name, and refuses a random energy under MALA
    rc = main(["sample", "--model", "lite0", "--target", "espresso", "--size", "32", "--steps",
               "4", "--warmup", "2", "--chains", "2", "--method", "mala", "--out",
               str(tmp_path / "mala"), "--quiet"])  # fmt: skip
    assert rc == 0
    config = json.loads((tmp_path / "mala" / "run.json").read_text())["config"]
    assert config["method"] == "mala" and "RandomAffine" not in config["energy"]


def test_visualize_and_dream_default_to_vgg19(tmp_path):
    """VGG19 makes crisper, more colourful pictures than lite0 (benchmarks/bench_pictures.py):
    it is the default network of both commands."""
    for argv in (["visualize", "--layer", "relu1_2", "--channels", "1", "--size", "32",
                  "--steps", "2"],
                 ["dream", "--layer", "relu1_2", "--size", "32", "--octaves", "1",
                  "--steps", "1"]):  # fmt: skip
        out = tmp_path / argv[0]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "run.json").read_text())["model"]["name"] == "vgg19"


def test_visualize_and_dream_at_small_size(tmp_path):
    vis = tmp_path / "vis"
    rc = main(["visualize", "--model", "lite0", "--layer", "_blocks.1", "--layer", "_blocks.9",
               "--channels", "2", "--size", "32", "--steps", "3", "--temperature", "0.05",
               "--chains", "2", "--out", str(vis), "--quiet"])  # fmt: skip
    assert rc == 0
    for name in ("layers.png", "variety__blocks_9.png", "run.nc", "summary.csv", "energy.png"):
        assert (vis / name).exists(), name
    tree = xr.open_datatree(vis / "run.nc")
    assert {"_blocks_1", "_blocks_9", "_blocks_9_variety"} <= set(tree.children)
    assert main(["diagnose", str(vis), "--quiet"]) == 0
    assert (vis / "_blocks_9" / "energy.png").exists()  # descent: the energy, not R-hat
    assert (vis / "_blocks_9_variety" / "trace.png").exists()
    dream = tmp_path / "dream"
    rc = main(["dream", "--model", "lite0", "--layer", "_blocks.4", "--size", "40",
               "--octaves", "2", "--steps", "2", "--out", str(dream), "--quiet"])  # fmt: skip
    assert rc == 0
    for name in ("dream.png", "input.png", "run.nc", "summary.csv", "energy.png"):
        assert (dream / name).exists(), name
    assert main(["diagnose", str(dream), "--quiet"]) == 0  # one chain per octave: no rank plot
    assert json.loads((dream / "run.json").read_text())["octaves"][-1][0] == 40


@pytest.fixture
def files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    from PIL import Image

    Image.fromarray(np.zeros((2, 800, 3), np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    return {"text": str(text), "unwritable": str(blocker / "sub"), "tmp": str(tmp_path),
            "strip": str(tmp_path / "strip.png"), "big": str(tmp_path / "big.png")}  # fmt: skip


EPS = ["--eps1", ".1", "--eps2", ".1", "--eps3", ".1"]
BAD = [
    (
        ["dream", "--model", "lite0", "--layer", "_blocks.4", "--image", "{tmp}/missing.png"],
        "no such file",
    ),
    (
        ["dream", "--model", "lite0", "--layer", "_blocks.4", "--image", "{text}"],
        "not an image file",
    ),
    (["sample", "--model", "mnist", "--target", "giraffe"], "unknown class name"),
    (["sample", "--model", "mnist", "--target", "12"], "out of range"),
    (["sample", "--model", "nosuchnet", "--target", "1"], "unknown model"),
    (["visualize", "--layer", "no.such.layer"], "no.such.layer"),
    (["sample", "--prior", "wavelet=1"], "unknown prior"),
    (["sample", "--prior", "tv=abc"], "expected a number"),
    (["sample", "--steps", "0"], "must be > 0"),
    (["sample", "--steps", "-5"], "must be > 0"),
    (["sample", "--warmup", "-1"], "must be >= 0"),
    (["sample", "--step-size", "abc"], "expected a number"),
    (["sample", "--temperature", "warm"], "expected a number"),
    (["sample", "--chains", "2.5"], "expected a whole number"),
    (["sample", "--method", "hmc"], "invalid choice"),
    (["sample", "--temperature", "0"], "must be > 0"),
    (["sample", "--eps1", "0.1"], "all three"),
    (["sample", "--model", "lite0", "--target", "1", "--prior", "fitted"], "MNIST models only"),
    (
        ["sample", "--model", "lite0", "--target", "1", "--temperature", "0.05"],
        "its default is the picture recipe, descent",
    ),
    (
        ["sample", "--model", "lite0", "--target", "1", "--method", "mala", "--jitter", "4"],
        "MALA's accept step needs a fixed one",
    ),
    (["sample", "--precondition", "color-fourier"], "is for RGB models"),
    (["sample", "--out", "{unwritable}"], "cannot write there"),
    (["diagnose", "{tmp}/nowhere"], "no run at"),
    (["diagnose", "{text}"], "not a run DataTree"),
    (["nosuchcommand"], "invalid choice"),
    (["sample", "--out", ""], "--out is empty"),
    (["sample", "--resume", "{tmp}"], "no run record"),
    (["sample", "--device", "gpu0"], "not a device"),
    (
        ["visualize", "--model", "lite0", "--layer", "_blocks.1", "--device", "meta"],
        "only cpu and cuda",
    ),
    # sizes the model's kernels cannot take, found before anything is made
    (["sample", "--model", "lite0", "--target", "1", "--size", "3"], "--size 3 is too small"),
    (
        ["visualize", "--model", "lite0", "--layer", "_blocks.14", "--size", "3"],
        "need at least 32 px",
    ),
    (
        ["dream", "--model", "lite0", "--layer", "_blocks.14", "--size", "40"],
        "smallest of 4 octaves",
    ),
    # memory and disk needs checked up front
    (["sample", "--model", "lite0", "--target", "1", "--size", "100000"], "of memory"),
    (["sample", "--steps", "1000000000"], "of memory"),
    (["sample", "--seed", "1180591620717411303424"], "--seed: must be < 9223372036854775808"),
    (["sample", "--steps", "2", "--warmup", "0", "--thin", "1000"], "keeps no draw"),
    (
        ["dream", "--model", "lite0", "--layer", "_blocks.4", "--image", "{strip}"],
        "a strip, not a photo",
    ),
    (
        ["dream", "--model", "lite0", "--layer", "_blocks.4", "--image", "{big}"],
        "decompression bomb",
    ),
    # layers and channels
    (["visualize", "--model", "lite0", "--layer", "_blocks"], "give one of its parts (_blocks.0"),
    (
        ["visualize", "--model", "lite0", "--layer", "_blocks.0", "--channels", "100000"],
        "has 16 channels",
    ),
    (
        ["visualize", "--model", "lite0", "--layer", "_blocks.0", "--channel", "16"],
        "channels 0..15",
    ),
    (["visualize", "--model", "mnist", "--layer", "conv1"], "models mnist --layers"),
    (["sample", "--model", "mnist", "--weights", "{tmp}/no.pth"], "missing"),
    (["models", "nosuchnet"], "unknown model"),
    (["models", "--classes"], "need a model"),
    (["models", "vgg16", "--classes"], "not a classifier"),
    # options that would be overridden or dropped
    (["sample", *EPS, "--step-size", ".5"], "drop --step-size"),
    (
        ["sample", *EPS, "--temperature", "1", "--likelihood-weight", "2"],
        "drop --temperature, --likelihood-weight",
    ),
    (["sample", "--method", "descent", "--temperature", "5"], "drop --temperature"),
    (["sample", "--method", "ula", "--schedule", "dual_averaging"], "which --method ula"),
]
if not torch.cuda.is_available():
    BAD.append(
        (["dream", "--model", "lite0", "--layer", "_blocks.4", "--device", "cuda"], "no CUDA GPU")
    )


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(argv, message, files, capsys, monkeypatch):
    """Exit 2, one line naming the option and what is allowed, no traceback, and no --out
    folder left behind (not even an empty one)."""
    from PIL import Image

    if "{big}" in argv:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 px is a "bomb" here
    argv = [a.format(**files) for a in argv]
    out = Path(files["tmp"]) / "out"
    if argv[0] in ("sample", "visualize", "dream") and "--out" not in argv:
        argv += ["--out", str(out)]
    quiet = argv[0] not in ("nosuchcommand", "models")
    assert main([*argv, "--quiet"] if quiet else argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("langevin-images: error:") and message in err, err
    assert "Traceback" not in err and "error: langevin-images" not in err  # no doubled prefix
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_the_installed_command_reports_bad_input_without_a_traceback(tmp_path):
    exe = [sys.executable, "-m", "langevin_images.cli"]
    proc = subprocess.run([*exe, "sample", "--steps", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_internal_errors_exit_1_with_the_traceback(monkeypatch, capsys, tmp_path):
    import langevin_images.cli as cli

    def boom(args):
        raise RuntimeError("something broke inside")

    parser = cli.build_parser

    def patched():
        p = parser()
        p._subparsers._group_actions[0].choices["diagnose"].set_defaults(func=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert cli.main(["diagnose", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "something broke inside" in err


def _tiny_sample(out, *extra):
    return ["sample", "--model", "mnist", "--target", "1", "--out", str(out), "--threads", "1",
            *TINY, *extra]  # fmt: skip


def test_run_folders_are_never_mixed(tmp_path, capsys):
    """An --out that holds a run is refused (exit 2, one line) unless --force, which clears it
    first: no file of the older run survives beside the new one."""
    out = tmp_path / "run"
    assert main(_tiny_sample(out)) == 0
    (out / "stale_plot.png").write_bytes(b"old")
    capsys.readouterr()
    assert main(_tiny_sample(out, "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "holds a run already" in err and len(err.strip().splitlines()) == 1
    assert main(_tiny_sample(out, "--seed", "1", "--force")) == 0
    assert not (out / "stale_plot.png").exists()
    assert json.loads((out / "run.json").read_text())["spec"]["seed"] == 1
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    assert main(_tiny_sample(other, "--force")) == 2  # not a run folder: never cleared
    assert (other / "thesis.tex").exists()


def _cli(*argv, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "langevin_images.cli", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


def _wait_for_checkpoint(record, proc, at_least: int, timeout: float = 240.0) -> int:
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        meta = record / "zarr.json"
        if meta.exists():
            step = json.loads(meta.read_text())["attributes"].get("checkpoint_step", -1)
            if step >= at_least:
                return step
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


LONG = ["--model", "mnist", "--target", "1", "--chains", "2", "--steps", "240",
        "--warmup", "60", "--checkpoint-every", "20", "--threads", "1", "--quiet",
        "--device", "cpu"]  # fmt: skip


def test_ctrl_c_exits_130_with_a_card_and_resume_finishes(tmp_path):
    import signal

    out = tmp_path / "run"
    proc = _cli("sample", *LONG, "--out", str(out))
    _wait_for_checkpoint(out / "record.zarr", proc, 1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"--resume {out}" in stdout and "Traceback" not in stderr
    card = json.loads((out / "run.json").read_text())
    assert card["interrupted"] is True and card["status"] == "interrupted"
    assert 0 < card["interrupted_at_step"] < 300
    assert main(["sample", "--resume", str(out), "--quiet"]) == 0
    card = json.loads((out / "run.json").read_text())
    assert card["status"] == "done" and card["resumed"] and not card["interrupted"]
    assert xr.open_datatree(out / "run.nc")["posterior"].sizes["draw"] == 40


def test_killed_command_resumes_bit_for_bit(tmp_path):
    """SIGKILL at whatever step the run has reached once its first checkpoint is written; the
    resumed command's record equals, bit for bit, the uninterrupted command's."""
    import signal

    full = tmp_path / "full"
    ref = _cli("sample", *LONG, "--out", str(full))
    assert ref.wait(timeout=300) == 0, ref.communicate()
    killed = tmp_path / "killed"
    proc = _cli("sample", *LONG, "--out", str(killed))
    _wait_for_checkpoint(killed / "record.zarr", proc, 100)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (killed / "run.nc").exists()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    stray = killed / ".run.nc.4242.tmp"  # as a kill during atomic_write leaves it
    stray.write_bytes(b"half a file")
    resume = _cli("sample", "--resume", str(killed), "--quiet")
    assert resume.wait(timeout=300) == 0, resume.communicate()
    assert not stray.exists()
    a = xr.open_datatree(full / "record.zarr", engine="zarr", consolidated=False)
    b = xr.open_datatree(killed / "record.zarr", engine="zarr", consolidated=False)
    for group in ("steps", "draws"):
        for name, var in a[group].data_vars.items():
            assert (b[group][name].values == var.values).all(), name
    ta, tb = xr.open_datatree(full / "run.nc"), xr.open_datatree(killed / "run.nc")
    for group in ("posterior", "sample_stats"):
        for name, var in ta[group].data_vars.items():
            assert (tb[group][name].values == var.values).all(), (group, name)


def test_dream_of_a_photo_keeps_its_size_and_its_16_bit_values(tmp_path):
    """A 16-bit PNG is read by its bit depth (PIL's convert('RGB') would clip it to white), and
    a user's photo is dreamt at its own size by default, with no frame around it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = (rng.random((40, 60)) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = tmp_path / "dream"
    rc = main(["dream", "--model", "lite0", "--layer", "_blocks.1", "--image",
               str(tmp_path / "deep.png"), "--octaves", "1", "--steps", "1", "--out", str(out),
               "--quiet"])  # fmt: skip
    assert rc == 0
    seen = np.asarray(Image.open(out / "input.png"), dtype=np.float64)
    assert seen.shape == (40, 60, 3)
    assert abs(seen.mean() - grey.mean() / 257) < 1.0  # not white (255)
    assert Image.open(out / "dream.png").size == (60, 40)
    rc = main(["dream", "--model", "lite0", "--layer", "_blocks.1", "--image",
               str(tmp_path / "deep.png"), "--size", "32", "--octaves", "1", "--steps", "1",
               "--out", str(out), "--force", "--quiet"])  # fmt: skip
    assert rc == 0 and Image.open(out / "dream.png").size == (48, 32)


def test_diagnose_refuses_a_record_without_draws(tmp_path, capsys):
    import langevin_images as li

    def quad(x):
        return 0.5 * (x**2).flatten(1).sum(1)

    li.sample(quad, torch.zeros(2, 3), steps=4, warmup=10, progress=False,
              record_to=tmp_path / "r.zarr")  # fmt: skip
    rec = li.open_record(tmp_path / "r.zarr")
    assert rec["posterior"].sizes["draw"] == 4
    # a record cut at step 6: the warmup was not over, so no draw was kept
    from langevin_images.recording import ZarrRecorder

    r2 = ZarrRecorder(tmp_path / "cut.zarr", buffer_steps=2)
    li.sample(quad, torch.zeros(2, 3), steps=4, warmup=10, progress=False, record_to=r2)
    import zarr

    root = zarr.open_group(tmp_path / "cut.zarr", mode="r+")
    root.attrs.update(completed_steps=6)
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "cut.zarr"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no draws yet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "summary.csv").exists()


def test_a_full_disk_is_one_line_and_the_record_reads_up_to_its_last_block(
    tmp_path, capsys, monkeypatch
):
    """ENOSPC at the third block: exit 1, one line that says how to continue, no traceback;
    the record reads up to the last block written, and --resume finishes the run once there is
    space again."""
    import errno

    from langevin_images.recording import ZarrRecorder

    flush = ZarrRecorder.flush
    calls = {"n": 0}

    def full(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "steps"))
        return flush(self, *a, **kw)

    monkeypatch.setattr(ZarrRecorder, "flush", full)
    out = tmp_path / "run"
    argv = _tiny_sample(out, "--checkpoint-every", "5")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "No space left on device" in err and f"--resume {out}" in err
    rec = xr.open_datatree(out / "record.zarr", engine="zarr", consolidated=False)
    assert rec.attrs["completed_steps"] == 10 and rec.attrs["checkpoint_step"] == 10
    monkeypatch.setattr(ZarrRecorder, "flush", flush)
    assert main(["sample", "--resume", str(out), "--quiet"]) == 0
    assert xr.open_datatree(out / "run.nc")["posterior"].sizes["draw"] == 12


def test_run_nc_is_refused_before_hdf5_meets_a_full_disk(tmp_path, capsys, monkeypatch):
    """HDF5 failing mid-file on a full disk can crash the interpreter at exit; run.nc is
    refused first when the disk has less space than the tree's size."""
    import shutil as sh
    from collections import namedtuple

    import langevin_images.runs as runs

    usage = namedtuple("usage", "total used free")
    real = sh.disk_usage

    def tight(path):
        return usage(1, 1, 100) if Path(path).name == "run" else real(path)

    monkeypatch.setattr(runs.shutil, "disk_usage", tight)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(_tiny_sample(out)) == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "run.nc" in err and len(err.splitlines()) == 1
    assert not (out / "run.nc").exists()


def test_version_help_and_the_result_line(tmp_path, capsys):
    import langevin_images as li

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"langevin-images {li.__version__}"
    for cmd in ([], ["sample"], ["demo"], ["diagnose"], ["visualize"], ["dream"], ["models"]):
        assert main([*cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "``" not in text and "usage:" in text, cmd
    # --quiet still says what came out and where; --weights loads the file given
    from langevin_images.models import weights_path

    out = tmp_path / "run"
    assert main(_tiny_sample(out, "--weights", str(weights_path("mnist")))) == 0
    printed = capsys.readouterr().out
    assert "sample: converged" in printed or "sample: NOT converged" in printed, printed
    assert f"sample: wrote {out}/" in printed
    card = json.loads((out / "run.json").read_text())
    assert card["spec"]["weights"] == str(weights_path("mnist"))


def test_models_lists_the_zoo_layers_and_classes(capsys):
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "mnist-judge" in listed and "8-bit quantized" in listed
    assert main(["models", "mnist", "--layers"]) == 0
    listed = capsys.readouterr().out
    assert "features.0" in listed and "32x28x28" in listed and "\nnet " not in listed
    assert main(["models", "lite0", "--find", "espresso"]) == 0
    assert "967 espresso" in capsys.readouterr().out
    assert main(["models", "vgg19", "--layers"]) == 0
    listed = capsys.readouterr().out
    assert "relu4_2" in listed and "512x28x28" in listed and "relu5_4" in listed


def test_descent_progress_shows_the_energy_not_an_acceptance_rate(capsys):
    import langevin_images as li

    def quad(x):
        return 0.5 * (x**2).flatten(1).sum(1)

    li.sample(quad, torch.ones(2, 3), steps=120, method="descent", step_size=0.1, progress=True)
    err = capsys.readouterr().err
    assert "energy=" in err and "acc=" not in err


def test_offline_torchvision_models_point_to_the_weights_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("LANGEVIN_IMAGES_WEIGHTS", str(tmp_path / "none"))
    out = tmp_path / "run"
    argv = ["sample", "--model", "torchvision:resnet18", "--target", "1", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--weights PATH" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
