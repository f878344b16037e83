"""Measurement Set reader: the selected polarisation products, flags and weights of one row
range of one or more Measurement Sets.

The MS is opened read-only and read in chunks of ``chunk_rows`` rows, so memory stays bounded
by the size of the returned arrays plus one chunk. Every rank of an SPMD job reads its own
contiguous row range (``row_ranges``) of the rows of all selected MSs taken one after the
other. What is read is fixed once by :func:`plan_selection` (MSs, spectral windows, field,
channels, polarisation products, phase centre: the ``input.*`` keys and ``image.stokes`` /
``image.phase_centre``), which every rank shares, then :func:`read_selection` reads a row
range. Conventions (units, Stokes products, weights of flagged samples, the phase rotation)
are those of ``docs/internals.md``.
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
_PARALLEL = (9, 12, 5, 8)
C_LIGHT = 299792458.0

# Columns the reader needs besides the data column; a table without them is not an MS.
_REQUIRED = ("UVW", "FLAG", "WEIGHT", "DATA_DESC_ID", "FIELD_ID", "ANTENNA1", "ANTENNA2", "TIME")


class MSError(ValueError):
    """A Measurement Set is missing, malformed, or does not hold what was asked for."""


@dataclass
class VisData:
    """Visibilities of the selected polarisation products of one row range (see
    ``docs/internals.md``).

    Attributes
    ----------
    uvw : ndarray (row, 3), float64
        Baseline coordinates in metres, straight from the UVW column.
    freq : ndarray (chan,), float64
        Channel frequencies, Hz.
    vis : ndarray (row, chan) or (pol, row, chan), complex64 | complex128
        The products of ``stokes`` (Stokes I by default); 0 where flagged.
    weight : ndarray (row, chan) or (pol, row, chan), float32 | float64
        Their weights; 0 where flagged, where the data or weights were NaN/Inf, or negative,
        and in the columns of channels a row's spectral window does not have.
    phase_centre : tuple of float
        ``(ra, dec)`` the uvw and visibilities refer to, radians: the FIELD's PHASE_DIR, or
        ``image.phase_centre`` when they were rotated to it.
    nrows_total : int
        Rows in the main table(s) (all spectral windows and fields), for ``row_ranges``.
    n_nonfinite_flagged : int
        Samples (row, chan) that were otherwise usable but had NaN/Inf data or weights and
        were flagged here; the caller warns (summed over ranks).
    n_autocorr_rows : int
        Autocorrelation rows (ANTENNA1 == ANTENNA2) of the selection left out (not in the
        arrays); 0 when they are imaged.
    n_bad_uvw_rows : int
        Cross-correlation rows flagged because their UVW is not finite, or exactly (0, 0, 0)
        (no baseline: a writer's placeholder, it would add a constant to every pixel).
    stokes : tuple of str
        The polarisation products read (``image.stokes``), e.g. ``("I",)`` or
        ``("I", "Q", "U", "V")``. With one product ``vis`` and ``weight`` are
        (row, chan); with several they are (pol, row, chan), in this order.
    chan_width : ndarray (chan,), float64, optional
        Channel widths, Hz (None when unknown).
    n_uvrange_flagged : int
        Samples (row, chan) with non-zero weight left out by ``input.uv_range_lambda``.
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
    stokes: tuple = ("I",)
    chan_width: np.ndarray | None = None
    n_uvrange_flagged: int = 0


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


def open_table(path, sub=None, wait_s=None):
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
    s = open_table(path, "SPECTRAL_WINDOW", wait_s)
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
    f = open_table(path, "FIELD", wait_s)
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
    dd = open_table(path, "DATA_DESCRIPTION", wait_s)
    try:
        n = dd.nrows()
        spws = np.asarray(dd.getcol("SPECTRAL_WINDOW_ID") if n else [], dtype=np.int64)
        pols = np.asarray(dd.getcol("POLARIZATION_ID") if n else [], dtype=np.int64)
    finally:
        dd.close()
    p = open_table(path, "POLARIZATION", wait_s)
    try:
        corr = [
            [int(c) for c in np.asarray(p.getcell("CORR_TYPE", r)).ravel()]
            for r in range(p.nrows())
        ]
    finally:
        p.close()
    ddids = [int(d) for d in np.nonzero(spws == spw)[0]]
    return ddids, {d: corr[pols[d]] for d in ddids if 0 <= pols[d] < len(corr)}


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
        o = open_table(path, "OBSERVATION", wait_s)
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


def output_channels(freq, chan_width, channels_out: int) -> list[dict]:
    """The selected channels in ``channels_out`` output channels (``image.channels_out``),
    as WSClean 3.1 divides them for ``-channels-out``: output channel ``k`` of ``N`` holds
    the input channels ``k n // N .. (k + 1) n // N - 1`` of the ascending frequency axis,
    so equal bandwidths when the channels are equally wide and contiguous (as within one
    spectral window), and every output channel holds at least one channel.

    Parameters
    ----------
    freq, chan_width : ndarray (chan,), float64
        The selection's frequency axis and channel widths, Hz.
    channels_out : int
        1 <= channels_out <= chan.

    Returns
    -------
    list of dict
        Per output channel: ``chan`` (first, stop) slice bounds of the axis, ``freq_hz``
        (the mean of its first and last channel frequencies, WSClean's CRVAL3) and
        ``bandwidth_hz`` (:func:`band_span`, WSClean's CDELT3).
    """
    freq = np.asarray(freq, dtype=np.float64).ravel()
    width = np.asarray(chan_width, dtype=np.float64).ravel()
    n, nout = freq.size, int(channels_out)
    if not 1 <= nout <= n:
        raise ValueError(f"channels_out = {nout} must lie in 1..{n} (channels selected)")
    out = []
    for k in range(nout):
        a, b = k * n // nout, (k + 1) * n // nout
        out.append({
            "chan": (a, b),
            "freq_hz": 0.5 * float(freq[a] + freq[b - 1]),
            "bandwidth_hz": band_span(freq[a:b], width[a:b] if width.size == n else width),
        })
    return out


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
    t = open_table(path, wait_s=wait)
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
    s, f = open_table(path, "SPECTRAL_WINDOW", wait), open_table(path, "FIELD", wait)
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

# Polarisation products from correlations, as WSClean 3.1 forms them (msprovider.cpp
# CopyData): a product the MS holds is read as it is; otherwise the first combination whose
# correlations are all present, linear feeds before circular. Terms are (CORR_TYPE, factor).
_CODE = {name: code for code, name in CORR_NAMES.items()}
_RECIPES = {
    "I": (((9, 0.5), (12, 0.5)), ((5, 0.5), (8, 0.5))),  # (XX + YY)/2, (RR + LL)/2
    "Q": (((9, 0.5), (12, -0.5)), ((6, 0.5), (7, 0.5))),  # (XX - YY)/2, (RL + LR)/2
    "U": (((10, 0.5), (11, 0.5)), ((6, -0.5j), (7, 0.5j))),  # (XY + YX)/2, -i(RL - LR)/2
    "V": (((10, -0.5j), (11, 0.5j)), ((5, 0.5), (8, -0.5))),  # -i(XY - YX)/2, (RR - LL)/2
}
_NEEDS = {
    "I": "XX and/or YY, RR and/or LL, or I",
    "Q": "XX and YY (linear feeds), RL and LR (circular feeds), or Q",
    "U": "XY and YX (linear feeds), RL and LR (circular feeds), or U",
    "V": "XY and YX (linear feeds), RR and LL (circular feeds), or V",
}


def product_recipe(name: str, corr_types) -> list | None:
    """How the polarisation product ``name`` is formed from an MS's correlations.

    Parameters
    ----------
    name : str
        "I", "Q", "U", "V" or an instrumental product ("XX", "RL", ...).
    corr_types : sequence of int
        POLARIZATION CORR_TYPE of the data description (casacore Stokes codes).

    Returns
    -------
    list of (int, complex) or None
        ``(correlation index, factor)`` terms, the product being ``sum factor * data``;
        None when the correlations cannot give it. Stokes I falls back to the one parallel
        hand an MS holds (the best estimate of I there is), as radimg always did.
    """
    corr = [int(c) for c in corr_types]
    code = _CODE.get(name)
    if code in corr:
        return [(corr.index(code), 1.0)]
    for terms in _RECIPES.get(name, ()):
        if all(c in corr for c, _ in terms):
            return [(corr.index(c), f) for c, f in terms]
    if name == "I":
        for c in _PARALLEL:
            if c in corr:
                return [(corr.index(c), 1.0)]
    return None


def _recipes(path, corr_types, stokes):
    """The recipe of every product of ``stokes``, or an MSError naming image.stokes."""
    out = []
    for name in stokes:
        r = product_recipe(name, corr_types)
        if r is None:
            names = [CORR_NAMES.get(c, str(c)) for c in corr_types]
            if name == "I":
                why = "no correlation that makes Stokes I"
            else:
                kind = "Stokes" if name in _RECIPES else "the instrumental product"
                why = f"the correlations cannot give {kind} {name}"
            need = _NEEDS.get(name, f"the correlation {name} itself")
            raise MSError(
                f"{os.fspath(path)}: image.stokes = {''.join(stokes)}: {why}: POLARIZATION "
                f"CORR_TYPE holds {names}; expected {need}"
            )
        out.append(r)
    return out


def _products(data, flag, wspec, recipes, cdtype, fdtype):
    """Polarisation products and their weights from one chunk's correlations.

    Parameters
    ----------
    data : ndarray (row, chan, corr) complex
    flag : ndarray (row, chan, corr) bool
    wspec : ndarray (row, chan, corr) float
        Weights per correlation (WEIGHT broadcast over channels when there is no
        WEIGHT_SPECTRUM).
    recipes : list of list of (int, complex)
        :func:`product_recipe` of each product.

    Returns
    -------
    vis : ndarray (pol, row, chan) cdtype
    weight : ndarray (pol, row, chan) fdtype
        A product's weight is the inverse of its variance, ``1 / sum |f_k|^2 / w_k`` over
        its terms (``4 / (1/w_XX + 1/w_YY)`` for Stokes I), 0 where any correlation used is
        flagged, has a weight <= 0, or a non-finite value.
    n_bad : int
        Samples (row, chan) made unusable here by NaN/Inf data or weights that no flag had
        removed already (counted once however many products use them).
    """
    nrow, nchan = data.shape[:2]
    vis = np.zeros((len(recipes), nrow, nchan), dtype=cdtype)
    wgt = np.zeros((len(recipes), nrow, nchan), dtype=fdtype)
    bad_any = np.zeros((nrow, nchan), dtype=bool)
    work = np.result_type(data.dtype, cdtype)
    for p, terms in enumerate(recipes):
        idx = [i for i, _ in terms]
        d = data[:, :, idx].astype(work, copy=False)
        w = wspec[:, :, idx].astype(np.float64, copy=False)
        fl = np.any(flag[:, :, idx], axis=2)
        finite = np.all(np.isfinite(d), axis=2) & np.all(np.isfinite(w), axis=2)
        bad_any |= ~finite & ~fl
        w = np.where(finite[:, :, None], w, 0.0)
        d = np.where(finite[:, :, None], d, 0.0)
        if len(terms) == 1:
            v = d[:, :, 0] if terms[0][1] == 1.0 else terms[0][1] * d[:, :, 0]
            wp = np.where(w[:, :, 0] > 0, w[:, :, 0] / abs(terms[0][1]) ** 2, 0.0)
        else:
            (_, f1), (_, f2) = terms
            v = f1 * d[:, :, 0] + f2 * d[:, :, 1]
            w1, w2 = w[:, :, 0], w[:, :, 1]
            ok = (w1 > 0) & (w2 > 0)
            # variance |f1|^2/w1 + |f2|^2/w2; for I = (A + B)/2: 4 w1 w2 / (w1 + w2)
            wp = np.zeros_like(w1)
            np.divide(w1 * w2, abs(f1) ** 2 * w2 + abs(f2) ** 2 * w1, out=wp, where=ok)
        wp[fl | ~finite] = 0.0
        vis[p] = np.where(wp > 0, v, 0.0)
        wgt[p] = wp
    return vis, wgt, int(np.count_nonzero(bad_any))


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


# --------------------------------------------------------------------------------------
# Phase rotation
# --------------------------------------------------------------------------------------


def _uvw_axes(ra, dec):
    """Rows: the u (east), v (north) and w (toward (ra, dec)) unit vectors, (3, 3)."""
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    return np.array([[-sa, ca, 0.0], [-sd * ca, -sd * sa, cd], [cd * ca, cd * sa, sd]])


def rotation_matrix(centre_from, centre_to) -> np.ndarray:
    """The matrix taking uvw of phase centre ``centre_from`` to uvw of ``centre_to``.

    A baseline ``b`` (celestial frame) has ``uvw = A(ra, dec) b`` with A's rows the u, v, w
    axes of the centre, so ``uvw_to = A_to A_from^T uvw_from`` (exact, w included).

    Parameters
    ----------
    centre_from, centre_to : (float, float)
        ``(ra, dec)``, radians, in one frame (the MS's PHASE_DIR frame).

    Returns
    -------
    ndarray (3, 3), float64
    """
    return _uvw_axes(*centre_to) @ _uvw_axes(*centre_from).T


def rotate_phase_centre(uvw, vis, freq, rot):
    """Move visibilities to another phase centre (see :func:`rotation_matrix`).

    With ``V = sum S exp(+2 pi i (u l + v m + w (n - 1)))`` (``docs/internals.md``) and
    ``u l + v m + w n = b.s / lambda``, ``V_to = V_from exp(+2 pi i (w_from - w_to) nu / c)``.

    Parameters
    ----------
    uvw : ndarray (row, 3), float64
        Metres, for the old centre.
    vis : ndarray (..., row, chan), complex
        Multiplied in place.
    freq : ndarray (chan,), float64
        Hz.
    rot : ndarray (3, 3)

    Returns
    -------
    ndarray (row, 3), float64
        uvw for the new centre.
    """
    new = uvw @ rot.T
    dw = (uvw[:, 2] - new[:, 2])[:, None] * (np.asarray(freq, np.float64) / C_LIGHT)[None, :]
    vis *= np.exp(2j * np.pi * dw).astype(vis.dtype, copy=False)
    return new


# --------------------------------------------------------------------------------------
# Selection: what every rank reads
# --------------------------------------------------------------------------------------


@dataclass
class Window:
    """One data description of one MS, as read: channels ``chan[0]:chan[1]`` of spectral
    window ``spw``, placed at columns ``cols`` (chan,) of the selection's frequency axis."""

    ddid: int
    spw: int
    chan: tuple
    cols: np.ndarray
    freq: np.ndarray
    nchan_spw: int
    recipes: list


@dataclass
class MSPart:
    """One MS of a selection: its rows ``row0 .. row0 + nrows`` of the selection's row
    space, the field read, and the windows read (by DATA_DESC_ID)."""

    path: str
    row0: int
    nrows: int
    field: int
    field_name: str
    centre: tuple
    windows: dict
    rotation: np.ndarray | None


@dataclass
class Selection:
    """What a run reads, made once by :func:`plan_selection` and the same on every rank.

    Attributes
    ----------
    parts : list of MSPart
        The MSs, in ``input.ms`` order; their rows follow each other in one row space of
        ``nrows_total`` rows, which :func:`row_ranges` splits between ranks.
    freq, chan_width : ndarray (chan,), float64
        The selected channels of every window and MS on one ascending frequency axis, Hz.
    phase_centre : (float, float)
        The image's phase centre (ra, dec), radians: ``image.phase_centre`` or the fields'.
    stokes : tuple of str
        Polarisation products read.
    nrows_total : int
    meta : dict
        :func:`ms_metadata` of the first MS with ``nrows``, ``freq``, ``chan_width``,
        ``bandwidth_hz``, ``phase_centre`` of the selection, and ``ms`` (paths),
        ``stokes``, ``spws``, ``n_ms``.
    """

    parts: list
    freq: np.ndarray
    chan_width: np.ndarray
    phase_centre: tuple
    stokes: tuple
    nrows_total: int
    meta: dict


def _config_error(msg):
    from radimg.config import ConfigError

    return ConfigError(msg)


def _field_id(path, field, wait_s=None):
    """A FIELD row id from ``input.field`` (an id, or a NAME looked up in the FIELD table)."""
    if not isinstance(field, str):
        return int(field)
    f = open_table(path, "FIELD", wait_s)
    try:
        names = [str(x) for x in f.getcol("NAME")] if "NAME" in f.colnames() and f.nrows() else []
    finally:
        f.close()
    hits = [i for i, n in enumerate(names) if n == field]
    if not hits:
        hits = [i for i, n in enumerate(names) if n.lower() == field.lower()]
    if len(hits) != 1:
        what = "no field" if not hits else f"{len(hits)} fields"
        raise _config_error(
            f"input.field = {field!r}: {os.fspath(path)} has {what} of that name (FIELD NAME "
            f"holds {names}); give a field name it holds once, or a field id"
        )
    return hits[0]


def _spw_ids(path, spw, wait_s=None):
    if spw == "all":
        s = open_table(path, "SPECTRAL_WINDOW", wait_s)
        try:
            return list(range(s.nrows()))
        finally:
            s.close()
    return [int(x) for x in (spw if isinstance(spw, (list, tuple)) else [spw])]


def _same_direction(a, b, tol=1e-9):
    """Two (ra, dec) within ``tol`` radians of each other."""
    ca = _uvw_axes(*a)[2]
    cb = _uvw_axes(*b)[2]
    return float(np.linalg.norm(ca - cb)) <= tol


def plan_selection(*args, **kwargs) -> Selection:
    """:func:`_plan_selection` (see it for the arguments); casacore's RuntimeError from a
    damaged table (truncated or corrupt storage files) becomes an :class:`MSError`."""
    try:
        return _plan_selection(*args, **kwargs)
    except RuntimeError as exc:
        ms = args[0] if args else kwargs.get("ms")
        raise MSError(
            f"{ms}: casacore could not read the Measurement Set ({exc}); the table is "
            "probably truncated or corrupt"
        ) from None


def _plan_selection(
    ms,
    spw=0,
    field=0,
    chan_range=None,
    stokes="I",
    phase_centre=None,
    channels_out: int = 1,
    datacolumn: str | None = None,
    lock_wait_s: float | None = None,
) -> Selection:
    """Decide what a run reads (cheap: subtables and the main table's shape only).

    Parameters
    ----------
    ms : str, path-like or list of them
        ``input.ms``: one MS or several imaged together.
    spw : int, list of int or "all"
        ``input.spw``.
    field : int or str
        ``input.field``: a FIELD id or NAME (looked up in each MS).
    chan_range : (int, int), optional
        ``input.chan_range``: first and last channel (inclusive) of every selected window;
        ``last`` is cut to the window's last channel.
    stokes : str or sequence of str
        ``image.stokes`` (see :func:`radimg.config.stokes_products`).
    phase_centre : dict or (float, float), optional
        ``image.phase_centre`` ``{ra_deg, dec_deg}`` or ``(ra, dec)`` radians; None: the
        fields' own centre, which must then be the same in every MS.
    channels_out : int
        ``image.channels_out``; more than the selected channels is an error.
    datacolumn : str, optional
        Checked to exist in every MS when given.
    lock_wait_s : float, optional
        Seconds to wait for a write-locked table.

    Returns
    -------
    Selection

    Raises
    ------
    MSError
        Missing path, not an MS, zero rows, spw/field out of range, bad CHAN_FREQ or
        PHASE_DIR, absent data column, a polarisation product the correlations cannot give
        (naming image.stokes).
    ConfigError
        A field name no MS holds once (input.field), a channel range that selects no
        channel (input.chan_range), MSs/fields with different phase centres and no
        image.phase_centre, channels_out above the channels selected (image.channels_out).
    """
    from radimg.config import ms_paths, stokes_products

    paths = ms_paths(ms) if not isinstance(ms, os.PathLike) else [os.fspath(ms)]
    pols = tuple(stokes_products(stokes))
    wait = lock_wait_s
    parts, row0, meta0 = [], 0, None
    for path in paths:
        nrows = _checked_main_rows(path, datacolumn, wait)
        fid = _field_id(path, field, wait)
        centre, fname, _ = _field_centre(path, fid, wait)
        windows = _plan_windows(path, spw, chan_range, pols, wait)
        if meta0 is None:
            meta0 = ms_metadata(path, _spw_ids(path, spw, wait)[0], fid, lock_wait_s=wait)
        parts.append(MSPart(os.fspath(path), row0, int(nrows), fid, fname, centre, windows,
                            None))
        row0 += int(nrows)
    axis, chan_width = _frequency_axis(parts, paths, spw, wait)
    if int(channels_out) > axis.size:
        raise _config_error(
            f"image.channels_out = {channels_out} is more than the {axis.size} channel(s) "
            "selected (input.spw, input.chan_range); lower image.channels_out"
        )
    target = _target_centre(parts, phase_centre)
    meta = dict(meta0)
    meta.update(
        nrows=row0,
        freq=axis,
        chan_width=chan_width,
        bandwidth_hz=band_span(axis, chan_width),
        phase_centre=target,
        ms=[p.path for p in parts],
        n_ms=len(parts),
        stokes=list(pols),
        spws=sorted({w.spw for p in parts for w in p.windows.values()}),
    )
    return Selection(parts, axis, chan_width, target, pols, row0, meta)


def _checked_main_rows(path, datacolumn, wait):
    """Rows of ``path``'s main table, after checking it is an MS (before any subtable: "not
    an MS" beats any subtable error) holding ``datacolumn`` (if given) and some rows."""
    t = open_table(path, wait_s=wait)
    try:
        cols = _check_main(path, t)
        nrows = t.nrows()
        if datacolumn is not None and datacolumn not in cols:
            raise MSError(
                f"{path}: data column {datacolumn!r} not found; the data columns present "
                f"are {', '.join(_data_columns(t)) or 'none'}"
            )
    finally:
        t.close()
    if nrows == 0:
        raise MSError(f"{path}: the Measurement Set has zero rows")
    return nrows


def _plan_windows(path, spw, chan_range, pols, wait):
    """``{DATA_DESC_ID: Window}`` of the selected spectral windows and channels of ``path``
    (``Window.cols`` still empty: :func:`_frequency_axis` fills it)."""
    windows = {}
    for sp in _spw_ids(path, spw, wait):
        freq, _ = _spw_info(path, sp, wait)
        c0, c1 = 0, freq.size
        if chan_range is not None:
            a, b = int(chan_range[0]), int(chan_range[1])
            if a >= freq.size:
                raise _config_error(
                    f"input.chan_range = [{a}, {b}] selects no channel of spectral window "
                    f"{sp} of {path} (it has {freq.size} channels: 0..{freq.size - 1})"
                )
            c0, c1 = a, min(b, freq.size - 1) + 1
        ddids, corr = _ddid_map(path, sp, wait)
        for d in ddids:
            if d not in corr:
                raise MSError(f"{path}: DATA_DESC_ID {d} has no valid POLARIZATION row")
            windows[d] = Window(d, sp, (c0, c1), np.zeros(0, np.int64), freq[c0:c1],
                                freq.size, _recipes(path, corr[d], pols))
    return windows


def _frequency_axis(parts, paths, spw, wait):
    """One frequency axis: every selected channel once (exactly equal frequencies share it).

    Returns ``(freq (chan,) float64 Hz ascending, chan_width (chan,) float64 Hz)`` and sets
    each window's ``cols`` (its channels' places on that axis).
    """
    freqs, widths = [], {}
    for part in parts:
        for w in part.windows.values():
            _, width = _spw_info(part.path, w.spw, wait)
            width = np.broadcast_to(np.abs(width), (w.nchan_spw,))[w.chan[0] : w.chan[1]]
            freqs.append(w.freq)
            for f, bw in zip(w.freq, width, strict=True):
                widths.setdefault(float(f), float(bw))
    axis = np.unique(np.concatenate(freqs)) if freqs else np.zeros(0)
    if axis.size == 0:
        raise MSError(
            f"{', '.join(paths)}: no rows can match: the selected spectral window(s) "
            f"{spw} have no DATA_DESCRIPTION row"
        )
    for part in parts:
        for w in part.windows.values():
            w.cols = np.searchsorted(axis, w.freq).astype(np.int64)
    return axis, np.array([widths[float(f)] for f in axis])


def _target_centre(parts, phase_centre):
    """The image's phase centre (ra, dec) radians: ``phase_centre`` or the fields' own
    (which must then agree); sets ``rotation`` of each part whose field centre differs."""
    if phase_centre is None:
        target = parts[0].centre
        for part in parts[1:]:
            if not _same_direction(part.centre, target):
                raise _config_error(
                    f"{part.path} (field {part.field}) and {parts[0].path} (field "
                    f"{parts[0].field}) have different phase centres "
                    f"({np.degrees(part.centre[0]):.6f}, {np.degrees(part.centre[1]):.6f}) and "
                    f"({np.degrees(target[0]):.6f}, {np.degrees(target[1]):.6f}) deg; set "
                    "image.phase_centre: {ra_deg, dec_deg} to image them together"
                )
    elif isinstance(phase_centre, dict):
        target = (math.radians(float(phase_centre["ra_deg"])),
                  math.radians(float(phase_centre["dec_deg"])))
    else:
        target = (float(phase_centre[0]), float(phase_centre[1]))
    for part in parts:
        if not _same_direction(part.centre, target, 1e-12):
            part.rotation = rotation_matrix(part.centre, target)
    return target


# --------------------------------------------------------------------------------------
# Reading a row range of a selection
# --------------------------------------------------------------------------------------


def _read_part(part, sel, datacolumn, start, stop, chunk_rows, cdtype, fdtype, on_chunk,
               done0, total, autocorrelations, uv_range, wait, out, merge):
    """Read rows [start, stop) of one MS of a selection, appending pieces to ``out``."""
    spath = part.path
    t = open_table(spath, wait_s=wait)
    try:
        cols = _check_main(spath, t)
        if datacolumn not in cols:
            raise MSError(
                f"{spath}: data column {datacolumn!r} not found; the data columns present are "
                f"{', '.join(_data_columns(t)) or 'none'}"
            )
        has_flag_row = "FLAG_ROW" in cols
        ddids = list(part.windows)
        ws_checked = {}
        for a in range(start, stop, chunk_rows):
            if on_chunk is not None:
                on_chunk(done0 + a - start, total)
            n = min(chunk_rows, stop - a)
            ddid = t.getcol("DATA_DESC_ID", a, n)
            fid = t.getcol("FIELD_ID", a, n)
            a1c, a2c = t.getcol("ANTENNA1", a, n), t.getcol("ANTENNA2", a, n)
            sel_rows = np.isin(ddid, ddids) & (fid == part.field)
            auto = a1c == a2c
            if not autocorrelations:
                out["n_auto"] += int(np.count_nonzero(sel_rows & auto))
                sel_rows &= ~auto
            if not sel_rows.any():
                continue
            times = t.getcol("TIME", a, n) if merge else None
            # Rows of several ddids (or spws of other shapes) interleave; read the selection
            # as a reference table when it is not the whole chunk.
            for d in np.unique(ddid[sel_rows]):
                win = part.windows[int(d)]
                rsel = np.nonzero(sel_rows & (ddid == d))[0]
                if rsel.size == n:
                    sub, s0, sn = t, a, n
                else:
                    sub, s0, sn = t.selectrows((a + rsel).tolist()), 0, rsel.size
                try:
                    data = sub.getcol(datacolumn, s0, sn)
                    ncorr = data.shape[2]
                    if data.shape[1] != win.nchan_spw:
                        raise MSError(
                            f"{spath}: column {datacolumn} has {data.shape[1]} channels but "
                            f"spectral window {win.spw} has {win.nchan_spw}"
                        )
                    flag = sub.getcol("FLAG", s0, sn)
                    if has_flag_row:
                        flag = flag | sub.getcol("FLAG_ROW", s0, sn)[:, None, None]
                    if d not in ws_checked:
                        ws_checked[d] = _use_weight_spectrum(t, cols, win.nchan_spw, ncorr)
                    wspec = None
                    if ws_checked[d]:
                        try:
                            wspec = sub.getcol("WEIGHT_SPECTRUM", s0, sn)
                        except RuntimeError:
                            wspec = None  # cells undefined in this chunk: fall back to WEIGHT
                    if wspec is None:
                        w = sub.getcol("WEIGHT", s0, sn).reshape(sn, 1, -1)
                        wspec = np.broadcast_to(w, (sn, win.nchan_spw, w.shape[2]))
                    uvw = sub.getcol("UVW", s0, sn).astype(np.float64, copy=False)
                finally:
                    if sub is not t:
                        sub.close()
                c0, c1 = win.chan
                if (c0, c1) != (0, win.nchan_spw):
                    data, flag, wspec = data[:, c0:c1], flag[:, c0:c1], wspec[:, c0:c1]
                vis, wgt, nb = _products(data, flag, wspec, win.recipes, cdtype, fdtype)
                del data, flag, wspec
                out["n_bad"] += nb
                # zero UVW is a placeholder on a cross-correlation (an autocorrelation has it)
                bad_uvw = ~np.all(np.isfinite(uvw), axis=1) | (
                    ~np.any(uvw, axis=1) & ~auto[rsel]
                )
                if bad_uvw.any():
                    out["n_bad_uvw"] += int(np.count_nonzero(bad_uvw & np.any(wgt > 0, axis=(0, 2))))
                    wgt[:, bad_uvw] = 0
                    vis[:, bad_uvw] = 0
                    uvw = np.where(bad_uvw[:, None], 0.0, uvw)
                if part.rotation is not None:
                    uvw = rotate_phase_centre(uvw, vis, win.freq, part.rotation)
                if uv_range is not None:
                    q = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * (win.freq / C_LIGHT)[None, :]
                    lo, hi = uv_range
                    cut = (q < lo) if hi is None else ((q < lo) | (q > hi))
                    cut = np.broadcast_to(cut, wgt.shape)
                    out["n_uvrange"] += int(np.count_nonzero(cut & (wgt > 0)))
                    wgt[cut] = 0
                    vis[cut] = 0
                key = None
                if merge:
                    key = (times[rsel], a1c[rsel], a2c[rsel])
                out["pieces"].append((part.row0 + a + rsel, key, uvw, win, vis, wgt))
    finally:
        t.close()


def _assemble(pieces, nfreq, npol, cdtype, fdtype):
    """Rows of all pieces on one frequency axis, in selection row order.

    Rows of different windows of one MS with the same time, baseline and uvw become one
    row (pieces then carry keys); the k-th such row of a window joins the k-th of another,
    so two rows of one window are never merged. A window's channels fill its columns of
    the axis; the other columns of its rows hold weight 0.
    """
    if not pieces:
        return (np.zeros((0, 3)), np.zeros((npol, 0, nfreq), cdtype),
                np.zeros((npol, 0, nfreq), fdtype))
    grow = np.concatenate([p[0] for p in pieces])
    uvw = np.concatenate([p[2] for p in pieces])
    if pieces[0][1] is not None:
        keys = np.column_stack([
            np.concatenate([np.full(p[0].size, float(p[6])) for p in pieces]),  # the MS
            *(np.concatenate([np.asarray(p[1][k], dtype=np.float64) for p in pieces])
              for k in range(3)),  # time, antenna1, antenna2
            uvw,
        ])
        ddid = np.concatenate([np.full(p[0].size, float(p[3].ddid)) for p in pieces])
        # occurrence number of each row among the rows of its window with its key
        kd = np.column_stack([keys, ddid])
        order = np.lexsort((grow,) + tuple(kd[:, k] for k in range(kd.shape[1] - 1, -1, -1)))
        ko = kd[order]
        same = np.r_[False, np.all(ko[1:] == ko[:-1], axis=1)]
        idx = np.arange(order.size)
        occ = np.empty(order.size)
        occ[order] = idx - np.maximum.accumulate(np.where(same, 0, idx))
        _, inv = np.unique(np.column_stack([keys, occ]), axis=0, return_inverse=True)
        inv = np.asarray(inv).ravel()
        first = np.full(int(inv.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, inv, grow)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        out_row = rank[inv]
    else:
        out_row = np.empty(grow.size, dtype=np.int64)
        out_row[np.argsort(grow, kind="stable")] = np.arange(grow.size)
    nout = int(out_row.max()) + 1
    uvw_out = np.zeros((nout, 3))
    vis_out = np.zeros((npol, nout, nfreq), dtype=cdtype)
    wgt_out = np.zeros((npol, nout, nfreq), dtype=fdtype)
    s = 0
    for p in pieces:
        m = p[0].size
        rows = out_row[s : s + m]
        uvw_out[rows] = p[2]
        cols = p[3].cols
        if cols.size == nfreq:
            vis_out[:, rows] = p[4]
            wgt_out[:, rows] = p[5]
        else:
            vis_out[:, rows[:, None], cols[None, :]] = p[4]
            wgt_out[:, rows[:, None], cols[None, :]] = p[5]
        s += m
    return uvw_out, vis_out, wgt_out


def read_selection(sel: Selection, *args, **kwargs) -> VisData:
    """:func:`_read_selection` (see it for the arguments); casacore's RuntimeError from a
    damaged table becomes an :class:`MSError` naming the MSs."""
    try:
        return _read_selection(sel, *args, **kwargs)
    except RuntimeError as exc:
        names = ", ".join(p.path for p in sel.parts)
        raise MSError(
            f"{names}: casacore could not read the Measurement Set ({exc}); the table is "
            "probably truncated or corrupt"
        ) from None


def _read_selection(
    sel: Selection,
    datacolumn: str = "DATA",
    rows=None,
    chunk_rows: int = 100_000,
    precision: str = "single",
    on_chunk=None,
    autocorrelations: bool = False,
    uv_range=None,
    lock_wait_s: float | None = None,
) -> VisData:
    """Read one row range of a :class:`Selection`: the polarisation products, weights and
    uvw of the selected rows, on the selection's frequency axis and phase centre.

    Only rows of the selected windows (via DATA_DESCRIPTION) and field are returned, and,
    unless ``autocorrelations``, only cross-correlations (as WSClean and CASA image).
    Rows whose UVW is not finite or exactly zero are flagged (and counted). FLAG and
    FLAG_ROW are honoured per correlation: a product is flagged where any correlation it
    uses is. WEIGHT_SPECTRUM is used when present and valid, else WEIGHT broadcast over
    channels. Products and weights as :func:`_products`; NaN/Inf data or weights are
    flagged and counted. uvw and visibilities are rotated to the selection's phase centre
    (:func:`rotate_phase_centre`) before the uv range is applied. The MSs are never modified.

    Parameters
    ----------
    sel : Selection
        From :func:`plan_selection` (the same on every rank).
    datacolumn : str
        Complex data column, e.g. "DATA", "CORRECTED_DATA", "MODEL_DATA".
    rows : (int, int), optional
        Half-open range ``(start, stop)`` of the selection's row space (the MSs' main-table
        rows one after the other); all rows when omitted.
    chunk_rows : int
        Rows read per casacore call (bounds the temporary memory).
    precision : {"single", "double"}
        complex64/float32 or complex128/float64 output.
    on_chunk : callable(rows_done, rows_in_range), optional
        Called before each chunk is read (progress reporting).
    autocorrelations : bool
        Keep rows with ANTENNA1 == ANTENNA2 (left out and counted by default).
    uv_range : (float, float or None), optional
        ``input.uv_range_lambda``: keep samples with ``min <= sqrt(u^2 + v^2) nu / c <=
        max`` (wavelengths, after the rotation); the others get weight 0 and are counted.
    lock_wait_s : float, optional
        Seconds to wait for a write-locked table (default ``LOCK_WAIT_S``).

    Returns
    -------
    VisData
        ``vis`` and ``weight`` (row, chan) with one product, (pol, row, chan) with several.
    """
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    cdtype, fdtype = (
        (np.complex64, np.float32) if precision == "single" else (np.complex128, np.float64)
    )
    chunk_rows = max(1, int(chunk_rows))
    start, stop = (0, sel.nrows_total) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start <= stop <= sel.nrows_total:
        names = ", ".join(p.path for p in sel.parts)
        raise ValueError(f"rows {rows} outside the {sel.nrows_total} rows of {names}")
    merge = any(len(p.windows) > 1 for p in sel.parts)
    out = {"pieces": [], "n_bad": 0, "n_auto": 0, "n_bad_uvw": 0, "n_uvrange": 0}
    for part in sel.parts:
        a, b = max(start, part.row0), min(stop, part.row0 + part.nrows)
        if a >= b:
            continue
        n0 = len(out["pieces"])
        _read_part(part, sel, datacolumn, a - part.row0, b - part.row0, chunk_rows, cdtype,
                   fdtype, on_chunk, a - start, stop - start, autocorrelations, uv_range,
                   lock_wait_s, out, merge)
        for k in range(n0, len(out["pieces"])):
            out["pieces"][k] = out["pieces"][k] + (part.row0,)
    uvw, vis, wgt = _assemble(out["pieces"], sel.freq.size, len(sel.stokes), cdtype, fdtype)
    if len(sel.stokes) == 1:
        vis, wgt = vis[0], wgt[0]
    return VisData(
        uvw=uvw,
        freq=sel.freq.copy(),
        vis=vis,
        weight=wgt,
        phase_centre=tuple(sel.phase_centre),
        nrows_total=int(sel.nrows_total),
        n_nonfinite_flagged=int(out["n_bad"]),
        n_autocorr_rows=int(out["n_auto"]),
        n_bad_uvw_rows=int(out["n_bad_uvw"]),
        stokes=tuple(sel.stokes),
        chan_width=sel.chan_width.copy(),
        n_uvrange_flagged=int(out["n_uvrange"]),
    )


def _read_ms(
    path,
    datacolumn: str = "DATA",
    rows=None,
    chunk_rows: int = 100_000,
    spw=0,
    field=0,
    precision: str = "single",
    on_chunk=None,
    autocorrelations: bool = False,
    lock_wait_s: float | None = None,
    stokes="I",
    chan_range=None,
    uv_range=None,
    phase_centre=None,
) -> VisData:
    """Read one row range of one Measurement Set (or of several: ``path`` a list).

    :func:`plan_selection` then :func:`read_selection` with the same arguments: by
    default Stokes I of spectral window 0 and field 0, ``(XX+YY)/2`` or ``(RR+LL)/2`` with
    weight ``4/(1/w1 + 1/w2)``, or the single parallel hand.

    Raises
    ------
    MSError
        Missing path, not an MS, data column absent, zero rows, spw/field out of range, or
        no correlation that makes the products asked for.
    """
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    sel = plan_selection(path, spw=spw, field=field, chan_range=chan_range, stokes=stokes,
                         phase_centre=phase_centre, lock_wait_s=lock_wait_s)
    return read_selection(sel, datacolumn=datacolumn, rows=rows, chunk_rows=chunk_rows,
                          precision=precision, on_chunk=on_chunk,
                          autocorrelations=autocorrelations, uv_range=uv_range,
                          lock_wait_s=lock_wait_s)


def uvw_subsample(
    path,
    spw=0,
    field=0,
    max_rows: int = 200_000,
    autocorrelations: bool = False,
    lock_wait_s: float | None = None,
    chan_range=None,
    phase_centre=None,
):
    """A strided subsample of the UVW column of the rows ``read_selection`` would select
    (MSs, windows, field, no FLAG_ROW, cross-correlations unless ``autocorrelations``),
    rotated to the phase centre, for planning.

    Returns
    -------
    n_rows : int
        Estimated number of selected rows in the whole selection (each MS's subsample's
        fraction of selected rows times its rows).
    uvw : ndarray (row, 3) float64, metres
        Finite, non-zero UVW of the subsampled selected rows.
    freq : ndarray (chan,) float64, Hz
        The selection's frequency axis.

    Raises
    ------
    MSError
        As :func:`plan_selection` (missing, not an MS, zero rows, bad CHAN_FREQ, ...), and
        for a table casacore cannot read (truncated storage files).
    """
    try:
        sel = plan_selection(path, spw=spw, field=field, chan_range=chan_range,
                             phase_centre=phase_centre, lock_wait_s=lock_wait_s)
    except RuntimeError as exc:
        raise MSError(
            f"{path}: casacore could not read the Measurement Set ({exc}); the table is "
            "probably truncated or corrupt"
        ) from None
    n_sel, parts = 0, []
    per_ms = max(1, int(max_rows) // len(sel.parts))
    for part in sel.parts:
        t = open_table(part.path, wait_s=lock_wait_s)
        try:
            nrows = t.nrows()
            step = max(1, -(-nrows // per_ms))

            def col(name, t=t, step=step):
                return t.getcol(name, startrow=0, nrow=-1, rowincr=step)

            uvw = np.asarray(col("UVW"), dtype=np.float64).reshape(-1, 3)
            keep = np.isin(col("DATA_DESC_ID"), list(part.windows)) & (
                col("FIELD_ID") == part.field)
            if "FLAG_ROW" in t.colnames():
                keep &= ~np.asarray(col("FLAG_ROW"), dtype=bool)
            if not autocorrelations:
                keep &= col("ANTENNA1") != col("ANTENNA2")
        except RuntimeError as exc:
            raise MSError(
                f"{part.path}: casacore could not read the Measurement Set ({exc}); the "
                "table is probably truncated or corrupt"
            ) from None
        finally:
            t.close()
        n_sel += int(round(nrows * keep.mean())) if keep.size else 0
        uvw = uvw[keep]
        uvw = uvw[np.all(np.isfinite(uvw), axis=1) & np.any(uvw != 0, axis=1)]
        if part.rotation is not None:
            uvw = uvw @ part.rotation.T
        parts.append(uvw)
    return n_sel, np.concatenate(parts), sel.freq


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
