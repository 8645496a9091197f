"""Seconds per iteration: daskem's BayesianGaussianMixture, its GaussianMixture, scikit-learn's.

The data: ``--rows`` x ``--features`` float64 rows in memory, drawn from a
``--components``-component mixture (:func:`daskem.testing.make_mixture_array`, computed
once). Each estimator fits ``--components`` full-covariance components from the same
``init_params="random"`` start (``random_state=0``) with ``tol=0`` (no early stop), once
with ``--short`` and once with ``--long`` iterations; the difference of the two wall times
divided by the difference of the iterations is the time of one iteration (the
initialisation, the priors' pass and the final bookkeeping cancel); for daskem's the
median of the engine's own per-iteration records is printed too. A warm-up fit on a
small sample pays numba's compilation first. daskem runs on Dask's threaded scheduler
over its default in-memory blocks; scikit-learn on its (BLAS-threaded) NumPy code.

Targets (2,000,000 x 16, k = 8): daskem's BayesianGaussianMixture <= 1.2x its
GaussianMixture and <= 0.2x scikit-learn's BayesianGaussianMixture per iteration.

Usage::

    python benchmarks/bench_bayesian.py                     # 2,000,000 x 16, k = 8
    python benchmarks/bench_bayesian.py --rows 200000
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture

import daskem
from daskem.testing import make_mixture_array


def _seconds(make: Callable[[int], Any], X: np.ndarray, iterations: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        start = time.perf_counter()
        make(iterations).fit(X)
        return time.perf_counter() - start


def per_iteration(make: Callable[[int], Any], X: np.ndarray, short: int, long: int, repeats: int) -> float:
    """The best of ``repeats`` estimates of the seconds of one iteration (the difference method)."""
    best = np.inf
    for _ in range(repeats):
        best = min(best, (_seconds(make, X, long) - _seconds(make, X, short)) / (long - short))
    return float(best)


def recorded_per_iteration(make: Callable[[int], Any], X: np.ndarray, long: int, repeats: int) -> float:
    """The median over iterations of daskem's own per-iteration records, best of ``repeats``."""
    best = np.inf
    for _ in range(repeats):
        seconds: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(long).fit(X, callback=lambda record, params, out=seconds: out.append(record.seconds))
        best = min(best, float(np.median(seconds)))
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-sklearn", action="store_true", help="Time daskem's two estimators only.")
    args = parser.parse_args()
    k = args.components
    lazy, _ = make_mixture_array(args.rows, args.features, k, seed=0)
    X = np.asarray(lazy.compute())
    common: dict[str, Any] = {
        "n_components": k,
        "covariance_type": "full",
        "init_params": "random",
        "random_state": 0,
        "tol": 0.0,
    }
    estimators: dict[str, Callable[[int], Any]] = {
        "daskem BayesianGaussianMixture": lambda m: daskem.BayesianGaussianMixture(max_iter=m, **common),
        "daskem GaussianMixture": lambda m: daskem.GaussianMixture(max_iter=m, **common),
        "sklearn BayesianGaussianMixture": lambda m: SkBayesianGaussianMixture(max_iter=m, **common),
    }
    if args.no_sklearn:
        del estimators["sklearn BayesianGaussianMixture"]
    for make in estimators.values():  # numba's compilation and first-call costs, out of the timings
        _seconds(make, X[:5000], 2)
    print(f"{args.rows:,} x {args.features}, k = {k}, full covariances, float64 in memory")
    times = {}
    for name, make in estimators.items():
        times[name] = per_iteration(make, X, args.short, args.long, args.repeats)
        recorded = ""
        if name.startswith("daskem"):
            recorded = f"  (median of its records: {recorded_per_iteration(make, X, args.long, args.repeats):.4f} s)"
        print(f"  {name:34s} {times[name]:8.4f} s / iteration{recorded}")
    ours = times["daskem BayesianGaussianMixture"]
    print(f"  vs daskem GaussianMixture:          {ours / times['daskem GaussianMixture']:.2f}x (target <= 1.2x)")
    if not args.no_sklearn:
        theirs = times["sklearn BayesianGaussianMixture"]
        print(f"  vs sklearn BayesianGaussianMixture: {ours / theirs:.3f}x (target <= 0.2x)")


if __name__ == "__main__":
    main()
