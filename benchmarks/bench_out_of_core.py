"""Out-of-core EM: a Zarr store many times the workers' memory, streamed on every pass.

On a LocalCluster of worker processes with a memory limit each (Dask's default memory
thresholds), a GaussianMixture (k=8, d=16, full and diag covariance) is fitted for a
fixed number of iterations (tol=0, ``cache=False``) from the same initial parameters on
two uncompressed float64 Zarr stores 4x apart in size, the larger one at least 10x the
workers' total memory limit. Measured:

- ``S``: seconds per iteration of the streamed fit (median over iterations);
- ``R``: seconds of a plain dask read of the same store on the same cluster,
  ``da.from_zarr(path).sum().compute()`` (best of ``--read-repeats``);
- ``M``: seconds per iteration of the same fit on an in-memory slice of the store
  (``--slice-mib``, persisted on the workers with ``cache=True``), scaled by the size
  ratio; ``M tiled`` cross-checks it with a fit over the persisted slice repeated to the
  store's row count (same number of tasks, no fixed cost scaled up);
- peak resident memory (the kernel's ``VmHWM``, reset before each fit) of every worker
  and of the driver (which also runs the scheduler);
- per-iteration scheduling overhead: a fit on ``--overhead-chunks`` small in-memory
  chunks; its seconds per iteration minus the E-step compute time (one chunk timed
  in-process on one thread, times chunks / worker threads), per chunk;
- growth: ``S`` at 4n over ``S`` at n.

Targets: S <= 1.25 (R + M); peak worker memory grows by less than 10% from n to 4n;
overhead under 1 ms per chunk; growth ratio between 3.6 and 4.4.

A worker process holds about 240 MiB before reading any data (the libraries that
``dask.array`` and daskem import), so the default limit is 512 MiB per worker, not less.

Usage::

    python benchmarks/bench_out_of_core.py                  # 2 x 512 MiB, stores of 2.6 and 10.25 GiB
    python benchmarks/bench_out_of_core.py --ratio 4 --iters 2 --types diag --keep
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import psutil
import zarr
from _memory import MiB, peak_rss, reset_peak
from dask.utils import format_bytes, parse_bytes
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import daskem
from daskem.cli import local_cluster
from daskem.io.sources import ChunkSizeWarning
from daskem.testing import make_mixture_array, write_mixture_zarr

D, K = 16, 8
ROW_BYTES = 8 * D

#: Dask's default memory thresholds, set explicitly.
MEMORY_CONFIG = {
    "distributed.worker.memory.target": 0.6,
    "distributed.worker.memory.spill": 0.7,
    "distributed.worker.memory.pause": 0.8,
    "distributed.worker.memory.terminate": 0.95,
}

#: Worker and nanny log lines that mean memory pressure.
PRESSURE_MARKERS = ("Pausing worker", "Unpausing", "spill", "exceeded", "Restarting", "memory budget")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- peak resident memory -------------------------------------------------------------------


class Peaks:
    """Peak RSS of every worker and of the driver over a ``with`` block."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers: dict[str, int] = {}
        self.driver = 0

    def __enter__(self) -> Peaks:
        self.client.run(reset_peak)
        reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers = self.client.run(peak_rss)
        self.driver = peak_rss()

    @property
    def worker_max(self) -> int:
        return max(self.workers.values())

    def describe(self) -> str:
        return "/".join(f"{v / MiB:.0f}" for v in self.workers.values())


# --- stores -----------------------------------------------------------------------------------


def ensure_store(path: str, n: int, chunk_rows: int, seed: int) -> float | None:
    """Write a mixture of ``n`` rows to ``path`` unless a complete one is there; seconds or None."""
    if os.path.exists(path):
        try:
            arr = zarr.open_array(path, mode="r")
            ok = (
                arr.shape == (n, D)
                and arr.chunks == (chunk_rows, D)
                and arr.dtype == np.float64
                and arr.attrs.get("daskem_truth", {}).get("seed") == seed  # written last: complete
            )
        except Exception:
            ok = False
        if ok:
            log(f"reusing {path}")
            return None
        shutil.rmtree(path)
    log(f"writing {path}: {n:,} x {D} float64 ({format_bytes(n * ROW_BYTES)})")
    start = time.perf_counter()
    write_mixture_zarr(path, n, D, K, seed=seed, chunk_rows=chunk_rows)
    return time.perf_counter() - start


# --- fits -----------------------------------------------------------------------------------


def initial(sample: np.ndarray, ct: str) -> tuple[Any, dict[str, np.ndarray]]:
    """Shared initial parameters (k-means on an in-memory sample), and as estimator arguments."""
    model = daskem.GaussianMixtureModel(K, ct)
    (p,) = daskem.initial_params(model, daskem.as_source(sample), "kmeans", [np.random.default_rng(0)])
    prec = {"full": lambda pc: pc @ pc.transpose(0, 2, 1)}.get(ct, lambda pc: pc**2)
    return p, {"weights_init": p.weights, "means_init": p.means, "precisions_init": prec(p.precisions_cholesky)}


def timed_fit(client: Any, X: Any, ct: str, inits: dict[str, Any], iters: int, cache: Any) -> tuple[float, Peaks]:
    """Median seconds per iteration of a fixed-iteration fit, and the peaks over the fit."""
    est = daskem.GaussianMixture(K, covariance_type=ct, max_iter=iters, tol=0.0, cache=cache, **inits)
    secs: list[float] = []
    with client.as_current(), Peaks(client) as peaks, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", ChunkSizeWarning)
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        est.fit(X, callback=lambda rec, _: secs.append(rec.seconds))
    if not np.isfinite(est.lower_bound_):
        raise RuntimeError(f"fit diverged: lower_bound_={est.lower_bound_}")
    return statistics.median(secs), peaks


def timed_read(client: Any, path: str, repeats: int) -> tuple[float, Peaks]:
    """Best seconds of ``da.from_zarr(path).sum().compute()`` on the cluster."""
    times = []
    with client.as_current(), Peaks(client) as peaks:
        for _ in range(repeats):
            start = time.perf_counter()
            da.from_zarr(path).sum().compute()
            times.append(time.perf_counter() - start)
    return min(times), peaks


def e_step_seconds(block: np.ndarray, ct: str, params: Any, repeats: int = 50) -> float:
    """Median seconds of one E-step on ``block``, in this process, on one thread."""
    model = daskem.GaussianMixtureModel(K, ct)
    times = []
    with threadpool_limits(limits=1):
        model.e_step(params, block)
        for _ in range(repeats):
            start = time.perf_counter()
            model.e_step(params, block)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--memory-limit", default="512MiB", help="memory limit per worker")
    parser.add_argument("--ratio", type=float, default=10.25, help="large store size / total worker memory limit")
    parser.add_argument("--n-large", type=int, default=None, help="rows of the large store (overrides --ratio)")
    parser.add_argument("--growth", type=int, default=4, help="size ratio of the large to the small store")
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows per Zarr chunk (8 MiB at d=16)")
    parser.add_argument("--types", nargs="+", default=["full", "diag"])
    parser.add_argument("--iters", type=int, default=3, help="EM iterations per fit (median reported)")
    parser.add_argument("--read-repeats", type=int, default=2)
    parser.add_argument("--slice-mib", type=float, default=64, help="in-memory slice for M (persisted on workers)")
    parser.add_argument("--overhead-chunks", type=int, default=5000)
    parser.add_argument("--overhead-rows", type=int, default=128, help="rows per chunk of the overhead fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "daskem-bench-out-of-core"))
    parser.add_argument("--keep", action="store_true", help="keep the stores (they are reused by the next run)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from distributed import Client

    limit = parse_bytes(args.memory_limit)
    total_limit = limit * args.workers
    quantum = args.growth * args.chunk_rows
    n_large = args.n_large or math.ceil(args.ratio * total_limit / ROW_BYTES / quantum) * quantum
    n_small = n_large // args.growth
    os.makedirs(args.workdir, exist_ok=True)
    paths = {
        n_small: os.path.join(args.workdir, f"X-{n_small}.zarr"),
        n_large: os.path.join(args.workdir, f"X-{n_large}.zarr"),
    }
    log(
        f"cluster {args.workers} x 1 thread, {format_bytes(limit)} each; stores {format_bytes(n_small * ROW_BYTES)} "
        f"and {format_bytes(n_large * ROW_BYTES)} ({n_large * ROW_BYTES / total_limit:.2f}x the total limit)"
    )

    # Data written and initial parameters drawn on local threads, before the cluster starts.
    written = {n: ensure_store(path, n, args.chunk_rows, args.seed) for n, path in paths.items()}
    slice_rows = max(args.chunk_rows, int(args.slice_mib * MiB / ROW_BYTES) // args.chunk_rows * args.chunk_rows)
    sample = np.asarray(zarr.open_array(paths[n_large], mode="r")[:slice_rows])
    starts = {ct: initial(sample[:100_000], ct) for ct in args.types}
    inits = {ct: start[1] for ct, start in starts.items()}
    overhead_X = np.ascontiguousarray(
        make_mixture_array(args.overhead_chunks * args.overhead_rows, D, K, seed=args.seed + 1)[0].compute()
    )

    with dask.config.set(MEMORY_CONFIG):
        cluster = local_cluster(args.workers, 1, limit)
    client = Client(cluster, set_as_default=False)
    pids_before = client.run(os.getpid)
    idle = client.run(lambda: psutil.Process().memory_info().rss)
    log(f"idle worker RSS: {'/'.join(f'{v / MiB:.0f}' for v in idle.values())} MiB")

    results: dict[tuple[str, int], dict[str, Any]] = {}
    reads: dict[int, tuple[float, Peaks]] = {}
    try:
        for n in (n_small, n_large):
            reads[n] = timed_read(client, paths[n], args.read_repeats)
            log(f"R n={n:,}: {reads[n][0]:.2f}s")
            for ct in args.types:
                s, peaks = timed_fit(client, paths[n], ct, inits[ct], args.iters, cache=False)
                results[ct, n] = {"S": s, "peaks": peaks}
                log(f"S {ct} n={n:,}: {s:.2f}s/iter, peak worker {peaks.describe()} MiB")

        # M: the same fit on an in-memory slice, persisted on the workers.
        m_slice: dict[str, tuple[float, Peaks]] = {}
        m_tiled: dict[str, float] = {}
        slice_X = da.from_array(sample, chunks=(args.chunk_rows, D))
        for ct in args.types:
            m_slice[ct] = timed_fit(client, slice_X, ct, inits[ct], args.iters, cache=True)
            log(f"M {ct} slice of {slice_rows:,} rows: {m_slice[ct][0]:.3f}s/iter")
        reps = n_large // slice_rows
        with client.as_current(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            persisted = slice_X.persist()
            tiled = da.concatenate([persisted] * reps)
            for ct in args.types:
                m_tiled[ct] = (
                    timed_fit(client, tiled, ct, inits[ct], min(args.iters, 2), cache=False)[0]
                    * n_large
                    / (reps * slice_rows)
                )
                log(f"M tiled {ct} ({reps} x the slice): {m_tiled[ct]:.2f}s/iter")
            del tiled, persisted

        # Scheduling overhead: many small in-memory chunks.
        ct0 = args.types[0]
        over_X = da.from_array(overhead_X, chunks=(args.overhead_rows, D))
        over_s, _ = timed_fit(client, over_X, ct0, inits[ct0], args.iters, cache=True)
        e_chunk = e_step_seconds(overhead_X[: args.overhead_rows], ct0, starts[ct0][0])
        threads = sum(client.nthreads().values())
        overhead = (over_s - e_chunk * args.overhead_chunks / threads) / args.overhead_chunks
        log(f"overhead fit: {over_s:.3f}s/iter, E-step {e_chunk * 1e3:.3f} ms/chunk")

        pids_after = client.run(os.getpid)
        pressure = [
            f"{addr}: {msg}"
            for logs in (client.get_worker_logs(), client.get_worker_logs(nanny=True))
            for addr, entries in logs.items()
            for _lvl, msg in entries
            if any(m.lower() in msg.lower() for m in PRESSURE_MARKERS)
        ]
    finally:
        client.close()
        cluster.close()
        if not args.keep:
            for path in paths.values():
                shutil.rmtree(path, ignore_errors=True)

    # --- report ---------------------------------------------------------------------------
    print()
    print(
        f"cluster: {args.workers} worker processes x 1 thread, memory limit {format_bytes(limit)} each "
        f"(total {format_bytes(total_limit)}); idle worker RSS "
        f"{'/'.join(f'{v / MiB:.0f}' for v in idle.values())} MiB; {os.cpu_count()} CPUs"
    )
    for n in paths:
        w = written[n]
        print(
            f"store n={n:,}: {format_bytes(n * ROW_BYTES)} = {n * ROW_BYTES / total_limit:.2f}x the total limit, "
            f"{n // args.chunk_rows} chunks of {args.chunk_rows:,} rows; "
            + (f"written in {w:.1f}s ({n * ROW_BYTES / w / 1e6:.0f} MB/s)" if w else "reused")
        )
    print(f"k={K}, d={D}, {args.iters} iterations per fit (median s/iter); M from a {slice_rows:,}-row slice")
    print()
    head = (
        f"{'type':>5} {'n':>11} {'GiB':>6} {'S s/it':>8} {'R s':>7} {'M s/it':>8} {'M tiled':>8} "
        f"{'S/(R+M)':>8} {'peak worker MiB':>16} {'driver MiB':>10}"
    )
    print(head)
    for ct in args.types:
        for n in (n_small, n_large):
            r = results[ct, n]
            m = m_slice[ct][0] * n / slice_rows
            tiled_txt = f"{m_tiled[ct]:8.2f}" if n == n_large else f"{'':>8}"
            print(
                f"{ct:>5} {n:>11,} {n * ROW_BYTES / 2**30:6.2f} {r['S']:8.2f} {reads[n][0]:7.2f} {m:8.2f} "
                f"{tiled_txt} {r['S'] / (reads[n][0] + m):8.3f} {r['peaks'].describe():>16} "
                f"{r['peaks'].driver / MiB:10.0f}"
            )
    for n in (n_small, n_large):
        print(f" read {n:>11,} peak worker {reads[n][1].describe()} MiB, driver {reads[n][1].driver / MiB:.0f} MiB")
    print(
        f"overhead: {args.overhead_chunks:,} chunks of {args.overhead_rows} rows ({ct0}, cached): "
        f"{over_s:.3f} s/iter, E-step {e_chunk * 1e3:.3f} ms/chunk x {args.overhead_chunks:,} / {threads} threads "
        f"= {e_chunk * args.overhead_chunks / threads:.3f} s -> {overhead * 1e3:.3f} ms/chunk"
    )

    print()
    checks: list[tuple[str, bool, str]] = []
    for ct in args.types:
        for n in (n_small, n_large):
            s, r = results[ct, n]["S"], reads[n][0]
            m = m_slice[ct][0] * n / slice_rows
            checks.append(
                (
                    f"S <= 1.25 (R + M)   {ct} n={n:,}",
                    s <= 1.25 * (r + m),
                    f"S={s:.2f} vs 1.25 x ({r:.2f} + {m:.2f}) = {1.25 * (r + m):.2f}",
                )
            )
        ps, pl = results[ct, n_small]["peaks"].worker_max, results[ct, n_large]["peaks"].worker_max
        checks.append(
            (
                f"peak worker growth < 10%   {ct}",
                pl < 1.1 * ps,
                f"{ps / MiB:.0f} -> {pl / MiB:.0f} MiB ({(pl / ps - 1) * 100:+.1f}%)",
            )
        )
        checks.append((f"peak worker < limit   {ct}", pl < limit, f"{pl / MiB:.0f} < {limit / MiB:.0f} MiB"))
        g = results[ct, n_large]["S"] / results[ct, n_small]["S"]
        checks.append((f"growth 3.6 - 4.4   {ct}", 3.6 <= g <= 4.4, f"S(4n)/S(n) = {g:.2f}"))
    checks.append(("overhead < 1 ms/chunk", overhead < 1e-3, f"{overhead * 1e3:.3f} ms/chunk"))
    checks.append(
        (
            "store >= 10x total limit",
            n_large * ROW_BYTES >= 10 * total_limit,
            f"{n_large * ROW_BYTES / total_limit:.2f}x",
        )
    )
    checks.append(("no worker restarted", pids_after == pids_before, f"{len(pids_before)} pids unchanged"))
    checks.append(("no memory pressure logged", not pressure, "; ".join(pressure[:3]) or "none"))
    width = max(len(c[0]) for c in checks)
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")


if __name__ == "__main__":
    main()
