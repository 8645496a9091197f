"""Seconds per PPCA EM iteration (daskem) against one scikit-learn PCA fit, same data.

The data are a synthetic linear-Gaussian sample, generated here with a seed: ``n`` rows
(2,000,000 by default), d=64 features, q=8 latent factors with loadings of decreasing
scale, isotropic unit noise, offset from the origin; float64, in memory. Timed, in one
process run, each after a warm-up and as the median over ``--repeats`` runs:

- ``sklearn PCA``: ``sklearn.decomposition.PCA(n_components=8).fit`` (its default solver
  and BLAS threads): the whole fit, which gives PPCA's closed-form answer in one go;
- ``daskem threads``: ``daskem.PPCA(8)`` on Dask's threaded scheduler, ``max_iter=--iters``,
  ``tol=0``; seconds per iteration from the fit's callback (median over iterations), and
  the whole fit divided by ``n_iter_`` as ``wall/iter``;
- ``daskem dist``: the same on a LocalCluster of 2 single-threaded worker processes
  (:func:`daskem.cli.local_cluster`); the NumPy data are sent to the workers at every fit,
  which the per-iteration seconds exclude.

The table gives each daskem iteration as a multiple of the PCA fit, and how many EM
iterations fit in one PCA fit. PCA forms the d x d covariance (O(n d^2)); an EM
iteration is O(n d q) with one read of the data, and scales to data that do not fit in
memory. The last column compares the fitted noise variance with PCA's (rescaled to the
maximum-likelihood divisor n), after ``--iters`` iterations from the random start.

``--converge`` adds whole fits on threads to ``tol=1e-6`` (per-sample log-likelihood),
plain and SQUAREM-accelerated: passes over the data, seconds, and the same accuracy
columns. On this data (signal variances far above the noise) the principal subspace is
found in a few passes, but plain EM moves the scale of the loadings slowly (rate about
``1 - 2 sigma^2 / lambda`` per iteration), which SQUAREM shortens.

Usage::

    python benchmarks/bench_ppca.py                       # n = 2,000,000, 10 iterations, 3 repeats
    python benchmarks/bench_ppca.py --n 200000 --iters 5 --repeats 1 --no-distributed --converge
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
from sklearn.decomposition import PCA

import daskem
from daskem.cli import local_cluster

D, Q = 64, 8

#: Rows generated at a time (bounds the temporaries of the generator).
GENERATE_ROWS = 250_000

#: Convergence threshold of the whole fits of ``--converge``.
CONVERGE_TOL = 1e-6


def make_data(n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``x = W^T z + mu + eps``: loadings of decreasing scale, unit noise."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(Q, D)) * np.linspace(3.0, 1.0, Q)[:, None]
    offset = rng.normal(scale=5.0, size=D)
    X = np.empty((n, D))
    for start in range(0, n, GENERATE_ROWS):
        rows = min(GENERATE_ROWS, n - start)
        X[start : start + rows] = rng.standard_normal((rows, Q)) @ loadings + rng.standard_normal((rows, D)) + offset
    return X


def time_sklearn(X: np.ndarray, repeats: int) -> dict[str, Any]:
    def fit() -> tuple[float, PCA]:
        est = PCA(n_components=Q)
        start = time.perf_counter()
        est.fit(X)
        return time.perf_counter() - start, est

    fit()  # warm-up
    runs = [fit() for _ in range(repeats)]
    est = runs[-1][1]
    n = X.shape[0]
    return {
        "fit": statistics.median(t for t, _ in runs),
        "noise": est.noise_variance_ * (n - 1) / n,
        "components": est.components_,
    }


def time_daskem(X: np.ndarray, iters: int, repeats: int, client: Any = None) -> dict[str, Any]:
    return time_iterations(
        lambda max_iter: daskem.PPCA(Q, max_iter=max_iter, tol=0.0, random_state=0),
        X,
        iters,
        repeats,
        client,
        lambda est: {"noise": est.noise_variance_},
    )


def time_converged(X: np.ndarray, accelerate: str | None, reference: np.ndarray) -> dict[str, Any]:
    """One whole fit to ``tol=1e-6`` on threads; its subspace compared with ``reference``'s."""
    est = daskem.PPCA(Q, tol=CONVERGE_TOL, max_iter=5000, accelerate=accelerate, random_state=0)
    start = time.perf_counter()
    est.fit(X)
    seconds = time.perf_counter() - start
    gap = subspace_gap(est.components_, reference)
    return {"fit": seconds, "passes": est.n_passes_, "noise": est.noise_variance_, "gap": gap}


def subspace_gap(components: np.ndarray, reference: np.ndarray) -> float:
    """Largest entry of the difference of the projectors onto the two row spaces."""
    basis, _ = np.linalg.qr(components.T)
    ref, _ = np.linalg.qr(reference.T)
    return float(np.abs(basis @ basis.T - ref @ ref.T).max())


def main() -> None:
    # The one-time uploads of in-memory data to the cluster are expected here.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--iters", type=int, default=10, help="EM iterations per fit (max_iter, tol=0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per tool (median), after a warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-distributed", action="store_true", help="skip the LocalCluster")
    parser.add_argument("--converge", action="store_true", help="also time whole fits to tol=1e-6 on threads")
    args = parser.parse_args()

    X = make_data(args.n, args.seed)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(f"data: n={args.n:,}, d={D}, q={Q}, float64 in memory ({X.nbytes / 2**20:.0f} MiB)")

    sk = time_sklearn(X, args.repeats)
    print(f"sklearn PCA:    {sk['fit']:.4f} s per fit", flush=True)
    results: dict[str, dict[str, Any]] = {"daskem threads": time_daskem(X, args.iters, args.repeats)}
    print(f"daskem threads: {results['daskem threads']['iter']:.4f} s/iter", flush=True)
    if not args.no_distributed:
        from distributed import Client

        cluster = local_cluster(2, 1)
        client = Client(cluster, set_as_default=False)
        try:
            results["daskem dist"] = time_daskem(X, args.iters, args.repeats, client)
            print(f"daskem dist:    {results['daskem dist']['iter']:.4f} s/iter", flush=True)
        finally:
            client.close()
            cluster.close()

    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(f"n={args.n:,}, d={D}, q={Q}, float64, max_iter={args.iters}, tol=0, median of {args.repeats} fits")
    print()
    print(
        "| tool | iterations | s/iter | wall s/iter | x PCA fit | iterations per PCA fit | noise variance rel. diff |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| sklearn PCA (whole fit) | - | {sk['fit']:.4f} | - | 1.00 | - | 0 |")
    for name, r in results.items():
        diff = abs(r["noise"] / sk["noise"] - 1.0)
        print(
            f"| {name} | {r['n_iter']} | {r['iter']:.4f} | {r['wall']:.4f} | {r['iter'] / sk['fit']:.2f} "
            f"| {sk['fit'] / r['iter']:.1f} | {diff:.1e} |"
        )
    if not args.converge:
        return
    print()
    print(f"whole fits on threads to tol={CONVERGE_TOL:g} (one fit each):")
    print()
    print("| accelerate | passes | seconds | x PCA fit | noise variance rel. diff | subspace gap vs PCA |")
    print("|---|---|---|---|---|---|")
    for accelerate in (None, "squarem"):
        r = time_converged(X, accelerate, sk["components"])
        print(
            f"| {accelerate} | {r['passes']} | {r['fit']:.2f} | {r['fit'] / sk['fit']:.1f} "
            f"| {abs(r['noise'] / sk['noise'] - 1.0):.1e} | {r['gap']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
