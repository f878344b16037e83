"""simulate.sky_image (issue #16): a sky model image predicted exactly.

Oracles: the DFT path equals the simulator's own point sources placed at each pixel's
RA/Dec (astropy WCS); the operator path equals the DFT path to its epsilon; bad images are
clean errors naming the file.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from radimg.config import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
SIM = {
    "telescope": "mwa", "ra_deg": 10.0, "dec_deg": -27.0, "freq_hz": 1.5e8,
    "chan_width_hz": 4.0e6, "nchan": 2, "ha_start_h": -0.02, "ha_stop_h": 0.02,
    "integration_s": 60.0, "noise_jy": 0.0, "seed": 1, "sources": [],
}  # fmt: skip


def _write_fits(path, img, *, cell_arcsec=120.0, ra=10.0, dec=-27.0, bunit="Jy/pixel",
                crpix=None, ctype=("RA---SIN", "DEC--SIN")):
    from astropy.io import fits

    n = img.shape[0]
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = ctype
    h["CRPIX1"], h["CRPIX2"] = crpix or (n // 2 + 1, n // 2 + 1)
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CDELT1"], h["CDELT2"] = -cell_arcsec / 3600, cell_arcsec / 3600
    if bunit is not None:
        h["BUNIT"] = bunit
    fits.PrimaryHDU(img, header=h).writeto(path)
    return path


def _vis(ms):
    from casacore.tables import table

    with table(str(ms), ack=False) as t:
        return t.getcol("DATA")[:, :, 0].astype(np.complex128), t.getcol("UVW")


def _image(n=64, k=12, seed=3):
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n))
    iy, ix = rng.integers(4, n - 4, (2, k))
    img[iy, ix] = rng.uniform(0.2, 2.0, k)
    return img


def test_dft_path_equals_point_sources_at_the_pixel_radec(tmp_path):
    from astropy.wcs import WCS

    from radimg.sim.simulate import simulate

    img = _image()
    fits_path = _write_fits(tmp_path / "sky.fits", img, crpix=(30.5, 35.0))  # off-centre grid
    got = simulate({**SIM, "sky_image": str(fits_path), "sky_image_spectral_index": -0.7},
                   tmp_path / "a.ms")
    wcs = WCS(str(fits_path)).celestial
    iy, ix = np.nonzero(img)
    ra, dec = wcs.pixel_to_world_values(ix, iy)
    sources = [{"ra_deg": float(r), "dec_deg": float(d), "flux_jy": float(f),
                "spectral_index": -0.7, "ref_freq_hz": SIM["freq_hz"]}
               for r, d, f in zip(ra, dec, img[iy, ix], strict=True)]
    ref = simulate({**SIM, "sources": sources}, tmp_path / "b.ms")
    a, _ = _vis(got)
    b, _ = _vis(ref)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())  # complex64 data


def test_operator_path_equals_dft_path(tmp_path):
    from radimg.sim.simulate import simulate

    img = _image(n=96, k=20)
    img[48, 48] = 3.0  # the phase centre pixel too
    fits_path = _write_fits(tmp_path / "sky.fits", img)
    logs = []
    simulate({**SIM, "sky_image": str(fits_path), "sky_image_predict": "operator"},
             tmp_path / "op.ms", log=logs.append)
    simulate({**SIM, "sky_image": str(fits_path), "sky_image_predict": "dft"},
             tmp_path / "dft.ms")
    assert "operator" in logs[0] and "1e-08" in logs[0]
    a, _ = _vis(tmp_path / "op.ms")
    b, _ = _vis(tmp_path / "dft.ms")
    err = np.abs(a - b).max() / np.abs(b).max()
    assert err < 1e-6, err  # operator at 1e-8; the MS stores complex64


def test_operator_refused_for_an_image_off_radimg_grid(tmp_path):
    from radimg.sim.simulate import simulate

    path = _write_fits(tmp_path / "sky.fits", _image(), crpix=(30.5, 35.0))
    with pytest.raises(ConfigError, match="operator needs a SIN image centred"):
        simulate({**SIM, "sky_image": str(path), "sky_image_predict": "operator"},
                 tmp_path / "x.ms")
    assert not (tmp_path / "x.ms").exists()


def test_a_product_model_is_a_sky_image(tmp_path):
    """/images/model of a radimg product (Jy/pixel, radimg's WCS) predicts like its FITS."""
    from radimg.io.product import make_wcs_info, write_product
    from radimg.sim.simulate import simulate

    img = _image()
    info = make_wcs_info(64, 64, np.radians(120 / 3600), (np.radians(10.0), np.radians(-27.0)),
                         1.5e8)
    prod = tmp_path / "p.h5"
    write_product(prod, {"model": img}, info, {"config_yaml": "", "n_ranks": 1})
    simulate({**SIM, "sky_image": str(prod)}, tmp_path / "h.ms")
    simulate({**SIM, "sky_image": str(_write_fits(tmp_path / "s.fits", img))},
             tmp_path / "f.ms")
    a, _ = _vis(tmp_path / "h.ms")
    b, _ = _vis(tmp_path / "f.ms")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("no-wcs", "no celestial WCS"),
        ("nan", "NaN"),
        ("jy-beam", "Jy/beam"),
        ("no-unit", "Jy/pixel"),
        ("cube", "2-D"),
        ("text", "FITS (.fits) or HDF5"),
        ("missing", "no such file"),
    ],
)
def test_bad_sky_images_are_clean_errors_naming_the_file(tmp_path, kind, needle):
    from astropy.io import fits

    from radimg.sim.sky_image import load_sky_image

    path = tmp_path / "sky.fits"
    img = _image()
    if kind == "no-wcs":
        fits.PrimaryHDU(img, header=fits.Header({"BUNIT": "Jy/pixel"})).writeto(path)
    elif kind == "nan":
        img[3, 3] = np.nan
        _write_fits(path, img)
    elif kind == "jy-beam":
        _write_fits(path, img, bunit="Jy/beam")
    elif kind == "no-unit":
        _write_fits(path, img, bunit=None)
    elif kind == "cube":
        _write_fits(path, np.stack([img, img]))
    elif kind == "text":
        path = tmp_path / "sky.txt"
        path.write_text("1 2 3")
    with pytest.raises(ConfigError) as e:
        load_sky_image(path)
    assert "simulate.sky_image" in str(e.value) and str(path) in str(e.value)
    assert needle in str(e.value), str(e.value)


def test_make_galaxy_script_writes_a_usable_sky_image(tmp_path):
    from radimg.sim.sky_image import load_sky_image, on_radimg_grid

    out = tmp_path / "gal.fits"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_galaxy.py"), "--npix", "128",
                        "--cell-arcsec", "120", "--ra", "10", "--dec", "-27", "--flux-jy", "20",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sky = load_sky_image(out)
    assert sky.flux.min() >= 0 and sky.flux.sum() == pytest.approx(20.0)
    assert on_radimg_grid(sky, np.radians(10.0), np.radians(-27.0)) == pytest.approx(
        np.radians(120 / 3600))
