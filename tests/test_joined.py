"""Joined-channel / joined-polarisation CLEAN of cubes (issue #15 item 4,
radimg.deconv.joined): the spectral fit against exact polynomials, the numba minor cycle
against a plain numpy loop (the slow oracle), and closed loops through `radimg run` on
simulated sources with spectral indices (4 output channels over 30% bandwidth) and with
linear polarisation."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from radimg.deconv.joined import SpectralFit, combined_image, group_layout, joined_hogbom_minor

sys.path.insert(0, str(Path(__file__).parent))
from small_sim import pixel_sources  # noqa: E402

NPIX, CELL = 128, 6.0
# (x, y, Stokes I at 1.4 GHz, spectral index, Stokes Q fraction)
SOURCES = [(80, 64, 2.0, -0.7, 0.2), (40, 90, 1.0, 0.5, 0.0), (64, 30, 1.5, -1.5, 0.0)]
REF_HZ = 1.4e9


def test_spectral_fit_recovers_polynomials_and_weights_channels():
    f = np.array([1.225e9, 1.325e9, 1.425e9, 1.525e9])
    w = np.array([1.0, 2.0, 3.0, 0.0])  # the last channel left out of the fit
    fit = SpectralFit(f, w, 2)
    assert fit.nu0 == pytest.approx((f * w).sum() / w.sum(), rel=1e-15)
    x = f / fit.nu0 - 1
    vals = 3.0 - 2.0 * x
    vals[3] = 100.0  # weight 0: must not pull the fit
    np.testing.assert_allclose(fit.terms(vals), [3.0, -2.0], rtol=1e-10)
    np.testing.assert_allclose((fit.projection @ vals)[:3], vals[:3], rtol=1e-10)
    # a weighted least-squares line through three noisy points: the normal equations
    y = np.array([1.0, 2.5, 2.0, 0.0])
    a = np.vander(x[:3], 2, increasing=True)
    want = np.linalg.solve(a.T @ (w[:3, None] * a), a.T @ (w[:3] * y[:3]))
    np.testing.assert_allclose(fit.terms(y), want, rtol=1e-10)
    assert np.array_equal(SpectralFit(f, w, None).projection, np.eye(4))
    assert group_layout(2, 3, True, False) == [([0], [0, 1, 2]), ([1], [0, 1, 2])]
    assert group_layout(2, 3, False, True) == [([0, 1], [0]), ([0, 1], [1]), ([0, 1], [2])]


def _plain_joined_hogbom(res, psf, model, mask, cw, proj, squared, gain, stop, niter):
    """The oracle: one component at a time, whole images, numpy only."""
    ns, nc, ny, nx = res.shape
    n = 0
    while n < niter:
        comb = np.where(mask, np.abs(combined_image(res, cw, squared)), -1.0)
        py, px = np.unravel_index(np.argmax(comb), comb.shape)
        if comb[py, px] <= stop:
            break
        amps = gain * (res[:, :, py, px] @ proj.T)  # (stokes, channel)
        # PSF shifted so its centre lands on (py, px); what falls outside is dropped
        big = np.zeros((ns, nc, 3 * ny, 3 * nx))
        big[:, :, ny - ny // 2 + py: 2 * ny - ny // 2 + py,
            nx - nx // 2 + px: 2 * nx - nx // 2 + px] = psf
        res -= amps[:, :, None, None] * big[:, :, ny:2 * ny, nx:2 * nx]
        model[:, :, py, px] += amps
        n += 1
    return n


@pytest.mark.parametrize("ns, squared, nterms", [(1, False, 2), (1, False, None), (2, True, 2)])
def test_joined_minor_cycle_equals_the_plain_loop(ns, squared, nterms):
    rng = np.random.default_rng(4)
    nc, ny, nx = 3, 24, 20
    yy, xx = np.mgrid[:ny, :nx]
    psf = np.empty((ns, nc, ny, nx))
    for p in range(ns):
        for c in range(nc):  # a different Gaussian PSF per image, peak 1 at the centre
            s = 1.5 + 0.3 * c + 0.2 * p
            psf[p, c] = np.exp(-((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2) / (2 * s * s))
    res = rng.normal(0, 0.02, (ns, nc, ny, nx))
    for y, x, a in ((5, 7, 2.0), (15, 12, -1.2), (20, 3, 0.8)):
        res += a * np.roll(np.roll(psf, y - ny // 2, axis=2), x - nx // 2, axis=3)
    cw = np.array([0.2, 0.5, 0.3])
    fit = SpectralFit([1e8, 1.2e8, 1.5e8], cw, nterms)
    mask = np.ones((ny, nx), bool)
    mask[:, :2] = False
    want_r, want_m = res.copy(), np.zeros_like(res)
    n_want = _plain_joined_hogbom(want_r, psf, want_m, mask, cw, fit.projection, squared,
                                  0.1, 0.1, 300)
    got_r, got_m = res.copy(), np.zeros_like(res)
    n = joined_hogbom_minor(got_r, psf, got_m, mask, cw, fit.projection, squared=squared,
                            gain=0.1, stop=0.1, niter=300)
    assert n == n_want and 20 < n < 300
    np.testing.assert_allclose(got_m, want_m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_r, want_r, rtol=0, atol=1e-12)
    assert not got_m[..., :2].any()
    if nterms == 2:  # every component's channel values lie on one line in nu/nu0 - 1
        pix = np.nonzero(got_m[0].any(axis=0))
        vals = got_m[0][:, pix[0], pix[1]]
        np.testing.assert_allclose(fit.projection @ vals, vals, atol=1e-12)


@pytest.fixture(scope="module")
def spectral_ms(tmp_path_factory):
    """VLA, 8 channels of 50 MHz from 1.2 GHz (30% bandwidth), three point sources with
    spectral indices -0.7, 0.5, -1.5, one 20% linearly polarised (Q), no noise."""
    from radimg.sim.simulate import simulate

    d = tmp_path_factory.mktemp("joined")
    srcs = pixel_sources([(x, y, f) for x, y, f, _, _ in SOURCES], NPIX, CELL, ra_deg=150.0,
                         dec_deg=30.0, freq_hz=REF_HZ)
    for s, (_, _, f, alpha, q) in zip(srcs, SOURCES, strict=True):
        s.update(spectral_index=alpha, ref_freq_hz=REF_HZ, q_jy=q * f)
    ms = str(d / "spec.ms")
    simulate({"telescope": "vla", "ra_deg": 150.0, "dec_deg": 30.0, "freq_hz": 1.2e9,
              "chan_width_hz": 5e7, "nchan": 8, "ha_start_h": -0.5, "ha_stop_h": 0.5,
              "integration_s": 300.0, "noise_jy": 0.0, "seed": 3, "feeds": "linear",
              "sources": srcs}, ms)
    return ms


def joined_config(ms, out, **deconv):
    return {
        "input": {"ms": ms},
        "image": {"npix": NPIX, "cell_arcsec": CELL, "weighting": "briggs", "robust": 0.0,
                  "channels_out": 4},
        "wterm": {"mode": "wstack", "epsilon": 1e-6},
        "gridder": {"nthreads": 1, "precision": "double"},
        "deconvolution": {"algorithm": "clean", "join_channels": True, "spectral_terms": 3,
                          "niter": 5000, "gain": 0.1, "mgain": 0.8, "threshold_jy": 1e-3,
                          "auto_threshold": 0.0, **deconv},
        "output": {"path": out, "overwrite": True},
    }


def _run(cfg):
    from mpi4py import MPI

    from radimg.config import resolve
    from radimg.pipeline import run

    return run(resolve(yaml_text=yaml.safe_dump(cfg)), verbose=0, comm=MPI.COMM_SELF)


def _flux(model, x, y):
    """A component's flux: the model summed over the 3 x 3 pixels around its position."""
    return model[..., y - 1:y + 2, x - 1:x + 2].sum(axis=(-2, -1))


def test_joined_channels_recover_spectral_index_and_fluxes(spectral_ms, tmp_path):
    out = _run(joined_config(spectral_ms, str(tmp_path / "j.h5")))
    with h5py.File(out) as f:
        g = f["images"]
        freqs = g["model"].attrs["freqs_hz"]
        model, alpha = g["model"][0], g["spectral_index"][0]
        assert g["restored"].shape == (1, 4, NPIX, NPIX)
        assert g["restored_mfs"].shape == g["spectral_index"].shape == (1, NPIX, NPIX)
        assert g["spectral_index"].attrs["unit"] == "1"
        assert np.isnan(alpha).mean() > 0.5  # NaN away from the sources
        for x, y, flux, a, _ in SOURCES:
            want = flux * (freqs / REF_HZ) ** a
            np.testing.assert_allclose(_flux(model, x, y), want, rtol=0.01)
            assert abs(alpha[y, x] - a) <= 0.05, (x, y, alpha[y, x], a)
        # the MFS restored image at a source: its flux at the MFS frequency (the beam's peak)
        assert np.abs(g["residual"][()]).max() < 0.01


def test_joined_polarizations_clean_q_with_i(spectral_ms, tmp_path):
    cfg = joined_config(spectral_ms, str(tmp_path / "p.h5"), join_polarizations=True)
    cfg["image"]["stokes"] = "IQ"
    out = _run(cfg)
    with h5py.File(out) as f:
        g = f["images"]
        model, freqs = g["model"][()], g["model"].attrs["freqs_hz"]  # (stokes, channel, y, x)
        assert model.shape == (2, 4, NPIX, NPIX)
        for x, y, flux, a, q in SOURCES:
            want = flux * (freqs / REF_HZ) ** a
            np.testing.assert_allclose(_flux(model[0], x, y), want, rtol=0.01)
            np.testing.assert_allclose(_flux(model[1], x, y), q * want, rtol=0.01, atol=2e-3)
        # joined peaks: Q's components only where Stokes I has them
        assert not ((model[1] != 0) & (model[0] == 0)).any()
        json = f["run"].attrs["deconvolution_json"]
        assert '"polarizations": true' in json and '"channels": true' in json
