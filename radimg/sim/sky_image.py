"""Sky models from images: ``simulate.sky_image`` (issue #16).

An image of the sky in Jy/pixel with a celestial WCS (FITS, or a radimg product's
``/images/model``, or an HDF5 file with a ``sky`` dataset and the product's WCS attributes)
is predicted into the simulated visibilities next to the source list, exactly:

- ``dft``: every non-zero pixel is a point source at its pixel centre (astropy's WCS gives
  its RA/Dec, radimg's convention its l, m) and the direct Fourier transform of
  ``radimg.kernels.dft`` predicts it with the w-term, to rounding;
- ``operator``: when the image's pixels are radimg's own (l, m) grid (SIN, north up, east
  left, reference pixel at ``(nx//2 + 1, ny//2 + 1)`` on the phase centre, square cells), the
  wide-field operator predicts it at ``epsilon = 1e-8`` in double precision (``mode wstack``),
  i.e. the same point sources to 1e-8 of the image's flux scale, far faster for large images.

``auto`` takes the DFT while it costs at most :data:`DFT_MAX_TERMS` pixel-sample terms and
the operator beyond that (when the grid allows it). Which one was used is in the log and
in the MS HISTORY.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["SkyImage", "load_sky_image", "choose_predict", "pixel_lm", "DFT_MAX_TERMS"]

#: Largest (non-zero pixels) x (rows x channels) the ``auto`` choice predicts by the DFT.
DFT_MAX_TERMS = 2e9
#: Accuracy of the ``operator`` prediction.
OPERATOR_EPSILON = 1e-8
_JY_PIXEL = {"jy/pixel", "jy/pix", "jy/px", "jy pixel-1", "jy/pixel2"}


@dataclass(frozen=True)
class SkyImage:
    """An image of the sky: ``flux`` (y, x) float64 Jy/pixel and its celestial ``wcs``
    (astropy, two axes, pixel ``[iy, ix]``)."""

    path: str
    flux: np.ndarray
    wcs: object

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.flux))


def _error(path, msg):
    from radimg.config import ConfigError

    return ConfigError(f"simulate.sky_image: {path}: {msg}")


def _from_fits(path):
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if getattr(h, "data", None) is not None), None)
            if hdu is None:
                raise _error(path, "holds no image data")
            data = np.asarray(hdu.data, dtype=np.float64)
            header = hdu.header.copy()
    except OSError as exc:
        raise _error(path, f"not a readable FITS file ({exc})") from None
    unit = str(header.get("BUNIT", "")).strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        raise _error(path, "has no celestial WCS (CTYPE RA---/DEC-- axes); cannot place it")
    # degenerate FREQ / STOKES axes (WSClean/CASA layout) are dropped
    data = np.squeeze(data)
    if data.ndim != 2:
        raise _error(path, f"holds a {data.shape} array; expected one 2-D image plane")
    return data, wcs.celestial, unit


def _from_hdf5(path):
    import h5py

    from radimg.io.product import image_wcs

    try:
        with h5py.File(path, "r") as f:
            if "images" in f and "model" in f["images"]:
                g = f["images"]
                data = np.asarray(g["model"][()], dtype=np.float64)
                unit = str(g["model"].attrs.get("unit", "Jy/pixel"))
            elif "sky" in f:
                g = f
                data = np.asarray(f["sky"][()], dtype=np.float64)
                unit = str(f["sky"].attrs.get("unit", ""))
            else:
                raise _error(path, "has neither /images/model nor a 'sky' dataset")
            attrs = {k: g.attrs[k] for k in g.attrs}
    except OSError as exc:
        raise _error(path, f"not a readable HDF5 file ({exc})") from None
    need = ("ctype", "crval_deg", "crpix", "cdelt_deg")
    if not all(k in attrs for k in need):
        raise _error(path, f"lacks the celestial WCS attributes {', '.join(need)}")
    info = {
        "ctype": [str(c.decode() if isinstance(c, bytes) else c) for c in attrs["ctype"]],
        "crval_deg": [float(x) for x in attrs["crval_deg"]],
        "crpix": [float(x) for x in attrs["crpix"]],
        "cdelt_deg": [float(x) for x in attrs["cdelt_deg"]],
        "freq_hz": float(attrs.get("freq_hz", 0.0)) or 1.0,
        "bmaj_deg": 0.0, "bmin_deg": 0.0, "bpa_deg": 0.0,
    }
    try:
        wcs = image_wcs(info)
    except Exception as exc:  # noqa: BLE001 - any WCS astropy refuses
        raise _error(path, f"its WCS attributes do not make a celestial WCS ({exc})") from None
    return data, wcs, unit


def load_sky_image(path) -> SkyImage:
    """Read and check a sky image (Jy/pixel, celestial WCS, finite values).

    Raises
    ------
    ConfigError
        Naming ``simulate.sky_image`` and the file: missing or unreadable, no celestial WCS,
        not one 2-D plane, NaN/Inf pixels, or a unit other than Jy/pixel (an image in
        Jy/beam is a restored image: its flux per pixel is not the sky's).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _error(path, "no such file")
    low = path.lower()
    if low.endswith((".fits", ".fit", ".fts", ".fits.gz")):
        data, wcs, unit = _from_fits(path)
    elif low.endswith((".h5", ".hdf5", ".hdf")):
        data, wcs, unit = _from_hdf5(path)
    else:
        raise _error(path, "expected a FITS (.fits) or HDF5 (.h5) image")
    norm = unit.lower().replace(" ", "")
    if norm not in _JY_PIXEL:
        raise _error(
            path,
            f"BUNIT is {unit!r}; a sky model must be in Jy/pixel (an image in Jy/beam is "
            "a restored or dirty image, not the sky's flux per pixel)",
        )
    bad = ~np.isfinite(data)
    if bad.any():
        raise _error(path, f"{int(bad.sum())} pixels are NaN or Inf; a sky model must be finite")
    return SkyImage(path, data, wcs)


def pixel_lm(sky: SkyImage, ra0, dec0, iy, ix):
    """(l, m, n) of pixels ``[iy, ix]`` relative to the phase centre (radians), from the
    image's WCS (RA/Dec of each pixel centre) and radimg's direction cosines."""
    from radimg.sim.sky import radec_to_lm

    world = sky.wcs.pixel_to_world_values(np.asarray(ix, float), np.asarray(iy, float))
    ra, dec = np.radians(world[0]), np.radians(world[1])
    return radec_to_lm(ra, dec, ra0, dec0)


def components(sky: SkyImage, ra0, dec0):
    """The non-zero pixels as point sources: ``l, m`` (src,) and ``flux_jy`` (src,);
    ConfigError when a pixel lies 90 deg or more from the phase centre."""
    iy, ix = np.nonzero(sky.flux)
    l, m, n = pixel_lm(sky, ra0, dec0, iy, ix)  # noqa: E741
    if np.any(n <= 0):
        raise _error(sky.path, "has non-zero pixels 90 deg or more from the phase centre")
    return l, m, sky.flux[iy, ix]


def on_radimg_grid(sky: SkyImage, ra0, dec0) -> float | None:
    """The cell (radians) when the image's pixels are radimg's own (l, m) grid around the
    phase centre (see the module docstring), else None."""
    w = sky.wcs.wcs
    ny, nx = sky.flux.shape
    try:
        ctype = [str(c) for c in w.ctype]
        cdelt = np.asarray(w.get_cdelt(), dtype=float)
        pc = np.asarray(w.get_pc(), dtype=float)
    except Exception:  # noqa: BLE001 - any WCS astropy cannot describe this way
        return None
    if ctype != ["RA---SIN", "DEC--SIN"] or not np.allclose(pc, np.eye(2), atol=1e-12):
        return None
    if not (cdelt[0] < 0 < cdelt[1] and math.isclose(-cdelt[0], cdelt[1], rel_tol=1e-9)):
        return None
    if not np.allclose(w.crpix, [nx // 2 + 1, ny // 2 + 1], atol=1e-9):
        return None
    ra, dec = np.radians(w.crval)
    dra = (ra - ra0 + math.pi) % (2 * math.pi) - math.pi
    if abs(dra) * math.cos(dec0) > 1e-9 or abs(dec - dec0) > 1e-9:
        return None
    return math.radians(cdelt[1])


def choose_predict(sky: SkyImage, ra0, dec0, n_samples: int, requested: str = "auto"):
    """``("dft" | "operator", reason)`` for predicting ``sky`` into ``n_samples`` samples
    (rows x channels); ConfigError when ``operator`` is asked for an image not on radimg's
    grid."""
    cell = on_radimg_grid(sky, ra0, dec0)
    terms = float(sky.nnz) * float(n_samples)
    if requested == "dft":
        return "dft", f"direct DFT of {sky.nnz} pixels (asked for)"
    if requested == "operator":
        if cell is None:
            raise _error(
                sky.path,
                "simulate.sky_image_predict: operator needs a SIN image centred on the phase "
                "centre (reference pixel nx//2+1, ny//2+1), north up, east left, square cells",
            )
        return "operator", f"wide-field operator at epsilon {OPERATOR_EPSILON:g} (asked for)"
    if terms <= DFT_MAX_TERMS or cell is None:
        why = "small enough" if terms <= DFT_MAX_TERMS else "the image is not on radimg's grid"
        return "dft", f"direct DFT of {sky.nnz} pixels x {n_samples} samples ({why})"
    return "operator", (
        f"wide-field operator at epsilon {OPERATOR_EPSILON:g}, double precision "
        f"({sky.nnz} pixels x {n_samples} samples is too many for the DFT)"
    )


def predict_operator(sky: SkyImage, cell, uvw, freq, flux_scale, nthreads=1):
    """Visibilities (row, chan) complex128 of ``sky`` on radimg's grid: the operator's
    forward map applied to ``flux`` (Jy/pixel; like a point source, it carries no ``1 / n``),
    channel ``c`` scaled by ``flux_scale[c]`` (the spectral factor)."""
    from radimg.ops.operator import make_operator

    ny, nx = sky.flux.shape
    op = make_operator(uvw, freq, nx, ny, cell, epsilon=OPERATOR_EPSILON, mode="wstack",
                       precision="double", nthreads=nthreads)
    vis = np.asarray(op.dot(sky.flux), dtype=np.complex128)
    return vis * np.asarray(flux_scale, dtype=np.float64)[None, :]
