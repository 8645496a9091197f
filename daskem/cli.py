"""The ``daskem`` command: make synthetic data, fit models on a Dask cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import dask
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from daskem.em.init import INIT_METHODS
from daskem.em.monitor import IterationRecord
from daskem.em.progress import FitEvent, reporting_progress
from daskem.errors import DaskemError, DestinationExistsError
from daskem.io.sources import as_source
from daskem.models.gaussian import COVARIANCE_TYPES
from daskem.worker_memory import check_worker_memory, largest_block_bytes, watch_worker_memory

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
        if nbytes is None or not np.isfinite(nbytes) or nbytes <= 0:
            self.fail(
                f"{value!r} is not a memory size: pass a positive size such as 2GiB or 512MiB, a byte count such "
                "as 4000000000, or auto (the machine's memory divided among the workers).",
                param,
                ctx,
            )
        return text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="daskem")
def main() -> None:
    """Fit latent-variable models by EM on data larger than memory, with Dask and Zarr."""


@main.command("make-data")
@click.argument("out", type=click.Path())
@click.option("--n-samples", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="Rows.")
@click.option("--n-features", type=click.IntRange(min=1), default=16, show_default=True, help="Columns.")
@click.option(
    "--n-components", type=click.IntRange(min=1), default=8, show_default=True, help="True mixture components."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed; the data depend on it and --chunk-rows only."
)
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), default=65_536, show_default=True, help="Rows per Zarr chunk."
)
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="Element type."
)
@click.option("--compress/--no-compress", default=False, show_default=True, help="Compress chunks with zstd.")
@click.option(
    "--separation",
    type=click.FloatRange(min=0.0, min_open=True),
    default=4.0,
    show_default=True,
    help="Spread of the true means (noise scale ~1): small values give overlapping components, "
    "whose fit takes tens of iterations.",
)
@click.option("--overwrite", is_flag=True, help="Replace an array written earlier by make-data at OUT.")
def make_data(
    out: str,
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int,
    chunk_rows: int,
    dtype: str,
    compress: bool,
    separation: float,
    overwrite: bool,
) -> None:
    """Write a synthetic Gaussian-mixture dataset to the Zarr v3 array OUT.

    Blocks are generated and written in parallel (Dask threads); the whole array is
    never held in memory, so OUT may be far larger than RAM.
    """
    from zarr.errors import ContainsArrayError, ContainsGroupError

    from daskem.testing.data import write_mixture_zarr

    console = Console(stderr=True)
    start = time.perf_counter()
    try:
        write_mixture_zarr(
            out,
            n_samples,
            n_features,
            n_components,
            seed=seed,
            chunk_rows=chunk_rows,
            dtype=dtype,
            compress=compress,
            overwrite=overwrite,
            separation=separation,
        )
    except DestinationExistsError as err:
        raise click.ClickException(str(err)) from None
    except (FileExistsError, ContainsArrayError, ContainsGroupError):
        raise click.ClickException(f"{out!r} already exists; pass --overwrite to replace it.") from None
    except (ValueError, DaskemError) as err:
        raise click.ClickException(str(err)) from None
    size = n_samples * n_features * np.dtype(dtype).itemsize
    console.print(
        f"Wrote {out}: {n_samples:,} x {n_features} {dtype} ({size / 2**30:.2f} GiB) in "
        f"{time.perf_counter() - start:.1f}s"
    )


def remaining_iterations(history: list[IterationRecord], tol: float, max_iter: int) -> int:
    """Iterations still to run, estimated from the geometric decay of the last two changes.

    EM converges linearly near an optimum: with rate ``r`` between successive changes the
    change falls below ``tol`` after ``log(tol / change) / log(r)`` more iterations. Capped
    by ``max_iter``; ``max_iter`` minus the iterations done when there is no rate yet.
    """
    left = max(max_iter - len(history), 0)
    if len(history) < 3 or tol <= 0.0:
        return left
    last, before = abs(history[-1].change), abs(history[-2].change)
    if not (0.0 < last < before) or last <= tol:
        return left if last > tol else 0
    rate = last / before
    return min(left, int(np.ceil(np.log(tol / last) / np.log(rate))))


PROGRESS_MODES = ("auto", "bar", "lines", "jsonl", "none")


class _IterationDisplay:
    """Progress of a fit: its phase (initialising: pass i of n, fitting) and every EM iteration.

    A live bar (``bar``), one line per phase change, pass of the initialiser and iteration
    (``lines``), one JSON object per line for batch logs (``jsonl``), or nothing
    (``none``); ``auto`` is a bar on a terminal and lines otherwise. Everything goes to
    the console (stderr). The instance is both the fit's ``callback`` (iteration records)
    and the listener of :func:`daskem.em.progress.reporting_progress` (:meth:`event`).
    """

    def __init__(self, console: Console, est: Any, mode: str) -> None:
        self.console = console
        self.checkpoint = est.checkpoint
        self.max_iter = est.max_iter
        self.tol = est.tol
        self.mode = ("bar" if console.is_terminal else "lines") if mode == "auto" else mode
        self.history: dict[int, list[IterationRecord]] = {}
        self.resumed: int | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "log-lik {task.fields[ll]}  change {task.fields[change]}  {task.fields[secs]} s/it  "
                "ETA {task.fields[eta]}"
            ),
            TimeElapsedColumn(),
            console=console,
            disable=self.mode != "bar",
        )
        self.task = self.progress.add_task(
            "fit", total=est.max_iter, phase="starting", ll="-", change="-", secs="-", eta="-"
        )

    @property
    def records(self) -> int:
        """Iterations recorded during this fit (0: a finished checkpoint had nothing left to do)."""
        return sum(len(h) for h in self.history.values())

    def __enter__(self) -> _IterationDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def _say(self, text: str, entry: dict[str, Any]) -> None:
        if self.mode == "jsonl":
            self.console.out(json.dumps(entry), highlight=False)
        elif self.mode in ("bar", "lines"):
            self.console.print(text, highlight=False, soft_wrap=True)

    def event(self, event: FitEvent) -> None:
        """Show a phase change, a pass of the initialiser, a resumed run or a note."""
        if event.phase == "resumed":
            if self.resumed is None:
                self.resumed = event.iteration
                where = "initialisation (iteration 0)" if event.iteration == 0 else f"iteration {event.iteration}"
                self._say(
                    f"Resuming the fit checkpointed in {self.checkpoint} after {where}",
                    {"event": "resumed", "run": event.run, "iteration": event.iteration},
                )
            return
        if event.phase == "note":
            self._say(event.message, {"event": "note", "run": event.run, "message": event.message})
            return
        if event.phase == "fitting" and event.passes:
            return  # the iteration records show these passes
        of = f" of at most {event.total}" if event.total is not None else ""
        label = f"{event.phase}: pass {event.passes}{of}" if event.passes else event.phase
        if self.mode == "bar":
            self.progress.update(self.task, phase=label)
        else:
            self._say(label, {"event": "phase", "phase": event.phase, "passes": event.passes, "total": event.total})

    def __call__(self, record: IterationRecord, params: Any) -> None:
        history = self.history.setdefault(record.run, [])
        history.append(record)
        done = record.converged or record.iteration >= self.max_iter
        eta = 0.0 if done else remaining_iterations(history, self.tol, self.max_iter) * record.seconds
        if self.mode == "bar":
            self.progress.update(
                self.task,
                phase="converged" if record.converged else "fitting",
                completed=record.iteration,
                ll=f"{record.log_likelihood:.6f}",
                change=f"{record.change:.2e}",
                secs=f"{record.seconds:.2f}",
                eta=f"~{eta:.0f}s",
            )
        elif self.mode == "lines":
            self.console.print(
                f"iteration {record.iteration:4d}  log-lik {record.log_likelihood:.6f}  "
                f"change {record.change:.3e}  {record.seconds:.2f} s  ETA ~{eta:.0f} s"
                + ("  converged" if record.converged else ""),
                highlight=False,
            )
        elif self.mode == "jsonl":
            entry = {
                "event": "iteration",
                "run": record.run,
                "iteration": record.iteration,
                "log_likelihood": record.log_likelihood,
                "change": record.change if np.isfinite(record.change) else None,
                "seconds": record.seconds,
                "passes": record.passes,
                "eta_seconds": eta,
                "converged": record.converged,
            }
            self.console.out(json.dumps(entry), highlight=False)


class _SelectionDisplay:
    """Progress of ``daskem select``, from :class:`daskem.select.SelectionProgress` events.

    One event per phase (the sample, the k-means starts, the final log-likelihood pass)
    and per EM pass: a live bar (``bar``), one line each (``lines``), one JSON object each
    for batch logs (``jsonl``), or nothing (``none``); ``auto`` is a bar on a terminal and
    lines otherwise. Everything goes to the console (stderr).

    Parameters
    ----------
    console : rich.console.Console
        Where to write.
    mode : str
        One of :data:`PROGRESS_MODES`.
    max_iter : int
        Iterations at most (the bar's length).
    checkpoint : str, optional
        The checkpoint location, named when the selection resumes from it.
    """

    def __init__(self, console: Console, mode: str, max_iter: int, checkpoint: str | None) -> None:
        self.console = console
        self.mode = ("bar" if console.is_terminal else "lines") if mode == "auto" else mode
        self.checkpoint = checkpoint
        self.resumed = False
        self.progress = Progress(
            TextColumn("[bold]select[/bold] {task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("alive {task.fields[alive]}  best {task.fields[best]}  {task.fields[secs]} s/pass"),
            TimeElapsedColumn(),
            console=console,
            disable=self.mode != "bar",
        )
        self.task = self.progress.add_task("select", total=max_iter, phase="starting", alive="-", best="-", secs="-")

    def __enter__(self) -> _SelectionDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, n_candidates: int, n_samples: int) -> None:
        """Say what is about to run (``lines`` only: the bar shows it, JSON lines stay events)."""
        if self.mode == "lines":
            self.console.print(
                f"select: {n_candidates} candidates on {n_samples:,} rows (sample, k-means starts, EM passes, "
                "final pass)",
                highlight=False,
                soft_wrap=True,
            )

    def __call__(self, event: Any) -> None:
        if event.resumed_from and not self.resumed and self.mode in ("bar", "lines"):
            self.resumed = True
            self.console.print(
                f"Resuming the selection checkpointed in {self.checkpoint} (candidates committed up to iteration "
                f"{event.resumed_from})",
                highlight=False,
                soft_wrap=True,
            )
        best = (
            None
            if event.best_n_components is None
            else {
                "n_components": event.best_n_components,
                "covariance_type": event.best_covariance_type,
                "log_likelihood": event.best_log_likelihood,
                "bic": event.best_bic,
            }
        )
        if self.mode == "jsonl":
            entry = {
                "event": event.phase,
                "pass": event.passes,
                "iteration": event.iteration,
                "alive": event.alive,
                "candidates": event.n_candidates,
                "best": best,
                "seconds": event.seconds,
                "elapsed": event.elapsed,
                "resumed_from": event.resumed_from,
            }
            self.console.out(json.dumps(entry), highlight=False)
            return
        best_text = (
            "-"
            if best is None
            else f"k={event.best_n_components} {event.best_covariance_type}  log-lik {event.best_log_likelihood:.6f}"
            f"  BIC {event.best_bic:.1f}"
        )
        if self.mode == "bar":
            phases = {"sample": "k-means starts", "kmeans": "EM", "em": "EM", "loglik": "done"}
            self.progress.update(
                self.task,
                completed=event.iteration,
                phase=phases.get(event.phase, event.phase),
                alive=f"{event.alive}/{event.n_candidates}",
                best=best_text,
                secs=f"{event.seconds:.2f}",
            )
        elif self.mode == "lines":
            if event.phase == "sample":
                text = f"sample    read for the k-means starts in {event.seconds:.2f} s"
            elif event.phase == "kmeans":
                text = f"k-means   starts of the {event.n_candidates} candidates computed in {event.seconds:.2f} s"
            elif event.phase == "em":
                text = (
                    f"pass {event.passes:4d}  iteration {event.iteration:4d}  alive {event.alive:3d}/"
                    f"{event.n_candidates}  best {best_text}  {event.seconds:.2f} s"
                )
            else:
                text = f"final pass: log-likelihoods in {event.seconds:.2f} s; best by BIC {best_text}"
            self.console.print(text, highlight=False, soft_wrap=True)


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


def source_options(func: Any) -> Any:
    """The options that say how to read DATA (shared by fit; stored for resume)."""
    options = [
        click.option("--variable", default=None, help="Variable of a NetCDF file, or array inside a Zarr group."),
        click.option("--columns", default=None, help="Comma-separated columns of Parquet/CSV data (default: numeric)."),
        click.option("--dataset", default=None, help="Dataset inside an HDF5 file, e.g. /data/x."),
        click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Rows per block (rechunks)."),
        click.option(
            "--cache",
            type=click.Choice(["auto", "yes", "no"]),
            default="auto",
            show_default=True,
            help="Persist the data in cluster memory once, or stream them every iteration.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_CACHE_CHOICES: dict[str, str | bool] = {"auto": "auto", "yes": True, "no": False}


def _source_kwargs(
    variable: str | None, columns: str | None, dataset: str | None, chunk_rows: int | None
) -> dict[str, Any]:
    found = {
        "variable": variable,
        "columns": [c.strip() for c in columns.split(",")] if columns else None,
        "dataset": dataset,
        "chunk_rows": chunk_rows,
    }
    return {k: v for k, v in found.items() if v is not None}


def _lost_scheduler(err: BaseException, client: Any) -> bool:
    """Whether ``err``, raised while ``client`` was open, means the scheduler connection was lost."""
    from distributed.comm.core import CommClosedError

    if client is None:
        return False
    return isinstance(err, CommClosedError | asyncio.CancelledError) or client.status != "running"


def _task_failure_message(est: Any, err: BaseException) -> str:
    resume = (
        f" The checkpoint {est.checkpoint} keeps the committed iterations: run again to resume."
        if est.checkpoint
        else ""
    )
    return (
        f"A task failed on the cluster ({type(err).__name__}: {err}). If the failure is transient (a read from "
        f"storage, a lost worker), --retries N retries failed tasks.{resume}"
    )


def _committed(checkpoint: str | None) -> str:
    """The newest committed iteration of ``checkpoint``, in words."""
    from daskem.checkpoint.checkpoint import Checkpoint

    ckpt = Checkpoint(checkpoint) if checkpoint is not None else None
    if ckpt is None or not ckpt.exists():
        return "no iteration was committed yet"
    states = [ckpt.run(r).latest() for r in ckpt.runs()]
    committed = [s.iteration for s in states if s is not None]
    if not committed:
        return "no iteration was committed yet"
    if max(committed) == 0:
        return "the initial parameters are committed (iteration 0)"
    return f"the last committed iteration is {max(committed)}"


def _continue_hint(checkpoint: str | None, choice: ClusterChoice, when: str = "") -> str:
    """Where the fit stands and the command that continues it (``when``: a condition to meet first)."""
    if checkpoint is None:
        return "No checkpoint was written: rerun with --checkpoint RUN.zarr to make the fit resumable."
    lead = f"{when}, continue with" if when else "Continue with"
    return (
        f"The checkpoint {checkpoint} is intact; {_committed(checkpoint)}. {lead}:\n"
        f"  daskem resume {checkpoint} {choice.describe()}"
    )


def _check_output(output: str, overwrite: bool, data: str, checkpoint: str | None) -> None:
    """Refuse an --output that would replace the input data, the checkpoint or anything not a model file."""
    from daskem.checkpoint.store import check_model_destination

    def place(path: str) -> str:
        return os.path.realpath(path) if "://" not in path else path.rstrip("/")

    target = place(output)
    for what, path in (("the input data", data), ("the checkpoint", checkpoint)):
        if path is None:
            continue
        other = place(path)
        if target == other or other.startswith(target + os.sep) or target.startswith(other + os.sep):
            raise DaskemError(
                f"--output {output!r} is {what} ({path!r}) or inside it: the model file would replace it. "
                "Choose another path for --output."
            )
    check_model_destination(output, overwrite=overwrite)


#: The dask config variable that sets the log level of distributed in worker processes.
_WORKER_LOG_LEVEL = "DASK_LOGGING__DISTRIBUTED"


@contextlib.contextmanager
def _quiet_cluster_logs(debug: bool) -> Iterator[None]:
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


def _run_fit(
    est: Any,
    data: str,
    source: dict[str, Any],
    *,
    output: str | None,
    overwrite: bool,
    debug: bool,
    quiet: bool,
    progress: str,
    retries: int,
    **cluster: Any,
) -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    console = Console(stderr=True)
    choice = ClusterChoice(**cluster)
    start = time.perf_counter()
    client = None
    lost: BaseException | None = None
    display: _IterationDisplay | None = None
    try:
        if output:
            _check_output(output, overwrite, data, est.checkpoint)
        with (
            _quiet_cluster_logs(debug),
            cluster_client(choice, console) as client,
            _IterationDisplay(console, est, "none" if quiet else progress) as display,
            reporting_progress(display.event),
            warnings.catch_warnings(),
            dask.annotate(retries=retries) if retries else contextlib.nullcontext(),
            watch_worker_memory(client),
        ):
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                data_source = as_source(data, **source)
                check_worker_memory(client, largest_block_bytes(data_source))
                est.fit(data_source, callback=display)
            except DaskemError:
                raise
            except Exception as err:
                # Judged while the client is still open: closing it changes its status.
                if client is None:
                    raise
                if not _lost_scheduler(err, client):
                    raise click.ClickException(_task_failure_message(est, err)) from err
                lost = err
    except KeyboardInterrupt:
        if debug:
            console.print_exception()
        console.print(f"Interrupted. {_continue_hint(est.checkpoint, choice)}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except DaskemError as err:
        if debug:
            console.print_exception()
        raise click.ClickException(str(err)) from None
    except Exception as err:
        if lost is None and not _lost_scheduler(err, None):
            raise
        lost = lost or err
    if lost is not None:
        if debug:
            console.print_exception()
        hint = _continue_hint(est.checkpoint, choice, "Once a scheduler and workers are running again")
        raise click.ClickException(f"Lost the connection to the Dask scheduler ({type(lost).__name__}: {lost}). {hint}")
    elapsed = time.perf_counter() - start
    if output:
        est.save(output, overwrite=overwrite)
    _print_summary(est, data, output, elapsed, display)


@main.command("fit")
@click.argument("data")
@click.option("--model", type=click.Choice(["gmm"]), default="gmm", show_default=True, help="Model family.")
@click.option(
    "--n-components", "-k", type=click.IntRange(min=1), default=8, show_default=True, help="Mixture components."
)
@click.option(
    "--covariance-type",
    type=click.Choice(sorted(COVARIANCE_TYPES)),
    default="full",
    show_default=True,
    help="Form of the component covariances.",
)
@click.option("--max-iter", type=click.IntRange(min=0), default=100, show_default=True, help="EM iterations at most.")
@click.option(
    "--tol",
    type=click.FloatRange(min=0.0),
    default=1e-3,
    show_default=True,
    help="Stop when the mean log-likelihood changes by less than this.",
)
@click.option(
    "--reg-covar",
    type=click.FloatRange(min=0.0),
    default=1e-6,
    show_default=True,
    help="Added to covariance diagonals.",
)
@click.option(
    "--init-params",
    type=click.Choice(INIT_METHODS),
    default="kmeans",
    show_default=True,
    help="Initialisation (kmeans: k-means|| and Lloyd passes over all the data).",
)
@click.option(
    "--n-init",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Initialisations, fitted in shared passes; the best is kept.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fit (random_state).")
@click.option("--split-every", type=click.IntRange(min=2), default=None, help="Fan-in of the reduction tree.")
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Checkpoint to this Zarr group after iterations; if it holds a checkpoint of this fit, resume it.",
)
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), default=1, show_default=True, help="Iterations between commits."
)
@click.option(
    "--keep-last", type=click.IntRange(min=1), default=2, show_default=True, help="Committed iterations kept."
)
@click.option("--force-restart", is_flag=True, help="Discard an existing checkpoint and start afresh.")
@source_options
@cluster_options
def fit(
    data: str,
    model: str,
    n_components: int,
    covariance_type: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
    init_params: str,
    n_init: int,
    seed: int,
    split_every: int | None,
    checkpoint: str | None,
    checkpoint_every: int,
    keep_last: int,
    force_restart: bool,
    variable: str | None,
    columns: str | None,
    dataset: str | None,
    chunk_rows: int | None,
    cache: str,
    **cluster: Any,
) -> None:
    """Fit a model to DATA (a path, URL or glob) by EM on a Dask cluster.

    DATA is read by its suffix: .parquet/.pq (or a directory of Parquet files), .csv,
    .h5/.hdf5 (with --dataset), .nc (with --variable); anything else is a Zarr array (or,
    with --variable, an array inside a Zarr group). Without --scheduler, a LocalCluster of
    worker processes listening on 127.0.0.1 is started for the fit. Data that fit
    comfortably in the cluster's memory are cached once, larger data are streamed from
    the store on every iteration (--cache to choose). With
    --checkpoint, the fit survives being killed: run the same command (or
    `daskem resume RUN.zarr`) and it continues from the last committed iteration.
    """
    from daskem.estimators.gaussian_mixture import GaussianMixture

    est = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        n_init=n_init,
        init_params=init_params,
        random_state=seed,
        split_every=split_every,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        overwrite_checkpoint=force_restart,
        cache=_CACHE_CHOICES[cache],
    )
    _run_fit(est, data, _source_kwargs(variable, columns, dataset, chunk_rows), **cluster)


@main.command("resume")
@click.argument("run", type=click.Path())
@click.option("--data", default=None, help="Read the data from here instead of the location stored in RUN.")
@click.option(
    "--max-iter", type=click.IntRange(min=0), default=None, help="Override the stored max_iter (HMMs: n_iter)."
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Override the stored tol: a fit that converged under a larger tol continues under this one.",
)
@cluster_options
def resume(run: str, data: str | None, max_iter: int | None, tol: float | None, **cluster: Any) -> None:
    """Continue the fit checkpointed in RUN with the settings stored in it.

    The model, its hyperparameters and the data location come from the checkpoint; where
    the fit runs (--scheduler, --workers, ...) is chosen here. The fit continues from the
    newest committed iteration and ends exactly as an uninterrupted fit would have. With
    a smaller --tol or a larger --max-iter than the checkpoint's, a finished fit continues
    under the new stopping rule (recorded in the checkpoint).
    """
    from daskem.checkpoint.checkpoint import Checkpoint
    from daskem.estimators._base import estimator_class

    try:
        meta = Checkpoint(run).metadata()
        estimator = meta.get("estimator")
        if not isinstance(estimator, dict):
            raise DaskemError(f"{run!r} was written by daskem.fit_em, not by an estimator: resume it from Python.")
        location = data or meta["source"]["location"]
        stored_source = meta["source"].get("options", {})
        if location is None:
            raise DaskemError(
                f"{run!r} was fitted on in-memory data, which has no location to read again. Pass --data with "
                "a Zarr copy of the same data, or resume from Python with the same array."
            )
        params = dict(estimator["params"])
        iterations = "max_iter" if "max_iter" in params else "n_iter"  # hmmlearn's name in the HMMs
        params.update({k: v for k, v in ((iterations, max_iter), ("tol", tol)) if v is not None})
        est = estimator_class(estimator["kind"], repr(run))(**params, checkpoint=run)
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    _run_fit(est, location, stored_source, **cluster)


class _IntRangeList(click.ParamType):
    """``2..16``, ``2,4,8`` or ``3``: a list of ints >= 1."""

    name = "ks"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int]:
        if isinstance(value, list):
            return value
        text = str(value).strip()
        try:
            if ".." in text:
                low, high = (int(v) for v in text.split("..", 1))
                values = list(range(low, high + 1))
            else:
                values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a range like 2..16 or a list like 2,4,8", param, ctx)
        if not values or min(values) < 1:
            self.fail(f"{value!r} must name numbers of components >= 1, e.g. 2..16", param, ctx)
        return values


@main.command("select")
@click.argument("data")
@click.option(
    "--n-components", "-k", type=_IntRangeList(), default="1..8", show_default=True, help="Range 2..16 or list 2,4,8."
)
@click.option(
    "--covariance-type",
    default="full",
    show_default=True,
    help=f"Comma-separated covariance types among {', '.join(sorted(COVARIANCE_TYPES))}.",
)
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True, help="EM iterations at most.")
@click.option("--tol", type=click.FloatRange(min=0.0), default=1e-3, show_default=True, help="Convergence threshold.")
@click.option("--reg-covar", type=click.FloatRange(min=0.0), default=1e-6, show_default=True, help="Covariance floor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and the k-means starts.")
@click.option(
    "--n-init", type=click.IntRange(min=1), default=3, show_default=True, help="K-means starts per k on the sample."
)
@click.option(
    "--plot", "plot_path", type=click.Path(), default=None, help="Write BIC/AIC per candidate to this PNG/SVG."
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON, for scripts.")
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Checkpoint every candidate to this Zarr group after each pass; if it holds this selection, resume it.",
)
@click.option("--force-restart", is_flag=True, help="Discard an existing checkpoint and start afresh.")
@source_options
@cluster_options
def select(
    data: str,
    n_components: list[int],
    covariance_type: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
    seed: int,
    n_init: int,
    plot_path: str | None,
    as_json: bool,
    checkpoint: str | None,
    force_restart: bool,
    variable: str | None,
    columns: str | None,
    dataset: str | None,
    chunk_rows: int | None,
    cache: str,
    output: str | None,
    overwrite: bool,
    debug: bool,
    quiet: bool,
    progress: str,
    retries: int,
    **cluster: Any,
) -> None:
    """Choose a Gaussian mixture for DATA by BIC and AIC over a grid of candidates.

    Every candidate (each number of components with each covariance type) is fitted in
    the same passes over the data: one sample for the k-means starts, the EM iterations
    of all candidates together, and one pass for the final log-likelihoods. Prints each
    candidate's log-likelihood, BIC and AIC and marks the best; --output saves the best
    by BIC as a model file. Progress (--progress) is shown per phase and per EM pass:
    candidates still iterating, the best by BIC so far, iteration and seconds. With
    --checkpoint, the selection survives being killed: run the same command again and
    it continues from the last committed pass, ending as an uninterrupted run would.
    """
    from daskem.estimators.gaussian_mixture import GaussianMixture
    from daskem.plot import plot_selection
    from daskem.select import select_mixture

    console = Console(stderr=True)
    types = [t.strip() for t in covariance_type.split(",") if t.strip()]
    try:
        if output:
            _check_output(output, overwrite, data, checkpoint)
        with (
            _quiet_cluster_logs(debug),
            cluster_client(ClusterChoice(**cluster), console) as client,
            _SelectionDisplay(console, "none" if quiet else progress, max_iter, checkpoint) as display,
            dask.annotate(retries=retries) if retries else contextlib.nullcontext(),
            watch_worker_memory(client),
        ):
            source = as_source(data, **_source_kwargs(variable, columns, dataset, chunk_rows))
            check_worker_memory(client, largest_block_bytes(source))
            display.start(len(n_components) * len(types), source.n_samples)
            selection = select_mixture(
                source,
                n_components,
                types,
                max_iter=max_iter,
                tol=tol,
                reg_covar=reg_covar,
                random_state=seed,
                n_init=n_init,
                cache=_CACHE_CHOICES[cache],
                callback=display,
                checkpoint=checkpoint,
                overwrite=force_restart,
            )
        if plot_path:
            plot_selection(selection, plot_path)
    except KeyboardInterrupt:
        if debug:
            console.print_exception()
        hint = (
            f"The checkpoint {checkpoint} keeps the committed passes: run the same command again to continue."
            if checkpoint
            else "No checkpoint was written: rerun with --checkpoint RUN.zarr to make the selection resumable."
        )
        console.print(f"Interrupted. {hint}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except DaskemError as err:
        if debug:
            console.print_exception()
        raise click.ClickException(str(err)) from None
    rows = [
        {
            "n_components": c.n_components,
            "covariance_type": c.covariance_type,
            "log_likelihood": c.log_likelihood,
            "n_parameters": c.n_parameters,
            "bic": c.bic,
            "aic": c.aic,
            "n_iter": c.n_iter,
            "converged": c.converged,
        }
        for c in selection.candidates
    ]
    best_bic, best_aic = selection.best_bic, selection.best_aic
    if as_json:
        click.echo(json.dumps({"candidates": rows, "n_passes": selection.n_passes}, indent=2))
    else:
        out = Console()
        table = Table(title=f"Model selection on {data} ({selection.n_samples:,} rows, {selection.n_passes} passes)")
        for name in ("k", "covariance", "log L", "params", "BIC", "AIC", "iter", "best"):
            table.add_column(name, justify="right", no_wrap=True)
        for c in selection.candidates:
            marks = " ".join(name for name, b in (("BIC", best_bic), ("AIC", best_aic)) if c is b)
            table.add_row(
                str(c.n_components),
                c.covariance_type,
                f"{c.log_likelihood:.1f}",
                str(c.n_parameters),
                f"{c.bic:.1f}",
                f"{c.aic:.1f}",
                f"{c.n_iter}{'' if c.converged else '+'}",
                marks,
            )
        out.print(table)
        out.print(
            f"best by BIC: {best_bic.n_components} components, {best_bic.covariance_type}; "
            f"best by AIC: {best_aic.n_components} components, {best_aic.covariance_type}",
            highlight=False,
        )
    if plot_path:
        click.echo(f"wrote {plot_path}", err=True)
    if output:
        est = GaussianMixture(
            best_bic.n_components, covariance_type=best_bic.covariance_type, reg_covar=reg_covar, random_state=seed
        )
        est._set_params_attributes(best_bic.params)
        est.converged_, est.n_iter_ = best_bic.converged, best_bic.n_iter
        est.lower_bound_ = best_bic.log_likelihood / selection.n_samples
        est.lower_bounds_ = [est.lower_bound_]
        est.n_features_in_, est.n_passes_, est.pruned_restarts_ = best_bic.params.means.shape[1], selection.n_passes, []
        est._n_samples_fit = selection.n_samples
        # The data's location in the model file, so `daskem plot BEST.zarr` can draw it.
        est._fit_source = None if source.location is None else {"location": source.location, "options": source.options}
        est.save(output, overwrite=overwrite)
        click.echo(f"best model (BIC) written to {output}", err=True)


@main.command("plot")
@click.argument("run", type=click.Path(exists=True))
@click.option(
    "--data",
    default=None,
    help="Data to draw under the components (default: the data the fit read, as recorded in RUN).",
)
@click.option(
    "--out",
    "-o",
    "prefix",
    default=None,
    help="Write PREFIX-loglik.FMT and PREFIX-components.FMT (no '-' added after a PREFIX ending in '-' or "
    "'_'); a directory (existing, or ending in '/'): DIR/loglik.FMT and DIR/components.FMT. Default: "
    "RUN without .zarr as PREFIX.",
)
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True, help="Format.")
@click.option(
    "--sample", type=click.IntRange(min=10), default=5_000, show_default=True, help="Data rows drawn (uniform sample)."
)
@click.option("--show", is_flag=True, help="Also open the figures in a window, where a display is available.")
def plot(run: str, data: str | None, prefix: str | None, fmt: str, sample: int, show: bool) -> None:
    """Draw the fit in RUN (a checkpoint or a model file) as PNG or SVG files.

    Writes PREFIX-loglik.FMT (mean log-likelihood per iteration, every run of n_init) and
    PREFIX-components.FMT (a uniform sample of the data over its two leading principal
    axes, each point in the colour of its component, with each component's mean and 1-
    and 2-sigma covariance ellipses, or the k-means centres). The data are those the fit
    read (recorded in RUN) or --data. A fit of in-memory data records none: without
    --data, the log-likelihood picture is written and the command fails (status 1),
    naming --data.
    """
    from daskem.checkpoint.checkpoint import Checkpoint, ForeignStoreError
    from daskem.em.init import sample_rows
    from daskem.estimators import load
    from daskem.estimators._base import default_run
    from daskem.plot import picture_paths, plot_components, plot_history

    if show and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        click.echo("No display available (DISPLAY is not set): writing the files only.", err=True)
        show = False
    loglik_path, components_path = picture_paths(run, prefix, fmt)
    try:
        est = load(run)
        checkpoint, meta = Checkpoint(run), None
        try:
            meta = checkpoint.metadata()
        except ForeignStoreError:
            meta = None
        if meta is not None:
            histories = [
                s.history["log_likelihood"] for s in (checkpoint.run(r).latest() for r in checkpoint.runs()) if s
            ]
            best = default_run(checkpoint)[0]
            stored = meta.get("source") or {}
        else:  # a model file: its fit record has the source (None for an in-memory fit)
            histories, best, stored = [np.asarray(est.lower_bounds_)], 0, getattr(est, "_fit_source", None) or {}
        location = data or stored.get("location")
        options = {} if data else stored.get("options") or {}
        click.echo(f"wrote {plot_history(histories, best, loglik_path, show=show)}")
        if location is None:
            raise click.ClickException(
                f"{run} records no data location (the fit read in-memory data), so {components_path} was not "
                "written: pass --data DATA (the data the model was fitted to) to draw the components."
            )
        rows = sample_rows(as_source(location, **options), sample, np.random.default_rng(0))
        click.echo(f"wrote {plot_components(est, rows, components_path, show=show)}")
    except DaskemError as err:
        raise click.ClickException(str(err)) from None


@main.command("inspect")
@click.argument("run", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, for scripts.")
def inspect(run: str, as_json: bool) -> None:
    """Summarise the checkpoint RUN: model, data, progress and the log-likelihood history."""
    from daskem.checkpoint.checkpoint import Checkpoint

    try:
        summary = checkpoint_summary(Checkpoint(run))
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2, allow_nan=False, default=str))
        return
    out = Console()
    specs = summary["model"]
    if isinstance(specs, list):  # one model per run: the candidates of daskem select
        model = "; ".join(f"run {r}: " + ", ".join(f"{k}={v}" for k, v in s.items()) for r, s in enumerate(specs))
    else:
        model = ", ".join(f"{k}={v}" for k, v in specs.items())
    data = summary["data"]
    out.print(f"[bold]checkpoint[/bold] {run}", highlight=False)
    out.print(f"model      {model}", highlight=False)
    out.print(
        f"data       {data['shape'][0]:,} x {data['shape'][1]} {data['dtype']} from {summary['location'] or 'memory'}",
        highlight=False,
    )
    for entry in summary["runs"]:
        state = "converged" if entry["converged"] else ("finished" if entry["finished"] else "in progress")
        out.print(
            f"run {entry['run']}      {entry['iterations']} iterations, {state}, "
            f"last log-likelihood {entry['log_likelihood']}, kept iterations {entry['kept']}",
            highlight=False,
        )
    table = Table(title=f"history of run {summary['shown_run']}")
    for column in ("iteration", "log-likelihood", "change", "seconds"):
        table.add_column(column, justify="right")
    for row in summary["history"]:
        change = "-" if row["change"] is None else f"{row['change']:.3e}"
        table.add_row(str(row["iteration"]), f"{row['log_likelihood']:.6f}", change, f"{row['seconds']:.2f}")
    out.print(table)


def checkpoint_summary(checkpoint: Any) -> dict[str, Any]:
    """What ``daskem inspect`` shows, as JSON-able data."""
    meta = checkpoint.metadata()
    runs = []
    shown: tuple[int, Any] | None = None
    for index in checkpoint.runs():
        state = checkpoint.run(index).latest()
        if state is None:
            continue
        shown = (index, state)
        runs.append(
            {
                "run": index,
                "iterations": state.iteration,
                "converged": state.converged,
                "finished": state.finished,
                "log_likelihood": float(state.history["log_likelihood"][-1]) if state.iteration else None,
                "kept": checkpoint.run(index).iterations(),
            }
        )
    history = []
    if shown is not None:
        h = shown[1].history
        for i in range(shown[1].iteration):
            change = float(h["change"][i])
            history.append(
                {
                    "iteration": i + 1,
                    "log_likelihood": float(h["log_likelihood"][i]),
                    "change": change if np.isfinite(change) else None,
                    "seconds": float(h["seconds"][i]),
                }
            )
    return {
        "location": meta["source"]["location"],
        "model": meta["model"],
        "data": meta["data"],
        "config": meta["config"],
        "estimator": meta.get("estimator"),
        "runs": runs,
        "shown_run": shown[0] if shown else None,
        "history": history,
    }


def _print_summary(est: Any, data: str, output: str | None, elapsed: float, display: _IterationDisplay | None) -> None:
    out = Console()
    table = Table(title=f"GaussianMixture ({est.covariance_type}) on {data}", show_lines=False)
    table.add_column("component", justify="right")
    table.add_column("weight", justify="right")
    table.add_column("mean (first features)")
    for j, (w, m) in enumerate(zip(est.weights_, est.means_, strict=True)):
        head = ", ".join(f"{v:.3f}" for v in m[:4]) + (", ..." if m.shape[0] > 4 else "")
        table.add_row(str(j), f"{w:.4f}", head)
    out.print(table)
    if display is not None and display.records == 0 and est.checkpoint is not None:
        ended = "converged" if est.converged_ else "reached max_iter"
        out.print(
            f"Nothing left to do: the fit checkpointed in {est.checkpoint} already {ended} after {est.n_iter_} "
            f"iterations (mean log-likelihood {est.lower_bound_:.6f}). To refine it, run again with a smaller --tol "
            "or a larger --max-iter; --force-restart starts afresh.",
            highlight=False,
        )
    else:
        status = "converged" if est.converged_ else "NOT converged (raise --max-iter or --tol)"
        out.print(
            f"{status} after {est.n_iter_} iterations in {elapsed:.1f}s; mean log-likelihood {est.lower_bound_:.6f}",
            highlight=False,
        )
    if output:
        out.print(f"model written to {output} (load with daskem.load({output!r}))", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
