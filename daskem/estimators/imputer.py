"""``daskem.GaussianImputer``: missing values filled in under a Gaussian mixture, out of core."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from sklearn.base import OneToOneFeatureMixin, TransformerMixin

from daskem.em.monitor import IterationRecord
from daskem.errors import ParameterError
from daskem.estimators._base import _entropy
from daskem.estimators.gaussian_mixture import GaussianMixture


class GaussianImputer(OneToOneFeatureMixin, TransformerMixin, GaussianMixture):
    """Impute missing values (NaN) under a Gaussian mixture fitted by EM, out of core.

    ``fit`` is :class:`daskem.GaussianMixture` with ``missing="marginalize"``: the
    mixture is fitted by EM to the observed entries (values missing at random), one pass
    over the data per iteration. ``transform`` replaces every NaN entry by its
    conditional mean given the row's observed entries under the fitted mixture, or with
    ``sample_posterior=True`` by a draw from their conditional distribution (for
    multiple imputation). Observed entries are returned unchanged.

    With ``n_components=1`` (the default) this is the multivariate-normal EM imputer
    (Schafer's ``norm``): the conditional mean of a row's missing coordinates ``M`` is
    ``mu_M + Sigma_MO Sigma_OO^-1 (x_O - mu_O)``. More components model non-Gaussian
    data (clusters, skew): the conditional mean is then the responsibility-weighted
    average of each component's.

    The class is a :class:`daskem.GaussianMixture` (``missing`` fixed to
    ``"marginalize"``): ``score``, ``bic``, ``predict``, ``save``/:func:`daskem.load`
    and checkpoints work as for the mixture.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component covariances. "diag" and "spherical" make the features
        independent within a component: with one component every missing value is then
        imputed by its feature's mean.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals.
    max_iter : int, default=100
        Number of EM iterations to run at most.
    n_init : int, default=1
        Number of initialisations; the one with the best likelihood is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How to initialise; the initialisers read the rows without a missing entry (see
        :class:`daskem.GaussianMixture`).
    weights_init, means_init, precisions_init : array-like, default=None
        Initial parameters (see :class:`daskem.GaussianMixture`).
    sample_posterior : bool, default=False
        False: impute conditional means. True: impute one draw from the conditional
        distribution of the missing entries given the observed ones (a component drawn
        from the row's responsibilities, then that component's conditional Gaussian).
        The draws come from a counter-based generator keyed by ``draw_seed_`` at a
        position fixed by the row's index in ``X``, so they are reproducible and use the
        same random numbers however ``X`` is chunked (the values agree to rounding).
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation and of the draws of ``sample_posterior=True``. An int
        is used as the draws' seed; otherwise a seed is drawn once at ``fit`` (as
        scikit-learn's imputers do), so that every ``transform`` of the same data gives
        the same draws.
    warm_start : bool, default=False
        Start a new ``fit`` from the previous solution.
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every : int, default=None
        Fan-in of the statistics reduction tree (``dask.config`` ``split_every``, else 8).
    accelerate : {None, "squarem"}, default=None
        "squarem" extrapolates along the EM path: fewer passes to converge.
    prune_restarts : bool, default=False
        Stop initialisations that fall clearly behind the best one.
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
        Persist the data once in (cluster) memory or stream them from their source on
        every pass of the fit; ``transform`` always streams.
    schedule : {"batch", "incremental", "online"}, default="batch"
        Which blocks each M-step reads, as for :class:`daskem.GaussianMixture`
        ("stochastic" is refused: it draws components for complete rows only).
    step_blocks, learning_decay, learning_offset, average, shuffle
        As for :class:`daskem.GaussianMixture`.

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
        Mean per-sample observed-data log-likelihood at the last iteration.
    lower_bounds_ : list of float
    n_passes_ : int
    n_steps_ : int
    n_samples_seen_ : int
        As for :class:`daskem.GaussianMixture`.
    n_features_in_ : int
    draw_seed_ : int
        Key of the generator of the draws (``sample_posterior=True``): ``random_state``
        itself when it is an int, else drawn once at ``fit``.

    See Also
    --------
    daskem.GaussianMixture : The mixture fitted (``missing="marginalize"``).
    sklearn.impute.IterativeImputer : Round-robin regression imputation, in memory.

    Notes
    -----
    Whether the values are missing at random cannot be told from the data; when the
    probability that a value is missing depends on the value itself, every imputation
    from the observed data is biased. Rows with every feature missing get the mixture's
    mean (or a draw from the mixture).

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import GaussianImputer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.9], [0.9, 1.0]], size=2000)
    >>> X[::10, 1] = np.nan
    >>> imp = GaussianImputer(random_state=0).fit(X)
    >>> filled = imp.transform(np.array([[1.0, np.nan], [np.nan, -2.0], [0.5, 0.5]]))
    >>> np.round(filled, 1).tolist()
    [[1.0, 0.9], [-1.8, -2.0], [0.5, 0.5]]
    >>> imp.get_feature_names_out().tolist()
    ['x0', 'x1']
    """

    #: Not a parameter: an imputer always marginalises missing values.
    missing = "marginalize"

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
        sample_posterior: bool = False,
        random_state: Any = None,
        warm_start: bool = False,
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
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 0.55,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
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
        self.sample_posterior = sample_posterior
        self.random_state = random_state
        self.warm_start = warm_start
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
        self.schedule = schedule
        self.step_blocks = step_blocks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.average = average
        self.shuffle = shuffle

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: NaN entries are accepted (they are what is imputed)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if not isinstance(self.sample_posterior, bool | np.bool_):
            raise ParameterError(
                f"The 'sample_posterior' parameter of {type(self).__name__} must be an instance of 'bool'. "
                f"Got {self.sample_posterior!r} instead."
            )

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None
    ) -> GaussianImputer:
        """Fit the mixture to the observed entries of ``X`` by EM.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data, NaN where missing; a string is the path or URL of a Zarr array.
        y : None
            Ignored; present for API consistency.
        callback : callable, optional
            Called as ``callback(record, params)`` after every EM iteration.

        Returns
        -------
        self : GaussianImputer
            The fitted imputer.
        """
        super().fit(X, callback=callback)
        self.draw_seed_ = _entropy(self.random_state)
        return self

    def partial_fit(self, X: Any, y: Any = None) -> GaussianImputer:
        """Update the mixture with the observed entries of ``X`` by online EM.

        :meth:`daskem.GaussianMixture.partial_fit` with missing values marginalised.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            A batch of rows, NaN where missing.
        y : None
            Ignored.

        Returns
        -------
        self : GaussianImputer
            The updated imputer.
        """
        super().partial_fit(X)
        if not hasattr(self, "draw_seed_"):
            self.draw_seed_ = _entropy(self.random_state)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """Fit to ``X``, then impute its missing entries.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data, NaN where missing.
        y : None
            Ignored.
        **fit_params : dict
            Passed to :meth:`fit` (``callback``).

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_features)
            See :meth:`transform` (the data are read once to fit per EM iteration, and
            once more to impute).
        """
        return self.fit(X, **fit_params).transform(X)

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture, **params: Any) -> GaussianImputer:
        """An imputer using the parameters of a fitted :class:`daskem.GaussianMixture`.

        The mixture may have been fitted with ``missing="error"`` (on complete data) or
        ``"marginalize"``; the imputer uses it to marginalise missing values. Nothing is
        fitted again.

        Parameters
        ----------
        mixture : GaussianMixture
            A fitted mixture (e.g. ``daskem.load("MODEL.zarr")`` of ``daskem fit -o``).
        **params : dict
            Imputer parameters to set besides the mixture's hyperparameters (e.g.
            ``sample_posterior``, ``random_state``).

        Returns
        -------
        GaussianImputer
            A fitted imputer.
        """
        if not isinstance(mixture, GaussianMixture):
            raise ParameterError(
                f"from_mixture takes a fitted daskem.GaussianMixture; got {type(mixture).__name__}. Fit or load a "
                "Gaussian mixture (daskem fit --model gmm -o MODEL.zarr)."
            )
        mixture._check_fitted()
        names = cls._get_param_names()
        hyper = {k: v for k, v in mixture.get_params(deep=False).items() if k in names}
        imputer = cls._restore(
            {**hyper, **params},
            mixture._params().to_arrays(),
            converged=bool(mixture.converged_),
            lower_bounds=list(mixture.lower_bounds_),
            n_features=int(mixture.n_features_in_),
            n_passes=int(mixture.n_passes_),
            n_samples=int(getattr(mixture, "_n_samples_fit", 0)),
            source=getattr(mixture, "_fit_source", None),
        )
        return cast(GaussianImputer, imputer)

    # -- persistence -------------------------------------------------------------------------

    def _fit_record(self) -> dict[str, Any]:
        return {**super()._fit_record(), "extra": {"draw_seed": int(self.draw_seed_)}}

    def _restored(self) -> None:
        stored = getattr(self, "_fit_extra", {}).get("draw_seed")
        self.draw_seed_ = int(stored) if stored is not None else _entropy(self.random_state)

    # -- imputing ------------------------------------------------------------------------------

    def transform(self, X: Any) -> Any:
        """Impute the missing (NaN) entries of ``X``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data, NaN where missing; infinite values are errors.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_features)
            ``X`` with its NaN entries replaced by their conditional means (or draws,
            ``sample_posterior=True``); observed entries, and rows without NaN, are
            returned unchanged. NumPy for in-memory input (one pass), a lazy dask array
            chunked like ``X`` for dask or Zarr input (nothing is read until it is
            computed or stored, e.g. with ``to_zarr``). float32 when both ``X`` and the
            fitted attributes are float32, else float64.
        """
        session = self._prediction_session(self._source_for_predict(X))
        messages = None
        if self.sample_posterior:
            firsts = np.cumsum((0, *session.block_rows))[:-1]
            messages = [(int(self.draw_seed_), int(first)) for first in firsts]
        imputed = session.map_rows(
            self._model(), "impute", self._params(), dtype=np.float64, columns=self.n_features_in_, messages=messages
        )
        return self._in_dtype_of(X, imputed)
