"""Measurement Set reader: real MS files from pyuvdata against independent casacore reads."""

import hashlib
import os
import pathlib
import shutil

import numpy as np
import pytest
from data_paths import HERA_MS, MWA_MS, NOT_AN_MS, VLA_MS, pyuvdata_ms

from radimg.io.ms import MSError, count_unflagged, ms_metadata, read_ms, row_ranges

pytestmark = pytest.mark.unit

tables = pytest.importorskip("casacore.tables")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def checksum_tree(path):
    """sha256 of every file (name and bytes) under an MS directory, lock files included."""
    h = hashlib.sha256()
    for p in sorted(pathlib.Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def independent_stokes_i(path, datacolumn="DATA", autocorrelations=True):
    """Stokes I, weight and freq by a plain casacore read, written without radimg's code
    (rows with ANTENNA1 == ANTENNA2 dropped unless ``autocorrelations``)."""
    with tables.table(str(path / "POLARIZATION"), ack=False) as p:
        corr = list(p.getcell("CORR_TYPE", 0))
    with tables.table(str(path / "SPECTRAL_WINDOW"), ack=False) as s:
        freq = s.getcell("CHAN_FREQ", 0)
    with tables.table(str(path), ack=False) as t:
        data = t.getcol(datacolumn).astype(np.complex128)
        flag = t.getcol("FLAG") | t.getcol("FLAG_ROW")[:, None, None]
        if "WEIGHT_SPECTRUM" in t.colnames() and t.iscelldefined("WEIGHT_SPECTRUM", 0):
            wsp = t.getcol("WEIGHT_SPECTRUM").astype(np.float64)
        else:
            wsp = np.repeat(t.getcol("WEIGHT")[:, None, :], data.shape[1], axis=1)
        uvw = t.getcol("UVW")
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    if not autocorrelations:
        data, flag, wsp, uvw = data[cross], flag[cross], wsp[cross], uvw[cross]
    if 9 in corr and 12 in corr:
        a, b = corr.index(9), corr.index(12)
    elif 5 in corr and 8 in corr:
        a, b = corr.index(5), corr.index(8)
    else:
        a = b = None
    if a is not None:
        vis = (data[:, :, a] + data[:, :, b]) / 2
        wa, wb = wsp[:, :, a], wsp[:, :, b]
        with np.errstate(divide="ignore", invalid="ignore"):
            wgt = np.where((wa > 0) & (wb > 0), 4.0 / (1.0 / wa + 1.0 / wb), 0.0)
        fl = flag[:, :, a] | flag[:, :, b]
    else:
        (k,) = [corr.index(c) for c in corr if c in (9, 12, 5, 8)]
        vis, wgt, fl = data[:, :, k], wsp[:, :, k], flag[:, :, k]
    wgt = np.where(fl, 0.0, wgt)
    vis = np.where(wgt > 0, vis, 0.0)
    return uvw, freq, vis, wgt


@pytest.fixture
def mwa_ms():
    return pyuvdata_ms(MWA_MS)


@pytest.fixture
def vla_ms():
    return pyuvdata_ms(VLA_MS)


@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory):
    """A small simulated VLA MS (351 baselines x 3 times x 2 channels), no WEIGHT_SPECTRUM."""
    from radimg.sim.simulate import simulate

    cfg = {
        "telescope": "vla",
        "ra_deg": 150.0,
        "dec_deg": 30.0,
        "freq_hz": 1.4e9,
        "chan_width_hz": 1e6,
        "nchan": 2,
        "ha_start_h": -0.05,
        "ha_stop_h": 0.05,
        "integration_s": 100.0,
        "noise_jy": 0.1,
        "seed": 1,
        "sources": [{"ra_deg": 150.1, "dec_deg": 30.1, "flux_jy": 1.0}],
    }
    path = tmp_path_factory.mktemp("sim") / "tiny.ms"
    simulate(cfg, path)
    return path


def copy_ms(src, tmp_path, name="copy.ms"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------------------
# row_ranges
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("nrows", [0, 1, 2, 7, 100, 7381, 10**9 + 7])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 64, 1000])
def test_row_ranges_tile_balanced(nrows, size):
    rr = row_ranges(nrows, size)
    assert len(rr) == size
    assert rr[0][0] == 0 and rr[-1][1] == nrows
    for (_, b0), (a1, _) in zip(rr[:-1], rr[1:], strict=True):
        assert b0 == a1  # contiguous, in order
    counts = [b - a for a, b in rr]
    assert min(counts) >= 0 and max(counts) - min(counts) <= 1
    assert sum(counts) == nrows


def test_row_ranges_rejects_bad_input():
    with pytest.raises(ValueError):
        row_ranges(-1, 2)
    with pytest.raises(ValueError):
        row_ranges(10, 0)


# --------------------------------------------------------------------------------------
# real MS files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [MWA_MS, VLA_MS])
def test_real_ms_matches_independent_read(name):
    path = pyuvdata_ms(name)
    for auto in (False, True):
        uvw, freq, vis, wgt = independent_stokes_i(path, autocorrelations=auto)
        for precision, rtol in (("double", 1e-12), ("single", 1e-6)):
            d = read_ms(path, precision=precision, chunk_rows=997, autocorrelations=auto)
            np.testing.assert_array_equal(d.uvw, uvw)
            np.testing.assert_array_equal(d.freq, freq)
            np.testing.assert_allclose(d.vis, vis, rtol=rtol, atol=0)
            np.testing.assert_allclose(d.weight, wgt, rtol=rtol, atol=0)
            assert d.n_nonfinite_flagged == 0
        with tables.table(str(path), ack=False) as t:
            n_auto = int(np.sum(t.getcol("ANTENNA1") == t.getcol("ANTENNA2")))
            assert d.nrows_total == t.nrows()
        assert d.n_autocorr_rows == (0 if auto else n_auto)
    assert d.vis.dtype == np.complex64 and d.weight.dtype == np.float32
    assert count_unflagged(d) == np.count_nonzero(wgt) > 0


def test_mwa_flags_and_weight_spectrum_are_honoured(mwa_ms):
    with tables.table(str(mwa_ms), ack=False) as t:
        flag = t.getcol("FLAG")
        wsp = t.getcol("WEIGHT_SPECTRUM")
    assert flag.any(), "the MWA file has flags; the test needs some"
    d = read_ms(mwa_ms, precision="double", autocorrelations=True)  # row for row
    fl = flag[:, :, 0] | flag[:, :, 3]
    assert np.all(d.weight[fl] == 0) and np.all(d.vis[fl] == 0)
    w = wsp[:, :, 0].astype(np.float64)
    ok = ~fl & (w > 0)
    # XX and YY carry equal weights here: Stokes I weight = 4 / (2 / w) = 2 w.
    np.testing.assert_allclose(d.weight[ok], 2 * w[ok], rtol=1e-12)


def test_metadata_of_real_ms(mwa_ms, vla_ms):
    m = ms_metadata(mwa_ms)
    assert m["nrows"] == 7381 and m["telescope"] == "MWA"
    assert m["corr_names"] == ["XX", "XY", "YX", "YY"] and m["freq"].shape == (10,)
    assert m["data_columns"] == ["DATA"] and m["has_weight_spectrum"]
    with tables.table(str(mwa_ms / "FIELD"), ack=False) as f:
        ra, dec = f.getcell("PHASE_DIR", 0)[0]
    assert m["phase_centre"] == (ra, dec)
    v = ms_metadata(vla_ms)
    assert v["corr_names"] == ["RR", "RL", "LR", "LL"] and v["telescope"] == "EVLA"


def test_single_cross_hand_ms_is_refused_with_reason():
    path = pyuvdata_ms(HERA_MS)
    assert ms_metadata(path)["corr_names"] == ["XY"]
    with pytest.raises(MSError, match=r"no correlation that makes Stokes I.*XY"):
        read_ms(path)


def test_single_correlation_ms(tmp_path):
    """The HERA file with its one correlation relabelled XX: Stokes I is that correlation."""
    path = copy_ms(pyuvdata_ms(HERA_MS), tmp_path)
    with tables.table(str(path / "POLARIZATION"), ack=False, readonly=False) as p:
        p.putcell("CORR_TYPE", 0, np.array([9], dtype=np.int32))
    uvw, freq, vis, wgt = independent_stokes_i(path)
    d = read_ms(path, precision="double", chunk_rows=50)
    assert d.vis.shape == (285, 11)
    np.testing.assert_array_equal(d.uvw, uvw)
    np.testing.assert_array_equal(d.vis, vis)
    np.testing.assert_array_equal(d.weight, wgt)


@pytest.mark.parametrize("name", [MWA_MS, VLA_MS])
def test_three_row_ranges_concatenate_to_whole(name):
    path = pyuvdata_ms(name)
    whole = read_ms(path, precision="double")
    parts = [
        read_ms(path, rows=r, chunk_rows=333, precision="double")
        for r in row_ranges(whole.nrows_total, 3)
    ]
    for attr in ("uvw", "vis", "weight"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, attr) for p in parts]), getattr(whole, attr)
        )
    assert all(p.phase_centre == whole.phase_centre for p in parts)


def test_reading_does_not_modify_the_ms(mwa_ms, vla_ms):
    for path in (mwa_ms, vla_ms):
        before = checksum_tree(path)
        mtimes = {p: p.stat().st_mtime_ns for p in pathlib.Path(path).rglob("*") if p.is_file()}
        ms_metadata(path)
        for r in row_ranges(ms_metadata(path)["nrows"], 2):
            read_ms(path, rows=r, chunk_rows=500)
        assert checksum_tree(path) == before
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


# --------------------------------------------------------------------------------------
# selection of spectral window and field
# --------------------------------------------------------------------------------------


def test_spw_and_field_selection(tiny_sim, tmp_path):
    path = copy_ms(tiny_sim, tmp_path)
    # A second field and a second spectral window (same channels shifted) for some rows.
    with tables.table(str(path / "FIELD"), ack=False, readonly=False) as f:
        f.addrows(1)
        for col in ("NAME", "CODE", "TIME", "NUM_POLY", "SOURCE_ID", "FLAG_ROW"):
            f.putcell(col, 1, f.getcell(col, 0))
        for col in ("DELAY_DIR", "PHASE_DIR", "REFERENCE_DIR"):
            f.putcell(col, 1, f.getcell(col, 0) + 0.01)
    with tables.table(str(path / "SPECTRAL_WINDOW"), ack=False, readonly=False) as s:
        s.addrows(1)
        for col in s.colnames():
            if s.iscelldefined(col, 0):
                s.putcell(col, 1, s.getcell(col, 0))
        s.putcell("CHAN_FREQ", 1, s.getcell("CHAN_FREQ", 0) + 1e8)
    with tables.table(str(path / "DATA_DESCRIPTION"), ack=False, readonly=False) as dd:
        dd.addrows(1)
        dd.putcell("SPECTRAL_WINDOW_ID", 1, 1)
        dd.putcell("POLARIZATION_ID", 1, 0)
        dd.putcell("FLAG_ROW", 1, False)
    with tables.table(str(path), ack=False, readonly=False) as t:
        n = t.nrows()
        rows = np.arange(n)
        fid = (rows % 3 == 1).astype(np.int32)
        ddid = (rows % 4 == 2).astype(np.int32)
        t.putcol("FIELD_ID", fid)
        t.putcol("DATA_DESC_ID", ddid)
        uvw_all = t.getcol("UVW")
    full = read_ms(tiny_sim, precision="double")
    for spw in (0, 1):
        for field in (0, 1):
            sel = (ddid == spw) & (fid == field)
            for rr in ([None], row_ranges(n, 3)):
                parts = [
                    read_ms(path, rows=r, spw=spw, field=field, chunk_rows=100, precision="double")
                    for r in rr
                ]
                uvw = np.concatenate([p.uvw for p in parts])
                vis = np.concatenate([p.vis for p in parts])
                np.testing.assert_array_equal(uvw, uvw_all[sel])
                np.testing.assert_array_equal(vis, full.vis[sel])
            d = parts[0]
            assert d.nrows_total == n
            np.testing.assert_allclose(d.freq, full.freq + (1e8 if spw else 0.0))
            assert d.phase_centre[0] == pytest.approx(full.phase_centre[0] + (0.01 if field else 0))
    with pytest.raises(MSError, match="spectral window 2 out of range"):
        read_ms(path, spw=2)
    with pytest.raises(MSError, match="field 5 out of range"):
        read_ms(path, field=5)
    with pytest.raises(MSError, match="field -1 out of range"):
        ms_metadata(path, field=-1)


# --------------------------------------------------------------------------------------
# non-finite values, flags, weights
# --------------------------------------------------------------------------------------


def test_nonfinite_values_are_flagged_and_counted(tiny_sim, tmp_path):
    path = copy_ms(tiny_sim, tmp_path)
    with tables.table(str(path), ack=False, readonly=False) as t:
        data = t.getcol("DATA")
        wgt = t.getcol("WEIGHT")
        flag = t.getcol("FLAG")
        data[3, 1, 0] = np.nan  # one channel of row 3
        data[5, :, 1] = np.inf  # both channels of row 5
        wgt[7, 0] = np.nan  # both channels of row 7 (WEIGHT is per row)
        data[9, 0, 0] = np.nan  # already flagged: not counted
        flag[9, 0, 0] = True
        t.putcol("DATA", data)
        t.putcol("WEIGHT", wgt)
        t.putcol("FLAG", flag)
    d = read_ms(path)
    assert d.n_nonfinite_flagged == 1 + 2 + 2
    for r, c in ((3, 1), (5, 0), (5, 1), (7, 0), (7, 1), (9, 0)):
        assert d.weight[r, c] == 0 and d.vis[r, c] == 0
    assert np.all(np.isfinite(d.vis)) and np.all(np.isfinite(d.weight))
    assert d.weight[3, 0] > 0 and d.weight[9, 1] > 0


def test_all_flagged_gives_zero_unflagged(tiny_sim, tmp_path):
    path = copy_ms(tiny_sim, tmp_path)
    with tables.table(str(path), ack=False, readonly=False) as t:
        t.putcol("FLAG_ROW", np.ones(t.nrows(), dtype=bool))
    d = read_ms(path)
    assert count_unflagged(d) == 0 and not d.vis.any()


def test_weight_broadcast_without_weight_spectrum(tiny_sim):
    with tables.table(str(tiny_sim), ack=False) as t:
        assert "WEIGHT_SPECTRUM" not in t.colnames()
        w = t.getcol("WEIGHT")
    d = read_ms(tiny_sim, precision="double")
    expect = 4.0 / (1.0 / w[:, 0] + 1.0 / w[:, 1])
    np.testing.assert_allclose(d.weight, np.repeat(expect[:, None], 2, axis=1), rtol=1e-7)
    # Stokes I of the simulation has weight 1 / noise_jy^2.
    np.testing.assert_allclose(d.weight, 1.0 / 0.1**2, rtol=1e-6)


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(MSError, match="does not exist"):
        read_ms(tmp_path / "nope.ms")
    with pytest.raises(MSError, match="does not exist"):
        ms_metadata(tmp_path / "nope.ms")


def test_not_a_measurement_set(tmp_path, mwa_ms):
    with pytest.raises(MSError, match="not a Measurement Set"):
        read_ms(pyuvdata_ms(NOT_AN_MS))  # subtables only, no main table
    (tmp_path / "empty.ms").mkdir()
    with pytest.raises(MSError, match="not a Measurement Set"):
        ms_metadata(tmp_path / "empty.ms")
    (tmp_path / "file.ms").write_text("hello")
    with pytest.raises(MSError, match="not a Measurement Set"):
        read_ms(tmp_path / "file.ms")
    # A casacore table that is not an MS main table: names the missing columns.
    with pytest.raises(MSError, match=r"lacks the column\(s\) UVW"):
        read_ms(mwa_ms / "ANTENNA")


def test_missing_data_column_lists_present_ones(mwa_ms):
    with pytest.raises(MSError, match=r"'CORRECTED_DATA' not found.*present are DATA") as e:
        read_ms(mwa_ms, datacolumn="CORRECTED_DATA")
    assert str(mwa_ms) in str(e.value)


def test_zero_rows(tmp_path):
    from radimg.io.ms_write import write_ms
    from radimg.sim.layouts import load_layout

    lay = load_layout("vla")
    path = write_ms(
        tmp_path / "empty.ms",
        time=np.zeros(0),
        antenna1=np.zeros(0, int),
        antenna2=np.zeros(0, int),
        uvw=np.zeros((0, 3)),
        data=np.zeros((0, 3, 2), np.complex64),
        interval=10.0,
        freq=[1e9, 1.1e9, 1.2e9],
        chan_width=1e8,
        phase_centre=(0.0, 0.5),
        antenna_positions=lay.positions,
        antenna_names=lay.names,
    )
    with pytest.raises(MSError, match="zero rows"):
        ms_metadata(path)
    with pytest.raises(MSError, match="zero rows"):
        read_ms(path)


def test_error_type_is_value_error():
    assert issubclass(MSError, ValueError)


def test_bad_arguments(tiny_sim):
    with pytest.raises(ValueError, match="precision"):
        read_ms(tiny_sim, precision="half")
    with pytest.raises(ValueError, match="outside"):
        read_ms(tiny_sim, rows=(0, 10**9))


def test_empty_row_range(tiny_sim):
    d = read_ms(tiny_sim, rows=(5, 5))
    assert d.vis.shape == (0, 2) and d.uvw.shape == (0, 3) and count_unflagged(d) == 0


def test_checksum_helper_sees_changes(tiny_sim, tmp_path):
    path = copy_ms(tiny_sim, tmp_path)
    before = checksum_tree(path)
    with tables.table(str(path), ack=False, readonly=False) as t:
        t.putcell("ANTENNA1", 0, 1)
    assert checksum_tree(path) != before
    assert os.path.isdir(path)


# --------------------------------------------------------------------------------------
# rows that must not be imaged (issue #12)
# --------------------------------------------------------------------------------------


def test_autocorrelations_are_left_out_and_counted(tiny_sim, tmp_path):
    """1% of the rows turned into 100 Jy autocorrelations: by default they are not read
    (WSClean and CASA leave them out; imaged, they added ~1 Jy/beam everywhere)."""
    ms = copy_ms(tiny_sim, tmp_path)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        n = t.nrows()
        rows = np.arange(0, n, 100)
        a1, a2, data = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("DATA")
        a2[rows] = a1[rows]
        data[rows] = 100.0
        uvw = t.getcol("UVW")
        uvw[rows] = 0.0
        t.putcol("ANTENNA2", a2)
        t.putcol("DATA", data)
        t.putcol("UVW", uvw)
    ref = read_ms(tiny_sim, precision="double")
    d = read_ms(ms, precision="double")
    keep = np.setdiff1d(np.arange(n), rows)
    assert d.n_autocorr_rows == rows.size and d.n_bad_uvw_rows == 0
    np.testing.assert_array_equal(d.uvw, ref.uvw[keep])
    np.testing.assert_array_equal(d.vis, ref.vis[keep])
    both = read_ms(ms, precision="double", autocorrelations=True)
    assert both.n_autocorr_rows == 0 and both.vis.shape[0] == n
    assert np.all(both.vis[rows] == 100.0) and np.all(both.weight[rows] > 0)  # zero UVW kept


def test_nan_or_zero_uvw_rows_are_flagged_and_counted(tiny_sim, tmp_path):
    ms = copy_ms(tiny_sim, tmp_path)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        uvw = t.getcol("UVW")
        uvw[3] = np.nan
        uvw[5] = 0.0
        uvw[8, 1] = np.inf
        t.putcol("UVW", uvw)
    d = read_ms(ms, precision="double")
    assert d.n_bad_uvw_rows == 3
    for r in (3, 5, 8):
        assert np.all(d.weight[r] == 0) and np.all(d.vis[r] == 0)
        assert np.all(np.isfinite(d.uvw[r]))  # nothing non-finite reaches the gridder
    assert np.count_nonzero(d.weight) == np.count_nonzero(read_ms(tiny_sim).weight) - 3 * 2
