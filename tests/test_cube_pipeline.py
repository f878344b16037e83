"""`radimg run` images exactly what is selected (issue #15): Stokes parameters, output
channels, channel and uv ranges, through the whole pipeline, against a direct DFT of the
correlations read straight from the MS with casacore and combined by WSClean's formulas
(docs/internals.md), not by radimg's reader. Also the cube product layout and its 4-axis
FITS export.

Before the wiring, `radimg run` imaged Stokes I of all channels whatever image.stokes,
image.channels_out, input.chan_range and input.uv_range_lambda said.
"""

from __future__ import annotations

import io
import pathlib
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference import dft_dirty  # noqa: E402

pytestmark = pytest.mark.integration

tables = pytest.importorskip("casacore.tables")

C_LIGHT = 299792458.0
NPIX, CELL_ARCSEC = 64, 8.0
CELL = np.radians(CELL_ARCSEC / 3600.0)
# WSClean 3.1's products from linear correlations (msprovider.cpp CopyData), written out
FORMULA = {
    "I": lambda c: (c["XX"] + c["YY"]) / 2,
    "Q": lambda c: (c["XX"] - c["YY"]) / 2,
    "U": lambda c: (c["XY"] + c["YX"]) / 2,
    "V": lambda c: -1j * (c["XY"] - c["YX"]) / 2,
}
USES = {"I": ("XX", "YY"), "Q": ("XX", "YY"), "U": ("XY", "YX"), "V": ("XY", "YX")}
CORR = {9: "XX", 10: "XY", 11: "YX", 12: "YY"}


@pytest.fixture(scope="module")
def pol_ms(tmp_path_factory):
    """VLA, linear feeds, 2 windows of 2 channels, one polarised source with a rotation
    measure 3' off the centre, a few flags on one correlation."""
    from radimg.sim.simulate import simulate

    d = tmp_path_factory.mktemp("cube")
    ms = d / "pol.ms"
    simulate({
        "telescope": "vla", "ra_deg": 150.0, "dec_deg": 30.0, "freq_hz": 1.4e9,
        "chan_width_hz": 4e6, "nchan": 2, "nspw": 2, "spw_spacing_hz": 2e7,
        "ha_start_h": -0.05, "ha_stop_h": 0.05, "integration_s": 100.0, "noise_jy": 0.0,
        "seed": 3, "feeds": "linear",
        "sources": [{"ra_deg": 150.05, "dec_deg": 30.04, "flux_jy": 2.0,
                     "spectral_index": -0.7, "ref_freq_hz": 1.4e9, "q_jy": 0.3,
                     "u_jy": -0.2, "v_jy": 0.1, "rm_rad_m2": 40.0}],
    }, ms)
    t = tables.table(str(ms), readonly=False, ack=False)
    flag = t.getcol("FLAG")
    flag[::7, :, 1] = True  # XY only: U and V lose these samples, I and Q keep them
    t.putcol("FLAG", flag)
    t.close()
    return ms


def _raw(ms):
    """Per window: uvw (row, 3), freq (chan,), correlations name -> (row, chan) complex,
    flags and weights per correlation, straight from casacore."""
    t = tables.table(str(ms), ack=False)
    spw_of_dd = tables.table(str(ms / "DATA_DESCRIPTION"), ack=False).getcol(
        "SPECTRAL_WINDOW_ID")
    freqs = tables.table(str(ms / "SPECTRAL_WINDOW"), ack=False).getcol("CHAN_FREQ")
    corr = [CORR[int(c)] for c in tables.table(str(ms / "POLARIZATION"), ack=False).getcol(
        "CORR_TYPE")[0]]
    out = []
    for dd in range(len(spw_of_dd)):
        sub = t.query(f"DATA_DESC_ID=={dd} && ANTENNA1!=ANTENNA2")
        data, flag, w = sub.getcol("DATA"), sub.getcol("FLAG"), sub.getcol("WEIGHT")
        out.append({
            "uvw": sub.getcol("UVW"), "freq": freqs[spw_of_dd[dd]],
            "c": {n: data[:, :, k] for k, n in enumerate(corr)},
            "f": {n: flag[:, :, k] for k, n in enumerate(corr)},
            "w": {n: np.broadcast_to(w[:, None, k], data.shape[:2]) for k, n in enumerate(corr)},
        })
        sub.close()
    t.close()
    return out


def _oracle(raw, stokes, chans, uv_range=None):
    """Direct-DFT dirty image of product ``stokes`` over the global channels ``chans`` of
    the ascending axis (window 0's then window 1's), natural weights, normalised by their
    sum."""
    img, wsum, k0 = np.zeros((NPIX, NPIX)), 0.0, 0
    for win in raw:
        nch = win["freq"].size
        keep = [c - k0 for c in chans if k0 <= c < k0 + nch]
        k0 += nch
        if not keep:
            continue
        a, b = USES[stokes]
        w1, w2 = win["w"][a][:, keep], win["w"][b][:, keep]
        w = 4 * w1 * w2 / (w1 + w2)  # inverse variance of (A +- B)/2
        w = np.where(win["f"][a][:, keep] | win["f"][b][:, keep], 0.0, w)
        vis = FORMULA[stokes]({n: v[:, keep] for n, v in win["c"].items()})
        freq = win["freq"][keep]
        if uv_range is not None:
            q = np.hypot(win["uvw"][:, 0], win["uvw"][:, 1])[:, None] * freq / C_LIGHT
            w = np.where((q < uv_range[0]) | (q > uv_range[1]), 0.0, w)
        img += dft_dirty(win["uvw"], freq, vis, w, NPIX, NPIX, CELL)
        wsum += w.sum()
    return img / wsum


def _run(ms, tmp, name, **sets):
    from radimg import cli

    cfg = {
        "input": {"ms": str(ms), "spw": "all"},
        "image": {"npix": NPIX, "cell_arcsec": CELL_ARCSEC, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1e-7},
        "gridder": {"nthreads": 1, "precision": "double"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp / f"{name}.h5")},
    }
    for key, val in sets.items():
        sect, k = key.split("__")
        cfg[sect][k] = val
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = cli.main(["run", str(p), "-q"])
    assert rc == 0, err.getvalue()
    return tmp / f"{name}.h5"


def _close(got, want, tol=1e-5):
    peak = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * peak, (np.abs(got - want).max() / peak)


@pytest.fixture(scope="module")
def cube(pol_ms, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cube-run")
    return _run(pol_ms, tmp, "cube", image__stokes="IQUV", image__channels_out=2)


def test_cube_per_stokes_and_channel_against_direct_dft(pol_ms, cube):
    import h5py

    raw = _raw(pol_ms)
    with h5py.File(cube) as f:
        g = f["images"]
        dirty, psf, mfs = g["dirty"][()], g["psf"][()], g["dirty_mfs"][()]
        a = g["dirty"].attrs
        assert g.attrs["layout"] == "cube"
        assert [s.decode() if isinstance(s, bytes) else s for s in a["stokes"]] == list("IQUV")
        np.testing.assert_allclose(a["freqs_hz"], [1.402e9, 1.422e9])  # WSClean's CRVAL3
        np.testing.assert_allclose(a["bandwidths_hz"], [8e6, 8e6])
        assert a["bmaj_deg"].shape == (2,) and np.all(a["bmaj_deg"] > 0)
    assert dirty.shape == psf.shape == (4, 2, NPIX, NPIX) and mfs.shape == (4, NPIX, NPIX)
    for p, s in enumerate("IQUV"):
        for c, chans in enumerate(([0, 1], [2, 3])):
            _close(dirty[p, c], _oracle(raw, s, chans))
        # MFS: all four channels with the per-channel weights (natural: the same weights)
        _close(mfs[p], _oracle(raw, s, [0, 1, 2, 3]))
    assert np.allclose(psf[:, :, NPIX // 2, NPIX // 2], 1.0, atol=1e-6)
    # U and V lost the XY-flagged samples, so their PSFs differ from I's
    assert np.abs(psf[2, 0] - psf[0, 0]).max() > 1e-4


def test_single_stokes_channel_and_uv_selection_against_direct_dft(pol_ms, tmp_path):
    """One product, one output channel: the 2-D layout, and only the selected channels and
    uv range (the bug: Stokes I of every channel and baseline)."""
    import h5py

    raw = _raw(pol_ms)
    uv = [1000.0, 4000.0]
    out = _run(pol_ms, tmp_path, "v", image__stokes="V", input__chan_range=[1, 1],
               input__uv_range_lambda=uv)
    with h5py.File(out) as f:
        g = f["images"]
        assert g["dirty"].shape == (NPIX, NPIX) and g.attrs["stokes"] == "V"
        assert g.attrs["layout"] == "image"
        dirty = g["dirty"][()]
    # chan_range [1, 1] of each window: global channels 1 and 3
    _close(dirty, _oracle(raw, "V", [1, 3], uv_range=uv))
    stokes_i = _oracle(raw, "I", [1, 3], uv_range=uv)
    assert np.abs(dirty - stokes_i).max() > 0.1 * np.abs(stokes_i).max()


def test_cube_fits_export_is_a_4_axis_cube(cube, tmp_path):
    import h5py
    from astropy.io import fits
    from astropy.wcs import WCS

    from radimg.io.fits_export import export_fits

    paths = export_fits(cube, tmp_path / "fits")
    names = sorted(pathlib.Path(p).name for p in paths)
    assert names == ["cube-dirty.fits", "cube-dirty_mfs.fits", "cube-psf.fits",
                     "cube-psf_mfs.fits"]
    with h5py.File(cube) as f:
        dirty, mfs = f["images/dirty"][()], f["images/dirty_mfs"][()]
    with fits.open(tmp_path / "fits" / "cube-dirty.fits") as h:
        hdr, data = h[0].header, h[0].data
        assert [hdr[f"CTYPE{i}"] for i in (1, 2, 3, 4)] == ["RA---SIN", "DEC--SIN", "FREQ",
                                                            "STOKES"]
        np.testing.assert_array_equal(data, dirty)  # numpy (stokes, freq, y, x)
        w = WCS(hdr)
        for s_idx, code in enumerate((1, 2, 3, 4)):  # I Q U V
            for c, f_hz in enumerate((1.402e9, 1.422e9)):
                world = w.pixel_to_world_values(0, 0, c, s_idx)
                assert world[2] == pytest.approx(f_hz) and world[3] == pytest.approx(code)
        assert h["BEAMS"].header["NCHAN"] == 2 and h["BEAMS"].header["NPOL"] == 4
    with fits.open(tmp_path / "fits" / "cube-dirty_mfs.fits") as h:
        assert h[0].data.shape == (4, 1, NPIX, NPIX)
        np.testing.assert_array_equal(h[0].data[:, 0], mfs)
        assert h[0].header["CRVAL3"] == pytest.approx(1.412e9)


def test_stokes_groups_follow_the_fits_codes():
    from radimg.io.fits_export import stokes_groups

    assert stokes_groups(list("IQUV")) == [[0, 1, 2, 3]]
    assert stokes_groups(["I", "V"]) == [[0, 1]]
    assert stokes_groups(["XX", "XY", "YX", "YY"]) == [[0, 3, 1, 2]]  # -5 -6 -7 -8
    assert stokes_groups(["I", "Q", "V"]) == [[0], [1], [2]]  # 1 2 4: one file each


def test_output_channels_as_wsclean_divides_them():
    from radimg.io.ms import output_channels

    freq = 1e8 + 1e6 * np.arange(10)
    oc = output_channels(freq, np.full(10, 1e6), 3)
    assert [o["chan"] for o in oc] == [(0, 3), (3, 6), (6, 10)]  # k n // N
    assert oc[2]["freq_hz"] == pytest.approx(1.075e8) and oc[2]["bandwidth_hz"] == 4e6
    with pytest.raises(ValueError):
        output_channels(freq, np.full(10, 1e6), 11)


def test_cube_info_and_preview(cube, tmp_path):
    from radimg.io.product_info import info_text
    from radimg.preview import preview

    text = info_text(cube)
    assert "dirty      4 x 2 x 64 x 64" in text and "cube: Stokes I Q U V; 2 output" in text
    assert "1402 (8)" in text  # MHz (bandwidth) of output channel 0
    out = preview(cube, tmp_path / "c.png")
    assert pathlib.Path(out[0]).stat().st_size > 10_000


@pytest.mark.parametrize("algorithm", ["clean", "admm"])
def test_cube_deconvolved_image_by_image_equals_each_channel_alone(pol_ms, tmp_path,
                                                                   algorithm):
    """Without join_channels a cube is deconvolved image by image (as WSClean's
    -channels-out without -join-channels): each output channel's model and residual equal
    a run on that channel's input channels alone (here one spectral window each,
    input.spw), and the MFS images are the weight-sum-weighted means."""
    import h5py

    dec = {"algorithm": algorithm, "niter": 200 if algorithm == "clean" else 4,
           "auto_threshold": 0.0, "threshold_jy": 0.05, "admm_sigma_jy": 0.01}
    out = _run(pol_ms, tmp_path, "each", image__channels_out=2,
               **{f"deconvolution__{k}": v for k, v in dec.items()})
    with h5py.File(out, "r") as f:
        model, residual = f["images/model"][()], f["images/residual"][()]
        model_mfs = f["images/model_mfs"][()]
        assert f["images/restored"].shape == model.shape == (1, 2, NPIX, NPIX)
    for c in range(2):  # output channel c = window c's two channels
        one = _run(pol_ms, tmp_path, f"alone{c}", input__spw=c,
                   **{f"deconvolution__{k}": v for k, v in dec.items()})
        with h5py.File(one, "r") as f:
            _close(model[0, c], f["images/model"][()], 1e-6)
            _close(residual[0, c], f["images/residual"][()], 1e-6)
        assert np.abs(model[0, c]).max() > 0
    assert model_mfs.shape == (1, NPIX, NPIX)
