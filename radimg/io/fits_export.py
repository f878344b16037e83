"""``radimg export``: FITS files of a product's images for viewers (DS9, CARTA), with
the WCS and observation keywords WSClean writes."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from radimg.io.product import (
    ProductError,
    check_output_path,
    read_product,
    temporary_name,
)
from radimg.io.wcs import image_wcs

__all__ = ["export_fits", "fits_targets", "is_radimg_fits"]


def _fits_header(wcs: Mapping, run: Mapping, degenerate_axes: bool):
    """The FITS header common to a product's images (see :func:`export_fits`)."""
    import yaml

    from radimg import __version__

    w = image_wcs(wcs, spectral=True, stokes_axis=degenerate_axes)
    h = w.to_header()
    h["FREQ"] = (wcs["freq_hz"], "image reference (mean) frequency, Hz")
    h["BTYPE"] = "Intensity"
    if wcs["bmaj_deg"] > 0:
        h["BMAJ"] = (wcs["bmaj_deg"], "restoring beam FWHM major axis, deg")
        h["BMIN"] = (wcs["bmin_deg"], "restoring beam FWHM minor axis, deg")
        h["BPA"] = (wcs["bpa_deg"], "restoring beam PA, north through east, deg")
    for key, attr, comment in (
        ("TELESCOP", "telescope", "MS OBSERVATION TELESCOPE_NAME"),
        ("OBSERVER", "observer", "MS OBSERVATION OBSERVER"),
        ("OBJECT", "field_name", "MS FIELD NAME"),
    ):
        if wcs[attr]:
            h[key] = (wcs[attr], comment)
    h["ORIGIN"] = f"radimg {__version__}"  # is_radimg_fits relies on this card
    h["RADIMGV"] = (str(run.get("radimg_version", "")), "radimg that made the product")
    h["NRANKS"] = (int(run.get("n_ranks", 0)), "MPI ranks of the run")
    text = str(run.get("config_yaml", ""))
    try:  # block style: one key per line, so most lines fit a 72-character HISTORY card
        text = yaml.safe_dump(
            yaml.safe_load(text), default_flow_style=False, sort_keys=False, width=68
        )
    except yaml.YAMLError:
        pass  # not YAML after all: the text as stored
    if text.strip():
        h.add_history(f"radimg {run.get('radimg_version', __version__)} run, resolved config:")
        for line in text.splitlines():
            h.add_history(line)  # astropy splits a line over several cards past 72 characters
    return h


def fits_targets(product_path, outdir, names) -> dict[str, str]:
    """``{image: <outdir>/<product stem>-<image>.fits}`` (WSClean-style names)."""
    stem = os.path.splitext(os.path.basename(os.fspath(product_path)))[0]
    return {n: os.path.join(os.fspath(outdir), f"{stem}-{n}.fits") for n in names}


def is_radimg_fits(path) -> bool:
    """True when ``path`` is a FITS file radimg wrote (ORIGIN = "radimg ...")."""
    try:
        with open(path, "rb") as f:
            head = f.read(2880 * 4)
    except OSError:
        return False
    if not head.startswith(b"SIMPLE  ="):
        return False
    for i in range(0, len(head), 80):
        card = head[i : i + 80]
        if card.startswith(b"ORIGIN  ="):
            return b"'radimg" in card
        if card.startswith(b"END     ") or card.rstrip() == b"END":
            break
    return False


def export_fits(
    path: str | os.PathLike,
    outdir: str | os.PathLike,
    overwrite: bool = True,
    *,
    degenerate_axes: bool = False,
) -> list[str]:
    """Write one FITS file per image of a product, usable as it is by an astronomer's tools
    (DS9, CARTA, CASA ``importfits``, astropy, PyBDSF).

    Files are named ``<product stem>-<image>.fits`` (WSClean style). The data array is the
    stored ``(npix_y, npix_x)`` array (north up, east left, as WSClean's and CASA's) with a
    degenerate frequency axis in front: ``(1, npix_y, npix_x)``, WCS SIN celestial axes and
    ``FREQ`` (CRVAL3 the mean frequency, CDELT3 the imaged band's total width, as WSClean
    writes them; also the ``FREQ`` keyword). The header carries what the observation and the
    run know, with WSClean's and CASA's keys:

    - ``BMAJ``, ``BMIN``, ``BPA`` (degrees; the beam fitted to the PSF) on every image,
      model included (WSClean does the same), when the product has a beam;
    - ``BUNIT`` ``Jy/beam`` (``Jy/pixel`` for the model): the FITS standard's spelling,
      which CASA writes and astropy's FITS unit parser accepts (WSClean's ``JY/BEAM`` it
      rejects); CASA and CARTA read either;
    - ``DATE-OBS`` (the first TIME of the MS, ISO 8601 UTC, as WSClean) and ``MJD-OBS``;
      ``TELESCOP``, ``OBSERVER`` (the MS OBSERVATION table) and ``OBJECT`` (the field name),
      each where known; ``RADESYS``/``EQUINOX`` (J2000), ``SPECSYS`` TOPOCENT;
    - the run's resolved config as ``HISTORY`` cards (YAML, block style).

    Parameters
    ----------
    path : str or path-like
        The product.
    outdir : str or path-like
        Directory for the FITS files (created if missing).
    overwrite : bool, optional
        Replace existing FITS files (the default: they are derived from the product, and a
        pipeline must not fail over them after its computation); if false,
        ``FileExistsError`` before anything is written. ``radimg export`` passes false
        unless ``--overwrite`` is given.
    degenerate_axes : bool, optional
        WSClean's layout: data ``(1, 1, npix_y, npix_x)``, FREQ and STOKES (I) axes 3 and 4.

    Returns
    -------
    list of str
        The paths written.
    """
    from astropy.io import fits

    from radimg.io.paths import expand

    prod = read_product(path)
    outdir = expand(outdir)
    if os.path.lexists(outdir) and not os.path.isdir(outdir):
        raise ProductError(f"FITS directory {outdir} exists and is not a directory")
    targets = fits_targets(path, outdir, prod["images"])
    for target in targets.values():  # before anything is written
        check_output_path(target, overwrite, what="FITS file", replaceable=is_radimg_fits)
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise ProductError(f"cannot create FITS directory {outdir}: {e.strerror or e}") from None
    wcs = prod["wcs"]
    header = _fits_header(wcs, prod["run"], degenerate_axes)
    written = []
    for name, data in prod["images"].items():
        data = np.asarray(data, dtype=np.float32)
        data = data[(np.newaxis,) * (2 if degenerate_axes else 1)]
        hdu = fits.PrimaryHDU(data=data, header=header.copy())
        h = hdu.header
        h["BUNIT"] = (prod["units"].get(name, "Jy/beam"), "brightness unit")
        if not wcs["field_name"]:
            h["OBJECT"] = name
        h["RADIMGIM"] = (name, "which radimg image")
        target = targets[name]
        tmp = temporary_name(target)
        try:
            hdu.writeto(tmp)
            os.replace(tmp, target)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        written.append(target)
    return written
