"""The command line: every subcommand end to end at tiny settings, and a table of bad inputs,
each of which exits 2 with one line on stderr and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_sample_lite0_by_class_name_at_small_size(tmp_path):
    out = tmp_path / "lite0"
    rc = main(["sample", "--model", "lite0", "--target", "espresso", "--size", "32", "--steps",
               "4", "--warmup", "2", "--chains", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    card = json.loads((out / "run.json").read_text())
    assert card["targets"] == [967] and card["priors"][0]["name"] == "stationary"


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
    return {"text": str(text), "unwritable": str(blocker / "sub"), "tmp": str(tmp_path)}


BAD = [
    (["dream", "--layer", "_blocks.4", "--image", "{tmp}/missing.png"], "no image"),
    (["dream", "--layer", "_blocks.4", "--image", "{text}"], "not an image file"),
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
    (["sample", "--out", "{unwritable}"], "cannot write there"),
    (["diagnose", "{tmp}/nowhere"], "no run at"),
    (["diagnose", "{text}"], "not a run DataTree"),
    (["nosuchcommand"], "invalid choice"),
    (["sample", "--out", ""], "--out is empty"),
    (["sample", "--resume", "{tmp}"], "no run record"),
    (["sample", "--device", "gpu0"], "not a device"),
    (["visualize", "--layer", "_blocks.1", "--device", "meta"], "only cpu and cuda"),
]
if not torch.cuda.is_available():
    BAD.append((["dream", "--layer", "_blocks.4", "--device", "cuda"], "no CUDA GPU"))


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(argv, message, files, capsys):
    argv = [a.format(**files) for a in argv]
    if argv[0] in ("sample", "visualize", "dream") and "--out" not in argv:
        argv += ["--out", files["tmp"] + "/out"]
    assert main([*argv, "--quiet"] if argv[0] != "nosuchcommand" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("langevin-images: error:") and message in err, err
    assert "Traceback" not in err


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
    resume = _cli("sample", "--resume", str(killed), "--quiet")
    assert resume.wait(timeout=300) == 0, resume.communicate()
    a = xr.open_datatree(full / "record.zarr", engine="zarr", consolidated=False)
    b = xr.open_datatree(killed / "record.zarr", engine="zarr", consolidated=False)
    for group in ("steps", "draws"):
        for name, var in a[group].data_vars.items():
            assert (b[group][name].values == var.values).all(), name
    ta, tb = xr.open_datatree(full / "run.nc"), xr.open_datatree(killed / "run.nc")
    for group in ("posterior", "sample_stats"):
        for name, var in ta[group].data_vars.items():
            assert (tb[group][name].values == var.values).all(), (group, name)
