"""Seconds per EM iteration with missing values against the same data with nothing missing.

The data (a synthetic mixture, d=16, k=8, float64, in memory) are fitted twice from the
same initial parameters for a fixed number of iterations (tol=0), in one process run:

- ``complete``: ``daskem.GaussianMixture`` on the data with nothing missing;
- ``missing``: ``daskem.GaussianMixture(missing="marginalize")`` on the same data with a
  fraction of the entries (10% by default) removed completely at random, so that most
  rows (1 - 0.9^16 = 81%) take the conditional-Gaussian path.

Both on Dask's threaded scheduler (2 threads). The ratio ``missing / complete`` is the
cost of marginalising the missing entries (issue target: at most 2 at 2,000,000 x 16, k=8, full).

Usage::

    python benchmarks/bench_missing.py                           # n = 2,000,000, full
    python benchmarks/bench_missing.py --n 200000 --types full diag --fraction 0.2
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import time_iterations

import daskem
from daskem.testing import make_mixture_array

D, K = 16, 8


def run(n: int, ct: str, fraction: float, iters: int) -> dict[str, float]:
    X = np.ascontiguousarray(make_mixture_array(n, D, K, seed=0)[0].compute())
    holed = X.copy()
    holed[np.random.default_rng(1).random(X.shape) < fraction] = np.nan
    model = daskem.GaussianMixtureModel(K, ct)
    (p0,) = daskem.initial_params(model, daskem.as_source(X), "kmeans", [np.random.default_rng(0)])
    prec = {"full": lambda pc: pc @ pc.transpose(0, 2, 1), "tied": lambda pc: pc @ pc.T}.get(ct, lambda pc: pc**2)
    inits = {"weights_init": p0.weights, "means_init": p0.means, "precisions_init": prec(p0.precisions_cholesky)}

    def make(missing: str):
        return lambda max_iter: daskem.GaussianMixture(
            K, covariance_type=ct, max_iter=max_iter, tol=0.0, missing=missing, **inits
        )

    complete = time_iterations(make("error"), X, iters, 1)
    missing = time_iterations(make("marginalize"), holed, iters, 1)
    return {"complete": complete["iter"], "missing": missing["iter"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--types", nargs="+", default=["full"])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    print(f"{'n':>9} {'type':>9} {'complete':>9} {'missing':>9} {'ratio':>7}  (s/iter, {args.fraction:.0%} missing)")
    for n in args.n:
        for ct in args.types:
            r = run(n, ct, args.fraction, args.iters)
            print(
                f"{n:>9} {ct:>9} {r['complete']:9.4f} {r['missing']:9.4f} {r['missing'] / r['complete']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
