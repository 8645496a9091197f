"""Model selection by BIC / AIC over a grid of Gaussian mixtures, in shared passes.

Every candidate (number of components x covariance type) is fitted by EM in the same
passes over the data (:func:`daskem.em.engine.fit_em_restarts` with one model per run):

1. one uniform sample of at most :data:`daskem.em.init.INIT_SAMPLE_ROWS` rows, on which
   each number of components gets the best of ``n_init`` k-means (k-means++ seeds and
   Lloyd, in memory) whose hard assignment starts every covariance type with that many
   components;
2. the EM iterations of all candidates, each block read once per pass for all of them
   (a candidate that converges leaves the pass);
3. one last pass for the log-likelihood of every candidate's final parameters, from
   which ``BIC = -2 log L + p log n`` and ``AIC = -2 log L + 2 p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskem.em.engine import (
    BatchedModel,
    check_stats,
    compute_stats,
    counting_passes,
    data_blocks,
    fit_em_restarts,
    resolve_split_every,
)
from daskem.em.init import INIT_SAMPLE_ROWS, sample_rows, weighted_kmeans
from daskem.errors import ParameterError
from daskem.io.sources import as_source
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.models.kmeans import KMeansModel, KMeansParams


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate of a selection grid.

    Attributes
    ----------
    n_components : int
    covariance_type : str
    params : GaussianMixtureParams
        Final parameters.
    log_likelihood : float
        Total log-likelihood of the data under ``params``.
    n_parameters : int
        Free parameters of the mixture.
    bic, aic : float
        Information criteria (lower is better).
    n_iter : int
    converged : bool
    """

    n_components: int
    covariance_type: str
    params: GaussianMixtureParams
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_mixture`.

    Attributes
    ----------
    candidates : tuple of Candidate
        In grid order (covariance type major, then number of components).
    best_bic, best_aic : Candidate
        The candidates with the lowest BIC and AIC.
    n_samples : int
    n_passes : int
        Passes over the data made in all, shared by every candidate.
    """

    candidates: tuple[Candidate, ...]
    best_bic: Candidate
    best_aic: Candidate
    n_samples: int
    n_passes: int


def n_parameters(n_components: int, n_features: int, covariance: str) -> int:
    """Free parameters of a Gaussian mixture (as scikit-learn counts them for BIC)."""
    k, d = n_components, n_features
    return int(covariance_type(covariance).n_cov_parameters(k, d) + k * d + k - 1)


def _kmeans_labels(sample: np.ndarray, k: int, rng: np.random.Generator, n_init: int) -> np.ndarray:
    """Labels of the best (lowest inertia) of ``n_init`` in-memory k-means of the sample."""
    model = KMeansModel(k)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        params = KMeansParams.from_centers(weighted_kmeans(sample, np.ones(sample.shape[0]), k, rng))
        inertia = model.e_step(params, sample).inertia
        if inertia < best_inertia:
            best, best_inertia = params, inertia
    assert best is not None
    return model.predict(best, sample)


def _check_grid(n_components: Sequence[int], covariance_types: Sequence[str], n_samples: int) -> None:
    if not n_components or not covariance_types:
        raise ParameterError("The grid is empty: give at least one number of components and one covariance type.")
    for k in n_components:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"Numbers of components must be ints >= 1; got {k!r}.")
        if k > n_samples:
            raise ParameterError(f"n_components={k} is more than the {n_samples} rows of the data; lower it.")
    for ct in covariance_types:
        if ct not in COVARIANCE_TYPES:
            raise ParameterError(f"Unknown covariance type {ct!r}; choose among {sorted(COVARIANCE_TYPES)}.")


def select_mixture(
    X: Any,
    n_components: Sequence[int],
    covariance_types: Sequence[str] = ("full",),
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    random_state: int = 0,
    n_init: int = 3,
    split_every: int | None = None,
    cache: str | bool = "auto",
) -> Selection:
    """Fit a Gaussian mixture for every grid point in shared passes and score it by BIC/AIC.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str or DataSource
        The data.
    n_components : sequence of int
        Numbers of components to try.
    covariance_types : sequence of str
        Covariance types to try.
    max_iter, tol, reg_covar, split_every, cache
        As for :class:`daskem.GaussianMixture`.
    random_state : int
        Seed of the sample and of the k-means starts.
    n_init : int
        k-means runs on the sample per number of components; the lowest inertia starts EM.

    Returns
    -------
    Selection
    """
    source = as_source(X)
    _check_grid(n_components, covariance_types, source.n_samples)
    rng = np.random.default_rng(random_state)
    grid = [(int(k), ct) for ct in covariance_types for k in n_components]
    models = [GaussianMixtureModel(k, ct, reg_covar) for k, ct in grid]
    with counting_passes() as count:
        sample = sample_rows(source, INIT_SAMPLE_ROWS, rng)
        labels = {k: _kmeans_labels(sample, k, rng, n_init) for k in sorted({k for k, _ in grid})}
        starts = [
            model.params_from_responsibilities(sample, np.eye(k)[labels[k]])
            for model, (k, _) in zip(models, grid, strict=True)
        ]
        outcome = fit_em_restarts(
            models, source, starts, max_iter=max_iter, tol=tol, split_every=split_every, cache=cache
        )
        finals = tuple(r.params for r in outcome.results)
        batched = BatchedModel(models[0], tuple(models))
        stats = compute_stats(batched, finals, data_blocks(source, cache), resolve_split_every(split_every))
    n, d = source.n_samples, source.n_features
    candidates = []
    for (k, ct), model, result, s in zip(grid, models, outcome.results, stats, strict=True):
        check_stats(s, n, model=model)
        loglik = model.log_likelihood(s)
        p = n_parameters(k, d, ct)
        candidates.append(
            Candidate(
                k,
                ct,
                result.params,
                loglik,
                p,
                -2.0 * loglik + p * np.log(n),
                -2.0 * loglik + 2.0 * p,
                result.n_iter,
                result.converged,
            )
        )
    return Selection(
        candidates=tuple(candidates),
        best_bic=min(candidates, key=lambda c: c.bic),
        best_aic=min(candidates, key=lambda c: c.aic),
        n_samples=n,
        n_passes=count.passes,
    )
