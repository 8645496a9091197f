"""``daskem.FastICA`` and ``daskem.fastica``: scikit-learn's FastICA through the EM engine, out of core.

The model, its statistics and the fixed-point step are in :mod:`daskem.models.ica`. A fit
makes one pass of moments (the mean and scatter of the data, for the whitening; none with
``whiten=False``), then one pass per fixed-point iteration, each checkpointed and
resumable like every daskem fit. The start is scikit-learn's: ``w_init``, or a standard
normal (q, q) draw from ``random_state`` (the first draw of a ``RandomState`` instance,
as scikit-learn's).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy import linalg
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from daskem.em.init import data_moments
from daskem.em.monitor import IterationRecord, LikelihoodDecreaseWarning
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import EMEstimator
from daskem.estimators._validation import _fail, check_int, check_option
from daskem.io.sources import as_source
from daskem.models.ica import (
    ALGORITHMS,
    FUNS,
    WHITEN_SOLVERS,
    FastICAModel,
    FastICAParams,
    output_dtype,
    whitening,
)
from daskem.registry import ALGORITHM_HELP, N_COMPONENTS, Option, attribute_summary, register

#: The ``whiten`` settings (besides False).
WHITEN = ("arbitrary-variance", "unit-variance")

#: scikit-learn's warning when the parallel algorithm stops at ``max_iter``.
NOT_CONVERGED = "FastICA did not converge. Consider increasing tolerance or the maximum number of iterations."


def _whiten_option(value: str) -> str | bool:
    """``--whiten false`` is ``whiten=False``."""
    return False if value == "false" else value


@register(
    "fastica",
    description="independent component analysis (scikit-learn's FastICA: fixed-point iterations, one pass each)",
    options=(
        N_COMPONENTS,
        Option(("--algorithm",), "algorithm", ALGORITHM_HELP, kind=str, choices=ALGORITHMS),
        Option(
            ("--whiten",),
            "whiten",
            "FastICA's whitening: unit-variance or arbitrary-variance sources, or false (the data are white).",
            kind=str,
            choices=(*WHITEN, "false"),
            convert=_whiten_option,
        ),
        Option(("--fun",), "fun", "FastICA's contrast function g (its derivative of G).", kind=str, choices=FUNS),
    ),
    summary=attribute_summary("source", [("unmixing (first features)", "components_")], title=("algorithm", "fun")),
    figures=("unmixing",),
    objective="non-Gaussianity: mean |E y g(y) - E g'(y)|",
)
class FastICA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """FastICA (Hyvärinen & Oja 2000) on data of any size: a drop-in for scikit-learn's.

    The same algorithm, steps and numbers as :class:`sklearn.decomposition.FastICA`
    (from the same ``w_init`` each iteration agrees to rounding), run over Dask blocks:
    the whitening from one pass of the data's moments, then one pass per fixed-point
    iteration whose per-block sums ``sum g(W z) z^T`` and ``sum g'(W z)`` are added up
    by the engine's tree reduction; the decorrelation and the convergence test run on
    the driver. The whitened rows ``z`` are never stored: every pass whitens its blocks
    on the fly. Checkpoints, resume, Zarr and dask inputs and the ``daskem`` command
    (``--model fastica``) work as for every daskem estimator.

    Parameters
    ----------
    n_components : int, default=None
        Number of components; None uses ``min(n_samples, n_features)``. Ignored, with
        scikit-learn's warning, when ``whiten=False``.
    algorithm : {"parallel", "deflation"}, default="parallel"
        All components at once (symmetric decorrelation), or one after the other
        (Gram-Schmidt against those found before); each iteration of either is one pass.
    whiten : {"unit-variance", "arbitrary-variance"} or False, default="unit-variance"
        "unit-variance": the sources are scaled to unit variance (their variances come
        from the moments' pass, not from a pass over the sources); "arbitrary-variance":
        not scaled; False: the data are taken as white (not centred either).
    fun : {"logcosh", "exp", "cube"} or callable, default="logcosh"
        The derivative ``g`` of the contrast function. A callable is called on the
        projections of each tile of rows (components by rows, (q, t); for deflation a
        (t,) vector), with ``fun_args`` as keywords, and returns ``g`` of them and the
        mean of ``g'`` over the last axis, as scikit-learn's callables do. A fit with a
        callable cannot be checkpointed or saved (a function is not stored).
    fun_args : dict, default=None
        Keyword arguments of ``fun``; ``alpha`` (of ``logcosh``, default 1) must be in [1, 2].
    max_iter : int, default=200
        Most iterations (deflation: per component).
    tol : float, default=1e-4
        The fit stops when ``max |abs(diag(W1 W^T)) - 1|`` (deflation: that of the
        component) falls below ``tol``.
    w_init : array-like of shape (n_components, n_components), default=None
        The starting unmixing matrix; None draws it standard normal from ``random_state``.
    whiten_solver : {"eigh", "svd"}, default="svd"
        How the whitening decomposes the scatter matrix ``S`` of the centred data (read
        in one pass): "eigh" its eigen-decomposition, small eigenvalues raised to
        ``10 eps`` with scikit-learn's warning; "svd" its singular value decomposition.
        scikit-learn's "svd" decomposes the centred data themselves, which needs them in
        memory; the singular values of ``S`` are their squares and its vectors theirs, so
        both solvers give scikit-learn's whitening to rounding (with its sign convention:
        each vector's first coordinate positive), but "svd" here is no more accurate than
        "eigh" for rank-deficient data.
    random_state : int, RandomState instance or None, default=None
        Seed of the ``w_init`` draw.
    verbose : int, default=0
        1 prints the iteration numbers, 2 also times and changes of the objective.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The unmixing of the centred data: the sources are ``(X - mean_) @ components_.T``.
    mixing_ : ndarray of shape (n_features, n_components)
        The pseudo-inverse of ``components_``.
    mean_ : ndarray of shape (n_features,)
        The data's mean (only with whitening).
    whitening_ : ndarray of shape (n_components, n_features)
        The whitening ``K`` (only with whitening).
    n_iter_ : int
        Iterations (deflation: the most any component ran, as scikit-learn's).
    converged_ : bool
        Whether the convergence measure fell below ``tol`` (deflation: whether every
        component was found, some possibly stopped by ``max_iter``).
    lower_bound_ : float
        The objective of the last iteration, the mean over the components of
        ``|E[y g(y)] - E[g'(y)]|`` for the sources ``y`` under the iteration's start: how
        far from Gaussian they are (0 for Gaussian sources; not monotone, see
        :mod:`daskem.models.ica`); ``lower_bounds_`` for every iteration (deflation: of
        the component iterated).
    n_passes_ : int
        Passes over the data: the moments' pass (with whitening), one per iteration.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import FastICA
    >>> rng = np.random.default_rng(0)
    >>> S = np.c_[np.sign(np.sin(np.linspace(0, 50, 2000))), rng.laplace(size=2000)]
    >>> X = S @ np.array([[1.0, 1.0], [0.5, 2.0]])
    >>> ica = FastICA(n_components=2, random_state=0).fit(X)
    >>> ica.transform(X).shape
    (2000, 2)
    """

    _FITTED = ("components_", "mixing_")
    _WARN_NOT_CONVERGED = False  # the parallel algorithm warns with scikit-learn's message (deflation does not)

    # Engine settings scikit-learn's FastICA has no parameter for: one start, plain iterations.
    n_init: ClassVar[int] = 1  # type: ignore[misc]
    accelerate: ClassVar[None] = None  # type: ignore[misc]
    prune_restarts: ClassVar[bool] = False  # type: ignore[misc]

    def __init__(
        self,
        n_components: int | None = None,
        *,
        algorithm: str = "parallel",
        whiten: str | bool = "unit-variance",
        fun: str | Callable[..., Any] = "logcosh",
        fun_args: dict[str, Any] | None = None,
        max_iter: int = 200,
        tol: float = 1e-4,
        w_init: Any = None,
        whiten_solver: str = "svd",
        random_state: Any = None,
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
        self.algorithm = algorithm
        self.whiten = whiten
        self.fun = fun
        self.fun_args = fun_args
        self.max_iter = max_iter
        self.tol = tol
        self.w_init = w_init
        self.whiten_solver = whiten_solver
        self.random_state = random_state
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    # -- validation and the model ---------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1, none_ok=True)
        check_option(name, "algorithm", self.algorithm, ALGORITHMS)
        if self.whiten is not False and (not isinstance(self.whiten, str) or self.whiten not in WHITEN):
            raise _fail(name, "whiten", "a str among {'arbitrary-variance', 'unit-variance'} or False", self.whiten)
        if not (callable(self.fun) or (isinstance(self.fun, str) and self.fun in FUNS)):
            raise _fail(name, "fun", "a str among {'cube', 'exp', 'logcosh'} or a callable", self.fun)
        if self.fun_args is not None and not isinstance(self.fun_args, dict):
            raise _fail(name, "fun_args", "an instance of 'dict' or None", self.fun_args)
        check_int(name, "max_iter", self.max_iter, 1)
        check_option(name, "whiten_solver", self.whiten_solver, WHITEN_SOLVERS)
        self._validate_engine_parameters()
        alpha = (self.fun_args or {}).get("alpha", 1.0)
        if not 1 <= alpha <= 2:
            raise ParameterError("alpha must be in [1,2]")

    def _model(self) -> FastICAModel:
        deflation = self.algorithm == "deflation"
        return FastICAModel(
            self.algorithm,
            self.fun,
            tuple(sorted((self.fun_args or {}).items())),
            self.whiten,
            float(self.tol) if deflation else None,
            int(self.max_iter) if deflation else None,
        )

    def _engine_max_iter(self) -> int:
        # Deflation runs up to max_iter iterations per component, one after the other.
        components = self._n_components_fit if self.algorithm == "deflation" else 1
        return int(self.max_iter) * components

    def _components_for(self, n_samples: int, n_features: int) -> int:
        """scikit-learn's number of components for the data, with its warnings."""
        n_components = self.n_components
        if not self.whiten and n_components is not None:
            n_components = None
            warnings.warn("Ignoring n_components with whiten=False.", UserWarning, stacklevel=4)
        largest = min(n_samples, n_features)
        if n_components is None:
            return largest
        if n_components > largest:
            warnings.warn(f"n_components is too large: it will be set to {largest}", UserWarning, stacklevel=4)
            return largest
        return int(n_components)

    def _start(self, q: int) -> np.ndarray:
        """``w_init`` checked, or scikit-learn's draw from ``random_state``."""
        if self.w_init is None:
            return np.asarray(check_random_state(self.random_state).normal(size=(q, q)), dtype=np.float64)
        w_init = np.asarray(self.w_init, dtype=np.float64)
        if w_init.shape != (q, q):
            raise ParameterError(f"w_init has invalid shape -- should be {(q, q)}")
        return w_init

    def _init_config(self) -> dict[str, Any]:
        # What decides the start besides the model: a checkpoint resumes only the same.
        w_init = None if self.w_init is None else np.asarray(self.w_init, dtype=np.float64).tolist()
        return {"w_init": w_init, "whiten_solver": self.whiten_solver, "n_components": self._n_components_fit}

    def _stored_params(self) -> dict[str, Any]:
        if callable(self.fun):
            raise ParameterError(
                f"fun={self.fun!r} is a callable, which a checkpoint or model file cannot store: checkpoint or save "
                f"fits with fun='logcosh', 'exp' or 'cube'."
            )
        return super()._stored_params()

    # -- fitting ------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None) -> Any:
        """Fit the unmixing matrix.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array.
        y : None
            Ignored.
        callback : callable, optional
            Called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X)
        n, d = source.n_samples, source.n_features
        if n < 2:
            raise DataError(
                f"Found array with {n} sample(s) (shape=({n}, {d})) while a minimum of 2 is required by FastICA."
            )
        self._n_components_fit = self._components_for(n, d)
        self._dtype = output_dtype(source.array.dtype)
        # Drawn before the engine takes its seed from random_state (scikit-learn's draw is
        # the first one of a RandomState instance).
        self._w_start = self._start(self._n_components_fit)
        session = self._session(source)
        try:
            with warnings.catch_warnings():
                # The objective (the sources' non-Gaussianity) is not monotone.
                warnings.filterwarnings("ignore", category=LikelihoodDecreaseWarning)
                self._fit_restarts(self._model(), session, 1, False, callback)
        finally:
            del self._w_start
        self._set_n_iter()
        if self.algorithm == "parallel" and not self.converged_ and self.n_iter_ >= self.max_iter:
            warnings.warn(NOT_CONVERGED, ConvergenceWarning, stacklevel=2)
        return self

    def _initial_params(self, model: FastICAModel, session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        q, (n, d) = self._n_components_fit, (session.source.n_samples, session.source.n_features)
        if self.whiten:
            mean, covariance = data_moments(session)
            k, whitened = whitening(covariance * (n - 1.0), q, self.whiten_solver)
            return [model.initial_params(self._w_start, k, mean, float(np.sqrt(n)), whitened)]
        return [model.initial_params(self._w_start, np.eye(d), np.zeros(d), 1.0, np.eye(d))]

    def _set_n_iter(self) -> None:
        """Deflation's ``n_iter_`` is scikit-learn's: the most iterations any component ran."""
        if self.algorithm == "deflation":
            self.n_iter_ = int(self._fit_params.iterations.max())  # type: ignore[union-attr]

    def _restored(self) -> None:
        self._set_n_iter()

    def _params(self) -> FastICAParams:
        return self._fit_params

    def _set_params_attributes(self, params: FastICAParams) -> None:
        # Computed in float64, shown in the data's float dtype (float32 stays float32).
        model, dtype = self._model(), getattr(self, "_dtype", np.float64)
        self._fit_params = params
        components = model.components(params)
        self.components_ = components.astype(dtype)
        self._unmixing = model.unmixing(params).astype(dtype)
        self.mixing_ = linalg.pinv(components, check_finite=False).astype(dtype)
        if self.whiten:
            self.mean_ = params.mean.astype(dtype)
            self.whitening_ = params.whitening.astype(dtype)
        else:
            for name in ("mean_", "whitening_"):
                self.__dict__.pop(name, None)

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])

    # -- the fitted model -----------------------------------------------------------------

    def _check_copy(self, copy: Any) -> None:
        if not isinstance(copy, bool | np.bool_):
            raise _fail(type(self).__name__, "copy", "an instance of 'bool'", copy)

    def transform(self, X: Any, copy: bool = True) -> Any:
        """The sources of the rows of ``X``: ``(X - mean_) @ components_.T``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        copy : bool, default=True
            scikit-learn's: ``copy=False`` lets it overwrite ``X``. daskem never
            modifies ``X``, so both give the same.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        self._check_copy(copy)
        return self._per_row(X, "transform", columns=self._n_features_out, dtype_for=output_dtype)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the sources of ``X`` (one more pass).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any, copy: bool = True) -> Any:
        """Rows from sources: ``X @ mixing_.T + mean_``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_components)
            Sources.
        copy : bool, default=True
            As for :meth:`transform`.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_features)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        self._check_copy(copy)
        self._check_fitted()
        source = as_source(X)
        if source.n_features != self._n_features_out:
            raise DataError(
                f"X has {source.n_features} features, but {type(self).__name__}.inverse_transform is expecting "
                f"{self._n_features_out} sources as input."
            )
        return self._prediction_session(source).map_rows(
            self._model(),
            "inverse_transform",
            self._params(),
            dtype=output_dtype(source.array.dtype),
            columns=self.n_features_in_,
        )


def fastica(
    X: Any,
    n_components: int | None = None,
    *,
    algorithm: str = "parallel",
    whiten: str | bool = "unit-variance",
    fun: str | Callable[..., Any] = "logcosh",
    fun_args: dict[str, Any] | None = None,
    max_iter: int = 200,
    tol: float = 1e-04,
    w_init: Any = None,
    whiten_solver: str = "svd",
    random_state: Any = None,
    return_X_mean: bool = False,
    compute_sources: bool = True,
    return_n_iter: bool = False,
) -> list[Any]:
    """Independent component analysis by :class:`FastICA` (scikit-learn's ``fastica``).

    Parameters
    ----------
    X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
        The data.
    n_components, algorithm, whiten, fun, fun_args, max_iter, tol, w_init, whiten_solver, random_state
        As for :class:`FastICA`.
    return_X_mean : bool, default=False
        Also return the data's mean (None without whitening).
    compute_sources : bool, default=True
        Return the sources (one more pass); None otherwise.
    return_n_iter : bool, default=False
        Also return the number of iterations.

    Returns
    -------
    list
        ``[K, W, S]`` (the whitening, None without it; the unmixing of the whitened
        data; the sources), then the mean and the iterations if asked.
    """
    est = FastICA(
        n_components=n_components,
        algorithm=algorithm,
        whiten=whiten,
        fun=fun,
        fun_args=fun_args,
        max_iter=max_iter,
        tol=tol,
        w_init=w_init,
        whiten_solver=whiten_solver,
        random_state=random_state,
    )
    est.fit(X)
    sources = est.transform(X) if compute_sources else None
    K, mean = (est.whitening_, est.mean_) if est.whiten else (None, None)
    returned = [K, est._unmixing, sources]
    if return_X_mean:
        returned.append(mean)
    if return_n_iter:
        returned.append(est.n_iter_)
    return returned
