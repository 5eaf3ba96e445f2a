"""A run for the kill-and-resume tests, in its own process: ``python _resume_child.py OUT KILL``
samples into OUT and kills itself with SIGKILL at energy evaluation KILL (0: never);
``python _resume_child.py OUT resume`` continues the record at OUT."""

from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn

import langevin_images as li
from langevin_images.energies import ClassLikelihood, GaussianPrior, RandomAffine, Transformed
from langevin_images.recording import ZarrRecorder

torch.set_num_threads(1)


class Counted(Transformed):
    """The energy, killing its process at evaluation ``kill_at``."""

    def __init__(self, inner, transform, kill_at: int):
        super().__init__(inner, transform)
        self.kill_at, self.calls = kill_at, 0

    def evaluate(self, x):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(x)

    def __repr__(self) -> str:  # the same energy whatever kill_at is
        return f"Counted({self.inner!r}, {self.transform!r})"


def energy(kill_at: int = 0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net.requires_grad_(False)
    lik = ClassLikelihood(net, torch.tensor([0, 1, 2, 0]))
    return Counted(10.0 * lik + GaussianPrior(0.3), RandomAffine(1, seed=7), kill_at)


KW = dict(steps=40, warmup=16, thin=2, step_size=0.01, schedule="dual_averaging", seed=3)


if __name__ == "__main__":
    out, what = sys.argv[1], sys.argv[2]
    if what == "resume":
        li.resume(out, energy(), progress=False)
    else:
        x0 = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(1))
        li.sample(energy(int(what)), x0, record_to=ZarrRecorder(out, buffer_steps=8),
                  progress=False, **KW)  # fmt: skip
