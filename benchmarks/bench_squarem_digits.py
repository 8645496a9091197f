"""SQUAREM against plain EM from random starts on scikit-learn's digits: passes and optimum.

The data: ``sklearn.datasets.load_digits`` (1,797 rows, shipped with scikit-learn, no
download) reduced to 10 principal components (``sklearn.decomposition.PCA``,
``random_state=0``). For each seed (default 0..29), ``daskem.GaussianMixture`` with 10
full-covariance components, ``init_params="random"``, ``tol=1e-7`` (per-sample
log-likelihood change), ``max_iter=1000`` and ``random_state=seed`` fits plain and with
``accelerate="squarem"``: the same seed gives both the same start, so plain EM is the
oracle for each SQUAREM fit.

Printed per seed: passes over the data (``n_passes_``) of each, SQUAREM's rejected
extrapolations (passes without a record: its passes minus iterations, less plain EM's
initialisation passes), the ratio squarem / plain, and the final lower bounds' difference
squarem - plain per sample with a verdict: ``same`` optimum within 1e-5, else ``better`` or
``worse`` (another local optimum). Then the worst and median ratio and the checks.

Targets: squarem / plain <= 1.1 for every seed, and squarem's lower bound at least plain's
minus 1e-6 per sample. ``--linear-cosine -inf`` switches SQUAREM's warm-up off (the scheme
before issue 17 part 5) for comparison.

Usage::

    python benchmarks/bench_squarem_digits.py                 # seeds 0..29
    python benchmarks/bench_squarem_digits.py --seeds 0 15 16 --linear-cosine -inf
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.em import accelerate

K, COMPONENTS = 10, 10
TOL = 1e-7
TARGET_RATIO = 1.1
TARGET_LB = 1e-6
SAME_OPTIMUM = 1e-5


def digits_pca(components: int = COMPONENTS) -> np.ndarray:
    """The digits reduced to ``components`` principal components."""
    return PCA(components, random_state=0).fit_transform(load_digits().data)


def fit(X: np.ndarray, seed: int, accelerate_: str | None, tol: float, max_iter: int) -> dict[str, Any]:
    est = daskem.GaussianMixture(
        K,
        covariance_type="full",
        init_params="random",
        tol=tol,
        max_iter=max_iter,
        random_state=seed,
        accelerate=accelerate_,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    return {"passes": est.n_passes_, "n_iter": est.n_iter_, "lb": est.lower_bound_, "converged": est.converged_}


def verdict(diff: float) -> str:
    if abs(diff) <= SAME_OPTIMUM:
        return "same"
    return "better" if diff > 0 else "worse"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(30)), help="random_state of the fits")
    parser.add_argument("--tol", type=float, default=TOL, help="tol of both fits")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument(
        "--linear-cosine",
        type=float,
        default=accelerate.LINEAR_COSINE,
        help="SQUAREM extrapolates once cos(r, v) <= -this (-inf: no warm-up)",
    )
    args = parser.parse_args()
    accelerate.LINEAR_COSINE = args.linear_cosine

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    X = digits_pca()
    print(
        f"digits: n={X.shape[0]:,}, {COMPONENTS} principal components; k={K} full, random starts, tol={args.tol}, "
        f"max_iter={args.max_iter}, linear_cosine={args.linear_cosine}"
    )
    print()
    print("| seed | passes plain | passes squarem | rejected | squarem / plain | lb squarem - plain | optimum |")
    print("|---|---|---|---|---|---|---|")
    ratios, diffs, verdicts, unconverged = [], [], [], []
    t0 = time.perf_counter()
    for seed in args.seeds:
        plain = fit(X, seed, None, args.tol, args.max_iter)
        sq = fit(X, seed, "squarem", args.tol, args.max_iter)
        rejected = (sq["passes"] - sq["n_iter"]) - (plain["passes"] - plain["n_iter"])
        ratio = sq["passes"] / plain["passes"]
        diff = sq["lb"] - plain["lb"]
        ratios.append(ratio)
        diffs.append(diff)
        verdicts.append(verdict(diff))
        if not (plain["converged"] and sq["converged"]):
            unconverged.append(seed)
        print(
            f"| {seed} | {plain['passes']} | {sq['passes']} | {rejected} | {ratio:.2f} | {diff:+.2e} | "
            f"{verdicts[-1]} |",
            flush=True,
        )
    print()
    print(f"{time.perf_counter() - t0:.0f}s; load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("same", "better", "worse"))
    print(
        f"squarem / plain passes: worst {max(ratios):.2f}, median {statistics.median(ratios):.2f}, "
        f"best {min(ratios):.2f}"
    )
    print(f"optimum (|lb difference| <= {SAME_OPTIMUM:g} per sample is the same): {counts}")
    print()
    checks = [
        (f"worst squarem / plain passes {max(ratios):.2f} (target <= {TARGET_RATIO})", max(ratios) <= TARGET_RATIO),
        (
            f"lowest lb squarem - plain {min(diffs):+.2e} per sample (target >= -{TARGET_LB:g})",
            min(diffs) >= -TARGET_LB,
        ),
        (f"every fit converged within max_iter={args.max_iter} (not: seeds {unconverged})", not unconverged),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {label}")


if __name__ == "__main__":
    main()
