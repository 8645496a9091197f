"""``daskem select``: the best Gaussian mixture for DATA by BIC and AIC, in shared passes."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from daskem.cli.cluster import ClusterChoice, cluster_client, cluster_options, quiet_cluster_logs
from daskem.cli.display import SelectionDisplay
from daskem.cli.fitting import check_output
from daskem.cli.options import CACHE_CHOICES, ModelCommand, source_kwargs, source_options


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


def _select_params() -> list[click.Parameter]:
    """``--covariance-type``, whose help names the covariance table's types (imported on use)."""
    from daskem.models.gaussian import COVARIANCE_TYPES

    return [
        click.Option(
            ["--covariance-type"],
            default="full",
            show_default=True,
            help=f"Comma-separated covariance types among {', '.join(sorted(COVARIANCE_TYPES))}.",
        )
    ]


@click.command("select", cls=ModelCommand, model_params=_select_params)
@click.argument("data")
@click.option(
    "--n-components", "-k", type=_IntRangeList(), default="1..8", show_default=True, help="Range 2..16 or list 2,4,8."
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
    import dask

    from daskem.errors import DaskemError
    from daskem.estimators import GaussianMixture, restore
    from daskem.io.sources import as_source
    from daskem.plot import plot_selection
    from daskem.select import select_mixture
    from daskem.worker_memory import check_worker_memory, largest_block_bytes, watch_worker_memory

    console = Console(stderr=True)
    types = [t.strip() for t in covariance_type.split(",") if t.strip()]
    try:
        if output:
            check_output(output, overwrite, data, checkpoint)
        with (
            quiet_cluster_logs(debug),
            cluster_client(ClusterChoice(**cluster), console) as client,
            SelectionDisplay(console, "none" if quiet else progress, max_iter, checkpoint) as display,
            dask.annotate(retries=retries) if retries else contextlib.nullcontext(),
            watch_worker_memory(client),
        ):
            source = as_source(data, **source_kwargs(variable, columns, dataset, chunk_rows))
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
        est = restore(
            GaussianMixture,
            {
                "n_components": best_bic.n_components,
                "covariance_type": best_bic.covariance_type,
                "reg_covar": reg_covar,
                "random_state": seed,
            },
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
