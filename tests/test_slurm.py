"""The Slurm job templates under a real Slurm: a private one-node cluster on localhost.

``jobs/slurm/cpu.sbatch`` is submitted with ``sbatch`` exactly as a user would
(``sbatch --ntasks=2 jobs/slurm/cpu.sbatch CONFIG.yaml``); it runs ``srun --mpi=pmi2`` with
the PyPI mpich wheel, and the product must be a valid 2-rank product. A job with a broken
config must end FAILED with a non-zero exit code and name the culprit in its output.

Slurm and munge come from Debian (``slurm-wlm``, ``munge``); they are installed with apt-get
when missing, and the tests skip (with the reason) only where that is impossible.
"""

import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest
import yaml
from slurm_cluster import SlurmCluster, ensure_slurm
from small_sim import small_observation

REPO = pathlib.Path(__file__).resolve().parents[1]
CPU_TEMPLATE = REPO / "jobs" / "slurm" / "cpu.sbatch"
GPU_TEMPLATE = REPO / "jobs" / "slurm" / "gpu.sbatch"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def demo_config(tmp: pathlib.Path, **over) -> pathlib.Path:
    """A small MWA-like observation (128 tiles, 3 integrations, 2 channels), 256^2 image."""
    cfg = {
        "input": {"simulate": True, "ms": str(tmp / "sim.ms")},
        "simulate": small_observation([{"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 2.0}]),
        "image": {"npix": 256, "cell_arcsec": 240.0, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-5},
        "gridder": {"precision": "double"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp / "out" / "run.h5"), "overwrite": True},
    }
    for key, val in over.items():
        sec, k = key.split(".")
        cfg.setdefault(sec, {})[k] = val
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cluster():
    reason = ensure_slurm()
    if reason:
        pytest.skip(f"no Slurm for the job-template tests: {reason}")
    # A short private path: the munge socket must fit the 108-byte AF_UNIX limit.
    root = pathlib.Path(tempfile.mkdtemp(prefix="radimg-slurm-"))
    c = SlurmCluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()  # by PID, even when start() or a test failed
    shutil.rmtree(root, ignore_errors=True)


def _job_env() -> dict:
    env = dict(os.environ)
    # the venv this test runs in is the one the job activates (a fresh clone's .venv in CI)
    env["RADIMG_VENV"] = sys.prefix
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    return env


def test_srun_mpi_pmi2_gives_one_world(cluster):
    """The mpich wheel under srun --mpi=pmi2 forms one 2-rank communicator."""
    code = (
        "from mpi4py import MPI; c = MPI.COMM_WORLD; "
        "print('rank', c.rank, 'of', c.size, flush=True)"
    )
    r = cluster._cmd("srun", "--mpi=pmi2", "-n", "2", sys.executable, "-c", code, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.split("\n")[:2]) == ["rank 0 of 2", "rank 1 of 2"], r.stdout


def test_cpu_template_runs_two_ranks_and_writes_a_valid_product(cluster, tmp_path):
    from radimg.io.product import read_product

    cfg = demo_config(tmp_path)
    log = tmp_path / "job-%j.out"
    t0 = time.monotonic()
    job = cluster.sbatch(
        "--ntasks=2",
        "--cpus-per-task=1",
        "--time=00:10:00",
        f"--output={log}",
        CPU_TEMPLATE,
        cfg,
        env=_job_env(),
        cwd=tmp_path,
    )
    info = cluster.wait(job, timeout=540)
    out = pathlib.Path(str(log).replace("%j", str(job))).read_text()
    assert info["JobState"] == "COMPLETED", (info, out, cluster.logs())
    assert info["ExitCode"] == "0:0", (info, out)
    assert "2 rank(s)" in out and "1 thread(s) per rank" in out, out
    prod = read_product(tmp_path / "out" / "run.h5")
    assert int(prod["run"]["n_ranks"]) == 2
    dirty, psf = prod["images"]["dirty"], prod["images"]["psf"]
    assert dirty.shape == psf.shape == (256, 256)
    assert np.isfinite(dirty).all() and np.isfinite(psf).all()
    assert psf.max() == pytest.approx(1.0, abs=1e-5)
    assert dirty[128, 128] == pytest.approx(2.0, rel=0.05)
    assert len(prod["timings"]["per_rank"]) == 2
    print(f"slurm job {job}: {time.monotonic() - t0:.1f} s from sbatch to COMPLETED")


def test_broken_config_job_fails_with_nonzero_exit(cluster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("image:\n  npix: big\n")
    log = tmp_path / "bad-%j.out"
    job = cluster.sbatch(
        "--ntasks=2", f"--output={log}", CPU_TEMPLATE, bad, env=_job_env(), cwd=tmp_path
    )
    info = cluster.wait(job, timeout=180)
    out = pathlib.Path(str(log).replace("%j", str(job))).read_text()
    assert info["JobState"] == "FAILED", (info, out)
    assert info["ExitCode"] != "0:0" and info["ExitCode"].split(":")[0] != "0", info
    assert "image.npix" in out and "big" in out, out
    assert "Traceback" not in out, out
    assert not (tmp_path / "out").exists()


def test_missing_config_job_fails_before_srun(cluster, tmp_path):
    log = tmp_path / "missing-%j.out"
    job = cluster.sbatch(
        "--ntasks=1",
        f"--output={log}",
        CPU_TEMPLATE,
        tmp_path / "nope.yaml",
        env=_job_env(),
        cwd=tmp_path,
    )
    info = cluster.wait(job, timeout=120)
    out = pathlib.Path(str(log).replace("%j", str(job))).read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", (info, out)
    assert "nope.yaml" in out, out


@pytest.mark.parametrize("template", [CPU_TEMPLATE, GPU_TEMPLATE], ids=["cpu", "gpu"])
def test_templates_hard_code_nothing_site_specific(template):
    text = template.read_text()
    directives = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    for d in directives:
        assert not any(k in d for k in ("--partition", "--account", "-p ", "-A ", "--qos")), d
    assert "SLURM_CPUS_PER_TASK" in text
    assert '"${1:?' in text  # the config path is the first argument
    if template is GPU_TEMPLATE:
        assert "gridder.device=gpu" in text and "--gpus-per-task" in text
