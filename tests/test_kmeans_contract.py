"""The model contract suite (:class:`daskem.testing.ModelContract`) for k-means as hard EM.

KMeans declares a batched E-step (restarts share the centred tile) and its own stopping
rule (scikit-learn's centre shift): their laws run here with the common ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from daskem.models.kmeans import KMeansModel, KMeansParams
from daskem.testing import ModelContract, make_mixture_array

N_CLUSTERS = 3


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    """500 rows of 3 overlapping clusters in 3 features, and their true means."""
    X, spec = make_mixture_array(500, 3, N_CLUSTERS, seed=12, chunk_rows=500, separation=2.0)
    return np.asarray(X.compute()), spec.means


@pytest.fixture(scope="module")
def model() -> KMeansModel:
    return KMeansModel(N_CLUSTERS)


@pytest.fixture(scope="module")
def data(mixture: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mixture[0]


@pytest.fixture(scope="module")
def params(mixture: tuple[np.ndarray, np.ndarray]) -> KMeansParams:
    _, means = mixture
    rough = means + np.random.default_rng(5).normal(scale=1.0, size=means.shape)
    return KMeansParams.from_centers(rough)


class TestKMeansContract(ModelContract):
    """Every law of the contract for Lloyd's algorithm (log-likelihood: minus the inertia)."""

    # Lloyd reaches a fixed point in a few iterations; the monotone check needs a climb only.
    monotone_iter = 10
