"""What the out-of-core benchmarks on a LocalCluster share: the workers' peak resident
memory, a watchdog on paused workers, and a streamed fit with its peaks printed."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import dask
import psutil
from dask.utils import format_bytes

__all__ = ["MiB", "PeakRows", "fit_with_peaks", "pause_note", "peak_rss", "reset_peak", "summary", "watch_pauses"]

MiB = 2**20

#: (label, peak resident memory of every worker) of each iteration, then of what follows the fit.
PeakRows = list[tuple[str, dict[str, int]]]


def reset_peak() -> None:
    """Reset this process's resident-memory high-water mark (Linux; a no-op elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """This process's peak resident memory since the last :func:`reset_peak` (``VmHWM``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(psutil.Process().memory_info().rss)  # not Linux: the current RSS only


def watch_pauses(client: Any, timeout: float, stop: threading.Event, said: list[str]) -> None:
    """Close ``client`` (failing the fit) when a worker has stayed paused for ``timeout`` seconds.

    A paused worker keeps the tasks already queued on it: the fit waits on them for good.
    """
    since = None
    while not stop.wait(5.0):
        try:
            status = [w.get("status") for w in client.scheduler_info()["workers"].values()]
        except Exception:
            return
        paused = status.count("paused")
        since = (since or time.perf_counter()) if paused else None
        if since is not None and time.perf_counter() - since > timeout:
            said.append(f"{paused} of {len(status)} workers paused (Dask's pause threshold) for over {timeout:.0f}s")
            print(f"  {said[-1]}: fit aborted", flush=True)
            client.close()
            return


def pause_note(limit: int, no_pause: bool) -> str:
    """Where Dask pauses a worker of memory limit ``limit`` (80%, its default), or that it never does."""
    return "workers never pause: --no-pause" if no_pause else f"Dask pauses a worker at {0.8 * limit / MiB:.0f} MiB"


def fit_with_peaks(
    fit: Callable[[Callable[[Any, Any], None]], Any],
    workers: int,
    memory_limit: Any,
    *,
    no_pause: bool = False,
    pause_timeout: float = 120.0,
    after: str | None = None,
) -> tuple[PeakRows, list[str]]:
    """Run ``fit(callback)`` on a LocalCluster of ``workers`` single-threaded processes of
    ``memory_limit`` each (the default client), printing every worker's peak resident
    memory (``VmHWM``, reset after each) and the seconds of every iteration, then, when
    ``after`` names it, of what the fit does after its last iteration.

    Returns the peaks and what the watchdog (:func:`watch_pauses`) said: when it aborted
    the fit, the fit's error is printed instead of raised.
    """
    from distributed import Client

    from daskem.cli import local_cluster

    memory = {"distributed.worker.memory.pause": False} if no_pause else {}
    rows: PeakRows = []
    said: list[str] = []
    stop = threading.Event()

    def record(label: str, client: Any, seconds: float) -> None:
        peaks = client.run(peak_rss)
        client.run(reset_peak)
        rows.append((label, peaks))
        per_worker = "/".join(f"{v / MiB:.0f}" for v in peaks.values())
        print(f"  {label:<22} {seconds:6.1f}s  peak worker memory {per_worker} MiB", flush=True)

    with (
        dask.config.set(memory),
        local_cluster(workers, 1, memory_limit) as cluster,
        Client(cluster) as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        client.run(reset_peak)
        watchdog = threading.Thread(target=watch_pauses, args=(client, pause_timeout, stop, said), daemon=True)
        watchdog.start()
        mark = [time.perf_counter()]

        def callback(rec: Any, _: Any) -> None:
            record(f"iteration {rec.iteration}", client, time.perf_counter() - mark[0])
            mark[0] = time.perf_counter()

        try:
            fit(callback)
            if after is not None:
                record(after, client, time.perf_counter() - mark[0])
        except Exception as err:
            if not said:
                raise
            print(f"  fit failed after the pause: {type(err).__name__}")
        finally:
            stop.set()
            watchdog.join()
    return rows, said


def summary(rows: PeakRows, limit: int) -> str:
    """The largest peak against the limit, and the iterations' first peak against their last."""
    worst = max(max(peaks.values()) for _, peaks in rows)
    iterations = [max(peaks.values()) for label, peaks in rows if label.startswith("iteration")]
    first, last = iterations[0], iterations[-1]
    return (
        f"limit {format_bytes(limit)} a worker: the largest peak {worst / MiB:.0f} MiB is "
        f"{'under' if worst < limit else 'OVER'} it ({worst / limit:.0%}); from the first iteration to the last the "
        f"largest peak went {first / MiB:.0f} -> {last / MiB:.0f} MiB "
        f"({'flat' if last <= 1.1 * first else 'GROWING'}, {last / first - 1:+.1%})"
    )
