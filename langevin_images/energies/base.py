"""The Energy base: per-chain values, ``+`` and scalar ``*``, each term available by name.

An energy is any callable ``x -> (chains,)``; lower is more probable. ``Energy`` objects add
and scale (``likelihood + 0.1 * tv``) and report every named term of a sum separately through
``evaluate(x) -> (total, terms)``, which the sampler records at every step at no extra cost.
"""

from __future__ import annotations

from numbers import Real

from torch import Tensor

__all__ = [
    "Energy",
    "Scaled",
    "Sum",
    "check_images",
    "per_chain_mean",
    "per_chain_sum",
    "random_state",
    "set_random_state",
]


def check_images(x: Tensor, *, channels: int | None = None, who: str = "energy") -> None:
    """Raise a one-line error unless ``x`` is a float ``(N, C, H, W)`` batch."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who}: expected float images of shape (N, C, H, W), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{who}: expected {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})"
        )


SUMMARY_PREFIX = "summary_"


class Energy:
    """Base class. Subclasses implement ``energy(x) -> (chains,)`` and set ``name``.

    ``evaluate`` returns the total and its named terms. A term whose name starts with
    ``"summary_"`` is a recorded summary (such as the target class log-probability), not a
    part of the total: weights leave it unscaled.
    """

    name = "energy"

    def energy(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The total and each named term (weighted as it enters the total)."""
        value = self.energy(x)
        return value, {self.name: value}

    def __call__(self, x: Tensor) -> Tensor:
        return self.evaluate(x)[0]

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        return self.evaluate(x)[1]

    def random_state(self) -> dict[str, Tensor]:
        """The state of every random generator the energy draws from (a stochastic transform's),
        by name: what a checkpoint saves so that a resumed run draws what the uninterrupted one
        would have. Empty for a deterministic energy."""
        return {}

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        """Restore what ``random_state`` returned."""
        if state:
            raise ValueError(f"{self!r} has no random state, got {sorted(state)}")

    def __add__(self, other: Energy) -> Sum:
        if not isinstance(other, Energy):
            return NotImplemented
        return Sum([*_parts(self), *_parts(other)])

    def __mul__(self, weight: float) -> Scaled:
        if not isinstance(weight, Real) or isinstance(weight, bool):
            return NotImplemented
        if isinstance(self, Scaled):
            return Scaled(self.inner, self.weight * float(weight))
        return Scaled(self, float(weight))

    __rmul__ = __mul__

    def __neg__(self) -> Scaled:
        return self * -1.0

    def __sub__(self, other: Energy) -> Sum:
        return self + (-other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _parts(e: Energy) -> list[Energy]:
    return list(e.parts) if isinstance(e, Sum) else [e]


class Scaled(Energy):
    """``weight * inner``."""

    def __init__(self, inner: Energy, weight: float):
        self.inner, self.weight = inner, float(weight)
        self.name = inner.name

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.scale(*self.inner.evaluate(x))

    def scale(self, total: Tensor, terms: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.weight * total, {
            k: v if k.startswith(SUMMARY_PREFIX) else self.weight * v for k, v in terms.items()
        }

    def random_state(self) -> dict[str, Tensor]:
        return random_state(self.inner)

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        set_random_state(self.inner, state)

    def __repr__(self) -> str:
        return f"{self.weight:g} * {self.inner!r}"


def _feature_term(e):
    """The feature-reading energy under any scalings of ``e`` (see ``style.FeatureTerm``), or
    None."""
    while isinstance(e, Scaled):
        e = e.inner
    return e if callable(getattr(e, "from_features", None)) else None


def _evaluate_shared(e: Energy, x: Tensor, shared: dict) -> tuple[Tensor, dict[str, Tensor]]:
    if isinstance(e, Scaled):
        return e.scale(*_evaluate_shared(e.inner, x, shared))
    term = _feature_term(e)
    if term is not None and id(term.feature_model) in shared:
        value = term.from_features(shared[id(term.feature_model)], x)
        return value, {term.name: value}
    return e.evaluate(x)


class Sum(Energy):
    """A sum of energies; terms with the same name get suffixes ``_2``, ``_3``, ...

    Terms that read features of the same model (content, style, ...) share one forward pass
    over the union of their layers instead of one pass each."""

    name = "sum"

    def __init__(self, parts: list[Energy]):
        if not parts:
            raise ValueError("an energy sum needs at least one term")
        self.parts = list(parts)

    def _shared_features(self, x: Tensor) -> dict[int, dict[str, Tensor]]:
        by_model: dict[int, list] = {}
        for part in self.parts:
            term = _feature_term(part)
            if term is not None:
                by_model.setdefault(id(term.feature_model), []).append(term)
        shared = {}
        for key, terms in by_model.items():
            if len(terms) > 1:
                layers = list(dict.fromkeys(k for t in terms for k in t.layers))
                terms[0].check(x)
                shared[key] = terms[0].features(x, layers)
        return shared

    def evaluate(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total: Tensor | None = None
        terms: dict[str, Tensor] = {}
        shared = self._shared_features(x)
        for part in self.parts:
            value, sub = _evaluate_shared(part, x, shared)
            total = value if total is None else total + value
            for k, v in sub.items():
                key, i = k, 2
                while key in terms:
                    key, i = f"{k}_{i}", i + 1
                terms[key] = v
        assert total is not None
        return total, terms

    def random_state(self) -> dict[str, Tensor]:
        return {
            f"{i}.{k}": v
            for i, part in enumerate(self.parts)
            for k, v in random_state(part).items()
        }

    def set_random_state(self, state: dict[str, Tensor]) -> None:
        for i, part in enumerate(self.parts):
            prefix = f"{i}."
            set_random_state(
                part, {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            )

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.parts)


def random_state(obj) -> dict[str, Tensor]:
    """``obj.random_state()`` where it has one (energies, transforms), else ``{}``: any callable
    is an energy, and a plain function draws nothing the sampler does not give it."""
    fn = getattr(obj, "random_state", None)
    return fn() if callable(fn) else {}


def set_random_state(obj, state: dict[str, Tensor]) -> None:
    fn = getattr(obj, "set_random_state", None)
    if callable(fn):
        fn(state)
    elif state:
        raise ValueError(f"{obj!r} has no random state to restore, got {sorted(state)}")


def model_parameter(model) -> Tensor | None:
    """The model's first parameter (its device and dtype), or None if it has none."""
    return next(iter(model.parameters()), None)


def on_model(model, x: Tensor) -> Tensor:
    """``x`` on the model's device and in its dtype (as it is if the model has no parameters)."""
    p = model_parameter(model)
    return x if p is None else x.to(device=p.device, dtype=p.dtype)


def per_chain_sum(t: Tensor) -> Tensor:
    """Sum over every dimension but the first."""
    return t.reshape(t.shape[0], -1).sum(1)


def per_chain_mean(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).mean(1)
