"""``daskem.GaussianMixture``: scikit-learn's GaussianMixture, out of core."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from daskem.em.init import data_moments, initial_params, max_init_passes, sklearn_random_state
from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import ParameterError
from daskem.estimators._base import EMEstimator, _jsonable
from daskem.estimators._mixture import MIXTURE_OPTIONS, MixturePredictions
from daskem.io.sources import DataSource, as_source
from daskem.models.gaussian import check_shape, covariance_type
from daskem.models.gaussian_prior import GaussianPrior, check_prior_spec, needs_data, resolve_prior
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.models.missing import check_missing_policy
from daskem.registry import (
    MISSING,
    Option,
    Selectable,
    attribute_summary,
    register,
)

#: Complete rows per component the initialisers need to start from the complete rows alone
#: (with fewer, they read every row, missing entries set to their feature's observed mean).
INIT_COMPLETE_ROWS = 10


def parse_prior(text: str) -> Any:
    """``--prior``'s value: ``default`` (mclust's defaultPrior) or a JSON object of some of
    ``shrinkage``, ``mean``, ``dof``, ``scale`` (the others from the default)."""
    text = text.strip()
    if text == "default":
        return "default"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ParameterError(
            f"--prior {text!r}: give 'default' or a JSON object such as "
            '\'{"shrinkage": 0.01, "dof": 5}\' (keys shrinkage, mean, dof, scale).'
        )
    check_prior_spec("GaussianMixture", value)
    return value


#: ``--prior`` (``daskem fit --model gmm`` and ``daskem select``).
PRIOR = Option(
    ("--prior",),
    "prior",
    "MAP-EM under mclust's conjugate prior: 'default' (mclust's defaultPrior from the data: one more pass) "
    "or a JSON object of some of shrinkage, mean, dof, scale.",
    kind=str,
    metavar="default|JSON",
    convert=parse_prior,
)


@register(
    "gmm",
    description="Gaussian mixture (scikit-learn's GaussianMixture)",
    options=(
        *MIXTURE_OPTIONS,
        MISSING,
        PRIOR,
    ),
    summary=attribute_summary(
        "component", [("weight", "weights_"), ("mean (first features)", "means_")], title=("covariance_type",)
    ),
    figures=("components",),
    select=Selectable(
        "mixture",
        "the mixture's log-likelihood, as scikit-learn's bic/aic",
        axes={"covariance_type": "covariance_types"},
        settings=("reg_covar", "prior"),
    ),
)
class GaussianMixture(MixturePredictions, EMEstimator):
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
        Number of initialisations; the one with the best lower bound is kept. All of them
        run in the same passes over the data (each block is read once per iteration).
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How to initialise (see :mod:`daskem.em.init`): "kmeans" runs k-means|| and a few
        Lloyd passes over all the data without loading it; "k-means++" seeds on a uniform
        sample of at most 100,000 rows.
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
    accelerate : {None, "squarem"}, default=None
        "squarem" extrapolates along the EM path (:mod:`daskem.em.accelerate`): fewer
        passes to converge, and the log-likelihood still never decreases.
    prune_restarts : bool, default=False
        Stop initialisations that fall clearly behind the best one (listed in
        ``pruned_restarts_``), to save compute when ``n_init > 1``.
    checkpoint : str or os.PathLike, default=None
        Zarr location (path or fsspec URL) to checkpoint the fit into; fitting again with
        the same checkpoint resumes it (see :func:`daskem.fit_em`).
    checkpoint_every : int, default=1
        Iterations between commits (the last one is always committed).
    keep_last : int, default=2
        Committed iterations kept in the checkpoint.
    overwrite_checkpoint : bool, default=False
        Discard an existing checkpoint and start afresh.
    cache : {"auto", True, False}, default="auto"
        Persist the data once in (cluster) memory or stream them from their source on
        every pass; "auto" caches data taking at most half the available memory.
    missing : {"error", "marginalize"}, default="error"
        What NaN entries of ``X`` are. "error" refuses them (scikit-learn's behaviour).
        "marginalize" takes them as values missing at random: each row's responsibilities
        and likelihood come from its observed coordinates, the M-step uses the expected
        complete-data statistics (the missing coordinates' conditional means and
        covariances), and ``lower_bound_``, ``score_samples``, ``score`` and ``bic`` are
        the observed-data log-likelihood. The initialisers ("kmeans", "k-means++",
        "random", "random_from_data") read the rows without a missing entry when there
        are at least 10 per component, else every row with its missing entries set to
        the feature's observed mean (one more pass finds them); rows with every feature
        missing are skipped with a warning; a feature missing in every row is an error. Whether values are missing
        at random cannot be told from the data (see the README).
    schedule : {"batch", "incremental", "online", "stochastic"}, default="batch"
        Which blocks of the data each M-step reads (:mod:`daskem.em.schedules`; the name
        ``algorithm`` is KMeans's, for Lloyd / Elkan, so it is not reused).
        "batch": every block, every iteration (EM). "incremental" (Neal & Hinton): each
        block's last statistics are kept and a step re-reads ``step_blocks`` of them (in
        order) before an M-step; an iteration is a sweep over every block; with every
        block per step it is batch EM bit for bit, with fewer it reaches the same fixed
        point in fewer passes. "online" (Cappé & Moulines): running statistics updated
        after every step of ``step_blocks`` blocks with the weight
        ``(t + learning_offset) ** -learning_decay``, the blocks visited in a seeded random
        order per epoch; an iteration is an epoch (``max_iter`` epochs at most, stopping
        when the epoch's mean log-likelihood changes by less than ``tol``): a pass or two
        over data too large to iterate on. "stochastic" (Celeux & Diebolt): each row's
        component is drawn from its responsibilities (the same draws however the data are
        chunked) instead of weighting it by them; the chain of parameters runs
        ``max_iter`` iterations and does not converge, use ``average`` to report its
        mean: a way out of poor local optima (a drawn assignment can leave one), not a
        faster batch EM. Schedules other than batch run one initialisation
        (``n_init=1``) without ``accelerate``.
    step_blocks : int, optional
        Blocks read per incremental or online step (default: incremental a quarter of the
        blocks, online 1). Blocks are the data's chunks (``daskem fit --chunk-rows``).
    learning_decay : float, default=0.55
        Online step sizes ``(t + learning_offset) ** -learning_decay``, in (0.5, 1]; 1
        with ``learning_offset=0`` averages equal-sized steps with equal weights. Near
        0.5 the steps stay large enough for one epoch to leave a poor start
        (``benchmarks/bench_online.py``: 0.55 ended 0.03% from batch EM's optimum, 0.6
        0.47%, 0.8 7.6%).
    learning_offset : float, default=0.0
        See ``learning_decay`` (>= 0; larger values weigh early steps less).
    average : bool or int, default=False
        Polyak-Ruppert averaging (online) or the chain's average (stochastic): the fitted
        parameters are the mean, in the model's vector form (SQUAREM's coordinates), of
        the parameters after each step (online) or iteration (stochastic) beyond the first
        ``average`` ones; True: beyond half of them (``fit`` only).
    shuffle : bool, default=True
        Online ``fit``: a new seeded random order of the blocks every epoch (from
        ``random_state``); False visits them in order, as :meth:`partial_fit` calls do.
    prior : None, "default" or dict, default=None
        MAP-EM under mclust's conjugate prior (Fraley & Raftery 2007;
        :mod:`daskem.models.gaussian_prior`): the M-step is the posterior mode, which
        keeps covariances away from singularity (fits with ``reg_covar=0`` where maximum
        likelihood collapses). The keys are mclust's ``priorControl`` names:

        ============  =================  ==============================================
        key           mclust             default (mclust's ``defaultPrior``)
        ============  =================  ==============================================
        shrinkage     ``shrinkage``      0.01 (the means' prior counts as 0.01 rows)
        mean          ``mean``           the data's mean
        dof           ``dof``            ``d + 2``
        scale         ``scale``          full/tied: ``var(data) / G^(2/d)``; diag and
                                         spherical: ``sum_j var_j / d / G^(2/d)``
        ============  =================  ==============================================

        ``"default"`` takes every default, a dict gives some values and takes the others
        from the default (the data's mean and covariance cost one more pass over the data,
        only when ``mean`` or ``scale`` is missing). No prior on the weights (as mclust).
        ``lower_bound_`` is then the log posterior per row (log-likelihood plus the log
        prior density, up to a constant), which never decreases; ``score``, ``bic`` and
        ``aic`` stay the log-likelihood (at the MAP estimate, as mclust's BIC). The
        resolved values are ``prior_``. ``reg_covar`` is still added (use 0 for mclust's
        fit).

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
    n_passes_ : int
        Full passes over the data the fit made, initialisation included (blocks read by
        the steps of the incremental and online schedules count as a pass per all blocks).
    n_steps_ : int
        M-steps made (several per iteration for the incremental and online schedules).
    n_samples_seen_ : int
        Rows read by the online steps of :meth:`partial_fit` calls (and the online
        ``fit`` they continue).
    pruned_restarts_ : list of int
        Initialisations stopped by ``prune_restarts``.
    n_features_in_ : int
    prior_ : dict or None
        The prior the fit used, every value resolved (``shrinkage``, ``mean``, ``dof``,
        ``scale``); None without a prior.

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import GaussianMixture
    >>> X = np.r_[np.random.default_rng(0).normal(size=(200, 2)), np.random.default_rng(1).normal(5, 1, (200, 2))]
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [0.0, 5.0]
    """

    _FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")
    #: No prior for subclasses whose constructor does not take one (GaussianImputer).
    prior: Any = None

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
        prior: Any = None,
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
        self.prior = prior

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        self._check_mixture_parameters()
        check_missing_policy(self.missing, name)
        check_prior_spec(name, self.prior)
        self._validate_engine_parameters()

    def _model(self) -> GaussianMixtureModel:
        prior = getattr(self, "_resolved_prior", None) if self.prior is not None else None
        return GaussianMixtureModel(self.n_components, self.covariance_type, float(self.reg_covar), self.missing, prior)

    def _resolve_prior(self, session: FitSession) -> GaussianPrior | None:
        """The prior of a fit on ``session``'s data (one pass when the default needs the data)."""
        if self.prior is None:
            self._resolved_prior = None
        else:
            if self.missing == "marginalize" and needs_data(self.prior):
                raise ParameterError(
                    "The default prior reads the data's mean and covariance, which NaN entries leave undefined: give "
                    "the prior's mean and scale (prior={'mean': ..., 'scale': ...}) with missing='marginalize'."
                )
            self._resolved_prior = resolve_prior(
                self.prior,
                self.covariance_type,
                self.n_components,
                session.source.n_features,
                lambda: data_moments(session),
            )
        self.prior_ = None if self._resolved_prior is None else self._resolved_prior.to_dict()
        return self._resolved_prior

    def _partial_model(self, session: FitSession) -> GaussianMixtureModel:
        if self.prior is not None and getattr(self, "_resolved_prior", None) is None:
            self._resolve_prior(session)  # the first batch's moments give the default
        return self._model()

    def _stored_params(self) -> dict[str, Any]:
        params = super()._stored_params()
        if isinstance(self.prior, Mapping):
            params["prior"] = {key: _jsonable(np.asarray(value)) for key, value in self.prior.items()}
        return params

    def _checked_inits(self, n_features: int) -> tuple[Any, Any, Any]:
        k, d = self.n_components, n_features
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = check_shape("weights", self.weights_init, (k,))
            low, high = weights.min(), weights.max()
            if low < 0.0 or high > 1.0:
                raise ParameterError(
                    "The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {high:.5f}, min value {low:.5f}. (scikit-learn's message, which swaps the two, "
                    "reads: The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {low:.5f}, min value {high:.5f}.)"
                )
            # scikit-learn's rule: the sum in the weights' own precision, within 1e-6 for float32
            # weights, 1e-8 otherwise.
            given = np.asarray(self.weights_init)
            total = given.sum(dtype=np.float32) if given.dtype == np.float32 else weights.sum()
            atol = 1e-6 if given.dtype == np.float32 else 1e-8
            if not abs(1.0 - float(total)) <= atol:
                raise ParameterError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = {total:.5f}."
                )
        if self.means_init is not None:
            means = check_shape("means", self.means_init, (k, d))
        if self.precisions_init is not None:
            ct = covariance_type(self.covariance_type)
            precisions = check_shape(f"{self.covariance_type} precision", self.precisions_init, ct.shape(k, d))
            if ct.matrices and not np.allclose(precisions, np.swapaxes(precisions, -1, -2)):
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
        warm = self._check_fit_data(source, self.n_components, "Reduce n_components or pass more rows.")
        self._inits = self._checked_inits(source.n_features)
        # The fitted attributes take the data's precision, as scikit-learn's do: float32 for
        # float32 data (computed in float64 all the same), float64 otherwise.
        self._attribute_dtype = np.dtype(np.float32 if source.array.dtype == np.float32 else np.float64)
        data: Any = source
        if self.missing == "marginalize" or self.prior is not None:
            data = self._session(source)
        if self.missing == "marginalize":
            data.missing_summary()  # a feature missing in every row is refused before anything else
        if self.prior is not None:
            self._resolve_prior(data)
        else:
            self._resolved_prior = self.prior_ = None
        model = self._model()
        self._fit_restarts(model, data, 1 if warm else self.n_init, warm, callback)
        return self

    def partial_fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Update the mixture with the rows of ``X`` by online EM (Cappé & Moulines).

        One online step from all the rows of ``X`` (a mini-batch; ``step_blocks`` and
        ``shuffle`` apply to :meth:`fit`): the running statistics move towards the batch's
        statistics by ``(t + learning_offset) ** -learning_decay`` (the first step takes
        them as they are) and the M-step follows. An in-memory batch is computed on the
        driver, without Dask; a dask array or Zarr batch is read block by block. The first call
        initialises from its ``X`` as
        :meth:`fit` does (``init_params``, ``means_init``, ...) unless the mixture is
        fitted, in which case it starts from the fitted parameters (after an online
        ``fit``, from its running statistics). Calls on the blocks of a dataset in order
        give bitwise the parameters of ``fit`` with ``schedule="online", shuffle=False``
        (one block per step) from the same start.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            A batch of rows.
        y : None
            Ignored.

        Returns
        -------
        self : GaussianMixture
        """
        return self._partial_fit(X)

    def _partial_source(self, X: Any, **kwargs: Any) -> DataSource:
        source = as_source(X, one_block=True)
        self._inits = self._checked_inits(source.n_features)
        self._attribute_dtype = np.dtype(np.float32 if source.array.dtype == np.float32 else np.float64)
        return source

    def _max_init_passes(self, n_init: int) -> int | None:
        if all(given is not None for given in self._inits):
            return 0
        return max_init_passes(self.init_params, n_init)

    def _initial_params(
        self, model: GaussianMixtureModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[GaussianMixtureParams]:
        weights, means, precisions = self._inits
        # Everything given: no pass over the data (scikit-learn skips its k-means too).
        if weights is not None and means is not None and precisions is not None:
            return [model.with_given(None, weights, means, precisions) for _ in rngs]
        if model.missing == "marginalize":
            # The initialisers need whole rows: the rows without a missing entry when there are
            # enough of them, else every row with its missing entries set to the feature's mean.
            enough = session.missing_summary().n_complete >= INIT_COMPLETE_ROWS * model.n_components
            session = session.complete_rows() if enough else session.mean_filled_rows()
        # scikit-learn's own draws for data in memory: a same-seed fit starts where scikit-learn's does.
        legacy = (
            sklearn_random_state(rngs)
            if self.init_params in ("random", "random_from_data")
            and session.source.kind == "numpy"
            and model.missing == "error"
            else None
        )
        bases = initial_params(model, session, self.init_params, rngs, random_state=legacy)
        return [model.with_given(base, weights, means, precisions) for base in bases]

    def _set_params_attributes(self, params: GaussianMixtureParams) -> None:
        ct = covariance_type(self.covariance_type)
        dtype = getattr(self, "_attribute_dtype", np.dtype(np.float64))
        self.weights_ = np.asarray(params.weights, dtype=dtype)
        self.means_ = np.asarray(params.means, dtype=dtype)
        self.covariances_ = np.asarray(params.covariances, dtype=dtype)
        self.precisions_cholesky_ = np.asarray(params.precisions_cholesky, dtype=dtype)
        self.precisions_ = np.asarray(ct.precisions(params.precisions_cholesky), dtype=dtype)
        # The float64 parameters themselves: predictions and warm starts continue from them
        # while the attributes are the ones set here.
        self._fitted_params = (params, self._attributes())

    # -- prediction -----------------------------------------------------------------------

    def _attributes(self) -> tuple[Any, ...]:
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _params(self) -> GaussianMixtureParams:
        kept = getattr(self, "_fitted_params", None)
        attributes = self._attributes()
        if kept is not None and all(a is b for a, b in zip(attributes, kept[1], strict=True)):
            return kept[0]
        return GaussianMixtureParams(*(np.asarray(a, dtype=np.float64) for a in attributes))

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(covariance_type(self.covariance_type).n_cov_parameters(k, d) + k * d + k - 1)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of the fit on ``X`` (lower is better).

        ``-2 log L + p log n`` with the log-likelihood ``L`` of the fitted parameters; with
        a ``prior``, as mclust: the log-likelihood at the MAP estimate (not the posterior),
        and the same parameter count ``p``.

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

        With a ``prior``, the log-likelihood at the MAP estimate, as :meth:`bic`.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        source = as_source(X)
        return float(-2.0 * self.score(source) * source.n_samples + 2 * self._n_parameters())
