"""Studies: the config's grid, the run folders, skipping, failures, a kill, and the same
numbers from the local pool, this process and a Dask LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langevin_images import study as S
from langevin_images.cli import main

TINY = """
[study]
model = "mnist"
targets = [1, 7]
chains = 2
steps = 12
warmup = 8
checkpoint_every = 4
seeds = [0, 1]

[grid]
prior = ["fitted=1", "gaussian=1"]
temperature = [0.1, 1.0]
"""


def _config(tmp_path: Path, text: str = TINY, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _same(a: Path, b: Path) -> None:
    """Every figure and final draw of two study.nc files equal, bit for bit (wall time
    aside)."""
    assert S.same_numbers(a, b) == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study on a 2-process local pool."""
    tmp = tmp_path_factory.mktemp("study")
    study = S.Study.load(_config(tmp))
    result = S.run_study(study, tmp / "pool", workers=2, progress=False)
    assert result.complete and not result.failed
    return study, tmp / "pool", result


def test_the_grid_is_the_product_of_its_lists_times_the_seeds(tmp_path):
    study = S.Study.load(_config(tmp_path))
    points = study.points()
    assert len(points) == 2 * 2 * 2
    assert study.dims == ["prior", "temperature"]
    p = points[0]
    assert p.name == "prior=fitted=1_temperature=0.1_seed=0"
    assert p.spec.priors == ("fitted=1",) and p.spec.temperature == 0.1
    assert p.spec.targets == (1, 7) and p.spec.threads == 1  # one thread: bit-reproducible
    assert len({q.spec.hash for q in points}) == len(points)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[study]\nmodle = 'mnist'\n", "unknown option 'modle'"),
        ("[study]\nseeds = []\n", "seeds must be"),
        ("[grid]\ntemperature = 0.1\n", "expected a non-empty list"),
        ("[study]\ntemperature = 1.0\n[grid]\ntemperature = [0.1]\n", "both in"),
        ("[grid]\nprior = ['nosuch=1']\n", "unknown prior"),
        ("[study]\neps1 = 1\n", "all three of eps1"),
        ("[grid]\nmethod = ['descent']\ntemperature = [0.3]\n", "runs at temperature 0"),
        ("[sutdy]\n", "unknown table"),
        ("[[configs]]\nmethod = 'ula'\n", "has no name"),
    ],
)
def test_a_bad_config_is_refused_in_one_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        S.Study.load(_config(tmp_path, text, "bad"))


def test_named_configs_are_one_more_dimension(tmp_path):
    text = TINY.split("[grid]")[0] + (
        "[[configs]]\nname = 'jem'\nmethod = 'ula'\neps1 = 0\neps2 = 1\neps3 = 0.01\n"
        "[[configs]]\nname = 'dream'\nmethod = 'descent'\n"
    )
    study = S.Study.load(_config(tmp_path, text, "recipes"))
    assert study.dims == ["config"]
    names = [p.name for p in study.points()]
    assert names == ["config=jem_seed=0", "config=jem_seed=1", "config=dream_seed=0",
                     "config=dream_seed=1"]  # fmt: skip
    jem = study.points()[0].spec
    assert jem.three_epsilons == (0.0, 1.0, 0.01) and jem.method == "ula"


def test_the_study_gathers_one_datatree_with_the_grid_target_and_seed_as_dims(reference):
    study, out, _ = reference
    with xr.open_datatree(out / "study.nc") as tree:
        ds = tree.to_dataset()
        assert ds["judge_prob"].dims == ("prior", "temperature", "seed", "target")
        assert ds["acceptance"].dims == ("prior", "temperature", "seed")
        assert list(ds["target"].values) == [1, 7]
        assert (ds["status"].values == "done").all()
        for k in ("ess_bulk_min", "judge_top1", "frechet", "vendi", "pairwise_pixel",
                  "pairwise_feature"):  # fmt: skip
            assert np.isfinite(ds[k].values).all(), k
        # 20 steps are far from converged; inf where a summary never moved in a chain
        assert (ds["rhat_max"].values > 1).all()
        assert (ds["grad_evals"].values >= 20).all()  # 8 warmup + 12 steps
        # centred Vendi of 2 chains lies in [1, 1]: two centred points are one direction
        assert np.allclose(ds["vendi"].values, 1.0)
        final = tree["samples"]["final"]
        assert final.dims[-5:] == ("target", "sample", "channel", "row", "col")
        assert final.shape[-5:] == (2, 2, 1, 28, 28)
    for name in ("report.md", "tradeoff.png", "ess_per_grad.png", "samples.png"):
        assert (out / name).exists(), name
    assert "Pareto-optimal" in (out / "report.md").read_text()
    runs = sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert runs == sorted(p.name for p in study.points())


def test_a_dask_local_cluster_gives_the_pool_s_numbers_bit_for_bit(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    study, pool_out, _ = reference
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        result = S.run_study(study, tmp_path / "dask", scheduler=client.scheduler.address,
                             progress=False)  # fmt: skip
    assert result.complete and not result.failed
    _same(pool_out, tmp_path / "dask")


def test_this_process_gives_the_pool_s_numbers_and_a_rerun_does_no_work(reference, tmp_path):
    study, pool_out, _ = reference
    out = tmp_path / "inline"
    S.run_study(study, out, workers=0, progress=False)
    _same(pool_out, out)
    changed = tmp_path / "changed"  # the comparison sees a change in the last bit
    changed.mkdir()
    with xr.open_datatree(out / "study.nc") as tree:
        tree = tree.load()
    tree["acceptance"].values[0, 0, 0] = np.nextafter(tree["acceptance"].values[0, 0, 0], 2.0)
    tree.to_netcdf(changed / "study.nc")
    assert S.same_numbers(out, changed) == ["/acceptance"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")}
    again = S.run_study(study, out, workers=0, progress=False)
    assert again.ran == [] and again.complete
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")} == stamps


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    text = TINY.replace('prior = ["fitted=1", "gaussian=1"]\n', 'model = ["mnist", "nosuch"]\n')
    text = text.replace('model = "mnist"\n', 'prior = "fitted=1"\n')
    config = _config(tmp_path, text, "failing")
    out = tmp_path / "out"
    assert main(["study", str(config), "--out", str(out), "--workers", "2", "--quiet"]) == 1
    said = capsys.readouterr().out
    assert "4 of 8 runs failed" in said and "--retry-failed" in said
    bad = out / "runs" / "model=nosuch_temperature=0.1_seed=0"
    error = json.loads((bad / "error.json").read_text())
    assert "nosuch" in error["error"] and "Traceback" in error["traceback"]
    assert error["spec"]["model"] == "nosuch"
    with xr.open_datatree(out / "study.nc") as tree:
        status = tree.to_dataset()["status"]
        assert (status.sel(model="nosuch").values == "failed").all()
        assert (status.sel(model="mnist").values == "done").all()
        assert np.isnan(tree.to_dataset()["judge_prob"].sel(model="nosuch").values).all()
    # the failed runs stay failed on a plain re-run and run again with --retry-failed
    study = S.Study.load(config)
    assert S.run_study(study, out, workers=0, progress=False).ran == []
    again = S.run_study(study, out, workers=0, progress=False, retry_failed=True)
    assert sorted(again.ran) == sorted(p.name for p in study.points() if "nosuch" in p.name)
    assert len(again.failed) == 4


def test_a_study_killed_mid_way_and_restarted_completes_with_the_same_numbers(reference, tmp_path):
    study, pool_out, _ = reference
    config = _config(tmp_path)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "langevin_images.cli", "study", str(config), "--out", str(out),
           "--workers", "2", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        done = [p for p in runs.glob("*") if not p.name.startswith(".")] if runs.exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2.5)  # the pool's workers see their parent gone and exit
    finished = [p for p in runs.glob("*") if not p.name.startswith(".")]
    assert 2 <= len(finished) < 8
    assert not (out / "study.nc").exists()
    result = S.run_study(study, out, workers=2, progress=False)
    assert result.complete and not result.failed, _errors(runs, result.failed, proc)
    assert len(result.ran) == 8 - len(finished)
    _same(pool_out, out)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_pool_workers_of_a_study_killed_while_they_start_exit(tmp_path):
    """SIGKILL a study process as soon as its pool has spawned its workers: they find their
    parent gone when they start and exit, instead of waiting for work forever."""
    mark = f"LANGEVIN_IMAGES_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    script = tmp_path / "starts_a_pool.py"
    script.write_text(
        "import sys, time\n"
        "from langevin_images import study as S\n"
        "if __name__ == '__main__':\n"
        "    pool = S._pool(2)\n"
        "    for _ in range(2):\n"
        "        pool.submit(time.sleep, 0)\n"
        "    print('spawned', flush=True)\n"
        "    time.sleep(120)\n"
    )
    key, value = mark.split("=")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            env={**os.environ, key: value})  # fmt: skip
    assert proc.stdout.readline().strip() == b"spawned"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    def workers() -> list[int]:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if (
                    mark.encode() in environ.read_bytes().split(b"\0")
                    and b"spawn_main" in (environ.parent / "cmdline").read_bytes()
                ):
                    found.append(int(environ.parent.name))
            except OSError:  # gone meanwhile, or not ours to read
                pass
        return found

    deadline = time.monotonic() + 60  # they exit as soon as they start: seconds
    while workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = workers()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed study"


def _errors(runs: Path, names: list[str], proc) -> str:
    """What the failed runs' error.json files and the killed study said: a failure here is a
    race, and this is all there is to find it from."""
    errors = {n: json.loads((runs / n / "error.json").read_text()) for n in names}
    said = [f"{n}: {e['error']}\n{e['traceback'][-1500:]}" for n, e in errors.items()]
    return "\n".join([*said, "killed study's stderr:", proc.stderr.read().decode()[-1500:]])


def test_a_record_resume_cannot_read_is_run_again_and_says_so(tmp_path):
    study = S.Study.load(_config(tmp_path))
    point = study.points()[0]
    runs = tmp_path / "runs"
    assert S.run_point(point.spec.to_dict(), str(runs), point.name)["status"] == "done"
    first = json.loads((runs / point.name / S.METRICS).read_text())
    # the finished run, as a kill before its last rename leaves it, with its checkpoint damaged
    partial = S._partial(runs, point.name)
    (runs / point.name).rename(partial)
    (partial / S.METRICS).unlink()
    record = partial / "record.zarr"
    slot = json.loads((record / "zarr.json").read_text())["attributes"]["checkpoint_slot"]
    (chunk,) = (p for p in (record / "checkpoint" / f"state_{slot}").rglob("*") if p.is_file()
                and p.name != "zarr.json")  # fmt: skip
    chunk.write_bytes(b"not a checkpoint" * 8)
    assert S.run_point(point.spec.to_dict(), str(runs), point.name)["status"] == "done"
    again = json.loads((runs / point.name / S.METRICS).read_text())
    assert again["targets"] == first["targets"]  # seeded: the same numbers from the start
    card = json.loads((runs / point.name / "run.json").read_text())
    assert "could not be resumed" in card["restarted"]


def test_a_bad_config_exits_2_in_one_line_and_leaves_no_folder(tmp_path, capsys):
    config = _config(tmp_path, "[grid]\nprior = ['nosuch=1']\n", "bad")
    out = tmp_path / "out"
    assert main(["study", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'nosuch'" in err and "Traceback" not in err
    assert not out.exists()


def test_the_temperature_table_follows_from_the_published_settings():
    from langevin_images.recipes import RECIPES, markdown_table
    from langevin_images.samplers import from_gradient_ascent, from_sgld

    by = {r.name: r for r in RECIPES}
    jem = by["JEM SGLD"].parameters
    assert jem.step_size == 1.0 and jem.temperature == pytest.approx(0.01**2 / 2)
    assert by["PPGN"].parameters.temperature == pytest.approx(1e-34 / 2)
    assert by["PPGN"].parameters.prior_weight == pytest.approx(1e-5)
    # Welling & Teh's SGLD (step eps/2, noise sqrt(eps)) samples the posterior itself
    assert from_sgld(0.005, 0.01**0.5).temperature == pytest.approx(1.0)
    ascent = from_gradient_ascent(0.5, l2=0.1, decay=0.01)
    assert ascent.temperature == 0 and ascent.prior_weight == pytest.approx(0.2 + 0.02)
    table = markdown_table()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert table in readme  # the README shows what the package computes
    # the recipes study runs each implied setting
    study = S.Study.load(Path(__file__).parents[1] / "studies" / "recipes.toml")
    specs = {p.coords["config"]: p.spec for p in study.points()}
    assert specs["jem-sgld"].three_epsilons == (0.0, 1.0, 0.01)
    assert specs["mala-t1"].temperature == 1.0 and specs["mala-t1"].likelihood_weight == 1


def test_every_committed_study_config_parses():
    for path in sorted((Path(__file__).parents[1] / "studies").glob("*.toml")):
        assert S.Study.load(path).points(), path
