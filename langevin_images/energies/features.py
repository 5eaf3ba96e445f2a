"""Reading a model's intermediate activations through context-managed forward hooks.

Layers are named by their ``model.named_modules()`` dotted paths. One forward pass serves
every requested layer, and with ``stop_early`` the pass stops as soon as the last of them has
run (an early layer then costs only the layers before it). The hooks are removed on leaving the
``with`` block, also when an error is raised inside it.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

__all__ = ["FeatureHooks", "capture", "resolve_layers"]


class _Stop(Exception):
    """Raised by the last hook to skip the rest of the forward pass."""


def resolve_layers(model: nn.Module, layers: list[str] | tuple[str, ...]) -> dict[str, nn.Module]:
    """The modules named ``layers``; an unknown name is a one-line error with close names."""
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        if name not in modules and f"net.{name}" in modules:  # zoo models wrap their network
            out[name] = modules[f"net.{name}"]
            continue
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [m for m in modules if m], n=5, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown layer {name!r} in {type(model).__name__}{hint}")
        out[name] = modules[name]
    return out


class FeatureHooks:
    """``with FeatureHooks(model, ["features.3", "classifier"]) as hooks: model(x)``, then
    ``hooks.outputs[name]`` holds each layer's output of the last forward pass."""

    def __init__(
        self, model: nn.Module, layers: list[str] | tuple[str, ...], *, stop_early: bool = False
    ):
        self.model = model
        self.modules = resolve_layers(model, list(layers))
        self.stop_early = stop_early
        self.outputs: dict[str, Tensor] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
            if self.stop_early and len(self.outputs) == len(self.modules):
                raise _Stop

        return hook

    def __enter__(self) -> FeatureHooks:
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def run(self, x: Tensor) -> dict[str, Tensor]:
        """One forward pass; the requested layers' outputs."""
        self.outputs = {}
        try:
            self.model(x)
        except _Stop:
            pass
        missing = [n for n in self.modules if n not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass")
        return dict(self.outputs)


def capture(
    model: nn.Module, layers: list[str] | tuple[str, ...], x: Tensor, *, stop_early: bool = True
) -> dict[str, Tensor]:
    """The outputs of ``layers`` for input ``x`` (one forward pass, hooks removed after)."""
    with FeatureHooks(model, layers, stop_early=stop_early) as hooks:
        return hooks.run(x)


def _has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` still carries a forward hook (for tests)."""
    return any(m._forward_hooks for m in model.modules())
