"""Initial parameters without loading the data into memory.

Methods (scikit-learn's ``init_params`` names), for models that build parameters from
responsibilities (``params_from_responsibilities`` / ``stats_from_responsibilities``):

``"kmeans"``
    k-means (SciPy's ``kmeans2`` with k-means++ seeding) on a uniform random sample of
    at most :data:`INIT_SAMPLE_ROWS` rows; components start from the hard assignment.
``"k-means++"``
    k-means++ seeding on the same bounded sample; each component starts at one seed.
``"random_from_data"``
    ``n_components`` distinct rows drawn uniformly; each component starts at one row.
``"random"``
    Uniform random responsibilities for every row, in one pass over the blocks
    (each block draws from its own ``SeedSequence`` child, so the result does not
    depend on scheduling).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from dask.delayed import Delayed
from scipy.cluster.vq import kmeans2

from daskem.em.engine import check_stats, compute_stats, data_blocks, nonfinite_error, resolve_split_every
from daskem.io.sources import DataSource

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

#: Largest row sample the in-memory initialisers ("kmeans", "k-means++") read.
INIT_SAMPLE_ROWS = 100_000

#: Lloyd iterations of the k-means initialiser on the sample.
KMEANS_INIT_ITER = 50


def sample_rows(source: DataSource, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform random sample of ``size`` distinct rows, in data order, as NumPy.

    Only the sampled rows are held in memory; every block is read once.
    """
    n = source.n_samples
    if size >= n:
        rows = np.asarray(source.array.compute(), dtype=np.float64)
    else:
        index = np.sort(rng.choice(n, size=size, replace=False))
        rows = np.asarray(source.array[index].compute(), dtype=np.float64)
    bad = int(rows.size - np.count_nonzero(np.isfinite(rows)))
    if bad:
        raise nonfinite_error(bad, rows.shape[0], where=" of the initialisation sample")
    return rows


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_clusters`` k-means++ seeds among the rows of ``X`` (D^2 sampling)."""
    n = X.shape[0]
    chosen = [int(rng.integers(n))]
    dist = ((X - X[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, n_clusters):
        total = dist.sum()
        nxt = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        np.minimum(dist, ((X - X[nxt]) ** 2).sum(axis=1), out=dist)
    return np.asarray(chosen)


def _one_hot(labels: np.ndarray, n_components: int) -> np.ndarray:
    resp = np.zeros((labels.shape[0], n_components))
    resp[np.arange(labels.shape[0]), labels] = 1.0
    return resp


def _random_block_stats(model: Any, shift: np.ndarray, block: np.ndarray, seed: np.random.SeedSequence) -> Any:
    resp = np.random.default_rng(seed).uniform(size=(block.shape[0], model.n_components))
    resp /= resp.sum(axis=1, keepdims=True)
    return model.stats_from_responsibilities(block, resp, shift)


def _random_init(
    model: Any, source: DataSource, blocks: Sequence[Delayed], rng: np.random.Generator, split_every: int | None
) -> Any:
    seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(len(blocks))
    shift = np.asarray(source.array[: min(1024, source.n_samples)].mean(axis=0).compute(), dtype=np.float64)
    stats = compute_stats(
        model,
        shift,
        blocks,
        resolve_split_every(split_every),
        block_fn=_random_block_stats,
        block_args=[(s,) for s in seeds],
    )
    check_stats(stats, source.n_samples)
    return model.m_step(stats, None)


def initial_params(
    model: Any,
    source: DataSource,
    method: str,
    rng: np.random.Generator,
    *,
    split_every: int | None = None,
    sample_size: int = INIT_SAMPLE_ROWS,
) -> Any:
    """Initial parameters of ``model`` for the data by one of :data:`INIT_METHODS`.

    Parameters
    ----------
    model : Model
        A model with ``params_from_responsibilities`` (mixtures).
    source : DataSource
        The data.
    method : str
        One of :data:`INIT_METHODS`.
    rng : numpy.random.Generator
        Source of randomness.
    split_every : int, optional
        Reduction fan-in for the ``"random"`` pass.
    sample_size : int
        Row sample bound of ``"kmeans"`` and ``"k-means++"``.

    Returns
    -------
    Params
        The initial parameters.
    """
    k = model.n_components
    if method in ("kmeans", "k-means++"):
        sample = sample_rows(source, sample_size, rng)
        if method == "kmeans":
            with warnings.catch_warnings():
                # An empty cluster keeps its centre; the mixture's M-step copes with it.
                warnings.simplefilter("ignore", UserWarning)
                _, labels = kmeans2(sample, k, iter=KMEANS_INIT_ITER, minit="++", rng=rng)
            return model.params_from_responsibilities(sample, _one_hot(labels, k))
        seeds = kmeans_plusplus(sample, k, rng)
        return model.params_from_responsibilities(sample[seeds], np.eye(k))
    if method == "random_from_data":
        rows = sample_rows(source, k, rng)
        return model.params_from_responsibilities(rows, np.eye(k))
    if method == "random":
        return _random_init(model, source, data_blocks(source), rng, split_every)
    raise ValueError(f"init_params must be one of {list(INIT_METHODS)}; got {method!r}.")
