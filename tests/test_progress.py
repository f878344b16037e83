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


def test_counters_become_rows_in_bytes_or_counts():
    t = [{"read": 1.0}, {"read": 1.0}]
    c = [{"h2d bytes": 3 * 2**20, "major cycles": 4}, {"h2d bytes": 2**20}]
    text = stage_table(t, [2**30, 2**30], c)
    lines = text.splitlines()
    h2d = next(ln for ln in lines if ln.startswith("h2d bytes"))
    assert "3.0 MiB" in h2d and "1.0 MiB" in h2d and "1.50" in h2d
    cyc = next(ln for ln in lines if ln.startswith("major cycles"))
    assert cyc.split()[2:4] == ["4", "0"]  # a rank without the counter shows 0
    # stages, counters and memory are ruled off from each other
    assert sum(1 for ln in lines if set(ln.replace(" ", "")) == {"-"}) == 3
    with pytest.raises(ValueError):
        stage_table(t, None, [{}])


def test_stage_timer_record_and_product_record():
    from radimg.progress import records_table, timings_record

    clk = Clock()
    st = StageTimer(clock=clk)
    with st.stage("psf"):
        clk.t += 2.0
    st.count("h2d bytes", 100)
    st.count("h2d bytes", 28)
    st.set_counter("major cycles", 3)
    clk.t += 1.0
    rec = st.record()
    assert rec["seconds"] == {"psf": 2.0, "total": 3.0}
    assert rec["counters"] == {"h2d bytes": 128, "major cycles": 3}
    assert rec["peak_rss_bytes"] > 0 and rec["stage_peak_rss_bytes"]["psf"] > 0
    j = timings_record([rec, rec])
    assert j["rank0"] == {"psf": 2.0, "total": 3.0}
    assert j["per_rank"][1]["total"] == 3.0 and j["per_rank"][1]["peak_rss_bytes"] > 0
    assert j["counters_per_rank"] == [rec["counters"]] * 2
    assert len(j["peak_rss_bytes_per_rank"]) == 2
    text = records_table([rec, rec])
    assert "psf" in text and "h2d bytes" in text and "peak memory" in text


def test_ticker_reports_a_long_silent_call_in_batch_lines():
    import time

    s = io.StringIO()
    with Progress(
        0, None, "gridding dirty image", stream=s, tty=False, interval_s=0.1, ticker=True
    ):
        time.sleep(0.55)
    lines = s.getvalue().splitlines()
    assert 3 <= len(lines) <= 8, lines
    assert all(ln.startswith("[radimg] gridding dirty image ") for ln in lines)
    assert lines[-1].endswith("(done)") and " 0 " not in lines[0]
    quiet = io.StringIO()
    with Progress(0, None, "x", stream=quiet, verbose=0, tty=False, interval_s=0.1, ticker=True):
        time.sleep(0.2)
    assert quiet.getvalue() == ""


def test_close_note_and_verbose_batch_prints_every_step():
    s, clk = io.StringIO(), Clock()
    p = Progress(0, 20, "major cycle", stream=s, tty=False, verbose=2, clock=clk)
    for _ in range(3):
        clk.t += 1
        p.update(1)
    p.note("peak 0.1 Jy", level=1)
    p.note("major 3: peak 0.1 Jy", level=1, labelled=False)
    p.close("(interrupted)")
    lines = s.getvalue().splitlines()
    assert len(lines) == 6, lines
    assert lines[-1].endswith("(interrupted)") and "3/20" in lines[-1]
    assert lines[3] == "[radimg] major cycle: peak 0.1 Jy"
    assert lines[4] == "[radimg] major 3: peak 0.1 Jy"
    # normal verbosity: a batch log's first line only after the interval, then the final one
    s2, clk2 = io.StringIO(), Clock()
    with Progress(0, 5, "reading rows", stream=s2, tty=False, interval_s=30, clock=clk2) as q:
        for _ in range(5):
            clk2.t += 1
            q.update(1)
    assert s2.getvalue().count("\n") == 1 and "5/5 100%" in s2.getvalue()
