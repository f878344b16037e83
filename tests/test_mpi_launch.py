"""Launch the MPI tests (tests/mpi/) under ``mpiexec -n {1,2,3,4}`` with hard timeouts.

Each launch runs in its own process group and is killed as a whole on timeout, so a
deadlock fails within minutes instead of hanging CI. MPICH's hydra (the ``mpich`` wheel)
oversubscribes 2 cores with 4 ranks without any flag; Open MPI needs ``--oversubscribe``,
added when ``mpiexec --version`` says Open MPI. The tests under tests/mpi/ carry the ``mpi``
marker and are skipped by a plain ``pytest`` run (pytest-mpi needs ``--with-mpi``).
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MPI_DIR = REPO / "tests" / "mpi"
TIMEOUT_S = 300  # per launch; a deadlock fails in minutes, not at the CI limit

# Not marked ``mpi``: pytest-mpi skips every ``mpi``-marked test unless pytest itself runs with
# ``--with-mpi`` under mpiexec; this launcher is a plain serial test that starts mpiexec.


def _mpiexec():
    local = pathlib.Path(sys.executable).with_name("mpiexec")
    exe = str(local) if local.exists() else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec found (install the mpich wheel: pip install mpich)")
    flags = []
    try:
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        if "Open MPI" in ver or "OpenRTE" in ver:
            flags.append("--oversubscribe")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return [exe, *flags]


def _env():
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")  # oversubscribed cores: no nested threading
    env.setdefault("NUMBA_NUM_THREADS", "1")
    return env


def _run(args, timeout):
    """Run in a new process group; on timeout kill the whole group (mpiexec and ranks)."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        args,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(
            f"timed out after {timeout} s (deadlock?): {' '.join(args)}\n{out[-4000:]}\n{err[-4000:]}"
        )
    return p.returncode, out, err, time.monotonic() - t0


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_mpi_suite(nranks):
    files = sorted(str(p.relative_to(REPO)) for p in MPI_DIR.glob("test_*.py"))
    assert files, "no MPI tests found"
    args = [
        *_mpiexec(),
        "-n",
        str(nranks),
        sys.executable,
        "-m",
        "pytest",
        "--with-mpi",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        str(TIMEOUT_S - 20),
        *files,
    ]
    rc, out, err, _ = _run(args, TIMEOUT_S)
    assert rc == 0, f"mpiexec -n {nranks} failed (rc {rc})\n{out[-6000:]}\n{err[-6000:]}"
    assert "passed" in out and " skipped" not in out.split("\n")[-2]


def test_failing_rank_aborts_the_job():
    args = [*_mpiexec(), "-n", "3", sys.executable, str(MPI_DIR / "abort_script.py")]
    rc, out, err, dt = _run(args, 60)
    assert rc != 0
    assert dt < 10.0, f"abort took {dt:.1f} s"
    assert "[rank 1/3]" in err and "deliberate failure on rank 1" in err and "Traceback" in err
    assert "passed the barrier" not in out
