"""FITS images a radio astronomer can use as they are (issue #12, item 7): the observation's
facts travel MS -> ``ms_metadata`` -> product ``/images`` attributes -> FITS header, checked
here on synthetic products (the real-MS path, and the comparison with WSClean's header,
are in tests/test_real_mwa_clean.py).
"""

import math

import h5py
import numpy as np
import pytest

from radimg.io import product as P

pytestmark = pytest.mark.unit

NX, NY = 40, 32
CELL_DEG = 0.05
OBS = {
    "bandwidth_hz": 3.07e7,
    "stokes": "I",
    "date_obs": "2014-12-17T15:36:09.000",
    "telescope": "MWA",
    "observer": "Randall",
    "field_name": "FDS_DEC-40.0",
}
CONFIG = "image:\n  npix: 40\n  cell_arcsec: 180.0\ndeconvolution: {algorithm: clean, niter: 7}\n"


def _product(tmp_path, beam=(0.08, 0.06, -30.0), obs=OBS, names=P.IMAGE_NAMES):
    wcs = P.make_wcs_info(
        NX,
        NY,
        math.radians(CELL_DEG),
        (math.radians(50.0), math.radians(-37.0)),
        1.85e8,
        beam,
        **obs,
    )
    rng = np.random.default_rng(1)
    imgs = {n: rng.standard_normal((NY, NX)) for n in names}
    return P.write_product(tmp_path / "p.h5", imgs, wcs, {"config_yaml": CONFIG, "n_ranks": 2})


def test_observation_keys_round_trip_through_the_product(tmp_path):
    path = _product(tmp_path)
    w = P.read_product(path, images=False)["wcs"]
    for k, v in OBS.items():
        assert w[k] == v and type(w[k]) is type(v), k
    with h5py.File(path) as f:  # stored as /images attributes, next to freq_hz
        assert f["images"].attrs["bandwidth_hz"] == 3.07e7
        assert f["images"].attrs["telescope"] == "MWA"
    text = P.info_text(path)
    assert "bandwidth 30.7 MHz, Stokes I" in text
    assert "telescope MWA, observer Randall, field FDS_DEC-40.0" in text
    assert "2014-12-17T15:36:09.000 UTC" in text
    with pytest.raises(TypeError, match="unknown keys"):
        P.make_wcs_info(4, 4, 1e-3, (0.0, 0.0), 1e8, bandwith_hz=1.0)


@pytest.mark.parametrize("degenerate", [False, True])
def test_fits_header_carries_beam_date_telescope_band_and_config(tmp_path, degenerate):
    from astropy.io import fits
    from astropy.time import Time
    from astropy.wcs import WCS

    path = _product(tmp_path)
    files = P.export_fits(path, tmp_path / "fits", degenerate_axes=degenerate)
    assert len(files) == len(P.IMAGE_NAMES)
    for f in files:
        name = f.rsplit("-", 1)[1][: -len(".fits")]
        with fits.open(f) as hdul:
            hdul.verify("exception")
            h, data = hdul[0].header, hdul[0].data
        assert data.shape == ((1, 1) if degenerate else (1,)) + (NY, NX)
        assert h["RADIMGIM"] == name and h["ORIGIN"].startswith("radimg")
        assert (h["BMAJ"], h["BMIN"], h["BPA"]) == (0.08, 0.06, -30.0)  # on the model too
        assert h["BUNIT"] == ("Jy/pixel" if name == "model" else "Jy/beam")
        assert h["DATE-OBS"] == OBS["date_obs"]
        assert h["MJD-OBS"] == pytest.approx(Time(OBS["date_obs"], scale="utc").mjd, abs=1e-9)
        assert (h["TELESCOP"], h["OBSERVER"], h["OBJECT"]) == ("MWA", "Randall", "FDS_DEC-40.0")
        assert (h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CUNIT3"]) == (
            "FREQ",
            1.85e8,
            3.07e7,
            "Hz",
        )
        assert h["SPECSYS"] == "TOPOCENT" and h["RADESYS"] == "FK5" and h["EQUINOX"] == 2000.0
        if degenerate:
            assert (h["CTYPE4"], h["CRVAL4"]) == ("STOKES", 1.0)  # Stokes I
        else:
            assert "CTYPE4" not in h
        hist = [str(c) for c in h["HISTORY"]]
        assert hist[0].startswith("radimg ") and hist[0].endswith("resolved config:")
        assert "  cell_arcsec: 180.0" in hist and "  niter: 7" in hist
        assert all(len(c) <= 72 for c in hist)
        w = WCS(h)
        assert w.has_celestial and w.has_spectral
        world = w.pixel_to_world(NX // 2, NY // 2, *([0, 0] if degenerate else [0]))
        assert world[0].ra.deg == pytest.approx(50.0) and world[0].dec.deg == pytest.approx(-37.0)
        assert world[1].to_value("Hz") == pytest.approx(1.85e8)


def test_astropy_parses_the_brightness_units(tmp_path):
    """BUNIT is the FITS standard's spelling (case matters: WSClean's JY/BEAM does not
    parse)."""
    import astropy.units as u
    from astropy.io import fits

    for f in P.export_fits(_product(tmp_path), tmp_path / "fits"):
        unit = u.Unit(fits.getheader(f)["BUNIT"], format="fits")
        assert unit in (u.Jy / u.beam, u.Jy / u.pix)


def test_product_without_observation_facts_or_beam(tmp_path):
    """A product of an older radimg (no OBS_KEYS attributes, no beam) still reads and
    exports: no invented DATE-OBS/TELESCOP/OBSERVER, no zero beam, a 1 Hz CDELT3 (0 would
    make the WCS singular), OBJECT the image name."""
    from astropy.io import fits
    from astropy.wcs import WCS

    path = _product(tmp_path, beam=(0.0, 0.0, 0.0), obs={}, names=("dirty", "psf"))
    with h5py.File(path, "r+") as f:
        for k in P.OBS_KEYS:
            del f["images"].attrs[k]
    w = P.read_product(path, images=False)["wcs"]
    assert {k: w[k] for k in P.OBS_KEYS} == P.OBS_KEYS
    for f in P.export_fits(path, tmp_path / "fits"):
        with fits.open(f) as hdul:
            hdul.verify("exception")
            h = hdul[0].header
        for k in ("BMAJ", "BMIN", "BPA", "DATE-OBS", "MJD-OBS", "TELESCOP", "OBSERVER"):
            assert k not in h, k
        assert h["OBJECT"] == h["RADIMGIM"] and h["CDELT3"] == 1.0
        assert WCS(h).has_spectral
    assert "observation:" not in P.info_text(path)


# ---- ms_metadata: where the facts come from ------------------------------------------


def test_ms_metadata_observation_facts_of_the_real_mwa_ms():
    from data_paths import MWA_MS, pyuvdata_ms

    from radimg.io.ms import ms_metadata

    m = ms_metadata(pyuvdata_ms(MWA_MS))
    assert m["telescope"] == "MWA" and m["observer"] == "Randall"
    # the main table's TIME (4925547369 s, MJD UTC: the centroid of the one 112 s
    # integration), as WSClean 3.1 writes DATE-OBS for this MS
    assert m["date_obs"] == "2014-12-17T15:36:09.000"
    assert m["bandwidth_hz"] == pytest.approx(30.7e6)  # 10 channels of 3.07 MHz


def test_iso_utc_and_band_span():
    from astropy.time import Time

    from radimg.io.ms import _iso_utc, band_span

    t = 4925547369.0
    assert _iso_utc(t) == Time(t / 86400.0, format="mjd", scale="utc").isot
    # a TAI epoch is 35 s ahead of UTC in 2014
    assert _iso_utc(t, "TAI") == "2014-12-17T15:35:34.000"
    assert _iso_utc(0.0) is None and _iso_utc(float("nan")) is None
    f = np.array([100e6, 101e6, 105e6])
    assert band_span(f, np.array([1e6, 1e6, 2e6])) == pytest.approx(6.5e6)  # edges 99.5..106
    assert band_span(f, -np.array([1e6, 1e6, 2e6])) == pytest.approx(6.5e6)  # descending band
    assert band_span(f, np.array([np.nan] * 3)) == pytest.approx(5e6)  # centres only
    assert band_span(f[:1], np.array([0.0])) == 0.0
