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
fit's distance to that fixed point. Then the passes ratio incremental / batch, two ways:
to the same ``tol`` (each stops where its own change per iteration falls below it; an
incremental sweep gains more, so it stops at a higher log-likelihood), and to the same
log-likelihood: batch EM run on with ``tol=0`` (``--match-iter`` passes) gives the passes
after which its parameters score at least each incremental fit's final ``lower_bound_``.

Target: passes(incremental) / passes(batch) <= 0.5.

Last, the floor the passes ratio tends to once both are near the fixed point. There batch
EM contracts the distance by ``r`` per pass (estimated from the tol=0 run: the median
ratio of successive changes of the log-likelihood after batch's own stop). Blocks of
i.i.d. rows each carry an equal share ``r / m`` of that contraction for ``m`` M-steps a
sweep, and a step replaces its share by the current one: a Gauss-Seidel sweep of
``e = r P e`` (``P`` averaging), whose rate per sweep ``rho`` (:func:`sweep_rate`) is at
best ``r**2`` (``m`` unbounded, ``rho -> exp(-2 (1 - r))`` as ``r -> 1``). So each pass of
incremental EM does at most what two passes of batch EM do there, and the asymptotic ratio
``ln r / ln rho`` stays above 0.5: only the first passes, far from the fixed point, can take
the whole ratio below it.

Usage::

    python benchmarks/bench_incremental.py                         # 2,000,000 x 16, k = 10, 40 blocks
    python benchmarks/bench_incremental.py --rows 400000 --chunk-rows 10000 --step-blocks 1 4 10
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import numpy as np
from _mixture_store import add_store_arguments, log, quiet, scheduler, store_and_start
from dask.utils import format_bytes

import daskem

TARGET_PASSES = 0.5


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


def sweep_rate(r: float, steps: int, sweeps: int = 200) -> float:
    """The contraction per sweep of ``steps`` incremental M-steps where batch EM contracts by ``r`` per pass.

    The linear model of the module docstring: ``steps`` equal shares ``e[g]``, each step
    sets its share to ``r / steps`` times the current total; the rate of the total per
    sweep, once the shares have settled (normalised every sweep).
    """
    shares = np.full(steps, 1.0 / steps)
    rate = r
    for _ in range(sweeps):
        before = shares.sum()
        for g in range(steps):
            shares[g] = r * shares.sum() / steps
        rate = shares.sum() / before
        shares /= shares.sum()
    return float(rate)


def batch_rate(trace: list[float], start: int) -> float | None:
    """Batch EM's contraction per pass near the fixed point: the median ratio of successive
    log-likelihood changes of the tol=0 run from pass ``start`` on (None if too few)."""
    changes = np.diff(np.asarray(trace[start:]))
    ratios = [b / a for a, b in itertools.pairwise(changes) if a > 1e-12 and b > 1e-12]
    return float(np.median(ratios)) if len(ratios) >= 3 else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_arguments(parser, rows=2_000_000, chunk_rows=50_000)
    parser.add_argument("--init", choices=("kmeans", "k-means++"), default="kmeans", help="the start on those rows")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--step-blocks", type=int, nargs="+", default=[1, 4, 10], help="incremental step sizes")
    parser.add_argument(
        "--match-iter", type=int, default=300, help="passes of the batch run with tol=0 that each fit is matched on"
    )
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
    path, written, sample, inits = store_and_start(args, "daskem-bench-incremental")
    n_blocks = -(-n // args.chunk_rows)

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
        # Batch EM on with tol=0: the passes after which its parameters reach each
        # incremental fit's final log-likelihood (record t scores the parameters of pass t - 1).
        trace: list[float] = []
        with quiet():
            longer = daskem.GaussianMixture(k, **{**common, "tol": 0.0, "max_iter": args.match_iter})
            longer.fit(path, callback=lambda record, params: trace.append(record.log_likelihood))
        log(f"batch with tol=0: {len(trace)} passes")
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
    print("passes batch EM needs for parameters scoring at least each fit's final log-likelihood (tol=0 run):")
    matched = {}
    for name, r in runs[1:]:
        reached = next((t - 1 for t, value in enumerate(trace, 1) if value >= r["lower_bound"]), None)
        matched[name] = reached
        print(
            f"{name:>9} lower_bound_ {r['lower_bound']:.10f}: batch "
            + (f"{reached} passes, ratio {r['passes'] / reached:.3f}" if reached else f"not within {len(trace)} passes")
        )
    r_batch = batch_rate(trace, batch["passes"])
    if r_batch is not None and 0.0 < r_batch < 1.0:
        print()
        print(
            f"batch EM's rate near the fixed point (tol=0 run, passes {batch['passes']}-{len(trace)}): r = "
            f"{r_batch:.4f} per pass; the asymptotic floor of the passes ratio, ln r / ln rho (linear model):"
        )
        for blocks in args.step_blocks:
            steps = -(-n_blocks // blocks)
            rho, limit = sweep_rate(r_batch, steps), sweep_rate(r_batch, 4096)
            floor, least = math.log(r_batch) / math.log(rho), math.log(r_batch) / math.log(limit)
            print(
                f"{'incr ' + str(blocks):>9} {steps:4d} M-steps a sweep: rho = {rho:.4f} per sweep, floor "
                f"{floor:.3f} (4096 M-steps a sweep: {least:.3f})"
            )
    print()
    for name, r in runs[1:]:
        ratio = r["passes"] / batch["passes"]
        print(
            f"{'PASS' if ratio <= TARGET_PASSES else 'FAIL'}  passes {name} / batch <= {TARGET_PASSES} (same tol)   "
            f"{r['passes']} / {batch['passes']} = {ratio:.3f}"
        )
        if matched[name]:
            ratio = r["passes"] / matched[name]
            print(
                f"{'PASS' if ratio <= TARGET_PASSES else 'FAIL'}  passes {name} / batch <= {TARGET_PASSES} (same "
                f"log-likelihood)   {r['passes']} / {matched[name]} = {ratio:.3f}"
            )


if __name__ == "__main__":
    main()
