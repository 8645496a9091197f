"""``daskem fit`` and ``daskem resume``: any registered model, on a cluster, with checkpoints.

The model, its options and its summary come from the registry (:mod:`daskem.registry`);
this module runs the fit (:func:`run_fit`): the cluster, the progress display, and one
message for every way a fit can stop early (an error, Ctrl-C, a lost scheduler), with
the command that continues it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from daskem.cli.cluster import ClusterChoice, cluster_options, command_cluster, lost_scheduler
from daskem.cli.display import IterationDisplay, print_summary
from daskem.cli.options import (
    CACHE_CHOICES,
    ENGINE_PARAMS,
    SCHEDULE_PARAMS,
    ModelCommand,
    engine_arguments,
    fit_params,
    model_arguments,
    model_option_names,
    schedule_arguments,
    source_kwargs,
    source_options,
)

if TYPE_CHECKING:
    from daskem.registry import ModelEntry


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
    # The incremental and online schedules also commit between the M-steps of an iteration.
    steps = [s.step for s in states if s is not None and s.step]
    step = f" (and M-step {max(steps)} of the schedule)" if steps else ""
    if max(committed) == 0:
        return f"the initial parameters are committed (iteration 0){step}"
    return f"the last committed iteration is {max(committed)}{step}"


def _continue_hint(checkpoint: str | None, choice: ClusterChoice, when: str = "") -> str:
    """Where the fit stands and the command that continues it (``when``: a condition to meet first)."""
    if checkpoint is None:
        return "No checkpoint was written: rerun with --checkpoint RUN.zarr to make the fit resumable."
    lead = f"{when}, continue with" if when else "Continue with"
    return (
        f"The checkpoint {checkpoint} is intact; {_committed(checkpoint)}. {lead}:\n"
        f"  daskem resume {checkpoint} {choice.describe()}"
    )


def check_output(output: str, overwrite: bool, data: str, checkpoint: str | None) -> None:
    """Refuse an --output that would replace the input data, the checkpoint or anything not a model file."""
    from daskem.checkpoint.store import check_model_destination
    from daskem.errors import DaskemError

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


def run_fit(
    est: Any,
    entry: ModelEntry,
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
    """Fit ``est`` to ``data`` (read with the :func:`daskem.as_source` keywords ``source``)
    where ``cluster`` says, then save it to ``output`` and print its summary."""
    import warnings

    import dask
    from sklearn.exceptions import ConvergenceWarning

    from daskem.em.progress import reporting_progress
    from daskem.errors import DaskemError
    from daskem.io.sources import as_source
    from daskem.worker_memory import check_worker_memory, largest_block_bytes, watch_worker_memory

    console = Console(stderr=True)
    choice = ClusterChoice(**cluster)
    start = time.perf_counter()
    client = None
    lost: BaseException | None = None
    display: IterationDisplay | None = None
    try:
        if output:
            check_output(output, overwrite, data, est.checkpoint)
        with (
            command_cluster(choice, console, debug) as client,
            IterationDisplay(console, est, "none" if quiet else progress) as display,
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
                if not lost_scheduler(err, client):
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
        if lost is None and not lost_scheduler(err, None):
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
    print_summary(est, entry, data, output, elapsed, display)


@click.command("fit", cls=ModelCommand, model_params=fit_params)
@click.argument("data")
@source_options
@cluster_options
def fit(data: str, model: str, **values: Any) -> None:
    """Fit a model to DATA (a path, URL or glob) by EM on a Dask cluster.

    --model chooses the model (default: a Gaussian mixture); each model takes its own
    options besides those of the engine, the data and the cluster (the help of each option
    names the models it applies to and their defaults). Sequence models read where the
    sequences begin from --lengths FILE or, for Parquet/CSV data, --sequence-ids COLUMN.

    DATA is read by its suffix: .parquet/.pq (or a directory of Parquet files), .csv,
    .h5/.hdf5 (with --dataset), .nc (with --variable); anything else is a Zarr array (or,
    with --variable, an array inside a Zarr group). Without --scheduler, a LocalCluster of
    worker processes listening on 127.0.0.1 is started for the fit. Data that fit
    comfortably in the cluster's memory are cached once, larger data are streamed from
    the store on every iteration (--cache to choose). With --checkpoint, the fit survives
    being killed: run the same command (or `daskem resume RUN.zarr`) and it continues
    from the last committed iteration.

    --schedule incremental|online|stochastic (models with a schedule) reads some blocks
    per M-step instead of all of them: --step-blocks, --learning-decay, --learning-offset,
    --average and --no-shuffle are its settings. Checkpoints of the incremental and online
    schedules are also committed inside an iteration (every --checkpoint-every steps), so
    a killed fit resumes mid-epoch.
    """
    from daskem import registry
    from daskem.errors import DaskemError

    entry = registry.get(model)
    given = {name: values.pop(name) for name in model_option_names()}
    engine = {name: values.pop(name) for name in ENGINE_PARAMS}
    schedule = schedule_arguments(entry, {name: values.pop(name) for name in SCHEDULE_PARAMS})
    source = source_kwargs(*(values.pop(name) for name in ("variable", "columns", "dataset", "chunk_rows")))
    try:
        params, reading = model_arguments(entry, given)
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    est = entry.estimator(
        **params, **engine_arguments(entry, engine), **schedule, cache=CACHE_CHOICES[values.pop("cache")]
    )
    run_fit(est, entry, data, {**source, **reading}, **values)


@click.command("resume")
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

    The model, its hyperparameters and the data location (with the reading options and
    the sequence lengths of sequence models) come from the checkpoint; where the fit runs
    (--scheduler, --workers, ...) is chosen here. The fit continues from the newest
    committed iteration (for the incremental and online schedules, the committed step
    inside a sweep or epoch: the schedule and its state are in the checkpoint) and ends
    exactly as an uninterrupted fit would have. With a
    smaller --tol or a larger --max-iter than the checkpoint's, a finished fit continues
    under the new stopping rule (recorded in the checkpoint).
    """
    from daskem import registry
    from daskem.checkpoint.checkpoint import Checkpoint
    from daskem.errors import DaskemError
    from daskem.estimators._base import estimator_class

    try:
        meta = Checkpoint(run).metadata()
        if "select" in meta:
            raise DaskemError(
                f"{run!r} is a checkpoint of `daskem select`: run that `daskem select ... --checkpoint {run}` "
                "command again to continue the selection."
            )
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
        cls = estimator_class(estimator["kind"], repr(run))
        entry = registry.entry_for(cls)
        params = dict(estimator["params"])
        params.update(engine_arguments(entry, {"max_iter": max_iter, "tol": tol}))
        est = cls(**params, checkpoint=run)
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    run_fit(est, entry, location, stored_source, **cluster)
