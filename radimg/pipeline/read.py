"""Stage *read*: each rank reads its own contiguous row range of the selection (the
``input.*`` keys, ``image.stokes`` and ``image.phase_centre``, decided once on rank 0 by
:func:`radimg.io.ms.plan_selection`; :func:`radimg.io.ms.read_selection`), and the ranks
agree on what was read: a failure on any rank or nothing left to image (in any product or
output channel) ends every rank with the same error."""

from __future__ import annotations

import warnings

import numpy as np

from radimg.pipeline.common import any_rank_error, collective_check, config_error, everywhere
from radimg.pipeline.context import Observation
from radimg.progress import Progress


def read(job) -> Observation:
    """Read this rank's rows (stage ``read``), warn about what was flagged, refuse an
    observation with no usable sample, and log the totals (collective)."""
    from radimg.config import ms_paths
    from radimg.io import ms as msio

    comm, in_cfg, img_cfg = job.comm, job.cfg["input"], job.cfg["image"]
    with job.timer.stage("read"):
        sel = collective_check(
            comm, msio.plan_selection, in_cfg["ms"], spw=in_cfg["spw"], field=in_cfg["field"],
            chan_range=in_cfg["chan_range"], stokes=img_cfg["stokes"],
            phase_centre=img_cfg["phase_centre"], channels_out=img_cfg["channels_out"],
            datacolumn=in_cfg["datacolumn"], lock_wait_s=in_cfg["lock_wait_s"],
        )
        meta = sel.meta
        meta["output_channels"] = msio.output_channels(
            sel.freq, sel.chan_width, img_cfg["channels_out"])
        start, stop = msio.row_ranges(sel.nrows_total, comm.size)[comm.rank]
        data = _read_rows(job, sel, start, stop)
        summary = _global_counts(comm, data, meta["output_channels"])
    ms_names = ", ".join(ms_paths(in_cfg["ms"]))
    _warn_flagged(comm, ms_names, summary)
    _refuse_empty(in_cfg, img_cfg, ms_names, summary)
    n_auto = summary["autocorrelation_rows_excluded"]
    auto_note = f", {n_auto} autocorrelation rows left out" if n_auto else ""
    n_uv = summary["uv_range_flagged"]
    uv_note = f", {n_uv} outside input.uv_range_lambda" if n_uv else ""
    job.log(
        f"read {summary['samples']} samples ({summary['unflagged']} unflagged{auto_note}"
        f"{uv_note}) of {''.join(sel.stokes)} on {comm.size} rank(s)"
    )
    return Observation(meta, data, (start, stop), summary)


def _read_rows(job, sel, start, stop):
    """Rows ``[start, stop)`` with a progress line on rank 0; a read error on any rank is
    raised on every rank."""
    from radimg.io import ms as msio

    in_cfg = job.cfg["input"]
    err, data = None, None
    prog = Progress(job.rank, stop - start, "reading rows (rank 0)", verbose=job.verbose)
    try:
        data = msio.read_selection(
            sel,
            datacolumn=in_cfg["datacolumn"],
            rows=(start, stop),
            chunk_rows=in_cfg["chunk_rows"],
            precision=job.cfg["gridder"]["precision"],
            on_chunk=lambda done, total: prog.set(done),
            autocorrelations=in_cfg["autocorrelations"],
            uv_range=in_cfg["uv_range_lambda"],
            lock_wait_s=in_cfg["lock_wait_s"],
        )
        prog.set(stop - start)
    except (ValueError, OSError) as exc:
        err = exc
    prog.close("" if err is None else "(failed)")
    job.fault_point("read")
    any_rank_error(job.comm, err)
    return data


def _global_counts(comm, data, out_channels):
    """The product's ``read_json``: sample counts summed over ranks; ``unflagged_per_image``
    [product][output channel] for the check that every image has data."""
    wgt = data.weight if data.weight.ndim == 3 else data.weight[None]
    per_image = np.array(
        [[np.count_nonzero(w[:, a:b]) for a, b in (oc["chan"] for oc in out_channels)]
         for w in wgt],
        dtype=np.int64,
    )
    counts = comm.allreduce(
        np.array(
            [
                data.n_nonfinite_flagged,
                np.count_nonzero(data.weight),
                data.weight.size,
                data.n_autocorr_rows,
                data.n_bad_uvw_rows,
                data.n_uvrange_flagged,
            ],
            dtype=np.int64,
        )
    )
    per_image = comm.allreduce(per_image)
    n_bad, n_good, n_total, n_auto, n_bad_uvw, n_uv = (int(c) for c in counts)
    return {
        "samples": n_total,
        "unflagged": n_good,
        "nonfinite_flagged": n_bad,
        "autocorrelation_rows_excluded": n_auto,
        "bad_uvw_rows_flagged": n_bad_uvw,
        "uv_range_flagged": n_uv,
        "stokes": list(data.stokes),
        "unflagged_per_image": per_image.tolist(),
    }


def _refuse_empty(in_cfg, img_cfg, ms_names, summary):
    """Every rank alike: nothing to image at all, or a product / output channel without a
    single usable sample (its image would be 0/0)."""
    from radimg.io import ms as msio

    if summary["unflagged"] == 0:
        if summary["uv_range_flagged"]:
            raise everywhere(config_error(
                f"input.uv_range_lambda = {in_cfg['uv_range_lambda']}: every usable sample of "
                f"{ms_names} ({summary['uv_range_flagged']}) lies outside it; nothing to "
                "image (widen input.uv_range_lambda, in wavelengths)"
            ))
        raise everywhere(msio.MSError(_nothing_to_image(in_cfg, ms_names, summary)))
    per = np.asarray(summary["unflagged_per_image"])
    for p, k in zip(*np.nonzero(per == 0), strict=True):
        name = summary["stokes"][p]
        where = (f"output channel {k} of image.channels_out = {img_cfg['channels_out']}"
                 if per.shape[1] > 1 else "the selected channels")
        raise everywhere(msio.MSError(
            f"{ms_names}: image.stokes = {img_cfg['stokes']}: {name} has no unflagged sample "
            f"in {where} (flags, weights, input.chan_range or input.uv_range_lambda leave "
            "nothing); image other products or channels"
        ))


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


def _nothing_to_image(in_cfg, ms_names, summary):
    """The message of an observation with every sample flagged or of zero weight."""
    n_bad_uvw = summary["bad_uvw_rows_flagged"]
    n_auto = summary["autocorrelation_rows_excluded"]
    why = []
    if n_bad_uvw:
        why.append(f"{n_bad_uvw} rows with NaN/Inf or all-zero UVW")
    if n_auto:
        why.append(f"{n_auto} autocorrelation rows left out (input.autocorrelations)")
    return (
        f"{ms_names}: every sample is flagged or has zero weight "
        f"(column {in_cfg['datacolumn']}, {summary['samples']} samples"
        + (f"; {', '.join(why)}" if why else "")
        + "); nothing to image"
    )
