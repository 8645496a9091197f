"""Driver overhead per pass: what daskem adds to an EM iteration on data of one small block.

A 1-block dataset of 1,000 rows (d=16, a mixture of k=4) is fitted for a fixed number of
iterations (tol=0) from the same initial parameters, in one process run:

- ``model``: the model's own ``e_step`` and ``m_step`` called in a plain Python loop (no
  Dask, BLAS pinned to one thread once): the arithmetic of an iteration and nothing else;
- ``sklearn``: ``sklearn.mixture.GaussianMixture`` (weights/means/precisions_init given);
- ``daskem``: ``daskem.GaussianMixture`` on Dask's threaded scheduler, seconds per
  iteration from its callback.

The driver overhead per pass is ``daskem - model``: building the pass's graph, the
``dask.compute``, BLAS pinning, the monitor, the bookkeeping of the restarts loop.
Target: at most 3 ms on threads.

Usage::

    python benchmarks/bench_driver_overhead.py
    python benchmarks/bench_driver_overhead.py --iters 50 --repeats 5 --types full diag
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import dask
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import daskem
from daskem.testing import make_mixture_array

N, D, K = 1000, 16, 4
TARGET_MS = 3.0


def _precisions(params: daskem.GaussianMixtureParams, ct: str) -> np.ndarray:
    pc = params.precisions_cholesky
    return {"full": lambda: pc @ pc.transpose(0, 2, 1), "tied": lambda: pc @ pc.T}.get(ct, lambda: pc**2)()


def model_loop(X: np.ndarray, params: daskem.GaussianMixtureParams, ct: str, iters: int) -> float:
    """Median seconds of one E-step + M-step of the model on the whole block, no Dask."""
    model = daskem.GaussianMixtureModel(K, ct)
    times = []
    with threadpool_limits(1, "blas"):
        for _ in range(iters):
            start = time.perf_counter()
            params = model.m_step(model.e_step(params, X), params)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def sklearn_fit(X: np.ndarray, params: daskem.GaussianMixtureParams, ct: str, iters: int) -> float:
    """Seconds per iteration of scikit-learn's fit from the same parameters."""
    sk = SkGaussianMixture(
        K,
        covariance_type=ct,
        max_iter=iters,
        tol=0.0,
        weights_init=params.weights,
        means_init=params.means,
        precisions_init=_precisions(params, ct),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
    return (time.perf_counter() - start) / iters


def daskem_fit(X: np.ndarray, params: daskem.GaussianMixtureParams, ct: str, iters: int) -> float:
    """Median seconds per iteration of daskem's fit (its callback's per-iteration times)."""
    est = daskem.GaussianMixture(
        K,
        covariance_type=ct,
        max_iter=iters,
        tol=0.0,
        weights_init=params.weights,
        means_init=params.means,
        precisions_init=_precisions(params, ct),
    )
    secs: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, callback=lambda rec, _: secs.append(rec.seconds))
    return statistics.median(secs[1:])  # the first record also holds the fit's set-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", nargs="+", default=["full", "diag"])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    X = np.ascontiguousarray(make_mixture_array(N, D, K, seed=0, chunk_rows=N)[0].compute())
    rows = []
    print(f"{'type':>9} {'model':>9} {'sklearn':>9} {'daskem':>9} {'overhead':>9}  (ms/iter, median of {args.repeats})")
    with dask.config.set(scheduler="threads"):
        for ct in args.types:
            model = daskem.GaussianMixtureModel(K, ct)
            (start,) = daskem.initial_params(model, daskem.as_source(X), "kmeans", [np.random.default_rng(0)])
            daskem_fit(X, start, ct, 3)  # warm-up: numba kernels, imports
            r = {
                "model": statistics.median(model_loop(X, start, ct, args.iters) for _ in range(args.repeats)),
                "sklearn": statistics.median(sklearn_fit(X, start, ct, args.iters) for _ in range(args.repeats)),
                "daskem": statistics.median(daskem_fit(X, start, ct, args.iters) for _ in range(args.repeats)),
            }
            r = {key: 1e3 * value for key, value in r.items()}
            r["overhead"] = r["daskem"] - r["model"]
            rows.append((ct, r))
            print(f"{ct:>9} {r['model']:9.3f} {r['sklearn']:9.3f} {r['daskem']:9.3f} {r['overhead']:9.3f}", flush=True)
    print()
    print(f"{'type':>9} {'daskem/model':>13} {'daskem/sklearn':>15} {'overhead/target':>16}")
    for ct, r in rows:
        print(
            f"{ct:>9} {r['daskem'] / r['model']:13.2f} {r['daskem'] / r['sklearn']:15.2f} "
            f"{r['overhead'] / TARGET_MS:16.2f}"
        )


if __name__ == "__main__":
    main()
