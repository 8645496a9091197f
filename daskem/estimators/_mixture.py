"""What the Gaussian mixture estimators share: predictions, sampling, ``fit_predict``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from daskem.em.init import INIT_METHODS
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import DensityScores
from daskem.estimators._validation import check_int, check_option, check_real
from daskem.io.sources import DataSource
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.registry import COVARIANCE_TYPE, N_COMPONENTS, N_INIT, Option

#: The command line options of every Gaussian mixture's registry entry.
MIXTURE_OPTIONS = (
    replace(N_COMPONENTS, default=8),
    COVARIANCE_TYPE,
    Option(("--reg-covar",), "reg_covar", "Added to the covariance diagonals.", kind=float, minimum=0.0),
    Option(
        ("--init-params",),
        "init_params",
        "Initialisation (kmeans: k-means|| and Lloyd passes over all the data).",
        kind=str,
        choices=INIT_METHODS,
    ),
    N_INIT,
)


class MixturePredictions(DensityScores):
    """Per-row predictions and sampling of a fitted Gaussian mixture (maximum-likelihood,
    MAP or variational): ``weights_``, ``means_`` and ``covariances_`` of
    ``covariance_type`` say everything needed."""

    n_components: int
    covariance_type: str
    init_params: str
    random_state: Any
    weights_: np.ndarray
    means_: np.ndarray
    covariances_: np.ndarray
    fit: Any  # the estimator's
    _check_fitted: Any  # EMEstimator's
    reg_covar: float
    n_init: int
    warm_start: bool

    def _check_mixture_parameters(self) -> None:
        """The checks of the parameters every Gaussian mixture estimator has (scikit-learn's wording)."""
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1)
        check_option(name, "covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_real(name, "reg_covar", self.reg_covar, 0.0)
        check_int(name, "n_init", self.n_init, 1)
        check_option(name, "init_params", self.init_params, INIT_METHODS)

    def _check_fit_data(self, source: DataSource, minimum: int, fix: str) -> bool:
        """Refuse data with fewer than ``minimum`` rows (``fix`` says what to do) or, for a warm
        start, with other features than the fit it continues; return whether it is a warm start."""
        if source.n_samples < minimum:
            raise DataError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {source.n_samples}. {fix}"
            )
        fitted_features: int | None = getattr(self, "n_features_in_", None)
        if self.warm_start and fitted_features is not None and source.n_features != fitted_features:
            raise DataError(
                f"X has {source.n_features} features, but the warm start is from a fit on {fitted_features} "
                f"features. Pass data with {fitted_features} features or set warm_start=False."
            )
        return bool(self.warm_start and hasattr(self, "converged_"))

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

    def _init_config(self) -> dict[str, Any]:
        return {"init_params": self.init_params}

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
        return self._per_row(X, "predict", dtype=np.intp)

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of every component for every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
            float32 when both ``X`` and the fitted attributes are float32 (scikit-learn's
            dtype), else float64.
        """
        return self._in_dtype_of(X, self._per_row(X, "predict_proba", columns=self.n_components))

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of every row under the fitted model.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input, a lazy dask array for dask or Zarr input; float32
            when both ``X`` and the fitted attributes are float32 (scikit-learn's dtype),
            else float64 (computed in float64 either way).
        """
        return self._in_dtype_of(X, self._per_row(X, "score_samples"))

    def _in_dtype_of(self, X: Any, values: Any) -> Any:
        """``values`` (float64) as float32 when ``X`` and the fitted attributes are float32."""
        if getattr(X, "dtype", None) == np.float32 and self.means_.dtype == np.float32:
            return values.astype(np.float32)
        return values

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
        k, d = self.means_.shape
        ct = covariance_type(self.covariance_type)
        if ct.matrices:
            parts = [
                rng.multivariate_normal(m, c, int(s))
                for m, c, s in zip(self.means_, ct.to_full(self.covariances_, k, d), counts, strict=True)
            ]
        else:
            parts = [
                m + rng.standard_normal(size=(s, d)) * np.sqrt(c)
                for m, c, s in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        labels = np.concatenate([np.full(s, j, dtype=int) for j, s in enumerate(counts)])
        return np.vstack(parts), labels
