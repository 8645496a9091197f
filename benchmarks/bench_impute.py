"""Imputing missing values: daskem's GaussianImputer against scikit-learn's IterativeImputer.

Both impute the same in-memory data: ``n`` rows of 20 correlated features (a Gaussian
with a 5-factor covariance plus noise, standardised), 20% of the entries removed at
random *given* an always-observed column (MAR: features 1..19 go missing more often
where feature 0 is large). Printed per imputer: the wall time of ``fit_transform`` and
the RMSE of the imputed values on the removed entries, then the ratios.

- ``daskem``: ``daskem.GaussianImputer()`` (one component: the multivariate-normal EM
  imputer; NumPy in, NumPy out, on Dask's local threads);
- ``sklearn``: ``sklearn.impute.IterativeImputer()`` with its defaults (BayesianRidge,
  10 rounds).

Usage::

    python benchmarks/bench_impute.py                      # n = 1,000,000
    python benchmarks/bench_impute.py --n-samples 100000 --components 1 2
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer

import daskem

D, FACTORS, MISSING = 20, 5, 0.2


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised correlated rows and their MAR mask (True: removed)."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(FACTORS, D))
    X = rng.standard_normal((n, FACTORS)) @ loadings + rng.normal(scale=0.7, size=(n, D))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    p = 1.0 / (1.0 + np.exp(-2.0 * X[:, 0]))
    p = np.clip(p * (MISSING * D / (D - 1)) / p.mean(), 0.0, 0.95)
    mask = rng.random(X.shape) < p[:, None]
    mask[:, 0] = False
    return X, mask


def run(impute: Callable[[np.ndarray], Any], X: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    holes = np.where(mask, np.nan, X)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IterativeImputer's ConvergenceWarning
        out = np.asarray(impute(holes))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rmse": float(np.sqrt(np.mean((out[mask] - X[mask]) ** 2)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--components", type=int, nargs="+", default=[1], help="daskem's n_components to run.")
    parser.add_argument("--no-sklearn", action="store_true", help="Skip IterativeImputer (slow for large n).")
    args = parser.parse_args()

    X, mask = make_data(args.n_samples)
    print(f"n = {args.n_samples:,} x {D}, {mask.mean():.1%} missing (MAR on feature 0)")
    results: dict[str, dict[str, float]] = {}
    for k in args.components:
        imputer = daskem.GaussianImputer(n_components=k, random_state=0)
        results[f"daskem k={k}"] = run(imputer.fit_transform, X, mask)
        print(f"  daskem k={k}: {imputer.n_iter_} EM iterations, converged: {imputer.converged_}")
    if not args.no_sklearn:
        results["sklearn"] = run(IterativeImputer().fit_transform, X, mask)
    print(f"{'imputer':>12} {'seconds':>9} {'rmse':>8}")
    for name, r in results.items():
        print(f"{name:>12} {r['seconds']:9.2f} {r['rmse']:8.4f}")
    if "sklearn" in results:
        print()
        print(f"{'imputer':>12} {'time/sklearn':>13} {'rmse/sklearn':>13}")
        base = results["sklearn"]
        for name, r in results.items():
            if name != "sklearn":
                print(f"{name:>12} {r['seconds'] / base['seconds']:13.3f} {r['rmse'] / base['rmse']:13.4f}")


if __name__ == "__main__":
    main()
