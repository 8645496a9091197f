"""Set-up of the worker processes of the local clusters daskem starts (a Dask preload).

distributed imports this module in every worker process it starts (``preload``) and
calls :func:`dask_setup`.
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    """Leave Ctrl-C to the driver: a worker process of a local cluster ignores SIGINT.

    A terminal's Ctrl-C reaches every process of the foreground group, the worker
    processes included; each would print its own KeyboardInterrupt traceback while the
    driver closes the cluster in order (and reports the checkpoint) anyway.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
