"""Linear-Gaussian latent models: probabilistic PCA and factor analysis, by EM, out of core.

Both models (Tipping & Bishop 1999; Rubin & Thayer 1982) explain ``d`` features by
``q <= d`` latent factors::

    x = W^T z + mu + eps,    z ~ N(0, I_q),    eps ~ N(0, Psi)

with ``W`` the (q, d) loading matrix (scikit-learn's ``components_``) and ``Psi``
diagonal: ``sigma^2 I`` for :class:`PPCAModel`, one variance per feature for
:class:`FactorAnalysisModel`. The rows are Gaussian with covariance ``C = W^T W + Psi``.

E-step. Under parameters ``(m, W, Psi)`` the posterior of ``z`` given a row has
covariance ``M^-1`` and mean ``E[z] = M^-1 W Psi^-1 y``, with ``y = x - m`` and the
q x q matrix ``M = I + W Psi^-1 W^T``. Each block adds up, around the shift ``m`` (the
current mean, which every worker has)::

    n,  s = sum y (d),  sum E[z] (q),  T = sum E[z] y^T (q, d),
    S = sum E[z z^T] = n M^-1 + sum E[z] E[z]^T (q, q),  Q = sum y * y (d)

and its log-likelihood under ``(m, W, Psi)``, from those sums alone: the determinant
lemma gives ``log|C| = log|Psi| + log|M|`` and Woodbury's identity
``y^T C^-1 y = y^T Psi^-1 y - b^T M^-1 b`` with ``b = W Psi^-1 y``; as
``M^-1 b = E[z]``, the sum over the rows is ``<Q, diag Psi^-1> - <W Psi^-1, T>``. No
d x d matrix is formed, let alone inverted, per row or per block.

M-step. The maximum-likelihood mean is the sample mean ``x̄ = m + a``, ``a = s / n``,
whatever ``W`` and ``Psi``, so ``(x̄, W, Psi)`` is at least as likely as ``(m, W, Psi)``.
The posterior under mean ``x̄`` differs from the one computed under ``m`` by a constant:
``E'[z] = E[z] - c`` with ``c = M^-1 W Psi^-1 a = sum E[z] / n``, and the same
covariance. Its statistics around ``x̄`` therefore follow exactly from the shifted ones::

    T' = T - (sum E[z]) a^T,    S' = S - (sum E[z]) (sum E[z])^T / n,    Q' = Q - s * a

and the M-step is the EM update from ``(x̄, W, Psi)``: ``W' = S'^-1 T'``, ``Psi'`` the
diagonal of ``(Q' - <W', T'>_columns) / n`` (factor analysis) or its mean (PPCA). Each
iteration thus never lowers the likelihood, and the recorded log-likelihood is that of
the parameters the E-step used. After the first iteration ``m = x̄`` up to rounding, so
``a`` is tiny and the corrections cancel nothing, for data far from the origin too.

Missing values (``missing="marginalize"``). A NaN entry is a coordinate missing at
random. The complete rows of a block take the path above unchanged; a row with observed
coordinates ``O`` and missing ones ``M`` adds the expectations, given ``x_O`` under
``(m, W, Psi)``, of its complete-data statistics, those of ``(x, z)``. With
``M_O = I + W_O Psi_O^-1 W_O^T`` (q x q, factorised once per pattern of missing
coordinates in a tile)::

    E[z] = M_O^-1 W_O Psi_O^-1 y_O,   Cov(z) = M_O^-1,   E[y_M] = W_M^T E[z],
    Cov(z, y_M) = M_O^-1 W_M,   Var(y_j) = W_j^T M_O^-1 W_j + Psi_j  (j in M)

so ``s`` takes ``E[y]``, ``T`` takes ``E[z] E[y]^T + Cov(z, y)``, ``S`` takes
``M_O^-1 + E[z] E[z]^T`` and ``Q`` takes ``E[y]^2`` plus the variances of the missing
coordinates; ``loglik`` is the observed-data log-likelihood, ``log N(y_O; 0, C_OO)`` by
the determinant lemma and Woodbury on the observed coordinates. Rows with every
coordinate missing are skipped. The shift argument of the M-step above no longer holds
(the posterior of an incomplete row does not move by the same constant), so when a set of
statistics holds incomplete rows the M-step maximises the expected complete-data
log-likelihood over ``(mean, W, Psi)`` jointly, with the augmented latent ``[z; 1]``::

    W~ = S~^-1 T~,   S~ = [[S, sum E[z]], [sum E[z]^T, n]],   T~ = [[T], [s^T]]

the new loadings the first ``q`` rows of ``W~``, the new mean ``m`` plus its last row and
``Psi_j = (Q_j - sum_r W~_rj T~_rj) / n`` (PPCA: their mean): an exact EM step, so the
observed-data likelihood never decreases.

Everything is float64 (float32 rows are widened tile by tile); blocks are processed in
tiles of at most :func:`~daskem.models.gaussian.tile_rows` rows, so a worker holds one
(t, d) tile buffer besides its block.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from daskem.errors import ParameterError
from daskem.models.base import check_width
from daskem.models.gaussian import LOG_2PI, FloatArray, check_shape, scratch, tile_rows
from daskem.models.missing import IntArray, MissingLayout, check_missing_policy, missing_layout

#: Smallest noise variance an M-step returns, relative to the mean per-feature variance of the data.
NOISE_FLOOR = 1e-12

#: How :meth:`_LinearGaussianModel.svd_init_params` computes its SVD (scikit-learn's ``svd_method``).
SVD_METHODS = ("lapack", "randomized")

#: The orthogonal rotations of the loadings :func:`ortho_rotation` computes (scikit-learn's ``rotation``).
ROTATIONS = ("varimax", "quartimax")

#: Smallest squared singular value above 1 an SVD start keeps per factor, in units of the noise
#: (a factor with none would start at zero loadings, a fixed point of EM).
SVD_INIT_FLOOR = 1e-2


def ortho_rotation(
    components: Any, method: str = "varimax", tol: float = 1e-6, max_iter: int = 100
) -> NDArray[np.float64]:
    """Rotate loadings by the orthogonal rotation maximising the varimax or quartimax criterion.

    Kaiser's (1958) iteration as scikit-learn's ``FactorAnalysis(rotation=...)`` runs it
    (the same steps, tolerance and iteration cap, so the same numbers): each step takes
    the SVD ``U S V^T`` of ``L^T (R^3 - G)``, with ``L = components.T``, ``R = L @ rot``
    the current rotated loadings and ``G = R * mean(R**2, axis=0)`` for varimax, 0 for
    quartimax, sets ``rot = U V^T`` and stops once ``sum S`` grows by less than a factor
    ``1 + tol``. The rotation leaves ``components.T @ components``, hence the model's
    covariance and likelihood, unchanged.

    Parameters
    ----------
    components : array-like of shape (n_components, n_features)
        Loadings (``components_``).
    method : {"varimax", "quartimax"}, default="varimax"
        The criterion.
    tol : float, default=1e-6
        Relative growth of the criterion below which the iteration stops.
    max_iter : int, default=100
        Most iterations.

    Returns
    -------
    ndarray of shape (n_components, n_features)
        The rotated loadings.
    """
    if method not in ROTATIONS:
        raise ParameterError(f"The rotation must be one of {list(ROTATIONS)}; got {method!r}.")
    loadings = np.asarray(components, dtype=np.float64).T
    nrow, ncol = loadings.shape
    if ncol == 0:
        return loadings.T.copy()
    rotation = np.eye(ncol)
    criterion = 0.0
    for _ in range(max_iter):
        rotated = loadings @ rotation
        target = rotated**3
        if method == "varimax":
            target = target - rotated * ((rotated**2).sum(axis=0) / nrow)
        u, s, vt = np.linalg.svd(loadings.T @ target)
        rotation = u @ vt
        new = float(np.sum(s))
        if criterion != 0 and new < criterion * (1 + tol):
            break
        criterion = new
    return np.asarray((loadings @ rotation).T)


def check_latent_dimension(n_components: int, n_features: int) -> None:
    """Raise :class:`ParameterError` if ``n_components > n_features``, naming both and the fix."""
    if n_components > n_features:
        raise ParameterError(
            f"n_components={n_components} must be <= n_features={n_features}: there cannot be more latent "
            f"factors than features. Reduce n_components to at most {n_features}."
        )


def _parse(components: Any, mean: Any, noise: Any, isotropic: bool) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Checked float64 parameter arrays: shapes, ``q <= d``, finite values, positive noise."""
    w = np.asarray(components, dtype=np.float64)
    if w.ndim != 2:
        raise ParameterError(
            f"The parameter 'components' should be 2-D (n_components, n_features), but got shape {w.shape}."
        )
    q, d = w.shape
    check_latent_dimension(q, d)
    mu = check_shape("mean", mean, (d,))
    psi = check_shape("noise_variance", noise, () if isotropic else (d,))
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(mu))):
        raise ParameterError("The parameters 'components' and 'mean' must be finite; got NaN or infinite values.")
    if not np.all((psi > 0.0) & (psi < np.inf)):
        low = psi.min() if np.all(np.isfinite(psi)) else psi[~np.isfinite(psi)][0]
        raise ParameterError(
            f"The parameter 'noise_variance' must be positive and finite, but got "
            f"{'' if isotropic else 'a minimum of '}{float(low)!r}. Pass variances > 0, e.g. the data's variance."
        )
    return w, mu, psi


@dataclass(frozen=True)
class PPCAParams:
    """Parameters of probabilistic PCA (checked on construction).

    Attributes
    ----------
    components : ndarray of shape (q, d)
        Loading matrix ``W`` (scikit-learn's ``components_``), defined up to a rotation.
    mean : ndarray of shape (d,)
    noise_variance : float
        Isotropic noise variance ``sigma^2 > 0``.
    """

    components: FloatArray
    mean: FloatArray
    noise_variance: float

    def __post_init__(self) -> None:
        w, mu, psi = _parse(self.components, self.mean, self.noise_variance, isotropic=True)
        object.__setattr__(self, "components", w)
        object.__setattr__(self, "mean", mu)
        object.__setattr__(self, "noise_variance", float(psi))

    @property
    def noise(self) -> FloatArray:
        """Noise variance of every feature, shape (d,)."""
        return np.full(self.mean.shape, self.noise_variance)

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays (the noise variance as shape (1,))."""
        return {"components": self.components, "mean": self.mean, "noise_variance": np.array([self.noise_variance])}


@dataclass(frozen=True)
class FactorAnalysisParams:
    """Parameters of factor analysis (checked on construction).

    Attributes
    ----------
    components : ndarray of shape (q, d)
        Loading matrix ``W`` (scikit-learn's ``components_``), defined up to a rotation.
    mean : ndarray of shape (d,)
    noise_variance : ndarray of shape (d,)
        Noise variance of every feature, all > 0.
    """

    components: FloatArray
    mean: FloatArray
    noise_variance: FloatArray

    def __post_init__(self) -> None:
        w, mu, psi = _parse(self.components, self.mean, self.noise_variance, isotropic=False)
        object.__setattr__(self, "components", w)
        object.__setattr__(self, "mean", mu)
        object.__setattr__(self, "noise_variance", psi)

    @property
    def noise(self) -> FloatArray:
        """Noise variance of every feature, shape (d,)."""
        return self.noise_variance

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {"components": self.components, "mean": self.mean, "noise_variance": self.noise_variance}


LinearGaussianParams = PPCAParams | FactorAnalysisParams


@dataclass(frozen=True)
class LinearGaussianStats:
    """Sufficient statistics of a set of rows under one parameter set (see the module docstring).

    Attributes
    ----------
    n : float
        Rows seen.
    loglik : float
        Summed log-likelihood of the rows under the parameters used.
    n_nonfinite : int
        NaN or infinite values seen.
    shift : ndarray of shape (d,)
        The mean ``m`` of the parameters used: every sum is of ``y = x - m``.
    first : ndarray of shape (d,)
        ``s = sum y``.
    latent_sum : ndarray of shape (q,)
        ``sum E[z]``.
    cross : ndarray of shape (q, d)
        ``T = sum E[z] y^T``.
    latent_second : ndarray of shape (q, q)
        ``S = sum E[z z^T]`` (posterior covariances included).
    square : ndarray of shape (d,)
        ``Q = sum y * y``, per feature.
    n_incomplete : float, default=0.0
        Rows with missing coordinates among the ``n`` (``missing="marginalize"``): their
        sums are expectations given the observed coordinates, and the M-step is then the
        joint one (see :meth:`_LinearGaussianModel.m_step`).
    """

    n: float
    loglik: float
    n_nonfinite: int
    shift: FloatArray = field(repr=False)
    first: FloatArray = field(repr=False)
    latent_sum: FloatArray = field(repr=False)
    cross: FloatArray = field(repr=False)
    latent_second: FloatArray = field(repr=False)
    square: FloatArray = field(repr=False)
    n_incomplete: float = 0.0


@dataclass(frozen=True)
class _Posterior:
    """The posterior of ``z`` given a row under one parameter set, prepared once per block.

    ``projection_t`` (d, q) is ``(M^-1 W Psi^-1)^T``, so a tile's posterior means are one
    product ``y @ projection_t``; ``weighted`` (q, d) is ``W Psi^-1``, ``covariance``
    (q, q) is ``M^-1``, ``precision`` (d,) is ``diag Psi^-1`` and ``log_norm`` is
    ``-(d log 2 pi + log|C|) / 2``.
    """

    mean: FloatArray
    projection_t: FloatArray
    weighted: FloatArray
    covariance: FloatArray
    precision: FloatArray
    log_norm: float


def _posterior(params: LinearGaussianParams) -> _Posterior:
    w, psi = params.components, params.noise
    q, d = w.shape
    weighted = w / psi
    m = weighted @ w.T
    m.flat[:: q + 1] += 1.0
    factor = linalg.cho_factor(m, lower=True)
    log_det = float(np.log(psi).sum() + 2.0 * np.log(np.diag(factor[0])).sum())
    return _Posterior(
        mean=params.mean,
        projection_t=np.ascontiguousarray(linalg.cho_solve(factor, weighted).T),
        weighted=weighted,
        covariance=linalg.cho_solve(factor, np.eye(q)),
        precision=1.0 / psi,
        log_norm=-0.5 * (d * LOG_2PI + log_det),
    )


def _tile_size(n: int, d: int) -> int:
    """Rows per tile of an ``n``-row block: a (t, d) buffer of at most 4 MiB.

    Large enough that the handful of NumPy calls per tile do not serialise threads on
    the GIL (1,024-row tiles of 64 features run no faster on two threads than on one).
    """
    return max(1, min(tile_rows(1, d), n))


def _tiles(post: _Posterior, block: NDArray[Any]):  # type: ignore[no-untyped-def]
    """Yield ``(y, ez)`` per tile of ``block``: the rows minus the mean (t, d) and their
    posterior means (t, q), in float64 buffers allocated once per block and reused."""
    n, d = block.shape
    q = post.projection_t.shape[1]
    t = _tile_size(n, d)
    y_buf, z_buf = np.empty(t * d), np.empty(t * q)
    for start in range(0, n, t):
        rows = min(t, n - start)
        y = scratch(y_buf, (rows, d))
        np.subtract(block[start : start + rows], post.mean, out=y)
        yield y, np.matmul(y, post.projection_t, out=scratch(z_buf, (rows, q)))


@dataclass(frozen=True)
class _Incomplete:
    """A tile of the incomplete rows of a block, given their observed coordinates.

    Attributes
    ----------
    rows : ndarray of shape (t,)
        Their indices in the block.
    missing : ndarray of shape (t, m)
        The missing coordinates of each row.
    filled : ndarray of shape (t, d)
        ``E[y | x_O]``: the observed ``y_O = x_O - m`` and the missing coordinates'
        conditional means ``W_M^T E[z | x_O]``.
    latent : ndarray of shape (t, q)
        ``E[z | x_O]``.
    log_prob : ndarray of shape (t,)
        ``log N(y_O; 0, C_OO)``: the observed coordinates' log-density.
    patterns : ndarray of shape (u, m)
        The distinct missing patterns of the tile.
    inverse : ndarray of shape (t,)
        The pattern of each row.
    covariance : ndarray of shape (u, q, q)
        ``Cov(z | x_O) = M_O^-1`` per pattern.
    cross : ndarray of shape (u, q, m)
        ``Cov(z, y_M | x_O) = M_O^-1 W_M`` per pattern.
    variance : ndarray of shape (u, m)
        ``Var(y_j | x_O) = W_j^T M_O^-1 W_j + Psi_j`` of the missing coordinates, per pattern.
    """

    rows: IntArray
    missing: IntArray
    filled: FloatArray
    latent: FloatArray
    log_prob: FloatArray
    patterns: IntArray
    inverse: IntArray
    covariance: FloatArray
    cross: FloatArray
    variance: FloatArray

    @property
    def counts(self) -> FloatArray:
        """Rows of each pattern: shape (u,)."""
        return np.bincount(self.inverse, minlength=self.patterns.shape[0]).astype(np.float64)


def _incomplete_tiles(params: LinearGaussianParams, block: NDArray[Any], layout: MissingLayout):  # type: ignore[no-untyped-def]
    """Yield an :class:`_Incomplete` per tile of each group of incomplete rows of ``block``.

    A group's rows are visited by pattern, so that a pattern's ``M_O`` is factorised once
    per tile it spans; per tile the memory is ``O(t q d)``, per row the work ``O(d q)``,
    per pattern ``O(d q^2 + q^3)``. No d x d matrix is formed.
    """
    w, psi = params.components, params.noise
    q, d = w.shape
    precision = 1.0 / psi
    log_psi = np.log(psi)
    total_log_psi = float(log_psi.sum())
    tile = tile_rows(max(q, 1), d)
    for group in layout.groups:
        m = group.width
        order = np.argsort(group.inverse, kind="stable")
        for start in range(0, order.size, tile):
            take = order[start : start + tile]
            rows, missing = group.rows[take], group.missing[take]
            used, inverse = np.unique(group.inverse[take], return_inverse=True)
            inverse = inverse.reshape(-1).astype(np.intp)
            patterns = group.patterns[used]
            u = patterns.shape[0]
            # Psi_O^-1 per pattern (0 at the missing coordinates), then M_O = I + W_O Psi_O^-1 W_O^T.
            kept = np.repeat(precision[np.newaxis, :], u, axis=0)
            kept[np.arange(u)[:, np.newaxis], patterns] = 0.0
            m_obs = np.matmul(w[np.newaxis, :, :] * kept[:, np.newaxis, :], w.T)
            m_obs += np.eye(q)
            chol = np.linalg.cholesky(m_obs)
            log_det = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
            covariance = np.linalg.solve(m_obs, np.broadcast_to(np.eye(q), m_obs.shape))
            covariance = 0.5 * (covariance + covariance.transpose(0, 2, 1))
            w_mis = w[:, patterns].transpose(1, 0, 2)  # (u, q, m)
            cross = np.matmul(covariance, w_mis)
            variance = np.einsum("uqm,uqm->um", w_mis, cross) + psi[patterns]
            index = (np.arange(rows.size)[:, np.newaxis], missing)
            filled = np.asarray(block[rows], dtype=np.float64) - params.mean
            filled[index] = 0.0
            b = (filled * precision) @ w.T  # W_O Psi_O^-1 y_O
            latent = np.einsum("tab,tb->ta", covariance[inverse], b)
            quad = (filled * filled) @ precision - np.einsum("ta,ta->t", b, latent)
            log_prob = -0.5 * (
                (d - m) * LOG_2PI + total_log_psi - log_psi[missing].sum(axis=1) + log_det[inverse] + quad
            )
            filled[index] = (latent @ w)[index]
            yield _Incomplete(rows, missing, filled, latent, log_prob, patterns, inverse, covariance, cross, variance)


def _nan_moments(rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-feature mean and variance of ``rows`` over their non-NaN entries.

    A feature with no observed entry gets mean 0, one with fewer than two variance 0.
    """
    observed = np.count_nonzero(~np.isnan(rows), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty columns: handled below
        mean = np.nanmean(rows, axis=0) if rows.shape[0] else np.full(rows.shape[1], np.nan)
        variance = np.nanvar(rows, axis=0) if rows.shape[0] else np.full(rows.shape[1], np.nan)
    return np.where(observed > 0, mean, 0.0), np.where(observed > 1, variance, 0.0)


@dataclass(frozen=True)
class _LinearGaussianModel:
    """What PPCA and factor analysis share: everything but the form of the noise.

    Parameters
    ----------
    n_components : int
        Number of latent factors ``q``.
    missing : {"error", "marginalize"}
        ``"marginalize"``: NaN entries are coordinates missing at random; each row's
        likelihood and posterior come from its observed coordinates, and the statistics
        take the missing coordinates' conditional expectations (:meth:`e_step`).
        ``"error"``: NaN are errors, as every non-finite value.
    """

    n_components: int
    missing: str = "error"

    _isotropic: ClassVar[bool]
    _name: ClassVar[str]

    #: What to do when the statistics are not finite (see daskem.em.checks.check_stats).
    numerical_advice = (
        "the data overflow float64 or the noise variance collapsed. Scale the features (e.g. standardise them) "
        "or reduce n_components."
    )

    def __post_init__(self) -> None:
        q = self.n_components
        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 0:
            raise ParameterError(
                f"The 'n_components' parameter of {type(self).__name__} must be an int in the range [0, inf). "
                f"Got {q!r} instead."
            )
        check_missing_policy(self.missing, type(self).__name__)

    def make_params(self, components: Any, mean: Any, noise_variance: Any) -> LinearGaussianParams:
        """Checked parameters of this model (``noise_variance`` a scalar for PPCA, (d,) otherwise)."""
        if self._isotropic:
            return PPCAParams(components, mean, noise_variance)
        return FactorAnalysisParams(components, mean, noise_variance)

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {
            "model": self._name,
            "n_components": int(self.n_components),
            # Only when set: the specs of fits without missing values stay as they were.
            **({"missing": self.missing} if self.missing != "error" else {}),
        }

    def zero_stats(self, params: LinearGaussianParams) -> LinearGaussianStats:
        """Statistics of no rows, centred on the mean of ``params``."""
        q, d = params.components.shape
        return LinearGaussianStats(
            n=0.0,
            loglik=0.0,
            n_nonfinite=0,
            shift=params.mean.copy(),
            first=np.zeros(d),
            latent_sum=np.zeros(q),
            cross=np.zeros((q, d)),
            latent_second=np.zeros((q, q)),
            square=np.zeros(d),
        )

    def combine(self, a: LinearGaussianStats, b: LinearGaussianStats) -> LinearGaussianStats:
        """Sum the statistics of two disjoint sets of rows (same shift)."""
        return LinearGaussianStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            shift=a.shift,
            first=a.first + b.first,
            latent_sum=a.latent_sum + b.latent_sum,
            cross=a.cross + b.cross,
            latent_second=a.latent_second + b.latent_second,
            square=a.square + b.square,
            n_incomplete=a.n_incomplete + b.n_incomplete,
        )

    def recentre(self, stats: LinearGaussianStats, like: LinearGaussianStats) -> LinearGaussianStats:
        """``stats`` with every sum of ``y`` taken around ``like.shift`` instead.

        With ``delta = m - m'`` and ``y' = y + delta`` (incomplete rows' expectations alike):
        ``s + n delta``, ``T + (sum E[z]) delta^T`` and ``Q + 2 delta * s + n delta * delta``;
        ``sum E[z]`` and ``S`` do not involve ``y``.
        """
        if stats.shift is like.shift or np.array_equal(stats.shift, like.shift):
            return stats
        delta = stats.shift - like.shift
        n = stats.n
        return replace(
            stats,
            shift=np.array(like.shift),
            first=stats.first + n * delta,
            cross=stats.cross + np.outer(stats.latent_sum, delta),
            square=stats.square + 2.0 * delta * stats.first + n * delta * delta,
        )

    def scale(self, stats: LinearGaussianStats, factor: float) -> LinearGaussianStats:
        """``stats`` with ``n``, ``n_incomplete``, ``loglik`` and every sum times ``factor`` (the same shift)."""
        return replace(
            stats,
            n=stats.n * factor,
            loglik=stats.loglik * factor,
            first=stats.first * factor,
            latent_sum=stats.latent_sum * factor,
            cross=stats.cross * factor,
            latent_second=stats.latent_second * factor,
            square=stats.square * factor,
            n_incomplete=stats.n_incomplete * factor,
        )

    def log_likelihood(self, stats: LinearGaussianStats) -> float:
        """Total log-likelihood of the rows behind ``stats``."""
        return float(stats.loglik)

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> LinearGaussianParams:
        """Rebuild parameters from named arrays, checking their shapes."""
        components = np.asarray(arrays["components"], dtype=np.float64)
        d = components.shape[-1] if components.ndim else 0
        check_shape("components", components, (self.n_components, d))
        if self._isotropic:
            return self.make_params(
                components, arrays["mean"], check_shape("noise_variance", arrays["noise_variance"], (1,))[0]
            )
        return self.make_params(components, arrays["mean"], arrays["noise_variance"])

    def _layout(self, params: LinearGaussianParams, block: NDArray[Any]) -> MissingLayout | None:
        """The block's missing values when this model marginalises them (None: none, or refused)."""
        check_width(block, params.components.shape[1])
        return missing_layout(block) if self.missing == "marginalize" else None

    def e_step(self, params: LinearGaussianParams, block: NDArray[Any]) -> LinearGaussianStats:
        """Statistics of one block of rows under ``params`` (one read of the block).

        With ``missing="marginalize"`` the block's complete rows take the complete-data
        path unchanged (a block without NaN gives its statistics bit for bit) and its
        incomplete rows add their expected statistics given the observed coordinates
        (see the module docstring); rows with every coordinate missing are skipped.
        ``loglik`` is then the observed-data log-likelihood.
        """
        layout = self._layout(params, block)
        if layout is None:
            return self._complete_stats(params, block)
        return self._incomplete_stats(params, block, layout, self._complete_stats(params, block[layout.complete]))

    def _incomplete_stats(
        self, params: LinearGaussianParams, block: NDArray[Any], layout: MissingLayout, stats: LinearGaussianStats
    ) -> LinearGaussianStats:
        """``stats`` (of the complete rows) plus the expected statistics of the incomplete rows."""
        q = params.components.shape[0]
        first, latent_sum, square = stats.first.copy(), stats.latent_sum.copy(), stats.square.copy()
        cross, second = stats.cross.copy(), stats.latent_second.copy()
        loglik, rows = stats.loglik, 0
        with np.errstate(invalid="ignore", over="ignore"):
            for tile in _incomplete_tiles(params, block, layout):
                counts = tile.counts
                rows += tile.rows.size
                loglik += float(tile.log_prob.sum())
                first += tile.filled.sum(axis=0)
                latent_sum += tile.latent.sum(axis=0)
                cross += tile.latent.T @ tile.filled
                # Cov(z, y_M) on the missing columns, once per pattern times its rows.
                np.add.at(
                    cross,
                    (np.arange(q)[np.newaxis, :, np.newaxis], tile.patterns[:, np.newaxis, :]),
                    counts[:, np.newaxis, np.newaxis] * tile.cross,
                )
                second += tile.latent.T @ tile.latent + np.tensordot(counts, tile.covariance, axes=1)
                square += np.einsum("td,td->d", tile.filled, tile.filled)
                np.add.at(square, tile.patterns, counts[:, np.newaxis] * tile.variance)
        return LinearGaussianStats(
            n=stats.n + rows,
            loglik=float(loglik),
            n_nonfinite=stats.n_nonfinite + layout.n_infinite,
            shift=stats.shift,
            first=first,
            latent_sum=latent_sum,
            cross=cross,
            latent_second=second,
            square=square,
            n_incomplete=stats.n_incomplete + rows,
        )

    def _complete_stats(self, params: LinearGaussianParams, block: NDArray[Any]) -> LinearGaussianStats:
        """Statistics of rows without missing values (the complete-data E-step)."""
        q, d = params.components.shape
        check_width(block, d)
        post = _posterior(params)
        first, latent_sum, square = np.zeros(d), np.zeros(q), np.zeros(d)
        cross, outer = np.zeros((q, d)), np.zeros((q, q))
        n = block.shape[0]
        # Column sums as products with ones: BLAS, several times faster than sum(axis=0).
        ones = np.ones(_tile_size(n, d))
        # Non-finite data give non-finite sums; they are counted below and reported by the driver.
        with np.errstate(invalid="ignore", over="ignore"):
            for y, ez in _tiles(post, block):
                ones_t = ones[: y.shape[0]]
                first += ones_t @ y
                latent_sum += ones_t @ ez
                cross += ez.T @ y
                outer += ez.T @ ez
                np.square(y, out=y)
                square += ones_t @ y
            # Sums of squares are finite exactly when every value is (and nothing overflows).
            n_nonfinite = 0 if np.all(np.isfinite(square)) else int(block.size - np.count_nonzero(np.isfinite(block)))
            quadratic = square @ post.precision - float(np.vdot(post.weighted, cross))
            loglik = n * post.log_norm - 0.5 * quadratic
        return LinearGaussianStats(
            n=float(n),
            loglik=float(loglik),
            n_nonfinite=n_nonfinite,
            shift=params.mean.copy(),
            first=first,
            latent_sum=latent_sum,
            cross=cross,
            latent_second=outer + n * post.covariance,
            square=square,
        )

    def m_step(self, stats: LinearGaussianStats, params: LinearGaussianParams | None) -> LinearGaussianParams:
        """New parameters: the sample mean, and the EM update of ``W`` and the noise from it.

        The statistics, taken around the previous mean, are moved to the sample mean
        exactly (see the module docstring); ``params`` is not needed. Statistics holding
        incomplete rows (``stats.n_incomplete > 0``) take the joint update of the mean,
        ``W`` and the noise instead (the module docstring's augmented latent ``[z; 1]``).
        """
        n = stats.n
        a = stats.first / n
        square = stats.square - stats.first * a
        floor = max(NOISE_FLOOR * float(square.mean()) / n, float(np.finfo(np.float64).tiny))
        if stats.n_incomplete > 0:
            q = stats.latent_sum.shape[0]
            second = np.empty((q + 1, q + 1))
            second[:q, :q] = stats.latent_second
            second[:q, q] = second[q, :q] = stats.latent_sum
            second[q, q] = n
            cross = np.vstack([stats.cross, stats.first[np.newaxis, :]])
            solution = linalg.cho_solve(linalg.cho_factor(second, lower=True), cross)
            residual = (stats.square - np.einsum("kj,kj->j", solution, cross)) / n
            components, mean = solution[:q], stats.shift + solution[q]
        else:
            cross = stats.cross - np.outer(stats.latent_sum, a)
            second = stats.latent_second - np.outer(stats.latent_sum, stats.latent_sum) / n
            components = linalg.cho_solve(linalg.cho_factor(second, lower=True), cross)
            residual = (square - np.einsum("kj,kj->j", components, cross)) / n
            mean = stats.shift + a
        noise = np.maximum(residual.mean() if self._isotropic else residual, floor)
        return self.make_params(components, mean, noise)

    # -- vector form (acceleration) --------------------------------------------------------

    def to_vector(self, params: LinearGaussianParams) -> FloatArray:
        """Unconstrained coordinates: ``W`` flattened, then the log noise variance(s).

        The mean is left out: every M-step sets it to the sample mean (with missing
        values, jointly with ``W`` and the noise), so extrapolating it gains little.
        """
        return np.concatenate([params.components.ravel(), np.log(np.atleast_1d(params.noise_variance))])

    def from_vector(self, vector: FloatArray, like: LinearGaussianParams) -> LinearGaussianParams:
        """Parameters from :meth:`to_vector` coordinates, the mean from ``like``.

        Raises :class:`ParameterError` (a ``ValueError``) when the noise overflows.
        """
        q, d = like.components.shape
        with np.errstate(over="ignore"):
            noise = np.exp(vector[q * d :])
        return self.make_params(vector[: q * d].reshape(q, d), like.mean, noise[0] if self._isotropic else noise)

    # -- initialisation ------------------------------------------------------------------

    def init_params(self, sample: NDArray[Any], rng: np.random.Generator) -> LinearGaussianParams:
        """A start from a few rows: their mean, random loadings and noise on their scale.

        With ``v`` the per-feature variance of ``sample`` (1 where it is 0 or unknown),
        ``W`` is standard normal scaled by ``sqrt(v / (2 q))`` column by column and the
        noise is ``v / 2`` (PPCA: its mean), so that about half of each feature's
        variance starts explained. EM needs no better start: PPCA has no local maxima
        other than the global one, up to rotation.

        With ``missing="marginalize"`` the mean and variances are those of each feature's
        observed (non-NaN) entries; a feature with none starts at mean 0.

        Parameters
        ----------
        sample : ndarray of shape (m, d)
            Rows of the data (a few hundred suffice).
        rng : numpy.random.Generator
            Source of the random loadings.
        """
        rows = np.asarray(sample, dtype=np.float64)
        q, d = self.n_components, rows.shape[1]
        check_latent_dimension(q, d)
        if self.missing == "marginalize":
            mean, variance = _nan_moments(rows)
        else:
            mean = rows.mean(axis=0)
            variance = rows.var(axis=0) if rows.shape[0] > 1 else np.zeros(d)
        variance = np.where(variance > 0.0, variance, 1.0)
        components = rng.standard_normal((q, d)) * np.sqrt(variance / (2.0 * max(q, 1)))
        noise = variance / 2.0
        return self.make_params(components, mean, noise.mean() if self._isotropic else noise)

    def svd_init_params(
        self,
        sample: NDArray[Any],
        noise_variance: Any = None,
        *,
        svd_method: str = "lapack",
        iterated_power: int = 3,
        random_state: int | None = None,
    ) -> LinearGaussianParams:
        """A start from a few rows: scikit-learn's FactorAnalysis step on them.

        With ``m`` rows of mean ``x̄`` and a starting noise ``Psi`` (``noise_variance``,
        else half of each feature's variance in ``sample``, 1 where that is 0; PPCA: their
        mean), the loadings are the maximum-likelihood ones given ``Psi`` (scikit-learn's
        SVD step): with ``s_k``, ``v_k`` the leading ``q`` singular values and right
        vectors of ``(sample - x̄) Psi^-1/2 / sqrt(m)``, ``W_k = sqrt(s_k^2 - 1) v_k Psi^1/2``.
        ``s_k^2 - 1`` is floored at :data:`SVD_INIT_FLOOR` (zero loadings are a fixed
        point of EM); factors beyond the rank of ``sample`` start at that floor along
        further orthonormal directions. With ``missing="marginalize"`` each NaN of
        ``sample`` is first replaced by its feature's mean over the observed entries (0
        for a feature with none).

        Parameters
        ----------
        sample : ndarray of shape (m, d)
            Rows of the data (the first ones).
        noise_variance : float or array-like of shape (d,), optional
            The starting noise variance ``Psi`` (PPCA: a scalar).
        svd_method : {"lapack", "randomized"}, default="lapack"
            ``"lapack"``: the exact SVD (:func:`scipy.linalg.svd`); ``"randomized"``:
            :func:`sklearn.utils.extmath.randomized_svd` with ``iterated_power`` power
            iterations, faster for many features and rows.
        iterated_power : int, default=3
            Power iterations of the randomized SVD.
        random_state : int, optional
            Seed of the randomized SVD's (and the extra directions') random draws.

        Returns
        -------
        PPCAParams or FactorAnalysisParams
            The starting parameters.
        """
        from sklearn.utils.extmath import randomized_svd

        if svd_method not in SVD_METHODS:
            raise ParameterError(f"The svd_method must be one of {list(SVD_METHODS)}; got {svd_method!r}.")
        rows = np.asarray(sample, dtype=np.float64)
        q, (m, d) = self.n_components, rows.shape
        check_latent_dimension(q, d)
        if self.missing == "marginalize":
            rows = np.where(np.isnan(rows), _nan_moments(rows)[0], rows)
        mean = rows.mean(axis=0)
        centred = rows - mean
        if noise_variance is None:
            variance = centred.var(axis=0) if m > 1 else np.zeros(d)
            psi = np.where(variance > 0.0, variance, 1.0) / 2.0
            psi = np.full(d, psi.mean()) if self._isotropic else psi
        else:
            psi = np.broadcast_to(np.asarray(noise_variance, dtype=np.float64), (d,)).copy()
        sqrt_psi = np.sqrt(psi)
        scaled = centred / (sqrt_psi * np.sqrt(max(m, 1)))
        k = min(q, m, d)
        if k == 0:
            s, vt = np.zeros(0), np.zeros((0, d))
        elif svd_method == "lapack":
            _, s, vt = linalg.svd(scaled, full_matrices=False, check_finite=False)
            s, vt = s[:k], vt[:k]
        else:
            _, s, vt = randomized_svd(scaled, k, n_iter=iterated_power, random_state=random_state)
        if k < q:
            # More factors than the sample's rank allows: complete the rows of vt to an orthonormal set.
            rng = np.random.default_rng(random_state)
            extra = rng.standard_normal((q - k, d))
            extra -= (extra @ vt.T) @ vt
            basis, _ = np.linalg.qr(extra.T)
            vt = np.vstack([vt, basis.T[: q - k]])
            s = np.concatenate([s, np.zeros(q - k)])
        scale = np.sqrt(np.maximum(s**2 - 1.0, SVD_INIT_FLOOR))
        components = scale[:, np.newaxis] * vt * sqrt_psi
        return self.make_params(components, mean, psi[0] if self._isotropic else psi)

    # -- per-row methods and matrices ------------------------------------------------------

    def transform(self, params: LinearGaussianParams, block: NDArray[Any]) -> FloatArray:
        """Posterior mean ``E[z | x]`` of every row of ``block``: shape (n, q).

        With ``missing="marginalize"`` a row with NaN entries gets ``E[z | x_O]`` given
        its observed coordinates (0, the prior mean, for a row with none observed).
        """
        layout = self._layout(params, block)
        if layout is None:
            return self._complete_transform(params, block)
        out = np.zeros((block.shape[0], params.components.shape[0]))
        out[layout.complete] = self._complete_transform(params, block[layout.complete])
        for tile in _incomplete_tiles(params, block, layout):
            out[tile.rows] = tile.latent
        return out

    def _complete_transform(self, params: LinearGaussianParams, block: NDArray[Any]) -> FloatArray:
        check_width(block, params.components.shape[1])
        out = np.empty((block.shape[0], params.components.shape[0]))
        start = 0
        for _, ez in _tiles(_posterior(params), block):
            out[start : start + ez.shape[0]] = ez
            start += ez.shape[0]
        return out

    def score_samples(self, params: LinearGaussianParams, block: NDArray[Any]) -> FloatArray:
        """Log-likelihood of every row of ``block``: shape (n,).

        With ``missing="marginalize"`` a row with NaN entries gets the log-density of its
        observed coordinates (0 for a row with none observed).
        """
        layout = self._layout(params, block)
        if layout is None:
            return self._complete_score_samples(params, block)
        out = np.zeros(block.shape[0])
        out[layout.complete] = self._complete_score_samples(params, block[layout.complete])
        with np.errstate(invalid="ignore", over="ignore"):
            for tile in _incomplete_tiles(params, block, layout):
                out[tile.rows] = tile.log_prob
        return out

    def impute(self, params: LinearGaussianParams, block: NDArray[Any]) -> FloatArray:
        """The rows of ``block`` with every NaN replaced by its conditional mean: shape (n, d).

        A missing coordinate ``j`` of a row becomes ``E[x_j | x_O] = m_j + W_j^T E[z | x_O]``
        given the row's observed coordinates ``O`` (the mean ``m_j`` for a row with none
        observed); observed values are returned unchanged. Whatever the ``missing``
        policy.

        Parameters
        ----------
        params : PPCAParams or FactorAnalysisParams
            The model's parameters.
        block : ndarray of shape (n, d)
            Rows, with NaN where values are missing.

        Returns
        -------
        ndarray of shape (n, d)
            float64.
        """
        check_width(block, params.components.shape[1])
        out = np.array(block, dtype=np.float64)
        layout = missing_layout(block)
        if layout is None:
            return out
        with np.errstate(invalid="ignore", over="ignore"):
            for tile in _incomplete_tiles(params, block, layout):
                index = (tile.rows[:, np.newaxis], tile.missing)
                out[index] = np.take_along_axis(tile.filled, tile.missing, axis=1) + params.mean[tile.missing]
        # What remains NaN is in rows with every coordinate missing.
        np.copyto(out, np.broadcast_to(params.mean, out.shape), where=np.isnan(out))
        return out

    def _complete_score_samples(self, params: LinearGaussianParams, block: NDArray[Any]) -> FloatArray:
        check_width(block, params.components.shape[1])
        post = _posterior(params)
        out = np.empty(block.shape[0])
        start = 0
        with np.errstate(invalid="ignore", over="ignore"):
            for y, ez in _tiles(post, block):
                explained = np.einsum("ij,ij->i", ez, y @ post.weighted.T)  # b^T M^-1 b per row
                np.square(y, out=y)
                out[start : start + y.shape[0]] = post.log_norm - 0.5 * (y @ post.precision - explained)
                start += y.shape[0]
        return out

    def covariance(self, params: LinearGaussianParams) -> FloatArray:
        """The model covariance ``W^T W + Psi``: shape (d, d)."""
        cov = params.components.T @ params.components
        cov.flat[:: cov.shape[0] + 1] += params.noise
        return np.asarray(cov)

    def precision(self, params: LinearGaussianParams) -> FloatArray:
        """The inverse of :meth:`covariance`: shape (d, d).

        By a Cholesky factorisation of the covariance (``d^3 / 3`` flops, as the d x d
        result itself needs ``d^2`` memory): Woodbury's identity (a q x q solve) loses
        digits to cancellation when a noise variance is small against its feature's
        variance (``cov @ precision`` then misses the identity by ~1e-11 at condition
        number 250, against ~1e-15 by Cholesky). Woodbury remains the fallback should
        the factorisation fail.
        """
        cov = self.covariance(params)
        try:
            return np.asarray(linalg.cho_solve(linalg.cho_factor(cov, lower=True), np.eye(cov.shape[0])))
        except linalg.LinAlgError:
            pass
        post = _posterior(params)
        prec = -(post.weighted.T @ post.covariance @ post.weighted)
        prec.flat[:: prec.shape[0] + 1] += post.precision
        return np.asarray(prec)


@dataclass(frozen=True)
class PPCAModel(_LinearGaussianModel):
    """Probabilistic PCA with ``n_components`` latent factors and isotropic noise ``sigma^2 I``.

    Its maximum-likelihood fit is closed-form (Tipping & Bishop 1999): ``W^T W`` spans the
    leading ``q`` eigenvectors ``U`` of the sample covariance with ``W^T W = U (L - sigma^2) U^T``
    for their eigenvalues ``L``, and ``sigma^2`` is the mean of the discarded eigenvalues.
    EM reaches it without forming the d x d covariance.

    Parameters
    ----------
    n_components : int
        Number of latent factors ``q`` (``0 <= q <= n_features``; 0 leaves only the diagonal noise).
    """

    _isotropic: ClassVar[bool] = True
    _name: ClassVar[str] = "ppca"


@dataclass(frozen=True)
class FactorAnalysisModel(_LinearGaussianModel):
    """Factor analysis with ``n_components`` latent factors and one noise variance per feature.

    Parameters
    ----------
    n_components : int
        Number of latent factors ``q`` (``0 <= q <= n_features``; 0 leaves only the diagonal noise).
    """

    _isotropic: ClassVar[bool] = False
    _name: ClassVar[str] = "factor_analysis"
