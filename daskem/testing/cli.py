"""Running the ``daskem`` command in a subprocess, as tests and examples do."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def run_cli(
    *args: Any, cwd: str | os.PathLike[str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m daskem.cli ARGS`` and return the finished process (never raises on exit status).

    stdout and stderr are pipes, not a terminal, so the command prints one line per
    iteration; ``COLUMNS=400`` keeps Rich from wrapping long paths at 80 columns.
    """
    return subprocess.run(
        [sys.executable, "-m", "daskem.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
