"""Stage *read*: each rank reads its own contiguous row range of the Measurement Set
(Stokes I, flags, weights; :func:`radimg.io.ms.read_ms`), and the ranks agree on what was
read: a failure on any rank or nothing left to image ends every rank with the same error."""

from __future__ import annotations

import warnings

import numpy as np

from radimg.pipeline.common import any_rank_error, collective_check, everywhere
from radimg.pipeline.context import Observation
from radimg.progress import Progress


def read(job) -> Observation:
    """Read this rank's rows (stage ``read``), warn about what was flagged, refuse an
    observation with no usable sample, and log the totals (collective)."""
    from radimg.io import ms as msio

    comm, in_cfg = job.comm, job.cfg["input"]
    with job.timer.stage("read"):
        meta = collective_check(
            comm, msio.ms_metadata, in_cfg["ms"], spw=in_cfg["spw"], field=in_cfg["field"],
            lock_wait_s=in_cfg["lock_wait_s"],
        )
        if meta["nrows"] == 0:
            raise everywhere(msio.MSError(f"{in_cfg['ms']}: the Measurement Set has zero rows"))
        start, stop = msio.row_ranges(meta["nrows"], comm.size)[comm.rank]
        data = _read_rows(job, start, stop)
        summary = _global_counts(comm, data)
    _warn_flagged(comm, in_cfg["ms"], summary)
    if summary["unflagged"] == 0:
        raise everywhere(msio.MSError(_nothing_to_image(in_cfg, summary)))
    n_auto = summary["autocorrelation_rows_excluded"]
    auto_note = f", {n_auto} autocorrelation rows left out" if n_auto else ""
    job.log(
        f"read {summary['samples']} samples ({summary['unflagged']} unflagged{auto_note}) "
        f"on {comm.size} rank(s)"
    )
    return Observation(meta, data, (start, stop), summary)


def _read_rows(job, start, stop):
    """Rows ``[start, stop)`` with a progress line on rank 0; a read error on any rank is
    raised on every rank."""
    from radimg.io import ms as msio

    in_cfg = job.cfg["input"]
    err, data = None, None
    prog = Progress(job.rank, stop - start, "reading rows (rank 0)", verbose=job.verbose)
    try:
        data = msio.read_ms(
            in_cfg["ms"],
            datacolumn=in_cfg["datacolumn"],
            rows=(start, stop),
            chunk_rows=in_cfg["chunk_rows"],
            spw=in_cfg["spw"],
            field=in_cfg["field"],
            precision=job.cfg["gridder"]["precision"],
            on_chunk=lambda done, total: prog.set(done),
            autocorrelations=in_cfg["autocorrelations"],
            lock_wait_s=in_cfg["lock_wait_s"],
        )
        prog.set(stop - start)
    except (ValueError, OSError) as exc:
        err = exc
    prog.close("" if err is None else "(failed)")
    job.fault_point("read")
    any_rank_error(job.comm, err)
    return data


def _global_counts(comm, data):
    """The product's ``read_json``: sample counts summed over ranks."""
    counts = comm.allreduce(
        np.array(
            [
                data.n_nonfinite_flagged,
                np.count_nonzero(data.weight),
                data.weight.size,
                data.n_autocorr_rows,
                data.n_bad_uvw_rows,
            ],
            dtype=np.int64,
        )
    )
    n_bad, n_good, n_total, n_auto, n_bad_uvw = (int(c) for c in counts)
    return {
        "samples": n_total,
        "unflagged": n_good,
        "nonfinite_flagged": n_bad,
        "autocorrelation_rows_excluded": n_auto,
        "bad_uvw_rows_flagged": n_bad_uvw,
    }


def _warn_flagged(comm, ms, summary):
    """Rank 0 warns once about the samples the reader flagged."""
    n_bad, n_bad_uvw = summary["nonfinite_flagged"], summary["bad_uvw_rows_flagged"]
    if n_bad and comm.rank == 0:
        warnings.warn(
            f"{ms}: {n_bad} visibilities or weights were NaN/Inf and have been flagged",
            stacklevel=3,
        )
    if n_bad_uvw and comm.rank == 0:
        warnings.warn(
            f"{ms}: {n_bad_uvw} cross-correlation rows have a UVW that is NaN/Inf or "
            "exactly (0, 0, 0) and have been flagged",
            stacklevel=3,
        )


def _nothing_to_image(in_cfg, summary):
    """The message of an observation with every sample flagged or of zero weight."""
    n_bad_uvw = summary["bad_uvw_rows_flagged"]
    n_auto = summary["autocorrelation_rows_excluded"]
    why = []
    if n_bad_uvw:
        why.append(f"{n_bad_uvw} rows with NaN/Inf or all-zero UVW")
    if n_auto:
        why.append(f"{n_auto} autocorrelation rows left out (input.autocorrelations)")
    return (
        f"{in_cfg['ms']}: every sample is flagged or has zero weight "
        f"(column {in_cfg['datacolumn']}, {summary['samples']} samples"
        + (f"; {', '.join(why)}" if why else "")
        + "); nothing to image"
    )
