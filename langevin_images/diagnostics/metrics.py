"""Diversity and realism of sampled images.

How the noise scale (temperature) and the prior trade realism against variety is measured
with two families of numbers:

- diversity: mean pairwise distance in pixel space and in a classifier's feature space, the
  Vendi score (Friedman & Dieng 2022) of those features, the per-pixel standard deviation
  map, and the entropy of the predicted classes over the samples;
- vividness of a visualization: its contrast (standard deviation of its pixel values) and
  colour saturation (``picture_stats``);
- realism: the probability a *judge* classifier (never the sampling energy) gives the target
  class, the Fréchet distance between sample features and real-data features (the formula
  of FID, Heusel et al. 2017, here with the judge's features), and the prior energy.

Functions take tensors ``(N, C, H, W)`` in [0, 1], as the zoo models do, and return floats
or tensors; plotting and saving live elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..energies.base import on_model

__all__ = [
    "class_entropy",
    "diversity",
    "frechet_distance",
    "judge_probability",
    "mean_pairwise_distance",
    "penultimate",
    "picture_stats",
    "pixel_std_map",
    "realism",
    "vendi_score",
]


def penultimate(model: nn.Module, *, batch_size: int = 256) -> Callable[[Tensor], Tensor]:
    """``images -> features``: the input of the model's last ``nn.Linear`` (its penultimate
    representation), flattened to ``(N, F)``, without gradients and in batches, computed on
    the model's device and returned on the images' device."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features before")
    head = linears[-1]

    def features(x: Tensor) -> Tensor:
        out: list[Tensor] = []

        def grab(_module, inputs):
            out.append(inputs[0].detach().flatten(1))
            raise _Stop

        handle = head.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                for start in range(0, x.shape[0], batch_size):
                    try:
                        model(on_model(model, x[start : start + batch_size]))
                    except _Stop:
                        pass
        finally:
            handle.remove()
        return torch.cat(out).to(x.device)

    return features


class _Stop(Exception):
    """Raised by the feature hook: the layers after the features are not needed."""


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean Euclidean distance over all pairs of rows of ``x`` (``(N, ...)``, N >= 2)."""
    if x.shape[0] < 2:
        raise ValueError("mean_pairwise_distance needs at least two samples")
    return float(torch.pdist(_flat(x)).mean())


def vendi_score(features: Tensor, *, kernel: str = "cosine", centre: bool = False) -> float:
    """Vendi score ``exp(-sum_i l_i log l_i)``, ``l`` the eigenvalues of ``K / N`` for the
    similarity matrix ``K`` (``K_ii = 1``): the effective number of distinct samples, 1 for
    identical samples and N for mutually orthogonal ones (Friedman & Dieng 2022).

    ``kernel``: ``"cosine"`` (on the features as given) or ``"linear"`` (features assumed to
    have unit norm already). ``centre``: subtract the samples' mean feature first, so that
    what all samples share (ReLU features are all positive, and digits of one class share most
    of theirs) does not count as likeness; the score then runs from 1 to N - 1.
    """
    f = _flat(features)
    if centre:
        f = f - f.mean(0)
    if kernel == "cosine":
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    elif kernel != "linear":
        raise ValueError(f"unknown kernel {kernel!r}: 'cosine' or 'linear'")
    n = f.shape[0]
    # The nonzero eigenvalues of F F^T / n equal those of F^T F / n: use the smaller one.
    gram = f @ f.T if n <= f.shape[1] else f.T @ f
    lam = torch.linalg.eigvalsh(gram / n).clamp_min(0)
    lam = lam[lam > 1e-12]
    return float(torch.exp(-(lam * lam.log()).sum()))


def picture_stats(images: Tensor) -> dict[str, float]:
    """How vivid pictures are, means over ``(N, C, H, W)`` images in [0, 1]: ``pixel_sd``, the
    standard deviation of each image's pixel values (0 for a flat grey, about 0.25 for a
    photo), and ``saturation``, HSV saturation ``(max - min) / max`` over the colour channels
    (0 for grey; 0 for one-channel images)."""
    x = images.detach().to(torch.float64).clamp(0, 1)
    out = {"pixel_sd": float(x.flatten(1).std(1).mean())}
    if x.shape[1] == 1:
        out["saturation"] = 0.0
        return out
    hi, lo = x.amax(1), x.amin(1)
    out["saturation"] = float(((hi - lo) / hi.clamp_min(1e-12)).mean())
    return out


def pixel_std_map(images: Tensor) -> Tensor:
    """Standard deviation of each pixel over the samples, ``(C, H, W)``."""
    return images.to(torch.float64).std(0)


def class_entropy(logits: Tensor, *, num_classes: int | None = None) -> float:
    """Entropy (nats) of the histogram of predicted classes (argmax) over the samples:
    0 when all samples get one class, ``log(num_classes)`` when classes are equally used."""
    k = num_classes or logits.shape[1]
    counts = torch.bincount(logits.argmax(1), minlength=k).to(torch.float64)
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def judge_probability(
    judge: nn.Module, images: Tensor, targets: Tensor | int, *, batch_size: int = 256
) -> Tensor:
    """``p_judge(y = target | x)`` per sample, ``(N,)``; ``targets`` one class or one per
    sample."""
    return _target_prob(_logits(judge, images, batch_size), targets)


def _logits(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                model(on_model(model, images[i : i + batch_size])).to(images.device)
                for i in range(0, images.shape[0], batch_size)
            ]
        )


def _target_prob(logits: Tensor, targets: Tensor | int) -> Tensor:
    t = torch.as_tensor(targets, device=logits.device).expand(logits.shape[0])
    return logits.softmax(1).gather(1, t[:, None].long())[:, 0]


def _mean_cov(f: Tensor) -> tuple[Tensor, Tensor]:
    f = _flat(f)
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / max(f.shape[0] - 1, 1)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``.

    ``tr (S_a S_b)^{1/2}`` is the sum of the square roots of the eigenvalues of the symmetric
    ``S_a^{1/2} S_b S_a^{1/2}`` (same spectrum as ``S_a S_b``), computed in float64 with
    ``eigh``: no complex parts to discard, as ``scipy.linalg.sqrtm`` of the product leaves.
    """
    mu_a, s_a = _mean_cov(a)
    mu_b, s_b = _mean_cov(b)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    d = (mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross
    return float(d.clamp_min(0))


def diversity(
    images: Tensor,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    classifier: nn.Module | None = None,
) -> dict[str, float]:
    """Diversity figures of one set of samples (e.g. the final draws of one class).

    ``features``: ``images -> (N, F)`` (e.g. ``penultimate(model)``); ``classifier``: for the
    entropy of predicted classes.
    """
    out = {"pairwise_pixel": mean_pairwise_distance(images)}
    out["pixel_std_mean"] = float(pixel_std_map(images).mean())
    if features is not None:
        f = features(images)
        out["pairwise_feature"] = mean_pairwise_distance(f)
        out["vendi_feature"] = vendi_score(f)
    if classifier is not None:
        out["class_entropy"] = class_entropy(_logits(classifier, images))
    return out


def realism(
    images: Tensor,
    targets: Tensor | int | None = None,
    *,
    judge: nn.Module | None = None,
    reference_features: Tensor | None = None,
    features: Callable[[Tensor], Tensor] | None = None,
    prior: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Realism figures: the judge's mean probability of the target and its top-1 rate, the
    Fréchet distance of ``features(images)`` to ``reference_features``, the mean prior
    energy."""
    out: dict[str, float] = {}
    if judge is not None and targets is not None:
        logits = _logits(judge, images)
        t = torch.as_tensor(targets).expand(images.shape[0])
        out["judge_prob"] = float(_target_prob(logits, t).mean())
        out["judge_top1"] = float((logits.argmax(1) == t).to(torch.float64).mean())
    if reference_features is not None and features is not None:
        out["frechet"] = frechet_distance(features(images), reference_features)
    if prior is not None:
        with torch.no_grad():
            out["prior_energy"] = float(prior(images).mean())
    if not out:
        raise ValueError("realism needs a judge and targets, features and reference, or a prior")
    return out
