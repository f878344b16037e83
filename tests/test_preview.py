"""``radimg preview``: image and per-rank load PNGs from a synthetic product."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from radimg.io.product import make_wcs_info, write_product

pytestmark = pytest.mark.unit

REPO = pathlib.Path(__file__).resolve().parents[1]
ARCSEC = np.pi / (180 * 3600)


def _gauss(n, x0, y0, sx, sy, pa_rad=0.0):
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    dx, dy = x - x0, y - y0
    c, s = np.cos(pa_rad), np.sin(pa_rad)
    # pa east of north: rotate from +y toward -x (east left)
    a = dx * c + dy * s
    b = -dx * s + dy * c
    return np.exp(-0.5 * ((a / sx) ** 2 + (b / sy) ** 2))


def make_product(path, *, restored=True, n=192, ranks=4, beam=(300.0, 200.0, 30.0)):
    rng = np.random.default_rng(3)
    cell = 60.0  # arcsec
    fwhm = 2 * np.sqrt(2 * np.log(2))
    sx, sy = beam[1] / cell / fwhm, beam[0] / cell / fwhm
    psf = _gauss(n, n // 2, n // 2, sx, sy, np.radians(beam[2]))
    psf += 0.08 * np.cos(np.hypot(*np.mgrid[-n // 2 : n // 2, -n // 2 : n // 2]) / 3.0)
    psf[n // 2, n // 2] = 1.0
    srcs = [(n // 2, n // 2, 5.0), (40, 130, 2.0), (150, 60, 1.0)]
    model = np.zeros((n, n))
    sky = np.zeros((n, n))
    for x, y, f in srcs:
        model[y, x] = f
        sky += f * _gauss(n, x, y, sx, sy, np.radians(beam[2]))
    residual = 0.02 * rng.standard_normal((n, n))
    images = {"dirty": sky + 0.2 * rng.standard_normal((n, n)), "psf": psf}
    if restored:
        images.update(model=model, residual=residual, restored=sky + residual)
    b = tuple(x / 3600 for x in beam[:2]) + (beam[2],) if restored else (0.0, 0.0, 0.0)
    wcs = make_wcs_info(n, n, cell * ARCSEC, (0.0, np.radians(-27.0)), 1.5e8, b)
    load = [1000.0, 1010.0, 990.0, 1000.0][:ranks]
    lb = {
        "scheme": "balanced",
        "samples_per_rank": [int(x * 37) for x in load],
        "load": load,
        "bytes_sent": [2**20 * (r + 1) for r in range(ranks)],
        "load_max_over_mean": 1.01,
    }
    per_rank = [
        {
            "read": 0.5,
            "psf": 2.0 + 0.1 * r,
            "total": 4.0 + 0.2 * r,
            "peak_mem_bytes": 2**28 * (r + 2),
        }
        for r in range(ranks)
    ]
    run = {
        "config_yaml": f"image: {{npix: {n}}}\n",
        "n_ranks": ranks,
        "timings_json": json.dumps({"rank0": per_rank[0], "per_rank": per_rank}),
        "load_balance_json": json.dumps(lb),
    }
    return write_product(path, images, wcs, run)


def _check_png(path, min_kb=15):
    from matplotlib.image import imread

    p = pathlib.Path(path)
    assert p.exists() and p.stat().st_size > min_kb * 1024, p
    img = imread(p)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 100, len(colours)  # a colour-mapped image, not a blank canvas
    return img


def test_preview_restored_residual_psf_and_load(tmp_path):
    from radimg.preview import preview

    prod = make_product(tmp_path / "p.h5")
    png, load_png = tmp_path / "figs" / "p.png", tmp_path / "figs" / "load.png"
    written = preview(prod, png, load_png)
    assert [pathlib.Path(w) for w in written] == [png, load_png]
    img = _check_png(png)
    assert img.shape[1] > 2.2 * img.shape[0]  # three panels side by side
    _check_png(load_png, min_kb=10)


def test_preview_figure_contents():
    """Panels, titles and the beam ellipse, checked on the Figure itself."""
    import tempfile

    from matplotlib.patches import Ellipse

    from radimg.io.product import read_product
    from radimg.preview import image_figure, load_figure

    with tempfile.TemporaryDirectory() as d:
        prod = read_product(make_product(pathlib.Path(d) / "p.h5"))
        dirty_only = read_product(make_product(pathlib.Path(d) / "q.h5", restored=False))
    fig = image_figure(prod)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split()[0] for t in titles] == ["restored", "residual", "psf"]
    ells = [p for ax in fig.axes for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ells) == 2  # restored and residual carry the beam
    assert ells[0].height == pytest.approx(300 / 60) and ells[0].angle == pytest.approx(30)
    fig = image_figure(dirty_only)
    titles = [ax.get_title().split()[0] for ax in fig.axes if ax.get_title()]
    assert titles == ["dirty", "psf"]
    assert not [p for ax in fig.axes for p in ax.patches if isinstance(p, Ellipse)]
    fig = load_figure(prod)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("load: max/mean 1.010") for t in titles), titles
    assert any("peak memory" in t for t in titles) and any("wall time" in t for t in titles)


def test_cli_preview(tmp_path):
    prod = make_product(tmp_path / "p.h5", restored=False, ranks=2)
    out = tmp_path / "o.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "radimg.cli",
            "preview",
            str(prod),
            "--png",
            str(out),
            "--load-png",
            str(tmp_path / "l.png"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    _check_png(out)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "radimg.cli",
            "preview",
            str(tmp_path / "nope.h5"),
            "--png",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "nope.h5" in r.stderr, r.stderr
