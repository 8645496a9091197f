"""hmmlearn-compatible hidden Markov models fitted out of core: GaussianHMM, CategoricalHMM.

Sequences are rows of one array (hmmlearn's layout: ``X`` of shape (n_samples,
n_features) and ``lengths`` of the sequences, in order). The engine adds a start-flag
column and, when every sequence fits in a block, re-chunks the rows so that each block
holds whole sequences (:func:`daskem.em.sequences.sequence_source`): blocks are then
independent and an iteration is one pass. A sequence longer than a block is split across
blocks and the model carries the forward and backward messages between them
(:mod:`daskem.models.hmm`): two passes per iteration, exactly the statistics of the
unsplit sequence. An estimator maps its hyperparameters to an :class:`HMMModel` with its
emission component (:class:`GaussianEmission`, :class:`CategoricalEmission`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.utils import check_random_state

from daskem.em.checks import check_log_likelihood
from daskem.em.init import kmeans_centers
from daskem.em.monitor import IterationRecord
from daskem.em.sequences import largest_value, sequence_source
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import EMEstimator, _entropy
from daskem.estimators._validation import check_int, check_option, check_real
from daskem.io.sources import DataSource, as_source, lengths_from_ids
from daskem.models.gaussian import COVARIANCE_TYPES, FULL_COVARIANCE, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.models.hmm import (
    IMPLEMENTATIONS,
    CategoricalEmission,
    Emission,
    GaussianEmission,
    HMMModel,
    HMMParams,
    check_probabilities,
)
from daskem.registry import (
    ALGORITHM_HELP,
    COVARIANCE_TYPE,
    LENGTHS,
    N_COMPONENTS,
    SEQUENCE_IDS,
    Option,
    attribute_summary,
    register,
)

#: The command-line option of the decoder, the same for every HMM.
_ALGORITHM = Option(
    ("--algorithm",),
    "algorithm",
    ALGORITHM_HELP,
    kind=str,
    choices=("viterbi", "map"),
)

#: The rows of an HMM's summary that every HMM has.
_CHAIN_ROWS = [("start probability", "startprob_"), ("transition probabilities", "transmat_")]

#: hmmlearn's messages (overwritten parameters, too little data) go to this logger, as
#: hmmlearn's go to ``hmmlearn.base``'s.
logger = logging.getLogger("daskem")


@dataclass
class ConvergenceMonitor:
    """hmmlearn's ``monitor_``: the log-likelihood history of the last fit.

    Attributes
    ----------
    tol : float
        Threshold on the gain of the total log-likelihood.
    n_iter : int
        Most iterations allowed.
    history : list of float
        Total log-likelihood of every iteration (of the parameters it started from).
    iter : int
        Iterations run.
    converged : bool
        hmmlearn's meaning: the gain fell below ``tol`` or ``n_iter`` iterations ran
        (``converged_`` on the estimator is only the former).
    """

    tol: float
    n_iter: int
    history: list[float] = field(default_factory=list)
    iter: int = 0
    converged: bool = False


class _BaseHMM(EMEstimator):
    """What GaussianHMM and CategoricalHMM share (not used directly)."""

    _ADDED_COLUMNS: ClassVar[int] = 1
    _WARN_NOT_CONVERGED: ClassVar[bool] = False  # hmmlearn reports it in monitor_ only
    _LETTERS: ClassVar[str] = ""
    #: hmmlearn has no restarts or pruning; the engine's hyperparameters say so.
    prune_restarts = False
    warm_start = False

    n_components: int
    n_iter: int
    startprob_prior: Any
    transmat_prior: Any
    algorithm: str
    params: str
    init_params: str
    implementation: str

    @property
    def max_iter(self) -> int:  # type: ignore[override]
        """The engine's iteration limit: hmmlearn's ``n_iter``."""
        return int(self.n_iter)

    def _engine_tol(self, source: DataSource) -> float:
        # hmmlearn stops when the total log-likelihood gains less than tol.
        return float(self.tol) / max(source.n_samples, 1)

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1)
        check_int(name, "n_iter", self.n_iter, 0)
        check_option(name, "algorithm", self.algorithm, ["viterbi", "map"])
        check_option(name, "implementation", self.implementation, list(IMPLEMENTATIONS))
        for what in ("params", "init_params"):
            value = getattr(self, what)
            if not isinstance(value, str) or set(value) - set(self._LETTERS):
                raise ParameterError(
                    f"The {what!r} parameter of {name} must be a str of letters among {self._LETTERS!r}; got {value!r}."
                )
        self._validate_engine_parameters()

    def _emission(self) -> Emission:
        """The emission component of these hyperparameters."""
        raise NotImplementedError

    def _engine_model(self, carry: bool, emission: Emission | None = None) -> HMMModel[Any]:
        """The model of these hyperparameters (``carry``: blocks split sequences), with
        ``emission`` (default: :meth:`_emission`)."""
        return HMMModel(
            self.n_components,
            self._emission() if emission is None else emission,
            self.params,
            carry,
            self.startprob_prior,
            self.transmat_prior,
            self.implementation,
        )

    def _model(self) -> HMMModel[Any]:
        return self._engine_model(False)

    def _fit_model(self, session: FitSession, carry: bool) -> HMMModel[Any]:
        """The model of a fit on the session's rows (a subclass may read what it needs of them)."""
        return self._engine_model(carry)

    def _check_data(self, source: DataSource) -> None:
        """Subclass checks of the (unflagged) data."""

    def _n_columns(self) -> int:
        """The number of columns of X the parameters take."""
        raise NotImplementedError

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self, X: Any, lengths: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None
    ) -> Self:
        """Estimate the parameters by Baum-Welch (EM).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The rows of all sequences, one after the other.
        lengths : array-like of int, optional
            Lengths of the sequences, summing to ``n_samples`` (default: one sequence).
            From a sequence-id column: :func:`lengths_from_ids`.
        callback : callable, optional
            Called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        raw = as_source(X, lengths=lengths)
        self._check_data(raw)
        source, carry = sequence_source(raw)
        session = self._session(source)
        self._fit_restarts(self._fit_model(session, carry), session, 1, False, callback)
        self.n_features_in_ = raw.n_features
        self._restored()
        return self

    def partial_fit(self, X: Any, lengths: Any = None) -> Self:
        """Update the model with the sequences of ``X`` by online EM (Cappé & Moulines).

        hmmlearn has no ``partial_fit``; this is daskem's. One online step from all the
        sequences of ``X`` (a mini-batch; ``step_blocks`` and ``shuffle`` apply to
        :meth:`fit`): the running statistics (expected state counts, transitions and
        emission moments) move towards the batch's by ``(t + learning_offset) **
        -learning_decay`` (the first step takes them as they are) and the M-step follows.
        A NumPy batch is one block; a dask batch whose sequence is longer than a block is
        refused (its statistics need every block it spans; rechunk ``X``). The first
        call initialises from its ``X`` as :meth:`fit` does
        (``init_params`` and the parameters set) unless the model is fitted, in which
        case it starts from the fitted parameters (after an online ``fit``, from its
        running statistics). Calls over the blocks of a dataset in order give bitwise the
        parameters of ``fit`` with ``schedule="online", shuffle=False, n_iter=1`` from
        the same start.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The rows of a batch of whole sequences, one after the other.
        lengths : array-like of int, optional
            Lengths of the batch's sequences, summing to ``n_samples`` (default: one
            sequence).

        Returns
        -------
        self
            The updated estimator; ``monitor_.history`` gains the total log-likelihood of
            the batch under the parameters the step started from.
        """
        return self._partial_fit(X, lengths=lengths)

    def _partial_source(self, X: Any, lengths: Any = None, **kwargs: Any) -> DataSource:
        raw = as_source(X, lengths=lengths, one_block=True)
        self._check_data(raw)
        source, carry = sequence_source(raw)
        if carry:
            longest = int(np.max(raw.lengths)) if raw.lengths is not None else raw.n_samples
            raise ParameterError(
                f"{type(self).__name__}.partial_fit makes one online step from the batch's blocks of whole "
                f"sequences, but a sequence of {longest} rows is longer than a block ({max(raw.array.chunks[0])} "
                f"rows). Pass X in blocks of at least {longest} rows: a dask array X.rechunk({{0: {longest}}})."
            )
        return source

    def _partial_fitted(self, session: FitSession, model: Any, stats: Any, continuing: bool) -> None:
        """hmmlearn's ``monitor_``, its history gaining the batch's total log-likelihood."""
        totals = list(self.monitor_.history) if continuing and hasattr(self, "monitor_") else []
        self._restored()
        self.monitor_.history = [*totals, model.log_likelihood(stats)]

    def _partial_model(self, session: FitSession) -> HMMModel[Any]:
        return self._fit_model(session, False)

    def _init(self, X: Any, lengths: Any = None) -> None:
        """Initialise the parameters as :meth:`fit` does, without iterating (hmmlearn's ``_init``).

        The parameters that ``init_params`` names, and those not set, are initialised from
        ``X`` (one or two passes: k-means|| means, the data covariance, the symbol count);
        the others stay. A parameter set and named in ``init_params`` is overwritten, with a
        logged warning, as in hmmlearn.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The rows of all sequences.
        lengths : array-like of int or int, optional
            Accepted for hmmlearn's signature; the initialisation reads the rows alone, so
            the sequence boundaries do not change it.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        raw = as_source(X)
        self._check_data(raw)
        source, carry = sequence_source(raw)
        session = self._session(source)
        # The generator of fit's first (only) initialisation.
        rng = np.random.default_rng(np.random.SeedSequence(_entropy(self.random_state)).spawn(1)[0])
        (params,) = self._initial_params(self._fit_model(session, carry), session, [rng])
        self._set_params_attributes(params)

    def _check(self) -> None:
        """Validate the hyperparameters and the parameters set (hmmlearn's ``_check``).

        Raises
        ------
        ValueError
            A hyperparameter is invalid, or a parameter has the wrong shape or its
            probabilities do not sum to one.
        """
        self._validate_hyperparameters()
        self._check_fitted()
        self._params()

    def _n_fit_scalars(self, size: int) -> dict[str, int]:
        """The number of free scalars of every parameter letter (hmmlearn's count), for an
        emission of ``size`` (features of a Gaussian, symbols of a categorical emission)."""
        k = self.n_components
        return {"s": k - 1, "t": k * (k - 1), **self._emission_scalars(size)}

    def _emission_scalars(self, size: int) -> dict[str, int]:
        """The free scalars of the emission's parameter letters."""
        raise NotImplementedError

    def _emission_size(self, model: HMMModel[Any] | None = None, session: FitSession | None = None) -> int:
        """The emission's size: of the fitted (or set) parameters, or of a fit's ``model`` on ``session``."""
        raise NotImplementedError

    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion of the model on ``X`` (hmmlearn's): lower is better.

        ``AIC = -2 * score(X, lengths) + 2 * p``, with ``p`` the free scalars of all the
        parameters (start, transitions and emissions, whatever ``params`` says).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        return -2.0 * self.score(X, lengths) + 2.0 * self._n_parameters()

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion of the model on ``X`` (hmmlearn's): lower is better.

        ``BIC = -2 * score(X, lengths) + p * log(n_samples)``, with ``p`` as in :meth:`aic`.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        n_samples = as_source(X, lengths=lengths).n_samples
        return -2.0 * self.score(X, lengths) + self._n_parameters() * float(np.log(n_samples))

    def _n_parameters(self) -> int:
        """hmmlearn's parameter count of :meth:`aic` and :meth:`bic`: the free scalars of the
        parameters ``params`` fits."""
        return int(sum(self._n_fit_scalars(self._emission_size()).values()))

    def _restored(self) -> None:
        """hmmlearn's ``monitor_`` from the fit record (total log-likelihoods)."""
        n = getattr(self, "_n_samples_fit", 0)
        self.monitor_ = ConvergenceMonitor(
            float(self.tol),
            int(self.n_iter),
            [v * n for v in self.lower_bounds_],
            int(self.n_iter_),
            # hmmlearn counts reaching n_iter as converged; converged_ says whether tol was met.
            bool(self.converged_) or int(self.n_iter_) >= int(self.n_iter),
        )

    def _initial_params(self, model: HMMModel[Any], session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        rng = rngs[0]
        k = self.n_components
        n_fit = self._n_fit_scalars(self._emission_size(model, session))
        n_data = session.source.n_samples * (session.source.n_features - self._ADDED_COLUMNS)
        n_free = sum(n_fit[letter] for letter in self.params)
        if n_data < n_free:
            logger.warning(
                "Fitting a model with %d free scalar parameters with only %d data points will result in a "
                "degenerate solution.",
                n_free,
                n_data,
            )
        startprob = self._given("s", "startprob_", lambda: np.full(k, 1.0 / k))
        transmat = self._given("t", "transmat_", lambda: np.full((k, k), 1.0 / k))
        check_probabilities("startprob_", np.asarray(startprob, dtype=np.float64))
        check_probabilities("transmat_", np.asarray(transmat, dtype=np.float64))
        # The initialisers read the rows without their start flags, through the fit's session.
        rows = session.leading_columns(session.source.n_features - self._ADDED_COLUMNS)
        return [self._initial_emissions(model, rows, rng, startprob, transmat)]

    def _initial_emissions(
        self, model: HMMModel[Any], rows: FitSession, rng: np.random.Generator, startprob: Any, transmat: Any
    ) -> HMMParams:
        raise NotImplementedError

    def _needs_init(self, letter: str, attribute: str) -> bool:
        """hmmlearn's rule: initialise what ``init_params`` names (warning, through the
        logger, when it is set) and what is not set; take the rest as set."""
        shown = attribute.lstrip("_")
        if letter in self.init_params:
            if hasattr(self, attribute):
                logger.warning(
                    "Even though the %r attribute is set, it will be overwritten during initialization "
                    "because 'init_params' contains %r",
                    shown,
                    letter,
                )
            return True
        return not hasattr(self, attribute)

    def _given(self, letter: str, attribute: str, initialise: Callable[[], Any]) -> Any:
        """The parameter ``attribute``: initialised (:meth:`_needs_init`) or as set."""
        return initialise() if self._needs_init(letter, attribute) else getattr(self, attribute)

    # -- sequences after the fit ------------------------------------------------------------

    def _sequences(self, X: Any, lengths: Any) -> tuple[FitSession, HMMModel[Any]]:
        """A prediction's session over the rows of ``X`` with their start flags, and the model."""
        self._check_fitted()
        raw = as_source(X, lengths=lengths)
        # From the parameters, not n_features_in_: as in hmmlearn, parameters set by hand
        # (without a fit) can score, decode and predict.
        expected = self._n_columns()
        if raw.n_features != expected:
            raise DataError(
                f"X has {raw.n_features} features, but {type(self).__name__} is expecting {expected} features as input."
            )
        self._check_data(raw)
        source, carry = sequence_source(raw)
        return self._prediction_session(source), self._engine_model(carry)

    @staticmethod
    def _messages(session: FitSession, model: HMMModel[Any], params: Any) -> list[Any] | None:
        """The blocks' forward-backward messages when they split sequences (one pass), else None."""
        return session.messages(model, params) if model.carry else None

    def score(self, X: Any, lengths: Any = None) -> float:
        """Total log-likelihood of the sequences under the fitted model (hmmlearn's ``score``).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        session, model = self._sequences(X, lengths)
        params = self._params()
        parts = session.block_results(model, "log_likelihood_rows", params, self._messages(session, model, params))
        total = float(sum(parts))
        check_log_likelihood(total, model)
        return total

    def predict_proba(self, X: Any, lengths: Any = None) -> Any:
        """State posteriors of every row (forward-backward).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self._posteriors(*self._sequences(X, lengths))

    def _posteriors(self, session: FitSession, model: HMMModel[Any]) -> Any:
        params = self._params()
        messages = self._messages(session, model, params)
        return session.map_rows(
            model,
            "posteriors",
            params,
            dtype=np.float64,
            columns=self.n_components,
            messages=messages,
            check_finite=False,
        )

    def score_samples(self, X: Any, lengths: Any = None) -> tuple[float, Any]:
        """The log-likelihood and the state posteriors (hmmlearn's ``score_samples``).

        Returns
        -------
        log_prob : float
        posteriors : ndarray or dask array of shape (n_samples, n_components)
        """
        return self.score(X, lengths), self.predict_proba(X, lengths)

    @staticmethod
    def _viterbi_messages(
        session: FitSession, model: HMMModel[Any], params: Any
    ) -> tuple[list[Any] | None, float | None]:
        """The blocks' Viterbi messages and the total score when the blocks split sequences
        (from the max-plus summary pass); else None and None (the blocks' scores add up)."""
        if not model.carry:
            return None, None
        messages, log_prob = model.viterbi_messages(session.block_results(model, "viterbi_summary", params))
        return messages, log_prob

    def decode(self, X: Any, lengths: Any = None, algorithm: str | None = None) -> tuple[float, Any]:
        """The most probable state path (Viterbi) or the most probable state per row (MAP).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        lengths : array-like of int, optional
        algorithm : {"viterbi", "map"}, optional
            Default: the estimator's ``algorithm``.

        Returns
        -------
        log_prob : float
            Viterbi: the log-probability of the best paths (summed over sequences); MAP:
            the summed log of the rows' largest posteriors (hmmlearn 0.3 sums the
            posteriors themselves, which is not a log-probability).
        state_sequence : ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input (computed with the log-probability, once), a lazy
            dask array otherwise.
        """
        algorithm = self.algorithm if algorithm is None else algorithm
        check_option(type(self).__name__, "algorithm", algorithm, ["viterbi", "map"])
        session, model = self._sequences(X, lengths)
        if algorithm == "map":
            posteriors = self._posteriors(session, model)
            log_prob = np.log(posteriors.max(axis=1)).sum()
            return float(log_prob if session.in_memory else session.compute(log_prob)[0]), posteriors.argmax(axis=1)
        params = self._params()
        messages, total = self._viterbi_messages(session, model, params)
        if session.in_memory or total is None:
            results = session.block_results(model, "decode", params, messages)
            if total is None:
                total = float(sum(score for _, score in results))
            if session.in_memory:
                return total, np.concatenate([states for states, _ in results]) if results else np.zeros(0, np.int64)
        return total, self._states(session, model, params, messages)

    @staticmethod
    def _states(session: FitSession, model: HMMModel[Any], params: Any, messages: list[Any] | None) -> Any:
        """The Viterbi states of every row (NumPy for in-memory data, else lazy)."""
        return session.map_rows(model, "decode", params, dtype=np.int64, messages=messages, item=0, check_finite=False)

    def predict(self, X: Any, lengths: Any = None) -> Any:
        """The most probable states (by the estimator's ``algorithm``).

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        check_option(type(self).__name__, "algorithm", self.algorithm, ["viterbi", "map"])
        session, model = self._sequences(X, lengths)
        if self.algorithm == "map":
            return self._posteriors(session, model).argmax(axis=1)
        params = self._params()
        return self._states(session, model, params, self._viterbi_messages(session, model, params)[0])

    def fit_predict(self, X: Any, lengths: Any = None) -> Any:
        """Fit, then return the most probable states of ``X``."""
        return self.fit(X, lengths).predict(X, lengths)

    def sample(
        self, n_samples: int = 1, random_state: Any = None, currstate: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw a sequence from the fitted model (in memory).

        Parameters
        ----------
        n_samples : int
            Rows to draw.
        random_state : int, RandomState or None
            Default: the estimator's ``random_state``.
        currstate : int, optional
            The state of the first row (default: drawn from ``startprob_``).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        state_sequence : ndarray of shape (n_samples,)
        """
        self._check_fitted()
        check_int(type(self).__name__, "n_samples", n_samples, 1)
        rng = check_random_state(self.random_state if random_state is None else random_state)
        states = np.empty(n_samples, dtype=np.int64)
        cum_start, cum_trans = np.cumsum(self.startprob_), np.cumsum(self.transmat_, axis=1)
        state = int((cum_start > rng.rand()).argmax()) if currstate is None else int(currstate)
        for t in range(n_samples):
            if t:
                state = int((cum_trans[state] > rng.rand()).argmax())
            states[t] = state
        return self._sample_emissions(states, rng), states

    def _sample_emissions(self, states: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError


@register(
    "gaussian-hmm",
    description="hidden Markov model with Gaussian emissions (hmmlearn's GaussianHMM)",
    options=(
        N_COMPONENTS,
        COVARIANCE_TYPE,
        Option(
            ("--min-covar",),
            "min_covar",
            "Added to the diagonal of the data covariance that starts the state covariances.",
            kind=float,
            minimum=0.0,
        ),
        _ALGORITHM,
        LENGTHS,
        SEQUENCE_IDS,
    ),
    renames={"max_iter": "n_iter"},
    summary=attribute_summary("state", [*_CHAIN_ROWS, ("mean (first features)", "means_")], title=("covariance_type",)),
    figures=("transitions", "states"),
)
class GaussianHMM(_BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum-Welch out of core.

    Names and meanings are hmmlearn's ``GaussianHMM``; the data may be larger than
    memory (dask arrays, Zarr) and the fit runs on Dask with checkpoints.

    Parameters
    ----------
    n_components : int
        Number of states.
    covariance_type : {"spherical", "diag", "full", "tied"}
        Form of the state covariances.
    min_covar : float
        Added to the diagonal of the data covariance that initialises ``covars_``.
    startprob_prior, transmat_prior : float or array
        Dirichlet concentration of the start and transition probabilities.
    means_prior, means_weight, covars_prior, covars_weight : float or array
        hmmlearn's priors of the means and covariances.
    algorithm : {"viterbi", "map"}
        Decoder of :meth:`predict`.
    random_state : int, RandomState or None
        Seed of the initialisation (k-means|| means) and of :meth:`sample`.
    n_iter : int
        Most EM iterations.
    tol : float
        Stop when the total log-likelihood gains less than this (hmmlearn's rule).
    verbose : bool or int
        Print every iteration.
    params, init_params : str
        Letters of the parameters updated by the M-step / initialised by :meth:`fit`:
        ``s`` start, ``t`` transitions, ``m`` means, ``c`` covariances. Parameters not
        in ``init_params`` are taken from the attributes set before fitting, or
        initialised when not set; one set and named in ``init_params`` is overwritten (a
        warning is logged), as in hmmlearn.
    implementation : {"log", "scaling"}
        hmmlearn's choice of recursion. Both give daskem's computation (scaled recursions
        normalised by every row's largest log-density: stable, the same numbers either
        way); ``"scaling"`` keeps hmmlearn's refusal of a row whose densities all underflow
        to zero in linear space (ValueError). Anything else raises ValueError.
    split_every, cache, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, accelerate
        daskem's engine parameters, as for :class:`daskem.GaussianMixture`.
    verbose_interval : int
        Iterations between verbose lines.
    schedule : {"batch", "incremental", "online"}, default="batch"
        Which blocks each M-step reads, as for :class:`daskem.GaussianMixture`
        ("stochastic" is refused: it draws a mixture's components, not state paths).
        "incremental" and "online" read some blocks per step, so every block must hold
        whole sequences (no sequence longer than a block; else a ParameterError says how
        to rechunk). An iteration is a sweep (incremental) or an epoch (online) over the
        blocks; ``n_iter`` bounds them and ``tol`` applies between them.
    step_blocks, learning_decay, learning_offset, average, shuffle
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    means_ : ndarray of shape (n_components, n_features)
    covars_ : ndarray of shape (n_components, n_features, n_features)
        Full covariance matrices (hmmlearn's convention); ``_covars_`` holds them in the
        covariance type's own shape.
    n_features : int
        Dimension of the emissions (set by a fit, or by hand as in hmmlearn).
    monitor_ : ConvergenceMonitor
        History of the last fit.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_passes_, n_steps_, n_samples_seen_
        As for :class:`daskem.GaussianMixture` (per-sample log-likelihoods).
    """

    _FITTED = ("startprob_", "transmat_", "means_", "_covars_")
    _LETTERS = "stmc"

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool | int = False,
        params: str = "stmc",
        init_params: str = "stmc",
        implementation: str = "log",
        *,
        split_every: int | None = None,
        cache: bool | str = "auto",
        checkpoint: Any = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        accelerate: str | None = None,
        verbose_interval: int = 1,
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 0.55,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.split_every = split_every
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.accelerate = accelerate
        self.verbose_interval = verbose_interval
        self.schedule = schedule
        self.step_blocks = step_blocks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.average = average
        self.shuffle = shuffle

    def _validate_hyperparameters(self) -> None:
        check_option("GaussianHMM", "covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_real("GaussianHMM", "min_covar", self.min_covar, 0.0)
        super()._validate_hyperparameters()

    def _emission(self) -> GaussianEmission:
        return GaussianEmission(
            self.covariance_type, self.means_prior, self.means_weight, self.covars_prior, self.covars_weight
        )

    def _initial_emissions(
        self,
        model: HMMModel[GaussianEmission],
        rows: FitSession,
        rng: np.random.Generator,
        startprob: Any,
        transmat: Any,
    ) -> HMMParams:
        k = self.n_components
        means = self._given("m", "means_", lambda: kmeans_centers(rows, k, [rng])[0])
        covariances = self._given(
            "c", "_covars_", lambda: self._data_covariance(model, rows, np.asarray(means, dtype=np.float64))
        )
        return model.make_params(startprob, transmat, model.emission.make_params(k, means, covariances))

    def _data_covariance(self, model: HMMModel[GaussianEmission], rows: FitSession, means: np.ndarray) -> np.ndarray:
        """hmmlearn's start: the data covariance plus ``min_covar`` on the diagonal (one pass;
        :meth:`GaussianEmission.start_covariances`)."""
        one = GaussianMixtureModel(1, FULL_COVARIANCE, 0.0)
        centre = means.mean(axis=0, keepdims=True)
        d = rows.source.n_features
        start = GaussianMixtureParams(np.ones(1), centre, np.eye(d)[None], np.eye(d)[None])
        return model.emission.start_covariances(rows.stats(one, start), self.n_components, float(self.min_covar))

    def _emission_scalars(self, size: int) -> dict[str, int]:
        k, d = self.n_components, size
        return {"m": k * d, "c": covariance_type(self.covariance_type).n_cov_parameters(k, d)}

    def _emission_size(self, model: HMMModel[Any] | None = None, session: FitSession | None = None) -> int:
        if session is not None:
            return session.source.n_features - self._ADDED_COLUMNS
        return int(np.shape(self.means_)[1])

    def _set_params_attributes(self, params: HMMParams) -> None:
        self.startprob_ = params.startprob
        self.transmat_ = params.transmat
        self.means_ = params.emission.means
        self._covars_ = params.emission.covariances
        self.n_features = params.emission.means.shape[1]

    def _params(self) -> HMMParams:
        model = self._model()
        emission = model.emission.make_params(self.n_components, self.means_, self._covars_)
        return model.make_params(self.startprob_, self.transmat_, emission)

    def _n_columns(self) -> int:
        return int(np.shape(self.means_)[1])

    @property
    def covars_(self) -> np.ndarray:
        """Full covariance matrices of the states, shape (n_components, n_features, n_features)."""
        ct = covariance_type(self.covariance_type)
        return ct.to_full(np.asarray(self._covars_), self.n_components, np.shape(self.means_)[1])

    @covars_.setter
    def covars_(self, value: Any) -> None:
        self._covars_ = np.asarray(value, dtype=np.float64).copy()

    def _sample_emissions(self, states: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        d = self.means_.shape[1]
        out = np.empty((states.size, d))
        covs = self.covars_
        for j in range(self.n_components):
            rows = np.flatnonzero(states == j)
            out[rows] = rng.multivariate_normal(self.means_[j], covs[j], size=rows.size)
        return out


@register(
    "categorical-hmm",
    description="hidden Markov model with categorical emissions (hmmlearn's CategoricalHMM)",
    options=(
        N_COMPONENTS,
        Option(
            ("--n-symbols",),
            "n_features",
            "Number of symbols; unset, the largest symbol in the data plus one.",
            minimum=1,
        ),
        _ALGORITHM,
        LENGTHS,
        SEQUENCE_IDS,
    ),
    renames={"max_iter": "n_iter"},
    summary=attribute_summary("state", [*_CHAIN_ROWS, ("emission probabilities (first symbols)", "emissionprob_")]),
    figures=("transitions", "states"),
    data="symbols",
)
class CategoricalHMM(_BaseHMM):
    """Hidden Markov model with categorical emissions, fitted by Baum-Welch out of core.

    Names and meanings are hmmlearn's ``CategoricalHMM``: ``X`` holds one column of
    integer symbols in ``[0, n_features)``.

    Parameters
    ----------
    n_components : int
        Number of states.
    startprob_prior, transmat_prior, emissionprob_prior : float or array
        Dirichlet concentrations.
    n_features : int, optional
        Number of symbols. Default: when the emissions are initialised (``"e"`` in
        ``init_params`` or ``emissionprob_`` not set), the largest symbol in the data plus
        one (one pass over the data); else the columns of ``emissionprob_``. As in
        hmmlearn, a fit (or :meth:`_init`) that infers it sets ``n_features``.
    algorithm, random_state, n_iter, tol, verbose, verbose_interval
        As for :class:`GaussianHMM`.
    params, init_params : str
        Letters among ``s`` start, ``t`` transitions, ``e`` emissions.
    implementation : {"log", "scaling"}
        As for :class:`GaussianHMM`.
    split_every, cache, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, accelerate
        daskem's engine parameters.
    schedule, step_blocks, learning_decay, learning_offset, average, shuffle
        As for :class:`GaussianHMM`.

    Attributes
    ----------
    startprob_, transmat_ : ndarray
    emissionprob_ : ndarray of shape (n_components, n_features)
    monitor_ : ConvergenceMonitor
    converged_, n_iter_, lower_bound_, lower_bounds_, n_passes_, n_steps_, n_samples_seen_
    """

    _FITTED = ("startprob_", "transmat_", "emissionprob_")
    _LETTERS = "ste"

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        *,
        emissionprob_prior: Any = 1.0,
        n_features: int | None = None,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool | int = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        split_every: int | None = None,
        cache: bool | str = "auto",
        checkpoint: Any = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        accelerate: str | None = None,
        verbose_interval: int = 1,
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 0.55,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
    ) -> None:
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.split_every = split_every
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.accelerate = accelerate
        self.verbose_interval = verbose_interval
        self.schedule = schedule
        self.step_blocks = step_blocks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.average = average
        self.shuffle = shuffle

    def _validate_hyperparameters(self) -> None:
        check_int("CategoricalHMM", "n_features", self.n_features, 1, none_ok=True)
        super()._validate_hyperparameters()

    def _symbols(self) -> int:
        """The number of symbols: ``n_features``, else the columns of ``emissionprob_`` (0: neither is set)."""
        if self.n_features is not None:
            return int(self.n_features)
        return int(np.shape(self.emissionprob_)[-1]) if hasattr(self, "emissionprob_") else 0

    def _emission(self, n_features: int | None = None) -> CategoricalEmission:
        """The emission of ``n_features`` symbols (default: :meth:`_symbols`), at least one."""
        symbols = self._symbols() if n_features is None else n_features
        return CategoricalEmission(max(symbols, 1), self.emissionprob_prior)

    def _check_data(self, source: DataSource) -> None:
        if source.n_features != 1:
            raise DataError(
                f"CategoricalHMM takes one column of integer symbols; X has {source.n_features} columns. "
                "Pass X with shape (n_samples, 1)."
            )

    def _fit_model(self, session: FitSession, carry: bool) -> HMMModel[CategoricalEmission]:
        """The model of a fit: with ``n_features`` unset and the emissions initialised (``"e"``
        in ``init_params``, or ``emissionprob_`` not set), its symbols are the data's (the
        largest plus one: one pass over the data)."""
        if self.n_features is not None or ("e" not in self.init_params and hasattr(self, "emissionprob_")):
            return self._engine_model(carry)
        largest = largest_value(session)
        return self._engine_model(carry, self._emission(int(largest) + 1 if np.isfinite(largest) else 0))

    def _emission_scalars(self, size: int) -> dict[str, int]:
        return {"e": self.n_components * (size - 1)}

    def _emission_size(self, model: HMMModel[Any] | None = None, session: FitSession | None = None) -> int:
        if model is not None:
            return int(model.emission.n_features)
        return int(np.shape(self.emissionprob_)[-1])

    def _model_for_arrays(self, arrays: dict[str, np.ndarray]) -> HMMModel[CategoricalEmission]:
        return self._engine_model(False, self._emission(int(np.shape(arrays["emissionprob"])[-1])))

    def _initial_emissions(
        self,
        model: HMMModel[CategoricalEmission],
        rows: FitSession,
        rng: np.random.Generator,
        startprob: Any,
        transmat: Any,
    ) -> HMMParams:
        k, m = self.n_components, model.emission.n_features

        def random_rows() -> np.ndarray:
            values = rng.random((k, m))
            return np.asarray(values / values.sum(axis=1, keepdims=True))

        emissionprob = self._given("e", "emissionprob_", random_rows)
        return model.params_from_arrays({"startprob": startprob, "transmat": transmat, "emissionprob": emissionprob})

    def _set_params_attributes(self, params: HMMParams) -> None:
        self.startprob_ = params.startprob
        self.transmat_ = params.transmat
        self.emissionprob_ = params.emission.emissionprob
        self.n_features_ = params.emission.emissionprob.shape[1]

    def fit(
        self, X: Any, lengths: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None
    ) -> Self:
        """Estimate the parameters by Baum-Welch (EM).

        As in hmmlearn, ``n_features`` unset is set to the symbols of the fit (``n_features_``).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, 1)
            The symbols of all sequences, one after the other.
        lengths : array-like of int, optional
            Lengths of the sequences, summing to ``n_samples`` (default: one sequence).
        callback : callable, optional
            Called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self
        """
        super().fit(X, lengths, callback=callback)
        if self.n_features is None:
            self.n_features = int(self.n_features_)
        return self

    def partial_fit(self, X: Any, lengths: Any = None) -> Self:
        """Update the model with the sequences of ``X`` by online EM (see :meth:`GaussianHMM.partial_fit`).

        With ``n_features`` unset, the first call takes the symbols of its batch (the
        largest plus one) and sets ``n_features``: later batches must not hold larger
        symbols (set ``n_features`` to the number of symbols beforehand if the first
        batch may lack some).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, 1)
            The symbols of a batch of whole sequences, one after the other.
        lengths : array-like of int, optional
            Lengths of the batch's sequences (default: one sequence).

        Returns
        -------
        self
        """
        super().partial_fit(X, lengths)
        if self.n_features is None:
            self.n_features = int(self.n_features_)
        return self

    def _init(self, X: Any, lengths: Any = None) -> None:
        """hmmlearn's ``_init`` (see :meth:`GaussianHMM._init`); sets ``n_features`` when unset."""
        super()._init(X, lengths)
        if self.n_features is None:
            self.n_features = int(self.n_features_)

    def _n_columns(self) -> int:
        return 1

    def _params(self) -> HMMParams:
        return self._model().params_from_arrays(
            {"startprob": self.startprob_, "transmat": self.transmat_, "emissionprob": self.emissionprob_}
        )

    def _sample_emissions(self, states: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        cum = np.cumsum(self.emissionprob_, axis=1)
        draws = rng.rand(states.size)
        return (cum[states] > draws[:, None]).argmax(axis=1)[:, None]


__all__ = ["CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "lengths_from_ids"]
