"""Polarised sources for the simulator: Stokes spectra with Faraday rotation, and the
correlations linear or circular feeds measure.

Conventions (those WSClean 3.1 images with, ``docs/internals.md``): feeds fixed on the sky
(no parallactic rotation), for linear feeds ``XX = I + Q``, ``YY = I - Q``,
``XY = U + iV``, ``YX = U - iV``; for circular feeds ``RR = I + V``, ``LL = I - V``,
``RL = Q + iU``, ``LR = Q - iU``. Each Stokes parameter's visibility is the Fourier
transform of its (real) brightness, so ``U + iV`` is a complex combination of two complex
visibilities.
"""

from __future__ import annotations

import numpy as np

C_LIGHT = 299792458.0

LINEAR = (9, 10, 11, 12)  # XX XY YX YY
CIRCULAR = (5, 6, 7, 8)  # RR RL LR LL

# CORR_TYPE -> ((Stokes, factor), ...): the correlation is sum factor * V_stokes
_FROM_STOKES = {
    9: (("I", 1.0), ("Q", 1.0)),
    10: (("U", 1.0), ("V", 1j)),
    11: (("U", 1.0), ("V", -1j)),
    12: (("I", 1.0), ("Q", -1.0)),
    5: (("I", 1.0), ("V", 1.0)),
    6: (("Q", 1.0), ("U", 1j)),
    7: (("Q", 1.0), ("U", -1j)),
    8: (("I", 1.0), ("V", -1.0)),
}


def corr_types(feeds: str, correlations: str, polarised: bool, layout_corr=(9, 12)):
    """CORR_TYPE codes of a simulated MS.

    Parameters
    ----------
    feeds : {"auto", "linear", "circular"}
        auto: the layout's (MWA and MeerKAT linear, VLA circular).
    correlations : {"auto", "parallel", "all"}
        parallel: XX, YY (RR, LL); all: the four; auto: all four when ``polarised``.
    polarised : bool
        Whether any source has Q, U or V.
    layout_corr : sequence of int
        The layout's correlations (its feed type).

    Returns
    -------
    tuple of int
    """
    if feeds == "auto":
        feeds = "circular" if any(c in CIRCULAR for c in layout_corr) else "linear"
    four = LINEAR if feeds == "linear" else CIRCULAR
    if correlations == "all" or (correlations == "auto" and polarised):
        return four
    return (four[0], four[3])


def stokes_spectra(src, freq, ref_freq_hz):
    """Q, U, V of one source at each channel (Jy), beside I = flux_jy (f/ref)^alpha.

    ``q_jy``, ``u_jy``, ``v_jy`` are given at ``ref_freq_hz`` and follow I's power law; the
    linear polarisation ``P = Q + iU`` turns by the rotation measure:
    ``P(f) = P(ref) (f/ref)^alpha exp(2i RM (lambda^2 - lambda_ref^2))``.

    Returns
    -------
    q, u, v : ndarray (chan,), float64
    """
    freq = np.asarray(freq, dtype=np.float64)
    scale = (freq / ref_freq_hz) ** float(src.get("spectral_index", 0.0) or 0.0)
    p0 = complex(float(src.get("q_jy", 0.0) or 0.0), float(src.get("u_jy", 0.0) or 0.0))
    rm = float(src.get("rm_rad_m2", 0.0) or 0.0)
    dl2 = (C_LIGHT / freq) ** 2 - (C_LIGHT / ref_freq_hz) ** 2
    p = p0 * scale * np.exp(2j * rm * dl2)
    return p.real, p.imag, float(src.get("v_jy", 0.0) or 0.0) * scale


def is_polarised(sources) -> bool:
    """Whether any source dict has a non-zero Q, U or V."""
    return any(float(s.get(k, 0.0) or 0.0) != 0.0 for s in sources
               for k in ("q_jy", "u_jy", "v_jy"))


def correlations(vis_stokes: dict, corr):
    """Correlations from Stokes visibilities.

    Parameters
    ----------
    vis_stokes : dict str -> ndarray (row, chan) complex
        ``"I"`` always; ``"Q"``, ``"U"``, ``"V"`` when present (absent = 0).
    corr : sequence of int
        CORR_TYPE codes to make.

    Returns
    -------
    ndarray (row, chan, corr), complex128
    """
    vi = vis_stokes["I"]
    out = np.zeros(vi.shape + (len(corr),), dtype=np.complex128)
    for k, c in enumerate(corr):
        for name, f in _FROM_STOKES[int(c)]:
            if name in vis_stokes:
                out[:, :, k] += f * vis_stokes[name]
    return out
