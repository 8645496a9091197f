"""FastICA (Hyvärinen & Oja 2000) as fixed-point iterations over blocks, out of core.

scikit-learn's algorithm (``sklearn.decomposition.FastICA``), its steps one for one. The
rows are whitened once: with the data's mean ``m`` and scatter ``S = sum (x - m)(x - m)^T``
(one pass of moments), ``S = U diag(d^2) U^T`` with each eigenvector's sign set so that its
first coordinate is positive, and the whitening ``K = (U / d)^T`` keeps the leading
``q`` rows. The whitened rows ``z = sqrt(n) K (x - m)`` have unit covariance; they are
never stored: every E-step whitens its block on the fly (``K``, ``m`` and ``sqrt(n)`` are
part of the parameters sent to the workers). With ``whiten=False`` the rows are taken as
they are (``K = I``, ``m = 0``, no scaling), as scikit-learn does.

One iteration is one pass. With ``W`` the current unmixing matrix (q, q) and
``y = W z`` the projections of a row, each block adds up::

    cross = sum g(y) z^T   (q, q),      slope = sum g'(y)   (q,)

(``g`` the derivative of the contrast function ``G``: ``tanh`` for ``logcosh``, ...), and
the driver takes scikit-learn's fixed-point step from the sums:

* parallel: ``W1 = sym(cross / n - diag(slope / n) W)`` with the symmetric decorrelation
  ``sym(A) = (A A^T)^(-1/2) A``; the fit stops when
  ``max_i | |(W1 W^T)_ii| - 1 | < tol`` (scikit-learn's measure);
* deflation: one component at a time, in order. Component ``j`` iterates
  ``w1 = cross / n - (slope / n) w``, made orthogonal to the ``j`` components found before
  it (Gram-Schmidt) and normalised, until ``| |w1 . w| - 1 | < tol`` or ``max_iter``
  iterations; the next component starts from its row of ``w_init``, normalised. Each of
  these iterations is one pass, in which the blocks compute the sums of the one
  component ``w`` only (``cross`` (1, q), ``slope`` (1,)).

FastICA maximises no likelihood, and its negentropy approximation needs ``G``, which a
user's own ``g`` does not give. The objective the engine records for each iteration is
the mean over the components iterated of ``|E[y g(y)] - E[g'(y)]|`` under the
iteration's ``W``, read from the same sums (``E[y g(y)]`` is ``w . cross / n``): by Stein's
identity it is 0 for a Gaussian ``y`` of unit variance, and it measures how far from
Gaussian the sources are (for ``cube``, ``|E[y^4] - 3|``, the excess kurtosis). It
usually rises as the fit converges, but not monotonically (FastICA is no ascent method),
so the engine's decrease warning does not apply. It stays well conditioned near
convergence, unlike the convergence measure, a difference of numbers close to 1.

Per tile of rows, the E-step is two BLAS products, ``y = (x - m) A^T`` with
``A = sqrt(n) W K`` folded on the driver (so the whitened rows are never formed) and
``g(y)^T (x - m)`` (mapped to the whitened coordinates by ``K^T`` once per block), and one
compiled loop for ``g`` and ``g'`` (:mod:`daskem.models.ica_kernels`); a callable ``fun``
is called per tile with the projections laid out as scikit-learn lays them out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from daskem.errors import ParameterError
from daskem.models.base import check_width
from daskem.models.gaussian import FloatArray, check_shape, scratch

#: The named contrast functions (scikit-learn's).
FUNS = ("logcosh", "exp", "cube")

#: How the components are found: all at once (symmetric decorrelation) or one by one.
ALGORITHMS = ("parallel", "deflation")

#: How the whitening is computed from the scatter matrix.
WHITEN_SOLVERS = ("eigh", "svd")

#: Rows per tile of the E-step.
TILE_ROWS = 4096

#: scikit-learn's warning when the scatter matrix has (numerically) zero eigenvalues.
SMALL_EIGENVALUES = (
    "There are some small singular values, using whiten_solver = 'svd' might lead to more accurate results."
)


def sym_decorrelation(w: FloatArray) -> FloatArray:
    """``(W W^T)^(-1/2) W`` (scikit-learn's ``_sym_decorrelation``, the same operations)."""
    s, u = linalg.eigh(np.dot(w, w.T))
    s = np.clip(s, a_min=np.finfo(w.dtype).tiny, a_max=None)
    return np.asarray(np.linalg.multi_dot([u * (1.0 / np.sqrt(s)), u.T, w]))


def gs_decorrelation(w: FloatArray, basis: FloatArray, j: int) -> FloatArray:
    """``w`` made orthogonal to the first ``j`` rows of ``basis`` (orthonormal rows), a new array."""
    if j == 0:
        return w.copy()
    return np.asarray(w - np.linalg.multi_dot([w, basis[:j].T, basis[:j]]))


def whitening(scatter: FloatArray, n_components: int, solver: str) -> tuple[FloatArray, FloatArray]:
    """scikit-learn's whitening ``K`` (q, d) from the scatter matrix, and ``K S K^T`` (q, q).

    ``solver="eigh"``: the eigenvalues of the scatter below ``10 eps`` are raised to it,
    with scikit-learn's warning. ``"svd"``: the singular value decomposition of the
    scatter (for a symmetric positive semi-definite matrix, its eigen-decomposition,
    sorted); scikit-learn's ``"svd"`` decomposes the centred data instead, whose squared
    singular values these are. Each eigenvector's sign makes its first coordinate positive.
    """
    if solver == "eigh":
        d, u = linalg.eigh(scatter)
        order = np.argsort(d)[::-1]
        eps = np.finfo(d.dtype).eps * 10
        degenerate = d < eps
        if np.any(degenerate):
            warnings.warn(SMALL_EIGENVALUES, UserWarning, stacklevel=3)
        d[degenerate] = eps
        d, u = np.sqrt(d)[order], u[:, order]
    else:
        u, s, _ = linalg.svd(scatter, check_finite=False)
        d = np.sqrt(s)
    u *= np.sign(u[0])
    k = (u / d).T[:n_components]
    return np.ascontiguousarray(k), k @ scatter @ k.T


@dataclass(frozen=True)
class FastICAParams:
    """The unmixing matrix and the whitening it applies to.

    Attributes
    ----------
    unmixing : ndarray of shape (q, q)
        ``W`` in whitened coordinates. Deflation: rows before ``finished`` are the
        components found, row ``finished`` the one being iterated (normalised), the later
        rows still their ``w_init`` rows.
    whitening : ndarray of shape (q, d)
        scikit-learn's ``whitening_`` ``K`` (the identity without whitening).
    mean : ndarray of shape (d,)
        The data's mean (zeros without whitening).
    scale : float
        The factor of the whitened rows: ``sqrt(n_samples)`` (1 without whitening).
    covariance : ndarray of shape (q, q)
        The covariance of the whitened rows ``scale K (x - mean)``: ``K S K^T`` for the
        scatter ``S``, the identity to rounding (not where ``eigh`` raised eigenvalues).
    iterations : ndarray of shape (q,) or None
        Deflation: the iterations each component has run (None for the parallel algorithm).
    finished : int
        Deflation: the components found so far (``q`` when the fit is done).
    """

    unmixing: FloatArray
    whitening: FloatArray
    mean: FloatArray
    scale: float
    covariance: FloatArray
    iterations: FloatArray | None = field(default=None)
    finished: int = 0

    def to_arrays(self) -> dict[str, FloatArray]:
        """The parameters as named arrays (``scale`` and ``finished`` of shape (1,))."""
        arrays = {
            "unmixing": self.unmixing,
            "whitening": self.whitening,
            "mean": self.mean,
            "scale": np.array([self.scale]),
            "covariance": self.covariance,
        }
        if self.iterations is not None:
            arrays["iterations"] = self.iterations
            arrays["finished"] = np.array([float(self.finished)])
        return arrays


@dataclass(frozen=True)
class FastICAStats:
    """The sums of one fixed-point step (see the module docstring).

    Attributes
    ----------
    n : float
        Rows seen.
    n_nonfinite : int
        NaN or infinite values seen.
    unmixing : ndarray of shape (q, q)
        The ``W`` the sums were taken under.
    component : int
        Deflation: the component iterated (-1 for the parallel algorithm).
    cross : ndarray of shape (r, q)
        ``sum g(y) z^T`` (``r = q`` for the parallel algorithm, 1 for deflation).
    slope : ndarray of shape (r,)
        ``sum g'(y)``.
    """

    n: float
    n_nonfinite: int
    unmixing: FloatArray = field(repr=False)
    component: int
    cross: FloatArray = field(repr=False)
    slope: FloatArray = field(repr=False)

    @property
    def loglik(self) -> float:
        """The engine's objective times ``n``: the mean over the components iterated of
        ``|sum y g(y) - sum g'(y)|`` (0 for no rows; see the module docstring)."""
        if self.n == 0:
            return 0.0
        active = self.unmixing if self.component < 0 else self.unmixing[self.component : self.component + 1]
        return float(np.abs(np.einsum("ij,ij->i", self.cross, active) - self.slope).mean())


def parallel_measure(new: FloatArray, old: FloatArray) -> float:
    """scikit-learn's convergence measure of a parallel step, ``max_i | |(W1 W^T)_ii| - 1 |``."""
    return float(max(abs(abs(np.einsum("ij,ij->i", new, old)) - 1)))


def fixed_point(stats: FastICAStats) -> tuple[FloatArray, float]:
    """scikit-learn's fixed-point step from the sums: the new ``W1`` (parallel) or ``w1``
    (deflation, normalised and orthogonal to the components before it) and the convergence
    measure of the step."""
    w = stats.unmixing
    n = stats.n
    if stats.component < 0:
        new = sym_decorrelation(stats.cross / n - (stats.slope / n)[:, np.newaxis] * w)
        return new, parallel_measure(new, w)
    j = stats.component
    row = gs_decorrelation(stats.cross[0] / n - (stats.slope[0] / n) * w[j], w, j)
    row /= np.sqrt((row**2).sum())
    return row, float(np.abs(np.abs((row * w[j]).sum()) - 1))


def output_dtype(dtype: Any) -> type[np.floating[Any]]:
    """float32 for float32 data (scikit-learn keeps it), float64 otherwise; computations are float64."""
    return np.float32 if np.dtype(dtype) == np.float32 else np.float64


def _fun_name(fun: Any) -> str:
    if isinstance(fun, str):
        return fun
    return f"callable {getattr(fun, '__module__', '?')}.{getattr(fun, '__qualname__', repr(fun))}"


@dataclass(frozen=True)
class FastICAModel:
    """FastICA's fixed-point iteration as an engine model.

    Parameters
    ----------
    algorithm : {"parallel", "deflation"}
        All components at once, or one by one.
    fun : {"logcosh", "exp", "cube"} or callable
        ``g``; a callable takes the projections (components by rows, scikit-learn's layout:
        (q, t) for the parallel algorithm, (t,) for deflation) and the ``fun_args`` as
        keywords and returns ``g`` of them and the mean of ``g'`` over the rows.
    fun_args : tuple of (str, object)
        The keyword arguments of ``fun`` (``alpha`` of ``logcosh``, default 1).
    whiten : {"unit-variance", "arbitrary-variance"} or False
        How :meth:`components` scales the sources.
    tol : float or None
        Deflation: a component stops when its measure falls below ``tol`` (None for the
        parallel algorithm: the engine's ``tol`` decides, through :meth:`converged`).
    max_iter : int or None
        Deflation: the most iterations of one component (None for the parallel algorithm).
    """

    algorithm: str = "parallel"
    fun: str | Callable[..., Any] = "logcosh"
    fun_args: tuple[tuple[str, Any], ...] = ()
    whiten: str | bool = "unit-variance"
    tol: float | None = None
    max_iter: int | None = None

    #: What to do when the statistics are not finite (see daskem.em.checks.check_stats).
    numerical_advice = "g of the projections overflows float64: scale the features or choose fun='logcosh'."

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ParameterError(f"The algorithm must be one of {list(ALGORITHMS)}; got {self.algorithm!r}.")
        if not (callable(self.fun) or self.fun in FUNS):
            raise ParameterError(f"fun must be one of {list(FUNS)} or a callable; got {self.fun!r}.")
        if self.algorithm == "deflation" and (self.tol is None or self.max_iter is None):
            raise ParameterError("The deflation algorithm needs its per-component tol and max_iter.")

    @property
    def alpha(self) -> float:
        """``logcosh``'s ``alpha`` (1 unless ``fun_args`` give it)."""
        return float(dict(self.fun_args).get("alpha", 1.0))

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values (a callable ``fun`` by its name)."""
        spec: dict[str, Any] = {
            "model": "fastica",
            "algorithm": self.algorithm,
            "fun": _fun_name(self.fun),
            "fun_args": {key: repr(value) for key, value in self.fun_args},
            "whiten": self.whiten,
        }
        if self.algorithm == "deflation":
            spec.update(tol=float(self.tol), max_iter=int(self.max_iter))  # type: ignore[arg-type]
        return spec

    # -- parameters ---------------------------------------------------------------------

    def initial_params(self, w_init: Any, whitening: Any, mean: Any, scale: float, covariance: Any) -> FastICAParams:
        """The first parameters from ``w_init`` (q, q), as scikit-learn starts.

        Parallel: ``W = sym(w_init)``. Deflation: the first row normalised, the others as given.
        """
        w = np.array(w_init, dtype=np.float64)
        if self.algorithm == "parallel":
            return self._params(sym_decorrelation(w), whitening, mean, scale, covariance)
        w[0] /= np.sqrt((w[0] ** 2).sum())
        return self._params(w, whitening, mean, scale, covariance, np.zeros(w.shape[0]), 0)

    def _params(
        self,
        unmixing: Any,
        whitening: Any,
        mean: Any,
        scale: float,
        covariance: Any,
        iterations: Any = None,
        finished: int = 0,
    ) -> FastICAParams:
        w = np.asarray(unmixing, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ParameterError(f"The parameter 'unmixing' should be a square matrix, but got shape {w.shape}.")
        q = w.shape[0]
        k = np.asarray(whitening, dtype=np.float64)
        if k.ndim != 2 or k.shape[0] != q:
            raise ParameterError(f"The parameter 'whitening' should have {q} rows, but got shape {k.shape}.")
        d = k.shape[1]
        steps = None if iterations is None else check_shape("iterations", iterations, (q,))
        return FastICAParams(
            w,
            k,
            check_shape("mean", mean, (d,)),
            float(scale),
            check_shape("covariance", covariance, (q, q)),
            steps,
            int(finished),
        )

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> FastICAParams:
        """Rebuild parameters from :meth:`FastICAParams.to_arrays` output, checking shapes."""
        deflation = self.algorithm == "deflation"
        return self._params(
            arrays["unmixing"],
            arrays["whitening"],
            arrays["mean"],
            float(check_shape("scale", arrays["scale"], (1,))[0]),
            arrays["covariance"],
            arrays["iterations"] if deflation else None,
            int(check_shape("finished", arrays["finished"], (1,))[0]) if deflation else 0,
        )

    # -- the contract -------------------------------------------------------------------

    def _active(self, params: FastICAParams) -> tuple[FloatArray, int]:
        """The rows of ``W`` the pass iterates and the stats' ``component`` (-1: all)."""
        if self.algorithm == "parallel":
            return params.unmixing, -1
        j = min(params.finished, params.unmixing.shape[0] - 1)
        return params.unmixing[j : j + 1], j

    def zero_stats(self, params: FastICAParams) -> FastICAStats:
        """The sums of no rows."""
        active, component = self._active(params)
        r, q = active.shape
        return FastICAStats(0.0, 0, params.unmixing, component, np.zeros((r, q)), np.zeros(r))

    def combine(self, a: FastICAStats, b: FastICAStats) -> FastICAStats:
        """Sum the statistics of two disjoint sets of rows (taken under the same ``W``)."""
        return FastICAStats(
            a.n + b.n, a.n_nonfinite + b.n_nonfinite, a.unmixing, a.component, a.cross + b.cross, a.slope + b.slope
        )

    def log_likelihood(self, stats: FastICAStats) -> float:
        """The objective, the sources' departure from Gaussianity, times the rows (``stats.loglik``)."""
        return stats.loglik

    def e_step(self, params: FastICAParams, block: NDArray[Any]) -> FastICAStats:
        """The block's ``sum g(y) z^T`` and ``sum g'(y)`` under ``params`` (whitened on the fly)."""
        check_width(block, params.mean.shape[0])
        n, d = block.shape
        active, component = self._active(params)
        r = active.shape[0]
        # y = scale W K (x - m): one (r, d) matrix for the block.
        fold = np.ascontiguousarray(params.scale * (active @ params.whitening))
        cross = np.zeros((r, d))
        slope = np.zeros(r)
        t = max(1, min(TILE_ROWS, n))
        x_buf, y_buf = np.empty(t * d), np.empty(t * r)
        named = isinstance(self.fun, str)
        if named:
            from daskem.models.ica_kernels import contrast_tile

            kind, alpha = FUNS.index(str(self.fun)), self.alpha
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, n, t):
                rows = min(t, n - start)
                x = scratch(x_buf, (rows, d))
                np.subtract(block[start : start + rows], params.mean, out=x)
                if named:
                    y = np.matmul(x, fold.T, out=scratch(y_buf, (rows, r)))
                    contrast_tile(y, kind, alpha, slope)
                    cross += y.T @ x
                else:
                    g, slope_sum = self._call(fold @ x.T, rows)
                    slope += slope_sum
                    cross += g @ x
            whitened = params.scale * (cross @ params.whitening.T)
            finite = np.all(np.isfinite(whitened)) and np.all(np.isfinite(slope))
        n_nonfinite = 0 if finite else int(block.size - np.count_nonzero(np.isfinite(block)))
        return FastICAStats(float(n), n_nonfinite, params.unmixing, component, whitened, slope)

    def _call(self, y: FloatArray, rows: int) -> tuple[FloatArray, FloatArray]:
        """A callable ``fun`` on the projections (r, t): ``g`` as (r, t) and ``sum g'`` per row of ``y``.

        Deflation passes (t,) projections and takes the mean of whatever ``g'`` the
        callable returns, as scikit-learn does.
        """
        r = y.shape[0]
        name = _fun_name(self.fun)
        arg = y if self.algorithm == "parallel" else y[0]
        out = self.fun(arg, **dict(self.fun_args))  # type: ignore[operator]
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise ParameterError(
                f"fun={name} must return a tuple (g(x), mean of g'(x) over the last axis); it returned "
                f"{type(out).__name__}."
            )
        g, mean = np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float64)
        if g.shape != arg.shape or (self.algorithm == "parallel" and mean.shape != (r,)):
            raise ParameterError(
                f"fun={name} returned shapes {g.shape} and {mean.shape} for projections of shape {arg.shape}: "
                f"g(x) must have the shape of x and the mean of g'(x) one value per row of x."
            )
        if self.algorithm == "parallel":
            return g, mean * rows
        return g.reshape(1, rows), np.array([mean.mean() * rows])

    def m_step(self, stats: FastICAStats, params: FastICAParams | None) -> FastICAParams:
        """scikit-learn's fixed-point step (see the module docstring).

        Deflation: when the component's measure falls below ``tol`` or it has run
        ``max_iter`` iterations, it is kept and the next one starts from its ``w_init``
        row, normalised.
        """
        if params is None:
            raise ParameterError("FastICA's M-step continues from parameters: start from initial_params().")
        new, measure = fixed_point(stats)
        if stats.component < 0:
            return replace(params, unmixing=new)
        j = stats.component
        unmixing, iterations = params.unmixing.copy(), params.iterations.copy()  # type: ignore[union-attr]
        unmixing[j] = new
        iterations[j] += 1
        finished = params.finished
        if measure < self.tol or iterations[j] >= self.max_iter:  # type: ignore[operator]
            finished = j + 1
            if finished < unmixing.shape[0]:
                unmixing[finished] /= np.sqrt((unmixing[finished] ** 2).sum())
        return replace(params, unmixing=unmixing, iterations=iterations, finished=finished)

    def converged(self, stats: FastICAStats, params: FastICAParams, new_params: FastICAParams, tol: float) -> bool:
        """Parallel: scikit-learn's rule, the step's measure below ``tol``. Deflation: every
        component is found. Unmoved parameters have converged."""
        if np.array_equal(params.unmixing, new_params.unmixing) and params.finished == new_params.finished:
            return True
        if self.algorithm == "deflation":
            return new_params.finished == new_params.unmixing.shape[0]
        return parallel_measure(new_params.unmixing, params.unmixing) < tol

    # -- the fitted model ---------------------------------------------------------------

    def components(self, params: FastICAParams) -> FloatArray:
        """scikit-learn's ``components_`` (q, d): the unmixing of the centred data.

        ``"unit-variance"`` divides each row of ``W`` by its source's standard deviation,
        ``sqrt(w C w^T / n)`` for the covariance ``C`` of the whitened rows (from the
        moments, not from a pass over the sources: scikit-learn computes it from them).
        A variance that rounding makes negative (directions of rank-deficient data, whose
        eigenvalues ``eigh`` raised) is taken as the smallest positive float.
        """
        return np.asarray(self.unmixing(params) @ params.whitening)

    def unmixing(self, params: FastICAParams) -> FloatArray:
        """scikit-learn's private ``_unmixing`` (q, q): ``W``, scaled for ``"unit-variance"``."""
        w = params.unmixing
        if self.whiten == "unit-variance":
            variance = np.maximum(np.einsum("ij,jk,ik->i", w, params.covariance, w), np.finfo(np.float64).tiny)
            deviation = np.sqrt(variance) / params.scale
            return np.asarray(w / deviation[:, np.newaxis])
        return np.asarray(w)

    def transform(self, params: FastICAParams, block: NDArray[Any]) -> NDArray[Any]:
        """The sources of the rows of ``block``: ``(x - mean) components^T``, shape (n, q).

        Computed in float64, returned in :func:`output_dtype` of the block.
        """
        sources = np.dot(np.asarray(block, dtype=np.float64) - params.mean, self.components(params).T)
        return np.asarray(sources, dtype=output_dtype(block.dtype))

    def inverse_transform(self, params: FastICAParams, block: NDArray[Any]) -> NDArray[Any]:
        """Rows from sources (n, q): ``sources mixing^T + mean``, ``mixing`` the pseudo-inverse of
        :meth:`components`; in :func:`output_dtype` of the block."""
        mixing = linalg.pinv(self.components(params), check_finite=False)
        rows = np.dot(np.asarray(block, dtype=np.float64), mixing.T) + params.mean
        return np.asarray(rows, dtype=output_dtype(block.dtype))
