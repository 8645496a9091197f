"""Data sources and layout checks."""

from daskem.io.sources import DataSource, as_source, default_chunk_rows, open_zarr_array

__all__ = ["DataSource", "as_source", "default_chunk_rows", "open_zarr_array"]
