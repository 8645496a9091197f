"""Never lose a user's files, never hang in silence: ``fit -o``, ``save``, Ctrl-C, stopping rules.

The data-loss cases check the user's files byte for byte afterwards. Fits run with
``--workers 0`` (threads) unless the cluster is what is tested; the Ctrl-C test starts a
local cluster of worker processes and sends SIGINT to the whole process group, as a
terminal does. Commands run in this process (Click's runner) unless the process itself is
what is tested (Ctrl-C, a kill while saving).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import daskem
from daskem.checkpoint import Checkpoint
from daskem.checkpoint import store as store_module
from daskem.errors import DataError, DestinationExistsError
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli as daskem_cli

pytestmark = pytest.mark.slow

N_SAMPLES, N_FEATURES, N_COMPONENTS, CHUNK_ROWS = 20_000, 4, 3, 2_500
FIT = ["-k", "3", "--workers", "0", "--seed", "0", "-q"]
COMPARED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _tree_bytes(path):
    path = Path(path)
    if path.is_file():
        return {Path("."): path.read_bytes()}
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _words(text):
    return " ".join(text.split())


def _ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def _refused(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in _words(result.stderr), result.stderr
    return result


def _same_model(a, b):
    for attr in COMPARED:
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    assert a.lower_bounds_ == b.lower_bounds_


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "DATA.zarr"
    write_mixture_zarr(path, N_SAMPLES, N_FEATURES, N_COMPONENTS, seed=1, chunk_rows=CHUNK_ROWS)
    return path


@pytest.fixture(scope="module")
def fitted(data):
    return daskem.GaussianMixture(3, random_state=0).fit(str(data))


# -- fit -o and save() never delete what is not theirs ---------------------------------------


def _user_files(root):
    root.mkdir()
    (root / "notes.txt").write_text("my thesis, chapter 3\n")
    (root / "sub").mkdir()
    (root / "sub" / "data.bin").write_bytes(bytes(range(256)) * 10)
    return root


def test_fit_output_refuses_a_directory_of_user_files(data, tmp_path):
    user = _user_files(tmp_path / "results")
    before = _tree_bytes(user)
    _refused(
        daskem_cli("fit", data, *FIT, "-o", user, "--overwrite"),
        f"'{user}' already holds a directory of 2 entries that is not a daskem model",
        "never deletes anything else",
    )
    assert _tree_bytes(user) == before


def test_fit_output_refuses_the_input_data(data, tmp_path):
    before = _tree_bytes(data)
    _refused(daskem_cli("fit", data, *FIT, "-o", data, "--overwrite"), "is the input data")
    assert _tree_bytes(data) == before
    # Another Zarr array (someone's data) is refused for what it is.
    other = tmp_path / "other.zarr"
    zarr.create_array(str(other), shape=(10, 2), dtype="f8")[...] = 1.0
    before = _tree_bytes(other)
    _refused(daskem_cli("fit", data, *FIT, "-o", other, "--overwrite"), "a Zarr array of shape (10, 2)")
    assert _tree_bytes(other) == before


def test_fit_output_refuses_the_checkpoint_in_use(data, tmp_path):
    run = tmp_path / "run.zarr"
    _refused(daskem_cli("fit", data, *FIT, "--checkpoint", run, "-o", run), "is the checkpoint")
    assert not run.exists()  # refused before anything was written
    _ok(daskem_cli("fit", data, *FIT, "--checkpoint", run, "--max-iter", "2"))
    before = _tree_bytes(run)
    other = tmp_path / "other-run.zarr"
    _ok(daskem_cli("fit", data, *FIT, "--checkpoint", other, "--max-iter", "2"))
    # A checkpoint (in use by this fit or not) is never replaced by a model file.
    _refused(daskem_cli("fit", data, *FIT, "-o", run, "--overwrite"), "a daskem fit checkpoint")
    assert _tree_bytes(run) == before


def test_fit_output_replaces_a_model_only_with_overwrite(data, tmp_path):
    model = tmp_path / "model.zarr"
    _ok(daskem_cli("fit", data, *FIT, "--max-iter", "2", "-o", model))
    first = _tree_bytes(model)
    _refused(
        daskem_cli("fit", data, *FIT, "--max-iter", "5", "-o", model),
        f"'{model}' already holds a daskem model file (GaussianMixture)",
        "--overwrite",
    )
    assert _tree_bytes(model) == first
    _ok(daskem_cli("fit", data, *FIT, "--max-iter", "5", "-o", model, "--overwrite"))
    assert daskem.load(model).n_iter_ == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zarr"]  # nothing left beside it


def test_fit_output_is_checked_before_the_fit(data, tmp_path):
    """A refused --output costs nothing: no cluster, no pass, no checkpoint."""
    user = _user_files(tmp_path / "results")
    start = time.perf_counter()
    result = _refused(daskem_cli("fit", data, *FIT, "--checkpoint", tmp_path / "run.zarr", "-o", user))
    assert "iteration" not in result.stderr
    assert not (tmp_path / "run.zarr").exists()
    assert time.perf_counter() - start < 60


def test_save_refuses_everything_but_an_earlier_model(fitted, data, tmp_path):
    user = _user_files(tmp_path / "results")
    before = _tree_bytes(user)
    for overwrite in (False, True):
        with pytest.raises(DestinationExistsError, match=re.escape("never deletes anything else")):
            fitted.save(user, overwrite=overwrite)
    assert _tree_bytes(user) == before
    # It is also FileExistsError, as file APIs raise it.
    data_before = _tree_bytes(data)
    with pytest.raises(FileExistsError, match=r"a Zarr array of shape \(20000, 4\) and dtype float64 \(data\)"):
        fitted.save(data, overwrite=True)
    assert _tree_bytes(data) == data_before
    a_file = tmp_path / "model.zarr"
    a_file.write_text("not a model")
    with pytest.raises(DestinationExistsError, match="a file of 11 bytes"):
        fitted.save(a_file, overwrite=True)
    assert a_file.read_text() == "not a model"
    # An empty directory is taken as the place to write.
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty")
    _same_model(daskem.load(tmp_path / "empty"), fitted)


def test_save_replaces_a_model_by_a_swap(fitted, blobs, tmp_path):
    path = tmp_path / "m.zarr"
    other = daskem.GaussianMixture(2, random_state=0).fit(blobs)
    other.save(path)
    with pytest.raises(DestinationExistsError, match="overwrite=True"):
        fitted.save(path)
    _same_model(daskem.load(path), other)
    fitted.save(path, overwrite=True)
    _same_model(daskem.load(path), fitted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


def test_a_crash_while_saving_leaves_the_old_model_intact(fitted, blobs, tmp_path, monkeypatch):
    path = tmp_path / "m.zarr"
    old = daskem.GaussianMixture(2, random_state=0).fit(blobs)
    old.save(path)
    before = _tree_bytes(path)
    real_write = store_module.write_float_array
    written = []

    def failing_write(group, name, value):
        written.append(name)
        if len(written) == 3:
            raise OSError("disk full (injected)")
        real_write(group, name, value)

    monkeypatch.setattr(store_module, "write_float_array", failing_write)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path, overwrite=True)
    assert _tree_bytes(path) == before
    _same_model(daskem.load(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]  # the half-written copy is gone


def test_a_kill_while_saving_leaves_the_old_model_intact(fitted, blobs, tmp_path):
    """SIGKILL in the middle of writing the new model: the old one is untouched."""
    path = tmp_path / "m.zarr"
    old = daskem.GaussianMixture(2, random_state=0).fit(blobs)
    old.save(path)
    before = _tree_bytes(path)
    script = (
        "import sys, time, numpy as np, daskem\n"
        "from daskem.checkpoint import store\n"
        "real = store.write_float_array\n"
        "def slow(group, name, value):\n"
        "    real(group, name, value); print(name, flush=True); time.sleep(30)\n"
        "store.write_float_array = slow\n"
        "X = np.random.default_rng(0).normal(size=(500, 3))\n"
        "daskem.GaussianMixture(3, random_state=0).fit(X).save(sys.argv[1], overwrite=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip()  # one array of the new model is written
    proc.kill()
    proc.wait(timeout=30)
    assert _tree_bytes(path) == before
    _same_model(daskem.load(path), old)


# -- checkpoints without a fitted iteration ---------------------------------------------------


def test_a_fit_that_failed_on_nan_does_not_block_the_next(tmp_path):
    """The checkpoint of a fit that failed before its first iteration is replaced silently."""
    bad = tmp_path / "data.zarr"
    write_mixture_zarr(bad, N_SAMPLES, N_FEATURES, N_COMPONENTS, seed=1, chunk_rows=CHUNK_ROWS)
    array = zarr.open_array(str(bad), mode="r+")
    good_row = array[7].copy()
    array[7, 2] = np.nan
    run = tmp_path / "run.zarr"
    failed = daskem_cli("fit", bad, *FIT, "--checkpoint", run)
    assert failed.returncode == 1
    assert "NaN" in failed.stderr
    array[7] = good_row  # the user fixes the data: its digest changes
    _ok(daskem_cli("fit", bad, *FIT, "--checkpoint", run, "--max-iter", "3"))
    assert daskem.load(run).n_iter_ == 3
    # A checkpoint with fitted iterations is still protected: other data are refused.
    array[8, 1] = 5.0
    _refused(daskem_cli("fit", bad, *FIT, "--checkpoint", run), "was written for data.digest=")


def test_python_fit_replaces_a_checkpoint_without_iterations(tmp_path, blobs):
    run = tmp_path / "run.zarr"
    bad = blobs.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        daskem.GaussianMixture(3, random_state=0, checkpoint=run).fit(bad)
    fitted = daskem.GaussianMixture(3, random_state=0, checkpoint=run).fit(blobs)
    _same_model(fitted, daskem.GaussianMixture(3, random_state=0).fit(blobs))


# -- the initial parameters are committed; stopping rules can change on resume ----------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_initial_parameters_are_committed_and_resumed_without_a_pass(data, tmp_path):
    run = tmp_path / "run.zarr"
    reference = daskem.GaussianMixture(3, random_state=0, max_iter=20, tol=0).fit(str(data))
    started = daskem.GaussianMixture(3, random_state=0, max_iter=0, tol=0, checkpoint=run).fit(str(data))
    assert started.n_iter_ == 0
    state = Checkpoint(run).run(0).latest()
    assert (state.iteration, state.passes) == (0, reference.n_passes_ - 20)
    result = _ok(
        daskem_cli(
            "fit",
            data,
            "-k",
            "3",
            "--workers",
            "0",
            "--tol",
            "0",
            "--max-iter",
            "20",
            "--checkpoint",
            run,
            "-o",
            tmp_path / "m.zarr",
        )
    )
    text = _words(result.stderr)
    assert f"Resuming the fit checkpointed in {run} after initialisation (iteration 0)" in text
    assert "initialising" not in text  # no initialisation pass was made again
    resumed = daskem.load(tmp_path / "m.zarr")
    _same_model(resumed, reference)
    assert resumed.n_passes_ == reference.n_passes_


def test_refit_of_a_finished_fit_says_nothing_is_left(data, tmp_path):
    run = tmp_path / "run.zarr"
    _ok(daskem_cli("fit", data, *FIT, "--tol", "1e-2", "--checkpoint", run))
    again = _ok(daskem_cli("fit", data, *FIT, "--tol", "1e-2", "--checkpoint", run))
    n_iter = daskem.load(run).n_iter_
    assert f"Nothing left to do: the fit checkpointed in {run} already converged after {n_iter} iterations" in _words(
        again.stdout
    )
    assert "smaller --tol or a larger --max-iter" in _words(again.stdout)


@pytest.mark.parametrize(
    ("first", "second", "before"),
    [
        (["--tol", "1e-2"], ["--tol", "1e-7", "--max-iter", "100"], "converged under tol=0.01"),
        (["--tol", "0", "--max-iter", "3"], ["--tol", "0", "--max-iter", "9"], "stopped at max_iter=3"),
    ],
    ids=["smaller-tol", "larger-max-iter"],
)
def test_resume_continues_under_a_new_stopping_rule(data, tmp_path, first, second, before):
    run, model = tmp_path / "run.zarr", tmp_path / "m.zarr"
    reference = tmp_path / "reference.zarr"
    _ok(daskem_cli("fit", data, "-k", "3", "--workers", "0", *second, "-q", "-o", reference))
    _ok(daskem_cli("fit", data, *FIT, *first, "--checkpoint", run))
    stopped = daskem.load(run).n_iter_
    result = _ok(daskem_cli("fit", data, "-k", "3", "--workers", "0", *second, "--checkpoint", run, "-o", model))
    tol, max_iter = float(second[1]), int(second[3]) if len(second) > 3 else 100
    assert f"the fit {before} at iteration {stopped} continues under tol={tol:g}, max_iter={max_iter}" in _words(
        result.stderr
    )
    continued = daskem.load(model)
    assert continued.n_iter_ > stopped
    # Only the stopping rule differs: the continued fit is the uninterrupted one, bit for bit.
    _same_model(continued, daskem.load(reference))
    rules = Checkpoint(run).run(0).latest().rules
    assert [r[0] for r in rules] == [0, stopped]
    assert rules[-1][1:] == (tol, max_iter)


# -- Ctrl-C ---------------------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process for the test, however pytest was started."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_prints_one_line_closes_the_cluster_and_exits_130(data, tmp_path):
    run = tmp_path / "run.zarr"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daskem.cli",
            "fit",
            str(data),
            "-k",
            "3",
            "--workers",
            "2",
            "--memory-limit",
            "1GiB",
            "--tol",
            "0",
            "--max-iter",
            "1000",
            "--checkpoint",
            str(run),
            "--progress",
            "lines",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "400"},
        # Ctrl-C at its default, as in a terminal's foreground job: a shell starting pytest in
        # the background without job control leaves SIGINT ignored, and children inherit that.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = Checkpoint(run).run(0).latest() if Checkpoint(run).exists() else None
        if state is not None and state.iteration >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert " - distributed." not in stderr
    committed = Checkpoint(run).run(0).latest().iteration
    lines = stderr.strip().splitlines()
    tail = _words("\n".join(lines[-2:]))
    assert tail == (
        f"Interrupted. The checkpoint {run} is intact; the last committed iteration is {committed}. "
        f"Continue with: daskem resume {run} --workers 2"
    )
    assert not any(line.startswith(("Interrupted", "Aborted")) for line in lines[:-2])
    # No worker process is left behind (an exited one may stay a zombie until init reaps it).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        group = subprocess.run(["ps", "-o", "stat=", "-g", str(proc.pid)], capture_output=True, text=True)
        alive = [s for s in group.stdout.split() if not s.startswith("Z")]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive


def test_ctrl_c_landing_in_a_finaliser_still_stops_the_fit(data, tmp_path, monkeypatch, ctrl_c_raises):
    """Python drops an exception raised in a ``__del__`` ("Exception ignored in ..."): a
    Ctrl-C landing in one (distributed finalises its futures in the driver thread) once let
    the fit run on. The command delivers it again: it stops with the one-line message."""
    import daskem.cli.display as display_module

    class Finalised:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the KeyboardInterrupt is raised in here

    shown = display_module.IterationDisplay.__call__

    def call(self, record, params):
        shown(self, record, params)
        if self.records == 3:
            Finalised()  # dropped at once: its __del__ runs, the exception is dropped too

    monkeypatch.setattr(display_module.IterationDisplay, "__call__", call)
    run = tmp_path / "run.zarr"
    result = daskem_cli(
        "fit", data, *FIT[:-1], "--tol", "0", "--max-iter", "200", "--checkpoint", run, "--progress", "lines"
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    committed = Checkpoint(run).run(0).latest().iteration
    assert 3 <= committed < 200
    assert f"Interrupted. The checkpoint {run} is intact; the last committed iteration is {committed}." in _words(
        result.stderr
    )


def test_resume_command_takes_a_new_tol(data, tmp_path):
    run, model, reference = tmp_path / "run.zarr", tmp_path / "m.zarr", tmp_path / "reference.zarr"
    _ok(daskem_cli("fit", data, *FIT, "--tol", "1e-7", "-o", reference))
    _ok(daskem_cli("fit", data, *FIT, "--tol", "1e-2", "--checkpoint", run))
    stopped = daskem.load(run).n_iter_
    result = _ok(daskem_cli("resume", run, "--tol", "1e-7", "--workers", "0", "-o", model))
    assert f"the fit converged under tol=0.01 at iteration {stopped} continues under tol=1e-07" in _words(result.stderr)
    _same_model(daskem.load(model), daskem.load(reference))


# -- make-data -------------------------------------------------------------------------------


def test_make_data_overwrite_replaces_only_its_own_arrays(tmp_path):
    user = _user_files(tmp_path / "results")
    before = _tree_bytes(user)
    _refused(
        daskem_cli("make-data", user, "--n-samples", "100", "--overwrite"),
        "not a dataset written by daskem make-data; it is never replaced",
    )
    assert _tree_bytes(user) == before
    made = tmp_path / "made.zarr"
    _ok(daskem_cli("make-data", made, "--n-samples", "100", "--n-features", "2", "--seed", "1"))
    _ok(daskem_cli("make-data", made, "--n-samples", "50", "--n-features", "2", "--seed", "1", "--overwrite"))
    assert zarr.open_array(str(made), mode="r").shape == (50, 2)


def test_make_data_separation_scales_the_true_means(tmp_path):
    paths = {}
    for separation in ("4", "0.5"):
        paths[separation] = tmp_path / f"sep-{separation}.zarr"
        args = ["--n-samples", "100", "--n-features", "3", "--n-components", "4", "--seed", "2"]
        _ok(daskem_cli("make-data", paths[separation], *args, "--separation", separation))
    means = {k: np.asarray(zarr.open_array(str(p), mode="r").attrs["daskem_truth"]["means"]) for k, p in paths.items()}
    np.testing.assert_allclose(means["0.5"], means["4"] * 0.5 / 4.0, rtol=1e-12)  # 4.0 is the default
    bad = daskem_cli("make-data", tmp_path / "x.zarr", "--separation", "0")
    assert bad.returncode == 2
    assert "--separation" in bad.stderr
    assert "0 is not in the range x>0" in bad.stderr.replace("\x27", "")


def test_an_in_process_command_leaves_the_workers_log_level_out_of_the_environment(data, tmp_path):
    """The CLI quiets its workers' logs; in-process (CliRunner) the setting must not stay behind."""
    from click.testing import CliRunner

    from daskem.cli import main

    environ = dict(os.environ)
    result = CliRunner().invoke(main, ["fit", str(data), *FIT, "--max-iter", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    # (distributed's nanny exports its own pre-spawn environment into this process too;
    # the log level daskem adds to it must not stay: later clusters would log nothing.)
    assert os.environ.get("DASK_LOGGING__DISTRIBUTED") == environ.get("DASK_LOGGING__DISTRIBUTED")
