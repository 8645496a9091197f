"""The driver of ``deploy/slurm`` and ``deploy/pbs``: ``daskem fit`` on dask-jobqueue workers.

``slurm/driver.py`` and ``pbs/driver.py`` are thin scripts over this module: each names its
batch system and its ``jobqueue.yaml`` and takes its functions from :func:`bind`.

The driver runs inside one batch job (``fit.sbatch`` / ``fit.pbs``): it starts the Dask
scheduler in its own process with dask-jobqueue's ``SLURMCluster`` / ``PBSCluster``,
configured from the ``jobqueue.<system>`` section of that ``jobqueue.yaml``, keeps N worker
jobs queued or running, writes the scheduler's address to a scheduler file on shared
storage, waits for the first workers and then runs

    daskem fit DATA --scheduler tcp://HOST:PORT --checkpoint SHARED/run.zarr -o SHARED/model.zarr ...

in a child process. Running the same command again (the next job after a resubmission)
resumes the fit from the checkpoint. On exit -- the fit's end, an error, SIGTERM or
SIGINT -- the worker jobs are cancelled (``scancel`` / ``qdel``).

Keep this file one directory above the drivers (the ``deploy/`` tree together): they put
that directory on ``sys.path`` to import it. Requires ``dask-jobqueue`` and PyYAML in the
environment that runs daskem.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


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


@dataclass(frozen=True)
class JobqueueDriver:
    """The driver for one batch system.

    ``system`` ("slurm", "pbs") names the section of ``jobqueue.yaml``, the dask-jobqueue
    configuration and module, and the classes ``<SYSTEM>Cluster`` / ``<SYSTEM>Job``.
    ``default_config`` is the ``jobqueue.yaml`` used when none is given.
    """

    system: str
    default_config: Path

    @property
    def _class_prefix(self) -> str:
        return self.system.upper()  # SLURMCluster / SLURMJob, PBSCluster / PBSJob

    def load_config(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The ``jobqueue.<system>`` section of a dask-jobqueue YAML file [default_config]."""
        import yaml

        path = self.default_config if path is None else path
        with open(path) as f:
            document = yaml.safe_load(f) or {}
        try:
            section = document["jobqueue"][self.system]
        except (KeyError, TypeError):
            raise SystemExit(f"{path}: no 'jobqueue: {self.system}:' section") from None
        if not isinstance(section, dict):
            raise SystemExit(f"{path}: 'jobqueue: {self.system}:' must be a mapping")
        return section

    @contextlib.contextmanager
    def jobqueue_config(self, path: str | os.PathLike[str] | None = None) -> Iterator[dict[str, Any]]:
        """Set ``jobqueue.<system>.*`` in dask's configuration from ``path`` while in the block.

        dask-jobqueue reads these keys whenever it creates a job, so keep the cluster inside
        the block. Other configuration (and dask-jobqueue's defaults for keys the file does
        not set) stays as it is.
        """
        import dask
        import dask_jobqueue  # noqa: F401  (loads dask-jobqueue's defaults first)

        section = self.load_config(path)
        with dask.config.set({f"jobqueue.{self.system}.{key}": value for key, value in section.items()}):
            yield section

    def make_cluster(self, **overrides: Any) -> Any:
        """A ``<SYSTEM>Cluster`` from the current configuration; nothing is submitted yet.

        ``overrides`` are keyword arguments of the cluster class (e.g. ``interface="eth0"``).
        Call inside :meth:`jobqueue_config`.
        """
        import dask_jobqueue

        cluster_class = getattr(dask_jobqueue, f"{self._class_prefix}Cluster")
        return cluster_class(config_name=self.system, **overrides)

    def worker_job_script(self, scheduler: str = "tcp://<scheduler-address>:8786", **overrides: Any) -> str:
        """The batch script of one worker job, without starting a scheduler (for --dry-run)."""
        job_class = getattr(importlib.import_module(f"dask_jobqueue.{self.system}"), f"{self._class_prefix}Job")
        return job_class(scheduler=scheduler, name="<worker-name>", config_name=self.system, **overrides).job_script()

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        parser = argparse.ArgumentParser(
            description=f"Run `daskem fit` on Dask workers started as {self._class_prefix} jobs by dask-jobqueue.",
            epilog="Arguments after `--` go to `daskem fit` (e.g. -- -k 8 --max-iter 500 --retries 2).",
        )
        parser.add_argument("data", help="data to fit (path or URL readable from every node)")
        parser.add_argument("--config", default=str(self.default_config), help="dask-jobqueue YAML file [%(default)s]")
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

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parse_args(argv)
        overrides: dict[str, Any] = {"interface": args.interface} if args.interface else {}
        with self.jobqueue_config(args.config):
            if args.dry_run:
                print(f"# worker job script ({args.jobs} job(s)):")
                print(self.worker_job_script(**overrides))
                print("# fit command:")
                command = fit_command(
                    args.data, "tcp://<scheduler-address>", args.checkpoint, args.output, args.fit_args
                )
                print(shlex.join(command))
                return 0

            from distributed import Client

            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, _raise_terminated)
            Path(args.shared).mkdir(parents=True, exist_ok=True)
            cluster = None
            wrote_scheduler_file = False
            try:
                cluster = self.make_cluster(**overrides)
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


class DriverFunctions(NamedTuple):
    """The functions of one system's ``driver.py``, bound to its :class:`JobqueueDriver`."""

    load_config: Callable[..., dict[str, Any]]
    jobqueue_config: Callable[..., contextlib.AbstractContextManager[dict[str, Any]]]
    make_cluster: Callable[..., Any]
    worker_job_script: Callable[..., str]
    parse_args: Callable[..., argparse.Namespace]
    main: Callable[..., int]


def bind(system: str, default_config: str | os.PathLike[str]) -> DriverFunctions:
    """``load_config``, ..., ``main`` of the driver for ``system`` with ``default_config``."""
    driver = JobqueueDriver(system, Path(default_config))
    return DriverFunctions(*(getattr(driver, name) for name in DriverFunctions._fields))
