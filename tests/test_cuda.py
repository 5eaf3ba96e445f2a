"""The same machinery on a CUDA GPU: exactness, agreement with the CPU, the apps and the command.

These run only where ``torch.cuda.is_available()``; CI has no GPU, so they are run by hand on
a GPU machine (``pytest tests/test_cuda.py``). Each compares with the CPU or with a known
truth, so a pass means the GPU path computes the same thing.
"""

from __future__ import annotations

import pytest
import torch
import xarray as xr
from helpers import Gaussian, assert_moments, stationary_image_gaussian, tiny_cnn

import langevin_images as li
from langevin_images.apps import dream, visualize
from langevin_images.cli import main
from langevin_images.diagnostics import diagnose, penultimate
from langevin_images.energies import (
    ActivationEnergy,
    ClassLikelihood,
    RandomAffine,
    TotalVariation,
)
from langevin_images.energies.features import _has_hooks
from langevin_images.samplers import ColorFourier, Dense, Fourier
from langevin_images.samplers.kernel import energy_and_grad

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mala_on_cuda_gets_gaussian_moments_right():
    """MALA with dual averaging on the GPU: means and variances within their MCSE."""
    target = Gaussian(torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]), torch.eye(5) * 2.0)
    x0 = target.draw(64, _gen(1), torch.float32).to(CUDA)
    run = li.sample(target, x0, steps=1500, warmup=300, step_size=0.5,
                    schedule="dual_averaging", seed=2, progress=False)  # fmt: skip
    assert run.final_state.position.device.type == "cuda"
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())
    assert abs(float(run.acceptance_rate.mean()) - 0.574) < 0.05


def test_fourier_preconditioned_mala_on_cuda():
    target = stationary_image_gaussian(8, 8, decay=1.0)
    x0 = target.draw(64, _gen(6), torch.float32).to(CUDA)
    run = li.sample(target, x0, steps=1500, warmup=300, step_size=0.05,
                    schedule="dual_averaging", preconditioner=Fourier((8, 8), decay=1.0),
                    seed=7, progress=False)  # fmt: skip
    s = run.samples.reshape(64, -1, 64).numpy()
    assert_moments(s, target.mean.numpy(), target.var.numpy())


@pytest.mark.parametrize("name", ["fourier", "color", "dense"])
def test_preconditioners_agree_with_the_cpu(name):
    v = torch.randn((4, 3, 16, 16), generator=_gen(0), dtype=torch.float64)
    if name == "fourier":
        pc = Fourier((16, 16), decay=1.0)
    elif name == "color":
        pc = ColorFourier((16, 16), torch.eye(3) + 0.5)
    else:
        a = torch.randn((768, 768), generator=_gen(1), dtype=torch.float64)
        pc = Dense(a @ a.T / 768 + torch.eye(768))
    torch.testing.assert_close(pc.apply(v.to(CUDA)).cpu(), pc.apply(v))
    torch.testing.assert_close(pc.inv_quad(v.to(CUDA)).cpu(), pc.inv_quad(v))


def test_lite0_energy_and_gradient_agree_with_the_cpu():
    """A class likelihood under TV: same energy and gradient (float32 tolerances; cuDNN and
    MKL-DNN sum in different orders). TF32 is off for the comparison: PyTorch's default on
    Ampere and later GPUs computes convolutions in TF32, whose gradients differ by several
    per cent (``scripts/gpu_check.sh`` prints by how much). The random transform with the same
    draws: same image."""
    from langevin_images.models import load_model

    x = torch.rand((4, 3, 64, 64), generator=_gen(2))
    grads, energies = [], []
    for device in ("cpu", "cuda"):
        model = load_model("lite0").to(device)
        energy = ClassLikelihood(model, [1, 207, 400, 980]) + 0.1 * TotalVariation()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            e, g = energy_and_grad(energy, x.to(device))
        energies.append(e.cpu())
        grads.append(g.cpu())
    torch.testing.assert_close(energies[1], energies[0], rtol=1e-4, atol=1e-4)
    scale = grads[0].abs().max()
    assert float((grads[1] - grads[0]).abs().max() / scale) < 1e-3
    t = RandomAffine(4, (0.9, 1.1), 10.0)
    u = torch.rand((4, 4), generator=_gen(3))
    torch.testing.assert_close(t.warp(x.to(CUDA), u.to(CUDA)).cpu(), t.warp(x, u))
    assert t(x.to(CUDA)).device.type == "cuda"


def test_descent_on_cuda_follows_the_cpu_run():
    """A deterministic descent (tiny CNN in float64): the GPU run ends where the CPU run does."""
    finals = []
    for device in ("cpu", "cuda"):
        net = tiny_cnn().to(device)
        x0 = torch.rand((3, 3, 16, 16), generator=_gen(4), dtype=torch.float64).to(device)
        run = li.sample(ClassLikelihood(net, 2), x0, steps=40, method="descent",
                        step_size=0.05, bounds=(0.0, 1.0), progress=False)  # fmt: skip
        finals.append(run.final_position.cpu())
    torch.testing.assert_close(finals[1], finals[0], rtol=1e-9, atol=1e-9)


def test_visualize_and_dream_on_cuda():
    from langevin_images.models import load_model

    model = load_model("lite0").to(CUDA)
    vis = visualize(model, "_blocks.4", 2, size=48, steps=12, progress=False)
    assert vis.images.device.type == "cuda" and vis.images.shape == (2, 3, 48, 48)
    energy = vis.run.stats["energy"]
    assert (energy[:, -1] < energy[:, 0]).all()
    d = dream(model, torch.full((3, 56, 56), 0.5), "_blocks.4", octaves=2, steps_per_octave=3,
              progress=False)  # fmt: skip
    assert d.images.shape == (1, 3, 56, 56)
    assert not _has_hooks(model)
    act = ActivationEnergy(model, "_blocks.4", channel=torch.tensor([0, 1]))
    assert torch.isfinite(act(vis.images)).all()


def test_export_with_features_of_a_cuda_run(tmp_path):
    net = tiny_cnn().to(CUDA)
    x0 = torch.rand((4, 3, 16, 16), generator=_gen(5), dtype=torch.float64).to(CUDA)
    run = li.sample(ClassLikelihood(net, 1), x0, steps=20, step_size=0.01, temperature=0.1,
                    bounds=(0.0, 1.0), record_to=tmp_path / "run.zarr", progress=False)  # fmt: skip
    feats = penultimate(net)
    dt = run.to_datatree(features=feats)
    assert "feature_projection" in dt["posterior"]
    assert diagnose(dt).table.shape[0] > 0


def test_the_command_on_cuda(tmp_path):
    out = tmp_path / "demo"
    tiny = ["--steps", "12", "--warmup", "8", "--chains", "2", "--quiet", "--device", "cuda"]
    assert main(["demo", "--out", str(out), *tiny]) == 0
    card = (out / "run.json").read_text()
    assert '"device": "cuda' in card
    assert '"tf32_convolutions": false' in card  # switched off unless --tf32
    vis = tmp_path / "vis"
    assert main(["visualize", "--model", "lite0", "--layer", "_blocks.4", "--channels", "2",
                 "--size", "32", "--steps", "3", "--temperature", "0.05", "--chains", "2",
                 "--out", str(vis), "--quiet", "--device", "cuda"]) == 0  # fmt: skip
    assert {"_blocks_4", "_blocks_4_variety"} <= set(xr.open_datatree(vis / "run.nc").children)
    dr = tmp_path / "dream"
    assert main(["dream", "--model", "lite0", "--layer", "_blocks.4", "--size", "40",
                 "--octaves", "2", "--steps", "2", "--out", str(dr), "--quiet",
                 "--device", "cuda"]) == 0  # fmt: skip
    assert (dr / "dream.png").exists()


def test_constants_are_copied_to_the_gpu_once():
    from langevin_images.devices import on_device

    lik = ClassLikelihood(tiny_cnn().to(CUDA), [1, 2])
    x = torch.zeros((2, 3, 8, 8), dtype=torch.float64, device=CUDA)
    first = on_device(lik, "target", x)
    assert first.device.type == "cuda" and on_device(lik, "target", x) is first
    assert on_device(lik, "target", x.cpu()) is lik.target


def test_a_diverging_chain_stops_a_cuda_run_with_its_name():
    """On a GPU the divergence check looks every 10 steps (each look is a sync): the run stops
    within 10 steps of the 20th divergence in a row, and names the whole streak."""

    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        poison = torch.zeros(len(x), device=x.device)
        if calls["n"] > 1:  # finite at the start, NaN for chain 3 at every proposal after
            poison[3] = float("nan")
        return 0.5 * x.square().flatten(1).sum(1) + poison

    with pytest.raises(li.DivergenceError, match=r"chain 3 diverged .* (2\d|30) steps in a row"):
        li.sample(energy, torch.zeros((5, 2), device=CUDA) + 0.1, steps=100, progress=False)


def test_amortized_style_on_cuda_trains_and_agrees_with_the_cpu(tmp_path):
    """A short CIN training runs on the GPU and lowers its loss; the imported multistyle26
    network gives the CPU's stylization; the command runs a committed network there."""
    from test_amortized import TINY, photos, tiny_vgg32

    from langevin_images.apps.amortized import stylize, train
    from langevin_images.models.stylenets import load_network

    vgg = tiny_vgg32().to(CUDA)
    result = train("cin", [p.to(CUDA) for p in photos(2, (32, 32))], model=vgg,
                   out=tmp_path / "t", steps=30, batch=2, size=32, lr=5e-3, arch=TINY,
                   content=photos(), progress=False)  # fmt: skip
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first
    net, _, _ = load_network("multistyle26")
    x = photos(1, (64, 96))[0]
    cpu = stylize(net, x, style=7)
    gpu = stylize(net.to(CUDA), x.to(CUDA), style=7).cpu()
    assert float((cpu - gpu).abs().max()) < 1e-3
    assert main(["style", "--method", "adain", "--size", "64", "--device", "cuda", "--quiet",
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
