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
    "stage_table",
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
        or 30). Interactive mode redraws at most 10 times a second.
    tty : bool, optional
        Force interactive (True) or batch (False) style; default ``stream.isatty()``.
    clock : callable, optional
        Time source (tests pass a fake clock).
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
        self.interval_s = (
            (0.1 if tty else _interval_from_env()) if interval_s is None else float(interval_s)
        )
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.t0 = clock()
        self._last = None  # time of the last line printed
        self._closed = False
        self._width = 0

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
        if due or (self.total is not None and self.n >= self.total):
            self._emit(now, final=False)

    def set(self, n: int, **postfix) -> None:
        """Set the count to ``n`` (for loops that know where they are, e.g. after resume)."""
        self.update(n - self.n, **postfix)

    def note(self, msg: str) -> None:
        """A verbose-only line that does not disturb the progress line."""
        if not self.enabled or self.verbose < VERBOSE:
            return
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
        print(f"{PREFIX} {self.label}: {msg}", file=self.stream, flush=True)
        self._width = 0

    def close(self) -> None:
        """Print the final line (counts, elapsed time); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._emit(self.clock(), final=True)

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
            counts = f"{self.n}"
            timing = _fmt_s(el)
        if final:
            timing += " (done)" if self.total is None or self.n >= self.total else " (stopped)"
        line = f"{self.label} {counts} {timing}"
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


class StageTimer:
    """Wall-clock seconds per stage and the peak RSS reached by the end of each stage.

    A drop-in for the pipeline's ``Timer``: ``with t.stage("psf"): ...``; ``t.stages`` maps
    stage -> seconds (summed over repeats), ``t.peak_mem`` stage -> bytes.
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.stages: dict[str, float] = {}
        self.peak_mem: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = self.clock()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + self.clock() - t0
            self.peak_mem[name] = peak_rss_bytes()


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


MAX_RANK_COLUMNS = 8


def stage_table(
    per_rank_timings: Sequence[Mapping[str, float]],
    per_rank_peak_mem: Sequence[float] | None = None,
) -> str:
    """A text table of seconds per stage and rank, and peak memory per rank.

    Parameters
    ----------
    per_rank_timings : sequence (rank) of mapping stage -> seconds
        From ``comm.gather(timer.stages, root=0)``. Stages are listed in first-seen order; a
        stage a rank lacks counts as 0.
    per_rank_peak_mem : sequence (rank) of float, optional
        Peak resident memory per rank, bytes (``comm.gather(peak_rss_bytes(), root=0)``).

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
    rows: list[tuple[str, list[float], bool]] = [
        (s, [float(t.get(s, 0.0)) for t in per_rank_timings], False) for s in stages
    ]
    if per_rank_peak_mem is not None:
        if len(per_rank_peak_mem) != n:
            raise ValueError(f"per_rank_peak_mem has {len(per_rank_peak_mem)} entries, timings {n}")
        rows.append(("peak memory", [float(m) for m in per_rank_peak_mem], True))

    def cell(v: float, mem: bool) -> str:
        return _human_bytes(v) if mem else f"{v:.2f} s"

    def ratio(vals: list[float]) -> str:
        mean = sum(vals) / len(vals)
        return f"{max(vals) / mean:.2f}" if mean > 0 else "-"

    if n <= MAX_RANK_COLUMNS:
        header = ["stage", *(f"rank {r}" for r in range(n))] + (["max/mean"] if n > 1 else [])
        body = [
            [name, *(cell(v, mem) for v in vals)] + ([ratio(vals)] if n > 1 else [])
            for name, vals, mem in rows
        ]
    else:
        header = [f"stage (over {n} ranks)", "min", "mean", "max", "max/mean"]
        body = [
            [
                name,
                cell(min(vals), mem),
                cell(sum(vals) / n, mem),
                cell(max(vals), mem),
                ratio(vals),
            ]
            for name, vals, mem in rows
        ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    sep = ["-" * w for w in widths]
    lines = [fmt(header), fmt(sep)]
    for r, (_, _, mem) in zip(body, rows, strict=False):
        if mem:
            lines.append(fmt(sep))
        lines.append(fmt(r))
    return "\n".join(lines)
