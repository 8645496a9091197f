"""The cost of checkpointing an EM fit, per iteration: seconds and bytes.

Measures, in one process run on this machine:

1. ``iteration``: wall-clock seconds per EM iteration of ``daskem.GaussianMixture``
   (full covariance, k=8) on in-memory n x 16 data (default n = 2,000,000), tol=0, a
   fixed number of iterations, without a checkpoint and with
   ``checkpoint=<temporary directory>`` (a commit after every iteration), the two kinds
   of fit alternated for ``--rounds`` rounds. The time of an
   iteration is the interval between consecutive calls of the fit callback, which
   includes the commit (the engine commits before it calls back); the median over the
   iterations after the first is reported, next to the median EM time alone
   (``IterationRecord.seconds``, which excludes the commit).
2. ``commit``: seconds and bytes of one ``CheckpointRun.commit(state, keep_last=2)`` of
   the parameters of a full-covariance mixture at k=8, d=16 and at k=64, d=256 (random
   SPD covariances), repeated (median seconds); bytes are the total size of the files
   of one committed iteration directory (arrays, Zarr metadata, commit record).
3. Each commit cost as a fraction of the k=8, d=16 iteration time measured in 1.

The two full-covariance parameter sets stand for the issue's "k=8, d=16 and k=64,
d=256"; only the k=8, d=16 fit is run on the data (a k=64, d=256 fit would need
256-column data), so the k=64, d=256 commit is compared with the same iteration time.

Usage::

    python benchmarks/bench_checkpoint.py                    # n = 2,000,000, 3 x 6 iterations
    python benchmarks/bench_checkpoint.py --n 200000 --iters 4 --repeats 9
    python benchmarks/bench_checkpoint.py --dir /mnt/scratch  # checkpoint on another disk

Timings depend on the disk of ``--dir`` (default: the system temporary directory) and
on whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.checkpoint import Checkpoint, CheckpointState
from daskem.models.gmm import GaussianMixtureParams
from daskem.testing import make_mixture_array

D, K = 16, 8
COMMIT_SHAPES = ((8, 16), (64, 256))


def fit_timings(X: np.ndarray, iters: int, checkpoint: str | None) -> dict[str, list[float]]:
    """Seconds of iterations 2.. (callback to callback) and of their EM step alone."""
    stamps: list[float] = []
    em: list[float] = []

    def callback(record, params) -> None:
        stamps.append(time.perf_counter())
        em.append(record.seconds)

    est = daskem.GaussianMixture(
        K,
        covariance_type="full",
        tol=0.0,
        max_iter=iters,
        random_state=0,
        checkpoint=checkpoint,
        overwrite_checkpoint=checkpoint is not None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, callback=callback)
    assert est.n_iter_ == iters
    return {"iteration": list(np.diff(stamps)), "em": em[1:]}


def random_params(k: int, d: int, rng: np.random.Generator) -> GaussianMixtureParams:
    """A full-covariance parameter set with random SPD covariances."""
    a = rng.normal(size=(k, d, d))
    covariances = a @ np.swapaxes(a, -1, -2) / d + np.eye(d)
    chol = np.linalg.cholesky(covariances)
    precisions_cholesky = np.swapaxes(np.linalg.inv(chol), -1, -2)
    weights = rng.dirichlet(np.ones(k))
    return GaussianMixtureParams(weights, rng.normal(size=(k, d)), covariances, precisions_cholesky)


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def commit_cost(k: int, d: int, repeats: int, root: Path, history: int) -> dict[str, float]:
    """Median seconds of one commit (prune included) and bytes of one committed iteration."""
    rng = np.random.default_rng(0)
    params = random_params(k, d, rng).to_arrays()
    location = root / f"commit-k{k}-d{d}.zarr"
    checkpoint = Checkpoint(str(location))
    checkpoint.prepare({"bench": {"k": k, "d": d}}, compare=(), overwrite=True)
    run = checkpoint.run(0)
    seconds, sizes = [], []
    for i in range(history, history + repeats):
        state = CheckpointState(
            iteration=i,
            params=params,
            history={
                "log_likelihood": rng.normal(size=i),
                "change": np.r_[np.inf, rng.normal(size=i - 1)],
                "seconds": rng.random(i),
            },
            converged=False,
            finished=False,
        )
        start = time.perf_counter()
        run.commit(state, keep_last=2)
        seconds.append(time.perf_counter() - start)
        sizes.append(directory_bytes(location / "runs" / "0" / "iterations" / str(i)))
    assert run.latest().iteration == history + repeats - 1
    param_bytes = sum(v.nbytes for v in params.values())
    return {"seconds": statistics.median(seconds), "bytes": statistics.median(sizes), "param_bytes": param_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000, help="rows of the fitted data (d=16)")
    parser.add_argument("--iters", type=int, default=6, help="EM iterations per fit (tol=0)")
    parser.add_argument("--rounds", type=int, default=3, help="fits of each kind, alternated (medians pool all rounds)")
    parser.add_argument("--repeats", type=int, default=5, help="commits timed per parameter set")
    parser.add_argument("--dir", default=None, help="where to write checkpoints (default: a temporary directory)")
    args = parser.parse_args()
    if args.iters < 2:
        parser.error("--iters must be at least 2 (the first interval is measured from the second callback)")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="daskem-bench-ckpt-") as tmp:
        root = Path(tmp)
        print(f"data: {args.n:,} x {D} float64, full covariance, k={K}; checkpoints under {root}")
        X_lazy, _ = make_mixture_array(args.n, D, K, seed=0)
        X = np.asarray(X_lazy.compute())
        runs: dict[str, dict[str, list[float]]] = {kind: {"iteration": [], "em": []} for kind in ("plain", "ckpt")}
        for _ in range(args.rounds):  # alternated, so that a load spike hits both kinds alike
            for kind, where in (("plain", None), ("ckpt", str(root / "fit.zarr"))):
                for key, values in fit_timings(X, args.iters, where).items():
                    runs[kind][key].extend(values)
        plain = {key: statistics.median(values) for key, values in runs["plain"].items()}
        with_ckpt = {key: statistics.median(values) for key, values in runs["ckpt"].items()}
        commits = {(k, d): commit_cost(k, d, args.repeats, root, history=args.iters) for k, d in COMMIT_SHAPES}

    base = plain["iteration"]
    print()
    print(f"EM iteration, k={K} d={D} full, n={args.n:,} (median of {args.rounds} x {args.iters - 1} intervals):")
    print(f"{'fit':>18} {'s/iter':>9} {'EM only':>9} {'overhead':>9}")
    print(f"{'no checkpoint':>18} {plain['iteration']:9.3f} {plain['em']:9.3f} {'':>9}")
    overhead = (with_ckpt["iteration"] - base) / base
    print(f"{'checkpoint=dir':>18} {with_ckpt['iteration']:9.3f} {with_ckpt['em']:9.3f} {overhead:9.2%}")
    print()
    print(f"One commit (keep_last=2, history of ~{args.iters} iterations, median of {args.repeats}):")
    print(f"{'parameters':>18} {'seconds':>9} {'bytes':>11} {'param bytes':>12} {'of iter':>9}")
    for (k, d), cost in commits.items():
        print(
            f"{f'k={k} d={d} full':>18} {cost['seconds']:9.4f} {int(cost['bytes']):11,} "
            f"{int(cost['param_bytes']):12,} {cost['seconds'] / base:9.2%}"
        )
    print()
    print(f"'of iter': commit seconds / the k={K} d={D} iteration without checkpoint ({base:.3f} s).")


if __name__ == "__main__":
    main()
