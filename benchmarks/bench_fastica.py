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

``--out-of-core`` writes the same sources, mixed the same way, to an uncompressed float64
Zarr store (block by block from the generator, ``--chunk-rows`` rows a chunk: never held
in memory) of ``--ratio`` (default 3) times the total memory limit of a LocalCluster of
``--workers`` (default 1) single-threaded worker processes (``--memory-limit`` each,
default 1 GiB), and fits ``daskem.FastICA(16, max_iter=--ooc-iters, tol=0, cache=False,
random_state=--seed)`` streamed from it (``--ooc-iters`` default 2; the memory a pass
needs does not depend on them). It prints the peak resident memory of every worker (the
kernel's ``VmHWM``, reset after each iteration) per iteration, iteration 1 including the
moments' pass before it, against the limit: whether the largest peak stayed under the
limit and under Dask's pause threshold (80% of it), and whether it stayed flat (the last
iteration's within 10% of the first's). A paused worker keeps the tasks queued on it, so
the fit would wait for good: a watchdog aborts it when a worker stays paused for
``--pause-timeout`` seconds; ``--no-pause`` turns pausing off (the peaks alone). The
store is deleted afterwards.

Usage::

    python benchmarks/bench_fastica.py                                  # n = 2,000,000, 5 iterations, 3 repeats
    python benchmarks/bench_fastica.py --n 200000 --repeats 1 --no-distributed
    python benchmarks/bench_fastica.py --out-of-core                    # 3 GiB store, 1 worker x 1 GiB
    python benchmarks/bench_fastica.py --out-of-core --workers 2 --memory-limit 768MiB --ooc-iters 3
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr
from _memory import MiB, fit_with_peaks, pause_note, peak_rss, summary
from _timing import time_iterations
from dask.utils import format_bytes, parse_bytes
from sklearn.decomposition import FastICA as SKFastICA
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.cli import local_cluster

D = 16

#: Rows generated at a time (bounds the temporaries of the generator).
GENERATE_ROWS = 250_000


def data_blocks(n: int, seed: int, block_rows: int = GENERATE_ROWS) -> Iterator[np.ndarray]:
    """``n`` rows of 16 independent non-Gaussian sources, mixed and offset, ``block_rows`` at a time."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(D, D))
    offset = rng.normal(scale=5.0, size=D)
    for start in range(0, n, block_rows):
        rows = min(block_rows, n - start)
        sources = np.empty((rows, D))
        sources[:, 0::4] = rng.laplace(size=(rows, D // 4))
        sources[:, 1::4] = rng.uniform(-1.7, 1.7, size=(rows, D // 4))
        sources[:, 2::4] = rng.standard_t(5, size=(rows, D // 4))
        sources[:, 3::4] = rng.choice([-1.0, 1.0], size=(rows, D // 4)) + 0.3 * rng.standard_normal((rows, D // 4))
        yield sources @ mixing + offset


def make_data(n: int, seed: int) -> np.ndarray:
    """``n`` rows of 16 independent non-Gaussian sources, mixed and offset, in memory."""
    X = np.empty((n, D))
    start = 0
    for block in data_blocks(n, seed):
        X[start : start + len(block)] = block
        start += len(block)
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


# --- out of core ------------------------------------------------------------------------


def write_store(path: str, n: int, chunk_rows: int, seed: int) -> None:
    """The ``n`` rows of :func:`data_blocks` as an uncompressed float64 Zarr array, a few chunks at a time."""
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    arr = zarr.create_array(store=path, shape=(n, D), chunks=(chunk_rows, D), dtype=np.float64, compressors=None)
    block_rows = chunk_rows * max(1, GENERATE_ROWS // chunk_rows)  # whole chunks: no chunk written twice
    start = 0
    for block in data_blocks(n, seed, block_rows):
        arr[start : start + len(block)] = block
        start += len(block)
    print(f"wrote the store in {time.perf_counter() - t0:.0f}s; driver peak {peak_rss() / MiB:.0f} MiB", flush=True)


def out_of_core(args: argparse.Namespace) -> None:
    limit = parse_bytes(args.memory_limit)
    total = args.workers * limit
    n = math.ceil(args.ratio * total / (8 * D) / args.chunk_rows) * args.chunk_rows
    path = os.path.join(args.workdir, "fastica.zarr")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    try:
        write_store(path, n, args.chunk_rows, args.seed)
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        print(
            f"store: {n:,} x {D} float64 in chunks of {args.chunk_rows:,} rows ({format_bytes(8 * D * n)}, "
            f"{8 * D * n / total:.2f}x the workers' total limit of {format_bytes(total)}; "
            f"{format_bytes(disk)} on disk)",
            flush=True,
        )
        est = daskem.FastICA(D, max_iter=args.ooc_iters, tol=0.0, cache=False, random_state=args.seed)
        print(
            f"fitting {D} components, parallel, logcosh, {args.ooc_iters} iterations, tol=0, cache=False on "
            f"{args.workers} workers x {format_bytes(limit)} ({pause_note(limit, args.no_pause)})",
            flush=True,
        )
        rows, said = fit_with_peaks(
            lambda callback: est.fit(path, callback=callback),
            args.workers,
            args.memory_limit,
            no_pause=args.no_pause,
            pause_timeout=args.pause_timeout,
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)

    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    if not rows:
        print("no iteration finished")
        return
    worst = max(max(peaks.values()) for _, peaks in rows)
    pause = 0.8 * limit
    print(
        summary(rows, limit)
        + f"; {'under' if worst < pause else 'OVER'} Dask's pause threshold ({pause / MiB:.0f} MiB)"
        + ("" if said else f"; {est.n_iter_} iterations, {est.n_passes_} passes over the store")
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
    parser.add_argument("--out-of-core", action="store_true", help="only the out-of-core fit of a Zarr store")
    parser.add_argument("--ratio", type=float, default=3.0, help="store size / total worker memory limit")
    parser.add_argument("--memory-limit", default="1GiB", help="memory limit per worker")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the out-of-core fit")
    parser.add_argument("--ooc-iters", type=int, default=2, help="iterations of the out-of-core fit")
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows per Zarr chunk (8 MiB at d=16)")
    parser.add_argument("--no-pause", action="store_true", help="workers never pause (memory peaks only)")
    parser.add_argument("--pause-timeout", type=float, default=120.0, help="abort when a worker stays paused this long")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "daskem-bench-fastica"))
    args = parser.parse_args()
    if args.out_of_core:
        os.makedirs(args.workdir, exist_ok=True)
        out_of_core(args)
        return
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
