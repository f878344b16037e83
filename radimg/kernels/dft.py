"""Direct Fourier transform of the measurement equation (predict), for the simulator.

``V(u, v, w) = sum_s S_s(nu) G_s(u, v) exp(+2 pi i (u l_s + v m_s + w (n_s - 1)))``

with u, v, w in wavelengths (MS UVW metres * nu / c), the sign of ``docs/internals.md``,
the full w-term, and ``G_s`` the Fourier transform of a Gaussian source's shape (1 for a
point source). Exact, O(row * chan * source): the reference every faster predict is judged by.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from radimg.constants import C_LIGHT
from radimg.kernels._jit import PARALLEL_JIT_OPTIONS

# Fourier transform of a unit-flux Gaussian of FWHM theta (radians) at spatial frequency q
# (wavelengths): exp(-GAUSS_K * theta^2 * q^2), GAUSS_K = pi^2 / (4 ln 2).
GAUSS_K = math.pi**2 / (4.0 * math.log(2.0))


@njit(**PARALLEL_JIT_OPTIONS)
def _dft_kernel(uvw, scale, l, m, nm1, flux, gmaj, gmin, sin_pa, cos_pa, is_gauss, out):  # noqa: E741
    nrow = uvw.shape[0]
    nchan = scale.shape[0]
    nsrc = l.shape[0]
    two_pi = 2.0 * math.pi
    for r in prange(nrow):
        u0 = uvw[r, 0]
        v0 = uvw[r, 1]
        w0 = uvw[r, 2]
        for c in range(nchan):
            f = scale[c]
            u = u0 * f
            v = v0 * f
            w = w0 * f
            re = 0.0
            im = 0.0
            for s in range(nsrc):
                amp = flux[s, c]
                if is_gauss[s]:
                    # Projections on the major and minor axes (PA east of north, l east).
                    um = u * sin_pa[s] + v * cos_pa[s]
                    un = u * cos_pa[s] - v * sin_pa[s]
                    amp *= math.exp(-(gmaj[s] * um * um + gmin[s] * un * un))
                ph = two_pi * (u * l[s] + v * m[s] + w * nm1[s])
                re += amp * math.cos(ph)
                im += amp * math.sin(ph)
            out[r, c] = complex(re, im)
    return out


def dft_predict(
    uvw,
    freq,
    l,  # noqa: E741
    m,
    flux,
    major=None,
    minor=None,
    pa=None,
    *,
    nthreads: int = 1,
    out=None,
):
    """Visibilities of point and Gaussian sources by a direct Fourier transform.

    Parameters
    ----------
    uvw : ndarray (row, 3), float64
        Baseline coordinates, metres (MS convention).
    freq : ndarray (chan,), float64
        Channel frequencies, Hz.
    l, m : ndarray (src,), float64
        Direction cosines of the sources (l toward east, m toward north), ``l^2 + m^2 < 1``.
    flux : ndarray (src, chan), float64
        Apparent flux density per channel, Jy (integrated flux for Gaussians).
    major, minor : ndarray (src,), float64, optional
        Gaussian FWHM, radians; 0 (or omitted) means a point source.
    pa : ndarray (src,), float64, optional
        Position angle of the major axis, radians east of north.
    nthreads : int
        Threads used (numba prange).
    out : ndarray (row, chan), complex128, optional
        Output buffer.

    Returns
    -------
    ndarray (row, chan), complex128
        ``sum_s flux G_s exp(+2 pi i (u l + v m + w (n - 1)))``.
    """
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    l = np.atleast_1d(np.asarray(l, dtype=np.float64))  # noqa: E741
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    nsrc, nchan = l.size, freq.size
    flux = np.ascontiguousarray(np.broadcast_to(np.asarray(flux, np.float64), (nsrc, nchan)))
    if uvw.ndim != 2 or uvw.shape[1] != 3:
        raise ValueError(f"uvw must have shape (row, 3), got {uvw.shape}")
    if m.shape != l.shape:
        raise ValueError(f"l and m differ in shape: {l.shape} vs {m.shape}")
    r2 = l * l + m * m
    if np.any(r2 >= 1.0):
        raise ValueError("every source needs l^2 + m^2 < 1 (above the horizon of the phase centre)")
    # n - 1 without cancellation for sources near the phase centre.
    nm1 = -r2 / (1.0 + np.sqrt(1.0 - r2))

    def _axis(a):
        return np.zeros(nsrc) if a is None else np.broadcast_to(np.asarray(a, np.float64), (nsrc,))

    major, minor, pa = _axis(major), _axis(minor), _axis(pa)
    is_gauss = (major > 0) | (minor > 0)
    gmaj = np.ascontiguousarray(GAUSS_K * major**2)
    gmin = np.ascontiguousarray(GAUSS_K * minor**2)
    sin_pa, cos_pa = np.ascontiguousarray(np.sin(pa)), np.ascontiguousarray(np.cos(pa))
    if out is None:
        out = np.empty((uvw.shape[0], nchan), dtype=np.complex128)
    elif out.shape != (uvw.shape[0], nchan) or out.dtype != np.complex128:
        raise ValueError(f"out must be complex128 of shape {(uvw.shape[0], nchan)}")
    if uvw.shape[0] == 0:
        return out
    scale = freq / C_LIGHT
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(nthreads), numba.config.NUMBA_NUM_THREADS)))
    try:
        _dft_kernel(uvw, scale, l, m, nm1, flux, gmaj, gmin, sin_pa, cos_pa, is_gauss, out)
    finally:
        numba.set_num_threads(old)
    return out
