"""Launching ``radimg`` jobs and taking them down, shared by tests/test_failure.py (what must
hold) and scripts/bench_failure.py (how long it takes): one place for the scenario, the
process handling and the checks, so the figures measure what the tests assert.

No pytest here: a job that ends early or hangs raises :class:`JobError` (an
``AssertionError``, so a test reports it as a failure).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import yaml
from small_sim import pixel_sources, small_observation

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent

N = 128
CELL = 60.0
# four point sources on pixel centres: CLEAN needs several major cycles (mgain 0.8)
PIX = [(64, 64, 2.0), (80, 40, 1.0), (30, 90, 0.5), (100, 100, 0.8)]


class JobError(AssertionError):
    """A launched job ended before, or did not reach, what the caller waited for."""


def mpiexec_path():
    """The ``mpiexec`` next to the interpreter (the MPICH wheel's), or None."""
    exe = BIN / "mpiexec"
    return str(exe) if exe.exists() else None


def radimg_cmd():
    exe = BIN / "radimg"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "radimg.cli"]


def sources():
    """The ``simulate.sources`` list for :data:`PIX` (pixel positions of the N x N image)."""
    return pixel_sources(PIX, N, CELL)


def failure_config(tmp, ms, out, **dec):
    """Write the config of the failure scenario (CLEAN, several major cycles, on ``ms``,
    product ``out``; ``dec`` replaces deconvolution keys) into ``tmp``; returns its path."""
    cfg = {
        "input": {"simulate": False, "ms": str(ms)},
        "simulate": small_observation(sources(), noise_jy=0.1),
        "image": {"npix": N, "cell_arcsec": CELL, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-6},
        "gridder": {"precision": "double", "nthreads": 1},
        "deconvolution": {
            "algorithm": "clean",
            "niter": 5000,
            "gain": 0.1,
            "mgain": 0.8,
            "auto_threshold": 3.0,
            "nmajor": 20,
            **dec,
        },
        "output": {"path": str(out), "overwrite": True},
    }
    path = pathlib.Path(tmp) / f"cfg-{pathlib.Path(out).stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def job_env(fault=None):
    """The environment of a launched job: one thread per rank, progress lines every 0.5 s
    (something to wait for), and the fault hook ``RADIMG_FAULT_INJECT`` only if ``fault``."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = "1"
    env["RADIMG_PROGRESS_INTERVAL"] = "0.5"
    env.pop("RADIMG_FAULT_INJECT", None)
    if fault:
        env["RADIMG_FAULT_INJECT"] = fault
    return env


def _proc_stat(pid_dir):
    """(ppid, state, start time in clock ticks since boot) of /proc/PID, or None when it
    is gone."""
    try:
        fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root_pid):
    """{pid: start time} of every process below ``root_pid`` (children, grandchildren, ...).
    The start time tells a process from a later one that reuses its pid (pid_max may be as
    low as 32768)."""
    children, start = {}, {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            st = _proc_stat(d)
            if st is not None:
                children.setdefault(st[0], []).append(int(d.name))
                start[int(d.name)] = st[2]
    todo, tree = [root_pid], {}
    while todo:
        for c in children.get(todo.pop(), []):
            tree[c] = start[c]
            todo.append(c)
    return tree


def alive(pid, start=None):
    """Whether ``pid`` is a live process (a zombie has ended) started at ``start``."""
    st = _proc_stat(pathlib.Path(f"/proc/{pid}"))
    return st is not None and st[1] != "Z" and (start is None or st[2] == start)


class Job:
    """A launched command (own session) whose output is collected by threads, so a caller
    can wait for a line while it runs.

    MPICH's mpiexec (hydra) puts its proxy and every rank in a process group of their own,
    so the job is not one process group: :attr:`tree` collects the launched process's
    descendants while it runs (every 0.25 s in :meth:`wait_for` and :meth:`finish`), and
    :meth:`kill` and :meth:`finish` act on all of them.
    """

    def __init__(self, args, ranks=None, fault=None):
        cmd = [*radimg_cmd(), *map(str, args)]
        if ranks:
            exe = mpiexec_path()
            if exe is None:
                raise FileNotFoundError("no mpiexec next to the interpreter (pip install mpich)")
            cmd = [exe, "-n", str(ranks), *cmd]
        self.p = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=job_env(fault),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out, self.err = [], []
        self.t_exit = None  # time.time() when the launched process (mpiexec) ended
        self.t_last = None  # ... and when the last process of the job had ended
        self.tree = {}  # {pid: start time} of the processes below the launched one seen so far
        self._seen = 0.0
        self._threads = [
            threading.Thread(target=self._drain, args=(s, buf), daemon=True)
            for s, buf in ((self.p.stdout, self.out), (self.p.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream, buf):
        for line in stream:
            buf.append(line)

    @property
    def text(self):
        return "".join(self.out) + "".join(self.err)

    def refresh_tree(self, every=0.25):
        """Add the launched process's current descendants to :attr:`tree` (at most once
        per ``every`` seconds; nothing once it has ended)."""
        now = time.monotonic()
        if now - self._seen >= every and self.p.poll() is None:
            self.tree.update(descendants(self.p.pid))
            self._seen = now

    def wait_for(self, pred, timeout, what):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.refresh_tree()
            if pred():
                return
            if self.p.poll() is not None:
                self.finish(10)
                raise JobError(f"job ended (rc {self.p.returncode}) before {what}\n{self.text}")
            time.sleep(0.05)
        self.kill()
        raise JobError(f"timed out waiting for {what}\n{self.text[-4000:]}")

    def kill(self, sig=signal.SIGKILL):
        """Send ``sig`` to every process of the job (mpiexec, its proxy, the ranks)."""
        self.refresh_tree(every=0.0)
        if self.p.poll() is None:
            self.p.send_signal(sig)
        for pid, start in self.tree.items():
            if alive(pid, start):  # not a later process that reuses the pid
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def finish(self, timeout):
        """(returncode, stdout, stderr, t_last): ``t_last`` is ``time.time()`` when the last
        process of the job had ended (polled every 10 ms; :attr:`t_exit` is when the
        launched process itself ended). Kills the job on timeout."""
        t0 = time.monotonic()
        while self.t_last is None:
            self.refresh_tree()
            if self.t_exit is None and self.p.poll() is not None:
                self.t_exit = time.time()
            if self.t_exit is not None and not any(alive(*kv) for kv in self.tree.items()):
                self.t_last = time.time()
                break
            if time.monotonic() - t0 > timeout:
                self.kill()
                self.p.wait()
                raise JobError(f"timed out after {timeout} s\n{self.text[-4000:]}")
            time.sleep(0.01)
        for t in self._threads:
            t.join(timeout=10)
        return self.p.returncode, "".join(self.out), "".join(self.err), self.t_last


def run_job(args, ranks=None, fault=None, timeout=240):
    return Job(args, ranks, fault).finish(timeout)


def ms_digest(ms):
    """SHA-256 over every file of the Measurement Set directory (casacore's lock files
    excluded: opening a table read-only rewrites them)."""
    h = hashlib.sha256()
    for p in sorted(pathlib.Path(ms).rglob("*")):
        if p.is_file() and not p.name.startswith("table.lock"):
            h.update(str(p.relative_to(ms)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def rank_pids(root_pid, n_ranks, timeout=60):
    """{rank: pid} of all ``n_ranks`` radimg processes under mpiexec ``root_pid`` (PMI_RANK
    from /proc/PID/environ). Waits until every rank has started: on a busy machine hydra
    starts them one by one, and returning at the first one found made callers fail with
    ``KeyError: 1``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        tree = descendants(root_pid)
        ranks = {}
        for pid in tree:
            try:
                env = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"radimg" not in cmd:
                continue
            for kv in env:
                if kv.startswith(b"PMI_RANK="):
                    ranks[int(kv.split(b"=", 1)[1])] = pid
        if len(ranks) >= n_ranks:
            return ranks
        time.sleep(0.1)
    raise JobError(f"found ranks {sorted(ranks)} of {n_ranks} under mpiexec after {timeout} s")


def temporaries(directory):
    """Leftover temporary product files (``.NAME.tmp-*``) in ``directory``."""
    return sorted(p.name for p in pathlib.Path(directory).glob(".*.tmp-*"))


def max_rel_diff(a, b, keys=("model", "residual", "restored")):
    """{image: max |a - b| / max |a|} for the images ``keys`` of two products' images."""
    out = {}
    for k in keys:
        x, y = np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)
        out[k] = float(np.abs(x - y).max() / np.abs(x).max())
    return out
