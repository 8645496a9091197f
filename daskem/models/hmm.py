"""Hidden Markov models by Baum-Welch: pure E-step, combine and M-step per block of rows.

A block is a run of consecutive rows of a sequence file with one extra last column, the
start flag: 1 where a new sequence begins (:func:`daskem.em.sequences.sequence_source`
adds it from the sequences' lengths). The E-step runs the scaled forward-backward
recursion over the block (:mod:`daskem.models.hmm_kernels`) and returns the expected
start counts, the expected transition counts and the emission statistics under the
state posteriors.

Emissions are components: :class:`HMMModel` holds the Markov chain (start and
transition probabilities, the recursions, the messages between blocks, Viterbi) and one
emission object implementing :class:`Emission` (log-densities of the rows in every
state, statistics under the state posteriors, their M-step with its priors, parameters
to and from named arrays and a vector, spec): :class:`GaussianEmission` (the Gaussian
mixture's covariance types and moments, each state's around its own current mean,
:meth:`daskem.models.gmm.GaussianMixtureModel.moments`) and :class:`CategoricalEmission`
(symbol counts). A new emission plugs in without touching :class:`HMMModel`.

Blocks that hold whole sequences are independent (``carry=False``, one pass per
iteration). A sequence split across blocks is handled exactly with ``carry=True``: a
first pass summarises every block by its transfer matrix, the driver chains them into
the forward message entering each block and the backward message leaving it
(:meth:`HMMModel.messages`), and the E-step pass starts each block from its messages,
so the statistics are those of the unsplit sequence (two passes per iteration). The
M-steps are hmmlearn's, priors included (Dirichlet priors on the start and transition
probabilities and the emission probabilities; hmmlearn's normal-inverse-Wishart-style
``means_prior``/``means_weight``/``covars_prior``/``covars_weight`` for Gaussian
states), so one iteration equals hmmlearn's to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from daskem.errors import DataError, NumericalError, ParameterError
from daskem.models.gaussian import FULL_COVARIANCE, CovarianceType, FloatArray, check_shape, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams, GaussianMixtureStats

_EPS10 = 10.0 * np.finfo(np.float64).eps


def _kernels() -> Any:
    """The compiled kernels, imported on first use: numba costs ~100 MiB of worker memory,
    which the other models (and a worker that never runs an HMM) should not pay."""
    from daskem.models import hmm_kernels

    return hmm_kernels


#: Probabilities are floored here in the vector form (log of an exact zero is -inf).
_LOG_FLOOR = 1e-300

#: hmmlearn's fallback for a full or tied covariance that is not positive definite (a state
#: collapsed onto a few rows): its densities use ``covariance + 1e-7 * I`` (hmmlearn's
#: ``stats._log_multivariate_normal_density_full``), its ``covars_`` stay as estimated.
_DENSITY_FLOOR = 1e-7

#: The implementations of hmmlearn's recursions: daskem computes both the same (stable) way.
IMPLEMENTATIONS = ("scaling", "log")


@dataclass(frozen=True)
class HMMStats:
    """Sufficient statistics of a set of rows of sequences under one parameter set.

    Attributes
    ----------
    n : float
        Rows seen.
    loglik : float
        Log-likelihood of the rows given the rows before them.
    n_nonfinite : int
        NaN or infinite values seen.
    start : ndarray of shape (k,)
        Expected number of sequences starting in each state.
    trans : ndarray of shape (k, k)
        Expected number of transitions between states.
    emission : object
        The emission's statistics under the state posteriors (:meth:`Emission.stats`):
        the Gaussian moments, or the expected symbol counts (k, n_features).
    """

    n: float
    loglik: float
    n_nonfinite: int
    start: FloatArray = field(repr=False)
    trans: FloatArray = field(repr=False)
    emission: Any = field(repr=False)


@dataclass(frozen=True)
class HMMMessage:
    """What a block needs from the blocks around it.

    Attributes
    ----------
    alpha_in : ndarray of shape (k,)
        Normalised forward message at the row before the block.
    beta_out : ndarray of shape (k,)
        Normalised backward message at the block's last row.
    """

    alpha_in: FloatArray
    beta_out: FloatArray


@dataclass(frozen=True)
class ViterbiMessage:
    """What a block's Viterbi decoding needs from the blocks around it.

    Attributes
    ----------
    delta_in : ndarray of shape (k,)
        Best-path log-scores of the states at the row before the block.
    exit_state : int
        The state of the best path at the block's last row.
    """

    delta_in: FloatArray
    exit_state: int


@dataclass(frozen=True)
class HMMParams:
    """Parameters of an HMM (hmmlearn's meanings): the chain's and the emission's.

    Attributes
    ----------
    startprob : ndarray of shape (k,)
        Probability of each state at the start of a sequence.
    transmat : ndarray of shape (k, k)
        Transition probabilities (rows: from, columns: to).
    emission : object
        The emission's parameters (:class:`GaussianEmissionParams`,
        :class:`CategoricalEmissionParams`).
    """

    startprob: FloatArray
    transmat: FloatArray
    emission: Any

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays (the chain's, then the emission's)."""
        return {"startprob": self.startprob, "transmat": self.transmat, **self.emission.to_arrays()}


@dataclass(frozen=True)
class GaussianEmissionParams:
    """Gaussian state densities (covariances in scikit-learn's mixture shapes: (k,)
    spherical, (k, d) diag, (d, d) tied, (k, d, d) full, as their precision Cholesky factors)."""

    means: FloatArray
    covariances: FloatArray
    precisions_cholesky: FloatArray

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {"means": self.means, "covariances": self.covariances, "precisions_cholesky": self.precisions_cholesky}

    @property
    def mixture(self) -> GaussianMixtureParams:
        """The state densities as mixture parameters (unit weights: log-weights 0)."""
        k = self.means.shape[0]
        return GaussianMixtureParams(np.ones(k), self.means, self.covariances, self.precisions_cholesky)


@dataclass(frozen=True)
class CategoricalEmissionParams:
    """Symbol probabilities of every state: ``emissionprob`` of shape (k, n_features)."""

    emissionprob: FloatArray

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {"emissionprob": self.emissionprob}


def _normalize_rows(counts: FloatArray, previous: FloatArray) -> FloatArray:
    """Rows of ``counts`` scaled to sum 1; a row with nothing in it keeps ``previous``'s."""
    sums = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = counts / sums
    return np.where(sums > 0, out, previous)


def _dirichlet_map(prior: Any, counts: FloatArray, previous: FloatArray, keep_zeros: bool) -> FloatArray:
    """hmmlearn's MAP update of probabilities under a Dirichlet prior (``prior - 1 + counts``)."""
    values = np.maximum(np.asarray(prior, dtype=np.float64) - 1.0 + counts, 0.0)
    if keep_zeros:
        # Structural zeros (a left-right model's forbidden transitions) stay zero.
        values = np.where(previous == 0, 0.0, values)
    return _normalize_rows(values, previous)


def _log(p: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def check_probabilities(name: str, value: FloatArray) -> None:
    """Require non-negative rows summing to 1 (to 1e-8), naming the first that does not."""
    sums = value.sum(axis=-1)
    bad = np.flatnonzero(~np.isclose(sums, 1.0, rtol=0.0, atol=1e-8) | (value < 0).any(axis=-1).ravel())
    if bad.size:
        where = f"row {int(bad[0])} of {name}" if value.ndim > 1 else name
        raise ParameterError(
            f"{where} must hold non-negative probabilities that sum to 1; it sums to {float(sums.ravel()[bad[0]])!r}"
            f" (values {value[bad[0]] if value.ndim > 1 else value!r}). Normalise it, e.g. {name} /= "
            f"{name}.sum(axis=-1, keepdims=True)."
        )


def start_flags(block: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Split a block into its data columns and its start flags (the last column)."""
    return block[:, :-1], np.ascontiguousarray(block[:, -1] != 0)


class Emission(Protocol):
    """The state densities of an :class:`HMMModel`, a component of it.

    An emission is a frozen dataclass of its hyperparameters (so the HMM holding it stays
    picklable and tokenizes deterministically); every method is a pure function of its
    arguments. Its parameters are an object with ``to_arrays()`` (the names join the
    HMM's ``startprob`` and ``transmat`` in model files and checkpoints); its statistics
    are anything :meth:`combine` sums.

    Attributes
    ----------
    kind : str
        The ``"model"`` of the HMM's :meth:`HMMModel.spec` (``"gaussian_hmm"``).
    """

    kind: ClassVar[str]

    def log_prob(self, params: Any, X: NDArray[Any]) -> FloatArray:
        """Log-density of every row of ``X`` in every state: float64 of shape (n, k)."""
        ...

    def stats(self, params: Any, X: NDArray[Any], gamma: FloatArray) -> Any:
        """Statistics of the rows ``X`` under the state posteriors ``gamma`` (n, k)."""
        ...

    def zero_stats(self, params: Any) -> Any:
        """Statistics of no rows: the identity of :meth:`combine`."""
        ...

    def combine(self, a: Any, b: Any) -> Any:
        """Sum the statistics of two disjoint sets of rows."""
        ...

    def recentre(self, stats: Any, like: Any) -> Any:
        """``stats`` with their moments re-expressed around the reference point of ``like``
        (``stats`` itself when both share it, or when they have none): the emission's part
        of :class:`daskem.models.base.StatsAlgebra`."""
        ...

    def scale(self, stats: Any, factor: float) -> Any:
        """``stats`` with every additive quantity times ``factor`` (the same references)."""
        ...

    def m_step(self, stats: Any, params: Any, update: str) -> Any:
        """New parameters (hmmlearn's M-step, the emission's priors included) for those of
        its letters in ``update`` (the HMM's ``params``); the others are kept."""
        ...

    def params_from_arrays(self, arrays: dict[str, FloatArray], n_components: int) -> Any:
        """Parameters from the HMM's named arrays (its own names among them), checked."""
        ...

    def to_vector(self, params: Any) -> FloatArray:
        """The parameters as unconstrained float coordinates (see :class:`HMMModel`'s)."""
        ...

    def from_vector(self, vector: FloatArray, like: Any) -> Any:
        """Parameters from :meth:`to_vector` coordinates (``like``: the shapes)."""
        ...

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values (added to the HMM's spec)."""
        ...


E = TypeVar("E", bound=Emission)


@dataclass(frozen=True)
class HMMModel(Generic[E]):
    """An HMM: the Markov chain's recursions, transitions and messages, and an emission.

    Parameters
    ----------
    n_components : int
        Number of states.
    emission : Emission
        The state densities (:class:`GaussianEmission`, :class:`CategoricalEmission`).
    params : str
        Parameters updated by the M-step: ``"s"`` (start), ``"t"`` (transitions) and the
        emission's letters (``"m"``, ``"c"``: means, covariances; ``"e"``: emission
        probabilities).
    carry : bool
        Whether blocks may split sequences (messages carried between blocks).
    startprob_prior, transmat_prior : float or array
        Dirichlet concentration of the start and transition probabilities (1: none).
    implementation : {"log", "scaling"}
        hmmlearn's recursion. Both compute the same numbers here (scaled recursions with
        rows normalised by their largest log-density, which neither underflows nor
        overflows); ``"scaling"`` keeps hmmlearn's one refusal: a row whose emission
        densities all underflow to zero in linear space (``exp(log-density) == 0`` in every
        state) raises :class:`NumericalError`, as hmmlearn's scaled forward pass does.
        Not in :meth:`spec`: it does not change a fit's numbers.
    """

    n_components: int
    emission: E
    params: str = ""
    carry: bool = False
    startprob_prior: Any = 1.0
    transmat_prior: Any = 1.0
    implementation: str = "log"

    def __post_init__(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise ParameterError(f"implementation must be one of {list(IMPLEMENTATIONS)}; got {self.implementation!r}.")

    #: What to do when the statistics are not finite.
    numerical_advice = (
        "some rows have zero probability under every state path (impossible emissions or transitions). "
        "Check the data, or use a model whose emissions can produce them."
    )

    @property
    def carries_messages(self) -> bool:
        """Whether blocks may split sequences (messages carried between blocks)."""
        return self.carry

    # -- the recursions ----------------------------------------------------------------------

    def _frames(self, params: Any, X: NDArray[Any]) -> tuple[FloatArray, FloatArray]:
        """Emission probabilities scaled by their row maxima, and those maxima's logs."""
        log_b = self.emission.log_prob(params.emission, X)
        top = log_b.max(axis=1) if log_b.shape[0] else np.zeros(0)
        if self.implementation == "scaling":
            self._check_scaling(top)
        # A row impossible in every state (top = -inf) gives NaN, reported by the caller; a
        # state far less likely than the row's best flushes to zero (meant: that is the scaling).
        with np.errstate(invalid="ignore", under="ignore"):
            return np.exp(log_b - top[:, None]), top

    @staticmethod
    def _check_scaling(top: FloatArray) -> None:
        """hmmlearn's scaled forward pass fails where a row's densities are all zero in
        linear space: ``implementation="scaling"`` refuses those rows as it does."""
        with np.errstate(under="ignore"):
            zero = np.flatnonzero(~(np.exp(top) > 0.0))
        if zero.size:
            first = int(zero[0])
            raise NumericalError(
                f"Forward pass failed with underflow (implementation='scaling'): {zero.size} row(s) have "
                f"zero emission density in every state in linear space (first: row {first} of its block, "
                f"largest log-density {float(top[first]):.4g}); consider using implementation='log' instead."
            )

    def _message(self, block: NDArray[Any], message: HMMMessage | None) -> HMMMessage:
        if message is not None:
            return message
        if block.shape[0] and block[0, -1] == 0:
            raise DataError(
                "A block of rows starts inside a sequence but no forward message was given: fit with the "
                "sequence lengths, or let the model carry messages between blocks (carry=True)."
            )
        k = self.n_components
        return HMMMessage(np.full(k, 1.0 / k), np.ones(k))

    def _bad_rows(self, X: NDArray[Any]) -> int:
        return int(X.size - np.count_nonzero(np.isfinite(X)))

    def e_step(self, params: Any, block: NDArray[Any], message: HMMMessage | None = None) -> HMMStats:
        """Statistics of one block of rows (with its messages when blocks split sequences)."""
        X, starts = start_flags(block)
        msg = self._message(block, message)
        bad = self._bad_rows(X)
        if bad:
            return HMMStats(float(X.shape[0]), float("nan"), bad, *self._zero_parts(params))
        frames, top = self._frames(params, X)
        gamma, xi, start, log_scale = _kernels().forward_backward(
            params.startprob, params.transmat, frames, starts, msg.alpha_in, msg.beta_out
        )
        return HMMStats(
            n=float(X.shape[0]),
            loglik=float(log_scale + top.sum()),
            n_nonfinite=0,
            start=start,
            trans=xi,
            emission=self.emission.stats(params.emission, X, gamma),
        )

    def summarize(self, params: Any, block: NDArray[Any]) -> FloatArray:
        """The block's forward transfer matrix (see :func:`hmm_kernels.transfer`)."""
        X, starts = start_flags(block)
        if self._bad_rows(X):  # the E-step reports them
            return np.eye(self.n_components)
        frames, _ = self._frames(params, X)
        return np.asarray(_kernels().transfer(params.startprob, params.transmat, frames, starts))

    def messages(self, params: Any, summaries: list[FloatArray]) -> list[HMMMessage]:
        """Chain the blocks' transfer matrices into the messages of every block."""
        k = self.n_components
        alpha = np.full(k, 1.0 / k)
        alphas = []
        beta = np.full(k, 1.0 / k)
        betas: list[FloatArray] = [beta] * len(summaries)
        # States a block cannot reach underflow to 0, harmlessly, whatever np.seterr says.
        with np.errstate(under="ignore"):
            for f in summaries:
                alphas.append(alpha)
                alpha = alpha @ f
                alpha = alpha / alpha.sum()
            for b in range(len(summaries) - 1, -1, -1):
                betas[b] = beta
                beta = summaries[b] @ beta
                beta = beta / beta.sum()
        return [HMMMessage(a, b) for a, b in zip(alphas, betas, strict=True)]

    def _finite(self, block: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """The block's data and start flags, refusing NaN or infinite values (prediction)."""
        X, starts = start_flags(block)
        bad = self._bad_rows(X)
        if bad:
            raise DataError(
                f"Input X contains {bad} NaN or infinite value(s) in a block of {X.shape[0]} rows. "
                "Remove or impute them before predicting."
            )
        return X, starts

    def posteriors(self, params: Any, block: NDArray[Any], message: HMMMessage | None = None) -> FloatArray:
        """State posteriors of every row of the block: shape (n, k)."""
        X, starts = self._finite(block)
        msg = self._message(block, message)
        frames, _ = self._frames(params, X)
        gamma, _, _, _ = _kernels().forward_backward(
            params.startprob, params.transmat, frames, starts, msg.alpha_in, msg.beta_out
        )
        return np.asarray(gamma)

    def log_likelihood_rows(self, params: Any, block: NDArray[Any], message: HMMMessage | None = None) -> float:
        """Log-likelihood of the block's rows given what came before (the forward pass alone)."""
        X, starts = self._finite(block)
        msg = self._message(block, message)
        frames, top = self._frames(params, X)
        log_scale = _kernels().forward_log_scale(params.startprob, params.transmat, frames, starts, msg.alpha_in)
        return float(log_scale + top.sum())

    def viterbi_summary(self, params: Any, block: NDArray[Any]) -> tuple[FloatArray, float]:
        """The block's max-plus transfer matrix and its offset (:func:`hmm_kernels.viterbi_transfer`)."""
        X, starts = self._finite(block)
        v, offset = _kernels().viterbi_transfer(
            _log(params.startprob), _log(params.transmat), self.emission.log_prob(params.emission, X), starts
        )
        return np.asarray(v), float(offset)

    def viterbi_messages(self, summaries: list[tuple[FloatArray, float]]) -> tuple[list[ViterbiMessage], float]:
        """Chain the blocks' max-plus transfers: every block's message and the best total score."""
        k = self.n_components
        delta = np.zeros(k)
        deltas = []
        for v, offset in summaries:
            deltas.append(delta)
            delta = (delta[:, None] + v).max(axis=0) + offset
        state = int(np.argmax(delta))
        best = float(delta[state])
        exits = [0] * len(summaries)
        for b in range(len(summaries) - 1, -1, -1):
            exits[b] = state
            v, _ = summaries[b]
            if b and np.isfinite(v[:, state]).any():
                state = int(np.argmax(deltas[b] + v[:, state]))
        return [ViterbiMessage(d, s) for d, s in zip(deltas, exits, strict=True)], best

    def decode(self, params: Any, block: NDArray[Any], message: ViterbiMessage | None = None) -> tuple[Any, float]:
        """Viterbi states of the block's rows and the best-path score of the sequences in it.

        Without a message the block must hold whole sequences; the score then sums their
        best-path log-probabilities. With one, the score is not meaningful (the driver
        has the total from :meth:`viterbi_messages`).
        """
        X, starts = self._finite(block)
        if message is None:
            self._message(block, None)
            message = ViterbiMessage(np.zeros(self.n_components), -1)
        states, log_prob = _kernels().viterbi(
            _log(params.startprob),
            _log(params.transmat),
            self.emission.log_prob(params.emission, X),
            starts,
            message.delta_in,
            message.exit_state,
        )
        return np.asarray(states), float(log_prob)

    # -- contract ------------------------------------------------------------------------

    def zero_stats(self, params: Any) -> HMMStats:
        """Statistics of no rows."""
        return HMMStats(0.0, 0.0, 0, *self._zero_parts(params))

    def _zero_parts(self, params: Any) -> tuple[FloatArray, FloatArray, Any]:
        k = self.n_components
        return np.zeros(k), np.zeros((k, k)), self.emission.zero_stats(params.emission)

    def combine(self, a: HMMStats, b: HMMStats) -> HMMStats:
        """Sum the statistics of two disjoint sets of rows."""
        return HMMStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            start=a.start + b.start,
            trans=a.trans + b.trans,
            emission=self.emission.combine(a.emission, b.emission),
        )

    def recentre(self, stats: HMMStats, like: HMMStats) -> HMMStats:
        """``stats`` with the emission's moments re-expressed like ``like``'s
        (:meth:`Emission.recentre`); the start and transition counts have no reference."""
        emission = self.emission.recentre(stats.emission, like.emission)
        return stats if emission is stats.emission else replace(stats, emission=emission)

    def scale(self, stats: HMMStats, factor: float) -> HMMStats:
        """``stats`` with ``n``, ``loglik``, the start and transition counts and the
        emission's statistics (:meth:`Emission.scale`) times ``factor``."""
        return replace(
            stats,
            n=stats.n * factor,
            loglik=stats.loglik * factor,
            start=stats.start * factor,
            trans=stats.trans * factor,
            emission=self.emission.scale(stats.emission, factor),
        )

    def log_likelihood(self, stats: HMMStats) -> float:
        """Total log-likelihood of the sequences behind ``stats``."""
        return float(stats.loglik)

    def m_step(self, stats: HMMStats, params: HMMParams | None) -> HMMParams:
        """hmmlearn's M-step for the parameters named in ``self.params``; the rest stay."""
        if params is None:
            raise ValueError("An HMM M-step needs the previous parameters (the ones not updated are kept).")
        startprob, transmat = params.startprob, params.transmat
        if "s" in self.params:
            startprob = _dirichlet_map(self.startprob_prior, stats.start, params.startprob, keep_zeros=True)
        if "t" in self.params:
            transmat = _dirichlet_map(self.transmat_prior, stats.trans, params.transmat, keep_zeros=True)
        return HMMParams(startprob, transmat, self.emission.m_step(stats.emission, params.emission, self.params))

    def make_params(self, startprob: Any, transmat: Any, emission: Any) -> HMMParams:
        """Parameters from start and transition probabilities (checked) and emission parameters."""
        return HMMParams(*self._check_transitions({"startprob": startprob, "transmat": transmat}), emission)

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> HMMParams:
        """Rebuild parameters from named arrays, checking shapes and probabilities."""
        startprob, transmat = self._check_transitions(arrays)
        return HMMParams(startprob, transmat, self.emission.params_from_arrays(arrays, self.n_components))

    def _check_transitions(self, arrays: dict[str, Any]) -> tuple[FloatArray, FloatArray]:
        k = self.n_components
        startprob = check_shape("startprob", arrays["startprob"], (k,))
        transmat = check_shape("transmat", arrays["transmat"], (k, k))
        check_probabilities("startprob", startprob)
        check_probabilities("transmat", transmat)
        return startprob, transmat

    def to_vector(self, params: HMMParams) -> FloatArray:
        """Unconstrained coordinates: log-probabilities (floored at 1e-300), then the emission's."""
        return np.concatenate(
            [
                np.log(np.maximum(params.startprob, _LOG_FLOOR)),
                np.log(np.maximum(params.transmat, _LOG_FLOOR)).ravel(),
                self.emission.to_vector(params.emission),
            ]
        )

    def from_vector(self, vector: FloatArray, like: HMMParams) -> HMMParams:
        """Parameters from :meth:`to_vector` coordinates."""
        k = self.n_components
        start = _softmax(vector[:k])
        trans = _softmax(vector[k : k + k * k].reshape(k, k))
        return HMMParams(start, trans, self.emission.from_vector(vector[k + k * k :], like.emission))

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values (the emission's after the chain's)."""
        return {
            "model": self.emission.kind,
            "n_components": int(self.n_components),
            "params": self.params,
            "carry": bool(self.carry),
            "startprob_prior": np.asarray(self.startprob_prior, dtype=np.float64).tolist(),
            "transmat_prior": np.asarray(self.transmat_prior, dtype=np.float64).tolist(),
            **self.emission.spec(),
        }


def _softmax(v: FloatArray) -> FloatArray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _density_factors(ct: CovarianceType, covariances: FloatArray, reg: float) -> FloatArray:
    """The precision Cholesky factors of the state densities, with hmmlearn's fallbacks: a
    matrix that is not positive definite gets ``1e-7`` on its diagonal (each on its own),
    a variance of zero the smallest normal double (the covariances themselves unchanged)."""
    try:
        return ct.precision_cholesky(covariances, reg)
    except NumericalError:
        if not ct.matrices:
            return ct.precision_cholesky(np.maximum(covariances, np.finfo(np.float64).tiny), reg)
    full = covariance_type(FULL_COVARIANCE)
    matrices = covariances[None] if ct.shared else covariances
    floor = _DENSITY_FLOOR * np.eye(matrices.shape[-1])
    factors = []
    for c in matrices:
        try:
            factors.append(full.precision_cholesky(c[None], reg)[0])
        except NumericalError:
            factors.append(full.precision_cholesky((c + floor)[None], reg)[0])
    return factors[0] if ct.shared else np.stack(factors)


@dataclass(frozen=True)
class GaussianEmission:
    """Gaussian state densities, with the covariance types of the mixtures.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
        Form of the state covariances.
    means_prior, means_weight, covars_prior, covars_weight : float or array
        hmmlearn's priors of the means and covariances (defaults: hmmlearn's).
    """

    covariance_type: str = "diag"
    means_prior: Any = 0.0
    means_weight: Any = 0.0
    covars_prior: Any = 1e-2
    covars_weight: Any = 1.0

    kind: ClassVar[str] = "gaussian_hmm"

    def __post_init__(self) -> None:
        covariance_type(self.covariance_type)

    def _mixture(self, n_components: int) -> GaussianMixtureModel:
        return GaussianMixtureModel(n_components, self.covariance_type, 0.0)

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        spec: dict[str, Any] = {"covariance_type": self.covariance_type}
        for name in ("means_prior", "means_weight", "covars_prior", "covars_weight"):
            spec[name] = np.asarray(getattr(self, name), dtype=np.float64).tolist()
        return spec

    def make_params(self, n_components: int, means: Any, covariances: Any, reg: float = 0.0) -> GaussianEmissionParams:
        """Parameters of ``n_components`` states from means and covariances (the precisions derived).

        As in hmmlearn, spherical variances may come in any shape of ``n_components``
        values ((k,), (k, 1), (k, 1, 1, 1), ...), and a full or tied covariance that is not
        positive definite (a state collapsed onto a few rows) is kept, its density taken
        from ``covariance + 1e-7 * I``; a diagonal variance of zero is floored at the
        smallest normal double in the density.

        Raises
        ------
        NumericalError
            A covariance is not positive definite, even with hmmlearn's fallback.
        """
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2:
            raise ParameterError(f"means must be 2-D (n_components, n_features); got shape {means.shape}.")
        ct = covariance_type(self.covariance_type)
        expected = ct.shape(n_components, means.shape[1])
        if len(expected) == 1 and np.size(covariances) == n_components:
            # hmmlearn's spherical variances of shape (k, 1) or (k, 1, 1, 1)
            covariances = np.reshape(np.asarray(covariances, dtype=np.float64), n_components)
        covariances = check_shape("covariances", covariances, expected)
        try:
            factors = _density_factors(ct, covariances, reg)
        except NumericalError:
            lowest = ct.min_eigenvalue(covariances)
            raise NumericalError(
                f"The {self.covariance_type} state covariances are not positive definite (min eigenvalue "
                f"{lowest:.3g}). Set covars_ to positive-definite values, or, when the "
                "fit collapses a state onto too few distinct rows, raise covars_prior (a floor on the "
                "covariances) or reduce n_components."
            ) from None
        return self.params_from_arrays(
            {"means": means, "covariances": covariances, "precisions_cholesky": factors}, n_components
        )

    def start_covariances(self, stats: GaussianMixtureStats, n_components: int, min_covar: float) -> FloatArray:
        """hmmlearn's initial covariances: ``np.cov(X.T) + min_covar * I`` in this covariance
        type's shape (the mean of the diagonal for spherical).

        Parameters
        ----------
        stats : GaussianMixtureStats
            The moments of all rows: the statistics of a one-component full mixture.
        n_components : int
            Number of states.
        min_covar : float
            Added to the diagonal of the data covariance (np.cov's unbiased scaling), before
            anything is factorised: constant or collinear features are fine.

        Returns
        -------
        ndarray
            The covariances, shape ``covariance_type(...).shape(n_components, n_features)``.
        """
        r = stats.resp_sum
        nk = r + _EPS10
        full = covariance_type(FULL_COVARIANCE)
        scatter = full.covariance(nk, r, stats.first, stats.first / nk[:, None], stats.second, 0.0)[0]
        n, d = float(r[0]), scatter.shape[0]
        cv = scatter * (n / max(n - 1.0, 1.0)) + min_covar * np.eye(d)
        return covariance_type(self.covariance_type).from_full(cv, n_components)

    def params_from_arrays(self, arrays: dict[str, FloatArray], n_components: int) -> GaussianEmissionParams:
        """Parameters from the arrays ``means``, ``covariances`` and ``precisions_cholesky``, checked."""
        means = np.asarray(arrays["means"], dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != n_components:
            raise ParameterError(
                f"The parameter 'means' should have shape ({n_components}, n_features), but got {means.shape}."
            )
        shape = covariance_type(self.covariance_type).shape(n_components, means.shape[1])
        return GaussianEmissionParams(
            means,
            check_shape("covariances", arrays["covariances"], shape),
            check_shape("precisions_cholesky", arrays["precisions_cholesky"], shape),
        )

    def log_prob(self, params: GaussianEmissionParams, X: NDArray[Any]) -> FloatArray:
        """Gaussian log-densities of the rows in every state (the mixture's, unit weights)."""
        mixture = self._mixture(params.means.shape[0])
        with np.errstate(invalid="ignore", over="ignore"):
            return np.asarray(mixture.weighted_log_prob(params.mixture, X), dtype=np.float64)

    def stats(self, params: GaussianEmissionParams, X: NDArray[Any], gamma: FloatArray) -> GaussianMixtureStats:
        """The mixture's moments under the state posteriors, each state's around its current mean."""
        return self._mixture(params.means.shape[0]).moments(params.mixture, X, gamma)

    def zero_stats(self, params: GaussianEmissionParams) -> GaussianMixtureStats:
        """Moments of no rows."""
        return self._mixture(params.means.shape[0]).zero_stats(params.mixture)

    def combine(self, a: GaussianMixtureStats, b: GaussianMixtureStats) -> GaussianMixtureStats:
        """Sum the moments of two disjoint sets of rows."""
        return self._mixture(a.resp_sum.shape[0]).combine(a, b)

    def recentre(self, stats: GaussianMixtureStats, like: GaussianMixtureStats) -> GaussianMixtureStats:
        """Every state's moments around its mean in ``like`` (:meth:`GaussianMixtureModel.recentre`)."""
        return self._mixture(stats.resp_sum.shape[0]).recentre(stats, like)

    def scale(self, stats: GaussianMixtureStats, factor: float) -> GaussianMixtureStats:
        """The moments times ``factor`` (:meth:`GaussianMixtureModel.scale`)."""
        return self._mixture(stats.resp_sum.shape[0]).scale(stats, factor)

    def m_step(
        self, stats: GaussianMixtureStats, params: GaussianEmissionParams, update: str
    ) -> GaussianEmissionParams:
        """hmmlearn's means (``"m"`` in ``update``) and covariances (``"c"``) (Huang, Acero &
        Hon 2001, pp. 443-445).

        The scatter of every state around its new mean comes exactly from the moments
        around its old one (:meth:`CovarianceType.covariance` without regularisation). A
        state with no responsibility keeps its mean and covariance.
        """
        ct = covariance_type(self.covariance_type)
        r = stats.resp_sum
        k, d = params.means.shape
        empty = r < _EPS10
        means, covariances = params.means, params.covariances
        w = np.broadcast_to(np.asarray(self.means_weight, dtype=np.float64), (k,))
        prior = np.broadcast_to(np.asarray(self.means_prior, dtype=np.float64), (k, d))
        if "m" in update:
            means = stats.shift + (w[:, None] * (prior - stats.shift) + stats.first) / (w + r)[:, None]
            means[empty] = params.means[empty]
        if "c" in update:
            nk = r + _EPS10
            # Scatter around the means (the new ones when 'm' is fitted), over nk.
            scatter = ct.covariance(nk, r, stats.first, means - stats.shift, stats.second, 0.0)
            diff = means - prior
            prior_cov = np.asarray(self.covars_prior, dtype=np.float64)
            weight = float(np.asarray(self.covars_weight, dtype=np.float64).mean())
            covariances = ct.map_covariance(scatter, nk, r, w, diff, prior_cov, weight)
            if not ct.shared:
                covariances[empty] = params.covariances[empty]
        return self.make_params(k, means, covariances)

    def to_vector(self, params: GaussianEmissionParams) -> FloatArray:
        """The mixture's vector form (unit weights: k zero log-weights first)."""
        return self._mixture(params.means.shape[0]).to_vector(params.mixture)

    def from_vector(self, vector: FloatArray, like: GaussianEmissionParams) -> GaussianEmissionParams:
        """Parameters from :meth:`to_vector` coordinates."""
        mixture = self._mixture(like.means.shape[0]).from_vector(vector, like.mixture)
        return GaussianEmissionParams(mixture.means, mixture.covariances, mixture.precisions_cholesky)


@dataclass(frozen=True)
class CategoricalEmission:
    """States that emit one of ``n_features`` symbols (the block's first column).

    Parameters
    ----------
    n_features : int
        Number of symbols: the data hold integers in ``[0, n_features)``.
    emissionprob_prior : float or array
        Dirichlet concentration of the emission probabilities (1: none).
    """

    n_features: int
    emissionprob_prior: Any = 1.0

    kind: ClassVar[str] = "categorical_hmm"

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {
            "n_features": int(self.n_features),
            "emissionprob_prior": np.asarray(self.emissionprob_prior, dtype=np.float64).tolist(),
        }

    def params_from_arrays(self, arrays: dict[str, FloatArray], n_components: int) -> CategoricalEmissionParams:
        """Parameters from the array ``emissionprob`` (rows of probabilities), checked."""
        emissionprob = check_shape("emissionprob", arrays["emissionprob"], (n_components, self.n_features))
        check_probabilities("emissionprob", emissionprob)
        return CategoricalEmissionParams(emissionprob)

    def symbols(self, X: NDArray[Any]) -> NDArray[np.intp]:
        """The block's symbols as integers, refusing anything outside ``[0, n_features)``."""
        if X.shape[1] != 1:
            raise DataError(
                f"A categorical HMM takes one column of integer symbols; got {X.shape[1]} columns. "
                "Pass X with shape (n_samples, 1)."
            )
        values = X[:, 0]
        bad = (values < 0) | (values >= self.n_features) | (values != np.floor(values))
        if bad.any():
            raise DataError(
                f"Symbol {float(values[bad][0]):g} is outside the range of symbols [0, {self.n_features}) (integers). "
                f"Map the symbols to 0..n_features-1, or set n_features larger than the largest symbol."
            )
        return values.astype(np.intp)

    def log_prob(self, params: CategoricalEmissionParams, X: NDArray[Any]) -> FloatArray:
        """Log-probability of every row's symbol in every state."""
        return np.ascontiguousarray(_log(params.emissionprob)[:, self.symbols(X)].T)

    def stats(self, params: CategoricalEmissionParams, X: NDArray[Any], gamma: FloatArray) -> FloatArray:
        """Expected symbol counts of every state, shape (k, n_features)."""
        symbols = self.symbols(X)
        return np.stack(
            [np.bincount(symbols, weights=gamma[:, j], minlength=self.n_features) for j in range(gamma.shape[1])]
        )

    def zero_stats(self, params: CategoricalEmissionParams) -> FloatArray:
        """Counts of no rows."""
        return np.zeros((params.emissionprob.shape[0], self.n_features))

    def combine(self, a: FloatArray, b: FloatArray) -> FloatArray:
        """Sum the counts of two disjoint sets of rows."""
        return a + b

    def recentre(self, stats: FloatArray, like: FloatArray) -> FloatArray:
        """``stats`` themselves: counts have no reference point."""
        return stats

    def scale(self, stats: FloatArray, factor: float) -> FloatArray:
        """The counts times ``factor``."""
        return stats * factor

    def m_step(self, stats: FloatArray, params: CategoricalEmissionParams, update: str) -> CategoricalEmissionParams:
        """hmmlearn's emission probabilities (``"e"`` in ``update``) under their Dirichlet prior."""
        if "e" not in update:
            return params
        return CategoricalEmissionParams(
            _dirichlet_map(self.emissionprob_prior, stats, params.emissionprob, keep_zeros=False)
        )

    def to_vector(self, params: CategoricalEmissionParams) -> FloatArray:
        """Log-probabilities (floored at 1e-300)."""
        return np.log(np.maximum(params.emissionprob, _LOG_FLOOR)).ravel()

    def from_vector(self, vector: FloatArray, like: CategoricalEmissionParams) -> CategoricalEmissionParams:
        """Parameters from :meth:`to_vector` coordinates."""
        return CategoricalEmissionParams(_softmax(vector.reshape(like.emissionprob.shape)))


def GaussianHMMModel(
    n_components: int,
    params: str = "",
    carry: bool = False,
    startprob_prior: Any = 1.0,
    transmat_prior: Any = 1.0,
    covariance_type: str = "diag",
    means_prior: Any = 0.0,
    means_weight: Any = 0.0,
    covars_prior: Any = 1e-2,
    covars_weight: Any = 1.0,
) -> HMMModel[GaussianEmission]:
    """An HMM with Gaussian state densities: :class:`HMMModel` with a :class:`GaussianEmission`.

    Parameters
    ----------
    n_components, params, carry, startprob_prior, transmat_prior
        As for :class:`HMMModel` (``params`` letters among ``"stmc"``).
    covariance_type, means_prior, means_weight, covars_prior, covars_weight
        As for :class:`GaussianEmission`.

    Returns
    -------
    HMMModel
    """
    emission = GaussianEmission(covariance_type, means_prior, means_weight, covars_prior, covars_weight)
    return HMMModel(n_components, emission, params, carry, startprob_prior, transmat_prior)


def CategoricalHMMModel(
    n_components: int,
    params: str = "",
    carry: bool = False,
    startprob_prior: Any = 1.0,
    transmat_prior: Any = 1.0,
    n_features: int = 2,
    emissionprob_prior: Any = 1.0,
) -> HMMModel[CategoricalEmission]:
    """An HMM whose states emit symbols: :class:`HMMModel` with a :class:`CategoricalEmission`.

    Parameters
    ----------
    n_components, params, carry, startprob_prior, transmat_prior
        As for :class:`HMMModel` (``params`` letters among ``"ste"``).
    n_features, emissionprob_prior
        As for :class:`CategoricalEmission`.

    Returns
    -------
    HMMModel
    """
    emission = CategoricalEmission(n_features, emissionprob_prior)
    return HMMModel(n_components, emission, params, carry, startprob_prior, transmat_prior)
