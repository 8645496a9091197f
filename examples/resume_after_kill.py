"""Kill a checkpointed fit half-way, resume it, and get exactly the uninterrupted result.

The story: a long EM fit runs overnight and the machine is rebooted, the job is
preempted, or someone presses Ctrl-C. With ``--checkpoint RUN.zarr`` daskem commits the
state after every iteration (parameters, history, convergence state, a fingerprint of
the data), so nothing but the iteration in flight is lost: ``daskem resume RUN.zarr``
continues from the last committed iteration and ends bitwise identical to a fit that
was never interrupted.

The script

1. writes a synthetic dataset to a Zarr store;
2. starts ``daskem fit DATA --checkpoint RUN.zarr`` in a subprocess (its own process
   group), polls the checkpoint with ``daskem.checkpoint.Checkpoint(RUN).run(0).latest()``
   and sends SIGKILL once a few iterations are committed -- no clean-up, no
   ``finally`` blocks, like a power cut;
3. shows what the checkpoint holds (``daskem inspect RUN.zarr``);
4. runs ``daskem resume RUN.zarr`` to finish the fit;
5. runs the same fit uninterrupted and prints the largest difference between the two
   models' parameters: 0.0.

The fits start from random responsibilities (``--init-params random``) and stop when
the mean log-likelihood changes by less than ``--tol`` (1e-6): a few dozen iterations,
so there is time to kill the first one.

Run it (about half a minute; ``--help`` for the options)::

    python examples/resume_after_kill.py
    python examples/resume_after_kill.py --workers 2     # the fits on a LocalCluster

By default the fits run on threads in the ``daskem`` process (``--workers 0``), so the
kill leaves nothing behind; with ``--workers N`` the whole process group (driver,
nannies and workers) is killed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: The ``daskem`` command, run with this interpreter (the console script may not be on PATH).
DASKEM = [sys.executable, "-m", "daskem.cli"]
#: Wide output, so that the tables and messages of the command are not wrapped.
ENV = {**os.environ, "COLUMNS": "160"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000, help="rows (default 1M)")
    parser.add_argument("--n-features", type=int, default=8, help="columns (default 8)")
    parser.add_argument("--n-components", type=int, default=5, help="components (default 5)")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per Zarr chunk (default 50000)")
    parser.add_argument("--max-iter", type=int, default=200, help="most EM iterations (default 200)")
    parser.add_argument("--tol", type=float, default=1e-6, help="convergence threshold (default 1e-6)")
    parser.add_argument(
        "--init-params",
        default="random",
        choices=["kmeans", "k-means++", "random", "random_from_data"],
        help="initialisation (default random: random responsibilities, slow to converge)",
    )
    parser.add_argument("--kill-after", type=int, default=4, help="kill once this iteration is committed")
    parser.add_argument("--workers", type=int, default=0, help="worker processes of the fits (0: threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where to put data and runs (default: temp)")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    return parser.parse_args(argv)


def show(cmd: list[str]) -> str:
    """The command as a user would type it."""
    return "daskem " + shlex.join(cmd[len(DASKEM) :])


def run(cmd: list[str], timeout: float) -> None:
    print(f"$ {show(cmd)}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=ENV)
    if done.returncode != 0:
        sys.exit(f"command failed with exit code {done.returncode}:\n{done.stdout}\n{done.stderr}")
    lines = [line for line in done.stderr.splitlines() if not line.startswith("iteration")]
    for line in lines + done.stdout.splitlines():
        print(f"    {line}")


def committed_iteration(run_path: Path) -> int:
    """The newest committed iteration of the checkpoint (0 while there is none)."""
    from daskem.checkpoint import Checkpoint

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reader racing the writer may see a half-written iteration
            state = Checkpoint(run_path).run(0).latest()
    except Exception:  # not created yet, or its metadata are being written right now
        return 0
    return 0 if state is None else state.iteration


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import daskem
    from daskem.checkpoint import Checkpoint
    from daskem.testing import write_mixture_zarr

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="daskem-resume-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data, run_path = workdir / "data.zarr", workdir / "run.zarr"
    resumed_path, reference_path = workdir / "resumed-model.zarr", workdir / "reference-model.zarr"
    for path in (run_path, resumed_path, reference_path):
        shutil.rmtree(path, ignore_errors=True)
    try:
        write_mixture_zarr(
            data,
            args.n_samples,
            args.n_features,
            args.n_components,
            seed=args.seed,
            chunk_rows=args.chunk_rows,
            overwrite=True,
        )
        print(f"wrote {data}: {args.n_samples:,} x {args.n_features}")
        fit_args = [
            "-k",
            str(args.n_components),
            "--tol",
            str(args.tol),
            "--max-iter",
            str(args.max_iter),
            "--init-params",
            args.init_params,
            "--seed",
            str(args.seed),
            "--workers",
            str(args.workers),
        ]

        # 2. The checkpointed fit, killed without warning after a few committed iterations.
        cmd = [*DASKEM, "fit", str(data), *fit_args, "--checkpoint", str(run_path)]
        print(f"$ {show(cmd)} &", flush=True)
        log = workdir / "killed-fit.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
        deadline = time.monotonic() + args.timeout
        seen = 0
        while proc.poll() is None and seen < args.kill_after and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = committed_iteration(run_path)
        if proc.poll() is not None:
            sys.exit(
                f"the fit ended (exit code {proc.returncode}) before it could be killed: use more --n-samples "
                f"or a smaller --tol.\n{log.read_text()}"
            )
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and, with --workers N, its nannies and workers
        proc.wait()
        state = Checkpoint(run_path).run(0).latest()
        if state is None or state.finished:
            sys.exit("nothing to resume: use more --n-samples, a smaller --tol or a smaller --kill-after.")
        print(
            f"killed the fit with SIGKILL (exit code {proc.returncode}) after {state.iteration} committed "
            "iterations, before it finished"
        )

        # 3. What survived.
        run([*DASKEM, "inspect", str(run_path)], args.timeout)

        # 4. Resume: model, data location and settings come from the checkpoint.
        run([*DASKEM, "resume", str(run_path), "--workers", str(args.workers), "-o", str(resumed_path)], args.timeout)

        # 5. The same fit, never interrupted.
        run([*DASKEM, "fit", str(data), *fit_args, "-o", str(reference_path)], args.timeout)

        resumed, reference = daskem.load(resumed_path), daskem.load(reference_path)
        attrs = ("weights_", "means_", "covariances_", "precisions_cholesky_")
        diff = max(float(np.max(np.abs(getattr(resumed, a) - getattr(reference, a)))) for a in attrs)
        same_history = resumed.lower_bounds_ == reference.lower_bounds_
        for name, model in (("resumed fit:      ", resumed), ("uninterrupted fit:", reference)):
            state = "converged" if model.converged_ else "not converged"
            print(f"{name} {state} after {model.n_iter_} iterations, mean log-likelihood {model.lower_bound_!r}")
        print(f"same log-likelihood history: {same_history}")
        print(f"max difference of the parameters: {diff}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
