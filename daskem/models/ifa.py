"""Independent factor analysis (Attias 1999) by exact EM, out of core.

``d`` features are explained by ``L`` independent sources::

    x = A s + m + eps,    eps ~ N(0, Psi),    Psi diagonal,
    s_i ~ sum_j w_ij N(mu_ij, nu_ij)   (source i a 1-D mixture of m_i Gaussians)

with ``A`` the (d, L) mixing matrix. The sources' joint state ``q = (q_1, ..., q_L)``
(one Gaussian per source) takes ``S = prod m_i`` values, with prior weight
``w_q = prod_i w_{i q_i}``, means ``mu_q`` and the diagonal variances ``V_q``. Given ``q``,
``(x, s)`` is jointly Gaussian, so the E-step is exact: it sums over the ``S`` joint states
of every row. That is what limits the model to a few sources (:data:`MAX_JOINT_STATES`).

E-step. With ``y = x - m``, ``G = A^T Psi^-1 A`` (L x L) and ``b = A^T Psi^-1 y``, the
posterior of ``s`` given ``x`` and ``q`` has precision ``P_q = G + V_q^-1``, covariance
``Sigma_q = P_q^-1`` and mean ``rho_q = Sigma_q (b + V_q^-1 mu_q)``. Completing the square
in ``log p(x | s) + log p(s | q)`` gives ``log p(x, q)``::

    log w_q - (d log 2 pi + log|Psi| + log|V_q| + log|P_q|) / 2
            - (y^T Psi^-1 y + mu_q^T V_q^-1 mu_q - rho_q^T P_q rho_q) / 2

(the determinant lemma and Woodbury's identity for ``N(x; A mu_q + m, A V_q A^T + Psi)``:
no d x d matrix is formed). As ``rho_q^T P_q rho_q = b^T Sigma_q b + 2 b^T o_q + const_q``
with ``o_q = Sigma_q V_q^-1 mu_q``, a tile of rows needs ``b`` (the rows times ``Psi^-1 A``,
one BLAS product), the flattened outer products ``b b^T`` (t, L^2) times the (L^2, S)
stacked ``Sigma_q`` and ``b`` times the (L, S) ``o_q``: matrix products, ``L^2`` flops per
row and state. ``p(q | x)`` follows by log-sum-exp over the states
(:func:`~daskem.models.gaussian.log_normalize`), whose log is the row's log-likelihood.
The statistics need no per-state posterior mean per row either: each state's
responsibility-weighted sums of ``1``, ``b`` and ``b b^T`` (two more products of the
(S, t) responsibilities) give, once per block, its sums of ``rho_q - mu_q`` and of their
outer products (``rho_q - mu_q = Sigma_q b + o_q - mu_q``); the rows' ``E[s | x]``
(for ``sum E[s] y^T``) is ``sum_q p(q | x) Sigma_q`` (one product) times ``b``, plus
``sum_q p(q | x) o_q``. A tile holds (S, t) arrays of about 4 MiB
(:func:`~daskem.models.gaussian.tile_rows`, at least 64 rows) and (t, L^2) ones.

Statistics (additive over blocks), around the current mean ``m`` and source means ``mu``:
``n``, ``sum y``, ``sum y * y`` (per feature: only the diagonal of the noise is fitted),
``sum E[s] y^T`` (L, d), ``sum E[s]``, ``sum E[s s^T]`` and, for each source ``i`` and its
Gaussian ``j``, ``N_ij = sum p(q_i = j | x)``, ``F_ij = sum E[1{q_i = j} (s_i - mu_ij)]``
and ``G_ij = sum E[1{q_i = j} (s_i - mu_ij)^2]``; plus the log-likelihood. Each is first
summed per joint state (the ``S`` states' responsibilities, and their responsibility-
weighted ``rho_q - mu_q`` and squares), then reduced to the sources' Gaussians once per
block, so the statistics do not grow with ``S``.

M-step (exact, so the likelihood never decreases). The expected complete-data
log-likelihood splits into the observation part, a linear regression of ``x`` on ``s``,
and one 1-D mixture per source. The mean is estimated jointly with ``A`` (the augmented
source ``[s; 1]``, as factor analysis' M-step with missing values): ``[A, m - m_old]^T``
solves ``E[[s;1][s;1]^T] X = E[[s;1] y^T]`` and ``Psi`` is the diagonal of the residual.
Each source Gaussian gets ``w_ij = N_ij / n``, ``mu_ij + F_ij / N_ij`` and
``G_ij / N_ij - (F_ij / N_ij)^2`` (moments around the previous mean: nothing cancels).
Floors: the noise as factor analysis' (:data:`~daskem.models.linear_gaussian.NOISE_FLOOR`),
a source variance at :data:`SOURCE_VARIANCE_FLOOR`; an empty Gaussian keeps weight ~0.

Scale. ``A s`` is unchanged when source ``i`` is shifted by ``c_i`` and scaled by
``sigma_i`` while ``m`` absorbs ``A c`` and column ``i`` of ``A`` the scale. After every
M-step each source is normalised to mean 0 and variance 1 that way (Attias' convention).
The observed-data likelihood does not change, so EM stays monotone. Sources remain defined
up to order and sign.

Relations. With one Gaussian per source, every source is ``N(0, 1)`` after the
normalisation and the model is factor analysis with loadings ``A^T``
(:class:`~daskem.models.linear_gaussian.FactorAnalysisModel`: the same likelihood and
fixed points, up to a rotation of the sources). In the noise-free limit with ``L = d`` it is
maximum-likelihood ICA, which FastICA approximates with a fixed contrast function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from daskem.errors import ParameterError
from daskem.models.base import check_width
from daskem.models.gaussian import LOG_2PI, FloatArray, check_shape, log_normalize, scratch, tile_rows
from daskem.models.linear_gaussian import NOISE_FLOOR, check_latent_dimension

#: The most joint source states (the product of the Gaussians per source) an E-step sums over.
MAX_JOINT_STATES = 4096

#: Smallest variance of a source Gaussian an M-step returns (the sources have unit variance).
SOURCE_VARIANCE_FLOOR = 1e-8


def check_joint_states(n_source_components: tuple[int, ...]) -> None:
    """Raise :class:`ParameterError` beyond :data:`MAX_JOINT_STATES`, naming the value and the fix."""
    states = math.prod(n_source_components)  # Python ints: no overflow
    if states > MAX_JOINT_STATES:
        raise ParameterError(
            f"n_source_components={list(n_source_components)} gives {states} joint source states (the product of "
            f"the Gaussians per source), more than the {MAX_JOINT_STATES} the exact E-step of independent factor "
            f"analysis sums over for every row. Use fewer sources (n_components) or fewer Gaussians per source "
            f"(e.g. 2 per source allows 12 sources, 3 per source 7)."
        )


@dataclass(frozen=True)
class IFAParams:
    """Parameters of independent factor analysis (checked on construction).

    Attributes
    ----------
    mixing : ndarray of shape (d, L)
        The mixing matrix ``A``.
    mean : ndarray of shape (d,)
    noise_variance : ndarray of shape (d,)
        ``diag Psi``, all > 0.
    source_weights, source_means, source_variances : ndarray of shape (K,)
        The Gaussians of every source, source by source (``K = sum m_i``); each source's
        weights sum to 1, its variances are > 0.
    """

    mixing: FloatArray
    mean: FloatArray
    noise_variance: FloatArray
    source_weights: FloatArray
    source_means: FloatArray
    source_variances: FloatArray

    def __post_init__(self) -> None:
        a = np.asarray(self.mixing, dtype=np.float64)
        if a.ndim != 2:
            raise ParameterError(f"The parameter 'mixing' should be 2-D (n_features, n_components); got {a.shape}.")
        d = a.shape[0]
        object.__setattr__(self, "mixing", a)
        object.__setattr__(self, "mean", check_shape("mean", self.mean, (d,)))
        object.__setattr__(self, "noise_variance", check_shape("noise_variance", self.noise_variance, (d,)))
        k = np.shape(self.source_weights)
        for name in ("source_weights", "source_means", "source_variances"):
            object.__setattr__(self, name, check_shape(name, getattr(self, name), k))
        if not all(np.all(np.isfinite(v)) for v in (a, self.mean, self.source_means)):
            raise ParameterError("The parameters 'mixing', 'mean' and 'source_means' must be finite.")
        for name in ("noise_variance", "source_variances"):
            value = getattr(self, name)
            if not np.all((value > 0.0) & (value < np.inf)):
                raise ParameterError(f"The parameter {name!r} must be positive and finite; got {value!r}.")
        if not np.all((self.source_weights >= 0.0) & (self.source_weights <= 1.0)):
            raise ParameterError(f"The parameter 'source_weights' must be in [0, 1]; got {self.source_weights!r}.")

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {
            "mixing": self.mixing,
            "mean": self.mean,
            "noise_variance": self.noise_variance,
            "source_weights": self.source_weights,
            "source_means": self.source_means,
            "source_variances": self.source_variances,
        }


@dataclass(frozen=True)
class IFAStats:
    """Sufficient statistics of a set of rows under one parameter set (see the module docstring).

    Attributes
    ----------
    n, loglik, n_nonfinite
        Rows, their summed log-likelihood, non-finite values seen.
    shift : ndarray of shape (d,)
        The mean ``m`` the rows were centred on: ``y = x - m``.
    first, square : ndarray of shape (d,)
        ``sum y`` and ``sum y * y``.
    cross : ndarray of shape (L, d)
        ``sum E[s] y^T``.
    latent_sum : ndarray of shape (L,)
        ``sum E[s]``.
    latent_second : ndarray of shape (L, L)
        ``sum E[s s^T]``.
    source_shift : ndarray of shape (K,)
        The source means ``mu`` the source moments are taken around.
    counts, source_first, source_second : ndarray of shape (K,)
        ``N_ij``, ``F_ij``, ``G_ij`` of every source Gaussian.
    """

    n: float
    loglik: float
    n_nonfinite: int
    shift: FloatArray = field(repr=False)
    first: FloatArray = field(repr=False)
    square: FloatArray = field(repr=False)
    cross: FloatArray = field(repr=False)
    latent_sum: FloatArray = field(repr=False)
    latent_second: FloatArray = field(repr=False)
    source_shift: FloatArray = field(repr=False)
    counts: FloatArray = field(repr=False)
    source_first: FloatArray = field(repr=False)
    source_second: FloatArray = field(repr=False)


@dataclass(frozen=True)
class _States:
    """The joint source states under one parameter set, prepared once per block.

    ``index`` (S, L): the flat Gaussian (of ``K``) of each source in each state; ``mu``
    (S, L) their means; ``precision_sources`` (d, L) is ``Psi^-1 A`` and ``precision`` (d,)
    ``diag Psi^-1``; ``covariance`` (S, L, L) the posterior covariances ``Sigma_q`` and
    ``flat`` (S, L L) the same flattened; ``offset`` (S, L) is ``Sigma_q V_q^-1 mu_q``;
    ``log_const`` (S,) the terms of ``log p(x, q)`` that do not depend on the row.
    """

    index: NDArray[np.intp]
    mu: FloatArray
    precision_sources: FloatArray
    precision: FloatArray
    covariance: FloatArray
    flat: FloatArray
    offset: FloatArray
    log_const: FloatArray


def _sums(index: NDArray[np.intp], values: FloatArray, size: int) -> FloatArray:
    """The sums of ``values`` by ``index`` (``0 <= index < size``): shape (size,)."""
    return np.asarray(np.bincount(index, values, minlength=size), dtype=np.float64)


@dataclass(frozen=True)
class IFAModel:
    """Independent factor analysis: ``n_components`` sources, each a mixture of Gaussians.

    Parameters
    ----------
    n_components : int
        Number of sources ``L`` (at least 1, at most the number of features).
    n_source_components : tuple of int
        Gaussians per source (``m_i >= 1``, one per source); their product, the number of
        joint states, is at most :data:`MAX_JOINT_STATES`.
    """

    n_components: int
    n_source_components: tuple[int, ...]

    #: What to do when the statistics are not finite (see daskem.em.checks.check_stats).
    numerical_advice = (
        "the data overflow float64 or a noise variance collapsed. Scale the features (e.g. standardise them) "
        "or reduce n_components."
    )

    def __post_init__(self) -> None:
        name = type(self).__name__
        q = self.n_components
        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 1:
            raise ParameterError(f"The 'n_components' parameter of {name} must be an int >= 1. Got {q!r} instead.")
        sizes = tuple(self.n_source_components)
        if len(sizes) != q or any(isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1 for m in sizes):
            raise ParameterError(
                f"The 'n_source_components' parameter of {name} must give one int >= 1 per source ({q}). "
                f"Got {self.n_source_components!r} instead."
            )
        object.__setattr__(self, "n_source_components", tuple(int(m) for m in sizes))
        check_joint_states(self.n_source_components)

    def source_offsets(self) -> NDArray[np.intp]:
        """Where each source's Gaussians start in the flat arrays of ``K`` entries: shape (L + 1,)."""
        return np.concatenate([[0], np.cumsum(self.n_source_components)]).astype(np.intp)

    def _state_index(self) -> NDArray[np.intp]:
        """(S, L): the flat index of each source's Gaussian in every joint state (the last source fastest)."""
        grids = np.indices(self.n_source_components).reshape(self.n_components, -1).T
        return np.asarray(grids + self.source_offsets()[:-1], dtype=np.intp)

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {
            "model": "independent_factor_analysis",
            "n_components": int(self.n_components),
            "n_source_components": list(self.n_source_components),
        }

    def make_params(
        self, mixing: Any, mean: Any, noise_variance: Any, weights: Any, means: Any, variances: Any
    ) -> IFAParams:
        """Checked parameters of this model (the sources' arrays flat, source by source)."""
        params = IFAParams(mixing, mean, noise_variance, weights, means, variances)
        check_shape("mixing", params.mixing, (params.mean.shape[0], self.n_components))
        check_shape("source_weights", params.source_weights, (int(self.source_offsets()[-1]),))
        return params

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> IFAParams:
        """Rebuild parameters from named arrays, checking their shapes."""
        return self.make_params(
            arrays["mixing"],
            arrays["mean"],
            arrays["noise_variance"],
            arrays["source_weights"],
            arrays["source_means"],
            arrays["source_variances"],
        )

    def zero_stats(self, params: IFAParams) -> IFAStats:
        """Statistics of no rows, centred on the means of ``params``."""
        d, q = params.mixing.shape
        k = params.source_means.shape[0]
        return IFAStats(
            n=0.0,
            loglik=0.0,
            n_nonfinite=0,
            shift=params.mean.copy(),
            first=np.zeros(d),
            square=np.zeros(d),
            cross=np.zeros((q, d)),
            latent_sum=np.zeros(q),
            latent_second=np.zeros((q, q)),
            source_shift=params.source_means.copy(),
            counts=np.zeros(k),
            source_first=np.zeros(k),
            source_second=np.zeros(k),
        )

    def combine(self, a: IFAStats, b: IFAStats) -> IFAStats:
        """Sum the statistics of two disjoint sets of rows (same parameters)."""
        return IFAStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            shift=a.shift,
            first=a.first + b.first,
            square=a.square + b.square,
            cross=a.cross + b.cross,
            latent_sum=a.latent_sum + b.latent_sum,
            latent_second=a.latent_second + b.latent_second,
            source_shift=a.source_shift,
            counts=a.counts + b.counts,
            source_first=a.source_first + b.source_first,
            source_second=a.source_second + b.source_second,
        )

    def log_likelihood(self, stats: IFAStats) -> float:
        """Total log-likelihood of the rows behind ``stats``."""
        return float(stats.loglik)

    # -- E-step ------------------------------------------------------------------------

    def _states(self, params: IFAParams) -> _States:
        a, psi = params.mixing, params.noise_variance
        d, q = a.shape
        index = self._state_index()
        s = index.shape[0]
        mu, nu = params.source_means[index], params.source_variances[index]
        with np.errstate(divide="ignore"):
            log_w = np.log(params.source_weights)[index].sum(axis=1)
        precision_sources = a / psi[:, np.newaxis]
        gram = a.T @ precision_sources
        precision = np.broadcast_to(gram, (s, q, q)).copy()
        precision[:, np.arange(q), np.arange(q)] += 1.0 / nu
        chol = np.linalg.cholesky(precision)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        covariance = np.linalg.solve(precision, np.broadcast_to(np.eye(q), precision.shape))
        covariance = 0.5 * (covariance + covariance.transpose(0, 2, 1))
        prior = mu / nu
        offset = np.einsum("sab,sb->sa", covariance, prior)
        log_const = log_w - 0.5 * (
            d * LOG_2PI
            + float(np.log(psi).sum())
            + np.log(nu).sum(axis=1)
            + log_det
            + np.einsum("sa,sa->s", mu, prior)
            - np.einsum("sa,sa->s", prior, offset)
        )
        return _States(
            index=index,
            mu=mu,
            precision_sources=precision_sources,
            precision=1.0 / psi,
            covariance=covariance,
            flat=np.ascontiguousarray(covariance.reshape(s, q * q)),
            offset=offset,
            log_const=log_const,
        )

    def _tiles(self, st: _States, params: IFAParams, block: NDArray[Any]):  # type: ignore[no-untyped-def]
        """Yield ``(y, b, outer, resp, lse)`` per tile of ``block``, ``st`` the states of ``params``.

        ``y`` (t, d) the rows minus the mean, ``b`` (t, L) their ``A^T Psi^-1 y``, ``outer``
        (t, L L) the flattened ``b b^T``, ``resp`` (S, t) ``p(q | x)`` and ``lse`` (t,) the
        rows' log-likelihoods; float64 buffers allocated once per block. Per row and state
        the work is two matrix products: ``b^T Sigma_q b`` is ``outer`` times the flattened
        ``Sigma_q``, ``b^T Sigma_q V_q^-1 mu_q`` is ``b`` times ``offset``.
        """
        d, q = params.mixing.shape
        check_width(block, d)
        s, n = st.index.shape[0], block.shape[0]
        t = max(1, min(tile_rows(s, 1), n))
        y_buf, outer_buf, log_buf, resp_buf = np.empty(t * d), np.empty(t * q * q), np.empty(s * t), np.empty(s * t)
        for start in range(0, n, t):
            rows = min(t, n - start)
            y = scratch(y_buf, (rows, d))
            np.subtract(block[start : start + rows], params.mean, out=y)
            b = y @ st.precision_sources
            outer = scratch(outer_buf, (rows, q * q))
            np.multiply(b[:, :, np.newaxis], b[:, np.newaxis, :], out=outer.reshape(rows, q, q))
            # 2 log p(x, q) - 2 log_const = b^T Sigma b + 2 b^T offset - y^T Psi^-1 y
            log_prob = np.matmul(st.flat, outer.T, out=scratch(log_buf, (s, rows)))
            log_prob += (2.0 * st.offset) @ b.T
            log_prob -= np.einsum("td,td,d->t", y, y, st.precision)
            log_prob *= 0.5
            log_prob += st.log_const[:, np.newaxis]
            resp = scratch(resp_buf, (s, rows))
            yield y, b, outer, resp, log_normalize(log_prob, resp)

    @staticmethod
    def _posterior_means(st: _States, b: FloatArray, resp: FloatArray) -> FloatArray:
        """``E[s | x] = sum_q p(q | x) (Sigma_q b + offset_q)`` of a tile's rows: shape (t, L)."""
        t, q = b.shape
        mixed = (resp.T @ st.flat).reshape(t, q, q)  # sum_q p(q | x) Sigma_q per row
        return np.asarray(np.einsum("tab,tb->ta", mixed, b) + resp.T @ st.offset)

    def e_step(self, params: IFAParams, block: NDArray[Any]) -> IFAStats:
        """Statistics of one block of rows under ``params`` (one read of the block).

        Per tile, each state's responsibility-weighted sums of ``1``, ``b`` and ``b b^T``
        (matrix products of the (S, t) responsibilities); once per block they give each
        state's ``sum p(q | x) (rho_q - mu_q)`` and its outer products, with
        ``rho_q - mu_q = Sigma_q b + (offset_q - mu_q)``.
        """
        d, q = params.mixing.shape
        st = self._states(params)
        s, k = st.index.shape[0], params.source_means.shape[0]
        first, square, cross = np.zeros(d), np.zeros(d), np.zeros((q, d))
        resp_sum, resp_b, resp_outer = np.zeros(s), np.zeros((s, q)), np.zeros((s, q * q))
        loglik = 0.0
        # Non-finite data give non-finite sums; they are counted below and reported by the driver.
        with np.errstate(invalid="ignore", over="ignore"):
            for y, b, outer, resp, lse in self._tiles(st, params, block):
                loglik += float(lse.sum())
                first += y.sum(axis=0)
                square += np.einsum("td,td->d", y, y)
                resp_sum += resp.sum(axis=1)
                resp_b += resp @ b
                resp_outer += resp @ outer
                cross += self._posterior_means(st, b, resp).T @ y
            n_nonfinite = 0 if np.all(np.isfinite(square)) else int(block.size - np.count_nonzero(np.isfinite(block)))
        # Per state: sum p (rho - mu) and sum p (rho - mu)(rho - mu)^T, rho - mu = Sigma b + shift.
        shift = st.offset - st.mu
        spread = st.covariance @ resp_b[:, :, np.newaxis]  # (S, L, 1): Sigma_q sum p b
        moment = spread[:, :, 0] + resp_sum[:, np.newaxis] * shift
        centred = (
            st.covariance @ resp_outer.reshape(s, q, q) @ st.covariance
            + spread * shift[:, np.newaxis, :]
            + shift[:, :, np.newaxis] * spread.transpose(0, 2, 1)
            + resp_sum[:, np.newaxis, np.newaxis] * shift[:, :, np.newaxis] * shift[:, np.newaxis, :]
        )
        # E[s s^T] = sum_q p (Sigma_q + (rho - mu)(rho - mu)^T + (rho - mu) mu^T + mu (rho - mu)^T + mu mu^T).
        cross_mu = moment.T @ st.mu
        latent_second = (
            centred.sum(axis=0)
            + np.tensordot(resp_sum, st.covariance, axes=1)
            + cross_mu
            + cross_mu.T
            + (st.mu * resp_sum[:, np.newaxis]).T @ st.mu
        )
        # sum p E[(s_i - mu_i)^2 | x, q] per state and source
        second = resp_sum[:, np.newaxis] * np.diagonal(st.covariance, axis1=1, axis2=2)
        second += np.diagonal(centred, axis1=1, axis2=2)
        flat_index = st.index.ravel()
        return IFAStats(
            n=float(block.shape[0]),
            loglik=loglik,
            n_nonfinite=n_nonfinite,
            shift=params.mean.copy(),
            first=first,
            square=square,
            cross=cross,
            latent_sum=moment.sum(axis=0) + resp_sum @ st.mu,
            latent_second=latent_second,
            source_shift=params.source_means.copy(),
            counts=_sums(flat_index, np.repeat(resp_sum, q), k),
            source_first=_sums(flat_index, moment.ravel(), k),
            source_second=_sums(flat_index, second.ravel(), k),
        )

    # -- M-step ------------------------------------------------------------------------

    def m_step(self, stats: IFAStats, params: IFAParams | None) -> IFAParams:
        """The exact EM update (:meth:`maximize`), then the sources normalised (:meth:`normalize`).

        ``params`` is not needed: the statistics carry the means they were taken around.
        """
        return self.normalize(self.maximize(stats))

    def maximize(self, stats: IFAStats) -> IFAParams:
        """The maximiser of the expected complete-data log-likelihood behind ``stats``.

        (Up to the floors of the noise and source variances; see the module docstring.)
        """
        n, q = stats.n, self.n_components
        second = np.empty((q + 1, q + 1))
        second[:q, :q] = stats.latent_second
        second[:q, q] = second[q, :q] = stats.latent_sum
        second[q, q] = n
        cross = np.vstack([stats.cross, stats.first[np.newaxis, :]])
        solution = linalg.cho_solve(linalg.cho_factor(second, lower=True), cross)
        residual = (stats.square - np.einsum("kj,kj->j", solution, cross)) / n
        centred_square = stats.square - stats.first * (stats.first / n)
        floor = max(NOISE_FLOOR * float(centred_square.mean()) / n, float(np.finfo(np.float64).tiny))
        noise = np.maximum(residual, floor)
        counts = stats.counts + 10.0 * np.finfo(np.float64).eps
        step = stats.source_first / counts
        variances = np.maximum(stats.source_second / counts - step * step, SOURCE_VARIANCE_FLOOR)
        sources = self._sources()
        weights = counts / _sums(sources, counts, q)[sources]
        return self.make_params(
            solution[:q].T, stats.shift + solution[q], noise, weights, stats.source_shift + step, variances
        )

    def normalize(self, params: IFAParams) -> IFAParams:
        """The same model with every source of mean 0 and variance 1 (the likelihood is unchanged).

        Source ``i`` of mean ``c_i`` and variance ``sigma_i^2`` becomes ``(s_i - c_i) / sigma_i``;
        the mean gains ``A c`` and column ``i`` of ``A`` is multiplied by ``sigma_i``.
        """
        sources = self._sources()
        centre, variance = self.source_moments(params)
        scale = np.sqrt(variance)
        return self.make_params(
            params.mixing * scale,
            params.mean + params.mixing @ centre,
            params.noise_variance,
            params.source_weights,
            (params.source_means - centre[sources]) / scale[sources],
            params.source_variances / variance[sources],
        )

    def _sources(self) -> NDArray[np.intp]:
        """The source of each of the ``K`` Gaussians: shape (K,)."""
        return np.repeat(np.arange(self.n_components), self.n_source_components)

    def source_moments(self, params: IFAParams) -> tuple[FloatArray, FloatArray]:
        """The mean and variance of every source's mixture: two arrays of shape (L,)."""
        sources = self._sources()
        w, mu = params.source_weights, params.source_means
        centre = _sums(sources, w * mu, self.n_components)
        offset = mu - centre[sources]
        variance = _sums(sources, w * (params.source_variances + offset * offset), self.n_components)
        return centre, variance

    # -- vector form (acceleration) --------------------------------------------------------

    def to_vector(self, params: IFAParams) -> FloatArray:
        """Unconstrained coordinates: ``A``, the mean, log noise, log-weights, source means, log variances."""
        with np.errstate(divide="ignore"):
            log_weights = np.maximum(np.log(params.source_weights), np.log(np.finfo(np.float64).tiny))
        return np.concatenate(
            [
                params.mixing.ravel(),
                params.mean,
                np.log(params.noise_variance),
                log_weights,
                params.source_means,
                np.log(params.source_variances),
            ]
        )

    def from_vector(self, vector: FloatArray, like: IFAParams) -> IFAParams:
        """Parameters from :meth:`to_vector` coordinates (each source's log-weights normalised).

        Raises :class:`ParameterError` (a ``ValueError``) when a variance overflows.
        """
        d, q = like.mixing.shape
        k = like.source_means.shape[0]
        parts = np.split(vector, np.cumsum([d * q, d, d, k, k]))
        sources = self._sources()
        log_weights = parts[3] - np.maximum.reduceat(parts[3], self.source_offsets()[:-1])[sources]
        weights = np.exp(log_weights)
        with np.errstate(over="ignore"):
            return self.make_params(
                parts[0].reshape(d, q),
                parts[1],
                np.exp(parts[2]),
                weights / _sums(sources, weights, q)[sources],
                parts[4],
                np.exp(parts[5]),
            )

    # -- initialisation ------------------------------------------------------------------

    def init_params(self, loadings: Any, mean: Any, noise_variance: Any, rng: np.random.Generator | None) -> IFAParams:
        """A start from loadings (a factor analysis start): their sources, and spread source Gaussians.

        ``A = loadings^T R``, with ``R`` a random orthogonal (L, L) matrix drawn from ``rng``
        (factor analysis cannot tell rotations apart, independent factor analysis can), or
        the identity for ``rng=None``; every source of ``m`` Gaussians starts with weights
        ``1/m``, means evenly spaced over ``[-1, 1]`` scaled so that their spread has
        variance 1/2, and variances 1/2 (one Gaussian: ``N(0, 1)``), so each source has
        variance 1 as factor analysis' factors.

        Parameters
        ----------
        loadings : array-like of shape (L, d)
            Factor analysis' loadings (``components_``).
        mean, noise_variance : array-like of shape (d,)
        rng : numpy.random.Generator or None
            Source of the rotation (None: no rotation).
        """
        w = np.asarray(loadings, dtype=np.float64)
        check_latent_dimension(self.n_components, w.shape[1])
        rotation = np.eye(self.n_components)
        if rng is not None:
            rotation, upper = np.linalg.qr(rng.standard_normal((self.n_components, self.n_components)))
            rotation *= np.where(np.diagonal(upper) < 0, -1.0, 1.0)  # Haar-distributed
        weights, means, variances = [], [], []
        for m in self.n_source_components:
            spread = np.linspace(-1.0, 1.0, m)
            if m > 1:
                spread *= np.sqrt(0.5 / spread.var())
            weights.append(np.full(m, 1.0 / m))
            means.append(spread)
            variances.append(np.full(m, 0.5 if m > 1 else 1.0))
        return self.make_params(
            w.T @ rotation,
            mean,
            noise_variance,
            np.concatenate(weights),
            np.concatenate(means),
            np.concatenate(variances),
        )

    # -- per-row methods -------------------------------------------------------------------

    def transform(self, params: IFAParams, block: NDArray[Any]) -> FloatArray:
        """Posterior mean ``E[s | x]`` of the sources of every row of ``block``: shape (n, L)."""
        out = np.empty((block.shape[0], self.n_components))
        st = self._states(params)
        start = 0
        for _, b, _, resp, _ in self._tiles(st, params, block):
            out[start : start + b.shape[0]] = self._posterior_means(st, b, resp)
            start += b.shape[0]
        return out

    def score_samples(self, params: IFAParams, block: NDArray[Any]) -> FloatArray:
        """Log-likelihood of every row of ``block``: shape (n,)."""
        out = np.empty(block.shape[0])
        start = 0
        with np.errstate(invalid="ignore", over="ignore"):
            for _, _, _, _, lse in self._tiles(self._states(params), params, block):
                out[start : start + lse.shape[0]] = lse
                start += lse.shape[0]
        return out

    def covariance(self, params: IFAParams) -> FloatArray:
        """The model covariance ``A D A^T + Psi``, ``D`` the sources' variances (1 once normalised): (d, d)."""
        a = params.mixing
        cov = (a * self.source_moments(params)[1]) @ a.T
        cov.flat[:: cov.shape[0] + 1] += params.noise_variance
        return np.asarray(cov)
