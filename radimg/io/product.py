"""The HDF5 product of a run (the file format): atomic write and read.

Layout (DESIGN.md "HDF5 product")::

    /images/{dirty,psf,model,residual,restored}   float32 (npix_y, npix_x), attr ``unit``
        with several Stokes parameters or output channels (issue #15; /images ``layout``
        "cube"): (stokes, channel, npix_y, npix_x) with attrs ``axes``, ``stokes``,
        ``freqs_hz``, ``bandwidths_hz``, ``bmaj_deg``, ``bmin_deg``, ``bpa_deg`` (per
        channel), and ``<name>_mfs`` (stokes, npix_y, npix_x) with the MFS frequency and beam
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

The WCS: :mod:`radimg.io.wcs`; ``radimg info``: :mod:`radimg.io.product_info`; ``radimg
export``: :mod:`radimg.io.fits_export`. Their public names are also reachable from here
(``radimg.io.product.info_text`` ...), imported on first use.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from radimg.io.wcs import (
    OBS_KEYS,
    STOKES_CODES,
    WCS_KEYS,
    attr_str,
    check_wcs_info,
    image_wcs,
    make_wcs_info,
)

__all__ = [
    "IMAGE_NAMES",
    "IMAGE_UNITS",
    "OBS_KEYS",
    "RUN_KEYS",
    "WCS_KEYS",
    "ProductError",
    "check_output_path",
    "checked_wcs",
    "image_wcs",
    "is_radimg_product",
    "make_wcs_info",
    "open_product",
    "read_product",
    "read_run_attrs",
    "remove_stale_temporaries",
    "stale_temporaries",
    "temporary_name",
    "write_product",
]

IMAGE_NAMES = ("dirty", "psf", "model", "residual", "restored")
IMAGE_UNITS = {
    "dirty": "Jy/beam",
    "psf": "Jy/beam",
    "model": "Jy/pixel",
    "residual": "Jy/beam",
    "restored": "Jy/beam",
    "spectral_index": "1",  # dimensionless: d ln S / d ln nu
}
RUN_KEYS = ("config_yaml", "radimg_version", "n_ranks", "timings_json", "load_balance_json")


class ProductError(ValueError):
    """A product file that cannot be written, found or understood (a user error)."""


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


def temporary_name(path: str) -> str:
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
        Jy/pixel, everything else in Jy/beam. A cube product (``wcs_info['cube']``) has
        (stokes, channel, npix_y, npix_x) images and (stokes, npix_y, npix_x) MFS images
        named ``<name>_mfs``.
    wcs_info : mapping
        From ``make_wcs_info``: ``ctype, crval_deg, crpix, cdelt_deg, freq_hz, bmaj_deg,
        bmin_deg, bpa_deg`` (for a cube: of the MFS images), and for a cube ``cube``:
        ``stokes`` (names), per output channel ``freqs_hz``, ``bandwidths_hz``,
        ``bmaj_deg``, ``bmin_deg``, ``bpa_deg``, stored as attributes of each cube image.
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

    Notes
    -----
    Long because this docstring is the reference for what a product holds (40 lines); the
    code, checks then one atomic write of the file's layout in order, is about 75 lines.
    """
    from radimg import __version__

    path = check_output_path(path, overwrite)
    _make_parent(path)
    info = check_wcs_info(wcs_info)
    cube = _check_cube(wcs_info.get("cube"))
    arrays = {}
    shape = None
    for name, img in images.items():
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"invalid image name {name!r}")
        a = np.asarray(img)
        want = _image_axes(name, cube)
        if a.ndim != len(want):
            raise ValueError(
                f"image '{name}' must be {len(want)}-D ({', '.join(want)}), got shape {a.shape}")
        if cube is not None:
            lead = (len(cube["stokes"]), len(cube["freqs_hz"]))[: a.ndim - 2]
            if a.shape[:-2] != lead:
                raise ValueError(f"image '{name}' has shape {a.shape}; the cube's (stokes, "
                                 f"channel) are {lead}")
        if shape is not None and a.shape[-2:] != shape:
            raise ValueError(f"image '{name}' has shape {a.shape}, others {shape}")
        shape = a.shape[-2:]
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

    tmp = temporary_name(path)
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
            g.attrs["layout"] = "image" if cube is None else "cube"
            for name, a in arrays.items():
                ds = g.create_dataset(name, data=a)
                ds.attrs["unit"] = IMAGE_UNITS.get(name.removesuffix("_mfs"), "Jy/beam")
                if cube is not None:
                    _write_cube_attrs(ds, name, cube, info)
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


#: Axes of a cube product's images (DESIGN.md "Product"); 2-D images are (y, x).
CUBE_AXES = ("stokes", "channel", "y", "x")
MFS_AXES = ("stokes", "y", "x")


def _image_axes(name, cube):
    if cube is None:
        return ("y", "x")
    return MFS_AXES if _is_plane(name) else CUBE_AXES


def _is_plane(name):
    """Cube products' images of one plane per Stokes parameter (stokes, y, x): the MFS
    images and the spectral index of joined-channel CLEAN."""
    return name.endswith("_mfs") or name == "spectral_index"


def _check_cube(cube):
    """``wcs_info['cube']`` (None for 2-D products) checked: ``stokes`` (names), and per
    output channel ``freqs_hz``, ``bandwidths_hz``, ``bmaj_deg``, ``bmin_deg``,
    ``bpa_deg``."""
    if cube is None:
        return None
    out = {"stokes": [str(x) for x in cube["stokes"]]}
    bad = [x for x in out["stokes"] if x not in STOKES_CODES]
    if bad or not out["stokes"]:
        raise ValueError(f"cube stokes {out['stokes']} must be names of {list(STOKES_CODES)}")
    n = len(cube["freqs_hz"])
    for k in ("freqs_hz", "bandwidths_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
        out[k] = np.asarray(cube[k], dtype=np.float64).reshape(-1)
        if out[k].size != n or n == 0:
            raise ValueError(f"cube {k} must hold one value per output channel ({n})")
    return out


def _write_cube_attrs(ds, name, cube, info):
    ds.attrs["axes"] = np.array(_image_axes(name, cube), dtype=h5py.string_dtype())
    ds.attrs["stokes"] = np.array(cube["stokes"], dtype=h5py.string_dtype())
    if _is_plane(name):
        for k in ("freq_hz", "bandwidth_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
            ds.attrs[k] = info[k]
    else:
        for k in ("freqs_hz", "bandwidths_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
            ds.attrs[k] = cube[k]


def read_cube_attrs(ds) -> dict | None:
    """The cube attributes of one image dataset (None for a 2-D image): ``axes``,
    ``stokes`` (list of str) and, per output channel, ``freqs_hz``, ``bandwidths_hz``,
    ``bmaj_deg``, ``bmin_deg``, ``bpa_deg`` (ndarray (channel,)); an MFS image
    (``<name>_mfs``, (stokes, y, x)) has one channel: its ``freq_hz``, ``bandwidth_hz`` and
    beam."""
    if ds.ndim == 2:
        return None
    a = ds.attrs
    out = {"axes": [attr_str(x) for x in a["axes"]], "stokes": [attr_str(x) for x in a["stokes"]]}
    if "freqs_hz" in a:
        for k in ("freqs_hz", "bandwidths_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
            out[k] = np.asarray(a[k], dtype=np.float64).reshape(-1)
    else:
        for k in ("freq_hz", "bandwidth_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
            out[k.replace("freq_", "freqs_").replace("bandwidth_", "bandwidths_")] = (
                np.array([float(a[k])]))
    return out


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def open_product(path) -> h5py.File:
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


def read_wcs_attrs(g) -> dict:
    a = g.attrs
    return {
        "ctype": tuple(attr_str(c) for c in a["ctype"]),
        "crval_deg": tuple(float(x) for x in a["crval_deg"]),
        "crpix": tuple(float(x) for x in a["crpix"]),
        "cdelt_deg": tuple(float(x) for x in a["cdelt_deg"]),
        "freq_hz": float(a["freq_hz"]),
        "bmaj_deg": float(a["bmaj_deg"]),
        "bmin_deg": float(a["bmin_deg"]),
        "bpa_deg": float(a["bpa_deg"]),
        **{
            k: (attr_str(a[k]) if isinstance(v, str) else float(a[k])) if k in a else v
            for k, v in OBS_KEYS.items()
        },
    }


def read_run_attrs(g) -> dict:
    run = {}
    for k, v in g.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        run[k] = v
    return run


def checked_wcs(g, path) -> dict:
    """``read_wcs_attrs`` of ``/images``, refusing a WCS that no viewer can use."""
    try:
        wcs = read_wcs_attrs(g)
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
        ``images``: name -> ndarray (npix_y, npix_x) float32, or for a cube product
        (stokes, channel, npix_y, npix_x) and ``<name>_mfs`` (stokes, npix_y, npix_x);
        ``cube``: name -> :func:`read_cube_attrs` of each cube image; ``units``: name ->
        str; ``shape``: (npix_y, npix_x); ``wcs``: the ``wcs_info`` dict; ``run``: the ``/run``
        attributes; ``timings`` and ``load_balance``: the parsed JSON; ``extras``:
        name -> ndarray.

    Raises
    ------
    ProductError
        Missing file, not HDF5, or not a radimg product.
    """
    with open_product(path) as f:
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
            "units": {n: attr_str(g[n].attrs.get("unit", "")) for n in names},
            "shape": tuple(int(s) for s in g[names[0]].shape[-2:]) if names else None,
            # per image of a cube product: read_cube_attrs (2-D images are absent)
            "cube": {n: read_cube_attrs(g[n]) for n in names if g[n].ndim > 2},
            "wcs": checked_wcs(g, path),
            "run": read_run_attrs(f["run"]),
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


#: Names of the modules split off this one, imported on first use (old import paths).
_MOVED = {
    "info_text": "radimg.io.product_info",
    "export_fits": "radimg.io.fits_export",
    "fits_targets": "radimg.io.fits_export",
    "is_radimg_fits": "radimg.io.fits_export",
}


def __getattr__(name):
    # lazy: fits_export and product_info import this module
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
