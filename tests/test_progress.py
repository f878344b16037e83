"""radimg.progress: rank-0-only output, rate-limited batch lines, the stage/memory table."""

import io

import pytest

from radimg.progress import Progress, StageTimer, log, peak_rss_bytes, stage_table

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_batch_lines_are_rate_limited_and_final_line_printed():
    s, clk = io.StringIO(), Clock()
    with Progress(0, 100, "minor cycle", stream=s, interval_s=10, tty=False, clock=clk) as p:
        for _ in range(100):
            clk.t += 0.5  # 50 s in all: a line at most every 10 s
            p.update(1, peak="1.0 Jy")
    lines = s.getvalue().splitlines()
    assert 4 <= len(lines) <= 8, lines
    assert all(ln.startswith("[radimg] minor cycle") for ln in lines)
    assert "100/100 100%" in lines[-1] and "(done)" in lines[-1] and "peak 1.0 Jy" in lines[-1]
    assert "\r" not in s.getvalue()
    assert "ETA" in lines[1]


def test_tty_redraws_one_line_and_other_ranks_and_quiet_are_silent():
    s, clk = io.StringIO(), Clock()
    p = Progress(0, 4, "major cycle", stream=s, tty=True, interval_s=0, clock=clk)
    for _ in range(4):
        clk.t += 1
        p.update()
    p.close()
    out = s.getvalue()
    assert out.count("\n") == 1 and out.count("\r") >= 4 and "|" in out
    for rank, verbose in ((1, 1), (0, 0)):
        s2 = io.StringIO()
        with Progress(rank, 4, "x", stream=s2, verbose=verbose, tty=False) as q:
            q.update(4)
        log(rank, verbose, "hello", stream=s2)
        assert s2.getvalue() == ""


def test_stage_table_per_rank_and_summary():
    t = [{"read": 1.0, "psf": 2.0}, {"read": 3.0, "psf": 2.0}]
    text = stage_table(t, [2**30, 2 * 2**30])
    assert "rank 0" in text and "rank 1" in text and "max/mean" in text
    assert "1.50" in text.splitlines()[2]  # read: max 3 / mean 2
    assert "peak memory" in text and "2.0 GiB" in text
    many = stage_table([{"grid": float(r)} for r in range(100)], [1e9] * 100)
    assert "over 100 ranks" in many and "rank 5" not in many
    with pytest.raises(ValueError):
        stage_table(t, [1.0])


def test_stage_timer_records_time_and_peak_memory():
    st = StageTimer()
    with st.stage("a"):
        x = bytearray(20 * 2**20)
    assert st.stages["a"] >= 0 and st.peak_mem["a"] >= len(x)
    assert peak_rss_bytes() >= st.peak_mem["a"] - 1
