"""The offline model zoo (see ``zoo``) and the project's MNIST classifiers."""

from .zoo import (
    MODEL_NAMES,
    ReducedPrecision,
    ZooModel,
    fast_bfloat16,
    load_model,
    reduced_precision,
    weights_path,
)

__all__ = [
    "MODEL_NAMES",
    "ReducedPrecision",
    "ZooModel",
    "fast_bfloat16",
    "load_model",
    "reduced_precision",
    "weights_path",
]
