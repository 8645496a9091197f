"""A one-node SLURM on this machine for the tests: ``munged``, ``slurmctld`` and ``slurmd``.

:func:`start_slurm` writes a ``slurm.conf`` (the node: this host, its memory and at least
four CPUs, so that two scenarios' jobs run at once; one partition), a munge key, and puts
every state, spool, log and pid file under one directory; it starts the three daemons in
the foreground as children of the test process and waits until ``sinfo`` shows the node
idle. :meth:`Slurm.stop` stops them by the PIDs it started.
The SLURM commands (``sbatch``, ``squeue``, ``scancel``, ...) reach this SLURM through
``SLURM_CONF``, set in :attr:`Slurm.env`.

Needs Debian's ``slurm-wlm`` and ``munge`` packages and root (the daemons run as root, as
``SlurmUser``); :func:`missing` says why it cannot run here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")


def missing() -> str | None:
    """Why a SLURM cannot be started here, or None."""
    absent = [name for name in (*DAEMONS, *COMMANDS) if shutil.which(name, path=_path()) is None]
    if absent:
        return f"SLURM not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the SLURM daemons of the tests run as root"
    return None


def _path() -> str:
    # The daemons are in /usr/sbin, which a non-login PATH may lack.
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class Slurm:
    """A running one-node SLURM; ``env`` for the commands, ``node`` its node name."""

    root: Path
    node: str
    cpus: int
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM command against this SLURM; its stdout."""
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: status {done.returncode}\n{done.stdout}{done.stderr}")
        return done.stdout

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        """Submit a job; its id."""
        done = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: status {done.returncode}\n{done.stdout}{done.stderr}")
        return int(done.stdout.strip().split(";")[0])

    def jobs(self, workdir: Path | None = None) -> dict[int, tuple[str, str]]:
        """Jobs SLURM still knows of, pending, running or recently ended: id -> (name, state);
        only those submitted from ``workdir`` if given."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%Z")
        jobs = {}
        for line in out.splitlines():
            job_id, name, state, where = line.strip().split("|")
            if workdir is None or Path(where) == Path(workdir):
                jobs[int(job_id)] = (name, state)
        return jobs

    def job_state(self, job_id: int) -> str:
        """``JobState`` of a job (scontrol; for MinJobAge after its end), or "" once forgotten."""
        done = subprocess.run(
            ["scontrol", "show", "job", str(job_id)], env=self.env, capture_output=True, text=True, timeout=30
        )
        for token in done.stdout.split():
            if token.startswith("JobState="):
                return token.split("=", 1)[1]
        return ""

    def jobcomp(self) -> dict[int, dict[str, str]]:
        """The ended jobs as SLURM records them (JobCompType=jobcomp/filetxt): id -> fields."""
        path = self.root / "log" / "jobcomp.txt"
        records = {}
        for line in path.read_text().splitlines() if path.exists() else ():
            fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
            records[int(fields["JobId"])] = fields
        return records

    def node_state(self) -> str:
        return self.run("sinfo", "--noheader", "--nodes", self.node, "--format=%T", check=False).strip()

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancel every job, stop the daemons this object started (slurmd first) and reap them."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--user", "root", check=False, timeout=10)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(
                    state in ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING") for _, state in self.jobs().values()
                ):
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        left = {name: proc.pid for name, proc in self.processes.items() if proc.poll() is None}
        if left:
            raise RuntimeError(f"SLURM daemons still running: {left}")
        # Nor any process of theirs (slurmstepd, jobs): all carry SLURM_CONF=<our conf>.
        deadline = time.monotonic() + 15
        while (others := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if others:
            raise RuntimeError(f"processes of the test SLURM still running: {others}")

    def leftovers(self) -> dict[int, str]:
        """Live processes (zombies aside) whose environment has this SLURM's SLURM_CONF."""
        needle = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
        return found


def _conf(slurm_dir: Path, node: str, cpus: int, memory_mb: int, socket_path: Path) -> str:
    return f"""\
# A one-node SLURM for daskem's tests (tests/slurm.py), everything under {slurm_dir}.
ClusterName=daskemtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={slurm_dir}/state
SlurmdSpoolDir={slurm_dir}/spool/%n
SlurmctldPidFile={slurm_dir}/run/slurmctld.pid
SlurmdPidFile={slurm_dir}/run/slurmd.pid
SlurmctldLogFile={slurm_dir}/log/slurmctld.log
SlurmdLogFile={slurm_dir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
MessageTimeout=10
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
OverTimeLimit=0
InactiveLimit=0
JobCompType=jobcomp/filetxt
JobCompLoc={slurm_dir}/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Two scenarios' jobs at once (tests/test_slurm.py): the node offers more CPUs than the host
# has (config_overrides: slurmd reports these, not the hardware's); the OS shares them.
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(root: Path, timeout: float = 60) -> Slurm:
    """Start munged, slurmctld and slurmd under ``root``; return once the node is idle."""
    root = Path(root)
    for sub in ("munge", "state", "spool", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o700)
    node = socket.gethostname().split(".")[0]
    cpus = max(4, os.cpu_count() or 1)  # at least two jobs of one CPU each, twice (see _conf)
    memory_mb = max(1024, int(_memory_mb() * 0.9))
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    socket_path = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, cpus, memory_mb, socket_path))
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": _path()}
    for name in list(env):  # a SLURM job's variables would leak into the commands
        if name.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_")) and name != "SLURM_CONF":
            del env[name]
    slurm = Slurm(root=root, node=node, cpus=cpus, env=env)
    logs = root / "log"
    commands = {
        "munged": [
            "munged",
            "--foreground",
            "--force",
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--log-file={logs / 'munged.log'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
        ],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-N", node, "-f", str(conf)],
    }
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.stdout", "wb") as out:
                slurm.processes[name] = subprocess.Popen(
                    command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            if name == "munged":
                _wait(lambda: socket_path.exists(), 20, "munged's socket", slurm)
            elif name == "slurmctld":
                _wait(lambda: "UP" in slurm.run("scontrol", "ping", check=False, timeout=15), 30, "slurmctld", slurm)
        _wait(lambda: slurm.node_state() == "idle", timeout, "the node to be idle", slurm)
    except BaseException:
        slurm.stop()
        raise
    return slurm


def _wait(predicate, timeout: float, what: str, slurm: Slurm) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = {name: proc.returncode for name, proc in slurm.processes.items() if proc.poll() is not None}
        if dead or time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((slurm.root / "log").iterdir())
            )
            raise RuntimeError(f"waiting for {what}: daemons exited {dead}\n{logs}")
        time.sleep(0.2)
