"""The pipeline package's shape (issue #14 item 3) and its shared deconvolution loop helper.

End-to-end behaviour (products, logs, exit statuses) is pinned by test_pipeline.py,
test_deconv_pipeline.py, test_deconv_stop.py, test_failure*.py and the bad-input matrix;
these tests hold what those cannot see: the operator's distribution chosen in one place and
MajorLoop's checkpoint-at-interrupt rule (every function readable in one screen is
tests/test_function_length.py, for all of radimg/).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.unit

PIPELINE = pathlib.Path(__file__).resolve().parents[1] / "radimg" / "pipeline"


def test_operator_distribution_is_chosen_in_the_factory_only():
    """Only radimg/pipeline/operator.py builds operators or branches on the device: the
    other stages use the backend interface."""
    builders = ("DistributedOperator", "make_operator", "small_inversion", "use_gpu",
                "resident")
    found = []
    for path in sorted(PIPELINE.glob("*.py")):
        if path.name in ("operator.py", "context.py", "preflight.py"):
            continue  # the factory; Job.use_gpu's definition; the GPU check at start-up
        text = path.read_text()
        found += [f"{path.name}: {name}" for name in builders if name in text]
    assert not found, found


def test_backends_implement_the_whole_interface():
    from radimg.pipeline.operator import DistributedBackend, GpuDistributedBackend, ImagingBackend

    assert ImagingBackend.__abstractmethods__ >= {
        "psf", "dirty", "residual", "whiten", "forward_whitened", "adjoint_whitened"}
    for cls in (DistributedBackend, GpuDistributedBackend):
        assert not cls.__abstractmethods__, cls
        assert cls.scheme == "balanced"


def test_public_names():
    import radimg.pipeline as pipeline

    assert pipeline.EXIT_INTERRUPTED == pipeline.JobInterrupted.exit_code == 3
    for name in ("run", "JobInterrupted", "FAULT_ENV", "image_shape", "threads_per_rank"):
        assert hasattr(pipeline, name), name


# ---------------------------------------------------------------------------- MajorLoop
class _Comm:
    rank, size = 0, 1


class _Signals:
    def signal_name(self):
        return "SIGTERM"

    def stop_requested(self):
        return False


def _loop(monkeypatch, tmp_path, checkpoint=True):
    """A MajorLoop on a one-rank job whose checkpoint writes are recorded, not made."""
    import radimg.deconv.checkpoint as ckpt
    from radimg.pipeline.context import Job
    from radimg.pipeline.deconvolve import MajorLoop
    from radimg.progress import StageTimer

    written = []
    monkeypatch.setattr(ckpt, "write_checkpoint",
                        lambda comm, path, **kw: written.append((path, kw["counters"])))
    cfg = {"deconvolution": {"stop_after_major": 0}, "output": {"checkpoint": checkpoint}}
    job = Job(_Comm(), cfg, False, 0, StageTimer(), _Signals(), str(tmp_path / "x.ckpt.h5"))
    loop = MajorLoop(job, {}, label="step", total=10, done=0, counter="steps",
                     contents=lambda st: {"image": np.zeros((2, 2)), "counters": dict(st)},
                     position=lambda st: st["n"])
    return loop, written, job


def test_major_loop_interrupt_completes_the_checkpoint_then_raises(monkeypatch, tmp_path):
    from radimg.pipeline.common import JobInterrupted

    loop, written, job = _loop(monkeypatch, tmp_path)
    loop.on_checkpoint({"n": 1})
    assert [c["n"] for _, c in written] == [1]
    with pytest.raises(JobInterrupted) as info:
        loop.finish({"n": 2, "interrupted": True}, "step 2")
    assert [c["n"] for _, c in written] == [1, 2]  # the state at the stop, written once
    assert info.value.checkpoint == job.checkpoint_path
    assert info.value.signal_name == "SIGTERM" and "after step 2" in str(info.value)
    assert job.timer.stages["checkpoint"] >= 0.0


def test_major_loop_does_not_rewrite_the_checkpoint_it_holds(monkeypatch, tmp_path):
    from radimg.pipeline.common import JobInterrupted

    loop, written, _ = _loop(monkeypatch, tmp_path)
    loop.on_checkpoint({"n": 3})
    with pytest.raises(JobInterrupted):
        loop.finish({"n": 3, "interrupted": True}, "step 3")
    assert len(written) == 1


def test_major_loop_without_checkpoints_writes_one_only_at_a_stop(monkeypatch, tmp_path):
    from radimg.pipeline.common import JobInterrupted

    loop, written, job = _loop(monkeypatch, tmp_path, checkpoint=False)
    for n in range(3):
        loop.step_begins()
        loop.step_done()
        loop.on_checkpoint({"n": n})
    assert written == [] and job.timer.counters["steps"] == 3
    loop.finish({"n": 2, "stopped": True}, "step 2")  # stopped early, no signal: no raise
    assert written == []
    with pytest.raises(JobInterrupted):
        loop.finish({"n": 2, "interrupted": True}, "step 2")
    assert len(written) == 1
