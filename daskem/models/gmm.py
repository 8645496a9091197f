"""Gaussian mixture models: pure NumPy E-step, combine and M-step.

Statistics are accumulated in one pass, each component's around its own current mean
``m_k`` (which every worker has): the responsibility sum ``r_k``, the first moment
``s_k = sum r (x - m_k)`` and the second moment (shape set by the covariance type) of
``x - m_k``. The M-step recovers the covariance around the new mean exactly (see
:mod:`daskem.models.gaussian`); the offset of the new mean from ``m_k`` is small, so
nothing cancels, for data far from the origin or components far from each other. Tiles
are centred on the weighted mean of the means for the whitening. Everything is
accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from daskem.errors import ParameterError
from daskem.models.base import row_uniforms
from daskem.models.gaussian import (
    LOG_2PI,
    FloatArray,
    Whitener,
    check_shape,
    covariance_type,
    log_normalize,
    make_whitener,
    scratch,
    tile_rows,
)
from daskem.models.gaussian_prior import GaussianPrior, gap_counts, log_prior, map_means_covariances
from daskem.models.missing import IntArray, MissingLayout, check_missing_policy, missing_layout

_EPS10 = 10.0 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class GaussianMixtureParams:
    """Parameters of a Gaussian mixture (scikit-learn's shapes and meanings).

    Attributes
    ----------
    weights : ndarray of shape (k,)
    means : ndarray of shape (k, d)
    covariances : ndarray
        Shaped by the covariance type (see :mod:`daskem.models.gaussian`).
    precisions_cholesky : ndarray
        Cholesky factors of the precisions, shaped like ``covariances``.
    """

    weights: FloatArray
    means: FloatArray
    covariances: FloatArray
    precisions_cholesky: FloatArray

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "precisions_cholesky": self.precisions_cholesky,
        }

    @property
    def reference(self) -> FloatArray:
        """The point statistics are centred on: the weighted mean of the means."""
        return np.asarray(self.weights @ self.means / self.weights.sum())


def _given_or_base(value: Any, base: GaussianMixtureParams | None, name: str) -> FloatArray:
    if value is not None:
        return np.asarray(value, dtype=np.float64)
    if base is None:
        raise ValueError(f"{name} must be given when there are no base parameters to take it from.")
    return np.asarray(getattr(base, name))


def _paired(
    base: GaussianMixtureParams, kind: str, weights: Any, means: Any, precisions: Any
) -> tuple[GaussianMixtureParams, Any, Any]:
    """Pair partially given components with those of ``base`` they fit best.

    The order of an initialisation's components (k-means clusters) is arbitrary, so a
    partial ``weights_init`` / ``means_init`` / ``precisions_init`` is paired with the
    base components by a minimum-cost assignment (:func:`scipy.optimize.linear_sum_assignment`)
    rather than by index. Given means set the order: ``base`` is reordered to follow
    them (squared distance between means). Otherwise the order is the initialisation's,
    and the given precisions (with the given weights, which stay paired with them) are
    reordered to the base components whose Gaussians they fit best (expected negative
    log-likelihood, weighted by the base weights; "tied" has one shared precision), or
    given weights alone to the base weights nearest them. Returns ``(base, weights,
    precisions)``.
    """
    from scipy.optimize import linear_sum_assignment

    ct = covariance_type(kind)
    k, d = base.means.shape
    if means is not None:
        given = np.asarray(means, dtype=np.float64)
        cost = ((given[:, None, :] - base.means[None, :, :]) ** 2).sum(axis=2)
    elif precisions is not None and not ct.shared:
        # tr(P_i S_j) - log det P_i: the expected negative log-likelihood (up to constants)
        # of base component j's Gaussian under given precision i.
        prec = ct.to_full(np.asarray(precisions, dtype=np.float64), k, d)
        cov = ct.to_full(base.covariances, k, d)
        cost = np.einsum("iab,jba->ij", prec, cov) - np.linalg.slogdet(prec)[1][:, None]
        cost = cost * base.weights[None, :]
    elif weights is not None:
        cost = np.abs(np.asarray(weights, dtype=np.float64)[:, None] - base.weights[None, :])
    else:
        return base, weights, precisions
    if k < 2 or cost.shape != (k, k) or not np.all(np.isfinite(cost)):
        return base, weights, precisions
    _, order = linear_sum_assignment(cost)  # given component i pairs with base component order[i]
    if np.array_equal(order, np.arange(k)):
        return base, weights, precisions
    if means is not None:
        shared = ct.shared
        base = GaussianMixtureParams(
            weights=base.weights[order],
            means=base.means[order],
            covariances=base.covariances if shared else base.covariances[order],
            precisions_cholesky=base.precisions_cholesky if shared else base.precisions_cholesky[order],
        )
        return base, weights, precisions
    inverse = np.argsort(order)  # base component j takes given component inverse[j]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)[inverse]
    if precisions is not None and not ct.shared:
        precisions = np.asarray(precisions, dtype=np.float64)[inverse]
    return base, weights, precisions


@dataclass(frozen=True)
class GaussianMixtureStats:
    """Sufficient statistics of a set of rows under one parameter set.

    Attributes
    ----------
    n : float
        Rows seen (their total weight, for statistics of weighted rows).
    loglik : float
        Summed log-likelihood of the rows under the parameters used.
    n_nonfinite : int
        NaN or infinite values seen.
    shift : ndarray of shape (k, d)
        The centre each component's moments are taken around (its mean in the
        parameters the statistics were computed with).
    resp_sum : ndarray of shape (k,)
        ``sum_i r_ik``.
    first : ndarray of shape (k, d)
        ``sum_i r_ik (x_i - m_k)``.
    second : ndarray
        Weighted second moments of ``x - m_k``: (k, d, d) full, (d, d) tied (summed over
        components), (k, d) diag and spherical (per-feature squares).
    log_prior : float
        The log prior density (up to a constant) of the parameters the statistics were
        computed under, for a model with a ``prior`` (0 without). Every block's statistics
        under one parameter set carry the same value: :meth:`GaussianMixtureModel.combine`
        keeps it, it is not summed.
    """

    n: float
    loglik: float
    n_nonfinite: int
    shift: FloatArray = field(repr=False)
    resp_sum: FloatArray = field(repr=False)
    first: FloatArray = field(repr=False)
    second: FloatArray = field(repr=False)
    log_prior: float = 0.0


@dataclass(frozen=True)
class _Conditional:
    """Incomplete rows of a block (a tile of one :class:`~daskem.models.missing.MissingGroup`)
    under every component: what the observed coordinates say about the missing ones.

    Attributes
    ----------
    rows : ndarray of shape (n,)
        The rows' indices in the block.
    log_prob : ndarray of shape (k, n)
        ``log w_k + log N(x_O | mu_kO, Sigma_kOO)``: the observed coordinates' weighted
        log-density.
    filled : ndarray of shape (k, n, d)
        ``E[x | x_O, k] - mu_k``: the observed residuals, and the missing coordinates'
        conditional means minus the component's mean.
    missing : ndarray of shape (n, m)
        The missing coordinates of each row.
    patterns, inverse : ndarray
        The group's distinct missing patterns (p, m) and each row's pattern (n,).
    covariance : ndarray of shape (k, p, m, m)
        The conditional covariance of the missing coordinates given the observed ones,
        per component and pattern (``Lambda_MM^-1``, the inverse of the precision's
        missing block).
    """

    rows: IntArray
    log_prob: FloatArray
    filled: FloatArray
    missing: IntArray
    patterns: IntArray
    inverse: IntArray
    covariance: FloatArray


def _pattern_sums(resp: FloatArray, inverse: IntArray, n_patterns: int) -> FloatArray:
    """``sum_i r_ki`` over the rows of each pattern: shape (k, p)."""
    return np.stack([np.bincount(inverse, weights=r, minlength=n_patterns) for r in resp])


def _with_reg(ct: Any, covariances: FloatArray, reg: float) -> FloatArray:
    """``covariances`` plus ``reg`` on every diagonal (every variance for diag and spherical)."""
    if reg == 0.0:
        return covariances
    out = np.array(covariances)
    if ct.matrices:
        d = out.shape[-1]
        out[..., np.arange(d), np.arange(d)] += reg
    else:
        out += reg
    return out


@dataclass(frozen=True)
class GaussianMixtureModel:
    """A Gaussian mixture of ``n_components`` components with a given covariance type.

    Parameters
    ----------
    n_components : int
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Form of the component covariances.
    reg_covar : float
        Non-negative regularisation added to the diagonal of every covariance.
    missing : {"error", "marginalize"}
        ``"marginalize"``: NaN entries are missing at random; each row's responsibilities
        and likelihood come from its observed coordinates, and the statistics take the
        missing coordinates' conditional expectations (:meth:`e_step`). ``"error"``: NaN
        are errors, as every non-finite value.
    prior : GaussianPrior, optional
        mclust's conjugate prior on the means and covariances
        (:mod:`daskem.models.gaussian_prior`): the M-step is then the posterior mode
        (MAP-EM) and :meth:`log_likelihood` the log posterior (the log-likelihood plus
        the log prior density of the parameters, up to a constant), which EM never
        decreases; the statistics' ``loglik`` stays the log-likelihood.
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    missing: str = "error"
    prior: GaussianPrior | None = None

    #: What to do when the statistics are not finite (see daskem.em.checks.check_stats).
    numerical_advice = (
        "some rows have zero probability under every component. Scale the features or increase reg_covar."
    )

    def __post_init__(self) -> None:
        covariance_type(self.covariance_type)
        check_missing_policy(self.missing, type(self).__name__)

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {
            "model": "gmm",
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "reg_covar": float(self.reg_covar),
            # Only when set: the specs of fits without missing values stay as they were.
            **({"missing": self.missing} if self.missing != "error" else {}),
            **({"prior": self.prior.to_dict()} if self.prior is not None else {}),
        }

    def zero_stats(self, params: GaussianMixtureParams) -> GaussianMixtureStats:
        """Statistics of no rows, centred on the reference of ``params``."""
        k, d = params.means.shape
        return replace(self._zero(params.means, k, d), log_prior=self.log_prior(params))

    def log_prior(self, params: GaussianMixtureParams) -> float:
        """The log prior density of ``params`` up to a constant (0 without a prior)."""
        if self.prior is None:
            return 0.0
        return log_prior(self.covariance_type, self.prior, params.means, params.precisions_cholesky)

    def _zero(self, shift: FloatArray, k: int, d: int) -> GaussianMixtureStats:
        shape = covariance_type(self.covariance_type).moment_shape(k, d)
        return GaussianMixtureStats(
            n=0.0,
            loglik=0.0,
            n_nonfinite=0,
            shift=np.broadcast_to(np.asarray(shift, dtype=np.float64), (k, d)).copy(),
            resp_sum=np.zeros(k),
            first=np.zeros((k, d)),
            second=np.zeros(shape),
        )

    def combine(self, a: GaussianMixtureStats, b: GaussianMixtureStats) -> GaussianMixtureStats:
        """Sum the statistics of two disjoint sets of rows (same reference point)."""
        return GaussianMixtureStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            shift=a.shift,
            resp_sum=a.resp_sum + b.resp_sum,
            first=a.first + b.first,
            second=a.second + b.second,
            log_prior=a.log_prior,
        )

    def recentre(self, stats: GaussianMixtureStats, like: GaussianMixtureStats) -> GaussianMixtureStats:
        """``stats`` with every component's moments taken around ``like.shift`` instead.

        With ``y = x - m`` and ``delta = m - m'``: ``sum r (y + delta) = first + r delta``
        and ``sum r (y + delta)(y + delta)^T = second + first delta^T + delta first^T +
        r delta delta^T`` (summed over the components for tied, the diagonal for diag and
        spherical).
        """
        if stats.shift is like.shift or np.array_equal(stats.shift, like.shift):
            return stats
        delta = stats.shift - like.shift
        r = stats.resp_sum
        first = stats.first
        ct = covariance_type(self.covariance_type)
        if ct.matrices:
            cross = first[:, :, None] * delta[:, None, :]
            extra = cross + cross.transpose(0, 2, 1) + r[:, None, None] * delta[:, :, None] * delta[:, None, :]
            second = stats.second + (extra.sum(axis=0) if ct.shared else extra)
        else:
            second = stats.second + 2.0 * delta * first + r[:, None] * delta * delta
        return replace(
            stats, shift=np.array(like.shift), first=first + r[:, None] * delta, second=second, log_prior=like.log_prior
        )

    def scale(self, stats: GaussianMixtureStats, factor: float) -> GaussianMixtureStats:
        """``stats`` with ``n``, ``loglik`` and every moment times ``factor`` (the same centres)."""
        return replace(
            stats,
            n=stats.n * factor,
            loglik=stats.loglik * factor,
            resp_sum=stats.resp_sum * factor,
            first=stats.first * factor,
            second=stats.second * factor,
        )

    def log_likelihood(self, stats: GaussianMixtureStats) -> float:
        """Total log-likelihood of the rows behind ``stats``: the objective EM monitors.

        With a ``prior``, the log posterior: the log-likelihood plus the log prior density
        of the parameters the statistics were computed under (up to a constant).
        """
        return float(stats.loglik) + (float(stats.log_prior) if self.prior is not None else 0.0)

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> GaussianMixtureParams:
        """Rebuild parameters from named arrays, checking their shapes."""
        means = np.asarray(arrays["means"], dtype=np.float64)
        if means.ndim != 2:
            raise ParameterError(
                f"The parameter 'means' should be 2-D (n_components, n_features), but got {means.shape}."
            )
        k, d = self.n_components, means.shape[1]
        means = check_shape("means", means, (k, d))
        ct = covariance_type(self.covariance_type)
        return GaussianMixtureParams(
            weights=check_shape("weights", arrays["weights"], (k,)),
            means=means,
            covariances=check_shape("covariances", arrays["covariances"], ct.shape(k, d)),
            precisions_cholesky=check_shape("precisions_cholesky", arrays["precisions_cholesky"], ct.shape(k, d)),
        )

    def e_step(self, params: GaussianMixtureParams, block: NDArray[Any]) -> GaussianMixtureStats:
        """Statistics of one block of rows under ``params`` (one read of the block).

        Tiles are centred on the reference (the weighted mean of the means) for the
        whitening; each component's moments are then taken around its own current mean.

        With ``missing="marginalize"`` a block's complete rows take this path unchanged
        (a block without NaN gives the complete-data statistics bit for bit) and its
        incomplete rows add their expected complete-data statistics given the observed
        coordinates (:meth:`_incomplete_moments`); rows with every coordinate missing are
        skipped. ``loglik`` is then the observed-data log-likelihood.
        """
        layout = missing_layout(block) if self.missing == "marginalize" else None
        if layout is None:
            return self.moments(params, block)
        return self._incomplete_moments(params, block, layout, self.moments(params, block[layout.complete]))

    def moments(
        self,
        params: GaussianMixtureParams,
        block: NDArray[Any],
        resp: NDArray[Any] | None = None,
        weights: NDArray[Any] | None = None,
    ) -> GaussianMixtureStats:
        """:meth:`e_step`, or the same moments under given responsibilities.

        Parameters
        ----------
        params : GaussianMixtureParams
            The parameters (their means are the centres of the moments).
        block : ndarray of shape (n, d)
            Rows.
        resp : ndarray of shape (n, k), optional
            Responsibilities to use instead of the mixture's own posteriors (a hidden
            Markov model's state posteriors); the statistics' ``loglik`` is then 0.
        weights : ndarray of shape (n,), optional
            Sample weights: each row's responsibilities, hence its moments, and its
            log-likelihood count that many times, and ``n`` is their sum (integer weights
            give the statistics of the rows repeated).
        """
        k, d = params.means.shape
        shift = params.reference
        offsets = params.means - shift
        ct = covariance_type(self.covariance_type)
        resp_sum = np.zeros(k)
        first = np.zeros((k, d))
        second = np.zeros(ct.moment_shape(k, d))
        loglik = 0.0
        n_nonfinite = 0
        # Non-finite data give NaN statistics; the driver reports them from n_nonfinite. Tiny
        # responsibilities and their products underflow to 0, harmlessly, whatever np.seterr says.
        with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
            start = 0
            # Under given responsibilities full and tied covariances need no densities.
            densities = resp is None or ct.moment_from_residuals
            tiles = self._tiles(block, params, shift, squared=ct.moment_from_residuals, densities=densities)
            for xt, log_prob, tile_resp, work in tiles:
                # Counted per tile: a whole-block mask would be one large allocation per block.
                n_nonfinite += xt.size - int(np.count_nonzero(np.isfinite(xt)))
                rows = slice(start, start + xt.shape[1])
                start += xt.shape[1]
                if resp is None:
                    log_norm = log_normalize(log_prob, tile_resp)
                    # Sums across tiles are float64 whatever the tile precision.
                    loglik += float((log_norm if weights is None else log_norm * weights[rows]).sum(dtype=np.float64))
                else:
                    tile_resp[...] = resp[rows].T
                if weights is not None:
                    tile_resp *= weights[rows]
                resp_sum += tile_resp.sum(axis=1, dtype=np.float64)
                if ct.moment_from_residuals:
                    first += tile_resp @ xt.T
                    # work holds (p_k (x - mu_k))^2 from the E-step: weight it by the responsibilities.
                    second += np.matmul(work, tile_resp[:, :, None])[:, :, 0]
                else:
                    ct.second_moment(xt, tile_resp, offsets.astype(xt.dtype), second, first, work)
        if ct.moment_from_residuals:
            scales = np.broadcast_to(params.precisions_cholesky.reshape(k, -1), (k, d))
            second /= scales * scales
            # First moments around each component's own mean (the others are already).
            first -= resp_sum[:, None] * offsets
        if n_nonfinite:
            # Centring can overflow huge finite values: count what the data really hold (the
            # non-finite log-likelihood then reports the overflow).
            n_nonfinite = int(block.size - np.count_nonzero(np.isfinite(block)))
        return GaussianMixtureStats(
            n=float(block.shape[0]) if weights is None else float(np.sum(weights, dtype=np.float64)),
            loglik=loglik,
            n_nonfinite=n_nonfinite,
            shift=np.array(params.means, dtype=np.float64),
            resp_sum=resp_sum,
            first=first,
            second=second,
            log_prior=self.log_prior(params),
        )

    def m_step(self, stats: GaussianMixtureStats, params: GaussianMixtureParams | None) -> GaussianMixtureParams:
        """New parameters from the statistics of all rows.

        Components that received no responsibility at all keep their previous mean and
        covariance (the empty-component guard); their weight becomes ~0. ``params`` is
        ``None`` for an initial M-step, which has no previous parameters.

        With a ``prior`` the means and covariances are the posterior mode
        (:func:`daskem.models.gaussian_prior.map_means_covariances`, plus ``reg_covar`` on
        the diagonal), an empty component's the prior's own mode; the weights are
        ``r_k / n`` (no prior on them, as mclust).
        """
        ct = covariance_type(self.covariance_type)
        r = stats.resp_sum
        nk = r + _EPS10
        if self.prior is not None:
            means, covariances, _ = map_means_covariances(
                self.covariance_type, self.prior, r, stats.shift, stats.first, stats.second
            )
            covariances = _with_reg(ct, covariances, self.reg_covar)
            precisions_cholesky = ct.precision_cholesky(covariances, self.reg_covar)
            return GaussianMixtureParams(nk / nk.sum(), means, covariances, precisions_cholesky)
        a = stats.first / nk[:, None]
        means = stats.shift + a
        covariances = ct.covariance(nk, r, stats.first, a, stats.second, self.reg_covar)
        empty = r < _EPS10
        if empty.any() and params is not None:
            means[empty] = params.means[empty]
            if not ct.shared:
                covariances[empty] = params.covariances[empty]
        precisions_cholesky = ct.precision_cholesky(covariances, self.reg_covar)
        return GaussianMixtureParams(nk / nk.sum(), means, covariances, precisions_cholesky)

    def m_step_gap(self, stats: GaussianMixtureStats) -> float:
        """What ``reg_covar`` costs the M-step in expected complete-data log-likelihood.

        The M-step's covariance is the maximiser ``S`` (eigenvalues ``s_j``) plus
        ``reg_covar`` on the diagonal, which gives up
        ``sum_k r_k / 2 * sum_j (log(1 + reg / s_j) - reg / (s_j + reg))`` of Q (``r_k``:
        the responsibility sums; tied: the total over one matrix); the next log-likelihood
        can fall by at most that (:class:`daskem.models.base.RegularisedMStep`). 0 without
        regularisation, inf when ``S`` is singular.
        """
        reg = self.reg_covar
        if reg == 0.0:
            return 0.0
        ct = covariance_type(self.covariance_type)
        r = stats.resp_sum
        nk = r + _EPS10
        d = stats.first.shape[1]
        if self.prior is not None:
            # The same loss around the posterior mode, each eigenvalue weighted by its denominator.
            _, unregularised, denominators = map_means_covariances(
                self.covariance_type, self.prior, r, stats.shift, stats.first, stats.second
            )
            counts = gap_counts(self.covariance_type, denominators, d)
        else:
            unregularised = ct.covariance(nk, r, stats.first, stats.first / nk[:, None], stats.second, 0.0)
            counts = np.array([r.sum()]) if ct.shared else r
        values = ct.eigenvalues(unregularised, d)
        live = counts > _EPS10
        values = values[live]
        if np.any(values <= 0.0):
            return float("inf")
        per_value = np.log1p(reg / values) - reg / (values + reg)
        return float(0.5 * (counts[live] * per_value.sum(axis=1)).sum())

    # -- vector form (acceleration) --------------------------------------------------------

    def to_vector(self, params: GaussianMixtureParams) -> FloatArray:
        """Unconstrained coordinates: log-weights, means, and the upper-triangular precision
        Cholesky factors with log-diagonals (per-feature or per-component logs for diag and
        spherical)."""
        factor = params.precisions_cholesky
        ct = covariance_type(self.covariance_type)
        if ct.matrices:
            if np.any(np.tril(factor, -1)):  # a lower factor (from precisions_init): make it upper
                factor = ct.precision_cholesky(params.covariances, self.reg_covar)
            rows, cols = np.triu_indices(factor.shape[-1])
            entries = factor[..., rows, cols].copy()
            entries[..., rows == cols] = np.log(entries[..., rows == cols])
        else:
            entries = np.log(factor)
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        return np.concatenate([log_weights, params.means.ravel(), entries.ravel()])

    def from_vector(self, vector: FloatArray, like: GaussianMixtureParams) -> GaussianMixtureParams:
        """Parameters from :meth:`to_vector` coordinates (any finite vector gives valid ones)."""
        k, d = like.means.shape
        log_weights = vector[:k] - vector[:k].max()
        weights = np.exp(log_weights) / np.exp(log_weights).sum()
        means = vector[k : k + k * d].reshape(k, d).copy()
        entries = vector[k + k * d :]
        ct = covariance_type(self.covariance_type)
        if ct.matrices:
            rows, cols = np.triu_indices(d)
            stacked = entries.reshape(-1, rows.size).copy()
            stacked[:, rows == cols] = np.exp(stacked[:, rows == cols])
            factors = np.zeros((stacked.shape[0], d, d))
            factors[:, rows, cols] = stacked
            inverses = [linalg.solve_triangular(f, np.eye(d), lower=False) for f in factors]
            covariances = np.stack([inv.T @ inv for inv in inverses])
            if ct.shared:
                factors, covariances = factors[0], covariances[0]
            return GaussianMixtureParams(weights, means, covariances, factors)
        factors = np.exp(entries).reshape(ct.shape(k, d))
        return GaussianMixtureParams(weights, means, ct.covariance_from_precision_cholesky(factors), factors)

    # -- initialisation ------------------------------------------------------------------

    def params_from_responsibilities(self, X: NDArray[Any], resp: FloatArray) -> GaussianMixtureParams:
        """Parameters from rows and their responsibilities (scikit-learn's initialiser).

        Parameters
        ----------
        X : ndarray of shape (n, d)
            Rows (in memory: a sample or the whole data).
        resp : ndarray of shape (n, k)
            Responsibilities, e.g. one-hot k-means labels.
        """
        shift = np.asarray(X, dtype=np.float64).mean(axis=0)
        return self.m_step(self.stats_from_responsibilities(X, resp, shift), None)

    def stats_from_responsibilities(self, X: NDArray[Any], resp: FloatArray, shift: FloatArray) -> GaussianMixtureStats:
        """Statistics of rows under given responsibilities, every component centred on ``shift``."""
        k, d = resp.shape[1], np.shape(X)[1]
        stats = self._zero(shift, k, d)
        ct = covariance_type(self.covariance_type)
        first = np.zeros((k, d))
        offsets = np.zeros((k, d))
        rows = tile_rows(k, d)
        for start in range(0, np.shape(X)[0], rows):  # tiles bound the (k, d, rows) scratch
            xt = np.ascontiguousarray((np.asarray(X[start : start + rows], dtype=np.float64) - shift).T)
            tile_resp = np.ascontiguousarray(resp[start : start + rows].T, dtype=np.float64)
            ct.second_moment(xt, tile_resp, offsets, stats.second, first, None)
        return GaussianMixtureStats(
            n=float(np.shape(X)[0]),
            loglik=0.0,
            n_nonfinite=int(np.size(X) - np.count_nonzero(np.isfinite(X))),
            shift=stats.shift,
            resp_sum=resp.sum(axis=0),
            first=first,
            second=stats.second,
        )

    def with_given(
        self,
        base: GaussianMixtureParams | None,
        weights: FloatArray | None,
        means: FloatArray | None,
        precisions: FloatArray | None,
    ) -> GaussianMixtureParams:
        """Parameters from user-given weights, means and precisions, the rest from ``base``.

        ``base`` may be ``None`` only when all three are given. Given and base components
        are paired by fit, not by index (:func:`_paired`).
        """
        ct = covariance_type(self.covariance_type)
        if base is not None:
            if precisions is not None:
                # Checked (shape, positive definiteness) before they are compared with the base.
                ct.precision_cholesky_from_precisions(np.asarray(precisions, dtype=np.float64))
            base, weights, precisions = _paired(base, self.covariance_type, weights, means, precisions)
        if precisions is not None:
            prec_chol = ct.precision_cholesky_from_precisions(np.asarray(precisions, dtype=np.float64))
            covariances = ct.covariance_from_precision_cholesky(prec_chol)
        return GaussianMixtureParams(
            weights=_given_or_base(weights, base, "weights"),
            means=_given_or_base(means, base, "means"),
            covariances=covariances if precisions is not None else _given_or_base(None, base, "covariances"),
            precisions_cholesky=(
                prec_chol if precisions is not None else _given_or_base(None, base, "precisions_cholesky")
            ),
        )

    # -- prediction per block --------------------------------------------------------------

    def weighted_log_prob(self, params: GaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """``log w_k + log N(x | k)`` for every row of ``block``: shape (n, k).

        With ``missing="marginalize"`` rows with NaN entries get the density of their
        observed coordinates (``log w_k`` for a row with none observed).
        """
        layout = missing_layout(block) if self.missing == "marginalize" else None
        if layout is not None:
            with np.errstate(divide="ignore"):
                out = np.tile(np.log(params.weights), (block.shape[0], 1))
            out[layout.complete] = self._complete_log_prob(params, block[layout.complete])
            for cond in self._conditionals(params, block, layout):
                out[cond.rows] = cond.log_prob.T
            return out
        return self._complete_log_prob(params, block)

    def _complete_log_prob(self, params: GaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        shift = params.reference
        out = np.empty((self.n_components, block.shape[0]))
        start = 0
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            for _, log_prob, _, _ in self._tiles(block, params, shift):
                out[:, start : start + log_prob.shape[1]] = log_prob
                start += log_prob.shape[1]
        return out.T

    def predict_proba(self, params: GaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """Responsibilities of every row of ``block``: shape (n, k)."""
        log_prob = self.weighted_log_prob(params, block).T
        resp = np.empty_like(log_prob)
        log_normalize(log_prob, resp)
        return resp.T

    def score_samples(self, params: GaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """Log-likelihood of every row of ``block``: shape (n,)."""
        log_prob = self.weighted_log_prob(params, block).T
        return log_normalize(log_prob, np.empty_like(log_prob))

    def sample_e_step(
        self, params: GaussianMixtureParams, block: NDArray[Any], uniforms: FloatArray
    ) -> GaussianMixtureStats:
        """Stochastic EM's E-step: each row's component drawn from its responsibilities.

        The row takes the first component whose cumulative responsibility exceeds its
        uniform (``uniforms[:, 0]``); the moments are those of these one-hot assignments
        (:meth:`moments` under given responsibilities) and ``loglik`` the observed-data
        log-likelihood, as :meth:`e_step`'s.
        """
        if self.missing == "marginalize":
            raise ParameterError(
                "Stochastic EM draws components for complete rows only; missing='marginalize' needs the batch, "
                "incremental or online schedule."
            )
        log_prob = self.weighted_log_prob(params, block).T
        resp = np.empty_like(log_prob)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
            loglik = float(log_normalize(log_prob, resp).sum(dtype=np.float64))
        k = resp.shape[0]
        drawn = np.minimum((np.cumsum(resp, axis=0) < uniforms[:, 0]).sum(axis=0), k - 1)
        onehot = np.zeros((block.shape[0], k))
        onehot[np.arange(block.shape[0]), drawn] = 1.0
        return replace(self.moments(params, block, onehot), loglik=loglik)

    def predict(self, params: GaussianMixtureParams, block: NDArray[Any]) -> NDArray[np.intp]:
        """Most probable component of every row of ``block``: shape (n,)."""
        return np.asarray(self.weighted_log_prob(params, block).argmax(axis=1))

    # -- missing values ------------------------------------------------------------------

    def impute(
        self, params: GaussianMixtureParams, block: NDArray[Any], draws: tuple[int, int] | None = None
    ) -> FloatArray:
        """``block`` (float64) with its NaN entries filled in under the mixture.

        Without ``draws``: each missing coordinate's conditional mean given the row's
        observed ones, ``sum_k r_k E[x_M | x_O, k]`` (``r_k`` the responsibilities from
        the observed coordinates). With ``draws = (seed, first)``: one draw from the
        conditional distribution ``p(x_M | x_O)`` (a component drawn from ``r``, then the
        missing coordinates from that component's conditional Gaussian) for multiple
        imputation. The uniforms come from a counter-based generator
        (:class:`numpy.random.Philox` keyed by ``seed``), at a position fixed by the row's
        index in the data (``first`` is that of the block's first row), so a row's draw
        uses the same random numbers however the data are chunked (its value agrees to
        rounding: the conditional means come from products over tiles). Rows with every coordinate missing
        get the mixture's mean (or a draw from the mixture).

        Parameters
        ----------
        params : GaussianMixtureParams
            The fitted parameters.
        block : ndarray of shape (n, d)
            Rows, NaN where missing.
        draws : tuple of (int, int), optional
            ``(seed, index of the block's first row)`` to draw instead of taking means.

        Returns
        -------
        ndarray of shape (n, d)
        """
        from scipy.special import ndtri

        out = np.array(block, dtype=np.float64)
        layout = missing_layout(out)
        if layout is None:
            return out
        k, d = params.means.shape
        uniforms = None if draws is None else row_uniforms(draws[0], draws[1], out.shape[0], d + 1)
        with np.errstate(under="ignore"):
            for cond in self._conditionals(params, out, layout):
                resp = np.empty_like(cond.log_prob)
                log_normalize(cond.log_prob, resp)
                n, m = cond.missing.shape
                index = np.broadcast_to(cond.missing, (k, n, m))
                means = np.take_along_axis(cond.filled, index, axis=2) + params.means[:, cond.missing]
                if uniforms is None:
                    values = np.einsum("kn,knm->nm", resp, means)
                else:
                    u = uniforms[cond.rows]
                    comp = np.minimum((np.cumsum(resp, axis=0) < u[:, d]).sum(axis=0), k - 1)
                    factor = np.linalg.cholesky(cond.covariance)[comp, cond.inverse]
                    normals = ndtri(np.take_along_axis(u, cond.missing, axis=1))
                    values = means[comp, np.arange(n)] + np.einsum("nab,nb->na", factor, normals)
                out[cond.rows[:, None], cond.missing] = values
            empty = np.flatnonzero(np.isnan(out).all(axis=1)) if layout.n_empty else np.zeros(0, dtype=np.intp)
            if empty.size:
                if uniforms is None:
                    out[empty] = params.weights @ params.means
                else:
                    u = uniforms[empty]
                    comp = np.minimum((np.cumsum(params.weights) < u[:, d, None]).sum(axis=1), k - 1)
                    full = covariance_type(self.covariance_type).to_full(params.covariances, k, d)
                    factor = np.linalg.cholesky(full)[comp]
                    out[empty] = params.means[comp] + np.einsum("nab,nb->na", factor, ndtri(u[:, :d]))
        return out

    def _conditionals(self, params: GaussianMixtureParams, block: NDArray[Any], layout: MissingLayout):  # type: ignore[no-untyped-def]
        """Yield a :class:`_Conditional` per tile of each group of incomplete rows.

        With the precision ``Lambda_k`` and ``y = x - mu_k`` (0 at the missing
        coordinates ``M``), the missing coordinates' conditional mean is
        ``mu_kM + z`` with ``z = -Lambda_MM^-1 v``, ``v = (Lambda_k y)_M``, their
        conditional covariance ``Lambda_MM^-1``, and the observed coordinates' squared
        Mahalanobis distance ``y^T Lambda y + z^T v`` (the filled residual's
        ``(y + z)^T Lambda (y + z)``), with ``log|Sigma_OO| = log|Lambda_MM| - log|Lambda|``.
        Only ``m x m`` blocks are factorised, once per pattern and component; per row the
        work is ``O(k (d^2 + m^2))``. Diagonal covariances decouple the coordinates: the
        missing ones are the component's mean and variance.
        """
        from daskem.models.gaussian_kernels import condition_missing, observed_residuals, pattern_inverses

        ct = covariance_type(self.covariance_type)
        k, d = params.means.shape
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        log_det = np.broadcast_to(ct.log_det(params.precisions_cholesky, d), (k,))
        precisions = ct.precisions(params.precisions_cholesky)
        lam = (
            np.broadcast_to(precisions, (k, d, d))
            if ct.matrices
            else np.broadcast_to(precisions.reshape(k, -1), (k, d))
        )
        # A quarter of the complete path's tile: a handful of (k, t, d) float64 buffers of ~1 MiB.
        tile = max(64, tile_rows(k, d) // 4)
        for group in layout.groups:
            m, patterns = group.width, group.patterns
            if ct.matrices:
                covariance, log_det_mm = np.empty((k, patterns.shape[0], m, m)), np.empty((k, patterns.shape[0]))
                pattern_inverses(lam, patterns, covariance, log_det_mm)
            else:
                lam_m = lam[:, patterns]
                log_det_mm = np.log(lam_m).sum(axis=-1)
                covariance = (1.0 / lam_m)[..., None] * np.eye(m)
            for start in range(0, group.rows.size, tile):
                rows = group.rows[start : start + tile]
                missing = group.missing[start : start + tile]
                inverse = group.inverse[start : start + tile]
                filled = np.empty((k, rows.size, d))
                observed_residuals(np.asarray(block[rows], dtype=np.float64), params.means, missing, filled)
                if ct.matrices:
                    quad = np.empty((k, rows.size))
                    condition_missing(filled, np.matmul(filled, lam), covariance, inverse, missing, quad)
                else:
                    quad = np.einsum("kd,knd->kn", lam, filled * filled)
                log_prob = (
                    (log_weights + log_det - 0.5 * (d - m) * LOG_2PI)[:, None]
                    - 0.5 * log_det_mm[:, inverse]
                    - 0.5 * quad
                )
                yield _Conditional(rows, log_prob, filled, missing, patterns, inverse, covariance)

    def _incomplete_moments(
        self, params: GaussianMixtureParams, block: NDArray[Any], layout: MissingLayout, stats: GaussianMixtureStats
    ) -> GaussianMixtureStats:
        """``stats`` (of the complete rows) plus the expected statistics of the incomplete rows.

        Per row and component: the responsibility from the observed coordinates,
        ``E[x - mu_k | x_O]`` for the first moment and ``E[(x - mu_k)(x - mu_k)^T | x_O]``
        (the filled residual's outer product plus the conditional covariance in the
        missing block) for the second, around the component's mean as the complete rows'.
        """
        from daskem.models.gaussian_kernels import weighted_rows

        ct = covariance_type(self.covariance_type)
        resp_sum, first, second = stats.resp_sum.copy(), stats.first.copy(), stats.second.copy()
        loglik, n = stats.loglik, stats.n
        pending: list[list[Any]] = []
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            for cond in self._conditionals(params, block, layout):
                resp = np.empty_like(cond.log_prob)
                loglik += float(log_normalize(cond.log_prob, resp).sum())
                n += cond.rows.size
                resp_sum += resp.sum(axis=1)
                weighted = np.empty_like(cond.filled)
                weighted_rows(cond.filled, resp, weighted, first)
                sums = _pattern_sums(resp, cond.inverse, cond.patterns.shape[0])
                if ct.matrices:
                    outer = np.matmul(weighted.transpose(0, 2, 1), cond.filled)
                    outer = 0.5 * (outer + outer.transpose(0, 2, 1))
                    second += outer.sum(axis=0) if ct.shared else outer
                else:
                    second += np.einsum("knd,knd->kd", weighted, cond.filled)
                # The conditional covariances, summed per pattern over a group's tiles, go in once per group.
                if pending and pending[-1][0] is cond.patterns:
                    pending[-1][2] += sums
                else:
                    pending.append([cond.patterns, cond.covariance, sums])
            for patterns, covariance, sums in pending:
                self._add_conditional_covariances(second, patterns, covariance, sums)
        return GaussianMixtureStats(
            n=float(n),
            loglik=loglik,
            n_nonfinite=stats.n_nonfinite + layout.n_infinite,
            shift=stats.shift,
            resp_sum=resp_sum,
            first=first,
            second=second,
            log_prior=stats.log_prior,
        )

    def _add_conditional_covariances(
        self, second: FloatArray, patterns: IntArray, covariance: FloatArray, sums: FloatArray
    ) -> None:
        """Add ``sum_i r_ki Cov(x_M | x_O, k)`` into the missing blocks of the second moments.

        ``covariance`` (k, p, m, m) per component and pattern, ``sums`` (k, p) the
        responsibilities summed over each pattern's rows.
        """
        ct = covariance_type(self.covariance_type)
        k = sums.shape[0]
        extra = sums[:, :, None, None] * covariance
        p = patterns
        if not ct.matrices:
            variances = np.diagonal(extra, axis1=-2, axis2=-1)
            np.add.at(second, (np.arange(k)[:, None, None], p[None, :, :]), variances)
        elif ct.shared:
            np.add.at(second, (p[:, :, None], p[:, None, :]), extra.sum(axis=0))
        else:
            np.add.at(second, (np.arange(k)[:, None, None, None], p[None, :, :, None], p[None, :, None, :]), extra)

    # -- internals -------------------------------------------------------------------------

    def _whitener(self, params: GaussianMixtureParams, shift: FloatArray, dtype: Any) -> Whitener:
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        return make_whitener(
            covariance_type(self.covariance_type),
            log_weights,
            params.means - shift,
            params.precisions_cholesky,
            dtype,
        )

    def _tiles(  # type: ignore[no-untyped-def]
        self,
        block: NDArray[Any],
        params: GaussianMixtureParams,
        shift: FloatArray,
        squared: bool = False,
        densities: bool = True,
    ):
        """Yield feature-major tiles of ``block``, centred on ``shift``, with their buffers.

        Each item is ``(xt, log_prob, resp, work)``: the centred tile (d, t), its weighted
        log-probabilities (k, t), a responsibility buffer (k, t) and the (k, d, t) work
        buffer holding the whitened residuals (squared if ``squared``), free for the caller
        once the log-probabilities are computed. Without ``densities`` nothing is whitened
        (``log_prob`` is None, ``work`` free). The buffers are allocated once per block and
        reused for every tile (contiguous views of their fronts for a short last tile).
        float32 blocks are processed in float32 (twice the BLAS speed, half the memory
        traffic); everything else in float64.
        """
        dtype = np.dtype(np.float32) if block.dtype == np.float32 else np.dtype(np.float64)
        whitener = self._whitener(params, shift, dtype)
        n, d = block.shape
        k = self.n_components
        t = max(1, min(tile_rows(k, d), n))
        xt_buf, work_buf = np.empty(d * t, dtype), np.empty(k * d * t, dtype)
        log_prob_buf, resp_buf = np.empty(k * t, dtype), np.empty(k * t, dtype)
        for start in range(0, n, t):
            m = min(t, n - start)
            xt = scratch(xt_buf, (d, m))
            np.subtract(block[start : start + m].T, shift[:, None], out=xt, casting="same_kind")
            log_prob = (
                whitener.weighted_log_prob(xt, scratch(work_buf, (k, d, m)), scratch(log_prob_buf, (k, m)), squared)
                if densities
                else None
            )
            yield xt, log_prob, scratch(resp_buf, (k, m)), scratch(work_buf, (k, d, m))
