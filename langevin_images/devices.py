"""Constant tensors kept on the device and in the dtype of the tensors they meet."""

from __future__ import annotations

import weakref

from torch import Tensor

__all__ = ["on_device"]

# owner -> {(name, device, dtype): (source tensor, copy)}. Kept beside the owners, not in their
# __dict__, so that an energy or preconditioner pickles (and checkpoints) without device copies
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_device(owner, name: str, like: Tensor, *, same_dtype: bool = False) -> Tensor:
    """The constant tensor ``owner.<name>`` on ``like``'s device (and in its dtype with
    ``same_dtype``), copied once and cached for ``owner``. A host-to-device copy at every call
    would make each evaluation wait for the GPU's queue to drain."""
    src = getattr(owner, name)
    dtype = like.dtype if same_dtype else src.dtype
    if src.device == like.device and src.dtype == dtype:
        return src
    cache = _CACHE.setdefault(owner, {})
    key = (name, like.device, dtype)
    hit = cache.get(key)
    if hit is None or hit[0] is not src:  # a reassigned attribute is copied anew
        hit = cache[key] = (src, src.to(device=like.device, dtype=dtype))
    return hit[1]
