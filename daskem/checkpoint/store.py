"""Fitted models as Zarr v3 groups: named float arrays plus JSON attributes, no pickle.

Layout of a model group::

    MODEL.zarr/            attrs: {"daskem": {"format": 1, "version": ..., "kind": ...,
                                              "estimator": {hyperparameters},
                                              "fit": {fitted scalars and history}}}
      weights, means, ...  float64 arrays, one per parameter

Reading refuses an unknown format version, a non-float array and a group that is not a
daskem model, each with a message saying what was found.

Writing never deletes what it did not write: :func:`write_model` refuses a location that
holds anything but an earlier daskem model file (a directory of the user's files, a Zarr
array of data, a checkpoint), replaces a model file only when asked to, and writes the new
group beside the old one before swapping them, so a crash while saving leaves the old
model intact.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import uuid
from typing import Any

import fsspec
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem

from daskem.errors import DestinationExistsError, StoreError

FORMAT_VERSION = 1
ATTR_KEY = "daskem"
#: The root attribute of a fit checkpoint (:mod:`daskem.checkpoint.checkpoint`).
CHECKPOINT_ATTR_KEY = "daskem_checkpoint"


def write_float_array(group: zarr.Group, name: str, value: np.ndarray) -> None:
    """Write ``value`` as one uncompressed float64 chunk ``name`` of ``group``."""
    data = np.ascontiguousarray(value, dtype=np.float64)
    array = group.create_array(
        name, shape=data.shape, dtype="float64", chunks=tuple(max(1, s) for s in data.shape), compressors=None
    )
    array[...] = data


def read_float_arrays(group: zarr.Group, where: str) -> dict[str, np.ndarray]:
    """Read every array of ``group``, refusing any dtype but float64 (nothing else is trusted)."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in group.arrays():
        if np.dtype(array.dtype) != np.float64:
            raise StoreError(f"{where}: array {name!r} has dtype {array.dtype}; daskem stores float64 only.")
        arrays[name] = np.asarray(array[...])
    return arrays


def write_arrays_group(
    location: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    *,
    overwrite: bool = False,
) -> None:
    """Write ``arrays`` and JSON ``attrs`` as a Zarr v3 group at ``location``.

    With ``overwrite=False`` (the default) an existing node at ``location`` is an error;
    :func:`write_model` is the safe way to replace a model file.
    """
    group = zarr.open_group(store=os.fspath(location), mode="w" if overwrite else "w-", zarr_format=3)
    for name, value in arrays.items():
        write_float_array(group, name, value)
    group.attrs[ATTR_KEY] = {"format": FORMAT_VERSION, **attrs}


def read_arrays_group(location: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a group written by :func:`write_arrays_group`: its arrays and attributes."""
    loc = os.fspath(location)
    try:
        group = zarr.open_group(store=loc, mode="r")
    except FileNotFoundError:
        raise StoreError(f"No daskem model found at {loc!r}: the path does not exist.") from None
    except (zarr.errors.NodeTypeValidationError, zarr.errors.ContainsArrayError):
        raise StoreError(f"{loc!r} is a Zarr array, not a daskem model group.") from None
    meta = group.attrs.get(ATTR_KEY)
    if not isinstance(meta, dict) or "format" not in meta:
        raise StoreError(f"{loc!r} is a Zarr group but not a daskem model (no '{ATTR_KEY}' attribute).")
    if meta["format"] != FORMAT_VERSION:
        raise StoreError(
            f"{loc!r} uses daskem model format {meta['format']!r}; this daskem reads format "
            f"{FORMAT_VERSION}. Upgrade daskem to read it."
        )
    return read_float_arrays(group, repr(loc)), meta


def existing_content(location: str | os.PathLike[str]) -> tuple[str, str] | None:
    """What is at ``location``, read without changing anything.

    Returns
    -------
    tuple of (str, str) or None
        None when nothing is there (or an empty directory); else ``(kind, description)``
        with ``kind`` one of ``"model"`` (a daskem model file), ``"checkpoint"`` (a daskem
        fit checkpoint), ``"zarr"`` (any other Zarr node, e.g. data), ``"files"`` (a
        directory of other files) or ``"file"``, and a description for messages.
    """
    fs, root = fsspec.core.url_to_fs(os.fspath(location))
    root = root.rstrip("/")
    if not fs.exists(root):
        return None
    if not fs.isdir(root):
        return "file", f"a file of {fs.size(root):,} bytes"
    entries = fs.ls(root, detail=False)
    if not entries:
        return None
    meta = f"{root}/zarr.json"
    if not fs.isfile(meta):
        return "files", f"a directory of {len(entries)} entries that is not a daskem model"
    try:
        doc = json.loads(fs.cat_file(meta))
    except (ValueError, OSError):
        return "zarr", "a Zarr store whose metadata (zarr.json) is unreadable"
    if not isinstance(doc, dict):
        return "zarr", "a Zarr store whose metadata (zarr.json) is unreadable"
    if doc.get("node_type") == "array":
        return "zarr", f"a Zarr array of shape {tuple(doc.get('shape', ()))} and dtype {doc.get('data_type')} (data)"
    attrs = doc.get("attributes") or {}
    model = attrs.get(ATTR_KEY)
    if isinstance(model, dict) and "format" in model:
        return "model", f"a daskem model file ({model.get('kind', 'unknown kind')})"
    if CHECKPOINT_ATTR_KEY in attrs:
        return "checkpoint", "a daskem fit checkpoint"
    return "zarr", f"a Zarr group of {len(entries) - 1} entries that is not a daskem model"


def check_model_destination(location: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse to write a model file over anything but an earlier model file.

    Parameters
    ----------
    location : str or os.PathLike
        Where the model file would be written.
    overwrite : bool
        Whether an earlier daskem model file there may be replaced.

    Raises
    ------
    DestinationExistsError
        ``location`` holds a model file and ``overwrite`` is False, or it holds anything
        else (data, a checkpoint, other files), which is never replaced.
    """
    found = existing_content(location)
    if found is None:
        return
    kind, what = found
    loc = os.fspath(location)
    if kind == "model":
        if not overwrite:
            raise DestinationExistsError(
                f"{loc!r} already holds {what}. Pass overwrite=True (daskem: --overwrite) to replace it, or "
                "choose another path."
            )
        return
    raise DestinationExistsError(
        f"{loc!r} already holds {what}. daskem replaces only its own model files and never deletes anything "
        "else: choose another path for the model."
    )


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: str, b: str) -> bool:
    """Swap two local paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def write_model(
    location: str | os.PathLike[str], arrays: dict[str, np.ndarray], attrs: dict[str, Any], *, overwrite: bool
) -> None:
    """Write a model file at ``location``, never losing what was there.

    The group is written beside ``location`` (a hidden sibling), then moved into place:
    on a local disk an earlier model file is swapped with the new one in one atomic
    rename (Linux), or moved aside first, and deleted only once the new file is in
    place; a crash while writing leaves the earlier model intact. On object stores
    (no rename) the earlier model is deleted after the new group is completely written.

    Parameters
    ----------
    location : str or os.PathLike
        Path or fsspec URL of the model group.
    arrays, attrs
        As for :func:`write_arrays_group`.
    overwrite : bool
        Whether an earlier daskem model file at ``location`` may be replaced. Anything
        else there is never replaced (:func:`check_model_destination`).
    """
    check_model_destination(location, overwrite=overwrite)
    fs, root = fsspec.core.url_to_fs(os.fspath(location))
    root = root.rstrip("/")
    parent, _, name = root.rpartition("/")
    staging = f"{parent}/.{name}.writing-{uuid.uuid4().hex[:12]}"
    local = isinstance(fs, LocalFileSystem)
    if local:
        os.makedirs(parent or "/", exist_ok=True)
    try:
        write_arrays_group(staging if local else fs.unstrip_protocol(staging), arrays, attrs)
        if local and not (os.path.isdir(root) and os.listdir(root)):
            os.replace(staging, root)  # nothing there, or an empty directory
        elif not local and not fs.exists(root):
            fs.mv(staging, root, recursive=True)
        elif local:
            if not _exchange(staging, root):
                aside = f"{parent}/.{name}.replaced-{uuid.uuid4().hex[:12]}"
                os.rename(root, aside)
                os.rename(staging, root)
                staging = aside
            shutil.rmtree(staging)
        else:
            fs.rm(root, recursive=True)
            fs.mv(staging, root, recursive=True)
    finally:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
