"""The paper-like simulation (issue #16): Gaussian variable-density uvw, input SNR as
Pratley et al. (2018) define it, and ADMM's noise estimate from the data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radimg.config import ConfigError, resolve
from radimg.deconv.admm import noise_scale, whitening
from radimg.sim.uvw import gaussian_uvw
from tests.data_paths import MWA_MS, pyuvdata_ms

pytestmark = pytest.mark.unit


def test_gaussian_uvw_truncated_with_the_stated_sigma():
    rng = np.random.default_rng(3)
    uvw = gaussian_uvw(200_000, rng, uv_sigma=100.0, uv_max=300.0, w_sigma=200.0, w_max=600.0)
    assert np.abs(uvw[:, :2]).max() <= 300.0 and np.abs(uvw[:, 2]).max() <= 600.0
    # a Gaussian truncated at 3 sigma: sigma 0.9865 of the untruncated one
    np.testing.assert_allclose(uvw.std(axis=0), [98.65, 98.65, 197.3], rtol=0.01)
    # redrawn, not clipped: no pile-up at the limit
    assert np.count_nonzero(np.abs(uvw[:, 2]) > 599.0) < 0.0005 * uvw.shape[0]


def _sim(tmp_path, name, **kw):
    from radimg.sim.simulate import simulate

    cfg = {"telescope": "vla", "nchan": 1, "uv_distribution": "gaussian", "gaussian_rows": 3000,
           "uv_sigma_lambda": 100.0, "uv_max_lambda": 300.0, "freq_hz": 1e9, "seed": 5,
           "sources": [{"ra_deg": 0.5, "dec_deg": -26.0, "flux_jy": 2.0},
                       {"ra_deg": 359.0, "dec_deg": -28.0, "flux_jy": 1.0}], **kw}
    return simulate(cfg, tmp_path / name, nthreads=1)


def _column(ms, col):
    import casacore.tables as pt

    with pt.table(str(ms), ack=False) as t:
        return t.getcol(col)


def test_input_snr_sets_the_noise_as_the_paper_defines_it(tmp_path):
    clean = _sim(tmp_path, "clean.ms", noise_jy=0.0)
    noisy = _sim(tmp_path, "noisy.ms", input_snr_db=30.0)
    np.testing.assert_array_equal(_column(clean, "UVW"), _column(noisy, "UVW"))
    y0 = _column(clean, "DATA").astype(np.complex128)
    y = _column(noisy, "DATA").astype(np.complex128)
    i0, i1 = 0.5 * (y0[..., 0] + y0[..., -1]), 0.5 * (y[..., 0] + y[..., -1])
    snr = 20 * math.log10(np.linalg.norm(i0) / np.linalg.norm(i1 - i0))
    assert abs(snr - 30.0) < 0.2  # 3000 samples: ||n|| known to ~1 %
    # the weights say the same noise (Stokes I weight 1/sigma^2 from the two hands)
    sigma = np.linalg.norm(i0) / math.sqrt(2 * i0.size) * 10 ** (-30 / 20)
    w = _column(noisy, "WEIGHT")[0, 0]
    np.testing.assert_allclose(1 / math.sqrt(2 * w), sigma, rtol=1e-5)
    uvw_l = _column(clean, "UVW") * 1e9 / 299792458.0
    assert np.abs(uvw_l[:, :2]).max() <= 300.0 + 1e-6 and np.abs(uvw_l[:, 2]).max() <= 600.0


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("uv_distribution", "uniform", "simulate.uv_distribution"),
        ("uv_sigma_lambda", 0, "simulate.uv_sigma_lambda"),
        ("w_max_lambda", -1, "simulate.w_max_lambda"),
        ("input_snr_db", "loud", "simulate.input_snr_db"),
        ("input_snr_db", 1000, "simulate.input_snr_db"),
        ("gaussian_rows", 0, "simulate.gaussian_rows"),
    ],
)
def test_bad_paper_sim_keys_name_the_key(key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve(None, [f"simulate.{key}={value}"])


def test_snr_and_noise_together_is_an_error():
    with pytest.raises(ConfigError, match=r"simulate\.input_snr_db and simulate\.noise_jy"):
        resolve(None, ["simulate.input_snr_db=30", "simulate.noise_jy=0.1"])
    with pytest.raises(ConfigError, match=r"simulate\.uv_max_lambda"):
        resolve(None, ["simulate.uv_distribution=gaussian", "simulate.uv_max_lambda=10",
                       "simulate.uv_sigma_lambda=100"])


def test_noise_scale_is_robust_to_a_minority_of_signal():
    rng = np.random.default_rng(1)
    n = 40_000
    w = rng.uniform(0.5, 2.0, n)
    sig = 1.7
    v = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * sig / np.sqrt(w)
    v[: n // 20] += 50.0  # 5 % of samples carry a strong polarised source
    s = noise_scale(v, w)
    assert abs(s / sig - 1) < 0.05
    # without the outliers' robustness a plain rms is far off: the test can fail
    assert np.sqrt(np.mean(np.abs(v * np.sqrt(w)) ** 2) / 2) > 5 * sig


def test_whitening_with_sigma_and_weights():
    w = np.array([[4.0, 0.0], [1.0, 16.0]])
    sw, info = whitening(None, w, sigma_jy=2.0)
    np.testing.assert_array_equal(sw, [[0.5, 0.0], [0.5, 0.5]])
    sw, info = whitening(None, w, 0.0, sample=lambda: ("test", np.array([3 + 3j, -3 - 3j]),
                                                        np.array([1.0, 1.0])))
    assert info["kind"] == "test" and info["scale"] == pytest.approx(3 * 1.482602218505602)
    np.testing.assert_allclose(sw, np.sqrt(w) / info["scale"])


def test_real_mwa_noise_from_stokes_v_not_the_weights():
    """pyuvdata's MWA snapshot: WEIGHT says 6 mJy per visibility, Stokes V (XY, YX) 1.6 Jy."""
    from radimg.io.noise import noise_sample

    ms = pyuvdata_ms(MWA_MS)
    kind, vals, w = noise_sample(ms)
    assert kind == "Stokes V"
    sigma = noise_scale(vals, w) / math.sqrt(np.median(w))
    assert 1.3 < sigma < 1.9
    assert 1 / math.sqrt(np.median(w)) < 0.01  # what the weights alone claim


def _whiten_in_pipeline(ms, weight, sigma_jy=0.0):
    """The pipeline's ADMM whitening (radimg.pipeline.deconvolve._whitening) on a stand-in
    job and backend: the factors and the log lines."""
    from types import SimpleNamespace

    from mpi4py import MPI

    from radimg.pipeline.deconvolve import _whitening

    lines = []
    job = SimpleNamespace(comm=MPI.COMM_SELF, cfg=resolve(None, [f"input.ms={ms}"]),
                          log=lines.append)
    imaging = weight.copy()
    imaging[0, 0] = 0.0  # a sample the imaging weights drop: no data fidelity either
    backend = SimpleNamespace(data_weight=weight, imaging_weight=imaging)
    sw = _whitening(job, backend, sigma_jy)
    assert sw[0, 0] == 0.0
    return sw, lines


def test_pipeline_admm_noise_from_the_data_of_a_real_ms():
    """admm_sigma_jy 0 on the real MWA snapshot: the scale of the weights from Stokes V
    (1.3-1.9 Jy), not the weights' own 4-6 mJy, and the log says so."""
    w = np.random.default_rng(0).uniform(1e4, 1e5, (50, 3))
    sw, lines = _whiten_in_pipeline(pyuvdata_ms(MWA_MS), w)
    s = np.sqrt(w[1:]) / sw[1:]  # one scale for every sample: relative weights kept
    np.testing.assert_allclose(s, s[0, 0], rtol=1e-12)
    line = next(ln for ln in lines if "from Stokes V" in ln)
    sigma = float(line.split("ADMM noise: ")[1].split(" Jy")[0])
    weights_say = float(line.split("the weights alone say ")[1].split(" Jy")[0])
    assert 1.3 < sigma < 1.9 and weights_say < 0.01, line
    sw2, lines2 = _whiten_in_pipeline(pyuvdata_ms(MWA_MS), w, sigma_jy=2.0)
    np.testing.assert_allclose(sw2[1:], 0.5)
    assert "admm_sigma_jy" in lines2[0]


def test_pipeline_admm_noise_of_a_simulated_ms_and_the_fallback(tmp_path):
    """A simulated MS: its weights are the noise, as they are. The same MS without radimg's
    marker (a 'real' MS with one channel and only XX, YY): no estimate is possible, so the
    weights are used with a warning instead of stopping the run. (With circular feeds, RR and
    LL give Stokes V: the estimate then is within 2% of the simulated noise.)"""
    import casacore.tables as pt

    from radimg.io.ms_write import MARKER_KEYWORD

    ms = _sim(tmp_path, "noisy.ms", input_snr_db=30.0, feeds="linear")
    w = np.full((40, 1), 25.0)
    sw, lines = _whiten_in_pipeline(ms, w)
    np.testing.assert_allclose(sw[1:], 5.0)
    assert "weights of a simulated MS" in lines[0], lines
    with pt.table(str(ms), readonly=False, ack=False) as t:
        t.removekeyword(MARKER_KEYWORD)
    sw, lines = _whiten_in_pipeline(ms, w)
    np.testing.assert_allclose(sw[1:], 5.0)
    assert "WARNING" in lines[0] and "cannot estimate the visibility noise" in lines[0], lines
    circ = _sim(tmp_path, "circular.ms", input_snr_db=30.0)
    with pt.table(str(circ), readonly=False, ack=False) as t:
        t.removekeyword(MARKER_KEYWORD)
        wi = 2 * np.median(t.getcol("WEIGHT")[:, 0])  # Stokes I weight: two hands
    sw, lines = _whiten_in_pipeline(circ, np.full((40, 1), wi))
    assert "Stokes V" in lines[0] and abs(sw[1, 0] / math.sqrt(wi) - 1) < 0.03, lines


def test_model_bound_widens_only_when_the_image_cannot_hold_the_data():
    """model_bound: the noise's epsilon while a model of the image explains most of ||y_w||;
    what the model leaves once the data are dominated by what no image model can fit (a
    stand-in operator: the image's pixels are the first samples, the rest see only sky
    outside the image)."""
    from radimg.deconv.admm import epsilon_bound, model_bound

    rng = np.random.default_rng(4)
    npix, m_out = 64, 400

    def fwd(x):
        return np.concatenate([x.ravel(), np.zeros(m_out)]).astype(np.complex128)[:, None]

    sky = np.zeros((8, 8))
    sky[3, 4] = 200.0
    noise = (rng.standard_normal((npix + m_out, 1)) + 1j * rng.standard_normal((npix + m_out, 1)))
    eps0 = epsilon_bound(npix + m_out)
    for outside, widened in ((0.0, False), (20.0, True)):
        y = fwd(sky) + noise
        y[npix:] += outside * (1 + 1j)  # emission the image cannot hold
        eps, info = model_bound(fwd, y, sky, eps0)
        assert info["widened"] is widened, info
        expect = np.linalg.norm(y - fwd(sky)) if widened else eps0
        assert eps == pytest.approx(expect, rel=1e-12)
        assert eps >= eps0


def _make_galaxy_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "make_galaxy.py"
    spec = importlib.util.spec_from_file_location("make_galaxy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lowpass_snr_db(img, cell_arcsec, q_max):
    """20 log10 ||img|| / ||img - img low-passed to the disc |q| <= q_max (lambda)||."""
    n = img.shape[0]
    d = np.radians(cell_arcsec / 3600)
    spec = np.fft.fft2(img, s=(2 * n, 2 * n))
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(2 * n, d), np.fft.fftfreq(2 * n, d), indexing="ij"))
    low = np.fft.ifft2(spec * (q <= q_max)).real[:n, :n]
    return 20 * math.log10(np.linalg.norm(img) / np.linalg.norm(img - low))


def test_smooth_galaxy_lies_inside_the_sampled_disc():
    """make_galaxy --smooth-uv-sigma-lambda: the galaxy's spectrum times the Gaussian uv
    coverage's shape. Its part beyond 3 sigma (the paper configs' uv_max) is > 50 dB down,
    where the galaxy as drawn keeps ~20 dB there (its pixel-scale knots and sources): the
    smooth truth is one a reconstruction from these samples can reach. Flux kept, >= 0."""
    mg = _make_galaxy_module()
    n, cell = 128, 720.0  # the paper's 25.6 deg field
    sigma = 1.0 / (2 * math.radians(cell / 3600)) / 3
    g = mg.galaxy(n)
    s = mg.smooth(g, sigma, cell)
    assert s.min() >= 0.0 and s.sum() == pytest.approx(g.sum(), rel=1e-12)
    assert _lowpass_snr_db(s, cell, 3 * sigma) > 50.0
    assert _lowpass_snr_db(g, cell, 3 * sigma) < 25.0
    # a convolution with the image-plane Gaussian of sigma 1 / (2 pi S) radians (0.95
    # pixels here): a point source becomes that Gaussian, to 1% of its peak (the rest: a
    # Gaussian this narrow is not band-limited to the pixel grid)
    pt = np.zeros((n, n))
    pt[64, 64] = 1.0
    ps = mg.smooth(pt, sigma, cell)
    sp = 1.0 / (2 * math.pi * sigma * math.radians(cell / 3600))
    y = np.arange(-3, 4)
    gauss = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * sp**2)) / (2 * math.pi * sp**2)
    assert np.abs(ps[61:68, 61:68] - gauss).max() < 0.015 * gauss.max()
