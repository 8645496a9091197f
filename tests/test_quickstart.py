"""The README's main job, as printed, at a smaller size: an interruptible fit of tens of iterations.

The command is read from the README's quick start; only ``--n-samples`` is lowered (the
full job takes minutes). Its data must be larger than the workers' memory, its fit must
take tens of iterations (so that interrupting and resuming it can be tried), a kill
mid-fit must resume to the uninterrupted result, and running it once more must say that
nothing is left to do.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dask.utils import parse_bytes

import daskem
from daskem.checkpoint import Checkpoint
from daskem.testing.cli import invoke_cli

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
SMALL_ROWS = 100_000


def _main_job() -> tuple[list[str], list[str]]:
    """The make-data and fit arguments of the README's main job."""
    text = README.read_text()
    block = text[text.index("**1. The main job**") : text.index("**2. The test suite**")]
    (command,) = re.findall(r"```bash\n(.+?)\n```", block, re.DOTALL)
    parts = [shlex.split(p) for p in command.split(" && ")]
    make = next(p for p in parts if p[:2] == [".venv/bin/daskem", "make-data"])
    fit = next(p for p in parts if p[:2] == [".venv/bin/daskem", "fit"])
    return make[2:], fit[2:]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _daskem(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``daskem ARGS`` in ``cwd``, in this process (Click's runner): only the killed fit is a process."""
    return invoke_cli(*args, cwd=cwd)


def test_the_main_job_data_are_larger_than_the_workers_memory():
    make, fit = _main_job()
    size = int(_option(make, "--n-samples")) * int(_option(make, "--n-features")) * 8  # float64
    memory = int(_option(fit, "--workers")) * parse_bytes(_option(fit, "--memory-limit"))
    assert size > memory
    assert f"{size / 2**30:.2f} GiB" in README.read_text()


def test_the_main_job_is_an_interruptible_fit_of_tens_of_iterations(tmp_path):
    make, fit = _main_job()
    make[make.index("--n-samples") + 1] = str(SMALL_ROWS)
    made = _daskem("make-data", *make, cwd=tmp_path)
    assert made.returncode == 0, made.stderr

    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    (reference_dir / "demo.zarr").symlink_to(tmp_path / "demo.zarr")
    # The uninterrupted reference on threads (the last --workers wins): the README's
    # cluster runs the killed and the resumed fits, and the fit's fixed chunking and
    # reduction tree give the same parameters wherever its tasks run.
    whole = _daskem("fit", *fit, "--progress", "lines", "--workers", "0", cwd=reference_dir)
    assert whole.returncode == 0, whole.stderr
    reference = daskem.load(reference_dir / "demo-model.zarr")
    assert reference.converged_
    assert reference.n_iter_ >= 10, reference.n_iter_
    assert "initialising: pass 1 of at most 1" in whole.stderr

    # Killed after a few committed iterations, then the same command: the same model.
    run = tmp_path / "demo-run.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskem.cli", "fit", *fit],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = Checkpoint(run).run(0).latest() if Checkpoint(run).exists() else None
        if state is not None and state.iteration >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed = Checkpoint(run).run(0).latest().iteration
    assert 3 <= killed < reference.n_iter_
    resumed = _daskem("fit", *fit, "--progress", "lines", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming the fit checkpointed in demo-run.zarr after iteration {killed}" in resumed.stderr
    model = daskem.load(tmp_path / "demo-model.zarr")
    for attr in ("weights_", "means_", "covariances_"):
        assert np.array_equal(getattr(model, attr), getattr(reference, attr)), attr
    assert model.lower_bounds_ == reference.lower_bounds_

    # On threads too: the finished checkpoint decides, not where the (absent) tasks would run.
    again = _daskem("fit", *fit, "--workers", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Nothing left to do" in " ".join(again.stdout.split())
