"""The compiled sampler: exact (moments within Monte Carlo error) eagerly, and compiled in
distribution with the eager one."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_moments, tiny_cnn

from langevin_images.samplers import Diagonal
from langevin_images.samplers.compiled import sample_compiled
from langevin_images.targets import banana, gaussian


def test_the_chunked_sampler_is_exact_run_eagerly():
    target = gaussian(6, dtype=torch.float64)
    x0 = target.init(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    run = sample_compiled(target.energy, x0, steps=3000, warmup=300, seed=1, compile=False)
    assert not run.compiled and run.samples.shape == (8, 3000, 6)
    assert 0.45 < float(run.acceptance_prob[:, 300:].mean()) < 0.7
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())


def test_a_diagonal_preconditioner_and_thinning():
    target = gaussian(6, dtype=torch.float64)
    x0 = target.init(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    run = sample_compiled(target.energy, x0, steps=3000, warmup=300, seed=2, compile=False,
                          preconditioner=Diagonal(target.var), thin=2)  # fmt: skip
    assert run.samples.shape == (8, 1500, 6)
    assert_moments(run.samples.numpy(), target.mean.numpy(), target.var.numpy())
    with pytest.raises(ValueError, match="Diagonal"):
        sample_compiled(target.energy, x0, steps=10, preconditioner=object(), compile=False)


def test_steps_that_fill_no_whole_chunk_run_too():
    target = gaussian(4, dtype=torch.float64)
    x0 = target.init(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    run = sample_compiled(target.energy, x0, steps=1234, warmup=57, seed=1, chunk=100,
                          unroll=7, compile=False)  # fmt: skip
    assert run.samples.shape == (4, 1234, 4) and run.acceptance_prob.shape == (4, 57 + 1234)
    assert bool(torch.isfinite(run.samples).all()) and run.grad_evals == 57 + 1234 + 1
    with pytest.raises(ValueError, match="unroll"):
        sample_compiled(target.energy, x0, steps=10, unroll=0, compile=False)


def test_images_are_flattened_inside_and_the_draws_keep_their_shape():
    target = gaussian(12, dtype=torch.float64)

    def image_energy(x):  # (chains, 1, 3, 4) images: the energy sees them as they are
        assert x.shape[1:] == (1, 3, 4)
        return target.energy(x.flatten(1))

    x0 = target.init(8, torch.Generator().manual_seed(0), dtype=torch.float64).reshape(8, 1, 3, 4)
    run = sample_compiled(image_energy, x0, steps=3000, warmup=300, seed=3, compile=False)
    assert run.samples.shape == (8, 3000, 1, 3, 4)
    draws = run.samples.reshape(8, 3000, 12).numpy()
    assert_moments(draws, target.mean.numpy(), target.var.numpy())


@pytest.mark.slow  # compiling the two chunks' graphs takes a minute or two on 2 cores
def test_the_compiled_sampler_is_exact_too():
    target = gaussian(6)
    x0 = target.init(16, torch.Generator().manual_seed(3))
    run = sample_compiled(target.energy, x0, steps=4000, warmup=300, seed=4, chunk=10)
    assert run.compiled, "torch.compile should handle the Gaussian's energy"
    assert_moments(run.samples.double().numpy(), target.mean.numpy(), target.var.numpy())
    # the banana through the compiled graph: its Gaussian marginal's moments
    target = banana()
    x0 = target.init(16, torch.Generator().manual_seed(5))
    run = sample_compiled(target.energy, x0, steps=8000, warmup=300, seed=6, chunk=10, thin=4)
    x = run.samples.double().numpy()[..., :1]
    assert_moments(x, target.mean.numpy()[:1], target.var.numpy()[:1])


@pytest.mark.slow
def test_a_classifier_energy_compiles():
    from langevin_images.energies import ClassLikelihood, GaussianPrior

    energy = 5.0 * ClassLikelihood(tiny_cnn(1).float(), 2) + GaussianPrior(0.5)
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    run = sample_compiled(energy, x0, steps=20, warmup=10, step_size=1e-3, seed=1, chunk=5)
    assert run.compiled, "torch.compile should trace the classifier's energy"
    assert run.samples.shape == (4, 20, 1, 8, 8) and bool(torch.isfinite(run.samples).all())
