"""Schedules: which blocks each M-step reads, beyond batch EM's every block.

* ``"batch"``: every iteration reads every block (:func:`daskem.em.driver.fit_em_restarts`).
* ``"incremental"`` (Neal & Hinton 1998): each block's last statistics are kept; a step
  reads ``step_blocks`` blocks (cyclically, in order), replaces their statistics in the
  total and runs the M-step. The first iteration is a full E-step at the start (every
  block's statistics, one pass) and its M-step, as Neal & Hinton start: every M-step then
  sees statistics of all the data, each step raises their free energy ``F(q, theta)``,
  a lower bound of the log-likelihood tight at the blocks just read. An iteration after
  the first is a sweep over all blocks; with every block in one step it is batch EM bit
  for bit (the total is folded in the order of a pass's reduction tree,
  :func:`daskem.em.graph.fold_tree`). The per-block statistics live on the driver and in
  the checkpoint.
* ``"online"`` (Cappé & Moulines 2009): running statistics, per row,
  ``s <- s + gamma_t (sbar(step's blocks) - s)`` with ``gamma_t = (t + offset)^-decay``
  (the first step takes its blocks' statistics as they are), and an M-step after every
  step on ``s`` scaled to the rows seen so far; blocks are visited in a seeded random
  order per epoch (``shuffle``); an iteration is an epoch. Optional Polyak-Ruppert
  averaging of the parameters (in the model's vector form, the coordinates SQUAREM uses).
* ``"stochastic"`` (Celeux & Diebolt 1985): every iteration reads every block and draws
  each row's latent variable from its posterior (uniforms positioned by the row's index
  in the data: independent of the chunking); the chain runs ``max_iter`` iterations and
  its parameters can be averaged over the last ones.

Statistics computed under different parameters are merged and scaled by the model
(:class:`daskem.models.base.StatsAlgebra`). Checkpoints commit between iterations (every
``checkpoint_every`` steps) with the schedule's state, so a resume continues bitwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskem.checkpoint.checkpoint import CheckpointRun, CheckpointState
from daskem.em.checks import check_stats
from daskem.em.graph import fold_tree
from daskem.em.monitor import ConvergenceMonitor, IterationRecord
from daskem.em.progress import FitEvent, notify, phase
from daskem.em.runs import EMResult, Run, model_verdict
from daskem.em.session import Cache, FitSession, as_session, single_threaded_blas
from daskem.errors import ParameterError
from daskem.models.base import (
    OwnConvergence,
    SampledEStep,
    StatsAlgebra,
    VectorForm,
    carries_messages,
    merge_stats,
    row_uniforms,
)

#: The schedules, batch first.
SCHEDULES = ("batch", "incremental", "online", "stochastic")

#: Array names of a schedule's state in a checkpointed iteration.
_STATE = "schedule_state"
_AVERAGE = "schedule_average"
_STATS = "schedule_stats"
_CURRENT = "schedule_current"
_EPOCH_START = "schedule_epoch_start"


@dataclass(frozen=True)
class Schedule:
    """How a fit reads its blocks (see the module docstring).

    Parameters
    ----------
    name : {"batch", "incremental", "online", "stochastic"}
        The schedule.
    step_blocks : int, optional
        Blocks read per step of the incremental and online schedules (default: incremental
        ``ceil(blocks / 4)``, online 1).
    learning_decay : float
        Online: ``decay`` of the step size ``(t + offset)^-decay``, in (0.5, 1].
    learning_offset : float
        Online: ``offset`` (>= 0) of the step size.
    average : bool or int
        Online and stochastic: report the average of the parameters over the steps
        (online) or iterations (stochastic) after the first ``average`` ones (``True``:
        the second half of ``max_iter``'s steps or iterations), not the last ones.
    shuffle : bool
        Online: visit the blocks in a new seeded random order every epoch (else in order).
    seed : int
        The seed of the epoch orders and of stochastic EM's draws.
    """

    name: str = "batch"
    step_blocks: int | None = None
    learning_decay: float = 0.55
    learning_offset: float = 0.0
    average: bool | int = False
    shuffle: bool = True
    seed: int = 0

    def config(self) -> dict[str, Any]:
        """What the schedule contributes to a checkpoint's compared configuration (batch: nothing)."""
        if self.name == "batch":
            return {}
        out: dict[str, Any] = {"name": self.name, "seed": int(self.seed)}
        if self.name in ("incremental", "online"):
            out["step_blocks"] = self.step_blocks
        if self.name == "online":
            out.update(learning_decay=float(self.learning_decay), learning_offset=float(self.learning_offset))
            out["shuffle"] = bool(self.shuffle)
        if self.name in ("online", "stochastic"):
            out["average"] = self.average if isinstance(self.average, bool) else int(self.average)
        return {"schedule": out}

    def blocks_per_step(self, n_blocks: int) -> int:
        """Blocks read per step (at most ``n_blocks``)."""
        default = -(-n_blocks // 4) if self.name == "incremental" else 1
        return max(1, min(n_blocks, self.step_blocks or default))

    def average_from(self, steps: int) -> int | None:
        """The steps after which the average starts, or None without averaging."""
        if self.average is False:
            return None
        return steps // 2 if self.average is True else int(self.average)

    def step_size(self, step: int) -> float:
        """``gamma`` of online step ``step`` (1-based): ``(step + offset)^-decay``."""
        return float((step + self.learning_offset) ** -self.learning_decay)

    def epoch_order(self, epoch: int, n_blocks: int) -> np.ndarray:
        """The order online EM visits the blocks in epoch ``epoch`` (0-based)."""
        if not self.shuffle:
            return np.arange(n_blocks)
        return np.random.default_rng([int(self.seed), int(epoch)]).permutation(n_blocks)


def check_schedule_settings(estimator: str, schedule: Schedule) -> None:
    """Refuse an unknown schedule or a setting out of its range (naming the value and the fix)."""
    name = schedule.name
    if name not in SCHEDULES:
        raise ParameterError(
            f"The 'schedule' parameter of {estimator} must be a str among {list(SCHEDULES)}. Got {name!r} instead."
        )
    decay, offset = schedule.learning_decay, schedule.learning_offset
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.5 < decay <= 1.0:
        raise ParameterError(
            f"The 'learning_decay' parameter of {estimator} must be a float in (0.5, 1] (the step sizes "
            f"(t + offset)^-decay must sum to infinity and their squares not). Got {decay!r} instead."
        )
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not offset >= 0.0:
        raise ParameterError(
            f"The 'learning_offset' parameter of {estimator} must be a float >= 0. Got {offset!r} instead."
        )
    step = schedule.step_blocks
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1):
        raise ParameterError(
            f"The 'step_blocks' parameter of {estimator} must be an int >= 1 or None. Got {step!r} instead."
        )
    average = schedule.average
    if not isinstance(average, bool | int | np.integer) or (not isinstance(average, bool) and average < 0):
        raise ParameterError(
            f"The 'average' parameter of {estimator} must be a bool or an int >= 0. Got {average!r} instead."
        )
    if not isinstance(schedule.shuffle, bool | np.bool_):
        raise ParameterError(f"The 'shuffle' parameter of {estimator} must be a bool. Got {schedule.shuffle!r}.")


def check_schedule(estimator: str, schedule: Schedule, model: Any) -> None:
    """Refuse a schedule, or a schedule setting, the model cannot run (naming the fix)."""
    check_schedule_settings(estimator, schedule)
    name, average = schedule.name, schedule.average
    if name in ("incremental", "online") and not isinstance(model, StatsAlgebra):
        raise ParameterError(f"{estimator} cannot run schedule={name!r}: its statistics cannot be merged.")
    if name in ("online", "stochastic") and average is not False and not isinstance(model, VectorForm):
        raise ParameterError(f"{estimator} cannot average its parameters (average={average!r}): use average=False.")
    if name == "stochastic" and not isinstance(model, SampledEStep):
        raise ParameterError(
            f"{estimator} has no stochastic E-step: schedule='stochastic' draws the components of a mixture "
            "(GaussianMixture). Use schedule='batch', 'incremental' or 'online'."
        )


def _require_independent_blocks(model: Any, schedule: Schedule) -> None:
    if schedule.name in ("incremental", "online") and carries_messages(model):
        raise ParameterError(
            f"schedule={schedule.name!r} reads some blocks per step, but sequences run across blocks here (a "
            "sequence is longer than a block). Use blocks holding whole sequences (--chunk-rows, or rechunk the "
            "data to at least the longest sequence's length), or schedule='batch'."
        )


# -- statistics as checkpoint arrays -----------------------------------------------------------


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """The leaves of statistics (nested dataclasses of arrays and numbers), by field path."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            leaf for f in dataclasses.fields(value) for leaf in _leaves(getattr(value, f.name), path + "." + f.name)
        ]
    return [(path, value)]


def stats_to_arrays(items: Sequence[Any], prefix: str) -> dict[str, np.ndarray]:
    """A list of statistics as float arrays: per leaf, the values of every item one after
    another (``prefix + path``) and their shapes (``prefix + path + "_shape"``)."""
    columns = list(zip(*[_leaves(s) for s in items], strict=True))
    out = {}
    for column in columns:
        path = column[0][0]
        values = [np.asarray(v, dtype=np.float64) for _, v in column]
        out[prefix + path] = np.concatenate([v.ravel() for v in values]) if values else np.zeros(0)
        # Each row: the number of dimensions, then the shape (a scalar's row is [0]).
        out[prefix + path + "_shape"] = np.array([(v.ndim, *v.shape) for v in values], dtype=np.float64)
    return out


def stats_from_arrays(arrays: dict[str, np.ndarray], prefix: str, like: Any) -> list[Any]:
    """The statistics written by :func:`stats_to_arrays`, rebuilt on the structure of ``like``."""
    paths = [p for p, _ in _leaves(like)]
    counts = {len(arrays[prefix + p + "_shape"]) for p in paths}
    if len(counts) != 1:
        raise ValueError(f"checkpointed statistics {prefix!r} are inconsistent")
    leaves: dict[str, list[Any]] = {}
    for path, template in _leaves(like):
        flat, shapes = arrays[prefix + path], arrays[prefix + path + "_shape"].astype(np.int64)[:, 1:]
        ends = np.cumsum([int(np.prod(s)) for s in shapes])
        pieces = np.split(flat, ends[:-1]) if len(ends) else []
        kind = type(template) if isinstance(template, float | int) else None
        leaves[path] = [kind(p[0]) if kind is not None else p.reshape(s) for p, s in zip(pieces, shapes, strict=True)]
    return [_rebuild(like, "", {p: v[i] for p, v in leaves.items()}) for i in range(counts.pop())]


def params_to_arrays(params: Any, prefix: str) -> dict[str, np.ndarray]:
    """Parameters' arrays (``Params.to_arrays()``) named ``prefix.NAME`` in a checkpoint."""
    return {f"{prefix}.{k}": v for k, v in params.to_arrays().items()}


def params_from_arrays(model: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """The parameters :func:`params_to_arrays` stored under ``prefix``."""
    return model.params_from_arrays({k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + ".")})


def _rebuild(like: Any, path: str, values: dict[str, Any]) -> Any:
    if dataclasses.is_dataclass(like) and not isinstance(like, type):
        changes = {
            f.name: _rebuild(getattr(like, f.name), path + "." + f.name, values) for f in dataclasses.fields(like)
        }
        return dataclasses.replace(like, **changes)
    return values[path]


# -- the online update, shared by fit and partial_fit ------------------------------------------


@dataclass(frozen=True)
class OnlineState:
    """Online EM's state between steps.

    Attributes
    ----------
    params : Params
        The current parameters (the next step's E-step uses them).
    running : Stats or None
        The running statistics per row (None before the first step).
    steps : int
        Steps made.
    rows_seen : float
        Rows the steps read (the M-step sees ``running`` scaled to them).
    average : ndarray or None
        The mean of the parameters' vector form over the averaged steps.
    n_averaged : int
        Steps averaged.
    """

    params: Any
    running: Any = None
    steps: int = 0
    rows_seen: float = 0.0
    average: np.ndarray | None = None
    n_averaged: int = 0

    def reported(self, model: Any) -> Any:
        """The parameters to report: the average when steps were averaged, else the current ones."""
        if self.average is None or not self.n_averaged:
            return self.params
        return model.from_vector(self.average, self.params)

    def moved(self, model: Any, params: Any, step: int, average_from: int | None, **changes: Any) -> OnlineState:
        """The state after step ``step`` reached ``params`` (with the other ``changes``): the
        vector-form average takes them once more than ``average_from`` steps were made."""
        average, n_averaged = self.average, self.n_averaged
        if average_from is not None and step > average_from:
            vector = model.to_vector(params)
            n_averaged += 1
            average = vector if average is None else average + (vector - average) / n_averaged
        return dataclasses.replace(self, params=params, steps=step, average=average, n_averaged=n_averaged, **changes)

    def to_arrays(self, model: Any) -> dict[str, np.ndarray]:
        """The state as checkpoint arrays (the reported parameters are stored beside them)."""
        out = params_to_arrays(self.params, _CURRENT)
        if self.running is not None:
            out.update(stats_to_arrays([self.running], _STATS))
        if self.average is not None:
            out[_AVERAGE] = self.average
        return out

    @classmethod
    def from_arrays(cls, model: Any, arrays: dict[str, np.ndarray], counters: Sequence[float]) -> OnlineState:
        """The state :meth:`to_arrays` wrote, with its counters ``(steps, rows_seen, n_averaged)``."""
        params = params_from_arrays(model, arrays, _CURRENT)
        running = None
        if any(k.startswith(_STATS) for k in arrays):
            running = stats_from_arrays(arrays, _STATS, model.zero_stats(params))[0]
        steps, rows_seen, n_averaged = counters
        return cls(params, running, int(steps), float(rows_seen), arrays.get(_AVERAGE), int(n_averaged))


def online_step(
    model: Any, schedule: Schedule, state: OnlineState, stats: Any, average_from: int | None
) -> OnlineState:
    """One online EM step from the statistics ``stats`` of the step's blocks.

    ``s <- (1 - gamma) s + gamma stats / stats.n`` (``gamma = 1`` on the first step), then
    the M-step of ``s`` scaled to the rows seen; the vector-form average is updated once
    more than ``average_from`` steps were made.
    """
    step = state.steps + 1
    batch = model.scale(stats, 1.0 / stats.n)
    if state.running is None:
        running = batch
    else:
        gamma = schedule.step_size(step)
        running = merge_stats(model, model.scale(batch, gamma), model.scale(state.running, 1.0 - gamma))
    rows = state.rows_seen + stats.n
    params = model.m_step(model.scale(running, rows), state.params)
    return state.moved(model, params, step, average_from, running=running, rows_seen=rows)


def step_stats(model: Any, session: FitSession, params: Any, chosen: Sequence[int] | None) -> Any:
    """The statistics of the blocks ``chosen`` (None: all; one compute), folded in a pass's tree order."""
    parts = session.block_stats(model, params, chosen)
    return fold_tree(functools.partial(merge_stats, model), parts, session.split_every)


def sampled_e_step(model: Any, params: Any, block: Any, first: int, seed: int, iteration: int) -> Any:
    """Stochastic EM's task for one block: uniforms by the rows' indices in the data
    (:func:`daskem.models.base.row_uniforms`, stream ``iteration``)."""
    return model.sample_e_step(params, block, row_uniforms(seed, first, block.shape[0], 1, stream=iteration))


# -- the driver loops ------------------------------------------------------------------------


class _Walk:
    """A fit under a schedule other than batch: the run, its session and its commits."""

    def __init__(
        self,
        model: Any,
        session: FitSession,
        schedule: Schedule,
        run: Run,
        *,
        max_iter: int,
        tol: float,
        keep_last: int,
        checkpoint_every: int,
        callback: Callable[[IterationRecord, Any], None] | None,
    ) -> None:
        self.model, self.session, self.schedule, self.run = model, session, schedule, run
        self.max_iter, self.tol = max_iter, tol
        self.keep_last, self.checkpoint_every, self.callback = keep_last, checkpoint_every, callback
        self.n_blocks = len(session.blocks())
        self.per_step = schedule.blocks_per_step(self.n_blocks)
        self.steps = 0  # M-steps made (the checkpoint's commit numbers)

    @property
    def n_samples(self) -> int:
        return int(self.session.source.n_samples)

    def total(self, parts: Sequence[Any]) -> Any:
        """The statistics ``parts`` folded in the order of a pass's reduction tree."""
        return fold_tree(functools.partial(merge_stats, self.model), parts, self.session.split_every)

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take the schedule's state from a checkpointed iteration's arrays (none: a fresh start)."""
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The schedule's state as checkpoint arrays."""
        raise NotImplementedError

    def fit(self) -> None:
        """Run the schedule until the run stops."""
        raise NotImplementedError

    def commit(self) -> None:
        """Commit the run's state when due (every ``checkpoint_every`` steps, and at its end)."""
        if self.run.run is None:
            return
        due = self.steps % self.checkpoint_every == 0 or not self.run.active
        if due:
            self.run.commit(self.keep_last, self.session.passes, extra=self.state_arrays(), step=self.steps)

    def recorded(self, record: IterationRecord) -> None:
        self.commit()
        if self.callback is not None:
            self.callback(record, self.run.params)

    def progress(self, epoch: int, position: int) -> None:
        notify(FitEvent("step", passes=self.session.passes, iteration=epoch, step=position, blocks=self.n_blocks))


class _Incremental(_Walk):
    """Neal & Hinton's incremental EM (see the module docstring).

    ``blocks[i]`` holds block ``i``'s last statistics (None before the first iteration's
    full E-step reads them all): every M-step sees statistics of every block.
    """

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.blocks: list[Any] = [None] * self.n_blocks
        self.position = 0
        if _STATE in arrays:
            self.steps, self.position = (int(v) for v in arrays[_STATE])
            if any(k.startswith(_STATS) for k in arrays):  # every block's (state_arrays)
                self.blocks = stats_from_arrays(arrays, _STATS, self.model.zero_stats(self.run.pending))

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {_STATE: np.array([self.steps, self.position], dtype=np.float64)}
        if self.blocks[-1] is not None:  # every block's, once the first iteration has read them
            out.update(stats_to_arrays(self.blocks, _STATS))
        return out

    def fit(self) -> None:
        model, session, run = self.model, self.session, self.run
        while run.active:
            params = since = run.pending
            if self.blocks[-1] is None:  # the start: every block's statistics under it, one pass
                self.blocks = session.block_stats(model, params)
                self.position = self.n_blocks
            while self.position < self.n_blocks:
                chosen = range(self.position, min(self.position + self.per_step, self.n_blocks))
                for i, stats in zip(chosen, session.block_stats(model, params, chosen), strict=True):
                    self.blocks[i] = stats
                self.position = chosen.stop
                if self.position < self.n_blocks:  # an M-step inside the sweep: no record
                    total = self.total(self.blocks)
                    check_stats(total, self.n_samples, model=model)
                    params = run.pending = run.params = model.m_step(total, params)
                    self.steps += 1
                    self.commit()
                    self.progress(len(run.monitor.history) + 1, self.position)
            run.pending = params
            record = run.advance(self.total(self.blocks), self.n_samples, session.passes, self.tol, since)
            assert record is not None  # no acceleration: every M-step is a record
            self.steps += 1
            self.position = 0
            self.recorded(record)


class _Online(_Walk):
    """Cappé & Moulines' online EM (see the module docstring)."""

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.position = 0
        self.epoch_loglik = self.epoch_rows = 0.0
        self.epoch_start = self.run.pending
        if _STATE in arrays:
            values = arrays[_STATE]
            self.steps, self.position = int(values[0]), int(values[1])
            self.epoch_loglik, self.epoch_rows = float(values[2]), float(values[3])
            self.state = OnlineState.from_arrays(self.model, arrays, (values[4], values[5], values[6]))
            self.epoch_start = params_from_arrays(self.model, arrays, _EPOCH_START)
        else:
            self.state = OnlineState(self.run.pending)

    def state_arrays(self) -> dict[str, np.ndarray]:
        s = self.state
        counters = [self.steps, self.position, self.epoch_loglik, self.epoch_rows, s.steps, s.rows_seen, s.n_averaged]
        out = {_STATE: np.array(counters, dtype=np.float64), **s.to_arrays(self.model)}
        out.update(params_to_arrays(self.epoch_start, _EPOCH_START))
        return out

    def fit(self) -> None:
        model, session, run, schedule = self.model, self.session, self.run, self.schedule
        average_from = schedule.average_from(self.max_iter * -(-self.n_blocks // self.per_step))
        while run.active:
            epoch = len(run.monitor.history)
            order = schedule.epoch_order(epoch, self.n_blocks)
            while self.position < self.n_blocks:
                chosen = order[self.position : self.position + self.per_step].tolist()
                stats = step_stats(model, session, self.state.params, chosen)
                check_stats(stats, self.n_samples, model=model)
                self.state = online_step(model, schedule, self.state, stats, average_from)
                self.epoch_loglik += model.log_likelihood(stats)
                self.epoch_rows += stats.n
                self.position += len(chosen)
                self.steps += 1
                run.pending = self.state.params
                run.params = self.state.reported(model)
                if self.position < self.n_blocks:
                    self.commit()
                self.progress(epoch + 1, self.position)
            verdict = None
            if isinstance(model, OwnConvergence):
                running = self.model.scale(self.state.running, self.state.rows_seen)
                verdict = model_verdict(model, running, self.epoch_start, self.state.params, self.tol)
            now = time.perf_counter()
            mean = self.epoch_loglik / self.epoch_rows
            record = run.monitor.update(mean, now - run.started, session.passes, verdict)
            run.started = now
            self.position, self.epoch_loglik, self.epoch_rows = 0, 0.0, 0.0
            self.epoch_start = self.state.params
            self.recorded(record)


class _Stochastic(_Walk):
    """Stochastic EM (see the module docstring): ``max_iter`` iterations of drawn components."""

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = OnlineState(self.run.pending)
        if _STATE in arrays:
            values = arrays[_STATE]
            self.steps = int(values[0])
            self.state = OnlineState.from_arrays(self.model, arrays, (values[0], 0.0, values[1]))
        self.run.pending = self.state.params

    def state_arrays(self) -> dict[str, np.ndarray]:
        s = self.state
        return {_STATE: np.array([self.steps, s.n_averaged], dtype=np.float64), **s.to_arrays(self.model)}

    def fit(self) -> None:
        model, session, run = self.model, self.session, self.run
        average_from = self.schedule.average_from(self.max_iter)
        firsts = np.concatenate([[0], np.cumsum(session.block_rows)[:-1]]).astype(np.int64)
        while run.active:
            iteration = len(run.monitor.history) + 1
            args = [(int(first), int(self.schedule.seed), iteration) for first in firsts]
            params = self.state.params
            stats = session.stats(model, params, sampled_e_step, args)
            check_stats(stats, self.n_samples, model=model)
            new = model.m_step(stats, params)
            self.state = self.state.moved(model, new, iteration, average_from)
            self.steps = iteration
            now = time.perf_counter()
            # A chain, not a convergent sequence: it runs max_iter iterations.
            record = run.monitor.update(model.log_likelihood(stats) / stats.n, now - run.started, session.passes, False)
            run.started = now
            run.pending = new
            run.params = self.state.reported(model)
            self.recorded(record)


_WALKS: dict[str, type[_Walk]] = {"incremental": _Incremental, "online": _Online, "stochastic": _Stochastic}


def fit_scheduled(
    model: Any,
    X: Any,
    init: Any,
    schedule: Schedule,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    callback: Callable[[IterationRecord, Any], None] | None = None,
    checkpoint: CheckpointRun | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    cache: Cache = "auto",
    previous_lower_bound: float = -math.inf,
) -> EMResult:
    """Fit ``model`` under an incremental, online or stochastic schedule (see the module docstring).

    Parameters
    ----------
    model : Model
        The model (:class:`daskem.models.base.StatsAlgebra` for incremental and online,
        :class:`daskem.models.base.SampledEStep` for stochastic EM).
    X : array-like, DataSource or FitSession
        The data, or the session reading them.
    init : Params or callable
        The initial parameters, or a function of no arguments returning them (called only
        when there is no checkpoint to resume).
    schedule : Schedule
        The schedule (not ``"batch"``).
    max_iter : int
        Most iterations: sweeps (incremental), epochs (online) or chain iterations (stochastic).
    tol : float
        Convergence threshold on the change of the per-sample log-likelihood between
        iterations (or the model's own rule); stochastic EM runs ``max_iter`` iterations.
    split_every, cache
        As for :func:`daskem.em.driver.fit_em`.
    callback : callable, optional
        ``callback(record, params)`` after every iteration.
    checkpoint : CheckpointRun, optional
        Where to commit, every ``checkpoint_every`` steps (M-steps) and at the end, with
        the schedule's state; a checkpoint there is resumed bitwise.
    checkpoint_every, keep_last
        As for :func:`daskem.em.driver.fit_em` (``checkpoint_every`` counts steps).
    previous_lower_bound : float
        The per-sample log-likelihood the first change is measured from (a warm start).

    Returns
    -------
    EMResult
    """
    if schedule.name == "batch":
        raise ValueError("fit_scheduled runs the incremental, online and stochastic schedules; batch is fit_em.")
    check_schedule(type(model).__name__, schedule, model)
    _require_independent_blocks(model, schedule)
    session = as_session(X, cache=cache, split_every=split_every)
    source = session.source
    # The records of online and stochastic EM are of different parameters' draws: a
    # decrease is no fault. Incremental EM's totals mix parameters too.
    monitor = ConvergenceMonitor(
        tol=tol, max_iter=max_iter, decrease_rtol=math.inf, run=0, previous=float(previous_lower_bound)
    )
    run = Run(0, model, monitor, checkpoint)
    state: CheckpointState | None = None if checkpoint is None else checkpoint.latest(validate=model.params_from_arrays)
    if state is not None:
        note = run.resume(state, None)
        notify(FitEvent("resumed", run=0, iteration=state.iteration))
        if note:
            notify(FitEvent("note", message=note, run=0))
        saved = state.params
    else:
        with phase("initialising"):
            run.start(init() if callable(init) else init, None)
        saved = {}
    session.resume_from(max(run.monitor.passes, run.resumed_passes))
    walk = _WALKS[schedule.name](
        model,
        session,
        schedule,
        run,
        max_iter=max_iter,
        tol=tol,
        keep_last=keep_last,
        checkpoint_every=checkpoint_every,
        callback=callback,
    )
    walk.restore(saved)
    if state is None:
        walk.commit()
    with phase("fitting"), single_threaded_blas():
        if run.active:
            session.check_chunking()
        walk.fit()
    online = walk.state if isinstance(walk, _Online) else None
    return dataclasses.replace(run.result(source.n_samples, session.passes), n_steps=walk.steps, online=online)
