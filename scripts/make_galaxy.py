#!/usr/bin/env python
"""Write a synthetic extended "galaxy" sky model (FITS, Jy/pixel) for ``simulate.sky_image``.

The load-balancing paper (Pratley & McEwen 2019) reconstructs an image of M31, which is not
available offline; this stands in for it: an inclined exponential disk with two logarithmic
spiral arms, a bulge, a ring of star-forming knots and a few compact background sources,
all positive, on radimg's own pixel grid (SIN, north up, east left, reference pixel
``(n//2 + 1, n//2 + 1)`` on the phase centre), so ``radimg simulate`` can predict it with the
operator (``simulate.sky_image_predict: operator``) as well as by the direct DFT.

    python scripts/make_galaxy.py --npix 1024 --cell-arcsec 60 --ra 10.68 --dec -30 \
        --flux-jy 50 --out out/galaxy.fits

Deterministic (``--seed``). The galaxy fills ``--extent`` (fraction) of the field.

``--smooth-uv-sigma-lambda S`` writes a band-limited ("smooth") version instead: the
galaxy's spectrum (its DFT on a grid zero-padded to twice the size, so nothing wraps) is
multiplied by ``exp(-|q|^2 / (2 S^2))`` (q in wavelengths), the shape of the Gaussian uv
density of ``simulate.uv_distribution: gaussian`` with ``uv_sigma_lambda: S``. That is a
convolution with the image-plane Gaussian of sigma ``1 / (2 pi S)`` radians (0.95 pixels for
the paper configs' S = 1 / (6 cell)); the spectrum then lies inside the sampled disc (a
fraction exp(-9) = 1.2e-4 of a flat spectrum's energy beyond 3 S), as a real map made at the
coverage's resolution does (the paper's M31), where the default galaxy's pixel-scale knots
and sources carry much of its norm beyond it (the disc |q| <= 3 S holds all but -64.7 dB of
the smooth truth's norm at 256^2 x 360", against -20.8 dB for the galaxy as drawn). The
few negative pixels of the truncated spectrum's ringing (at most 8e-5 of the peak there)
are set to 0 and the total flux restored.

    python scripts/make_galaxy.py --npix 256 --cell-arcsec 360 --ra 10.68 --dec 41.27 \
        --flux-jy 100 --smooth-uv-sigma-lambda 95.493 --out out/paper/galaxy_256_smooth.fits
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np


def galaxy(npix, *, extent=0.6, inclination_deg=70.0, pa_deg=38.0, seed=1):
    """Brightness (npix, npix) float64, arbitrary units, >= 0, peak-normalised."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:npix, 0:npix].astype(float)
    c = npix // 2
    x, y = (x - c) / (0.5 * extent * npix), (y - c) / (0.5 * extent * npix)
    pa, inc = np.radians(pa_deg), np.radians(inclination_deg)
    # rotate to the galaxy's major axis, de-project the minor axis
    xr = x * np.cos(pa) + y * np.sin(pa)
    yr = (-x * np.sin(pa) + y * np.cos(pa)) / np.cos(inc)
    r = np.hypot(xr, yr)
    theta = np.arctan2(yr, xr)
    disk = np.exp(-r / 0.25)
    arms = 1.0 + 0.8 * np.cos(2.0 * (theta - np.log(r + 1e-3) / np.tan(np.radians(20.0))))
    bulge = 2.5 * np.exp(-((r / 0.06) ** 2))
    ring = np.exp(-(((r - 0.55) / 0.05) ** 2))
    img = disk * arms + bulge + 0.4 * ring
    # star-forming knots along the ring and arms
    for _ in range(60):
        rr = rng.uniform(0.2, 0.75)
        tt = rng.uniform(0, 2 * np.pi)
        kx, ky = rr * np.cos(tt), rr * np.sin(tt)
        img += rng.uniform(0.2, 0.8) * np.exp(-((xr - kx) ** 2 + (yr - ky) ** 2) / 0.0004)
    img[r > 1.0] = 0.0
    # a few compact background sources elsewhere in the field
    for _ in range(8):
        iy, ix = rng.integers(int(0.1 * npix), int(0.9 * npix), 2)
        img[iy, ix] += rng.uniform(0.3, 1.5)
    img[img < 1e-4 * img.max()] = 0.0
    return img / img.max()


ARCSEC = np.pi / (180.0 * 3600.0)


def smooth(img, uv_sigma_lambda, cell_arcsec):
    """``img`` with its spectrum multiplied by ``exp(-|q|^2 / (2 uv_sigma_lambda^2))``.

    Parameters
    ----------
    img : ndarray (npix, npix) float64, >= 0
    uv_sigma_lambda : float, > 0, the Gaussian's sigma in wavelengths
    cell_arcsec : float, the pixel size

    Returns
    -------
    ndarray (npix, npix) float64, >= 0, with the same sum as ``img``; negative pixels of the
    ringing are set to 0 (8e-5 of the peak at most for the paper configs' galaxy).
    """
    n0, n1 = img.shape
    m0, m1 = 2 * n0, 2 * n1  # zero padding: the convolution is linear, not cyclic
    spec = np.fft.rfft2(img, s=(m0, m1))
    d = cell_arcsec * ARCSEC  # radians per pixel: frequencies in cycles per radian = lambda
    q0 = np.fft.fftfreq(m0, d=d)[:, None]
    q1 = np.fft.rfftfreq(m1, d=d)[None, :]
    spec *= np.exp(-(q0**2 + q1**2) / (2.0 * uv_sigma_lambda**2))
    out = np.fft.irfft2(spec, s=(m0, m1))
    # the padded grid is indexed like the image from (0, 0): the image is its first block
    out = out[:n0, :n1]
    out[out < 0] = 0.0
    return out * (img.sum() / out.sum())


def write(path, img, *, cell_arcsec, ra_deg, dec_deg, freq_hz):
    from astropy.io import fits

    n = img.shape[0]
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    h["CRPIX1"], h["CRPIX2"] = n // 2 + 1, n // 2 + 1
    h["CRVAL1"], h["CRVAL2"] = ra_deg % 360.0, dec_deg
    h["CDELT1"], h["CDELT2"] = -cell_arcsec / 3600.0, cell_arcsec / 3600.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["BUNIT"] = "Jy/pixel"
    h["RESTFRQ"] = freq_hz
    h["OBJECT"] = "radimg synthetic galaxy"
    h["ORIGIN"] = "radimg scripts/make_galaxy.py"
    tmp = f"{path}.tmp-{os.getpid()}"
    fits.PrimaryHDU(img.astype(np.float64), header=h).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npix", type=int, default=1024)
    ap.add_argument("--cell-arcsec", type=float, default=60.0)
    ap.add_argument("--ra", type=float, default=0.0, help="phase centre RA, deg")
    ap.add_argument("--dec", type=float, default=-27.0, help="phase centre Dec, deg")
    ap.add_argument("--freq-hz", type=float, default=1.5e8)
    ap.add_argument("--flux-jy", type=float, default=50.0, help="total flux density, Jy")
    ap.add_argument("--extent", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smooth-uv-sigma-lambda", type=float, default=0.0,
                    help="band-limit the galaxy: spectrum times exp(-|q|^2/(2 S^2)), S in "
                         "wavelengths (the Gaussian uv coverage's sigma); 0 = none")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.npix < 16 or a.npix % 2:
        ap.error("--npix must be even and >= 16")
    out = pathlib.Path(a.out)
    if out.exists():
        ap.error(f"{out} exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.smooth_uv_sigma_lambda < 0:
        ap.error("--smooth-uv-sigma-lambda must be >= 0")
    img = galaxy(a.npix, extent=a.extent, seed=a.seed)
    if a.smooth_uv_sigma_lambda > 0:
        img = smooth(img, a.smooth_uv_sigma_lambda, a.cell_arcsec)
    img *= a.flux_jy / img.sum()
    write(out, img, cell_arcsec=a.cell_arcsec, ra_deg=a.ra, dec_deg=a.dec, freq_hz=a.freq_hz)
    print(f"wrote {out}: {a.npix}^2 at {a.cell_arcsec:g}\", {np.count_nonzero(img)} non-zero "
          f"pixels, {img.sum():.4g} Jy, peak {img.max():.4g} Jy/pixel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
