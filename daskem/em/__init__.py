"""The model-agnostic EM engine: the only code in daskem that builds Dask graphs."""

from daskem.em.engine import EMResult, compute_stats, current_client, data_blocks, fit_em, stats_graph, tree_reduce
from daskem.em.init import INIT_METHODS, INIT_SAMPLE_ROWS, initial_params, kmeans_plusplus, sample_rows
from daskem.em.monitor import ConvergenceMonitor, IterationRecord, LikelihoodDecreaseWarning

__all__ = [
    "INIT_METHODS",
    "INIT_SAMPLE_ROWS",
    "ConvergenceMonitor",
    "EMResult",
    "IterationRecord",
    "LikelihoodDecreaseWarning",
    "compute_stats",
    "current_client",
    "data_blocks",
    "fit_em",
    "initial_params",
    "kmeans_plusplus",
    "sample_rows",
    "stats_graph",
    "tree_reduce",
]
