"""Seconds per FastICA iteration: daskem against scikit-learn, same data, same start.

The data are ``n`` rows (2,000,000 by default) of d=16 features: 16 independent sources
(Laplace, uniform, Student's t with 5 degrees of freedom and a bimodal mixture, four of
each, unit scale) mixed by a random 16 x 16 matrix and offset from the origin; float64,
in memory, generated here with a seed. Both fit 16 components with the parallel
algorithm and ``fun="logcosh"``, from the same ``w_init``, ``tol=0``. Timed, in one
process run, each after a warm-up and as the median over ``--repeats`` runs:

- ``sklearn``: ``sklearn.decomposition.FastICA`` (its BLAS threads); its seconds per
  iteration are the difference of a fit of ``--iters`` iterations and a fit of one,
  divided by ``--iters - 1``, so its whitening (an SVD of the data) is left out;
- ``daskem threads``: ``daskem.FastICA`` on Dask's threaded scheduler; seconds per
  iteration from the fit's callback (median over iterations, so the moments' pass is
  left out), and the whole fit divided by ``n_iter_`` as ``wall/iter``;
- ``daskem dist``: the same on a LocalCluster of 2 single-threaded worker processes
  (:func:`daskem.cli.local_cluster`); the NumPy data are sent to the workers at every
  fit, which the per-iteration seconds exclude.

The table gives each daskem iteration as a multiple of scikit-learn's, and the largest
difference of the fitted ``components_`` relative to scikit-learn's after the same
iterations.

Usage::

    python benchmarks/bench_fastica.py                                  # n = 2,000,000, 5 iterations, 3 repeats
    python benchmarks/bench_fastica.py --n 200000 --repeats 1 --no-distributed
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from typing import Any

import numpy as np
from _timing import time_iterations
from sklearn.decomposition import FastICA as SKFastICA
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.cli import local_cluster

D = 16

#: Rows generated at a time (bounds the temporaries of the generator).
GENERATE_ROWS = 250_000


def make_data(n: int, seed: int) -> np.ndarray:
    """``n`` rows of 16 independent non-Gaussian sources, mixed and offset."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(D, D))
    offset = rng.normal(scale=5.0, size=D)
    X = np.empty((n, D))
    for start in range(0, n, GENERATE_ROWS):
        rows = min(GENERATE_ROWS, n - start)
        sources = np.empty((rows, D))
        sources[:, 0::4] = rng.laplace(size=(rows, D // 4))
        sources[:, 1::4] = rng.uniform(-1.7, 1.7, size=(rows, D // 4))
        sources[:, 2::4] = rng.standard_t(5, size=(rows, D // 4))
        sources[:, 3::4] = rng.choice([-1.0, 1.0], size=(rows, D // 4)) + 0.3 * rng.standard_normal((rows, D // 4))
        X[start : start + rows] = sources @ mixing + offset
    return X


def _sklearn_fit(X: np.ndarray, max_iter: int, w_init: np.ndarray) -> tuple[float, SKFastICA]:
    est = SKFastICA(D, max_iter=max_iter, tol=0.0, w_init=w_init)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    return time.perf_counter() - start, est


def time_sklearn(X: np.ndarray, iters: int, repeats: int, w_init: np.ndarray) -> dict[str, Any]:
    """Seconds per iteration: (a fit of ``iters`` iterations - a fit of one) / (iters - 1)."""
    _sklearn_fit(X, 1, w_init)  # warm-up
    one = statistics.median(_sklearn_fit(X, 1, w_init)[0] for _ in range(repeats))
    runs = [_sklearn_fit(X, iters, w_init) for _ in range(repeats)]
    many = statistics.median(t for t, _ in runs)
    return {"iter": (many - one) / (iters - 1), "fit": many, "components": runs[-1][1].components_}


def time_daskem(X: np.ndarray, iters: int, repeats: int, w_init: np.ndarray, client: Any = None) -> dict[str, Any]:
    return time_iterations(
        lambda max_iter: daskem.FastICA(D, max_iter=max_iter, tol=0.0, w_init=w_init),
        X,
        iters,
        repeats,
        client,
        lambda est: {"components": est.components_},
    )


def main() -> None:
    # The one-time uploads of in-memory data to the cluster are expected here.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--iters", type=int, default=5, help="iterations per fit (max_iter, tol=0), at least 2")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per tool (median), after a warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-distributed", action="store_true", help="skip the LocalCluster")
    args = parser.parse_args()
    if args.iters < 2:
        parser.error("--iters must be at least 2 (scikit-learn's iterations are a difference of two fits)")

    X = make_data(args.n, args.seed)
    w_init = np.random.default_rng(args.seed + 1).normal(size=(D, D))
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(f"data: n={args.n:,}, d={D}, {D} components, float64 in memory ({X.nbytes / 2**20:.0f} MiB)")

    sk = time_sklearn(X, args.iters, args.repeats, w_init)
    print(f"sklearn:        {sk['iter']:.4f} s/iter ({sk['fit']:.2f} s per fit of {args.iters})", flush=True)
    results: dict[str, dict[str, Any]] = {"daskem threads": time_daskem(X, args.iters, args.repeats, w_init)}
    print(f"daskem threads: {results['daskem threads']['iter']:.4f} s/iter", flush=True)
    if not args.no_distributed:
        from distributed import Client

        cluster = local_cluster(2, 1)
        client = Client(cluster, set_as_default=False)
        try:
            results["daskem dist"] = time_daskem(X, args.iters, args.repeats, w_init, client)
            print(f"daskem dist:    {results['daskem dist']['iter']:.4f} s/iter", flush=True)
        finally:
            client.close()
            cluster.close()

    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(
        f"n={args.n:,}, d={D}, {D} components, parallel, logcosh, float64, max_iter={args.iters}, tol=0, "
        f"median of {args.repeats} fits"
    )
    print()
    print("| tool | iterations | s/iter | wall s/iter | x sklearn | components_ rel. diff |")
    print("|---|---|---|---|---|---|")
    print(f"| sklearn | {args.iters} | {sk['iter']:.4f} | - | 1.00 | 0 |")
    scale = np.abs(sk["components"]).max()
    for name, r in results.items():
        diff = np.abs(r["components"] - sk["components"]).max() / scale
        print(
            f"| {name} | {r['n_iter']} | {r['iter']:.4f} | {r['wall']:.4f} | {r['iter'] / sk['iter']:.2f} "
            f"| {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
