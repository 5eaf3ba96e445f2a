"""The offline model zoo (see ``zoo``) and the project's MNIST classifiers."""

from .zoo import MODEL_NAMES, ZooModel, load_model, weights_path

__all__ = ["MODEL_NAMES", "ZooModel", "load_model", "weights_path"]
