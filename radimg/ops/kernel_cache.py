"""On-disk cache of w-projection kernel tables, keyed by everything they depend on.

Like FFTW wisdom: the first run of a geometry builds the tables
(:func:`radimg.kernels.wproject.build_wkernel_tables`, ~1-4 s at the sizes of a real
4096-pixel job), every later run with the same image geometry, residual-w range, accuracy
and kernel code loads them (~0.1 s). Directory: ``$RADIMG_CACHE_DIR``, else
``$XDG_CACHE_HOME/radimg``, else ``~/.cache/radimg``; ``RADIMG_CACHE_DIR=off`` disables it.

Safe under concurrent ranks and jobs: a table file is written under a unique temporary name
in the cache directory and renamed over the final name (``os.replace`` is atomic), so a
reader sees a complete file or none. Never trusted blindly: a file whose stored key, format
or checksum (SHA-256 of every array's bytes) does not match is ignored and rebuilt (and
replaced). The key hashes the parameters (floats by their exact ``repr``) and the source of
the modules that compute the tables, so a code change never reuses old tables. Any I/O
problem (read-only directory, full disk) only costs the build: the run goes on.
The directory is kept under ``$RADIMG_CACHE_MAX_BYTES`` (default 4 GiB), oldest files first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np

__all__ = ["cache_dir", "cached_wkernel_tables", "table_key"]

FORMAT = "radimg-wkernel-tables-1"
DEFAULT_MAX_BYTES = 4 * 2**30
_ARRAYS = ("tab_x", "tab_y", "hs_x", "hs_y", "corr_x", "corr_y")
_SCALARS = ("dw0", "ddw", "tmax", "q", "psi0", "rank", "W", "beta")


def cache_dir():
    """The cache directory (a Path), or None when caching is off."""
    env = os.environ.get("RADIMG_CACHE_DIR")
    if env is not None:
        if env.strip().lower() in ("", "off", "none", "0", "false"):
            return None
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "radimg"


@functools.cache
def _code_hash():
    """Hash of the source that computes the tables (radimg/kernels/wproject.py, es.py)."""
    from radimg.kernels import es, wproject

    h = hashlib.sha256()
    for mod in (wproject, es):
        h.update(pathlib.Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


def table_key(**params):
    """Hex key of one table set: the parameters (floats by exact repr, dtype by name) and
    the table code's hash."""
    norm = {k: (repr(float(v)) if isinstance(v, (float, np.floating)) else
                np.dtype(v).name if k == "dtype" else int(v) if isinstance(v, (int, np.integer))
                else str(v)) for k, v in sorted(params.items())}
    blob = json.dumps({"format": FORMAT, "code": _code_hash(), "params": norm}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], blob


def _checksum(arrays):
    h = hashlib.sha256()
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.view(np.uint8).ravel() if a.size else b"")
    return h.hexdigest()


def _load(path, blob):
    from radimg.kernels.wproject import WKernelTables

    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != FORMAT or str(z["key"]) != blob:
            return None
        arrays = {n: z[n] for n in _ARRAYS}
        if str(z["checksum"]) != _checksum(arrays):
            return None
        scalars = json.loads(str(z["scalars"]))
    fields = {**arrays, **scalars}
    fields["q"], fields["rank"], fields["W"] = (int(fields[k]) for k in ("q", "rank", "W"))
    return WKernelTables(**fields)


def _store(directory, path, tables, blob):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {n: np.ascontiguousarray(getattr(tables, n)) for n in _ARRAYS}
    scalars = {n: (int(getattr(tables, n)) if n in ("q", "rank", "W") else
                   float(getattr(tables, n))) for n in _SCALARS}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, format=np.str_(FORMAT), key=np.str_(blob),
                     checksum=np.str_(_checksum(arrays)), scalars=np.str_(json.dumps(scalars)),
                     **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file, the new one, or none
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _trim(directory)


def _trim(directory, keep_bytes=None):
    """Remove the least recently used table files above the size cap."""
    if keep_bytes is None:
        try:
            keep_bytes = int(os.environ.get("RADIMG_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES))
        except ValueError:
            keep_bytes = DEFAULT_MAX_BYTES
    files = []
    for p in directory.glob("wkernel-*.npz"):
        with contextlib.suppress(OSError):
            st = p.stat()
            files.append((max(st.st_atime, st.st_mtime), st.st_size, p))
    total = sum(f[1] for f in files)
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= keep_bytes:
            break
        with contextlib.suppress(OSError):
            p.unlink()
            total -= size


def cached_wkernel_tables(build, **params):
    """``build(**params)`` through the cache: load the tables if a verified file for exactly
    these parameters exists, else build them and store them.

    Returns
    -------
    (WKernelTables, str) : the tables and how they were obtained, ``"cache"``, ``"built"``
    (and stored), or ``"built (no cache: reason)"``.
    """
    directory = cache_dir()
    if directory is None:
        return build(**params), "built (no cache: RADIMG_CACHE_DIR=off)"
    key, blob = table_key(**params)
    path = directory / f"wkernel-{key}.npz"
    if path.exists():
        try:
            tables = _load(path, blob)
        except Exception:  # noqa: BLE001 - truncated (BadZipFile), foreign, corrupt: rebuild
            tables = None
        if tables is not None:
            with contextlib.suppress(OSError):
                os.utime(path)  # least-recently-used order for _trim
            return tables, "cache"
    tables = build(**params)
    try:
        _store(directory, path, tables, blob)
    except OSError as exc:
        return tables, f"built (no cache: {exc.strerror or exc})"
    return tables, "built"
