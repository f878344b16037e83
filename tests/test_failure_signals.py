"""radimg.parallel.mpi.StopSignals without MPI (comm=None): what SIGTERM and SIGUSR1 do
inside and outside the deferred (deconvolution) part of a run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from radimg.parallel.mpi import StopSignals

pytestmark = pytest.mark.unit


def _wait(pred, timeout=5.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.01)
    return True


def test_deferred_signal_only_sets_the_flag_and_restore_puts_handlers_back(capsys):
    before = signal.getsignal(signal.SIGTERM)
    s = StopSignals(None).install()
    try:
        assert not s.received and not s.stop_requested()
        with s.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert _wait(lambda: s.received)
        assert s.stop_requested() and s.signal_name() == "SIGTERM"
    finally:
        s.restore()
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM received: stopping after the current major cycle" in capsys.readouterr().err


def test_sigusr1_outside_deferral_is_an_early_warning_not_a_kill(capsys):
    s = StopSignals(None).install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert _wait(lambda: s.received)
        assert s.stop_requested() and s.signal_name() == "SIGUSR1"
    finally:
        s.restore()
    assert "first checkpoint" in capsys.readouterr().err


def test_sigterm_outside_deferral_ends_the_process_at_once_with_143():
    """The main thread is inside a long call that holds no GIL (time.sleep, like a nogil
    numba kernel): the watcher thread still ends the process within a second."""
    code = textwrap.dedent(
        """
        import sys, time
        from radimg.parallel.mpi import StopSignals
        StopSignals(None).install()
        print("ready", flush=True)
        time.sleep(600)
        print("not stopped", flush=True)
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=180)
        dt = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, (out, err)
    assert dt < 60.0, dt  # long before the 600 s sleep ends (loose: busy machines)
    assert "not stopped" not in out
    assert "SIGTERM received before deconvolution could checkpoint" in err
    assert "nothing to resume" in err


def test_install_outside_the_main_thread_is_a_no_op():
    import threading

    box = {}

    def body():
        s = StopSignals(None).install()
        box["flag"] = s.stop_requested()
        s.restore()

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert box == {"flag": False}
