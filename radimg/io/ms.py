"""Measurement Set reader: Stokes I visibilities, flags and weights of one row range.

The MS is opened read-only and read in chunks of ``chunk_rows`` rows, so memory stays bounded
by the size of the returned arrays plus one chunk. Every rank of an SPMD job reads its own
contiguous row range (``row_ranges``); conventions (units, Stokes I, weights of flagged
samples) are those of ``docs/internals.md``.
"""

from __future__ import annotations

import math
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
    n_autocorr_rows : int
        Autocorrelation rows (ANTENNA1 == ANTENNA2) of the selection left out (not in the
        arrays); 0 when they are imaged.
    n_bad_uvw_rows : int
        Cross-correlation rows flagged because their UVW is not finite, or exactly (0, 0, 0)
        (no baseline: a writer's placeholder, it would add a constant to every pixel).
    """

    uvw: np.ndarray
    freq: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    phase_centre: tuple
    nrows_total: int
    n_nonfinite_flagged: int = 0
    n_autocorr_rows: int = 0
    n_bad_uvw_rows: int = 0


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


#: Default seconds to wait for a table another process holds write-locked (input.lock_wait_s).
LOCK_WAIT_S = 60.0


def _open(path, sub=None, wait_s=None):
    """Open the MS (or one of its subtables) read-only, turning casacore errors into MSError.

    The table is opened without casacore's automatic locking, which waits for ever for a
    read lock while another process (CASA, a calibration job) holds the table
    write-locked; the read lock is asked for explicitly, about once a second for
    ``wait_s`` seconds (default :data:`LOCK_WAIT_S`), then the open fails with an MSError
    that says so. The lock is held until the table is closed.
    """
    from casacore.tables import table

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MSError(f"{path}: no such Measurement Set (path does not exist)")
    full = path if sub is None else os.path.join(path, sub)
    if sub is not None and not os.path.isdir(full):
        raise MSError(f"{path}: not a Measurement Set (it has no {sub} subtable)")
    try:
        t = table(full, ack=False, readonly=True, lockoptions="usernoread")
    except RuntimeError as exc:
        what = "a casacore table" if sub is None else f"a readable {sub} subtable"
        raise MSError(f"{full}: not a Measurement Set (not {what}: {exc})") from None
    wait = LOCK_WAIT_S if wait_s is None else float(wait_s)
    # casacore tries once at once and then once a second: nattempts = 1 + whole seconds
    t.lock(False, max(1, 1 + int(math.ceil(wait))))
    if not t.haslock(False):
        t.close()
        raise MSError(
            f"{full}: another process holds the table write-locked; waited {wait:g} s "
            "(input.lock_wait_s) for a read lock. Run radimg when that process has finished "
            "with the Measurement Set"
        )
    return t


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


def _spw_info(path, spw, wait_s=None):
    s = _open(path, "SPECTRAL_WINDOW", wait_s)
    try:
        n = s.nrows()
        if not 0 <= spw < n:
            raise MSError(
                f"{os.fspath(path)}: spectral window {spw} out of range "
                f"(SPECTRAL_WINDOW has {n} row(s): 0..{n - 1})"
            )
        try:
            freq = np.asarray(s.getcell("CHAN_FREQ", spw), dtype=np.float64).ravel()
            width = np.asarray(s.getcell("CHAN_WIDTH", spw), dtype=np.float64).ravel()
        except RuntimeError as exc:
            raise MSError(
                f"{os.fspath(path)}: SPECTRAL_WINDOW row {spw}: cannot read CHAN_FREQ/CHAN_WIDTH "
                f"({exc})"
            ) from None
        bad = ~(np.isfinite(freq) & (freq > 0))
        if freq.size == 0 or bad.any():
            raise MSError(
                f"{os.fspath(path)}: SPECTRAL_WINDOW row {spw} column CHAN_FREQ holds "
                f"{freq.size} channel(s), {int(bad.sum())} of them not a positive finite "
                f"frequency (e.g. {freq[bad][0] if bad.any() else 'none'} Hz); expected "
                "frequencies > 0 Hz"
            )
        return freq, width
    finally:
        s.close()


def _field_centre(path, field, wait_s=None):
    f = _open(path, "FIELD", wait_s)
    try:
        n = f.nrows()
        if not 0 <= field < n:
            raise MSError(
                f"{os.fspath(path)}: field {field} out of range (FIELD has {n} row(s): 0..{n - 1})"
            )
        # PHASE_DIR is (npoly + 1, 2); the zeroth-order term is the phase centre.
        pd = np.asarray(f.getcell("PHASE_DIR", field), dtype=np.float64).reshape(-1, 2)[0]
        if not (np.all(np.isfinite(pd)) and abs(pd[1]) <= np.pi / 2 + 1e-9):
            raise MSError(
                f"{os.fspath(path)}: FIELD row {field} column PHASE_DIR is "
                f"({pd[0]!r}, {pd[1]!r}) rad; expected a finite RA and a Dec within +-90 deg"
            )
        name = str(f.getcell("NAME", field)) if "NAME" in f.colnames() else ""
        try:
            frame = f.getcolkeyword("PHASE_DIR", "MEASINFO")["Ref"]
        except (RuntimeError, KeyError, TypeError):
            frame = "J2000"
        return (float(pd[0]), float(pd[1])), name, frame
    finally:
        f.close()


def _ddid_map(path, spw, wait_s=None):
    """DATA_DESC_ID -> (spw, polarization id) and the POLARIZATION CORR_TYPE lists."""
    dd = _open(path, "DATA_DESCRIPTION", wait_s)
    try:
        n = dd.nrows()
        spws = np.asarray(dd.getcol("SPECTRAL_WINDOW_ID") if n else [], dtype=np.int64)
        pols = np.asarray(dd.getcol("POLARIZATION_ID") if n else [], dtype=np.int64)
    finally:
        dd.close()
    p = _open(path, "POLARIZATION", wait_s)
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


def _iso_utc(mjd_s, ref="UTC"):
    """ISO 8601 UTC string (millisecond precision) of an MS epoch: MJD seconds in the time
    scale ``ref`` (the column's MEASINFO Ref; UTC in nearly every MS). None if not finite."""
    if not np.isfinite(mjd_s) or mjd_s <= 0:
        return None
    if str(ref).upper() != "UTC":
        try:
            from astropy.time import Time

            return Time(mjd_s / 86400.0, format="mjd", scale=str(ref).lower()).utc.isot
        except (ValueError, KeyError):
            pass  # a scale astropy does not know: read it as UTC (seconds apart at most)
    import datetime

    t = datetime.datetime(1858, 11, 17) + datetime.timedelta(seconds=float(mjd_s))
    return t.isoformat(timespec="milliseconds")


def _observation_info(path, t_main, nrows, wait_s=None):
    """``telescope``, ``observer`` (OBSERVATION row 0; "" when absent) and ``date_obs``:
    the first TIME of the main table as WSClean writes DATE-OBS (the centroid of the first
    integration; the earlier of the first and last rows, so a reverse-sorted MS works too),
    else OBSERVATION TIME_RANGE's start; "" when neither is known."""
    info = {"telescope": "", "observer": "", "date_obs": ""}
    times = []
    if "TIME" in t_main.colnames() and nrows:
        try:
            ref = t_main.getcolkeyword("TIME", "MEASINFO")["Ref"]
        except (RuntimeError, KeyError, TypeError):
            ref = "UTC"
        times = [(float(t_main.getcell("TIME", r)), ref) for r in {0, nrows - 1}]
    if os.path.isdir(os.path.join(os.fspath(path), "OBSERVATION")):
        o = _open(path, "OBSERVATION", wait_s)
        try:
            names = o.colnames()
            if o.nrows():
                for key, col in (("telescope", "TELESCOPE_NAME"), ("observer", "OBSERVER")):
                    if col in names:
                        info[key] = str(o.getcell(col, 0)).strip()
                if not any(np.isfinite(t) and t > 0 for t, _ in times) and "TIME_RANGE" in names:
                    try:
                        ref = o.getcolkeyword("TIME_RANGE", "MEASINFO")["Ref"]
                    except (RuntimeError, KeyError, TypeError):
                        ref = "UTC"
                    times = [(float(np.ravel(o.getcell("TIME_RANGE", 0))[0]), ref)]
        except RuntimeError:
            pass  # an unreadable cell leaves the value unknown
        finally:
            o.close()
    good = [(t, ref) for t, ref in times if np.isfinite(t) and t > 0]
    if good:
        info["date_obs"] = _iso_utc(*min(good)) or ""
    return info


def band_span(freq, width):
    """Total bandwidth (Hz) of channels ``freq`` with widths ``width`` (ndarray (chan,)):
    from the lowest channel's lower edge to the highest channel's upper edge, as WSClean's
    CDELT3 (30.7 MHz for pyuvdata's 10-channel MWA snapshot). Falls back to the span of the
    centres (0 for one channel) when the widths are not finite."""
    freq = np.asarray(freq, dtype=np.float64).ravel()
    half = 0.5 * np.abs(np.asarray(width, dtype=np.float64).ravel())
    if half.size != freq.size or not np.all(np.isfinite(half)):
        half = np.zeros_like(freq)
    return float(np.max(freq + half) - np.min(freq - half)) if freq.size else 0.0


def ms_metadata(path, spw: int = 0, field: int = 0, lock_wait_s: float | None = None) -> dict:
    """Cheap summary of a Measurement Set (see :func:`_ms_metadata`); a table casacore
    cannot read (truncated or corrupt storage files) is an :class:`MSError` naming it."""
    try:
        return _ms_metadata(path, spw, field, lock_wait_s)
    except RuntimeError as exc:
        raise MSError(
            f"{path}: casacore could not read the Measurement Set ({exc}); the table is "
            "probably truncated or corrupt"
        ) from None


def _ms_metadata(path, spw: int = 0, field: int = 0, lock_wait_s: float | None = None) -> dict:
    """Cheap summary of a Measurement Set (reads no visibilities).

    Parameters
    ----------
    path : str or path-like
        The MS directory.
    spw, field : int
        Spectral window and field that ``read_ms`` would select.
    lock_wait_s : float, optional
        Seconds to wait for a write-locked table (default ``LOCK_WAIT_S``).

    Returns
    -------
    dict
        ``nrows`` (rows of the main table), ``freq`` ndarray (chan,) float64 Hz,
        ``chan_width`` ndarray (chan,) float64 Hz, ``phase_centre`` (ra, dec) radians,
        ``phase_centre_frame`` (e.g. "J2000"), ``field_name``, ``corr_types`` list of int
        (CASA codes) of the first data description of ``spw``, ``corr_names``, ``columns``
        (main-table columns), ``data_columns`` (complex array columns), ``telescope`` and
        ``observer`` (OBSERVATION; "" when unknown), ``date_obs`` (ISO 8601 UTC of the first
        TIME, as WSClean's DATE-OBS; "" when unknown), ``bandwidth_hz`` (:func:`band_span`
        of the channels), ``n_spw``, ``n_field``, ``has_weight_spectrum``.

    Raises
    ------
    MSError
        Missing path, not an MS, zero rows, or spw/field out of range.
    """
    wait = lock_wait_s
    t = _open(path, wait_s=wait)
    try:
        cols = _check_main(path, t)
        nrows = t.nrows()
        dcols = _data_columns(t)
        obs = _observation_info(path, t, nrows, wait)
    finally:
        t.close()
    if nrows == 0:
        raise MSError(f"{os.fspath(path)}: the Measurement Set has zero rows")
    freq, width = _spw_info(path, spw, wait)
    centre, name, frame = _field_centre(path, field, wait)
    ddids, corr = _ddid_map(path, spw, wait)
    s, f = _open(path, "SPECTRAL_WINDOW", wait), _open(path, "FIELD", wait)
    n_spw, n_field = s.nrows(), f.nrows()
    s.close()
    f.close()
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
        "telescope": obs["telescope"],
        "observer": obs["observer"],
        "date_obs": obs["date_obs"],
        "bandwidth_hz": band_span(freq, width),
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
    autocorrelations: bool = False,
    lock_wait_s: float | None = None,
) -> VisData:
    """Read Stokes I visibilities, weights and uvw of one row range of a Measurement Set.

    Only rows of the given spectral window (via DATA_DESCRIPTION) and field are returned,
    and, unless ``autocorrelations``, only cross-correlations (as WSClean and CASA image).
    Rows whose UVW is not finite or exactly zero are flagged (and counted).
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
    autocorrelations : bool
        Keep rows with ANTENNA1 == ANTENNA2 (left out and counted by default).
    lock_wait_s : float, optional
        Seconds to wait for a write-locked table (default ``LOCK_WAIT_S``).

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
    wait = lock_wait_s
    t = _open(path, wait_s=wait)  # the main table first: "not an MS" beats any subtable complaint
    try:
        _check_main(path, t)
    finally:
        t.close()
    freq, _ = _spw_info(path, spw, wait)
    centre, _, _ = _field_centre(path, field, wait)
    ddids, corr = _ddid_map(path, spw, wait)
    plans = {d: _stokes_i_plan(path, corr[d]) for d in ddids if d in corr}
    nchan = freq.size

    t = _open(path, wait_s=wait)
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
        n_bad = n_auto = n_bad_uvw = 0
        ws_checked = {}
        for a in range(start, stop, chunk_rows):
            if on_chunk is not None:
                on_chunk(a - start, stop - start)
            n = min(chunk_rows, stop - a)
            ddid = t.getcol("DATA_DESC_ID", a, n)
            fid = t.getcol("FIELD_ID", a, n)
            sel = np.isin(ddid, ddids) & (fid == field)
            auto = t.getcol("ANTENNA1", a, n) == t.getcol("ANTENNA2", a, n)
            if not autocorrelations:
                n_auto += int(np.count_nonzero(sel & auto))
                sel &= ~auto
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
                # zero UVW is a placeholder on a cross-correlation (an autocorrelation has it)
                bad_uvw = ~np.all(np.isfinite(uvw), axis=1) | (
                    ~np.any(uvw, axis=1) & ~auto[rsel]
                )
                if bad_uvw.any():
                    n_bad_uvw += int(np.count_nonzero(bad_uvw & np.any(wgt > 0, axis=1)))
                    wgt[bad_uvw] = 0
                    vis[bad_uvw] = 0
                    uvw = np.where(bad_uvw[:, None], 0.0, uvw)
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
        n_autocorr_rows=int(n_auto),
        n_bad_uvw_rows=int(n_bad_uvw),
    )


def uvw_subsample(
    path,
    spw: int = 0,
    field: int = 0,
    max_rows: int = 200_000,
    autocorrelations: bool = False,
    lock_wait_s: float | None = None,
):
    """A strided subsample of the UVW column of the rows ``read_ms`` would select (spw,
    field, no FLAG_ROW, cross-correlations unless ``autocorrelations``), for planning.

    Returns
    -------
    n_rows : int
        Estimated number of selected rows in the whole MS (the subsample's fraction of
        selected rows times the MS's rows).
    uvw : ndarray (row, 3) float64, metres
        Finite, non-zero UVW of the subsampled selected rows.
    freq : ndarray (chan,) float64, Hz

    Raises
    ------
    MSError
        As :func:`ms_metadata` (missing, not an MS, zero rows, bad CHAN_FREQ, ...), and for
        a table casacore cannot read (truncated storage files).
    """
    meta = ms_metadata(path, spw, field, lock_wait_s=lock_wait_s)
    ddids, _ = _ddid_map(path, spw, lock_wait_s)
    t = _open(path, wait_s=lock_wait_s)
    try:
        nrows = t.nrows()
        step = max(1, -(-nrows // max(1, int(max_rows))))

        def col(name):
            return t.getcol(name, startrow=0, nrow=-1, rowincr=step)

        uvw = np.asarray(col("UVW"), dtype=np.float64).reshape(-1, 3)
        sel = np.isin(col("DATA_DESC_ID"), ddids) & (col("FIELD_ID") == field)
        if "FLAG_ROW" in t.colnames():
            sel &= ~np.asarray(col("FLAG_ROW"), dtype=bool)
        if not autocorrelations:
            sel &= col("ANTENNA1") != col("ANTENNA2")
    except RuntimeError as exc:
        raise MSError(
            f"{os.fspath(path)}: casacore could not read the Measurement Set ({exc}); the "
            "table is probably truncated or corrupt"
        ) from None
    finally:
        t.close()
    n_sel = int(round(nrows * sel.mean())) if sel.size else 0
    uvw = uvw[sel]
    uvw = uvw[np.all(np.isfinite(uvw), axis=1) & np.any(uvw != 0, axis=1)]
    return n_sel, uvw, meta["freq"]


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
