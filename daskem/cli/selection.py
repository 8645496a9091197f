"""``daskem select``: the best of a grid of candidates of a model by BIC and AIC, in shared passes.

The models it chooses among, the options that span or set their grids and the criterion
come from the registry (:class:`daskem.registry.Selectable`); the selection itself is the
function of :mod:`daskem.select` the entry names. No model is named here.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from daskem.cli.cluster import ClusterChoice, cluster_options, command_cluster
from daskem.cli.display import SelectionDisplay
from daskem.cli.fitting import check_output
from daskem.cli.options import (
    CACHE_CHOICES,
    DEFAULT_MODEL,
    ModelCommand,
    click_type,
    shared_options,
    source_kwargs,
    source_options,
    stopping_options,
)

if TYPE_CHECKING:
    from daskem.registry import ModelEntry, Option, Selectable


class _IntRangeList(click.ParamType):
    """``2-16``, ``2..16``, ``2,4,8`` or ``3``: a list of ints >= 1."""

    name = "ks"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int]:
        if isinstance(value, list):
            return value
        text = str(value).strip()
        try:
            bounds = next((text.split(sep, 1) for sep in ("..", "-") if sep in text), None)
            if bounds is not None:
                low, high = (int(v) for v in bounds)
                values = list(range(low, high + 1))
            else:
                values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a range like 2-16 (or 2..16) or a list like 2,4,8", param, ctx)
        if not values or min(values) < 1:
            self.fail(f"{value!r} must name numbers of components >= 1, e.g. 2-16", param, ctx)
        return values


def _selectable(entries: tuple[ModelEntry, ...]) -> list[tuple[ModelEntry, Selectable]]:
    """The models ``daskem select`` can choose among, with how it selects each."""
    return [(entry, entry.select) for entry in entries if entry.select is not None]


def _select_params() -> list[click.Parameter]:
    """``--model``, the selectable models' grid options and the EM limits (from the registry, on use)."""
    from daskem import registry

    entries = registry.entries()
    selectable = _selectable(entries)
    described = "; ".join(f"{entry.name}: {how.criterion}" for entry, how in selectable)
    params: list[click.Parameter] = [
        click.Option(
            ["--model"],
            type=click.Choice([entry.name for entry in entries]),
            default=DEFAULT_MODEL,
            show_default=True,
            help=f"Model to select; the selectable ones, with what their BIC and AIC score: {described}.",
        )
    ]
    grids = tuple(replace(entry, options=how.options(entry)) for entry, how in selectable)
    axes = {name for _, how in selectable for name in how.axes}
    for flags, declared in shared_options(grids).items():
        first = declared[0][1]
        choices = tuple(dict.fromkeys(c for _, option in declared for c in option.choices or ()))
        axis = first.name in axes
        defaults = ", ".join(f"{entry.name}={entry.default(option)!r}" for entry, option in declared)
        params.append(
            click.Option(
                [first.name, *flags],
                type=click.STRING if axis else click_type(first, choices),
                default=None,
                metavar=first.metavar,
                help=f"{first.help}"
                + (f" Comma-separated, each a candidate, among {', '.join(choices)}." if axis else "")
                + f" [default: {defaults}]",
            )
        )
    models = tuple(entry for entry, _ in selectable)
    return [*params, *stopping_options(models, 1, "the model's own rule")]


def _grid_options() -> set[str]:
    """The names of the options the selectable models take (the keywords ``select`` receives for them)."""
    from daskem import registry

    return {option.name for entry, how in _selectable(registry.entries()) for option in how.options(entry)}


def _grid_keywords(entry: ModelEntry, given: Mapping[str, Any]) -> tuple[Selectable, dict[str, Any]]:
    """How ``entry`` is selected, and its selection's keywords from the grid options given
    (the model's defaults for the others).

    Raises
    ------
    click.UsageError
        The model cannot be selected, an option of another model was given, or a value
        the model does not accept.
    """
    from daskem import registry

    how = entry.select
    if how is None:
        names = ", ".join(e.name for e, _ in _selectable(registry.entries()))
        raise click.UsageError(f"--model {entry.name} cannot be selected by BIC/AIC: choose among {names}.")
    own: dict[str, Option] = {option.name: option for option in how.options(entry)}
    keywords: dict[str, Any] = {}
    for name, value in given.items():
        if value is not None and name not in own:
            raise click.UsageError(
                f"--{name.replace('_', '-')} does not apply to --model {entry.name}; its grid options: "
                f"{', '.join(o.flags[0] for o in own.values()) or 'none besides -k'}."
            )
    for name, option in own.items():
        value = given.get(name)
        if name in how.axes:
            values = [v.strip() for v in value.split(",") if v.strip()] if value else [entry.default(option)]
            for v in values:
                if option.choices and v not in option.choices:
                    raise click.UsageError(
                        f"{option.flags[0]} {v!r} is not accepted by --model {entry.name}: choose among "
                        f"{', '.join(option.choices)}."
                    )
            keywords[how.axes[name]] = values
        elif value is None:
            keywords[option.param] = entry.default(option)
        else:
            try:  # a setting read from text (--prior's JSON)
                keywords[option.param] = option.convert(value) if option.convert is not None else value
            except ValueError as err:
                raise click.UsageError(str(err)) from None
    return how, keywords


@click.command("select", cls=ModelCommand, model_params=_select_params)
@click.argument("data")
@click.option(
    "--n-components",
    "-k",
    type=_IntRangeList(),
    default="1-8",
    show_default=True,
    help="Numbers of components (k-means: clusters) to try: a range 2-16 (or 2..16) or a list 2,4,8.",
)
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
    model: str,
    n_components: list[int],
    max_iter: int | None,
    tol: float | None,
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
    **values: Any,
) -> None:
    """Choose a model for DATA by BIC and AIC over a grid of candidates.

    The candidates are fits of --model (the models --help lists, with their criteria)
    with every number of components of -k and every value of the model's comma-separated
    grid options (mixtures: --covariance-type). They are fitted in the same passes over the
    data: one sample for the k-means starts, the EM iterations of all candidates together,
    and one pass for the final log-likelihoods. Prints each candidate's log-likelihood,
    BIC and AIC and marks the best; --output saves the best by BIC as a model file.
    Progress (--progress) is shown per phase and per EM pass: candidates still iterating,
    the best by BIC so far, iteration and seconds. With --checkpoint, the selection
    survives being killed: run the same command again and it continues from the last
    committed pass, ending as an uninterrupted run would.
    """
    import dask

    from daskem import registry
    from daskem.errors import DaskemError
    from daskem.estimators import restore
    from daskem.io.sources import as_source
    from daskem.plot import plot_selection
    from daskem.select import SELECTIONS
    from daskem.worker_memory import check_worker_memory, largest_block_bytes, watch_worker_memory

    entry = registry.get(model)
    how, grid = _grid_keywords(entry, {name: values.pop(name) for name in _grid_options()})
    if max_iter is None:
        max_iter = int(entry.estimator_default(entry.param("max_iter")))
    if tol is None:
        tol = float(entry.estimator_default(entry.param("tol")))
    n_candidates = len(n_components) * math.prod(len(grid[keyword]) for keyword in how.axes.values())
    console = Console(stderr=True)
    try:
        if output:
            check_output(output, overwrite, data, checkpoint)
        with (
            command_cluster(ClusterChoice(**values), console, debug) as client,
            SelectionDisplay(console, "none" if quiet else progress, max_iter, checkpoint) as display,
            dask.annotate(retries=retries) if retries else contextlib.nullcontext(),
            watch_worker_memory(client),
        ):
            source = as_source(data, **source_kwargs(variable, columns, dataset, chunk_rows))
            check_worker_memory(client, largest_block_bytes(source))
            display.start(n_candidates, source.n_samples)
            selection = SELECTIONS[how.selection](
                source,
                n_components,
                **grid,
                max_iter=max_iter,
                tol=tol,
                random_state=seed,
                n_init=n_init,
                cache=CACHE_CHOICES[cache],
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
            **({"covariance_type": c.covariance_type} if c.covariance_type is not None else {}),
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
        table = Table(
            title=f"Model selection ({entry.name}) on {data} ({selection.n_samples:,} rows, "
            f"{selection.n_passes} passes)"
        )
        covariances = any(c.covariance_type is not None for c in selection.candidates)
        for name in ("k", *(["covariance"] if covariances else []), "log L", "params", "BIC", "AIC", "iter", "best"):
            table.add_column(name, justify="right", no_wrap=True)
        for c in selection.candidates:
            marks = " ".join(name for name, b in (("BIC", best_bic), ("AIC", best_aic)) if c is b)
            table.add_row(
                str(c.n_components),
                *([str(c.covariance_type)] if covariances else []),
                f"{c.log_likelihood:.1f}",
                str(c.n_parameters),
                f"{c.bic:.1f}",
                f"{c.aic:.1f}",
                f"{c.n_iter}{'' if c.converged else '+'}",
                marks,
            )
        out.print(table)
        out.print(f"best by BIC: {best_bic.label}; best by AIC: {best_aic.label}", highlight=False)
    if plot_path:
        click.echo(f"wrote {plot_path}", err=True)
    if output:
        est = restore(
            entry.estimator,
            {**best_bic.hyperparameters, "random_state": seed},
            best_bic.params.to_arrays(),
            converged=best_bic.converged,
            lower_bounds=list(best_bic.history),
            n_features=source.n_features,
            n_passes=selection.n_passes,
            n_samples=selection.n_samples,
            # The data's location in the model file, so `daskem plot BEST.zarr` can draw it.
            source={"location": source.location, "options": source.options},
        )
        est.save(output, overwrite=overwrite)
        click.echo(f"best model (BIC) written to {output}", err=True)
