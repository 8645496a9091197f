"""The scripts in ``examples/`` run, at small sizes, and tell the story they promise.

Every example runs as a user would run it -- ``python examples/NAME.py --flags`` in a
subprocess, with a temporary working directory -- and its printed output is checked for
the facts the story is about: the store really is larger than the workers' memory, the
resumed fit equals the uninterrupted one, BIC finds the true number of components, the
Parquet k-means is as good as scikit-learn's, and the fit on a cluster ran its tasks on
the cluster's workers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """Run ``examples/<name>`` with this interpreter; assert it succeeds; return its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def value(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"{pattern!r} not in the output:\n{text}"
    return match.group(1)


def test_every_example_has_a_docstring_a_main_guard_and_a_readme_entry():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert len(scripts) == 5
    for script in scripts:
        source = script.read_text()
        assert source.startswith('"""'), script.name
        assert 'if __name__ == "__main__":' in source, script.name
        assert f"examples/{script.name}" in readme, script.name


def test_fit_larger_than_memory(tmp_path):
    # 4.4M x 16 float64 (537 MiB) against one worker limited to 512 MiB: the store is
    # larger than all the memory of the cluster, so "auto" streams it.
    out = run_example(
        "fit_larger_than_memory.py",
        "--n-samples",
        "4400000",
        "--n-components",
        "3",
        "--covariance-type",
        "diag",
        "--max-iter",
        "10",
        "--workers",
        "1",
        "--memory-limit",
        "512MiB",
        "--data",
        str(tmp_path / "data.zarr"),
        cwd=tmp_path,
    )
    size = int(value(r"^array size: (\d+) bytes", out))
    limit = int(value(r"^memory limit per worker: \d+ bytes; total: (\d+) bytes", out))
    assert size == 4_400_000 * 16 * 8
    assert size > limit == 512 * 2**20
    assert "larger than the whole cluster's memory: True" in out
    assert "streamed from the source on every pass" in out
    assert value(r"^fit: (\w+) after \d+ iterations", out) == "converged"
    assert float(value(r"^BIC: (\S+)", out)) > 0
    # The truth is recovered: fitted weights next to the true ones, to 1e-3.
    rows = re.findall(r"^ +\d+ +(\d\.\d+) \((\d\.\d+)\)", out, re.MULTILINE)
    assert len(rows) == 3
    assert all(abs(float(fitted) - float(true)) < 1e-3 for fitted, true in rows)


def test_resume_after_kill(tmp_path):
    out = run_example(
        "resume_after_kill.py",
        "--n-samples",
        "200000",
        "--n-features",
        "4",
        "--n-components",
        "3",
        "--chunk-rows",
        "20000",
        "--kill-after",
        "3",
        "--workdir",
        str(tmp_path / "work"),
        cwd=tmp_path,
    )
    killed = int(value(r"^killed the fit with SIGKILL \(exit code -9\) after (\d+) committed iterations", out))
    assert killed >= 3
    assert f"Resuming the fit checkpointed in {tmp_path / 'work' / 'run.zarr'} after iteration {killed}" in out
    resumed = value(r"^resumed fit: +(.*)$", out)
    assert resumed == value(r"^uninterrupted fit: +(.*)$", out)
    assert resumed.startswith("converged after ")
    assert int(value(r"after (\d+) iterations", resumed)) > killed
    assert "same log-likelihood history: True" in out
    assert value(r"^max difference of the parameters: (\S+)$", out) == "0.0"


def test_choose_k_by_bic(tmp_path):
    png = tmp_path / "bic.png"
    out = run_example(
        "choose_k_by_bic.py", "--n-samples", "20000", "--true-k", "4", "--k-max", "6", "--plot", str(png), cwd=tmp_path
    )
    assert value(r"^chosen k by BIC: (\d+) \(true k: 4\)", out) == "4"
    table = re.findall(r"^ +(\d+) +-?\d+\.\d+ +(\d+\.\d) +(\d+\.\d) +\d+ ", out, re.MULTILINE)
    assert [int(k) for k, _, _ in table] == [1, 2, 3, 4, 5, 6]
    bics = [float(b) for _, b, _ in table]
    assert min(bics) == bics[3]
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed: no plot" in out
        assert not png.exists()
    else:
        assert f"plot written to {png}" in out
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000


def test_kmeans_on_parquet(tmp_path):
    out = run_example(
        "kmeans_on_parquet.py",
        "--n-samples",
        "50000",
        "--n-files",
        "4",
        "--n-clusters",
        "6",
        "--data",
        str(tmp_path / "blobs"),
        cwd=tmp_path,
    )
    assert len(list((tmp_path / "blobs").glob("part-*.parquet"))) == 4
    assert value(r"^source: ([\d,]+) rows x 5 features", out) == "50,000"
    centres = re.findall(r"^ +(-?\d+\.\d{3}(?: +-?\d+\.\d{3}){4})$", out, re.MULTILINE)
    assert len(centres) == 6
    assert int(value(r"(\d+) passes over the data", out)) >= 3
    assert float(value(r"^adjusted Rand index against the blobs: (\S+)", out)) > 0.95
    ratio = float(value(r"^inertia ratio daskem/sklearn: (\S+)", out))
    assert ratio < 1.1


def test_connect_to_cluster_starts_a_local_cluster(tmp_path):
    out = run_example(
        "connect_to_cluster.py", "--workers", "2", "--n-samples", "20000", "--chunk-rows", "2500", cwd=tmp_path
    )
    assert "started a LocalCluster at tcp://127.0.0.1:" in out
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/status", out, re.MULTILINE)
    assert int(value(r"^tasks run: (\d+)", out)) > 4
    assert value(r"^workers used: (\d+)", out) == "2"
    assert value(r"^fit: (\w+)", out) == "converged"


def test_connect_to_cluster_uses_dask_scheduler_address(tmp_path, cluster):
    # The session's LocalCluster stands for "your cluster": found through the environment.
    out = run_example(
        "connect_to_cluster.py",
        "--n-samples",
        "20000",
        "--chunk-rows",
        "2500",
        cwd=tmp_path,
        env={"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address},
    )
    assert f"connected to the scheduler at {cluster.scheduler_address}" in out
    workers = set(cluster.scheduler_info["workers"])
    used = re.findall(r"^  (tcp://\S+) \(pid \d+\): \d+ tasks$", out, re.MULTILINE)
    assert used
    assert set(used) <= workers
    assert int(value(r"^tasks run: (\d+)", out)) > 4
