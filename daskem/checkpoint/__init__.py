"""Zarr v3 storage of parameters: fitted model files and crash-safe fit checkpoints."""

from daskem.checkpoint.checkpoint import (
    Checkpoint,
    CheckpointMismatchError,
    CheckpointRun,
    CheckpointState,
    CorruptCheckpointWarning,
)
from daskem.checkpoint.store import FORMAT_VERSION, read_arrays_group, write_arrays_group

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointMismatchError",
    "CheckpointRun",
    "CheckpointState",
    "CorruptCheckpointWarning",
    "read_arrays_group",
    "write_arrays_group",
]
