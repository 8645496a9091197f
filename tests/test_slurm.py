"""``deploy/slurm`` against a real SLURM: one node on this machine (``tests/slurm.py``).

The recipe is used as its README says: the ``deploy/`` tree copied to the "site" (here a
temporary directory), ``jobqueue.yaml`` and the ``#SBATCH`` lines of ``fit.sbatch`` edited
for the site (one CPU, 1 GiB per job, the loopback interface), ``cd deploy/slurm`` and
``sbatch fit.sbatch`` with ``DATA``, ``SHARED``, ``JOBS``, ``PYTHON`` and ``FIT_ARGS`` in
the environment. The driver job starts the Dask scheduler and submits the worker jobs
(dask-jobqueue) to the same SLURM; checkpoint and model go to ``SHARED``. Every scenario
ends with the model compared bitwise, array by array, with ``daskem fit`` of the same data
and seed on local threads:

- the plain run;
- the time limit: the first job, submitted with ``--time=1 --signal=B:USR1@10``, gets USR1
  mid-fit, resubmits itself (with the script's own ``#SBATCH`` lines: a longer time) and
  stops; the next job resumes from the checkpoint (submitted as the module starts, from a
  site of its own, so its minute runs beside the other scenarios; checked last);
- a worker job cancelled mid-fit (``scancel``): the adaptive cluster submits another;
- the driver job cancelled: no resubmission, the checkpoint intact, ``daskem resume``
  completes the fit;
- another model (probabilistic PCA) the same way as the plain run.

Needs ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``) and root; skipped
otherwise, with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import daskem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm as slurm_helper  # tests/slurm.py
from waiting import wait_until  # tests/waiting.py

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(slurm_helper.missing()), reason=slurm_helper.missing() or ""),
]

# 20,000 x 4, three overlapping components, 20 blocks: ~0.2 s an iteration on one worker job
# with a checkpoint after every iteration. --tol 0: exactly --max-iter iterations.
N_SAMPLES, N_FEATURES, N_COMPONENTS, CHUNK_ROWS = 20_000, 4, 3, 1000
FIT_ARGS = f"-k {N_COMPONENTS} --tol 0 --seed 0 --progress lines"
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")
# The time-limit scenario's fit: ~0.2 s an iteration, still running when the signal comes
# 20-50 s after the job starts.
TIME_LIMIT_ITER = 400


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[slurm_helper.Slurm]:
    cluster = slurm_helper.start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
    assert all(proc.poll() is not None for proc in cluster.processes.values())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The deploy/ tree copied to a site and edited for it; returns its deploy/slurm."""
    return make_site(tmp_path_factory.mktemp("site"))


def make_site(root: Path) -> Path:
    """Copy the deploy/ tree under ``root`` and edit it for this SLURM; its deploy/slurm."""
    deploy = root / "deploy"
    (deploy / "slurm").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "jobqueue_driver.py", deploy)
    for name in ("driver.py", "fit.sbatch", "jobqueue.yaml"):
        shutil.copy(ROOT / "deploy" / "slurm" / name, deploy / "slurm")
    # jobqueue.yaml: the site's worker jobs.
    path = deploy / "slurm" / "jobqueue.yaml"
    config = yaml.safe_load(path.read_text())
    config["jobqueue"]["slurm"].update(
        cores=1,
        memory="1GiB",
        processes=1,
        interface="lo",
        walltime="00:10:00",
        **{"worker-extra-args": ["--lifetime", "8m", "--lifetime-stagger", "1m"], "death-timeout": 30},
    )
    path.write_text(yaml.safe_dump(config))
    # fit.sbatch: the driver job's #SBATCH lines, for this one node.
    path = deploy / "slurm" / "fit.sbatch"
    text = path.read_text()
    for option, value in (("--cpus-per-task", "1"), ("--mem", "1G"), ("--time", "00:10:00")):
        text, n = re.subn(rf"^#SBATCH {option}=\S+$", f"#SBATCH {option}={value}", text, flags=re.MULTILINE)
        assert n == 1, option
    path.write_text(text)
    return deploy / "slurm"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.zarr"
    subprocess.run(
        [
            str(BIN / "daskem"),
            "make-data",
            str(path),
            f"--n-samples={N_SAMPLES}",
            f"--n-features={N_FEATURES}",
            f"--n-components={N_COMPONENTS}",
            f"--chunk-rows={CHUNK_ROWS}",
            "--separation=0.5",
            "--seed=0",
        ],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Callable[[int], Any]:
    """reference(max_iter): the model of ``daskem fit`` on local threads (cached)."""
    models: dict[int, Any] = {}
    root = tmp_path_factory.mktemp("reference")

    def fit(max_iter: int, model: str = "gmm") -> Any:
        if (max_iter, model) not in models:
            out = root / f"model-{model}-{max_iter}.zarr"
            command = [str(BIN / "daskem"), "fit", str(data), *FIT_ARGS.split(), f"--max-iter={max_iter}"]
            command += [f"--model={model}", "--workers=0", "--output", str(out)]
            subprocess.run(command, check=True, capture_output=True)
            models[max_iter, model] = daskem.load(out)
        return models[max_iter, model]

    return fit


def assert_bitwise_equal(actual: Any, expected: Any) -> None:
    arrays = {k: v for k, v in vars(expected).items() if isinstance(v, np.ndarray)}
    assert arrays, "no parameter arrays"
    for name, value in arrays.items():
        got = getattr(actual, name)
        assert got.dtype == value.dtype, name
        assert got.shape == value.shape, name
        assert np.array_equal(got, value), name
    assert actual.n_iter_ == expected.n_iter_


class Run:
    """One ``sbatch fit.sbatch`` and what it left: the job logs, the shared directory."""

    def __init__(
        self, slurm: slurm_helper.Slurm, site: Path, data: Path, shared: Path, max_iter: int, model: str
    ) -> None:
        self.slurm, self.site, self.shared = slurm, site, shared
        self.env = {
            "DATA": str(data),
            "SHARED": str(shared),
            "JOBS": "1",
            "PYTHON": sys.executable,
            "FIT_ARGS": f"{FIT_ARGS} --max-iter {max_iter} --model {model}",
            "DRIVER_ARGS": "--wait-timeout 120",
            # A worker job that ends is replaced once the scheduler has missed its worker for
            # distributed.deploy.lost-worker-timeout (15 s by default): 2 s here, for speed.
            "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s",
        }
        self.known = set(slurm.jobs(site))  # jobs run from this site only: scenarios overlap
        self.first = 0

    def submit(self, *sbatch_args: str) -> int:
        # As the README says: cd deploy/slurm; sbatch fit.sbatch.
        self.first = self.slurm.sbatch(*sbatch_args, "fit.sbatch", env=self.env, cwd=self.site)
        return self.first

    def log(self, job_id: int) -> str:
        path = self.site / f"daskem-fit-{job_id}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def new_jobs(self) -> dict[int, tuple[str, str]]:
        return {j: v for j, v in self.slurm.jobs(self.site).items() if j not in self.known}

    def iterations(self, job_id: int) -> list[int]:
        return [int(n) for n in re.findall(r"^iteration +(\d+) ", self.log(job_id), re.MULTILINE)]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_until(predicate, timeout, what, interval=0.2, detail=self.report)

    def wait_all_ended(self, timeout: float) -> dict[int, tuple[str, str]]:
        self.wait(
            lambda: self.new_jobs() and not any(state in ACTIVE for _, state in self.new_jobs().values()),
            timeout,
            "every job to end",
        )
        return self.new_jobs()

    def cancel(self) -> None:
        """Cancel this run's jobs still pending or running (a failed test leaves none behind)."""
        active = [str(j) for j, (_, state) in self.new_jobs().items() if state in ACTIVE]
        if active:
            self.slurm.run("scancel", *active, check=False)

    def report(self) -> str:
        parts = [f"jobs: {self.new_jobs()}"]
        for job_id in sorted(self.new_jobs()):
            for name in (f"daskem-fit-{job_id}.out", f"daskem-worker-{job_id}.out"):
                path = self.site / name
                if path.exists():
                    parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        parts.append(f"--- slurmctld.log\n{self.slurm.log('slurmctld')[-3000:]}")
        return "\n".join(parts)


@pytest.fixture
def run(slurm, site, data, tmp_path) -> Iterator[Callable[[int], Run]]:
    runs: list[Run] = []

    def make(max_iter: int, model: str = "gmm") -> Run:
        runs.append(Run(slurm, site, data, tmp_path / "shared", max_iter, model))
        return runs[-1]

    yield make
    for r in runs:  # a failed test leaves no job behind for the next one
        r.cancel()


@pytest.fixture(scope="module", autouse=True)
def time_limited(slurm, data, tmp_path_factory) -> Iterator[Run]:
    """The time-limit scenario's chain, submitted as the module starts: its first job runs
    into its one-minute limit while the other scenarios run (from their own site, on CPUs
    the node has for both: tests/slurm.py); the last test checks what it did.

    The first job only: ``--time=1`` and USR1 10 s before it. slurmctld checks the limits
    every 30 s and sends the signal at the first check within 10 + 30 s of the limit:
    20-50 s after the start, mid-fit. The resubmission runs with the script's own #SBATCH
    lines (--time=00:10:00).
    """
    site = make_site(tmp_path_factory.mktemp("site-time-limit"))
    r = Run(slurm, site, data, tmp_path_factory.mktemp("time-limit") / "shared", TIME_LIMIT_ITER, "gmm")
    r.submit("--time=1", "--signal=B:USR1@10")
    yield r
    r.cancel()


def test_sbatch_fit_as_the_readme_says(run, reference):
    started = time.monotonic()
    r = run(20)
    driver = r.submit()
    jobs = r.wait_all_ended(180)
    output = r.log(driver)
    assert jobs[driver] == ("daskem-fit", "COMPLETED"), r.report()
    workers = [j for j, (name, _) in jobs.items() if name == "daskem-worker"]
    assert workers, r.report()  # dask-jobqueue submitted them to the same SLURM
    assert "Driver finished with status 0" in output, r.report()
    assert "(resubmission 0)" in output
    assert "Submitted batch job" not in output
    assert (r.shared / "run.zarr").is_dir()
    assert not (r.shared / "scheduler.json").exists()
    assert r.iterations(driver) == list(range(1, 21))
    assert_bitwise_equal(daskem.load(r.shared / "model.zarr"), reference(20))
    print(f"plain run: {time.monotonic() - started:.1f}s")


def test_another_model_runs_the_same_way(run, reference):
    """A model other than the Gaussian mixture, through the same recipe (the model registry)."""
    started = time.monotonic()
    r = run(10, "ppca")
    driver = r.submit()
    jobs = r.wait_all_ended(180)
    assert jobs[driver] == ("daskem-fit", "COMPLETED"), r.report()
    assert "Driver finished with status 0" in r.log(driver), r.report()
    expected = reference(10, "ppca")
    assert type(expected).__name__ != "GaussianMixture"
    assert_bitwise_equal(daskem.load(r.shared / "model.zarr"), expected)
    print(f"ppca: {time.monotonic() - started:.1f}s")


def test_cancelled_worker_job_is_replaced(run, reference, slurm):
    started = time.monotonic()
    max_iter = 60
    r = run(max_iter)
    driver = r.submit()
    r.wait(lambda: len(r.iterations(driver)) >= 5, 120, "5 iterations")
    running = [j for j, (name, state) in r.new_jobs().items() if name == "daskem-worker" and state == "RUNNING"]
    assert len(running) == 1, r.report()
    slurm.run("scancel", str(running[0]))
    jobs = r.wait_all_ended(240)
    assert jobs[running[0]][1] == "CANCELLED", r.report()
    workers = [j for j, (name, _) in jobs.items() if name == "daskem-worker"]
    assert len(workers) >= 2, r.report()  # adapt() submitted another
    assert jobs[driver] == ("daskem-fit", "COMPLETED"), r.report()
    assert "Driver finished with status 0" in r.log(driver)
    assert r.iterations(driver)[-1] == max_iter
    assert_bitwise_equal(daskem.load(r.shared / "model.zarr"), reference(max_iter))
    print(f"worker cancelled: {time.monotonic() - started:.1f}s")


def test_cancelled_driver_job_ends_the_chain_and_resume_completes(run, reference, slurm):
    started = time.monotonic()
    max_iter = 60
    r = run(max_iter)
    driver = r.submit()
    r.wait(lambda: len(r.iterations(driver)) >= 5, 120, "5 iterations")
    slurm.run("scancel", str(driver))
    jobs = r.wait_all_ended(120)
    assert jobs[driver][1] == "CANCELLED", r.report()
    assert [j for j, (name, _) in jobs.items() if name == "daskem-fit"] == [driver], r.report()
    assert "Submitted batch job" not in r.log(driver)
    assert not (r.shared / "model.zarr").exists()
    inspect = subprocess.run(
        [str(BIN / "daskem"), "inspect", str(r.shared / "run.zarr")], capture_output=True, text=True, check=True
    ).stdout
    committed = int(re.search(r"run 0 +(\d+) iterations", inspect)[1])
    assert 5 <= committed < max_iter, inspect
    subprocess.run(
        [
            str(BIN / "daskem"),
            "resume",
            str(r.shared / "run.zarr"),
            "--workers=0",
            "--output",
            str(r.shared / "model.zarr"),
        ],
        check=True,
        capture_output=True,
    )
    assert_bitwise_equal(daskem.load(r.shared / "model.zarr"), reference(max_iter))
    print(f"driver cancelled: {time.monotonic() - started:.1f}s (checkpoint at iteration {committed})")


def test_time_limit_signal_resubmits_and_the_next_job_resumes(time_limited, reference):
    """Last: the chain submitted as the module started (``time_limited``) has run beside the
    other scenarios."""
    r, max_iter = time_limited, TIME_LIMIT_ITER
    first = r.first
    r.wait(lambda: "Time limit near" in r.log(first), 120, "the time-limit signal")
    assert r.iterations(first), f"the signal came before the fit started\n{r.report()}"
    second = int(r.wait(lambda: re.search(r"Submitted batch job (\d+)", r.log(first)), 30, "resubmission")[1])
    jobs = r.wait_all_ended(240)
    first_log, second_log = r.log(first), r.log(second)
    # The chain: job 1 stopped for the time limit, job 2 (resubmission 1) finished the fit.
    assert jobs[first] == ("daskem-fit", "COMPLETED"), r.report()
    assert "Stopped for the time limit (driver status" in first_log
    assert jobs[second] == ("daskem-fit", "COMPLETED"), r.report()
    assert f"daskem-fit job {second} (resubmission 1)" in second_log
    assert "Driver finished with status 0" in second_log
    assert "Submitted batch job" not in second_log
    assert sorted(j for j, (name, _) in jobs.items() if name == "daskem-fit") == [first, second]
    # SLURM's own record of the chain (jobcomp/filetxt): both driver jobs completed.
    record = r.slurm.jobcomp()
    assert (record[first]["JobState"], record[second]["JobState"]) == ("COMPLETED", "COMPLETED")
    assert record[first]["TimeLimit"] == "1"
    assert record[second]["TimeLimit"] == "10"
    done_first, done_second = r.iterations(first), r.iterations(second)
    # The second job resumed from the checkpoint: no iteration from the start again.
    assert done_second[0] > 1, (done_first[-3:], done_second[:3])
    resumed = re.search(r"^Resuming the fit checkpointed in .* after iteration (\d+)$", second_log, re.MULTILINE)
    assert resumed, second_log
    assert done_second[0] == int(resumed[1]) + 1
    assert done_second[-1] == max_iter
    # ... and lost at most the iteration in progress (whose line job 1 may not have printed).
    assert done_second[0] <= done_first[-1] + 2, (done_first[-3:], done_second[:3])
    assert_bitwise_equal(daskem.load(r.shared / "model.zarr"), reference(max_iter))
    print(
        f"time limit: job {first} ended {record[first]['EndTime']}, job {second} started {record[second]['StartTime']}"
    )
