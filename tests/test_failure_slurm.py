"""The time-limit path under a real Slurm: the CPU template's job gets SIGUSR1 (what
``#SBATCH --signal=USR1@T`` sends before the limit; here sent at once with
``scancel --signal=USR1``) during CLEAN's major cycles; srun delivers it to the ranks, the job
ends FAILED with exit code 3 and a complete checkpoint, and a resubmitted
``cpu.sbatch CONFIG --resume`` completes with the image of an uninterrupted run.
"""

import pathlib
import time

import numpy as np
import pytest
from failure_util import failure_config, temporaries
from test_failure import _same, obs  # noqa: F401 - fixture
from test_slurm import CPU_TEMPLATE, GPU_TEMPLATE, _job_env, cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("template", [CPU_TEMPLATE, GPU_TEMPLATE], ids=["cpu", "gpu"])
def test_templates_ask_for_an_early_warning_signal(template):
    lines = template.read_text().splitlines()
    assert any(ln.startswith("#SBATCH --signal=USR1@") for ln in lines)
    # the ranks are srun's tasks (exec srun), so the signal reaches radimg itself
    assert any(ln.startswith("exec srun ") for ln in lines)


def test_usr1_to_the_job_checkpoints_exits_3_and_resume_completes(cluster, obs, tmp_path):  # noqa: F811
    from radimg.deconv.checkpoint import read_checkpoint
    from radimg.io.product import read_product

    out = tmp_path / "out" / "run.h5"
    ckpt = pathlib.Path(str(out) + ".ckpt.h5")
    cfg = failure_config(tmp_path, obs["ms"], out)
    env = _job_env()
    env["RADIMG_FAULT_INJECT"] = "rank=all,stage=major,sleep=1.5"  # slow major cycles
    log = tmp_path / "job-%j.out"
    job = cluster.sbatch(
        "--ntasks=2", "--time=00:10:00", f"--output={log}", CPU_TEMPLATE, cfg, env=env, cwd=tmp_path
    )
    t0 = time.monotonic()
    while not ckpt.exists():
        state = cluster.job(job).get("JobState")
        if state not in (None, "PENDING", "RUNNING", "CONFIGURING"):
            text = pathlib.Path(str(log).replace("%j", str(job))).read_text()
            pytest.fail(f"job ended ({state}) before its first checkpoint\n{text}")
        assert time.monotonic() - t0 < 240, "no checkpoint within 240 s"
        time.sleep(0.2)
    r = cluster._cmd("scancel", "--signal=USR1", str(job))
    assert r.returncode == 0, r.stderr
    info = cluster.wait(job, timeout=180)
    text = pathlib.Path(str(log).replace("%j", str(job))).read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "3:0", (info, text)
    assert "SIGUSR1" in text and "--resume" in text, text
    assert not out.exists() and temporaries(out.parent) == []
    c = read_checkpoint(ckpt)["counters"]
    assert not c["done"] and 1 <= c["nmajor"] < obs["nmajor"], c

    log2 = tmp_path / "resume-%j.out"
    job2 = cluster.sbatch(
        "--ntasks=2",
        "--time=00:10:00",
        f"--output={log2}",
        CPU_TEMPLATE,
        cfg,
        "--resume",
        env=_job_env(),
        cwd=tmp_path,
    )
    info = cluster.wait(job2, timeout=300)
    text = pathlib.Path(str(log2).replace("%j", str(job2))).read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, text)
    _same(read_product(out)["images"], obs["ref"])
    assert np.isfinite(read_product(out)["images"]["restored"]).all()
