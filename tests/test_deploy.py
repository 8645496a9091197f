"""The deployment recipes in ``deploy/``, each checked without its real system.

- ``deploy/local/run.sh`` runs for real: a scheduler and 2 worker processes on
  127.0.0.1, ``daskem make-data`` and ``daskem fit`` against them, and no process left.
- ``deploy/slurm`` and ``deploy/pbs``: ``SLURMCluster`` / ``PBSCluster`` built from the
  ``jobqueue.yaml`` files (a scheduler starts, no job is submitted) write the expected
  worker job scripts; the batch scripts run under bash with stand-ins for
  ``sbatch``/``qsub`` and for the driver, and resubmit themselves when the time limit
  approaches (SLURM's USR1, PBS's self-timer), and only then.
- ``deploy/kubernetes``: the manifests and Helm values parse, have the required fields
  of the Dask operator's CRDs and agree with each other (names, image, scheduler
  address); with ``kubernetes-validate`` installed, they are validated against the
  Kubernetes OpenAPI schemas too.
- ``deploy/docker/Dockerfile`` parses (a small parser below): known instructions, FROM
  first, daskem installed from the repository, a non-root USER.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from waiting import wait_until  # tests/waiting.py

import daskem

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the environment's bin: daskem, dask
MARKER_VAR = "DASKEM_DEPLOY_TEST_MARKER"


# --------------------------------------------------------------------------- helpers


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``MARKER_VAR=marker`` (Linux /proc)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique value for MARKER_VAR; processes still carrying it at the end are killed."""
    value = uuid.uuid4().hex
    yield value
    for pid in processes_with_marker(value):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def assert_no_processes_left(marker: str) -> None:
    # A process that is exiting may linger for a moment; one that stays is a leak.
    deadline = time.monotonic() + 5
    while (left := processes_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    commands = {}
    for pid in left:
        try:
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    assert not commands, f"processes left behind: {commands}"


def load_driver(system: str) -> ModuleType:
    path = DEPLOY / system / "driver.py"
    spec = importlib.util.spec_from_file_location(f"daskem_deploy_{system}_driver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in deploy/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def load_yaml_documents(path: Path) -> list[Any]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def option_value(args: list[str], option: str) -> str:
    assert option in args, f"{option} missing from {args}"
    return args[args.index(option) + 1]


# ----------------------------------------------------------------------------- local


def readme_commands(path: Path) -> list[str]:
    """The lines of the ```bash blocks of a README, without comments (one command a line)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                assert not command.endswith("\\"), f"continued lines are not run here: {line}"
                commands.append(command)
    return commands


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks for leftover processes through /proc")
def test_local_readme_commands_run_as_printed(tmp_path, marker):
    """Every command of deploy/local/README.md, as printed, from a fresh checkout whose
    .venv was made as the main README makes it, with nothing of it on PATH."""
    commands = readme_commands(DEPLOY / "local" / "README.md")
    make_venv = "python3 -m venv .venv && .venv/bin/pip install -e ."
    assert commands[0] == make_venv
    assert "python3 -m venv .venv && .venv/bin/pip install" in (ROOT / "README.md").read_text()
    clone = tmp_path / "clone"
    (clone / "deploy").mkdir(parents=True)
    shutil.copytree(DEPLOY / "local", clone / "deploy" / "local")
    # The first command, without installing again: this environment is the checkout's .venv.
    (clone / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "dask").exists()]
    path = [p for p in path if not (Path(p) / "daskem").exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("DASKEM", "DASK", "DATA", "WORK_DIR", "VIRTUAL_ENV")}
    env |= {
        "PATH": os.pathsep.join(path),
        # Small defaults through the documented variables (flags in the commands win).
        "N_SAMPLES": "20000",
        "N_FEATURES": "4",
        "CHUNK_ROWS": "5000",
        "MAX_ITER": "5",
        "STARTUP_TIMEOUT": "90",
        MARKER_VAR: marker,
    }
    assert subprocess.run(["bash", "-c", "command -v daskem dask"], env=env, capture_output=True).returncode != 0
    outputs = []
    for command in commands[1:]:
        # Each run.sh starts a scheduler and workers: seconds on an idle machine, more under load.
        run = ["bash", "-c", command]
        result = subprocess.run(run, cwd=clone, env=env, text=True, capture_output=True, timeout=240)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{output}"
        assert "run.sh:" not in output, f"{command}\n{output}"
        outputs.append(output)
    assert_no_processes_left(marker)

    # run.sh started its scheduler and workers on 127.0.0.1, the fit connected to them,
    # and everything it started is gone (assert_no_processes_left above).
    work = clone / "daskem-local"
    assert "2 worker(s) registered" in outputs[0], outputs[0]
    assert "3 worker(s) registered" in outputs[1], outputs[1]  # --workers 3
    for output in outputs[:2]:
        assert "Connected to tcp://127.0.0.1:" in output, output
    for i in range(3):
        assert "Registered to:" in (work / "logs" / f"worker-{i}.log").read_text()
    assert "127.0.0.1" in (work / "logs" / "scheduler.log").read_text()
    assert not (work / "scheduler.json").exists()

    first = daskem.load(work / "model.zarr")
    assert (first.n_components, first.covariance_type) == (4, "full")
    assert 1 <= first.n_iter_ <= 5  # MAX_ITER
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.all(np.isfinite(getattr(first, attr))), attr
    assert first.weights_.sum() == pytest.approx(1.0)
    # The checkpoint holds the same fit (a rerun would resume from it).
    np.testing.assert_array_equal(daskem.load(work / "run.zarr").means_, first.means_)
    diag = daskem.load(clone / "daskem-local" / "diag-model.zarr")
    assert (diag.n_components, diag.covariance_type) == (4, "diag")
    assert diag.means_.shape == (4, 4)
    np.testing.assert_array_equal(daskem.load(clone / "daskem-local" / "diag-run.zarr").means_, diag.means_)
    mine = daskem.load(clone / "daskem-my" / "model.zarr")
    assert mine.means_.shape == (8, 4)
    assert mine.converged_
    assert outputs[-1].startswith("checkpoint daskem-local/run.zarr")  # the last command: daskem inspect
    assert re.search(rf"run 0 +{first.n_iter_} iterations", outputs[-1]), outputs[-1]


def test_local_run_sh_syntax_help_and_bad_options(tmp_path):
    script = DEPLOY / "local" / "run.sh"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(script, os.X_OK), "run.sh should be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0
    for word in ("--workers", "--n-samples", "--work-dir", "DASKEM", "DASK", "N_WORKERS", "WORK_DIR"):
        assert word in shown.stdout
    wrong = subprocess.run(["bash", str(script), "--no-such-option"], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 2
    assert "unknown option" in wrong.stderr
    zero = subprocess.run(["bash", str(script), "-n", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert zero.returncode == 2
    assert "positive integer" in zero.stderr
    assert not (tmp_path / "daskem-local").exists()  # nothing started, nothing written


# ------------------------------------------------------------------------ slurm / pbs

HPC_SYSTEMS = ["slurm", "pbs"]


@pytest.fixture(params=HPC_SYSTEMS)
def system(request) -> str:
    return request.param


def test_jobqueue_yaml_sections(system):
    (document,) = load_yaml_documents(DEPLOY / system / "jobqueue.yaml")
    assert list(document) == ["jobqueue"]
    assert list(document["jobqueue"]) == [system]
    section = document["jobqueue"][system]
    for key in ("cores", "memory", "processes", "walltime", "local-directory", "interface", "job-extra-directives"):
        assert section.get(key) is not None, key
    assert isinstance(section["job-extra-directives"], list)
    assert section["cores"] % section["processes"] == 0
    assert re.fullmatch(r"\d+:\d\d:\d\d", section["walltime"])


def test_jobqueue_cluster_from_config_writes_the_worker_job_script(system):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install dask-jobqueue)")
    import dask
    from dask.utils import format_bytes, parse_bytes

    driver = load_driver(system)
    section = driver.load_config(driver.DEFAULT_CONFIG)
    with driver.jobqueue_config(driver.DEFAULT_CONFIG):
        assert dask.config.get(f"jobqueue.{system}.cores") == section["cores"]
        # The scheduler listens on 127.0.0.1 here; the configured interface (ib0) need
        # not exist on this machine, and the workers' command line keeps it.
        cluster = driver.make_cluster(scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})
        try:
            script = cluster.job_script()
            address = cluster.scheduler_address
            assert address.startswith("tcp://127.0.0.1:")
            assert not cluster.workers
            assert not cluster.worker_spec
        finally:
            cluster.close()
    assert dask.config.get(f"jobqueue.{system}.cores") is None, "the configuration leaked out of the block"

    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    cores, processes, memory = section["cores"], section["processes"], parse_bytes(section["memory"])
    prefix = "#SBATCH" if system == "slurm" else "#PBS"
    if system == "slurm":
        from dask_jobqueue.slurm import slurm_format_bytes_ceil

        expected = [
            f"#SBATCH --cpus-per-task={cores}",
            f"#SBATCH --mem={slurm_format_bytes_ceil(memory)}",
            f"#SBATCH -t {section['walltime']}",
            f"#SBATCH -J {section['name']}",
        ]
        assert "#SBATCH --mem=32G" in lines  # what the shipped file asks for
    else:
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        expected = [
            f"#PBS -l select=1:ncpus={cores}:mem={pbs_format_bytes_ceil(memory)}",
            f"#PBS -l walltime={section['walltime']}",
            f"#PBS -N {section['name']}",
        ]
        assert "#PBS -l select=1:ncpus=8:mem=32GB" in lines
    expected += [f"{prefix} {directive}" for directive in section["job-extra-directives"]]
    expected += list(section["job-script-prologue"])
    for line in expected:
        assert line in lines, f"{line!r} not in the job script:\n{script}"

    (worker,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker {address} ")
    args = worker.split()
    assert option_value(args, "--nthreads") == str(cores // processes)
    assert option_value(args, "--memory-limit") == format_bytes(memory / processes).replace(" ", "")
    assert option_value(args, "--nworkers") == str(processes)
    assert option_value(args, "--interface") == section["interface"]
    assert option_value(args, "--local-directory") == section["local-directory"]
    assert option_value(args, "--death-timeout") == str(section["death-timeout"])
    assert option_value(args, "--lifetime") == "225m"
    # Workers retire before the worker jobs' walltime ends.
    hours, minutes, _ = (int(v) for v in section["walltime"].split(":"))
    assert hours * 60 + minutes > 225


def test_driver_dry_run_prints_job_script_and_fit_command(system, capsys, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install dask-jobqueue)")
    driver = load_driver(system)
    shared = tmp_path / "shared"
    argv = ["s3://bucket/data.zarr", "--dry-run", "--shared", str(shared), "--jobs", "3", "--interface", "eth0"]
    assert driver.main([*argv, "--", "-k", "5", "--max-iter", "7"]) == 0
    out = capsys.readouterr().out
    assert ("#SBATCH" if system == "slurm" else "#PBS") in out
    assert "--interface eth0" in out
    assert "--interface ib0" not in out
    fit_line = out.strip().splitlines()[-1]
    command = shlex.split(fit_line)
    assert command[: command.index("fit")] == driver.daskem_command()
    args = command[command.index("fit") + 1 :]
    assert args[0] == "s3://bucket/data.zarr"
    assert option_value(args, "--scheduler").startswith("tcp://")
    assert option_value(args, "--checkpoint") == str(shared / "run.zarr")
    assert option_value(args, "--output") == str(shared / "model.zarr")
    assert args[-4:] == ["-k", "5", "--max-iter", "7"]
    assert not shared.exists()  # a dry run creates nothing
    # The fit command is one daskem accepts.
    from daskem.cli import main as daskem_main

    context = daskem_main.commands["fit"].make_context("fit", args)
    assert context.params["n_components"] == 5
    assert context.params["max_iter"] == 7


def test_driver_defaults(system, monkeypatch, tmp_path):
    driver = load_driver(system)
    monkeypatch.setenv("SHARED", str(tmp_path))
    monkeypatch.setenv("JOBS", "4")
    args = driver.parse_args(["data.zarr"])
    assert (args.jobs, args.checkpoint, args.output) == (4, str(tmp_path / "run.zarr"), str(tmp_path / "model.zarr"))
    assert args.scheduler_file == str(tmp_path / "scheduler.json")
    assert args.fit_args == []
    monkeypatch.setenv("DASKEM", "/opt/bin/daskem --flag")
    assert driver.fit_command("d", "tcp://h:1", "c", "o")[:3] == ["/opt/bin/daskem", "--flag", "fit"]
    with pytest.raises(SystemExit):
        driver.parse_args(["data.zarr", "--jobs", "0"])


# The batch scripts run under bash with stand-ins: `sbatch`/`qsub` record their
# arguments, and the driver records its own and whether it got SIGTERM.

FAKE_DRIVER = """\
import os, pathlib, signal, sys, time
out = pathlib.Path(os.environ["FAKE_OUT"])
(out / "driver-args.json").write_text(__import__("json").dumps(sys.argv[1:]))
def stop(signum, frame):
    (out / "driver-terminated").write_text(str(signum))
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
(out / "driver-started").write_text(str(os.getpid()))
mode = os.environ.get("FAKE_DRIVER_MODE", "run")
if mode != "run":
    sys.exit(int(mode))
time.sleep(60)
"""

FAKE_SUBMIT = """\
#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_OUT/{name}-args"
echo "{reply}"
"""


@pytest.fixture
def batch_env(tmp_path, marker) -> dict[str, Any]:
    out = tmp_path / "out"
    fake_bin = tmp_path / "bin"
    deploy_dir = tmp_path / "deploy"
    for d in (out, fake_bin, deploy_dir):
        d.mkdir()
    (deploy_dir / "driver.py").write_text(FAKE_DRIVER)
    for name, reply in (("sbatch", "Submitted batch job 1235"), ("qsub", "78.pbs-server")):
        path = fake_bin / name
        path.write_text(FAKE_SUBMIT.format(name=name, reply=reply))
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_OUT": str(out),
        "DATA": "/shared/data.zarr",
        "SHARED": str(tmp_path / "shared"),
        "JOBS": "3",
        "FIT_ARGS": "-k 5 --max-iter 9",
        "DEPLOY_DIR": str(deploy_dir),
        "PYTHON": sys.executable,
        "SLURM_JOB_ID": "1234",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "PBS_JOBID": "77.pbs-server",
        "PBS_O_WORKDIR": str(tmp_path),
        MARKER_VAR: marker,
    }
    for name in ("RESUBMIT_COUNT", "MAX_RESUBMITS", "SELF", "WALLTIME", "SIGNAL_MARGIN", "DRIVER_ARGS"):
        env.pop(name, None)
    return {"env": env, "out": out, "tmp": tmp_path, "marker": marker}


BATCH_SCRIPTS = {"slurm": DEPLOY / "slurm" / "fit.sbatch", "pbs": DEPLOY / "pbs" / "fit.pbs"}


def start_batch(system: str, batch_env: dict[str, Any], **extra: str) -> subprocess.Popen[str]:
    env = {**batch_env["env"], **extra}
    return subprocess.Popen(
        ["bash", str(BATCH_SCRIPTS[system])],
        env=env,
        cwd=batch_env["tmp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"batch script did not finish:\n{output}") from None
    return output


def test_batch_scripts_parse_and_hold_the_signal_trap_and_resubmission(system):
    script = BATCH_SCRIPTS[system]
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "trap resubmit USR1" in text
    assert re.search(r"^trap .*TERM$", text, re.MULTILINE)
    assert '"$PYTHON" "$DEPLOY_DIR/driver.py" "$DATA" --shared "$SHARED"' in text
    if system == "slurm":
        assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", text, re.MULTILINE)
        assert re.search(r"^#SBATCH --time=\d+:\d\d:\d\d$", text, re.MULTILINE)
        assert 'sbatch --dependency="afterany:${SLURM_JOB_ID}"' in text
        assert "SELF=${SELF:-$0}" in text
    else:
        assert re.search(r"^#PBS -l walltime=\d+:\d\d:\d\d$", text, re.MULTILINE)
        assert "kill -USR1 $$" in text  # the self-timer standing in for --signal
        assert 'qsub -V -W depend="afterany:${PBS_JOBID}"' in text


def test_batch_script_resubmits_itself_when_time_runs_out(system, batch_env):
    out = batch_env["out"]
    if system == "slurm":
        proc = start_batch(system, batch_env)
        wait_until(lambda: (out / "driver-started").exists(), 20, "the driver")
        proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 sends
    else:
        # The self-timer fires SIGNAL_MARGIN seconds before a 4 s walltime.
        proc = start_batch(system, batch_env, WALLTIME="00:00:04", SIGNAL_MARGIN="1")
    output = finish(proc)
    assert proc.returncode == 0, output
    assert "Time limit near" in output
    assert "the next job resumes from" in output
    assert (out / "driver-terminated").read_text() == str(int(signal.SIGTERM))
    assert json.loads((out / "driver-args.json").read_text()) == [
        "/shared/data.zarr",
        "--shared",
        batch_env["env"]["SHARED"],
        "--jobs",
        "3",
        "--",
        "-k",
        "5",
        "--max-iter",
        "9",
    ]
    submitted = (out / f"{'sbatch' if system == 'slurm' else 'qsub'}-args").read_text().splitlines()
    assert submitted[-1] == str(BATCH_SCRIPTS[system])  # the script itself
    if system == "slurm":
        assert submitted[:-1] == ["--dependency=afterany:1234", "--export=ALL,RESUBMIT_COUNT=1"]
    else:
        assert submitted[:-1] == ["-V", "-W", "depend=afterany:77.pbs-server", "-v", "RESUBMIT_COUNT=1"]
    assert_no_processes_left(batch_env["marker"])


@pytest.mark.parametrize(
    ("case", "expected_status"),
    [("fit ends", 0), ("fit fails", 3), ("cancelled", 0), ("resubmission limit", 0)],
)
def test_batch_script_resubmits_only_when_time_runs_out(system, batch_env, case, expected_status):
    out = batch_env["out"]
    extra = {"FAKE_DRIVER_MODE": {"fit ends": "0", "fit fails": "3"}.get(case, "run")}
    if case == "resubmission limit":
        extra |= {"RESUBMIT_COUNT": "20", "MAX_RESUBMITS": "20"}
    proc = start_batch(system, batch_env, **extra)
    wait_until(lambda: (out / "driver-started").exists(), 20, "the driver")
    if case == "cancelled":
        proc.send_signal(signal.SIGTERM)  # scancel / qdel
    elif case == "resubmission limit":
        proc.send_signal(signal.SIGUSR1)
    output = finish(proc)
    if case == "cancelled":
        # The driver is stopped (and would cancel its worker jobs); the script exits
        # with the driver's status.
        assert proc.returncode == 128 + signal.SIGTERM, output
        assert (out / "driver-terminated").exists()
    else:
        assert proc.returncode == expected_status, output
    if case == "resubmission limit":
        assert "MAX_RESUBMITS=20 reached" in output
    assert not list(out.glob("*-args")), f"resubmitted although {case}:\n{output}"
    if system == "pbs" and case == "fit ends":
        # No WALLTIME and no qstat: the timer takes the #PBS walltime line (12 h) less 120 s.
        assert "Stopping and resubmitting in 43080s" in output
    assert_no_processes_left(batch_env["marker"])


# ------------------------------------------------------------------------ kubernetes

K8S = DEPLOY / "kubernetes"
IMAGE = "registry.example.com/daskem:0.1.0"


@pytest.fixture(scope="module")
def manifests() -> dict[str, Any]:
    """Every YAML document under deploy/kubernetes, by kind (the Helm values as 'values')."""
    found: dict[str, Any] = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs = load_yaml_documents(path)
        assert docs, f"{path.name} is empty"
        if path.name == "values.yaml":
            (found["values"],) = docs
            continue
        for doc in docs:
            assert isinstance(doc, dict), path.name
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name
            assert doc["kind"] not in found, f"two {doc['kind']} documents"
            found[doc["kind"]] = doc
    assert {"DaskCluster", "Job", "Secret", "values"} <= found.keys()
    return found


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    items = pod_spec.get("containers")
    assert isinstance(items, list), "a pod spec needs containers"
    assert items, "a pod spec needs containers"
    for c in items:
        assert isinstance(c.get("name"), str), "every container needs a name"
        assert c["name"], "every container needs a name"
        assert isinstance(c.get("image"), str), "every container needs an image"
        assert c["image"], "every container needs an image"
    return items


def test_daskcluster_has_the_operator_crd_fields(manifests):
    cluster = manifests["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    spec = cluster["spec"]
    # The operator's schema: spec requires scheduler and worker; scheduler requires spec
    # (a PodSpec) and service (a ServiceSpec); worker requires spec.
    assert {"scheduler", "worker"} <= spec.keys()
    assert {"spec", "service"} <= spec["scheduler"].keys()
    assert "spec" in spec["worker"]
    assert isinstance(spec["worker"]["replicas"], int)
    assert spec["worker"]["replicas"] >= 1

    (scheduler,) = containers(spec["scheduler"]["spec"])
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    (worker,) = containers(spec["worker"]["spec"])
    assert worker["args"][:2] == ["dask", "worker"]
    assert option_value(worker["args"], "--name") == "$(DASK_WORKER_NAME)"  # set by the operator
    assert all(isinstance(a, str) for a in scheduler["args"] + worker["args"]), "container args must be strings"
    assert scheduler["image"] == worker["image"] == IMAGE

    service = spec["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    ports = {p["name"]: p for p in service["ports"]}
    assert ports["tcp-comm"]["port"] == 8786
    container_ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert container_ports["tcp-comm"] == 8786
    assert ports["tcp-comm"]["targetPort"] == "tcp-comm"
    assert option_value(scheduler["args"], "--port") == "8786"


def test_fit_job_runs_daskem_fit_against_the_cluster_scheduler(manifests):
    job = manifests["Job"]
    assert job["apiVersion"] == "batch/v1"
    cluster = manifests["DaskCluster"]
    service_port = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}["tcp-comm"]
    address = f"tcp://{cluster['metadata']['name']}-scheduler:{service_port}"

    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (fit,) = containers(pod)
    assert fit["image"] == IMAGE
    command = [*fit.get("command", []), *fit.get("args", [])]
    assert command[:2] == ["daskem", "fit"]
    args = command[2:]
    assert option_value(args, "--scheduler") == address
    checkpoint = option_value(args, "--checkpoint")
    assert re.fullmatch(r"s3://[a-z0-9.-]+/.+\.zarr", checkpoint)
    assert option_value(args, "--output").startswith("s3://")
    assert all(isinstance(a, str) for a in command)
    # daskem accepts the command line as it stands.
    from daskem.cli import main as daskem_main

    params = daskem_main.commands["fit"].make_context("fit", list(args)).params
    assert params["scheduler"] == address
    assert params["checkpoint"] == checkpoint
    assert params["data"].startswith("s3://")
    # The init container waits for the same scheduler.
    (wait,) = pod["initContainers"]
    assert wait["image"] == IMAGE
    assert f'"{address}"' in wait["command"][-1]


def test_object_store_credentials_are_wired_to_the_secret(manifests):
    secret = manifests["Secret"]
    assert secret["apiVersion"] == "v1"
    name, keys = secret["metadata"]["name"], set(secret["stringData"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys
    cluster_worker = containers(manifests["DaskCluster"]["spec"]["worker"]["spec"])[0]
    fit = containers(manifests["Job"]["spec"]["template"]["spec"])[0]
    for container in (cluster_worker, fit):
        assert {"secretRef": {"name": name}} in container["envFrom"]
    for env in manifests["values"]["worker"]["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == name
            assert ref["key"] in keys


def test_helm_values_for_the_dask_chart(manifests):
    values = manifests["values"]
    job_args = containers(manifests["Job"]["spec"]["template"]["spec"])[0]["command"]
    # The chart's scheduler Service is <fullname>-scheduler: the Job's address works for both.
    assert option_value(job_args, "--scheduler") == f"tcp://{values['fullnameOverride']}-scheduler:8786"
    assert values["scheduler"]["servicePort"] == 8786
    for part in ("scheduler", "worker"):
        image = values[part]["image"]
        assert f"{image['repository']}:{image['tag']}" == IMAGE
        assert isinstance(image["tag"], str)  # "0.1.0", not a float
        assert values[part]["securityContext"]["runAsNonRoot"] is True
    worker = values["worker"]
    assert isinstance(worker["replicas"], int)
    assert worker["replicas"] >= 1
    assert worker["image"]["dask_worker"] == "dask-worker"  # provided by the image
    assert {"cpu", "memory"} <= worker["resources"]["limits"].keys()
    assert worker["threads_per_worker"] == int(worker["resources"]["limits"]["cpu"])
    assert values["jupyter"]["enabled"] is False


def test_kubernetes_schemas(manifests):
    """The Job and Secret against Kubernetes' own schema; the DaskCluster's pod and service
    specs against PodSpec / ServiceSpec (what the operator's CRD refers to); parts of the
    Helm values against the types the chart puts them in."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    version = utils.latest_version()
    for kind in ("Job", "Secret"):
        kubernetes_validate.validate(manifests[kind], version, strict=True)
    definitions = utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ Registry()

    def check(instance: Any, definition: str) -> None:
        schema = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.api.core.v1.{definition}"}
        errors = list(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(instance))
        assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]

    spec = manifests["DaskCluster"]["spec"]
    check(spec["scheduler"]["spec"], "PodSpec")
    check(spec["scheduler"]["service"], "ServiceSpec")
    check(spec["worker"]["spec"], "PodSpec")
    with pytest.raises(AssertionError):  # the check does catch mistakes
        check({**spec["worker"]["spec"], "containerz": []}, "PodSpec")

    values = manifests["values"]
    for part in ("scheduler", "worker"):
        check(values[part]["resources"], "ResourceRequirements")
        check(values[part]["securityContext"], "PodSecurityContext")
    for probe in ("readinessProbe", "livenessProbe"):
        check(values["scheduler"][probe], "Probe")
    for env in values["worker"]["env"]:
        check(env, "EnvVar")
    for volume in values["worker"]["mounts"]["volumes"]:
        check(volume, "Volume")
    for mount in values["worker"]["mounts"]["volumeMounts"]:
        check(mount, "VolumeMount")


# ---------------------------------------------------------------------------- docker

DOCKERFILE_INSTRUCTIONS = {
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue  # comments and parser directives (# syntax=...) between instructions
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if not logical:
            continue
        keyword, _, rest = logical.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``relative`` (to the build context) is excluded by ``patterns``.

    Docker's rules without ``!`` exceptions (none are used): a pattern matches a path or
    one of its parent directories; ``*`` and ``?`` stay within one path component and
    ``**/`` spans any number of directories.
    """
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "negated patterns are not modelled here"
        regex = ""
        for token in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
            regex += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            return True
    return False


def test_dockerfile_parses_installs_daskem_and_runs_as_non_root(manifests):
    instructions = parse_dockerfile((DEPLOY / "docker" / "Dockerfile").read_text())
    keywords = [keyword for keyword, _ in instructions]
    unknown = set(keywords) - DOCKERFILE_INSTRUCTIONS
    assert not unknown, f"unknown instructions {unknown}"
    first = next(i for i, keyword in enumerate(keywords) if keyword != "ARG")  # ARG may precede FROM
    assert keywords[first] == "FROM"
    assert keywords.count("FROM") == 1
    assert instructions[first][1] == "python:3.11-slim"

    copies = [args.split() for keyword, args in instructions if keyword == "COPY"]
    sources = [source for args in copies for source in args[:-1] if not source.startswith("--")]
    assert {"pyproject.toml", "README.md", "daskem"} <= set(sources)
    patterns = dockerignore_patterns(DEPLOY / "docker" / ".dockerignore")
    for source in sources:  # the build context is the repository root
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
        if (ROOT / source).is_dir():
            assert not ignored(f"{source}/__init__.py", patterns)
    assert ignored(".venv", patterns)
    assert ignored("tests", patterns)
    assert ignored("daskem/__pycache__", patterns)
    # BuildKit reads <Dockerfile>.dockerignore beside a Dockerfile given with -f.
    assert (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text() == (
        DEPLOY / "docker" / ".dockerignore"
    ).read_text()

    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"\bpip install \"?\.(\[|\"|\s)", run) for run in runs), "daskem is not installed from ."
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert keywords.index("USER") > max(i for i, keyword in enumerate(keywords) if keyword == "RUN")
    # The manifests run as this user and pass `dask scheduler` / `dask worker` as the
    # command: the image has a CMD but no ENTRYPOINT that would prefix it.
    assert "ENTRYPOINT" not in keywords
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    assert json.loads(cmd)[0] == "daskem"
    exposed = {port for keyword, args in instructions if keyword == "EXPOSE" for port in args.split()}
    assert {"8786", "8787"} <= exposed
    pod = manifests["DaskCluster"]["spec"]["worker"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user


def test_dockerfile_parser_catches_mistakes():
    assert parse_dockerfile("# syntax=docker/dockerfile:1\nFROM a\nRUN x \\\n  # note\n  && y\n") == [
        ("FROM", "a"),
        ("RUN", "x  && y"),
    ]
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM a\nRUN x \\\n")
    assert "FORM" not in DOCKERFILE_INSTRUCTIONS
    assert ignored("a/.venv/lib", ["**/.venv"])
    assert not ignored("daskem", ["**/.venv", "tests"])


# --------------------------------------------------------------------------- READMEs


@pytest.mark.parametrize("target", ["local", "slurm", "pbs", "kubernetes", "docker"])
def test_every_target_has_a_readme(target):
    readme = DEPLOY / target / "README.md"
    assert readme.is_file()
    text = readme.read_text()
    assert text.startswith("# ")
    assert len(text) > 500
