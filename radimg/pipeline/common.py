"""What every stage of the pipeline shares: the exit status and exception of an interrupted
run, the test-only fault points, and the collective error helpers.

User errors (bad config, bad MS, unwritable output) are detected collectively and raised as
the same exception on every rank, so the CLI can exit cleanly with status 2 everywhere; the
helpers here are the pipeline's names for :mod:`radimg.parallel.mpi`'s (which owns the
communication).
"""

from __future__ import annotations

import os
import time

from radimg.progress import log as progress_log

#: Exit status of a run stopped by SIGTERM/SIGUSR1 after writing a checkpoint (cli.py).
EXIT_INTERRUPTED = 3

#: Test-only fault injection (tests/test_failure.py), e.g. "rank=1,stage=dirty" (raise
#: RuntimeError; "error=NotImplementedError" for that type) or "rank=all,stage=major,sleep=1.5"
#: (slow every major cycle). Never set it in production.
FAULT_ENV = "RADIMG_FAULT_INJECT"


def fault_point(rank, stage):
    """Raise (or sleep) here when :data:`FAULT_ENV` names this rank and stage."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kv = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if kv.get("stage") != stage or kv.get("rank", "all") not in ("all", str(rank)):
        return
    if "sleep" in kv:
        time.sleep(float(kv["sleep"]))
        return
    error = {"NotImplementedError": NotImplementedError}.get(kv.get("error"), RuntimeError)
    raise error(
        f"{FAULT_ENV}: injected fault on rank {rank} at stage {stage!r} (t={time.time():.3f})"
    )


class JobInterrupted(Exception):
    """A stop signal ended the run after a complete checkpoint (every rank raises it).

    ``signal_name``, ``checkpoint`` (path), ``exit_code`` (:data:`EXIT_INTERRUPTED`) and
    ``rank`` (the CLI prints the message on rank 0 only).
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message, *, signal_name, checkpoint, rank):
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        self.rank = rank


def log(comm, verbose, msg):
    """One ``[radimg]`` line on rank 0 (:func:`radimg.progress.log`)."""
    progress_log(comm.rank, verbose, msg)


def collective_check(comm, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 and return its result on every rank; a user error it raises is
    raised on every rank (:func:`radimg.parallel.mpi.check_on_root`)."""
    from radimg.parallel.mpi import check_on_root

    return check_on_root(comm, fn, *args, **kwargs)


def any_rank_error(comm, exc):
    """Collective: if any rank saw a user error (``exc`` not None), raise the first one
    everywhere."""
    from radimg.parallel.mpi import raise_from_any_rank

    raise_from_any_rank(comm, exc)


def agreed(comm, build):
    """``build()`` on every rank; a user error it raises (a geometry the config cannot
    have, decided from globally reduced values, so every rank raises it at the same point)
    ends every rank with the first rank's error instead of leaving the others waiting."""
    from radimg.config import ConfigError

    err = result = None
    try:
        result = build()
    except ConfigError as exc:
        err = exc
    any_rank_error(comm, err)
    return result


def everywhere(exc):
    """A user error that every rank raises alike (decided from replicated data)."""
    from radimg.parallel.mpi import everywhere as _everywhere

    return _everywhere(exc)


def config_error(msg):
    """A :class:`radimg.config.ConfigError` (imported late: ``radimg --help`` stays light)."""
    from radimg.config import ConfigError

    return ConfigError(msg)


def user_errors():
    """Exceptions raised collectively (the same on every rank): they may propagate to the
    CLI on every rank without any rank left waiting."""
    from radimg.config import ConfigError
    from radimg.io.ms import MSError
    from radimg.io.product import ProductError

    return (
        JobInterrupted,
        ConfigError,
        MSError,
        ProductError,
        FileExistsError,
        FileNotFoundError,
        PermissionError,
        NotADirectoryError,
        NotImplementedError,
    )
