"""Gaussian building blocks shared by every model with Gaussian components.

Covariance types are a lookup table of plain functions (:data:`COVARIANCE_TYPES`), the
way scikit-learn's ``sklearn/mixture`` does it, not a class hierarchy. Shapes, as in
scikit-learn, for ``k`` components and ``d`` features:

============  ===================  =================================
type          covariances          precisions_cholesky
============  ===================  =================================
full          (k, d, d)            (k, d, d), precision = L @ L.T
tied          (d, d)               (d, d)
diag          (k, d)               (k, d), precision = L ** 2
spherical     (k,)                 (k,)
============  ===================  =================================

Numerics: data are centred on a reference point ``c`` before anything else, so data far
from the origin lose no precision; precisions are kept as Cholesky factors and no
covariance is ever inverted; log-determinants come from the factors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from daskem.errors import NumericalError, ParameterError

FloatArray = NDArray[np.float64]

LOG_2PI = float(np.log(2.0 * np.pi))


#: scikit-learn's text for a covariance that is not positive definite (its tests match it).
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def _singular_message(component: int | None, reg_covar: float) -> str:
    where = "the tied covariance" if component is None else f"the covariance of component {component}"
    return (
        f"{ILL_DEFINED_COVARIANCE} Here {where} is not positive definite (it collapsed onto too few "
        f"distinct points, or features are constant or collinear) with reg_covar={reg_covar!r}. "
        "Increase reg_covar (e.g. reg_covar=1e-3), reduce n_components, or scale the features."
    )


def _chol_precision_from_cov(cov: FloatArray, component: int | None, reg_covar: float) -> FloatArray:
    try:
        cov_chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError:
        raise NumericalError(_singular_message(component, reg_covar)) from None
    except ValueError:  # scipy: "array must not contain infs or NaNs"
        where = "the tied covariance" if component is None else f"the covariance of component {component}"
        raise NumericalError(
            f"{where} is not finite: the data's squares overflow float64. Scale the features (e.g. standardise them)."
        ) from None
    d = cov.shape[0]
    return np.asarray(linalg.solve_triangular(cov_chol, np.eye(d), lower=True).T)


def _chol_precision_from_precision(prec: FloatArray, component: int | None) -> FloatArray:
    try:
        return np.asarray(linalg.cholesky(prec, lower=True))
    except linalg.LinAlgError:
        kind, where = ("tied", "precisions_init") if component is None else ("full", f"precisions_init[{component}]")
        raise NumericalError(
            f"'{kind} precision' should be symmetric, positive-definite: {where} is not symmetric positive "
            "definite; pass a valid precision matrix."
        ) from None


def _cov_from_chol_precision(prec_chol: FloatArray) -> FloatArray:
    # covariance = (L L^T)^-1 = L^-T L^-1, through a triangular solve, not an inverse.
    d = prec_chol.shape[0]
    inv = np.asarray(linalg.solve_triangular(prec_chol, np.eye(d), lower=True))
    return np.asarray(inv.T @ inv)


MapCovariance = Callable[[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, float], FloatArray]


@dataclass(frozen=True)
class CovarianceType:
    """The functions that make up one covariance type.

    Attributes
    ----------
    name : str
        ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
    moment_shape : callable
        ``(k, d) -> shape`` of the second-moment statistic.
    whitening : callable
        ``(prec_chol, offsets, d) -> (matrix, bias)`` of :class:`Whitener`.
    second_moment : callable
        ``(xt, resp, offsets, out, first, work)``: adds the second-moment statistic of a
        feature-major tile ``xt`` (d, t), centred on the reference, weighted by
        responsibilities ``resp`` (k, t), to ``out``, and the first moments to ``first``
        (k, d); each component's moments are taken around its own centre (``offsets``
        (k, d) from the reference), so components far from the reference lose nothing to
        cancellation; ``work`` is an optional scratch buffer of at least k * d * t floats
        of the tile's dtype.
    covariance : callable
        Covariances from the statistics (see :func:`covariances_from_moments`).
    shape : callable
        ``(k, d) -> shape`` of the covariances (and of their precision Cholesky factors).
    matrices : bool
        Whether the covariances are d x d matrices (full, tied) rather than variances.
    shared : bool
        Whether all components share one covariance (tied).
    to_full : callable
        ``(covariances, k, d) -> (k, d, d)`` matrices, one per component.
    from_full : callable
        ``(matrix (d, d), k) -> covariances`` of this type from one matrix for every
        component (its diagonal, or the mean of its diagonal, where the type keeps less).
    map_covariance : callable
        ``(scatter, nk, r, w, diff, prior, weight) -> covariances``: the MAP covariances
        under hmmlearn's priors (scale ``prior``, weight ``weight``) from the maximum-
        likelihood ``scatter`` of :attr:`covariance`, the responsibility sums ``nk``
        (floored) and ``r``, the means' prior weights ``w`` and the means' offsets from
        their prior ``diff`` (k, d).
    moment_from_residuals : bool
        Whether the E-step takes the second moments from the squared whitened residuals
        ``(p_k (x - mu_k))^2`` it has already computed (diagonal factors ``p_k``: divide by
        ``p_k^2`` once per block), instead of calling ``second_moment``.
    """

    name: str
    moment_shape: Callable[[int, int], tuple[int, ...]]
    precision_cholesky: Callable[[FloatArray, float], FloatArray]
    precision_cholesky_from_precisions: Callable[[FloatArray], FloatArray]
    covariance_from_precision_cholesky: Callable[[FloatArray], FloatArray]
    precisions: Callable[[FloatArray], FloatArray]
    log_det: Callable[[FloatArray, int], FloatArray]
    n_cov_parameters: Callable[[int, int], int]
    whitening: Callable[[FloatArray, FloatArray, int], tuple[FloatArray, FloatArray]]
    second_moment: Callable[[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray | None], None]
    covariance: Callable[[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, float], FloatArray]
    shape: Callable[[int, int], tuple[int, ...]]
    matrices: bool
    shared: bool
    to_full: Callable[[FloatArray, int, int], FloatArray]
    from_full: Callable[[FloatArray, int], FloatArray]
    map_covariance: MapCovariance
    moment_from_residuals: bool = False

    def min_eigenvalue(self, covariances: FloatArray) -> float:
        """The smallest eigenvalue among the covariances (a variance for diag and spherical)."""
        if not self.matrices:
            return float(np.min(covariances))
        sym = (covariances + np.swapaxes(covariances, -1, -2)) / 2
        return float(np.min(np.linalg.eigvalsh(sym)))

    def eigenvalues(self, covariances: FloatArray, n_features: int) -> FloatArray:
        """The ``n_features`` eigenvalues of every distinct covariance: ``(1, d)`` for tied,
        else ``(k, d)`` (a spherical variance ``d`` times, the diagonal's variances)."""
        if self.matrices:
            sym = (covariances + np.swapaxes(covariances, -1, -2)) / 2
            return np.asarray(np.linalg.eigvalsh(sym), dtype=np.float64).reshape(-1, n_features)
        values = np.asarray(covariances, dtype=np.float64).reshape(covariances.shape[0], -1)
        return np.asarray(np.broadcast_to(values, (values.shape[0], n_features)), dtype=np.float64)


# --- precision Cholesky factors -------------------------------------------------------


def _full_prec_chol(cov: FloatArray, reg: float) -> FloatArray:
    return np.stack([_chol_precision_from_cov(c, i, reg) for i, c in enumerate(cov)])


def _tied_prec_chol(cov: FloatArray, reg: float) -> FloatArray:
    return _chol_precision_from_cov(cov, None, reg)


def _diagonal_prec_chol(cov: FloatArray, reg: float) -> FloatArray:
    bad = np.flatnonzero(np.reshape(~(cov > 0.0), (cov.shape[0], -1)).any(axis=1))
    if bad.size:
        raise NumericalError(_singular_message(int(bad[0]), reg))
    return np.asarray(1.0 / np.sqrt(cov))


def _full_from_prec(prec: FloatArray) -> FloatArray:
    return np.stack([_chol_precision_from_precision(p, i) for i, p in enumerate(prec)])


def _tied_from_prec(prec: FloatArray) -> FloatArray:
    return _chol_precision_from_precision(prec, None)


def _diagonal_from_prec(prec: FloatArray) -> FloatArray:
    if not np.all(prec > 0.0):
        kind = "spherical" if prec.ndim == 1 else "diag"
        raise NumericalError(
            f"'{kind} precision' should be positive: precisions_init must be strictly positive for this "
            "covariance_type."
        )
    return np.asarray(np.sqrt(prec))


# --- whitening: residuals L_k^T (x - mu_k) of a centred feature-major tile ---------------------
#
# Tiles are feature-major, (d, t): every elementwise step then runs along t, a long
# contiguous axis, instead of along d (16 wide), which is what makes it fast.


def _full_whitening(prec_chol: FloatArray, offsets: FloatArray, d: int) -> tuple[FloatArray, FloatArray]:
    # One (k*d, d) matrix of all L_k^T stacked: the E-step of all components is one BLAS product.
    k = offsets.shape[0]
    stacked = np.ascontiguousarray(prec_chol.transpose(0, 2, 1).reshape(k * d, d))
    return stacked, np.einsum("kd,kde->ke", offsets, prec_chol)


def _tied_whitening(prec_chol: FloatArray, offsets: FloatArray, d: int) -> tuple[FloatArray, FloatArray]:
    k = offsets.shape[0]
    return _full_whitening(np.broadcast_to(prec_chol, (k, d, d)), offsets, d)


def _diag_whitening(prec_chol: FloatArray, offsets: FloatArray, d: int) -> tuple[FloatArray, FloatArray]:
    # Diagonal factors are kept as (k, d) scales; applied elementwise, not by a product.
    scales = np.broadcast_to(prec_chol.reshape(prec_chol.shape[0], -1), offsets.shape)
    return np.ascontiguousarray(scales), offsets * scales


# --- second moments of a centred feature-major tile, accumulated into ``out`` ------------------


def scratch(work: FloatArray | None, shape: tuple[int, ...]) -> FloatArray:
    """A contiguous ``shape`` view of the front of a reusable buffer (new if ``work`` is None)."""
    if work is None:
        return np.empty(shape)
    return work.reshape(-1)[: int(np.prod(shape))].reshape(shape)


def _centred_components(xt: FloatArray, offsets: FloatArray, work: FloatArray | None) -> FloatArray:
    """``x - mu_k`` for every component: the tile (centred on the reference) minus each
    component's offset from it, shape (k, d, t)."""
    k, (d, t) = offsets.shape[0], xt.shape
    out = scratch(work, (k, d, t))
    np.subtract(xt[None, :, :], offsets[:, :, None], out=out)
    return out


def _symmetric(scatter: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (scatter + np.swapaxes(scatter, -1, -2)))


def _full_moment(
    xt: FloatArray, resp: FloatArray, offsets: FloatArray, out: FloatArray, first: FloatArray, work: FloatArray | None
) -> None:
    """Adds ``sum_t r_kt (x_t - mu_k)(x_t - mu_k)^T`` per component (k, d, d) to ``out``.

    One compiled pass writes ``w = r_kt (x_t - mu_k)`` and adds its sums over ``t`` (the
    first moments around each component's own centre) to ``first``; one BLAS product
    ``w @ x^T`` gives ``P_k = sum_t r_kt (x_t - mu_k) x_t^T``, and ``P_k - s_k mu_k^T`` is
    the scatter (``x`` and ``mu_k`` centred on the reference). Its rounding error is that of
    centring the rows on ``mu_k``: a component far from the reference loses nothing to
    cancellation.
    """
    from daskem.models.gaussian_kernels import weighted_residuals

    k, (d, t) = offsets.shape[0], xt.shape
    weighted = scratch(work, (k, d, t))
    sums = np.zeros((k, d))
    weighted_residuals(xt, offsets, resp, weighted, sums)
    first += sums
    products = (weighted.reshape(k * d, t) @ xt.T).reshape(k, d, d)
    out += _symmetric(products - sums[:, :, None] * offsets[:, None, :])


def _tied_moment(
    xt: FloatArray, resp: FloatArray, offsets: FloatArray, out: FloatArray, first: FloatArray, work: FloatArray | None
) -> None:
    """Adds ``sum_k sum_t r_kt (x_t - mu_k)(x_t - mu_k)^T`` (d, d) to ``out``: as
    :func:`_full_moment` with the weighted residuals summed over components first (one
    (d, t) buffer, one (d, t) x (t, d) product)."""
    from daskem.models.gaussian_kernels import summed_weighted_residuals

    k, (d, t) = offsets.shape[0], xt.shape
    summed = scratch(work, (d, t))
    sums = np.zeros((k, d))
    summed_weighted_residuals(xt, offsets, resp, summed, sums)
    first += sums
    out += _symmetric(summed @ xt.T - sums.T @ offsets)


def _diag_moment(
    xt: FloatArray, resp: FloatArray, offsets: FloatArray, out: FloatArray, first: FloatArray, work: FloatArray | None
) -> None:
    centred = _centred_components(xt, offsets, work)
    first += np.matmul(centred, resp[:, :, None])[:, :, 0]
    np.square(centred, out=centred)
    out += np.matmul(centred, resp[:, :, None])[:, :, 0]


# --- covariances from centred moments ----------------------------------------------------
#
# The moments of component k are centred on its own centre m_k (the previous mean). With
# offsets a_k = s_k / nk_k of the new mean from m_k, the weighted scatter around the new
# mean is  S_k - s_k a_k^T - a_k s_k^T + r_k a_k a_k^T  (r_k: the exact responsibility
# sum, nk_k = r_k + 10 eps as in scikit-learn); a_k is small, so nothing cancels.


def _full_cov(
    nk: FloatArray, r: FloatArray, s: FloatArray, a: FloatArray, moment: FloatArray, reg: float
) -> FloatArray:
    sa = s[:, :, None] * a[:, None, :]
    scatter = moment - sa - sa.transpose(0, 2, 1) + r[:, None, None] * a[:, :, None] * a[:, None, :]
    cov = scatter / nk[:, None, None]
    d = s.shape[1]
    cov[:, np.arange(d), np.arange(d)] += reg
    return np.asarray(cov)


def _tied_cov(
    nk: FloatArray, r: FloatArray, s: FloatArray, a: FloatArray, moment: FloatArray, reg: float
) -> FloatArray:
    sa = s.T @ a
    scatter = moment - sa - sa.T + (a * r[:, None]).T @ a
    cov = scatter / nk.sum()
    cov.flat[:: cov.shape[0] + 1] += reg
    return np.asarray(cov)


def _diag_cov(
    nk: FloatArray, r: FloatArray, s: FloatArray, a: FloatArray, moment: FloatArray, reg: float
) -> FloatArray:
    variance = (moment - 2.0 * a * s + r[:, None] * a * a) / nk[:, None]
    # A variance within the rounding error of its moments of 0 (a component that moved onto
    # one point this step) is that rounding error, not 0 or below: scikit-learn's
    # ``X**2 - 2 X mean + mean**2`` leaves such noise too and fits on (its issue #18216). A
    # component already on the point (moments exactly 0) or a constant feature stays 0.
    floor = 4.0 * np.finfo(np.float64).eps * moment / nk[:, None]
    return np.asarray(np.maximum(variance, floor) + reg)


def _spherical_cov(
    nk: FloatArray, r: FloatArray, s: FloatArray, a: FloatArray, moment: FloatArray, reg: float
) -> FloatArray:
    return np.asarray(_diag_cov(nk, r, s, a, moment, reg).mean(axis=1))


def _full_log_det(prec_chol: FloatArray, d: int) -> FloatArray:
    return np.asarray(np.log(np.diagonal(prec_chol, axis1=-2, axis2=-1)).sum(axis=-1))


def _diag_log_det(prec_chol: FloatArray, d: int) -> FloatArray:
    return np.asarray(np.log(prec_chol).sum(axis=1))


def _spherical_log_det(prec_chol: FloatArray, d: int) -> FloatArray:
    return np.asarray(d * np.log(prec_chol))


# --- MAP covariances under hmmlearn's priors (Gaussian HMMs) -----------------------------------


def _full_map(
    cov: FloatArray, nk: FloatArray, r: FloatArray, w: FloatArray, diff: FloatArray, prior: FloatArray, weight: float
) -> FloatArray:
    outer = w[:, None, None] * diff[:, :, None] * diff[:, None, :]
    dof = max(weight - diff.shape[1], 0.0)
    return np.asarray((prior + outer + cov * nk[:, None, None]) / (dof + r)[:, None, None])


def _tied_map(
    cov: FloatArray, nk: FloatArray, r: FloatArray, w: FloatArray, diff: FloatArray, prior: FloatArray, weight: float
) -> FloatArray:
    outer = w[:, None, None] * diff[:, :, None] * diff[:, None, :]
    dof = max(weight - diff.shape[1], 0.0)
    return np.asarray((prior + outer.sum(axis=0) + cov * nk.sum()) / (dof + r.sum()))


def _diag_map(
    cov: FloatArray, nk: FloatArray, r: FloatArray, w: FloatArray, diff: FloatArray, prior: FloatArray, weight: float
) -> FloatArray:
    c_n = w[:, None] * diff**2 + cov * nk[:, None]
    return np.asarray((prior + c_n) / np.maximum(max(weight - 1.0, 0.0) + r, 1e-5)[:, None])


def _spherical_map(
    cov: FloatArray, nk: FloatArray, r: FloatArray, w: FloatArray, diff: FloatArray, prior: FloatArray, weight: float
) -> FloatArray:
    c_n = (w[:, None] * diff**2).mean(axis=1) + cov * nk
    return np.asarray((prior + c_n) / np.maximum(max(weight - 1.0, 0.0) + r, 1e-5))


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    "full": CovarianceType(
        name="full",
        moment_shape=lambda k, d: (k, d, d),
        precision_cholesky=_full_prec_chol,
        precision_cholesky_from_precisions=_full_from_prec,
        covariance_from_precision_cholesky=lambda pc: np.stack([_cov_from_chol_precision(p) for p in pc]),
        precisions=lambda pc: np.asarray(pc @ pc.transpose(0, 2, 1)),
        log_det=_full_log_det,
        n_cov_parameters=lambda k, d: k * d * (d + 1) // 2,
        whitening=_full_whitening,
        second_moment=_full_moment,
        covariance=_full_cov,
        map_covariance=_full_map,
        shape=lambda k, d: (k, d, d),
        matrices=True,
        shared=False,
        to_full=lambda c, k, d: np.asarray(c, dtype=np.float64).reshape(k, d, d),
        from_full=lambda m, k: np.tile(m, (k, 1, 1)),
    ),
    "tied": CovarianceType(
        name="tied",
        moment_shape=lambda k, d: (d, d),
        precision_cholesky=_tied_prec_chol,
        precision_cholesky_from_precisions=_tied_from_prec,
        covariance_from_precision_cholesky=_cov_from_chol_precision,
        precisions=lambda pc: np.asarray(pc @ pc.T),
        log_det=_full_log_det,
        n_cov_parameters=lambda k, d: d * (d + 1) // 2,
        whitening=_tied_whitening,
        second_moment=_tied_moment,
        covariance=_tied_cov,
        map_covariance=_tied_map,
        shape=lambda k, d: (d, d),
        matrices=True,
        shared=True,
        to_full=lambda c, k, d: np.tile(np.asarray(c, dtype=np.float64).reshape(d, d), (k, 1, 1)),
        from_full=lambda m, k: np.array(m, dtype=np.float64),
    ),
    "diag": CovarianceType(
        name="diag",
        moment_shape=lambda k, d: (k, d),
        precision_cholesky=_diagonal_prec_chol,
        precision_cholesky_from_precisions=_diagonal_from_prec,
        covariance_from_precision_cholesky=lambda pc: np.asarray(1.0 / pc**2),
        precisions=lambda pc: np.asarray(pc**2),
        log_det=_diag_log_det,
        n_cov_parameters=lambda k, d: k * d,
        whitening=_diag_whitening,
        second_moment=_diag_moment,
        covariance=_diag_cov,
        map_covariance=_diag_map,
        shape=lambda k, d: (k, d),
        matrices=False,
        shared=False,
        to_full=lambda c, k, d: np.stack([np.diag(v) for v in np.asarray(c, dtype=np.float64).reshape(k, d)]),
        from_full=lambda m, k: np.tile(np.diag(m), (k, 1)),
        moment_from_residuals=True,
    ),
    "spherical": CovarianceType(
        name="spherical",
        moment_shape=lambda k, d: (k, d),
        precision_cholesky=_diagonal_prec_chol,
        precision_cholesky_from_precisions=_diagonal_from_prec,
        covariance_from_precision_cholesky=lambda pc: np.asarray(1.0 / pc**2),
        precisions=lambda pc: np.asarray(pc**2),
        log_det=_spherical_log_det,
        n_cov_parameters=lambda k, d: k,
        whitening=_diag_whitening,
        second_moment=_diag_moment,
        covariance=_spherical_cov,
        map_covariance=_spherical_map,
        shape=lambda k, d: (k,),
        matrices=False,
        shared=False,
        to_full=lambda c, k, d: np.asarray(c, dtype=np.float64).reshape(k)[:, None, None] * np.eye(d),
        from_full=lambda m, k: np.full(k, float(np.diag(m).mean())),
        moment_from_residuals=True,
    ),
}


def covariance_type(name: str) -> CovarianceType:
    """Return the functions of covariance type ``name``.

    Parameters
    ----------
    name : {"full", "tied", "diag", "spherical"}
        The covariance type.

    Returns
    -------
    CovarianceType
        Its lookup-table entry.
    """
    try:
        return COVARIANCE_TYPES[name]
    except KeyError:
        raise ValueError(f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}; got {name!r}.") from None


#: The covariance type of unconstrained d x d matrices, whatever a model's own type (a
#: data covariance: a one-component mixture of this type).
FULL_COVARIANCE = "full"


@dataclass(frozen=True)
class Whitener:
    """Per-component whitening of centred rows, prepared once per parameter set.

    Works on feature-major tiles ``xt`` of shape (d, t), centred on the reference point.
    The whitened residuals are ``L_k^T (x - mu_k) = matrix_k x - bias_k``: ``matrix`` is
    the (k*d, d) stack of all ``L_k^T`` for full and tied covariances (one BLAS product),
    the (k, d) diagonal factors for diag and spherical; ``bias`` (k, d) is ``L_k^T`` times
    the component's offset from the reference; ``log_norm`` (k, 1) holds
    ``log w_k + log det L_k - d/2 log(2 pi)``.
    """

    kind: str
    matrix: FloatArray
    bias: FloatArray
    log_norm: FloatArray
    n_components: int
    n_features: int

    def weighted_log_prob(self, xt: FloatArray, work: FloatArray, out: FloatArray, squared: bool = False) -> FloatArray:
        """``log w_k + log N(x | mu_k, Sigma_k)`` for a centred tile, into ``out`` (k, t).

        ``work`` (k, d, t) is left holding the whitened residuals, or their squares if
        ``squared``.
        """
        from daskem.models.gaussian_kernels import log_prob_diagonal, log_prob_from_products

        if self.kind in ("full", "tied"):
            np.matmul(self.matrix, xt, out=work.reshape(-1, xt.shape[1]))
            log_prob_from_products(work, self.bias, self.log_norm, out, squared)
        else:
            log_prob_diagonal(xt, self.matrix, self.bias, self.log_norm, work, out, squared)
        return out


def make_whitener(
    cov_type: CovarianceType,
    log_weights: FloatArray,
    offsets: FloatArray,
    prec_chol: FloatArray,
    dtype: Any = np.float64,
) -> Whitener:
    """Prepare the whitening of centred rows for one parameter set.

    Parameters
    ----------
    cov_type : CovarianceType
        The covariance type of ``prec_chol``.
    log_weights : ndarray of shape (k,)
        Log mixing weights (zeros for a single density per component).
    offsets : ndarray of shape (k, d)
        Component means minus the reference point the rows are centred on.
    prec_chol : ndarray
        Precision Cholesky factors, shaped as the covariance type says.
    dtype : numpy dtype
        Precision of the E-step: float64, or float32 for float32 data.

    Returns
    -------
    Whitener
        The prepared whitening.
    """
    k, d = offsets.shape
    matrix, bias = cov_type.whitening(prec_chol, offsets, d)
    log_norm = log_weights + cov_type.log_det(prec_chol, d) - 0.5 * d * LOG_2PI
    return Whitener(
        cov_type.name,
        np.ascontiguousarray(matrix, dtype=dtype),
        np.ascontiguousarray(bias, dtype=dtype),
        np.asarray(log_norm, dtype=dtype).reshape(k, 1),
        k,
        d,
    )


def log_normalize(log_prob: FloatArray, resp_out: FloatArray) -> FloatArray:
    """Responsibilities and per-sample log-sum-exp of weighted log-probabilities.

    One ``exp`` per element (scipy's ``logsumexp`` followed by ``exp(log_prob - lse)``
    would take two, and exp is a large share of an E-step).

    Parameters
    ----------
    log_prob : ndarray of shape (k, t)
        Weighted log-probabilities, components along the first axis.
    resp_out : ndarray of shape (k, t)
        Receives the responsibilities (columns sum to one).

    Returns
    -------
    ndarray of shape (t,)
        ``log sum_k exp(log_prob)`` per sample.
    """
    top = log_prob.max(axis=0)
    # A sample whose every component is -inf has no valid maximum; use 0 to avoid inf - inf.
    top[~np.isfinite(top)] = 0.0
    np.subtract(log_prob, top, out=resp_out)
    # Responsibilities far below the largest underflow to 0, which is what they are: harmless
    # under any error state the caller set (np.seterr(all="raise") included).
    with np.errstate(under="ignore"):
        np.exp(resp_out, out=resp_out)
        total = resp_out.sum(axis=0)
        resp_out /= total
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(total) + top)


def tile_rows(n_components: int, n_features: int) -> int:
    """Rows per tile so that an E-step's (k, d, t) work buffer stays about 4 MiB.

    Small buffers stay in cache and are reused across tiles; they also sidestep glibc's
    per-allocation ``mmap`` when ``MALLOC_TRIM_THRESHOLD_`` is set (Dask workers set it).
    """
    return int(max(64, min(4096, (1 << 19) // max(1, n_components * n_features))))


def check_shape(name: str, value: Any, expected: tuple[int, ...]) -> FloatArray:
    """Return ``value`` as a float64 array, raising a clear error if its shape is wrong."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != expected:
        raise ParameterError(f"The parameter '{name}' should have the shape of {expected}, but got {arr.shape}.")
    return arr
