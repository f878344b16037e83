"""The celestial WCS of radimg's images (north up, east left, SIN projection, as WSClean
writes it): the dict a product stores on ``/images`` (:func:`make_wcs_info`) and the
``astropy.wcs.WCS`` made from it (:func:`image_wcs`).

Pixel ``[iy, ix]`` has ``l = -(ix - npix_x//2) * cell``, ``m = (iy - npix_y//2) * cell``;
``CRPIX = npix//2 + 1``, ``CDELT1 = -cell``, ``CDELT2 = +cell`` (docs/internals.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["WCS_KEYS", "OBS_KEYS", "STOKES_CODES", "make_wcs_info", "check_wcs_info",
           "image_wcs", "attr_str"]

WCS_KEYS = (
    "ctype",
    "crval_deg",
    "crpix",
    "cdelt_deg",
    "freq_hz",
    "bmaj_deg",
    "bmin_deg",
    "bpa_deg",
)
#: What a FITS image of the observation carries besides the WCS, with the value an older
#: product (or an unknown) reads as: the imaged band's total width (FITS CDELT3; 0 = unknown),
#: the Stokes parameter, DATE-OBS (ISO 8601 UTC), TELESCOP, OBSERVER and OBJECT.
OBS_KEYS = {
    "bandwidth_hz": 0.0,
    "stokes": "I",
    "date_obs": "",
    "telescope": "",
    "observer": "",
    "field_name": "",
}
#: FITS STOKES axis values (Greisen & Calabretta 2002, Table 7)
STOKES_CODES = {
    "I": 1,
    "Q": 2,
    "U": 3,
    "V": 4,
    "RR": -1,
    "LL": -2,
    "RL": -3,
    "LR": -4,
    "XX": -5,
    "YY": -6,
    "XY": -7,
    "YX": -8,
}


def attr_str(v) -> str:
    """An HDF5 string attribute as ``str`` (h5py may return bytes)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def make_wcs_info(
    npix_x: int,
    npix_y: int,
    cell_rad: float,
    phase_centre_rad: tuple[float, float],
    freq_hz: float,
    beam_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    **obs,
) -> dict:
    """The ``wcs_info`` dict of ``write_product`` for an image in radimg's orientation.

    Parameters
    ----------
    npix_x, npix_y : int
        Image width and height in pixels.
    cell_rad : float
        Pixel size, radians (the same on both axes).
    phase_centre_rad : (float, float)
        Phase centre (ra, dec), radians, as ``VisData.phase_centre``.
    freq_hz : float
        Reference (mean) frequency of the image, Hz.
    beam_deg : (float, float, float), optional
        Restoring beam (bmaj FWHM, bmin FWHM, bpa east of north), degrees; zeros if none.
    **obs
        Any of :data:`OBS_KEYS` (``bandwidth_hz``, ``stokes``, ``date_obs``, ``telescope``,
        ``observer``, ``field_name``); the others take their defaults.

    Returns
    -------
    dict
        Keys ``ctype, crval_deg, crpix, cdelt_deg, freq_hz, bmaj_deg, bmin_deg, bpa_deg``
        and :data:`OBS_KEYS`. ``crpix`` is FITS 1-based: ``(npix_x//2 + 1, npix_y//2 + 1)``.
    """
    unknown = set(obs) - set(OBS_KEYS)
    if unknown:
        raise TypeError(
            f"make_wcs_info: unknown keys {sorted(unknown)} (OBS_KEYS: {list(OBS_KEYS)})"
        )
    cell_deg = math.degrees(cell_rad)
    ra, dec = (math.degrees(a) for a in phase_centre_rad)
    return {
        "ctype": ("RA---SIN", "DEC--SIN"),
        "crval_deg": (ra % 360.0, dec),
        "crpix": (npix_x // 2 + 1.0, npix_y // 2 + 1.0),
        "cdelt_deg": (-cell_deg, cell_deg),
        "freq_hz": float(freq_hz),
        "bmaj_deg": float(beam_deg[0]),
        "bmin_deg": float(beam_deg[1]),
        "bpa_deg": float(beam_deg[2]),
        **{k: type(v)(obs.get(k, v)) for k, v in OBS_KEYS.items()},
    }


def check_wcs_info(wcs_info: Mapping) -> dict:
    """``wcs_info`` checked and normalised (tuples of floats, :data:`OBS_KEYS` filled in)."""
    missing = [k for k in WCS_KEYS if k not in wcs_info and k != "ctype"]
    if missing:
        raise ValueError(f"wcs_info lacks {', '.join(missing)} (see make_wcs_info)")
    out = {
        "ctype": tuple(str(c) for c in wcs_info.get("ctype", ("RA---SIN", "DEC--SIN"))),
        "crval_deg": tuple(float(x) for x in wcs_info["crval_deg"]),
        "crpix": tuple(float(x) for x in wcs_info["crpix"]),
        "cdelt_deg": tuple(float(x) for x in wcs_info["cdelt_deg"]),
    }
    for k in ("freq_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
        out[k] = float(wcs_info[k])
    for k in ("ctype", "crval_deg", "crpix", "cdelt_deg"):
        if len(out[k]) != 2:
            raise ValueError(f"wcs_info['{k}'] must have two entries (x, y), got {out[k]!r}")
    for k, default in OBS_KEYS.items():
        v = wcs_info.get(k, default)
        out[k] = attr_str(v) if isinstance(default, str) else float(v)
    return out


def _mjd(iso: str):
    """MJD (UTC days) of an ISO 8601 date-time, None when it does not parse."""
    import datetime

    try:
        t = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (t - datetime.datetime(1858, 11, 17, tzinfo=t.tzinfo)).total_seconds() / 86400.0


def image_wcs(wcs_info: Mapping, *, spectral: bool = False, stokes_axis: bool = True):
    """An ``astropy.wcs.WCS`` for the images described by ``wcs_info``.

    Parameters
    ----------
    wcs_info : mapping
        As stored on ``/images`` (see ``make_wcs_info``).
    spectral : bool, optional
        Add a degenerate FREQ axis (CRVAL3 the mean frequency, CDELT3 the imaged band's
        total width, as WSClean writes them) and, with ``stokes_axis``, a STOKES axis;
        default: the 2-D celestial WCS only. DATE-OBS (and MJD-OBS) come with it when known.
    stokes_axis : bool, optional
        With ``spectral``: the fourth, STOKES axis (WSClean's layout); default true.

    Returns
    -------
    astropy.wcs.WCS
        Pixel coordinates are 0-based ``(ix, iy)`` in astropy's ``pixel_to_world``.
    """
    from astropy.wcs import WCS

    info = check_wcs_info(wcs_info)
    w = WCS(naxis=(4 if stokes_axis else 3) if spectral else 2)
    ctype = list(info["ctype"])
    crval = list(info["crval_deg"])
    crpix = list(info["crpix"])
    cdelt = list(info["cdelt_deg"])
    cunit = ["deg", "deg"]
    if spectral:
        # CDELT must not be 0 (a singular WCS): an unknown band width becomes 1 Hz
        bw = info["bandwidth_hz"] if info["bandwidth_hz"] > 0 else 1.0
        ctype += ["FREQ"]
        crval += [info["freq_hz"]]
        crpix += [1.0]
        cdelt += [bw]
        cunit += ["Hz"]
        if stokes_axis:
            ctype += ["STOKES"]
            crval += [float(STOKES_CODES.get(info["stokes"].upper(), 1))]
            crpix += [1.0]
            cdelt += [1.0]
            cunit += [""]
    w.wcs.ctype = ctype
    w.wcs.crval = crval
    w.wcs.crpix = crpix
    w.wcs.cdelt = cdelt
    w.wcs.cunit = cunit
    # MS phase centres are J2000; WSClean labels its images the same way.
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    if spectral:
        w.wcs.specsys = "TOPOCENT"
        if info["date_obs"]:
            w.wcs.dateobs = info["date_obs"]
            mjd = _mjd(info["date_obs"])
            if mjd is not None:
                w.wcs.mjdobs = mjd
    w.wcs.set()
    return w
