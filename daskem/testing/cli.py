"""Running the ``daskem`` command, as tests and examples do: in a subprocess, or in this process.

Use :func:`run_cli` where the process itself is under test (its exit status as the shell sees
it, signals, kills, what it leaves running, its import time); :func:`invoke_cli` everywhere
else: the same command line and the same result, without a new interpreter importing daskem
(~3 s each on a small machine).
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import traceback
import warnings
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


def invoke_cli(*args: Any, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``daskem ARGS`` in this process (Click's runner) and return it as :func:`run_cli` would.

    stdout and stderr are captured separately (neither is a terminal) with ``COLUMNS=400``;
    the exit status is the command's (``sys.exit``, Click's usage errors, 1 for an error). An
    exception that escapes the command is written to stderr as its traceback with status 1,
    as the interpreter would, and so are the warnings its default filters show. Environment
    variables the command sets in this process (a nanny exports its workers' environment
    into its parent) are removed again afterwards.
    """
    from click.testing import CliRunner

    from daskem.cli import main

    environ = dict(os.environ)
    try:
        with (
            contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext(),
            warnings.catch_warnings(record=True) as caught,
        ):
            # The interpreter's default filters: what a new process would print on stderr.
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            result = CliRunner(env={"COLUMNS": "400"}).invoke(main, [str(a) for a in args], prog_name="daskem")
    finally:
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update({name: value for name, value in environ.items() if os.environ.get(name) != value})
    stderr = result.stderr + "".join(
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught
    )
    if result.exc_info is not None and not issubclass(result.exc_info[0], SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    done = subprocess.CompletedProcess(["daskem", *map(str, args)], result.exit_code, result.stdout, stderr)
    if result.exit_code != 0:
        # A failed command's exception chain can hold a distributed Client that never
        # connected; finalised later by the cyclic collector, inside another Client's start,
        # its __del__ can deadlock on distributed's LoopRunner lock. Finalise it now.
        del result
        gc.collect()
    return done
