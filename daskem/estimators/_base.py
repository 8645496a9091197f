"""What every daskem estimator shares: restarts, checkpoints, verbose output, files, load().

A subclass provides the model (``_model``), its initialisations (``_initial_params``),
the translation between parameters and fitted attributes (``_params`` /
``_set_params_attributes``), and its hyperparameter checks; :class:`EMEstimator` runs the
fit through :func:`daskem.em.driver.fit_em_restarts` (all ``n_init`` initialisations
in the same passes over the data, every read through one
:class:`daskem.em.session.FitSession`), checkpoints it, and saves and loads it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from daskem.checkpoint.checkpoint import (
    COMPARED_SECTIONS,
    Checkpoint,
    CheckpointState,
    ForeignStoreError,
    fit_metadata,
)
from daskem.checkpoint.store import read_arrays_group, write_model
from daskem.em.accelerate import ACCELERATIONS
from daskem.em.checks import check_stats
from daskem.em.driver import fit_em_restarts
from daskem.em.monitor import IterationRecord
from daskem.em.progress import FitEvent, notify
from daskem.em.runs import RestartsResult
from daskem.em.schedules import (
    OnlineState,
    Schedule,
    check_schedule,
    check_schedule_settings,
    fit_scheduled,
    online_step,
    step_stats,
)
from daskem.em.session import FitSession, single_threaded_blas
from daskem.errors import DataError, NotFittedError, ParameterError, StoreError
from daskem.estimators._validation import check_int, check_option, check_random_state_param, check_real
from daskem.io.sources import DataSource, as_source

#: Hyperparameters that say where and how to checkpoint, not what to fit: not stored.
_CHECKPOINT_PARAMS = ("checkpoint", "overwrite_checkpoint")

Callback = Callable[[IterationRecord, Any], None]


def _entropy(random_state: Any) -> int:
    """The seed of the initialisations: ``random_state`` itself if it is an int."""
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@functools.cache
def _takes_schedule(name: str) -> bool:
    """Whether the estimator class ``name`` has the schedule's constructor parameters (asked once)."""
    return "schedule" in EMEstimator._REGISTRY[name]._get_param_names()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.random.RandomState):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _source_record(location: Any, options: Any) -> dict[str, Any] | None:
    """The fit record's ``source``: the data's location and reading options, or None.

    None for data without a location (in-memory arrays), which cannot be reopened.
    """
    if location is None:
        return None
    return {"location": os.fspath(location), "options": {k: _jsonable(v) for k, v in dict(options or {}).items()}}


class EMEstimator(BaseEstimator):
    """Base of daskem's estimators (not used directly).

    Subclasses set ``_FITTED`` (the attributes a fitted instance has) and implement
    ``_model``, ``_initial_params``, ``_params``, ``_set_params_attributes`` and
    ``_validate_hyperparameters`` (calling :meth:`_validate_engine_parameters`).
    Every subclass is registered for :func:`load` under its class name.
    """

    _FITTED: ClassVar[tuple[str, ...]] = ()
    _WARN_NOT_CONVERGED: ClassVar[bool] = True
    #: Columns the estimator adds to the data it fits (an HMM's sequence-start flags).
    _ADDED_COLUMNS: ClassVar[int] = 0
    _REGISTRY: ClassVar[dict[str, type[EMEstimator]]] = {}

    # Engine hyperparameters every subclass has (set by its __init__).
    max_iter: int
    tol: float
    n_init: Any
    random_state: Any
    verbose: int
    verbose_interval: int
    split_every: int | None
    accelerate: str | None
    prune_restarts: bool
    checkpoint: str | os.PathLike[str] | None
    checkpoint_every: int
    keep_last: int
    overwrite_checkpoint: bool
    cache: str | bool
    # The schedule's hyperparameters (set by the __init__ of the estimators that take them;
    # an estimator without them, LDA, fits in batch passes).
    schedule: str = "batch"
    step_blocks: int | None = None
    learning_decay: float = 0.55
    learning_offset: float = 0.0
    average: bool | int = False
    shuffle: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EMEstimator._REGISTRY[cls.__name__] = cls

    # -- hooks -------------------------------------------------------------------------------

    def _model(self) -> Any:
        raise NotImplementedError

    def _initial_params(self, model: Any, session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        raise NotImplementedError

    def _params(self) -> Any:
        raise NotImplementedError

    def _set_params_attributes(self, params: Any) -> None:
        raise NotImplementedError

    def _max_init_passes(self, n_init: int) -> int | None:
        """The most passes the initialisation makes (progress displays); None if unknown."""
        return None

    def _init_config(self) -> dict[str, Any]:
        """What, besides the model, decides the initialisations (checkpoint ``config``)."""
        return {}

    def _engine_tol(self, source: DataSource) -> float:
        """The engine's tolerance on the change of the per-sample log-likelihood."""
        return float(self.tol)

    def _engine_max_iter(self) -> int:
        """The engine's cap on iterations (FastICA's deflation: ``max_iter`` per component)."""
        return int(self.max_iter)

    def _model_for_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The model that reads stored parameter arrays back (:meth:`_restore`)."""
        return self._model()

    # -- validation ------------------------------------------------------------------------

    def _validate_engine_parameters(self) -> None:
        name = type(self).__name__
        check_real(name, "tol", self.tol, 0.0)
        check_int(name, "max_iter", self.max_iter, 0)
        check_random_state_param(name, self.random_state)
        check_int(name, "verbose", int(self.verbose) if isinstance(self.verbose, bool) else self.verbose, 0)
        check_int(name, "verbose_interval", self.verbose_interval, 1)
        check_int(name, "split_every", self.split_every, 2, none_ok=True)
        check_int(name, "checkpoint_every", self.checkpoint_every, 1)
        check_int(name, "keep_last", self.keep_last, 1)
        if self.accelerate is not None:
            check_option(name, "accelerate", self.accelerate, [a for a in ACCELERATIONS if a is not None])
        if _takes_schedule(type(self).__name__):  # LDA's learning_decay is its own, not a schedule's
            check_schedule_settings(name, self._schedule(0))
        if self.cache is not True and self.cache is not False and self.cache != "auto":
            raise ParameterError(
                f"The 'cache' parameter of {name} must be 'auto', True or False. Got {self.cache!r} instead."
            )
        if self.checkpoint is not None and not isinstance(self.checkpoint, str | os.PathLike):
            raise ParameterError(
                f"The 'checkpoint' parameter of {name} must be a str (a Zarr path or URL), an os.PathLike or "
                f"None. Got {self.checkpoint!r} instead."
            )
        for flag in ("warm_start", "overwrite_checkpoint", "prune_restarts"):
            value = getattr(self, flag, False)
            if not isinstance(value, bool | np.bool_):
                raise ParameterError(
                    f"The {flag!r} parameter of {name} must be an instance of 'bool' or an instance of "
                    f"'numpy.bool'. Got {value!r} instead."
                )

    # -- fitting ------------------------------------------------------------------------------

    def _schedule(self, seed: int) -> Schedule:
        """The fit's schedule (:mod:`daskem.em.schedules`) from the hyperparameters."""
        return Schedule(
            self.schedule,
            self.step_blocks,
            self.learning_decay,
            self.learning_offset,
            self.average,
            self.shuffle,
            seed,
        )

    def _session(self, source: DataSource) -> FitSession:
        """The session of a fit on ``source``: this estimator's ``cache`` and ``split_every``."""
        return FitSession(source, cache=self.cache, split_every=self.split_every)

    def _fit_restarts(
        self, model: Any, data: DataSource | FitSession, n_init: int, warm: bool, callback: Callback | None
    ) -> RestartsResult:
        """Run the ``n_init`` fits in shared passes, checkpointed; set the fit attributes.

        ``data`` is the data, or the fit's session (:meth:`_session`) when the estimator
        reads the data after the fit too (its passes then add to ``n_passes_``). Returns
        the outcome; the best run's parameters are set as attributes and ``converged_``,
        ``n_iter_``, ``lower_bound_``, ``lower_bounds_``, ``n_passes_``,
        ``pruned_restarts_`` and ``n_features_in_`` are filled in.
        """
        session = data if isinstance(data, FitSession) else self._session(data)
        source = session.source
        # Checkpoint metadata reads a fingerprint of the data (sampled blocks): say so.
        notify(FitEvent("reading"))
        entropy = _entropy(self.random_state)
        checkpoint = None
        if self.checkpoint is not None:
            checkpoint = Checkpoint(self.checkpoint)
            stored = checkpoint.prepare(
                self._checkpoint_metadata(model, session, n_init, entropy),
                compare=COMPARED_SECTIONS,
                overwrite=self.overwrite_checkpoint,
            )
            # Resumed runs re-create the same initialisations, even for random_state=None.
            entropy = int(stored["random"]["entropy"])
        rngs = [np.random.default_rng(seed) for seed in np.random.SeedSequence(entropy).spawn(n_init)]

        def starts() -> list[Any]:
            return [self._params()] if warm else self._initial_params(model, session, rngs)

        if self.verbose:
            for index in range(n_init):
                print(f"Initialization {index}", file=sys.stdout)
        self._fit_start = time.perf_counter()
        schedule = self._schedule(entropy)
        iteration = self._iteration_callback(n_init, callback)
        self._online_state = None
        if schedule.name != "batch":
            self._check_schedule(schedule, model, n_init)
            result = fit_scheduled(
                model,
                session,
                lambda: starts()[0],
                schedule,
                max_iter=self._engine_max_iter(),
                tol=self._engine_tol(source),
                callback=lambda record, params: iteration(0, record, params),
                checkpoint=None if checkpoint is None else checkpoint.run(0),
                checkpoint_every=self.checkpoint_every,
                keep_last=self.keep_last,
                previous_lower_bound=float(getattr(self, "lower_bound_", -np.inf)) if warm else -np.inf,
            )
            self._online_state = result.online
            if result.online is not None:
                self.n_samples_seen_ = int(result.online.rows_seen)
            return self._finish_fit(RestartsResult(0, (result,), (), result.n_passes), source, schedule)
        outcome = fit_em_restarts(
            model,
            session,
            starts,
            max_iter=self._engine_max_iter(),
            tol=self._engine_tol(source),
            accelerate=self.accelerate,
            prune=self.prune_restarts,
            callback=iteration,
            checkpoint=None if checkpoint is None else [checkpoint.run(i) for i in range(n_init)],
            checkpoint_every=self.checkpoint_every,
            keep_last=self.keep_last,
            max_init_passes=0 if warm else self._max_init_passes(n_init),
            # A warm start measures its first change from the previous fit (scikit-learn's rule).
            previous_lower_bound=float(getattr(self, "lower_bound_", -np.inf)) if warm else -np.inf,
        )
        return self._finish_fit(outcome, source, schedule)

    def _finish_fit(self, outcome: RestartsResult, source: DataSource, schedule: Schedule) -> RestartsResult:
        """Set the fitted attributes from the outcome of the fit (see :meth:`_fit_restarts`)."""
        self._print_end(outcome)
        best = outcome.results[outcome.best]
        # A stochastic EM chain runs max_iter iterations: it does not converge.
        warn = self._WARN_NOT_CONVERGED and schedule.name != "stochastic"
        if warn and not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_params_attributes(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = [r.log_likelihood for r in best.history]
        self.n_passes_ = outcome.n_passes
        self.n_steps_ = best.n_steps
        self.pruned_restarts_ = list(outcome.pruned)
        self.n_features_in_ = source.n_features
        self._n_samples_fit = source.n_samples
        # Where the data came from (None for in-memory data), for `daskem plot MODEL.zarr`.
        self._fit_source = _source_record(source.location, source.options)
        return outcome

    def _checkpoint_metadata(self, model: Any, session: FitSession, n_init: int, entropy: int) -> dict[str, Any]:
        meta = fit_metadata(
            model,
            session.source,
            session.split_every,
            n_init=n_init,
            random_state=_jsonable(self.random_state),
            accelerate=self.accelerate,
            prune_restarts=bool(self.prune_restarts),
            **self._init_config(),
            **self._schedule(entropy).config(),
        )
        estimator = {"kind": type(self).__name__, "params": self._stored_params()}
        return {**meta, "estimator": estimator, "random": {"entropy": entropy}}

    def _stored_params(self) -> dict[str, Any]:
        """Hyperparameters as JSON for model files and checkpoints (not where to checkpoint)."""
        return {k: _jsonable(v) for k, v in self.get_params().items() if k not in _CHECKPOINT_PARAMS}

    def _check_schedule(self, schedule: Schedule, model: Any, n_init: int) -> None:
        """Refuse a schedule the fit cannot run (naming the fix)."""
        name = type(self).__name__
        check_schedule(name, schedule, model)
        if n_init > 1:
            raise ParameterError(
                f"{name} fits n_init={n_init} initialisations in shared batch passes; schedule={schedule.name!r} "
                "runs one. Use n_init=1, or schedule='batch'."
            )
        if self.accelerate is not None:
            raise ParameterError(
                f"{name}: accelerate={self.accelerate!r} extrapolates batch EM iterations; schedule="
                f"{schedule.name!r} has none to extrapolate. Use accelerate=None, or schedule='batch'."
            )

    # -- online learning -----------------------------------------------------------------------

    def _partial_source(self, X: Any, **kwargs: Any) -> DataSource:
        """The data of one :meth:`partial_fit` call (an HMM adds its sequence layout).

        A batch held in memory is one block (``as_source(..., one_block=True)``): its step
        runs on the driver without Dask's overhead per task, with the arithmetic of that
        block's task in a fit.
        """
        return as_source(X, one_block=True)

    def _partial_n_features(self, source: DataSource) -> int:
        """The features of a :meth:`partial_fit` batch: its columns less those the estimator added."""
        return source.n_features - self._ADDED_COLUMNS

    def _partial_model(self, session: FitSession) -> Any:
        """The model of a :meth:`partial_fit` call on ``session``'s data."""
        return self._model()

    def _partial_fitted(self, session: FitSession, model: Any, stats: Any, continuing: bool) -> None:
        """What a subclass adds after a :meth:`partial_fit` step (``stats``: the batch's
        statistics under the parameters the step started from; ``continuing``: whether an
        online state was continued)."""

    def _partial_fit(self, X: Any, **kwargs: Any) -> Any:
        """One online EM step from all the rows of ``X`` (see the subclasses' ``partial_fit``)."""
        self._validate_hyperparameters()
        name = type(self).__name__
        if self.average is True:
            raise ParameterError(
                f"{name}.partial_fit cannot start averaging halfway (average=True): the number of calls to come is "
                "unknown. Give the number of steps after which to average (average=100), or average=False."
            )
        source = self._partial_source(X, **kwargs)
        n_features = self._partial_n_features(source)
        fitted_features: int | None = getattr(self, "n_features_in_", None)
        if fitted_features is not None and n_features != fitted_features:
            raise DataError(
                f"X has {n_features} features, but {name} is expecting {fitted_features} features as input."
            )
        session = FitSession(source, cache=False, split_every=self.split_every)
        model = self._partial_model(session)
        schedule = replace(self._schedule(_entropy(self.random_state)), name="online", shuffle=False)
        check_schedule(name, schedule, model)
        state = getattr(self, "_online_state", None)
        continuing = state is not None
        history = list(self.lower_bounds_) if continuing else []
        if state is None:
            if hasattr(self, "converged_"):
                start = self._params()
            else:
                rng = np.random.default_rng(np.random.SeedSequence(_entropy(self.random_state)).spawn(1)[0])
                start = self._initial_params(model, session, [rng])[0]
            state = OnlineState(start)
        average_from = None if self.average is False else int(self.average)
        with single_threaded_blas():
            stats = step_stats(model, session, state.params, None)
            check_stats(stats, source.n_samples, model=model)
            state = online_step(model, schedule, state, stats, average_from)
        history.append(model.log_likelihood(stats) / stats.n)
        self._online_state = state
        self._set_params_attributes(state.reported(model))
        self.converged_ = False
        self.n_iter_ = getattr(self, "n_iter_", 0)
        self.n_steps_ = state.steps
        self.n_samples_seen_ = int(state.rows_seen)
        self.lower_bounds_ = history
        self.lower_bound_ = history[-1]
        self.n_passes_ = getattr(self, "n_passes_", 0) + session.passes
        self.pruned_restarts_ = []
        self.n_features_in_ = n_features
        self._n_samples_fit = int(state.rows_seen)
        self._fit_source = None
        self._partial_fitted(session, model, stats, continuing)
        return self

    # -- verbose output, as scikit-learn prints it -----------------------------------------

    def _iteration_callback(self, n_init: int, user: Callback | None) -> Callable[[int, IterationRecord, Any], None]:
        def callback(index: int, record: IterationRecord, params: Any) -> None:
            if self.verbose and record.iteration % self.verbose_interval == 0:
                run = f" (initialization {index})" if n_init > 1 else ""
                if self.verbose == 1:
                    print(f"  Iteration {record.iteration}{run}")
                else:
                    print(
                        f"  Iteration {record.iteration}{run}\t time lapse {record.seconds:.5f}s\t "
                        f"ll change {record.change:.5f}"
                    )
            if user is not None:
                user(record, params)

        return callback

    def _print_end(self, outcome: RestartsResult) -> None:
        for result in outcome.results:
            if self.verbose == 1:
                print(f"Initialization converged: {result.converged}")
            elif self.verbose >= 2:
                lapse = time.perf_counter() - self._fit_start
                print(
                    f"Initialization converged: {result.converged}\t time lapse {lapse:.5f}s\t "
                    f"lower bound {result.lower_bound:.5f}"
                )
        if self.verbose and outcome.pruned:
            print(f"Initializations pruned (fell clearly behind): {list(outcome.pruned)}")

    # -- prediction ------------------------------------------------------------------------

    #: Whether the model computes with scipy.sparse blocks (only KMeans): others refuse sparse X.
    _ACCEPT_SPARSE = False

    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in self._FITTED):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _source_for_predict(self, X: Any) -> DataSource:
        self._check_fitted()
        source = as_source(X, accept_sparse=self._ACCEPT_SPARSE)
        if source.n_features != self.n_features_in_:
            raise DataError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return source

    def _prediction_session(self, source: DataSource) -> FitSession:
        """The session of a prediction: it reads the data once and keeps nothing (no cache)."""
        return FitSession(source, cache=False, split_every=self.split_every)

    def _per_row(
        self,
        X: Any,
        what: str,
        *,
        dtype: Any = np.float64,
        columns: int | None = None,
        dtype_for: Callable[[np.dtype[Any]], Any] | None = None,
    ) -> Any:
        """``model.<what>`` of every row: NumPy for in-memory input (one pass), else a lazy dask array.

        The output's dtype is ``dtype``, or ``dtype_for(the data's dtype)`` when given (a
        model whose rows come back in the precision of the data).
        """
        source = self._source_for_predict(X)
        if dtype_for is not None:
            dtype = dtype_for(source.array.dtype)
        session = self._prediction_session(source)
        return session.map_rows(self._model(), what, self._params(), dtype=dtype, columns=columns)

    def _mean_per_row(self, X: Any, what: str) -> float:
        """The mean of ``model.<what>`` over the rows of ``X`` (one pass)."""
        session = self._prediction_session(self._source_for_predict(X))
        return session.mean_rows(self._model(), what, self._params())

    # -- persistence ------------------------------------------------------------------------

    def _fit_record(self) -> dict[str, Any]:
        return {
            "converged": bool(self.converged_),
            "n_iter": int(self.n_iter_),
            "lower_bound": float(self.lower_bound_),
            "lower_bounds": [float(v) for v in self.lower_bounds_],
            "n_features_in": int(self.n_features_in_),
            "n_passes": int(self.n_passes_),
            "n_steps": int(getattr(self, "n_steps_", self.n_iter_)),
            "n_samples": int(getattr(self, "_n_samples_fit", 0)),
            # {"location": path or URL, "options": reading options}, or None (in-memory data).
            "source": getattr(self, "_fit_source", None),
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the fitted model to a Zarr v3 group (arrays + JSON attributes, no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Location of the group (a path or fsspec URL).
        overwrite : bool, default False
            Replace an earlier daskem model file at ``path``. Anything else there (a
            directory of other files, Zarr data, a checkpoint) is never replaced. The new
            group is written beside the old one and swapped in, so a crash while saving
            leaves the earlier model intact.

        Raises
        ------
        DestinationExistsError
            Something is at ``path`` that may not be replaced (it names what).
        """
        from daskem import __version__

        self._check_fitted()
        write_model(
            path,
            self._params().to_arrays(),
            {
                "version": __version__,
                "kind": type(self).__name__,
                "estimator": self._stored_params(),
                "fit": self._fit_record(),
            },
            overwrite=overwrite,
        )

    @classmethod
    def _restore(
        cls,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        converged: bool,
        lower_bounds: list[float],
        n_features: int,
        n_passes: int,
        n_samples: int = 0,
        source: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        n_steps: int | None = None,
    ) -> EMEstimator:
        """A fitted estimator from stored hyperparameters, parameter arrays and fit record.

        ``extra`` is what the estimator's own ``_fit_record`` added under ``"extra"``
        (read by its ``_restored``).
        """
        est = cls(**params)
        est._fit_extra = dict(extra or {})
        est._set_params_attributes(est._model_for_arrays(arrays).params_from_arrays(arrays))
        est.converged_ = converged
        est.n_iter_ = len(lower_bounds)
        est.lower_bound_ = lower_bounds[-1] if lower_bounds else -np.inf
        est.lower_bounds_ = list(lower_bounds)
        est.n_features_in_ = n_features
        est.n_passes_ = n_passes
        est.n_steps_ = len(lower_bounds) if n_steps is None else n_steps
        est.pruned_restarts_ = []
        est._n_samples_fit = n_samples
        est._fit_source = source
        est._restored()
        return est

    def _restored(self) -> None:
        """Fill in what a subclass derives from the restored fit record (hook)."""


class DensityScores(DensityMixin):
    """``score_samples`` and ``score`` of estimators whose model gives a log-likelihood per row."""

    _per_row: Callable[..., Any]  # EMEstimator's
    _mean_per_row: Callable[[Any, str], float]  # EMEstimator's

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of every row under the fitted model.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input, a lazy dask array for dask or Zarr input.
        """
        return self._per_row(X, "score_samples")

    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-sample log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return self._mean_per_row(X, "score_samples")


def estimator_class(kind: Any, where: str) -> type[EMEstimator]:
    """The estimator class named ``kind`` in a file or checkpoint at ``where``."""
    if kind not in EMEstimator._REGISTRY:
        raise StoreError(f"{where} holds a model of kind {kind!r}, which this daskem cannot load.")
    return EMEstimator._REGISTRY[kind]


def restore(
    cls: type[EMEstimator],
    hyperparameters: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    converged: bool,
    lower_bounds: list[float],
    n_features: int,
    n_passes: int,
    n_samples: int = 0,
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    n_steps: int | None = None,
) -> EMEstimator:
    """A fitted estimator from its hyperparameters, parameter arrays and fit record.

    What :func:`load` returns for a model file or a checkpoint, and how ``daskem select``
    builds its best candidate.

    Parameters
    ----------
    cls : type
        The estimator class (:func:`estimator_class` finds it by name).
    hyperparameters : dict
        Constructor arguments (the estimator's defaults for the others).
    arrays : dict of str to ndarray
        The parameters as the model's ``to_arrays()`` names them.
    converged : bool
        ``converged_``.
    lower_bounds : list of float
        The mean log-likelihood of every iteration (``lower_bounds_``; its length is
        ``n_iter_``).
    n_features : int
        ``n_features_in_``.
    n_passes : int
        ``n_passes_``.
    n_samples : int, optional
        Rows of the data fitted.
    source : dict, optional
        ``{"location": ..., "options": ...}`` of the data fitted (None: in-memory data),
        which ``daskem plot`` reads again.
    extra : dict, optional
        What the estimator's fit record adds of its own (a model file's ``fit.extra``).
    n_steps : int, optional
        ``n_steps_`` (default: one M-step per iteration).

    Returns
    -------
    EMEstimator
        The fitted estimator.
    """
    record = None if not source else _source_record(source.get("location"), source.get("options"))
    return cls._restore(
        hyperparameters,
        arrays,
        converged=converged,
        lower_bounds=lower_bounds,
        n_features=n_features,
        n_passes=n_passes,
        n_samples=n_samples,
        source=record,
        extra=extra,
        n_steps=n_steps,
    )


def default_run(checkpoint: Checkpoint) -> tuple[int, CheckpointState]:
    """The run a fit would report, and its newest state: the best finished run, else the newest."""
    states = {r: checkpoint.run(r).latest() for r in checkpoint.runs()}
    present = {r: s for r, s in states.items() if s is not None}
    if not present:
        raise StoreError(f"The checkpoint at {checkpoint.location!r} holds no committed iteration yet.")
    if all(s.finished for s in present.values()):
        best = max(present, key=lambda r: (float(present[r].history["log_likelihood"][-1]), -r))
        return best, present[best]
    return max(present), present[max(present)]


def load(path: str | os.PathLike[str], *, iteration: int | None = None, run: int | None = None) -> Any:
    """Load a fitted model: a model file (``save``, ``daskem fit --output``) or a checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        Location of the Zarr group.
    iteration : int, optional
        For a checkpoint: the committed iteration to load (default: the newest).
    run : int, optional
        For a checkpoint of a fit with ``n_init > 1``: the initialisation to load
        (default: the one the fit kept, or the one in progress).

    Returns
    -------
    GaussianMixture, KMeans, ...
        The fitted estimator (parameters of the chosen iteration).

    Raises
    ------
    StoreError
        ``path`` holds no daskem model, a model of an unknown kind, or a checkpoint that
        records no single estimator (of ``daskem select`` or of ``daskem.fit_em``).
    """
    where = repr(os.fspath(path))
    checkpoint = Checkpoint(path)
    meta = None
    if checkpoint.exists():
        try:
            meta = checkpoint.metadata()
        except ForeignStoreError:  # a model file (or not daskem's at all): read below
            meta = None
    if meta is None:
        if iteration is not None or run is not None:
            raise StoreError(f"iteration= and run= apply to checkpoints; {where} is not a daskem checkpoint.")
        arrays, info = read_arrays_group(path)
        fit = info["fit"]
        return restore(
            estimator_class(info.get("kind"), where),
            info["estimator"],
            arrays,
            converged=bool(fit["converged"]),
            lower_bounds=[float(v) for v in fit["lower_bounds"]],
            n_features=int(fit["n_features_in"]),
            n_passes=int(fit["n_passes"]),
            n_samples=int(fit.get("n_samples", 0)),
            source=fit["source"] if isinstance(fit.get("source"), dict) else None,
            extra=fit["extra"] if isinstance(fit.get("extra"), dict) else None,
            n_steps=int(fit["n_steps"]) if "n_steps" in fit else None,
        )
    estimator = meta.get("estimator")
    if "select" in meta:
        raise StoreError(
            f"The checkpoint at {where} was written by daskem select: it holds one run per candidate of the grid, "
            "not one fitted model. Run the same `daskem select` command again with --output BEST.zarr (it resumes "
            "from the checkpoint) to write the best candidate as a model file."
        )
    if not isinstance(estimator, dict):
        raise StoreError(
            f"The checkpoint at {where} was written by daskem.fit_em, which records no estimator; read its "
            f"parameters with daskem.checkpoint.Checkpoint({where}).run(0).latest()."
        )
    cls = estimator_class(estimator.get("kind"), where)
    index, newest = default_run(checkpoint) if run is None else (run, checkpoint.run(run).latest())
    chosen = checkpoint.run(index)
    if iteration is None:
        if newest is None:
            raise StoreError(f"Run {index} of the checkpoint at {where} holds no committed iteration.")
        state = newest
    else:
        if iteration not in chosen.iterations():
            raise StoreError(
                f"Iteration {iteration} is not kept in the checkpoint at {where} (run {chosen.index}); "
                f"kept iterations: {chosen.iterations()}. Raise keep_last to keep more."
            )
        state = chosen.read(iteration)
    return restore(
        cls,
        estimator["params"],
        state.params,
        converged=state.converged,
        lower_bounds=[float(v) for v in state.history["log_likelihood"]],
        n_features=int(meta["data"]["shape"][1]) - cls._ADDED_COLUMNS,
        n_passes=int(state.history["passes"][-1]) if state.iteration else 0,
        n_samples=int(meta["data"]["shape"][0]),
        source=meta["source"],
        n_steps=state.step,
    )
