"""Seconds per EM iteration with missing values against the same data with nothing missing.

The data (a synthetic mixture, d=16, k=8, float64, in memory) are fitted twice from the
same initial parameters for a fixed number of iterations (tol=0), in one process run:

- ``complete``: ``daskem.GaussianMixture`` on the data with nothing missing;
- ``missing``: ``daskem.GaussianMixture(missing="marginalize")`` on the same data with a
  fraction of the entries (10% by default) removed completely at random, so that most
  rows (1 - 0.9^16 = 81%) take the conditional-Gaussian path.

Both on Dask's threaded scheduler (2 threads). The ratio ``missing / complete`` is the
cost of marginalising the missing entries (issue target: at most 2 at 2,000,000 x 16, k=8, full).

``--out-of-core`` fits a Zarr store with the same fraction missing, ``--ratio`` (default 3)
times the total memory limit of a LocalCluster of 2 single-threaded worker processes
(768 MiB each: a worker holds about 400 MiB once its libraries and kernels are loaded,
so 512 MiB pauses it), streamed on every pass (``cache=False``), and prints the peak
resident memory of every worker (the kernel's ``VmHWM``) against its limit.

Usage::

    python benchmarks/bench_missing.py                           # n = 2,000,000, full
    python benchmarks/bench_missing.py --n 200000 --types full diag --fraction 0.2
    python benchmarks/bench_missing.py --out-of-core --ratio 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

import dask.array as da
import numpy as np
from _timing import time_iterations
from bench_out_of_core import Peaks
from dask.utils import format_bytes, parse_bytes

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


def out_of_core(fraction: float, ratio: float, memory_limit: str, iters: int, workdir: str) -> None:
    """Fit a store ``ratio`` times the workers' memory with ``fraction`` missing; print the peaks."""
    from distributed import Client

    from daskem.cli import local_cluster

    limit = parse_bytes(memory_limit)
    n = int(ratio * 2 * limit / (8 * D))
    path = os.path.join(workdir, "holes.zarr")
    shutil.rmtree(path, ignore_errors=True)
    X = make_mixture_array(n, D, K, seed=0, chunk_rows=65_536)[0]
    holes = da.random.default_rng(1).random(X.shape, chunks=X.chunks) < fraction
    start = time.perf_counter()
    da.where(holes, np.nan, X).to_zarr(path)
    print(
        f"wrote {n:,} x {D} ({format_bytes(n * D * 8)}, {ratio:g}x the workers' total limit) in "
        f"{time.perf_counter() - start:.0f}s"
    )
    sample = np.asarray(X[:100_000].compute())
    model = daskem.GaussianMixtureModel(K, "full")
    (p0,) = daskem.initial_params(model, daskem.as_source(sample), "kmeans", [np.random.default_rng(0)])
    precisions = p0.precisions_cholesky @ p0.precisions_cholesky.transpose(0, 2, 1)
    est = daskem.GaussianMixture(
        K,
        max_iter=iters,
        tol=0.0,
        cache=False,
        missing="marginalize",
        weights_init=p0.weights,
        means_init=p0.means,
        precisions_init=precisions,
    )
    with (
        local_cluster(2, 1, memory_limit) as cluster,
        Client(cluster) as client,
        Peaks(client) as peaks,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        est.fit(path)
        seconds = time.perf_counter() - start
    worst = peaks.worker_max
    print(
        f"{iters} iterations + the missing-value summary pass in {seconds:.0f}s; peak worker memory "
        f"{peaks.describe()} MiB against a limit of {format_bytes(limit)} each: "
        f"{'under' if worst < limit else 'OVER'} the limit ({worst / limit:.0%})"
    )
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--types", nargs="+", default=["full"])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out-of-core", action="store_true", help="fit a store larger than the workers' memory")
    parser.add_argument("--ratio", type=float, default=3.0, help="store size / total worker memory limit")
    parser.add_argument("--memory-limit", default="768MiB", help="memory limit per worker")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "daskem-bench-missing"))
    args = parser.parse_args()
    if args.out_of_core:
        os.makedirs(args.workdir, exist_ok=True)
        out_of_core(args.fraction, args.ratio, args.memory_limit, args.iters, args.workdir)
        return
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
