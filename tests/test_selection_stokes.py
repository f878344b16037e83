"""Issue #15 input side: polarisation products, data selection and phase-centre rotation.

Oracles: the products of a polarised simulated sky against the direct Fourier transform of
each Stokes parameter (tests/reference.py), WSClean 3.1's product formulas written out
independently on the real MWA snapshot, rotated uvw against erfa's uvw computed at the new
centre, and selections against plain reads of the same rows.
"""

import shutil

import numpy as np
import pytest
from data_paths import MWA_MS, pyuvdata_ms
from reference import C_LIGHT, dft_dirty, point_source_vis

from radimg.config import ConfigError, resolve, stokes_products
from radimg.io.ms import (
    MSError,
    plan_selection,
    product_recipe,
    read_ms,
    read_selection,
    row_ranges,
)

pytestmark = pytest.mark.unit

tables = pytest.importorskip("casacore.tables")

RA0, DEC0 = 150.0, 30.0
# one polarised source with a rotation measure, off the phase centre
SRC = {"ra_deg": 150.05, "dec_deg": 30.04, "flux_jy": 2.0, "spectral_index": -0.7,
       "ref_freq_hz": 1.4e9, "q_jy": 0.3, "u_jy": -0.2, "v_jy": 0.1, "rm_rad_m2": 40.0}


def _sim(path, feeds, nspw=2, **over):
    from radimg.sim.simulate import simulate

    cfg = {
        "telescope": "vla", "ra_deg": RA0, "dec_deg": DEC0, "freq_hz": 1.4e9,
        "chan_width_hz": 4e6, "nchan": 2, "nspw": nspw, "spw_spacing_hz": 2e7,
        "ha_start_h": -0.05, "ha_stop_h": 0.05, "integration_s": 100.0, "noise_jy": 0.0,
        "seed": 3, "feeds": feeds, "sources": [SRC],
    }
    cfg.update(over)
    return simulate(cfg, path)


@pytest.fixture(scope="module")
def pol_ms(tmp_path_factory):
    """Linear and circular polarised VLA simulations, 2 windows of 2 channels each."""
    d = tmp_path_factory.mktemp("pol")
    return {f: _sim(d / f"{f}.ms", f) for f in ("linear", "circular")}


def _truth(freq):
    """I, Q, U, V of SRC at ``freq`` (independent of radimg.sim)."""
    f = np.asarray(freq, dtype=float)
    s = (f / SRC["ref_freq_hz"]) ** SRC["spectral_index"]
    dl2 = (C_LIGHT / f) ** 2 - (C_LIGHT / SRC["ref_freq_hz"]) ** 2
    p = (SRC["q_jy"] + 1j * SRC["u_jy"]) * s * np.exp(2j * SRC["rm_rad_m2"] * dl2)
    return {"I": SRC["flux_jy"] * s, "Q": p.real, "U": p.imag, "V": SRC["v_jy"] * s}


def _lm(ra, dec, ra0, dec0):
    ra, dec, ra0, dec0 = np.radians([ra, dec, ra0, dec0])
    l = np.cos(dec) * np.sin(ra - ra0)  # noqa: E741
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    return l, m


# --------------------------------------------------------------------------------------
# config keys
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("I", ["I"]), ("v", ["V"]), ("IQUV", ["I", "Q", "U", "V"]), ("UQ", ["Q", "U"]),
    ("XX", ["XX"]), ("yy,xx", ["XX", "YY"]), ("RRLL", ["RR", "LL"]), (["I", "V"], ["I", "V"]),
    ("RL", ["RL"]), ("IXX", ["I", "XX"]),
])
def test_stokes_products_parse(text, expected):
    assert stokes_products(text) == expected
    assert resolve(overrides=[f"image.stokes={text}"])["image"]["stokes"] == "".join(expected)


@pytest.mark.parametrize("text", ["Z", "IZ", "II", "XXRR", "X", "", "XXX"])
def test_stokes_bad_value_names_the_key(text):
    with pytest.raises(ConfigError, match="image.stokes"):
        resolve(overrides=[f"image.stokes={text}"])


@pytest.mark.parametrize("item,key", [
    ("input.chan_range=[3, 1]", "input.chan_range"),
    ("input.chan_range=[-1, 2]", "input.chan_range"),
    ("input.chan_range=[1]", "input.chan_range"),
    ("input.uv_range_lambda=[10, 5]", "input.uv_range_lambda"),
    ("input.uv_range_lambda=[-1, 5]", "input.uv_range_lambda"),
    ("input.spw=[0, 0]", "input.spw"),
    ("input.spw=some", "input.spw"),
    ("input.field=-2", "input.field"),
    ("image.phase_centre={ra_deg: 1, dec_deg: 91}", "image.phase_centre"),
    ("image.phase_centre={ra: 1, dec: 2}", "image.phase_centre"),
    ("image.channels_out=0", "image.channels_out"),
    ("input.ms=[a.ms, a.ms]", "input.ms"),
])
def test_selection_bad_values_name_the_key(item, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve(overrides=[item])


def test_selection_keys_normalise():
    c = resolve(overrides=["input.ms=[a.ms]", "input.spw=[2]", "input.field='7'",
                           "input.uv_range_lambda=[10, null]", "input.chan_range=[0, 3]",
                           "image.phase_centre={ra_deg: -10, dec_deg: 20}"])
    assert c["input"]["ms"] == "a.ms" and c["input"]["spw"] == 2 and c["input"]["field"] == 7
    assert c["input"]["uv_range_lambda"] == [10.0, None] and c["input"]["chan_range"] == [0, 3]
    assert c["image"]["phase_centre"] == {"ra_deg": 350.0, "dec_deg": 20.0}
    c = resolve(overrides=["input.ms=[a.ms, b.ms]", "input.spw=ALL", "input.field=3C286"])
    assert c["input"]["ms"] == ["a.ms", "b.ms"] and c["input"]["spw"] == "all"
    assert c["input"]["field"] == "3C286"
    with pytest.raises(ConfigError, match="input.simulate"):
        resolve(overrides=["input.ms=[a.ms, b.ms]", "input.simulate=true"])


# --------------------------------------------------------------------------------------
# product formulas (WSClean 3.1 msprovider.cpp CopyData, written out independently)
# --------------------------------------------------------------------------------------


def _wsclean_products(data, flag, w, corr, name):
    """The product and its inverse-variance weight, spelled out per case."""
    c = {n: corr.index(k) for k, n in {5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX",
                                       10: "XY", 11: "YX", 12: "YY"}.items() if k in corr}
    lin = "XY" in c or "XX" in c
    pairs = {
        ("I", True): ("XX", "YY", lambda a, b: (a + b) / 2),
        ("Q", True): ("XX", "YY", lambda a, b: (a - b) / 2),
        ("U", True): ("XY", "YX", lambda a, b: (a + b) / 2),
        ("V", True): ("XY", "YX", lambda a, b: -1j * (a - b) / 2),
        ("I", False): ("RR", "LL", lambda a, b: (a + b) / 2),
        ("Q", False): ("RL", "LR", lambda a, b: (a + b) / 2),
        ("U", False): ("RL", "LR", lambda a, b: -1j * (a - b) / 2),
        ("V", False): ("RR", "LL", lambda a, b: (a - b) / 2),
    }
    if name in c:
        k = c[name]
        wt = np.where(flag[..., k] | (w[..., k] <= 0), 0.0, w[..., k])
        return np.where(wt > 0, data[..., k], 0), wt
    a, b, fn = pairs[(name, lin)]
    ia, ib = c[a], c[b]
    v = fn(data[..., ia], data[..., ib])
    with np.errstate(divide="ignore", invalid="ignore"):
        wt = 1.0 / (0.25 / w[..., ia] + 0.25 / w[..., ib])
    wt = np.where(flag[..., ia] | flag[..., ib] | (w[..., ia] <= 0) | (w[..., ib] <= 0), 0, wt)
    return np.where(wt > 0, v, 0), wt


@pytest.mark.parametrize("corr", [(9, 10, 11, 12), (5, 6, 7, 8), (12, 11, 10, 9)])
def test_products_match_wsclean_formulas_with_flags_per_correlation(corr):
    from radimg.io.ms import _products

    rng = np.random.default_rng(5)
    shape = (40, 3, 4)
    data = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    w = rng.uniform(0.5, 2.0, size=shape)
    flag = rng.random(shape) < 0.15
    w[0, 0, 1] = 0.0
    names = ["I", "Q", "U", "V"] + [{5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY",
                                     11: "YX", 12: "YY"}[c] for c in corr]
    recipes = [product_recipe(n, list(corr)) for n in names]
    vis, wgt, n_bad = _products(data, flag, w, recipes, np.complex128, np.float64)
    assert n_bad == 0
    for p, n in enumerate(names):
        ev, ew = _wsclean_products(data, flag, w, list(corr), n)
        np.testing.assert_allclose(vis[p], ev, rtol=1e-14, atol=1e-15, err_msg=n)
        np.testing.assert_allclose(wgt[p], ew, rtol=1e-14, err_msg=n)
    # a flag on XY (RL) alone removes U and V (Q and U) but not I
    cross = 1
    f2 = np.zeros(shape, bool)
    f2[:, :, list(corr).index(corr[cross] if corr[0] != 12 else 10)] = True
    vis, wgt, _ = _products(data, f2, w, recipes, np.complex128, np.float64)
    assert np.all(wgt[0] > 0)


def test_recipes_refuse_what_the_feeds_cannot_give():
    assert product_recipe("RR", [9, 10, 11, 12]) is None
    assert product_recipe("U", [9, 12]) is None and product_recipe("V", [5, 8]) is not None
    assert product_recipe("Q", [5, 8]) is None
    assert product_recipe("I", [12]) == [(0, 1.0)]  # the one parallel hand, as before
    assert product_recipe("Q", [1, 2, 3, 4]) == [(1, 1.0)]  # a Stokes MS holds it as it is


# --------------------------------------------------------------------------------------
# closed loop: polarised simulated sky -> reader, against the direct Fourier transform
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("feeds", ["linear", "circular"])
def test_polarised_sky_read_back_per_stokes_against_dft(pol_ms, feeds):
    path = pol_ms[feeds]
    d = read_ms(path, spw="all", stokes="IQUV", precision="double")
    assert d.stokes == ("I", "Q", "U", "V") and d.vis.shape[0] == 4
    assert d.freq.size == 4 and np.all(np.diff(d.freq) > 0)
    # both windows of a row are one row: 351 baselines x 4 times (|HA| <= 0.05 h at 100 s)
    assert d.vis.shape[1] == d.uvw.shape[0] and np.all(d.weight > 0)
    l, m = _lm(SRC["ra_deg"], SRC["dec_deg"], RA0, DEC0)
    unit = point_source_vis(d.uvw, d.freq, l, m)  # exp(+2 pi i (ul + vm + w(n-1)))
    truth = _truth(d.freq)
    for p, name in enumerate(d.stokes):
        expect = unit * truth[name][None, :]
        err = np.max(np.abs(d.vis[p] - expect)) / SRC["flux_jy"]
        assert err < 2e-6, (name, err)  # complex64 storage
    # and the dirty image of each Stokes parameter at the source peaks at its flux
    cell = np.radians(2.0 / 3600)
    npix = 64
    ix = int(round(-l / cell)) + npix // 2
    iy = int(round(m / cell)) + npix // 2
    for p, name in enumerate(d.stokes):
        w = d.weight[p]
        img = dft_dirty(d.uvw, d.freq, d.vis[p], w / w.sum(), npix, npix, cell,
                        pixels=np.array([[iy, ix]]))
        lp, mp = -(ix - npix // 2) * cell, (iy - npix // 2) * cell
        # the source is at (l, m), the pixel within half a cell: compare to the DFT there
        ref = dft_dirty(d.uvw, d.freq, unit * truth[name][None, :], w / w.sum(), npix, npix,
                        cell, pixels=np.array([[iy, ix]]))
        assert img[0] == pytest.approx(ref[0], abs=1e-5 * SRC["flux_jy"]), name
        del lp, mp


def test_parallel_hands_only_give_i_and_q_or_v(pol_ms, tmp_path):
    path = _sim(tmp_path / "par.ms", "linear", nspw=1, correlations="parallel")
    d = read_ms(path, stokes="IQ", precision="double")
    l, m = _lm(SRC["ra_deg"], SRC["dec_deg"], RA0, DEC0)
    t = _truth(d.freq)
    np.testing.assert_allclose(d.vis[1], point_source_vis(d.uvw, d.freq, l, m) * t["Q"],
                               atol=2e-6 * SRC["flux_jy"])
    for bad in ("U", "V", "RR", "XY"):
        with pytest.raises(MSError, match=f"image.stokes = {bad}.*XX.*YY"):
            read_ms(path, stokes=bad)
    with pytest.raises(MSError, match=r"image.stokes = RR: .*instrumental product RR"):
        read_ms(pol_ms["linear"], stokes="RR")


def test_simulated_windows_are_ms_spectral_windows(pol_ms):
    path = pol_ms["linear"]
    with tables.table(str(path / "SPECTRAL_WINDOW"), ack=False) as s:
        f = s.getcol("CHAN_FREQ")
    np.testing.assert_allclose(f, [[1.4e9, 1.404e9], [1.42e9, 1.424e9]])
    with tables.table(str(path / "POLARIZATION"), ack=False) as p:
        assert list(p.getcell("CORR_TYPE", 0)) == [9, 10, 11, 12]
    with tables.table(str(path), ack=False) as t:
        dd = t.getcol("DATA_DESC_ID")
    assert sorted(set(dd.tolist())) == [0, 1] and np.count_nonzero(dd == 0) == dd.size // 2
    # one window read alone: its 2 channels
    d0 = read_ms(path, spw=0, precision="double")
    d1 = read_ms(path, spw=1, precision="double")
    both = read_ms(path, spw=[0, 1], precision="double")
    np.testing.assert_array_equal(both.vis[:, :2], d0.vis)
    np.testing.assert_array_equal(both.vis[:, 2:], d1.vis)
    np.testing.assert_array_equal(both.uvw, d0.uvw)


# --------------------------------------------------------------------------------------
# selection: windows, channels, fields, several MSs, uv range, rank ranges
# --------------------------------------------------------------------------------------


def test_chan_range_per_window(pol_ms):
    path = pol_ms["circular"]
    full = read_ms(path, spw="all", precision="double")
    d = read_ms(path, spw="all", chan_range=[1, 5], precision="double")  # last cut to 1
    np.testing.assert_array_equal(d.freq, full.freq[[1, 3]])
    np.testing.assert_array_equal(d.vis, full.vis[:, [1, 3]])
    with pytest.raises(ConfigError, match=r"input.chan_range = \[2, 3\] selects no channel"):
        read_ms(path, chan_range=[2, 3])
    with pytest.raises(ConfigError, match="image.channels_out = 3"):
        plan_selection(path, chan_range=[1, 1], spw="all", channels_out=3)
    assert plan_selection(path, spw="all", channels_out=4).freq.size == 4


def test_field_by_name(pol_ms):
    path = pol_ms["linear"]
    a = read_ms(path, field="radimg_sim", precision="double")
    b = read_ms(path, field=0, precision="double")
    np.testing.assert_array_equal(a.vis, b.vis)
    with pytest.raises(ConfigError, match=r"input.field = 'nope'.*radimg_sim"):
        read_ms(path, field="nope")


def test_several_ms_rows_follow_each_other_and_split_over_ranks(pol_ms, tmp_path):
    a = pol_ms["linear"]
    b = tmp_path / "copy.ms"
    shutil.copytree(a, b)
    one = read_ms(a, spw="all", stokes="IV", precision="double")
    sel = plan_selection([str(a), str(b)], spw="all", stokes="IV")
    assert sel.nrows_total == 2 * sel.parts[0].nrows
    whole = read_selection(sel, precision="double")
    np.testing.assert_array_equal(whole.vis, np.concatenate([one.vis, one.vis], axis=1))
    for size in (2, 3, 5):
        parts = [read_selection(sel, rows=r, precision="double", chunk_rows=97)
                 for r in row_ranges(sel.nrows_total, size)]
        # each rank's rows: together (summed over ranks) the same samples
        vis = np.concatenate([p.vis for p in parts], axis=1)
        wgt = np.concatenate([p.weight for p in parts], axis=1)
        uvw = np.concatenate([p.uvw for p in parts])
        # rows of both windows may fall on two ranks: compare the gridded sums per (uvw, freq)
        assert wgt.sum() == pytest.approx(whole.weight.sum(), rel=1e-12)
        assert np.sum(vis * wgt) == pytest.approx(np.sum(whole.vis * whole.weight), rel=1e-12)
        assert {tuple(x) for x in uvw} == {tuple(x) for x in whole.uvw}


def test_several_ms_with_different_centres_need_phase_centre(tmp_path):
    a = _sim(tmp_path / "a.ms", "linear", nspw=1)
    b = _sim(tmp_path / "b.ms", "linear", nspw=1, dec_deg=DEC0 + 0.02)
    with pytest.raises(ConfigError, match="image.phase_centre"):
        plan_selection([str(a), str(b)])
    sel = plan_selection([str(a), str(b)], phase_centre={"ra_deg": RA0, "dec_deg": DEC0})
    assert sel.parts[0].rotation is None and sel.parts[1].rotation is not None
    d = read_selection(sel, precision="double")
    l, m = _lm(SRC["ra_deg"], SRC["dec_deg"], RA0, DEC0)
    expect = point_source_vis(d.uvw, d.freq, l, m) * _truth(d.freq)["I"]
    assert np.max(np.abs(d.vis - expect)) < 2e-6 * SRC["flux_jy"]


def test_uv_range_cuts_samples_and_counts_them(pol_ms):
    path = pol_ms["linear"]
    full = read_ms(path, spw="all", precision="double")
    q = np.hypot(full.uvw[:, 0], full.uvw[:, 1])[:, None] * full.freq[None, :] / C_LIGHT
    lo, hi = np.percentile(q, [20, 70])
    d = read_ms(path, spw="all", uv_range=(lo, hi), precision="double")
    keep = (q >= lo) & (q <= hi)
    np.testing.assert_array_equal(d.weight > 0, keep & (full.weight > 0))
    np.testing.assert_array_equal(d.vis[keep], full.vis[keep])
    assert d.n_uvrange_flagged == np.count_nonzero(~keep & (full.weight > 0))
    d = read_ms(path, spw="all", uv_range=(lo, None), precision="double")
    assert np.count_nonzero(d.weight) == np.count_nonzero(q >= lo)
    d = read_ms(path, uv_range=(1e9, None))
    assert np.count_nonzero(d.weight) == 0 and d.n_uvrange_flagged == full.weight[:, :2].size


# --------------------------------------------------------------------------------------
# phase-centre rotation
# --------------------------------------------------------------------------------------


def test_phase_rotation_uvw_matches_erfa_and_source_at_centre_is_flat(pol_ms):
    from radimg.sim.layouts import load_layout
    from radimg.sim.uvw import antenna_uvw

    path = pol_ms["linear"]
    centre = {"ra_deg": SRC["ra_deg"], "dec_deg": SRC["dec_deg"]}
    d = read_ms(path, spw="all", stokes="IQUV", phase_centre=centre, precision="double")
    assert d.phase_centre == pytest.approx(np.radians([SRC["ra_deg"], SRC["dec_deg"]]))
    # the source is now at the phase centre: each product is its flux, on every baseline
    truth = _truth(d.freq)
    for p, name in enumerate(d.stokes):
        assert np.max(np.abs(d.vis[p] - truth[name][None, :])) < 2e-6 * SRC["flux_jy"], name
    # uvw as erfa gives them for the new centre (IAU 2006/2000A, radimg.sim.uvw)
    with tables.table(str(path), ack=False) as t:
        sel = t.getcol("DATA_DESC_ID") == 0
        time = t.getcol("TIME")[sel]
        a1, a2 = t.getcol("ANTENNA1")[sel], t.getcol("ANTENNA2")[sel]
    pos = load_layout("vla").positions
    ut, inv = np.unique(time, return_inverse=True)
    au = antenna_uvw(pos, ut / 86400.0, *np.radians([SRC["ra_deg"], SRC["dec_deg"]]))
    expect = au[inv, a1] - au[inv, a2]
    np.testing.assert_allclose(d.uvw, expect, atol=1e-6 * np.abs(expect).max())
    # and back: rotating to the MS's own centre changes nothing
    own = read_ms(path, phase_centre={"ra_deg": RA0, "dec_deg": DEC0}, precision="double")
    plain = read_ms(path, precision="double")
    np.testing.assert_array_equal(own.vis, plain.vis)


def test_phase_rotation_dirty_image_against_dft_at_the_shifted_centre(pol_ms):
    """The image at a shifted centre is the direct DFT of the sky there (w included)."""
    path = pol_ms["circular"]
    ra1, dec1 = RA0 + 0.3, DEC0 - 0.2  # far enough that w (n - 1) matters
    d = read_ms(path, spw="all", stokes="V", precision="double",
                phase_centre={"ra_deg": ra1, "dec_deg": dec1})
    l, m = _lm(SRC["ra_deg"], SRC["dec_deg"], ra1, dec1)
    expect = point_source_vis(d.uvw, d.freq, l, m) * _truth(d.freq)["V"][None, :]
    assert np.max(np.abs(d.vis - expect)) < 2e-6 * SRC["flux_jy"]
    cell = np.radians(3.0 / 3600)
    npix = 2 * int(np.ceil(max(abs(l), abs(m)) / cell)) + 8
    ix, iy = int(round(-l / cell)) + npix // 2, int(round(m / cell)) + npix // 2
    pix = np.array([[iy, ix], [iy + 1, ix], [iy, ix - 1], [npix // 2, npix // 2]])
    w = d.weight / d.weight.sum()
    got = dft_dirty(d.uvw, d.freq, d.vis, w, npix, npix, cell, pixels=pix)
    ref = dft_dirty(d.uvw, d.freq, expect, w, npix, npix, cell, pixels=pix)
    np.testing.assert_allclose(got, ref, atol=1e-5 * abs(ref[0]))
    assert abs(ref[0]) > 0.5 * SRC["v_jy"]  # the peak is there (within half a cell)


# --------------------------------------------------------------------------------------
# the real MWA snapshot: WSClean's formulas on real correlations
# --------------------------------------------------------------------------------------


def test_real_mwa_products_against_independent_read():
    path = pyuvdata_ms(MWA_MS)
    with tables.table(str(path), ack=False) as t:
        data = t.getcol("DATA").astype(np.complex128)
        flag = t.getcol("FLAG") | t.getcol("FLAG_ROW")[:, None, None]
        if "WEIGHT_SPECTRUM" in t.colnames() and t.iscelldefined("WEIGHT_SPECTRUM", 0):
            w = t.getcol("WEIGHT_SPECTRUM").astype(np.float64)
        else:
            w = np.repeat(t.getcol("WEIGHT")[:, None, :], data.shape[1], axis=1)
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    data, flag, w = data[cross], flag[cross], w[cross]
    names = ["I", "Q", "U", "V", "XX", "XY", "YX", "YY"]
    d = read_ms(path, stokes="".join(names), precision="double", chunk_rows=1000)
    assert d.stokes == ("I", "Q", "U", "V", "XX", "XY", "YX", "YY")
    for p, n in enumerate(names):
        ev, ew = _wsclean_products(data, flag, w, [9, 10, 11, 12], n)
        np.testing.assert_allclose(d.weight[p], ew, rtol=1e-12, err_msg=n)
        np.testing.assert_allclose(d.vis[p], ev, rtol=1e-12, atol=1e-12, err_msg=n)
    assert np.count_nonzero(d.weight[3]) > 0.5 * d.weight[3].size
    with pytest.raises(MSError, match="image.stokes = RR"):
        read_ms(path, stokes="RR")
