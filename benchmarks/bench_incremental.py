"""Incremental EM (Neal & Hinton) against batch EM to the same fixed point: passes over the data.

The data: ``--rows`` x ``--features`` float64 rows drawn from a ``--components``-component
full-covariance Gaussian mixture (:func:`daskem.testing.write_mixture_zarr`, block by
block), in an uncompressed Zarr store of ``--chunk-rows``-row chunks (the fits' blocks;
40 by default). The store is written once and reused by later runs (``--store``).

Every fit starts from the same parameters, computed once before any timing:
:func:`daskem.initial_params` (``--init``, default ``"kmeans"``) on the store's first
``--init-rows`` rows, passed as ``weights_init`` / ``means_init`` / ``precisions_init``,
so no fit makes an initialisation pass and ``n_passes_`` counts EM passes only (blocks
read / blocks). Every fit streams the store (``cache=False``) and runs to ``--tol``
(default 1e-6, on the change of the mean per-sample log-likelihood between sweeps) on
Dask's threaded scheduler (``--workers 0``) or a LocalCluster of ``--workers`` processes:

- ``batch``: ``GaussianMixture(tol=--tol)``, every block each iteration;
- ``incr N``: ``GaussianMixture(schedule="incremental", step_blocks=N)`` for each N of
  ``--step-blocks``: an M-step after every N blocks, an iteration per sweep.

Printed per fit: passes (``n_passes_``), iterations, M-steps, wall seconds, the final
``lower_bound_``, the mean log-likelihood of the store under the fitted parameters
(``score``, one more pass, not timed), and its difference to batch's together with the
largest difference of the means (same start, so the same component order): the same
fixed point up to the distance ``tol`` leaves (where EM converges slowly, the change per
sweep is far below the distance left, so the fits stop at different points on the way).
``--reference-tol`` runs batch EM on from batch's result to a tighter tol and prints every
fit's distance to that fixed point. Then the passes ratio incremental / batch.

Target: passes(incremental) / passes(batch) <= 0.5.

Usage::

    python benchmarks/bench_incremental.py                         # 2,000,000 x 16, k = 10, 40 blocks
    python benchmarks/bench_incremental.py --rows 400000 --chunk-rows 10000 --step-blocks 1 4 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr
from dask.utils import format_bytes
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.io.sources import ChunkSizeWarning
from daskem.testing import mixture_spec, write_mixture_zarr

TARGET_PASSES = 0.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_store(path: str, n: int, d: int, k: int, chunk_rows: int, seed: int, separation: float) -> float | None:
    """Write the mixture to ``path`` unless a complete store of that shape is there; seconds or None."""
    if os.path.exists(path):
        try:
            arr = zarr.open_array(path, mode="r")
            truth = arr.attrs.get("daskem_truth", {})  # written last: the store is complete
            ok = (
                arr.shape == (n, d)
                and arr.chunks == (chunk_rows, d)
                and arr.dtype == np.float64
                and truth.get("seed") == seed
                and np.allclose(truth.get("means", np.nan), mixture_spec(d, k, seed, separation).means)
            )
        except Exception:
            ok = False
        if ok:
            log(f"reusing {path}")
            return None
        raise SystemExit(
            f"{path} exists but is not a {n:,} x {d} store (k={k}, chunks of {chunk_rows:,} rows, seed {seed}, "
            f"separation {separation}): remove it or pass another --store"
        )
    log(f"writing {path}: {n:,} x {d} float64 ({format_bytes(n * d * 8)}), chunks of {chunk_rows:,} rows")
    start = time.perf_counter()
    try:
        write_mixture_zarr(path, n, d, k, seed=seed, chunk_rows=chunk_rows, separation=separation)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return time.perf_counter() - start


def initial(sample: np.ndarray, k: int, method: str, seed: int) -> dict[str, np.ndarray]:
    """The shared start: ``method`` (:func:`daskem.initial_params`) on an in-memory sample."""
    model = daskem.GaussianMixtureModel(k, "full")
    (p,) = daskem.initial_params(model, daskem.as_source(sample), method, [np.random.default_rng(seed)])
    pc = p.precisions_cholesky
    return {"weights_init": p.weights, "means_init": p.means, "precisions_init": pc @ pc.transpose(0, 2, 1)}


@contextlib.contextmanager
def scheduler(workers: int) -> Iterator[str]:
    """Dask's threaded scheduler (``workers == 0``) or a LocalCluster of single-threaded processes."""
    if workers == 0:
        yield f"threaded scheduler ({os.cpu_count()} threads)"
        return
    from distributed import Client

    from daskem.cli import local_cluster

    with local_cluster(workers, 1) as cluster, Client(cluster, set_as_default=False) as client, client.as_current():
        yield f"LocalCluster of {workers} processes x 1 thread"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without the warnings of a fit stopped at ``max_iter`` (the online epoch) or of a large graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", ChunkSizeWarning)
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        yield


def fit(est: Any, path: str) -> dict[str, Any]:
    """Fit ``est`` on the store: its counters, seconds and the store's ``score`` (timed apart)."""
    with quiet():
        start = time.perf_counter()
        est.fit(path)
        seconds = time.perf_counter() - start
        score = float(est.score(path))
    return {
        "est": est,
        "seconds": seconds,
        "passes": int(est.n_passes_),
        "iters": int(est.n_iter_),
        "steps": int(est.n_steps_),
        "lower_bound": float(est.lower_bound_),
        "score": score,
        "converged": bool(est.converged_),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per Zarr chunk = per block")
    parser.add_argument("--separation", type=float, default=4.0, help="spread of the true means (mixture_spec)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the start")
    parser.add_argument("--store", default=None, help="Zarr store path (reused if it exists; default in $TMPDIR)")
    parser.add_argument("--workers", type=int, default=0, help="0: threaded scheduler; N: LocalCluster N x 1")
    parser.add_argument("--init-rows", type=int, default=100_000, help="first rows the start is computed on")
    parser.add_argument("--init", choices=("kmeans", "k-means++"), default="kmeans", help="the start on those rows")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--step-blocks", type=int, nargs="+", default=[1, 4, 10], help="incremental step sizes")
    parser.add_argument(
        "--reference-tol",
        type=float,
        default=None,
        help="also run batch EM on from batch's result to this tol (e.g. 1e-10), the fixed point the others are "
        "compared with (its passes are not counted anywhere)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n, d, k = args.rows, args.features, args.components
    name = f"X-{n}x{d}-k{k}-c{args.chunk_rows}-s{args.seed}-sep{args.separation:g}.zarr"
    path = args.store or os.path.join(tempfile.gettempdir(), "daskem-bench-incremental", name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    written = ensure_store(path, n, d, k, args.chunk_rows, args.seed, args.separation)
    n_blocks = -(-n // args.chunk_rows)

    sample = np.asarray(zarr.open_array(path, mode="r")[: min(args.init_rows, n)])
    start = time.perf_counter()
    inits = initial(sample, k, args.init, args.seed)
    log(f"start: {args.init} on {len(sample):,} rows in {time.perf_counter() - start:.2f}s")

    common = {"tol": args.tol, "max_iter": args.max_iter, "cache": False, **inits}
    runs: list[tuple[str, dict[str, Any]]] = []
    with scheduler(args.workers) as where:
        with quiet():  # warm-up: numba compilation, worker imports
            daskem.GaussianMixture(k, max_iter=2, cache=False, **inits).fit(sample[:20_000])
            daskem.GaussianMixture(k, schedule="incremental", max_iter=2, cache=False, **inits).fit(sample[:20_000])
        runs.append(("batch", fit(daskem.GaussianMixture(k, **common), path)))
        log(f"batch: {runs[-1][1]['passes']} passes, {runs[-1][1]['seconds']:.2f}s")
        for blocks in args.step_blocks:
            est = daskem.GaussianMixture(k, schedule="incremental", step_blocks=blocks, **common)
            runs.append((f"incr {blocks}", fit(est, path)))
            log(f"incremental step_blocks={blocks}: {runs[-1][1]['passes']} passes, {runs[-1][1]['seconds']:.2f}s")
        reference = None
        if args.reference_tol is not None:
            b = runs[0][1]["est"]
            ref_inits = {"weights_init": b.weights_, "means_init": b.means_, "precisions_init": b.precisions_}
            ref = daskem.GaussianMixture(
                k, tol=args.reference_tol, max_iter=100 * args.max_iter, cache=False, **ref_inits
            )
            reference = fit(ref, path)
            log(f"reference: {reference['passes']} more passes from batch's result")

    batch = runs[0][1]
    print()
    print(
        f"data: {n:,} x {d} float64 ({format_bytes(n * d * 8)}), k={k} full covariance, separation "
        f"{args.separation}, {n_blocks} blocks of {args.chunk_rows:,} rows, streamed (cache=False); "
        + (f"written in {written:.1f}s" if written else "store reused")
    )
    print(f"store: {path}")
    print(
        f"scheduler: {where}; start: {args.init} on the first {len(sample):,} rows (no initialisation pass); "
        f"tol={args.tol}, max_iter={args.max_iter}"
    )
    print()
    print(
        f"{'fit':>9} {'passes':>7} {'iters':>6} {'steps':>6} {'seconds':>8} {'s/pass':>7} {'conv':>5} "
        f"{'lower_bound_':>16} {'score L':>16} {'L - L_batch':>12} {'max|dmeans|':>12} {'passes/batch':>13} "
        f"{'time/batch':>11}"
    )
    for name, r in runs:
        dl = r["score"] - batch["score"]
        dm = float(np.abs(r["est"].means_ - batch["est"].means_).max())
        print(
            f"{name:>9} {r['passes']:7d} {r['iters']:6d} {r['steps']:6d} {r['seconds']:8.2f} "
            f"{r['seconds'] / max(r['passes'], 1):7.3f} {r['converged']!s:>5} {r['lower_bound']:16.10f} "
            f"{r['score']:16.10f} {dl:12.3e} {dm:12.3e} {r['passes'] / batch['passes']:13.3f} "
            f"{r['seconds'] / batch['seconds']:11.3f}"
        )
    if reference is not None:
        print()
        print(
            f"reference: batch EM on from batch's result to tol={args.reference_tol}: {reference['passes']} more "
            f"passes, converged={reference['converged']}, score L {reference['score']:.10f}"
        )
        print(f"{'fit':>9} {'L_ref - L':>12} {'max|means - ref|':>17}")
        for name, r in runs:
            dm = float(np.abs(r["est"].means_ - reference["est"].means_).max())
            print(f"{name:>9} {reference['score'] - r['score']:12.3e} {dm:17.3e}")
    print()
    for name, r in runs[1:]:
        ratio = r["passes"] / batch["passes"]
        print(
            f"{'PASS' if ratio <= TARGET_PASSES else 'FAIL'}  passes {name} / batch <= {TARGET_PASSES}   "
            f"{r['passes']} / {batch['passes']} = {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
