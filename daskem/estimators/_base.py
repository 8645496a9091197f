"""What every daskem estimator shares: restarts, checkpoints, verbose output, files, load().

A subclass provides the model (``_model``), its initialisations (``_initial_params``),
the translation between parameters and fitted attributes (``_params`` /
``_set_params_attributes``), and its hyperparameter checks; :class:`EMEstimator` runs the
fit through :func:`daskem.em.engine.fit_em_restarts` (all ``n_init`` initialisations
in the same passes over the data), checkpoints it, and saves and loads it.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from daskem.checkpoint.checkpoint import Checkpoint, CheckpointState, ForeignStoreError
from daskem.checkpoint.store import read_arrays_group, write_model
from daskem.em.accelerate import ACCELERATIONS
from daskem.em.engine import (
    COMPARED_SECTIONS,
    RestartsResult,
    fit_em_restarts,
    fit_metadata,
    map_rows,
    resolve_split_every,
    single_threaded_blas,
)
from daskem.em.monitor import IterationRecord
from daskem.em.progress import FitEvent, notify
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EMEstimator._REGISTRY[cls.__name__] = cls

    # -- hooks -------------------------------------------------------------------------------

    def _model(self) -> Any:
        raise NotImplementedError

    def _initial_params(self, model: Any, source: DataSource, rngs: list[np.random.Generator]) -> list[Any]:
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

    def _fit_restarts(
        self, model: Any, source: DataSource, n_init: int, warm: bool, callback: Callback | None
    ) -> RestartsResult:
        """Run the ``n_init`` fits in shared passes, checkpointed; set the fit attributes.

        Returns the outcome; the best run's parameters are set as attributes and
        ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``, ``n_passes_``,
        ``pruned_restarts_`` and ``n_features_in_`` are filled in.
        """
        # Checkpoint metadata reads a fingerprint of the data (sampled blocks): say so.
        notify(FitEvent("reading"))
        entropy = _entropy(self.random_state)
        checkpoint = None
        if self.checkpoint is not None:
            checkpoint = Checkpoint(self.checkpoint)
            stored = checkpoint.prepare(
                self._checkpoint_metadata(model, source, n_init, entropy),
                compare=COMPARED_SECTIONS,
                overwrite=self.overwrite_checkpoint,
            )
            # Resumed runs re-create the same initialisations, even for random_state=None.
            entropy = int(stored["random"]["entropy"])
        rngs = [np.random.default_rng(seed) for seed in np.random.SeedSequence(entropy).spawn(n_init)]

        def starts() -> list[Any]:
            return [self._params()] if warm else self._initial_params(model, source, rngs)

        if self.verbose:
            for index in range(n_init):
                print(f"Initialization {index}", file=sys.stdout)
        self._fit_start = time.perf_counter()
        outcome = fit_em_restarts(
            model,
            source,
            starts,
            max_iter=self.max_iter,
            tol=self._engine_tol(source),
            split_every=self.split_every,
            accelerate=self.accelerate,
            prune=self.prune_restarts,
            callback=self._iteration_callback(n_init, callback),
            checkpoint=None if checkpoint is None else [checkpoint.run(i) for i in range(n_init)],
            checkpoint_every=self.checkpoint_every,
            keep_last=self.keep_last,
            cache=self.cache,
            max_init_passes=0 if warm else self._max_init_passes(n_init),
        )
        self._print_end(outcome)
        best = outcome.results[outcome.best]
        if self._WARN_NOT_CONVERGED and not best.converged and self.max_iter > 0:
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
        self.pruned_restarts_ = list(outcome.pruned)
        self.n_features_in_ = source.n_features
        self._n_samples_fit = source.n_samples
        # Where the data came from (None for in-memory data), for `daskem plot MODEL.zarr`.
        self._fit_source = _source_record(source.location, source.options)
        return outcome

    def _checkpoint_metadata(self, model: Any, source: DataSource, n_init: int, entropy: int) -> dict[str, Any]:
        meta = fit_metadata(
            model,
            source,
            resolve_split_every(self.split_every),
            n_init=n_init,
            random_state=_jsonable(self.random_state),
            accelerate=self.accelerate,
            prune_restarts=bool(self.prune_restarts),
            **self._init_config(),
        )
        estimator = {"kind": type(self).__name__, "params": self._stored_params()}
        return {**meta, "estimator": estimator, "random": {"entropy": entropy}}

    def _stored_params(self) -> dict[str, Any]:
        """Hyperparameters as JSON for model files and checkpoints (not where to checkpoint)."""
        return {k: _jsonable(v) for k, v in self.get_params().items() if k not in _CHECKPOINT_PARAMS}

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

    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in self._FITTED):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _source_for_predict(self, X: Any) -> DataSource:
        self._check_fitted()
        source = as_source(X)
        if source.n_features != self.n_features_in_:
            raise DataError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return source

    def _per_row(self, X: Any, what: str, *, dtype: Any = np.float64, columns: int | None = None) -> Any:
        """``model.<what>`` of every row: NumPy for in-memory input, else a lazy dask array."""
        source = self._source_for_predict(X)
        out = map_rows(self._model(), self._params(), source, what, dtype=dtype, columns=columns)
        if source.kind != "numpy":
            return out
        with single_threaded_blas():
            return out.compute()

    # -- persistence ------------------------------------------------------------------------

    def _fit_record(self) -> dict[str, Any]:
        return {
            "converged": bool(self.converged_),
            "n_iter": int(self.n_iter_),
            "lower_bound": float(self.lower_bound_),
            "lower_bounds": [float(v) for v in self.lower_bounds_],
            "n_features_in": int(self.n_features_in_),
            "n_passes": int(self.n_passes_),
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
    ) -> EMEstimator:
        """A fitted estimator from stored hyperparameters, parameter arrays and fit record."""
        est = cls(**params)
        est._set_params_attributes(est._model_for_arrays(arrays).params_from_arrays(arrays))
        est.converged_ = converged
        est.n_iter_ = len(lower_bounds)
        est.lower_bound_ = lower_bounds[-1] if lower_bounds else -np.inf
        est.lower_bounds_ = list(lower_bounds)
        est.n_features_in_ = n_features
        est.n_passes_ = n_passes
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
        return float(np.asarray(self._per_row(X, "score_samples").mean()))


def estimator_class(kind: Any, where: str) -> type[EMEstimator]:
    """The estimator class named ``kind`` in a file or checkpoint at ``where``."""
    if kind not in EMEstimator._REGISTRY:
        raise StoreError(f"{where} holds a model of kind {kind!r}, which this daskem cannot load.")
    return EMEstimator._REGISTRY[kind]


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
        return estimator_class(info.get("kind"), where)._restore(
            info["estimator"],
            arrays,
            converged=bool(fit["converged"]),
            lower_bounds=[float(v) for v in fit["lower_bounds"]],
            n_features=int(fit["n_features_in"]),
            n_passes=int(fit["n_passes"]),
            n_samples=int(fit.get("n_samples", 0)),
            source=_source_record(fit["source"].get("location"), fit["source"].get("options"))
            if isinstance(fit.get("source"), dict)
            else None,
        )
    estimator = meta.get("estimator")
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
    return cls._restore(
        estimator["params"],
        state.params,
        converged=state.converged,
        lower_bounds=[float(v) for v in state.history["log_likelihood"]],
        n_features=int(meta["data"]["shape"][1]) - cls._ADDED_COLUMNS,
        n_passes=int(state.history["passes"][-1]) if state.iteration else 0,
        n_samples=int(meta["data"]["shape"][0]),
        source=_source_record(meta["source"].get("location"), meta["source"].get("options")),
    )
