"""``daskem impute``: fill in the missing values of a dataset under a Gaussian mixture, out of core.

The imputer (:class:`daskem.GaussianImputer`) is fitted on DATA, or made from a mixture
saved by ``daskem fit -o``, on the cluster the fit options choose
(:mod:`daskem.cli.cluster`); the imputed rows are then streamed to a new Zarr array
block by block (dask ``to_zarr``), so the data are never held in memory. Nothing that
exists is ever replaced.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import click
from rich.console import Console

from daskem.cli.cluster import ClusterChoice, cluster_options, command_cluster, lost_scheduler
from daskem.cli.display import IterationDisplay
from daskem.cli.fitting import check_output
from daskem.cli.options import CACHE_CHOICES, source_kwargs, source_options

#: ``--covariance-type`` choices (:data:`daskem.models.gaussian.COVARIANCE_TYPES`, named here so that
#: ``daskem impute --help`` imports no numerical code).
COVARIANCE_CHOICES = ("diag", "full", "spherical", "tied")

#: The options that fit the imputer, which a mixture given with --model makes moot.
FIT_OPTIONS = {
    "n_components": "-k/--n-components",
    "covariance_type": "--covariance-type",
    "max_iter": "--max-iter",
    "tol": "--tol",
}


def where_options(func: Any) -> Any:
    """The options of :func:`daskem.cli.cluster.cluster_options` without its --output and
    --overwrite, which are those of a model file (impute writes data, never over anything)."""
    func = cluster_options(func)
    func.__click_params__ = [p for p in func.__click_params__ if p.name not in ("output", "overwrite")]
    return func


def check_destination(output: str, data: str, model: str | None) -> None:
    """Refuse an --output that exists (whatever it holds) or that lies inside DATA or --model.

    Raises
    ------
    DestinationExistsError
        Something is at ``output``; the message names it.
    DaskemError
        ``output`` is DATA, the model or inside one of them.
    """
    from daskem.checkpoint.store import existing_content
    from daskem.errors import DestinationExistsError

    found = existing_content(output)
    if found is not None:
        raise DestinationExistsError(
            f"--output {output!r} already holds {found[1]}. daskem impute never replaces or deletes anything: "
            "choose a new path for --output."
        )
    check_output(output, False, data, model)


@click.command("impute")
@click.argument("data")
@click.option(
    "--output",
    "-o",
    type=click.Path(),
    required=True,
    help="Write the imputed rows to this new Zarr array (chunked like DATA); an existing path is refused.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Impute under the Gaussian mixture saved here by `daskem fit -o` (any --missing), instead of fitting one.",
)
@click.option("--n-components", "-k", type=click.IntRange(min=1), default=None, help="Mixture components [default: 1].")
@click.option(
    "--covariance-type",
    type=click.Choice(COVARIANCE_CHOICES),
    default=None,
    help="Form of the covariances [default: full].",
)
@click.option("--max-iter", type=click.IntRange(min=0), default=None, help="EM iterations at most [default: 100].")
@click.option(
    "--tol",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Convergence threshold on the change of the mean log-likelihood [default: 0.001].",
)
@click.option(
    "--sample-posterior",
    is_flag=True,
    help="Impute draws from the conditional distribution instead of conditional means (multiple imputation: "
    "run again with other --random-state values).",
)
@click.option(
    "--random-state",
    "--seed",
    "random_state",
    type=click.IntRange(min=0, max=2**32 - 1),
    default=0,
    show_default=True,
    help="Seed of the fit and of the draws of --sample-posterior.",
)
@source_options
@where_options
def impute(
    data: str,
    output: str,
    model_path: str | None,
    sample_posterior: bool,
    random_state: int,
    debug: bool,
    quiet: bool,
    progress: str,
    retries: int,
    **values: Any,
) -> None:
    """Impute the missing (NaN) values of DATA under a Gaussian mixture; write the rows to --output.

    The mixture (one component by default: the multivariate-normal EM imputer) is fitted
    to DATA by EM with the missing values marginalised (missing at random), or read from
    --model. Each missing value is replaced by its conditional mean given the row's
    observed values (a draw from the conditional distribution with --sample-posterior);
    observed values are copied unchanged. DATA is read as `daskem fit` reads it; the
    output is a new Zarr array written block by block, never held in memory.
    """
    import warnings

    import dask
    from sklearn.exceptions import ConvergenceWarning

    from daskem.errors import DaskemError

    fitting = {name: values.pop(name) for name in FIT_OPTIONS}
    source = source_kwargs(*(values.pop(name) for name in ("variable", "columns", "dataset", "chunk_rows")))
    cache = CACHE_CHOICES[values.pop("cache")]
    if model_path is not None:
        given = [flag for name, flag in FIT_OPTIONS.items() if fitting[name] is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} set how to fit the mixture; --model gives a fitted one.")
    params = {name: value for name, value in fitting.items() if value is not None}
    params.update(sample_posterior=sample_posterior, random_state=random_state, cache=cache)
    console = Console(stderr=True)
    choice = ClusterChoice(**values)
    start = time.perf_counter()
    client = None
    checked = False  # --output was free: whatever is there after an error is this command's partial result
    try:
        check_destination(output, data, model_path)
        checked = True
        with (
            command_cluster(choice, console, debug) as client,
            warnings.catch_warnings(),
            dask.annotate(retries=retries) if retries else contextlib.nullcontext(),
        ):
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                mode = "none" if quiet or model_path is not None else progress
                summary = _impute(data, source, output, model_path, params, console, mode, client)
            except DaskemError:
                raise
            except Exception as err:
                if client is None or not lost_scheduler(err, client):
                    raise
                raise DaskemError(f"Lost the connection to the Dask scheduler ({type(err).__name__}: {err}).") from err
    except KeyboardInterrupt:
        if debug:
            console.print_exception()
        console.print(f"Interrupted.{_partial(output) if checked else ''}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except DaskemError as err:
        if debug:
            console.print_exception()
        raise click.ClickException(f"{err}{_partial(output) if checked else ''}") from None
    click.echo(f"{summary} in {time.perf_counter() - start:.1f}s")


def _partial(output: str) -> str:
    """What the interrupted command left at ``output`` (a partial array, never removed), in words."""
    from daskem.checkpoint.store import existing_content

    try:
        found = existing_content(output)
    except Exception:  # pragma: no cover - an unreadable destination: say nothing about it
        return ""
    if found is None:
        return ""
    return f" {output} holds a partial result: remove it before running again."


def _impute(
    data: str,
    source_options: dict[str, Any],
    output: str,
    model_path: str | None,
    params: dict[str, Any],
    console: Console,
    mode: str,
    client: Any,
) -> str:
    """Fit (or load) the imputer, stream the imputed rows of ``data`` to ``output``; return the summary."""
    import dask
    import dask.array as da

    from daskem.em.progress import reporting_progress
    from daskem.em.session import single_threaded_blas
    from daskem.estimators import GaussianImputer, load
    from daskem.io.sources import as_source
    from daskem.worker_memory import check_worker_memory, largest_block_bytes, watch_worker_memory

    source = as_source(data, **source_options)
    check_worker_memory(client, largest_block_bytes(source))
    with watch_worker_memory(client):
        if model_path is not None:
            imputer = GaussianImputer.from_mixture(load(model_path), **params)
            how = f"mixture of {model_path}"
        else:
            imputer = GaussianImputer(**params)
            with IterationDisplay(console, imputer, mode) as display, reporting_progress(display.event):
                imputer.fit(source, callback=display)
            ended = "converged" if imputer.converged_ else "NOT converged"
            how = f"fitted in {imputer.n_iter_} iterations, {ended}"
        imputed = imputer.transform(source)
        stored = da.to_zarr(imputed, output, mode="w-", compute=False)
        with single_threaded_blas():
            _, n_missing = dask.compute(stored, da.isnan(source.array).sum())
    n, d = source.n_samples, source.n_features
    kind = "draws" if imputer.sample_posterior else "conditional means"
    return (
        f"Imputed {int(n_missing):,} values ({kind}; {imputer.n_components}-component {imputer.covariance_type} "
        f"mixture, {how}) in {n:,} rows x {d} of {data}; wrote {output}"
    )
