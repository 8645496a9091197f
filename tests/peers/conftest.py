"""The peers' own test files, run against daskem's estimators.

When pytest collects this directory, each test file named in :data:`SUITES` is copied from the
installed peer (scikit-learn, hmmlearn: whatever versions pip resolved) into ``copied/``
(ignored by git), with only the import of the class under test changed to daskem's (and a
package-relative import of the peer's own test helpers made absolute, since the copy lives
outside the peer's package). pytest then collects the copies as ordinary test modules.

A peer test that exercises the peer's private functions (``_init``, ``_check``,
``_set_parameters``, ...) rather than the public API is skipped, each with its reason, from
:data:`PRIVATE`. Every other test of the copied files must pass.

The peers' own fixtures are used as the peers define them: scikit-learn's ``global_dtype``
is imported from ``sklearn.conftest`` (float32 cases run when ``SKLEARN_RUN_FLOAT32_TESTS=1``,
as in scikit-learn), ``global_random_seed`` is 42 (scikit-learn's default) and hmmlearn's
global NumPy seed is fixed (hmmlearn draws one at random unless ``HMMLEARN_SEED`` is set).
"""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.conftest import global_dtype  # the peer's own fixture, used as it defines it

__all__ = ["global_dtype"]

COPIED = Path(__file__).parent / "copied"


@dataclass(frozen=True)
class PeerSuite:
    """A peer's test module and the source lines to change in its copy."""

    module: str
    replace: dict[str, str]


SUITES: dict[str, PeerSuite] = {
    "sklearn_gaussian_mixture": PeerSuite(
        "sklearn.mixture.tests.test_gaussian_mixture",
        {"from sklearn.mixture import GaussianMixture\n": "from daskem import GaussianMixture\n"},
    ),
    "sklearn_bayesian_mixture": PeerSuite(
        "sklearn.mixture.tests.test_bayesian_mixture",
        {"from sklearn.mixture import BayesianGaussianMixture\n": "from daskem import BayesianGaussianMixture\n"},
    ),
    "sklearn_k_means": PeerSuite(
        "sklearn.cluster.tests.test_k_means",
        {
            "from sklearn.cluster import KMeans, MiniBatchKMeans, k_means, kmeans_plusplus\n": (
                "from sklearn.cluster import MiniBatchKMeans, k_means, kmeans_plusplus\nfrom daskem import KMeans\n"
            )
        },
    ),
    "sklearn_factor_analysis": PeerSuite(
        "sklearn.decomposition.tests.test_factor_analysis",
        {"from sklearn.decomposition import FactorAnalysis\n": "from daskem import FactorAnalysis\n"},
    ),
    "sklearn_online_lda": PeerSuite(
        "sklearn.decomposition.tests.test_online_lda",
        {
            "from sklearn.decomposition import LatentDirichletAllocation\n": (
                "from daskem import LatentDirichletAllocation\n"
            ),
            # pytest-run-parallel's mark (scikit-learn's free-threading runs), unknown to this
            # suite's --strict-markers: the copies keep it as a comment.
            "@pytest.mark.thread_unsafe": "# pytest.mark.thread_unsafe",
        },
    ),
    "sklearn_fastica": PeerSuite(
        "sklearn.decomposition.tests.test_fastica",
        {
            "from sklearn.decomposition import PCA, FastICA, fastica\n": (
                "from sklearn.decomposition import PCA\nfrom daskem import FastICA, fastica\n"
            )
        },
    ),
    "hmmlearn_gaussian_hmm": PeerSuite(
        "hmmlearn.tests.test_gaussian_hmm",
        {"from .. import hmm\n": "import daskem as hmm\n", "from . import ": "from hmmlearn.tests import "},
    ),
    "hmmlearn_categorical_hmm": PeerSuite(
        "hmmlearn.tests.test_categorical_hmm",
        {"from hmmlearn import hmm\n": "import daskem as hmm\n", "from . import ": "from hmmlearn.tests import "},
    ),
}

# Tests of the peers' private functions, skipped, per suite: name (as in the node id, without
# the parameters: "test_x", "TestClass::test_x", or "test_x" for every class) -> why.
# Reviewed: each calls a private method of the class under test, or checks a private
# helper of the peer, not behaviour a user relies on.
PRIVATE: dict[str, dict[str, str]] = {
    "sklearn_gaussian_mixture": {
        "test_gaussian_mixture_precisions_init": "calls GaussianMixture._set_parameters and _initialize",
        "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
            "counts the calls of sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters"
        ),
    },
    "sklearn_bayesian_mixture": {
        "test_log_dirichlet_norm": "checks sklearn.mixture._bayesian_mixture._log_dirichlet_norm, a private helper",
        "test_log_wishart_norm": "checks sklearn.mixture._bayesian_mixture._log_wishart_norm, a private helper",
        "test_compare_covar_type": (
            "calls BayesianGaussianMixture._check_parameters and _initialize_parameters (the same relation of "
            "the covariance types after one M-step is tested in tests/test_bayesian_mixture.py)"
        ),
    },
    "sklearn_k_means": {
        "test_sample_weight_init": "calls KMeans._init_centroids, scikit-learn's private initialisation helper",
        "test_sample_weight_zero": "calls KMeans._init_centroids, scikit-learn's private initialisation helper",
    },
    "sklearn_factor_analysis": {},
    "sklearn_online_lda": {
        "test_lda_preplexity_mismatch": (
            "calls LatentDirichletAllocation._perplexity_precomp_distr, scikit-learn's private perplexity of "
            "precomputed document-topic distributions (daskem computes them within the pass)"
        ),
        "test_dirichlet_expectation": (
            "checks sklearn.decomposition._online_lda_fast's Cython helpers, not the estimator (daskem's kernels "
            "use the same digamma approximation: tests/test_lda.py)"
        ),
    },
    "sklearn_fastica": {
        "test_gs": "checks sklearn.decomposition._fastica._gs_decorrelation, a private helper (daskem's is "
        "daskem.models.ica.gs_decorrelation, exercised by tests/test_fastica.py's deflation oracles)",
    },
    "hmmlearn_gaussian_hmm": {},
    "hmmlearn_categorical_hmm": {
        "test__check_and_set_categorical_n_features": (
            "calls CategoricalHMM._check_and_set_n_features, hmmlearn's private symbol check (daskem checks "
            "symbols as data are read: tests/test_hmm.py::test_bad_symbols)"
        ),
    },
}


def copy_suite(name: str, suite: PeerSuite) -> Path:
    """Write the peer's test file with the imports of ``suite.replace`` changed; return its path."""
    spec = importlib.util.find_spec(suite.module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the peer test module {suite.module} is not installed; install the test extras")
    source = Path(spec.origin).read_text()
    for old, new in suite.replace.items():
        if old not in source:
            raise RuntimeError(
                f"{suite.module} ({spec.origin}) no longer contains {old!r}: update tests/peers/conftest.py "
                "for this version of the peer"
            )
        source = source.replace(old, new)
    header = f"# Copied from {suite.module} by tests/peers/conftest.py; only the imports named there changed.\n"
    text = header + source
    path = COPIED / f"test_{name}.py"
    if not path.exists() or path.read_text() != text:
        # Both test processes write the same text; os.replace makes each write whole.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, path)
    return path


# hmmlearn's test package sets np.seterr(all="warn") when imported (finding a test module's
# file imports its package, and collection imports the copies): the other tests of this
# process run under the error state from before, and hmmlearn's tests under its own
# (_peer_global_state).
_ERRSTATE = np.geterr()

COPIED.mkdir(exist_ok=True)
for _name, _suite in SUITES.items():
    copy_suite(_name, _suite)
np.seterr(**_ERRSTATE)


def pytest_collection_finish(session: pytest.Session) -> None:
    np.seterr(**_ERRSTATE)


@pytest.fixture
def global_random_seed() -> int:
    """scikit-learn's default global seed (``SKLEARN_TESTS_GLOBAL_RANDOM_SEED`` unset)."""
    return 42


@pytest.fixture(autouse=True)
def _peer_global_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """hmmlearn's tests run as in hmmlearn: its error state, global generators seeded (fixed)."""
    if request.path.parent == COPIED and request.path.name.startswith("test_hmmlearn"):
        np.random.seed(0)  # noqa: NPY002 (hmmlearn's tests draw from the legacy global generator)
        random.seed(0)
        with np.errstate(all="warn"):
            yield
    else:
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent != COPIED:
            continue
        suite = item.path.stem.removeprefix("test_")
        name = item.nodeid.split("::", 1)[1].split("[", 1)[0]  # "test_x" or "TestClass::test_x"
        reason = PRIVATE[suite].get(name, PRIVATE[suite].get(name.split("::")[-1]))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"tests a private function of the peer: {reason}"))
