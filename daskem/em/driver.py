"""The EM driver loop: one pass over the data per iteration, M-steps on the driver.

Per pass::

    session.stats(model, params)     one dask.compute (two for models that carry messages)
       │
    driver: check_stats -> m_step -> monitor (convergence, decrease warning) -> prune
       │
    checkpoint: commit the runs' new parameters and history (every checkpoint_every records)

:func:`fit_em_restarts` runs several initialisations in the same passes
(:mod:`daskem.em.runs`); :func:`fit_em` is its one-run case. The data are read through one
:class:`daskem.em.session.FitSession` for the whole fit, initialisation included.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from daskem.checkpoint.checkpoint import COMPARED_SECTIONS, Checkpoint, CheckpointRun, fit_metadata
from daskem.em.accelerate import check_accelerate
from daskem.em.monitor import ConvergenceMonitor, IterationRecord
from daskem.em.progress import FitEvent, notify, phase
from daskem.em.runs import BatchedModel, EMResult, RestartsResult, Run, prune_runs
from daskem.em.session import Cache, as_session, single_threaded_blas
from daskem.io.sources import DataSource

logger = logging.getLogger("daskem")

IterationCallback = Callable[[IterationRecord, Any], None]


def fit_em_restarts(
    model: Any,
    X: Any,
    inits: Sequence[Any] | Callable[[], Sequence[Any]],
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    accelerate: str | None = None,
    prune: bool = False,
    callback: Callable[[int, IterationRecord, Any], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | Sequence[CheckpointRun] | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
    cache: Cache = "auto",
    max_init_passes: int | None = None,
    pass_callback: Callable[[int, tuple[EMResult, ...], dict[int, Any]], None] | None = None,
    previous_lower_bound: float = -np.inf,
) -> RestartsResult:
    """Fit ``model`` from several initialisations at once, sharing every pass over the data.

    Each pass reads every block once and runs the E-step of every active run on it
    (:class:`BatchedModel`), so ``R`` restarts cost ``R`` times the compute but one
    read of the data per iteration. Runs are independent: each reaches bitwise the
    parameters a fit of its initialisation alone (:func:`fit_em`) reaches.

    Parameters
    ----------
    model : Model or sequence of Model
        Any object implementing :class:`daskem.models.Model`, or one per initialisation
        (candidates of a model-selection grid fitted in shared passes).
    X : array-like, dask array, zarr.Array, str, DataSource or FitSession
        The data (see :func:`daskem.io.as_source`), or the session of the fit that reads
        them (:class:`daskem.em.session.FitSession`, which brings its own ``cache`` and
        ``split_every``; the initialisation then reads the data through it too).
    inits : sequence of Params, or callable
        One initial parameter set per run, or a function of no arguments returning them
        (called only when a run has no checkpoint to resume, or to count the runs when
        ``checkpoint`` is a location; the passes it makes through the session count).
    max_iter, tol, split_every, checkpoint_every, keep_last, overwrite, cache
        As for :func:`fit_em` (``max_iter`` and ``tol`` apply to every run).
    accelerate : {None, "squarem"}
        SQUAREM acceleration of every run (:mod:`daskem.em.accelerate`); the model must
        provide ``to_vector`` / ``from_vector``.
    prune : bool
        Drop runs that clearly fall behind the best (see :func:`daskem.em.runs.prune_runs`); each dropped run
        is logged and reported in :attr:`RestartsResult.pruned`.
    callback : callable, optional
        Called as ``callback(run_index, record, params)`` after every record of every run.
    checkpoint : str, os.PathLike, Checkpoint or sequence of CheckpointRun, optional
        Where to checkpoint: a location (prepared like :func:`fit_em`'s, run ``r`` for
        initialisation ``r``) or the runs themselves, one per initialisation. The
        initial parameters are committed as iteration 0 as soon as they exist.
    max_init_passes : int, optional
        The most passes ``inits`` makes, for progress displays
        (:func:`daskem.em.progress.reporting_progress`: "initialising, pass i of n").
    pass_callback : callable, optional
        Called as ``pass_callback(passes, results, stats)`` after every pass over the data,
        once its records are committed: ``passes`` made so far, every run's
        :class:`EMResult` so far, in run order, and the statistics the pass computed, by
        run index (progress of a whole grid of runs).
    previous_lower_bound : float, default=-inf
        The per-sample log-likelihood the first iteration's change is measured from: a warm
        start passes the previous fit's ``lower_bound_`` (scikit-learn's rule), so one
        iteration can already meet ``tol``.

    Returns
    -------
    RestartsResult
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1; got {checkpoint_every!r}.")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last must be an int >= 1; got {keep_last!r}.")
    models = tuple(model) if isinstance(model, list | tuple) else None
    for each in models or (model,):
        check_accelerate(each, accelerate)
    session = as_session(X, cache=cache, split_every=split_every)
    source = session.source
    fan_in = session.split_every
    starts: Sequence[Any] = ()

    def initialise() -> Sequence[Any]:
        with phase("initialising", max_init_passes):
            return inits() if callable(inits) else inits

    if callable(inits) and isinstance(checkpoint, str | os.PathLike | Checkpoint):
        # The number of runs to look for in the checkpoint is the number of starts: with a
        # location (not runs) and a callable, the initialiser must run to tell it.
        starts = initialise()
    n_runs = len(starts) if starts else None if callable(inits) else len(inits)
    targets = _checkpoint_runs(checkpoint, model, source, fan_in, overwrite, accelerate, n_runs)
    # float32 data run a float32 E-step: allow its rounding before calling a change a decrease.
    decrease_rtol = 1e-10 if source.array.dtype == np.float64 else 1e-5
    run_models = models or (model,) * len(targets)
    states = [t.latest(validate=m.params_from_arrays) for t, m in zip(targets, run_models, strict=False)]
    if not starts and (not states or any(s is None for s in states)):
        starts = initialise()
    n_runs = len(starts) if starts else len(states)
    if models is not None and len(models) != n_runs:
        raise ValueError(f"{len(models)} models were given for {n_runs} initialisations.")
    if targets and len(targets) != n_runs:
        raise ValueError(f"{len(targets)} checkpoint runs were given for {n_runs} initialisations.")
    runs = []
    for i in range(n_runs):
        monitor = ConvergenceMonitor(
            tol=tol, max_iter=max_iter, decrease_rtol=decrease_rtol, run=i, previous=float(previous_lower_bound)
        )
        run = Run(i, models[i] if models else model, monitor, targets[i] if targets else None)
        state = states[i] if states else None
        if state is not None:
            note = run.resume(state, accelerate)
            logger.info("run %d: resuming from iteration %d of %r", i, state.iteration, targets[i])
            notify(FitEvent("resumed", run=i, iteration=state.iteration))
            if note:
                logger.info(note)
                notify(FitEvent("note", message=note, run=i))
        else:
            run.start(starts[i], accelerate)
        runs.append(run)
    session.resume_from(max([0] + [max(r.monitor.passes, r.resumed_passes) for r in runs]))
    passes = session.passes
    for run, state in zip(runs, states or [None] * len(runs), strict=True):
        if state is None:
            # The initial parameters are committed at once (iteration 0): a fit killed
            # before its first iteration does not initialise again. (A new stopping rule
            # is written with the next iteration: a committed one is never rewritten.)
            run.commit(keep_last, passes)
    pruned: list[int] = [r.index for r in runs if r.pruned]
    with phase("fitting"), single_threaded_blas():
        if any(r.active for r in runs):
            session.check_chunking()
        while active := [r for r in runs if r.active]:
            if len(active) == 1:
                all_stats = (session.stats(active[0].model, active[0].pending),)
            else:
                batched = BatchedModel(model, None if models is None else tuple(r.model for r in active))
                all_stats = session.stats(batched, tuple(r.pending for r in active))
            passes = session.passes
            recorded = {}
            for run, stats in zip(active, all_stats, strict=True):
                record = run.advance(stats, source.n_samples, passes, tol)
                if record is not None:
                    recorded[run.index] = record
            dropped = prune_runs(runs, tol) if prune else []
            for index in dropped:
                logger.info("run %d pruned: it falls clearly behind the best run", index)
            pruned.extend(dropped)
            for run in runs:
                record = recorded.get(run.index)
                due = record is not None and (record.iteration % checkpoint_every == 0 or not run.active)
                if due or run.index in dropped:
                    run.commit(keep_last, passes)
                if record is not None and callback is not None:
                    callback(run.index, record, run.params)
            if pass_callback is not None:
                computed = {run.index: stats for run, stats in zip(active, all_stats, strict=True)}
                pass_callback(passes, tuple(r.result(source.n_samples, passes) for r in runs), computed)
    results = tuple(r.result(source.n_samples, passes) for r in runs)
    best = max(range(len(results)), key=lambda i: (results[i].lower_bound, -i))
    return RestartsResult(best=best, results=results, pruned=tuple(pruned), n_passes=passes)


def _checkpoint_runs(
    checkpoint: str | os.PathLike[str] | Checkpoint | Sequence[CheckpointRun] | None,
    model: Any,
    source: DataSource,
    split_every: int,
    overwrite: bool,
    accelerate: str | None,
    n_runs: int | None,
) -> list[CheckpointRun]:
    if checkpoint is None:
        return []
    if isinstance(checkpoint, str | os.PathLike | Checkpoint):
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
        meta = fit_metadata(model, source, split_every, accelerate=accelerate)
        ckpt.prepare(meta, compare=COMPARED_SECTIONS, overwrite=overwrite)
        count = n_runs if n_runs is not None else max(len(ckpt.runs()), 1)
        return [ckpt.run(i) for i in range(count)]
    return list(checkpoint)


def fit_em(
    model: Any,
    X: Any,
    init: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    accelerate: str | None = None,
    callback: IterationCallback | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | CheckpointRun | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
    cache: Cache = "auto",
) -> EMResult:
    """Fit ``model`` to ``X`` by Expectation-Maximization.

    Each iteration is exactly one pass over the data (one ``dask.compute``): the E-step
    runs per block on the workers, the statistics are combined in a tree with fan-in
    ``split_every`` and the M-step runs here, on the driver. The default Dask scheduler
    is used: the current ``distributed.Client`` if there is one, else local threads.

    Parameters
    ----------
    model : Model
        Any object implementing :class:`daskem.models.Model`. A model with a
        ``converged(stats, params, new_params, tol)`` method decides convergence itself
        (k-means: the centre shift); otherwise the fit stops when the per-sample
        log-likelihood changes by less than ``tol``.
    X : array-like, dask array, zarr.Array, str, DataSource or FitSession
        The data (see :func:`daskem.io.as_source`), or the session reading them (see
        :func:`fit_em_restarts`).
    init : Params or callable
        Initial parameters (see :func:`daskem.em.initial_params`), or a function of no
        arguments returning them, called only when there is no checkpoint to resume.
    max_iter : int
        Most iterations (records) to run, in total, counting those of a resumed checkpoint.
    tol : float
        Convergence threshold (see ``model``).
    split_every : int, optional
        Fan-in of the reduction tree (default: ``dask.config`` ``split_every``, else 8).
    accelerate : {None, "squarem"}
        ``"squarem"`` extrapolates along the EM path (:mod:`daskem.em.accelerate`) with a
        safeguard that keeps the log-likelihood from decreasing; an iteration is then an
        accepted point, rejected extrapolations cost a pass without a record, and the
        likelihood rule needs two consecutive changes below ``tol``.
    callback : callable, optional
        Called as ``callback(record, params)`` after every iteration with its
        :class:`IterationRecord` and the new parameters.
    checkpoint : str, os.PathLike, Checkpoint or CheckpointRun, optional
        Zarr location (path or fsspec URL) to checkpoint into after iterations. If it
        holds a checkpoint of the same model, data, ``split_every`` and ``accelerate``,
        the fit resumes from its newest committed iteration and reaches bitwise the same
        result as an uninterrupted fit.
    checkpoint_every : int
        Commit every ``checkpoint_every`` iterations (and always the last one).
    keep_last : int
        Committed iterations kept; older ones are deleted after each commit.
    overwrite : bool
        Discard an existing checkpoint at ``checkpoint`` and start afresh.
    cache : {"auto", True, False}
        Persist the data once in (cluster) memory, or stream them from their source on
        every pass; ``"auto"`` caches what fits comfortably (see
        :func:`daskem.em.session.should_cache`).

    Returns
    -------
    EMResult
        Final parameters, convergence state, per-iteration history and passes made.
    """
    session = as_session(X, cache=cache, split_every=split_every)
    check_accelerate(model, accelerate)
    target: Any = [checkpoint] if isinstance(checkpoint, CheckpointRun) else checkpoint
    if isinstance(checkpoint, str | os.PathLike | Checkpoint):
        # One run: prepare the location here so the initialiser is not called to count runs.
        target = _checkpoint_runs(checkpoint, model, session.source, session.split_every, overwrite, accelerate, 1)
    outcome = fit_em_restarts(
        model,
        session,
        (lambda: [init()]) if callable(init) else [init],
        max_iter=max_iter,
        tol=tol,
        accelerate=accelerate,
        callback=None if callback is None else (lambda _, record, params: callback(record, params)),
        checkpoint=target,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        overwrite=overwrite,
    )
    return outcome.results[0]
