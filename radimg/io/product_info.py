"""``radimg info``: what a product holds, as text (sizes, WCS, beam, timings, load balance)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import h5py
import numpy as np

from radimg.io.product import (
    RUN_KEYS,
    checked_wcs,
    open_product,
    read_cube_attrs,
    read_run_attrs,
)
from radimg.io.wcs import attr_str
from radimg.progress import format_bytes

__all__ = ["info_text"]


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
    with open_product(path) as f:
        g = f["images"]
        wcs = checked_wcs(g, path)
        run = read_run_attrs(f["run"])
        rows, plane, cube = [], None, None
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
            unit = attr_str(ds.attrs.get("unit", ""))
            rows.append((n, " x ".join(str(s) for s in a.shape), str(a.dtype), unit, stats))
            plane = plane or a.shape[-2:]
            if a.ndim == 4 and cube is None:
                cube = read_cube_attrs(ds)
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
    lines.append("  images (npix_y x npix_x" + (
        "; cubes stokes x channel x npix_y x npix_x, <name>_mfs stokes x npix_y x npix_x):"
        if cube is not None else "):"))
    for n, shp, dt, unit, stats in rows:
        lines.append(f"    {n:<{w}}  {shp}  {dt}  {unit:<8}  {stats}")
    ra, dec = wcs["crval_deg"]
    cx, cy = wcs["cdelt_deg"]
    lines.append(f"  phase centre: RA {ra:.6f} deg ({_hms(ra)})  Dec {dec:.6f} deg ({_dms(dec)})")
    if plane is not None:
        ny, nx = (int(s) for s in plane)
        fov = f", field {abs(cx) * nx:.3f} x {abs(cy) * ny:.3f} deg"
    else:
        fov = ""
    lines.append(
        f"  projection: {wcs['ctype'][0]} / {wcs['ctype'][1]}, cell {abs(cx) * 3600:.4g} arcsec"
        f"{fov}, crpix ({wcs['crpix'][0]:g}, {wcs['crpix'][1]:g})"
    )
    bw = f", bandwidth {wcs['bandwidth_hz'] / 1e6:.6g} MHz" if wcs["bandwidth_hz"] > 0 else ""
    lines.append(f"  frequency: {wcs['freq_hz'] / 1e6:.6g} MHz{bw}, Stokes {wcs['stokes']}")
    if cube is not None:
        chans = ", ".join(
            f"{f / 1e6:.6g} ({b / 1e6:.4g})"
            for f, b in zip(cube["freqs_hz"], cube["bandwidths_hz"], strict=True))
        lines.append(f"  cube: Stokes {' '.join(cube['stokes'])}; {len(cube['freqs_hz'])} output "
                     f"channel(s), MHz (bandwidth): {chans}")
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
