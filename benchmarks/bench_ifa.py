"""Seconds per independent factor analysis EM iteration against the number of sources and Gaussians.

The exact E-step of :class:`daskem.IndependentFactorAnalysis` sums over the ``S = m^L``
joint states of ``L`` sources of ``m`` Gaussians each, so an iteration costs about
``n (d L + S L^2)`` flops and holds a ``t x S x L`` tile per thread. This script measures
it: ``n`` rows (200,000 by default) of ``d = 12`` features mixing ``L`` Laplace sources with
small noise, float64, in memory; for each ``(L, m)`` of the grid, ``max_iter=--iters`` and
``tol=0`` on Dask's threaded scheduler, seconds per iteration from the fit's callback
(median over iterations and ``--repeats`` fits, after a warm-up fit), with the joint
states and the cost per row and state. One :class:`daskem.FactorAnalysis` iteration on the
same data is the baseline (``m = 1`` is factor analysis).

Usage::

    python benchmarks/bench_ifa.py                                # n = 200,000, 5 iterations, 2 repeats
    python benchmarks/bench_ifa.py --n 50000 --iters 3 --repeats 1 --grid 2x2,3x3
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _timing import time_iterations

import daskem


def data(n: int, d: int, sources: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, sources))
    return rng.laplace(size=(n, sources)) @ mixing.T + 0.1 * rng.normal(size=(n, d)) + 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=12)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--grid", default="2x2,2x3,3x2,3x3,4x3,5x3,6x3,8x2,10x2", help="LxM pairs")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for pair in args.grid.split(","):
        sources, gaussians = (int(v) for v in pair.split("x"))
        X = data(args.n, args.d, sources)
        baseline = time_iterations(
            lambda it, q=sources: daskem.FactorAnalysis(q, max_iter=it, tol=0.0), X, args.iters, 1
        )
        timed = time_iterations(
            lambda it, q=sources, m=gaussians: daskem.IndependentFactorAnalysis(
                q, n_source_components=m, max_iter=it, tol=0.0
            ),
            X,
            args.iters,
            args.repeats,
        )
        states = gaussians**sources
        rows.append(
            {
                "L": sources,
                "m": gaussians,
                "S": states,
                "iter": timed["iter"],
                "fa": baseline["iter"],
                "ns_per_row_state": 1e9 * timed["iter"] / (args.n * states),
            }
        )
        row = rows[-1]
        print(
            f"L={row['L']:2d} m={row['m']} S={row['S']:5d}  {row['iter']:.3f} s/iter "
            f"({row['iter'] / row['fa']:.1f}x FactorAnalysis' {row['fa']:.3f} s)  "
            f"{row['ns_per_row_state']:.1f} ns per row and state",
            flush=True,
        )


if __name__ == "__main__":
    main()
