"""One epoch of online EM against batch EM to convergence, on a store streamed from disk.

The data: ``--rows`` x ``--features`` float64 rows drawn from a ``--components``-component
full-covariance Gaussian mixture (:func:`daskem.testing.write_mixture_zarr`, block by
block, never held in memory), in an uncompressed Zarr store of ``--chunk-rows``-row chunks
(the fits' blocks). The store is written once and reused by later runs (``--store``).

Both fits start from the same parameters, computed once before any timing:
:func:`daskem.initial_params` (``--init``, default ``"random"``: scikit-learn's random
responsibilities, every component near the data's mean, the start of a fit that cannot
afford an initialisation's passes) on the store's first ``--init-rows`` rows, passed as
``weights_init`` / ``means_init`` / ``precisions_init`` (so neither fit makes an
initialisation pass). ``--init kmeans`` (k-means|| and Lloyd iterations, then one M-step
of the hard assignments) starts next to the optimum on this well-separated data: batch EM
then converges in a few passes, which one pass cannot undercut by 5x. ``--init
k-means++`` starts, as scikit-learn's does, from responsibilities on the k seed rows
alone (uniform weights, covariances ``reg_covar``): a start far from any optimum, from
which EM on this data tends to a poorer local optimum.
The mean log-likelihood of the sample under the start and under the true mixture is
printed for reference. Both stream the store on every pass (``cache=False``), on Dask's
threaded scheduler (``--workers 0``) or a LocalCluster of ``--workers`` processes.
A warm-up fit on the in-memory sample pays the numba compilation first.

- ``batch``: ``GaussianMixture(tol=--tol, max_iter=--max-iter)``: wall seconds, passes
  (``n_passes_``), iterations, and ``L_batch = score(store)``;
- ``online``: ``GaussianMixture(schedule="online", max_iter=1)``: one epoch, one online
  step per ``--step-blocks`` blocks in a seeded random order, step sizes
  ``(t + --learning-offset) ** -(--learning-decay)`` (the estimator's defaults: decay
  0.55, offset 0; a decay near 0.5 keeps the steps large enough for one epoch to leave a
  poor start: 0.6 left a 0.47% gap from the random start, 0.8 7.6%), optionally
  Polyak-Ruppert averaging of the parameters (``--average``, default ``false``; averaging
  the second half of one epoch keeps early, still moving parameters in the mean): wall
  seconds, passes, steps, and ``L_online = score(store)``.

The two ``score`` passes are timed apart, in neither fit's time.

Targets: |L_online - L_batch| / |L_batch| <= 0.5% and online seconds / batch seconds <= 1/5.

Usage::

    python benchmarks/bench_online.py                          # 10,000,000 x 16, k = 10, blocks of 100,000
    python benchmarks/bench_online.py --rows 1000000 --chunk-rows 10000
    python benchmarks/bench_online.py --workers 2              # LocalCluster of 2 processes x 1 thread
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _mixture_store import add_store_arguments, log, quiet, scheduler, store_and_start
from dask.utils import format_bytes
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import daskem
from daskem.testing import mixture_spec

TARGET_GAP = 0.005
TARGET_TIME = 1 / 5


def sample_score(sample: np.ndarray, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> float:
    """Mean log-likelihood of the sample under full-covariance mixture parameters (scikit-learn's)."""
    gm = SkGaussianMixture(len(weights), covariance_type="full")
    gm.weights_, gm.means_ = weights, means
    gm.precisions_cholesky_ = np.linalg.cholesky(precisions)
    return float(gm.score(sample))


def truth_score(sample: np.ndarray, d: int, k: int, seed: int, separation: float) -> float:
    """Mean log-likelihood of the sample under the mixture that generated the data."""
    spec = mixture_spec(d, k, seed, separation)
    return sample_score(sample, spec.weights, spec.means, np.linalg.inv(spec.covariances))


def timed(est: Any, path: str) -> tuple[float, float, float]:
    """Fit ``est`` on the store: (fit seconds, ``score`` of the store, score seconds)."""
    with quiet():
        start = time.perf_counter()
        est.fit(path)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        score = float(est.score(path))
        return seconds, score, time.perf_counter() - start


def parse_average(text: str) -> bool | int:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_arguments(parser, rows=10_000_000, chunk_rows=100_000)
    parser.add_argument(
        "--init",
        choices=("random", "kmeans", "k-means++", "random_from_data"),
        default="random",
        help="the start on those rows (k-means++ gives responsibilities to the seed rows alone, as scikit-learn)",
    )
    parser.add_argument("--tol", type=float, default=1e-4, help="batch EM's tolerance")
    parser.add_argument("--max-iter", type=int, default=1000, help="batch EM's most iterations")
    parser.add_argument("--step-blocks", type=int, default=1, help="online: blocks per step")
    parser.add_argument("--learning-decay", type=float, default=0.55, help="online: step size decay")
    parser.add_argument("--learning-offset", type=float, default=0.0, help="online: step size offset")
    parser.add_argument(
        "--average", type=parse_average, default=False, help="online: true, false or the steps before averaging"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n, d, k = args.rows, args.features, args.components
    path, written, sample, inits = store_and_start(args, "daskem-bench-online")
    n_blocks = -(-n // args.chunk_rows)

    online_settings = {
        "step_blocks": args.step_blocks,
        "learning_decay": args.learning_decay,
        "learning_offset": args.learning_offset,
        "average": args.average,
    }
    with scheduler(args.workers) as where:
        with quiet():  # warm-up: numba compilation, worker imports
            daskem.GaussianMixture(k, max_iter=1, cache=False, **inits).fit(sample[:20_000])
            daskem.GaussianMixture(k, schedule="online", max_iter=1, cache=False, **inits).fit(sample[:20_000])

        batch = daskem.GaussianMixture(k, tol=args.tol, max_iter=args.max_iter, cache=False, **inits)
        t_batch, l_batch, s_batch = timed(batch, path)
        log(f"batch: {t_batch:.2f}s, {batch.n_passes_} passes, L={l_batch:.6f}")
        online = daskem.GaussianMixture(
            k, schedule="online", max_iter=1, cache=False, random_state=args.seed, **online_settings, **inits
        )
        t_online, l_online, s_online = timed(online, path)
        log(f"online: {t_online:.2f}s, {online.n_passes_} passes, L={l_online:.6f}")

    gap = abs(l_online - l_batch) / abs(l_batch)
    start_ll = sample_score(sample, inits["weights_init"], inits["means_init"], inits["precisions_init"])
    true_ll = truth_score(sample, d, k, args.seed, args.separation)
    batch_ll, online_ll = (float(est.score(sample)) for est in (batch, online))
    ratio = t_online / t_batch
    print()
    print(
        f"data: {n:,} x {d} float64 ({format_bytes(n * d * 8)}), k={k} full covariance, separation "
        f"{args.separation}, {n_blocks} blocks of {args.chunk_rows:,} rows, streamed (cache=False); "
        + (f"written in {written:.1f}s" if written else "store reused")
    )
    print(f"store: {path}")
    print(f"scheduler: {where}; start: {args.init} on the first {len(sample):,} rows (no initialisation pass)")
    print(
        f"sample of {len(sample):,} rows, mean log-likelihood: start {start_ll:.6f}, true mixture {true_ll:.6f}, "
        f"batch fit {batch_ll:.6f}, online fit {online_ll:.6f}"
    )
    print(
        f"online settings: step_blocks={args.step_blocks}, learning_decay={args.learning_decay}, "
        f"learning_offset={args.learning_offset}, average={args.average}, shuffle=True, random_state={args.seed}"
    )
    print()
    print(
        f"{'fit':>7} {'seconds':>9} {'passes':>7} {'iters':>6} {'steps':>6} {'s/pass':>7} {'score L':>14} "
        f"{'score s':>8}"
    )
    for name, est, t, ll, s in (
        ("batch", batch, t_batch, l_batch, s_batch),
        ("online", online, t_online, l_online, s_online),
    ):
        print(
            f"{name:>7} {t:9.2f} {est.n_passes_:7d} {est.n_iter_:6d} {est.n_steps_:6d} "
            f"{t / max(est.n_passes_, 1):7.2f} {ll:14.8f} {s:8.2f}"
        )
    print(
        f"batch: converged={batch.converged_} at tol={args.tol}, lower_bound_ first {batch.lower_bounds_[0]:.6f} "
        f"-> last {batch.lower_bound_:.6f}"
    )
    print()
    print(f"relative gap |L_online - L_batch| / |L_batch| = {gap:.3e} ({gap * 100:.4f}%)")
    print(f"time ratio online / batch                    = {ratio:.4f} (1/{1 / ratio:.2f})")
    print()
    print(f"{'PASS' if gap <= TARGET_GAP else 'FAIL'}  gap <= {TARGET_GAP:.1%}   {gap:.3e}")
    print(f"{'PASS' if ratio <= TARGET_TIME else 'FAIL'}  time ratio <= 1/5   {ratio:.4f}")


if __name__ == "__main__":
    main()
