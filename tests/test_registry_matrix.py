"""Every registered model through every front-end of the ``daskem`` command (issue 13, part 5).

Parametrised from the registry itself (:func:`daskem.registry.entries`): a model added to
the registry joins this matrix with no new test code. Each model is fitted on a small
generated Zarr store (rows of features, or one column of symbols for a model that fits
symbols; with a ``--lengths`` file, one sequence longer than a block, for a model that
takes sequence lengths) through the ``daskem`` command (the killed fit in a subprocess;
resume, plot and inspect in this process through Click's runner):

1. ``daskem fit --checkpoint`` is killed with SIGKILL mid-fit (after its first iteration
   line, while the commits are slowed by DASKEM_CHECKPOINT_WRITE_DELAY);
2. ``daskem resume --max-iter`` (one iteration more than the killed fit's limit; in this
   process, as what it reads back is under test, not its process) writes a
   model whose every parameter array, history and iteration count equal bitwise those of
   the in-memory estimator fitted by Python with the same settings;
3. ``daskem inspect --json`` reports that fit's real values (kind, hyperparameters,
   iterations, the log-likelihood history, the registry summary's values);
4. ``daskem plot`` writes one non-blank PNG per figure (the history and the model's own);
5. ``daskem.load`` gives predictions and scores on the data equal to the estimator's.

Besides one case per model, the schedules of :data:`SCHEDULED` (``--schedule``, with
two blocks per step so that an iteration makes an M-step inside it; the kill comes after
the first iteration's commit, the resume reads the schedule's state) run through the
same steps, as the cases ``MODEL-SCHEDULE``.

``--workers 0`` (threads) throughout: no cluster is under test here.
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

import matplotlib.image
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import registry
from daskem.checkpoint import Checkpoint
from daskem.checkpoint.checkpoint import WRITE_DELAY_ENV
from daskem.checkpoint.store import read_arrays_group
from daskem.estimators._base import default_run
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli

pytestmark = pytest.mark.slow

DASKEM = str(Path(sys.executable).with_name("daskem"))
N_SAMPLES, CHUNK_ROWS, N_FEATURES, K = 2_000, 500, 3, 2
#: Sequences of a sequence model; 700 rows is more than a block (messages between blocks).
LENGTHS = (50, 150, 300, 700, 300, 500)
KILLED_MAX_ITER, MAX_ITER = 6, 7
SETTINGS = {"tol": 0.0, "random_state": 0, "split_every": 2}
ITERATION_LINE = re.compile(r"^iteration +(\d+)  ")
ENTRIES = registry.entries()
#: Schedules other than batch run as cases of their own (few: the matrix's time matters).
SCHEDULED = {"gmm": ("online", "incremental")}
SCHEDULE_ARGS = ("--step-blocks", "2")
#: The cases: (name, entry, schedule or None).
CASES = [(entry.name, entry, None) for entry in ENTRIES] + [
    (f"{entry.name}-{schedule}", entry, schedule) for entry in ENTRIES for schedule in SCHEDULED.get(entry.name, ())
]


def _environ(**extra):
    env = {k: v for k, v in os.environ.items() if k != WRITE_DELAY_ENV}
    return {**env, "COLUMNS": "400", **extra}


def _option(entry, predicate):
    return next((option for option in entry.options if predicate(option)), None)


def _data(entry, root):
    """The model's store and sequence lengths (None for a model that takes no lengths)."""
    store = root / f"{entry.name}.zarr"
    if entry.data == "counts":
        # Documents of three topics over 30 words, ~40 words each (LDA's generative model).
        rng = np.random.default_rng(0)
        topics = rng.dirichlet(np.full(30, 0.2), size=3)
        mixes = rng.dirichlet(np.full(3, 0.3), size=N_SAMPLES)
        counts = np.stack([rng.multinomial(40, p) for p in mixes @ topics]).astype(np.float64)
        array = zarr.create_array(str(store), shape=counts.shape, chunks=(CHUNK_ROWS, 30), dtype="float64")
        array[:] = counts
    elif entry.data == "symbols":
        # A two-state chain emitting four symbols, stored as one column.
        rng = np.random.default_rng(0)
        states = np.zeros(N_SAMPLES, dtype=np.intp)
        for t in range(1, N_SAMPLES):
            states[t] = states[t - 1] if rng.random() < 0.9 else 1 - states[t - 1]
        emissions = np.array([[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.3, 0.6]])
        symbols = (emissions[states].cumsum(axis=1) > rng.random(N_SAMPLES)[:, None]).argmax(axis=1)
        array = zarr.create_array(str(store), shape=(N_SAMPLES, 1), chunks=(CHUNK_ROWS, 1), dtype="float64")
        array[:] = symbols[:, None].astype(np.float64)
    else:
        # Overlapping components: every model needs several iterations.
        write_mixture_zarr(store, N_SAMPLES, N_FEATURES, 3, seed=0, chunk_rows=CHUNK_ROWS, separation=2.0)
    takes_lengths = _option(entry, lambda o: o.target == "data" and o.param == "lengths") is not None
    return store, (np.array(LENGTHS) if takes_lengths else None)


def _kill_after_first_iteration(command, write_delay="0.1"):
    """Start ``command``, SIGKILL its process group once the first iteration line appears.

    The commits are slowed by ``write_delay`` seconds per array (None: not slowed; the
    schedules commit after every M-step, several per iteration, which is slow enough).
    """
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=_environ(**({} if write_delay is None else {WRITE_DELAY_ENV: write_delay})),
        start_new_session=True,
    )
    watchdog = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if ITERATION_LINE.match(line):
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it was killed:\n" + "".join(lines)


def _arguments(entry, root, lengths, schedule=None):
    """The ``daskem fit`` options of the matrix and the constructor parameters they mean."""
    args = ["--model", entry.name, "--tol", "0", "--seed", "0", "--split-every", "2", "--workers", "0"]
    params = {entry.param(name): value for name, value in SETTINGS.items()}
    params[entry.param("max_iter")] = MAX_ITER
    if schedule is not None:
        args += ["--schedule", schedule, *SCHEDULE_ARGS]
        params.update(schedule=schedule, step_blocks=int(SCHEDULE_ARGS[1]))
    k = _option(entry, lambda o: "-k" in o.flags)
    if k is not None:
        args += ["-k", str(K)]
        params[k.param] = K
    if lengths is not None:
        (root / "lengths.txt").write_text("\n".join(map(str, lengths)) + "\n")
        args += ["--lengths", root / "lengths.txt"]
    return args, params


def _command_line(entry, root, store, args, schedule=None):
    """fit, killed mid-fit, as a ``daskem`` process."""
    ckpt = root / "run.zarr"
    _kill_after_first_iteration(
        list(map(str, [DASKEM, "fit", store, *args, "--max-iter", KILLED_MAX_ITER, "--checkpoint", ckpt])),
        write_delay="0.1" if schedule is None else None,
    )
    _, killed = default_run(Checkpoint(str(ckpt)))
    return {"killed": killed}


def _invoke(*args):
    """``daskem ARGS`` in this process (Click's runner): what plot and inspect read and write
    is under test here, not their process (~2 s of imports each as a process)."""
    done = invoke_cli(*args)
    assert done.returncode == 0, done.stderr
    return done


def _read_back(root):
    """resume the killed fit, plot and inspect its checkpoint, and inspect its model file."""
    ckpt, figures, model = root / "run.zarr", root / "fig-", root / "model.zarr"
    return {
        "model": model,
        "resumed": _invoke("resume", ckpt, "--max-iter", MAX_ITER, "--workers", "0", "-o", model),
        "plotted": _invoke("plot", ckpt, "-o", figures, "--sample", 500),
        "figures": figures,
        "inspected": json.loads(_invoke("inspect", ckpt, "--json").stdout),
        "inspected_file": json.loads(_invoke("inspect", model, "--json").stdout),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Every model's command-line run and its Python oracle, by model name.

    The command-line runs (processes) go three at a time while this thread fits the
    oracles one after the other, so the matrix takes about its CPU time over the cores.
    """
    prepared = {}
    for name, entry, schedule in CASES:
        root = tmp_path_factory.mktemp(name)
        store, lengths = _data(entry, root)
        prepared[name] = (entry, root, store, lengths, schedule, *_arguments(entry, root, lengths, schedule))
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {
            name: pool.submit(_command_line, entry, root, store, args, schedule)
            for name, (entry, root, store, _, schedule, args, _) in prepared.items()
        }
        found = {}
        for name, (entry, root, store, lengths, _, _, params) in prepared.items():
            source = daskem.as_source(str(store), lengths=lengths)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations, on purpose
                oracle = entry.estimator(**params).fit(source)
            found[name] = {
                "entry": entry,
                "root": root,
                "store": store,
                "source": source,
                "oracle": oracle,
                "schedule": prepared[name][4],
            }
        for name, run in runs.items():
            found[name]["run"] = run.exception() or run.result()
    # Not in the pool's threads: the in-process runner changes this process's state.
    for found_run in found.values():
        run = found_run["run"]
        if not isinstance(run, BaseException):
            try:
                run.update(_read_back(found_run["root"]))
            except Exception as error:  # reported by that model's tests only
                found_run["run"] = error
    return found


def _case(cases, name):
    found = cases[name]
    if isinstance(found["run"], BaseException):
        raise found["run"]
    return {**found, **found["run"]}


@pytest.fixture(params=[name for name, _, _ in CASES])
def case(request, cases):
    """One model (or a model under a schedule): its oracle and what the ``daskem`` command did with it."""
    return _case(cases, request.param)


def test_the_matrix_covers_every_model_of_the_issue():
    assert {"gmm", "kmeans", "gaussian-hmm", "categorical-hmm", "ppca", "fa"} <= {e.name for e in ENTRIES}


def test_killed_mid_fit(case):
    killed, oracle = case["killed"], case["oracle"]
    assert oracle.n_iter_ >= 3  # the data take several iterations
    assert 1 <= killed.iteration < min(oracle.n_iter_, KILLED_MAX_ITER)
    assert not killed.finished
    assert list(killed.history["log_likelihood"]) == oracle.lower_bounds_[: killed.iteration]


def test_resume_equals_the_uninterrupted_python_fit_bitwise(case):
    arrays, info = read_arrays_group(case["model"])
    case["oracle"].save(case["root"] / "oracle.zarr")
    expected, oracle_info = read_arrays_group(case["root"] / "oracle.zarr")
    assert sorted(arrays) == sorted(expected)
    for name, values in expected.items():
        assert arrays[name].tobytes() == values.tobytes(), name
    assert info["kind"] == case["entry"].estimator.__name__
    assert info["fit"]["lower_bounds"] == oracle_info["fit"]["lower_bounds"]
    assert info["fit"]["n_iter"] == oracle_info["fit"]["n_iter"] == case["oracle"].n_iter_
    assert info["fit"]["converged"] == oracle_info["fit"]["converged"]
    stderr = " ".join(case["resumed"].stderr.split())
    assert f"Resuming the fit checkpointed in {case['root'] / 'run.zarr'}" in stderr
    done = [int(m.group(1)) for m in map(ITERATION_LINE.match, case["resumed"].stderr.splitlines()) if m]
    assert done == list(range(case["killed"].iteration + 1, case["oracle"].n_iter_ + 1))
    # The end-of-fit summary is the registry's (the KMeans one used to crash here).
    summary = registry.entry_for(type(case["oracle"])).summary(case["oracle"])
    assert f"{summary.title} on {case['store']}" in case["resumed"].stdout
    assert f"model written to {case['model']}" in " ".join(case["resumed"].stdout.split())


def test_inspect_json_reports_the_fit(case):
    entry, oracle, summary = case["entry"], case["oracle"], case["inspected"]
    assert summary["location"] == str(case["store"])
    assert summary["estimator"]["kind"] == entry.estimator.__name__
    params = summary["estimator"]["params"]
    # The root holds the settings the checkpoint was created with; the resume's --max-iter
    # is a stopping rule of the run (the history below reaches it).
    assert params[entry.param("max_iter")] == KILLED_MAX_ITER
    assert params["random_state"] == 0
    assert params["split_every"] == 2
    k = _option(entry, lambda o: "-k" in o.flags)
    if k is not None:
        assert params[k.param] == K
    (run,) = summary["runs"]
    assert (run["iterations"], run["finished"], run["converged"]) == (oracle.n_iter_, True, oracle.converged_)
    assert [row["log_likelihood"] for row in summary["history"]] == oracle.lower_bounds_
    fitted = summary["fitted"]
    assert (fitted["name"], fitted["run"], fitted["iteration"]) == (entry.name, 0, oracle.n_iter_)
    expected = entry.summary(oracle)
    assert fitted["title"] == expected.title
    assert fitted["values"] == json.loads(json.dumps(expected.values))


def test_inspect_json_reports_the_schedule(case):
    schedule = case["schedule"]
    for summary in (case["inspected"], case["inspected_file"]):
        if schedule is None:
            assert summary["schedule"] is None
        else:
            assert summary["schedule"]["name"] == schedule
            assert summary["schedule"]["step_blocks"] == int(SCHEDULE_ARGS[1])
    assert case["inspected"]["runs"][0].get("position") is None  # the fit ended between iterations


def test_inspect_json_reads_the_model_file(case):
    entry, oracle, summary = case["entry"], case["oracle"], case["inspected_file"]
    assert summary["kind"] == "model"
    assert summary["location"] == str(case["store"])
    assert summary["estimator"]["kind"] == entry.estimator.__name__
    fit = summary["fit"]
    assert (fit["n_iter"], fit["converged"], fit["n_passes"]) == (oracle.n_iter_, oracle.converged_, oracle.n_passes_)
    assert [row["log_likelihood"] for row in summary["history"]] == oracle.lower_bounds_
    expected = entry.summary(oracle)
    assert (summary["fitted"]["name"], summary["fitted"]["title"]) == (entry.name, expected.title)
    assert summary["fitted"]["values"] == json.loads(json.dumps(expected.values))
    assert summary["fitted"]["objective"] == entry.objective  # what lower_bound_ is, printed with it


def test_plot_writes_a_non_blank_png_per_figure(case):
    names = ["loglik", *case["entry"].figures]
    files = [f"{case['figures']}{name}.png" for name in names]
    assert case["plotted"].stdout.split() == [w for f in files for w in ("wrote", f)]
    for path in files:
        rgb = matplotlib.image.imread(path)[..., :3]
        assert rgb.shape[0] > 200
        assert rgb.shape[1] > 200
        assert float(rgb.std()) > 0.05, path
        assert float((rgb.mean(axis=-1) < 0.9).mean()) > 0.005, path


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (name, method)
        for name, entry, _ in CASES
        for method in ("predict", "transform", "score")
        if hasattr(entry.estimator, method)
    ],
)
def test_loaded_model_predicts_as_the_estimator(cases, name, method):
    case = _case(cases, name)
    loaded, oracle = daskem.load(case["model"]), case["oracle"]
    assert type(loaded) is type(oracle)
    got = np.asarray(getattr(loaded, method)(case["source"]))
    want = np.asarray(getattr(oracle, method)(case["source"]))
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()
