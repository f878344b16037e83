"""Imaging weights: natural, uniform, Briggs (robust) and a Gaussian taper (pure, no MPI).

The density grid is computed per rank with :func:`density_grid`; the pipeline sums the
local grids over ranks (Allreduce) and passes the global grid back in as ``density=``, so the
weights are identical to a serial run on all the data.

Conventions
-----------
- uv cells are ``1 / FOV`` wavelengths with ``FOV = npix * cell_rad`` per axis (the unpadded
  image), centred on ``(u, v) = (0, 0)`` at grid index ``(npix_y // 2, npix_x // 2)``:
  ``iu = round(u * npix_x * cell_rad) + npix_x // 2`` (same for v). Samples whose cell is
  off the grid add no density and keep their natural weight (they lie beyond the uv range
  the image resolves).
- Hermitian: every sample also counts at ``(-u, -v)``, since the image is real and the grid
  holds both halves. So ``sum(D) = 2 sum(w)`` for samples on the grid.
- Uniform: ``w / D(cell)``; summed over the samples *and their conjugates* in an occupied
  cell the weights total exactly 1.
- Briggs (Briggs 1995; CASA/WSClean form): ``w / (1 + f^2 D)`` with
  ``f^2 = (5 * 10**-R)**2 / (sum_cells D^2 / sum_cells D)``. ``sum D`` (= the Hermitian sum
  of weights) is used for ``sum w`` so the ratio is the density-weighted mean density.
  R = -2 is close to uniform (up to a constant), R = +2 close to natural.
- Taper: ``exp(-rho^2 / (2 sigma_uv^2))`` with ``rho = |(u, v)|`` in wavelengths. The taper
  is specified, as in WSClean's ``-taper-gaussian``, by the FWHM (arcsec) of the image-domain
  Gaussian it convolves the PSF with: ``sigma_l = FWHM / (2 sqrt(2 ln 2))`` radians and
  ``sigma_uv = 1 / (2 pi sigma_l)`` wavelengths (the Fourier pair of that Gaussian).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from radimg.kernels._jit import JIT_OPTIONS

__all__ = ["density_grid", "imaging_weights", "taper_sigma_uv", "C_LIGHT"]

C_LIGHT = 299792458.0
ARCSEC = math.pi / (180.0 * 3600.0)


@njit(**JIT_OPTIONS)
def _density_kernel(uvw, freq, weight, nx, ny, scale_x, scale_y, out):
    nrow = uvw.shape[0]
    nchan = freq.shape[0]
    for r in range(nrow):
        for c in range(nchan):
            wt = weight[r, c]
            if wt == 0.0:
                continue
            f = freq[c] / 299792458.0
            du = uvw[r, 0] * f * scale_x
            dv = uvw[r, 1] * f * scale_y
            iu = int(math.floor(du + 0.5))
            iv = int(math.floor(dv + 0.5))
            # sample itself
            ju = iu + nx // 2
            jv = iv + ny // 2
            if 0 <= ju < nx and 0 <= jv < ny:
                out[jv, ju] += wt
            # Hermitian conjugate (-u, -v): rounding is mirrored so both land symmetrically
            ju = -iu + nx // 2
            jv = -iv + ny // 2
            if 0 <= ju < nx and 0 <= jv < ny:
                out[jv, ju] += wt
    return out


@njit(**JIT_OPTIONS)
def _lookup_kernel(uvw, freq, weight, nx, ny, scale_x, scale_y, density, out):
    """out[r, c] = D at the sample's own cell (0 off the grid)."""
    nrow = uvw.shape[0]
    nchan = freq.shape[0]
    for r in range(nrow):
        for c in range(nchan):
            out[r, c] = 0.0
            if weight[r, c] == 0.0:
                continue
            f = freq[c] / 299792458.0
            iu = int(math.floor(uvw[r, 0] * f * scale_x + 0.5)) + nx // 2
            iv = int(math.floor(uvw[r, 1] * f * scale_y + 0.5)) + ny // 2
            if 0 <= iu < nx and 0 <= iv < ny:
                out[r, c] = density[iv, iu]
    return out


def _check(uvw, freq, weight):
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
    weight = np.asarray(weight)
    if uvw.ndim != 2 or uvw.shape[1] != 3:
        raise ValueError(f"uvw must be (row, 3) metres, got shape {uvw.shape}")
    if weight.shape != (uvw.shape[0], freq.shape[0]):
        raise ValueError(
            f"weight must be (row, chan) = {(uvw.shape[0], freq.shape[0])}, got {weight.shape}"
        )
    return uvw, freq, np.ascontiguousarray(weight, dtype=np.float64)


def density_grid(uvw, freq, weight, npix_x, npix_y, cell_rad, out=None):
    """Sum of weights per uv cell, Hermitian (each sample also at ``(-u, -v)``).

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    weight : ndarray (row, chan) float; 0 = flagged (not counted)
    npix_x, npix_y : int
        Image size; the grid has the same shape and cells of ``1 / (npix * cell_rad)`` wavelengths.
    cell_rad : float
    out : ndarray (npix_y, npix_x) float64, optional
        Accumulated into (not zeroed) when given.

    Returns
    -------
    ndarray (npix_y, npix_x) float64, ``[iv, iu]``; the local density (Allreduce it over ranks).
    """
    uvw, freq, weight = _check(uvw, freq, weight)
    if out is None:
        out = np.zeros((npix_y, npix_x), dtype=np.float64)
    elif out.shape != (npix_y, npix_x) or out.dtype != np.float64:
        raise ValueError("out must be float64 (npix_y, npix_x)")
    _density_kernel(uvw, freq, weight, npix_x, npix_y, npix_x * cell_rad, npix_y * cell_rad, out)
    return out


def taper_sigma_uv(taper_arcsec: float) -> float:
    """uv-domain sigma (wavelengths) of a Gaussian taper whose image-domain FWHM is given."""
    sigma_l = taper_arcsec * ARCSEC / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return 1.0 / (2.0 * math.pi * sigma_l)


def imaging_weights(
    uvw,
    freq,
    weight,
    *,
    scheme,
    robust=0.0,
    npix_x,
    npix_y,
    cell_rad,
    taper_arcsec=0.0,
    density=None,
):
    """Imaging weights per sample.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    weight : ndarray (row, chan) float32 | float64; 0 = flagged (stays 0)
    scheme : {"natural", "uniform", "briggs"}
    robust : float
        Briggs robustness R (used only for ``scheme="briggs"``).
    npix_x, npix_y : int
    cell_rad : float
    taper_arcsec : float
        FWHM of the image-domain Gaussian taper in arcsec (0: none). See module docstring.
    density : ndarray (npix_y, npix_x) float64, optional
        The *global* density grid (sum over ranks of :func:`density_grid`). Computed from
        these samples when omitted (serial).

    Returns
    -------
    ndarray (row, chan), dtype of ``weight``. Samples outside the density grid keep their
    natural weight under uniform/Briggs (they fall outside the imaged uv range).
    """
    dtype = np.asarray(weight).dtype
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    uvw, freq, w = _check(uvw, freq, weight)
    scheme = scheme.lower()
    if scheme == "natural":
        out = w.copy()
    elif scheme in ("uniform", "briggs"):
        if density is None:
            density = density_grid(uvw, freq, w, npix_x, npix_y, cell_rad)
        density = np.ascontiguousarray(density, dtype=np.float64)
        if density.shape != (npix_y, npix_x):
            raise ValueError(f"density must be (npix_y, npix_x) = {(npix_y, npix_x)}")
        d = np.empty_like(w)
        _lookup_kernel(
            uvw, freq, w, npix_x, npix_y, npix_x * cell_rad, npix_y * cell_rad, density, d
        )
        on_grid = d > 0
        out = w.copy()
        if scheme == "uniform":
            out[on_grid] = w[on_grid] / d[on_grid]
        else:
            sum_d = float(density.sum())
            sum_d2 = float(np.sum(density * density))
            if sum_d > 0:
                f2 = (5.0 * 10.0 ** (-float(robust))) ** 2 / (sum_d2 / sum_d)
                out[on_grid] = w[on_grid] / (1.0 + f2 * d[on_grid])
    else:
        raise ValueError(
            f"unknown weighting scheme {scheme!r}; expected natural, uniform or briggs"
        )
    if taper_arcsec and taper_arcsec > 0:
        sig = taper_sigma_uv(taper_arcsec)
        lam = freq / C_LIGHT
        u = uvw[:, 0:1] * lam[None, :]
        v = uvw[:, 1:2] * lam[None, :]
        out *= np.exp(-(u * u + v * v) / (2.0 * sig * sig))
    out[w == 0] = 0.0
    return out.astype(dtype, copy=False)
