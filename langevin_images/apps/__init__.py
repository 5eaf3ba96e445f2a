"""Recipes on top of the sampler: activation maximization (``visualize``) and DeepDream
(``dream``), the zero-noise special cases, with their T > 0 variants."""

from .dream import Dream, dream, octave_sizes
from .visualize import (
    Visualization,
    layer_channels,
    visualize,
    visualize_layers,
    visualize_variety,
)

__all__ = [
    "Dream",
    "Visualization",
    "dream",
    "layer_channels",
    "octave_sizes",
    "visualize",
    "visualize_layers",
    "visualize_variety",
]
