"""What a fit is doing, pass by pass: pass counting and phase events for progress displays.

Every full pass over the data a :class:`daskem.em.session.FitSession` makes (the
session's own count is ``n_passes_``) calls :func:`count_pass`. Inside
:func:`counting_passes` the pass is counted too (whatever session made it); inside
:func:`reporting_progress` a listener (the command line's display) also hears a
:class:`FitEvent` for it, labelled with the phase the outermost fit is in:
``"initialising"`` (pass i of at most n) or ``"fitting"``.
Both are context variables, so nothing is threaded through the estimators, the engine
and the initialisers, and nested fits (the k-means iterations of an initialisation)
count towards the phase of the fit that started them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class FitEvent:
    """One step of a fit, as a progress display shows it.

    Attributes
    ----------
    phase : str
        ``"reading"`` (the estimator opens the data and reads its fingerprint),
        ``"initialising"`` (passes of the initialiser), ``"fitting"`` (EM iterations),
        ``"resumed"`` (a run continues from checkpointed iteration ``iteration``), ``"step"``
        (a schedule's M-step inside an iteration) or
        ``"note"`` (a message about the fit, e.g. a resumed run continuing under a new
        stopping rule).
    passes : int
        Passes made in this phase so far.
    total : int or None
        Passes this phase makes at most, when known.
    message : str
        Text of a ``"note"``.
    run : int
        The run (initialisation) a ``"resumed"`` event or a note is about.
    iteration : int
        The checkpointed iteration a ``"resumed"`` run continues from (0: its initial
        parameters); for a ``"step"`` (an M-step inside an iteration of the incremental
        or online schedule, :mod:`daskem.em.schedules`), the iteration (sweep or epoch)
        it belongs to.
    step : int
        A ``"step"``'s position in its iteration: blocks read so far.
    blocks : int
        A ``"step"``'s blocks per iteration.
    """

    phase: str
    passes: int = 0
    total: int | None = None
    message: str = ""
    run: int = 0
    iteration: int = 0
    step: int = 0
    blocks: int = 0


@dataclass
class PassCount:
    """Full passes over the data made inside :func:`counting_passes`."""

    passes: int = 0


@dataclass
class _Phase:
    name: str
    total: int | None
    passes: int = 0


_PASS_COUNT: contextvars.ContextVar[PassCount | None] = contextvars.ContextVar("daskem_pass_count", default=None)
_LISTENER: contextvars.ContextVar[Callable[[FitEvent], None] | None] = contextvars.ContextVar(
    "daskem_progress_listener", default=None
)
_PHASE: contextvars.ContextVar[_Phase | None] = contextvars.ContextVar("daskem_phase", default=None)


@contextlib.contextmanager
def counting_passes() -> Iterator[PassCount]:
    """Count the passes over the data made inside, by any :class:`daskem.em.session.FitSession`."""
    count = PassCount()
    token = _PASS_COUNT.set(count)
    try:
        yield count
    finally:
        _PASS_COUNT.reset(token)


@contextlib.contextmanager
def reporting_progress(listener: Callable[[FitEvent], None]) -> Iterator[None]:
    """Call ``listener(event)`` for every phase change and pass of the fits run inside.

    Parameters
    ----------
    listener : callable
        Receives each :class:`FitEvent`; it runs in the driver thread, between passes.
    """
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def notify(event: FitEvent) -> None:
    """Tell the listener of :func:`reporting_progress`, if any, about ``event``."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(event)


@contextlib.contextmanager
def phase(name: str, total: int | None = None) -> Iterator[None]:
    """Label the passes made inside as phase ``name`` (at most ``total`` passes).

    Only the outermost phase counts: a phase entered inside another (a nested fit) is
    part of it and changes nothing.
    """
    if _PHASE.get() is not None:
        yield
        return
    current = _Phase(name, total)
    token = _PHASE.set(current)
    notify(FitEvent(name, 0, total))
    try:
        yield
    finally:
        _PHASE.reset(token)


def count_pass() -> None:
    """Add one pass to the innermost :func:`counting_passes` and report it to the listener."""
    count = _PASS_COUNT.get()
    if count is not None:
        count.passes += 1
    current = _PHASE.get()
    if current is not None:
        current.passes += 1
        notify(FitEvent(current.name, current.passes, current.total))
