"""The model contract suite (:class:`daskem.testing.ModelContract`) for Gaussian mixtures."""

from __future__ import annotations

import numpy as np
import pytest

from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.testing import ModelContract, make_mixture_array

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
N_COMPONENTS = 3


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    """500 rows of a 3-component mixture in 3 features, and its true means."""
    X, spec = make_mixture_array(500, 3, N_COMPONENTS, seed=11, chunk_rows=500, separation=3.0)
    return np.asarray(X.compute()), spec.means


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def model(request: pytest.FixtureRequest) -> GaussianMixtureModel:
    return GaussianMixtureModel(N_COMPONENTS, request.param)


@pytest.fixture(scope="module")
def data(mixture: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mixture[0]


@pytest.fixture(scope="module")
def params(model: GaussianMixtureModel, mixture: tuple[np.ndarray, np.ndarray]) -> GaussianMixtureParams:
    # Hard assignment to perturbed true means: a start that EM still has to improve.
    X, means = mixture
    rough = means + np.random.default_rng(5).normal(scale=1.0, size=means.shape)
    labels = ((X[:, None, :] - rough[None]) ** 2).sum(axis=2).argmin(axis=1)
    return model.params_from_responsibilities(X, np.eye(N_COMPONENTS)[labels])


class TestGaussianMixtureContract(ModelContract):
    """Every law of the contract, for each covariance type (the ``model`` fixture)."""
