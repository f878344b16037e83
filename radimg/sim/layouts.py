"""Antenna layouts: the published ones shipped in ``radimg/data/layouts/``, or an MS's own.

Each shipped file is plain text: ``# key: value`` header lines (source and conversion notes,
``telescope``, ``frame`` ITRF or ENU, ``dish_diameter_m``, ``mount`` and for ENU the
reference position) and one ``name x y z`` line per antenna.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass

import numpy as np

# name -> (file, default correlation types: linear feeds XX,YY or circular RR,LL)
KNOWN_LAYOUTS = {
    "mwa": ("mwa_phase1.txt", (9, 12)),
    "vla": ("vla_d.txt", (5, 8)),
    "meerkat": ("meerkat.txt", (9, 12)),
}


@dataclass
class Layout:
    """An array of antennas.

    Attributes
    ----------
    telescope : str
        Telescope name written to OBSERVATION::TELESCOPE_NAME.
    names : list of str
        Antenna (station) names, one per antenna.
    positions : ndarray (ant, 3), float64
        ITRF positions, metres.
    dish_diameter : ndarray (ant,), float64
        Metres.
    mount : str
        Antenna mount, e.g. "ALT-AZ".
    corr_types : tuple of int
        Parallel-hand correlations a simulation writes (CASA codes: 9,12 = XX,YY; 5,8 = RR,LL).
    """

    telescope: str
    names: list
    positions: np.ndarray
    dish_diameter: np.ndarray
    mount: str = "ALT-AZ"
    corr_types: tuple = (9, 12)

    @property
    def centre(self) -> np.ndarray:
        """Mean ITRF position, metres (3,)."""
        return self.positions.mean(axis=0)


def enu_to_itrf(enu, lat_rad, lon_rad, height_m):
    """ITRF positions of east/north/up offsets from a WGS84 reference position.

    Parameters
    ----------
    enu : ndarray (ant, 3), float64
        East, north, up offsets, metres.
    lat_rad, lon_rad, height_m : float
        Geodetic (WGS84) reference position.

    Returns
    -------
    ndarray (ant, 3), float64
        ITRF x, y, z, metres.
    """
    import erfa

    ref = np.asarray(erfa.gd2gc(1, lon_rad, lat_rad, height_m), dtype=np.float64)
    sl, cl = np.sin(lat_rad), np.cos(lat_rad)
    so, co = np.sin(lon_rad), np.cos(lon_rad)
    # Columns: the east, north and up unit vectors in Earth-centred axes.
    rot = np.array([[-so, -sl * co, cl * co], [co, -sl * so, cl * so], [0.0, cl, sl]])
    return ref[None, :] + np.asarray(enu, dtype=np.float64) @ rot.T


def _parse_layout(text, origin):
    header, names, xyz = {}, [], []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            key, sep, val = s[1:].partition(":")
            if sep and key.strip() and " " not in key.strip():
                header[key.strip()] = val.strip()
            continue
        parts = s.split()
        if len(parts) != 4:
            raise ValueError(f"{origin}: bad layout line {line!r} (expected: name x y z)")
        names.append(parts[0])
        xyz.append([float(p) for p in parts[1:]])
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    frame = header.get("frame", "ITRF").upper()
    if frame == "ENU":
        lat = np.radians(float(header["reference_lat_deg"]))
        lon = np.radians(float(header["reference_lon_deg"]))
        xyz = enu_to_itrf(xyz, lat, lon, float(header["reference_height_m"]))
    elif frame != "ITRF":
        raise ValueError(f"{origin}: unknown frame {frame!r} (expected ITRF or ENU)")
    diam = float(header.get("dish_diameter_m", 0.0))
    return header, names, xyz, diam


def layout_from_ms(path) -> Layout:
    """The antennas of an existing Measurement Set's ANTENNA table (read-only).

    Antennas flagged in the ANTENNA table or placed at the Earth's centre (unused rows)
    are dropped.
    """
    from radimg.io.ms import MSError, open_table

    path = os.fspath(path)
    t = open_table(path, "ANTENNA")
    try:
        names = list(t.getcol("NAME"))
        pos = np.asarray(t.getcol("POSITION"), dtype=np.float64).reshape(-1, 3)
        diam = np.asarray(t.getcol("DISH_DIAMETER"), dtype=np.float64)
        mounts = list(t.getcol("MOUNT")) if "MOUNT" in t.colnames() else ["ALT-AZ"] * len(names)
        flag = np.asarray(t.getcol("FLAG_ROW"), dtype=bool) if "FLAG_ROW" in t.colnames() else None
    finally:
        t.close()
    keep = np.linalg.norm(pos, axis=1) > 1e6
    if flag is not None:
        keep &= ~flag
    if keep.sum() < 2:
        raise MSError(f"{path}: the ANTENNA table holds fewer than 2 usable antennas")
    telescope = "UNKNOWN"
    if os.path.isdir(os.path.join(path, "OBSERVATION")):
        o = open_table(path, "OBSERVATION")
        try:
            if o.nrows():
                telescope = str(o.getcell("TELESCOPE_NAME", 0)) or telescope
        finally:
            o.close()
    idx = np.nonzero(keep)[0]
    return Layout(
        telescope=telescope,
        names=[names[i] or f"ANT{i}" for i in idx],
        positions=pos[idx],
        dish_diameter=diam[idx],
        mount=str(mounts[idx[0]]) or "ALT-AZ",
    )


def load_layout(telescope: str) -> Layout:
    """A shipped layout ("mwa", "vla", "meerkat") or the ANTENNA table of an MS path.

    Parameters
    ----------
    telescope : str
        Case-insensitive layout name, or the path of an existing Measurement Set.
    """
    key = str(telescope).lower()
    if key in KNOWN_LAYOUTS:
        fname, corr = KNOWN_LAYOUTS[key]
        res = importlib.resources.files("radimg").joinpath("data", "layouts", fname)
        text = res.read_text(encoding="utf-8")
        header, names, xyz, diam = _parse_layout(text, fname)
        return Layout(
            telescope=header.get("telescope", key.upper()),
            names=names,
            positions=xyz,
            dish_diameter=np.full(len(names), diam),
            mount=header.get("mount", "ALT-AZ"),
            corr_types=corr,
        )
    if os.path.isdir(os.fspath(telescope)):
        return layout_from_ms(telescope)
    raise ValueError(
        f"unknown telescope {telescope!r}: expected one of {', '.join(KNOWN_LAYOUTS)} "
        "or the path of an existing Measurement Set"
    )
