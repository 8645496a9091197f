"""What the ``daskem`` command shows: fit and selection progress, and model summaries.

The CLI owns the terminal (rich); the library logs. Progress goes to stderr, summaries
and tables to stdout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from daskem.em.monitor import IterationRecord
    from daskem.em.progress import FitEvent
    from daskem.registry import ModelEntry


def remaining_iterations(history: list[IterationRecord], tol: float, max_iter: int) -> int:
    """Iterations still to run, estimated from the geometric decay of the last two changes.

    EM converges linearly near an optimum: with rate ``r`` between successive changes the
    change falls below ``tol`` after ``log(tol / change) / log(r)`` more iterations. Capped
    by ``max_iter``; ``max_iter`` minus the iterations done when there is no rate yet.
    """
    left = max(max_iter - len(history), 0)
    if len(history) < 3 or tol <= 0.0:
        return left
    last, before = abs(history[-1].change), abs(history[-2].change)
    if not (0.0 < last < before) or last <= tol:
        return left if last > tol else 0
    rate = last / before
    return min(left, math.ceil(math.log(tol / last) / math.log(rate)))


PROGRESS_MODES = ("auto", "bar", "lines", "jsonl", "none")

#: What an iteration of a schedule is called (:mod:`daskem.em.schedules`); batch and
#: stochastic EM make one M-step per iteration and emit no "step" events.
ITERATION_UNITS = {"online": "epoch", "incremental": "sweep"}


class IterationDisplay:
    """Progress of a fit: its phase (initialising: pass i of n, fitting) and every EM iteration.

    A live bar (``bar``), one line per phase change, pass of the initialiser and iteration
    (``lines``), one JSON object per line for batch logs (``jsonl``), or nothing
    (``none``); ``auto`` is a bar on a terminal and lines otherwise. Everything goes to
    the console (stderr). The instance is both the fit's ``callback`` (iteration records)
    and the listener of :func:`daskem.em.progress.reporting_progress` (:meth:`event`).

    Under the incremental and online schedules an iteration (a sweep, an epoch) makes an
    M-step every few blocks: the bar shows the position (``epoch 2, block 37/120``) and
    advances by the blocks read; ``lines`` and ``jsonl`` show the first step of every
    iteration and then a step whenever another tenth of the blocks has been read (at most
    ten per iteration however many blocks there are), not the last one (the iteration's
    own line follows it).
    """

    def __init__(self, console: Console, est: Any, mode: str) -> None:
        self.console = console
        self.checkpoint = est.checkpoint
        self.max_iter = est.max_iter
        self.tol = est.tol
        self.mode = ("bar" if console.is_terminal else "lines") if mode == "auto" else mode
        self.history: dict[int, list[IterationRecord]] = {}
        self.resumed: int | None = None
        self.schedule = str(getattr(est, "schedule", "batch"))
        self.unit = ITERATION_UNITS.get(self.schedule, "iteration")
        self.shown_step: tuple[int, int] = (0, -1)  # (iteration, tenth of its blocks) of the last step shown
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "log-lik {task.fields[ll]}  change {task.fields[change]}  {task.fields[secs]} s/it  "
                "ETA {task.fields[eta]}"
            ),
            TimeElapsedColumn(),
            console=console,
            disable=self.mode != "bar",
        )
        self.task = self.progress.add_task(
            "fit", total=est.max_iter, phase="starting", ll="-", change="-", secs="-", eta="-"
        )

    @property
    def records(self) -> int:
        """Iterations recorded during this fit (0: a finished checkpoint had nothing left to do)."""
        return sum(len(h) for h in self.history.values())

    def __enter__(self) -> IterationDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def _say(self, text: str, entry: dict[str, Any]) -> None:
        if self.mode == "jsonl":
            self.console.out(json.dumps(entry), highlight=False)
        elif self.mode in ("bar", "lines"):
            self.console.print(text, highlight=False, soft_wrap=True)

    def event(self, event: FitEvent) -> None:
        """Show a phase change, a pass of the initialiser, a resumed run or a note."""
        if event.phase == "resumed":
            if self.resumed is None:
                self.resumed = event.iteration
                where = "initialisation (iteration 0)" if event.iteration == 0 else f"iteration {event.iteration}"
                self._say(
                    f"Resuming the fit checkpointed in {self.checkpoint} after {where}",
                    {"event": "resumed", "run": event.run, "iteration": event.iteration},
                )
            return
        if event.phase == "note":
            self._say(event.message, {"event": "note", "run": event.run, "message": event.message})
            return
        if event.phase == "step":
            self.step(event)
            return
        if event.phase == "fitting" and event.passes:
            return  # the iteration records show these passes
        of = f" of at most {event.total}" if event.total is not None else ""
        label = f"{event.phase}: pass {event.passes}{of}" if event.passes else event.phase
        if self.mode == "bar":
            self.progress.update(self.task, phase=label)
        else:
            self._say(label, {"event": "phase", "phase": event.phase, "passes": event.passes, "total": event.total})

    def step(self, event: FitEvent) -> None:
        """Show an M-step inside an iteration: the sweep or epoch and the blocks read in it."""
        blocks = max(event.blocks, 1)
        label = f"{self.unit} {event.iteration}, block {event.step}/{event.blocks}"
        if self.mode == "bar":
            self.progress.update(self.task, phase=label, completed=event.iteration - 1 + min(event.step / blocks, 1.0))
            return
        tenth = event.step * 10 // blocks
        last_iteration, last_tenth = self.shown_step
        if event.step >= event.blocks or (event.iteration == last_iteration and tenth <= last_tenth):
            return
        self.shown_step = (event.iteration, tenth)
        if self.mode == "lines":
            self.console.print(
                f"{self.unit} {event.iteration:4d}  block {event.step}/{event.blocks}  passes {event.passes}",
                highlight=False,
            )
        elif self.mode == "jsonl":
            entry = {
                "event": "step",
                "schedule": self.schedule,
                "iteration": event.iteration,
                "step": event.step,
                "blocks": event.blocks,
                "passes": event.passes,
            }
            self.console.out(json.dumps(entry), highlight=False)

    def __call__(self, record: IterationRecord, params: Any) -> None:
        history = self.history.setdefault(record.run, [])
        history.append(record)
        done = record.converged or record.iteration >= self.max_iter
        eta = 0.0 if done else remaining_iterations(history, self.tol, self.max_iter) * record.seconds
        if self.mode == "bar":
            self.progress.update(
                self.task,
                phase="converged" if record.converged else "fitting",
                completed=record.iteration,
                ll=f"{record.log_likelihood:.6f}",
                change=f"{record.change:.2e}",
                secs=f"{record.seconds:.2f}",
                eta=f"~{eta:.0f}s",
            )
        elif self.mode == "lines":
            self.console.print(
                f"iteration {record.iteration:4d}  log-lik {record.log_likelihood:.6f}  "
                f"change {record.change:.3e}  {record.seconds:.2f} s  ETA ~{eta:.0f} s"
                + ("  converged" if record.converged else ""),
                highlight=False,
            )
        elif self.mode == "jsonl":
            entry = {
                "event": "iteration",
                "run": record.run,
                "iteration": record.iteration,
                "log_likelihood": record.log_likelihood,
                "change": record.change if math.isfinite(record.change) else None,
                "seconds": record.seconds,
                "passes": record.passes,
                "eta_seconds": eta,
                "converged": record.converged,
            }
            self.console.out(json.dumps(entry), highlight=False)


class SelectionDisplay:
    """Progress of ``daskem select``, from :class:`daskem.select.SelectionProgress` events.

    One event per phase (the sample, the k-means starts, the final log-likelihood pass)
    and per EM pass: a live bar (``bar``), one line each (``lines``), one JSON object each
    for batch logs (``jsonl``), or nothing (``none``); ``auto`` is a bar on a terminal and
    lines otherwise. Everything goes to the console (stderr).

    Parameters
    ----------
    console : rich.console.Console
        Where to write.
    mode : str
        One of :data:`PROGRESS_MODES`.
    max_iter : int
        Iterations at most (the bar's length).
    checkpoint : str, optional
        The checkpoint location, named when the selection resumes from it.
    """

    def __init__(self, console: Console, mode: str, max_iter: int, checkpoint: str | None) -> None:
        self.console = console
        self.mode = ("bar" if console.is_terminal else "lines") if mode == "auto" else mode
        self.checkpoint = checkpoint
        self.resumed = False
        self.progress = Progress(
            TextColumn("[bold]select[/bold] {task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("alive {task.fields[alive]}  best {task.fields[best]}  {task.fields[secs]} s/pass"),
            TimeElapsedColumn(),
            console=console,
            disable=self.mode != "bar",
        )
        self.task = self.progress.add_task("select", total=max_iter, phase="starting", alive="-", best="-", secs="-")

    def __enter__(self) -> SelectionDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, n_candidates: int, n_samples: int) -> None:
        """Say what is about to run (``lines`` only: the bar shows it, JSON lines stay events)."""
        if self.mode == "lines":
            self.console.print(
                f"select: {n_candidates} candidates on {n_samples:,} rows (sample, k-means starts, EM passes, "
                "final pass)",
                highlight=False,
                soft_wrap=True,
            )

    def __call__(self, event: Any) -> None:
        if event.resumed_from and not self.resumed and self.mode in ("bar", "lines"):
            self.resumed = True
            self.console.print(
                f"Resuming the selection checkpointed in {self.checkpoint} (candidates committed up to iteration "
                f"{event.resumed_from})",
                highlight=False,
                soft_wrap=True,
            )
        best = (
            None
            if event.best_n_components is None
            else {
                "n_components": event.best_n_components,
                **({"covariance_type": event.best_covariance_type} if event.best_covariance_type is not None else {}),
                "log_likelihood": event.best_log_likelihood,
                "bic": event.best_bic,
            }
        )
        if self.mode == "jsonl":
            entry = {
                "event": event.phase,
                "pass": event.passes,
                "iteration": event.iteration,
                "alive": event.alive,
                "candidates": event.n_candidates,
                "best": best,
                "seconds": event.seconds,
                "elapsed": event.elapsed,
                "resumed_from": event.resumed_from,
            }
            self.console.out(json.dumps(entry), highlight=False)
            return
        best_text = (
            "-"
            if best is None
            else f"{event.best_label}  log-lik {event.best_log_likelihood:.6f}  BIC {event.best_bic:.1f}"
        )
        if self.mode == "bar":
            phases = {"sample": "k-means starts", "kmeans": "EM", "em": "EM", "loglik": "done"}
            self.progress.update(
                self.task,
                completed=event.iteration,
                phase=phases.get(event.phase, event.phase),
                alive=f"{event.alive}/{event.n_candidates}",
                best=best_text,
                secs=f"{event.seconds:.2f}",
            )
        elif self.mode == "lines":
            if event.phase == "sample":
                text = f"sample    read for the k-means starts in {event.seconds:.2f} s"
            elif event.phase == "kmeans":
                text = f"k-means   starts of the {event.n_candidates} candidates computed in {event.seconds:.2f} s"
            elif event.phase == "em":
                text = (
                    f"pass {event.passes:4d}  iteration {event.iteration:4d}  alive {event.alive:3d}/"
                    f"{event.n_candidates}  best {best_text}  {event.seconds:.2f} s"
                )
            else:
                text = f"final pass: log-likelihoods in {event.seconds:.2f} s; best by BIC {best_text}"
            self.console.print(text, highlight=False, soft_wrap=True)


def print_model(
    out: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str]
) -> None:
    """A fitted model's summary (:class:`daskem.registry.Summary`): the title on one line, the table, the notes."""
    out.print(title, highlight=False, soft_wrap=True)
    table = Table(show_lines=False)
    for index, column in enumerate(columns):
        vectors = any(", " in row[index] for row in rows)  # numbers right-aligned, vectors left
        table.add_column(column, justify="left" if vectors else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for note in notes:
        out.print(note, highlight=False)


def print_summary(
    est: Any,
    entry: ModelEntry,
    data: str,
    output: str | None,
    elapsed: float,
    display: IterationDisplay | None,
) -> None:
    """The end of ``daskem fit`` / ``daskem resume``: the model's summary, how the fit ended, the file written."""
    out = Console()
    summary = entry.summary(est)
    print_model(out, f"{summary.title} on {data}", summary.columns, summary.rows, summary.notes)
    if display is not None and display.records == 0 and est.checkpoint is not None:
        ended = "converged" if est.converged_ else "reached max_iter"
        out.print(
            f"Nothing left to do: the fit checkpointed in {est.checkpoint} already {ended} after {est.n_iter_} "
            f"iterations ({entry.objective} {est.lower_bound_:.6f}). To refine it, run again with a smaller --tol "
            "or a larger --max-iter; --force-restart starts afresh.",
            highlight=False,
        )
    else:
        status = "converged" if est.converged_ else "NOT converged (raise --max-iter or --tol)"
        out.print(
            f"{status} after {est.n_iter_} iterations in {elapsed:.1f}s; {entry.objective} {est.lower_bound_:.6f}",
            highlight=False,
        )
    if output:
        out.print(f"model written to {output} (load with daskem.load({output!r}))", highlight=False)
