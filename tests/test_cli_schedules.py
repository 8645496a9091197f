"""``daskem fit --schedule``: the incremental, online and stochastic schedules from the command line.

* ``daskem fit --schedule online|incremental|stochastic`` (a ``daskem`` process) writes a
  model whose every array and history equal bitwise those of the Python API's
  ``GaussianMixture(schedule=...)`` fitted on the same data with the same settings;
* a fit killed (SIGKILL) inside an epoch or sweep, after a commit between two of its
  M-steps, then ``daskem resume``, ends bitwise as the uninterrupted fit; ``daskem inspect``
  of the killed checkpoint shows the schedule and where inside the iteration it stands;
* the schedule options' bad values and the models that cannot take them are one-line
  usage errors naming the fix.

The data are 2,000 rows in 4 blocks: a step per block, a few M-steps per epoch. The
killed fits and the ``fit`` processes run with ``--workers 0`` (threads); resume and
inspect run in this process (Click's runner).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.checkpoint import Checkpoint
from daskem.checkpoint.checkpoint import WRITE_DELAY_ENV
from daskem.checkpoint.store import read_arrays_group
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli, run_cli

DASKEM = str(Path(sys.executable).with_name("daskem"))
N_SAMPLES, N_FEATURES, CHUNK_ROWS, BLOCKS = 2_000, 3, 500, 4
BASE = ["-k", "3", "--tol", "0", "--seed", "0", "--split-every", "2", "--workers", "0"]
BASE_PARAMS = {"n_components": 3, "tol": 0.0, "random_state": 0, "split_every": 2}
#: Per schedule: the command line's options and the constructor parameters they mean.
SCHEDULES = {
    "online": (
        [
            *("--schedule", "online", "--max-iter", "3"),
            *("--learning-decay", "0.7", "--learning-offset", "1", "--average", "half"),
        ],
        {"schedule": "online", "max_iter": 3, "learning_decay": 0.7, "learning_offset": 1.0, "average": True},
    ),
    "incremental": (
        ["--schedule", "incremental", "--step-blocks", "1", "--max-iter", "3"],
        {"schedule": "incremental", "step_blocks": 1, "max_iter": 3},
    ),
    "stochastic": (
        ["--schedule", "stochastic", "--max-iter", "4", "--average", "2"],
        {"schedule": "stochastic", "max_iter": 4, "average": 2},
    ),
}
ITERATION_LINE = re.compile(r"^iteration +(\d+)  ")
STEP_LINE = re.compile(r"^(epoch|sweep) +(\d+)  block (\d+)/(\d+)  passes \d+$")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedules")
    path = root / "data.zarr"
    write_mixture_zarr(path, N_SAMPLES, N_FEATURES, 3, seed=0, chunk_rows=CHUNK_ROWS, separation=2.0)
    return path


@pytest.fixture(scope="module")
def oracles(store, tmp_path_factory):
    """The Python API's fits, saved as model files, by schedule."""
    root = tmp_path_factory.mktemp("oracles")
    found = {}
    for name, (_, params) in SCHEDULES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = daskem.GaussianMixture(**BASE_PARAMS, **params).fit(str(store))
        est.save(root / f"{name}.zarr")
        found[name] = (est, root / f"{name}.zarr")
    return found


def assert_same_model_file(path, oracle_path):
    """Every array and the fit record of two model files, bitwise."""
    arrays, info = read_arrays_group(path)
    expected, expected_info = read_arrays_group(oracle_path)
    assert sorted(arrays) == sorted(expected)
    for name, values in expected.items():
        assert arrays[name].tobytes() == values.tobytes(), name
    assert info["fit"]["lower_bounds"] == expected_info["fit"]["lower_bounds"]
    assert info["fit"]["n_iter"] == expected_info["fit"]["n_iter"]


@pytest.fixture(scope="module")
def fitted(store, tmp_path_factory):
    """``daskem fit --schedule NAME -o MODEL`` as processes (two at a time), by schedule."""
    root = tmp_path_factory.mktemp("fitted")

    def fit(name):
        model = root / f"{name}.zarr"
        return run_cli("fit", store, *BASE, *SCHEDULES[name][0], "-o", model), model

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SCHEDULES, pool.map(fit, SCHEDULES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_fit_equals_the_python_api_bitwise(fitted, oracles, name):
    done, model = fitted[name]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    oracle, oracle_path = oracles[name]
    assert_same_model_file(model, oracle_path)
    loaded = daskem.load(model)
    assert loaded.schedule == name
    assert loaded.lower_bounds_ == oracle.lower_bounds_
    iterations = [int(m.group(1)) for m in map(ITERATION_LINE.match, done.stderr.splitlines()) if m]
    assert iterations == list(range(1, oracle.n_iter_ + 1))
    steps = [m.groups() for m in map(STEP_LINE.match, done.stderr.splitlines()) if m]
    if name == "stochastic":
        assert steps == []  # one M-step per iteration: no step lines
    else:
        unit = {"online": "epoch", "incremental": "sweep"}[name]
        # A line per M-step inside an iteration (4 blocks: fewer than ten), not the last block;
        # incremental EM's first iteration is a full E-step and its M-step: no step lines.
        first = 2 if name == "incremental" else 1
        expected = [(unit, str(i), str(b), str(BLOCKS)) for i in range(first, 4) for b in range(1, BLOCKS)]
        assert steps == expected
    # inspect of the model file shows the schedule and its settings.
    shown = invoke_cli("inspect", model)
    assert shown.returncode == 0, shown.stderr
    line = next(li for li in shown.stdout.splitlines() if li.startswith("schedule"))
    assert line.split()[1] == name
    as_json = json.loads(invoke_cli("inspect", model, "--json").stdout)
    assert as_json["schedule"]["name"] == name


def test_jsonl_progress_reports_the_steps(store, tmp_path):
    done = invoke_cli(
        "fit", store, *BASE, "--schedule", "online", "--max-iter", "1", "--progress", "jsonl", "-o", tmp_path / "m"
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["schedule"], e["iteration"], e["step"], e["blocks"]) for e in steps] == [
        ("online", 1, b, BLOCKS) for b in range(1, BLOCKS)
    ]
    assert [e["iteration"] for e in events if e["event"] == "iteration"] == [1]


# -- killed inside an epoch or sweep, then resumed ---------------------------------------------


def _kill_inside(command, unit, iteration, block):
    """Start ``command``; SIGKILL it once the step line of ``block`` in ``iteration`` appears
    (the commit after the previous step is then complete)."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env={k: v for k, v in os.environ.items() if k != WRITE_DELAY_ENV} | {"COLUMNS": "400"},
        start_new_session=True,
    )
    watchdog = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            match = STEP_LINE.match(line.rstrip("\n"))
            if match and match.groups()[:3] == (unit, str(iteration), str(block)):
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it was killed:\n" + "".join(lines)


#: Per schedule: the iteration and block whose step line triggers the kill.
KILLS = {"online": ("epoch", 2, 2), "incremental": ("sweep", 2, 3)}


@pytest.fixture(scope="module", params=list(KILLS))
def killed(request, store, tmp_path_factory):
    """A ``daskem fit --checkpoint`` killed inside an iteration, inspected, then resumed."""
    name = request.param
    root = tmp_path_factory.mktemp(f"killed-{name}")
    ckpt, model = root / "run.zarr", root / "model.zarr"
    unit, iteration, block = KILLS[name]
    command = [DASKEM, "fit", str(store), *BASE, *SCHEDULES[name][0], "--checkpoint", str(ckpt)]
    _kill_inside(command, unit, iteration, block)
    state = Checkpoint(str(ckpt)).run(0).latest()
    inspected = invoke_cli("inspect", ckpt)
    inspected_json = json.loads(invoke_cli("inspect", ckpt, "--json").stdout)
    resumed = invoke_cli("resume", ckpt, "--workers", "0", "-o", model)
    return {
        "name": name,
        "ckpt": ckpt,
        "model": model,
        "state": state,
        "inspected": inspected,
        "inspected_json": inspected_json,
        "resumed": resumed,
        "kill": KILLS[name],
    }


@pytest.mark.slow
def test_killed_inside_an_iteration(killed):
    state = killed["state"]
    _, iteration, block = killed["kill"]
    # The newest commit is between two M-steps of the iteration the kill interrupted.
    assert state.step is not None
    assert state.step > 0
    assert state.iteration == iteration - 1
    assert not state.finished
    position = int(state.params["schedule_state"][1])
    assert 0 < position <= block < BLOCKS


@pytest.mark.slow
def test_inspect_shows_the_schedule_and_the_position(killed):
    name, state = killed["name"], killed["state"]
    unit, iteration, _ = killed["kill"]
    summary = killed["inspected_json"]
    assert summary["schedule"]["name"] == name
    (run,) = summary["runs"]
    position = int(state.params["schedule_state"][1])
    assert run["step"] == state.step
    assert run["position"] == {
        "unit": unit,
        "iteration": iteration,
        "block": position,
        "blocks": BLOCKS,
        "step": state.step,
    }
    text = " ".join(killed["inspected"].stdout.split())
    assert f"schedule {name} (" in text
    assert f"committed inside {unit} {iteration} after block {position}/{BLOCKS} (M-step {state.step})" in text


@pytest.mark.slow
def test_resume_equals_the_uninterrupted_fit_bitwise(killed, oracles):
    resumed = killed["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming the fit checkpointed in {killed['ckpt']}" in " ".join(resumed.stderr.split())
    oracle, oracle_path = oracles[killed["name"]]
    assert_same_model_file(killed["model"], oracle_path)
    assert daskem.load(killed["model"]).schedule == killed["name"]
    # The resumed fit records the iterations from the interrupted one on.
    iterations = [int(m.group(1)) for m in map(ITERATION_LINE.match, resumed.stderr.splitlines()) if m]
    assert iterations == list(range(killed["kill"][1], oracle.n_iter_ + 1))


# -- usage errors ----------------------------------------------------------------------------------


def _refused(*args, status=2):
    done = invoke_cli("fit", *args, "--workers", "0")
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    return " ".join(done.stderr.split()), message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--schedule", "minibatch"], ["'minibatch'", "batch", "incremental", "online", "stochastic"]),
        (["--schedule", "online", "--learning-decay", "0.3"], ["'0.3'", "(0.5, 1]", "e.g. 0.55"]),
        (["--schedule", "online", "--learning-decay", "fast"], ["'fast'", "(0.5, 1]"]),
        (["--schedule", "online", "--learning-offset", "-1"], ["-1", "--learning-offset"]),
        (["--schedule", "online", "--step-blocks", "0"], ["0", "--step-blocks"]),
        (["--schedule", "online", "--average", "sometimes"], ["'sometimes'", "no", "half", "N >= 0"]),
        (["--schedule", "online", "--average", "-3"], ["'-3'", "half"]),
        (["--learning-decay", "0.7"], ["--learning-decay is a setting of --schedule online", "--schedule batch"]),
        (["--schedule", "incremental", "--no-shuffle"], ["--no-shuffle is a setting of --schedule online"]),
        (["--schedule", "stochastic", "--step-blocks", "2"], ["--step-blocks", "incremental or online"]),
        (["--model", "lda", "--schedule", "online"], ["--schedule does not apply to --model lda", "--learning-method"]),
    ],
)
def test_bad_schedule_options_are_usage_errors(store, args, words):
    text, _ = _refused(store, *args)
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-k", "3", "--schedule", "online", "--n-init", "2"], ["n_init=2", "n_init=1"]),
        (["-k", "3", "--schedule", "online", "--accelerate", "squarem"], ["accelerate='squarem'", "accelerate=None"]),
    ],
)
def test_schedules_the_estimator_refuses_are_one_line_errors(store, args, words):
    _, message = _refused(store, *args, status=1)
    assert message.startswith("Error: ")
    for word in words:
        assert word in message, (word, message)


def test_a_schedule_a_model_cannot_run_is_a_one_line_error(store):
    # KMeans has no stochastic E-step: a usage error while KMeans takes no schedule, else
    # the estimator's ParameterError as one line.
    done = invoke_cli("fit", store, "--model", "kmeans", "-k", "3", "--schedule", "stochastic", "--workers", "0")
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: ")
    assert "stochastic" in message or "--schedule does not apply" in message


def test_schedule_options_set_the_constructor_parameters(store, tmp_path):
    model = tmp_path / "model.zarr"
    done = invoke_cli(
        "fit", store, *BASE, "--schedule", "online", "--step-blocks", "2", "--no-shuffle", "--average", "0",
        "--max-iter", "1", "-q", "-o", model,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = daskem.load(model)
    assert (loaded.schedule, loaded.step_blocks, loaded.shuffle, loaded.average) == ("online", 2, False, 0)
    assert loaded.average is not False  # 0: average every step, not "no"


def test_learning_rate_options_also_set_lda_online_learning():
    from daskem import registry
    from daskem.cli.options import SCHEDULE_PARAMS, schedule_arguments

    given = dict.fromkeys(SCHEDULE_PARAMS) | {"learning_decay": 0.8, "learning_offset": 5.0}
    assert schedule_arguments(registry.get("lda"), given) == {"learning_decay": 0.8, "learning_offset": 5.0}
    # Not given: the estimator's own defaults (no keyword at all).
    assert schedule_arguments(registry.get("gmm"), dict.fromkeys(SCHEDULE_PARAMS) | {"no_shuffle": False}) == {}
