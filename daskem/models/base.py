"""The model contract every EM model implements.

A model is a frozen dataclass of hyperparameters whose methods are pure functions of
explicit values: nothing mutates ``self`` and statistics are returned, never cached.
This module must not import dask: models are plain NumPy so they can be shipped to
workers and tested in isolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

P = TypeVar("P", bound="Params")
S = TypeVar("S", bound="Stats")


@runtime_checkable
class Params(Protocol):
    """Parameters of a model: named float arrays, all the checkpoint layer needs."""

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as a mapping of names to NumPy arrays."""
        ...


@runtime_checkable
class Stats(Protocol):
    """Sufficient statistics of a set of rows under given parameters.

    Attributes every model's statistics carry: ``n`` (rows seen), ``loglik`` (the
    summed log-likelihood of those rows under the parameters the statistics were
    computed with) and ``n_nonfinite`` (NaN or infinite values seen in the data).
    """

    n: float
    loglik: float
    n_nonfinite: int


class Model(Protocol[P, S]):
    """What the EM engine needs from a model.

    ``e_step`` runs on workers; ``combine`` runs on workers inside the tree reduction
    and must be associative and commutative with ``zero_stats`` as its identity;
    ``m_step`` and ``log_likelihood`` run on the driver and see statistics only.
    """

    def e_step(self, params: P, block: NDArray[Any]) -> S:
        """Statistics of one block of rows under ``params``."""
        ...

    def zero_stats(self, params: P) -> S:
        """The identity of ``combine`` for statistics computed under ``params``."""
        ...

    def combine(self, a: S, b: S) -> S:
        """Merge the statistics of two disjoint sets of rows."""
        ...

    def m_step(self, stats: S, params: P | None) -> P:
        """New parameters from the statistics of all rows.

        ``params`` are the previous parameters (shift reference, frozen parts, fallback for
        empty components), or ``None`` for an initial M-step from an initialiser's pass.
        """
        ...

    def log_likelihood(self, stats: S) -> float:
        """The total log-likelihood of the rows behind ``stats``."""
        ...

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> P:
        """Rebuild parameters from :meth:`Params.to_arrays` output (checkpoints, files)."""
        ...

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values (stored beside parameters)."""
        ...


def block_stats(model: Any, params: Any, blocks: Sequence[NDArray[Any]]) -> list[Any]:
    """The statistics of consecutive blocks of rows, in memory.

    Rows are independent for most models, and each block's statistics are its
    ``e_step``. A model whose rows depend on their neighbours (a hidden Markov model's
    sequence split across blocks) says so with ``carries_messages = True`` and provides
    ``summarize(params, block)`` (a summary of one block), ``messages(params, summaries)``
    (chains the summaries of consecutive blocks into one message per block) and
    ``e_step(params, block, message)``; the statistics are then exactly those of the
    unsplit rows. The EM engine does the same with one pass for the summaries
    (:func:`daskem.em.engine.block_messages`).
    """
    if not getattr(model, "carries_messages", False):
        return [model.e_step(params, b) for b in blocks]
    messages = model.messages(params, [model.summarize(params, b) for b in blocks])
    return [model.e_step(params, b, m) for b, m in zip(blocks, messages, strict=True)]
