"""Measurement Set writer (used by the simulator).

Writes an MS v2 with every required subtable filled consistently (ANTENNA, DATA_DESCRIPTION,
FEED, FIELD, FLAG_CMD, HISTORY, OBSERVATION, POINTING, POLARIZATION, PROCESSOR, SOURCE,
SPECTRAL_WINDOW, STATE), so that CASA and WSClean open it. The MS is built under a temporary
name next to the target and renamed when complete: a crash never leaves a half-written MS
at the target path.

Use ``MSWriter`` to write rows in chunks (bounded memory) or ``write_ms`` for arrays in hand.

Every MS written here carries the main-table keyword :data:`MARKER_KEYWORD` (the writer's
description, e.g. the simulate: section as YAML). ``overwrite`` replaces only a path that
carries it (:func:`radimg_ms_marker`): radimg never deletes a Measurement Set, or anything
else, that it did not write itself.
"""

from __future__ import annotations

import os
import shutil
import time as _time

import numpy as np

from radimg.io.paths import check_not_inside_table

# CASA CORR_TYPE code -> receptor pair (CORR_PRODUCT) for two-receptor feeds.
_CORR_PRODUCT = {
    5: (0, 0), 6: (0, 1), 7: (1, 0), 8: (1, 1),   # RR RL LR LL
    9: (0, 0), 10: (0, 1), 11: (1, 0), 12: (1, 1),  # XX XY YX YY
}  # fmt: skip
_PARALLEL = (5, 8, 9, 12)

#: Main-table keyword of every MS radimg writes; its value describes what wrote it.
MARKER_KEYWORD = "RADIMG_SIMULATED"
# Older radimg versions marked a simulated MS with this file inside it instead.
_LEGACY_STAMP = "RADIMG_SIMULATE.yaml"


def radimg_ms_marker(path) -> str | None:
    """The marker text of a Measurement Set radimg wrote at ``path``, or None.

    None for anything else: a path that does not exist, a file, a directory that is not a
    casacore table, or an MS without the marker (a real observation). The table is opened
    read-only without waiting for locks.
    """
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "table.dat")):
        return None
    stamp = os.path.join(path, _LEGACY_STAMP)
    try:
        from casacore.tables import table

        t = table(path, ack=False, readonly=True, lockoptions="usernoread")
    except RuntimeError:
        return None
    try:
        if MARKER_KEYWORD in t.keywordnames():
            return str(t.getkeyword(MARKER_KEYWORD))
    finally:
        t.close()
    if os.path.isfile(stamp):
        with open(stamp) as f:
            return f.read()
    return None


def check_replaceable(path) -> None:
    """Raise FileExistsError unless ``path`` is absent or an MS radimg wrote (which
    ``overwrite`` may replace)."""
    path = os.fspath(path)
    if os.path.lexists(path) and radimg_ms_marker(path) is None:
        what = "a Measurement Set" if os.path.isfile(os.path.join(path, "table.dat")) else (
            "a directory" if os.path.isdir(path) else "a file")
        raise FileExistsError(
            f"{path} exists and is {what} that radimg did not simulate; radimg never "
            "replaces it (overwrite replaces only an MS radimg simulated): choose another "
            "input.ms for the simulation"
        )


def _feed_type(corr_types):
    return ("R", "L") if any(c in (5, 6, 7, 8) for c in corr_types) else ("X", "Y")


def _main_desc(nchan, ncorr):
    from casacore import tables as ct

    desc = ct.required_ms_desc("MAIN")
    # Fixed shapes let the tiled storage managers store the arrays directly (fast, compact).
    for col, shape in (("FLAG", [nchan, ncorr]), ("WEIGHT", [ncorr]), ("SIGMA", [ncorr])):
        desc[col]["shape"] = shape
        desc[col]["ndim"] = len(shape)
        desc[col]["option"] = 5  # Direct | FixedShape
    desc["FLAG"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledFlag")
    desc["UVW"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledUVW")
    data = ct.makearrcoldesc(
        "DATA",
        0j,
        valuetype="complex",
        shape=[nchan, ncorr],
        datamanagertype="TiledColumnStMan",
        datamanagergroup="TiledData",
        comment="The data column",
    )
    desc.update(ct.maketabdesc([data]))
    return desc


class MSWriter:
    """Write a Measurement Set row chunk by row chunk; renamed into place on success.

    Parameters
    ----------
    path : str or path-like
        Target MS directory.
    nrows : int
        Total rows of the main table.
    freq : ndarray (chan,) or (spw, chan), float64
        Channel centre frequencies, Hz; a 2-D array writes one spectral window (and data
        description) per row, each of ``chan`` channels (rows name theirs by
        ``put_rows(data_desc_id=)``).
    chan_width : float or ndarray (chan,)
        Channel widths, Hz (the same in every window).
    corr_types : sequence of int
        CASA CORR_TYPE codes, e.g. (9, 12) for XX, YY or (9, 10, 11, 12) for all four.
    phase_centre : (float, float)
        J2000 (ra, dec), radians (FIELD PHASE_DIR, DELAY_DIR, REFERENCE_DIR; SOURCE).
    antenna_positions : ndarray (ant, 3), float64
        ITRF, metres.
    antenna_names : sequence of str
        One per antenna (also written as STATION).
    dish_diameter : float or ndarray (ant,)
        Metres.
    telescope_name : str
        OBSERVATION TELESCOPE_NAME (WSClean/CASA look up beams by it).
    time_range : (float, float)
        First and last integration boundary, MJD seconds UTC.
    field_name : str
    mount : str
    history : str, optional
        Message for the HISTORY table.
    overwrite : bool
        Replace an existing MS at ``path``; otherwise an existing path is an error.
    """

    def __init__(
        self,
        path,
        *,
        nrows,
        freq,
        chan_width,
        corr_types,
        phase_centre,
        antenna_positions,
        antenna_names,
        dish_diameter,
        telescope_name,
        time_range,
        field_name="radimg_sim",
        mount="ALT-AZ",
        history=None,
        overwrite=False,
        marker="radimg.io.ms_write",
    ):
        self.path = os.path.abspath(os.fspath(path))
        if os.path.lexists(self.path) and not overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it)")
        check_replaceable(self.path)
        check_not_inside_table(self.path)
        self.marker = str(marker)
        self.nrows = int(nrows)
        self.freq = np.atleast_2d(np.asarray(freq, dtype=np.float64))
        self.nspw, self.nchan = self.freq.shape
        self.chan_width = np.broadcast_to(np.asarray(chan_width, np.float64), (self.nchan,))
        self.corr_types = [int(c) for c in corr_types]
        bad = [c for c in self.corr_types if c not in _CORR_PRODUCT]
        if bad:
            raise ValueError(f"unsupported correlation type(s) {bad}; use CASA codes 5-12")
        self.ncorr = len(self.corr_types)
        self.phase_centre = (float(phase_centre[0]), float(phase_centre[1]))
        self.positions = np.asarray(antenna_positions, dtype=np.float64).reshape(-1, 3)
        self.names = [str(n) for n in antenna_names]
        if len(self.names) != self.positions.shape[0]:
            raise ValueError("antenna_names and antenna_positions differ in length")
        self.dish = np.broadcast_to(np.asarray(dish_diameter, np.float64), (len(self.names),))
        self.telescope = str(telescope_name)
        self.time_range = (float(time_range[0]), float(time_range[1]))
        self.field_name = str(field_name)
        self.mount = str(mount)
        self.history = history
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, exist_ok=True)
        self.tmp = os.path.join(
            parent, f".{os.path.basename(self.path)}.tmp-{os.getpid()}-{int(_time.time() * 1e3)}"
        )
        self.table = None

    # -- context manager --------------------------------------------------------------
    def __enter__(self):
        from casacore import tables as ct

        desc = _main_desc(self.nchan, self.ncorr)
        self.table = ct.default_ms(self.tmp, desc, ct.makedminfo(desc))
        self.table.addrows(self.nrows)
        self.table.putkeyword(MARKER_KEYWORD, self.marker)
        self._fill_subtables()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.table is not None:
                self.table.flush()
                self.table.close()
                self.table = None
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        self._commit()
        return False

    def _commit(self):
        old = None
        check_replaceable(self.path)  # again: the path may have appeared meanwhile
        if os.path.lexists(self.path):
            old = self.tmp + ".old"
            os.rename(self.path, old)
        os.rename(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # -- rows --------------------------------------------------------------------------
    def put_rows(
        self,
        start,
        *,
        time,
        antenna1,
        antenna2,
        uvw,
        data,
        interval,
        flag=None,
        weight=None,
        sigma=None,
        scan_number=1,
        data_desc_id=0,
    ):
        """Write rows ``[start, start + len(time))`` of the main table.

        Parameters
        ----------
        start : int
        time : ndarray (row,), float64
            Mid-integration, MJD seconds UTC (also TIME_CENTROID).
        antenna1, antenna2 : ndarray (row,), int
        uvw : ndarray (row, 3), float64
            Metres.
        data : ndarray (row, chan, corr) complex, or (row, chan) complex
            2-D data are unpolarised Stokes I: every parallel hand gets it, cross hands 0.
        interval : float
            Integration time, seconds (INTERVAL and EXPOSURE).
        flag : ndarray (row, chan, corr) bool, optional
            Default all False.
        weight, sigma : ndarray (row, corr) float, optional
            Default 1. Give both or neither for consistency (``weight = 1/sigma^2``).
        scan_number : int
        data_desc_id : int
            Spectral window (= data description) of these rows.
        """
        t = self.table
        time = np.asarray(time, dtype=np.float64)
        n = time.size
        if start < 0 or start + n > self.nrows:
            raise ValueError(f"rows [{start}, {start + n}) outside the {self.nrows} rows")
        data = np.asarray(data)
        if data.ndim == 2:
            full = np.zeros((n, self.nchan, self.ncorr), dtype=np.complex64)
            for k, c in enumerate(self.corr_types):
                if c in _PARALLEL:
                    full[:, :, k] = data
            data = full
        if data.shape != (n, self.nchan, self.ncorr):
            raise ValueError(f"data shape {data.shape} != {(n, self.nchan, self.ncorr)}")
        if flag is None:
            flag = np.zeros((n, self.nchan, self.ncorr), dtype=bool)
        if weight is None:
            weight = np.ones((n, self.ncorr), dtype=np.float32)
        if sigma is None:
            sigma = np.ones((n, self.ncorr), dtype=np.float32)
        ints = np.zeros(n, dtype=np.int32)
        t.putcol("TIME", time, start, n)
        t.putcol("TIME_CENTROID", time, start, n)
        t.putcol("INTERVAL", np.full(n, float(interval)), start, n)
        t.putcol("EXPOSURE", np.full(n, float(interval)), start, n)
        t.putcol("ANTENNA1", np.asarray(antenna1, dtype=np.int32), start, n)
        t.putcol("ANTENNA2", np.asarray(antenna2, dtype=np.int32), start, n)
        for col in ("FEED1", "FEED2", "FIELD_ID", "ARRAY_ID", "OBSERVATION_ID"):
            t.putcol(col, ints, start, n)
        if not 0 <= int(data_desc_id) < self.nspw:
            raise ValueError(f"data_desc_id {data_desc_id} outside the {self.nspw} windows")
        t.putcol("DATA_DESC_ID", np.full(n, int(data_desc_id), dtype=np.int32), start, n)
        t.putcol("PROCESSOR_ID", ints, start, n)
        t.putcol("STATE_ID", ints, start, n)
        t.putcol("SCAN_NUMBER", np.full(n, int(scan_number), dtype=np.int32), start, n)
        t.putcol("UVW", np.asarray(uvw, dtype=np.float64), start, n)
        t.putcol("DATA", data.astype(np.complex64, copy=False), start, n)
        flag = np.asarray(flag, dtype=bool)
        t.putcol("FLAG", flag, start, n)
        t.putcol("FLAG_ROW", np.all(flag, axis=(1, 2)), start, n)
        t.putcol("WEIGHT", np.asarray(weight, dtype=np.float32), start, n)
        t.putcol("SIGMA", np.asarray(sigma, dtype=np.float32), start, n)

    # -- subtables ---------------------------------------------------------------------
    def _sub(self, name):
        from casacore.tables import table

        return table(os.path.join(self.tmp, name), ack=False, readonly=False)

    def _fill_subtables(self):
        """Write the rows of the ANTENNA, FEED, FIELD, SPECTRAL_WINDOW, POLARIZATION,
        DATA_DESCRIPTION, OBSERVATION, HISTORY, PROCESSOR, STATE and SOURCE subtables.

        Long because it is a flat table schema: one block of ``putcol`` calls per subtable,
        in the order the MS definition lists them, each readable on its own.
        """
        from casacore import tables as ct

        nant = len(self.names)
        t0, t1 = self.time_range
        tmid, tlen = 0.5 * (t0 + t1), t1 - t0
        ra, dec = self.phase_centre
        direction = np.array([[ra, dec]])

        with self._sub("ANTENNA") as a:
            a.addrows(nant)
            a.putcol("NAME", self.names)
            a.putcol("STATION", self.names)
            a.putcol("TYPE", ["GROUND-BASED"] * nant)
            a.putcol("MOUNT", [self.mount] * nant)
            a.putcol("POSITION", self.positions)
            a.putcol("OFFSET", np.zeros((nant, 3)))
            a.putcol("DISH_DIAMETER", np.asarray(self.dish, dtype=np.float64))
            a.putcol("FLAG_ROW", np.zeros(nant, dtype=bool))

        feeds = _feed_type(self.corr_types)
        with self._sub("FEED") as f:
            f.addrows(nant)
            f.putcol("ANTENNA_ID", np.arange(nant, dtype=np.int32))
            f.putcol("FEED_ID", np.zeros(nant, dtype=np.int32))
            f.putcol("SPECTRAL_WINDOW_ID", np.full(nant, -1, dtype=np.int32))
            f.putcol("TIME", np.full(nant, tmid))
            f.putcol("INTERVAL", np.full(nant, tlen))
            f.putcol("NUM_RECEPTORS", np.full(nant, 2, dtype=np.int32))
            f.putcol("BEAM_ID", np.full(nant, -1, dtype=np.int32))
            f.putcol("BEAM_OFFSET", np.zeros((nant, 2, 2)))
            f.putcol("POLARIZATION_TYPE", np.array([list(feeds)] * nant))
            f.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (nant, 1, 1)))
            f.putcol("POSITION", np.zeros((nant, 3)))
            ang = [0.0, np.pi / 2] if feeds[0] == "X" else [0.0, 0.0]
            f.putcol("RECEPTOR_ANGLE", np.tile(ang, (nant, 1)))

        with self._sub("SPECTRAL_WINDOW") as s:
            s.addrows(self.nspw)
            for k in range(self.nspw):
                s.putcell("NUM_CHAN", k, self.nchan)
                s.putcell("NAME", k, f"SPW{k}")
                s.putcell("REF_FREQUENCY", k, float(self.freq[k, 0]))
                s.putcell("CHAN_FREQ", k, self.freq[k])
                s.putcell("CHAN_WIDTH", k, np.asarray(self.chan_width))
                s.putcell("EFFECTIVE_BW", k, np.abs(self.chan_width))
                s.putcell("RESOLUTION", k, np.abs(self.chan_width))
                s.putcell("MEAS_FREQ_REF", k, 5)  # TOPO
                s.putcell("TOTAL_BANDWIDTH", k, float(np.abs(self.chan_width).sum()))
                s.putcell("NET_SIDEBAND", k, 1)
                s.putcell("IF_CONV_CHAIN", k, 0)
                s.putcell("FREQ_GROUP", k, 0)
                s.putcell("FREQ_GROUP_NAME", k, "")
                s.putcell("FLAG_ROW", k, False)

        with self._sub("POLARIZATION") as p:
            p.addrows(1)
            p.putcell("NUM_CORR", 0, self.ncorr)
            p.putcell("CORR_TYPE", 0, np.array(self.corr_types, dtype=np.int32))
            prod = np.array([_CORR_PRODUCT[c] for c in self.corr_types], dtype=np.int32).T
            p.putcell("CORR_PRODUCT", 0, prod)  # (2, corr)
            p.putcell("FLAG_ROW", 0, False)

        with self._sub("DATA_DESCRIPTION") as d:
            d.addrows(self.nspw)
            for k in range(self.nspw):
                d.putcell("SPECTRAL_WINDOW_ID", k, k)
                d.putcell("POLARIZATION_ID", k, 0)
                d.putcell("FLAG_ROW", k, False)

        with self._sub("FIELD") as f:
            f.addrows(1)
            f.putcell("NAME", 0, self.field_name)
            f.putcell("CODE", 0, "")
            f.putcell("TIME", 0, tmid)
            f.putcell("NUM_POLY", 0, 0)
            for col in ("DELAY_DIR", "PHASE_DIR", "REFERENCE_DIR"):
                f.putcell(col, 0, direction)
            f.putcell("SOURCE_ID", 0, 0)
            f.putcell("FLAG_ROW", 0, False)

        with self._sub("OBSERVATION") as o:
            o.addrows(1)
            o.putcell("TELESCOPE_NAME", 0, self.telescope)
            o.putcell("TIME_RANGE", 0, np.array([t0, t1]))
            o.putcell("OBSERVER", 0, "radimg")
            o.putcell("PROJECT", 0, "radimg simulation")
            o.putcell("RELEASE_DATE", 0, t1)
            o.putcell("SCHEDULE_TYPE", 0, "")
            o.putcell("FLAG_ROW", 0, False)

        with self._sub("STATE") as s:
            s.addrows(1)
            s.putcell("SIG", 0, True)
            s.putcell("REF", 0, False)
            s.putcell("CAL", 0, 0.0)
            s.putcell("LOAD", 0, 0.0)
            s.putcell("SUB_SCAN", 0, 0)
            s.putcell("OBS_MODE", 0, "OBSERVE_TARGET#ON_SOURCE")
            s.putcell("FLAG_ROW", 0, False)

        with self._sub("PROCESSOR") as p:
            p.addrows(1)
            p.putcell("TYPE", 0, "CORRELATOR")
            p.putcell("SUB_TYPE", 0, "radimg-sim")
            p.putcell("TYPE_ID", 0, -1)
            p.putcell("MODE_ID", 0, -1)
            p.putcell("FLAG_ROW", 0, False)

        with self._sub("HISTORY") as h:
            h.addrows(1)
            h.putcell("TIME", 0, t0)
            h.putcell("OBSERVATION_ID", 0, 0)
            h.putcell("MESSAGE", 0, self.history or "written by radimg.io.ms_write")
            h.putcell("PRIORITY", 0, "NORMAL")
            h.putcell("ORIGIN", 0, "radimg.io.ms_write")
            h.putcell("OBJECT_ID", 0, 0)
            h.putcell("APPLICATION", 0, "radimg")
            h.putcell("CLI_COMMAND", 0, np.array([""]))
            h.putcell("APP_PARAMS", 0, np.array([""]))

        # SOURCE is optional in MS v2 but CASA tasks expect it; default_ms does not make it.
        src_path = os.path.join(self.tmp, "SOURCE")
        with ct.default_ms_subtable("SOURCE", src_path) as s:
            s.addrows(1)
            s.putcell("SOURCE_ID", 0, 0)
            s.putcell("TIME", 0, tmid)
            s.putcell("INTERVAL", 0, tlen)
            s.putcell("SPECTRAL_WINDOW_ID", 0, -1)
            s.putcell("NUM_LINES", 0, 0)
            s.putcell("NAME", 0, self.field_name)
            s.putcell("CALIBRATION_GROUP", 0, 0)
            s.putcell("CODE", 0, "")
            s.putcell("DIRECTION", 0, np.array([ra, dec]))
            s.putcell("PROPER_MOTION", 0, np.zeros(2))
        self.table.putkeyword("SOURCE", "Table: " + src_path)


def write_ms(
    path,
    *,
    time,
    antenna1,
    antenna2,
    uvw,
    data,
    interval,
    freq,
    chan_width,
    phase_centre,
    antenna_positions,
    antenna_names,
    dish_diameter=25.0,
    telescope_name="UNKNOWN",
    corr_types=(9, 12),
    flag=None,
    weight=None,
    sigma=None,
    field_name="radimg_sim",
    mount="ALT-AZ",
    history=None,
    overwrite=False,
    marker="radimg.io.ms_write.write_ms",
):
    """Write a complete Measurement Set from arrays in memory (see ``MSWriter``).

    Returns
    -------
    str
        The absolute path of the MS.
    """
    time = np.asarray(time, dtype=np.float64)
    half = 0.5 * float(interval)
    with MSWriter(
        path,
        nrows=time.size,
        freq=freq,
        chan_width=chan_width,
        corr_types=corr_types,
        phase_centre=phase_centre,
        antenna_positions=antenna_positions,
        antenna_names=antenna_names,
        dish_diameter=dish_diameter,
        telescope_name=telescope_name,
        time_range=(time.min() - half, time.max() + half) if time.size else (0.0, 0.0),
        field_name=field_name,
        mount=mount,
        history=history,
        overwrite=overwrite,
        marker=marker,
    ) as w:
        w.put_rows(
            0,
            time=time,
            antenna1=antenna1,
            antenna2=antenna2,
            uvw=uvw,
            data=data,
            interval=interval,
            flag=flag,
            weight=weight,
            sigma=sigma,
        )
    return w.path
