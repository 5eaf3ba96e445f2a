"""What a model does with an input of a given size, found by running it once: which layers run
and what they output, the smallest input side it accepts, and about how much memory its
activations take. The command line checks a job against these before it starts, so that a
size too small for the model's kernels, a container layer that never runs, or a run that
cannot fit in memory is a one-line error, not a traceback after the output folder is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["Probe", "activation_bytes", "available_bytes", "human_bytes", "probe", "smallest_side"]


@dataclass
class Probe:
    """One forward pass at ``side`` px: ``error`` (the model's own message) if it failed; else
    the output shape of every named module that ran (in the order they ran) and the number of
    values the leaf modules output, per image (a proxy of what backward keeps)."""

    side: int
    error: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    activation_values: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _strip(name: str) -> str:
    return name.removeprefix("net.")


def probe(model: nn.Module, side: int, *, channels: int | None = None) -> Probe:
    """Run ``model`` once on a ``(1, C, side, side)`` grey image (no gradients)."""
    channels = channels or getattr(model, "input_channels", 3)
    result = Probe(side)
    handles = []

    def hook(name: str, leaf: bool):
        def record(module, inputs, output):
            if isinstance(output, Tensor):
                result.shapes.setdefault(_strip(name), tuple(output.shape[1:]))
                if leaf:
                    result.activation_values += output[0].numel()

        return record

    wrapped = getattr(model, "net", None)  # a zoo model's network: its parts are the layers
    for name, module in model.named_modules():
        if name and module is not wrapped:
            leaf = next(module.children(), None) is None
            handles.append(module.register_forward_hook(hook(name, leaf)))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.full((1, channels, side, side), 0.5, device=device))
    except RuntimeError as err:
        result.error = str(err).splitlines()[0]
    finally:
        for h in handles:
            h.remove()
    return result


def smallest_side(
    model: nn.Module, *, layers=None, channels: int | None = None, upto: int = 512
) -> int | None:
    """The smallest square input side the model runs on, or (with ``layers``) on which those
    layers all run (bisection over ``1..upto``); None if it fails even at ``upto``."""

    def works(side: int) -> bool:
        p = probe(model, side, channels=channels)
        return p.ok if layers is None else all(name in p.shapes for name in layers)

    if not works(upto):
        return None
    lo, hi = 0, upto  # fails at lo (or lo is 0), works at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


def activation_bytes(
    model: nn.Module, size: tuple[int, int], chains: int, *, channels: int | None = None
) -> int:
    """About how many bytes one forward+backward pass of ``chains`` images of ``size`` keeps:
    the leaf modules' outputs, probed at 64 px (or the model's fixed input size) and scaled by
    the pixel count (within 10 % of the measured peak for lite0 at 128 and 384 px, CPU)."""
    ref = 64
    p = probe(model, ref, channels=channels)
    if not p.ok:
        fixed = getattr(model, "input_size", None)
        ref = fixed[0] if fixed else ref
        p = probe(model, ref, channels=channels)
        if not p.ok:
            return 0
    per_pixel = p.activation_values / (ref * ref)
    param = next(model.parameters(), None)
    item = param.element_size() if param is not None else 4
    return int(per_pixel * size[0] * size[1] * chains * item)


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory on ``device``: the GPU's free memory, or the host's ``MemAvailable``
    (None where neither can be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover
