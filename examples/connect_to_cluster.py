"""Run a daskem fit on a Dask cluster: your own scheduler, or a local one.

The story: you have a Dask cluster (``dask scheduler`` plus ``dask worker`` processes,
dask-jobqueue on an HPC system, Kubernetes, ...) and want daskem to use it. Nothing in
daskem is cluster-specific: create a ``distributed.Client`` and every ``fit``,
``predict`` and ``score`` runs its tasks on that client's workers -- the E-step on
every block where the block lives, a tree reduction of the statistics, and only the
small M-step in this process.

The script connects to ``--scheduler ADDRESS`` or ``$DASK_SCHEDULER_ADDRESS`` when one
is given (the workers need daskem installed), and otherwise starts a ``LocalCluster``
of ``--workers`` processes listening on 127.0.0.1. It then fits
``daskem.GaussianMixture(...).fit(X)`` on a dask array generated on the workers, while
recording the task stream, and prints the dashboard link, how many tasks ran on which
worker process, and the fitted weights.

Run it (about 10 seconds; ``--help`` for the options)::

    python examples/connect_to_cluster.py                      # a LocalCluster of 2 processes
    dask scheduler --host 127.0.0.1 --port 8786 --dashboard-address 127.0.0.1:8787 &   # or your own cluster
    dask worker tcp://127.0.0.1:8786 --nworkers 2 --nthreads 1 &
    python examples/connect_to_cluster.py --scheduler tcp://127.0.0.1:8786
    DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:8786 python examples/connect_to_cluster.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections import Counter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
        help="address of an existing scheduler (default: $DASK_SCHEDULER_ADDRESS, else start a LocalCluster)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes of the LocalCluster (default 2)")
    parser.add_argument("--memory-limit", default="2GiB", help="memory limit per LocalCluster worker")
    parser.add_argument("--n-samples", type=int, default=500_000, help="rows (default 500000)")
    parser.add_argument("--n-features", type=int, default=8, help="columns (default 8)")
    parser.add_argument("--n-components", type=int, default=4, help="components (default 4)")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per block (default 50000)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from distributed import Client, LocalCluster, get_task_stream

    import daskem
    from daskem.testing import make_mixture_array

    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
            print(f"connected to the scheduler at {client.scheduler.address}")
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    memory_limit=args.memory_limit,
                )
            )
            client = stack.enter_context(Client(cluster))
            print(f"started a LocalCluster at {client.scheduler.address}")
        print(f"dashboard: {client.dashboard_link}")
        pids = client.run(os.getpid)  # {worker address: process id}
        print(
            f"workers: {len(pids)} ({', '.join(f'{w} pid {p}' for w, p in pids.items())}); this process: {os.getpid()}"
        )

        # A lazy dask array: its blocks are drawn on the workers, never in this process.
        X, _ = make_mixture_array(
            args.n_samples, args.n_features, args.n_components, seed=args.seed, chunk_rows=args.chunk_rows
        )
        print(f"data: dask array {X.shape}, {X.numblocks[0]} blocks of {args.chunk_rows:,} rows")

        # The Client above is the default scheduler, so daskem runs on it.
        with get_task_stream(client) as stream:
            gm = daskem.GaussianMixture(n_components=args.n_components, random_state=args.seed).fit(X)
        per_worker = Counter(task["worker"] for task in stream.data)
        print(
            f"fit: {'converged' if gm.converged_ else 'not converged'} after {gm.n_iter_} iterations, "
            f"{gm.n_passes_} passes, mean log-likelihood {gm.lower_bound_:.6f}"
        )
        print(f"tasks run: {sum(per_worker.values())}")
        print(f"workers used: {len(per_worker)}")
        for worker, count in sorted(per_worker.items()):
            print(f"  {worker} (pid {pids.get(worker)}): {count} tasks")
        print("weights: " + ", ".join(f"{w:.4f}" for w in sorted(gm.weights_, reverse=True)))


if __name__ == "__main__":
    main()
