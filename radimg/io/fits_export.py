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
from radimg.io.wcs import STOKES_CODES, image_wcs

__all__ = ["export_fits", "fits_targets", "is_radimg_fits", "stokes_groups"]


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

    A cube product's images (several Stokes parameters or output channels, issue #15) are
    4-axis cubes, data ``(stokes, freq, npix_y, npix_x)`` (FITS axes RA, DEC, FREQ,
    STOKES with the standard STOKES codes, CRVAL3/CDELT3 the first output channel's
    frequency and the channel step), with CASA's ``BEAMS`` table of per-channel beams;
    ``<name>_mfs`` a cube of one channel, the whole band. Products whose STOKES codes are
    not equally spaced go to one file per product (:func:`stokes_groups`).

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
    cubes = prod.get("cube", {})
    # every file of a cube product: one 4-axis cube per image, or one per Stokes parameter
    # when the products' STOKES codes are not equally spaced (a FITS axis is linear)
    plans = []
    for name, data in prod["images"].items():
        if name not in cubes:
            plans.append((targets[name], name, None, data))
            continue
        groups = stokes_groups(cubes[name]["stokes"])
        for order in groups:
            target = targets[name]
            if len(groups) > 1:
                target = target[: -len(".fits")] + f"-{cubes[name]['stokes'][order[0]]}.fits"
            plans.append((target, name, order, data))
    for target, *_ in plans:
        if target not in targets.values():
            check_output_path(target, overwrite, what="FITS file", replaceable=is_radimg_fits)
    written = []
    for target, name, order, data in plans:
        if order is None:
            header = _fits_header(wcs, prod["run"], degenerate_axes)
            data = np.asarray(data, dtype=np.float32)
            hdus = [fits.PrimaryHDU(data=data[(np.newaxis,) * (2 if degenerate_axes else 1)],
                                    header=header)]
        else:
            hdus = _cube_hdus(wcs, prod["run"], cubes[name], order, data)
        h = hdus[0].header
        h["BUNIT"] = (prod["units"].get(name, "Jy/beam"), "brightness unit")
        if not wcs["field_name"]:
            h["OBJECT"] = name
        h["RADIMGIM"] = (name, "which radimg image")
        tmp = temporary_name(target)
        try:
            fits.HDUList(hdus).writeto(tmp)
            os.replace(tmp, target)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        written.append(target)
    return written


def stokes_groups(stokes) -> list[list[int]]:
    """How a cube's products go to FITS files: one list of product indices per file, in
    the file's STOKES axis order. One file when the products' standard codes (I Q U V = 1..4,
    RR LL RL LR = -1..-4, XX YY XY YX = -5..-8) sorted form an arithmetic sequence (the
    STOKES axis is linear: ``IQUV``, ``QU``, ``IV``, ``XXXYYXYY`` as XX YY XY YX), else one
    file per product (``IQV``)."""
    codes = [STOKES_CODES[s] for s in stokes]
    order = sorted(range(len(codes)), key=lambda i: codes[i], reverse=min(codes) < 0)
    steps = {codes[b] - codes[a] for a, b in zip(order, order[1:])}
    if len(steps) <= 1:
        return [order]
    return [[i] for i in range(len(codes))]


def _cube_hdus(wcs, run, cube, order, data):
    """The primary HDU of a 4-axis FITS cube (FITS axes RA, DEC, FREQ, STOKES; numpy
    (stokes, freq, y, x), radimg's own layout) of the products ``order`` of ``data`` (stokes,
    channel, y, x) or, for an MFS image, (stokes, y, x), and CASA's BEAMS table (per-channel
    restoring beams; CARTA and CASA read it) when the beams differ between channels."""
    from astropy.io import fits

    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3:  # <name>_mfs: one output channel, the whole band
        data = data[:, None]
    data = np.ascontiguousarray(data[order])
    freqs = np.asarray(cube["freqs_hz"], dtype=np.float64)
    header = _fits_header(dict(wcs, stokes=cube["stokes"][order[0]]), run, True)
    if freqs.size > 1:
        step = (freqs[-1] - freqs[0]) / (freqs.size - 1)
        header["CRVAL3"], header["CDELT3"] = freqs[0], step
        if not np.allclose(np.diff(freqs), step, rtol=1e-6, atol=0.0):
            # a linear FREQ axis cannot hold them: every channel's frequency as a card
            for k, f in enumerate(freqs):
                header[f"CHFRQ{k + 1:03d}"] = (float(f), f"output channel {k} frequency, Hz")
    else:
        header["CRVAL3"] = freqs[0]
        header["CDELT3"] = float(cube["bandwidths_hz"][0]) or 1.0
    header["FREQ"] = (float(freqs.mean()), "mean frequency of the output channels, Hz")
    codes = [STOKES_CODES[cube["stokes"][i]] for i in order]
    header["CRVAL4"] = float(codes[0])
    header["CDELT4"] = float(codes[1] - codes[0]) if len(codes) > 1 else 1.0
    bmaj, bmin, bpa = (np.asarray(cube[k], dtype=np.float64)
                       for k in ("bmaj_deg", "bmin_deg", "bpa_deg"))
    hdus = [fits.PrimaryHDU(data=data, header=header)]
    if bmaj.size > 1 and np.all(bmaj > 0):
        hdus[0].header["BMAJ"], hdus[0].header["BMIN"], hdus[0].header["BPA"] = (
            float(np.median(bmaj)), float(np.median(bmin)), float(np.median(bpa)))
        hdus[0].header["CASAMBM"] = (True, "per-channel beams in the BEAMS table")
        nchan, npol = bmaj.size, len(order)
        chan = np.tile(np.arange(nchan, dtype=np.int32), npol)
        pol = np.repeat(np.arange(npol, dtype=np.int32), nchan)
        cols = [
            fits.Column("BMAJ", "1E", "arcsec", array=np.tile(bmaj * 3600.0, npol)),
            fits.Column("BMIN", "1E", "arcsec", array=np.tile(bmin * 3600.0, npol)),
            fits.Column("BPA", "1E", "deg", array=np.tile(bpa, npol)),
            fits.Column("CHAN", "1J", array=chan),
            fits.Column("POL", "1J", array=pol),
        ]
        beams = fits.BinTableHDU.from_columns(cols, name="BEAMS")
        beams.header["NCHAN"], beams.header["NPOL"] = nchan, npol
        hdus.append(beams)
    elif bmaj.size == 1 and bmaj[0] > 0:
        hdus[0].header["BMAJ"], hdus[0].header["BMIN"], hdus[0].header["BPA"] = (
            float(bmaj[0]), float(bmin[0]), float(bpa[0]))
    return hdus
