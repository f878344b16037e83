"""Progress and log output of a run, and the per-stage timing and peak-memory table.

Only rank 0 talks; every other rank gets objects that do nothing, so the pipeline can call the
same code on every rank without ``if comm.rank == 0`` around each line. No MPI here: callers
pass ``comm.rank`` (STYLE.md: the communicator never leaks into helpers).

Two output styles, chosen from the stream:

- interactive (``stream.isatty()``): one line redrawn in place, tqdm-like
  (``[radimg] minor cycle  430/1000  43% |#####    | 3.1 s, ETA 4.1 s``);
- batch (Slurm output files, CI logs): plain lines, at most one every ``interval_s``
  seconds (default 30, or ``RADIMG_PROGRESS_INTERVAL``), plus the final one, so a long job's
  log grows by a bounded amount and stays grep-able.

Verbosity follows the CLI: 0 quiet (errors only), 1 normal, 2 verbose (``debug`` lines).

Examples
--------
>>> with Progress(comm.rank, total=nmajor, label="major cycle", verbose=v) as p:  # doctest: +SKIP
...     for k in range(nmajor):
...         ...
...         p.update(1, peak=f"{peak:.3g} Jy")
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import TextIO

__all__ = [
    "QUIET",
    "NORMAL",
    "VERBOSE",
    "Progress",
    "StageTimer",
    "log",
    "peak_rss_bytes",
    "process_age_s",
    "records_table",
    "stage_table",
    "timings_record",
]

QUIET, NORMAL, VERBOSE = 0, 1, 2
PREFIX = "[radimg]"
DEFAULT_INTERVAL_S = 30.0
BAR_WIDTH = 24


def _interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    try:
        return max(0.0, float(os.environ.get("RADIMG_PROGRESS_INTERVAL", default)))
    except ValueError:
        return default


def _fmt_s(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def log(
    comm_rank: int, verbose: int, msg: str, *, level: int = NORMAL, stream: TextIO | None = None
) -> None:
    """Print ``[radimg] msg`` on rank 0 when ``verbose >= level`` (flushed at once, so Slurm
    output files are current)."""
    if comm_rank != 0 or verbose < level:
        return
    print(f"{PREFIX} {msg}", file=stream or sys.stdout, flush=True)


class Progress:
    """Progress of one loop (major cycles, minor iterations, chunks read) on rank 0.

    Parameters
    ----------
    comm_rank : int
        This process's rank; all ranks but 0 get a silent object.
    total : int or None
        Number of steps expected (None: unknown, no percentage or ETA).
    label : str
        What is counted, e.g. ``"major cycle"``.
    verbose : int, optional
        0 silent, 1 normal, 2 verbose (also prints a line per ``note``).
    stream : text stream, optional
        Default ``sys.stderr`` (keeps stdout for results such as the timing table).
    interval_s : float, optional
        Batch mode: least seconds between two lines (default ``RADIMG_PROGRESS_INTERVAL``
        or 30; 0, a line per step, when ``verbose`` is 2). Interactive mode redraws at most
        10 times a second.
    tty : bool, optional
        Force interactive (True) or batch (False) style; default ``stream.isatty()``.
    clock : callable, optional
        Time source (tests pass a fake clock).
    ticker : bool, optional
        For one long call that reports no steps (gridding a whole image): a daemon thread
        re-emits the line on the same schedule (batch: every ``interval_s``; terminal: the
        elapsed time redrawn twice a second), so a log shows the job is alive. It runs while
        the main thread is inside GIL-releasing code (numba ``nogil`` kernels, FFTW, MPI).
    """

    def __init__(
        self,
        comm_rank: int,
        total: int | None,
        label: str,
        *,
        verbose: int = NORMAL,
        stream: TextIO | None = None,
        interval_s: float | None = None,
        tty: bool | None = None,
        clock=time.monotonic,
        ticker: bool = False,
    ):
        self.enabled = comm_rank == 0 and verbose >= NORMAL
        self.verbose = verbose
        self.total = None if total is None else int(total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        if interval_s is None:
            # verbose batch output: a line for every step
            interval_s = 0.1 if tty else (0.0 if verbose >= VERBOSE else _interval_from_env())
        self.interval_s = float(interval_s)
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.t0 = clock()
        # time of the last line printed; a batch log's first line comes after interval_s
        # (a stage shorter than that shows only its final line)
        self._last = None if tty else self.t0
        self._closed = False
        self._width = 0
        self._final_note = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if ticker and self.enabled:
            # a batch log gets a line every interval_s (10 s when every step is shown)
            self._tick_interval = 0.0 if self.tty else (self.interval_s or 10.0)
            period = 0.5 if self.tty else max(0.05, min(self._tick_interval, 5.0))
            self._thread = threading.Thread(
                target=self._tick_loop, args=(period,), name="radimg-progress", daemon=True
            )
            self._thread.start()

    def _tick_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            now = self.clock()
            with self._lock:
                if self._closed:
                    return
                if self._last is None or now - self._last >= self._tick_interval:
                    self._emit(now, final=False)

    # ---- public -------------------------------------------------------------------------

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by ``n`` steps; ``postfix`` items (``peak="1.2 Jy"``) follow the counts."""
        self.n += n
        if postfix:
            self.postfix = ", ".join(f"{k} {v}" for k, v in postfix.items())
        if not self.enabled:
            return
        now = self.clock()
        due = self._last is None or now - self._last >= self.interval_s
        # A terminal shows 100% at once; a batch log gets the last line from close().
        if due or (self.tty and self.total is not None and self.n >= self.total):
            with self._lock:
                self._emit(now, final=False)

    def set(self, n: int, **postfix) -> None:
        """Set the count to ``n`` (for loops that know where they are, e.g. after resume)."""
        self.update(n - self.n, **postfix)

    def note(self, msg: str, level: int = VERBOSE, labelled: bool = True) -> None:
        """A line (shown from verbosity ``level``, default verbose only) that does not
        disturb the progress line; ``labelled`` puts the progress label before it."""
        if not self.enabled or self.verbose < level:
            return
        with self._lock:
            if self.tty and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
            text = f"{self.label}: {msg}" if labelled else msg
            print(f"{PREFIX} {text}", file=self.stream, flush=True)
            self._width = 0

    def close(self, note: str | None = None) -> None:
        """Print the final line (counts, elapsed time); idempotent. ``note`` replaces the
        default ``(done)``/``(stopped)`` ending, e.g. ``"(converged)"``."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._final_note = note
            if self.enabled:
                self._emit(self.clock(), final=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- formatting ---------------------------------------------------------------------

    def text(self, now: float | None = None, final: bool = False) -> str:
        """The progress line (without prefix) for the current state."""
        now = self.clock() if now is None else now
        el = now - self.t0
        if self.total:
            frac = min(1.0, self.n / self.total)
            counts = f"{self.n}/{self.total} {100 * frac:3.0f}%"
            if self.tty:
                fill = int(round(frac * BAR_WIDTH))
                counts += " |" + "#" * fill + " " * (BAR_WIDTH - fill) + "|"
            timing = _fmt_s(el)
            if not final and 0 < self.n < self.total:
                timing += f", ETA {_fmt_s(el / self.n * (self.total - self.n))}"
        else:
            counts = f"{self.n}" if self.n else ""
            timing = _fmt_s(el)
        if final:
            if self._final_note is not None:
                timing += f" {self._final_note}" if self._final_note else ""
            else:
                full = self.total is None or self.n >= self.total
                timing += " (done)" if full else " (stopped)"
        line = f"{self.label} {counts} {timing}" if counts else f"{self.label} {timing}"
        return f"{line}, {self.postfix}" if self.postfix else line

    def _emit(self, now: float, final: bool) -> None:
        line = f"{PREFIX} {self.text(now, final)}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
            self._width = 0 if final else len(line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)
        self._last = now


# --------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, bytes (``getrusage`` ``ru_maxrss``:
    KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def process_age_s() -> float | None:
    """Seconds since this process started, from the kernel's start time of the process
    (``/proc/self/stat`` field 22, clock ticks since boot, against ``/proc/uptime``; 10 ms
    resolution). None where ``/proc`` is not there (macOS)."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StageTimer:
    """Wall-clock seconds per stage, the peak RSS reached by the end of each stage, and
    numeric counters, for one rank.

    ``with t.stage("psf"): ...``; ``t.stages`` maps stage -> seconds (summed over repeats),
    ``t.peak_mem`` stage -> bytes. ``t.count(name, n)`` adds to a counter (e.g. host<->device
    bytes, major cycles) and ``t.set_counter(name, v)`` sets one; every counter becomes a row
    of :func:`stage_table` (shown in bytes when its name contains "bytes") and an entry of the
    product's ``timings_json`` (``counters_per_rank``).

    ``startup=True`` (``radimg run``) adds the stage ``start-up``: the seconds from the
    process's start to this timer's (interpreter, imports, MPI initialisation, reading the
    config), which ``total`` (from this timer's start) leaves out.
    """

    def __init__(self, clock=time.perf_counter, *, startup=False):
        self.clock = clock
        self.t0 = clock()
        self.stages: dict[str, float] = {}
        self.peak_mem: dict[str, int] = {}
        self.counters: dict[str, float] = {}
        age = process_age_s() if startup else None
        if age is not None:
            self.stages["start-up"] = age
            self.peak_mem["start-up"] = peak_rss_bytes()

    @contextmanager
    def stage(self, name: str):
        t0 = self.clock()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + self.clock() - t0
            self.peak_mem[name] = peak_rss_bytes()

    def count(self, name: str, n: float = 1) -> None:
        """Add ``n`` to the counter ``name`` (created at 0)."""
        self.counters[name] = self.counters.get(name, 0) + n

    def set_counter(self, name: str, value: float) -> None:
        """Set the counter ``name`` (for figures that are not sums, e.g. bytes per cycle)."""
        self.counters[name] = value

    def record(self) -> dict:
        """This rank's figures, JSON-able, for ``comm.gather`` and :func:`timings_record`:
        ``seconds`` (stage -> s, plus ``total`` since construction), ``peak_rss_bytes``,
        ``stage_peak_rss_bytes`` (stage -> bytes) and ``counters``."""
        seconds = dict(self.stages)
        seconds["total"] = self.clock() - self.t0
        return {
            "seconds": seconds,
            "peak_rss_bytes": peak_rss_bytes(),
            "stage_peak_rss_bytes": dict(self.peak_mem),
            "counters": dict(self.counters),
        }


def timings_record(per_rank: Sequence[Mapping]) -> dict:
    """The product's ``/run`` ``timings_json`` object from every rank's
    :meth:`StageTimer.record` (gathered on rank 0).

    Keys: ``rank0`` (stage -> s), ``per_rank`` (list of stage -> s, each with ``total`` and
    ``peak_rss_bytes``), ``peak_rss_bytes_per_rank``, ``stage_peak_rss_bytes_per_rank`` and
    ``counters_per_rank`` (list of name -> number; empty dicts when nothing was counted).
    """
    rows = []
    for r in per_rank:
        row = dict(r["seconds"])
        row["peak_rss_bytes"] = int(r["peak_rss_bytes"])
        rows.append(row)
    return {
        "unit": "s",
        "rank0": dict(per_rank[0]["seconds"]) if per_rank else {},
        "per_rank": rows,
        "peak_rss_bytes_per_rank": [int(r["peak_rss_bytes"]) for r in per_rank],
        "stage_peak_rss_bytes_per_rank": [dict(r["stage_peak_rss_bytes"]) for r in per_rank],
        "counters_per_rank": [dict(r.get("counters", {})) for r in per_rank],
    }


def records_table(per_rank: Sequence[Mapping]) -> str:
    """:func:`stage_table` of every rank's :meth:`StageTimer.record`."""
    return stage_table(
        [r["seconds"] for r in per_rank],
        [r["peak_rss_bytes"] for r in per_rank],
        [r.get("counters", {}) for r in per_rank],
    )


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``"512 B"``, ``"1.5 KiB"`` ... ``"3.0 TiB"`` (binary units, one
    decimal; the one byte formatter of radimg's logs, tables, ``plan`` and ``info``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


MAX_RANK_COLUMNS = 8


def _counter_cell(name: str, v: float) -> str:
    if "bytes" in name:
        return format_bytes(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def stage_table(
    per_rank_timings: Sequence[Mapping[str, float]],
    per_rank_peak_mem: Sequence[float] | None = None,
    per_rank_counters: Sequence[Mapping[str, float]] | None = None,
) -> str:
    """A text table of seconds per stage and rank, counters, and peak memory per rank.

    Parameters
    ----------
    per_rank_timings : sequence (rank) of mapping stage -> seconds
        From ``comm.gather(timer.stages, root=0)``. Stages are listed in first-seen order; a
        stage a rank lacks counts as 0.
    per_rank_peak_mem : sequence (rank) of float, optional
        Peak resident memory per rank, bytes (``comm.gather(peak_rss_bytes(), root=0)``).
    per_rank_counters : sequence (rank) of mapping name -> number, optional
        :attr:`StageTimer.counters` of each rank: one row per name after the stages
        (bytes when the name contains "bytes"; a counter a rank lacks counts as 0).

    Returns
    -------
    str
        Up to ``MAX_RANK_COLUMNS`` ranks: one column per rank plus ``max/mean``. Beyond that:
        ``min``, ``mean``, ``max`` and ``max/mean`` columns (thousands of ranks stay
        readable). The last row is peak memory. No trailing newline.
    """
    n = len(per_rank_timings)
    if n == 0:
        return "(no timings)"
    stages = list(dict.fromkeys(k for t in per_rank_timings for k in t))
    # kind: "s" seconds, "mem" peak memory (ruled off), "count" a counter row
    rows: list[tuple[str, list[float], str]] = [
        (s, [float(t.get(s, 0.0)) for t in per_rank_timings], "s") for s in stages
    ]
    if per_rank_counters is not None:
        if len(per_rank_counters) != n:
            raise ValueError(f"per_rank_counters has {len(per_rank_counters)} entries, timings {n}")
        names = list(dict.fromkeys(k for c in per_rank_counters for k in c))
        rows += [(c, [float(x.get(c, 0)) for x in per_rank_counters], "count") for c in names]
    if per_rank_peak_mem is not None:
        if len(per_rank_peak_mem) != n:
            raise ValueError(f"per_rank_peak_mem has {len(per_rank_peak_mem)} entries, timings {n}")
        rows.append(("peak memory", [float(m) for m in per_rank_peak_mem], "mem"))

    def cell(v: float, kind: str, name: str = "") -> str:
        if kind == "mem":
            return format_bytes(v)
        if kind == "count":
            return _counter_cell(name, v)
        return f"{v:.2f} s"

    def ratio(vals: list[float]) -> str:
        mean = sum(vals) / len(vals)
        return f"{max(vals) / mean:.2f}" if mean > 0 else "-"

    if n <= MAX_RANK_COLUMNS:
        header = ["stage", *(f"rank {r}" for r in range(n))] + (["max/mean"] if n > 1 else [])
        body = [
            [name, *(cell(v, kind, name) for v in vals)] + ([ratio(vals)] if n > 1 else [])
            for name, vals, kind in rows
        ]
    else:
        header = [f"stage (over {n} ranks)", "min", "mean", "max", "max/mean"]
        body = [
            [
                name,
                cell(min(vals), kind, name),
                cell(sum(vals) / n, kind, name),
                cell(max(vals), kind, name),
                ratio(vals),
            ]
            for name, vals, kind in rows
        ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    sep = ["-" * w for w in widths]
    lines = [fmt(header), fmt(sep)]
    prev = "s"
    for r, (_, _, kind) in zip(body, rows, strict=False):
        if kind != prev:  # rule off counters and memory from the stage seconds
            lines.append(fmt(sep))
        prev = kind
        lines.append(fmt(r))
    return "\n".join(lines)
