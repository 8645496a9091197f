"""Progress and checkpoints of model selection: ``select_mixture(callback=, checkpoint=)`` and
``daskem select --progress/--quiet/--checkpoint/--force-restart``.

Every EM pass reports the candidates still iterating; after pass ``i`` they are exactly the
candidates whose final ``n_iter`` exceeds ``i`` (the others converged or ran out of
iterations at or before it). A selection interrupted after a committed pass (an exception
in-process, a real SIGKILL of the command) and started again ends bitwise as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest
from click.testing import CliRunner

import daskem
from daskem.checkpoint import Checkpoint, CheckpointMismatchError
from daskem.checkpoint.checkpoint import WRITE_DELAY_ENV
from daskem.cli import main
from daskem.select import PHASES, select_mixture
from daskem.testing import make_mixture_array, write_mixture_zarr
from daskem.testing.cli import invoke_cli as daskem_cli

KS, TYPES = [1, 2, 3], ["full", "diag"]


@pytest.fixture(scope="module")
def X():
    # Close components: at tol=1e-4 the candidates stop after 2, 3 or 9 iterations.
    data, _spec = make_mixture_array(3000, 2, 3, seed=3, chunk_rows=500, separation=2.0)
    return data


def alive_after(n_iters, iteration):
    """Candidates still iterating after EM iteration ``iteration``, from their final n_iter."""
    return sum(n > iteration for n in n_iters)


def assert_pass_events(events, candidates, first=1):
    """One ``em`` event per pass, iterations ``first``.. max n_iter, alive as the candidates say."""
    n_iters = [c["n_iter"] for c in candidates]
    em = [e for e in events if e["phase"] == "em"]
    assert [e["iteration"] for e in em] == list(range(first, max(n_iters) + 1))
    assert [e["alive"] for e in em] == [alive_after(n_iters, e["iteration"]) for e in em]
    assert [e["pass"] for e in em] == [em[0]["pass"] + i for i in range(len(em))]
    # A candidate that stopped before the slowest one did so because it converged.
    assert all(c["converged"] for c in candidates if c["n_iter"] < max(n_iters))
    assert em[-1]["alive"] == 0
    assert all(e["candidates"] == len(candidates) for e in events)


def table(selection):
    return [
        {"n_iter": c.n_iter, "converged": c.converged, "bic": c.bic, "k": c.n_components, "ct": c.covariance_type}
        for c in selection.candidates
    ]


def as_dict(event):
    return {
        "phase": event.phase,
        "iteration": event.iteration,
        "alive": event.alive,
        "pass": event.passes,
        "candidates": event.n_candidates,
        "resumed_from": event.resumed_from,
        "best": event.best_n_components,
    }


def assert_same_selection(a, b):
    assert a.n_passes == b.n_passes
    assert a.n_samples == b.n_samples
    for x, y in zip(a.candidates, b.candidates, strict=True):
        assert (x.n_components, x.covariance_type, x.n_iter, x.converged) == (
            y.n_components,
            y.covariance_type,
            y.n_iter,
            y.converged,
        )
        assert (x.log_likelihood, x.bic, x.aic) == (y.log_likelihood, y.bic, y.aic)
        for name, value in x.params.to_arrays().items():
            assert value.tobytes() == y.params.to_arrays()[name].tobytes(), name


# -- select_mixture in-process -------------------------------------------------------------------


def test_select_mixture_reports_every_phase_and_pass(X):
    events = []
    selection = select_mixture(X, KS, TYPES, tol=1e-4, callback=events.append)
    phases = [e.phase for e in events]
    assert phases[:2] == ["sample", "kmeans"]
    assert phases[-1] == "loglik"
    assert set(phases) == set(PHASES)
    assert_pass_events([as_dict(e) for e in events], table(selection))
    assert [e.alive for e in events[:2]] == [len(KS) * len(TYPES)] * 2
    assert all(e.best_n_components is None for e in events[:2])
    assert all(e.best_bic is not None and e.best_covariance_type in TYPES for e in events[2:])
    last = events[-1]
    best = selection.best_bic
    assert (last.best_n_components, last.best_covariance_type, last.best_bic) == (
        best.n_components,
        best.covariance_type,
        best.bic,
    )
    assert last.best_log_likelihood == best.log_likelihood / selection.n_samples
    assert last.alive == 0
    assert last.passes == selection.n_passes
    assert all(e.seconds >= 0 for e in events)
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)


class Interrupt(Exception):
    pass


def interrupt_after(passes):
    seen = []

    def callback(event):
        seen.append(event)
        if event.phase == "em" and event.iteration == passes:
            raise Interrupt

    return callback, seen


def test_select_mixture_resumes_bitwise_after_an_interruption(X, tmp_path):
    plain = select_mixture(X, KS, TYPES, tol=1e-4)
    ckpt = tmp_path / "select.zarr"
    stop, _ = interrupt_after(3)
    with pytest.raises(Interrupt):
        select_mixture(X, KS, TYPES, tol=1e-4, checkpoint=ckpt, callback=stop)
    states = [Checkpoint(ckpt).run(r).latest() for r in range(len(KS) * len(TYPES))]
    assert {s.iteration for s in states if not s.finished} == {3}
    events = []
    resumed = select_mixture(X, KS, TYPES, tol=1e-4, checkpoint=ckpt, callback=events.append)
    assert_same_selection(resumed, plain)
    # Nothing was sampled again; the passes continued after iteration 3.
    assert [e.phase for e in events if e.phase in ("sample", "kmeans")] == []
    assert events[0].iteration == 4
    assert events[0].resumed_from == 3
    assert_pass_events([as_dict(e) for e in events], table(plain), first=4)
    # Run again on the finished checkpoint: no EM pass, the same answer.
    again = []
    assert_same_selection(select_mixture(X, KS, TYPES, tol=1e-4, checkpoint=ckpt, callback=again.append), plain)
    assert [e.phase for e in again] == ["loglik"]


def test_select_mixture_checkpoint_keeps_the_seed_of_random_state_none(X, tmp_path):
    ckpt = tmp_path / "select.zarr"
    stop, _ = interrupt_after(1)
    with pytest.raises(Interrupt):
        select_mixture(X, [2, 3], ["diag"], random_state=None, checkpoint=ckpt, callback=stop)
    entropy = Checkpoint(ckpt).metadata()["random"]["entropy"]
    resumed = select_mixture(X, [2, 3], ["diag"], random_state=None, checkpoint=ckpt)
    assert_same_selection(resumed, select_mixture(X, [2, 3], ["diag"], random_state=entropy))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"n_components": [1, 2, 4]}, "select.n_components=[1, 2, 3]"),
        ({"covariance_types": ["full", "tied"]}, "select.covariance_types=['full', 'diag']"),
        ({"reg_covar": 1e-3}, "select.reg_covar=1e-06"),
        ({"random_state": 1}, "select.random_state=0"),
        ({"n_init": 2}, "select.n_init=3"),
        ({"split_every": 2}, "config.split_every=8"),
    ],
)
def test_select_mixture_refuses_a_checkpoint_of_another_grid(X, tmp_path, change, field):
    ckpt = tmp_path / "select.zarr"
    select_mixture(X, KS, TYPES, max_iter=1, checkpoint=ckpt)
    args = {"n_components": KS, "covariance_types": TYPES, "max_iter": 1, **change}
    with pytest.raises(CheckpointMismatchError, match=re.escape(field)) as err:
        select_mixture(X, checkpoint=ckpt, **args)
    assert "daskem select --force-restart" in str(err.value)
    # overwrite=True starts the new grid there.
    fresh = select_mixture(X, checkpoint=ckpt, overwrite=True, **args)
    assert len(fresh.candidates) == len(args["n_components"]) * len(args["covariance_types"])


def test_select_mixture_refuses_other_data_and_a_fit_checkpoint(X, tmp_path):
    ckpt = tmp_path / "select.zarr"
    select_mixture(X, [1, 2], ["diag"], max_iter=1, checkpoint=ckpt)
    with pytest.raises(CheckpointMismatchError, match=r"written for data\.digest="):
        select_mixture(X + 1.0, [1, 2], ["diag"], max_iter=1, checkpoint=ckpt)
    fitted = tmp_path / "fit.zarr"
    daskem.GaussianMixture(2, max_iter=2, tol=1.0, checkpoint=str(fitted)).fit(X)
    with pytest.raises(CheckpointMismatchError, match="not by a model selection"):
        select_mixture(X, [1, 2], ["diag"], checkpoint=fitted)


# -- daskem select on the command line -----------------------------------------------------------

GRID = ["-k", "1..4", "--covariance-type", "full,diag", "--seed", "0", "--workers", "0", "--json"]
PASS_LINE = re.compile(r"^pass +(\d+)  iteration +(\d+)  alive +(\d+)/(\d+)  best k=(\d+) (\w+)  ")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("select") / "data.zarr"
    write_mixture_zarr(str(path), 8000, 3, 3, seed=2, chunk_rows=2000)
    return path


@pytest.fixture(scope="module")
def uninterrupted(store):
    """``daskem select --progress lines --json`` without a checkpoint: (stdout, stderr)."""
    result = daskem_cli("select", store, *GRID, "--progress", "lines")
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.mark.slow
def test_cli_select_prints_a_line_per_pass(uninterrupted):
    stdout, stderr = uninterrupted
    candidates = json.loads(stdout)["candidates"]
    lines = stderr.splitlines()
    assert any(line.startswith("sample    read for the k-means starts in ") for line in lines)
    assert any(line.startswith("k-means   starts of the 8 candidates computed in ") for line in lines)
    matches = [m for m in map(PASS_LINE.match, lines) if m]
    events = [
        {"phase": "em", "pass": int(m[1]), "iteration": int(m[2]), "alive": int(m[3]), "candidates": int(m[4])}
        for m in matches
    ]
    assert_pass_events(events, candidates)
    final = [line for line in lines if line.startswith("final pass: log-likelihoods in ")]
    best = min(candidates, key=lambda c: c["bic"])
    assert len(final) == 1
    assert f"best by BIC k={best['n_components']} {best['covariance_type']}  " in final[0]


@pytest.mark.slow
def test_cli_select_prints_json_lines_per_pass(store, uninterrupted):
    result = daskem_cli("select", store, *GRID, "--progress", "jsonl")
    assert result.returncode == 0, result.stderr
    assert result.stdout == uninterrupted[0]
    candidates = json.loads(result.stdout)["candidates"]
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in entries[:2]] == ["sample", "kmeans"]
    assert entries[-1]["event"] == "loglik"
    events = [{**e, "phase": e["event"]} for e in entries]
    assert_pass_events(events, candidates)
    for entry in entries:
        assert set(entry) == {
            "event", "pass", "iteration", "alive", "candidates", "best", "seconds", "elapsed", "resumed_from",
        }  # fmt: skip
    best = min(candidates, key=lambda c: c["bic"])
    assert entries[-1]["best"]["bic"] == best["bic"]
    assert (entries[-1]["best"]["n_components"], entries[-1]["best"]["covariance_type"]) == (
        best["n_components"],
        best["covariance_type"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--quiet"], ["--progress", "none"]])
def test_cli_select_quiet_prints_no_progress(store, uninterrupted, flag):
    result = daskem_cli("select", store, *GRID, *flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout == uninterrupted[0]
    assert result.stderr.strip() == "Running on local threads (no cluster)"
    # ... where the same command with --progress lines prints a line per pass.
    assert sum(bool(PASS_LINE.match(line)) for line in uninterrupted[1].splitlines()) >= 2


def committed_iteration(ckpt):
    """The most iterations any candidate has committed (0 while there is nothing to read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = Checkpoint(str(ckpt))
            if not checkpoint.exists():
                return 0
            states = [checkpoint.run(r).latest() for r in checkpoint.runs()]
    except (OSError, ValueError):
        return 0  # caught in the middle of a write: look again
    return max((s.iteration for s in states if s is not None), default=0)


@pytest.mark.slow
def test_cli_select_killed_and_run_again_prints_the_uninterrupted_table(store, uninterrupted, tmp_path):
    ckpt = tmp_path / "select.zarr"
    command = [sys.executable, "-m", "daskem.cli", "select", str(store), *GRID, "-q", "--checkpoint", str(ckpt)]
    # Slow commits (0.02 s after each array written) leave time to kill it mid-way.
    env = {**os.environ, WRITE_DELAY_ENV: "0.02"}
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while committed_iteration(ckpt) < 1:
            assert proc.poll() is None, "the selection ended before it was killed"
            assert time.monotonic() < deadline, "no iteration was committed within 60 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    checkpoint = Checkpoint(str(ckpt))
    states = [checkpoint.run(r).latest() for r in checkpoint.runs()]
    assert len(states) == 8
    assert not all(s is not None and s.finished for s in states), "killed after the selection had ended"
    again = daskem_cli(*command[3:-3], "--progress", "lines", "--checkpoint", ckpt)  # in this process
    assert again.returncode == 0, again.stderr
    assert f"Resuming the selection checkpointed in {ckpt}" in again.stderr
    assert "sample    read for" not in again.stderr
    assert again.stdout == uninterrupted[0]


@pytest.mark.slow
def test_cli_select_refuses_a_checkpoint_of_another_grid(store, tmp_path):
    ckpt = tmp_path / "select.zarr"
    # What `daskem select DATA -k 1..2 --max-iter 1 --checkpoint C` writes, made in-process.
    select_mixture(str(store), [1, 2], max_iter=1, checkpoint=str(ckpt))
    common = ["--max-iter", "1", "--workers", "0", "-q", "--checkpoint", ckpt]
    other = daskem_cli("select", store, "-k", "1..3", *common)
    assert other.returncode == 1
    assert "select.n_components=[1, 2]" in other.stderr
    assert "[1, 2, 3]" in other.stderr
    assert "daskem select --force-restart" in other.stderr
    forced = daskem_cli("select", store, "-k", "1..3", *common, "--json", "--force-restart")
    assert forced.returncode == 0, forced.stderr
    assert len(json.loads(forced.stdout)["candidates"]) == 3
    # daskem inspect reads a selection checkpoint (one model per run).
    inspected = CliRunner().invoke(main, ["inspect", str(ckpt)])
    assert inspected.exit_code == 0, inspected.output
    assert "run 2: model=gmm, n_components=3" in " ".join(inspected.output.split())
