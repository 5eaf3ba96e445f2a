"""Recorders (where a run's draws and per-step statistics go: in memory, or a crash-safe record
on disk) and the conversion of a recorded run to an ArviZ DataTree."""

from .base import MemoryRecorder, Recorder, as_recorder, draw_index
from .datatree import RecordedRun, open_record, random_directions, to_datatree
from .disk import FORMAT, ZarrRecorder, is_record

__all__ = [
    "FORMAT",
    "MemoryRecorder",
    "RecordedRun",
    "Recorder",
    "ZarrRecorder",
    "as_recorder",
    "draw_index",
    "is_record",
    "open_record",
    "random_directions",
    "to_datatree",
]
