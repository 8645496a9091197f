"""The model contract every EM model implements.

A model is a frozen dataclass of hyperparameters whose methods are pure functions of
explicit values: nothing mutates ``self`` and statistics are returned, never cached.
This module must not import dask: models are plain NumPy so they can be shipped to
workers and tested in isolation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from daskem.errors import DataError

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


# -- optional capabilities -----------------------------------------------------------------
#
# A model declares a capability by implementing its methods; the engine asks with
# ``isinstance(model, Capability)`` (the protocols are runtime-checkable, so mypy checks the
# signatures where a model is annotated with one) and the contract suite runs the law of
# every capability a model has (:mod:`daskem.testing.contract`).


@runtime_checkable
class VectorForm(Protocol):
    """Parameters as one unconstrained float vector (SQUAREM extrapolates on it).

    Law: ``from_vector(to_vector(p), p)`` equals ``p``, and every finite vector maps
    back to valid parameters.
    """

    def to_vector(self, params: Any) -> FloatArray:
        """The parameters as a 1-D float vector."""
        ...

    def from_vector(self, vector: FloatArray, like: Any) -> Any:
        """Parameters from a vector of :meth:`to_vector`'s layout (``like`` gives the frozen parts)."""
        ...


@runtime_checkable
class StatsAlgebra(Protocol):
    """Statistics computed under different parameters, merged and scaled.

    Incremental EM keeps each block's statistics from the parameters the block was last
    read with and merges them into one total; online EM keeps a running average of
    statistics from many parameter sets (:mod:`daskem.em.schedules`). Moments taken around
    a reference point (a mixture's means) are re-expressed around another one exactly.

    Laws: ``recentre(s, s)`` is ``s``; ``combine(a, recentre(b, a))`` equals
    ``combine(a, b)`` bitwise when ``a`` and ``b`` share their reference, and otherwise
    gives the M-step of the statistics re-expressed the other way round to rounding;
    ``m_step(scale(s, f))`` equals ``m_step(s)`` to rounding for ``f > 0`` (for M-steps
    without priors, whose pseudo-counts weigh against ``n``).
    """

    def recentre(self, stats: Any, like: Any) -> Any:
        """``stats`` with their moments re-expressed around the reference point of ``like``
        (``stats`` itself when both share it)."""
        ...

    def scale(self, stats: Any, factor: float) -> Any:
        """``stats`` with every additive quantity (``n`` and ``loglik`` included) times ``factor``."""
        ...


def merge_stats(model: Any, a: Any, b: Any) -> Any:
    """The statistics of the rows behind ``a`` and ``b``, computed under any parameters each.

    ``model.combine(a, model.recentre(b, a))``: bitwise ``combine(a, b)`` when both share
    their reference point (:class:`StatsAlgebra`).
    """
    return model.combine(a, model.recentre(b, a))


@runtime_checkable
class BatchedEStep(Protocol):
    """The statistics of several parameter sets on one block, sharing work (restarts).

    Models with equal ``batch_key()`` batch together: one ``e_step_batch`` computes the
    parameter sets of all of them (k-means: any numbers of clusters, so a selection grid
    shares the work as restarts do).

    Law: each set's statistics equal its own model's ``e_step`` bitwise.
    """

    def batch_key(self) -> Hashable:
        """Equal for the models whose parameter sets one ``e_step_batch`` computes together."""
        ...

    def e_step_batch(self, params: Sequence[Any], block: NDArray[Any]) -> tuple[Any, ...]:
        """One statistics object per parameter set, in order."""
        ...


@runtime_checkable
class OwnConvergence(Protocol):
    """The model's own stopping rule instead of the change of the mean log-likelihood.

    Law: parameters that did not move have converged, for any ``tol >= 0``.
    """

    def converged(self, stats: Any, params: Any, new_params: Any, tol: float) -> bool:
        """Whether the step from ``params`` to ``new_params`` ends the fit."""
        ...


@runtime_checkable
class RegularisedMStep(Protocol):
    """An M-step that is not an exact maximiser (a regularised covariance), with its gap.

    EM never lowers the log-likelihood when the M-step maximises the expected complete-data
    log-likelihood Q; a regularised M-step gives up part of that maximum, and the next
    log-likelihood may then fall by at most what it gave up. The monitor tolerates that much
    before it warns of a decrease.

    Law: the gap is >= 0, and 0 without regularisation.
    """

    def m_step_gap(self, stats: Any) -> float:
        """Q at the unregularised maximiser minus Q at the M-step's parameters (>= 0; inf if
        the unregularised maximiser is degenerate)."""
        ...


@runtime_checkable
class MessagePassing(Protocol):
    """Rows that depend on the rows of neighbouring blocks (an HMM sequence split across blocks).

    ``carries_messages`` says whether this instance needs the messages (an HMM fitted on
    blocks of whole sequences does not). A first pass summarises every block, the driver
    chains the summaries into one message per block, and the E-step takes each block's
    message. Law: the statistics equal those of the unsplit rows.
    """

    @property
    def carries_messages(self) -> bool:
        """Whether blocks need the messages of their neighbours."""
        ...

    def summarize(self, params: Any, block: NDArray[Any]) -> Any:
        """A summary of one block (what its neighbours need to know)."""
        ...

    def messages(self, params: Any, summaries: list[Any]) -> list[Any]:
        """One message per block from the summaries of consecutive blocks."""
        ...

    def e_step(self, params: Any, block: NDArray[Any], message: Any = None) -> Any:
        """Statistics of one block given its message."""
        ...


@runtime_checkable
class RowScores(Protocol):
    """A score per row, computed block by block (``score_samples``; predictions map the same way).

    Law: the scores of a split block are the scores of its pieces, and they sum to the
    statistics' ``loglik`` of the same rows.
    """

    def score_samples(self, params: Any, block: NDArray[Any]) -> FloatArray:
        """One score per row of ``block``: shape (n,)."""
        ...


@runtime_checkable
class MissingValues(Protocol):
    """NaN entries of the data treated as missing at random and marginalised.

    A model with a ``missing`` hyperparameter (:data:`daskem.models.missing.MISSING_POLICIES`):
    with ``"marginalize"`` its E-step and per-row methods take rows with NaN entries (the
    observed coordinates' likelihood, the missing ones' conditional expectations), and
    only infinite values are errors. Law: on a block without NaN the statistics are the
    complete-data ones bit for bit.
    """

    missing: str


def marginalizes_missing(model: Any) -> bool:
    """Whether ``model`` takes NaN entries as missing values (see :class:`MissingValues`)."""
    return isinstance(model, MissingValues) and model.missing == "marginalize"


def carries_messages(model: Any) -> bool:
    """Whether ``model`` needs messages between blocks (see :class:`MessagePassing`)."""
    return isinstance(model, MessagePassing) and bool(model.carries_messages)


def block_stats(model: Any, params: Any, blocks: Sequence[NDArray[Any]]) -> list[Any]:
    """The statistics of consecutive blocks of rows, in memory.

    Rows are independent for most models, and each block's statistics are its
    ``e_step``. A model whose rows depend on their neighbours implements
    :class:`MessagePassing`; the statistics are then exactly those of the unsplit rows.
    The EM engine does the same with one pass for the summaries.
    """
    if not carries_messages(model):
        return [model.e_step(params, b) for b in blocks]
    messages = model.messages(params, [model.summarize(params, b) for b in blocks])
    return [model.e_step(params, b, m) for b, m in zip(blocks, messages, strict=True)]


def row_uniforms(seed: int, first: int, rows: int, per_row: int, stream: int = 0) -> FloatArray:
    """Uniform draws for the rows ``first .. first + rows - 1`` of the data, however chunked.

    A counter-based generator (:class:`numpy.random.Philox` keyed by ``seed``, ``stream``
    in the counter's second word) positioned by the row's index in the data, so a row
    gets the same numbers whichever block holds it. Shape ``(rows, w)``, ``w`` the
    multiple of 4 at least ``per_row`` (Philox yields 4 values per counter step).
    """
    width = 4 * -(-per_row // 4)
    generator = np.random.Philox(key=int(seed), counter=[0, int(stream), 0, 0])
    generator.advance(int(first) * width // 4)
    return np.random.Generator(generator).random((rows, width))


@runtime_checkable
class SampledEStep(Protocol):
    """Stochastic EM's E-step: the latent variables drawn instead of their expectations.

    Law: the statistics are those of the hard assignments drawn from the posteriors with
    the given uniforms (one row of ``uniforms`` per row of the block), and ``loglik`` is
    the observed-data log-likelihood as :meth:`Model.e_step`'s.
    """

    def sample_e_step(self, params: Any, block: NDArray[Any], uniforms: FloatArray) -> Any:
        """The block's statistics under latent variables drawn with ``uniforms``."""
        ...


def count_nonfinite(x: Any) -> int:
    """NaN or infinite values of a dense array or a scipy.sparse block (its stored values)."""
    values = x.data if sparse.issparse(x) else np.asarray(x)
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def count_infinite(x: Any) -> int:
    """Infinite values of a dense array (what a model that marginalises NaN still refuses)."""
    return int(np.count_nonzero(np.isinf(np.asarray(x))))


def dense_rows(x: Any) -> NDArray[Any]:
    """Rows as a dense array (a sparse block densified: callers take a few rows only)."""
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def check_width(block: NDArray[Any], d: int) -> None:
    """Refuse a block that is not 2-D with ``d`` features (the parameters' width).

    Raises
    ------
    DataError
        The block's shape, the width expected and the fix.
    """
    if block.ndim != 2 or block.shape[1] != d:
        raise DataError(
            f"X has shape {block.shape}, but the parameters describe {d} features. Pass rows of {d} features."
        )


def split_weights(block: Any, weighted: bool) -> tuple[Any, Any]:
    """A dense block's features and its sample weights: its last column when ``weighted``
    (weighted fits append the weights to the rows), else the block and None."""
    return (block[:, :-1], block[:, -1]) if weighted else (block, None)
