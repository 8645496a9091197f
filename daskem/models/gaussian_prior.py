"""The conjugate prior of a Gaussian mixture's means and covariances (mclust's), for MAP-EM.

Fraley & Raftery (2007), "Bayesian regularization for normal mixture estimation and
model-based clustering", J. Classification 24:155-181; mclust's ``priorControl()`` /
``defaultPrior()``. Given its covariance, each component's mean has a normal prior
``mu_k | Sigma_k ~ N(mean, Sigma_k / shrinkage)``; the covariances have an inverse-Wishart
prior ``IW(dof, scale)`` (full; tied: one for the shared matrix) or inverse-gamma priors
``IG(dof / 2, scale / 2)`` on the variances (diag: each feature's; spherical: each
component's one variance). No prior on the weights (mclust puts none by default): they
stay ``r_k / n``.

The names are mclust's, and so are the defaults (:func:`default_prior`, from the data's
mean and covariance): ``shrinkage=0.01``; ``mean`` the data's mean; ``dof = d + 2``;
``scale = var(data) / G^(2/d)`` for full and tied (``G`` components, ``var`` the sample
covariance with ``n - 1``), ``sum_j var_j / d / G^(2/d)`` (a number) for diag and
spherical. The covariance types are mclust's models ``VVV`` (full), ``EEE`` (tied),
``VVI`` (diag) and ``VII`` (spherical).

The M-step is the posterior mode (:func:`map_means_covariances`), from the statistics an
E-step already has. With ``r_k`` the responsibility sums, ``xbar_k`` the weighted means
and ``W_k`` the weighted scatters around them, ``kappa = shrinkage``, ``nu = dof``,
``Lambda = scale``::

    mu_k    = (r_k xbar_k + kappa mean) / (r_k + kappa)
    B_k     = Lambda + W_k + kappa r_k / (r_k + kappa) (xbar_k - mean)(xbar_k - mean)^T
    full       Sigma_k = B_k / (nu + d + 2 + r_k)
    tied       Sigma   = sum_k B_k (Lambda once) / (nu + d + 1 + G + n)
    diag       sigma2_kj = diag(B_k)_j / (nu + 3 + r_k)
    spherical  sigma2_k  = tr(B_k) / (nu + 2 + (r_k + 1) d)       (Lambda: the scale once)

:func:`prior_count` gives each denominator's prior part. ``dof`` may be any value that
keeps it positive: below ``d - 1`` (full, tied) or ``0`` (diag, spherical) the prior is
improper but its mode exists; ``shrinkage -> 0``, ``scale -> 0`` and ``dof`` down to
``-prior_count`` give back the maximum-likelihood M-step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskem.errors import ParameterError
from daskem.models.gaussian import FloatArray, covariance_type

#: The keys of a prior given as a dict (mclust's ``priorControl`` names).
PRIOR_KEYS = ("shrinkage", "mean", "dof", "scale")

#: mclust's default ``shrinkage``.
DEFAULT_SHRINKAGE = 0.01


def prior_count(kind: str, n_features: int, n_components: int) -> float:
    """The prior's part of the covariance denominator besides ``dof`` (see the module)."""
    d, k = n_features, n_components
    return {"full": d + 2.0, "tied": d + 1.0 + k, "diag": 3.0, "spherical": d + 2.0}[covariance_type(kind).name]


def _tuple(values: FloatArray) -> tuple[Any, ...]:
    return tuple(np.asarray(values, dtype=np.float64).tolist())


@dataclass(frozen=True)
class GaussianPrior:
    """A resolved conjugate prior (every value given): hashable, JSON-able.

    Attributes
    ----------
    shrinkage : float
        ``kappa``: the means' prior counts as this many rows (>= 0).
    mean : tuple of float
        The means' prior mean, ``d`` values.
    dof : float
        ``nu``: the covariances' prior degrees of freedom.
    scale : tuple
        ``Lambda``: a ``d x d`` matrix (nested tuples) for full and tied, one number per
        feature (``d`` values) for diag, one number (a 1-tuple) for spherical.
    """

    shrinkage: float
    mean: tuple[float, ...] = field(repr=False)
    dof: float
    scale: tuple[Any, ...] = field(repr=False)

    @property
    def mean_array(self) -> FloatArray:
        """``mean`` as an array of shape (d,)."""
        return np.asarray(self.mean, dtype=np.float64)

    @property
    def scale_array(self) -> FloatArray:
        """``scale`` as an array: (d, d), (d,) or (1,)."""
        return np.asarray(self.scale, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The prior as JSON values (``scale`` a number for spherical)."""
        scale = self.scale_array
        return {
            "shrinkage": float(self.shrinkage),
            "mean": self.mean_array.tolist(),
            "dof": float(self.dof),
            "scale": float(scale[0]) if scale.shape == (1,) else scale.tolist(),
        }


def default_prior(
    mean: FloatArray, covariance: FloatArray, n_components: int, kind: str, n_features: int | None = None
) -> dict[str, Any]:
    """mclust's ``defaultPrior(data, G, modelName)`` from the data's mean and covariance.

    Parameters
    ----------
    mean : ndarray of shape (d,)
        The data's mean.
    covariance : ndarray of shape (d, d)
        The data's sample covariance (denominator ``n - 1``, R's ``var``).
    n_components : int
        ``G``.
    kind : {"full", "tied", "diag", "spherical"}
        The covariance type (mclust's VVV, EEE, VVI, VII).
    n_features : int, optional
        ``d`` (default: the length of ``mean``).

    Returns
    -------
    dict
        ``shrinkage``, ``mean``, ``dof``, ``scale`` as arrays and floats.
    """
    mean = np.asarray(mean, dtype=np.float64)
    d = int(mean.shape[0] if n_features is None else n_features)
    cov = np.asarray(covariance, dtype=np.float64).reshape(d, d)
    factor = (1.0 / n_components) ** (2.0 / d)
    ct = covariance_type(kind)
    scale: Any = factor * cov if ct.matrices else factor * float(np.trace(cov)) / d
    return {"shrinkage": DEFAULT_SHRINKAGE, "mean": mean, "dof": float(d + 2), "scale": scale}


def needs_data(prior: Any) -> bool:
    """Whether resolving ``prior`` needs the data's mean and covariance (``"default"`` or a
    dict without ``mean`` or ``scale``)."""
    if prior is None:
        return False
    if isinstance(prior, str):
        return True
    return not ("mean" in prior and "scale" in prior)


def check_prior_spec(name: str, prior: Any) -> None:
    """Refuse a ``prior`` that is not None, ``"default"`` or a dict of :data:`PRIOR_KEYS`."""
    if prior is None or (isinstance(prior, str) and prior == "default"):
        return
    if not isinstance(prior, Mapping):
        raise ParameterError(
            f"The 'prior' parameter of {name} must be None, 'default' or a dict with keys among "
            f"{list(PRIOR_KEYS)} (mclust's priorControl names). Got {prior!r} instead."
        )
    unknown = sorted(set(prior) - set(PRIOR_KEYS))
    if unknown:
        raise ParameterError(
            f"The 'prior' parameter of {name} has unknown keys {unknown}: use {list(PRIOR_KEYS)} "
            "(mclust's priorControl names)."
        )


def resolve_prior(
    prior: Any,
    kind: str,
    n_components: int,
    n_features: int,
    moments: Callable[[], tuple[FloatArray, FloatArray]] | None = None,
) -> GaussianPrior | None:
    """The :class:`GaussianPrior` a ``prior`` parameter asks for, missing values from the default.

    Parameters
    ----------
    prior : None, "default" or dict
        The estimator's parameter: ``"default"`` is mclust's ``defaultPrior``, a dict gives
        some of ``shrinkage``, ``mean``, ``dof``, ``scale`` (the others from the default).
    kind : str
        The covariance type.
    n_components, n_features : int
        ``G`` and ``d``.
    moments : callable, optional
        Returns the data's mean (d,) and sample covariance (d, d); called only when the
        default is needed (:func:`needs_data`).

    Returns
    -------
    GaussianPrior or None

    Raises
    ------
    ParameterError
        A value of the wrong shape, a negative ``shrinkage``, a ``dof`` that leaves no mode,
        a scale that is not positive (definite).
    """
    check_prior_spec("GaussianMixture", prior)
    if prior is None:
        return None
    given: dict[str, Any] = {} if isinstance(prior, str) else dict(prior)
    values: dict[str, Any] = dict(given)
    d, k = int(n_features), int(n_components)
    if needs_data(prior):
        if moments is None:
            raise ParameterError("The default prior needs the data's mean and covariance.")
        mean, cov = moments()
        default = default_prior(mean, cov, k, kind, d)
        values = {**default, **given}
    else:
        values.setdefault("shrinkage", DEFAULT_SHRINKAGE)
        values.setdefault("dof", float(d + 2))
    ct = covariance_type(kind)
    shrinkage = float(values["shrinkage"])
    if not (np.isfinite(shrinkage) and shrinkage >= 0.0):
        raise ParameterError(f"The prior's shrinkage must be a finite number >= 0; got {values['shrinkage']!r}.")
    mean = np.asarray(values["mean"], dtype=np.float64).reshape(-1)
    if mean.shape != (d,) or not np.all(np.isfinite(mean)):
        raise ParameterError(f"The prior's mean must be {d} finite numbers (one per feature); got shape {mean.shape}.")
    dof = float(values["dof"])
    count = prior_count(kind, d, k)
    if not (np.isfinite(dof) and dof + count > 0.0):
        raise ParameterError(
            f"The prior's dof must be > {-count:g} for covariance_type={kind!r} with {d} features (the posterior "
            f"mode's denominator dof + {count:g} + n_k must stay positive; > {d - 1 if ct.matrices else 0} makes the "
            f"prior proper); got {values['dof']!r}."
        )
    scale = np.asarray(values["scale"], dtype=np.float64)
    if ct.matrices:
        if scale.ndim == 0:
            scale = float(scale) * np.eye(d)
        if scale.shape != (d, d) or not np.all(np.isfinite(scale)) or not np.allclose(scale, scale.T):
            raise ParameterError(f"The prior's scale must be a symmetric {d} x {d} matrix (or a number times I).")
        eigenvalues = np.linalg.eigvalsh(scale)
        if np.any(eigenvalues < -1e-10 * max(float(np.abs(eigenvalues).max()), np.finfo(np.float64).tiny)):
            raise ParameterError("The prior's scale must be positive semi-definite.")
        stored: tuple[Any, ...] = tuple(tuple(row) for row in scale.tolist())
    elif ct.name == "diag":
        scale = np.broadcast_to(scale.reshape(-1) if scale.ndim else scale, (d,)) if scale.size in (1, d) else scale
        if scale.shape != (d,) or not np.all(np.isfinite(scale)) or np.any(scale < 0.0):
            raise ParameterError(f"The prior's scale for diag must be a number or {d} numbers, all >= 0.")
        stored = _tuple(scale)
    else:
        if scale.size != 1 or not np.isfinite(scale).all() or float(scale.reshape(-1)[0]) < 0.0:
            raise ParameterError("The prior's scale for spherical must be one number >= 0.")
        stored = (float(scale.reshape(-1)[0]),)
    return GaussianPrior(shrinkage, _tuple(mean), dof, stored)


def map_means_covariances(
    kind: str,
    prior: GaussianPrior,
    r: FloatArray,
    shift: FloatArray,
    first: FloatArray,
    second: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The posterior mode of the means and covariances from a mixture's statistics.

    Parameters
    ----------
    kind : str
        The covariance type.
    prior : GaussianPrior
        The prior.
    r : ndarray of shape (k,)
        Responsibility sums.
    shift : ndarray of shape (k, d)
        The centres the moments are taken around.
    first : ndarray of shape (k, d)
        ``sum_i r_ik (x_i - shift_k)``.
    second : ndarray
        The second moments around ``shift`` (see :class:`daskem.models.gmm.GaussianMixtureStats`).

    Returns
    -------
    means : ndarray of shape (k, d)
    covariances : ndarray
        The covariance type's shape, without any ``reg_covar``.
    counts : ndarray
        The denominators (``(1,)`` for tied, else ``(k,)``), for the regularisation's gap.
    """
    ct = covariance_type(kind)
    k, d = first.shape
    kappa, nu = prior.shrinkage, prior.dof
    delta = prior.mean_array[None, :] - shift  # the prior mean from each centre
    weight = r + kappa if kappa > 0.0 else r + 10.0 * np.finfo(np.float64).eps
    a = (first + kappa * delta) / weight[:, None]  # the new means from the centres
    unit = np.full(k, 1.0 / k) if ct.shared else np.ones(k)
    scatter = ct.covariance(unit, r, first, a, second, 0.0)  # the data's scatter around the new means
    e = a - delta  # the new means minus the prior mean
    scale = prior.scale_array
    count = prior_count(kind, d, k)
    if ct.name == "full":
        total = scale + scatter + kappa * e[:, :, None] * e[:, None, :]
        counts = nu + count + r
        covariances = total / counts[:, None, None]
    elif ct.name == "tied":
        total = scale + scatter + kappa * (e.T @ e)
        counts = np.array([nu + count + r.sum()])
        covariances = total / counts[0]
    elif ct.name == "diag":
        total = scale[None, :] + scatter + kappa * e * e
        counts = nu + count + r
        covariances = total / counts[:, None]
    else:
        total = scale[0] + d * scatter + kappa * (e * e).sum(axis=1)
        counts = nu + 2.0 + (r + 1.0) * d
        covariances = total / counts
    return shift + a, np.asarray(covariances), np.asarray(counts)


def gap_counts(kind: str, counts: FloatArray, n_features: int) -> FloatArray:
    """The weights of each distinct covariance's eigenvalue terms in the M-step's gap
    (``counts / d`` for spherical, whose one variance stands for ``d`` eigenvalues)."""
    return counts / n_features if covariance_type(kind).name == "spherical" else counts


def log_prior(kind: str, prior: GaussianPrior, means: FloatArray, precisions_cholesky: FloatArray) -> float:
    """The log prior density of means and covariances, up to a constant.

    ``sum_k log N(mu_k | mean, Sigma_k / kappa) + log IW(Sigma_k | dof, scale)`` (the
    type's analogue), without the terms that depend on the prior's values only.

    Parameters
    ----------
    kind : str
        The covariance type.
    prior : GaussianPrior
        The prior.
    means : ndarray of shape (k, d)
    precisions_cholesky : ndarray
        The precisions' Cholesky factors (the covariance type's shape).

    Returns
    -------
    float
    """
    ct = covariance_type(kind)
    k, d = means.shape
    kappa, nu = prior.shrinkage, prior.dof
    e = means - prior.mean_array[None, :]
    scale = prior.scale_array
    factor = np.asarray(precisions_cholesky, dtype=np.float64)
    log_det = np.asarray(ct.log_det(factor, d), dtype=np.float64)  # log det L = log|P| / 2 = -log|Sigma| / 2
    count = prior_count(kind, d, k)
    with np.errstate(over="ignore", invalid="ignore"):
        if ct.matrices:
            factors = np.broadcast_to(factor, (k, d, d)) if ct.shared else factor
            precision = factors @ np.swapaxes(factors, -1, -2)
            whitened = np.einsum("kd,kde->ke", e, factors)
            quad = float((whitened * whitened).sum())
            if ct.shared:
                trace = float(np.sum(precision[0] * scale))
                value = (nu + count) * float(log_det) - 0.5 * trace - 0.5 * kappa * quad
            else:
                trace = float(np.einsum("kab,ab->", precision, scale))
                value = (nu + count) * float(log_det.sum()) - 0.5 * trace - 0.5 * kappa * quad
        elif ct.name == "diag":
            precision = factor * factor
            value = float(
                (
                    (nu + count) / 2.0 * np.log(precision)
                    - 0.5 * scale[None, :] * precision
                    - 0.5 * kappa * e * e * precision
                ).sum()
            )
        else:
            precision = factor * factor
            value = float(
                (
                    (nu + count) / 2.0 * np.log(precision)
                    - 0.5 * scale[0] * precision
                    - 0.5 * kappa * (e * e).sum(axis=1) * precision
                ).sum()
            )
    return value
