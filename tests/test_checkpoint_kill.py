"""Real crashes: ``daskem fit --checkpoint RUN`` killed with SIGKILL, then ``daskem resume RUN``.

The driver is killed at several moments (after iteration lines 1, 5, 12 and 20 appear on
its stderr, and in the middle of writing a checkpoint, slowed down by
DASKEM_CHECKPOINT_WRITE_DELAY) and resumed in a new process. Every time the resumed model
must be bitwise equal to the model of an uninterrupted ``daskem fit`` with the same seed,
data, chunking and split_every, with the same ``n_iter_`` and log-likelihood history.

``--workers 0`` runs the fit on threads in the driver, so killing the driver leaves no
worker behind; one test kills a driver that runs a real LocalCluster and then kills its
whole process group (the nannies and workers it left) as well. The killed fits are
subprocesses; the uninterrupted reference fit and the resumes run in this process
(Click's runner), where no process of their own is tested.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import daskem
from daskem.checkpoint import Checkpoint
from daskem.checkpoint.checkpoint import WRITE_DELAY_ENV
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli

pytestmark = pytest.mark.slow

DASKEM = str(Path(sys.executable).with_name("daskem"))
MAX_ITER = 24  # the last kill (after iteration 20) leaves 4 to resume
FIT = ["-k", "3", "--tol", "0", "--max-iter", str(MAX_ITER), "--seed", "0", "--split-every", "4"]
ITERATION_LINE = re.compile(r"^iteration +(\d+)  log-lik ")
ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def environ(write_delay=None):
    env = {k: v for k, v in os.environ.items() if k != WRITE_DELAY_ENV}
    if write_delay is not None:
        env[WRITE_DELAY_ENV] = str(write_delay)
    return env


def iterations_in(stderr):
    return [int(m.group(1)) for m in map(ITERATION_LINE.match, stderr.splitlines()) if m]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """100k x 4 rows in chunks of 10k, and the model of an uninterrupted fit."""
    root = tmp_path_factory.mktemp("kill")
    data = root / "data.zarr"
    write_mixture_zarr(data, 100_000, 4, 3, seed=0, chunk_rows=10_000)
    model = root / "oracle.zarr"
    done = invoke_cli("fit", data, *FIT, "--workers", "0", "-o", model)
    assert done.returncode == 0, done.stderr
    assert iterations_in(done.stderr) == list(range(1, MAX_ITER + 1))
    oracle = daskem.load(model)
    assert oracle.n_iter_ == MAX_ITER
    return data, oracle


def start_fit(data, ckpt, *extra, write_delay=None):
    """``daskem fit`` in its own process group, stderr a pipe read line by line."""
    return subprocess.Popen(
        [DASKEM, "fit", str(data), *FIT, *extra, "--checkpoint", str(ckpt)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=environ(write_delay),
        start_new_session=True,
    )


def group_members(pgid):
    """Live (non-zombie) processes of process group ``pgid``: {pid: command line}."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members[int(entry.name)] = cmdline
    return members


def kill_after_iteration(proc, n, delay=0.0):
    """Read stderr until ``iteration n`` appears, wait ``delay`` s, SIGKILL the process group."""
    watchdog = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            match = ITERATION_LINE.match(line)
            if match and int(match.group(1)) == n:
                if delay:
                    time.sleep(delay)
                members = group_members(proc.pid)
                os.killpg(proc.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"the fit ended before iteration {n}:\n{''.join(lines)}")
    finally:
        watchdog.cancel()
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the fit finished before it could be killed"
    return members


def wait_group_gone(pgid, timeout=30):
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            pytest.fail(f"processes of the killed fit still running: {group_members(pgid)}")
        time.sleep(0.1)


def resume(ckpt, output, *extra):
    done = invoke_cli("resume", ckpt, *extra, "-o", output)
    assert done.returncode == 0, done.stderr
    # Rich wraps long lines at 80 columns when stderr is not a terminal.
    assert f"Resuming the fit checkpointed in {ckpt}" in " ".join(done.stderr.split())
    return done


def newest_committed(ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a crash leaves nothing that counts as damage
        state = Checkpoint(str(ckpt)).run(0).latest()
    return state


def assert_equals_oracle(model, oracle):
    for attr in ATTRS:
        got, want = getattr(model, attr), getattr(oracle, attr)
        assert got.dtype == want.dtype == np.float64
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes(), attr
    assert model.n_iter_ == oracle.n_iter_ == MAX_ITER
    assert model.lower_bounds_ == oracle.lower_bounds_
    assert model.lower_bound_ == oracle.lower_bound_
    assert model.converged_ == oracle.converged_


def check_resume(ckpt, tmp_path, oracle, committed, *extra):
    done = resume(ckpt, tmp_path / "resumed.zarr", *extra)
    # It continued from the newest committed iteration: no iteration was run twice.
    assert iterations_in(done.stderr) == list(range(committed + 1, MAX_ITER + 1))
    assert_equals_oracle(daskem.load(tmp_path / "resumed.zarr"), oracle)
    assert_equals_oracle(daskem.load(ckpt), oracle)
    final = newest_committed(ckpt)
    assert final.iteration == MAX_ITER
    assert final.finished


@pytest.mark.parametrize("n", [1, 5, 12, 20])
def test_kill_after_iteration_then_resume(setup, tmp_path, n):
    data, oracle = setup
    ckpt = tmp_path / "run.zarr"
    kill_after_iteration(start_fit(data, ckpt, "--workers", "0"), n)
    state = newest_committed(ckpt)
    # The iteration line is printed after its commit; the kill may land a little later.
    assert n <= state.iteration < MAX_ITER
    assert not state.finished
    assert list(state.history["log_likelihood"]) == oracle.lower_bounds_[: state.iteration]
    check_resume(ckpt, tmp_path, oracle, state.iteration, "--workers", "0")


@pytest.mark.parametrize(("n", "delay"), [(1, 0.3), (3, 1.1)])
def test_kill_in_the_middle_of_writing_a_checkpoint(setup, tmp_path, n, delay):
    """With 0.2 s after each of the 7 arrays, ``delay`` after line n falls inside commit n + 1."""
    data, oracle = setup
    ckpt = tmp_path / "run.zarr"
    kill_after_iteration(start_fit(data, ckpt, "--workers", "0", write_delay=0.2), n, delay)
    run = Checkpoint(str(ckpt)).run(0)
    # Iteration n + 1 was being written: its directory exists, partly, without a commit
    # record; the pointer and every reader stay at n.
    assert run.iterations()[-1] == n + 1
    partial = ckpt / "runs" / "0" / "iterations" / str(n + 1)
    assert 0 < len([p for p in partial.iterdir() if p.is_dir()]) < 7
    assert "daskem_iteration" not in (partial / "zarr.json").read_text()
    assert run.pointer() == n
    state = newest_committed(ckpt)
    assert state.iteration == n
    check_resume(ckpt, tmp_path, oracle, n, "--workers", "0")


def test_kill_driver_of_local_cluster_then_resume(setup, tmp_path):
    data, oracle = setup
    ckpt = tmp_path / "run.zarr"
    # One worker process (a second costs seconds of CPU): a nanny and a worker to leave behind.
    proc = start_fit(data, ckpt, "--workers", "1", "--memory-limit", "1GiB")
    try:
        members = kill_after_iteration(proc, 3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        # The nannies and workers the driver started are in its process group: gone too.
        wait_group_gone(proc.pid)
    # The driver had spawned its worker process: the fit really ran on a cluster.
    workers = [cmd for cmd in members.values() if "multiprocessing.spawn" in cmd]
    assert len(workers) == 1, members
    state = newest_committed(ckpt)
    assert 3 <= state.iteration < MAX_ITER
    # The resume runs on threads: the killed cluster is what is tested; a resume on a new
    # cluster is test_cluster_faults' (the scheduler killed), and chunking and split_every
    # fix the result wherever the tasks run.
    check_resume(ckpt, tmp_path, oracle, state.iteration, "--workers", "0")
