"""The Dask graphs of a pass: a task per block, a tree of combine tasks, rows put together.

One statistics pass is::

    params (one key) ──┐
    block_0 ── e_step ─┤
    block_1 ── e_step ─┼─ tree of combine tasks, fan-in split_every ─► total Stats
    ...                │
    block_B ── e_step ─┘

When the blocks are already in memory (persisted, or NumPy) and there are at least as many
leaf groups (``split_every`` consecutive blocks) as threads, a leaf group's E-steps and its
combine run as one task instead of ``split_every + 1``: the same left fold in the same
order, so the same bits, with a few tasks per pass instead of one per block (on a cluster
each task costs a few milliseconds of scheduling). Streamed blocks are never grouped: a
group would hold ``split_every`` blocks read from the store at once.

The model and the parameters enter a graph once each, as one key every task references
(``dask.delayed(..., pure=True, traverse=False)``), so the graph's keys are a function of
its inputs and a pass sends the parameters to a worker once. Nothing here computes: the
graphs are run by :class:`daskem.em.session.FitSession`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import quote
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.utils import funcname

from daskem.em.checks import check_rows
from daskem.models.base import dense_rows, marginalizes_missing


def _shared(value: Any) -> Delayed:
    """``value`` as one key of a graph (tokenized, not traversed)."""
    return dask.delayed(value, pure=True, traverse=False)


def _combine_all(model: Any, *parts: Any) -> Any:
    return functools.reduce(model.combine, parts)


def _tree_levels(parts: Sequence[Any], split_every: int, join: Callable[[list[Any]], Any]) -> list[Any]:
    """The levels of the reduction tree, the root's inputs returned: at most ``split_every``."""
    level = list(parts)
    while len(level) > split_every:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        # A lone leftover moves up a level as it is: no single-input combine.
        level = [g[0] if len(g) == 1 else join(g) for g in groups]
    return level


def tree_top(model: Any, parts: Sequence[Any], split_every: int) -> list[Any]:
    """The tree of :func:`tree_reduce` without its root: at most ``split_every`` delayed parts
    whose left fold (``functools.reduce(model.combine, ...)``) is the root's value."""
    return _tree_levels(parts, split_every, lambda g: dask.delayed(_combine_all, pure=True)(model, *g))


def fold_tree(combine: Callable[[Any, Any], Any], parts: Sequence[Any], split_every: int) -> Any:
    """The values ``parts`` combined on the driver in the order of a pass's reduction tree.

    Every combine is the one a pass's tree (:func:`stats_graph`, leaf groups included)
    makes, in the same order: per-block statistics folded here give bitwise a pass's total.
    """
    return functools.reduce(combine, _tree_levels(parts, split_every, lambda g: functools.reduce(combine, g)))


def tree_reduce(model: Any, parts: Sequence[Any], split_every: int) -> Any:
    """Combine delayed statistics in a tree whose fan-in never exceeds ``split_every``."""
    top = tree_top(model, parts, split_every)
    return top[0] if len(top) == 1 else dask.delayed(_combine_all, pure=True)(model, *top)


def block_e_step(model: Any, params: Any, block: Any) -> Any:
    """``model.e_step(params, block)``: a pass's task for one block."""
    return model.e_step(params, block)


def _e_step_group(model: Any, params: Any, fn: Callable[..., Any], args: Sequence[Any], blocks: Sequence[Any]) -> Any:
    # The left fold of _combine_all over the blocks' statistics, in the same order.
    return functools.reduce(model.combine, (fn(model, params, b, *a) for b, a in zip(blocks, args, strict=True)))


def _e_step_with_message(model: Any, params: Any, block: Any, message: Any) -> Any:
    return model.e_step(params, block, message)


def stats_graph(
    model: Any,
    params: Any,
    blocks: Sequence[Delayed],
    split_every: int,
    block_fn: Callable[..., Any] | None = None,
    block_args: Sequence[Any] | None = None,
    groups: Sequence[Delayed | Sequence[Delayed]] | None = None,
    root: bool = True,
) -> Any:
    """The graph of one pass: a statistic per block, tree-reduced to one.

    Parameters
    ----------
    model : Model
        The model; enters the graph once, as one key.
    params : Params
        Parameters; enter the graph once, as one key every task references.
    blocks : sequence of Delayed
        Row blocks (:meth:`daskem.em.session.FitSession.blocks`).
    split_every : int
        Fan-in of the reduction.
    block_fn : callable, optional
        ``block_fn(model, params, block, *args)`` computing a block's statistics
        (default: ``model.e_step``); ``block_args[i]`` are the extra args of block ``i``.
    groups : sequence, optional
        Given for blocks already in memory: one task per leaf group of ``split_every``
        consecutive blocks (their E-steps and their combine), the same bits as a task per
        block. ``groups[g]`` is the list of group ``g``'s block Delayeds, or one Delayed
        whose value is that list (a leaf group persisted on one worker).

    root : bool
        Whether the graph ends in the root combine task; else the root's inputs
        (:func:`tree_top`) are returned, for the driver to fold (one task and one transfer
        fewer per pass).

    Returns
    -------
    Delayed or list of Delayed
        The combined statistics, or the root's inputs (``root=False``).
    """
    model_key = _shared(model)
    params_key = _shared(params)
    fn = block_fn or block_e_step
    extra = list(block_args) if block_args else [()] * len(blocks)
    # One layer of plain tasks under one token of the inputs (a dask.delayed call per block
    # tokenises its arguments again: ~1 ms a block on every pass).
    keys = [b.key for b in blocks]
    inputs: list[Any] = [model_key, params_key]
    if groups is not None and len(blocks) > 1:
        group_keys = [g.key if isinstance(g, Delayed) else [b.key for b in g] for g in groups]
        name = funcname(fn) + "-group-" + tokenize(fn, model_key.key, params_key.key, group_keys, extra)
        layer: dict[Any, Any] = {
            (name, g): (_e_step_group, model_key.key, params_key.key, fn, quote(extra[i : i + split_every]), key)
            for g, (i, key) in enumerate(zip(range(0, len(blocks), split_every), group_keys, strict=True))
        }
        inputs += [d for g in groups for d in ([g] if isinstance(g, Delayed) else g)]
    else:
        name = funcname(fn) + "-" + tokenize(fn, model_key.key, params_key.key, keys, extra)
        layer = {
            (name, i): (fn, model_key.key, params_key.key, key, *map(quote, args))
            for i, (key, args) in enumerate(zip(keys, extra, strict=True))
        }
        inputs += blocks
    graph = HighLevelGraph.from_collections(name, layer, dependencies=inputs)
    parts = [Delayed((name, i), graph, layer=name) for i in range(len(layer))]
    return tree_reduce(model_key, parts, split_every) if root else tree_top(model_key, parts, split_every)


def message_stats_graph(
    model: Any,
    params: Any,
    blocks: Sequence[Delayed],
    split_every: int,
    messages: Sequence[Any],
    groups: Sequence[Delayed | Sequence[Delayed]] | None = None,
    root: bool = True,
) -> Any:
    """:func:`stats_graph` of a model whose E-step takes each block's message."""
    messages_args = [(m,) for m in messages]
    return stats_graph(model, params, blocks, split_every, _e_step_with_message, messages_args, groups, root)


def _call(model: Any, method: str, check: bool, params: Any, block: Any, *message: Any) -> Any:
    if check:
        check_rows(block, allow_nan=marginalizes_missing(model))
    return getattr(model, method)(params, block, *message)


def block_tasks(
    model: Any,
    method: str,
    params: Any,
    blocks: Sequence[Delayed],
    messages: Sequence[Any] | None = None,
    check_finite: bool = False,
) -> list[Delayed]:
    """One task ``model.<method>(params, block[, message])`` per block.

    Parameters
    ----------
    model : Model
        The model; one key.
    method : str
        The per-block method.
    params : Params
        Parameters; one key.
    blocks : sequence of Delayed
        Row blocks.
    messages : sequence, optional
        One message per block (models whose blocks depend on their neighbours).
    check_finite : bool
        Refuse a block holding NaN or infinite values (:func:`daskem.em.checks.check_rows`)
        before calling the method.

    Returns
    -------
    list of Delayed
    """
    model_key = _shared(model)
    params_key = _shared(params)
    return [
        dask.delayed(_call, pure=True)(
            model_key, method, check_finite, params_key, block, *(() if messages is None else (messages[i],))
        )
        for i, block in enumerate(blocks)
    ]


def _item(value: Any, index: int) -> Any:
    return value[index]


def rows_array(
    parts: Sequence[Delayed], rows: Sequence[int], dtype: Any, columns: int | None = None, item: int | None = None
) -> da.Array:
    """The per-block results ``parts`` (``rows[i]`` rows each) as one lazy dask array.

    ``columns=None``: one value per row; else ``(rows, columns)`` per block. ``item``:
    the results are tuples and the rows are their element ``item``.
    """
    tail = () if columns is None else (columns,)
    if item is not None:
        parts = [dask.delayed(_item, pure=True)(p, item) for p in parts]
    arrays = [da.from_delayed(p, shape=(n, *tail), dtype=dtype) for p, n in zip(parts, rows, strict=True)]
    return da.concatenate(arrays) if arrays else da.zeros((0, *tail), dtype=dtype)


def _take(block: Any, index: np.ndarray) -> Any:
    return dense_rows(block[index])  # sparse blocks: the few rows taken, dense


def take_rows(
    blocks: Sequence[Delayed], rows: Sequence[int], index: np.ndarray, columns: int, dtype: Any
) -> tuple[da.Array, int]:
    """The rows ``index`` (sorted) of the blocks, as a lazy dask array with one chunk per block read.

    Returns the array and the number of blocks it reads.
    """
    ends = np.cumsum(np.asarray(rows, dtype=np.int64))
    owner = np.searchsorted(ends, index, side="right")
    touched = np.unique(owner).tolist()
    tasks = [dask.delayed(_take, pure=True)(blocks[b], index[owner == b] - (ends[b] - rows[b])) for b in touched]
    counts = [int(np.count_nonzero(owner == b)) for b in touched]
    return rows_array(tasks, counts, dtype, columns), len(touched)


def _leading(block: Any, count: int) -> Any:
    return block[:, :count]


def leading_columns(blocks: Sequence[Delayed], count: int) -> list[Delayed]:
    """The first ``count`` columns of every block, one small task per block."""
    return [dask.delayed(_leading, pure=True)(b, count) for b in blocks]
