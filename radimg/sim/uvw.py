"""Earth-rotation uvw in the J2000 frame of a phase centre, from ITRF antenna positions.

The baseline vector is rotated from the terrestrial (ITRS) to the celestial (GCRS ~ J2000)
frame with the IAU 2006/2000A precession-nutation and Earth rotation of erfa (``c2t06a``),
then projected on the (u, v, w) axes of the phase centre: u toward east, v toward north,
w toward the source. At the equator of date this is the textbook formula of Thompson, Moran
& Swenson (2017) eq. 4.1 in hour angle and declination; the extra rotation keeps uvw in the
same J2000 frame as the phase centre, as real Measurement Sets do. Polar motion and UT1-UTC
are taken as 0 and aberration is ignored (1e-4 relative), so nothing needs IERS downloads.

Sign (checked against the real MWA MS shipped with pyuvdata, see tests/test_simulate.py):
``uvw = R (pos[ANTENNA1] - pos[ANTENNA2])``.
"""

from __future__ import annotations

import numpy as np

MJD_JD = 2400000.5
# Sidereal days per UT1 day (IERS Conventions): hour angle advances this much faster.
SIDEREAL_RATE = 1.00273781191135448
# A fixed epoch (2024-01-01 00:00 UTC) so simulations are reproducible.
REF_MJD = 60310.0


def _tt(mjd_utc):
    import erfa

    tai1, tai2 = erfa.utctai(MJD_JD, mjd_utc)
    return erfa.taitt(tai1, tai2)


def celestial_to_terrestrial(mjd_utc):
    """GCRS -> ITRS rotation matrices (``v_itrs = M @ v_gcrs``).

    Parameters
    ----------
    mjd_utc : ndarray (time,), float64
        Modified Julian Date, UTC (UT1 = UTC and no polar motion assumed).

    Returns
    -------
    ndarray (time, 3, 3), float64
    """
    import erfa

    mjd = np.atleast_1d(np.asarray(mjd_utc, dtype=np.float64))
    tt1, tt2 = _tt(mjd)
    return np.asarray(erfa.c2t06a(tt1, tt2, MJD_JD, mjd, 0.0, 0.0)).reshape(-1, 3, 3)


def uvw_axes(ra, dec):
    """Rows: the u (east), v (north), w (toward the source) unit vectors at (ra, dec).

    Returns
    -------
    ndarray (3, 3), float64
    """
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    return np.array([[-sa, ca, 0.0], [-sd * ca, -sd * sa, cd], [cd * ca, cd * sa, sd]])


def antenna_uvw(positions, mjd_utc, ra, dec):
    """Projected positions of each antenna relative to the array centre.

    Parameters
    ----------
    positions : ndarray (ant, 3), float64
        ITRF positions, metres.
    mjd_utc : ndarray (time,), float64
        Times, MJD UTC.
    ra, dec : float
        J2000 phase centre, radians.

    Returns
    -------
    ndarray (time, ant, 3), float64
        Metres; baseline uvw is the difference of two antennas' rows.
    """
    pos = np.asarray(positions, dtype=np.float64)
    rel = pos - pos.mean(axis=0)
    m = uvw_axes(ra, dec)[None] @ np.transpose(celestial_to_terrestrial(mjd_utc), (0, 2, 1))
    return np.einsum("tij,aj->tai", m, rel)


def baseline_uvw(positions, ant1, ant2, mjd_utc, ra, dec):
    """uvw of each row, ``R(t) (pos[ant1] - pos[ant2])`` in the J2000 frame of (ra, dec).

    Parameters
    ----------
    positions : ndarray (ant, 3), float64
        ITRF antenna positions, metres.
    ant1, ant2 : ndarray (row,), int
        Antenna indices (MS ANTENNA1, ANTENNA2).
    mjd_utc : ndarray (row,), float64
        Time of each row, MJD UTC (MS TIME / 86400).
    ra, dec : float
        J2000 phase centre, radians.

    Returns
    -------
    ndarray (row, 3), float64
        Metres.
    """
    times, inv = np.unique(np.asarray(mjd_utc, dtype=np.float64), return_inverse=True)
    au = antenna_uvw(positions, times, ra, dec)
    inv = inv.ravel()
    return au[inv, np.asarray(ant1)] - au[inv, np.asarray(ant2)]


def greenwich_apparent_sidereal_time(mjd_utc):
    """GAST in radians (UT1 = UTC)."""
    import erfa

    mjd = np.asarray(mjd_utc, dtype=np.float64)
    tt1, tt2 = _tt(mjd)
    return np.asarray(erfa.gst06a(MJD_JD, mjd, tt1, tt2))


def hour_angle_times(ha_start_h, ha_stop_h, integration_s, ra, lon, ref_mjd=REF_MJD):
    """Mid-integration times whose hour angles tile ``[ha_start_h, ha_stop_h)``.

    Parameters
    ----------
    ha_start_h, ha_stop_h : float
        Hour angle range of the phase centre at the array longitude, hours.
    integration_s : float
        Integration time, seconds (solar).
    ra : float
        Right ascension of the phase centre, radians (J2000; the ~0.3 deg offset from the
        equinox of date only shifts the track by about a minute).
    lon : float
        East longitude of the array, radians.
    ref_mjd : float
        The track is placed on the first transit after this date (UTC).

    Returns
    -------
    ndarray (time,), float64
        MJD UTC of each integration centre.
    """
    span_h = float(ha_stop_h) - float(ha_start_h)
    if span_h <= 0:
        raise ValueError(f"ha_stop_h ({ha_stop_h}) must exceed ha_start_h ({ha_start_h})")
    if integration_s <= 0:
        raise ValueError(f"integration_s must be > 0, got {integration_s}")
    step_h = integration_s * SIDEREAL_RATE / 3600.0  # hour angle per integration
    ntime = max(1, int(np.floor(span_h / step_h + 1e-9)))
    ha = float(ha_start_h) + (np.arange(ntime) + 0.5) * step_h
    # First transit (HA = 0) after ref_mjd, then refined for the sidereal-time nonlinearity.
    two_pi = 2.0 * np.pi
    t = float(ref_mjd)
    ha0 = (greenwich_apparent_sidereal_time(t) + lon - ra) % two_pi
    t += ((-ha0) % two_pi) / two_pi / SIDEREAL_RATE
    for _ in range(2):
        ha0 = (greenwich_apparent_sidereal_time(t) + lon - ra + np.pi) % two_pi - np.pi
        t -= ha0 / two_pi / SIDEREAL_RATE
    return t + ha / 24.0 / SIDEREAL_RATE


def array_longitude(positions):
    """East longitude (radians) of the mean of ITRF positions (ant, 3)."""
    c = np.asarray(positions, dtype=np.float64).mean(axis=0)
    return float(np.arctan2(c[1], c[0]))


def gaussian_uvw(n, rng, *, uv_sigma, uv_max, w_sigma, w_max):
    """Random uvw with Gaussian variable density (Pratley et al. 2018; Pratley & McEwen 2019
    sec. 5): u, v ~ N(0, uv_sigma) and w ~ N(0, w_sigma), each truncated (values beyond
    ``uv_max`` / ``w_max`` in magnitude are drawn again, so no spike sits at the limit).

    Parameters
    ----------
    n : int
        Samples.
    rng : numpy.random.Generator
    uv_sigma, uv_max, w_sigma, w_max : float
        Wavelengths (same unit out).

    Returns
    -------
    ndarray (n, 3), float64
    """
    out = np.empty((int(n), 3))
    for col, sig, lim in ((0, uv_sigma, uv_max), (1, uv_sigma, uv_max), (2, w_sigma, w_max)):
        x = rng.standard_normal(out.shape[0]) * sig
        bad = np.abs(x) > lim
        while bad.any():
            x[bad] = rng.standard_normal(int(bad.sum())) * sig
            bad = np.abs(x) > lim
        out[:, col] = x
    return out
