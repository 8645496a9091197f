"""The cost of losing a Dask worker in the middle of an EM iteration: extra seconds.

Measures, with real processes on 127.0.0.1 (``dask scheduler`` + 2 ``dask worker``
subprocesses, 1 thread each, sharing a scheduler file), for ``--rounds`` rounds:

1. ``undisturbed``: ``daskem fit DATA --scheduler-file F --checkpoint RUN`` (k=3, full
   covariance, tol=0, ``--iters`` iterations, k-means++ start, split_every=4) on a fresh
   cluster; the per-iteration seconds are read from the checkpoint history
   (``Checkpoint(RUN).run(0).latest().history["seconds"]``, the same numbers as
   ``daskem inspect RUN --json``).
2. ``killed``: the same fit on another fresh cluster; when the line of iteration
   ``--kill-after`` appears (it is printed after that iteration's commit, as the next
   pass starts), the script waits 40% of a typical iteration and SIGKILLs one whole
   ``dask worker`` (nanny and worker process: its process group). The fit goes on with the
   other worker (``--replace``: a new ``dask worker`` is started at once). The model must
   be bitwise the undisturbed one.

Per round it prints the median iteration of the undisturbed fit, the medians of the killed
fit before and after the kill, the seconds of the iteration that absorbed the kill (the
first whose line came after the kill) and its extra seconds over the undisturbed median and
over the median of the killed fit's other iterations. Iteration 1 (which includes caching
the data in the workers) is left out of every median.

Usage::

    python benchmarks/bench_recovery.py                      # 1,000,000 x 4, 30 iterations, 3 rounds
    python benchmarks/bench_recovery.py --n 4000000 --rounds 5 --replace

The killed worker held half of the cached data blocks: the scheduler recomputes them from
the Zarr store (reading and caching them again) on the surviving worker, which then runs
all the E-steps alone; on a machine with few cores the numbers also depend on what else
runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import daskem
from daskem.checkpoint import Checkpoint
from daskem.checkpoint.checkpoint import WRITE_DELAY_ENV
from daskem.testing import write_mixture_zarr

BIN = Path(sys.executable).parent
ITERATION_LINE = re.compile(r"^iteration +(\d+)  log-lik \S+  change \S+  (\d+\.\d+) s\b")
ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", WRITE_DELAY_ENV)}
    return {**env, "COLUMNS": "400"}


class Cluster:
    """A scheduler and workers, each a subprocess in its own session (SIGKILLed on close)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ(), start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, n_workers: int, timeout: float = 120) -> Cluster:
        self.file.unlink(missing_ok=True)
        dask = str(BIN / "dask")
        where = ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"]
        self._spawn([dask, "scheduler", "--scheduler-file", str(self.file), *where], self.root / "scheduler.log")
        deadline = time.monotonic() + timeout
        while not self._address():
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start: " + (self.root / "scheduler.log").read_text())
            time.sleep(0.1)
        for _ in range(n_workers):
            self.start_worker()
        while sum(self.registered(w) for w in self.workers) < n_workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register")
            time.sleep(0.1)
        return self

    def _address(self) -> str | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads(self.file.read_text())["address"]
        return None

    def start_worker(self) -> None:
        log = self.root / f"worker-{len(self.procs)}.log"
        args = [str(BIN / "dask"), "worker", "--scheduler-file", str(self.file), "--host", "127.0.0.1"]
        proc = self._spawn([*args, "--nthreads", "1", "--memory-limit", "2GiB"], log)
        self.workers.append((proc, log))

    @staticmethod
    def registered(worker: tuple[subprocess.Popen[bytes], Path]) -> bool:
        return worker[0].poll() is None and "Registered to:" in worker[1].read_text()

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)


def run_fit(data: Path, cluster: Cluster, run: Path, model: Path, iters: int, kill: dict | None) -> dict:
    """One fit on ``cluster``; with ``kill``, a worker is SIGKILLed during iteration ``kill_after + 1``."""
    args = [str(BIN / "daskem"), "fit", str(data), "-k", "3", "--tol", "0", "--seed", "0", "--split-every", "4"]
    args += ["--init-params", "k-means++", "--max-iter", str(iters), "--scheduler-file", str(cluster.file)]
    args += ["--checkpoint", str(run), "-o", str(model)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ())
    lines: list[tuple[float, int, float]] = []
    other: list[str] = []
    killed_at = None

    def read() -> None:
        for line in proc.stderr:
            m = ITERATION_LINE.match(line)
            if m:
                lines.append((time.monotonic(), int(m.group(1)), float(m.group(2))))
            else:
                other.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill is not None:
        while not any(n >= kill["after"] for _, n, _ in lines):
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            typical = statistics.median(s for _, _, s in lines[1:]) if len(lines) > 1 else 0.2
            time.sleep(0.4 * typical)
            killed_at = time.monotonic()
            cluster.kill(cluster.workers[0][0])
            if kill["replace"]:
                cluster.start_worker()
    proc.wait(timeout=1200)
    reader.join(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"daskem fit failed ({proc.returncode}):\n{''.join(other)}")
    seconds = [float(s) for s in Checkpoint(str(run)).run(0).latest().history["seconds"]]
    hit = next((n for at, n, _ in lines if killed_at is not None and at > killed_at), None)
    return {"seconds": seconds, "hit": hit}


def median_of(seconds: list[float], keep) -> float:
    chosen = [s for i, s in enumerate(seconds, start=1) if i > 1 and keep(i)]
    return statistics.median(chosen) if chosen else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of the data (4 columns, float64)")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per Zarr chunk (one task each)")
    parser.add_argument("--iters", type=int, default=30, help="EM iterations per fit (tol=0)")
    parser.add_argument("--kill-after", type=int, default=3, help="kill a worker during the iteration after this one")
    parser.add_argument("--rounds", type=int, default=3, help="undisturbed + killed fits, each on fresh clusters")
    parser.add_argument("--replace", action="store_true", help="start a new worker right after the kill")
    parser.add_argument("--dir", default=None, help="where to write data and checkpoints (default: a temporary dir)")
    args = parser.parse_args()
    if not 1 <= args.kill_after < args.iters - 1:
        parser.error("--kill-after must be at least 1 and leave 2 iterations after the kill")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        data = root / "data.zarr"
        write_mixture_zarr(data, args.n, 4, 3, seed=0, chunk_rows=args.chunk_rows)
        print(
            f"data: {args.n:,} x 4 float64 in {-(-args.n // args.chunk_rows)} blocks; k=3 full, {args.iters} "
            f"iterations on 2 workers x 1 thread; a worker killed during iteration {args.kill_after + 1}"
            f"{', then replaced' if args.replace else ''}"
        )
        print(
            f"{'round':>5} {'undisturbed':>12} {'before kill':>12} {'after kill':>11} {'kill iter':>10} "
            f"{'seconds':>8} {'extra':>8} {'extra*':>8}"
        )
        extras = []
        for r in range(args.rounds):
            fits = {}
            for kind in ("undisturbed", "killed"):
                work = root / f"{kind}-{r}"
                work.mkdir()
                cluster = Cluster(work)
                try:
                    cluster.start(2)
                    kill = {"after": args.kill_after, "replace": args.replace} if kind == "killed" else None
                    fits[kind] = run_fit(data, cluster, work / "run.zarr", work / "model.zarr", args.iters, kill)
                finally:
                    cluster.close()
            a, b = (daskem.load(root / f"{kind}-{r}" / "model.zarr") for kind in ("undisturbed", "killed"))
            same = all(getattr(a, x).tobytes() == getattr(b, x).tobytes() for x in ATTRS)
            if not same or a.lower_bounds_ != b.lower_bounds_:
                raise RuntimeError("the fit with a killed worker differs from the undisturbed fit")
            hit = fits["killed"]["hit"]
            if hit is None:
                raise RuntimeError("the fit ended before the kill")
            killed = fits["killed"]["seconds"]
            base = median_of(fits["undisturbed"]["seconds"], lambda i: True)
            others = median_of(killed, lambda i, hit=hit: i != hit)
            print(
                f"{r:>5} {base:12.3f} {median_of(killed, lambda i, hit=hit: i < hit):12.3f} "
                f"{median_of(killed, lambda i, hit=hit: i > hit):11.3f} {hit:>10} {killed[hit - 1]:8.3f} "
                f"{killed[hit - 1] - base:+8.3f} {killed[hit - 1] - others:+8.3f}"
            )
            extras.append(killed[hit - 1] - base)
        print()
        print(
            "seconds per iteration; 'extra': the kill iteration minus the undisturbed median; 'extra*': minus the "
            f"median of the killed fit's other iterations. Median extra over {args.rounds} round(s): "
            f"{statistics.median(extras):+.3f} s. Every killed fit equalled its undisturbed fit bitwise."
        )


if __name__ == "__main__":
    main()
