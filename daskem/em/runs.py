"""EM runs advancing pass by pass: restarts batched into one pass, SQUAREM, pruning.

A run is one initialisation. Several runs share every pass over the data: each block is
read once and the E-step of every active run runs on it (:class:`BatchedModel`), and
each run takes its statistics (:meth:`Run.advance`: M-step, convergence, SQUAREM's
accepted or rejected extrapolation). Runs that clearly fall behind the best can be
dropped (:func:`prune_runs`). The driver loop is :func:`daskem.em.driver.fit_em_restarts`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskem.checkpoint.checkpoint import CheckpointRun, CheckpointState
from daskem.em.accelerate import Squarem
from daskem.em.checks import check_stats
from daskem.em.monitor import ConvergenceMonitor, IterationRecord
from daskem.errors import NumericalError
from daskem.models.base import BatchedEStep, OwnConvergence, RegularisedMStep, carries_messages


@dataclass(frozen=True)
class EMResult:
    """The outcome of :func:`daskem.em.driver.fit_em`.

    Attributes
    ----------
    params : Params
        Parameters after the last M-step.
    converged : bool
        Whether the change of the per-sample log-likelihood fell below ``tol``.
    n_iter : int
        Iterations run.
    lower_bound : float
        Per-sample log-likelihood of the parameters the last iteration started from
        (scikit-learn's ``lower_bound_``).
    history : tuple of IterationRecord
        One record per iteration.
    n_samples : int
        Rows in the data.
    resumed_from : int
        Iterations read back from a checkpoint (0 for a fresh fit).
    n_passes : int
        Full passes over the data made, initialisation included (shared passes of
        restarts fitted together count once).
    pruned : bool
        Whether the run was dropped by restart pruning before it converged.
    n_steps : int
        M-steps made (the incremental and online schedules make several per iteration;
        otherwise ``n_iter``).
    online : OnlineState or None
        The online schedule's final state (:class:`daskem.em.schedules.OnlineState`), which
        ``partial_fit`` continues.
    """

    params: Any
    converged: bool
    n_iter: int
    lower_bound: float
    history: tuple[IterationRecord, ...]
    n_samples: int
    resumed_from: int = 0
    n_passes: int = 0
    pruned: bool = False
    n_steps: int = 0
    online: Any = None


@dataclass(frozen=True)
class BatchedModel:
    """Several parameter sets evaluated in the same pass over each block.

    ``params`` are tuples of parameters and statistics tuples of statistics; each block
    is read once and every parameter set's E-step runs on it. The sets belong to one
    ``model``, or to ``models[i]`` each (a model-selection grid).

    Parameters
    ----------
    model : Model
        The model (of every set when ``models`` is None).
    models : tuple of Model, optional
        One model per parameter set.
    """

    model: Any
    models: tuple[Any, ...] | None = None

    def _models(self, count: int) -> tuple[Any, ...]:
        return self.models if self.models is not None else (self.model,) * count

    @property
    def carries_messages(self) -> bool:
        """Whether the model's blocks take messages from their neighbours (one model only)."""
        return self.models is None and carries_messages(self.model)

    def summarize(self, params: tuple[Any, ...], block: Any) -> tuple[Any, ...]:
        """The block's summary under every parameter set."""
        return tuple(self.model.summarize(p, block) for p in params)

    def messages(self, params: tuple[Any, ...], summaries: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Every block's messages, one per parameter set."""
        per_set = [self.model.messages(p, [s[i] for s in summaries]) for i, p in enumerate(params)]
        return [tuple(m[b] for m in per_set) for b in range(len(summaries))]

    def e_step(self, params: tuple[Any, ...], block: Any, message: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
        """The statistics of ``block`` under every parameter set.

        Models with a batched E-step (:class:`daskem.models.base.BatchedEStep`) and one
        ``batch_key`` compute them together (sharing work between the sets); otherwise
        each set's ``e_step`` runs in turn (with its message, for a model that carries
        messages).
        """
        if message is not None:
            return tuple(self.model.e_step(p, block, m) for p, m in zip(params, message, strict=True))
        models = self._models(len(params))
        first = models[0]
        if all(isinstance(m, BatchedEStep) for m in models) and len({m.batch_key() for m in models}) == 1:
            return tuple(first.e_step_batch(params, block))
        return tuple(m.e_step(p, block) for m, p in zip(models, params, strict=True))

    def combine(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """Combine two statistics tuples element by element."""
        return tuple(m.combine(x, y) for m, x, y in zip(self._models(len(a)), a, b, strict=True))


def model_verdict(model: Any, stats: Any, params: Any, new_params: Any, tol: float) -> bool | None:
    """The model's own convergence test (:class:`daskem.models.base.OwnConvergence`), or None
    to use the likelihood rule."""
    if not isinstance(model, OwnConvergence):
        return None
    return bool(model.converged(stats, params, new_params, tol))


class Run:
    """One EM run (one initialisation) advancing pass by pass; plain or SQUAREM-accelerated."""

    def __init__(self, index: int, model: Any, monitor: ConvergenceMonitor, run: CheckpointRun | None) -> None:
        self.index = index
        self.model = model
        self.monitor = monitor
        self.run = run
        self.squarem: Squarem | None = None
        self.pending: Any = None  # parameters the next pass evaluates
        self.params: Any = None  # M(last recorded point): the run's current answer
        self.pruned = False
        self.resumed_from = 0
        self.resumed_passes = 0
        self.rules: tuple[tuple[int, float, int], ...] = ((0, monitor.tol, monitor.max_iter),)
        self.started = time.perf_counter()
        # Per-sample decrease the last M-step may cause (a regularised M-step's gap).
        self.slack: Callable[[], float] | None = None

    @property
    def active(self) -> bool:
        return not (self.pruned or self.monitor.done)

    def start(self, params: Any, accelerate: str | None) -> None:
        self.pending = self.params = params
        if accelerate == "squarem":
            self.squarem = Squarem(self.model)

    def resume(self, state: CheckpointState, accelerate: str | None) -> str | None:
        """Continue from ``state``; return a note when it continues under a new stopping rule."""
        self.params = self.model.params_from_arrays(state.params)
        self.monitor.restore(state.history, state.converged)
        self.pruned = state.pruned
        self.resumed_from = state.iteration
        self.resumed_passes = state.passes
        self.pending = self.params
        if accelerate == "squarem":
            self.squarem = Squarem(self.model)
            if "squarem_state" in state.params:  # iteration 0 has no accelerator state yet
                self.pending = self.squarem.restore(state.params, self.params)
        return self._apply_rule(state)

    def _apply_rule(self, state: CheckpointState) -> str | None:
        """Take this fit's ``tol`` and ``max_iter`` as the rule from the checkpointed iteration on.

        A run that converged under a larger ``tol`` than this fit's is reopened (its next
        pass decides again, under the new ``tol``; with the likelihood rule and no
        acceleration its last change decides at once); a run that ran out of iterations
        continues when ``max_iter`` is now larger. The change is recorded in ``rules``.
        """
        tol, max_iter = self.monitor.tol, self.monitor.max_iter
        self.rules = state.rules or ((0, tol, max_iter),)
        _, old_tol, old_max = self.rules[-1]
        if (old_tol, old_max) == (tol, max_iter):
            return None
        self.rules = (*self.rules, (state.iteration, tol, max_iter))
        if self.pruned or not state.finished:
            return None
        history = self.monitor.history
        if state.converged and tol < old_tol:
            plain = not isinstance(self.model, OwnConvergence) and self.squarem is None
            if not (plain and history and abs(history[-1].change) < tol):
                self.monitor.converged = False
        if not self.active:
            return None
        before = f"converged under tol={old_tol:g}" if state.converged else f"stopped at max_iter={old_max}"
        return (
            f"run {self.index}: the fit {before} at iteration {state.iteration} continues under "
            f"tol={tol:g}, max_iter={max_iter}"
        )

    def advance(self, stats: Any, n_samples: int, passes: int, tol: float, since: Any = None) -> IterationRecord | None:
        """Take the statistics of ``pending``; return the new record, or None for a rejected step.

        ``since``: the parameters the iteration started from, when it made M-steps before
        this one (an incremental sweep): the model's own convergence rule compares with them.
        """
        point = self.pending
        if self.squarem is not None and self.squarem.jumping:
            if stats.n_nonfinite:
                check_stats(stats, n_samples, model=self.model)
            loglik = self.model.log_likelihood(stats)
            result = None
            if np.isfinite(loglik) and loglik >= self.squarem.reference:
                with contextlib.suppress(NumericalError):
                    result = self.model.m_step(stats, point)
            if result is None:
                self.pending = self.squarem.rejected()
                return None
        else:
            check_stats(stats, n_samples, model=self.model)
            result = self.model.m_step(stats, point)
        verdict = model_verdict(self.model, stats, point if since is None else since, result, tol)
        mean_loglik = self.model.log_likelihood(stats) / stats.n
        history = self.monitor.history
        if verdict is None and self.squarem is not None and history:
            # An EM step right after an accepted jump can gain little although the fit is
            # still moving: an accelerated run stops after two small changes in a row.
            verdict = abs(mean_loglik - history[-1].log_likelihood) < tol and abs(history[-1].change) < tol
        now = time.perf_counter()
        record = self.monitor.update(mean_loglik, now - self.started, passes, verdict, slack=self.slack)
        self.started = now
        # A regularised M-step is not an exact maximiser: the next log-likelihood may fall by
        # up to its gap (an accepted SQUAREM jump is no M-step and is checked against it anyway).
        # Computed only if the next iteration's log-likelihood falls (off the hot path).
        model = self.model
        self.slack = (lambda: model.m_step_gap(stats) / stats.n) if isinstance(model, RegularisedMStep) else None
        self.params = result
        if self.squarem is not None:
            self.pending = self.squarem.accepted(point, result, self.model.log_likelihood(stats))
        else:
            self.pending = result
        return record

    def commit(
        self, keep_last: int, passes: int = 0, *, extra: dict[str, np.ndarray] | None = None, step: int | None = None
    ) -> None:
        """Commit the run's parameters and history (with a schedule's ``extra`` arrays, as
        commit number ``step`` when it commits between iterations)."""
        if self.run is None:
            return
        arrays = dict(self.params.to_arrays())
        if self.squarem is not None and self.squarem.base is not None:
            arrays.update(self.squarem.to_arrays())
        arrays.update(extra or {})
        self.run.commit(
            CheckpointState(
                len(self.monitor.history),
                arrays,
                self.monitor.as_arrays(),
                self.monitor.converged,
                not self.active,
                self.pruned,
                max(self.monitor.passes, passes),
                self.rules,
                step,
            ),
            keep_last,
        )

    def result(self, n_samples: int, passes: int) -> EMResult:
        history = tuple(self.monitor.history)
        return EMResult(
            params=self.params,
            converged=self.monitor.converged,
            n_iter=len(history),
            lower_bound=history[-1].log_likelihood if history else -np.inf,
            history=history,
            n_samples=n_samples,
            resumed_from=self.resumed_from,
            n_passes=passes,
            pruned=self.pruned,
            n_steps=len(history),
        )


#: Records a run needs before pruning may judge it.
PRUNE_MIN_RECORDS = 3


def _remaining_gain(history: Sequence[IterationRecord]) -> float:
    """An estimate of the log-likelihood a run still gains, from its geometric convergence rate.

    Infinite (never prune) unless the last two changes are positive and shrinking.
    """
    last, before = history[-1].change, history[-2].change
    if not (0.0 < last < before):
        return math.inf
    rate = last / before
    return last * rate / (1.0 - rate)


def prune_runs(runs: Sequence[Run], tol: float) -> list[int]:
    """Mark as pruned the active runs that clearly fall behind the best; return their indices.

    A run is clearly behind when its log-likelihood plus twice its estimated remaining gain
    (:func:`_remaining_gain`) plus ``tol`` is still below the best run's log-likelihood.
    """
    recorded = [r for r in runs if r.monitor.history]
    if not recorded:
        return []
    best = max(r.monitor.history[-1].log_likelihood for r in recorded)
    dropped = []
    for r in recorded:
        history = r.monitor.history
        if not r.active or len(history) < PRUNE_MIN_RECORDS:
            continue
        if history[-1].log_likelihood + 2.0 * _remaining_gain(history) + tol < best:
            r.pruned = True
            dropped.append(r.index)
    return dropped


@dataclass(frozen=True)
class RestartsResult:
    """The outcome of :func:`daskem.em.driver.fit_em_restarts`.

    Attributes
    ----------
    best : int
        Index of the run with the highest final lower bound (the first of equals).
    results : tuple of EMResult
        One per initialisation, in order.
    pruned : tuple of int
        Indices of the runs dropped by pruning.
    n_passes : int
        Passes over the data made in all (shared by the runs), initialisation included.
    """

    best: int
    results: tuple[EMResult, ...]
    pruned: tuple[int, ...]
    n_passes: int
