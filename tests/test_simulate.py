"""Simulator: DFT kernel vs the oracle, uvw vs a real MS, simulate -> MS -> reader round trip."""

import numpy as np
import pytest
from data_paths import MWA_MS, pyuvdata_ms
from reference import C_LIGHT, point_source_vis

from radimg.io.ms import ms_metadata, read_ms
from radimg.kernels.dft import dft_predict
from radimg.sim.layouts import enu_to_itrf, load_layout
from radimg.sim.simulate import baselines, default_sim_config, simulate
from radimg.sim.sky import radec_to_lm, sky_arrays
from radimg.sim.uvw import (
    SIDEREAL_RATE,
    array_longitude,
    baseline_uvw,
    greenwich_apparent_sidereal_time,
    hour_angle_times,
)

pytestmark = pytest.mark.unit

tables = pytest.importorskip("casacore.tables")


def random_uvw(rng, nrow, scale=3000.0):
    uvw = rng.uniform(-scale, scale, size=(nrow, 3))
    uvw[:, 2] *= 0.3
    return uvw


# --------------------------------------------------------------------------------------
# DFT kernel
# --------------------------------------------------------------------------------------


def test_dft_point_sources_match_reference():
    rng = np.random.default_rng(0)
    uvw = random_uvw(rng, 500)
    freq = np.array([1.0e8, 1.5e8, 2.3e8])
    l = np.array([0.0, 0.3, -0.25, 0.05])  # noqa: E741 (direction cosine)
    m = np.array([0.0, -0.2, 0.4, 0.6])
    flux = rng.uniform(0.5, 3.0, size=(4, 3))
    got = dft_predict(uvw, freq, l, m, flux, nthreads=2)
    want = np.zeros((500, 3), np.complex128)
    for s in range(4):
        for c in range(3):
            want[:, c] += point_source_vis(uvw, freq[c : c + 1], l[s], m[s], flux[s, c])[:, 0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(flux).sum())
    # Threads do not change the result; an out buffer is filled in place.
    out = np.empty_like(got)
    assert dft_predict(uvw, freq, l, m, flux, nthreads=1, out=out) is out
    np.testing.assert_allclose(out, got, rtol=0, atol=1e-12)


def test_dft_w_term_matters_and_sign():
    # A source at the phase centre has V = S for any uvw; off centre the w-term enters.
    uvw = np.array([[0.0, 0.0, 1000.0]])
    freq = np.array([C_LIGHT])  # 1 m wavelength: uvw in wavelengths == metres
    v0 = dft_predict(uvw, freq, [0.0], [0.0], [[2.0]])
    np.testing.assert_allclose(v0, [[2.0]], atol=1e-12)
    l0 = 0.1
    v = dft_predict(np.array([[1.0, 0.0, 0.0]]), freq, [l0], [0.0], [[1.0]])
    np.testing.assert_allclose(v, np.exp(2j * np.pi * l0), atol=1e-12)  # + sign, internals.md
    n0 = np.sqrt(1 - l0**2)
    vw = dft_predict(uvw, freq, [l0], [0.0], [[1.0]])
    np.testing.assert_allclose(vw, np.exp(2j * np.pi * 1000.0 * (n0 - 1)), atol=1e-10)


def test_dft_gaussian_matches_brute_force_sum():
    """A Gaussian (PA east of north) against a direct sum over a finely sampled image."""
    fwhm_maj, fwhm_min, pa = np.radians(0.2), np.radians(0.08), np.radians(30.0)
    sig_maj, sig_min = fwhm_maj / 2.3548200450309493, fwhm_min / 2.3548200450309493
    step = sig_min / 6
    x = np.arange(-6 * sig_maj, 6 * sig_maj + step, step)
    L, M = np.meshgrid(x, x, indexing="ij")
    # Coordinates along the major (PA from north toward east) and minor axes.
    a = L * np.sin(pa) + M * np.cos(pa)
    b = L * np.cos(pa) - M * np.sin(pa)
    img = np.exp(-0.5 * (a / sig_maj) ** 2 - 0.5 * (b / sig_min) ** 2)
    img /= img.sum()
    rng = np.random.default_rng(3)
    uvw = random_uvw(rng, 40, scale=400.0)
    uvw[:, 2] = 0.0
    freq = np.array([C_LIGHT])
    want = (
        np.exp(2j * np.pi * (np.outer(uvw[:, 0], L.ravel()) + np.outer(uvw[:, 1], M.ravel())))
        @ img.ravel()
    )
    got = dft_predict(uvw, freq, [0.0], [0.0], [[1.0]], [fwhm_maj], [fwhm_min], [pa])[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Swapping the PA by 90 deg changes the answer (the test sees orientation).
    other = dft_predict(uvw, freq, [0.0], [0.0], [[1.0]], [fwhm_maj], [fwhm_min], [pa + np.pi / 2])
    assert np.abs(other[:, 0] - want).max() > 1e-2


def test_dft_rejects_sources_beyond_horizon():
    with pytest.raises(ValueError, match="horizon"):
        dft_predict(np.zeros((1, 3)), [1e8], [0.8], [0.8], [[1.0]])


# --------------------------------------------------------------------------------------
# sky, layouts, uvw
# --------------------------------------------------------------------------------------


def test_radec_to_lm_sin_projection():
    ra0, dec0 = np.radians(10.0), np.radians(-27.0)
    l, m, n = radec_to_lm(ra0, dec0, ra0, dec0)  # noqa: E741
    assert abs(l) < 1e-15 and abs(m) < 1e-15 and n == pytest.approx(1.0)
    l, m, n = radec_to_lm(ra0 + np.radians(5), dec0, ra0, dec0)  # noqa: E741
    assert l > 0  # east is +l
    l, m, n = radec_to_lm(ra0, dec0 + np.radians(3), ra0, dec0)  # noqa: E741
    assert m == pytest.approx(np.sin(np.radians(3))) and abs(l) < 1e-15
    np.testing.assert_allclose(l * l + m * m + n * n, 1.0)


def test_sky_arrays_spectral_index_and_defaults():
    freq = np.array([1e8, 2e8])
    sky = sky_arrays(
        [{"ra_deg": 0, "dec_deg": -27, "flux_jy": 2.0, "spectral_index": -1.0, "ref_freq_hz": 1e8}],
        0.0,
        np.radians(-27),
        freq,
        1.5e8,
    )
    np.testing.assert_allclose(sky["flux"], [[2.0, 1.0]])
    with pytest.raises(ValueError, match="unknown"):
        sky_arrays([{"ra_deg": 0, "dec_deg": 0, "flux_jy": 1, "fluxx": 2}], 0, 0, freq, 1e8)
    with pytest.raises(ValueError, match="missing"):
        sky_arrays([{"ra_deg": 0, "dec_deg": 0}], 0, 0, freq, 1e8)


@pytest.mark.parametrize(
    "name,nant,lat,lon",
    [("vla", 27, 34.08, -107.62), ("meerkat", 64, -30.71, 21.44), ("mwa", 128, -26.70, 116.67)],
)
def test_shipped_layouts(name, nant, lat, lon):
    import erfa

    lay = load_layout(name)
    assert lay.positions.shape == (nant, 3) and len(set(lay.names)) == nant
    glon, glat, h = erfa.gc2gd(1, lay.centre)
    assert np.degrees(glat) == pytest.approx(lat, abs=0.05)
    assert np.degrees(glon) == pytest.approx(lon, abs=0.05)
    assert 0 < h < 2500
    d = np.linalg.norm(lay.positions[:, None] - lay.positions[None], axis=2)
    assert d[np.triu_indices(nant, 1)].min() > 4.0  # no two antennas on one spot


def test_enu_to_itrf_round_trip():
    lat, lon, h = np.radians(-30.7), np.radians(21.4), 1000.0
    enu = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
    xyz = enu_to_itrf(enu, lat, lon, h)
    d = xyz[1:] - xyz[0]
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 100.0)
    np.testing.assert_allclose(d @ d.T, 1e4 * np.eye(3), atol=1e-6)  # orthogonal
    up = xyz[0] / np.linalg.norm(xyz[0])
    assert d[2] @ up > 99.0  # "up" roughly radial (geodetic vs geocentric)
    assert d[1][2] > 0  # north has +z


def test_uvw_matches_real_mwa_ms():
    """Recompute the UVW column of the real MWA MS from ANTENNA + TIME + FIELD.

    The MS (Cotter) stores ``uvw = R (pos[ANTENNA1] - pos[ANTENNA2])``; aberration, which we
    ignore, is the 1e-4 relative difference left.
    """
    path = pyuvdata_ms(MWA_MS)
    with tables.table(str(path / "ANTENNA"), ack=False) as a:
        pos = a.getcol("POSITION")
    with tables.table(str(path / "FIELD"), ack=False) as f:
        ra, dec = f.getcell("PHASE_DIR", 0)[0]
    with tables.table(str(path), ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        time, uvw = t.getcol("TIME"), t.getcol("UVW")
    b = np.linalg.norm(pos[a1] - pos[a2], axis=1)
    calc = baseline_uvw(pos, a1, a2, time / 86400.0, ra, dec)
    err = np.linalg.norm(calc - uvw, axis=1)
    assert np.all(err <= 3e-4 * b + 1e-3), (err / np.maximum(b, 1)).max()
    # The opposite sign (pos[ANTENNA2] - pos[ANTENNA1]) is far off: the check has teeth.
    flipped = np.linalg.norm(-calc - uvw, axis=1)
    assert np.median(flipped[b > 100] / b[b > 100]) > 0.5


def test_hour_angle_times():
    lay = load_layout("mwa")
    lon = array_longitude(lay.positions)
    ra = np.radians(30.0)
    mjd = hour_angle_times(-0.5, 0.5, 60.0, ra, lon)
    assert mjd.size == int(3600 / (60 * SIDEREAL_RATE))
    ha = (greenwich_apparent_sidereal_time(mjd) + lon - ra + np.pi) % (2 * np.pi) - np.pi
    want = -0.5 + (np.arange(mjd.size) + 0.5) * 60 * SIDEREAL_RATE / 3600
    np.testing.assert_allclose(np.degrees(ha) / 15, want, atol=1e-6)
    np.testing.assert_allclose(np.diff(mjd) * 86400, 60.0, atol=1e-5)


# --------------------------------------------------------------------------------------
# simulate -> MS -> reader
# --------------------------------------------------------------------------------------


SMALL = {
    "telescope": "meerkat",
    "ra_deg": 60.0,
    "dec_deg": -40.0,
    "freq_hz": 1.0e9,
    "chan_width_hz": 5e6,
    "nchan": 3,
    "ha_start_h": -0.1,
    "ha_stop_h": 0.1,
    "integration_s": 120.0,
    "noise_jy": 0.0,
    "seed": 7,
    "sources": [
        {"ra_deg": 60.0, "dec_deg": -40.0, "flux_jy": 1.0},
        {"ra_deg": 62.0, "dec_deg": -39.0, "flux_jy": 0.5, "spectral_index": -0.8},
        {
            "ra_deg": 59.0,
            "dec_deg": -41.0,
            "flux_jy": 0.3,
            "major_arcsec": 60,
            "minor_arcsec": 30,
            "pa_deg": 40,
        },
    ],
}


def test_round_trip_simulate_ms_reader(tmp_path):
    path = simulate(SMALL, tmp_path / "small.ms")
    lay = load_layout("meerkat")
    d = read_ms(path, precision="double")
    nbl = 64 * 63 // 2
    assert d.vis.shape[0] % nbl == 0 and d.vis.shape[1] == 3
    np.testing.assert_array_equal(d.freq, 1.0e9 + 5e6 * np.arange(3))
    ra0, dec0 = np.radians(60.0), np.radians(-40.0)
    assert d.phase_centre == (ra0, dec0)
    with tables.table(str(path), ack=False) as t:
        a1, a2, time = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("TIME")
        assert not t.getcol("FLAG").any() and not t.getcol("FLAG_ROW").any()
        assert t.getcol("DATA").shape[2] == 2
    assert np.all(a1 < a2)
    np.testing.assert_array_equal(
        d.uvw, baseline_uvw(lay.positions, a1, a2, time / 86400, ra0, dec0)
    )
    sky = sky_arrays(SMALL["sources"], ra0, dec0, d.freq, 1.0e9)
    want = dft_predict(
        d.uvw, d.freq, sky["l"], sky["m"], sky["flux"], sky["major"], sky["minor"], sky["pa"]
    )
    np.testing.assert_allclose(d.vis, want, rtol=0, atol=3e-7 * 1.8)  # complex64 storage
    np.testing.assert_array_equal(d.weight, 2.0)  # WEIGHT 1 per correlation: I gets 4/(1+1)
    meta = ms_metadata(path)
    assert meta["telescope"] == "MeerKAT" and meta["corr_names"] == ["XX", "YY"]
    with pytest.raises(FileExistsError):
        simulate(SMALL, path)
    simulate({**SMALL, "nchan": 1}, path, overwrite=True)
    assert read_ms(path).vis.shape[1] == 1


def test_noise_is_seeded_with_the_stated_rms(tmp_path):
    cfg = {**SMALL, "telescope": "vla", "sources": [], "noise_jy": 0.5, "nchan": 2}
    p1 = simulate(cfg, tmp_path / "a.ms")
    p2 = simulate(cfg, tmp_path / "b.ms")
    p3 = simulate({**cfg, "seed": 8}, tmp_path / "c.ms")
    v1, v2, v3 = (read_ms(p, precision="double") for p in (p1, p2, p3))
    np.testing.assert_array_equal(v1.vis, v2.vis)
    assert not np.allclose(v1.vis, v3.vis)
    assert np.std(v1.vis.real) == pytest.approx(0.5, rel=0.05)
    assert np.std(v1.vis.imag) == pytest.approx(0.5, rel=0.05)
    np.testing.assert_allclose(v1.weight, 1 / 0.5**2, rtol=1e-6)
    assert ms_metadata(p1)["corr_names"] == ["RR", "LL"]


def test_simulate_with_layout_from_an_ms(tmp_path):
    src = pyuvdata_ms(MWA_MS)
    cfg = {**SMALL, "telescope": str(src), "ra_deg": 0.0, "dec_deg": -27.0, "nchan": 1}
    cfg["sources"] = [{"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 1.0}]
    path = simulate(cfg, tmp_path / "mwa.ms")
    d = read_ms(path)
    assert d.vis.shape[0] % (128 * 127 // 2) == 0
    np.testing.assert_allclose(d.vis, 1.0, atol=1e-6)
    assert ms_metadata(path)["telescope"] == "MWA"


def test_simulate_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="unknown simulate key"):
        simulate({"telescop": "vla"}, tmp_path / "x.ms")
    with pytest.raises(ValueError, match="unknown telescope"):
        simulate({**SMALL, "telescope": "alma"}, tmp_path / "x.ms")
    assert not (tmp_path / "x.ms").exists()


def test_default_config_size():
    cfg = default_sim_config()
    lay = load_layout(cfg["telescope"])
    nbl = baselines(len(lay.names))[0].size
    lon = array_longitude(lay.positions)
    ntime = hour_angle_times(
        cfg["ha_start_h"], cfg["ha_stop_h"], cfg["integration_s"], 0.0, lon
    ).size
    nsamples = nbl * ntime * cfg["nchan"]
    assert 0.5e6 <= nsamples <= 2.0e6
    ra0, dec0 = np.radians(cfg["ra_deg"]), np.radians(cfg["dec_deg"])
    sky = sky_arrays(cfg["sources"], ra0, dec0, [cfg["freq_hz"]], cfg["freq_hz"])
    spread = np.degrees(np.arcsin(np.hypot(sky["l"], sky["m"])))
    assert spread.max() >= 7.5  # sources out to ~8 deg: a >= 16 deg field with real w-terms
