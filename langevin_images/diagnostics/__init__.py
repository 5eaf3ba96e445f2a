"""Diagnostics of recorded runs: ArviZ export (convergence statistics and plots build on it)."""

from .export import to_datatree

__all__ = ["to_datatree"]
