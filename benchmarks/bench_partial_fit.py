"""Seconds per row of ``partial_fit``: daskem's KMeans against scikit-learn's MiniBatchKMeans.

The data: ``--batches`` in-memory batches of ``--batch-rows`` x ``--features`` float64
rows (a synthetic Gaussian mixture, :func:`daskem.testing.make_mixture_array`), fed in
the same order to:

- ``sklearn``: ``sklearn.cluster.MiniBatchKMeans(k, init=C0, n_init=1,
  batch_size=--batch-rows, reassignment_ratio=0)``, one ``partial_fit`` per batch
  (``compute_labels=True``, its default: ``labels_`` and ``inertia_`` of each batch);
- ``daskem``: ``daskem.KMeans(k, init=C0)``, one ``partial_fit`` per batch: one online
  step per batch, as scikit-learn's (a NumPy batch is one block, computed on the driver
  without Dask). With the default ``learning_decay=1`` each centre is then the mean of every row ever assigned
  to it: MiniBatchKMeans' update with ``reassignment_ratio=0`` (no random relocation of
  small clusters, which daskem does not do). Each call also sets ``labels_`` and
  ``inertia_`` of the batch, as scikit-learn's;
- ``daskem gmm`` (reference, no peer): ``daskem.GaussianMixture(k, weights_init=1/k,
  means_init=C0, precisions_init=I)``, one
  ``partial_fit`` per batch (online EM, full covariances).

``C0`` is ``sklearn.cluster.kmeans_plusplus`` on the first batch (``random_state=--seed``),
the same for all. Every estimator gets a warm-up run over a few batches (numba
compilation); each figure is the median over ``--repeats`` runs of all the batches, in
seconds per row (microseconds printed). Also printed: the largest absolute difference
of the final centres daskem - scikit-learn (the same arithmetic: rounding only) and the
final inertia of each on all the data.

Target: daskem's time per row <= 2x scikit-learn's.

Usage::

    python benchmarks/bench_partial_fit.py                       # 100 batches of 10,000 x 16, k = 10
    python benchmarks/bench_partial_fit.py --batches 20 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus

import daskem
from daskem.testing import make_mixture_array

TARGET = 2.0


def run(make: Callable[[], Any], batches: list[np.ndarray]) -> tuple[float, Any]:
    """Seconds of one ``partial_fit`` per batch on a new estimator, and the estimator."""
    est = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # MiniBatchKMeans: explicit init with n_init
        start = time.perf_counter()
        for batch in batches:
            est.partial_fit(batch)
        return time.perf_counter() - start, est


def timed(make: Callable[[], Any], batches: list[np.ndarray], repeats: int) -> tuple[float, Any]:
    """Median seconds per row over ``repeats`` runs after a warm-up, and the last estimator."""
    run(make, batches[:3])
    runs = [run(make, batches) for _ in range(repeats)]
    rows = sum(len(b) for b in batches)
    return statistics.median(t for t, _ in runs) / rows, runs[-1][1]


def inertia(X: np.ndarray, centres: np.ndarray) -> float:
    d2 = (X * X).sum(1)[:, None] - 2 * X @ centres.T + (centres * centres).sum(1)[None, :]
    return float(np.maximum(d2.min(1), 0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gmm", action="store_true", help="skip the GaussianMixture.partial_fit reference")
    args = parser.parse_args()
    k, d, b = args.clusters, args.features, args.batch_rows

    X = np.ascontiguousarray(make_mixture_array(args.batches * b, d, k, seed=args.seed, chunk_rows=b)[0].compute())
    batches = [X[i : i + b] for i in range(0, len(X), b)]
    C0, _ = kmeans_plusplus(batches[0], k, random_state=args.seed)

    t_sk, sk = timed(
        lambda: MiniBatchKMeans(k, init=C0, n_init=1, batch_size=b, reassignment_ratio=0),
        batches,
        args.repeats,
    )
    t_dk, dk = timed(lambda: daskem.KMeans(k, init=C0), batches, args.repeats)
    t_gm = gm = None
    if not args.no_gmm:
        gm_inits = {
            "weights_init": np.full(k, 1.0 / k),
            "means_init": C0,
            "precisions_init": np.broadcast_to(np.eye(d), (k, d, d)).copy(),
        }
        t_gm, gm = timed(lambda: daskem.GaussianMixture(k, **gm_inits), batches, args.repeats)

    diff = float(np.abs(dk.cluster_centers_ - sk.cluster_centers_).max())
    print(
        f"data: {args.batches} batches of {b:,} x {d} float64 ({len(X):,} rows), k={k}; start: k-means++ on the "
        f"first batch; median of {args.repeats} runs after a warm-up"
    )
    print(
        "sklearn: MiniBatchKMeans(n_init=1, batch_size=batch, reassignment_ratio=0); daskem: KMeans(learning_decay=1):"
        " one step per batch"
    )
    print()
    print(f"{'estimator':>26} {'us/row':>8} {'s/batch':>8} {'steps':>6} {'inertia (all rows)':>20}")
    rows = [
        ("sklearn MiniBatchKMeans", t_sk, sk.n_steps_, inertia(X, sk.cluster_centers_)),
        ("daskem KMeans", t_dk, dk.n_steps_, inertia(X, dk.cluster_centers_)),
    ]
    for name, t, steps, inert in rows:
        print(f"{name:>26} {t * 1e6:8.3f} {t * b:8.4f} {steps:6d} {inert:20.6f}")
    if gm is not None and t_gm is not None:
        score = float(gm.score(X))
        name = "daskem GaussianMixture"
        print(f"{name:>26} {t_gm * 1e6:8.3f} {t_gm * b:8.4f} {gm.n_steps_:6d}   (mean log-likelihood {score:.6f})")
    print()
    print(f"daskem KMeans / sklearn time per row: {t_dk / t_sk:.3f}")
    if t_gm is not None:
        print(f"daskem GaussianMixture / sklearn MiniBatchKMeans time per row: {t_gm / t_sk:.3f} (reference)")
    print(f"max |centres daskem - centres sklearn|: {diff:.3e}")
    print()
    print(f"{'PASS' if t_dk <= TARGET * t_sk else 'FAIL'}  daskem <= {TARGET}x sklearn   {t_dk / t_sk:.3f}")


if __name__ == "__main__":
    main()
