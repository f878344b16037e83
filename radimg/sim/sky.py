"""Sky models: point and Gaussian sources, positions by the SIN projection."""

from __future__ import annotations

import numpy as np

from radimg.constants import ARCSEC

SOURCE_DEFAULTS = {
    "spectral_index": 0.0,
    "ref_freq_hz": None,
    "major_arcsec": 0.0,
    "minor_arcsec": 0.0,
    "pa_deg": 0.0,
    # polarisation (radimg.sim.polarisation): Jy at ref_freq_hz, rad/m^2
    "q_jy": 0.0,
    "u_jy": 0.0,
    "v_jy": 0.0,
    "rm_rad_m2": 0.0,
}
SOURCE_REQUIRED = ("ra_deg", "dec_deg", "flux_jy")


def radec_to_lm(ra, dec, ra0, dec0):
    """Direction cosines of (ra, dec) relative to the phase centre (ra0, dec0), SIN projection.

    ``l = cos(dec) sin(ra - ra0)`` (toward east),
    ``m = sin(dec) cos(dec0) - cos(dec) sin(dec0) cos(ra - ra0)`` (toward north).

    Parameters
    ----------
    ra, dec : float or ndarray (src,)
        Radians.
    ra0, dec0 : float
        Phase centre, radians.

    Returns
    -------
    l, m, n : ndarray (src,), float64
        ``n = sin(dec) sin(dec0) + cos(dec) cos(dec0) cos(ra - ra0)`` (negative below the
        horizon of the phase centre).
    """
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    dra = ra - ra0
    l = np.cos(dec) * np.sin(dra)  # noqa: E741
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(dra)
    return l, m, n


def sky_arrays(sources, ra0, dec0, freq, default_ref_freq_hz):
    """Arrays for ``radimg.kernels.dft.dft_predict`` from a list of source dicts.

    Parameters
    ----------
    sources : list of dict
        Keys ``ra_deg``, ``dec_deg``, ``flux_jy`` and optionally ``spectral_index`` (0),
        ``ref_freq_hz`` (``default_ref_freq_hz``), ``major_arcsec``, ``minor_arcsec`` (FWHM;
        0 = point) and ``pa_deg`` (east of north).
    ra0, dec0 : float
        Phase centre, radians.
    freq : ndarray (chan,), float64
        Hz.
    default_ref_freq_hz : float
        Reference frequency of ``flux_jy`` when a source gives none.

    Returns
    -------
    dict
        ``l``, ``m`` (src,), ``flux`` (src, chan) with ``S(f) = flux_jy (f/ref)^alpha``,
        ``major``, ``minor``, ``pa`` (src,) radians, and ``flux_q``, ``flux_u``,
        ``flux_v`` (src, chan) (:func:`radimg.sim.polarisation.stokes_spectra`).
    """
    freq = np.asarray(freq, dtype=np.float64)
    rows = []
    for i, src in enumerate(sources):
        unknown = set(src) - set(SOURCE_REQUIRED) - set(SOURCE_DEFAULTS)
        if unknown:
            raise ValueError(f"source {i}: unknown key(s) {sorted(unknown)}")
        missing = [k for k in SOURCE_REQUIRED if src.get(k) is None]
        if missing:
            raise ValueError(f"source {i}: missing required key(s) {missing}")
        rows.append({**SOURCE_DEFAULTS, **src})
    if not rows:
        z = np.zeros(0)
        e = np.zeros((0, freq.size))
        return {"l": z, "m": z, "flux": e, "major": z, "minor": z, "pa": z,
                "flux_q": e, "flux_u": e, "flux_v": e}
    ra = np.radians([r["ra_deg"] for r in rows])
    dec = np.radians([r["dec_deg"] for r in rows])
    l, m, n = radec_to_lm(ra, dec, ra0, dec0)  # noqa: E741
    if np.any(n <= 0):
        bad = [i for i in range(len(rows)) if n[i] <= 0]
        raise ValueError(f"source(s) {bad} lie 90 deg or more from the phase centre")
    s0 = np.array([r["flux_jy"] for r in rows], dtype=np.float64)
    alpha = np.array([r["spectral_index"] for r in rows], dtype=np.float64)
    ref = np.array(
        [default_ref_freq_hz if r["ref_freq_hz"] is None else r["ref_freq_hz"] for r in rows],
        dtype=np.float64,
    )
    flux = s0[:, None] * (freq[None, :] / ref[:, None]) ** alpha[:, None]
    major = np.array([r["major_arcsec"] for r in rows], dtype=np.float64) * ARCSEC
    minor = np.array([r["minor_arcsec"] for r in rows], dtype=np.float64) * ARCSEC
    # A Gaussian given only a major axis is circular.
    minor = np.where((minor == 0) & (major > 0), major, minor)
    pa = np.radians([r["pa_deg"] for r in rows])
    from radimg.sim.polarisation import stokes_spectra

    quv = np.array([stokes_spectra(r, freq, rf) for r, rf in zip(rows, ref, strict=True)])
    return {"l": l, "m": m, "flux": flux, "major": major, "minor": minor, "pa": pa,
            "flux_q": quv[:, 0], "flux_u": quv[:, 1], "flux_v": quv[:, 2]}
