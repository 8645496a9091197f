"""k-means on a directory of Parquet files, checked against scikit-learn.

The story: your data are a Parquet dataset -- a directory of part files, as Spark, Dask
or pandas write them. ``daskem.KMeans`` is a drop-in for ``sklearn.cluster.KMeans``
that reads the files block by block: ``daskem.as_source(directory)`` takes the numeric
columns of every file, the default ``init="k-means||"`` seeds the centres with a few
passes over all the data (no sample has to fit in memory), and every Lloyd iteration is
one more pass. ``n_passes_`` counts them.

The script writes ``--n-files`` Parquet files of Gaussian blobs
(``sklearn.datasets.make_blobs``) with columns ``x0..x{d-1}``, fits ``daskem.KMeans`` on
the directory, prints the centres, inertia, iterations and passes, how well the clusters
match the blobs (adjusted Rand index), then fits scikit-learn's KMeans on the same rows
(read with pandas) and prints the ratio of the two inertias (about 1.0: the same local
optimum, or a different one as good).

Needs pandas and pyarrow (``pip install 'daskem[formats]'``). Run it (a few seconds;
``--help`` for the options)::

    python examples/kmeans_on_parquet.py
    python examples/kmeans_on_parquet.py --n-samples 2000000 --n-clusters 10 --n-features 2

From the shell, ``daskem fit DIR`` fits a Gaussian mixture to the same directory;
k-means is available from Python.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000, help="rows in all (default 1M)")
    parser.add_argument("--n-features", type=int, default=5, help="feature columns (default 5)")
    parser.add_argument("--n-clusters", type=int, default=6, help="blobs, and clusters fitted (default 6)")
    parser.add_argument("--n-files", type=int, default=8, help="Parquet part files (default 8)")
    parser.add_argument("--cluster-std", type=float, default=1.5, help="spread of each blob (default 1.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of both fits")
    parser.add_argument("--skip-sklearn", action="store_true", help="do not run scikit-learn's KMeans")
    parser.add_argument("--data", type=Path, default=None, help="directory to write (default: a temp dir)")
    return parser.parse_args(argv)


def write_parquet(path: Path, args: argparse.Namespace) -> np.ndarray:
    """Write the blobs as ``--n-files`` part files; return the true cluster of every row."""
    import pandas as pd
    from sklearn.datasets import make_blobs

    X, y = make_blobs(
        n_samples=args.n_samples,
        n_features=args.n_features,
        centers=args.n_clusters,
        cluster_std=args.cluster_std,
        center_box=(-10.0, 10.0),
        random_state=args.seed,
    )
    features = [f"x{j}" for j in range(args.n_features)]
    df = pd.DataFrame(X, columns=features)
    path.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(args.n_samples), args.n_files)):
        df.iloc[part].to_parquet(path / f"part-{i:04d}.parquet", index=False)
    return y


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from sklearn.metrics import adjusted_rand_score

    import daskem

    workdir = None
    if args.data is None:
        workdir = Path(tempfile.mkdtemp(prefix="daskem-parquet-"))
        args.data = workdir / "blobs"
    try:
        truth = write_parquet(args.data, args)
        size = sum(f.stat().st_size for f in args.data.glob("*.parquet"))
        print(
            f"wrote {args.n_files} Parquet files to {args.data}: {args.n_samples:,} rows x {args.n_features} "
            f"columns ({size / 2**20:.1f} MiB)"
        )

        # The numeric columns of every file in the directory, read lazily, one block per file
        # (``columns=[...]`` picks some; a path, a glob or an fsspec URL work as well).
        source = daskem.as_source(str(args.data))
        print(f"source: {source.n_samples:,} rows x {source.n_features} features in {source.array.numblocks[0]} blocks")
        start = time.perf_counter()
        km = daskem.KMeans(n_clusters=args.n_clusters, init="k-means||", random_state=args.seed).fit(source)
        elapsed = time.perf_counter() - start
        print(
            f"daskem KMeans: {km.n_iter_} iterations, {km.n_passes_} passes over the data "
            f"(k-means|| included), {elapsed:.1f}s"
        )
        print("cluster centres:")
        for j in np.argsort(km.cluster_centers_[:, 0]):
            print("   " + " ".join(f"{v:8.3f}" for v in km.cluster_centers_[j]))
        print(f"daskem inertia: {km.inertia_:.6g}")

        # Labels of out-of-core data are a lazy dask array, one block per Parquet block.
        labels = np.asarray(km.predict(source))
        print(f"rows per cluster: {np.bincount(labels, minlength=args.n_clusters).tolist()}")
        print(f"adjusted Rand index against the blobs: {adjusted_rand_score(truth, labels):.4f}")

        if not args.skip_sklearn:
            import pandas as pd
            from sklearn.cluster import KMeans

            X = pd.read_parquet(args.data).to_numpy()
            start = time.perf_counter()
            sk = KMeans(n_clusters=args.n_clusters, random_state=args.seed).fit(X)
            print(f"sklearn KMeans: {sk.n_iter_} iterations on the data in memory, {time.perf_counter() - start:.1f}s")
            print(f"sklearn inertia: {sk.inertia_:.6g}")
            print(f"inertia ratio daskem/sklearn: {km.inertia_ / sk.inertia_:.6f}")
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
