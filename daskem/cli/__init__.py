"""The ``daskem`` command: make synthetic data, fit models on a Dask cluster, and look at the fits.

Commands: ``make-data``, ``fit``, ``resume`` (:mod:`daskem.cli.fitting`), ``inspect``,
``plot`` (:mod:`daskem.cli.reporting`), ``select`` (:mod:`daskem.cli.selection`),
``impute`` (:mod:`daskem.cli.imputing`), ``corpus`` and ``topics`` (:mod:`daskem.cli.topics`). The
models ``fit`` takes, their options, summaries and figures come from the model registry
(:mod:`daskem.registry`). Where a fit runs is :mod:`daskem.cli.cluster`; what the
terminal shows is :mod:`daskem.cli.display`.

Importing this package loads click and rich only: dask, distributed, the estimators and
matplotlib are imported inside the commands, so ``daskem --help`` starts fast.
"""

from __future__ import annotations

import time

import click

from daskem.cli.cluster import WORKER_ENVIRON, ClusterChoice, MemoryLimit, local_cluster
from daskem.cli.display import remaining_iterations
from daskem.cli.fitting import fit, resume
from daskem.cli.imputing import impute
from daskem.cli.reporting import inspect, plot
from daskem.cli.selection import select
from daskem.cli.topics import corpus, topics

__all__ = [
    "WORKER_ENVIRON",
    "ClusterChoice",
    "MemoryLimit",
    "local_cluster",
    "main",
    "remaining_iterations",
]


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
    import numpy as np
    from rich.console import Console
    from zarr.errors import ContainsArrayError, ContainsGroupError

    from daskem.datasets import write_mixture_zarr
    from daskem.errors import DaskemError, DestinationExistsError

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


for _command in (fit, resume, impute, inspect, plot, select, corpus, topics):
    main.add_command(_command)
