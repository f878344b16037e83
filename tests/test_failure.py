"""Failure behaviour of ``radimg run`` under mpiexec, end to end through the CLI.

- an exception on one rank (test-only fault injection, ``RADIMG_FAULT_INJECT``) ends the
  whole job within 10 s, non-zero, with that rank's traceback, and leaves no product and no
  temporary file;
- SIGTERM on one rank during CLEAN's major cycles: every rank stops after the same cycle,
  the checkpoint is complete, exit 3, no product; ``--resume`` then ends with the image of
  an uninterrupted run (1e-6);
- SIGTERM before deconvolution: exit 143 at once, no product;
- ``kill -9`` of the whole job after a checkpoint: no product at the final path;
  ``--resume`` ends with the image of an uninterrupted run;
- the input Measurement Set is byte-identical after each of these.

Every launch runs in its own process group, is killed as a whole on timeout, and has a
subprocess timeout, so a hang fails in minutes.
"""

import hashlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from small_sim import small_observation

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # launches mpiexec itself

N = 128
CELL = 60.0
# four point sources on pixel centres: CLEAN needs several major cycles (mgain 0.8)
PIX = [(64, 64, 2.0), (80, 40, 1.0), (30, 90, 0.5), (100, 100, 0.8)]


def _mpiexec():
    exe = BIN / "mpiexec"
    if not exe.exists():
        pytest.skip("no mpiexec next to the interpreter (pip install mpich)")
    return str(exe)


def _radimg():
    exe = BIN / "radimg"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "radimg.cli"]


def _sources():
    from radimg.io.product import image_wcs, make_wcs_info

    wcs = image_wcs(make_wcs_info(N, N, np.radians(CELL / 3600), (0.0, np.radians(-27.0)), 1.5e8))
    out = []
    for x, y, f in PIX:
        c = wcs.pixel_to_world(x, y)
        out.append({"ra_deg": float(c.ra.deg), "dec_deg": float(c.dec.deg), "flux_jy": f})
    return out


def _config(tmp, ms, out, **dec):
    cfg = {
        "input": {"simulate": False, "ms": str(ms)},
        "simulate": small_observation(_sources(), noise_jy=0.1),
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
    path = tmp / f"cfg-{out.stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(fault=None):
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = "1"
    env["RADIMG_PROGRESS_INTERVAL"] = "0.5"  # progress lines the tests can wait for
    env.pop("RADIMG_FAULT_INJECT", None)
    if fault:
        env["RADIMG_FAULT_INJECT"] = fault
    return env


class Job:
    """A launched command (own process group) whose output is collected by threads, so a
    test can wait for a line while it runs."""

    def __init__(self, args, ranks=None, fault=None):
        cmd = [*_radimg(), *map(str, args)]
        if ranks:
            cmd = [_mpiexec(), "-n", str(ranks), *cmd]
        self.p = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=_env(fault),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out, self.err = [], []
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

    def wait_for(self, pred, timeout, what):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return
            if self.p.poll() is not None:
                self.finish(10)
                pytest.fail(f"job ended (rc {self.p.returncode}) before {what}\n{self.text}")
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"timed out waiting for {what}\n{self.text[-4000:]}")

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout):
        """(returncode, stdout, stderr, time.time() at exit); kills the group on timeout."""
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.p.wait()
            pytest.fail(f"timed out after {timeout} s\n{self.text[-4000:]}")
        t_end = time.time()
        for t in self._threads:
            t.join(timeout=10)
        return self.p.returncode, "".join(self.out), "".join(self.err), t_end


def _run(args, ranks=None, fault=None, timeout=240):
    return Job(args, ranks, fault).finish(timeout)


def _ms_digest(ms):
    h = hashlib.sha256()
    for p in sorted(pathlib.Path(ms).rglob("*")):
        if p.is_file() and not p.name.startswith("table.lock"):
            h.update(str(p.relative_to(ms)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _rank_pids(root_pid, timeout=60):
    """{rank: pid} of the radimg processes under mpiexec ``root_pid`` (PMI_RANK from
    /proc/PID/environ)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        children = {}
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
        todo, tree = [root_pid], []
        while todo:
            pid = todo.pop()
            for c in children.get(pid, []):
                tree.append(c)
                todo.append(c)
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
        if ranks:
            return ranks
        time.sleep(0.1)
    raise AssertionError("no rank processes found under mpiexec")


def _temporaries(directory):
    return sorted(p.name for p in pathlib.Path(directory).glob(".*.tmp-*"))


def _same(a, b, tol=1e-6):
    for k in ("model", "residual", "restored"):
        scale = np.abs(a[k]).max()
        assert np.abs(a[k].astype(float) - b[k].astype(float)).max() <= tol * scale, k


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    """The simulated MS, its checksum, and an uninterrupted 2-rank CLEAN run."""
    tmp = tmp_path_factory.mktemp("failure")
    ms = tmp / "sim.ms"
    ref = tmp / "ref.h5"
    cfg = _config(tmp, ms, ref)
    rc, out, err, _ = _run(["simulate", cfg], timeout=180)
    assert rc == 0, out + err
    digest = _ms_digest(ms)
    rc, out, err, _ = _run(["run", cfg], ranks=2)
    assert rc == 0, out + err
    assert _ms_digest(ms) == digest
    from radimg.io.product import read_product

    prod = read_product(ref)
    nmajor = int(yaml.safe_load(prod["run"]["deconvolution_json"])["major_cycles"])
    assert nmajor >= 3, f"the reference run needs several major cycles, got {nmajor}"
    return {"tmp": tmp, "ms": ms, "digest": digest, "ref": prod["images"], "nmajor": nmajor}


@pytest.mark.parametrize("stage", ["dirty", "major"])
def test_exception_on_one_rank_ends_the_job(obs, tmp_path, stage):
    out = tmp_path / "out" / "fault.h5"
    cfg = _config(tmp_path, obs["ms"], out)
    rc, stdout, err, t_end = _run(["run", cfg], ranks=3, fault=f"rank=1,stage={stage}")
    assert rc != 0, stdout + err
    m = re.search(r"injected fault on rank 1 at stage '(\w+)' \(t=([0-9.]+)\)", err)
    assert m and m.group(1) == stage, err
    dt = t_end - float(m.group(2))
    print(f"fault on rank 1 at stage {stage} -> job ended {dt:.2f} s later (mpiexec -n 3)")
    assert dt < 10.0, f"the job took {dt:.1f} s to end after the fault"
    assert "[rank 1/3]" in err and "Traceback" in err, err
    assert not out.exists()
    assert _temporaries(out.parent) == []
    assert _ms_digest(obs["ms"]) == obs["digest"]


def test_sigterm_before_deconvolution_exits_143_without_product(obs, tmp_path):
    out = tmp_path / "out" / "term.h5"
    cfg = _config(tmp_path, obs["ms"], out)
    # every rank sleeps 30 s in the PSF stage: the signal lands there
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=psf,sleep=30")
    pids = _rank_pids(job.p.pid)
    job.wait_for(lambda: "gridding PSF" in job.text, 120, "the PSF stage")
    t0 = time.time()
    os.kill(pids[1], signal.SIGTERM)
    rc, stdout, err, t_end = job.finish(60)
    print(f"SIGTERM on rank 1 before deconvolution -> exit {rc} after {t_end - t0:.2f} s")
    assert rc == 143, stdout + err
    assert t_end - t0 < 10.0
    assert "[rank 1/2] SIGTERM received before deconvolution" in err, err
    assert not out.exists() and _temporaries(out.parent) == []
    assert _ms_digest(obs["ms"]) == obs["digest"]


def test_sigterm_during_clean_checkpoints_then_resume_matches(obs, tmp_path):
    from radimg.deconv.checkpoint import read_checkpoint

    out = tmp_path / "out" / "run.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = _config(tmp_path, obs["ms"], out)
    # a slow major cycle (1.5 s of injected sleep on every rank) leaves time to signal
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=major,sleep=1.5")
    pids = _rank_pids(job.p.pid)
    job.wait_for(ckpt.exists, 180, "the first checkpoint")
    t0 = time.time()
    os.kill(pids[1], signal.SIGTERM)
    rc, stdout, err, t_end = job.finish(120)
    print(f"SIGTERM on rank 1 during CLEAN -> exit {rc} after {t_end - t0:.2f} s")
    assert rc == 3, stdout + err
    assert "[rank 1/2] SIGTERM received: stopping after the current major cycle" in err, err
    assert "radimg: stopped by SIGTERM after major cycle" in err, err
    assert f"continue with: radimg run {cfg} --resume" in err, err
    assert not out.exists() and _temporaries(out.parent) == []
    ck = read_checkpoint(ckpt)
    c = ck["counters"]
    assert c["algorithm"] == "clean" and not c["done"]
    assert 1 <= c["nmajor"] < obs["nmajor"], c
    assert np.isfinite(ck["image"]).all() and ck["image"].any()
    assert _ms_digest(obs["ms"]) == obs["digest"]

    rc, stdout, err, _ = _run(["run", cfg, "--resume"], ranks=3)
    assert rc == 0, stdout + err
    from radimg.io.product import read_product

    _same(read_product(out)["images"], obs["ref"])
    assert _temporaries(out.parent) == []
    assert _ms_digest(obs["ms"]) == obs["digest"]


def test_kill9_of_the_whole_job_then_resume_matches(obs, tmp_path):
    from radimg.deconv.checkpoint import read_checkpoint

    out = tmp_path / "out" / "run.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = _config(tmp_path, obs["ms"], out)
    job = Job(["run", cfg], ranks=2, fault="rank=all,stage=major,sleep=1.5")
    job.wait_for(ckpt.exists, 180, "the first checkpoint")
    time.sleep(2.0)  # somewhere in a later major cycle
    job.kill()
    job.finish(30)
    assert not out.exists(), "a product appeared although the job was killed mid-run"
    c = read_checkpoint(ckpt)["counters"]  # complete and readable
    assert not c["done"] and c["nmajor"] >= 1
    assert _ms_digest(obs["ms"]) == obs["digest"]

    rc, stdout, err, _ = _run(["run", cfg, "--resume"], ranks=2)
    assert rc == 0, stdout + err
    from radimg.io.product import read_product

    _same(read_product(out)["images"], obs["ref"])
    assert _temporaries(out.parent) == []
    assert _ms_digest(obs["ms"]) == obs["digest"]


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
    cfg_ref = _config(tmp_path, obs["ms"], ref, **admm)
    rc, stdout, err, _ = _run(["run", cfg_ref, "--set", "image.npix=64"], ranks=2)
    assert rc == 0, stdout + err

    out = tmp_path / "out" / "admm.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = _config(tmp_path, obs["ms"], out, **admm)
    job = Job(
        ["run", cfg, "--set", "image.npix=64"], ranks=2, fault="rank=all,stage=major,sleep=0.7"
    )
    pids = _rank_pids(job.p.pid)
    job.wait_for(ckpt.exists, 180, "the first ADMM checkpoint")
    os.kill(pids[0], signal.SIGTERM)
    rc, stdout, err, _ = job.finish(120)
    assert rc == 3, stdout + err
    assert not out.exists() and _temporaries(out.parent) == []
    c = read_checkpoint(ckpt)["counters"]
    # normally 6 (the next check); 3 if the signal beat the check after the first checkpoint
    assert c["algorithm"] == "admm" and c["it"] in (3, 6) and not c["done"], c
    assert f"radimg: stopped by SIGTERM after ADMM iteration {c['it']}" in err, err

    rc, stdout, err, _ = _run(["run", cfg, "--set", "image.npix=64", "--resume"], ranks=3)
    assert rc == 0, stdout + err
    _same(read_product(out)["images"], read_product(ref)["images"])
    assert _ms_digest(obs["ms"]) == obs["digest"]


def test_not_implemented_on_every_rank_is_a_user_error_naming_the_keys(obs, tmp_path):
    out = tmp_path / "out" / "ni.h5"
    cfg = _config(tmp_path, obs["ms"], out)
    fault = "rank=all,stage=weights,error=NotImplementedError"
    rc, stdout, err, _ = _run(["run", cfg], ranks=2, fault=fault)
    assert rc == 2, stdout + err
    assert "radimg: error: unsupported combination (wterm.mode=wstack" in err, err
    assert "gridder.device=cpu" in err and "deconvolution.algorithm=clean" in err, err
    assert "Traceback" not in err and not out.exists()
