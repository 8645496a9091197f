"""``daskem.BayesianGaussianMixture``: scikit-learn's BayesianGaussianMixture, out of core."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from sklearn.utils import check_random_state

from daskem.em.checks import check_stats
from daskem.em.init import initial_params, max_init_passes
from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every, weighted_rows
from daskem.errors import ParameterError
from daskem.estimators._base import EMEstimator
from daskem.estimators._mixture import MIXTURE_OPTIONS, MixturePredictions
from daskem.estimators._validation import check_option, check_real
from daskem.io.sources import as_source
from daskem.models.bayesian_gmm import (
    WEIGHT_PRIOR_TYPES,
    BayesianGaussianMixtureModel,
    BayesianGaussianMixtureParams,
    BayesianPriors,
    DataMoments,
    weights_from_concentration,
)
from daskem.models.gaussian import check_shape, covariance_type
from daskem.registry import SAMPLE_WEIGHT, Option, Summary, attribute_summary, register

#: A component is counted as used (``daskem inspect``'s summary) when its weight exceeds this.
EFFECTIVE_WEIGHT = 1e-2

_table = attribute_summary(
    "component",
    [("weight", "weights_"), ("mean (first features)", "means_")],
    title=("covariance_type", "weight_concentration_prior_type"),
)


def _summary(est: Any) -> Summary:
    """The components' weights and means, and how many of them the fit uses."""
    summary = _table(est)
    used = int(np.sum(np.asarray(est.weights_) > EFFECTIVE_WEIGHT))
    return replace(
        summary,
        notes=(*summary.notes, f"effective components (weight > {EFFECTIVE_WEIGHT:g}): {used} of {est.n_components}"),
        values={**summary.values, "effective_components": used},
    )


@register(
    "bgmm",
    description="variational Bayesian Gaussian mixture (scikit-learn's BayesianGaussianMixture)",
    options=(
        *MIXTURE_OPTIONS,
        Option(
            ("--weight-concentration-prior-type",),
            "weight_concentration_prior_type",
            "Prior of the weights: a Dirichlet process (stick-breaking) or a Dirichlet distribution.",
            kind=str,
            choices=WEIGHT_PRIOR_TYPES,
        ),
        Option(
            ("--weight-concentration-prior",),
            "weight_concentration_prior",
            "Concentration of the weight prior (default 1 / n_components); smaller leaves more components empty.",
            kind=float,
            minimum=0.0,
        ),
        SAMPLE_WEIGHT,
    ),
    summary=_summary,
    figures=("components",),
    objective="variational lower bound (scikit-learn's, summed over the rows)",
)
class BayesianGaussianMixture(MixturePredictions, EMEstimator):
    """Variational Bayesian Gaussian mixture on data of any size (scikit-learn's API).

    A drop-in for :class:`sklearn.mixture.BayesianGaussianMixture`: the same parameters,
    methods and fitted attributes, with each variational iteration one pass over Dask
    blocks. From the same initial responsibilities an iteration gives scikit-learn's
    numbers (``init_params="random"`` or ``"random_from_data"`` with an integer
    ``random_state`` on NumPy data draw them as scikit-learn does).

    Parameters
    ----------
    n_components : int, default=1
        Number of components (an upper bound: the fit leaves superfluous ones near zero
        weight).
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the covariances.
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (scikit-learn's, not
        divided by the rows).
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of the data's covariances.
    max_iter : int, default=100
        Number of variational iterations at most.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept. All of them
        run in the same passes over the data.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        Initial responsibilities (see :mod:`daskem.em.init`), followed by one M-step.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, \
default="dirichlet_process"
        The prior of the weights.
    weight_concentration_prior : float, default=None
        Its concentration (``gamma`` or ``alpha``); None: ``1 / n_components``.
    mean_precision_prior : float, default=None
        Precision prior of the means (``beta``); None: 1.
    mean_prior : array-like of shape (n_features,), default=None
        Prior of the means; None: the data's mean (one pass over the data, shared with
        the covariance prior's).
    degrees_of_freedom_prior : float, default=None
        Degrees of freedom of the Wishart prior (> n_features - 1); None: n_features.
    covariance_prior : float or array-like, default=None
        Prior of the covariances, shaped by ``covariance_type``; None: the data's
        (unbiased) covariance, its diagonal or their mean.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation and of :meth:`sample`.
    warm_start : bool, default=False
        Start a new ``fit`` from the previous solution.
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every : int, default=None
        Fan-in of the statistics reduction tree (``dask.config`` ``split_every``, else 8).
    checkpoint : str or os.PathLike, default=None
        Zarr location to checkpoint the fit into; fitting again with the same checkpoint
        resumes it.
    checkpoint_every : int, default=1
        Iterations between commits (the last one is always committed).
    keep_last : int, default=2
        Committed iterations kept in the checkpoint.
    overwrite_checkpoint : bool, default=False
        Discard an existing checkpoint and start afresh.
    cache : {"auto", True, False}, default="auto"
        Persist the data once in (cluster) memory or stream them on every pass.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    weight_concentration_ : ndarray or tuple of two ndarrays
        (k,) for a Dirichlet distribution, the Beta pairs for a Dirichlet process.
    mean_precision_ : ndarray of shape (n_components,)
    degrees_of_freedom_ : ndarray of shape (n_components,) or float (tied)
    weight_concentration_prior_ : float
    mean_precision_prior_ : float
    mean_prior_ : ndarray of shape (n_features,)
    degrees_of_freedom_prior_ : float
    covariance_prior_ : float or ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        scikit-learn's lower bound of the best initialisation's last iteration.
    lower_bounds_ : list of float
    n_passes_ : int
        Passes over the data (the priors' pass included when a prior is the data's).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import BayesianGaussianMixture
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> bgm = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    >>> bgm.weights_.shape
    (3,)
    """

    _FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "weight_concentration_")

    # Engine settings scikit-learn's BayesianGaussianMixture has no parameter for: plain EM.
    accelerate: ClassVar[None] = None  # type: ignore[misc]
    prune_restarts: ClassVar[bool] = False  # type: ignore[misc]

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
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        split_every: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        self._check_mixture_parameters()
        check_option(name, "weight_concentration_prior_type", self.weight_concentration_prior_type, WEIGHT_PRIOR_TYPES)
        for prior in ("weight_concentration_prior", "mean_precision_prior", "degrees_of_freedom_prior"):
            value = getattr(self, prior)
            if value is not None:
                check_real(name, prior, value, 0.0)
                if float(value) <= 0.0:
                    raise ParameterError(
                        f"The {prior!r} parameter of {name} must be a float in the range (0.0, inf) or None. "
                        f"Got {value!r} instead."
                    )
        self._validate_engine_parameters()

    def _model(self) -> BayesianGaussianMixtureModel:
        """The model without priors: enough to predict (the priors come with a fit)."""
        return BayesianGaussianMixtureModel(
            int(self.n_components), self.covariance_type, float(self.reg_covar), self.weight_concentration_prior_type
        )

    def _priors(self, session: FitSession, weighted: bool) -> BayesianPriors:
        """scikit-learn's ``_check_parameters``: the priors, the data's mean and covariance for
        those not given (one counted pass over the data, shared by both; weighted when the
        session's last column holds the sample weights)."""
        d = session.source.n_features - int(weighted)
        ct = self.covariance_type
        mean = cov = None
        if self.mean_prior is None or self.covariance_prior is None:
            moments = DataMoments(full=ct in ("full", "tied"), weighted=weighted)
            stats = session.stats(moments, d)
            check_stats(stats, session.source.n_samples, model=moments)
            mean, cov = DataMoments.mean_and_covariance(stats)
        if self.mean_prior is not None:
            mean = check_shape("means", self.mean_prior, (d,))
        if self.degrees_of_freedom_prior is None:
            dof = float(d)
        elif self.degrees_of_freedom_prior > d - 1.0:
            dof = float(self.degrees_of_freedom_prior)
        else:
            raise ParameterError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but got "
                f"{self.degrees_of_freedom_prior:.3f}."
            )
        if self.covariance_prior is None:
            assert cov is not None
            covariance = {"full": cov, "tied": cov, "diag": cov, "spherical": np.asarray(np.mean(cov))}[ct]
        else:
            covariance = self._checked_covariance_prior(d)
        return BayesianPriors(
            1.0 / self.n_components
            if self.weight_concentration_prior is None
            else float(self.weight_concentration_prior),
            1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
            np.asarray(mean, dtype=np.float64),
            dof,
            np.asarray(covariance, dtype=np.float64),
        )

    def _checked_covariance_prior(self, d: int) -> np.ndarray:
        ct = self.covariance_type
        if ct in ("full", "tied"):
            value = check_shape(f"{ct} covariance_prior", self.covariance_prior, (d, d))
            if not np.allclose(value, value.T) or np.any(np.linalg.eigvalsh(value) <= 0.0):
                raise ParameterError(f"'{ct} covariance_prior' should be symmetric, positive-definite")
            return value
        if ct == "diag":
            value = check_shape(f"{ct} covariance_prior", self.covariance_prior, (d,))
            if np.any(value <= 0.0):
                raise ParameterError(f"'{ct} covariance_prior' should be positive")
            return value
        if not isinstance(self.covariance_prior, numbers.Real) or not float(self.covariance_prior) > 0.0:
            raise ParameterError(
                "The 'covariance_prior' parameter of BayesianGaussianMixture must be a positive float for "
                f"covariance_type='spherical'. Got {self.covariance_prior!r} instead."
            )
        return np.asarray(float(self.covariance_prior))

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        callback: Callable[[IterationRecord, Any], None] | None = None,
    ) -> BayesianGaussianMixture:
        """Estimate the variational parameters.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like, dask array, zarr.Array or str of shape (n_samples,), default=None
            Non-negative weight of every row (all 1 when None; a string is the path or URL
            of a Zarr array). Each row's contribution to the variational statistics and to
            the lower bound, and to the data's mean and covariance that default priors take,
            is multiplied by its weight: integer weights fit as the rows repeated. The
            ``"kmeans"`` and ``"k-means++"`` initialisations seed with the weights (as
            scikit-learn's KMeans), ``"random_from_data"`` draws rows in proportion to
            them and ``"random"`` weights its random responsibilities. scikit-learn's
            BayesianGaussianMixture has no ``sample_weight``.
        callback : callable, optional
            Called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self : BayesianGaussianMixture
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X, sample_weight=sample_weight)
        weighted = source.weights is not None
        warm = self._check_fit_data(
            source, max(2, self.n_components), "Reduce n_components or pass more rows (at least 2)."
        )
        # scikit-learn's own draws need the rows in memory (they are: NumPy input); it has no weights.
        in_memory = source.kind == "numpy" and isinstance(X, np.ndarray | list) and not weighted
        self._memory_rows = np.asarray(X, dtype=np.float64) if in_memory else None
        session = self._session(weighted_rows(source))
        priors = self._priors(session, weighted)
        model = BayesianGaussianMixtureModel.with_priors(
            self.n_components,
            self.covariance_type,
            self.reg_covar,
            self.weight_concentration_prior_type,
            priors,
            weighted,
        )
        try:
            self._fit_restarts(model, session, 1 if warm else self.n_init, warm, callback)
        finally:
            self._memory_rows = None
        self.n_features_in_ = source.n_features  # the weights' column is not a feature
        return self

    def _sklearn_draws(self) -> bool:
        """Whether the initial responsibilities are scikit-learn's own draws."""
        seeded = isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool)
        return (
            seeded
            and self.init_params in ("random", "random_from_data")
            and getattr(self, "_memory_rows", None) is not None
        )

    def _max_init_passes(self, n_init: int) -> int | None:
        return 0 if self._sklearn_draws() else max_init_passes(self.init_params, n_init)

    def _initial_params(
        self, model: BayesianGaussianMixtureModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[BayesianGaussianMixtureParams]:
        if not self._sklearn_draws():  # never for a weighted fit: its rows are not kept in memory
            return list(initial_params(model, session, self.init_params, rngs, weighted=model.weighted))
        # scikit-learn's _initialize_parameters, one draw after the other from one RandomState.
        X = self._memory_rows
        assert X is not None
        n, k = X.shape[0], self.n_components
        random_state = check_random_state(self.random_state)
        out = []
        for _ in rngs:
            if self.init_params == "random":
                resp = random_state.uniform(size=(n, k))
                resp /= resp.sum(axis=1)[:, np.newaxis]
            else:
                resp = np.zeros((n, k))
                resp[random_state.choice(n, size=k, replace=False), np.arange(k)] = 1.0
            out.append(model.params_from_responsibilities(X, resp))
        return out

    def _set_params_attributes(self, params: BayesianGaussianMixtureParams) -> None:
        ct = covariance_type(self.covariance_type)
        dp = self.weight_concentration_prior_type == "dirichlet_process"
        wc = np.asarray(params.weight_concentration, dtype=np.float64)
        self.weight_concentration_ = (wc[0].copy(), wc[1].copy()) if dp else wc.copy()
        self.weights_ = weights_from_concentration(wc, dp)
        self.mean_precision_ = np.asarray(params.mean_precision, dtype=np.float64)
        self.means_ = np.asarray(params.means, dtype=np.float64)
        dof = np.asarray(params.degrees_of_freedom, dtype=np.float64)
        self.degrees_of_freedom_ = np.float64(dof[0]) if ct.shared else dof
        self.covariances_ = np.asarray(params.covariances, dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(params.precisions_cholesky, dtype=np.float64)
        self.precisions_ = np.asarray(ct.precisions(params.precisions_cholesky), dtype=np.float64)
        priors = params.priors
        self.weight_concentration_prior_ = float(priors.weight_concentration)
        self.mean_precision_prior_ = float(priors.mean_precision)
        self.mean_prior_ = np.asarray(priors.mean, dtype=np.float64)
        self.degrees_of_freedom_prior_ = float(priors.degrees_of_freedom)
        cov = np.asarray(priors.covariance, dtype=np.float64)
        self.covariance_prior_ = float(cov) if cov.ndim == 0 else cov
        self._fitted_params = (params, self._attributes())

    # -- prediction -----------------------------------------------------------------------

    def _attributes(self) -> tuple[Any, ...]:
        return (
            self.weight_concentration_,
            self.mean_precision_,
            self.means_,
            self.degrees_of_freedom_,
            self.covariances_,
            self.precisions_cholesky_,
        )

    def _params(self) -> BayesianGaussianMixtureParams:
        kept = getattr(self, "_fitted_params", None)
        attributes = self._attributes()
        if kept is not None and all(a is b for a, b in zip(attributes, kept[1], strict=True)):
            return kept[0]
        ct = covariance_type(self.covariance_type)
        wc = self.weight_concentration_
        return BayesianGaussianMixtureParams(
            np.asarray(np.stack(wc) if isinstance(wc, tuple) else wc, dtype=np.float64),
            np.asarray(self.mean_precision_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.degrees_of_freedom_, dtype=np.float64).reshape((1,) if ct.shared else (-1,)),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64),
            BayesianPriors(
                float(self.weight_concentration_prior_),
                float(self.mean_precision_prior_),
                np.asarray(self.mean_prior_, dtype=np.float64),
                float(self.degrees_of_freedom_prior_),
                np.asarray(self.covariance_prior_, dtype=np.float64),
            ),
        )
