"""What the benchmarks on a generated Gaussian-mixture store share: the store, the start,
the scheduler, the log."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator

import numpy as np
import zarr
from dask.utils import format_bytes
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.io.sources import ChunkSizeWarning
from daskem.testing import mixture_spec, write_mixture_zarr


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_store(path: str, n: int, d: int, k: int, chunk_rows: int, seed: int, separation: float) -> float | None:
    """Write the mixture to ``path`` unless a complete store of that shape is there; seconds or None."""
    if os.path.exists(path):
        try:
            arr = zarr.open_array(path, mode="r")
            truth = arr.attrs.get("daskem_truth", {})  # written last: the store is complete
            ok = (
                arr.shape == (n, d)
                and arr.chunks == (chunk_rows, d)
                and arr.dtype == np.float64
                and truth.get("seed") == seed
                and np.allclose(truth.get("means", np.nan), mixture_spec(d, k, seed, separation).means)
            )
        except Exception:
            ok = False
        if ok:
            log(f"reusing {path}")
            return None
        raise SystemExit(
            f"{path} exists but is not a {n:,} x {d} store (k={k}, chunks of {chunk_rows:,} rows, seed {seed}, "
            f"separation {separation}): remove it or pass another --store"
        )
    log(f"writing {path}: {n:,} x {d} float64 ({format_bytes(n * d * 8)}), chunks of {chunk_rows:,} rows")
    start = time.perf_counter()
    try:
        write_mixture_zarr(path, n, d, k, seed=seed, chunk_rows=chunk_rows, separation=separation)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return time.perf_counter() - start


def initial(sample: np.ndarray, k: int, method: str, seed: int) -> dict[str, np.ndarray]:
    """The shared start: ``method`` (:func:`daskem.initial_params`) on an in-memory sample."""
    model = daskem.GaussianMixtureModel(k, "full")
    (p,) = daskem.initial_params(model, daskem.as_source(sample), method, [np.random.default_rng(seed)])
    pc = p.precisions_cholesky
    return {"weights_init": p.weights, "means_init": p.means, "precisions_init": pc @ pc.transpose(0, 2, 1)}


@contextlib.contextmanager
def scheduler(workers: int) -> Iterator[str]:
    """Dask's threaded scheduler (``workers == 0``) or a LocalCluster of single-threaded processes."""
    if workers == 0:
        yield f"threaded scheduler ({os.cpu_count()} threads)"
        return
    from distributed import Client

    from daskem.cli import local_cluster

    with local_cluster(workers, 1) as cluster, Client(cluster, set_as_default=False) as client, client.as_current():
        yield f"LocalCluster of {workers} processes x 1 thread"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without the warnings of a fit stopped at ``max_iter`` (the online epoch) or of a large graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", ChunkSizeWarning)
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        yield


def store_and_start(
    args: argparse.Namespace, folder: str
) -> tuple[str, float | None, np.ndarray, dict[str, np.ndarray]]:
    """The store ``args`` describe (written once, under ``$TMPDIR/folder`` unless ``--store``),
    the seconds writing it took (None: reused), its first ``--init-rows`` rows and the shared
    start computed on them."""
    n, d, k = args.rows, args.features, args.components
    name = f"X-{n}x{d}-k{k}-c{args.chunk_rows}-s{args.seed}-sep{args.separation:g}.zarr"
    path = args.store or os.path.join(tempfile.gettempdir(), folder, name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    written = ensure_store(path, n, d, k, args.chunk_rows, args.seed, args.separation)
    sample = np.asarray(zarr.open_array(path, mode="r")[: min(args.init_rows, n)])
    start = time.perf_counter()
    inits = initial(sample, k, args.init, args.seed)
    log(f"start: {args.init} on {len(sample):,} rows in {time.perf_counter() - start:.2f}s")
    return path, written, sample, inits


def add_store_arguments(parser: argparse.ArgumentParser, *, rows: int, chunk_rows: int) -> None:
    """The options describing the store, the scheduler and the start (:func:`store_and_start`)."""
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=chunk_rows, help="rows per Zarr chunk = per block")
    parser.add_argument("--separation", type=float, default=4.0, help="spread of the true means (mixture_spec)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the start and any epoch order")
    parser.add_argument("--store", default=None, help="Zarr store path (reused if it exists; default in $TMPDIR)")
    parser.add_argument("--workers", type=int, default=0, help="0: threaded scheduler; N: LocalCluster N x 1")
    parser.add_argument("--init-rows", type=int, default=100_000, help="first rows the start is computed on")
