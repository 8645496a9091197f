"""The model-agnostic EM engine: the only code in daskem that builds Dask graphs.

``session`` (one fit's access to its data: blocks, cache, client, passes), ``graph`` (the
graphs of a pass), ``runs`` (runs with restarts, SQUAREM and pruning), ``driver`` (the
loop), ``init`` (initialisers), ``monitor``, ``progress``, ``accelerate``, ``checks``.
"""

from daskem.em.accelerate import ACCELERATIONS, Squarem
from daskem.em.driver import fit_em, fit_em_restarts
from daskem.em.graph import stats_graph, tree_reduce
from daskem.em.init import (
    INIT_METHODS,
    INIT_SAMPLE_ROWS,
    initial_params,
    kmeans_centers,
    kmeans_parallel,
    kmeans_plusplus,
    sample_rows,
    weighted_kmeans,
)
from daskem.em.monitor import ConvergenceMonitor, IterationRecord, LikelihoodDecreaseWarning
from daskem.em.progress import counting_passes
from daskem.em.runs import BatchedModel, EMResult, RestartsResult
from daskem.em.session import FitSession, current_client

__all__ = [
    "ACCELERATIONS",
    "INIT_METHODS",
    "INIT_SAMPLE_ROWS",
    "BatchedModel",
    "ConvergenceMonitor",
    "EMResult",
    "FitSession",
    "IterationRecord",
    "LikelihoodDecreaseWarning",
    "RestartsResult",
    "Squarem",
    "counting_passes",
    "current_client",
    "fit_em",
    "fit_em_restarts",
    "initial_params",
    "kmeans_centers",
    "kmeans_parallel",
    "kmeans_plusplus",
    "sample_rows",
    "stats_graph",
    "tree_reduce",
    "weighted_kmeans",
]
