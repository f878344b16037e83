"""Failure behaviour of ``radimg run`` under mpiexec, end to end through the CLI.

- an exception on one rank (test-only fault injection, ``RADIMG_FAULT_INJECT``) ends the
  whole job within 10 s, non-zero, with that rank's traceback, and leaves no product and no
  temporary file;
- SIGTERM on one rank during CLEAN's major cycles: every rank stops after the same cycle,
  the checkpoint is complete, exit 3, no product; ``--resume`` then ends with the image of
  an uninterrupted run (1e-6);
- SIGTERM before deconvolution: exit 143 at once, no product;
- Ctrl-C (SIGINT to mpiexec, or to one rank waiting in a collective), in the PSF stage and
  in CLEAN: exit 130 at once, one line per rank, no traceback, no process left, no product;
- ``kill -9`` of the whole job after a checkpoint: no product at the final path;
  ``--resume`` ends with the image of an uninterrupted run;
- the input Measurement Set is byte-identical after each of these.

Every launch runs in its own session; on timeout every process of the job (mpiexec, its
proxy, the ranks) is killed, so a hang fails in minutes (tests/failure_util.py, shared with
scripts/bench_failure.py, which measures how long each of these takes).
"""

import os
import pathlib
import re
import signal
import time

import numpy as np
import pytest
import yaml
from failure_util import (
    Job,
    alive,
    failure_config,
    max_rel_diff,
    mpiexec_path,
    ms_digest,
    rank_pids,
    run_job,
    temporaries,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # launches mpiexec itself


def _same(a, b, tol=1e-6):
    for k, d in max_rel_diff(a, b).items():
        assert d <= tol, k


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    """The simulated MS, its checksum, and an uninterrupted 2-rank CLEAN run."""
    if mpiexec_path() is None:
        pytest.skip("no mpiexec next to the interpreter (pip install mpich)")
    tmp = tmp_path_factory.mktemp("failure")
    ms = tmp / "sim.ms"
    ref = tmp / "ref.h5"
    cfg = failure_config(tmp, ms, ref)
    rc, out, err, _ = run_job(["simulate", cfg], timeout=180)
    assert rc == 0, out + err
    digest = ms_digest(ms)
    rc, out, err, _ = run_job(["run", cfg], ranks=2)
    assert rc == 0, out + err
    assert ms_digest(ms) == digest
    from radimg.io.product import read_product

    prod = read_product(ref)
    nmajor = int(yaml.safe_load(prod["run"]["deconvolution_json"])["major_cycles"])
    assert nmajor >= 3, f"the reference run needs several major cycles, got {nmajor}"
    return {"tmp": tmp, "ms": ms, "digest": digest, "ref": prod["images"], "nmajor": nmajor}


@pytest.mark.parametrize("stage", ["dirty", "major"])
def test_exception_on_one_rank_ends_the_job(obs, tmp_path, stage):
    out = tmp_path / "out" / "fault.h5"
    cfg = failure_config(tmp_path, obs["ms"], out)
    rc, stdout, err, t_end = run_job(["run", cfg], ranks=3, fault=f"rank=1,stage={stage}")
    assert rc != 0, stdout + err
    m = re.search(r"injected fault on rank 1 at stage '(\w+)' \(t=([0-9.]+)\)", err)
    assert m and m.group(1) == stage, err
    dt = t_end - float(m.group(2))
    # "promptly, not never": a rank left waiting in MPI would hang until the launch timeout;
    # the bound is loose so a loaded machine cannot fail it
    assert dt < 120.0, f"the job took {dt:.1f} s to end after the fault"
    assert "[rank 1/3]" in err and "Traceback" in err, err
    assert not out.exists()
    assert temporaries(out.parent) == []
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_ranks_end_when_the_launcher_dies(obs, tmp_path):
    """kill -9 of hydra's proxy alone (what kills the ranks when one fails): the ranks it
    leaves behind, re-parented, end themselves instead of waiting in MPI for ever."""
    import pathlib as _p

    out = tmp_path / "out" / "orphan.h5"
    cfg = failure_config(tmp_path, obs["ms"], out)
    # every rank sleeps 600 s in the PSF stage, where the proxy is killed
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=psf,sleep=600")
    pids = rank_pids(job.p.pid, 2)
    job.wait_for(lambda: "gridding PSF" in job.text, 120, "the PSF stage")
    def cmdline(pid):
        # job.tree keeps every process seen below mpiexec; short-lived ones have gone since
        try:
            return _p.Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return b""

    proxies = [pid for pid in list(job.tree) if b"hydra_pmi_proxy" in cmdline(pid)]
    assert proxies, "no hydra_pmi_proxy under mpiexec"
    for pid in proxies:
        os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    while any(alive(pid) for pid in pids.values()):
        # they must end themselves long before their 600 s sleep would (loose: busy machines)
        assert time.monotonic() - t0 < 120.0, "ranks outlived their launcher by 120 s"
        time.sleep(0.1)
    job.finish(30)
    assert not out.exists() and temporaries(out.parent) == []
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_sigterm_before_deconvolution_exits_143_without_product(obs, tmp_path):
    out = tmp_path / "out" / "term.h5"
    cfg = failure_config(tmp_path, obs["ms"], out)
    # every rank sleeps 600 s in the PSF stage: the signal lands there
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=psf,sleep=600")
    pids = rank_pids(job.p.pid, 2)
    job.wait_for(lambda: "gridding PSF" in job.text, 120, "the PSF stage")
    t0 = time.time()
    os.kill(pids[1], signal.SIGTERM)
    rc, stdout, err, t_end = job.finish(180)
    assert rc == 143, stdout + err
    assert t_end - t0 < 120.0  # long before the 600 s sleep ends (loose: busy machines)
    assert "[rank 1/2] SIGTERM received before deconvolution" in err, err
    assert not out.exists() and temporaries(out.parent) == []
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_sigterm_during_clean_checkpoints_then_resume_matches(obs, tmp_path):
    from radimg.deconv.checkpoint import read_checkpoint

    out = tmp_path / "out" / "run.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = failure_config(tmp_path, obs["ms"], out)
    # a slow major cycle (1.5 s of injected sleep on every rank) leaves time to signal
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=major,sleep=1.5")
    pids = rank_pids(job.p.pid, 2)
    job.wait_for(ckpt.exists, 180, "the first checkpoint")
    os.kill(pids[1], signal.SIGTERM)
    rc, stdout, err, _ = job.finish(120)
    assert rc == 3, stdout + err
    assert "[rank 1/2] SIGTERM received: stopping after the current major cycle" in err, err
    assert "radimg: stopped by SIGTERM after major cycle" in err, err
    assert f"continue with: radimg run {cfg} --resume" in err, err
    assert not out.exists() and temporaries(out.parent) == []
    ck = read_checkpoint(ckpt)
    c = ck["counters"]
    assert c["algorithm"] == "clean" and not c["done"]
    assert 1 <= c["nmajor"] < obs["nmajor"], c
    assert np.isfinite(ck["image"]).all() and ck["image"].any()
    assert ms_digest(obs["ms"]) == obs["digest"]

    rc, stdout, err, _ = run_job(["run", cfg, "--resume"], ranks=3)
    assert rc == 0, stdout + err
    from radimg.io.product import read_product

    _same(read_product(out)["images"], obs["ref"])
    assert temporaries(out.parent) == []
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_kill9_of_the_whole_job_then_resume_matches(obs, tmp_path):
    from radimg.deconv.checkpoint import read_checkpoint

    out = tmp_path / "out" / "run.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = failure_config(tmp_path, obs["ms"], out)
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=major,sleep=1.5")
    job.wait_for(ckpt.exists, 180, "the first checkpoint")
    time.sleep(2.0)  # somewhere in a later major cycle
    job.kill()
    job.finish(30)
    assert not out.exists(), "a product appeared although the job was killed mid-run"
    c = read_checkpoint(ckpt)["counters"]  # complete and readable
    assert not c["done"] and c["nmajor"] >= 1
    assert ms_digest(obs["ms"]) == obs["digest"]

    rc, stdout, err, _ = run_job(["run", cfg, "--resume"], ranks=2)
    assert rc == 0, stdout + err
    from radimg.io.product import read_product

    _same(read_product(out)["images"], obs["ref"])
    assert temporaries(out.parent) == []
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_sigterm_during_admm_checkpoints_then_resume_matches(obs, tmp_path):
    """ADMM checks for a stop every checkpoint_every iterations; its vis-space dual is in
    the checkpoint, so the resumed run (at another rank count) ends where an uninterrupted
    one does."""
    from radimg.deconv.checkpoint import read_checkpoint
    from radimg.io.product import read_product

    admm = {
        "algorithm": "admm",
        "niter": 9,
        "admm_dual_iters": 3,
        "admm_power_iters": 15,
        "checkpoint_every": 3,
    }
    ref = tmp_path / "ref" / "admm.h5"
    cfg_ref = failure_config(tmp_path, obs["ms"], ref, **admm)
    rc, stdout, err, _ = run_job(["run", cfg_ref, "--set", "image.npix=64"], ranks=2)
    assert rc == 0, stdout + err

    out = tmp_path / "out" / "admm.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = failure_config(tmp_path, obs["ms"], out, **admm)
    job = Job(
        ["run", cfg, "--set", "image.npix=64"], ranks=2, fault="rank=all,stage=major,sleep=0.7"
    )
    pids = rank_pids(job.p.pid, 2)
    job.wait_for(ckpt.exists, 180, "the first ADMM checkpoint")
    os.kill(pids[0], signal.SIGTERM)
    rc, stdout, err, _ = job.finish(120)
    assert rc == 3, stdout + err
    assert not out.exists() and temporaries(out.parent) == []
    c = read_checkpoint(ckpt)["counters"]
    # normally 6 (the next check); 3 if the signal beat the check after the first checkpoint
    assert c["algorithm"] == "admm" and c["it"] in (3, 6) and not c["done"], c
    assert f"radimg: stopped by SIGTERM after ADMM iteration {c['it']}" in err, err

    rc, stdout, err, _ = run_job(["run", cfg, "--set", "image.npix=64", "--resume"], ranks=3)
    assert rc == 0, stdout + err
    _same(read_product(out)["images"], read_product(ref)["images"])
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_not_implemented_on_every_rank_is_a_user_error_naming_the_keys(obs, tmp_path):
    out = tmp_path / "out" / "ni.h5"
    cfg = failure_config(tmp_path, obs["ms"], out)
    fault = "rank=all,stage=weights,error=NotImplementedError"
    rc, stdout, err, _ = run_job(["run", cfg], ranks=2, fault=fault)
    assert rc == 2, stdout + err
    # raised on each rank by itself (not a collective decision): each rank that raised it
    # says so with its rank and the job ends with MPI_Abort(2) (radimg.cli._user_error)
    assert "radimg: error: [rank " in err, err
    assert "unsupported combination (wterm.mode=wstack" in err, err
    assert "gridder.device=cpu" in err and "deconvolution.algorithm=clean" in err, err
    assert "Traceback" not in err and not out.exists()


# Ctrl-C (SIGINT) under mpiexec: exit 130, the whole job ends at once, one line per rank
# that saw it and no traceback. SIGINT to mpiexec is what Ctrl-C in a terminal does (hydra
# forwards it to every rank); SIGINT to one rank is what `kill -INT PID` does.
INTERRUPT_LINE = "SIGINT (Ctrl-C) received: ending the job now (exit 130)"


def _interrupted(job, out, ranks):
    """The job ended with 130, no traceback, the reason on each of ``ranks``, and left
    no process, no product and no temporary."""
    rc, stdout, err, _ = job.finish(120)  # JobError if any process of the job is left
    assert rc == 130, stdout + err
    for r in ranks:
        assert f"[rank {r}/2] {INTERRUPT_LINE}" in err, err
    assert "Traceback" not in err, err
    assert not out.exists() and temporaries(out.parent) == []


@pytest.mark.parametrize("stage", ["psf", "clean"])
def test_ctrl_c_to_mpiexec_ends_the_job_with_130(obs, tmp_path, stage):
    from radimg.deconv.checkpoint import read_checkpoint

    out = tmp_path / "out" / "int.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = failure_config(tmp_path, obs["ms"], out)
    if stage == "psf":
        job = Job(["run", cfg], ranks=2, fault="rank=all,stage=psf,sleep=600")
        job.wait_for(lambda: "gridding PSF" in job.text, 120, "the PSF stage")
    else:
        job = Job(["run", cfg], ranks=2, fault="rank=all,stage=major,sleep=1.5")
        job.wait_for(ckpt.exists, 120, "the first checkpoint")
    os.kill(job.p.pid, signal.SIGINT)
    _interrupted(job, out, ranks=(0, 1))
    if stage == "clean":  # the checkpoint written before Ctrl-C is complete (--resume)
        c = read_checkpoint(ckpt)["counters"]
        assert c["nmajor"] >= 1 and not c["done"], c
    assert ms_digest(obs["ms"]) == obs["digest"]


@pytest.mark.parametrize("stage", ["psf", "clean"])
def test_ctrl_c_to_one_rank_waiting_in_a_collective_ends_the_job(obs, tmp_path, stage):
    """Rank 0 sleeps 600 s (PSF stage, or the first major cycle) while rank 1 waits for it
    in a collective; SIGINT to rank 1 must end the job now, not when rank 0 arrives (a
    KeyboardInterrupt is raised only once the MPI call returns)."""
    out = tmp_path / "out" / "int1.h5"
    cfg = failure_config(tmp_path, obs["ms"], out)
    fault, line = {
        "psf": ("rank=0,stage=psf,sleep=600", "gridding PSF"),
        "clean": ("rank=0,stage=major,sleep=600", "major 0: peak"),
    }[stage]
    job = Job(["run", cfg], ranks=2, fault=fault)
    pids = rank_pids(job.p.pid, 2)
    job.wait_for(lambda: line in job.text, 120, line)
    time.sleep(2.0)  # rank 1 finishes its share (< 0.5 s) and waits for rank 0
    os.kill(pids[1], signal.SIGINT)
    _interrupted(job, out, ranks=(1,))
    assert ms_digest(obs["ms"]) == obs["digest"]


def test_ctrl_c_at_start_up_aborts_a_multi_rank_job(monkeypatch):
    """A KeyboardInterrupt that reaches the CLI (before the run's signal handling, e.g. in
    the imports) ends a multi-rank job with MPI_Abort(130); serially, or before MPI is
    initialised, the CLI just exits 130."""
    import io
    import sys
    import types

    from radimg.parallel import mpi

    aborted = []

    class Comm:
        def __init__(self, size):
            self.size = size

        def Get_rank(self):
            return 1

        def Get_size(self):
            return self.size

        def Abort(self, code):
            aborted.append(code)

    monkeypatch.setattr(mpi, "IO_DRAIN_S", 0.0)
    fake = types.SimpleNamespace(Is_initialized=lambda: True, Is_finalized=lambda: False)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", fake)
    for size, want in ((1, []), (2, [130])):
        fake.COMM_WORLD = Comm(size)
        err = io.StringIO()
        mpi.abort_interrupted(stream=err)
        assert aborted == want
        assert err.getvalue() == ("" if size == 1 else f"[rank 1/2] {mpi.INTERRUPT_MESSAGE}\n")
    monkeypatch.delitem(sys.modules, "mpi4py.MPI")
    mpi.abort_interrupted()  # MPI never initialised: nothing to abort
    assert aborted == [130]
