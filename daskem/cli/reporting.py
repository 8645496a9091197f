"""``daskem inspect`` and ``daskem plot``: a checkpoint or model file of any registered model.

What is shown of a fitted model, and which figures are drawn, is the model's registry
entry (:mod:`daskem.registry`): its summary and its figures (:data:`daskem.plot.FIGURES`),
besides the log-likelihood history every model has.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from daskem.cli.display import print_model

if TYPE_CHECKING:
    import numpy as np

    from daskem.io.sources import DataSource
    from daskem.plot import Rows


@click.command("inspect")
@click.argument("run", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, for scripts.")
def inspect(run: str, as_json: bool) -> None:
    """Summarise RUN (checkpoint or model file): its model, data, log-likelihood history and parameters.

    The parameters shown are those daskem.load(RUN) reads (for a checkpoint: the run a
    fit reports, its newest iteration), summarised as the model's registry entry says
    (--json: in full).
    """
    from daskem.checkpoint.checkpoint import Checkpoint, ForeignStoreError
    from daskem.errors import DaskemError

    try:
        try:
            summary = checkpoint_summary(Checkpoint(run))
        except ForeignStoreError:
            summary = model_file_summary(run)  # a model file (anything else is refused there)
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2, allow_nan=False, default=str))
        return
    out = Console()
    if summary["kind"] == "model":
        _print_model_file(out, run, summary)
        return
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
    if summary["schedule"] is not None:
        out.print(f"schedule   {schedule_text(summary['schedule'])}", highlight=False)
    for entry in summary["runs"]:
        state = "converged" if entry["converged"] else ("finished" if entry["finished"] else "in progress")
        out.print(
            f"run {entry['run']}      {entry['iterations']} iterations, {state}, "
            f"last log-likelihood {entry['log_likelihood']}, kept iterations {entry['kept']}"
            + position_text(entry.get("position")),
            highlight=False,
        )
    table = Table(title=f"history of run {summary['shown_run']}")
    for column in ("iteration", "log-likelihood", "change", "seconds"):
        table.add_column(column, justify="right")
    for row in summary["history"]:
        change = "-" if row["change"] is None else f"{row['change']:.3e}"
        table.add_row(str(row["iteration"]), f"{row['log_likelihood']:.6f}", change, f"{row['seconds']:.2f}")
    out.print(table)
    fitted = summary["fitted"]
    if fitted is not None:
        where = f"{fitted['title']}, run {fitted['run']}, iteration {fitted['iteration']}"
        print_model(out, where, fitted["columns"], fitted["rows"], fitted["notes"])


#: What an iteration of a schedule is called, and what reads its blocks in order.
_UNITS = {"online": "epoch", "incremental": "sweep"}


def schedule_text(schedule: dict[str, Any]) -> str:
    """A schedule's configuration (a checkpoint's ``config.schedule``) on one line: its name and settings."""
    settings = ", ".join(f"{k}={v}" for k, v in schedule.items() if k != "name")
    return f"{schedule['name']} ({settings})" if settings else str(schedule["name"])


def position_text(position: dict[str, Any] | None) -> str:
    """Where a run committed inside a sweep or epoch, in words ('' when it committed between iterations)."""
    if position is None:
        return ""
    of = f"/{position['blocks']}" if position["blocks"] else ""
    return (
        f"; committed inside {position['unit']} {position['iteration']} after block {position['block']}{of} "
        f"(M-step {position['step']})"
    )


def _blocks(data: dict[str, Any]) -> int | None:
    """The data's row blocks (a checkpoint's ``data.row_chunks``: ``[size, count]`` pairs)."""
    chunks = data.get("row_chunks")
    return sum(int(count) for _, count in chunks) if chunks else None


def _position(state: Any, schedule: dict[str, Any] | None, blocks: int | None) -> dict[str, Any] | None:
    """Where a commit of the incremental or online schedule stands inside its sweep or epoch.

    The schedule's state array (``schedule_state``, :mod:`daskem.em.schedules`) starts
    with the M-steps made and the blocks read in the current iteration; None for a commit
    between iterations (no blocks read yet) and for the other schedules.
    """
    if schedule is None or schedule.get("name") not in _UNITS or state.step is None:
        return None
    values = state.params.get("schedule_state")
    block = int(values[1]) if values is not None and len(values) > 1 else 0
    if block <= 0 or (blocks is not None and block >= blocks):
        return None
    return {
        "unit": _UNITS[schedule["name"]],
        "iteration": state.iteration + 1,
        "block": block,
        "blocks": blocks,
        "step": int(state.step),
    }


def checkpoint_summary(checkpoint: Any) -> dict[str, Any]:
    """What ``daskem inspect`` shows, as JSON-able data.

    ``schedule`` is the fit's schedule (:mod:`daskem.em.schedules`: its name and settings)
    or None for batch EM; under a schedule, each run has its commit's M-``step`` and its
    ``position``: where a run of the incremental or online schedule committed inside a
    sweep or epoch (``unit``, the ``iteration`` in progress, the blocks read in it,
    ``block`` of ``blocks``, and the M-``step``), None when it committed between
    iterations. ``fitted`` summarises the parameters of the
    run a fit reports (:func:`daskem.load`'s default) with the model's registry summary:
    its name, run, iteration, title and values; None for a checkpoint without an
    estimator (``daskem select``, ``daskem.fit_em``) or without a committed iteration.
    """
    import numpy as np

    meta = checkpoint.metadata()
    schedule = (meta.get("config") or {}).get("schedule")
    blocks = _blocks(meta.get("data") or {})
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
        if schedule is not None:
            runs[-1].update(step=state.step, position=_position(state, schedule, blocks))
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
        "kind": "checkpoint",
        "location": meta["source"]["location"],
        "model": meta["model"],
        "data": meta["data"],
        "config": meta["config"],
        "schedule": schedule,
        "estimator": meta.get("estimator"),
        "runs": runs,
        "shown_run": shown[0] if shown else None,
        "history": history,
        "fitted": _fitted(checkpoint) if runs and isinstance(meta.get("estimator"), dict) else None,
    }


def model_file_summary(path: str) -> dict[str, Any]:
    """What ``daskem inspect`` shows of a model file (``daskem fit --output``, ``save``), as JSON-able data.

    The estimator's hyperparameters, the fit record (data location, rows, features,
    passes, convergence), the schedule (its name and the settings it reads, None for
    batch EM and for an estimator without one), the mean log-likelihood of every
    iteration, and ``fitted``: the model's registry summary (as for a checkpoint, without
    run and iteration).
    """
    from daskem.estimators._base import load

    est = load(path)
    source = est._fit_source
    history = [
        {
            "iteration": i + 1,
            "log_likelihood": float(v),
            "change": None if i == 0 else float(v - est.lower_bounds_[i - 1]),
        }
        for i, v in enumerate(est.lower_bounds_)
    ]
    return {
        "kind": "model",
        "location": None if source is None else source["location"],
        "options": None if source is None else source["options"],
        "estimator": {"kind": type(est).__name__, "params": est._stored_params()},
        "fit": {
            "converged": bool(est.converged_),
            "n_iter": int(est.n_iter_),
            "n_passes": int(est.n_passes_),
            "n_samples": int(est._n_samples_fit),
            "n_features": int(est.n_features_in_),
            "lower_bound": float(est.lower_bound_),
        },
        "schedule": _estimator_schedule(est.get_params()),
        "history": history,
        "fitted": _registry_summary(est, None, None),
    }


def _estimator_schedule(params: dict[str, Any]) -> dict[str, Any] | None:
    """The schedule of an estimator's hyperparameters, as a checkpoint records it (without its seed)."""
    from daskem.em.schedules import Schedule

    name = params.get("schedule", "batch")
    if name == "batch" or not isinstance(name, str):
        return None
    fields = ("step_blocks", "learning_decay", "learning_offset", "average", "shuffle")
    schedule = Schedule(name, **{f: params[f] for f in fields if f in params})
    config = dict(schedule.config()["schedule"])
    config.pop("seed", None)
    return config


def _print_model_file(out: Console, path: str, summary: dict[str, Any]) -> None:
    fit = summary["fit"]
    params = ", ".join(f"{k}={v}" for k, v in summary["estimator"]["params"].items() if v is not None)
    state = "converged" if fit["converged"] else "not converged"
    out.print(f"[bold]model file[/bold] {path}", highlight=False)
    out.print(f"model      {summary['estimator']['kind']}({params})", highlight=False)
    out.print(
        f"data       {fit['n_samples']:,} x {fit['n_features']} from {summary['location'] or 'memory'}", highlight=False
    )
    out.print(
        f"fit        {fit['n_iter']} iterations, {state}, {fit['n_passes']} passes over the data, "
        f"{summary['fitted']['objective']} {fit['lower_bound']}",
        highlight=False,
    )
    if summary["schedule"] is not None:
        out.print(f"schedule   {schedule_text(summary['schedule'])}", highlight=False)
    fitted = summary["fitted"]
    print_model(out, fitted["title"], fitted["columns"], fitted["rows"], fitted["notes"])


def _fitted(checkpoint: Any) -> dict[str, Any]:
    """The registry summary of the parameters :func:`daskem.load` reads from ``checkpoint``."""
    from daskem.estimators._base import default_run, load

    run, state = default_run(checkpoint)
    return _registry_summary(load(checkpoint.location, run=run), run, state.iteration)


def _registry_summary(est: Any, run: int | None, iteration: int | None) -> dict[str, Any]:
    """``est`` summarised by its registry entry (``run`` and ``iteration`` of a checkpoint, else None)."""
    from daskem import registry

    entry = registry.entry_for(type(est))
    summary = entry.summary(est)
    return {
        "name": entry.name,
        "objective": entry.objective,
        "run": run,
        "iteration": iteration,
        "title": summary.title,
        "columns": list(summary.columns),
        "rows": [list(row) for row in summary.rows],
        "notes": list(summary.notes),
        "values": summary.values,
    }


@click.command("plot")
@click.argument("run", type=click.Path(exists=True))
@click.option(
    "--data",
    default=None,
    help="Data to draw the figures from (default: the data the fit read, as recorded in RUN).",
)
@click.option(
    "--out",
    "-o",
    "prefix",
    default=None,
    help="Write PREFIX-NAME.FMT for every figure NAME (loglik, then the model's own, e.g. components) (no '-' "
    "added after a PREFIX ending in '-' or '_'); a directory (existing, or ending in '/'): DIR/NAME.FMT. "
    "Default: RUN without .zarr as PREFIX.",
)
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True, help="Format.")
@click.option(
    "--sample",
    type=click.IntRange(min=10),
    default=5_000,
    show_default=True,
    help="Data rows drawn (a uniform sample; sequence models: the first rows, at most 1,000).",
)
@click.option("--show", is_flag=True, help="Also open the figures in a window, where a display is available.")
def plot(run: str, data: str | None, prefix: str | None, fmt: str, sample: int, show: bool) -> None:
    """Draw the fit in RUN (a checkpoint or a model file) as PNG or SVG files.

    Writes PREFIX-loglik.FMT (the mean log-likelihood per iteration, every run of n_init)
    and the figures of the model: mixtures and k-means PREFIX-components.FMT (a uniform
    sample of the data over its two leading principal axes, each point in the colour of
    its component, with each component's mean and 1- and 2-sigma covariance ellipses, or
    the k-means centres); PPCA and factor analysis PREFIX-loadings.FMT and
    PREFIX-latent.FMT (the sample's latent factors); hidden Markov models
    PREFIX-transitions.FMT and PREFIX-states.FMT (the decoded states of the first rows).
    The data are those the fit read (recorded in RUN, with its sequence lengths) or
    --data. A fit of in-memory data records none: without --data, the figures that need
    no data are written and the command fails (status 1), naming --data.
    """
    from daskem import registry
    from daskem.errors import DaskemError
    from daskem.estimators._base import load
    from daskem.io.sources import as_source
    from daskem.plot import FIGURES, picture_paths, plot_history

    if show and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        click.echo("No display available (DISPLAY is not set): writing the files only.", err=True)
        show = False
    try:
        est = load(run)
        entry = registry.entry_for(type(est))
        histories, best, stored = _histories(run, est)
        names = ["loglik", *entry.figures]
        paths = dict(zip(names, picture_paths(run, prefix, fmt, names), strict=True))
        click.echo(f"wrote {plot_history(histories, best, paths['loglik'], objective=entry.objective, show=show)}")
        unknown = [name for name in entry.figures if name not in FIGURES]
        if unknown:
            raise click.ClickException(
                f"The model {entry.name!r} names figures {unknown} that daskem.plot.FIGURES does not define: "
                f"declare figures among {sorted(FIGURES)}."
            )
        figures = {name: FIGURES[name] for name in entry.figures}
        for name, figure in figures.items():
            if figure.data is None:
                click.echo(f"wrote {figure.draw(est, None, paths[name], show)}")
        wanted = [name for name, figure in figures.items() if figure.data is not None]
        location = data or stored.get("location")
        if wanted and location is None:
            missing = ", ".join(paths[name] for name in wanted)
            raise click.ClickException(
                f"{run} records no data location (the fit read in-memory data), so {missing} "
                f"{'was' if len(wanted) == 1 else 'were'} not written: pass --data DATA (the data the model was "
                "fitted to) to draw the figures of the data."
            )
        if wanted:
            source = as_source(location, **({} if data else stored.get("options") or {}))
            for name in wanted:
                rows = _rows(source, figures[name].data, sample, est.get_params().get("missing") == "marginalize")
                click.echo(f"wrote {figures[name].draw(est, rows, paths[name], show)}")
    except DaskemError as err:
        raise click.ClickException(str(err)) from None


def _histories(run: str, est: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """The log-likelihood history of every run, the kept run, and the record of the data fitted."""
    import numpy as np

    from daskem.checkpoint.checkpoint import Checkpoint, ForeignStoreError
    from daskem.estimators._base import default_run

    checkpoint = Checkpoint(run)
    try:
        meta = checkpoint.metadata()
    except ForeignStoreError:  # a model file: its fit record has the source (None for an in-memory fit)
        return [np.asarray(est.lower_bounds_)], 0, getattr(est, "_fit_source", None) or {}
    states = (checkpoint.run(r).latest() for r in checkpoint.runs())
    histories = [s.history["log_likelihood"] for s in states if s is not None]
    return histories, default_run(checkpoint)[0], meta.get("source") or {}


#: Rows of a sequence model drawn in order (more would not be readable).
HEAD_ROWS = 1_000


def _rows(source: DataSource, kind: str | None, sample: int, missing: bool = False) -> Rows:
    """The rows a figure draws: a uniform ``sample``, or the first rows with their sequence lengths.

    For a model fitted with missing values (``missing``) the sample's rows with a missing
    (NaN) entry are left out: the figures project whole rows.
    """
    import numpy as np

    from daskem.em.init import sample_rows
    from daskem.plot import Rows

    if kind == "sample":
        values = sample_rows(source, sample, np.random.default_rng(0), allow_missing=missing)
        return Rows(values[~np.isnan(values).any(axis=1)] if missing else values)
    count = min(sample, HEAD_ROWS, source.n_samples)
    values = np.asarray(source.array[:count].compute())
    if source.lengths is None:
        return Rows(values)
    ends = np.minimum(np.cumsum(source.lengths), count)
    lengths = np.diff(ends, prepend=0)
    return Rows(values, lengths[lengths > 0])
