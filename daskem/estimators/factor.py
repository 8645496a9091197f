"""``daskem.PPCA`` and ``daskem.FactorAnalysis``: linear-Gaussian latent models by EM, out of core.

The models, their statistics and the M-step algebra are in
:mod:`daskem.models.linear_gaussian`. Both estimators follow scikit-learn's
:class:`~sklearn.decomposition.FactorAnalysis` in names and meanings (``components_``,
``noise_variance_``, ``mean_``, ``loglike_``, ``transform``, ``score``,
``get_covariance``, ...), with the EM iterations run over Dask blocks, one pass over the
data per iteration.

Start: the mean and per-feature variances ``v`` of the first :data:`INIT_ROWS` rows
(read from the blocks holding them; a pass only when those are more than half of the
blocks). PPCA (and FactorAnalysis' restarts after the first): loadings drawn standard
normal with the seed and scaled by ``sqrt(v / (2 q))``, noise ``v / 2`` (its mean for
PPCA). FactorAnalysis' first start is one step of scikit-learn's algorithm on those rows:
the noise ``noise_variance_init`` (default ``v / 2``; scikit-learn's default is 1) and the
maximum-likelihood loadings given it, from an SVD computed as ``svd_method`` and
``iterated_power`` say (:meth:`~daskem.models.linear_gaussian.FactorAnalysisModel.svd_init_params`).
scikit-learn's FactorAnalysis then iterates such SVD steps over all the data held in
memory; daskem runs EM over blocks (optionally SQUAREM-accelerated), one pass per
iteration, and one last pass scoring the returned model (``loglike_[-1]``).

With ``missing="marginalize"`` NaN entries are values missing at random: one more pass
first checks that every feature is observed somewhere, the start uses the observed
entries of the first rows (per-feature means and variances; for the SVD start, those
rows with each NaN replaced by its feature's mean), and EM maximises the observed-data
likelihood (:mod:`daskem.models.linear_gaussian`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin

from daskem.em.checks import nonfinite_error
from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import DensityScores, EMEstimator
from daskem.estimators._validation import check_int, check_option
from daskem.io.sources import DataSource, as_source
from daskem.models.base import count_infinite
from daskem.models.linear_gaussian import (
    ROTATIONS,
    SVD_METHODS,
    FactorAnalysisModel,
    LinearGaussianParams,
    PPCAModel,
    check_latent_dimension,
    ortho_rotation,
)
from daskem.models.missing import check_missing_policy
from daskem.registry import MISSING, N_COMPONENTS, N_INIT, attribute_summary, register

#: Rows read from the start of the data to set the initial mean and scale.
INIT_ROWS = 1024

#: The summary of a fitted PPCA or factor analysis: the loadings of each factor, the noise, the mean.
_SUMMARY = attribute_summary(
    "factor",
    [("loadings (first features)", "components_")],
    notes=[("noise variance", "noise_variance_"), ("mean", "mean_")],
)


def first_rows(session: FitSession, allow_nan: bool = False) -> np.ndarray:
    """The first :data:`INIT_ROWS` rows as float64, refusing non-finite values (with ``allow_nan``: infinite ones)."""
    rows = np.asarray(session.rows(np.arange(min(INIT_ROWS, session.source.n_samples))), dtype=np.float64)
    if allow_nan:
        bad = count_infinite(rows)
        if bad:
            raise DataError(
                f"X contains {bad} infinite value(s) in the first {rows.shape[0]} rows read to initialise the fit "
                "(NaN entries are taken as missing, infinite ones are not). Replace them with NaN or finite values."
            )
        return rows
    bad = int(rows.size - np.count_nonzero(np.isfinite(rows)))
    if bad:
        raise nonfinite_error(bad, rows.shape[0], where=" read to initialise the fit")
    return rows


class _LinearGaussianEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DensityScores, EMEstimator):
    """What :class:`PPCA` and :class:`FactorAnalysis` share (not used directly)."""

    _FITTED = ("components_", "mean_", "noise_variance_")
    _MODEL: ClassVar[type[PPCAModel] | type[FactorAnalysisModel]]

    def __init__(
        self,
        n_components: int | None = None,
        *,
        tol: float = 1e-6,
        max_iter: int = 1000,
        n_init: int = 1,
        random_state: Any = 0,
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
        missing: str = "error",
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 0.55,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
    ) -> None:
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
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
        self.missing = missing
        self.schedule = schedule
        self.step_blocks = step_blocks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.average = average
        self.shuffle = shuffle

    # -- validation and the model ---------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 0, none_ok=True)
        check_int(name, "n_init", self.n_init, 1)
        check_missing_policy(self.missing, name)
        self._validate_engine_parameters()

    def _model(self) -> PPCAModel | FactorAnalysisModel:
        # n_components=None means every feature (scikit-learn's meaning).
        return self._MODEL(
            self.n_features_in_ if self.n_components is None else int(self.n_components), missing=self.missing
        )

    @classmethod
    def _restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], **record: Any) -> EMEstimator:
        if params.get("n_components") is not None:
            return super()._restore(params, arrays, **record)
        # n_components=None means every feature: restore with the stored count, then keep None.
        est = super()._restore({**params, "n_components": int(np.shape(arrays["mean"])[0])}, arrays, **record)
        est.set_params(n_components=None)
        return est

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
        n_components = source.n_features if self.n_components is None else int(self.n_components)
        check_latent_dimension(n_components, source.n_features)
        self._check_source(source)
        model = self._MODEL(n_components, missing=self.missing)
        session = self._session(source)
        if self.missing == "marginalize":
            # One pass: refuses a feature missing in every row, warns about empty rows.
            session.missing_summary()
        self._fit_restarts(model, session, self.n_init, False, callback)
        # scikit-learn's loglike_ ends with the log-likelihood of the returned model; the
        # engine's records are those of the parameters each iteration started from (one
        # behind). One more pass scores the returned parameters.
        totals = [value * self._n_samples_fit for value in self.lower_bounds_[1:]]
        if self.n_iter_ > 0:
            totals.append(model.log_likelihood(session.stats(model, self._params())))
            self.n_passes_ = session.passes
        self.loglike_ = totals
        self._rotate()
        return self

    def partial_fit(self, X: Any, y: Any = None) -> Any:
        """Update the model with the rows of ``X`` by online EM (Cappé & Moulines).

        One online step from all the rows of ``X`` (a mini-batch; ``step_blocks`` and
        ``shuffle`` apply to :meth:`fit`): the running statistics move towards the batch's
        by ``(t + learning_offset) ** -learning_decay`` (the first step takes them as they
        are) and the M-step follows. The first call initialises from the first rows of its
        ``X`` as :meth:`fit` does (``random_state``, and FactorAnalysis'
        ``noise_variance_init`` and SVD start) unless the model is fitted, in which case
        it starts from the fitted parameters (after an online ``fit``, from its running
        statistics). Calls over the blocks of a dataset in order give bitwise the
        parameters of ``fit`` with ``schedule="online", shuffle=False, max_iter=1`` from
        the same start (the same first rows: a first batch of at least
        :data:`INIT_ROWS` rows).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            A batch of rows.
        y : None
            Ignored.

        Returns
        -------
        self
            The updated estimator. ``loglike_`` gains the total log-likelihood of the
            batch under the parameters the step started from (``lower_bounds_``: the same
            per sample).
        """
        return self._partial_fit(X)

    def _partial_source(self, X: Any, **kwargs: Any) -> DataSource:
        source = as_source(X, one_block=True)
        self._check_source(source)
        return source

    def _partial_fitted(self, session: FitSession, model: Any, stats: Any, continuing: bool) -> None:
        """``loglike_`` gains the batch's total log-likelihood; FactorAnalysis' rotation is applied."""
        self.loglike_ = [*(self.loglike_ if continuing else []), model.log_likelihood(stats)]
        self._rotate()

    def _partial_model(self, session: FitSession) -> PPCAModel | FactorAnalysisModel:
        n_features = session.source.n_features
        n_components = n_features if self.n_components is None else int(self.n_components)
        check_latent_dimension(n_components, n_features)
        return self._MODEL(n_components, missing=self.missing)

    def _check_source(self, source: Any) -> None:
        """Checks of the data against the hyperparameters, before the fit (hook)."""

    def _rotate(self) -> None:
        """Post-process the fitted loadings (hook: FactorAnalysis' ``rotation``)."""

    def _fit_record(self) -> dict[str, Any]:
        # loglike_ ends with a score of the returned model that no engine record holds.
        return {**super()._fit_record(), "extra": {"loglike": [float(v) for v in self.loglike_]}}

    def _restored(self) -> None:
        stored = getattr(self, "_fit_extra", {}).get("loglike")
        if stored is not None:
            self.loglike_ = [float(v) for v in stored]
        else:
            # A checkpoint records the log-likelihood each iteration started from: the
            # returned parameters' own (a last pass over the data) is not among them.
            self.loglike_ = [value * self._n_samples_fit for value in self.lower_bounds_[1:]]

    def _initial_params(
        self, model: PPCAModel | FactorAnalysisModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[LinearGaussianParams]:
        rows = first_rows(session, allow_nan=self.missing == "marginalize")
        return [model.init_params(rows, rng) for rng in rngs]

    def _params(self) -> LinearGaussianParams:
        return self._model().make_params(self.components_, self.mean_, self.noise_variance_)

    def _set_params_attributes(self, params: LinearGaussianParams) -> None:
        self.components_ = params.components
        self.mean_ = params.mean
        self.noise_variance_ = params.noise_variance

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])

    # -- the fitted model -----------------------------------------------------------------

    def transform(self, X: Any) -> Any:
        """Posterior mean of the latent factors of every row, ``E[z | x]``.

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

    def get_covariance(self) -> np.ndarray:
        """The model covariance ``components_.T @ components_ + diag(noise_variance_)``.

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        self._check_fitted()
        return self._model().covariance(self._params())

    def get_precision(self) -> np.ndarray:
        """The inverse of :meth:`get_covariance` (by its Cholesky factorisation).

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        self._check_fitted()
        return self._model().precision(self._params())


@register(
    "ppca",
    description="probabilistic PCA (isotropic noise)",
    options=(N_COMPONENTS, N_INIT, MISSING),
    summary=_SUMMARY,
    figures=("loadings", "latent"),
)
class PPCA(_LinearGaussianEstimator):
    """Probabilistic PCA (Tipping & Bishop 1999) fitted by EM on data of any size.

    The model is ``x = components_.T @ z + mean_ + eps`` with ``z ~ N(0, I)`` and
    isotropic noise ``eps ~ N(0, noise_variance_ I)``. Its maximum-likelihood solution is
    that of :class:`sklearn.decomposition.PCA` (the span of ``components_`` is the leading
    principal subspace and ``noise_variance_`` is PCA's ``noise_variance_``), reached here
    by EM without forming the covariance matrix: each iteration is one pass over Dask
    blocks costing ``O(n d q)``.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of latent factors ``q``, ``0 <= q <= n_features``; None keeps every
        feature (``noise_variance_`` then reaches its floor, as PCA's reaches 0); 0 fits
        isotropic Gaussian noise alone.
    tol : float, default=1e-6
        Convergence threshold on the change of the mean per-sample log-likelihood (not
        scikit-learn's total log-likelihood).
    max_iter : int, default=1000
        Most EM iterations.
    n_init : int, default=1
        Number of random starts, run in the same passes over the data; the most likely
        fit is kept.
    random_state : int, RandomState instance or None, default=0
        Seed of the random initial loadings (see :mod:`daskem.estimators.factor`).
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every, accelerate, prune_restarts, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`. ``accelerate="squarem"`` helps much when
        the noise is small against the signal, where plain EM converges slowly.
    missing : {"error", "marginalize"}, default="error"
        What NaN entries of ``X`` are. "error": errors, as every non-finite value
        (scikit-learn's behaviour). "marginalize": values missing at random; each row
        counts through its observed coordinates (the observed-data likelihood is
        maximised, by EM over the missing values and the factors), ``transform`` gives
        ``E[z | x_observed]`` and ``score_samples`` the observed coordinates' log-density
        (0 for a row with nothing observed). Rows with every feature missing are skipped
        with a warning; a feature missing in every row is a ``DataError``. The start
        uses each feature's mean and variance over its observed entries in the first
        :data:`INIT_ROWS` rows (0 and 1 for a feature with none there). Whether values
        are missing at random cannot be told from the data. Infinite values remain
        errors.
    schedule : {"batch", "incremental", "online"}, default="batch"
        Which blocks each M-step reads, as for :class:`daskem.GaussianMixture`
        ("stochastic" is refused: the factors are continuous, there is no component to
        draw). "incremental" reaches the batch maximum in fewer passes when the data
        are many blocks; "online" is for data too large to iterate over (a pass or two).
    step_blocks, learning_decay, learning_offset, average, shuffle
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Loading matrix ``W``, defined up to a rotation of the latent space (its rows are
        not orthonormal, unlike PCA's ``components_``).
    mean_ : ndarray of shape (n_features,)
        The sample mean (with ``missing="marginalize"``: the maximum-likelihood mean).
    noise_variance_ : float
        The maximum-likelihood noise variance (PCA's ``noise_variance_`` times
        ``(n_samples - 1) / n_samples``: PCA divides by ``n_samples - 1``).
    loglike_ : list of float
        Total log-likelihood after every iteration, the last that of the returned model
        (as :class:`FactorAnalysis`' ``loglike_``).
    lower_bound_ : float
        Mean per-sample log-likelihood of the parameters the last iteration started
        from; ``lower_bounds_`` for every iteration.
    converged_ : bool
    n_iter_ : int
    n_passes_ : int
        Passes over the data, the last one scoring the returned model.
    n_steps_ : int
        M-steps made (several per iteration for the incremental and online schedules).
    n_samples_seen_ : int
        Rows read by the online steps of :meth:`partial_fit` calls (and the online
        ``fit`` they continue).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import PPCA
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(1000, 5))
    >>> ppca = PPCA(n_components=2, accelerate="squarem").fit(X)
    >>> ppca.transform(X).shape
    (1000, 2)
    """

    _MODEL = PPCAModel


@register(
    "fa",
    description="factor analysis (one noise variance per feature; scikit-learn's FactorAnalysis)",
    options=(N_COMPONENTS, N_INIT, MISSING),
    summary=_SUMMARY,
    figures=("loadings", "latent"),
)
class FactorAnalysis(_LinearGaussianEstimator):
    """Factor analysis fitted by EM on data of any size (scikit-learn's API).

    The model is ``x = components_.T @ z + mean_ + eps`` with ``z ~ N(0, I)`` and
    ``eps ~ N(0, diag(noise_variance_))``, one noise variance per feature. A drop-in for
    :class:`sklearn.decomposition.FactorAnalysis`: it reaches the same maximum of the
    likelihood by EM, each iteration one pass over Dask blocks costing ``O(n d q)``
    (scikit-learn iterates SVDs of the whole data in memory).

    Parameters
    ----------
    n_components : int or None, default=None
        Number of latent factors ``q``, ``0 <= q <= n_features``; None uses
        ``n_features``. 0 fits the diagonal Gaussian (``noise_variance_`` the variances).
    tol : float, default=1e-6
        Convergence threshold on the change of the mean per-sample log-likelihood
        (scikit-learn's ``tol``, default 1e-2, is on the total log-likelihood).
    copy : bool, default=True
        Accepted for scikit-learn compatibility. daskem never modifies ``X`` (blocks
        are centred into scratch buffers), so ``copy=False`` changes nothing (in
        scikit-learn it lets the fit overwrite ``X``).
    max_iter : int, default=1000
        Most EM iterations.
    noise_variance_init : array-like of shape (n_features,), default=None
        The starting noise variance of every feature (positive). None: half of each
        feature's variance in the first :data:`INIT_ROWS` rows (scikit-learn starts
        from 1, which suits standardised data only).
    svd_method : {"lapack", "randomized"}, default="randomized"
        How the SVD of the starting step is computed: the first start's loadings are the
        maximum-likelihood ones given ``noise_variance_init`` on the first
        :data:`INIT_ROWS` rows (scikit-learn's SVD step, of an ``INIT_ROWS x n_features``
        matrix). "lapack": exact SVD (:func:`scipy.linalg.svd`); "randomized":
        :func:`sklearn.utils.extmath.randomized_svd`, faster for many features. It
        changes the start, not the EM iterations that follow (scikit-learn runs an SVD
        every iteration).
    iterated_power : int, default=3
        Power iterations of the randomized SVD (``svd_method="randomized"`` only).
    rotation : {"varimax", "quartimax"} or None, default=None
        Rotate the fitted loadings to maximise this criterion (Kaiser 1958), as
        scikit-learn does, by :func:`daskem.models.linear_gaussian.ortho_rotation`
        (the same numbers). The covariance and likelihood are unchanged.
    random_state : int, RandomState instance or None, default=0
        Seed of the randomized SVD and of the random loadings of further restarts (see
        :mod:`daskem.estimators.factor`).
    n_init : int, default=1
        Number of starts, run in the same passes over the data; the most likely fit is
        kept. The first is the SVD start, the others random loadings.
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every, accelerate, prune_restarts, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`.
    missing : {"error", "marginalize"}, default="error"
        What NaN entries of ``X`` are. "error": errors, as every non-finite value
        (scikit-learn's behaviour). "marginalize": values missing at random; each row
        counts through its observed coordinates (the observed-data likelihood is
        maximised, by EM over the missing values and the factors), ``transform`` gives
        ``E[z | x_observed]`` and ``score_samples`` the observed coordinates' log-density
        (0 for a row with nothing observed). Rows with every feature missing are skipped
        with a warning; a feature missing in every row is a ``DataError``. The start
        uses each feature's mean and variance over its observed entries in the first
        :data:`INIT_ROWS` rows (0 and 1 for a feature with none there); the SVD start
        takes those rows with each NaN replaced by its feature's mean. Whether values
        are missing at random cannot be told from the data. Infinite values remain
        errors.
    schedule : {"batch", "incremental", "online"}, default="batch"
        Which blocks each M-step reads, as for :class:`daskem.GaussianMixture`
        ("stochastic" is refused: the factors are continuous, there is no component to
        draw). "incremental" reaches the batch maximum in fewer passes when the data
        are many blocks; "online" is for data too large to iterate over (a pass or two).
    step_blocks, learning_decay, learning_offset, average, shuffle
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Loading matrix ``W``, defined up to a rotation of the latent space.
    mean_ : ndarray of shape (n_features,)
        The sample mean (with ``missing="marginalize"``: the maximum-likelihood mean).
    noise_variance_ : ndarray of shape (n_features,)
    loglike_ : list of float
        Total log-likelihood after every iteration, as scikit-learn's: the last entry is
        that of the returned model (scored in one last pass over the data). A model
        loaded from a checkpoint (not a model file) lacks that last entry.
    lower_bound_ : float
        Mean per-sample log-likelihood of the parameters the last iteration started from
        (one iteration behind ``loglike_``); ``lower_bounds_`` for every iteration.
    converged_ : bool
    n_iter_ : int
    n_passes_ : int
        Passes over the data: reading the first rows (when they span more than half of
        the blocks), one per iteration, one scoring the returned model.
    n_steps_ : int
        M-steps made (several per iteration for the incremental and online schedules).
    n_samples_seen_ : int
        Rows read by the online steps of :meth:`partial_fit` calls (and the online
        ``fit`` they continue).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import FactorAnalysis
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 5)) + rng.uniform(0.1, 1, 5) * rng.normal(size=(1000, 5))
    >>> fa = FactorAnalysis(n_components=2, accelerate="squarem").fit(X)
    >>> fa.noise_variance_.shape
    (5,)
    """

    _MODEL = FactorAnalysisModel

    def __init__(
        self,
        n_components: int | None = None,
        *,
        tol: float = 1e-6,
        copy: bool = True,
        max_iter: int = 1000,
        noise_variance_init: Any = None,
        svd_method: str = "randomized",
        iterated_power: int = 3,
        rotation: str | None = None,
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
        missing: str = "error",
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 0.55,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            n_components,
            tol=tol,
            max_iter=max_iter,
            n_init=n_init,
            random_state=random_state,
            verbose=verbose,
            verbose_interval=verbose_interval,
            split_every=split_every,
            accelerate=accelerate,
            prune_restarts=prune_restarts,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            keep_last=keep_last,
            overwrite_checkpoint=overwrite_checkpoint,
            cache=cache,
            missing=missing,
            schedule=schedule,
            step_blocks=step_blocks,
            learning_decay=learning_decay,
            learning_offset=learning_offset,
            average=average,
            shuffle=shuffle,
        )
        self.copy = copy
        self.noise_variance_init = noise_variance_init
        self.svd_method = svd_method
        self.iterated_power = iterated_power
        self.rotation = rotation

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        name = type(self).__name__
        if not isinstance(self.copy, bool | np.bool_):
            raise ParameterError(
                f"The 'copy' parameter of {name} must be an instance of 'bool' or an instance of 'numpy.bool'. "
                f"Got {self.copy!r} instead."
            )
        check_option(name, "svd_method", self.svd_method, SVD_METHODS)
        check_int(name, "iterated_power", self.iterated_power, 0)
        if self.rotation is not None:
            check_option(name, "rotation", self.rotation, ROTATIONS)
        if self.noise_variance_init is not None:
            self._noise_init()

    def _noise_init(self) -> np.ndarray | None:
        """``noise_variance_init`` as a checked float64 vector (None when not given)."""
        if self.noise_variance_init is None:
            return None
        try:
            noise = np.asarray(self.noise_variance_init, dtype=np.float64)
        except (TypeError, ValueError):
            noise = np.array([np.nan])
        if noise.ndim != 1 or not np.all(np.isfinite(noise) & (noise > 0)):
            raise ParameterError(
                f"The 'noise_variance_init' parameter of {type(self).__name__} must be an array-like of shape "
                f"(n_features,) of positive finite variances or None. Got {self.noise_variance_init!r} instead."
            )
        return noise

    def _check_source(self, source: Any) -> None:
        noise = self._noise_init()
        if noise is not None and noise.shape[0] != source.n_features:
            raise ParameterError(
                f"noise_variance_init has {noise.shape[0]} values but X has {source.n_features} features: pass "
                f"one starting noise variance per feature."
            )

    def _init_config(self) -> dict[str, Any]:
        noise = self._noise_init()
        return {
            "svd_method": self.svd_method,
            "iterated_power": int(self.iterated_power),
            "noise_variance_init": None if noise is None else noise.tolist(),
        }

    def _initial_params(
        self, model: PPCAModel | FactorAnalysisModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[LinearGaussianParams]:
        # The first start is scikit-learn's SVD step on the first rows; further restarts
        # draw random loadings (an SVD start is the same for every seed).
        rows = first_rows(session, allow_nan=self.missing == "marginalize")
        noise = self._noise_init()
        starts = []
        for index, rng in enumerate(rngs):
            seed = int(rng.integers(np.iinfo(np.int32).max))
            if index == 0:
                params = model.svd_init_params(
                    rows,
                    noise,
                    svd_method=self.svd_method,
                    iterated_power=int(self.iterated_power),
                    random_state=seed,
                )
            else:
                params = model.init_params(rows, rng)
                if noise is not None:
                    params = model.make_params(params.components, params.mean, noise)
            starts.append(params)
        return starts

    def _rotate(self) -> None:
        if self.rotation is not None and self.components_.shape[0] > 0:
            self.components_ = ortho_rotation(self.components_, self.rotation)
