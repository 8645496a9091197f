"""Seconds per Baum-Welch iteration: daskem.GaussianHMM against hmmlearn.hmm.GaussianHMM.

Issue 8's target: a Gaussian HMM (covariance_type="diag", 8 states, 8 features) fitted
to 1,000 sequences of 2,000 steps (2,000,000 rows, float64, in memory) by daskem at most
0.5x hmmlearn's seconds per iteration, on the same machine, in the same process run.

The data are drawn (seeded, vectorised) from a known 8-state HMM with well-separated
means: every step stays in its state with probability 0.9 or jumps uniformly to another
one, so the state path is a cumulative sum of jumps modulo 8 (a new sequence restarts
from a uniform state), and the rows are the state means plus diagonal Gaussian noise.

Every run starts from the same parameters (``init_params=""``: startprob_, transmat_,
means_ and covars_ set beforehand, the true means perturbed), updates all of them
(``params="stmc"``) and runs exactly ``--iters`` iterations (hmmlearn ``tol=-inf``,
daskem ``tol=0``):

- ``hmmlearn scaling`` / ``hmmlearn log``: ``hmmlearn.hmm.GaussianHMM`` with each
  ``implementation``; the ratios compare against the faster of the two;
- ``daskem threads``: ``daskem.GaussianHMM`` on the in-memory NumPy array, Dask's
  threaded scheduler (one thread per core);
- ``daskem dist``: the same on ``daskem.cli.local_cluster(2, 1)``: 2 worker processes
  of 1 thread each (the NumPy data are sent to the workers by every fit).

Seconds per iteration: every iteration's end is timestamped (hmmlearn: its monitor's
``report``, called after the M-step; daskem: the fit's callback, called after the
M-step). The first iteration carries the one-time costs of a fit (validation, the
start-flag column, the upload and persist of the blocks on the cluster, first touches
of memory), so the figure is (fit time up to the last iteration - fit time up to the
end of the first) / (iterations - 1): the total fit time less the first-call overhead,
per iteration. ``wall s/iter`` is the whole fit over its iterations, for information.
Every daskem backend gets a warm-up fit (one iteration on the same data) first, so
numba's compilation (or cache load, in every worker) is not timed; each figure is the
median over ``--repeats`` fits.

Fairness check: every run's monitor history is the total log-likelihood of the
parameters each iteration started from; the first entries (the shared start) and the
last ones must agree between hmmlearn and daskem to rounding (relative differences
printed), as must the fitted means.

A second table (no target, just reported) fits the same model to one long sequence of
``--n-sequences x --length`` rows: daskem splits it into blocks and carries the forward
and backward messages between them (two passes per iteration); hmmlearn runs it as one
sequence.

``--profile`` adds a breakdown of one in-process daskem E-step on a block of 250,000
rows of whole sequences: the Gaussian log-density, the scaling of the frames, the numba
forward-backward kernel, the moments, then cProfile's top functions.

Usage::

    python benchmarks/bench_hmm.py                              # 1,000 x 2,000 rows, 3 iterations
    python benchmarks/bench_hmm.py --n-sequences 50 --length 500 --repeats 1
    python benchmarks/bench_hmm.py --no-long --no-distributed --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from hmmlearn import __version__ as hmmlearn_version
from hmmlearn import hmm
from hmmlearn.base import ConvergenceMonitor

import daskem
from daskem.cli import local_cluster
from daskem.models import hmm_kernels
from daskem.models.hmm import GaussianHMMModel

K, D = 8, 8
STAY = 0.9
TARGET = 0.5
PROFILE_ROWS = 250_000


# --- data ---------------------------------------------------------------------------------


def true_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The generating HMM: uniform start, sticky transitions, well-separated means."""
    transmat = np.full((K, K), (1.0 - STAY) / (K - 1))
    np.fill_diagonal(transmat, STAY)
    return {
        "startprob": np.full(K, 1.0 / K),
        "transmat": transmat,
        "means": rng.normal(0.0, 3.0, (K, D)),
        "covars": rng.uniform(0.5, 1.5, (K, D)),
    }


def sample(truth: dict[str, np.ndarray], n_sequences: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``n_sequences`` sequences of ``length`` steps drawn from ``truth`` (vectorised).

    With a uniform start and jumps uniform over the other states, the state path is the
    cumulative sum of the jumps (0 to stay, 1..K-1 to move) modulo K; a sequence start
    adds a uniform 0..K-1 instead, which makes its state uniform and independent of the
    rows before it.
    """
    n = n_sequences * length
    jumps = np.where(rng.random(n) < STAY, 0, rng.integers(1, K, size=n))
    jumps[::length] = rng.integers(0, K, size=n_sequences)
    states = np.cumsum(jumps) % K
    noise = rng.standard_normal((n, D))
    noise *= np.sqrt(truth["covars"])[states]
    noise += truth["means"][states]
    return noise


def initial(truth: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The shared start: uniform start, weakly sticky transitions, perturbed means, unit variances."""
    return {
        "startprob": np.full(K, 1.0 / K),
        "transmat": 0.5 * np.eye(K) + 0.5 / K,
        "means": truth["means"] + rng.normal(0.0, 0.5, (K, D)),
        "covars": np.ones((K, D)),
    }


# --- timed fits ---------------------------------------------------------------------------


class TimedMonitor(ConvergenceMonitor):
    """hmmlearn's monitor, timestamping every iteration's report (after its M-step)."""

    stamps: list[float]

    def _reset(self) -> None:
        super()._reset()
        self.stamps = []

    def report(self, log_prob: float) -> None:
        self.stamps.append(time.perf_counter())
        super().report(log_prob)


def set_start(est: Any, init: dict[str, np.ndarray]) -> Any:
    est.startprob_ = init["startprob"].copy()
    est.transmat_ = init["transmat"].copy()
    est.means_ = init["means"].copy()
    est.covars_ = init["covars"].copy()
    return est


def fit_hmmlearn(X: np.ndarray, lengths: Any, init: dict[str, np.ndarray], iters: int, impl: str) -> dict[str, Any]:
    est = hmm.GaussianHMM(K, "diag", n_iter=iters, tol=-np.inf, init_params="", params="stmc", implementation=impl)
    set_start(est, init)
    est.monitor_ = TimedMonitor(est.monitor_.tol, est.monitor_.n_iter, est.monitor_.verbose)
    start = time.perf_counter()
    est.fit(X, lengths)
    stamps = est.monitor_.stamps
    return summary(start, stamps, list(est.monitor_.history), est.means_)


def fit_daskem(
    X: np.ndarray, lengths: Any, init: dict[str, np.ndarray], iters: int, client: Any = None
) -> dict[str, Any]:
    est = set_start(daskem.GaussianHMM(K, "diag", n_iter=iters, tol=0.0, init_params="", params="stmc"), init)
    stamps: list[float] = []
    start = time.perf_counter()
    if client is None:
        est.fit(X, lengths, callback=lambda rec, _: stamps.append(time.perf_counter()))
    else:
        with client.as_current():
            est.fit(X, lengths, callback=lambda rec, _: stamps.append(time.perf_counter()))
    out = summary(start, stamps, list(est.monitor_.history), est.means_)
    out["passes"] = est.n_passes_
    return out


def summary(start: float, stamps: list[float], history: list[float], means: np.ndarray) -> dict[str, Any]:
    if not stamps:
        raise RuntimeError("no iteration ran")
    return {
        "iter": (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan"),
        "first": stamps[0] - start,
        "wall": (stamps[-1] - start) / len(stamps),
        "n_iter": len(stamps),
        "history": history,
        "means": np.asarray(means).copy(),
    }


def repeated(fit: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    runs = [fit() for _ in range(repeats)]
    out = dict(runs[-1])
    for key in ("iter", "first", "wall"):
        out[key] = statistics.median(r[key] for r in runs)
    out["all"] = [r["iter"] for r in runs]
    return out


def run_dataset(
    X: np.ndarray, lengths: Any, init: dict[str, np.ndarray], args: argparse.Namespace, client: Any
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for impl in ("scaling", "log"):
        results[f"hmmlearn {impl}"] = repeated(
            lambda i=impl: fit_hmmlearn(X, lengths, init, args.iters, i), args.repeats
        )
        show(f"hmmlearn {impl}", results[f"hmmlearn {impl}"])
    fit_daskem(X, lengths, init, 1)  # warm-up: numba compilation / cache load
    results["daskem threads"] = repeated(lambda: fit_daskem(X, lengths, init, args.iters), args.repeats)
    show("daskem threads", results["daskem threads"])
    if client is not None:
        fit_daskem(X, lengths, init, 1, client)  # warm-up in every worker (the blocks reach both)
        results["daskem dist"] = repeated(lambda: fit_daskem(X, lengths, init, args.iters, client), args.repeats)
        show("daskem dist", results["daskem dist"])
    return results


def show(name: str, r: dict[str, Any]) -> None:
    each = ", ".join(f"{v:.3f}" for v in r["all"])
    print(f"  {name:<16} {r['iter']:8.3f} s/iter  (fits: {each}; first iteration {r['first']:.3f} s)", flush=True)


# --- report -------------------------------------------------------------------------------


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def table(title: str, results: dict[str, dict[str, Any]], with_target: bool) -> list[tuple[str, float, bool]]:
    hl = {name: r for name, r in results.items() if name.startswith("hmmlearn")}
    best_name = min(hl, key=lambda name: hl[name]["iter"])
    best = hl[best_name]
    print()
    print(f"{title} (ratios against {best_name}, the faster hmmlearn)")
    print()
    print(
        "| backend | iterations | s/iter | wall s/iter | x hmmlearn best | target <= 0.5x "
        "| loglik rel. diff (start / last) | max means diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    checks = []
    for name, r in results.items():
        ratio = r["iter"] / best["iter"]
        verdict = "-"
        if with_target and name.startswith("daskem"):
            ok = ratio <= TARGET
            verdict = "PASS" if ok else "FAIL"
            checks.append((name, ratio, ok))
        first_ll = rel(r["history"][0], best["history"][0])
        last_ll = rel(r["history"][-1], best["history"][-1])
        means = float(np.abs(r["means"] - best["means"]).max())
        print(
            f"| {name} | {r['n_iter']} | {r['iter']:.3f} | {r['wall']:.3f} | {ratio:.3f} | {verdict} "
            f"| {first_ll:.1e} / {last_ll:.1e} | {means:.1e} |"
        )
    print()
    passes = ", ".join(f"{name} {r['passes']}" for name, r in results.items() if "passes" in r)
    print(
        f"total loglik ({best_name}) of the shared start {best['history'][0]:.9e}, of the parameters after "
        f"{best['n_iter'] - 1} iterations {best['history'][-1]:.9e}; passes over the data per daskem fit: {passes}"
    )
    return checks


# --- profile ------------------------------------------------------------------------------


def profile(X: np.ndarray, length: int, init: dict[str, np.ndarray]) -> None:
    """Where one in-process E-step on a block of ~250,000 rows of whole sequences spends its time."""
    rows = max(PROFILE_ROWS // length, 1) * length
    rows = min(rows, X.shape[0] - X.shape[0] % length)
    flags = np.zeros((rows, 1))
    flags[::length] = 1.0
    block = np.concatenate([X[:rows], flags], axis=1)
    model = GaussianHMMModel(K, params="stmc", covariance_type="diag")
    emission = model.emission.make_params(K, init["means"], init["covars"])
    params = model.make_params(init["startprob"], init["transmat"], emission)
    model.e_step(params, block)  # warm-up
    Xd, starts = block[:, :-1], np.ascontiguousarray(block[:, -1] != 0)
    msg = model._message(block, None)

    def best_of(fn: Callable[[], Any], n: int = 3) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    log_b = model.emission.log_prob(params.emission, Xd)
    frames, _ = model._frames(params, Xd)
    gamma = hmm_kernels.forward_backward(params.startprob, params.transmat, frames, starts, msg.alpha_in, msg.beta_out)[
        0
    ]
    parts = {
        "Gaussian log-density (weighted_log_prob)": lambda: model.emission.log_prob(params.emission, Xd),
        "frames: max, subtract, exp": lambda: np.exp(log_b - log_b.max(axis=1)[:, None]),
        "numba forward_backward": lambda: hmm_kernels.forward_backward(
            params.startprob, params.transmat, frames, starts, msg.alpha_in, msg.beta_out
        ),
        "moments under gamma": lambda: model.emission.stats(params.emission, Xd, gamma),
        "start flags / split (start_flags)": lambda: (block[:, :-1], np.ascontiguousarray(block[:, -1] != 0)),
    }
    total = best_of(lambda: model.e_step(params, block))
    print()
    print(f"profile: one e_step on {rows:,} rows ({rows // length} sequences of {length}), one thread, best of 3")
    print(f"  whole e_step: {total * 1e3:8.1f} ms  ({total / rows * 1e9:.0f} ns/row)")
    for name, fn in parts.items():
        t = best_of(fn)
        print(f"  {name:<42} {t * 1e3:8.1f} ms  {t / total:6.1%}")
    prof = cProfile.Profile()
    prof.enable()
    model.e_step(params, block)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print("  cProfile, top 12 by own time:")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    for line in lines[start:]:
        if line.strip():
            print("   ", line)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-sequences", type=int, default=1000)
    parser.add_argument("--length", type=int, default=2000, help="steps per sequence")
    parser.add_argument("--iters", type=int, default=3, help="Baum-Welch iterations per fit (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per backend (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-distributed", action="store_true", help="skip the 2-worker LocalCluster")
    parser.add_argument("--no-long", action="store_true", help="skip the one-long-sequence table")
    parser.add_argument("--profile", action="store_true", help="break down one in-process E-step")
    args = parser.parse_args()
    if args.iters < 2:
        parser.error("--iters must be at least 2 (the first iteration is the fit's overhead)")

    rng = np.random.default_rng(args.seed)
    truth = true_model(rng)
    init = initial(truth, rng)
    t0 = time.perf_counter()
    X = sample(truth, args.n_sequences, args.length, rng)
    lengths = np.full(args.n_sequences, args.length)
    X_long = None if args.no_long else sample(truth, 1, args.n_sequences * args.length, rng)
    made = time.perf_counter() - t0
    n = X.shape[0]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    print(
        f"data: {args.n_sequences:,} sequences x {args.length:,} steps = {n:,} rows, d={D}, k={K}, diag, float64 "
        f"({X.nbytes / 2**20:.0f} MiB), drawn in {made:.1f} s (seed {args.seed}); hmmlearn {hmmlearn_version}, "
        f"daskem {daskem.__version__}"
    )
    print(
        f"{args.iters} iterations per fit from the same start; s/iter excludes the first iteration (the fit's "
        f"overhead); median of {args.repeats} fits; daskem warmed up first (numba compilation not timed)"
    )

    client = cluster = None
    if not args.no_distributed:
        from distributed import Client

        cluster = local_cluster(2, 1)
        client = Client(cluster, set_as_default=False)
    try:
        print(f"\n{args.n_sequences:,} x {args.length:,}:", flush=True)
        many = run_dataset(X, lengths, init, args, client)
        long = None
        if X_long is not None:
            print(f"\n1 x {n:,} (daskem carries messages between blocks):", flush=True)
            long = run_dataset(X_long, None, init, args, client)
    finally:
        if client is not None:
            client.close()
            cluster.close()

    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (on {os.cpu_count()} cores)")
    checks = table(f"{args.n_sequences:,} sequences x {args.length:,} steps", many, True)
    if long is not None:
        table(f"1 sequence x {n:,} steps (no target)", long, False)
    print()
    print(
        "loglik rel. diff: |total loglik - the faster hmmlearn's| / |hmmlearn's| for the shared start and for the "
        "parameters the last iteration started from; max means diff: largest |difference| of the fitted means."
    )
    for name, ratio, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name} <= {TARGET}x hmmlearn ({ratio:.3f}x)")
    if args.profile:
        profile(X, args.length, init)


if __name__ == "__main__":
    main()
