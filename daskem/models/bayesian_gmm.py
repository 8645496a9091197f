"""Variational Bayesian Gaussian mixtures (scikit-learn's BayesianGaussianMixture), pure NumPy.

The parameters are the variational parameters of scikit-learn's model: the weight
concentrations (a Dirichlet distribution, or the Beta pairs of a truncated Dirichlet
process), the mean precisions, the means, the Wishart degrees of freedom, the normalised
covariances and their precision Cholesky factors; the priors travel with them, so a
stored model holds everything its attributes need.

The E-step's log responsibilities are scikit-learn's (``_estimate_log_weights`` plus
``_estimate_log_prob``): a Gaussian log-density with the normalised precision Cholesky
factor, plus a per-component term. They are computed by the Gaussian mixture's tile
machinery (:meth:`daskem.models.gmm.GaussianMixtureModel.moments`) with that term as
the component's log-weight, so the statistics are the mixture's (responsibility sums,
first and second moments around each component's current mean) plus the block's
``sum r log r`` (the entropy term of scikit-learn's lower bound), derived from those
moments:

``sum_ik r_ik log r_ik = sum_k r_k (c_k + log det L_k - d/2 log 2 pi)
- 1/2 sum_k tr(Lambda_k S_k) - sum_i log p_i``

with ``c_k`` the per-component term, ``S_k`` the second moment around the mean and
``log p_i`` the per-row log-normaliser (the statistics' ``loglik``).

A model with ``weighted=True`` reads each block's last column as the sample weights: each
row's responsibilities are multiplied by its weight before the moments, and its
log-normaliser and ``r log r`` by the weight, so the identity above holds for the weighted
sums and integer weights give the statistics (hence the fit) of the rows repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaln, digamma, gammaln

from daskem.errors import ParameterError
from daskem.models.base import split_weights
from daskem.models.gaussian import LOG_2PI, FloatArray, Whitener, check_shape, covariance_type, make_whitener
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams, GaussianMixtureStats

_EPS10 = 10.0 * np.finfo(np.float64).eps

#: The weight priors: a Dirichlet distribution, or a (truncated) Dirichlet process.
WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class BayesianPriors:
    """The priors of a variational Gaussian mixture (scikit-learn's ``*_prior_`` attributes).

    Attributes
    ----------
    weight_concentration : float
    mean_precision : float
    mean : ndarray of shape (d,)
    degrees_of_freedom : float
    covariance : ndarray
        (d, d) full and tied, (d,) diag, () spherical.
    """

    weight_concentration: float
    mean_precision: float
    mean: FloatArray
    degrees_of_freedom: float
    covariance: FloatArray


@dataclass(frozen=True)
class BayesianGaussianMixtureParams:
    """Variational parameters of a Bayesian Gaussian mixture (scikit-learn's attributes).

    Attributes
    ----------
    weight_concentration : ndarray
        (k,) for a Dirichlet distribution, (2, k) for a Dirichlet process (the Beta pairs).
    mean_precision : ndarray of shape (k,)
    means : ndarray of shape (k, d)
    degrees_of_freedom : ndarray
        (k,), or (1,) for tied covariances.
    covariances : ndarray
        Shaped by the covariance type.
    precisions_cholesky : ndarray
        Shaped like ``covariances``.
    priors : BayesianPriors
        The priors of the fit.
    """

    weight_concentration: FloatArray
    mean_precision: FloatArray
    means: FloatArray
    degrees_of_freedom: FloatArray
    covariances: FloatArray
    precisions_cholesky: FloatArray
    priors: BayesianPriors = field(repr=False)

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters and the priors as named float arrays."""
        p = self.priors
        return {
            "weight_concentration": self.weight_concentration,
            "mean_precision": self.mean_precision,
            "means": self.means,
            "degrees_of_freedom": self.degrees_of_freedom,
            "covariances": self.covariances,
            "precisions_cholesky": self.precisions_cholesky,
            "weight_concentration_prior": np.array([p.weight_concentration]),
            "mean_precision_prior": np.array([p.mean_precision]),
            "mean_prior": np.asarray(p.mean, dtype=np.float64),
            "degrees_of_freedom_prior": np.array([p.degrees_of_freedom]),
            "covariance_prior": np.asarray(p.covariance, dtype=np.float64).reshape(-1)
            if np.ndim(p.covariance) == 0
            else np.asarray(p.covariance, dtype=np.float64),
        }


@dataclass(frozen=True)
class BayesianGaussianMixtureStats:
    """Statistics of a set of rows: the Gaussian mixture's moments and ``sum r log r``.

    Attributes
    ----------
    n : float
        Rows seen.
    loglik : float
        The rows' summed log-normalisers (scikit-learn's ``log_prob_norm``, summed).
    n_nonfinite : int
        NaN or infinite values seen.
    shift, resp_sum, first, second : ndarray
        The Gaussian mixture's statistics (:class:`~daskem.models.gmm.GaussianMixtureStats`):
        responsibility sums and the moments around each component's mean.
    resp_log_resp : float
        ``sum_ik r_ik log r_ik``.
    """

    n: float
    loglik: float
    n_nonfinite: int
    shift: FloatArray = field(repr=False)
    resp_sum: FloatArray = field(repr=False)
    first: FloatArray = field(repr=False)
    second: FloatArray = field(repr=False)
    resp_log_resp: float = 0.0

    @classmethod
    def of(cls, gaussian: GaussianMixtureStats, resp_log_resp: float) -> BayesianGaussianMixtureStats:
        """The statistics of the Gaussian mixture's statistics and ``sum r log r``."""
        g = gaussian
        return cls(g.n, g.loglik, g.n_nonfinite, g.shift, g.resp_sum, g.first, g.second, float(resp_log_resp))

    @property
    def gaussian(self) -> GaussianMixtureStats:
        """The Gaussian mixture's statistics."""
        return GaussianMixtureStats(
            self.n, self.loglik, self.n_nonfinite, self.shift, self.resp_sum, self.first, self.second
        )


@dataclass(frozen=True)
class _LogWeightedParams(GaussianMixtureParams):
    """Gaussian mixture parameters whose per-component log terms are given as logs.

    ``weights`` (normalised) only centre the tiles; ``log_weights`` are added to the
    log-densities as they are (no ``exp``/``log`` round trip: nothing underflows).
    """

    log_weights: FloatArray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class _LogWeightedGaussian(GaussianMixtureModel):
    """The Gaussian mixture's E-step machinery with the log-weights of :class:`_LogWeightedParams`."""

    def _whitener(self, params: GaussianMixtureParams, shift: FloatArray, dtype: Any) -> Whitener:
        log_weights = getattr(params, "log_weights", None)
        if log_weights is None:
            return super()._whitener(params, shift, dtype)
        return make_whitener(
            covariance_type(self.covariance_type), log_weights, params.means - shift, params.precisions_cholesky, dtype
        )


def _as_tuple(value: Any) -> Any:
    """A nested tuple of floats (hashable, JSON-able) of an array, or None."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else tuple(_as_tuple(v) for v in arr)


@dataclass(frozen=True)
class BayesianGaussianMixtureModel:
    """A variational Bayesian Gaussian mixture (scikit-learn's ``BayesianGaussianMixture``).

    Parameters
    ----------
    n_components : int
        Number of components (an upper bound: the fit leaves superfluous ones near zero
        weight).
    covariance_type : {"full", "tied", "diag", "spherical"}
        Form of the covariances.
    reg_covar : float
        Non-negative regularisation added to the diagonal of the data's covariances.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}
        The prior of the weights.
    weight_concentration_prior, mean_precision_prior, degrees_of_freedom_prior : float, optional
        The priors' scalars (None: not known, for a model that only predicts).
    mean_prior : tuple of float, optional
        The prior of the means (d values).
    covariance_prior : tuple or float, optional
        The prior of the covariances: (d, d) nested tuples for full and tied, d values for
        diag, a float for spherical.
    weighted : bool
        Whether each block's last column holds the sample weights (the fit's statistics
        only: predictions read rows of features alone).

    Notes
    -----
    The priors are scikit-learn's ``*_prior_`` attributes, resolved (data-dependent
    defaults computed) before the model is built. Use :meth:`with_priors` to set them from
    a :class:`BayesianPriors`.
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float | None = None
    mean_precision_prior: float | None = None
    mean_prior: Any = None
    degrees_of_freedom_prior: float | None = None
    covariance_prior: Any = None
    weighted: bool = False

    #: Missing values are not supported: NaN are errors.
    missing = "error"

    numerical_advice = GaussianMixtureModel.numerical_advice

    def __post_init__(self) -> None:
        covariance_type(self.covariance_type)
        if self.weight_concentration_prior_type not in WEIGHT_PRIOR_TYPES:
            raise ParameterError(
                f"weight_concentration_prior_type must be one of {list(WEIGHT_PRIOR_TYPES)}; got "
                f"{self.weight_concentration_prior_type!r}."
            )

    @classmethod
    def with_priors(
        cls,
        n_components: int,
        covariance_type: str,
        reg_covar: float,
        weight_concentration_prior_type: str,
        priors: BayesianPriors,
        weighted: bool = False,
    ) -> BayesianGaussianMixtureModel:
        """The model with the given (resolved) priors (``weighted``: see the class)."""
        return cls(
            int(n_components),
            covariance_type,
            float(reg_covar),
            weight_concentration_prior_type,
            float(priors.weight_concentration),
            float(priors.mean_precision),
            _as_tuple(priors.mean),
            float(priors.degrees_of_freedom),
            _as_tuple(priors.covariance),
            bool(weighted),
        )

    @property
    def priors(self) -> BayesianPriors:
        """The priors as arrays (an error if the model does not know them)."""
        values = (
            self.weight_concentration_prior,
            self.mean_precision_prior,
            self.mean_prior,
            self.degrees_of_freedom_prior,
            self.covariance_prior,
        )
        if any(v is None for v in values):
            raise ParameterError("This BayesianGaussianMixtureModel has no priors: build it with with_priors().")
        return BayesianPriors(
            float(self.weight_concentration_prior),  # type: ignore[arg-type]
            float(self.mean_precision_prior),  # type: ignore[arg-type]
            np.asarray(self.mean_prior, dtype=np.float64),
            float(self.degrees_of_freedom_prior),  # type: ignore[arg-type]
            np.asarray(self.covariance_prior, dtype=np.float64),
        )

    @property
    def dirichlet_process(self) -> bool:
        """Whether the weight prior is a Dirichlet process."""
        return self.weight_concentration_prior_type == "dirichlet_process"

    def _gaussian(self) -> _LogWeightedGaussian:
        return _LogWeightedGaussian(self.n_components, self.covariance_type, self.reg_covar)

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {
            "model": "bgmm",
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "reg_covar": float(self.reg_covar),
            "weight_concentration_prior_type": self.weight_concentration_prior_type,
            "weight_concentration_prior": self.weight_concentration_prior,
            "mean_precision_prior": self.mean_precision_prior,
            "mean_prior": None if self.mean_prior is None else np.asarray(self.mean_prior).tolist(),
            "degrees_of_freedom_prior": self.degrees_of_freedom_prior,
            "covariance_prior": None if self.covariance_prior is None else np.asarray(self.covariance_prior).tolist(),
            # Only when set: the specs of unweighted fits stay as they were.
            **({"weighted": True} if self.weighted else {}),
        }

    def zero_stats(self, params: BayesianGaussianMixtureParams) -> BayesianGaussianMixtureStats:
        """Statistics of no rows, centred on the means of ``params``."""
        return BayesianGaussianMixtureStats.of(self._gaussian().zero_stats(self.gaussian_params(params)), 0.0)

    def combine(self, a: BayesianGaussianMixtureStats, b: BayesianGaussianMixtureStats) -> BayesianGaussianMixtureStats:
        """Sum the statistics of two disjoint sets of rows (same parameters)."""
        return BayesianGaussianMixtureStats.of(
            self._gaussian().combine(a.gaussian, b.gaussian), a.resp_log_resp + b.resp_log_resp
        )

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> BayesianGaussianMixtureParams:
        """Rebuild parameters (and priors) from named arrays, checking their shapes."""
        means = np.asarray(arrays["means"], dtype=np.float64)
        if means.ndim != 2:
            raise ParameterError(
                f"The parameter 'means' should be 2-D (n_components, n_features), but got {means.shape}."
            )
        k, d = self.n_components, means.shape[1]
        ct = covariance_type(self.covariance_type)
        shape_wc = (2, k) if self.dirichlet_process else (k,)
        prior_cov = np.asarray(arrays["covariance_prior"], dtype=np.float64)
        prior_shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": (1,)}[self.covariance_type]
        prior_cov = check_shape("covariance_prior", prior_cov, prior_shape)
        priors = BayesianPriors(
            float(check_shape("weight_concentration_prior", arrays["weight_concentration_prior"], (1,))[0]),
            float(check_shape("mean_precision_prior", arrays["mean_precision_prior"], (1,))[0]),
            check_shape("mean_prior", arrays["mean_prior"], (d,)),
            float(check_shape("degrees_of_freedom_prior", arrays["degrees_of_freedom_prior"], (1,))[0]),
            prior_cov.reshape(()) if self.covariance_type == "spherical" else prior_cov,
        )
        return BayesianGaussianMixtureParams(
            weight_concentration=check_shape("weight_concentration", arrays["weight_concentration"], shape_wc),
            mean_precision=check_shape("mean_precision", arrays["mean_precision"], (k,)),
            means=check_shape("means", means, (k, d)),
            degrees_of_freedom=check_shape(
                "degrees_of_freedom", arrays["degrees_of_freedom"], (1,) if ct.shared else (k,)
            ),
            covariances=check_shape("covariances", arrays["covariances"], ct.shape(k, d)),
            precisions_cholesky=check_shape("precisions_cholesky", arrays["precisions_cholesky"], ct.shape(k, d)),
            priors=priors,
        )

    # -- the E-step ------------------------------------------------------------------------

    def log_weights(self, params: BayesianGaussianMixtureParams) -> FloatArray:
        """scikit-learn's ``_estimate_log_weights``: the expected log-weights, shape (k,)."""
        wc = params.weight_concentration
        if self.dirichlet_process:
            digamma_sum = digamma(wc[0] + wc[1])
            digamma_b = digamma(wc[1])
            return np.asarray(digamma(wc[0]) - digamma_sum + np.hstack((0.0, np.cumsum(digamma_b - digamma_sum)[:-1])))
        return np.asarray(digamma(wc) - digamma(np.sum(wc)))

    def component_terms(self, params: BayesianGaussianMixtureParams) -> FloatArray:
        """What each component adds to the Gaussian log-density of a row, shape (k,).

        ``_estimate_log_weights`` plus ``- d/2 log(dof) + (log_lambda - d / mean_precision) / 2``
        (scikit-learn's ``_estimate_log_prob`` less the log-density itself).
        """
        k, d = params.means.shape
        dof = np.broadcast_to(params.degrees_of_freedom, (k,))
        log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(0, d)[:, np.newaxis])), 0)
        return np.asarray(
            self.log_weights(params) - 0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / params.mean_precision)
        )

    def gaussian_params(self, params: BayesianGaussianMixtureParams) -> _LogWeightedParams:
        """Gaussian mixture parameters whose weighted log-densities are scikit-learn's
        ``_estimate_weighted_log_prob`` (the log-weights are :meth:`component_terms`)."""
        terms = self.component_terms(params)
        weights = np.exp(terms - terms.max())
        return _LogWeightedParams(
            weights / weights.sum(), params.means, params.covariances, params.precisions_cholesky, terms
        )

    def split(self, block: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """A block's features and its sample weights (None for an unweighted model)."""
        return split_weights(block, self.weighted)

    def e_step(self, params: BayesianGaussianMixtureParams, block: NDArray[Any]) -> BayesianGaussianMixtureStats:
        """Statistics of one block under ``params`` (one read of the block)."""
        gp = self.gaussian_params(params)
        x, weights = self.split(block)
        stats = self._gaussian().moments(gp, x, weights=weights)
        return BayesianGaussianMixtureStats.of(stats, self._resp_log_resp(gp, stats))

    def _resp_log_resp(self, gp: _LogWeightedParams, stats: GaussianMixtureStats) -> float:
        """``sum r log r`` of the rows behind ``stats`` (see the module's docstring)."""
        ct = covariance_type(self.covariance_type)
        k, d = gp.means.shape
        pc = gp.precisions_cholesky
        log_det = np.broadcast_to(ct.log_det(pc, d), (k,))
        if ct.matrices:
            quad = float(np.sum(stats.second * ct.precisions(pc)))
        else:
            quad = float(np.sum(stats.second * np.broadcast_to(pc.reshape(k, -1) ** 2, (k, d))))
        with np.errstate(invalid="ignore"):
            weighted = float(stats.resp_sum @ (gp.log_weights + log_det - 0.5 * d * LOG_2PI))
        return weighted - 0.5 * quad - float(stats.loglik)

    # -- the M-step ------------------------------------------------------------------------

    def m_step(
        self, stats: BayesianGaussianMixtureStats, params: BayesianGaussianMixtureParams | None
    ) -> BayesianGaussianMixtureParams:
        """scikit-learn's ``_m_step``: the variational parameters from the statistics of all rows.

        ``params`` is not used (the update needs no previous parameters).
        """
        priors = self.priors
        ct = covariance_type(self.covariance_type)
        g = stats.gaussian
        r = g.resp_sum
        nk = r + _EPS10
        a = g.first / nk[:, None]
        xk = g.shift + a
        sk = ct.covariance(nk, r, g.first, a, g.second, self.reg_covar)
        k = xk.shape[0]
        # _estimate_weights
        if self.dirichlet_process:
            weight_concentration = np.stack(
                (1.0 + nk, priors.weight_concentration + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0.0)))
            )
        else:
            weight_concentration = priors.weight_concentration + nk
        # _estimate_means
        mpp = priors.mean_precision
        mean_precision = mpp + nk
        means = (mpp * priors.mean + nk[:, np.newaxis] * xk) / mean_precision[:, np.newaxis]
        # _estimate_precisions (the Wishart parameters)
        diff = xk - priors.mean
        cp = priors.covariance
        if self.covariance_type == "full":
            dof = priors.degrees_of_freedom + nk
            scale = nk * mpp / mean_precision
            covariances = cp + nk[:, None, None] * sk + scale[:, None, None] * diff[:, :, None] * diff[:, None, :]
            covariances = covariances / dof[:, np.newaxis, np.newaxis]
        elif self.covariance_type == "tied":
            dof = np.array([priors.degrees_of_freedom + nk.sum() / k])
            covariances = cp + sk * nk.sum() / k + mpp / k * np.dot((nk / mean_precision) * diff.T, diff)
            covariances = covariances / dof[0]
        elif self.covariance_type == "diag":
            dof = priors.degrees_of_freedom + nk
            covariances = cp + nk[:, np.newaxis] * (sk + (mpp / mean_precision)[:, np.newaxis] * np.square(diff))
            covariances = covariances / dof[:, np.newaxis]
        else:
            dof = priors.degrees_of_freedom + nk
            covariances = cp + nk * (sk + mpp / mean_precision * np.mean(np.square(diff), 1))
            covariances = covariances / dof
        precisions_cholesky = ct.precision_cholesky(np.asarray(covariances), self.reg_covar)
        return BayesianGaussianMixtureParams(
            np.asarray(weight_concentration, dtype=np.float64),
            np.asarray(mean_precision, dtype=np.float64),
            np.asarray(means, dtype=np.float64),
            np.asarray(dof, dtype=np.float64),
            np.asarray(covariances, dtype=np.float64),
            np.asarray(precisions_cholesky, dtype=np.float64),
            priors,
        )

    # -- the lower bound ---------------------------------------------------------------------

    def lower_bound(self, params: BayesianGaussianMixtureParams, resp_log_resp: float) -> float:
        """scikit-learn's ``_compute_lower_bound`` for ``params`` (after an M-step) and the
        E-step's ``sum r log r``."""
        ct = covariance_type(self.covariance_type)
        k, d = params.means.shape
        dof = params.degrees_of_freedom if not ct.shared else params.degrees_of_freedom[0]
        log_det = ct.log_det(params.precisions_cholesky, d) - 0.5 * d * np.log(dof)
        wishart = -(
            dof * log_det
            + dof * d * 0.5 * math.log(2.0)
            + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, np.newaxis])), 0)
        )
        log_wishart = float(k * np.float64(np.squeeze(wishart))) if ct.shared else float(np.sum(wishart))
        wc = params.weight_concentration
        if self.dirichlet_process:
            log_norm_weight = float(-np.sum(betaln(wc[0], wc[1])))
        else:
            log_norm_weight = float(gammaln(np.sum(wc)) - np.sum(gammaln(wc)))
        return float(-resp_log_resp - log_wishart - log_norm_weight - 0.5 * d * np.sum(np.log(params.mean_precision)))

    def log_likelihood(self, stats: BayesianGaussianMixtureStats) -> float:
        """The lower bound after the M-step of ``stats``, times the rows.

        The engine records ``log_likelihood(stats) / n``: scikit-learn's ``lower_bound_``
        (its lower bound is not divided by the rows).
        """
        return self.lower_bound(self.m_step(stats, None), stats.resp_log_resp) * stats.n

    # -- initialisation ------------------------------------------------------------------

    def stats_from_responsibilities(
        self, X: NDArray[Any], resp: FloatArray, shift: FloatArray
    ) -> BayesianGaussianMixtureStats:
        """Statistics of rows under given responsibilities (scikit-learn's ``_initialize``).

        A weighted model's ``X`` has the weights as last column; ``shift`` has the features' length.
        """
        x, weights = self.split(X)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = np.where(resp > 0.0, resp * np.log(resp), 0.0)
        if weights is None:
            return BayesianGaussianMixtureStats.of(
                self._gaussian().stats_from_responsibilities(x, resp, shift), float(np.sum(entropy))
            )
        w = np.asarray(weights, dtype=np.float64)[:, None]
        stats = self._gaussian().stats_from_responsibilities(x, resp * w, shift)
        return BayesianGaussianMixtureStats.of(replace(stats, n=float(w.sum())), float(np.sum(entropy * w)))

    def params_from_responsibilities(self, X: NDArray[Any], resp: FloatArray) -> BayesianGaussianMixtureParams:
        """The M-step of rows under given responsibilities (scikit-learn's ``_initialize``)."""
        shift = np.asarray(self.split(X)[0], dtype=np.float64).mean(axis=0)
        return self.m_step(self.stats_from_responsibilities(X, resp, shift), None)

    # -- prediction per block --------------------------------------------------------------

    def weighted_log_prob(self, params: BayesianGaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """scikit-learn's ``_estimate_weighted_log_prob`` of every row: shape (n, k)."""
        return self._gaussian().weighted_log_prob(self.gaussian_params(params), block)

    def predict_proba(self, params: BayesianGaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """Responsibilities of every row of ``block``: shape (n, k)."""
        return self._gaussian().predict_proba(self.gaussian_params(params), block)

    def score_samples(self, params: BayesianGaussianMixtureParams, block: NDArray[Any]) -> FloatArray:
        """scikit-learn's ``score_samples``: the log-normaliser of every row, shape (n,)."""
        return self._gaussian().score_samples(self.gaussian_params(params), block)

    def predict(self, params: BayesianGaussianMixtureParams, block: NDArray[Any]) -> NDArray[np.intp]:
        """Most probable component of every row of ``block``: shape (n,)."""
        return self._gaussian().predict(self.gaussian_params(params), block)


def weights_from_concentration(weight_concentration: FloatArray, dirichlet_process: bool) -> FloatArray:
    """scikit-learn's ``weights_`` from the weight concentrations."""
    wc = np.asarray(weight_concentration, dtype=np.float64)
    if dirichlet_process:
        total = wc[0] + wc[1]
        tmp = wc[1] / total
        weights = wc[0] / total * np.hstack((1, np.cumprod(tmp[:-1])))
        return np.asarray(weights / np.sum(weights))
    return np.asarray(wc / np.sum(wc))


@dataclass(frozen=True)
class MomentStats:
    """Rows, their mean and the sums of squares around it (a pass's statistics).

    Attributes
    ----------
    n : float
        Rows (their total weight, for weighted rows).
    loglik : float
        0 (no likelihood is measured).
    n_nonfinite : int
    mean : ndarray of shape (d,)
    scatter : ndarray
        ``sum (x - mean)(x - mean)^T`` (d, d), or its diagonal (d,).
    """

    n: float
    loglik: float
    n_nonfinite: int
    mean: FloatArray
    scatter: FloatArray


@dataclass(frozen=True)
class DataMoments:
    """The data's mean and covariance in one pass: a model for the priors' defaults.

    Each block is centred on its own mean; blocks merge by Chan, Golub and LeVeque's
    pairwise update (``M = M_a + M_b + delta delta^T n_a n_b / n``), so nothing cancels
    for data far from the origin and no centre has to be read first.

    Parameters
    ----------
    full : bool
        The whole scatter matrix (full and tied priors) or its diagonal (diag and spherical).
    weighted : bool
        Whether each block's last column holds the sample weights: ``n`` is then their sum
        and the mean and scatter are weighted (integer weights: those of the rows repeated).
    """

    full: bool = True
    weighted: bool = False

    numerical_advice = GaussianMixtureModel.numerical_advice

    def _zero(self, d: int) -> MomentStats:
        return MomentStats(0.0, 0.0, 0, np.zeros(d), np.zeros((d, d)) if self.full else np.zeros(d))

    def zero_stats(self, params: Any) -> MomentStats:
        """Moments of no rows (``params``: the number of features)."""
        return self._zero(int(params))

    def e_step(self, params: Any, block: NDArray[Any]) -> MomentStats:
        """The block's rows, mean and scatter (``params``: the number of features)."""
        x = np.asarray(block, dtype=np.float64)
        x, w = split_weights(x, self.weighted)
        n_nonfinite = int(x.size - np.count_nonzero(np.isfinite(x)))
        n = float(x.shape[0]) if w is None else float(w.sum())
        if n == 0.0:
            return replace(self._zero(x.shape[1]), n_nonfinite=n_nonfinite)
        with np.errstate(invalid="ignore", over="ignore"):
            mean = x.mean(axis=0) if w is None else (w @ x) / n
            centred = x - mean
            scaled = centred if w is None else centred * w[:, None]
            scatter = scaled.T @ centred if self.full else np.einsum("ij,ij->j", scaled, centred)
        return MomentStats(n, 0.0, n_nonfinite, mean, scatter)

    def combine(self, a: MomentStats, b: MomentStats) -> MomentStats:
        """Merge the moments of two disjoint sets of rows."""
        if a.n == 0.0 or b.n == 0.0:
            kept = b if a.n == 0.0 else a
            return replace(kept, n_nonfinite=a.n_nonfinite + b.n_nonfinite)
        n = a.n + b.n
        delta = b.mean - a.mean
        extra = np.outer(delta, delta) if self.full else delta * delta
        return MomentStats(
            n,
            0.0,
            a.n_nonfinite + b.n_nonfinite,
            a.mean + delta * (b.n / n),
            a.scatter + b.scatter + extra * (a.n * b.n / n),
        )

    def log_likelihood(self, stats: MomentStats) -> float:
        """0: the pass measures no likelihood."""
        return 0.0

    @staticmethod
    def mean_and_covariance(stats: MomentStats) -> tuple[FloatArray, FloatArray]:
        """The mean and the unbiased covariance (``ddof=1``; full (d, d) or diag (d,)) of the rows."""
        return np.asarray(stats.mean), np.asarray(stats.scatter / (stats.n - 1.0))
