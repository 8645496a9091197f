"""Where a CLI fit runs: an existing scheduler, a LocalCluster of worker processes, or threads.

Also the options that choose it (:func:`cluster_options`, shared by the commands that
fit) and the handling of distributed's logs and of a lost scheduler. distributed is
imported inside the functions that use it, so ``daskem --help`` does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from daskem.cli.display import PROGRESS_MODES

if TYPE_CHECKING:
    from rich.console import Console

#: Environment for worker processes of the clusters the CLI starts. Distributed sets
#: MALLOC_TRIM_THRESHOLD_, which freezes glibc's mmap threshold at 128 KiB so every large
#: temporary is mmap'ed and unmapped (page faults on each call); a fixed 32 MiB threshold
#: gives back the client process's allocation behaviour.
WORKER_ENVIRON = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    # distributed's 64 KiB trim threshold makes glibc return freed chunk buffers to the
    # OS after every read: decompressing a Zarr chunk in a worker ran 2x slower with it.
    "MALLOC_TRIM_THRESHOLD_": str(64 * 1024 * 1024),
}


#: How long connecting to an existing scheduler may take.
CONNECT_TIMEOUT_SECONDS = 30.0

#: How long a fit on an existing scheduler waits for --wait-for-workers workers.
WAIT_FOR_WORKERS_SECONDS = 300.0


@dataclass(frozen=True)
class ClusterChoice:
    """Where a CLI fit runs, from the cluster options (see :func:`cluster_options`)."""

    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "2GiB"
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    wait_for_workers: int = 1

    @property
    def address(self) -> str | None:
        """The existing scheduler to connect to: --scheduler, else DASK_SCHEDULER_ADDRESS."""
        return self.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None

    def security(self) -> Any:
        """A ``distributed.security.Security`` for TLS, or None.

        An existing cluster's certificates come from the --tls-* files; a local cluster
        started with --tls gets temporary self-signed credentials (``Security.temporary``),
        known only to this process.
        """
        from distributed.security import Security

        from daskem.errors import DaskemError

        files = (self.tls_ca_file, self.tls_cert, self.tls_key)
        if any(files):
            if not all(files):
                raise DaskemError("--tls-ca-file, --tls-cert and --tls-key go together: pass all three.")
            return Security(
                tls_ca_file=self.tls_ca_file,
                tls_client_cert=self.tls_cert,
                tls_client_key=self.tls_key,
                require_encryption=True,
            )
        return Security.temporary() if self.tls else None

    def describe(self) -> str:
        """How to pass this cluster again (for the resume command of an error message)."""
        if self.scheduler_file:
            where = f"--scheduler-file {self.scheduler_file}"
        elif self.address:
            where = f"--scheduler {self.address}"
        else:
            where = f"--workers {self.workers}"
        tls = " ".join(
            f"--{name} {value}"
            for name, value in (
                ("tls-ca-file", self.tls_ca_file),
                ("tls-cert", self.tls_cert),
                ("tls-key", self.tls_key),
            )
            if value
        )
        return f"{where} {tls}".strip()


def local_cluster(
    workers: int = 2, threads_per_worker: int = 1, memory_limit: Any = "auto", security: Any = None
) -> Any:
    """A ``distributed.LocalCluster`` of worker processes as daskem starts them.

    Workers and dashboard listen on 127.0.0.1 only, the workers get :data:`WORKER_ENVIRON`
    and ignore Ctrl-C (:mod:`daskem.workers`: the driver closes them), and with
    ``security`` (a ``distributed.security.Security``) everything speaks TLS.
    Use it as a context manager; benchmarks and examples share it with the CLI.
    """
    import dask
    from distributed import LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit,
            security=security,
            protocol="tls://" if security is not None else None,
            preload=["daskem.workers"],
        )


@contextlib.contextmanager
def cluster_client(choice: ClusterChoice, console: Console) -> Iterator[Any]:
    """A ``distributed.Client`` for ``choice``: an existing scheduler (--scheduler,
    --scheduler-file, DASK_SCHEDULER_ADDRESS), else a LocalCluster on 127.0.0.1, or None
    for local threads (--workers 0)."""
    from distributed import Client

    from daskem.errors import DaskemError

    if choice.tls and (choice.scheduler_file or choice.address):
        raise DaskemError(
            "--tls starts a local cluster with temporary keys; for an existing scheduler pass its "
            "--tls-ca-file, --tls-cert and --tls-key instead."
        )
    security = choice.security()
    if choice.scheduler_file or choice.address:
        target = {"scheduler_file": choice.scheduler_file} if choice.scheduler_file else {"address": choice.address}
        where = choice.scheduler_file or choice.address
        if str(where).startswith("tls://") and security is None:
            raise DaskemError(f"{where} is a TLS scheduler: pass --tls-ca-file, --tls-cert and --tls-key.")
        try:
            client = Client(**target, security=security, timeout=CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, TypeError, ValueError) as err:
            raise DaskemError(
                f"Could not connect to the Dask scheduler at {where} ({type(err).__name__}: {err}). Check the "
                "address or scheduler file, that the scheduler is running, and its TLS certificates."
            ) from None
        with client:
            address = client.scheduler_info()["address"]
            console.print(f"Connected to [bold]{address}[/bold] (dashboard: {client.dashboard_link})")
            if choice.wait_for_workers:
                try:
                    client.wait_for_workers(choice.wait_for_workers, timeout=WAIT_FOR_WORKERS_SECONDS)
                except TimeoutError:
                    raise DaskemError(
                        f"No {choice.wait_for_workers} worker(s) joined the scheduler within "
                        f"{WAIT_FOR_WORKERS_SECONDS:.0f} s: start workers (dask worker) or lower --wait-for-workers."
                    ) from None
            yield client
        return
    if choice.workers == 0:
        console.print("Running on local threads (no cluster)")
        yield None
        return
    with (
        local_cluster(choice.workers, choice.threads_per_worker, choice.memory_limit, security) as cluster,
        Client(cluster, security=security) as client,
    ):
        console.print(
            f"Local cluster{' (TLS)' if security is not None else ''}: {choice.workers} worker process(es) x "
            f"{choice.threads_per_worker} thread(s), memory limit {choice.memory_limit} each; "
            f"dashboard: {client.dashboard_link}"
        )
        yield client


class MemoryLimit(click.ParamType):
    """A worker memory limit as distributed reads it, checked when the command line is parsed.

    ``auto`` (the machine's memory shared among the workers), a size with a unit
    (``2GiB``, ``512MiB``, ``4 GB``), a plain byte count, or a fraction in (0, 1] of the
    machine's memory. Zero, negative and unreadable values are refused with an example;
    the value is passed on as written, so distributed interprets it as it always does.
    """

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from dask.utils import parse_bytes

        text = str(value).strip()
        if text.lower() == "auto":
            return "auto"
        nbytes: float | None
        try:
            nbytes = float(text)  # distributed reads a number <= 1 as a share of the machine's memory
        except ValueError:
            try:
                nbytes = parse_bytes(text)
            except (ValueError, TypeError, OverflowError):
                nbytes = None
        if nbytes is None or not math.isfinite(nbytes) or nbytes <= 0:
            self.fail(
                f"{value!r} is not a memory size: pass a positive size such as 2GiB or 512MiB, a byte count such "
                "as 4000000000, or auto (the machine's memory divided among the workers).",
                param,
                ctx,
            )
        return text


def cluster_options(func: Any) -> Any:
    """The options that choose where the fit runs (shared by fit and resume)."""
    options = [
        click.option(
            "--scheduler",
            default=None,
            help="Address of an existing Dask scheduler (tcp://HOST:PORT); default: $DASK_SCHEDULER_ADDRESS.",
        ),
        click.option(
            "--scheduler-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Connect to the scheduler described in this file (dask scheduler --scheduler-file).",
        ),
        click.option(
            "--wait-for-workers",
            type=click.IntRange(min=0),
            default=1,
            show_default=True,
            help="On an existing scheduler, wait (up to 5 minutes) for this many workers before reading data.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=2,
            show_default=True,
            help="Local worker processes; 0 runs on threads in this process, with no cluster.",
        ),
        click.option(
            "--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True, help="Threads per worker."
        ),
        click.option(
            "--memory-limit",
            type=MemoryLimit(),
            default="2GiB",
            show_default=True,
            help="Memory limit of each local worker (2GiB, 512MiB, bytes, or auto); checked against what a worker "
            "needs once the data are opened.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Times a failed task is retried on a cluster before the fit fails (transient errors).",
        ),
        click.option("--tls", is_flag=True, help="Encrypt and authenticate the local cluster with temporary TLS keys."),
        click.option("--tls-ca-file", type=click.Path(exists=True), default=None, help="CA certificate (TLS cluster)."),
        click.option(
            "--tls-cert", type=click.Path(exists=True), default=None, help="Client certificate (TLS cluster)."
        ),
        click.option("--tls-key", type=click.Path(exists=True), default=None, help="Client private key (TLS cluster)."),
        click.option(
            "--output",
            "-o",
            type=click.Path(),
            default=None,
            help="Write the fitted model to this Zarr group (a new path, or an earlier model file with --overwrite).",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Replace an earlier daskem model file at --output (nothing else is ever replaced).",
        ),
        click.option("--debug", is_flag=True, help="Show the full traceback of an error or interruption."),
        click.option(
            "--progress",
            type=click.Choice(PROGRESS_MODES),
            default="auto",
            show_default=True,
            help="Per-iteration display: a live bar, plain lines, JSON lines (batch logs) or none; "
            "auto is a bar on a terminal, lines otherwise.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No per-iteration display (same as --progress none)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def lost_scheduler(err: BaseException, client: Any) -> bool:
    """Whether ``err``, raised while ``client`` was open, means the scheduler connection was lost."""
    from distributed.comm.core import CommClosedError

    if client is None:
        return False
    return isinstance(err, CommClosedError | asyncio.CancelledError) or client.status != "running"


#: The dask config variable that sets the log level of distributed in worker processes.
_WORKER_LOG_LEVEL = "DASK_LOGGING__DISTRIBUTED"


@contextlib.contextmanager
def quiet_cluster_logs(debug: bool) -> Iterator[None]:
    """Keep distributed's own logs (tracebacks of a lost connection or of a cluster closing
    on Ctrl-C, here and in the local workers) off the terminal while the block runs.

    The CLI reports what happened in one message; ``--debug`` shows everything. The
    loggers stay quiet after the block (a lost connection is still logged while the
    process exits); the workers' log level, which distributed's nanny also exports into
    this process's environment, is removed again, so that clusters started later (e.g.
    by a command run in-process under ``click.testing.CliRunner``) log normally.
    """
    if debug:
        yield
        return
    import logging

    import dask
    import distributed  # noqa: F401  (configures its loggers on import: set the levels after)

    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed")]
    # asyncio: "Task exception was never retrieved" of the client's pending gathers.
    for name in {*names, "distributed", "asyncio"}:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    # The nanny sets its pre-spawn environment in this process too (os.environ.update).
    before = os.environ.get(_WORKER_LOG_LEVEL)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {**environ, _WORKER_LOG_LEVEL: "critical"}}):
            yield
    finally:
        if before is None:
            os.environ.pop(_WORKER_LOG_LEVEL, None)
        else:
            os.environ[_WORKER_LOG_LEVEL] = before


@contextlib.contextmanager
def ctrl_c_delivered() -> Iterator[None]:
    """Make a Ctrl-C that lands in a finaliser stop the command all the same.

    Python reports an exception raised inside a ``__del__`` method or a weakref callback
    ("Exception ignored in ...") and drops it. The driver thread finalises distributed's
    futures after every pass, so a Ctrl-C whose KeyboardInterrupt is raised there was lost
    and the fit went on. While the block runs, such a KeyboardInterrupt is not reported
    but delivered again: SIGINT to this process from a short-lived thread, which lands
    once the finaliser has returned (and is delivered again if it lands in another one).
    """
    import signal
    import sys
    import threading

    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


@contextlib.contextmanager
def command_cluster(choice: ClusterChoice, console: Console, debug: bool) -> Iterator[Any]:
    """Where a command's fit runs (:func:`cluster_client`), with a Ctrl-C that stops it
    wherever it lands (:func:`ctrl_c_delivered`) and distributed's logs off the terminal
    unless ``debug`` (:func:`quiet_cluster_logs`)."""
    with ctrl_c_delivered(), quiet_cluster_logs(debug), cluster_client(choice, console) as client:
        yield client
