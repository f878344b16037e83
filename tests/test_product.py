"""HDF5 product: round trip, atomic write, overwrite refusal, permissions, FITS WCS, info."""

import json
import math
import os

import h5py
import numpy as np
import pytest

from radimg.io import product as P
from radimg.io.product import ProductError

pytestmark = pytest.mark.unit

NX, NY = 64, 48  # non-square on purpose: catches swapped axes
CELL_DEG = 0.4  # large cells so that the SIN projection is far from linear at the edges
RA0, DEC0 = 350.0, -27.0  # RA near 0/360 on purpose


def wcs_info(beam=(0.05, 0.03, 25.0)):
    return P.make_wcs_info(
        NX, NY, math.radians(CELL_DEG), (math.radians(RA0), math.radians(DEC0)), 1.5e8, beam
    )


def images(seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal((NY, NX)) for n in P.IMAGE_NAMES}


def run_attrs():
    return {
        "config_yaml": "image:\n  npix: 64\n",
        "n_ranks": 3,
        "timings_json": {
            "read": 1.5,
            "grid": 2.25,
            "total": 4.0,
            "per_rank": [{"read": 1.5, "grid": 2.0}, {"read": 1.0, "grid": 2.25}],
        },
        "load_balance_json": {"load": [10, 11, 12], "max_over_mean": 1.0909},
    }


@pytest.fixture
def product(tmp_path):
    imgs = images()
    path = P.write_product(tmp_path / "run.h5", imgs, wcs_info(), run_attrs())
    return path, imgs


def test_make_wcs_info_follows_internals():
    w = wcs_info()
    assert w["ctype"] == ("RA---SIN", "DEC--SIN")
    assert w["crpix"] == (NX // 2 + 1, NY // 2 + 1)
    assert w["cdelt_deg"] == pytest.approx((-CELL_DEG, CELL_DEG))
    assert w["crval_deg"] == pytest.approx((RA0, DEC0))


def test_round_trip(product):
    path, imgs = product
    assert os.path.isabs(path)
    prod = P.read_product(path)
    assert set(prod["images"]) == set(P.IMAGE_NAMES)
    for n, a in imgs.items():
        got = prod["images"][n]
        assert got.dtype == np.float32 and got.shape == (NY, NX)
        np.testing.assert_array_equal(got, a.astype(np.float32))
    assert prod["units"]["model"] == "Jy/pixel"
    assert all(prod["units"][n] == "Jy/beam" for n in ("dirty", "psf", "residual", "restored"))
    assert prod["shape"] == (NY, NX)
    w, ref = prod["wcs"], wcs_info()
    assert w["ctype"] == ref["ctype"]
    for k in ("crval_deg", "crpix", "cdelt_deg"):
        assert w[k] == pytest.approx(ref[k])
    for k in ("freq_hz", "bmaj_deg", "bmin_deg", "bpa_deg"):
        assert w[k] == ref[k]
    run = prod["run"]
    assert run["config_yaml"] == "image:\n  npix: 64\n"
    assert run["n_ranks"] == 3
    assert run["radimg_version"] == __import__("radimg").__version__
    assert prod["timings"]["grid"] == 2.25 and prod["timings"]["per_rank"][1]["read"] == 1.0
    assert prod["load_balance"]["load"] == [10, 11, 12]
    assert P.read_product(path, images=["psf"])["images"].keys() == {"psf"}
    assert P.read_product(path, images=False)["images"] == {}


def test_layout_matches_design(product):
    path, _ = product
    with h5py.File(path, "r") as f:
        g = f["images"]
        for n in P.IMAGE_NAMES:
            assert g[n].dtype == np.float32 and g[n].shape == (NY, NX)
            assert "unit" in g[n].attrs
        for k in P.WCS_KEYS:
            assert k in g.attrs, k
        for k in P.RUN_KEYS:
            assert k in f["run"].attrs, k
        json.loads(f["run"].attrs["timings_json"])
        json.loads(f["run"].attrs["load_balance_json"])


def test_extras_and_extra_run_attrs(tmp_path):
    attrs = {**run_attrs(), "major_cycles": 4, "stopped_because": "threshold", "per_cycle": [1, 2]}
    model = np.arange(6.0).reshape(2, 3)
    path = P.write_product(
        tmp_path / "c.h5",
        {"model": np.zeros((NY, NX))},
        wcs_info(),
        attrs,
        extras={"checkpoint/model": model, "checkpoint/iteration": 17},
    )
    prod = P.read_product(path)
    np.testing.assert_array_equal(prod["extras"]["checkpoint/model"], model)
    assert int(prod["extras"]["checkpoint/iteration"]) == 17
    assert prod["run"]["major_cycles"] == 4 and prod["run"]["stopped_because"] == "threshold"
    assert json.loads(prod["run"]["per_cycle"]) == [1, 2]


def _strays(d):
    return [n for n in os.listdir(d) if ".tmp-" in n or n.startswith(".radimg-probe")]


def test_failure_mid_write_leaves_nothing(tmp_path):
    bad = {
        "oops": np.array([object()], dtype=object)
    }  # h5py cannot store it: fails inside the file
    with pytest.raises(TypeError):
        P.write_product(tmp_path / "run.h5", images(), wcs_info(), run_attrs(), extras=bad)
    assert os.listdir(tmp_path) == []


def test_failure_mid_overwrite_keeps_old_product(product):
    path, imgs = product
    with pytest.raises(TypeError):
        P.write_product(
            path,
            images(seed=1),
            wcs_info(),
            run_attrs(),
            overwrite=True,
            extras={"oops": np.array([object()], dtype=object)},
        )
    np.testing.assert_array_equal(
        P.read_product(path)["images"]["dirty"], imgs["dirty"].astype(np.float32)
    )
    assert _strays(os.path.dirname(path)) == []


def test_overwrite_refused_then_allowed(product):
    path, _ = product
    with pytest.raises(FileExistsError, match=path):
        P.write_product(path, images(seed=1), wcs_info(), run_attrs())
    with pytest.raises(FileExistsError, match="overwrite"):
        P.check_output_path(path)
    P.write_product(path, images(seed=1), wcs_info(), run_attrs(), overwrite=True)
    new = images(seed=1)["psf"].astype(np.float32)
    np.testing.assert_array_equal(P.read_product(path)["images"]["psf"], new)
    assert _strays(os.path.dirname(path)) == []


def test_check_output_path_creates_nothing_and_write_makes_dirs(tmp_path):
    """The check leaves no directory behind (a run that fails later leaves nothing); the
    writer creates the missing directories."""
    target = tmp_path / "a" / "b" / "run.h5"
    assert P.check_output_path(target) == str(target)
    assert os.listdir(tmp_path) == []  # no directory, and the write probe is removed
    P.write_product(target, images(), wcs_info(), run_attrs())
    assert target.is_file()


def test_overwrite_replaces_only_a_radimg_product(tmp_path):
    """radimg never replaces a file it did not create, even with overwrite."""
    foreign = tmp_path / "mine.h5"
    foreign.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not written by radimg"):
        P.check_output_path(foreign, overwrite=True)
    with pytest.raises(FileExistsError, match="not written by radimg"):
        P.write_product(foreign, images(), wcs_info(), run_attrs(), overwrite=True)
    assert foreign.read_bytes() == b"precious"


def test_output_inside_a_measurement_set_is_refused(tmp_path):
    ms = tmp_path / "obs.ms"
    (ms / "ANTENNA").mkdir(parents=True)
    for d in (ms, ms / "ANTENNA"):
        (d / "table.dat").write_bytes(b"x")
    (ms / "table.f1").write_bytes(b"data")
    link = tmp_path / "link"
    link.symlink_to(ms)
    for target in (ms / "table.f1", ms / "ANTENNA" / "run.h5", link / "run.h5"):
        with pytest.raises(FileExistsError, match="inside the Measurement Set"):
            P.check_output_path(target, overwrite=True)
    assert (ms / "table.f1").read_bytes() == b"data"


def test_output_under_a_regular_file(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(ProductError, match="is not a directory"):
        P.check_output_path(f / "sub" / "run.h5")
    with pytest.raises(ProductError, match="is a directory"):
        P.check_output_path(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            P.check_output_path(d / "run.h5")
    finally:
        d.chmod(0o700)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        P.write_product(tmp_path / "a.h5", {"dirty": np.zeros(5)}, wcs_info(), run_attrs())
    with pytest.raises(ValueError, match="shape"):
        P.write_product(
            tmp_path / "a.h5",
            {"dirty": np.zeros((4, 4)), "psf": np.zeros((4, 6))},
            wcs_info(),
            run_attrs(),
        )
    with pytest.raises(ValueError, match="n_ranks"):
        P.write_product(tmp_path / "a.h5", images(), wcs_info(), {"config_yaml": ""})
    assert not (tmp_path / "a.h5").exists()


def test_read_errors(tmp_path):
    with pytest.raises(ProductError, match="no such product"):
        P.read_product(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ProductError, match="not an HDF5 file"):
        P.read_product(junk)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ProductError, match="not a radimg product"):
        P.info_text(tmp_path / "other.h5")


# ---- FITS export --------------------------------------------------------------------


def sin_inverse(lc, mc, ra0, dec0):
    """Independent inverse SIN (orthographic) projection: direction cosines -> RA, Dec (rad)."""
    n = np.sqrt(1.0 - lc**2 - mc**2)
    dec = np.arcsin(mc * np.cos(dec0) + n * np.sin(dec0))
    ra = ra0 + np.arctan2(lc, n * np.cos(dec0) - mc * np.sin(dec0))
    return ra, dec


def test_export_fits_wcs_matches_internals(product, tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    path, imgs = product
    files = P.export_fits(path, tmp_path / "fits")
    assert sorted(os.path.basename(f) for f in files) == sorted(
        f"run-{n}.fits" for n in P.IMAGE_NAMES
    )
    fdirty = next(f for f in files if f.endswith("-dirty.fits"))
    with fits.open(fdirty) as hdul:
        hdr, data = hdul[0].header, hdul[0].data
    # the stored array as is, behind a degenerate frequency axis
    np.testing.assert_array_equal(data, imgs["dirty"].astype(np.float32)[np.newaxis])
    assert hdr["BUNIT"] == "Jy/beam"
    assert hdr["BMAJ"] == 0.05 and hdr["BMIN"] == 0.03 and hdr["BPA"] == 25.0
    assert (hdr["CTYPE1"], hdr["CTYPE2"]) == ("RA---SIN", "DEC--SIN")
    assert (hdr["CRPIX1"], hdr["CRPIX2"]) == (NX // 2 + 1, NY // 2 + 1)
    assert hdr["FREQ"] == 1.5e8
    w = WCS(hdr).celestial

    cell = math.radians(CELL_DEG)
    iy, ix = np.meshgrid(np.arange(NY), np.arange(NX), indexing="ij")
    lc = -(ix - NX // 2) * cell  # l toward east: x runs west
    mc = (iy - NY // 2) * cell  # m toward north
    ok = lc**2 + mc**2 < 1.0
    ra_ref, dec_ref = sin_inverse(lc[ok], mc[ok], math.radians(RA0), math.radians(DEC0))
    ra, dec = w.pixel_to_world_values(ix[ok], iy[ok])  # 0-based (x, y) = (ix, iy)
    dra = (ra - np.degrees(ra_ref) + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dra, 0.0, atol=1e-8)
    np.testing.assert_allclose(dec, np.degrees(dec_ref), atol=1e-8)
    # orientation: east (RA increasing) is left (smaller ix), north is up (larger iy)
    c = (NY // 2, NX // 2)
    ra_c, dec_c = w.pixel_to_world_values(c[1], c[0])
    assert (ra_c, dec_c) == pytest.approx((RA0, DEC0))
    assert w.pixel_to_world_values(c[1] - 1, c[0])[0] > ra_c
    assert w.pixel_to_world_values(c[1], c[0] + 1)[1] > dec_c

    # the helper used by the pipeline's tests agrees with the exported header
    np.testing.assert_allclose(
        P.image_wcs(wcs_info()).pixel_to_world_values(ix[ok], iy[ok]), (ra, dec)
    )

    with fits.open(next(f for f in files if f.endswith("-model.fits"))) as hdul:
        assert hdul[0].header["BUNIT"] == "Jy/pixel"


def test_export_fits_overwrite_and_degenerate_axes(product, tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    path, imgs = product
    out = tmp_path / "fits"
    P.export_fits(path, out)
    P.export_fits(path, out)  # derived files: replaced by default
    with pytest.raises(FileExistsError):
        P.export_fits(path, out, overwrite=False)
    files = P.export_fits(path, out, overwrite=True, degenerate_axes=True)
    with fits.open(files[0]) as hdul:
        hdr, data = hdul[0].header, hdul[0].data
    assert data.shape == (1, 1, NY, NX)
    assert hdr["CTYPE3"] == "FREQ" and hdr["CRVAL3"] == 1.5e8 and hdr["CTYPE4"] == "STOKES"
    w = WCS(hdr)
    world = w.pixel_to_world_values(NX // 2, NY // 2, 0, 0)
    assert world[0] == pytest.approx(RA0) and world[1] == pytest.approx(DEC0)
    assert [n for n in os.listdir(out) if ".tmp-" in n] == []


# ---- info ---------------------------------------------------------------------------


def test_info_text(product):
    path, _ = product
    text = P.info_text(path)
    for frag in (
        path,
        "3 rank(s)",
        f"{NY} x {NX}",
        "Jy/pixel",
        "RA---SIN",
        "cell 1440 arcsec",
        "150 MHz",
        "bmaj 180 arcsec",
        "bmin 108 arcsec",
        "bpa 25 deg",
        "grid: 2.25",
        "max_over_mean: 1.091",
        "load: [10, 11, 12]",
        "per_rank[1]: read 1, grid 2.25",
        "-27.000000",
    ):
        assert frag in text, (frag, text)
    for n in P.IMAGE_NAMES:
        assert n in text


def test_info_text_without_beam(tmp_path):
    path = P.write_product(
        tmp_path / "d.h5",
        {"dirty": np.zeros((NY, NX))},
        wcs_info((0, 0, 0)),
        {"config_yaml": "", "n_ranks": 1},
    )
    text = P.info_text(path)
    assert "restoring beam: none" in text and "timings (s): none recorded" in text


def test_unwritable_directory_probe(tmp_path, monkeypatch):
    """The write probe's failure becomes PermissionError (works as root too)."""

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(P.tempfile, "mkstemp", deny)
    with pytest.raises(PermissionError, match=r"not writable .*Permission denied"):
        P.check_output_path(tmp_path / "run.h5")
