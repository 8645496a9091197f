"""Seconds per k-means iteration: daskem against scikit-learn and dask-ml, same data, same start.

All runs fit the same in-memory data (a synthetic mixture, float64, d=16, k=8 by default)
from the same initial centres (``k`` random rows, passed as ``init`` array, ``n_init=1``)
for at most ``--iters`` Lloyd iterations (``tol=0``; from random rows Lloyd needs well
over 100 iterations on this data, so every tool runs all of them), in one process run:

- ``sklearn``: ``sklearn.cluster.KMeans`` (its default OpenMP threads); seconds per
  iteration = fit time / ``n_iter_`` (its per-fit overhead is a few ms);
- ``daskem threads``: ``daskem.KMeans`` on Dask's threaded scheduler;
- ``daskem dist``: the same on a LocalCluster of 2 single-threaded worker processes. The
  NumPy data are sent to the workers at every fit; that upload is excluded by reading
  the per-iteration ``seconds`` of the fit's callback (median over iterations);
- ``dask-ml threads`` / ``dask-ml dist``: ``dask_ml.cluster.KMeans`` on Dask's threaded
  scheduler and on the same LocalCluster, on the same blocks (persisted there once);
  per-iteration seconds from its own "Lloyd loop" timer (median). Each daskem figure is
  compared with dask-ml on the same scheduler.
  A warm-up fit first pays its numba compilation. If dask-ml cannot be imported, the
  PEERS.md figure (0.694 s/iteration at n=2M, dask-ml 2025.1.0 on 2 x 1 thread) is used
  as a recorded reference and labelled as such.

Every tool gets a warm-up fit; each figure is the median over ``--repeats`` fits. The
``wall/iter`` column is a whole ``fit`` (validation, uploads, final labels and inertia
included) divided by ``n_iter_``, for information.

Targets: daskem <= 0.2x dask-ml, daskem <= 2x scikit-learn.

Usage::

    python benchmarks/bench_kmeans.py                      # n = 2,000,000, 10 iterations, 3 repeats
    python benchmarks/bench_kmeans.py --n 200000 --iters 5 --repeats 1
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
from _timing import time_iterations
from sklearn.cluster import KMeans as SkKMeans
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.cli import local_cluster
from daskem.io.sources import default_chunk_rows
from daskem.testing import make_mixture_array

D, K = 16, 8

#: PEERS.md: dask-ml 2025.1.0 KMeans, seconds per iteration at n=2M on a LocalCluster of 2 x 1 thread.
DASK_ML_RECORDED = 0.694
DASK_ML_RECORDED_N = 2_000_000

TARGET_VS_DASK_ML = 0.2
TARGET_VS_SKLEARN = 2.0


class LloydTimes(logging.Handler):
    """Collects the seconds of dask-ml's "Lloyd loop" timer records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and str(args[0]).startswith("Lloyd loop")
            and hasattr(args[1], "total_seconds")
        ):
            self.seconds.append(args[1].total_seconds())


def time_sklearn(X: np.ndarray, init: np.ndarray, iters: int, repeats: int) -> dict[str, Any]:
    def fit(max_iter: int) -> tuple[float, SkKMeans]:
        est = SkKMeans(K, init=init, n_init=1, max_iter=max_iter, tol=0.0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X)
        return time.perf_counter() - start, est

    fit(2)  # warm-up
    runs = [fit(iters) for _ in range(repeats)]
    per_iter = statistics.median(t / est.n_iter_ for t, est in runs)
    est = runs[-1][1]
    return {"iter": per_iter, "wall": per_iter, "n_iter": est.n_iter_, "centers": est.cluster_centers_}


def time_daskem(X: Any, init: np.ndarray, iters: int, repeats: int, client: Any = None) -> dict[str, Any]:
    return time_iterations(
        lambda max_iter: daskem.KMeans(K, init=init, n_init=1, max_iter=max_iter, tol=0.0),
        X,
        iters,
        repeats,
        client,
        lambda est: {"centers": est.cluster_centers_, "passes": est.n_passes_},
    )


def time_dask_ml(X: np.ndarray, init: np.ndarray, iters: int, repeats: int, client: Any = None) -> dict[str, Any]:
    """dask-ml's KMeans on the same blocks: on ``client``'s cluster, or on Dask's threads."""
    from dask_ml.cluster import KMeans as DmKMeans

    handler = LloydTimes()
    logger = logging.getLogger("dask_ml.cluster.k_means")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with client.as_current() if client is not None else dask.config.set(scheduler="threads"):
            chunks = (default_chunk_rows(*X.shape), X.shape[1])
            Xd = da.from_array(X, chunks=chunks)
            if client is not None:
                from distributed import wait

                Xd = client.persist(Xd)
                wait(Xd)

            def fit(max_iter: int) -> tuple[float, list[float], Any]:
                handler.seconds = []
                est = DmKMeans(K, init=init, n_init=1, max_iter=max_iter, tol=0.0)
                start = time.perf_counter()
                est.fit(Xd)
                return time.perf_counter() - start, list(handler.seconds), est

            fit(2)  # warm-up: numba compilation
            runs = [fit(iters) for _ in range(repeats)]
    finally:
        logger.removeHandler(handler)
    est = runs[-1][2]
    if not all(secs for _, secs, _ in runs):
        raise RuntimeError("dask-ml logged no 'Lloyd loop' timings")
    return {
        "iter": statistics.median(statistics.median(secs) for _, secs, _ in runs),
        "wall": statistics.median(t / e.n_iter_ for t, _, e in runs),
        "n_iter": est.n_iter_,
        "centers": np.asarray(est.cluster_centers_),
    }


def main() -> None:
    # The one-time uploads of in-memory data to the cluster are expected here.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations per fit (max_iter, tol=0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per tool (median), after a warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-distributed", action="store_true", help="skip the LocalCluster (and dask-ml)")
    parser.add_argument("--no-dask-ml", action="store_true", help="use the recorded dask-ml figure")
    args = parser.parse_args()

    X = np.ascontiguousarray(make_mixture_array(args.n, D, K, seed=args.seed)[0].compute())
    rng = np.random.default_rng(args.seed)
    init = X[np.sort(rng.choice(args.n, K, replace=False))].copy()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(f"data: n={args.n:,}, d={D}, k={K}, float64 in memory ({X.nbytes / 2**20:.0f} MiB); init: {K} random rows")

    results: dict[str, dict[str, Any]] = {}
    results["sklearn"] = time_sklearn(X, init, args.iters, args.repeats)
    print(f"sklearn:        {results['sklearn']['iter']:.4f} s/iter", flush=True)
    results["daskem threads"] = time_daskem(X, init, args.iters, args.repeats)
    print(f"daskem threads: {results['daskem threads']['iter']:.4f} s/iter", flush=True)
    if not args.no_dask_ml:
        try:
            results["dask-ml threads"] = time_dask_ml(X, init, args.iters, args.repeats)
            print(f"dask-ml threads: {results['dask-ml threads']['iter']:.4f} s/iter", flush=True)
        except Exception as err:  # ImportError, or an incompatibility with this dask/scikit-learn
            print(f"dask-ml on threads was not available ({type(err).__name__}: {err})")

    dask_ml_note = ""
    if not args.no_distributed:
        from distributed import Client

        cluster = local_cluster(2, 1)
        client = Client(cluster, set_as_default=False)
        try:
            results["daskem dist"] = time_daskem(X, init, args.iters, args.repeats, client)
            print(f"daskem dist:    {results['daskem dist']['iter']:.4f} s/iter", flush=True)
            if not args.no_dask_ml:
                try:
                    results["dask-ml dist"] = time_dask_ml(X, init, args.iters, args.repeats, client)
                    print(f"dask-ml dist:   {results['dask-ml dist']['iter']:.4f} s/iter", flush=True)
                except Exception as err:  # ImportError, or an incompatibility with this dask/scikit-learn
                    dask_ml_note = f"dask-ml was not available ({type(err).__name__}: {err})"
        finally:
            client.close()
            cluster.close()
    if "dask-ml dist" not in results:
        dask_ml_note = dask_ml_note or "dask-ml was not run"
        results["dask-ml (PEERS.md, recorded)"] = {"iter": DASK_ML_RECORDED, "wall": float("nan"), "n_iter": None}
        print(f"{dask_ml_note}: using the recorded PEERS.md figure {DASK_ML_RECORDED} s/iter at n=2M")
        if args.n != DASK_ML_RECORDED_N:
            print(f"  (recorded at n={DASK_ML_RECORDED_N:,}, not n={args.n:,}: the dask-ml ratio is not like for like)")
    dask_ml_key = "dask-ml dist" if "dask-ml dist" in results else "dask-ml (PEERS.md, recorded)"

    sk = results["sklearn"]["iter"]
    dm = results[dask_ml_key]["iter"]
    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(f"n={args.n:,}, d={D}, k={K}, float64, max_iter={args.iters}, tol=0, median of {args.repeats} fits")
    print()
    print("| tool | iterations | s/iter | wall s/iter | x sklearn | x dask-ml | max centre diff vs sklearn |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        diff = np.abs(r["centers"] - results["sklearn"]["centers"]).max() if "centers" in r else float("nan")
        n_iter = "-" if r["n_iter"] is None else str(r["n_iter"])
        print(
            f"| {name} | {n_iter} | {r['iter']:.4f} | {r['wall']:.4f} | {r['iter'] / sk:.2f} | {r['iter'] / dm:.3f} "
            f"| {diff:.2e} |"
        )
    print()
    checks = []
    for name in ("daskem threads", "daskem dist"):
        if name not in results:
            continue
        # Like for like: dask-ml on the same scheduler (threads or the same cluster) when it ran.
        peer = name.replace("daskem", "dask-ml")
        peer = peer if peer in results else dask_ml_key
        ratio_dm = results[name]["iter"] / results[peer]["iter"]
        ratio_sk = results[name]["iter"] / sk
        checks.append((f"{name} <= {TARGET_VS_DASK_ML}x {peer}", ratio_dm, ratio_dm <= TARGET_VS_DASK_ML))
        checks.append((f"{name} <= {TARGET_VS_SKLEARN}x sklearn", ratio_sk, ratio_sk <= TARGET_VS_SKLEARN))
    for label, ratio, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {label} (ratio {ratio:.3f})")
    if dask_ml_note:
        print(f"note: {dask_ml_note}")
    elif args.n == DASK_ML_RECORDED_N:
        ratios = ", ".join(
            f"{name} {results[name]['iter'] / DASK_ML_RECORDED:.3f}x"
            for name in ("daskem threads", "daskem dist")
            if name in results
        )
        print(f"for reference (not a target check): PEERS.md recorded dask-ml at {DASK_ML_RECORDED} s/iter; {ratios}")


if __name__ == "__main__":
    main()
