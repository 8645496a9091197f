"""Seconds per EM iteration: MAP-EM (mclust's default prior) against maximum likelihood.

Both fit the same in-memory data (a synthetic mixture, float64) on Dask's threaded
scheduler from the same initial parameters for a fixed number of iterations (tol=0),
in one process run, per covariance type. The prior adds to an iteration only the
posterior-mode M-step (on the driver, from the same statistics) and the log prior
density of the parameters (once per block's statistics); the data's mean and covariance
for the default prior are one pass before the first iteration, not timed here. Target:
MAP at most 5% slower per iteration.

Usage::

    python benchmarks/bench_map.py                         # n = 200,000, d = 16, k = 8
    python benchmarks/bench_map.py --n 50000 --iters 5 --types full diag
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import dask
import dask.array
import numpy as np
from _timing import time_iterations

import daskem
from daskem.testing import make_mixture_array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=25_000)
    parser.add_argument("--types", nargs="+", default=["full", "tied", "diag", "spherical"])
    args = parser.parse_args()

    X = np.ascontiguousarray(make_mixture_array(args.n, args.d, args.k, seed=0)[0].compute())
    data = dask.array.from_array(X, chunks=(args.chunk_rows, -1))
    start = daskem.GaussianMixture(args.k, init_params="k-means++", random_state=0, max_iter=0)
    print(f"n={args.n:,} d={args.d} k={args.k}, {data.numblocks[0]} blocks, threads; median s/iteration")
    rows = []
    with dask.config.set(scheduler="threads", num_workers=2):
        for kind in args.types:
            start.set_params(covariance_type=kind).fit(data)
            init = {
                "weights_init": start.weights_,
                "means_init": start.means_,
                "precisions_init": start.precisions_,
            }
            prior = daskem.GaussianMixture(args.k, covariance_type=kind, prior="default", max_iter=0, **init)
            prior.fit(data)  # the resolved default prior: given in full, the timed fits read no extra pass

            def make(max_iter: int, with_prior: Any = None, kind: str = kind, init: dict[str, Any] = init) -> Any:
                return daskem.GaussianMixture(
                    args.k, covariance_type=kind, tol=0.0, max_iter=max_iter, prior=with_prior, **init
                )

            # Alternated, so that drifts of the machine's load fall on both alike.
            ml_runs, map_runs = [], []
            for _ in range(args.repeats):
                ml_runs.append(time_iterations(make, data, args.iters, 1)["iter"])
                map_runs.append(time_iterations(lambda m, p=prior.prior_: make(m, p), data, args.iters, 1)["iter"])
            ml, mp = statistics.median(ml_runs), statistics.median(map_runs)
            ratio = mp / ml
            rows.append((kind, ml, mp, ratio))
            print(f"{kind:>9}  ML {ml:.4f}  MAP {mp:.4f}  MAP/ML {ratio:.3f}", flush=True)
    worst = max(r[3] for r in rows)
    print(f"worst MAP/ML: {worst:.3f} ({'within' if worst <= 1.05 else 'above'} the 5% target)")


if __name__ == "__main__":
    main()
