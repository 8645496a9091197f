"""The ``daskem`` command end to end, in this process (Click's runner; the fit starts its own LocalCluster)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import zarr

import daskem
from daskem.cli import remaining_iterations
from daskem.em.monitor import IterationRecord
from daskem.testing import make_mixture_array
from daskem.testing.cli import invoke_cli as daskem_cli

pytestmark = pytest.mark.slow

PARAM_ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
MAKE_DATA = ["--n-samples", "20000", "--n-features", "4", "--n-components", "3", "--seed", "1", "--chunk-rows", "2500"]
FIT = ["-k", "3", "--workers", "2", "--memory-limit", "1GiB", "--seed", "0", "--max-iter", "50"]
ITERATION_LINE = re.compile(
    r"^iteration +(\d+)  log-lik (-?\d+\.\d{6})  change (inf|-?\d\.\d{3}e[+-]\d+)  \d+\.\d{2} s  ETA ~\d+ s"
    r"(  converged)?$"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """make-data then fit, once for the module."""
    root = tmp_path_factory.mktemp("cli")
    data, model = root / "OUT.zarr", root / "MODEL.zarr"
    made = daskem_cli("make-data", data, *MAKE_DATA)
    fitted = daskem_cli("fit", data, *FIT, "--output", model)
    return {"data": data, "model": model, "make": made, "fit": fitted}


def test_make_data_writes_the_generator_data(run):
    assert run["make"].returncode == 0, run["make"].stderr
    assert f"Wrote {run['data']}: 20,000 x 4 float64" in run["make"].stderr
    array = zarr.open_array(str(run["data"]), mode="r")
    assert array.shape == (20000, 4)
    assert array.chunks == (2500, 4)
    assert array.dtype == np.float64
    X, spec = make_mixture_array(20000, 4, 3, seed=1, chunk_rows=2500)
    assert np.array_equal(array[...], X.compute())
    truth = array.attrs["daskem_truth"]
    assert truth["seed"] == 1
    assert np.array_equal(np.asarray(truth["weights"]), spec.weights)
    assert np.array_equal(np.asarray(truth["means"]), spec.means)


def test_fit_exit_code_and_iteration_lines(run):
    result = run["fit"]
    assert result.returncode == 0, result.stderr
    model = daskem.load(run["model"])
    assert "Local cluster: 2 worker process(es) x 1 thread(s), memory limit 1GiB each" in _words(result.stderr)
    assert re.search(r"dashboard:\s+http://127\.0\.0\.1:\d+/status", result.stderr)
    # Not a TTY: one plain line per iteration on stderr, none on stdout.
    matches = [m for m in map(ITERATION_LINE.match, result.stderr.splitlines()) if m]
    assert [int(m.group(1)) for m in matches] == list(range(1, model.n_iter_ + 1))
    assert [float(m.group(2)) for m in matches] == pytest.approx(model.lower_bounds_, abs=5e-7)
    assert matches[0].group(3) == "inf"
    assert [float(m.group(3)) for m in matches[1:]] == pytest.approx(np.diff(model.lower_bounds_), rel=1e-3)
    assert not any(map(ITERATION_LINE.match, result.stdout.splitlines()))
    assert "\x1b[" not in result.stderr  # no terminal control codes


def _words(text):
    # Rich wraps long lines at 80 columns when stdout is not a terminal.
    return " ".join(text.split())


def test_fit_summary(run):
    result = run["fit"]
    model = daskem.load(run["model"])
    assert model.converged_ is True
    text = _words(result.stdout)
    assert f"converged after {model.n_iter_} iterations in " in text
    assert f"; mean log-likelihood {model.lower_bound_:.6f}" in text
    assert f"model written to {run['model']} (load with daskem.load({str(run['model'])!r}))" in text
    assert f"GaussianMixture (full) on {run['data']}" in text
    for j, weight in enumerate(model.weights_):
        assert re.search(rf"│\s+{j} │ {weight:.4f} │ {model.means_[j, 0]:.3f}, ", result.stdout), j


def test_fit_model_equals_python_api(run):
    model = daskem.load(run["model"])
    api = daskem.GaussianMixture(n_components=3, random_state=0, max_iter=50).fit(str(run["data"]))
    # The CLI's cluster of worker processes and the API on local threads agree bitwise.
    for attr in PARAM_ATTRS:
        assert np.array_equal(getattr(model, attr), getattr(api, attr)), attr
    assert model.n_iter_ == api.n_iter_
    assert model.lower_bounds_ == api.lower_bounds_
    assert model.get_params() == api.get_params()
    assert model.n_features_in_ == 4


def test_make_data_refuses_to_overwrite(run):
    before = zarr.open_array(str(run["data"]), mode="r")[:5]
    again = daskem_cli("make-data", run["data"], "--n-samples", "10", "--n-features", "2", "--seed", "5")
    assert again.returncode == 1
    assert f"Error: {str(run['data'])!r} already exists; pass --overwrite to replace it." in _words(again.stderr)
    assert np.array_equal(zarr.open_array(str(run["data"]), mode="r")[:5], before)


def test_make_data_overwrite(tmp_path):
    out = tmp_path / "X.zarr"
    assert daskem_cli("make-data", out, "--n-samples", "10", "--n-features", "2", "--n-components", "1").returncode == 0
    again = daskem_cli(
        "make-data",
        out,
        "--n-samples",
        "30",
        "--n-features",
        "3",
        "--n-components",
        "2",
        "--seed",
        "4",
        "--chunk-rows",
        "7",
        "--overwrite",
    )
    assert again.returncode == 0, again.stderr
    X, _ = make_mixture_array(30, 3, 2, seed=4, chunk_rows=7)
    assert np.array_equal(zarr.open_array(str(out), mode="r")[...], X.compute())


def test_fit_nonexistent_path(tmp_path):
    missing = tmp_path / "missing.zarr"
    # On threads: a worker process would start (seconds of CPU) only to be closed again.
    result = daskem_cli("fit", missing, "-k", "2", "--workers", "0")
    assert result.returncode == 1
    assert f"Error: No Zarr array found at {str(missing)!r}: the path does not exist." in _words(result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model.zarr").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["make-data", "fit", "Fit latent-variable models by EM"]),
        (
            ["fit"],
            [
                "DATA",
                "--n-components",
                "-k",
                "--covariance-type",
                "--scheduler",
                "--workers",
                "--threads-per-worker",
                "--memory-limit",
                "--max-iter",
                "--tol",
                "--reg-covar",
                "--init-params",
                "--n-init",
                "--seed",
                "--split-every",
                "--output",
                "--quiet",
                "LocalCluster",
            ],
        ),
        (
            ["make-data"],
            [
                "OUT",
                "--n-samples",
                "--n-features",
                "--n-components",
                "--seed",
                "--chunk-rows",
                "--dtype",
                "--compress",
                "--overwrite",
                "Zarr v3 array",
            ],
        ),
    ],
    ids=["main", "fit", "make-data"],
)
def test_help(args, expected):
    result = daskem_cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    text = " ".join(result.stdout.split())
    for word in expected:
        assert word in text, word


def test_console_script_version():
    script = [sys.executable, "-c", "import sys; from daskem.cli import main; sys.argv[0] = 'daskem'; main()"]
    result = subprocess.run([*script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == f"daskem, version {daskem.__version__}"


def test_progress_jsonl_logs_one_object_per_iteration(run, tmp_path):
    model_path = tmp_path / "M.zarr"
    result = daskem_cli("fit", run["data"], *FIT, "--workers", "0", "--progress", "jsonl", "-o", model_path)
    assert result.returncode == 0, result.stderr
    model = daskem.load(model_path)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    # The initialiser's passes first (k-means||: 5 sampling passes, 1 weighting pass, at most
    # 10 Lloyd passes, 1 assignment pass), then one object per iteration.
    phases = [e for e in events if e["event"] == "phase"]
    assert phases[0] == {"event": "phase", "phase": "reading", "passes": 0, "total": None}
    assert phases[1] == {"event": "phase", "phase": "initialising", "passes": 0, "total": 17}
    init = [e["passes"] for e in phases if e["phase"] == "initialising"][1:]
    assert init == list(range(1, len(phases) - 2))
    assert phases[-1] == {"event": "phase", "phase": "fitting", "passes": 0, "total": None}
    entries = [e for e in events if e["event"] == "iteration"]
    assert entries[0]["passes"] == len(init) + 1  # the init passes, then the first iteration's
    assert [e["iteration"] for e in entries] == list(range(1, model.n_iter_ + 1))
    assert [e["log_likelihood"] for e in entries] == pytest.approx(model.lower_bounds_, rel=1e-15)
    assert entries[0]["change"] is None  # the first change is +inf, which JSON cannot hold
    assert [e["passes"] for e in entries] == sorted({e["passes"] for e in entries})
    assert entries[-1]["passes"] == model.n_passes_
    assert all(e["event"] == "iteration" and e["run"] == 0 and e["eta_seconds"] >= 0 for e in entries)
    assert [e["converged"] for e in entries] == [False] * (model.n_iter_ - 1) + [model.converged_]
    assert entries[-1]["eta_seconds"] == 0  # converged, or max_iter reached


def test_remaining_iterations_from_the_geometric_rate():
    def history(changes):
        return [IterationRecord(i + 1, -1.0, c, 0.1) for i, c in enumerate(changes)]

    # Changes halve: 0.25 -> below 1e-3 after ceil(log(1e-3 / 0.25) / log(0.5)) = 8 more.
    assert remaining_iterations(history([np.inf, 0.5, 0.25]), 1e-3, 100) == 8
    assert remaining_iterations(history([np.inf, 0.5, 0.25]), 1e-3, 5) == 2  # capped by max_iter
    assert remaining_iterations(history([np.inf, 0.5]), 1e-3, 10) == 8  # no rate yet: max_iter left
    assert remaining_iterations(history([np.inf, 0.5, 1e-4]), 1e-3, 10) == 0  # converged
    assert remaining_iterations(history([np.inf, 0.25, 0.5]), 1e-3, 10) == 7  # not shrinking: max_iter left
    assert remaining_iterations(history([np.inf, 0.5, 0.25]), 0.0, 10) == 7  # tol=0 runs to max_iter
