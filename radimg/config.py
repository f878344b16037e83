"""Typed configuration: schema, defaults, YAML loading and ``--set`` overrides.

Precedence is defaults < YAML file < ``--set section.key=value`` overrides (QuartiCal
``config/parser.py`` style). Every key has a type, a default and a one-line description with
its unit in the key's name (``cell_arcsec``, ``freq_hz``). Unknown sections and keys fail with
the nearest valid name suggested; a value of the wrong type, range or choice fails naming the
key, the value and the expected form.

This module imports only the standard library and PyYAML, so that ``radimg --help`` and
``radimg config --dump`` stay instant (no numpy, numba, h5py or casacore).

Examples
--------
>>> cfg = resolve("configs/demo.yaml", ["image.npix=512", "wterm.epsilon=1e-5"])  # doctest: +SKIP
>>> cfg["image"]["npix"]                                                           # doctest: +SKIP
512
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "ms_paths",
    "stokes_products",
    "SCHEMA",
    "defaults",
    "dump_default",
    "fft_friendly",
    "load_yaml",
    "parse_bytes",
    "parse_set",
    "resolve",
    "to_yaml",
    "validate",
]


class ConfigError(ValueError):
    """A configuration the user must fix (unknown key, wrong type, YAML syntax, ...)."""


class _Bad(ValueError):
    """Internal: a value failed its key's check; ``str()`` is the expected form."""


# --------------------------------------------------------------------------------------
# Key specifications
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key.

    Parameters
    ----------
    default : Any
        Default value (already in normalised form).
    doc : str
        One-line description; written as the comment in ``dump_default()``.
    expected : str
        Human description of the accepted form, used in error messages.
    convert : callable
        ``convert(value) -> normalised value``; raises ``_Bad`` when the value is invalid.
    """

    default: Any
    doc: str
    expected: str
    convert: Callable[[Any], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_int(v: Any) -> int:
    """Accept ints, integral floats (``1e5``) and strings that parse as either."""
    if _is_int(v):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip().replace("_", ""))
        except ValueError:
            pass
        try:
            f = float(v)
        except ValueError:
            raise _Bad from None
        return _as_int(f)
    raise _Bad


def _as_float(v: Any) -> float:
    # YAML 1.1 (PyYAML) reads "1e-4" (no decimal point) as a string: accept it.
    if _is_int(v) or isinstance(v, float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _Bad from None
    else:
        raise _Bad
    if not math.isfinite(f):
        raise _Bad
    return f


def _range_text(lo, hi, lo_open, hi_open) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def _check_range(x, lo, hi, lo_open, hi_open):
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise _Bad
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise _Bad


def _snr_db(v: Any) -> float:
    x = _as_float(v)
    _check_range(x, -100.0, 300.0, False, False)
    return x


def int_key(default, doc, *, lo=None, hi=None, even=False, auto=False, nullable=False) -> Key:
    """An integer key, optionally bounded, even, or also accepting ``"auto"`` / null."""
    expected = "an " + ("even " if even else "") + "integer"
    rng = _range_text(lo, hi, False, False)
    if rng:
        expected += " " + rng
    if auto:
        expected = f'"auto" or {expected}'
    if nullable:
        expected += " or null"

    def convert(v):
        if nullable and v is None:
            return None
        if auto and isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        x = _as_int(v)
        _check_range(x, lo, hi, False, False)
        if even and x % 2:
            raise _Bad
        return x

    return Key(default, doc, expected, convert)


def float_key(default, doc, *, lo=None, hi=None, lo_open=False, hi_open=False,
              auto=False) -> Key:
    """A finite float key with optional open or closed bounds, optionally also ``"auto"``."""
    expected = "a number"
    rng = _range_text(lo, hi, lo_open, hi_open)
    if rng:
        expected += " " + rng
    if auto:
        expected = f'"auto" or {expected}'

    def convert(v):
        if auto and isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        x = _as_float(v)
        _check_range(x, lo, hi, lo_open, hi_open)
        return x

    return Key(default, doc, expected, convert)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def bool_key(default, doc) -> Key:
    """A boolean key (YAML true/false; the strings yes/no/on/off/1/0 also pass)."""

    def convert(v):
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        if _is_int(v) and v in (0, 1):
            return bool(v)
        raise _Bad

    return Key(default, doc, "true or false", convert)


def str_key(default, doc, *, nullable=False, nonempty=True, path=False, suffixes=()) -> Key:
    """A string key (a path, a column name), optionally null.

    ``path``: ``~`` is expanded (YAML does not do it; a directory named ``~`` is never what
    was meant). ``suffixes``: the file name must end with one of them (case-insensitive),
    e.g. an HDF5 product path must not be called ``.fits``.
    """
    expected = "a non-empty string" if nonempty else "a string"
    if path:
        expected = "a path" if not suffixes else "a path ending in " + " or ".join(suffixes)
    if nullable:
        expected += " or null"

    def convert(v):
        if v is None and nullable:
            return None
        if isinstance(v, str):
            if nonempty and not v.strip():
                raise _Bad
            if path:
                v = os.path.expanduser(v)
                if suffixes and not v.lower().endswith(tuple(x.lower() for x in suffixes)):
                    raise _Bad
            return v
        raise _Bad

    return Key(default, doc, expected, convert)


def choice_key(default, doc, choices: Iterable[str]) -> Key:
    """One of a fixed set of strings (case-insensitive; stored lower-case)."""
    choices = tuple(choices)
    expected = "one of " + ", ".join(choices)

    def convert(v):
        if isinstance(v, str) and v.strip().lower() in choices:
            return v.strip().lower()
        near = difflib.get_close_matches(str(v).lower(), choices, n=1, cutoff=0.5)
        if near:
            raise _Bad(f"{expected} (did you mean '{near[0]}'?)")
        raise _Bad

    return Key(default, doc, expected, convert)


def int_list_key(default, doc, *, lo=None) -> Key:
    """A non-empty list of integers (a bare integer is taken as a one-element list)."""
    expected = "a non-empty list of integers" + (f" >= {lo}" if lo is not None else "")

    def convert(v):
        if _is_int(v) or isinstance(v, str) and not v.strip().startswith("["):
            v = [v]
        if isinstance(v, str):
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                raise _Bad from None
        if not isinstance(v, (list, tuple)) or not v:
            raise _Bad
        out = [_as_int(x) for x in v]
        if lo is not None and any(x < lo for x in out):
            raise _Bad
        return out

    return Key(list(default), doc, expected, convert)


def box_list_key(default, doc) -> Key:
    """A list of pixel boxes ``[x0, y0, x1, y1]`` (integers >= 0); empty = none."""
    expected = "a list of [x0, y0, x1, y1] pixel boxes (integers >= 0)"

    def convert(v):
        if isinstance(v, str):
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                raise _Bad from None
        if v is None:
            return []
        if not isinstance(v, (list, tuple)):
            raise _Bad
        if len(v) == 4 and all(not isinstance(x, (list, tuple)) for x in v):
            v = [v]  # a single box
        out = []
        for b in v:
            if not isinstance(b, (list, tuple)) or len(b) != 4:
                raise _Bad
            bb = [_as_int(x) for x in b]
            if any(x < 0 for x in bb):
                raise _Bad
            out.append(bb)
        return out

    return Key(list(default), doc, expected, convert)


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str | int | float, *, unit_required: bool = False) -> int:
    """Parse a memory size such as ``"8GiB"``, ``"500MB"``, ``"1.5 GiB"`` or ``1024``.

    Parameters
    ----------
    text : str or int or float
        A number of bytes, or a number followed by a unit: B, kB/MB/GB/TB (powers of 1000;
        K/M/G/T alone mean the same) or KiB/MiB/GiB/TiB (powers of 1024). Case-insensitive.
    unit_required : bool
        Refuse a bare number (what a user writes: ``8`` meant 8 GiB, not 8 bytes); write
        ``8B`` for bytes.

    Returns
    -------
    int
        Size in bytes (> 0).

    Raises
    ------
    ValueError
        If the text is not a positive size with a known unit.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a memory size: {text!r}")
    if isinstance(text, (int, float)):
        if unit_required:
            raise ValueError(f"memory size {text!r} has no unit (write e.g. 8GiB or 500MB)")
        n = float(text)
        unit = ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _BYTE_UNITS:
            raise ValueError(
                f"not a memory size: {text!r} (expected e.g. 8GiB, 500MB, 1.5TiB or a byte count)"
            )
        n, unit = float(m.group(1)), m.group(2).lower()
        if unit_required and not unit:
            raise ValueError(f"memory size {text!r} has no unit (write e.g. 8GiB or 500MB)")
    nbytes = int(n * _BYTE_UNITS[unit])
    if not math.isfinite(n) or nbytes <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return nbytes


def bytes_key(default, doc) -> Key:
    """A memory size (``"8GiB"``) or null; stored as given, checked with ``parse_bytes``."""

    def convert(v):
        if v is None:
            return None
        try:
            parse_bytes(v, unit_required=True)
        except ValueError:
            raise _Bad from None
        return v

    return Key(
        default, doc, 'a memory size with a unit like "8GiB" or "500MB", or null', convert
    )


# --------------------------------------------------------------------------------------
# Data selection and polarisation keys (issue #15)
# --------------------------------------------------------------------------------------


def _yaml_if_text(v, opener="["):
    """A ``--set`` value arrives as YAML already parsed, but a key given as a string that
    looks like a list or mapping (``"[0, 3]"``) is parsed here."""
    if isinstance(v, str) and v.strip().startswith(opener):
        try:
            return _load(v)
        except yaml.YAMLError:
            raise _Bad from None
    return v


def ms_paths(value) -> list[str]:
    """``input.ms`` as a list of paths (one path or a list of them, imaged together)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def ms_list_key(default, doc) -> Key:
    """One Measurement Set path or a non-empty list of them; one path is stored as a
    string (so code that images one MS keeps working), several as a list of strings."""
    expected = "a path or a non-empty list of paths"

    def convert(v):
        v = _yaml_if_text(v)
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        if not items or not all(isinstance(x, str) and x.strip() for x in items):
            raise _Bad
        items = [os.path.expanduser(x) for x in items]
        dup = sorted({x for x in items if items.count(x) > 1})
        if dup:
            raise _Bad(f"{expected}, each given once ({dup[0]} is listed twice)")
        return items[0] if len(items) == 1 else items

    return Key(default, doc, expected, convert)


def spw_key(default, doc) -> Key:
    """A spectral window id, a non-empty list of ids, or ``all``."""
    expected = 'a spectral window id (integer >= 0), a non-empty list of ids, or "all"'

    def convert(v):
        v = _yaml_if_text(v)
        if isinstance(v, str) and v.strip().lower() == "all":
            return "all"
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        if not items:
            raise _Bad
        out = [_as_int(x) for x in items]
        if any(x < 0 for x in out) or len(set(out)) != len(out):
            raise _Bad
        return out[0] if len(out) == 1 else out

    return Key(default, doc, expected, convert)


def field_key(default, doc) -> Key:
    """A FIELD row id or a field NAME (a string of digits is an id)."""
    expected = "a field id (integer >= 0) or a field name"

    def convert(v):
        if isinstance(v, str) and v.strip() and not v.strip().lstrip("+-").isdigit():
            return v.strip()
        x = _as_int(v)
        if x < 0:
            raise _Bad
        return x

    return Key(default, doc, expected, convert)


def pair_key(default, doc, *, integer, lo=0.0, open_max=False) -> Key:
    """Null or ``[first, last]`` (``first <= last``; ``last`` may be null when
    ``open_max``): channel ranges (integers) and uv ranges (numbers)."""
    what = "integers" if integer else "numbers"
    expected = f"null or [min, max] ({what} >= {lo:g}, min <= max" + (
        "; max null = no upper limit)" if open_max else ")")

    def convert(v):
        v = _yaml_if_text(v)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise _Bad
        conv = _as_int if integer else _as_float
        a = conv(v[0])
        b = None if (open_max and v[1] is None) else conv(v[1])
        if a < lo or (b is not None and b < a):
            raise _Bad
        return [a, b]

    return Key(default, doc, expected, convert)


def phase_centre_key(default, doc) -> Key:
    """Null (the field's own centre) or ``{ra_deg, dec_deg}``."""
    expected = "null or {ra_deg: <deg>, dec_deg: <deg in -90..90>}"

    def convert(v):
        v = _yaml_if_text(v, "{")
        if v is None:
            return None
        if not isinstance(v, Mapping) or set(v) != {"ra_deg", "dec_deg"}:
            raise _Bad
        ra, dec = _as_float(v["ra_deg"]), _as_float(v["dec_deg"])
        if not -90.0 <= dec <= 90.0:
            raise _Bad
        return {"ra_deg": ra % 360.0, "dec_deg": dec}

    return Key(copy.deepcopy(default), doc, expected, convert)


#: Stokes parameters and instrumental products image.stokes may name, in stored order.
STOKES_NAMES = ("I", "Q", "U", "V")
INSTRUMENTAL_NAMES = ("XX", "XY", "YX", "YY", "RR", "RL", "LR", "LL")
_POL_ORDER = STOKES_NAMES + INSTRUMENTAL_NAMES


def stokes_products(value) -> list[str]:
    """The polarisation products of an ``image.stokes`` value, in stored order.

    ``"IQUV"``, ``"QU"``, ``"V"``, ``"XX"``, ``"XXYY"``, ``"xx,yy"`` or a list such as
    ``["I", "V"]``: Stokes letters and two-letter instrumental products (case-insensitive;
    commas and spaces separate but are not needed).

    Raises
    ------
    ValueError
        An unknown letter or product, one given twice, or linear and circular
        instrumental products mixed.
    """
    text = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    s = re.sub(r"[\s,;+]", "", text.upper())
    out, i = [], 0
    while i < len(s):
        if s[i : i + 2] in INSTRUMENTAL_NAMES:
            tok, i = s[i : i + 2], i + 2
        elif s[i] in STOKES_NAMES:
            tok, i = s[i], i + 1
        else:
            raise ValueError(f"unknown polarisation {s[i:i + 2] or s[i]!r} in {text!r}")
        if tok in out:
            raise ValueError(f"{tok} is given twice in {text!r}")
        out.append(tok)
    if not out:
        raise ValueError("no polarisation given")
    if len({p[0] in "XY" for p in out if len(p) == 2}) > 1:
        raise ValueError(f"{text!r} mixes linear (X, Y) and circular (R, L) products")
    return sorted(out, key=_POL_ORDER.index)


def stokes_key(default, doc) -> Key:
    """``image.stokes``: see :func:`stokes_products`; stored as the products joined
    (``"IQUV"``, ``"XXYY"``)."""
    expected = (
        "Stokes parameters from I, Q, U, V (e.g. I, V, QU, IQUV) and/or instrumental "
        "products XX, XY, YX, YY, RR, RL, LR, LL (e.g. XX, XXYY)"
    )

    def convert(v):
        if not isinstance(v, (str, list, tuple)):
            raise _Bad
        try:
            return "".join(stokes_products(v))
        except ValueError as exc:
            raise _Bad(f"{expected}; {exc}") from None

    return Key(default, doc, expected, convert)


# Per-source keys of the simulated sky: key -> (converter key, required?)
SOURCE_KEYS: dict[str, tuple[Key, bool]] = {
    "ra_deg": (float_key(None, "right ascension, degrees", lo=-360.0, hi=360.0), True),
    "dec_deg": (float_key(None, "declination, degrees", lo=-90.0, hi=90.0), True),
    "flux_jy": (float_key(None, "Stokes I flux density at ref_freq_hz, Jy"), True),
    "spectral_index": (float_key(0.0, "S(f) = flux_jy * (f / ref_freq_hz)**spectral_index"), False),
    "ref_freq_hz": (
        float_key(
            None,
            "reference frequency of flux_jy, Hz (default simulate.freq_hz)",
            lo=0.0,
            lo_open=True,
        ),
        False,
    ),
    "major_arcsec": (float_key(0.0, "Gaussian FWHM major axis, arcsec (0 = point)", lo=0.0), False),
    "minor_arcsec": (float_key(0.0, "Gaussian FWHM minor axis, arcsec (0 = point)", lo=0.0), False),
    "pa_deg": (float_key(0.0, "Gaussian position angle, degrees east of north"), False),
    "q_jy": (float_key(0.0, "Stokes Q at ref_freq_hz, Jy (same spectral index as I)"), False),
    "u_jy": (float_key(0.0, "Stokes U at ref_freq_hz, Jy (same spectral index as I)"), False),
    "v_jy": (float_key(0.0, "Stokes V at ref_freq_hz, Jy (same spectral index as I)"), False),
    "rm_rad_m2": (
        float_key(0.0, "rotation measure, rad/m^2: Q + iU turns by 2 RM (lambda^2 - lambda_ref^2)"),
        False,
    ),
}


def sources_key(default, doc) -> Key:
    """A list of source dicts; each source's keys are validated and defaults filled in."""
    req = [k for k, (_, r) in SOURCE_KEYS.items() if r]
    expected = (
        "a list of mappings with keys "
        + ", ".join(req)
        + " (required) and "
        + ", ".join(k for k in SOURCE_KEYS if k not in req)
        + " (optional)"
    )

    def convert(v):
        if isinstance(v, str):
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                raise _Bad from None
        if v is None:
            v = []
        if not isinstance(v, (list, tuple)):
            raise _Bad
        out = []
        for i, src in enumerate(v):
            if not isinstance(src, Mapping):
                raise _Bad(f"{expected}; source [{i}] is {src!r}")
            s = {}
            for name, val in src.items():
                if name not in SOURCE_KEYS:
                    near = difflib.get_close_matches(str(name), SOURCE_KEYS, n=1, cutoff=0.5)
                    hint = f"; did you mean '{near[0]}'?" if near else ""
                    raise _Bad(f"{expected}; source [{i}] has unknown key '{name}'{hint}")
                key = SOURCE_KEYS[name][0]
                if val is None and not SOURCE_KEYS[name][1]:
                    s[name] = None
                    continue
                try:
                    s[name] = key.convert(val)
                except _Bad:
                    raise _Bad(
                        f"{expected}; source [{i}].{name} = {val!r} is not {key.expected}"
                    ) from None
            missing = [k for k in req if k not in s]
            if missing:
                raise _Bad(f"{expected}; source [{i}] lacks {', '.join(missing)}")
            for name, (key, _) in SOURCE_KEYS.items():
                if s.get(name) is None:
                    s[name] = key.default
            out.append({k: s[k] for k in SOURCE_KEYS})
        return out

    return Key(copy.deepcopy(default), doc, expected, convert)


# --------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------


def _src(ra, dec, flux):
    return {
        "ra_deg": ra,
        "dec_deg": dec,
        "flux_jy": flux,
        "spectral_index": -0.7,
        "ref_freq_hz": 1.5e8,
        "major_arcsec": 0.0,
        "minor_arcsec": 0.0,
        "pa_deg": 0.0,
        "q_jy": 0.0,
        "u_jy": 0.0,
        "v_jy": 0.0,
        "rm_rad_m2": 0.0,
    }


# Point sources from the phase centre out to ~8.5 deg, so that wide-field (w-term) errors show.
_DEFAULT_SOURCES = [
    _src(0.0, -27.0, 5.0),
    _src(4.0, -24.0, 3.0),
    _src(352.0, -30.0, 2.0),
    _src(2.0, -35.0, 1.0),
    _src(357.0, -20.0, 1.5),
]

TELESCOPES = ("mwa", "vla", "meerkat")

SCHEMA: dict[str, dict[str, Key]] = {
    "input": {
        "ms": ms_list_key(
            "out/demo.ms",
            "Measurement Set to image, or a list of them imaged together (simulate: true "
            "writes it first, unless an MS that radimg did not simulate is there: that one "
            "is imaged, never replaced)",
        ),
        "datacolumn": str_key(
            "DATA", "MS column holding the visibilities (DATA, CORRECTED_DATA, ...)"
        ),
        "simulate": bool_key(False, "radimg run first writes input.ms from the simulate: section"),
        "spw": spw_key(
            0,
            "spectral window id, a list of ids or all (the channels of every selected "
            "window on one frequency axis)",
        ),
        "field": field_key(0, "field id or field name (FIELD NAME)"),
        "chan_range": pair_key(
            None,
            "[first, last] channel of each selected window, inclusive, 0-based (null = "
            "all; last is cut to the window's last channel)",
            integer=True,
        ),
        "uv_range_lambda": pair_key(
            None,
            "[min, max] baseline length sqrt(u^2 + v^2) per channel, wavelengths, as "
            "WSClean -minuv-l/-maxuv-l (null = all; max null = no upper limit)",
            integer=False,
            open_max=True,
        ),
        "chunk_rows": int_key(100_000, "MS rows read per chunk (bounds read memory)", lo=1),
        "autocorrelations": bool_key(
            False, "image autocorrelations (ANTENNA1 == ANTENNA2) too; WSClean and CASA don't"
        ),
        "lock_wait_s": float_key(
            60.0,
            "seconds to wait for an MS that another process holds write-locked, then fail",
            lo=0.0,
        ),
    },
    "image": {
        "npix": int_key(
            2048,
            "image width in pixels (even; rounded up to an FFT-friendly size)",
            lo=32,
            even=True,
        ),
        "npix_y": int_key(
            None, "image height in pixels (null = npix)", lo=32, even=True, nullable=True
        ),
        "cell_arcsec": float_key(30.0, "pixel size, arcsec", lo=0.0, lo_open=True),
        "stokes": stokes_key(
            "I",
            "polarisation products to image: Stokes I, Q, U, V (e.g. V, IQUV) or "
            "instrumental XX, XY, YX, YY, RR, RL, LR, LL, formed as WSClean does",
        ),
        "channels_out": int_key(
            1, "output channels: the selected channels in this many equal-bandwidth groups",
            lo=1,
        ),
        "phase_centre": phase_centre_key(
            None,
            "image centre {ra_deg, dec_deg} (J2000); uvw and visibilities are rotated to "
            "it exactly (null = the field's own phase centre)",
        ),
        "weighting": choice_key("briggs", "visibility weighting", ("natural", "uniform", "briggs")),
        "robust": float_key(
            0.0, "Briggs robust parameter (-2 ~ uniform, 2 ~ natural)", lo=-2.0, hi=2.0
        ),
        "taper_arcsec": float_key(
            0.0, "Gaussian uv taper FWHM in the image plane, arcsec (0 = none)", lo=0.0
        ),
        # radimg.ops.resample: same images (DFT accuracy unchanged), coarser grids and FFTs
        "small_inversion": bool_key(
            True,
            "grid on the coarsest cells the data's baselines and w-terms allow and resample "
            "the images to cell_arcsec exactly (false: grid at cell_arcsec)",
        ),
    },
    "wterm": {
        # radimg.ops.choose: auto costs every mode on this data set and image
        "mode": choice_key(
            "auto",
            "w-term correction; auto: the fastest mode that meets epsilon, by a cost model "
            "(the run log and radimg plan say which and why)",
            ("auto", "none", "wstack", "wstack-wproject"),
        ),
        "nstacks": int_key(
            "auto", "number of w-stacks (auto: from w range, field and epsilon)", lo=1, auto=True
        ),
        "epsilon": float_key(
            1e-5,
            "target relative accuracy of the gridder",
            lo=1e-12,
            hi=0.1,
            lo_open=True,
            hi_open=True,
        ),
        "oversampling": float_key(
            "auto",
            "uv grid oversampling (padding) factor; auto: chosen by the cost model (none, "
            "wstack: with the w-plane spacing; wstack-wproject: 2)",
            lo=1.2,
            auto=True,
        ),
    },
    "gridder": {
        "device": choice_key("cpu", "where gridding runs", ("cpu", "gpu")),
        "precision": choice_key(
            "single", "floating-point precision of visibilities and grids", ("single", "double")
        ),
        "nthreads": int_key(
            "auto", "threads per rank (auto: the cores given to this rank)", lo=1, auto=True
        ),
        "fft": choice_key("auto", "FFT backend", ("auto", "ducc0", "scipy", "fftw", "numpy")),
    },
    "deconvolution": {
        "algorithm": choice_key(
            "clean", "deconvolution algorithm (none = dirty image only)", ("none", "clean", "admm")
        ),
        "niter": int_key(1000, "maximum minor-cycle iterations in total (ADMM: iterations)", lo=0),
        "nmajor": int_key(20, "maximum major cycles", lo=1),
        "gain": float_key(0.1, "minor-cycle loop gain", lo=0.0, hi=1.0, lo_open=True),
        "mgain": float_key(
            0.8,
            "major-cycle gain: minor cycles stop at (1 - mgain) * peak",
            lo=0.0,
            hi=1.0,
            lo_open=True,
        ),
        "threshold_jy": float_key(0.0, "absolute stopping threshold, Jy/beam", lo=0.0),
        "auto_threshold": float_key(3.0, "stop at this many robust noise sigmas (0 = off)", lo=0.0),
        "minor": choice_key(
            "hogbom",
            "minor-cycle algorithm (multiscale when scales_pix has a scale > 0)",
            ("hogbom", "clark"),
        ),
        "predict": choice_key(
            "auto",
            "CLEAN major-cycle predict of the model: auto (a direct Fourier transform of its "
            "components where the cost models say it is faster than the gridded one, exact), "
            "dft, or operator (always the gridded operator, accurate to wterm.epsilon)",
            ("auto", "dft", "operator"),
        ),
        "scales_pix": int_list_key(
            [0], "multiscale CLEAN scales, pixels ([0] = point scale only)", lo=0
        ),
        "checkpoint_every": int_key(
            1, "major cycles (CLEAN) or iterations (ADMM) between checkpoints (0 = none)", lo=0
        ),
        # Stopping a run early and resuming it (`radimg run --resume`) must give the same
        # image as an uninterrupted run; this key makes the stop reproducible in tests.
        "stop_after_major": int_key(
            0,
            "stop after this many major cycles (ADMM: iterations) of this run, leaving a "
            "checkpoint to --resume from (0 = run to the end)",
            lo=0,
        ),
        "scale_bias": float_key(
            0.6,
            "multiscale: scale s is searched with weight 1 - scale_bias * s / max(scales)",
            lo=0.0,
            hi=1.0,
        ),
        "psf_patch_pix": int_key(
            32, "Clark: half-width of the PSF patch of the minor cycle, pixels", lo=1
        ),
        "mask_path": str_key(
            None,
            "clean mask: FITS image or HDF5 (dataset 'mask'), nonzero = clean here (null = none)",
            nullable=True,
            path=True,
        ),
        "mask_boxes": box_list_key(
            [], "clean boxes [[x0, y0, x1, y1], ...], 0-based inclusive pixels (x = column)"
        ),
        "auto_mask": float_key(
            0.0,
            "once the peak residual falls below this many robust sigmas, clean only where "
            "components already are (0 = off)",
            lo=0.0,
        ),
        # Cubes (issue #15; radimg.deconv.joined): WSClean's -join-channels,
        # -fit-spectral-pol and -join-polarizations
        "join_channels": bool_key(
            False,
            "CLEAN a cube's output channels together: peaks on the weight-sum-weighted MFS "
            "residual, each component on every channel (with spectral_terms: fitted)",
        ),
        "spectral_terms": int_key(
            None,
            "joined channels: fit each component's channel values with this many polynomial "
            "terms in nu/nu0 - 1 (WSClean -fit-spectral-pol; null = no fit)",
            lo=1,
            nullable=True,
        ),
        "join_polarizations": bool_key(
            False,
            "CLEAN a cube's Stokes parameters together: peaks on the root of the sum of "
            "their squares",
        ),
        # ADMM (PURIFY: Carrillo et al. 2014, Onose et al. 2016, Pratley et al. 2018)
        "admm_tol": float_key(
            1e-4, "ADMM: stop when the relative change of the image falls below this", lo=0.0
        ),
        "admm_kappa": float_key(
            1e-3,
            "ADMM: l1 weight relative to max|Psi^T Phi^H y| (PURIFY's gamma)",
            lo=0.0,
            lo_open=True,
        ),
        "admm_sigma_jy": float_key(
            0.0,
            "ADMM: rms noise per visibility (real and imaginary parts), Jy; 0 = the MS "
            "weights' scale estimated from the data (Stokes V or channel differences; a "
            "simulated MS: its weights as they are)",
            lo=0.0,
        ),
        "admm_dual_iters": int_key(
            5,
            "ADMM: dual forward-backward iterations of the l1 + positivity prox (warm-started "
            "across iterations: 5 give 20's model to 5.5e-4 on the real MWA snapshot, 1.7x "
            "faster per iteration)",
            lo=1,
        ),
        "admm_reweights": int_key(0, "ADMM: reweighted-l1 rounds after the first", lo=0),
        "admm_levels": int_key(4, "ADMM: wavelet decomposition levels of SARA", lo=0),
        "admm_power_iters": int_key(
            100, "ADMM: most power-method iterations for the operator norm", lo=1
        ),
    },
    "output": {
        "path": str_key(
            "out/run.h5", "HDF5 product path", path=True, suffixes=(".h5", ".hdf5")
        ),
        "checkpoint": bool_key(
            True, "write a checkpoint after every checkpoint_every major cycles"
        ),
        "overwrite": bool_key(
            False,
            "replace an existing product (and an MS radimg simulated) at the same path; "
            "files radimg did not write are never replaced",
        ),
        "fits_dir": str_key(
            None, "also export FITS images into this directory (null = no)", nullable=True,
            path=True,
        ),
    },
    "resources": {
        "mem_per_rank": bytes_key(
            None, 'memory available per rank, e.g. "8GiB" (null = no limit check)'
        ),
        "exchange_buffer": bytes_key(
            "16MiB",
            "largest grid-tile exchange buffer per rank: the w-planes are exchanged in "
            "rounds that fit it (null = one round)",
        ),
        "channel_groups": int_key(
            "auto",
            "cubes: ranks split into this many groups, each imaging its own output channels "
            "(auto: the largest divisor of the rank count <= image.channels_out; 1 = every "
            "rank on every channel; joined deconvolution always uses 1)",
            lo=1, auto=True,
        ),
    },
    "simulate": {
        "telescope": str_key(
            "mwa", "array layout: mwa, vla, meerkat, or a path to an MS to copy it from"
        ),
        "ra_deg": float_key(0.0, "phase centre right ascension, degrees", lo=-360.0, hi=360.0),
        "dec_deg": float_key(-27.0, "phase centre declination, degrees", lo=-90.0, hi=90.0),
        "freq_hz": float_key(
            1.5e8, "centre frequency of the first channel, Hz", lo=0.0, lo_open=True
        ),
        "chan_width_hz": float_key(1.0e6, "channel width, Hz", lo=0.0, lo_open=True),
        "nchan": int_key(4, "number of channels", lo=1),
        "ha_start_h": float_key(-0.5, "hour angle at the start, hours", lo=-12.0, hi=12.0),
        "ha_stop_h": float_key(0.5, "hour angle at the end, hours", lo=-12.0, hi=12.0),
        "integration_s": float_key(20.0, "integration time, seconds", lo=0.0, lo_open=True),
        "noise_jy": float_key(
            0.0, "rms noise per visibility (real and imaginary parts), Jy", lo=0.0
        ),
        "seed": int_key(42, "random seed for the noise", lo=0),
        "nspw": int_key(
            1, "spectral windows, each of nchan channels of chan_width_hz", lo=1
        ),
        "spw_spacing_hz": float_key(
            "auto",
            "first-channel frequency step from one window to the next, Hz (auto: "
            "nchan * chan_width_hz, windows side by side)",
            lo=0.0,
            lo_open=True,
            auto=True,
        ),
        "feeds": choice_key(
            "auto",
            "feed type: linear (XX XY YX YY) or circular (RR RL LR LL); auto: the "
            "telescope's (MWA, MeerKAT linear; VLA circular)",
            ("auto", "linear", "circular"),
        ),
        "correlations": choice_key(
            "auto",
            "correlations written: parallel (XX, YY or RR, LL), all four, or auto (all "
            "four when a source has q_jy, u_jy or v_jy)",
            ("auto", "parallel", "all"),
        ),
        "sources": sources_key(_DEFAULT_SOURCES, "sky model: list of point/Gaussian sources"),
        "sky_image": str_key(
            None,
            "sky model image added to the sources: FITS or HDF5 in Jy/pixel with a celestial "
            "WCS (null = none)",
            nullable=True,
            path=True,
        ),
        "sky_image_spectral_index": float_key(
            0.0, "sky image flux scales as (freq / simulate.freq_hz) ** this"
        ),
        "sky_image_predict": choice_key(
            "auto",
            "how the sky image is predicted: dft (exact, every non-zero pixel), operator "
            "(w-stacking at epsilon 1e-8, for an image on radimg's own grid), auto (by cost)",
            ("auto", "dft", "operator"),
        ),
        # Pratley & McEwen 2019 sec. 5 / Pratley et al. 2018: random variable-density uvw
        "uv_distribution": choice_key(
            "earth_rotation",
            "uvw of the samples: earth_rotation (the layout's tracks over the hour angles) or "
            "gaussian (random u, v, w as in Pratley et al. 2018; rows cycle the layout's "
            "baselines)",
            ("earth_rotation", "gaussian"),
        ),
        "gaussian_rows": int_key(
            100_000, "uv_distribution gaussian: number of rows (samples per channel)", lo=1
        ),
        "uv_sigma_lambda": float_key(
            382.0,
            "uv_distribution gaussian: standard deviation of u and v, wavelengths at freq_hz "
            "(the paper's pi/3 in radians is a third of 1/(2 cell): 382 at 90 arcsec)",
            lo=0.0,
            lo_open=True,
        ),
        "uv_max_lambda": float_key(
            1145.0,
            "uv_distribution gaussian: |u| and |v| are drawn again beyond this, wavelengths "
            "(keep it inside 1/(2 image.cell_arcsec))",
            lo=0.0,
            lo_open=True,
        ),
        "w_sigma_lambda": float_key(
            200.0, "uv_distribution gaussian: standard deviation of w, wavelengths", lo=0.0
        ),
        "w_max_lambda": float_key(
            600.0,
            "uv_distribution gaussian: |w| is drawn again beyond this, wavelengths",
            lo=0.0,
            lo_open=True,
        ),
        "input_snr_db": Key(
            None,
            "noise from the input SNR of the model visibilities, dB (Pratley et al. 2018: "
            "noise rms per part = ||y0||_2 / sqrt(2 M) 10^(-SNR/20)); null = use noise_jy",
            "a number from -100 to 300 (dB) or null",
            lambda v: None if v is None else _snr_db(v),
        ),
    },
}

SECTION_DOCS = {
    "input": "Visibilities to image",
    "image": "Image geometry and weighting",
    "wterm": "Wide-field (w-term) correction",
    "gridder": "Gridding kernels",
    "deconvolution": "Major/minor cycle deconvolution",
    "output": "Products",
    "resources": "Resources per MPI rank",
    "simulate": "Simulated observation (used when input.simulate is true or by `radimg simulate`)",
}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def fft_friendly(n: int) -> int:
    """Smallest even ``2^a 3^b 5^c 7^d >= n`` (``a >= 1``): an FFT-friendly image size.

    Parameters
    ----------
    n : int
        Requested size.

    Returns
    -------
    int
        The next even 7-smooth integer not below ``n``.
    """
    n = max(int(n), 2)
    m = n + (n % 2)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def defaults() -> dict:
    """The default configuration as a plain nested dict (a fresh copy)."""
    return {
        s: {k: copy.deepcopy(key.default) for k, key in keys.items()} for s, keys in SCHEMA.items()
    }


def _yaml_value(v: Any) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    # PyYAML ends a bare scalar document with an explicit end marker
    return text.removesuffix("...").strip()


def dump_default() -> str:
    """The full default configuration as commented YAML text.

    Returns
    -------
    str
        YAML that loads back (``resolve(yaml_text=...)``) to exactly ``defaults()``.
    """
    lines = [
        "# radimg configuration: every key with its default.",
        "# Precedence: these defaults < this file < `--set section.key=value` on the command line.",
        "# Units are in the key names (_arcsec, _deg, _hz, _s, _jy).",
    ]
    for sect, keys in SCHEMA.items():
        lines += ["", f"# {SECTION_DOCS[sect]}", f"{sect}:"]
        for name, key in keys.items():
            lines.append(f"  # {key.doc}  [{key.expected}]")
            val = key.default
            if name == "sources":
                lines.append(f"  {name}:")
                for src in val:
                    items = ", ".join(f"{k}: {_yaml_value(x)}" for k, x in src.items())
                    lines.append(f"    - {{{items}}}")
            else:
                lines.append(f"  {name}: {_yaml_value(val)}")
    return "\n".join(lines) + "\n"


def to_yaml(cfg: Mapping) -> str:
    """Serialise a resolved configuration (for storing in the product)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None, width=100)


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (the
    plain loader keeps the last one silently: ``npix: 512`` ... ``npix: 4096``)."""


def _unique_mapping(loader, node, deep=False):
    seen: dict = {}
    for knode, _ in node.value:
        key = loader.construct_object(knode, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let the base constructor report it
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (also on line {first}); give each key once",
                knode.start_mark,
            )
        seen[key] = knode.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _load(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _key_lines(text: str) -> dict[tuple, int]:
    """Map (section,) and (section, key) to their 1-based line numbers in the YAML text."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if not isinstance(root, yaml.MappingNode):
        return lines
    for knode, vnode in root.value:
        sect = knode.value
        lines[(sect,)] = knode.start_mark.line + 1
        if isinstance(vnode, yaml.MappingNode):
            for k2, _ in vnode.value:
                lines[(sect, k2.value)] = k2.start_mark.line + 1
    return lines


def load_yaml(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a YAML config file.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    data : dict
        The parsed mapping (empty for an empty file).
    lines : dict
        ``(section,)`` / ``(section, key)`` -> 1-based line number, for error messages.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, not valid YAML (message names file and line),
        or not a mapping at the top level.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a YAML file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return _parse_text(text, path)


def _parse_text(text: str, origin: str) -> tuple[dict, dict]:
    try:
        data = _load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{origin}, line {mark.line + 1}, column {mark.column + 1}" if mark else origin
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        detail = f"{context}: {problem}" if context else problem
        raise ConfigError(f"YAML syntax error in {where}: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a config file must be a mapping of sections "
            f"({', '.join(SCHEMA)}), got {type(data).__name__}"
        )
    return data, _key_lines(text)


def _suggest_key(sect: str, key: str) -> str:
    near = difflib.get_close_matches(key, SCHEMA[sect], n=1, cutoff=0.6)
    if near:
        return f"did you mean '{sect}.{near[0]}'?"
    elsewhere = [f"{s}.{key}" for s in SCHEMA if key in SCHEMA[s]]
    if elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    near = difflib.get_close_matches(key, SCHEMA[sect], n=1, cutoff=0.3)
    if near:
        return f"did you mean '{sect}.{near[0]}'?"
    return f"valid keys in '{sect}': {', '.join(SCHEMA[sect])}"


def _suggest_section(sect: str) -> str:
    near = difflib.get_close_matches(str(sect), SCHEMA, n=1, cutoff=0.5)
    if near:
        return f"did you mean '{near[0]}'?"
    return f"valid sections: {', '.join(SCHEMA)}"


def _set_value(cfg: dict, sect: Any, key: Any, value: Any, where: str) -> None:
    if sect not in SCHEMA:
        raise ConfigError(f"unknown config section '{sect}' ({where}); {_suggest_section(sect)}")
    if key not in SCHEMA[sect]:
        raise ConfigError(f"unknown config key '{sect}.{key}' ({where}); {_suggest_key(sect, key)}")
    spec = SCHEMA[sect][key]
    try:
        cfg[sect][key] = spec.convert(value)
    except _Bad as e:
        expected = str(e) or spec.expected
        raise ConfigError(
            f"invalid value for '{sect}.{key}' ({where}): {value!r}; expected {expected}"
        ) from None


def _merge_mapping(cfg: dict, data: Mapping, origin: str, lines: Mapping) -> None:
    for sect, body in data.items():
        where = f"{origin}, line {lines[(sect,)]}" if (sect,) in lines else origin
        if sect not in SCHEMA:
            raise ConfigError(
                f"unknown config section '{sect}' ({where}); {_suggest_section(sect)}"
            )
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(
                f"config section '{sect}' ({where}) must be a mapping of keys, got {body!r}"
            )
        for key, value in body.items():
            kwhere = f"{origin}, line {lines[(sect, key)]}" if (sect, key) in lines else origin
            _set_value(cfg, sect, key, value, kwhere)


def parse_set(item: str) -> tuple[str, str, Any]:
    """Parse one ``section.key=value`` override.

    The value is parsed as YAML (``true``, ``1e-4``, ``null``, ``[0, 4, 16]``, ``{a: 1}``),
    then checked against the key's type by ``resolve``; an empty value means null.

    Returns
    -------
    section, key : str
    value : Any
    """
    if "=" not in item:
        raise ConfigError(f"--set expects section.key=value, got '{item}'")
    lhs, rhs = item.split("=", 1)
    lhs = lhs.strip()
    if lhs.count(".") != 1 or not all(lhs.split(".")):
        raise ConfigError(
            f"--set expects section.key=value (one dot, e.g. image.npix=1024), got '{item}'"
        )
    sect, key = lhs.split(".")
    try:
        value = _load(rhs) if rhs.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {lhs}: cannot parse value {rhs!r} as YAML: {e}") from None
    return sect, key, value


#: Smallest wterm.epsilon each precision can reach: float32 visibilities and grids carry
#: ~6e-8 relative rounding per operation, and the sums over samples and planes add it up.
EPSILON_FLOOR = {"single": 1e-6, "double": 1e-12}


def _cross_checks(cfg: dict) -> None:
    prec, eps = cfg["gridder"]["precision"], cfg["wterm"]["epsilon"]
    if eps < EPSILON_FLOOR[prec]:
        raise ConfigError(
            f"wterm.epsilon = {eps:g} cannot be reached with gridder.precision = {prec} "
            f"(the floor is {EPSILON_FLOOR[prec]:g}); raise wterm.epsilon or set "
            "gridder.precision: double"
        )
    img = cfg["image"]
    cell_rad = math.radians(img["cell_arcsec"] / 3600.0)
    halves = {}
    for name in ("npix", "npix_y"):
        n = fft_friendly(img[name] if img[name] is not None else img["npix"])
        half = n // 2 * cell_rad
        halves[name] = half
        if half >= 1.0:
            raise ConfigError(
                f"image.{name} = {n} at image.cell_arcsec = {img['cell_arcsec']:g} reaches past "
                f"the horizon (half-width {math.degrees(half):.1f} deg, direction cosine "
                f"{half:.2f} >= 1); reduce npix or cell_arcsec"
            )
    corner = math.hypot(halves["npix"], halves["npix_y"])
    if corner >= 1.0:
        raise ConfigError(
            f"image.npix at image.cell_arcsec = {img['cell_arcsec']:g}: the image corners reach "
            f"past the horizon (l^2 + m^2 = {corner * corner:.2f} >= 1); reduce npix or "
            "cell_arcsec"
        )
    if cfg["input"]["simulate"] and len(ms_paths(cfg["input"]["ms"])) > 1:
        raise ConfigError(
            "input.simulate writes one Measurement Set, but input.ms lists "
            f"{len(ms_paths(cfg['input']['ms']))}; give one path (or simulate each first "
            "with `radimg simulate`)"
        )
    dcfg = cfg["deconvolution"]
    nterms = dcfg["spectral_terms"]
    if nterms is not None and nterms > img["channels_out"]:
        raise ConfigError(
            f"deconvolution.spectral_terms = {nterms} is more than image.channels_out = "
            f"{img['channels_out']}: a polynomial of {nterms} terms needs as many output "
            "channels; lower spectral_terms or raise channels_out"
        )
    sim = cfg["simulate"]
    if sim["ha_stop_h"] <= sim["ha_start_h"]:
        raise ConfigError(
            f"simulate.ha_stop_h ({sim['ha_stop_h']:g}) must be greater than "
            f"simulate.ha_start_h ({sim['ha_start_h']:g})"
        )
    if sim["input_snr_db"] is not None and sim["noise_jy"] > 0:
        raise ConfigError(
            "simulate.input_snr_db and simulate.noise_jy both set the noise; set one "
            "(noise_jy: 0 with input_snr_db, or input_snr_db: null)"
        )
    if sim["uv_distribution"] == "gaussian" and sim["uv_max_lambda"] < sim["uv_sigma_lambda"]:
        raise ConfigError(
            f"simulate.uv_max_lambda ({sim['uv_max_lambda']:g}) must be at least "
            f"simulate.uv_sigma_lambda ({sim['uv_sigma_lambda']:g})"
        )
    if sim["uv_distribution"] == "gaussian" and sim["w_max_lambda"] < sim["w_sigma_lambda"] / 4:
        raise ConfigError(
            f"simulate.w_max_lambda ({sim['w_max_lambda']:g}) is below a quarter of "
            f"simulate.w_sigma_lambda ({sim['w_sigma_lambda']:g}); almost every draw would be "
            "rejected"
        )
    tel = sim["telescope"]
    if tel.lower() not in TELESCOPES:
        sim["telescope"] = tel = os.path.expanduser(tel)
    if cfg["input"]["simulate"] and tel.lower() not in TELESCOPES and not os.path.exists(tel):
        near = difflib.get_close_matches(tel.lower(), TELESCOPES, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(
            f"invalid value for 'simulate.telescope': {tel!r}; expected one of "
            f"{', '.join(TELESCOPES)} or the path of an existing MS{hint}"
        )
    if tel.lower() in TELESCOPES:
        sim["telescope"] = tel.lower()
    for src in sim["sources"]:
        if src["ref_freq_hz"] is None:
            src["ref_freq_hz"] = sim["freq_hz"]


def validate(cfg: Mapping) -> dict:
    """Validate a full or partial config dict (e.g. read back from a product).

    Returns
    -------
    dict
        Defaults overlaid with ``cfg``, every value normalised and checked.
    """
    out = defaults()
    _merge_mapping(out, cfg, "config", {})
    _cross_checks(out)
    return out


def resolve(
    config_path: str | os.PathLike | None = None,
    overrides: Iterable[str] | None = None,
    *,
    yaml_text: str | None = None,
) -> dict:
    """Build the effective configuration: defaults < YAML file < ``--set`` overrides.

    Parameters
    ----------
    config_path : str or path-like, optional
        YAML config file.
    overrides : iterable of str, optional
        ``section.key=value`` items, applied in order (a later one wins).
    yaml_text : str, optional
        YAML text used instead of a file (tests, stored products).

    Returns
    -------
    dict
        ``{section: {key: value}}`` with every key of ``SCHEMA`` present, values normalised
        (choices lower-case, ``"auto"`` kept as the string ``"auto"``). ``image.npix_y``
        stays null when unset: use ``cfg["image"]["npix_y"] or cfg["image"]["npix"]``.

    Raises
    ------
    ConfigError
        For any problem; the message names the file/line or ``--set`` item, the key, the
        value and the expected form, and suggests the nearest valid name for typos.
    """
    cfg = defaults()
    if config_path is not None:
        data, lines = load_yaml(config_path)
        _merge_mapping(cfg, data, os.fspath(config_path), lines)
    if yaml_text is not None:
        data, lines = _parse_text(yaml_text, "<yaml text>")
        _merge_mapping(cfg, data, "<yaml text>", lines)
    for item in overrides or ():
        sect, key, value = parse_set(item)
        _set_value(cfg, sect, key, value, f"--set {item}")
    _cross_checks(cfg)
    return cfg
