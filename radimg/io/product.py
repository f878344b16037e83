"""The HDF5 product of a run: atomic write, read, ``radimg info`` text and FITS export.

Layout (DESIGN.md "HDF5 product")::

    /images/{dirty,psf,model,residual,restored}   float32 (npix_y, npix_x), attr ``unit``
        attrs on /images: ctype, crval_deg, crpix (FITS, 1-based), cdelt_deg, freq_hz,
                          bmaj_deg, bmin_deg, bpa_deg, npix_x, npix_y;
                          and (extensions, absent from older products) bandwidth_hz,
                          stokes, date_obs, telescope, observer, field_name (OBS_KEYS)
    /run  attrs: config_yaml, radimg_version, n_ranks, timings_json, load_balance_json
    /extras/...  optional further datasets (e.g. checkpoint state), stored as given

Images are north up, east left (docs/internals.md): pixel ``[iy, ix]`` has
``l = -(ix - npix_x//2) * cell``, ``m = (iy - npix_y//2) * cell``. The FITS data array is the
stored array unchanged (FITS rows run bottom to top, which is our ``iy``), with
``CRPIX = npix//2 + 1``, ``CDELT1 = -cell``, ``CDELT2 = +cell``, as WSClean writes it.

A product is written to a temporary file in the destination directory and renamed into
place, so a crash never leaves a half-written product at the final path.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from radimg.progress import format_bytes

__all__ = [
    "IMAGE_NAMES",
    "IMAGE_UNITS",
    "ProductError",
    "check_output_path",
    "export_fits",
    "image_wcs",
    "info_text",
    "make_wcs_info",
    "read_product",
    "remove_stale_temporaries",
    "stale_temporaries",
    "write_product",
]

IMAGE_NAMES = ("dirty", "psf", "model", "residual", "restored")
IMAGE_UNITS = {
    "dirty": "Jy/beam",
    "psf": "Jy/beam",
    "model": "Jy/pixel",
    "residual": "Jy/beam",
    "restored": "Jy/beam",
}
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
RUN_KEYS = ("config_yaml", "radimg_version", "n_ranks", "timings_json", "load_balance_json")
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


class ProductError(ValueError):
    """A product file that cannot be written, found or understood (a user error)."""


# --------------------------------------------------------------------------------------
# WCS
# --------------------------------------------------------------------------------------


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


def _check_wcs_info(wcs_info: Mapping) -> dict:
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
        out[k] = _str(v) if isinstance(default, str) else float(v)
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

    info = _check_wcs_info(wcs_info)
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


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def is_radimg_product(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file radimg wrote (a product or a checkpoint)."""
    path = os.fspath(path)
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("format", "")) == "radimg-product"
    except OSError:
        return False


def _existing_ancestor(path: str) -> str:
    d = os.path.dirname(path)
    while d and not os.path.lexists(d):
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    return d or "."


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    what: str = "output.path",
    replaceable=is_radimg_product,
) -> str:
    """Check, before any computation, that a product can be written at ``path``.

    Nothing is created: the nearest existing ancestor directory must be a writable
    directory (probed by creating and removing a file in it: ``os.access`` is not trusted
    with root, ACLs or read-only mounts); missing directories are made when the product is
    written, so a run that fails later leaves no directory behind.

    Parameters
    ----------
    path : str or path-like
        Final product path (``~`` is expanded).
    overwrite : bool, optional
        Whether an existing file at ``path`` may be replaced; even then only a file radimg
        wrote (``replaceable``): radimg never replaces a file it did not create.
    what : str, optional
        The config key or option that names ``path``, for messages.
    replaceable : callable(path) -> bool, optional
        Which existing files ``overwrite`` may replace (default: radimg HDF5 products).

    Returns
    -------
    str
        The absolute path.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false or it is not a file radimg wrote;
        ``path`` lies inside a Measurement Set.
    PermissionError
        The directory is not writable.
    ProductError
        ``path`` is a directory, or a component of its parent is a file.
    """
    from radimg.io.paths import check_not_inside_table, expand

    path = os.path.abspath(expand(path))
    if os.path.isdir(path):
        raise ProductError(f"{what}: {path} is a directory, not a file")
    check_not_inside_table(path, what)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(
                f"{what}: the product already exists: {path} "
                "(use --overwrite or output.overwrite: true to replace it)"
            )
        if not replaceable(path):
            raise FileExistsError(
                f"{what}: {path} exists and was not written by radimg; radimg never "
                "replaces a file it did not create: choose another path"
            )
    base = _existing_ancestor(path)
    if not os.path.isdir(base):
        raise ProductError(f"{what}: cannot create {path}: {base} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".radimg-probe-", dir=base)
    except OSError as e:
        raise PermissionError(
            f"{what}: the directory {base} is not writable ({e.strerror or e})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def _make_parent(path: str) -> None:
    outdir = os.path.dirname(path)
    try:
        os.makedirs(outdir, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(f"cannot create output directory {outdir}: {e.strerror}") from None
    except OSError as e:
        raise ProductError(f"cannot create output directory {outdir}: {e.strerror or e}") from None


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _as_json(value) -> str:
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        json.loads(text)  # must already be JSON
        return text
    return json.dumps(value, default=_json_default)


def _attr_value(value):
    if value is None:
        return "null"
    if isinstance(value, (str, bytes, bool, int, float, np.generic)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return json.dumps(value, default=_json_default)


def _tmp_name(path: str) -> str:
    d, base = os.path.split(path)
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_path(path: str, directory: bool = False) -> None:
    """Flush a file (or a directory entry) to stable storage; best effort (some filesystems
    refuse fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Temporary files that an interrupted writer of ``path`` left behind (a job killed
    with SIGKILL while writing); the final ``path`` itself is never half-written."""
    d, base = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{base}.tmp-"
    try:
        return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith(prefix))
    except OSError:
        return []


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete :func:`stale_temporaries` of ``path``; returns the paths removed. Call it only
    where no other process writes ``path`` (the start of a run, on rank 0)."""
    removed = []
    for p in stale_temporaries(path):
        try:
            os.unlink(p)
            removed.append(p)
        except OSError:
            pass
    return removed


def _place(tmp: str, path: str, overwrite: bool) -> None:
    """Move the finished temporary file to ``path`` atomically (data flushed first, so a
    crash of the machine cannot leave a renamed but empty file)."""
    _fsync_path(tmp)
    try:
        _place_unsynced(tmp, path, overwrite)
    finally:
        _fsync_path(os.path.dirname(path) or ".", directory=True)


def _place_unsynced(tmp: str, path: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    # link() fails if path exists, closing the race between the existence check and rename.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"output product already exists: {path} "
            "(use --overwrite or output.overwrite: true to replace it)"
        ) from None
    except OSError:  # filesystems without hard links
        if os.path.lexists(path):
            raise FileExistsError(f"output product already exists: {path}") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_product(
    path: str | os.PathLike,
    images: Mapping[str, Any],
    wcs_info: Mapping,
    run_attrs: Mapping,
    overwrite: bool = False,
    *,
    extras: Mapping[str, Any] | None = None,
) -> str:
    """Write a run's product atomically (temporary file in the same directory, then rename).

    Parameters
    ----------
    path : str or path-like
        Final path of the HDF5 file.
    images : mapping of str to ndarray (npix_y, npix_x), float
        Usually ``dirty, psf, model, residual, restored``; any subset (and further names
        of ``[a-z0-9_]`` characters) is accepted. Stored as float32; ``model`` in
        Jy/pixel, everything else in Jy/beam.
    wcs_info : mapping
        From ``make_wcs_info``: ``ctype, crval_deg, crpix, cdelt_deg, freq_hz, bmaj_deg,
        bmin_deg, bpa_deg``.
    run_attrs : mapping
        ``config_yaml`` (str), ``n_ranks`` (int), ``timings_json`` and
        ``load_balance_json`` (JSON text, or a dict/list that is serialised here),
        ``radimg_version`` (defaults to the running version). Other keys are stored as
        further attributes of ``/run`` (non-scalars as JSON text).
    overwrite : bool, optional
        Replace an existing file at ``path``; otherwise ``FileExistsError``.
    extras : mapping of str to array_like, optional
        Further datasets under ``/extras/<name>`` (``name`` may contain ``/``), stored as
        given (e.g. checkpoint state).

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    FileExistsError, PermissionError, ProductError
        See ``check_output_path``.
    ValueError
        Inconsistent images or missing WCS/run fields (programming errors).
    """
    from radimg import __version__

    path = check_output_path(path, overwrite)
    _make_parent(path)
    info = _check_wcs_info(wcs_info)
    arrays = {}
    shape = None
    for name, img in images.items():
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"invalid image name {name!r}")
        a = np.asarray(img)
        if a.ndim != 2:
            raise ValueError(f"image '{name}' must be 2-D (npix_y, npix_x), got shape {a.shape}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"image '{name}' has shape {a.shape}, others {shape}")
        shape = a.shape
        arrays[name] = np.ascontiguousarray(a, dtype=np.float32)
    if not arrays:
        raise ValueError("write_product needs at least one image")
    run = dict(run_attrs)
    for k in ("config_yaml", "n_ranks"):
        if k not in run:
            raise ValueError(f"run_attrs lacks '{k}'")
    run.setdefault("radimg_version", __version__)
    run.setdefault("timings_json", "{}")
    run.setdefault("load_balance_json", "{}")

    tmp = _tmp_name(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "radimg-product"
            f.attrs["format_version"] = 1
            g = f.create_group("images")
            g.attrs["ctype"] = np.array(info["ctype"], dtype=h5py.string_dtype())
            for k in ("crval_deg", "crpix", "cdelt_deg"):
                g.attrs[k] = np.array(info[k], dtype=np.float64)
            for k in ("freq_hz", "bmaj_deg", "bmin_deg", "bpa_deg", *OBS_KEYS):
                g.attrs[k] = info[k]
            g.attrs["npix_x"] = shape[1]
            g.attrs["npix_y"] = shape[0]
            g.attrs["crpix_convention"] = "FITS, 1-based: pixel [iy, ix] is (ix+1, iy+1)"
            g.attrs["orientation"] = "north up, east left; array axes (y, x)"
            for name, a in arrays.items():
                ds = g.create_dataset(name, data=a)
                ds.attrs["unit"] = IMAGE_UNITS.get(name, "Jy/beam")
            r = f.create_group("run")
            r.attrs["config_yaml"] = str(run.pop("config_yaml"))
            r.attrs["radimg_version"] = str(run.pop("radimg_version"))
            r.attrs["n_ranks"] = int(run.pop("n_ranks"))
            r.attrs["timings_json"] = _as_json(run.pop("timings_json"))
            r.attrs["load_balance_json"] = _as_json(run.pop("load_balance_json"))
            for k, v in run.items():
                r.attrs[k] = _attr_value(v)
            if extras:
                x = f.create_group("extras")
                for name, v in extras.items():
                    x.create_dataset(name, data=np.asarray(v))
        _place(tmp, path, overwrite)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _open(path) -> h5py.File:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ProductError(f"no such product file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ProductError(f"not an HDF5 file (or unreadable): {path} ({e})") from None
    if "images" not in f or "run" not in f:
        f.close()
        raise ProductError(f"not a radimg product (no /images and /run groups): {path}")
    return f


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_wcs(g) -> dict:
    a = g.attrs
    return {
        "ctype": tuple(_str(c) for c in a["ctype"]),
        "crval_deg": tuple(float(x) for x in a["crval_deg"]),
        "crpix": tuple(float(x) for x in a["crpix"]),
        "cdelt_deg": tuple(float(x) for x in a["cdelt_deg"]),
        "freq_hz": float(a["freq_hz"]),
        "bmaj_deg": float(a["bmaj_deg"]),
        "bmin_deg": float(a["bmin_deg"]),
        "bpa_deg": float(a["bpa_deg"]),
        **{
            k: (_str(a[k]) if isinstance(v, str) else float(a[k])) if k in a else v
            for k, v in OBS_KEYS.items()
        },
    }


def _read_run(g) -> dict:
    run = {}
    for k, v in g.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        run[k] = v
    return run


def _checked_wcs(g, path) -> dict:
    """``_read_wcs`` of ``/images``, refusing a WCS that no viewer can use."""
    try:
        wcs = _read_wcs(g)
    except (KeyError, ValueError, TypeError) as exc:
        raise ProductError(
            f"{os.fspath(path)}: /images lacks a readable WCS attribute ({exc})"
        ) from None
    for key in ("crval_deg", "crpix", "cdelt_deg"):
        vals = np.asarray(wcs[key], dtype=float)
        if vals.size != 2 or not np.all(np.isfinite(vals)):
            raise ProductError(
                f"{os.fspath(path)}: /images attribute {key} is {tuple(vals.tolist())}; "
                "expected two finite numbers (the product's WCS is unusable)"
            )
    if not np.all(np.asarray(wcs["cdelt_deg"], dtype=float) != 0):
        raise ProductError(f"{os.fspath(path)}: /images attribute cdelt_deg has a zero cell")
    return wcs


def read_product(path: str | os.PathLike, images: bool | Iterable[str] = True) -> dict:
    """Read a product.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    images : bool or iterable of str, optional
        Which images to load (``True``: all, ``False``: none, or a list of names).

    Returns
    -------
    dict
        ``images``: name -> ndarray (npix_y, npix_x) float32; ``units``: name -> str;
        ``shape``: (npix_y, npix_x); ``wcs``: the ``wcs_info`` dict; ``run``: the ``/run``
        attributes; ``timings`` and ``load_balance``: the parsed JSON; ``extras``:
        name -> ndarray.

    Raises
    ------
    ProductError
        Missing file, not HDF5, or not a radimg product.
    """
    with _open(path) as f:
        g = f["images"]
        names = [n for n in g if isinstance(g[n], h5py.Dataset)]
        if images is True:
            want = names
        elif images is False:
            want = []
        else:
            want = list(images)
            unknown = [n for n in want if n not in names]
            if unknown:
                raise ProductError(
                    f"{os.fspath(path)} has no image {', '.join(unknown)} (it has {', '.join(names)})"
                )
        out = {
            "images": {n: g[n][()] for n in want},
            "units": {n: _str(g[n].attrs.get("unit", "")) for n in names},
            "shape": tuple(int(s) for s in g[names[0]].shape) if names else None,
            "wcs": _checked_wcs(g, path),
            "run": _read_run(f["run"]),
            "extras": {},
        }
        if "extras" in f:
            f["extras"].visititems(
                lambda n, obj: (
                    out["extras"].__setitem__(n, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
    for key, attr in (("timings", "timings_json"), ("load_balance", "load_balance_json")):
        try:
            out[key] = json.loads(out["run"].get(attr, "{}"))
        except (TypeError, ValueError):
            out[key] = None
    return out


def _fmt_num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"


def _fmt_tree(obj, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, Mapping):
                lines.append(f"{pad}{k}:")
                _fmt_tree(v, indent + 2, lines)
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                # e.g. per-rank timing dicts: one line per rank
                for i, item in enumerate(v[:16]):
                    flat = ", ".join(
                        f"{kk} {_fmt_num(vv)}"
                        for kk, vv in item.items()
                        if not isinstance(vv, (Mapping, list))
                    )
                    lines.append(f"{pad}{k}[{i}]: {flat}")
                if len(v) > 16:
                    lines.append(f"{pad}... ({len(v) - 16} more)")
            elif (
                isinstance(v, list)
                and v
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            ):
                if len(v) <= 8:
                    lines.append(f"{pad}{k}: [{', '.join(_fmt_num(x) for x in v)}]")
                else:
                    mean = sum(v) / len(v)
                    ratio = f", max/mean {max(v) / mean:.3f}" if mean > 0 else ""
                    lines.append(
                        f"{pad}{k}: n={len(v)} min {_fmt_num(min(v))} mean "
                        f"{_fmt_num(mean)} max {_fmt_num(max(v))}{ratio}"
                    )
            else:
                lines.append(f"{pad}{k}: {_fmt_num(v)}")
    elif obj not in (None, {}, []):
        lines.append(f"{pad}{obj}")


def _sexagesimal(value: float, decimals: int) -> tuple[int, int, float]:
    """(units, minutes, seconds) of ``value`` >= 0, rounded to ``decimals`` of a second
    first, so 30 deg prints as 30d00m00.0s, never 29d59m60.0s."""
    scale = 10**decimals
    total = round(value * 3600.0 * scale)  # in 10^-decimals seconds
    units, rest = divmod(total, 3600 * scale)
    minutes, sec = divmod(rest, 60 * scale)
    return int(units), int(minutes), sec / scale


def _hms(ra_deg: float) -> str:
    hh, mm, ss = _sexagesimal((ra_deg % 360.0) / 15.0, 2)
    return f"{hh % 24:02d}h{mm:02d}m{ss:05.2f}s"


def _dms(dec_deg: float) -> str:
    sign = "-" if dec_deg < 0 else "+"
    dd, mm, ss = _sexagesimal(abs(dec_deg), 1)
    return f"{sign}{dd:02d}d{mm:02d}m{ss:04.1f}s"


def _timings_table(obj) -> str | None:
    """The run's stage table (``radimg.progress.stage_table``) from ``timings_json`` as
    ``radimg run`` writes it; None for any other layout (then shown as a tree)."""
    from radimg.progress import stage_table

    if not (isinstance(obj, dict) and "peak_rss_bytes_per_rank" in obj):
        return None  # an older or hand-made layout
    per_rank = obj.get("per_rank")
    if not (isinstance(per_rank, list) and per_rank and all(isinstance(r, dict) for r in per_rank)):
        return None
    try:
        seconds = [{k: float(v) for k, v in r.items() if k != "peak_rss_bytes"} for r in per_rank]
        mem = (
            [r["peak_rss_bytes"] for r in per_rank]
            if all("peak_rss_bytes" in r for r in per_rank)
            else None
        )
        counters = obj.get("counters_per_rank")
        if not (isinstance(counters, list) and len(counters) == len(per_rank)):
            counters = None
        return stage_table(seconds, mem, counters)
    except (TypeError, ValueError, KeyError):
        return None


def info_text(path: str | os.PathLike) -> str:
    """What a product holds, as text for ``radimg info``.

    Sizes, WCS (phase centre, cell, field of view, frequency), restoring beam, per-image
    unit and statistics, run facts (version, ranks), timings and load balance.
    """
    path = os.fspath(path)
    with _open(path) as f:
        g = f["images"]
        wcs = _checked_wcs(g, path)
        run = _read_run(f["run"])
        rows = []
        for n in g:
            ds = g[n]
            if not isinstance(ds, h5py.Dataset):
                continue
            a = ds[()]
            finite = a[np.isfinite(a)]
            if finite.size:
                stats = (
                    f"min {finite.min():.4g}  max {finite.max():.4g}  "
                    f"rms {float(np.sqrt(np.mean(finite.astype(np.float64) ** 2))):.4g}"
                )
            else:
                stats = "no finite pixels"
            unit = _str(ds.attrs.get("unit", ""))
            rows.append((n, f"{a.shape[0]} x {a.shape[1]}", str(a.dtype), unit, stats))
        extras = []
        if "extras" in f:
            f["extras"].visititems(
                lambda n, o: (
                    extras.append(f"{n} {o.shape} {o.dtype}")
                    if isinstance(o, h5py.Dataset)
                    else None
                )
            )
    lines = [f"radimg product: {path} ({format_bytes(os.path.getsize(path))})"]
    lines.append(
        f"  software: radimg {run.get('radimg_version', '?')}, {run.get('n_ranks', '?')} rank(s)"
    )
    w = max((len(r[0]) for r in rows), default=5)
    lines.append("  images (npix_y x npix_x):")
    for n, shp, dt, unit, stats in rows:
        lines.append(f"    {n:<{w}}  {shp}  {dt}  {unit:<8}  {stats}")
    ra, dec = wcs["crval_deg"]
    cx, cy = wcs["cdelt_deg"]
    lines.append(f"  phase centre: RA {ra:.6f} deg ({_hms(ra)})  Dec {dec:.6f} deg ({_dms(dec)})")
    if rows:
        ny, nx = (int(s) for s in rows[0][1].split(" x "))
        fov = f", field {abs(cx) * nx:.3f} x {abs(cy) * ny:.3f} deg"
    else:
        fov = ""
    lines.append(
        f"  projection: {wcs['ctype'][0]} / {wcs['ctype'][1]}, cell {abs(cx) * 3600:.4g} arcsec"
        f"{fov}, crpix ({wcs['crpix'][0]:g}, {wcs['crpix'][1]:g})"
    )
    bw = f", bandwidth {wcs['bandwidth_hz'] / 1e6:.6g} MHz" if wcs["bandwidth_hz"] > 0 else ""
    lines.append(f"  frequency: {wcs['freq_hz'] / 1e6:.6g} MHz{bw}, Stokes {wcs['stokes']}")
    obs = [
        f"{label} {wcs[k]}"
        for label, k in (
            ("telescope", "telescope"),
            ("observer", "observer"),
            ("field", "field_name"),
            ("date", "date_obs"),
        )
        if wcs[k]
    ]
    if obs:
        lines.append("  observation: " + ", ".join(obs) + (" UTC" if wcs["date_obs"] else ""))
    if wcs["bmaj_deg"] > 0:
        lines.append(
            f"  restoring beam: bmaj {wcs['bmaj_deg'] * 3600:.4g} arcsec, "
            f"bmin {wcs['bmin_deg'] * 3600:.4g} arcsec, bpa {wcs['bpa_deg']:.4g} deg"
        )
    else:
        lines.append("  restoring beam: none (not fitted)")
    for title, attr in (("timings (s)", "timings_json"), ("load balance", "load_balance_json")):
        try:
            obj = json.loads(run.get(attr, "{}"))
        except (TypeError, ValueError):
            obj = run.get(attr)
        table = _timings_table(obj) if attr == "timings_json" else None
        if table is not None:
            lines.append("  timings (per rank):")
            lines += ["    " + ln for ln in table.splitlines()]
            continue
        lines.append(f"  {title}:" + ("" if obj else " none recorded"))
        _fmt_tree(obj, 4, lines)
    other = {k: v for k, v in run.items() if k not in RUN_KEYS}
    if other:
        lines.append("  run attributes:")
        _fmt_tree(other, 4, lines)
    if extras:
        lines.append("  extras: " + "; ".join(extras))
    cfg_lines = str(run.get("config_yaml", "")).count("\n")
    lines.append(f"  config: {cfg_lines} lines of resolved YAML in /run.attrs['config_yaml']")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# FITS export
# --------------------------------------------------------------------------------------


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
        tmp = _tmp_name(target)
        try:
            hdu.writeto(tmp)
            os.replace(tmp, target)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        written.append(target)
    return written
