#!/usr/bin/env python3
"""Run ``daskem fit`` on Dask workers that PBS starts as batch jobs (dask-jobqueue).

The driver runs inside one batch job (see ``fit.pbs``): it starts the Dask scheduler
in this process with ``PBSCluster``, configured from ``jobqueue.yaml`` next to this
file, keeps N worker jobs queued or running, writes the scheduler's address to a
scheduler file on shared storage, waits for the first workers and then runs

    daskem fit DATA --scheduler tcp://HOST:PORT --checkpoint SHARED/run.zarr -o SHARED/model.zarr ...

in a child process. Running the same command again (the next job after a resubmission)
resumes the fit from the checkpoint. On exit -- the fit's end, an error, SIGTERM or
SIGINT -- the worker jobs are deleted (qdel).

    python driver.py DATA [--jobs N] [--shared DIR] [--config jobqueue.yaml] [-- daskem fit options]
    python driver.py DATA --dry-run      # print the worker job script and the fit command

Requires ``dask-jobqueue`` and PyYAML in the environment that runs daskem.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SYSTEM = "pbs"  # the section of jobqueue.yaml and the dask-jobqueue config name
HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "jobqueue.yaml"


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG) -> dict[str, Any]:
    """The ``jobqueue.<SYSTEM>`` section of a dask-jobqueue YAML file."""
    import yaml

    with open(path) as f:
        document = yaml.safe_load(f) or {}
    try:
        section = document["jobqueue"][SYSTEM]
    except (KeyError, TypeError):
        raise SystemExit(f"{path}: no 'jobqueue: {SYSTEM}:' section") from None
    if not isinstance(section, dict):
        raise SystemExit(f"{path}: 'jobqueue: {SYSTEM}:' must be a mapping")
    return section


@contextlib.contextmanager
def jobqueue_config(path: str | os.PathLike[str] = DEFAULT_CONFIG) -> Iterator[dict[str, Any]]:
    """Set ``jobqueue.<SYSTEM>.*`` in dask's configuration from ``path`` while in the block.

    dask-jobqueue reads these keys whenever it creates a job, so keep the cluster inside
    the block. Other configuration (and dask-jobqueue's defaults for keys the file does
    not set) stays as it is.
    """
    import dask
    import dask_jobqueue  # noqa: F401  (loads dask-jobqueue's defaults first)

    section = load_config(path)
    with dask.config.set({f"jobqueue.{SYSTEM}.{key}": value for key, value in section.items()}):
        yield section


def make_cluster(**overrides: Any) -> Any:
    """A ``PBSCluster`` from the current configuration; nothing is submitted yet.

    ``overrides`` are keyword arguments of ``PBSCluster`` (e.g. ``interface="eth0"``).
    Call inside :func:`jobqueue_config`.
    """
    from dask_jobqueue import PBSCluster

    return PBSCluster(config_name=SYSTEM, **overrides)


def worker_job_script(scheduler: str = "tcp://<scheduler-address>:8786", **overrides: Any) -> str:
    """The batch script of one worker job, without starting a scheduler (for --dry-run)."""
    from dask_jobqueue.pbs import PBSJob

    return PBSJob(scheduler=scheduler, name="<worker-name>", config_name=SYSTEM, **overrides).job_script()


def daskem_command() -> list[str]:
    """How to run daskem: $DASKEM, else the ``daskem`` script beside this Python, else -m."""
    if os.environ.get("DASKEM"):
        return shlex.split(os.environ["DASKEM"])
    script = Path(sys.executable).parent / "daskem"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "daskem.cli"]


def fit_command(data: str, scheduler: str, checkpoint: str, output: str, fit_args: Sequence[str] = ()) -> list[str]:
    """The ``daskem fit`` command line run against the scheduler at ``scheduler``."""
    return [
        *daskem_command(),
        "fit",
        data,
        "--scheduler",
        scheduler,
        "--checkpoint",
        checkpoint,
        "--output",
        output,
        *fit_args,
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"Run `daskem fit` on Dask workers started as {SYSTEM.upper()} jobs by dask-jobqueue.",
        epilog="Arguments after `--` go to `daskem fit` (e.g. -- -k 8 --max-iter 500 --retries 2).",
    )
    parser.add_argument("data", help="data to fit (path or URL readable from every node)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="dask-jobqueue YAML file [%(default)s]")
    parser.add_argument(
        "--jobs", type=int, default=int(os.environ.get("JOBS", "2")), help="worker jobs to keep [$JOBS or 2]"
    )
    parser.add_argument(
        "--shared",
        default=os.environ.get("SHARED", os.getcwd()),
        help="directory on storage shared by all nodes: checkpoint, model, scheduler file [$SHARED or cwd]",
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint Zarr group [SHARED/run.zarr]")
    parser.add_argument("--output", "-o", default=None, help="fitted model Zarr group [SHARED/model.zarr]")
    parser.add_argument("--scheduler-file", default=None, help="scheduler file to write [SHARED/scheduler.json]")
    parser.add_argument("--interface", default=None, help="network interface, overrides the configuration's")
    parser.add_argument(
        "--min-workers", type=int, default=1, help="worker processes to wait for before the fit starts [1]"
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=3600.0, help="seconds to wait for them (queue time) [3600]"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the worker job script and the fit command")
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, fit_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    shared = Path(args.shared)
    args.checkpoint = args.checkpoint or str(shared / "run.zarr")
    args.output = args.output or str(shared / "model.zarr")
    args.scheduler_file = args.scheduler_file or str(shared / "scheduler.json")
    args.fit_args = fit_args
    return args


class Terminated(BaseException):
    """SIGTERM/SIGINT arrived: stop the fit and cancel the worker jobs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def run_fit(command: list[str]) -> int:
    """Run ``command``; on SIGTERM/SIGINT, pass SIGTERM on and wait for it (30 s at most)."""
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except Terminated:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {"interface": args.interface} if args.interface else {}
    with jobqueue_config(args.config):
        if args.dry_run:
            print(f"# worker job script ({args.jobs} job(s)):")
            print(worker_job_script(**overrides))
            print("# fit command:")
            command = fit_command(args.data, "tcp://<scheduler-address>", args.checkpoint, args.output, args.fit_args)
            print(shlex.join(command))
            return 0

        from distributed import Client

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _raise_terminated)
        Path(args.shared).mkdir(parents=True, exist_ok=True)
        cluster = None
        wrote_scheduler_file = False
        try:
            cluster = make_cluster(**overrides)
            # A constant number of jobs: adapt() replaces worker jobs that end (walltime,
            # --lifetime, node failure) while the fit runs; the fit recomputes their blocks.
            cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.jobs)
            with Client(cluster) as client:
                client.write_scheduler_file(args.scheduler_file)
                wrote_scheduler_file = True
                address = cluster.scheduler_address
                print(f"Scheduler {address}; dashboard {client.dashboard_link}", flush=True)
                print(f"Scheduler file {args.scheduler_file}; waiting for {args.min_workers} worker(s)", flush=True)
                start = time.monotonic()
                try:
                    client.wait_for_workers(args.min_workers, timeout=args.wait_timeout)
                except TimeoutError:
                    print(
                        f"driver: fewer than {args.min_workers} worker(s) after {args.wait_timeout:.0f}s "
                        "(queue wait?); cancelling the worker jobs",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 75  # EX_TEMPFAIL
                workers = len(client.scheduler_info(n_workers=-1)["workers"])
                print(f"{workers} worker(s) after {time.monotonic() - start:.0f}s", flush=True)
                command = fit_command(args.data, address, args.checkpoint, args.output, args.fit_args)
                print("+ " + shlex.join(command), flush=True)
                return run_fit(command)
        except Terminated as stop:
            print(f"driver: signal {stop.signum}; cancelling the worker jobs", file=sys.stderr, flush=True)
            return 128 + stop.signum
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
            if cluster is not None:
                cluster.close()
            if wrote_scheduler_file:  # a stale file would name a scheduler that is gone
                with contextlib.suppress(OSError):
                    os.remove(args.scheduler_file)


if __name__ == "__main__":
    sys.exit(main())
