"""The model-agnostic EM engine: the only code in daskem that builds Dask graphs."""

from daskem.em.accelerate import ACCELERATIONS, Squarem
from daskem.em.engine import (
    BatchedModel,
    EMResult,
    RestartsResult,
    compute_stats,
    counting_passes,
    current_client,
    data_blocks,
    fit_em,
    fit_em_restarts,
    stats_graph,
    tree_reduce,
)
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

__all__ = [
    "ACCELERATIONS",
    "INIT_METHODS",
    "INIT_SAMPLE_ROWS",
    "BatchedModel",
    "ConvergenceMonitor",
    "EMResult",
    "IterationRecord",
    "LikelihoodDecreaseWarning",
    "RestartsResult",
    "Squarem",
    "compute_stats",
    "counting_passes",
    "current_client",
    "data_blocks",
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
