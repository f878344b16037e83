"""Quick-look PNGs of a product: images on their sky axes, and per-rank load and memory.

``radimg preview PRODUCT.h5 --png OUT.png [--load-png LOAD.png]``

- OUT.png: the restored image (the dirty image when there is none), the residual when
  present, and the PSF (central zoom), each on RA/Dec axes from the product's WCS (astropy
  WCSAxes), with a colour bar in the image's unit. When the product holds a restoring beam
  (``bmaj_deg > 0``) its ellipse is drawn in the lower-left corner of each sky image.
  A cube product (several Stokes parameters or output channels) shows one row per
  Stokes parameter and one column per output channel (at most six) plus the MFS image.
- LOAD.png: one bar chart per per-rank quantity of ``load_balance_json`` (gridding load,
  samples, bytes moved, memory) and per-rank wall time / peak memory from ``timings_json``,
  each with the mean as a dashed line and max/mean in the title: the figure a survey operator
  looks at to see whether a job was balanced.

matplotlib is driven through ``Figure`` + the Agg canvas (no pyplot, no display, no global
backend switch), so previews work on login and compute nodes alike.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from radimg.io.product import ProductError, read_product
from radimg.io.wcs import image_wcs

__all__ = ["preview", "load_figure", "image_figure", "cube_figure"]

PSF_ZOOM_PIX = 128
# load_balance_json keys shown first, in this order, when present (others follow)
_PREFERRED = ("load", "samples_per_rank", "nsamples", "nrow", "bytes_sent", "bytes_recv")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ProductError(
            "radimg preview needs matplotlib (pip install 'matplotlib>=3.7')"
        ) from None
    return Figure, FigureCanvasAgg


#: PNG tEXt key/value radimg writes, so a later preview may replace its own file only.
SOFTWARE = "radimg preview"


def is_radimg_png(path) -> bool:
    """True when ``path`` is a PNG radimg preview wrote (its ``Software`` tEXt chunk)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + SOFTWARE.encode() in head


def check_png_path(path, what="--png") -> str:
    """Where a PNG may be written: a ``.png`` name (a ``.jpg`` would get PNG bytes), outside
    any Measurement Set, and not replacing a file radimg did not write."""
    from radimg.io.product import check_output_path

    p = os.fspath(path)
    if not p.lower().endswith(".png"):
        raise ProductError(f"{what} {p}: radimg preview writes PNG; name the file *.png")
    return check_output_path(p, True, what=what, replaceable=is_radimg_png)


def _save(fig, path: str | os.PathLike, dpi: int) -> str:
    """Render with Agg and write atomically (a viewer never sees half a PNG)."""
    _, FigureCanvasAgg = _matplotlib()
    path = os.path.abspath(os.fspath(path))
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise ProductError(f"cannot create directory for {path}: {e.strerror or e}") from None
    FigureCanvasAgg(fig)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".preview-", suffix=".png", dir=d)
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, metadata={"Software": SOFTWARE})
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def _limits(img: np.ndarray, psf: bool) -> tuple[float, float]:
    """Colour limits: robust for sky images (noise visible, peaks saturate a little)."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return -1.0, 1.0
    if psf:
        return float(min(finite.min(), -0.05)), float(finite.max() or 1.0)
    lo, hi = np.percentile(finite, [0.5, 99.95])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max()) + 1e-12
    return float(lo), float(hi)


def _beam_ellipse(ax, wcs_info: dict, shape: tuple[int, int], Ellipse):
    """The restoring beam in the lower-left corner, in pixel units (bpa east of north)."""
    cell = abs(wcs_info["cdelt_deg"][1])
    if wcs_info["bmaj_deg"] <= 0 or cell <= 0:
        return None
    h = wcs_info["bmaj_deg"] / cell
    w = max(wcs_info["bmin_deg"], 0.0) / cell
    # North is +y and east is -x, so "east of north" is counter-clockwise on screen.
    margin = max(h, 6.0)
    e = Ellipse(
        (margin, margin),
        width=w,
        height=h,
        angle=wcs_info["bpa_deg"],
        facecolor="none",
        edgecolor="white",
        lw=1.2,
        transform=ax.get_transform("pixel"),
    )
    ax.add_patch(e)
    return e


def image_figure(prod: dict, *, psf_zoom: int = PSF_ZOOM_PIX):
    """The image figure (restored or dirty, residual, PSF) of a product read with
    ``read_product``; returns a matplotlib ``Figure``."""
    Figure, _ = _matplotlib()
    from matplotlib.patches import Ellipse

    images = prod["images"]
    main = "restored" if "restored" in images else "dirty" if "dirty" in images else None
    if main is not None and main in (prod.get("cube") or {}):
        return cube_figure(prod, main)
    panels = [n for n in (main, "residual", "psf") if n is not None and n in images]
    if not panels:
        raise ProductError(
            f"nothing to preview: the product has no restored, dirty, residual or psf image "
            f"(it has {', '.join(images) or 'no images'})"
        )
    wcs = image_wcs(prod["wcs"])
    fig = Figure(figsize=(5.2 * len(panels), 5.0), layout="constrained")
    ny, nx = prod["shape"]
    for i, name in enumerate(panels):
        img = np.asarray(images[name], dtype=np.float32)
        ax = fig.add_subplot(1, len(panels), i + 1, projection=wcs)
        vmin, vmax = _limits(img, psf=name == "psf")
        im = ax.imshow(
            img, origin="lower", cmap="inferno", vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        finite = img[np.isfinite(img)]
        rms = float(np.sqrt(np.mean(finite.astype(np.float64) ** 2))) if finite.size else 0.0
        unit = prod["units"].get(name, "")
        ax.set_title(
            f"{name}  peak {finite.max() if finite.size else 0:.3g} {unit}, rms {rms:.3g}",
            fontsize=9,
        )
        ax.coords[0].set_axislabel("RA (J2000)")
        ax.coords[1].set_axislabel("Dec (J2000)" if i == 0 else " ")
        ax.coords[0].set_major_formatter("hh:mm")
        ax.coords[1].set_major_formatter("dd")
        ax.coords.grid(color="white", alpha=0.25, ls="dotted")
        if name == "psf" and psf_zoom and max(nx, ny) > psf_zoom:
            cx, cy = nx // 2, ny // 2
            ax.set_xlim(cx - psf_zoom // 2 - 0.5, cx + psf_zoom // 2 - 0.5)
            ax.set_ylim(cy - psf_zoom // 2 - 0.5, cy + psf_zoom // 2 - 0.5)
            ax.coords[0].set_major_formatter("hh:mm:ss")
            ax.coords[1].set_major_formatter("dd:mm")
            ax.set_title(
                f"psf (central {psf_zoom}x{psf_zoom} px), peak {finite.max():.3g}", fontsize=9
            )
        if name != "psf":
            _beam_ellipse(ax, prod["wcs"], (ny, nx), Ellipse)
        fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
    cell = abs(prod["wcs"]["cdelt_deg"][1]) * 3600
    beam = prod["wcs"]
    btxt = (
        f', beam {beam["bmaj_deg"] * 3600:.3g}" x {beam["bmin_deg"] * 3600:.3g}" '
        f"pa {beam['bpa_deg']:.3g} deg"
        if beam["bmaj_deg"] > 0
        else ", no restoring beam"
    )
    fig.suptitle(
        f'{nx}x{ny} at {cell:.4g}" ({nx * cell / 3600:.1f} deg), '
        f"{beam['freq_hz'] / 1e6:.4g} MHz, {prod['run'].get('n_ranks', '?')} rank(s){btxt}",
        fontsize=10,
    )
    return fig


#: Output channels a cube preview shows at most (evenly spaced, the first and last kept).
CUBE_MAX_CHANNELS = 6


def cube_figure(prod: dict, name: str):
    """The figure of a cube product (issue #15): one row per Stokes parameter, one column
    per output channel (at most :data:`CUBE_MAX_CHANNELS`, evenly spaced) and the MFS image
    last, each on RA/Dec axes with its own colour scale (Q, U and V are signed and weak
    beside I) and the channel's restoring beam."""
    Figure, _ = _matplotlib()
    from matplotlib.patches import Ellipse

    cube = prod["cube"][name]
    data = np.asarray(prod["images"][name], dtype=np.float32)  # (stokes, channel, y, x)
    mfs = prod["images"].get(f"{name}_mfs")
    nchan = data.shape[1]
    chans = sorted({int(round(x)) for x in np.linspace(0, nchan - 1,
                                                       min(nchan, CUBE_MAX_CHANNELS))})
    cols = [(c, data[:, c]) for c in chans]
    if mfs is not None and nchan > 1:
        cols.append((None, np.asarray(mfs, dtype=np.float32)))
    wcs = image_wcs(prod["wcs"])
    nrow, ncol = data.shape[0], len(cols)
    fig = Figure(figsize=(3.4 * ncol, 3.2 * nrow), layout="constrained")
    ny, nx = prod["shape"]
    unit = prod["units"].get(name, "")
    for r, stokes in enumerate(cube["stokes"]):
        for k, (c, planes) in enumerate(cols):
            img = planes[r]
            ax = fig.add_subplot(nrow, ncol, r * ncol + k + 1, projection=wcs)
            vmin, vmax = _limits(img, psf=False)
            if stokes != "I" and stokes not in ("XX", "YY", "RR", "LL"):
                vmax = max(abs(vmin), abs(vmax))  # signed: symmetric about 0
                vmin = -vmax
            im = ax.imshow(img, origin="lower", cmap="inferno" if vmin >= 0 or stokes == "I"
                           else "RdBu_r", vmin=vmin, vmax=vmax, interpolation="nearest")
            finite = img[np.isfinite(img)]
            peak = float(finite[np.argmax(np.abs(finite))]) if finite.size else 0.0
            where = "MFS" if c is None else f"{cube['freqs_hz'][c] / 1e6:.5g} MHz"
            ax.set_title(f"{name} {stokes}, {where}: peak {peak:.3g}", fontsize=8)
            ax.coords[0].set_axislabel("RA" if r == nrow - 1 else " ")
            ax.coords[1].set_axislabel("Dec" if k == 0 else " ")
            ax.coords[0].set_major_formatter("hh:mm")
            ax.coords[1].set_major_formatter("dd")
            beam = dict(prod["wcs"])
            if c is not None:
                beam.update(bmaj_deg=float(cube["bmaj_deg"][c]),
                            bmin_deg=float(cube["bmin_deg"][c]),
                            bpa_deg=float(cube["bpa_deg"][c]))
            _beam_ellipse(ax, beam, (ny, nx), Ellipse)
            if k == ncol - 1:
                fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
    cell = abs(prod["wcs"]["cdelt_deg"][1]) * 3600
    fig.suptitle(
        f"{name}: Stokes {' '.join(cube['stokes'])}, {nchan} output channel(s)"
        + (f" (showing {len(chans)})" if len(chans) < nchan else "")
        + f', {nx}x{ny} at {cell:.4g}", {prod["run"].get("n_ranks", "?")} rank(s)',
        fontsize=10,
    )
    return fig


def _per_rank_series(prod: dict) -> list[tuple[str, list[float], bool]]:
    """(title, values per rank, is_bytes) for every per-rank list the product records."""
    n = int(prod["run"].get("n_ranks", 0) or 0)
    lb = prod.get("load_balance") or {}
    out: list[tuple[str, list[float], bool]] = []
    seen = set()

    def good(v):
        return (
            isinstance(v, list)
            and len(v) == n
            and n > 0
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        )

    keys = [k for k in _PREFERRED if k in lb] + [k for k in lb if k not in _PREFERRED]
    for k in keys:
        v = lb.get(k)
        if good(v) and k not in seen:
            seen.add(k)
            if k == "nsamples" and "samples_per_rank" in seen:
                continue
            is_bytes = "bytes" in k or "mem" in k
            out.append((k.replace("_per_rank", ""), [float(x) for x in v], is_bytes))
    tim = prod.get("timings") or {}
    per_rank = tim.get("per_rank") if isinstance(tim, dict) else None
    if isinstance(per_rank, list) and len(per_rank) == n and n > 0:
        if all(isinstance(t, dict) and "total" in t for t in per_rank):
            out.append(("wall time total (s)", [float(t["total"]) for t in per_rank], False))
        for key in ("peak_mem_bytes", "peak_rss_bytes", "peak_memory_bytes"):
            if all(isinstance(t, dict) and key in t for t in per_rank):
                out.append(("peak memory", [float(t[key]) for t in per_rank], True))
                break
    return out


def load_figure(prod: dict):
    """Per-rank bar charts (load, samples, traffic, memory, time); returns a ``Figure``."""
    Figure, _ = _matplotlib()
    series = _per_rank_series(prod)
    if not series:
        raise ProductError(
            "the product records no per-rank load balance (load_balance_json has no per-rank "
            "lists); nothing to plot for --load-png"
        )
    ncol = min(3, len(series))
    nrow = -(-len(series) // ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.0 * nrow), layout="constrained")
    n = len(series[0][1])
    for i, (title, vals, is_bytes) in enumerate(series):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        v = np.asarray(vals, dtype=np.float64)
        scale, unit = 1.0, ""
        if is_bytes:
            scale, unit = next(
                (s, u)
                for s, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
                if v.max() >= s or s == 1
            )
        mean = v.mean()
        ax.bar(np.arange(n), v / scale, color="tab:blue", width=0.8)
        ax.axhline(mean / scale, color="k", ls="--", lw=1, label="mean")
        ratio = f"max/mean {v.max() / mean:.3f}" if mean > 0 else "all zero"
        ax.set_title(f"{title}: {ratio}", fontsize=9)
        ax.set_xlabel("rank")
        ax.set_ylabel(unit or ("seconds" if title.endswith("(s)") else title))
        if n <= 16:
            ax.set_xticks(np.arange(n))
    lb = prod.get("load_balance") or {}
    fig.suptitle(f"per-rank balance, {n} rank(s), scheme {lb.get('scheme', '?')}", fontsize=10)
    return fig


def preview(
    product: str | os.PathLike,
    png: str | os.PathLike | None,
    load_png: str | os.PathLike | None = None,
    *,
    dpi: int = 110,
) -> list[str]:
    """Write the image figure to ``png`` and, if given, the load figure to ``load_png``.

    Returns
    -------
    list of str
        The PNG paths written.
    """
    if png is None and load_png is None:
        raise ProductError("preview: give --png and/or --load-png")
    if not 10 <= int(dpi) <= 1200:
        raise ProductError(f"preview --dpi {dpi}: expected a resolution of 10 to 1200 dots per inch")
    for what, p in (("--png", png), ("--load-png", load_png)):
        if p is not None:
            check_png_path(p, what)
    if png is not None and load_png is not None and os.path.realpath(png) == os.path.realpath(
        load_png
    ):
        raise ProductError(f"--png and --load-png name the same file: {png}")
    prod = read_product(product)
    written = []
    if png is not None:
        written.append(_save(image_figure(prod), png, dpi))
    if load_png is not None:
        written.append(_save(load_figure(prod), load_png, dpi))
    return written
