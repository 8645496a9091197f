"""Convergence monitoring on the per-sample log-likelihood."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("daskem")


class LikelihoodDecreaseWarning(RuntimeWarning):
    """The log-likelihood went down between two EM iterations (it should not)."""


@dataclass(frozen=True)
class IterationRecord:
    """What one EM iteration measured.

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    log_likelihood : float
        Mean log-likelihood per sample of the parameters this iteration started from.
    change : float
        ``log_likelihood`` minus the previous iteration's (``inf`` for the first).
    seconds : float
        Wall-clock seconds since the previous record (passes plus M-steps).
    passes : int
        Full passes over the data made so far, initialisation included (an accelerated
        fit can make more than one pass per record).
    run : int
        The initialisation this record belongs to (fits with several restarts).
    converged : bool
        Whether the stopping rule was met at this iteration.
    """

    iteration: int
    log_likelihood: float
    change: float
    seconds: float
    passes: int = 0
    run: int = 0
    converged: bool = False


@dataclass
class ConvergenceMonitor:
    """Tracks the per-sample log-likelihood and decides convergence.

    Converged when ``abs(change) < tol``, as scikit-learn's mixtures decide, unless the
    model decides itself (``update(..., converged=...)``, e.g. k-means' centre shift). A decrease
    larger than rounding (``decrease_rtol`` relative) and than what the previous M-step may
    cost (``slack`` of :meth:`update`) raises :class:`LikelihoodDecreaseWarning`.

    Parameters
    ----------
    tol : float
        Convergence threshold on the change of the per-sample log-likelihood.
    max_iter : int
        Most iterations to run.
    decrease_rtol : float
        Relative decrease tolerated as rounding (larger for float32 computations).
    run : int
        Index of the initialisation monitored (copied into its records).
    previous : float
        The log-likelihood the first iteration's change is measured from: ``-inf`` for a
        new fit, the previous fit's ``lower_bound_`` for a warm start (as scikit-learn does,
        so a warm-started fit of one iteration can report convergence).
    """

    tol: float
    max_iter: int
    decrease_rtol: float = 1e-10
    run: int = 0
    previous: float = -math.inf
    history: list[IterationRecord] = field(default_factory=list)
    converged: bool = False

    @property
    def done(self) -> bool:
        """Whether the loop should stop (converged or out of iterations)."""
        return self.converged or len(self.history) >= self.max_iter

    def restore(self, history: dict[str, np.ndarray], converged: bool) -> None:
        """Continue from a checkpointed history (see :meth:`as_arrays`) and its verdict."""
        rows = list(
            zip(history["log_likelihood"], history["change"], history["seconds"], history["passes"], strict=True)
        )
        self.history = [
            IterationRecord(i + 1, float(ll), float(ch), float(s), int(p), self.run, converged and i == len(rows) - 1)
            for i, (ll, ch, s, p) in enumerate(rows)
        ]
        self.converged = converged

    @property
    def passes(self) -> int:
        """Passes over the data recorded so far (0 before the first record)."""
        return self.history[-1].passes if self.history else 0

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The history as float64 arrays ``log_likelihood``, ``change``, ``seconds``, ``passes``."""
        return {
            "log_likelihood": np.array([r.log_likelihood for r in self.history], dtype=np.float64),
            "change": np.array([r.change for r in self.history], dtype=np.float64),
            "seconds": np.array([r.seconds for r in self.history], dtype=np.float64),
            "passes": np.array([r.passes for r in self.history], dtype=np.float64),
        }

    def update(
        self,
        log_likelihood: float,
        seconds: float,
        passes: int = 0,
        converged: bool | None = None,
        *,
        slack: Callable[[], float] | None = None,
    ) -> IterationRecord:
        """Record an iteration's per-sample log-likelihood and return its record.

        Parameters
        ----------
        log_likelihood : float
            Mean per-sample log-likelihood of the parameters the iteration started from.
        seconds : float
            Wall-clock seconds since the previous record.
        passes : int
            Passes over the data made so far.
        converged : bool, optional
            The model's own convergence verdict; ``None`` applies ``abs(change) < tol``.
        slack : callable, optional
            The per-sample decrease the previous M-step can cause without any fault (the gap
            of a regularised M-step, :class:`daskem.models.base.RegularisedMStep`), asked
            only when the log-likelihood fell beyond rounding; only a decrease beyond it
            and rounding warns.
        """
        previous = self.history[-1].log_likelihood if self.history else self.previous
        change = log_likelihood - previous
        self.converged = abs(change) < self.tol if converged is None else bool(converged)
        record = IterationRecord(
            len(self.history) + 1, log_likelihood, change, seconds, passes, self.run, self.converged
        )
        self.history.append(record)
        rounding = self.decrease_rtol * max(1.0, abs(log_likelihood))
        if change < -rounding and (slack is None or change < -rounding - slack()):
            warnings.warn(
                f"Log-likelihood decreased at iteration {record.iteration}: "
                f"{previous!r} -> {log_likelihood!r} (change {change:.3e}).",
                LikelihoodDecreaseWarning,
                stacklevel=3,
            )
        logger.info(
            "iteration %d: log-likelihood %.6f, change %.3e, %.3fs",
            record.iteration,
            log_likelihood,
            change,
            seconds,
        )
        return record
