"""``daskem.IndependentFactorAnalysis``: independent factor analysis (Attias 1999) by exact EM, out of core.

The model, its statistics and the M-step are in :mod:`daskem.models.ifa`; each EM
iteration is one pass over the Dask blocks. Names follow scikit-learn's
:class:`~sklearn.decomposition.FastICA` and :class:`~sklearn.decomposition.FactorAnalysis`
(``mixing_``, ``components_``, ``mean_``, ``noise_variance_``, ``transform``,
``inverse_transform``, ``score``).

Start: scikit-learn's :class:`~sklearn.decomposition.FastICA` (PCA whitening to
``n_components``, logcosh) on the first :data:`~daskem.estimators.factor.INIT_ROWS` rows
(read from the blocks holding them), seeded by ``random_state``; the mixing matrix is the
least-squares regression of those rows on its unit-variance sources, the noise the
residual variance of each feature (at least :data:`START_NOISE_FLOOR` times its variance)
and the sources start as in :meth:`~daskem.models.ifa.IFAModel.init_params`. Runs after
the first (``n_init``) rotate those sources by random orthogonal matrices drawn from their
seeds (a random rotation of the whitened data, as the first run is an ICA rotation of it).
EM from a poor rotation needs many iterations when the noise is small (the
source posteriors then barely move the mixing matrix): the ICA start spares most of them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import DataError
from daskem.estimators._base import DensityScores, EMEstimator
from daskem.estimators._validation import check_int
from daskem.estimators.factor import first_rows
from daskem.io.sources import as_source
from daskem.models.ifa import IFAModel, IFAParams
from daskem.models.linear_gaussian import check_latent_dimension
from daskem.registry import N_COMPONENTS, N_INIT, Option, attribute_summary, register

#: Smallest starting noise variance of a feature, relative to its variance in the first rows.
START_NOISE_FLOOR = 1e-3

#: The number of Gaussians of every source (``--source-components``).
SOURCE_COMPONENTS = Option(
    ("--source-components",),
    "n_source_components",
    "Gaussians in the mixture of every source (independent factor analysis).",
    minimum=1,
)


def _per_source(flat: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """The (L, max m) array of a flat per-Gaussian array, NaN beyond a source's own Gaussians."""
    out = np.full((len(sizes), max(sizes)), np.nan)
    start = 0
    for i, m in enumerate(sizes):
        out[i, :m] = flat[start : start + m]
        start += m
    return out


@register(
    "ifa",
    description="independent factor analysis (Attias 1999: sources mixtures of Gaussians, exact EM)",
    options=(N_COMPONENTS, SOURCE_COMPONENTS, N_INIT),
    summary=attribute_summary(
        "source",
        [("weights", "source_weights_"), ("means", "source_means_"), ("variances", "source_variances_")],
        notes=[("noise variance", "noise_variance_"), ("mean", "mean_")],
    ),
    figures=("sources",),
)
class IndependentFactorAnalysis(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DensityScores, EMEstimator):
    """Independent factor analysis (Attias 1999) fitted by exact EM on data of any size.

    The model is ``x = mixing_ @ s + mean_ + eps`` with ``eps ~ N(0, diag(noise_variance_))``
    and independent sources ``s_i``, each a mixture of ``n_source_components`` Gaussians
    (weights ``source_weights_``, means ``source_means_``, variances ``source_variances_``),
    all fitted by maximum likelihood. The E-step is exact: it sums over the joint states of
    the sources, ``prod n_source_components`` per row, so the model suits a few sources
    (at most :data:`~daskem.models.ifa.MAX_JOINT_STATES` joint states: e.g. 7 sources of 3
    Gaussians, 12 of 2); each iteration is one pass over the blocks costing
    ``O(n (d L + S L^2))`` for ``S`` joint states.

    With one Gaussian per source every source is ``N(0, 1)`` and the model is factor
    analysis (:class:`daskem.FactorAnalysis`, ``components_`` there being ``mixing_.T`` here
    up to a rotation: the same likelihood and maxima). Non-Gaussian sources make the
    rotation identifiable: the sources are recovered up to order and sign, as by ICA. In
    the noise-free limit with as many sources as features it is maximum-likelihood ICA,
    which :class:`sklearn.decomposition.FastICA` approximates with a fixed contrast
    function and no noise model; IFA learns each source's density and the noise per
    feature, and its sources may be fewer than the features.

    Scale: after every M-step each source is normalised to mean 0 and variance 1, its
    scale moved into its column of ``mixing_`` and its mean into ``mean_`` (Attias'
    convention; the likelihood is unchanged, so EM stays monotone). With
    ``accelerate="squarem"`` the returned parameters may be an extrapolated point, whose
    sources are normalised only nearly.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of sources ``L`` (at most ``n_features``); None uses ``n_features``.
    n_source_components : int or sequence of int, default=3
        Gaussians per source: one number for every source, or one per source.
    tol : float, default=1e-6
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int, default=500
        Most EM iterations.
    random_state : int, RandomState instance or None, default=0
        Seed of the random rotations of the starts and of the start's randomized SVD.
    n_init : int, default=1
        Number of starts (random rotations of the factor analysis start), run in the same
        passes over the data; the most likely fit is kept.
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every, accelerate, prune_restarts, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    mixing_ : ndarray of shape (n_features, n_components)
        The mixing matrix ``A``; its columns carry the sources' scale.
    components_ : ndarray of shape (n_components, n_features)
        The unmixing matrix ``(A^T Psi^-1 A)^-1 A^T Psi^-1``: the sources' weighted least-
        squares estimate from a row (``components_ @ (x - mean_)``, their maximum-likelihood
        value without their prior; ``components_ @ mixing_`` is the identity). With
        ``L = d`` it is the inverse of ``mixing_``. :meth:`transform` gives the posterior
        mean instead.
    mean_ : ndarray of shape (n_features,)
    noise_variance_ : ndarray of shape (n_features,)
    source_weights_, source_means_, source_variances_ : ndarray of shape (n_components, max Gaussians)
        Each source's Gaussians (row ``i``: source ``i``); NaN beyond a source's own
        Gaussians when their numbers differ. Each source has mean 0 and variance 1.
    lower_bound_ : float
        Mean per-sample log-likelihood of the parameters the last iteration started from;
        ``lower_bounds_`` for every iteration.
    converged_ : bool
    n_iter_ : int
    n_passes_ : int
        Passes over the data: reading the first rows (when they span more than half of
        the blocks) and one per iteration.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import IndependentFactorAnalysis
    >>> rng = np.random.default_rng(0)
    >>> S = np.c_[rng.laplace(size=2000), rng.uniform(-1.7, 1.7, size=2000)]
    >>> X = S @ rng.normal(size=(2, 4)) + 0.1 * rng.normal(size=(2000, 4))
    >>> ifa = IndependentFactorAnalysis(n_components=2, n_source_components=3).fit(X)
    >>> ifa.transform(X).shape
    (2000, 2)
    """

    _FITTED = ("mixing_", "mean_", "noise_variance_", "source_weights_")

    def __init__(
        self,
        n_components: int | None = None,
        *,
        n_source_components: int | Sequence[int] = 3,
        tol: float = 1e-6,
        max_iter: int = 500,
        random_state: Any = 0,
        n_init: int = 1,
        verbose: int = 0,
        verbose_interval: int = 10,
        split_every: int | None = None,
        accelerate: str | None = None,
        prune_restarts: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
    ) -> None:
        self.n_components = n_components
        self.n_source_components = n_source_components
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_init = n_init
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every
        self.accelerate = accelerate
        self.prune_restarts = prune_restarts
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    # -- validation and the model ---------------------------------------------------------

    def _source_sizes(self, n_components: int) -> tuple[Any, ...]:
        """``n_source_components`` as one value per source (:class:`IFAModel` checks them)."""
        value = self.n_source_components
        if isinstance(value, int | np.integer):
            return (value,) * n_components
        return tuple(np.atleast_1d(np.asarray(value, dtype=object)))

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1, none_ok=True)
        check_int(name, "n_init", self.n_init, 1)
        if self.n_components is not None:
            IFAModel(int(self.n_components), self._source_sizes(int(self.n_components)))
        self._validate_engine_parameters()

    def _model_for(self, n_features: int) -> IFAModel:
        n_components = n_features if self.n_components is None else int(self.n_components)
        check_latent_dimension(n_components, n_features)
        return IFAModel(n_components, self._source_sizes(n_components))

    def _model(self) -> IFAModel:
        return self._model_for(self.n_features_in_)

    def _model_for_arrays(self, arrays: dict[str, np.ndarray]) -> IFAModel:
        return self._model_for(int(np.shape(arrays["mean"])[0]))

    # -- fitting ------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None) -> Any:
        """Fit the model by EM.

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
        self
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X)
        model = self._model_for(source.n_features)
        self._fit_restarts(model, self._session(source), self.n_init, False, callback)
        return self

    def _initial_params(self, model: IFAModel, session: FitSession, rngs: list[np.random.Generator]) -> list[IFAParams]:
        # scikit-learn's FastICA on the first rows; the loadings of its sources regressed on
        # those rows, the noise their residual variance. Further runs rotate its sources.
        rows = first_rows(session)
        mean = rows.mean(axis=0)
        centred = rows - mean
        variance = centred.var(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a start: a rough unmixing will do
            found = FastICA(
                model.n_components, whiten="unit-variance", random_state=int(rngs[0].integers(np.iinfo(np.int32).max))
            ).fit_transform(centred)
        loadings = np.linalg.lstsq(found, centred, rcond=None)[0]
        noise = np.maximum(
            (centred - found @ loadings).var(axis=0), START_NOISE_FLOOR * np.where(variance > 0, variance, 1)
        )
        rotations = [None, *rngs[1:]]
        return [model.init_params(loadings, mean, noise, rng) for rng in rotations]

    def _params(self) -> IFAParams:
        model = self._model()
        keep = ~np.isnan(self.source_weights_)
        return model.make_params(
            self.mixing_,
            self.mean_,
            self.noise_variance_,
            self.source_weights_[keep],
            self.source_means_[keep],
            self.source_variances_[keep],
        )

    def _set_params_attributes(self, params: IFAParams) -> None:
        sizes = IFAModel(params.mixing.shape[1], self._source_sizes(params.mixing.shape[1])).n_source_components
        a, psi = params.mixing, params.noise_variance
        self.mixing_ = a
        self.mean_ = params.mean
        self.noise_variance_ = psi
        weighted = a / psi[:, np.newaxis]
        self.components_ = np.linalg.solve(a.T @ weighted, weighted.T)
        self.source_weights_ = _per_source(params.source_weights, sizes)
        self.source_means_ = _per_source(params.source_means, sizes)
        self.source_variances_ = _per_source(params.source_variances, sizes)

    @property
    def _n_features_out(self) -> int:
        return int(self.mixing_.shape[1])

    # -- the fitted model -----------------------------------------------------------------

    def transform(self, X: Any) -> Any:
        """Posterior mean of the sources of every row, ``E[s | x]``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        self._check_fitted()
        return self._per_row(X, "transform", columns=self._n_features_out)

    def inverse_transform(self, X: Any) -> Any:
        """Rows from sources: ``X @ mixing_.T + mean_`` (the noise-free part of the model).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_components)
            Sources (e.g. :meth:`transform`'s output).

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_features)
            A lazy dask array for a dask array input.
        """
        self._check_fitted()
        sources = X if hasattr(X, "dask") else np.asarray(X, dtype=np.float64)
        if sources.ndim != 2 or sources.shape[1] != self._n_features_out:
            raise DataError(
                f"X has shape {sources.shape}, but {type(self).__name__} has {self._n_features_out} sources: pass "
                f"rows of {self._n_features_out} source values."
            )
        return sources @ self.mixing_.T + self.mean_

    def get_covariance(self) -> np.ndarray:
        """The model covariance ``mixing_ @ mixing_.T + diag(noise_variance_)``.

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        self._check_fitted()
        return self._model().covariance(self._params())
