"""Fit a Gaussian mixture to a Zarr store larger than the memory of the Dask workers.

The story: you have a dataset on disk that is bigger than the memory your workers may
use (here ~1.2 GiB of float64 against two workers limited to 512 MiB each), and you want
a Gaussian mixture fitted to all of it, not to a sample. daskem streams the blocks from
the store on every EM iteration: each worker only ever holds the blocks it is working on
and the small sufficient statistics they reduce to, so the fit never needs the dataset
in memory.

The script

1. writes a synthetic Gaussian-mixture dataset to a Zarr v3 array, block by block
   (``daskem.testing.write_mixture_zarr``; ``daskem make-data`` does the same from the
   shell), so the whole array is never in memory here either;
2. starts a ``LocalCluster`` of worker processes on 127.0.0.1 with a memory limit per
   worker (the dashboard listens on 127.0.0.1 too, on a free port);
3. fits ``daskem.GaussianMixture`` on the store's path; ``cache="auto"`` (the default)
   sees that the data do not fit and streams them (the ``daskem`` logger says so; pass
   ``--cache no`` to stream even data that would fit); the default ``init_params=
   "k-means++"`` seeds from a sample, so the whole fit takes only a few passes;
4. prints the weights and means found next to the true ones, the BIC, and how many
   passes over the data the fit made.

Run it (1-2 minutes on 2 cores at the default size; ``--help`` for the options)::

    python examples/fit_larger_than_memory.py
    python examples/fit_larger_than_memory.py --n-samples 4400000 --workers 1   # 537 MiB vs 512 MiB, quicker

Mind the memory limit: a worker process that has imported numpy, dask, pandas and
scikit-learn already uses about 250-350 MiB before it holds any data (the script prints
what yours use), and a Dask worker pauses at 80% of its limit. With 512 MiB that leaves
about 80 MiB for the blocks in flight and the E-step's temporaries, hence the blocks of
32,768 rows (4 MiB) here; blocks twice as large make the workers pause and resume all
the time. Limits below ~450 MiB leave no room to work at all.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from dask.utils import format_bytes, parse_bytes
from sklearn.exceptions import ConvergenceWarning


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=10_000_000, help="rows of the dataset (default 10M)")
    parser.add_argument("--n-features", type=int, default=16, help="columns (default 16)")
    parser.add_argument("--n-components", type=int, default=8, help="true and fitted components (default 8)")
    parser.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--chunk-rows", type=int, default=32_768, help="rows per Zarr chunk (default 32768)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--memory-limit", default="512MiB", help="memory limit of each worker (default 512MiB)")
    parser.add_argument("--max-iter", type=int, default=30, help="most EM iterations (default 30)")
    parser.add_argument(
        "--init-params",
        default="k-means++",
        choices=["kmeans", "k-means++", "random", "random_from_data"],
        help="initialisation (default k-means++: seeds from a sample of 100,000 rows; kmeans: k-means|| and "
        "Lloyd over all the data, about 17 passes)",
    )
    parser.add_argument("--cache", default="auto", choices=["auto", "no"], help="cache the data or stream them")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the fit")
    parser.add_argument("--data", type=Path, default=None, help="where to write the store (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    return parser.parse_args(argv)


def worker_rss(client) -> dict[str, int]:
    """Resident memory of each worker process (what Dask compares with the limit)."""

    def rss() -> int:
        import psutil

        import daskem  # noqa: F401  (a fitting worker imports it; count it)

        return int(psutil.Process().memory_info().rss)

    return client.run(rss)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from distributed import Client, LocalCluster

    import daskem
    from daskem.testing import write_mixture_zarr

    workdir = None
    if args.data is None:
        workdir = Path(tempfile.mkdtemp(prefix="daskem-example-"))
        args.data = workdir / "data.zarr"
    limit = parse_bytes(args.memory_limit)
    try:
        # 1. The dataset, written block by block in parallel.
        start = time.perf_counter()
        spec = write_mixture_zarr(
            args.data,
            args.n_samples,
            args.n_features,
            args.n_components,
            seed=args.seed,
            chunk_rows=args.chunk_rows,
            overwrite=True,
        )
        store_bytes = sum(f.stat().st_size for f in Path(args.data).rglob("*") if f.is_file())
        array_bytes = args.n_samples * args.n_features * 8
        print(
            f"wrote {args.data}: {args.n_samples:,} x {args.n_features} float64 in {time.perf_counter() - start:.1f}s"
        )
        print(
            f"array size: {array_bytes} bytes ({format_bytes(array_bytes)}); store on disk: {format_bytes(store_bytes)}"
        )

        # 2. A local cluster of worker processes, each with a memory limit.
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                memory_limit=limit,
            ) as cluster,
            Client(cluster) as client,
        ):
            total = limit * args.workers
            print(
                f"cluster: {args.workers} worker(s) x {format_bytes(limit)} memory limit = {format_bytes(total)} "
                f"in total; dashboard {client.dashboard_link}"
            )
            print(f"memory limit per worker: {limit} bytes; total: {total} bytes")
            print(f"larger than one worker's memory limit: {array_bytes > limit}")
            print(f"larger than the whole cluster's memory: {array_bytes > total}")
            baseline = worker_rss(client)
            print(
                "worker memory before the fit (the Python process itself): "
                + ", ".join(format_bytes(v) for v in baseline.values())
            )

            # daskem logs whether it caches the data or streams them on every pass (and
            # every iteration, which the callback below prints already).
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("daskem: %(message)s"))
            handler.addFilter(lambda record: not record.getMessage().startswith("iteration"))
            logger = logging.getLogger("daskem")
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)

            # 3. The fit, reading the store on every pass.
            gm = daskem.GaussianMixture(
                n_components=args.n_components,
                covariance_type=args.covariance_type,
                max_iter=args.max_iter,
                init_params=args.init_params,
                random_state=args.seed,
                cache="auto" if args.cache == "auto" else False,
            )

            def show(record, params) -> None:
                print(
                    f"  iteration {record.iteration:3d}  mean log-likelihood {record.log_likelihood:.6f}  "
                    f"{record.seconds:.2f}s",
                    flush=True,
                )

            start = time.perf_counter()
            with warnings.catch_warnings():
                # Reported below instead: "not converged after N iterations".
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm.fit(str(args.data), callback=show)
            elapsed = time.perf_counter() - start
            logger.removeHandler(handler)
            after = worker_rss(client)
            bic = gm.bic(str(args.data))

        # 4. What was found, next to the truth (matched by nearest mean).
        print(
            f"fit: {'converged' if gm.converged_ else 'not converged'} after {gm.n_iter_} iterations, "
            f"{gm.n_passes_} passes over the data, {elapsed:.1f}s"
        )
        print("worker memory after the fit: " + ", ".join(format_bytes(v) for v in after.values()))
        print(" comp  weight (true)    mean[:3]                         true mean[:3]")
        for j in np.argsort(-gm.weights_):
            t = int(np.argmin(((spec.means - gm.means_[j]) ** 2).sum(axis=1)))
            fitted = ", ".join(f"{v:7.3f}" for v in gm.means_[j, :3])
            true = ", ".join(f"{v:7.3f}" for v in spec.means[t, :3])
            print(f"  {j:3d}  {gm.weights_[j]:.4f} ({spec.weights[t]:.4f})  [{fitted}]  [{true}]")
        print(f"mean log-likelihood: {gm.lower_bound_:.6f}")
        print(f"BIC: {bic:.1f}")
    finally:
        if workdir is not None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
