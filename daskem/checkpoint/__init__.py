"""Zarr v3 storage of parameters: fitted model files (and, later, fit checkpoints)."""

from daskem.checkpoint.store import FORMAT_VERSION, read_arrays_group, write_arrays_group

__all__ = ["FORMAT_VERSION", "read_arrays_group", "write_arrays_group"]
