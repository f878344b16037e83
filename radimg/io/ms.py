"""Measurement Set reader: Stokes I visibilities, flags and weights of one row range.

The MS is opened read-only and read in chunks of ``chunk_rows`` rows, so memory stays bounded
by the size of the returned arrays plus one chunk. Every rank of an SPMD job reads its own
contiguous row range (``row_ranges``); conventions (units, Stokes I, weights of flagged
samples) are those of ``docs/internals.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# casacore CORR_TYPE codes (casacore Stokes.h) of the parallel hands that make Stokes I.
CORR_NAMES = {
    1: "I", 2: "Q", 3: "U", 4: "V",
    5: "RR", 6: "RL", 7: "LR", 8: "LL",
    9: "XX", 10: "XY", 11: "YX", 12: "YY",
}  # fmt: skip
_PARALLEL_PAIRS = ((9, 12), (5, 8))
_PARALLEL = (9, 12, 5, 8)
_STOKES_I = 1

# Columns the reader needs besides the data column; a table without them is not an MS.
_REQUIRED = ("UVW", "FLAG", "WEIGHT", "DATA_DESC_ID", "FIELD_ID", "ANTENNA1", "ANTENNA2", "TIME")


class MSError(ValueError):
    """A Measurement Set is missing, malformed, or does not hold what was asked for."""


@dataclass
class VisData:
    """Stokes I visibilities of one row range (see ``docs/internals.md``).

    Attributes
    ----------
    uvw : ndarray (row, 3), float64
        Baseline coordinates in metres, straight from the UVW column.
    freq : ndarray (chan,), float64
        Channel frequencies, Hz.
    vis : ndarray (row, chan), complex64 | complex128
        Stokes I; 0 where flagged.
    weight : ndarray (row, chan), float32 | float64
        Stokes I weights; 0 where flagged, where the data or weights were NaN/Inf, or negative.
    phase_centre : tuple of float
        ``(ra, dec)`` of the FIELD's PHASE_DIR, radians.
    nrows_total : int
        Rows in the main table (all spectral windows and fields), for ``row_ranges``.
    n_nonfinite_flagged : int
        Samples (row, chan) that were otherwise usable but had NaN/Inf data or weights and
        were flagged here; the caller warns (summed over ranks).
    """

    uvw: np.ndarray
    freq: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    phase_centre: tuple
    nrows_total: int
    n_nonfinite_flagged: int = 0


def row_ranges(nrows: int, size: int) -> list[tuple[int, int]]:
    """Split ``nrows`` rows into ``size`` contiguous, balanced ``(start, stop)`` ranges.

    The first ``nrows % size`` ranges hold one row more than the others (mpi4py-fft
    ``_blockdist``); ranges are empty (``start == stop``) when ``size > nrows``.

    Parameters
    ----------
    nrows : int
        Number of rows, >= 0.
    size : int
        Number of ranges (ranks), >= 1.

    Returns
    -------
    list of (int, int)
        ``size`` half-open ranges that tile ``[0, nrows)`` in order.
    """
    nrows, size = int(nrows), int(size)
    if nrows < 0:
        raise ValueError(f"nrows must be >= 0, got {nrows}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    q, r = divmod(nrows, size)
    out, start = [], 0
    for i in range(size):
        stop = start + q + (1 if i < r else 0)
        out.append((start, stop))
        start = stop
    return out


# --------------------------------------------------------------------------------------
# Opening and metadata
# --------------------------------------------------------------------------------------


def _open(path, sub=None):
    """Open the MS (or one of its subtables) read-only, turning casacore errors into MSError."""
    from casacore.tables import table

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MSError(f"{path}: no such Measurement Set (path does not exist)")
    full = path if sub is None else os.path.join(path, sub)
    if sub is not None and not os.path.isdir(full):
        raise MSError(f"{path}: not a Measurement Set (it has no {sub} subtable)")
    try:
        return table(full, ack=False, readonly=True)
    except RuntimeError as exc:
        what = "a casacore table" if sub is None else f"a readable {sub} subtable"
        raise MSError(f"{full}: not a Measurement Set (not {what}: {exc})") from None


def _check_main(path, t):
    cols = t.colnames()
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise MSError(
            f"{os.fspath(path)}: not a Measurement Set: the main table lacks the column(s) "
            f"{', '.join(missing)} (it has: {', '.join(cols) or 'none'})"
        )
    return cols


def _data_columns(t):
    """Complex array columns of the main table (the candidates for ``datacolumn``)."""
    out = []
    for c in t.colnames():
        try:
            desc = t.getcoldesc(c)
        except RuntimeError:
            continue
        if desc.get("valueType") in ("complex", "dcomplex") and "ndim" in desc:
            out.append(c)
    return out


def _spw_info(path, spw):
    s = _open(path, "SPECTRAL_WINDOW")
    try:
        n = s.nrows()
        if not 0 <= spw < n:
            raise MSError(
                f"{os.fspath(path)}: spectral window {spw} out of range "
                f"(SPECTRAL_WINDOW has {n} row(s): 0..{n - 1})"
            )
        freq = np.asarray(s.getcell("CHAN_FREQ", spw), dtype=np.float64)
        width = np.asarray(s.getcell("CHAN_WIDTH", spw), dtype=np.float64)
        return freq, width
    finally:
        s.close()


def _field_centre(path, field):
    f = _open(path, "FIELD")
    try:
        n = f.nrows()
        if not 0 <= field < n:
            raise MSError(
                f"{os.fspath(path)}: field {field} out of range (FIELD has {n} row(s): 0..{n - 1})"
            )
        # PHASE_DIR is (npoly + 1, 2); the zeroth-order term is the phase centre.
        pd = np.asarray(f.getcell("PHASE_DIR", field), dtype=np.float64).reshape(-1, 2)[0]
        name = str(f.getcell("NAME", field)) if "NAME" in f.colnames() else ""
        try:
            frame = f.getcolkeyword("PHASE_DIR", "MEASINFO")["Ref"]
        except (RuntimeError, KeyError, TypeError):
            frame = "J2000"
        return (float(pd[0]), float(pd[1])), name, frame
    finally:
        f.close()


def _ddid_map(path, spw):
    """DATA_DESC_ID -> (spw, polarization id) and the POLARIZATION CORR_TYPE lists."""
    dd = _open(path, "DATA_DESCRIPTION")
    try:
        n = dd.nrows()
        spws = np.asarray(dd.getcol("SPECTRAL_WINDOW_ID") if n else [], dtype=np.int64)
        pols = np.asarray(dd.getcol("POLARIZATION_ID") if n else [], dtype=np.int64)
    finally:
        dd.close()
    p = _open(path, "POLARIZATION")
    try:
        corr = [
            [int(c) for c in np.asarray(p.getcell("CORR_TYPE", r)).ravel()]
            for r in range(p.nrows())
        ]
    finally:
        p.close()
    ddids = [int(d) for d in np.nonzero(spws == spw)[0]]
    return ddids, {d: corr[pols[d]] for d in ddids if 0 <= pols[d] < len(corr)}


def _stokes_i_plan(path, corr_types):
    """Indices of the correlations that make Stokes I, or raise MSError if none do."""
    for a, b in _PARALLEL_PAIRS:
        if a in corr_types and b in corr_types:
            return [corr_types.index(a), corr_types.index(b)]
    for c in (_STOKES_I, *_PARALLEL):
        if c in corr_types:
            # One parallel hand (or Stokes I itself) is the best estimate of I there is.
            return [corr_types.index(c)]
    names = [CORR_NAMES.get(c, str(c)) for c in corr_types]
    raise MSError(
        f"{os.fspath(path)}: no correlation that makes Stokes I: POLARIZATION CORR_TYPE holds "
        f"{names}; expected XX and/or YY, RR and/or LL, or I"
    )


def ms_metadata(path, spw: int = 0, field: int = 0) -> dict:
    """Cheap summary of a Measurement Set (reads no visibilities).

    Parameters
    ----------
    path : str or path-like
        The MS directory.
    spw, field : int
        Spectral window and field that ``read_ms`` would select.

    Returns
    -------
    dict
        ``nrows`` (rows of the main table), ``freq`` ndarray (chan,) float64 Hz,
        ``chan_width`` ndarray (chan,) float64 Hz, ``phase_centre`` (ra, dec) radians,
        ``phase_centre_frame`` (e.g. "J2000"), ``field_name``, ``corr_types`` list of int
        (CASA codes) of the first data description of ``spw``, ``corr_names``, ``columns``
        (main-table columns), ``data_columns`` (complex array columns), ``telescope``,
        ``n_spw``, ``n_field``, ``has_weight_spectrum``.

    Raises
    ------
    MSError
        Missing path, not an MS, zero rows, or spw/field out of range.
    """
    t = _open(path)
    try:
        cols = _check_main(path, t)
        nrows = t.nrows()
        dcols = _data_columns(t)
    finally:
        t.close()
    if nrows == 0:
        raise MSError(f"{os.fspath(path)}: the Measurement Set has zero rows")
    freq, width = _spw_info(path, spw)
    centre, name, frame = _field_centre(path, field)
    ddids, corr = _ddid_map(path, spw)
    s, f = _open(path, "SPECTRAL_WINDOW"), _open(path, "FIELD")
    n_spw, n_field = s.nrows(), f.nrows()
    s.close()
    f.close()
    telescope = ""
    if os.path.isdir(os.path.join(os.fspath(path), "OBSERVATION")):
        o = _open(path, "OBSERVATION")
        try:
            if o.nrows() and "TELESCOPE_NAME" in o.colnames():
                telescope = str(o.getcell("TELESCOPE_NAME", 0))
        finally:
            o.close()
    corr_types = corr[ddids[0]] if ddids else []
    return {
        "nrows": int(nrows),
        "freq": freq,
        "chan_width": width,
        "phase_centre": centre,
        "phase_centre_frame": frame,
        "field_name": name,
        "corr_types": corr_types,
        "corr_names": [CORR_NAMES.get(c, str(c)) for c in corr_types],
        "columns": cols,
        "data_columns": dcols,
        "telescope": telescope,
        "n_spw": int(n_spw),
        "n_field": int(n_field),
        "has_weight_spectrum": "WEIGHT_SPECTRUM" in cols,
    }


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _stokes_i(data, flag, wspec, idx, cdtype, fdtype):
    """Stokes I, weight and the count of newly flagged non-finite samples of one chunk.

    data : (row, chan, corr) complex; flag : (row, chan, corr) bool;
    wspec : (row, chan, corr) float (weights per correlation, broadcast when from WEIGHT).
    """
    d = data[:, :, idx].astype(np.result_type(data.dtype, cdtype), copy=False)
    w = wspec[:, :, idx].astype(np.float64, copy=False)
    fl = np.any(flag[:, :, idx], axis=2)
    finite = np.all(np.isfinite(d), axis=2) & np.all(np.isfinite(w), axis=2)
    bad = ~finite
    n_bad = int(np.count_nonzero(bad & ~fl))
    w = np.where(finite[:, :, None], w, 0.0)
    d = np.where(finite[:, :, None], d, 0.0)
    if len(idx) == 2:
        vis = 0.5 * (d[:, :, 0] + d[:, :, 1])
        w1, w2 = w[:, :, 0], w[:, :, 1]
        ok = (w1 > 0) & (w2 > 0)
        # I = (A + B) / 2 has variance (1/w1 + 1/w2) / 4, hence weight 4 / (1/w1 + 1/w2).
        wi = np.zeros_like(w1)
        np.divide(4.0 * w1 * w2, w1 + w2, out=wi, where=ok)
    else:
        vis = d[:, :, 0]
        wi = np.where(w[:, :, 0] > 0, w[:, :, 0], 0.0)
    wi[fl | bad] = 0.0
    vis = np.where(wi > 0, vis, 0.0)
    return vis.astype(cdtype), wi.astype(fdtype), n_bad


def _use_weight_spectrum(t, cols, nchan, ncorr):
    """WEIGHT_SPECTRUM is used when present, defined and shaped like the data (decided once
    per file from row 0, so every rank makes the same choice)."""
    if "WEIGHT_SPECTRUM" not in cols:
        return False
    try:
        if not t.iscelldefined("WEIGHT_SPECTRUM", 0):
            return False
        return tuple(t.getcell("WEIGHT_SPECTRUM", 0).shape) == (nchan, ncorr)
    except RuntimeError:
        return False


def _read_ms(
    path,
    datacolumn: str = "DATA",
    rows=None,
    chunk_rows: int = 100_000,
    spw: int = 0,
    field: int = 0,
    precision: str = "single",
    on_chunk=None,
) -> VisData:
    """Read Stokes I visibilities, weights and uvw of one row range of a Measurement Set.

    Only rows of the given spectral window (via DATA_DESCRIPTION) and field are returned.
    FLAG and FLAG_ROW are honoured; WEIGHT_SPECTRUM is used when present and valid, else
    WEIGHT broadcast over channels. Stokes I is ``(XX+YY)/2`` or ``(RR+LL)/2`` with weight
    ``4/(1/w1 + 1/w2)``, or the single parallel hand; a sample is flagged if any correlation
    used is. NaN/Inf data or weights are flagged and counted. The MS is never modified.

    Parameters
    ----------
    path : str or path-like
        The MS directory.
    datacolumn : str
        Complex data column, e.g. "DATA", "CORRECTED_DATA", "MODEL_DATA".
    rows : (int, int), optional
        Half-open range ``(start, stop)`` of main-table rows; all rows when omitted.
    chunk_rows : int
        Rows read per casacore call (bounds the temporary memory).
    spw, field : int
        Spectral window and field to select.
    precision : {"single", "double"}
        complex64/float32 or complex128/float64 output.
    on_chunk : callable(rows_done, rows_in_range), optional
        Called before each chunk is read (progress reporting).

    Returns
    -------
    VisData
        ``vis`` and ``weight`` (row, chan) for the selected rows of the range, in MS order.

    Raises
    ------
    MSError
        Missing path, not an MS, data column absent, zero rows, spw/field out of range, or
        no correlation that makes Stokes I.
    """
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    cdtype, fdtype = (
        (np.complex64, np.float32) if precision == "single" else (np.complex128, np.float64)
    )
    chunk_rows = max(1, int(chunk_rows))
    spath = os.fspath(path)
    t = _open(path)  # the main table first: "not an MS" beats any subtable complaint
    try:
        _check_main(path, t)
    finally:
        t.close()
    freq, _ = _spw_info(path, spw)
    centre, _, _ = _field_centre(path, field)
    ddids, corr = _ddid_map(path, spw)
    plans = {d: _stokes_i_plan(path, corr[d]) for d in ddids if d in corr}
    nchan = freq.size

    t = _open(path)
    try:
        cols = _check_main(path, t)
        if datacolumn not in cols:
            raise MSError(
                f"{spath}: data column {datacolumn!r} not found; the data columns present are "
                f"{', '.join(_data_columns(t)) or 'none'}"
            )
        nrows_total = t.nrows()
        if nrows_total == 0:
            raise MSError(f"{spath}: the Measurement Set has zero rows")
        start, stop = (0, nrows_total) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= start <= stop <= nrows_total:
            raise ValueError(f"rows {rows} outside the {nrows_total} rows of {spath}")
        has_flag_row = "FLAG_ROW" in cols

        uvw_parts, vis_parts, wgt_parts = [], [], []
        n_bad = 0
        ws_checked = {}
        for a in range(start, stop, chunk_rows):
            if on_chunk is not None:
                on_chunk(a - start, stop - start)
            n = min(chunk_rows, stop - a)
            ddid = t.getcol("DATA_DESC_ID", a, n)
            fid = t.getcol("FIELD_ID", a, n)
            sel = np.isin(ddid, ddids) & (fid == field)
            if not sel.any():
                continue
            # Rows of several ddids (or spws of other shapes) interleave; read the selection
            # as a reference table when it is not the whole chunk.
            pieces = []
            for d in np.unique(ddid[sel]):
                if d not in plans:
                    raise MSError(f"{spath}: DATA_DESC_ID {d} has no valid POLARIZATION row")
                rsel = np.nonzero(sel & (ddid == d))[0]
                if rsel.size == n:
                    sub, s0, sn = t, a, n
                else:
                    sub, s0, sn = t.selectrows((a + rsel).tolist()), 0, rsel.size
                try:
                    data = sub.getcol(datacolumn, s0, sn)
                    ncorr = data.shape[2]
                    if data.shape[1] != nchan:
                        raise MSError(
                            f"{spath}: column {datacolumn} has {data.shape[1]} channels but "
                            f"spectral window {spw} has {nchan}"
                        )
                    flag = sub.getcol("FLAG", s0, sn)
                    if has_flag_row:
                        flag = flag | sub.getcol("FLAG_ROW", s0, sn)[:, None, None]
                    if d not in ws_checked:
                        ws_checked[d] = _use_weight_spectrum(t, cols, nchan, ncorr)
                    wspec = None
                    if ws_checked[d]:
                        try:
                            wspec = sub.getcol("WEIGHT_SPECTRUM", s0, sn)
                        except RuntimeError:
                            wspec = None  # cells undefined in this chunk: fall back to WEIGHT
                    if wspec is None:
                        w = sub.getcol("WEIGHT", s0, sn).reshape(sn, 1, -1)
                        wspec = np.broadcast_to(w, (sn, nchan, w.shape[2]))
                    uvw = sub.getcol("UVW", s0, sn).astype(np.float64, copy=False)
                finally:
                    if sub is not t:
                        sub.close()
                vis, wgt, nb = _stokes_i(data, flag, wspec, plans[d], cdtype, fdtype)
                n_bad += nb
                pieces.append((rsel, uvw, vis, wgt))
            if len(pieces) == 1:
                _, uvw, vis, wgt = pieces[0]
            else:
                # Put the rows of the different data descriptions back in MS order.
                order = np.argsort(np.concatenate([p[0] for p in pieces]), kind="stable")
                uvw, vis, wgt = (np.concatenate([p[k] for p in pieces])[order] for k in (1, 2, 3))
            uvw_parts.append(uvw)
            vis_parts.append(vis)
            wgt_parts.append(wgt)
    finally:
        t.close()

    uvw = _concat(uvw_parts, (0, 3), np.float64)
    vis = _concat(vis_parts, (0, nchan), cdtype)
    wgt = _concat(wgt_parts, (0, nchan), fdtype)
    return VisData(
        uvw=uvw,
        freq=freq,
        vis=vis,
        weight=wgt,
        phase_centre=centre,
        nrows_total=int(nrows_total),
        n_nonfinite_flagged=int(n_bad),
    )


def _concat(parts, empty_shape, dtype):
    if not parts:
        return np.zeros(empty_shape, dtype=dtype)
    return np.ascontiguousarray(np.concatenate(parts), dtype=dtype)


def count_unflagged(data: VisData) -> int:
    """Number of samples (row, chan) with non-zero weight on this rank.

    The "all data flagged" check is collective: the caller sums this over ranks (Allreduce)
    and stops when the total is 0.
    """
    return int(np.count_nonzero(data.weight))


def read_ms(path, *args, **kwargs) -> VisData:
    """Read this rank's rows of a Measurement Set (see :func:`_read_ms` for the arguments).

    casacore reports damaged tables (truncated or corrupt storage files) as RuntimeError
    from deep inside a column read; that becomes an :class:`MSError` naming the MS.
    """
    try:
        return _read_ms(path, *args, **kwargs)
    except RuntimeError as exc:
        raise MSError(
            f"{path}: casacore could not read the Measurement Set ({exc}); the table is "
            "probably truncated or corrupt"
        ) from exc


read_ms.__doc__ = (read_ms.__doc__ or "") + "\n" + (_read_ms.__doc__ or "")
