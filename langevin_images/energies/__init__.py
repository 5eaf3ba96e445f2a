"""Energies: an Energy base that adds and scales, image priors, classifier likelihoods,
activation and style energies, stochastic transforms, and feature hooks."""

from .activation import ActivationEnergy, DreamEnergy, activation_objective, guided_objective
from .base import Energy, Scaled, Sum, check_images
from .features import FeatureHooks, capture, resolve_layers
from .likelihood import ClassLikelihood, class_index, class_nll
from .priors import (
    BlurEvery,
    BlurPenalty,
    FittedGaussianPrior,
    GaussianPrior,
    StationaryGaussianPrior,
    TotalVariation,
    blur_penalty,
    gaussian_blur,
    gaussian_energy,
    total_variation,
)
from .registry import PRIORS, BuiltPrior, build_prior, parse_prior
from .style import (
    AdaINStatsEnergy,
    ContentEnergy,
    FeatureTerm,
    StyleEnergy,
    channel_stats,
    content_loss,
    gram,
    gram_loss,
    style_loss,
)
from .transforms import RandomAffine, RandomRoll, Transformed

__all__ = [
    "PRIORS",
    "ActivationEnergy",
    "AdaINStatsEnergy",
    "BlurEvery",
    "BlurPenalty",
    "BuiltPrior",
    "ClassLikelihood",
    "ContentEnergy",
    "DreamEnergy",
    "Energy",
    "FeatureHooks",
    "FeatureTerm",
    "FittedGaussianPrior",
    "GaussianPrior",
    "RandomAffine",
    "RandomRoll",
    "Scaled",
    "StationaryGaussianPrior",
    "StyleEnergy",
    "Sum",
    "TotalVariation",
    "Transformed",
    "activation_objective",
    "blur_penalty",
    "build_prior",
    "capture",
    "channel_stats",
    "check_images",
    "class_index",
    "class_nll",
    "content_loss",
    "gaussian_blur",
    "gaussian_energy",
    "gram",
    "gram_loss",
    "guided_objective",
    "parse_prior",
    "resolve_layers",
    "style_loss",
    "total_variation",
]
