"""A private single-node Slurm cluster on localhost, for tests of the job templates.

Everything lives in one temporary directory: a munge key and socket, ``slurm.conf``,
state, spool, logs and PID files. The daemons listen on free unprivileged ports, so several
such clusters (other test runs on the same machine) do not meet. Nothing under ``/etc`` is
read or written; clients find the cluster through ``SLURM_CONF``.

Configuration choices and why:

- ``proctrack/linuxproc``, ``task/none``, no cgroup plugins: containers and CI runners rarely
  give a writable cgroup hierarchy; linuxproc tracks job processes through ``/proc``.
- ``select/cons_tres`` with ``CR_CPU``: the node's real CPU count is the unit.
- ``NodeName=localhost NodeAddr=127.0.0.1`` with the sockets/cores/threads and memory that
  ``slurmd -C`` measures on this machine; ``slurmd -N localhost`` plays that node.
- No accounting daemon: job states are read with ``scontrol show job`` (kept for
  ``MinJobAge`` seconds after the end).

Teardown finds every process that carries this cluster's ``SLURM_CONF`` path in its
environment (daemons, ``slurmstepd``, job processes) and ends them by PID, so other
people's processes on a shared machine are never touched.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "srun")
APT_PACKAGES = ("slurm-wlm", "munge")
PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
    "/usr/lib/aarch64-linux-gnu/slurm-wlm",
    "/usr/lib64/slurm",
    "/usr/lib/slurm",
)


def _missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]


def ensure_slurm() -> str | None:
    """Install Debian's ``slurm-wlm`` and ``munge`` when missing.

    Returns
    -------
    str or None
        None when the tools are available; otherwise the reason they cannot be (the caller
        skips with it).
    """
    if not _missing():
        return None
    if shutil.which("apt-get") is None:
        return f"Slurm tools missing ({', '.join(_missing())}) and no apt-get to install them"
    if os.geteuid() != 0:
        return f"Slurm tools missing ({', '.join(_missing())}) and not root to apt-get install"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = []
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        log.append(f"$ {' '.join(cmd)} -> {r.returncode}\n{r.stderr[-2000:]}")
        if r.returncode != 0:
            return "apt-get could not install slurm-wlm/munge:\n" + "\n".join(log)
    if _missing():
        return f"after apt-get install, still missing: {', '.join(_missing())}"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> str:
    """``CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..``
    as ``slurmd -C`` measures it here (RealMemory lowered by 5% so slurmd never reports less
    than configured)."""
    r = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    if "CPUs" not in fields:
        fields = {"CPUs": str(os.cpu_count() or 1)}
    mem_mib = int(fields.get("RealMemory", 0)) or (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    )
    fields["RealMemory"] = str(max(1, int(mem_mib * 0.95)))
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return " ".join(f"{k}={fields[k]}" for k in keep if k in fields)


class SlurmCluster:
    """slurmctld + slurmd + munged for one test session, rooted at ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root).resolve()
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    # ---- set-up -------------------------------------------------------------------------

    @property
    def env(self) -> dict:
        """Environment for client commands (sbatch, squeue, scontrol) of this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_munge_key(self) -> pathlib.Path:
        d = self.root / "munge"
        d.mkdir(parents=True, mode=0o700)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        return key

    def write_config(self) -> None:
        for sub in ("etc", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        ctld_port, d_port = free_port(), free_port()
        while d_port == ctld_port:
            d_port = free_port()
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        plugin_dir = next((d for d in PLUGIN_DIRS if os.path.isdir(d)), None)
        r = self.root
        lines = [
            "ClusterName=radimgtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "MinJobAge=3600",
            "KillWait=5",
            "InactiveLimit=0",
            "MailProg=/bin/true",
            f"NodeName=localhost NodeAddr=127.0.0.1 {node_hardware()} State=UNKNOWN",
            "PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        if plugin_dir:
            lines.insert(1, f"PluginDir={plugin_dir}")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")  # noqa: SIM115 - kept by Popen
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def _wait_for(self, what: str, ok, timeout: float) -> None:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({p.returncode}) waiting for {what}\n" + self.logs()
                    )
            if ok():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self.logs())

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Write the config and start munged, slurmctld and slurmd; wait for an idle node."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = self._write_munge_key()
        self.write_config()
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                _sbin("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        self._wait_for("the munge socket", self.munge_socket.exists, timeout)
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(
            "slurmctld",
            lambda: (
                self._cmd("scontrol", "ping").returncode == 0
                and "UP" in self._cmd("scontrol", "ping").stdout
            ),
            timeout,
        )
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait_for("node localhost idle", self._node_idle, timeout)
        return self

    def _cmd(self, *args, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def _node_idle(self) -> bool:
        r = self._cmd("sinfo", "-h", "-N", "-o", "%T")
        return r.returncode == 0 and r.stdout.strip().startswith("idle")

    # ---- jobs ---------------------------------------------------------------------------

    def sbatch(self, *args, env=None, cwd=None) -> int:
        """Submit; returns the job id."""
        e = self.env if env is None else dict(env, SLURM_CONF=str(self.conf))
        r = subprocess.run(
            ["sbatch", "--parsable", *map(str, args)],
            capture_output=True,
            text=True,
            env=e,
            cwd=cwd,
            timeout=60,
        )
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed ({r.returncode}): {r.stderr}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        """``scontrol show job`` as a dict of its KEY=VALUE fields."""
        r = self._cmd("scontrol", "show", "job", "-o", str(job_id))
        if r.returncode != 0:
            return {}
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", r.stdout))

    def wait(self, job_id: int, timeout: float = 600.0) -> dict:
        """Wait until the job leaves PENDING/RUNNING/COMPLETING; returns its fields."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            j = self.job(job_id)
            if j.get("JobState") not in (None, "PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return j
            time.sleep(1.0)
        self._cmd("scancel", str(job_id))
        raise TimeoutError(
            f"job {job_id} still {self.job(job_id).get('JobState')} after "
            f"{timeout:.0f} s\n{self.logs()}"
        )

    def logs(self, tail: int = 40) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            lines = p.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"---- {p.name} ----\n" + "\n".join(lines))
        return "\n".join(out)

    # ---- teardown -----------------------------------------------------------------------

    def _our_pids(self) -> list[int]:
        """PIDs whose environment names this cluster's slurm.conf (daemons, steps, jobs)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if marker in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Cancel jobs, then end every process of this cluster by PID (TERM, then KILL)."""
        with contextlib.suppress(Exception):
            self._cmd("scancel", "--full", "-u", str(os.getuid()), timeout=10)
        pids = {p.pid for p in self.procs.values() if p.poll() is None} | set(self._our_pids())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            alive = [p for p in pids if _alive(p)]
            if not alive:
                break
            time.sleep(0.2)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone once reaped by Popen.wait
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
