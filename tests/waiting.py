"""Polling with a deadline, for tests that wait on other processes (imported by path, as ``waiting``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.05, detail: Callable[[], str] = str
) -> Any:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value; return that value.

    Raises
    ------
    AssertionError
        After ``timeout`` seconds, naming ``what`` was awaited, followed by ``detail()``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}".rstrip())
        time.sleep(interval)
