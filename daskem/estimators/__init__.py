"""scikit-learn style estimators on top of the EM engine."""

from daskem.estimators._base import EMEstimator, load, restore
from daskem.estimators.bayesian_mixture import BayesianGaussianMixture
from daskem.estimators.factor import PPCA, FactorAnalysis
from daskem.estimators.gaussian_mixture import GaussianMixture
from daskem.estimators.hmm import CategoricalHMM, GaussianHMM, lengths_from_ids
from daskem.estimators.ica import FastICA, fastica
from daskem.estimators.ifa import IndependentFactorAnalysis
from daskem.estimators.imputer import GaussianImputer
from daskem.estimators.kmeans import KMeans
from daskem.estimators.lda import LatentDirichletAllocation

__all__ = [
    "BayesianGaussianMixture",
    "CategoricalHMM",
    "EMEstimator",
    "FactorAnalysis",
    "FastICA",
    "GaussianHMM",
    "GaussianImputer",
    "GaussianMixture",
    "IndependentFactorAnalysis",
    "KMeans",
    "LatentDirichletAllocation",
    "PPCA",
    "fastica",
    "lengths_from_ids",
    "load",
    "restore",
]
