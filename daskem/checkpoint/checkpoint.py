"""Crash-safe checkpoints of EM fits, as Zarr v3 groups on any fsspec location.

Layout::

    RUN.zarr/                      attrs["daskem_checkpoint"]: format, daskem version, model
                                   spec, data fingerprint, fit configuration, random state,
                                   estimator (kind + hyperparameters). Written once.
      runs/<r>/                    one EM run (initialisation r of n_init)
        iterations/<n>/            state after n iterations (or n steps of a schedule
                                   that commits between iterations: then "step" = n):
                                   parameter arrays and the history arrays
                                   (log_likelihood, change, seconds, passes), all
                                   float64; engine state (accelerator, schedule);
                                   attrs["daskem_iteration"] = {iteration, [step],
                                   converged, finished, pruned, digests} written LAST
        pointer/                   attrs["daskem_pointer"] = {"iteration": n}, written after
                                   the iteration group is complete

Commit protocol: (1) write the iteration group's arrays, (2) write its attributes with a
SHA-256 digest of every array (an iteration without them is incomplete and invisible),
(3) move the pointer, (4) delete iterations older than the newest ``keep_last``. A crash
at any moment leaves the previous committed iteration readable. Readers list the
iteration groups (so a stale or missing pointer costs nothing), verify digests, shapes and
finiteness, and fall back to the next older iteration with a
:class:`CorruptCheckpointWarning` naming what was wrong.

Nothing here unpickles: attributes are JSON, arrays must be float64 (anything else is
refused), and an unknown format version is refused.

On object stores (S3, GCS) there is no atomic rename and listings may lag writes; the
protocol does not need renames, and a lagging listing only makes a reader resume from an
older committed iteration, never from a partial one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem

from daskem.checkpoint.store import CHECKPOINT_ATTR_KEY, read_float_arrays, write_float_array
from daskem.errors import StoreError

logger = logging.getLogger("daskem")

CHECKPOINT_FORMAT = 2
ROOT_KEY = CHECKPOINT_ATTR_KEY
ITERATION_KEY = "daskem_iteration"
POINTER_KEY = "daskem_pointer"
HISTORY_FIELDS = ("log_likelihood", "change", "seconds", "passes")

#: Fault-injection hook for tests: seconds to sleep after each array written by a commit,
#: so that a test can kill the writer in the middle of a checkpoint.
WRITE_DELAY_ENV = "DASKEM_CHECKPOINT_WRITE_DELAY"


class CheckpointMismatchError(StoreError):
    """A checkpoint was written for other data, another model or another configuration."""


class ForeignStoreError(StoreError):
    """The location holds Zarr data that is not a daskem checkpoint (never overwritten)."""


class UnreadableCheckpointError(StoreError):
    """The checkpoint's root document cannot be parsed."""


class CorruptCheckpointWarning(UserWarning):
    """A checkpointed iteration was unreadable or failed verification and was skipped."""


#: Root sections that must match for a fit to resume from a checkpoint.
COMPARED_SECTIONS = ("model", "data", "config")


def fit_metadata(model: Any, source: Any, split_every: int, **config: Any) -> dict[str, Any]:
    """The root attributes of a checkpoint of a fit (the ``daskem_checkpoint`` document).

    Parameters
    ----------
    model : Model or sequence of Model
        The model (its ``spec()``), or one per run (a model-selection grid).
    source : DataSource
        The data: their fingerprint (layout and a digest of sampled blocks), location,
        kind and reading options.
    split_every : int
        The reduction fan-in (part of the fit's configuration: it decides the rounding).
    **config
        More of the fit's configuration (initialisation, restarts, acceleration).

    Returns
    -------
    dict
        JSON-able sections ``daskem_version``, ``model``, ``data``, ``source`` and
        ``config``; :data:`COMPARED_SECTIONS` must match for a fit to resume.
    """
    from daskem import __version__

    data = source.fingerprint()
    location = data.pop("location")
    return {
        "daskem_version": __version__,
        "model": [m.spec() for m in model] if isinstance(model, list | tuple) else model.spec(),
        "data": data,
        "source": {"location": location, "kind": source.kind, "options": source.options},
        "config": {"split_every": split_every, **config},
    }


@dataclass(frozen=True)
class CheckpointState:
    """The state of an EM run after ``iteration`` iterations.

    Attributes
    ----------
    iteration : int
        Iterations completed.
    params : dict of str to ndarray
        Parameters to start the next iteration from (``Params.to_arrays()``).
    history : dict of str to ndarray
        ``log_likelihood``, ``change``, ``seconds`` and ``passes`` (cumulative passes over
        the data) of iterations 1..``iteration``.
    converged : bool
        Whether the convergence test was met.
    finished : bool
        Whether the run ended (converged, out of iterations or pruned).
    pruned : bool
        Whether restart pruning stopped the run (it is not resumed).
    passes : int
        Passes over the data made by the end of this state, initialisation included
        (iteration 0, the initial parameters, has no history to hold it).
    rules : tuple of (int, float, int)
        The stopping rules the run was fitted under: ``(from_iteration, tol, max_iter)``,
        one entry per change (a converged fit resumed with a smaller ``tol`` or a larger
        ``max_iter`` continues under the new rule from the iteration it had reached).
    step : int, optional
        The commit's number when a run commits between iterations (the steps of the
        incremental and online schedules, :mod:`daskem.em.schedules`): iterations are then
        stored by step, increasing, so a commit in the middle of an iteration never
        replaces the previous one. None: the iteration is the commit's number.
    """

    iteration: int
    params: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    converged: bool
    finished: bool
    pruned: bool = False
    passes: int = 0
    rules: tuple[tuple[int, float, int], ...] = ()
    step: int | None = None

    @property
    def key(self) -> int:
        """The number the commit is stored under: ``step``, else ``iteration``."""
        return self.iteration if self.step is None else self.step


def _digest(value: np.ndarray) -> str:
    data = np.ascontiguousarray(value, dtype="<f8")
    return hashlib.sha256(repr(data.shape).encode() + data.tobytes()).hexdigest()


def _first_difference(stored: Any, current: Any, prefix: str) -> tuple[str, Any, Any] | None:
    if isinstance(stored, dict) and isinstance(current, dict):
        # Name shape or dtype first, then the chunking, then the content digest: a change of
        # shape also changes the chunking and the digest, and the root cause is the useful one.
        order = {"row_chunks": 1, "digest": 2}
        for key in sorted(set(stored) | set(current), key=lambda k: (order.get(k, 0), k)):
            found = _first_difference(stored.get(key), current.get(key), f"{prefix}.{key}" if prefix else key)
            if found:
                return found
        return None
    return None if stored == current else (prefix, stored, current)


class Checkpoint:
    """A checkpoint location: a Zarr v3 group on a local path or fsspec URL.

    Parameters
    ----------
    location : str or os.PathLike
        Path or URL (``file://``, ``memory://``, ``s3://`` ...) of the group.
    storage_options : dict, optional
        fsspec options for a URL.
    """

    def __init__(self, location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        self.location = os.fspath(location)
        self.storage_options = storage_options or {}
        self._fs, self._root = fsspec.core.url_to_fs(self.location, **self.storage_options)
        # Zarr opens a file:// URL with fsspec's LocalFileSystem without auto_mkdir, which
        # cannot create the directories of new groups: give Zarr the plain local path.
        self._local = isinstance(self._fs, LocalFileSystem)
        self._store = self._root if self._local else self.location

    def __repr__(self) -> str:
        return f"Checkpoint({self.location!r})"

    # -- store access ---------------------------------------------------------------------

    def _group(self, path: str = "", mode: str = "r") -> zarr.Group:
        return zarr.open_group(
            store=self._store,
            path=path,
            mode=mode,  # type: ignore[arg-type]
            zarr_format=3,
            storage_options=None if self._local else self.storage_options or None,
        )

    def _children(self, path: str) -> list[str]:
        full = f"{self._root.rstrip('/')}/{path}"
        if not self._fs.isdir(full):
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(full, detail=False)]

    def _remove(self, path: str) -> None:
        full = f"{self._root.rstrip('/')}/{path}"
        if self._fs.exists(full):
            self._fs.rm(full, recursive=True)

    # -- the root -------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a checkpoint (its root metadata) exists at the location."""
        return bool(self._fs.exists(f"{self._root.rstrip('/')}/zarr.json"))

    def metadata(self) -> dict[str, Any]:
        """The root attributes: what was fitted, on which data, how."""
        try:
            meta = self._group().attrs.get(ROOT_KEY)
        except FileNotFoundError:
            raise StoreError(f"No daskem checkpoint at {self.location!r}: the path does not exist.") from None
        except (zarr.errors.ContainsArrayError, zarr.errors.NodeTypeValidationError):
            raise ForeignStoreError(
                f"{self.location!r} is a Zarr array, not a daskem checkpoint. Choose another checkpoint location."
            ) from None
        except Exception as err:  # a truncated or garbage root document
            raise UnreadableCheckpointError(
                f"The checkpoint metadata at {self.location!r} is unreadable: {err}"
            ) from None
        if not isinstance(meta, dict) or "format" not in meta:
            raise ForeignStoreError(
                f"{self.location!r} is a Zarr group but not a daskem checkpoint (a model file or other data). "
                "Choose another checkpoint location."
            )
        if meta["format"] != CHECKPOINT_FORMAT:
            raise StoreError(
                f"{self.location!r} uses checkpoint format {meta['format']!r}; this daskem reads format "
                f"{CHECKPOINT_FORMAT}. Upgrade daskem to resume it."
            )
        return meta

    def prepare(self, meta: dict[str, Any], *, compare: tuple[str, ...], overwrite: bool = False) -> dict[str, Any]:
        """Create the checkpoint with ``meta``, or check an existing one against it.

        Parameters
        ----------
        meta : dict
            Root attributes for a new checkpoint (JSON-able).
        compare : tuple of str
            Top-level sections of ``meta`` that must equal the stored ones to resume.
        overwrite : bool
            Delete whatever is at the location and start a new checkpoint.

        Returns
        -------
        dict
            The stored root attributes (``meta`` itself for a new checkpoint).

        Raises
        ------
        CheckpointMismatchError
            The stored checkpoint differs in a compared field (named, with both values).
        """
        if self.exists():
            try:
                stored = self.metadata()
            except UnreadableCheckpointError as err:
                # The root document is written in one piece when a checkpoint is created, so
                # an unreadable one with no run next to it is a crash at creation: nothing to lose.
                if self.runs() and not overwrite:
                    raise
                warnings.warn(f"Starting the checkpoint afresh: {err}", CorruptCheckpointWarning, stacklevel=2)
                self._remove("")
                return self.prepare(meta, compare=compare)
            # Never delete what is not a daskem checkpoint (ForeignStoreError propagates).
            if overwrite:
                self._remove("")
                return self.prepare(meta, compare=compare)
            for section in compare:
                found = _first_difference(stored.get(section), meta.get(section), section)
                if found and not self._has_iterations():
                    # Nothing was fitted yet (a fit that failed before its first iteration,
                    # e.g. on NaN data): nothing is lost by starting afresh.
                    logger.info("replacing the checkpoint at %r, which holds no fitted iteration", self.location)
                    self._remove("")
                    return self.prepare(meta, compare=compare)
                if found:
                    field, old, new = found
                    raise CheckpointMismatchError(
                        f"The checkpoint at {self.location!r} was written for {field}={old!r}, but this fit has "
                        f"{field}={new!r}. Resume with the same {section}, or pass overwrite=True "
                        "(daskem fit --force-restart) to start a new fit there."
                    )
            return stored
        stored = {"format": CHECKPOINT_FORMAT, **meta}
        # Group and attributes in one document: a crash leaves no root without its metadata.
        zarr.create_group(
            store=self._store,
            zarr_format=3,
            attributes={ROOT_KEY: stored},
            storage_options=None if self._local else self.storage_options or None,
        )
        return stored

    def _has_iterations(self) -> bool:
        """Whether any run holds an EM iteration, even a damaged one (iteration 0, the start, does not count)."""
        return any(i > 0 for r in self.runs() for i in self.run(r).iterations())

    def runs(self) -> list[int]:
        """Indices of the runs (initialisations) that have a checkpoint directory."""
        return sorted(int(name) for name in self._children("runs") if name.isdigit())

    def run(self, index: int) -> CheckpointRun:
        """The checkpoint of run (initialisation) ``index``."""
        return CheckpointRun(self, index)


class CheckpointRun:
    """The committed iterations of one EM run inside a :class:`Checkpoint`."""

    def __init__(self, checkpoint: Checkpoint, index: int) -> None:
        self.checkpoint = checkpoint
        self.index = index
        self.path = f"runs/{index}"

    def __repr__(self) -> str:
        return f"CheckpointRun({self.checkpoint.location!r}, run={self.index})"

    def iterations(self) -> list[int]:
        """Iteration numbers that have a directory, complete or not, ascending."""
        return sorted(int(n) for n in self.checkpoint._children(f"{self.path}/iterations") if n.isdigit())

    def pointer(self) -> int | None:
        """The iteration the pointer names, or None if it is missing or unreadable."""
        try:
            record = self.checkpoint._group(f"{self.path}/pointer").attrs.get(POINTER_KEY)
        except Exception:  # missing or garbage: readers scan instead
            return None
        value = record.get("iteration") if isinstance(record, dict) else None
        return value if isinstance(value, int) else None

    def read(self, iteration: int) -> CheckpointState:
        """Read and verify committed iteration ``iteration``.

        Raises
        ------
        StoreError
            The iteration is incomplete, unreadable or fails verification; the message
            says what was wrong.
        """
        where = f"iteration {iteration} of {self.checkpoint.location!r} (run {self.index})"
        try:
            group = self.checkpoint._group(f"{self.path}/iterations/{iteration}")
            info = group.attrs.get(ITERATION_KEY)
        except Exception as err:
            raise StoreError(f"{where}: unreadable metadata ({type(err).__name__}: {err})") from None
        if not isinstance(info, dict) or "digests" not in info:
            raise StoreError(f"{where}: incomplete (no commit record; the writer stopped midway)")
        try:
            arrays = read_float_arrays(group, where)
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"{where}: unreadable array data ({type(err).__name__}: {err})") from None
        digests = info["digests"]
        if set(arrays) != set(digests):
            missing = sorted(set(digests) ^ set(arrays))
            raise StoreError(f"{where}: arrays {missing} missing or unexpected")
        for name, value in arrays.items():
            if _digest(value) != digests[name]:
                raise StoreError(f"{where}: array {name!r} does not match its digest (truncated, lost or altered)")
            # The first change is +inf by definition; everything else must be finite.
            finite = value[1:] if name == "history_change" else value
            if not np.all(np.isfinite(finite)):
                raise StoreError(f"{where}: array {name!r} holds NaN or infinite values")
        history = {f: arrays.pop(f"history_{f}") for f in HISTORY_FIELDS}
        records = int(info["iteration"])
        step = info.get("step")
        if (iteration if step is None else step) != iteration or history["log_likelihood"].shape != (records,):
            raise StoreError(
                f"{where}: history has {history['log_likelihood'].shape[0]} entries, expected {records} (stored as "
                f"{'iteration' if step is None else 'step'} {iteration})"
            )
        recorded = history["passes"]
        return CheckpointState(
            iteration=records,
            step=None if step is None else int(step),
            params=arrays,
            history=history,
            converged=bool(info["converged"]),
            finished=bool(info["finished"]),
            pruned=bool(info.get("pruned", False)),
            passes=int(info.get("passes", recorded[-1] if recorded.size else 0)),
            rules=tuple((int(i), float(t), int(m)) for i, t, m in info.get("rules", ())),
        )

    def latest(self, validate: Callable[[dict[str, np.ndarray]], Any] | None = None) -> CheckpointState | None:
        """The newest committed iteration that verifies, or None if there is none.

        Iterations that fail verification are skipped with a
        :class:`CorruptCheckpointWarning` naming what was wrong. ``validate`` (e.g. a
        model's ``params_from_arrays``) also checks the parameter arrays; an iteration
        it rejects (any ``ValueError``) is skipped the same way.
        """
        pointer = self.pointer()
        for iteration in reversed(self.iterations()):
            try:
                state = self.read(iteration)
                if validate is not None:
                    try:
                        validate(state.params)
                    except (ValueError, KeyError) as err:
                        raise StoreError(
                            f"iteration {iteration} of {self.checkpoint.location!r} (run {self.index}): parameters do "
                            f"not fit the model ({type(err).__name__}: {err})"
                        ) from None
                return state
            except StoreError as err:
                # An uncommitted newest iteration is the normal trace of a crash mid-write;
                # anything the pointer already named is damage and is reported.
                if (pointer is None or iteration > pointer) and "incomplete" in str(err):
                    continue
                warnings.warn(f"Skipping a damaged checkpoint: {err}.", CorruptCheckpointWarning, stacklevel=2)
        return None

    def commit(self, state: CheckpointState, keep_last: int) -> None:
        """Write ``state`` by the commit protocol, then prune to the newest ``keep_last``."""
        delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        arrays = dict(state.params)
        arrays.update({f"history_{f}": np.asarray(state.history[f], dtype=np.float64) for f in HISTORY_FIELDS})
        group = self.checkpoint._group(f"{self.path}/iterations/{state.key}", mode="w")
        for name, value in arrays.items():
            write_float_array(group, name, value)
            if delay:
                time.sleep(delay)
        group.attrs[ITERATION_KEY] = {
            "iteration": state.iteration,
            **({} if state.step is None else {"step": state.step}),
            "converged": state.converged,
            "finished": state.finished,
            "pruned": state.pruned,
            "passes": state.passes,
            "rules": [list(rule) for rule in state.rules],
            "digests": {name: _digest(value) for name, value in arrays.items()},
        }
        self.checkpoint._group(f"{self.path}/pointer", mode="w").attrs[POINTER_KEY] = {"iteration": state.key}
        # Keep the newest keep_last iterations up to this one; anything newer is a leftover
        # of an interrupted or damaged commit that this one supersedes.
        iterations = self.iterations()
        keep = [i for i in iterations if i <= state.key][-keep_last:]
        for old in iterations:
            if old not in keep:
                self.checkpoint._remove(f"{self.path}/iterations/{old}")
