"""Seconds per EM iteration of a daskem estimator, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from sklearn.exceptions import ConvergenceWarning


def time_iterations(
    make: Callable[[int], Any],
    X: Any,
    iters: int,
    repeats: int,
    client: Any = None,
    report: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Median seconds per iteration of ``make(max_iter).fit(X)`` after a warm-up fit.

    Each iteration's seconds come from the fit's callback (so one-time costs such as an
    upload of in-memory data to ``client``'s cluster are left out); ``wall`` is a whole
    fit divided by its iterations. ``report(estimator)`` adds entries from the last fit.
    """

    def fit(max_iter: int) -> tuple[float, list[float], Any]:
        est = make(max_iter)
        secs: list[float] = []
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, callback=lambda rec, _: secs.append(rec.seconds))
        return time.perf_counter() - start, secs, est

    def run() -> dict[str, Any]:
        fit(2)  # warm-up: numba compilation, worker imports
        runs = [fit(iters) for _ in range(repeats)]
        est = runs[-1][2]
        return {
            "iter": statistics.median(statistics.median(secs) for _, secs, _ in runs),
            "wall": statistics.median(t / e.n_iter_ for t, _, e in runs),
            "n_iter": est.n_iter_,
            **(report(est) if report is not None else {}),
        }

    if client is None:
        return run()
    with client.as_current():
        return run()
