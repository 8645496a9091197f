"""``daskem fit --checkpoint``, ``daskem resume`` and ``daskem inspect`` end to end, in this process (Click's runner).

Every fit runs with ``--workers 0`` (local threads, no cluster) so that the module stays
fast; ``tests/test_cli.py`` covers the local cluster. Resumed fits are compared bitwise
with uninterrupted fits of the same command line.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import daskem
from daskem.checkpoint import Checkpoint
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli as daskem_cli

pytestmark = pytest.mark.slow

N_SAMPLES, N_FEATURES, N_COMPONENTS, CHUNK_ROWS, DATA_SEED = 20_000, 4, 3, 2_500, 1
#: The fit of the "fit again" tests (defaults elsewhere: full covariance, seed 0).
FIT = ["-k", "3", "--tol", "0", "--workers", "0"]
#: The fit of the resume tests: settings that differ from the CLI defaults, so that
#: ``daskem resume`` can only reproduce the reference by reading them from the checkpoint.
RESUME_FIT = ["-k", "3", "--covariance-type", "diag", "--seed", "5", "--tol", "0", "--workers", "0"]
COMPARED = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
ITERATION_LINE = re.compile(r"^iteration +(\d+)  log-lik (-?\d+\.\d{6})  change ")
HISTORY_ROW = re.compile(r"^│\s+(\d+) │\s+(-?\d+\.\d{6}) │\s+(-|-?\d\.\d{3}e[+-]\d+) │\s+(\d+\.\d{2}) │$")


def _ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def _words(text):
    # Rich wraps long lines at 80 columns when stdout is not a terminal.
    return " ".join(text.split())


def _squeezed(text):
    # Rich centres a table's title over the table and breaks it inside long paths.
    return "".join(text.split())


def _iterations(stderr):
    return [int(m.group(1)) for m in map(ITERATION_LINE.match, stderr.splitlines()) if m]


def assert_same_model(actual, expected):
    """Bitwise equality of the fitted parameters and fit record."""
    for attr in COMPARED:
        assert np.array_equal(getattr(actual, attr), getattr(expected, attr)), attr
    assert actual.lower_bounds_ == expected.lower_bounds_
    assert actual.n_iter_ == expected.n_iter_
    assert actual.converged_ == expected.converged_


def _tree_bytes(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The data (written in-process) and the uninterrupted reference fits, once per module."""
    root = tmp_path_factory.mktemp("cli-checkpoint")
    data = root / "DATA.zarr"
    write_mixture_zarr(data, N_SAMPLES, N_FEATURES, N_COMPONENTS, seed=DATA_SEED, chunk_rows=CHUNK_ROWS)
    ref15, ref12 = root / "REF15.zarr", root / "REF12.zarr"
    _ok(daskem_cli("fit", data, *FIT, "--max-iter", "15", "-q", "-o", ref15))
    _ok(daskem_cli("fit", data, *RESUME_FIT, "--max-iter", "12", "-q", "-o", ref12))
    return {"root": root, "data": data, "ref15": daskem.load(ref15), "ref12": daskem.load(ref12)}


# -- daskem fit --checkpoint, twice ---------------------------------------------------------


def test_fit_again_resumes_and_equals_an_uninterrupted_fit(env, tmp_path):
    run, model = tmp_path / "RUN.zarr", tmp_path / "MODEL.zarr"
    first = _ok(daskem_cli("fit", env["data"], *FIT, "--checkpoint", run, "--max-iter", "6"))
    assert "Resuming" not in first.stderr
    assert _iterations(first.stderr) == list(range(1, 7))
    partial = daskem.load(run)
    assert partial.n_iter_ == 6
    assert partial.lower_bounds_ == env["ref15"].lower_bounds_[:6]

    second = _ok(daskem_cli("fit", env["data"], *FIT, "--checkpoint", run, "--max-iter", "15", "-o", model))
    assert f"Resuming the fit checkpointed in {run}" in _words(second.stderr)
    # Only the remaining iterations run, numbered on from the checkpoint.
    assert _iterations(second.stderr) == list(range(7, 16))
    assert "NOT converged (raise --max-iter or --tol) after 15 iterations" in _words(second.stdout)
    fitted = daskem.load(model)
    assert_same_model(fitted, env["ref15"])
    assert fitted.n_iter_ == 15
    assert len(fitted.lower_bounds_) == 15
    # The checkpoint now holds the finished fit, identical too.
    assert_same_model(daskem.load(run), env["ref15"])
    assert Checkpoint(run).run(0).iterations() == [14, 15]  # --keep-last 2


# -- daskem resume --------------------------------------------------------------------------


@pytest.fixture
def five_iterations(env, tmp_path):
    """A checkpoint of RESUME_FIT after 5 iterations (finished: max_iter was 5)."""
    run = tmp_path / "RUN.zarr"
    _ok(daskem_cli("fit", env["data"], *RESUME_FIT, "--checkpoint", run, "--max-iter", "5", "-q"))
    assert daskem.load(run).n_iter_ == 5
    return run


def test_resume_uses_the_stored_settings(env, five_iterations, tmp_path):
    model = tmp_path / "M.zarr"
    result = _ok(daskem_cli("resume", five_iterations, "--max-iter", "12", "--workers", "0", "-o", model))
    assert f"Resuming the fit checkpointed in {five_iterations}" in _words(result.stderr)
    assert _iterations(result.stderr) == list(range(6, 13))
    # The data location, k=3, diag, seed 5 and tol 0 all came from the checkpoint.
    assert f"GaussianMixture(diag)on{env['data']}" in _squeezed(result.stdout)
    fitted = daskem.load(model)
    assert_same_model(fitted, env["ref12"])
    assert fitted.n_iter_ == 12
    assert fitted.converged_ is False
    assert fitted.covariance_type == "diag"
    assert fitted.n_components == 3
    assert fitted.random_state == 5
    assert fitted.covariances_.shape == (3, N_FEATURES)


def test_resume_from_a_copy_of_the_data_elsewhere(env, five_iterations, tmp_path):
    copy = tmp_path / "elsewhere" / "COPY.zarr"
    shutil.copytree(env["data"], copy)
    model = tmp_path / "M.zarr"
    result = _ok(
        daskem_cli("resume", five_iterations, "--data", copy, "--max-iter", "12", "--workers", "0", "-q", "-o", model)
    )
    assert f"GaussianMixture(diag)on{copy}" in _squeezed(result.stdout)
    assert_same_model(daskem.load(model), env["ref12"])


@pytest.mark.parametrize(
    ("n_samples", "data_seed", "field"),
    [(N_SAMPLES, DATA_SEED + 1, "digest"), (N_SAMPLES // 2, DATA_SEED, "shape")],
    ids=["other-values", "other-shape"],
)
def test_resume_refuses_other_data(five_iterations, tmp_path, n_samples, data_seed, field):
    other = tmp_path / "OTHER.zarr"
    write_mixture_zarr(other, n_samples, N_FEATURES, N_COMPONENTS, seed=data_seed, chunk_rows=CHUNK_ROWS)
    before = _tree_bytes(five_iterations)
    stored = Checkpoint(five_iterations).metadata()["data"]
    result = daskem_cli("resume", five_iterations, "--data", other, "--max-iter", "12", "--workers", "0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    text = _words(result.stderr)
    # Same shape: only the content digest differs. Other shape: the shape is named (the
    # root cause), though the chunking and digest differ too.
    assert f"was written for data.{field}={stored[field]!r}, but this fit has data.{field}=" in text
    if field == "shape":
        assert f"data.shape=[{n_samples}, {N_FEATURES}]" in text
    assert _iterations(result.stderr) == []
    # Nothing was written: the checkpoint still holds the 5-iteration fit.
    assert _tree_bytes(five_iterations) == before
    assert daskem.load(five_iterations).n_iter_ == 5


def test_resume_of_an_in_memory_fit_asks_for_data(tmp_path):
    X = np.random.default_rng(0).normal(size=(500, 2))
    run = tmp_path / "MEM.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        daskem.GaussianMixture(2, random_state=0, max_iter=3, tol=0, checkpoint=str(run)).fit(X)
    refused = daskem_cli("resume", run, "--max-iter", "6", "--workers", "0")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    text = _words(refused.stderr)
    assert f"Error: {str(run)!r} was fitted on in-memory data" in text
    assert "Pass --data with a Zarr copy of the same data" in text
    assert daskem.load(run).n_iter_ == 3

    # Doing what the message says works, and matches an uninterrupted in-memory fit.
    copy = tmp_path / "X.zarr"
    zarr.create_array(str(copy), shape=X.shape, chunks=X.shape, dtype="float64")[...] = X
    model = tmp_path / "M.zarr"
    _ok(daskem_cli("resume", run, "--data", copy, "--max-iter", "6", "--workers", "0", "-q", "-o", model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = daskem.GaussianMixture(2, random_state=0, max_iter=6, tol=0).fit(X)
    assert_same_model(daskem.load(model), reference)


# -- daskem fit --force-restart and mismatches ------------------------------------------------


def test_other_model_is_refused_then_force_restart_starts_afresh(env, tmp_path):
    run, model = tmp_path / "RUN.zarr", tmp_path / "M.zarr"
    _ok(daskem_cli("fit", env["data"], *FIT, "--checkpoint", run, "--max-iter", "6", "-q"))
    before = _tree_bytes(run)

    refused = daskem_cli("fit", env["data"], *FIT, "--checkpoint", run, "--max-iter", "6", "--n-components", "4")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    text = _words(refused.stderr)
    assert "was written for model.n_components=3, but this fit has model.n_components=4" in text
    assert "--force-restart" in text
    assert _tree_bytes(run) == before

    restarted = _ok(
        daskem_cli(
            "fit",
            env["data"],
            *FIT,
            "--checkpoint",
            run,
            "--max-iter",
            "4",
            "--n-components",
            "2",
            "--force-restart",
            "-o",
            model,
        )
    )
    assert "Resuming" not in restarted.stderr
    assert _iterations(restarted.stderr) == [1, 2, 3, 4]
    fitted = daskem.load(model)
    assert fitted.n_iter_ == 4
    assert len(fitted.lower_bounds_) == 4
    assert fitted.means_.shape == (2, N_FEATURES)
    stored = daskem.load(run)
    assert_same_model(stored, fitted)
    assert Checkpoint(run).metadata()["model"]["n_components"] == 2
    assert Checkpoint(run).run(0).iterations() == [3, 4]  # nothing left of the 6-iteration fit
    reference = daskem.GaussianMixture(2, random_state=0, max_iter=4, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(str(env["data"]))
    assert_same_model(fitted, reference)


# -- daskem inspect ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converged_run(env):
    """A checkpoint of a fit that converged (default tol), keeping its last 3 iterations."""
    run = env["root"] / "CONVERGED.zarr"
    _ok(daskem_cli("fit", env["data"], "-k", "3", "--workers", "0", "--keep-last", "3", "--checkpoint", run, "-q"))
    model = daskem.load(run)
    assert model.converged_ is True
    assert 3 < model.n_iter_ < 100
    return run


def test_inspect_prints_the_summary_and_history(env, converged_run):
    model = daskem.load(converged_run)
    n = model.n_iter_
    result = _ok(daskem_cli("inspect", converged_run))
    text = _words(result.stdout)
    assert f"checkpoint {converged_run}" in text
    assert "model model=gmm, n_components=3, covariance_type=full, reg_covar=1e-06" in text
    assert f"data 20,000 x 4 float64 from {env['data']}" in text
    assert (
        f"run 0 {n} iterations, converged, last log-likelihood {model.lower_bound_!r}, "
        f"kept iterations {[n - 2, n - 1, n]}"
    ) in text
    assert "history of run 0" in text
    rows = [m for m in map(HISTORY_ROW.match, result.stdout.splitlines()) if m]
    assert [int(m.group(1)) for m in rows] == list(range(1, n + 1))
    assert [float(m.group(2)) for m in rows] == pytest.approx(model.lower_bounds_, abs=5e-7)
    assert rows[0].group(3) == "-"
    assert [float(m.group(3)) for m in rows[1:]] == pytest.approx(np.diff(model.lower_bounds_), rel=1e-3)
    assert all(float(m.group(4)) >= 0 for m in rows)


def test_inspect_json_equals_the_loaded_model(env, converged_run):
    model = daskem.load(converged_run)
    result = _ok(daskem_cli("inspect", converged_run, "--json"))
    summary = json.loads(result.stdout)
    n = model.n_iter_
    assert summary["location"] == str(env["data"])
    assert summary["model"] == {"model": "gmm", "n_components": 3, "covariance_type": "full", "reg_covar": 1e-06}
    assert summary["data"]["shape"] == [N_SAMPLES, N_FEATURES]
    assert summary["data"]["dtype"] == "float64"
    assert summary["data"]["row_chunks"] == [[CHUNK_ROWS, N_SAMPLES // CHUNK_ROWS]]
    assert summary["estimator"]["params"]["n_components"] == 3
    assert summary["estimator"]["params"]["random_state"] == 0
    assert summary["shown_run"] == 0
    (entry,) = summary["runs"]
    assert entry == {
        "run": 0,
        "iterations": n,
        "converged": True,
        "finished": True,
        "log_likelihood": model.lower_bound_,
        "kept": [n - 2, n - 1, n],
    }
    history = summary["history"]
    assert [row["iteration"] for row in history] == list(range(1, n + 1))
    assert [row["log_likelihood"] for row in history] == model.lower_bounds_
    assert history[0]["change"] is None
    assert [row["change"] for row in history[1:]] == pytest.approx(np.diff(model.lower_bounds_), rel=1e-12)
    assert history[-1]["change"] < 1e-3 <= history[-2]["change"]  # converged at the default tol
    assert all(row["seconds"] > 0 for row in history)


def test_inspect_of_a_run_in_progress(env, tmp_path):
    run = tmp_path / "RUN.zarr"

    def stop_after_three(record, params):
        if record.iteration == 3:
            raise KeyboardInterrupt

    est = daskem.GaussianMixture(3, random_state=0, max_iter=10, tol=0, checkpoint=str(run))
    with pytest.raises(KeyboardInterrupt):
        est.fit(str(env["data"]), callback=stop_after_three)
    result = _ok(daskem_cli("inspect", run))
    ll = env["ref15"].lower_bounds_[2]
    assert f"run 0 3 iterations, in progress, last log-likelihood {ll!r}, kept iterations [2, 3]" in _words(
        result.stdout
    )
    rows = [m for m in map(HISTORY_ROW.match, result.stdout.splitlines()) if m]
    assert [int(m.group(1)) for m in rows] == [1, 2, 3]
    summary = json.loads(_ok(daskem_cli("inspect", run, "--json")).stdout)
    assert summary["runs"][0]["finished"] is False
    assert summary["runs"][0]["converged"] is False
    assert [row["log_likelihood"] for row in summary["history"]] == env["ref15"].lower_bounds_[:3]


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_inspect_of_a_missing_path(tmp_path, json_flag):
    missing = tmp_path / "missing.zarr"
    result = daskem_cli("inspect", missing, *json_flag)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert f"Error: No daskem checkpoint at {str(missing)!r}: the path does not exist." in _words(result.stderr)
    assert not missing.exists()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "resume",
            ["RUN", "--data", "--max-iter", "--workers", "--scheduler", "--output", "with the settings stored in it"],
        ),
        ("inspect", ["RUN", "--json", "log-likelihood history"]),
    ],
)
def test_help(command, expected):
    result = daskem_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    text = _words(result.stdout)
    for word in expected:
        assert word in text, word
