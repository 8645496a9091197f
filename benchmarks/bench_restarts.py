"""Restarts that share passes: wall time of R=8 against R=1 initialisations, data streamed from Zarr.

A synthetic mixture (default 2,000,000 x 16 float64, 8 components) is written to a Zarr
store in a temporary directory with Zarr's default codec (zstd; random floats barely
compress, so every pass reads and decompresses ~256 MB). Then
:func:`daskem.fit_em_restarts` fits, with ``cache=False`` (every pass streams the store),
``max_iter=--iters`` and ``tol=0`` (the likelihood rule never stops a run early):

- ``kmeans``: :class:`daskem.models.KMeansModel` (k=8) from ``R`` different sets of
  ``k`` random rows of an in-memory sample (not k-means++ seedings: on this well-separated
  mixture those converge in 2-3 iterations, and a converged run drops out of the shared
  passes, which would flatter R=8). Its own rule (centre shift <= 0, i.e. unchanged
  labels) could still stop a run early: the iteration counts are printed;
- ``diag``: :class:`daskem.models.GaussianMixtureModel` (k=8, diagonal covariances) from
  ``R`` k-means initialisations of the same sample (:func:`daskem.initial_params`).

The ``R`` starts are all different; R=1 uses the first of them. All restarts of a fit
share every pass (one read of each block, the E-steps of all active runs on it), so the
expected ratio is ``(read + R * estep) / (read + estep)``: the ``read`` column is a plain
``da.from_zarr(path).sum().compute()`` on the same scheduler, ``estep`` is a pass of the
R=1 fit minus ``read``, and the "expected" column is that formula (measured close to
expected: the read is shared as it should be, and the rest is E-step compute).

Schedulers (``--schedulers``): ``distributed``, a LocalCluster of 2 worker processes x 1
thread with a memory limit per worker (``--memory-limit``; a streamed fit needs only the
blocks in flight; ``cache=False`` is what forces the streaming, since this store would
fit in the cluster's memory), and ``threads``, Dask's local threaded scheduler (what a
single machine would use). Each fit is timed whole (wall clock, median of
``--repeats`` after a warm-up pass).

Target: wall time R=8 / R=1 <= 2.5.

Usage::

    python benchmarks/bench_restarts.py                       # n = 2,000,000, 5 iterations, both schedulers
    python benchmarks/bench_restarts.py --n 500000 --iters 3 --models kmeans --schedulers threads
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.utils import format_bytes, parse_bytes

import daskem
from daskem.cli import WORKER_ENVIRON
from daskem.models.kmeans import shared_reference
from daskem.testing import write_mixture_zarr

D, K = 16, 8
TARGET = 2.5
SAMPLE_ROWS = 100_000


def kmeans_starts(sample: np.ndarray, count: int, seed: int) -> list[daskem.KMeansParams]:
    """``count`` different sets of ``K`` random rows of ``sample``, on one shared reference
    (as daskem.KMeans starts its runs, so that they share each E-step tile)."""
    centers = []
    for r in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, r]))
        centers.append(sample[np.sort(rng.choice(sample.shape[0], K, replace=False))])
    return shared_reference(centers)


def diag_starts(sample: np.ndarray, count: int, seed: int) -> list[Any]:
    """``count`` different k-means initialisations of a diagonal mixture, on ``sample``."""
    model = daskem.GaussianMixtureModel(K, "diag")
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, r])) for r in range(count)]
    return daskem.initial_params(model, daskem.as_source(sample), "kmeans", rngs)


def timed_fit(model: Any, path: str, starts: list[Any], iters: int) -> dict[str, Any]:
    passes: list[float] = []

    def callback(index: int, record: Any, params: Any) -> None:
        if index == 0:
            passes.append(record.seconds)

    start = time.perf_counter()
    out = daskem.fit_em_restarts(model, path, starts, max_iter=iters, tol=0.0, cache=False, callback=callback)
    seconds = time.perf_counter() - start
    if not all(np.isfinite(r.lower_bound) for r in out.results):
        raise RuntimeError("a run diverged")
    return {
        "seconds": seconds,
        "passes": out.n_passes,
        "n_iter": [r.n_iter for r in out.results],
        "best_lb": out.results[out.best].lower_bound,
    }


def timed_read(path: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        da.from_zarr(path).sum().compute()
        times.append(time.perf_counter() - start)
    return min(times)


def run_all(path: str, starts: dict[str, list[Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every model at R=1 and R=R on the current scheduler."""
    models = {"kmeans": daskem.KMeansModel(K), "diag": daskem.GaussianMixtureModel(K, "diag")}
    out: dict[str, Any] = {"read": timed_read(path, 2)}
    for name in args.models:
        model = models[name]
        timed_fit(model, path, starts[name][:1], 1)  # warm-up
        for r in (1, args.restarts):
            fits = [timed_fit(model, path, starts[name][:r], args.iters) for _ in range(args.repeats)]
            out[name, r] = {**fits[-1], "seconds": statistics.median(f["seconds"] for f in fits)}
            print(
                f"  {name} R={r}: {out[name, r]['seconds']:.2f}s, {out[name, r]['passes']} passes, "
                f"iterations {out[name, r]['n_iter']}",
                flush=True,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--iters", type=int, default=5, help="max_iter of every fit (tol=0)")
    parser.add_argument("--restarts", type=int, default=8, help="R compared with R=1")
    parser.add_argument("--repeats", type=int, default=1, help="timed fits per case (median), after a warm-up")
    parser.add_argument("--models", nargs="+", default=["kmeans", "diag"], choices=["kmeans", "diag"])
    parser.add_argument(
        "--schedulers", nargs="+", default=["threads", "distributed"], choices=["threads", "distributed"]
    )
    parser.add_argument("--memory-limit", default="1GiB", help="memory limit per worker (distributed)")
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows per Zarr chunk (8 MiB at d=16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where to write the store (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="daskem-bench-restarts-")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"X-{args.n}.zarr")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    start = time.perf_counter()
    write_mixture_zarr(path, args.n, D, K, seed=args.seed, chunk_rows=args.chunk_rows, compress=True, overwrite=True)
    arr = zarr.open_array(path, mode="r")
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    print(
        f"store {path}: {args.n:,} x {D} float64 ({format_bytes(arr.nbytes)}, {format_bytes(stored)} on disk, "
        f"codec {arr.compressors}), {arr.nchunks} chunks of {args.chunk_rows:,} rows, "
        f"written in {time.perf_counter() - start:.1f}s"
    )

    try:
        sample = np.asarray(arr[:SAMPLE_ROWS])
        starts: dict[str, list[Any]] = {}
        if "kmeans" in args.models:
            starts["kmeans"] = kmeans_starts(sample, args.restarts, args.seed)
        if "diag" in args.models:
            starts["diag"] = diag_starts(sample, args.restarts, args.seed)

        results: dict[str, dict[str, Any]] = {}
        for scheduler in args.schedulers:
            if scheduler == "threads":
                print("threads: Dask's local threaded scheduler", flush=True)
                results[scheduler] = run_all(path, starts, args)
                continue
            from distributed import Client, LocalCluster

            limit = parse_bytes(args.memory_limit)
            print(f"distributed: LocalCluster 2 workers x 1 thread, {format_bytes(limit)} each", flush=True)
            environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                cluster = LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    memory_limit=limit,
                )
            client = Client(cluster, set_as_default=False)
            try:
                with client.as_current():
                    results[scheduler] = run_all(path, starts, args)
            finally:
                client.close()
                cluster.close()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    r = args.restarts
    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(
        f"n={args.n:,}, d={D}, k={K}, zstd Zarr streamed every pass (cache=False), max_iter={args.iters}, tol=0, "
        f"median of {args.repeats} fit(s)"
    )
    print()
    print(
        f"| scheduler | model | read s | R=1 s | R={r} s | R={r} / R=1 | passes R=1 / R={r} | "
        f"s/pass R=1 | s/pass R={r} | expected if only the read is shared | iterations R={r} (min-max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    checks = []
    for scheduler, res in results.items():
        for name in args.models:
            one, many = res[name, 1], res[name, r]
            ratio = many["seconds"] / one["seconds"]
            checks.append((scheduler, name, ratio))
            # One pass of R=1 = read + E-step; R runs share the read and make R E-steps.
            read, per_pass = res["read"], one["seconds"] / one["passes"]
            estep = max(per_pass - read, 0.0)
            expected = (read + r * estep) / (read + estep)
            print(
                f"| {scheduler} | {name} | {res['read']:.2f} | {one['seconds']:.2f} | {many['seconds']:.2f} | "
                f"{ratio:.2f} | {one['passes']} / {many['passes']} | {one['seconds'] / one['passes']:.3f} | "
                f"{many['seconds'] / many['passes']:.3f} | {expected:.2f} | "
                f"{min(many['n_iter'])}-{max(many['n_iter'])} |"
            )
    print()
    for scheduler, name, ratio in checks:
        ok = ratio <= TARGET
        print(f"{'PASS' if ok else 'FAIL'}: {name} on {scheduler}: R={r} / R=1 = {ratio:.2f} (target <= {TARGET})")
    met = sorted({name for _, name, ratio in checks if ratio <= TARGET})
    print(f"models meeting the target on some scheduler: {', '.join(met) if met else 'none'}")


if __name__ == "__main__":
    main()
