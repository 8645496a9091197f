"""``daskem.GaussianMixture``: scikit-learn's GaussianMixture, out of core."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from daskem.checkpoint.store import read_arrays_group, write_arrays_group
from daskem.em.engine import EMResult, fit_em, map_rows, resolve_split_every
from daskem.em.init import INIT_METHODS, initial_params
from daskem.em.monitor import IterationRecord
from daskem.errors import DataError, NotFittedError, ParameterError, StoreError
from daskem.estimators._validation import check_int, check_option, check_random_state_param, check_real
from daskem.io.sources import DataSource, as_source
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams

_FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _seeds(random_state: Any, n: int) -> list[np.random.SeedSequence]:
    """Independent seeds for ``n`` initialisations, reproducible for an int ``random_state``."""
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        entropy = int(random_state)
    else:
        entropy = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return list(np.random.SeedSequence(entropy).spawn(n))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.random.RandomState):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM on data of any size (scikit-learn's API).

    A drop-in for :class:`sklearn.mixture.GaussianMixture`: the same parameters,
    methods and fitted attributes, with the EM iterations run over Dask blocks (one
    pass over the data per iteration) so the data need not fit in memory.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component covariances.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals.
    max_iter : int, default=100
        Number of EM iterations to run at most.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How to initialise (see :mod:`daskem.em.init`; "kmeans" and "k-means++" work on a
        uniform sample of at most 100,000 rows, never on the whole data).
    weights_init : array-like of shape (n_components,), default=None
        Initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped by ``covariance_type``.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation and of :meth:`sample`.
    warm_start : bool, default=False
        Start a new ``fit`` from the previous solution (``n_init`` is then ignored, as
        in scikit-learn, because there is one start).
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every : int, default=None
        Fan-in of the statistics reduction tree (``dask.config`` ``split_every``, else 8).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood of the best fit at its last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` at every iteration of the best fit.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import GaussianMixture
    >>> X = np.r_[np.random.default_rng(0).normal(size=(200, 2)), np.random.default_rng(1).normal(5, 1, (200, 2))]
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [0.0, 5.0]
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        split_every: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1)
        check_option(name, "covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_real(name, "tol", self.tol, 0.0)
        check_real(name, "reg_covar", self.reg_covar, 0.0)
        check_int(name, "max_iter", self.max_iter, 0)
        check_int(name, "n_init", self.n_init, 1)
        check_option(name, "init_params", self.init_params, INIT_METHODS)
        check_random_state_param(name, self.random_state)
        if not isinstance(self.warm_start, bool | np.bool_):
            raise ParameterError(
                f"The 'warm_start' parameter of {name} must be an instance of 'bool' or an instance of "
                f"'numpy.bool'. Got {self.warm_start!r} instead."
            )
        check_int(name, "verbose", self.verbose, 0)
        check_int(name, "verbose_interval", self.verbose_interval, 1)
        check_int(name, "split_every", self.split_every, 2, none_ok=True)

    def _model(self) -> GaussianMixtureModel:
        return GaussianMixtureModel(self.n_components, self.covariance_type, float(self.reg_covar))

    def _checked_inits(self, n_features: int) -> tuple[Any, Any, Any]:
        k, d = self.n_components, n_features
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
            if weights.shape != (k,):
                raise ParameterError(
                    f"The parameter 'weights' should have the shape of {(k,)}, but got {weights.shape}."
                )
            if weights.min() < 0.0 or weights.max() > 1.0:
                raise ParameterError(
                    "The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {weights.max():.5f}, min value {weights.min():.5f}."
                )
            if not np.isclose(weights.sum(), 1.0, rtol=0.0, atol=1e-8):
                raise ParameterError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = {weights.sum():.5f}."
                )
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
            if means.shape != (k, d):
                raise ParameterError(f"The parameter 'means' should have the shape of {(k, d)}, but got {means.shape}.")
        if self.precisions_init is not None:
            precisions = np.asarray(self.precisions_init, dtype=np.float64)
            expected = covariance_type(self.covariance_type).shape(k, d)
            if precisions.shape != expected:
                raise ParameterError(
                    f"The parameter '{self.covariance_type} precision' should have the shape of {expected}, "
                    f"but got {precisions.shape}."
                )
            if self.covariance_type in ("full", "tied") and not np.allclose(
                precisions, np.swapaxes(precisions, -1, -2)
            ):
                raise ParameterError(
                    f"'{self.covariance_type} precision' should be symmetric, positive-definite; got a "
                    "non-symmetric precisions_init. Pass symmetric matrices, e.g. (P + P.T) / 2."
                )
        return weights, means, precisions

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None
    ) -> GaussianMixture:
        """Estimate the parameters by EM.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array.
        y : None
            Ignored; present for API consistency.
        callback : callable, optional
            Called as ``callback(record, params)`` after every EM iteration.

        Returns
        -------
        self : GaussianMixture
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X)
        if source.n_samples < self.n_components:
            raise DataError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {source.n_samples}. Reduce n_components or pass more rows."
            )
        fitted_features: int | None = getattr(self, "n_features_in_", None)
        if self.warm_start and fitted_features is not None and source.n_features != fitted_features:
            raise DataError(
                f"X has {source.n_features} features, but the warm start is from a fit on {fitted_features} "
                f"features. Pass data with {fitted_features} features or set warm_start=False."
            )
        model = self._model()
        warm = self.warm_start and hasattr(self, "converged_")
        n_init = 1 if warm else self.n_init
        seeds = _seeds(self.random_state, n_init)
        best: EMResult | None = None
        for index, seed in enumerate(seeds):
            start = self._warm_params() if warm else self._initial_params(model, source, np.random.default_rng(seed))
            result = fit_em(
                model,
                source,
                start,
                max_iter=self.max_iter,
                tol=self.tol,
                split_every=self.split_every,
                callback=self._iteration_callback(index, callback),
            )
            self._print_end(result)
            if best is None or result.lower_bound > best.lower_bound:
                best = result
        assert best is not None
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_params_attributes(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = [r.log_likelihood for r in best.history]
        self.n_features_in_ = source.n_features
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the component label of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
        """
        return self.fit(X).predict(X)

    def _initial_params(
        self, model: GaussianMixtureModel, source: DataSource, rng: np.random.Generator
    ) -> GaussianMixtureParams:
        weights, means, precisions = self._checked_inits(source.n_features)
        # Everything given: no pass over the data (scikit-learn skips its k-means too).
        all_given = weights is not None and means is not None and precisions is not None
        base = None if all_given else initial_params(model, source, self.init_params, rng, split_every=self.split_every)
        return model.with_given(base, weights, means, precisions)

    def _warm_params(self) -> GaussianMixtureParams:
        return GaussianMixtureParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_params_attributes(self, params: GaussianMixtureParams) -> None:
        ct = covariance_type(self.covariance_type)
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = ct.precisions(params.precisions_cholesky)

    # -- verbose output, as scikit-learn prints it ------------------------------------------

    def _iteration_callback(
        self, index: int, user: Callable[[IterationRecord, Any], None] | None
    ) -> Callable[[IterationRecord, Any], None]:
        if self.verbose:
            print(f"Initialization {index}", file=sys.stdout)
        self._init_start = time.perf_counter()

        def callback(record: IterationRecord, params: Any) -> None:
            if self.verbose and record.iteration % self.verbose_interval == 0:
                if self.verbose == 1:
                    print(f"  Iteration {record.iteration}")
                else:
                    print(
                        f"  Iteration {record.iteration}\t time lapse {record.seconds:.5f}s\t "
                        f"ll change {record.change:.5f}"
                    )
            if user is not None:
                user(record, params)

        return callback

    def _print_end(self, result: EMResult) -> None:
        if self.verbose == 1:
            print(f"Initialization converged: {result.converged}")
        elif self.verbose >= 2:
            lapse = time.perf_counter() - self._init_start
            print(
                f"Initialization converged: {result.converged}\t time lapse {lapse:.5f}s\t "
                f"lower bound {result.lower_bound:.5f}"
            )

    # -- prediction -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in _FITTED):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _params(self) -> GaussianMixtureParams:
        return GaussianMixtureParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _source_for_predict(self, X: Any) -> DataSource:
        self._check_fitted()
        source = as_source(X)
        if source.n_features != self.n_features_in_:
            raise DataError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return source

    def _per_row(self, X: Any, what: str) -> Any:
        source = self._source_for_predict(X)
        columns = self.n_components if what == "predict_proba" else None
        dtype = np.intp if what == "predict" else np.float64
        out = map_rows(self._model(), self._params(), source, what, dtype=dtype, columns=columns)
        return out.compute() if source.kind == "numpy" else out

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of every row under the fitted mixture.

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

    def predict(self, X: Any) -> Any:
        """Component label of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
        """
        return self._per_row(X, "predict")

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of every component for every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self._per_row(X, "predict_proba")

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture (scikit-learn's draw for the same seed).

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ParameterError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        d = self.means_.shape[1]
        if self.covariance_type == "full":
            parts = [
                rng.multivariate_normal(m, c, int(s))
                for m, c, s in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        elif self.covariance_type == "tied":
            parts = [
                rng.multivariate_normal(m, self.covariances_, int(s)) for m, s in zip(self.means_, counts, strict=True)
            ]
        else:
            parts = [
                m + rng.standard_normal(size=(s, d)) * np.sqrt(c)
                for m, c, s in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        labels = np.concatenate([np.full(s, j, dtype=int) for j, s in enumerate(counts)])
        return np.vstack(parts), labels

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(covariance_type(self.covariance_type).n_cov_parameters(k, d) + k * d + k - 1)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of the fit on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        source = as_source(X)
        n = source.n_samples
        return float(-2.0 * self.score(source) * n + self._n_parameters() * np.log(n))

    def aic(self, X: Any) -> float:
        """Akaike information criterion of the fit on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        source = as_source(X)
        return float(-2.0 * self.score(source) * source.n_samples + 2 * self._n_parameters())

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to a Zarr v3 group (arrays + JSON attributes, no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Location of the group; an existing one is replaced.
        """
        from daskem import __version__

        self._check_fitted()
        write_arrays_group(
            path,
            self._params().to_arrays(),
            {
                "version": __version__,
                "kind": type(self).__name__,
                "estimator": {k: _jsonable(v) for k, v in self.get_params().items()},
                "fit": {
                    "converged": bool(self.converged_),
                    "n_iter": int(self.n_iter_),
                    "lower_bound": float(self.lower_bound_),
                    "lower_bounds": [float(v) for v in self.lower_bounds_],
                    "n_features_in": int(self.n_features_in_),
                },
            },
        )

    @classmethod
    def _from_store(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> GaussianMixture:
        est = cls(**meta["estimator"])
        params = est._model().params_from_arrays(arrays)
        est._set_params_attributes(params)
        fit = meta["fit"]
        est.converged_ = bool(fit["converged"])
        est.n_iter_ = int(fit["n_iter"])
        est.lower_bound_ = float(fit["lower_bound"])
        est.lower_bounds_ = list(fit["lower_bounds"])
        est.n_features_in_ = int(fit["n_features_in"])
        return est


_ESTIMATORS: dict[str, type[GaussianMixture]] = {"GaussianMixture": GaussianMixture}


def load(path: str | os.PathLike[str]) -> GaussianMixture:
    """Load a model written by ``save`` (or ``daskem fit --output``).

    Parameters
    ----------
    path : str or os.PathLike
        Location of the Zarr group.

    Returns
    -------
    GaussianMixture
        The fitted estimator.
    """
    arrays, meta = read_arrays_group(path)
    kind = meta.get("kind")
    if kind not in _ESTIMATORS:
        raise StoreError(f"{os.fspath(path)!r} holds a model of kind {kind!r}, which this daskem cannot load.")
    return _ESTIMATORS[kind]._from_store(arrays, meta)
