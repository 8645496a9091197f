"""``daskem.LatentDirichletAllocation``: scikit-learn's LDA by variational EM, out of core.

The model, its E-step (scikit-learn's per-document updates, compiled) and its statistics
are in :mod:`daskem.models.lda`. Batch learning is the engine's EM loop: one pass over
the documents per iteration, checkpointed and resumable like every daskem fit. Online
learning (``learning_method="online"``, :meth:`LatentDirichletAllocation.partial_fit`)
updates the topics after every mini-batch of ``batch_size`` documents, in row order: one
pass is a scan of the blocks (:meth:`daskem.em.session.FitSession.fold`), each block's
task continuing from the previous block's topics.

Differences from scikit-learn, all deliberate:

* Every E-step starts each document's ``gamma`` from 1 (scikit-learn's start when it
  draws no random values, as in its ``transform``, ``score`` and ``perplexity``); its
  fits draw a random start per document from ``random_state``, which would make the
  statistics depend on how the rows are split into blocks. So the statistics of a
  pass, the perplexity and the bound are those of its ``transform``, whatever the
  chunking.
* The training perplexity of the topics a batch iteration starts from comes with that
  iteration's pass (no extra pass): with ``evaluate_every > 0`` the fit stops when it
  changes by less than ``perp_tol`` between consecutive iterations (scikit-learn
  evaluates every ``evaluate_every`` iterations, at the cost of a pass each, and stops one
  M-step earlier). A fit also stops when the topics no longer change at all.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state

from daskem.em.monitor import IterationRecord, LikelihoodDecreaseWarning
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import EMEstimator, _source_record
from daskem.estimators._validation import check_int, check_option, check_real
from daskem.io.sources import DataSource, as_source
from daskem.models.lda import LDAModel, LDAParams, MapLDAModel, OnlineLDA, OnlineState
from daskem.registry import N_COMPONENTS, Option, Summary, register

LEARNING_METHODS = ("batch", "online", "map")

#: Words per topic shown by the summary.
TOP_WORDS = 8


def _summary(est: Any) -> Summary:
    """The most weighted feature indices (words) of every topic, and each topic's weight."""
    components = np.asarray(est.components_, dtype=np.float64)
    top = np.argsort(-components, axis=1, kind="stable")[:, :TOP_WORDS]
    share = components.sum(axis=1) / components.sum()
    rows = tuple(
        (str(t), f"{share[t]:.4f}", ", ".join(str(int(w)) for w in top[t])) for t in range(components.shape[0])
    )
    perplexity = getattr(est, "bound_", None)
    notes = () if perplexity is None else (f"training perplexity: {float(perplexity):.4f}",)
    return Summary(
        f"{type(est).__name__} ({est.learning_method})",
        ("topic", "weight", f"top {TOP_WORDS} features (column indices)"),
        rows,
        notes,
        {"top_features": top.tolist(), "topic_weights": share.tolist(), "components": components.tolist()},
    )


@register(
    "lda",
    description="latent Dirichlet allocation: topics of word counts (scikit-learn's LatentDirichletAllocation)",
    options=(
        N_COMPONENTS,
        Option(
            ("--learning-method",),
            "learning_method",
            "How LDA learns its topics: variational Bayes once per pass (batch) or after every mini-batch of "
            "documents (online), or MAP-EM as Spark's EM optimizer (map).",
            kind=str,
            choices=LEARNING_METHODS,
        ),
        Option(
            ("--doc-topic-prior",),
            "doc_topic_prior",
            "Prior of the documents' topic proportions (LDA's alpha; default 1 / n_components).",
            kind=float,
            minimum=0.0,
        ),
        Option(
            ("--topic-word-prior",),
            "topic_word_prior",
            "Prior of the topics' word distributions (LDA's eta; default 1 / n_components).",
            kind=float,
            minimum=0.0,
        ),
    ),
    renames={"tol": "perp_tol"},
    data="counts",
    summary=_summary,
    objective="mean variational bound per document",
)
class LatentDirichletAllocation(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """Latent Dirichlet allocation by variational Bayes on document-word counts of any size.

    A drop-in for :class:`sklearn.decomposition.LatentDirichletAllocation`: the same
    parameters, methods and fitted attributes, with each batch iteration one pass over
    Dask blocks of documents (scipy.sparse CSR blocks or dense rows) and the per-document
    updates compiled. From the same ``components_`` an iteration gives scikit-learn's
    numbers (its non-random document start, see :mod:`daskem.estimators.lda`).

    ``X`` may be a scipy.sparse matrix or array, a dask array of scipy.sparse blocks, or
    dense rows (NumPy, dask, Zarr, ...).

    Parameters
    ----------
    n_components : int, default=10
        Number of topics.
    doc_topic_prior : float, default=None
        Prior of the document-topic distribution ``theta`` (``alpha``); None:
        ``1 / n_components``.
    topic_word_prior : float, default=None
        Prior of the topic-word distribution ``beta`` (``eta``); None: ``1 / n_components``.
    learning_method : {"batch", "online", "map"}, default="batch"
        How :meth:`fit` updates ``components_``: "batch" from all documents once per
        iteration (one pass, through daskem's EM engine: checkpoints and resume work);
        "online" after every mini-batch of ``batch_size`` documents, in row order;
        "map": MAP-EM as Spark MLlib's EM optimizer defines it
        (:class:`daskem.models.lda.MapLDAModel`): point estimates of the topics and of each
        document's proportions under Dirichlet priors ``>= 1`` (default Spark's,
        ``doc_topic_prior = 50 / n_components + 1`` and ``topic_word_prior = 1.1``),
        batch passes through the engine; ``components_`` are then the expected topic-word
        counts plus ``topic_word_prior - 1``, ``exp_dirichlet_component_`` the topics'
        word distributions, ``transform`` each document's MAP proportions, and the bound
        (``score``, ``perplexity``) the log posterior without constants.
    learning_decay : float, default=0.7
        ``kappa``: the online update's weight is ``(learning_offset + n_batch_iter_) **
        -learning_decay``.
    learning_offset : float, default=10.0
        ``tau_0`` (at least 1), which down-weights early online updates.
    max_iter : int, default=10
        Most passes over the data (epochs) of :meth:`fit`; not used by :meth:`partial_fit`.
    batch_size : int, default=128
        Documents per online mini-batch.
    evaluate_every : int, default=-1
        0 or negative: no perplexity check, ``max_iter`` iterations. Positive: batch
        learning stops when the training perplexity changes by less than ``perp_tol``
        between iterations (read from each pass, no extra pass; printed every
        ``evaluate_every`` iterations with ``verbose``); online learning evaluates it
        every ``evaluate_every`` epochs, a pass each, as scikit-learn.
    total_samples : float, default=1e6
        Documents in the whole corpus, for :meth:`partial_fit` (a mini-batch's
        statistics are scaled by ``total_samples / batch``) and
        ``perplexity(sub_sampling=True)``.
    perp_tol : float, default=0.1
        Perplexity tolerance (used when ``evaluate_every > 0``; ``daskem fit --tol``).
    mean_change_tol : float, default=1e-3
        A document's variational updates stop when the mean absolute change of its
        topic parameters is below it.
    max_doc_update_iter : int, default=100
        Most variational updates per document and E-step.
    n_jobs : int, default=None
        Accepted for scikit-learn compatibility and ignored for the computation: Dask
        decides the parallelism (the blocks' E-steps run on the threads of Dask's local
        scheduler, or on the workers of the current ``distributed.Client``). Give the
        cluster the cores you want used.
    verbose : int, default=0
        Print one line per iteration, scikit-learn's ("iteration: i of max_iter: m"), with
        the perplexity every ``evaluate_every`` iterations (for batch learning: the
        perplexity of the topics the iteration started from).
    random_state : int, RandomState instance or None, default=None
        The initial ``components_`` are ``random_state.gamma(100, 0.01, (k, n_features))``,
        scikit-learn's draw (the same numbers for the same integer seed).
    components_init : array-like of shape (n_components, n_features), default=None
        Start from these (positive) topic-word parameters instead of the random draw.
    split_every, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`; checkpoints are for batch learning
        (``checkpoint`` with ``learning_method="online"`` is refused).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Topic-word variational Dirichlet parameters (``lambda``), in the data's float
        dtype.
    exp_dirichlet_component_ : ndarray of shape (n_components, n_features)
        ``exp(E[log beta])``.
    n_batch_iter_ : int
        Online updates made, plus 1 (scikit-learn's count).
    n_iter_ : int
        Passes over the data (epochs) of the last :meth:`fit`.
    bound_ : float
        Perplexity of the returned topics on the training set (one last pass).
    doc_topic_prior_, topic_word_prior_ : float
        The priors used.
    lower_bound_ : float
        Variational bound per document of the topics the last batch iteration started
        from; ``lower_bounds_`` for every iteration (online: at every evaluation).
    converged_ : bool
    n_passes_ : int
        Passes over the data, the final perplexity pass included.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import LatentDirichletAllocation
    >>> X = np.random.default_rng(0).poisson(1.0, size=(100, 20))
    >>> lda = LatentDirichletAllocation(n_components=3, random_state=0).fit(X)
    >>> lda.transform(X).shape
    (100, 3)
    """

    _FITTED = ("components_",)
    _WARN_NOT_CONVERGED = False  # scikit-learn's LDA does not warn at max_iter
    _ACCEPT_SPARSE = True  # the LDA model computes with sparse blocks

    # Engine settings scikit-learn's LDA has no parameter for: one start, plain EM.
    n_init: ClassVar[int] = 1  # type: ignore[misc]
    accelerate: ClassVar[None] = None  # type: ignore[misc]
    prune_restarts: ClassVar[bool] = False  # type: ignore[misc]
    verbose_interval: ClassVar[int] = 1  # type: ignore[misc]

    def __init__(
        self,
        n_components: int = 10,
        *,
        doc_topic_prior: float | None = None,
        topic_word_prior: float | None = None,
        learning_method: str = "batch",
        learning_decay: float = 0.7,
        learning_offset: float = 10.0,
        max_iter: int = 10,
        batch_size: int = 128,
        evaluate_every: int = -1,
        total_samples: float = 1e6,
        perp_tol: float = 1e-1,
        mean_change_tol: float = 1e-3,
        max_doc_update_iter: int = 100,
        n_jobs: int | None = None,
        verbose: int = 0,
        random_state: Any = None,
        components_init: Any = None,
        split_every: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
    ) -> None:
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.evaluate_every = evaluate_every
        self.total_samples = total_samples
        self.perp_tol = perp_tol
        self.mean_change_tol = mean_change_tol
        self.max_doc_update_iter = max_doc_update_iter
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self.components_init = components_init
        self.split_every = split_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    @property
    def tol(self) -> float:  # type: ignore[override]
        """The engine's tolerance: ``perp_tol`` (see :meth:`_engine_tol`)."""
        return float(self.perp_tol)

    # -- validation and the model ---------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1)
        for prior in ("doc_topic_prior", "topic_word_prior"):
            value = getattr(self, prior)
            if value is not None:
                check_real(name, prior, value, 0.0)
        check_option(name, "learning_method", self.learning_method, LEARNING_METHODS)
        check_real(name, "learning_decay", self.learning_decay, 0.0)
        check_real(name, "learning_offset", self.learning_offset, 1.0)
        check_int(name, "batch_size", self.batch_size, 1)
        if isinstance(self.evaluate_every, bool) or not isinstance(self.evaluate_every, int | np.integer):
            raise ParameterError(
                f"The 'evaluate_every' parameter of {name} must be an int. Got {self.evaluate_every!r} instead."
            )
        check_real(name, "total_samples", self.total_samples, 0.0)
        if self.total_samples <= 0:
            raise ParameterError(
                f"The 'total_samples' parameter of {name} must be a float in the range (0, inf). "
                f"Got {self.total_samples!r} instead."
            )
        check_real(name, "perp_tol", self.perp_tol, 0.0)
        check_real(name, "mean_change_tol", self.mean_change_tol, 0.0)
        check_int(name, "max_doc_update_iter", self.max_doc_update_iter, 0)
        check_int(name, "n_jobs", self.n_jobs, -(2**31), none_ok=True)
        if self.learning_method == "map":
            alpha, eta = self._priors()
            if alpha < 1.0 or eta <= 1.0:
                raise ParameterError(
                    f"learning_method='map' needs doc_topic_prior >= 1 and topic_word_prior > 1 (Spark's EM optimizer "
                    f"requires both > 1: a prior below 1 has no posterior mode inside the simplex); got "
                    f"doc_topic_prior={alpha!r}, topic_word_prior={eta!r}. Leave them None for Spark's defaults "
                    f"(50 / n_components + 1 and 1.1)."
                )
        if self.checkpoint is not None and self.learning_method == "online":
            raise ParameterError(
                f"{name} checkpoints batch learning only; learning_method='online' updates the topics after every "
                "mini-batch within a pass. Use learning_method='batch' with checkpoint=, or drop checkpoint=."
            )
        self._validate_engine_parameters()

    def _priors(self) -> tuple[float, float]:
        k = int(self.n_components)
        # MAP-EM: Spark's defaults (docConcentration 50 / k + 1, topicConcentration 1.1).
        default_alpha, default_eta = (50.0 / k + 1.0, 1.1) if self.learning_method == "map" else (1.0 / k, 1.0 / k)
        alpha = default_alpha if self.doc_topic_prior is None else float(self.doc_topic_prior)
        eta = default_eta if self.topic_word_prior is None else float(self.topic_word_prior)
        return alpha, eta

    def _model(self, total_samples: float | None = None) -> LDAModel:
        alpha, eta = self._priors()
        kind = MapLDAModel if self.learning_method == "map" else LDAModel
        return kind(
            int(self.n_components),
            alpha,
            eta,
            int(self.max_doc_update_iter),
            float(self.mean_change_tol),
            float(self.total_samples if total_samples is None else total_samples),
        )

    def _engine_tol(self, source: DataSource) -> float:
        # The perplexity rule (LDAModel.converged), off (0: never met) without evaluations.
        return float(self.perp_tol) if self.evaluate_every > 0 else 0.0

    def _init_config(self) -> dict[str, Any]:
        init = None if self.components_init is None else np.asarray(self.components_init, dtype=np.float64).tolist()
        return {"components_init": init}

    def _initial_components(self, n_features: int) -> np.ndarray:
        """``components_init``, checked, or scikit-learn's draw ``gamma(100, 0.01, (k, n_features))``."""
        k = int(self.n_components)
        if self.components_init is None:
            return np.asarray(check_random_state(self.random_state).gamma(100.0, 0.01, (k, n_features)))
        try:
            init = np.array(self.components_init, dtype=np.float64)
        except (TypeError, ValueError):
            init = np.array([np.nan])
        if init.shape != (k, n_features) or not np.all(np.isfinite(init) & (init > 0)):
            raise ParameterError(
                f"components_init must be an array-like of shape (n_components, n_features) = ({k}, {n_features}) "
                f"of positive finite values. Got {np.shape(self.components_init)} instead."
            )
        return init

    def _initial_params(self, model: LDAModel, session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        # Drawn by fit before the engine takes its seed from random_state (scikit-learn's draw
        # is the first one of a RandomState instance).
        return [model.make_params(self._start)]

    def _params(self) -> LDAParams:
        return self._model().make_params(self.components_)

    def _set_params_attributes(self, params: LDAParams) -> None:
        from daskem.models.lda_kernels import dirichlet_expectation_2d

        dtype = getattr(self, "_dtype", np.float64)
        self.components_ = params.components.astype(dtype)
        model = self._model()
        # MAP-EM: the topics' word distributions themselves (the counterpart of exp(E[log beta])).
        if isinstance(model, MapLDAModel):
            topics = model.topics(params)
        else:
            topics = np.exp(dirichlet_expectation_2d(params.components))
        self.exp_dirichlet_component_ = topics.astype(dtype)
        self.doc_topic_prior_, self.topic_word_prior_ = self._priors()

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])

    def _source(self, X: Any) -> DataSource:
        source = as_source(X, accept_sparse=True)
        self._dtype = np.float32 if source.array.dtype == np.float32 else np.float64
        return source

    # -- fitting ------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None) -> Any:
        """Learn the topics of the documents ``X`` by variational Bayes.

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts; a string is the path or URL of a Zarr array.
        y : None
            Ignored.
        callback : callable, optional
            Batch learning: called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = self._source(X)
        session = self._session(source)
        self.n_batch_iter_ = 1
        if self.learning_method in ("batch", "map"):
            self._fit_batch(session, callback)
        else:
            self._fit_online(session)
        self._final_perplexity(session)
        return self

    def _fit_batch(self, session: FitSession, callback: Callable[[IterationRecord, Any], None] | None) -> None:
        self._start = self._initial_components(session.source.n_features)
        verbose, self.verbose = self.verbose, 0  # scikit-learn's LDA lines, not the engine's
        try:
            with warnings.catch_warnings():
                # Each document's updates stop at mean_change_tol (an inexact E-step), so the
                # bound can fall slightly near convergence (scikit-learn's perplexity rises there
                # too, scikit-learn#6777); it does not warn either.
                warnings.filterwarnings("ignore", category=LikelihoodDecreaseWarning)
                self._fit_restarts(self._model(), session, 1, False, self._printer(verbose, callback))
        finally:
            self.verbose = verbose
            del self._start
        self.n_batch_iter_ = 1 + self.n_iter_  # scikit-learn counts batch updates too

    def _printer(
        self, verbose: int, user: Callable[[IterationRecord, Any], None] | None
    ) -> Callable[[IterationRecord, LDAParams], None]:
        def callback(record: IterationRecord, params: LDAParams) -> None:
            if verbose:
                self._print_iteration(record.iteration, params.perplexity)
            if user is not None:
                user(record, params)

        return callback

    def _print_iteration(self, iteration: int, perplexity: float) -> None:
        line = f"iteration: {iteration} of max_iter: {self.max_iter}"
        if self.evaluate_every > 0 and iteration % self.evaluate_every == 0:
            line += f", perplexity: {perplexity:.4f}"
        print(line, file=sys.stdout)

    def _fit_online(self, session: FitSession) -> None:
        model = self._model(total_samples=session.source.n_samples)
        scan = self._scan(model)
        state = OnlineState(LDAParams(self._initial_components(session.source.n_features), math.nan), 1)
        session.check_chunking()
        last, history, n_iter = None, [], 0
        for i in range(int(self.max_iter)):
            state = scan.finish(session.fold(scan, "block", state))
            if self.evaluate_every > 0 and (i + 1) % self.evaluate_every == 0:
                stats = session.stats(model, model.make_params(state.params.components))
                perplexity = model.perplexity(stats)
                history.append(model.log_likelihood(stats) / stats.n)
                if self.verbose:
                    self._print_iteration(i + 1, perplexity)
                if last is not None and abs(last - perplexity) < self.perp_tol:
                    break
                last = perplexity
            elif self.verbose:
                self._print_iteration(i + 1, math.nan)
            n_iter += 1
        self._set_params_attributes(state.params)
        self.n_batch_iter_ = state.n_batch_iter
        self.n_iter_ = n_iter
        self.converged_ = n_iter < self.max_iter
        self.lower_bounds_ = history
        self.lower_bound_ = history[-1] if history else -np.inf
        self.n_features_in_ = session.source.n_features
        self._n_samples_fit = session.source.n_samples
        self._fit_source = _source_record(session.source.location, session.source.options)

    def _scan(self, model: LDAModel) -> OnlineLDA:
        return OnlineLDA(model, int(self.batch_size), float(self.learning_decay), float(self.learning_offset))

    def _final_perplexity(self, session: FitSession) -> None:
        """``bound_``: the training perplexity of the returned topics (one pass)."""
        model = self._model()
        self.bound_ = model.perplexity(session.stats(model, self._params()))
        self.n_passes_ = session.passes

    def partial_fit(self, X: Any, y: Any = None) -> Any:
        """Update the topics with the mini-batches of ``X`` (online variational Bayes).

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts, taken ``batch_size`` documents at a time, in order.
        y : None
            Ignored.

        Returns
        -------
        self
            The updated estimator.
        """
        self._validate_hyperparameters()
        if self.learning_method == "map":
            raise ParameterError(
                "partial_fit is online variational Bayes; learning_method='map' (MAP-EM) learns in batch passes only. "
                "Use fit, or learning_method='online'."
            )
        first = not hasattr(self, "components_")
        source = self._source(X) if first else as_source(X, accept_sparse=True)
        if first:
            components = self._initial_components(source.n_features)
            self.n_batch_iter_, self.n_iter_, self.n_passes_ = 1, 0, 0
            self.converged_, self.lower_bound_, self.lower_bounds_ = False, -np.inf, []
            self.n_features_in_ = source.n_features
            self._n_samples_fit, self._fit_source = 0, None
        else:
            components = np.asarray(self.components_, dtype=np.float64)
        if source.n_features != components.shape[1]:
            raise DataError(
                f"The provided data has {source.n_features} dimensions while the model was trained with feature size "
                f"{components.shape[1]}."
            )
        session = self._prediction_session(source)
        scan = self._scan(self._model())
        state = scan.finish(
            session.fold(scan, "block", OnlineState(LDAParams(components, math.nan), self.n_batch_iter_))
        )
        self._set_params_attributes(state.params)
        self.n_batch_iter_ = state.n_batch_iter
        self.n_passes_ += session.passes
        self._n_samples_fit += source.n_samples
        return self

    # -- the fitted model -----------------------------------------------------------------

    def transform(self, X: Any, *, normalize: bool = True) -> Any:
        """Every document's topic distribution under the fitted topics.

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts.
        normalize : bool, default=True
            Normalise every row to sum 1 (else the variational parameters ``gamma``).

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        source = self._source_for_predict(X)
        what = "transform" if normalize else "unnormalized_transform"
        dtype = np.float32 if source.array.dtype == np.float32 else np.float64
        session = self._prediction_session(source)
        return session.map_rows(self._model(), what, self._params(), dtype=dtype, columns=self._n_features_out)

    def fit_transform(self, X: Any, y: Any = None, *, normalize: bool = True) -> Any:
        """Fit, then :meth:`transform` ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts.
        y : None
            Ignored.
        normalize : bool, default=True
            As for :meth:`transform`.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self.fit(X, y).transform(X, normalize=normalize)

    def _stats(self, X: Any) -> Any:
        """The statistics of ``X`` under the fitted topics (one pass)."""
        session = self._prediction_session(self._source_for_predict(X))
        return session.stats(self._model(), self._params())

    def score(self, X: Any, y: Any = None) -> float:
        """The variational bound (approximate log-likelihood) of ``X``: scikit-learn's ``score``.

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts.
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return float(self._model().log_likelihood(self._stats(X)))

    def perplexity(self, X: Any, sub_sampling: bool = False) -> float:
        """Approximate perplexity of ``X``: ``exp(-bound / words)`` (one pass).

        Parameters
        ----------
        X : {array-like, sparse matrix}, dask array, zarr.Array or str of shape (n_samples, n_features)
            Document-word counts.
        sub_sampling : bool, default=False
            Scale the documents' bound and words by ``total_samples / n_samples``.

        Returns
        -------
        float
        """
        return self._model().perplexity(self._stats(X), sub_sampling=sub_sampling)

    # -- persistence ------------------------------------------------------------------------

    def _fit_record(self) -> dict[str, Any]:
        extra = {"bound": float(getattr(self, "bound_", math.nan)), "n_batch_iter": int(self.n_batch_iter_)}
        return {**super()._fit_record(), "extra": extra}

    def _restored(self) -> None:
        extra = getattr(self, "_fit_extra", {})
        self.n_batch_iter_ = int(extra.get("n_batch_iter", 1))
        if "bound" in extra:
            self.bound_ = float(extra["bound"])
