"""End-to-end deconvolution through ``radimg run`` under mpiexec: CLEAN recovers point
sources (flux 1%, position 0.05 pixel) and reaches the thermal noise; 1/2/3 ranks agree;
a run stopped after k major cycles (ADMM: iterations) and resumed at another rank count ends
with the same images as an uninterrupted run (1e-6)."""

import numpy as np
import pytest
import yaml
from small_sim import pixel_sources, small_observation

from tests.test_pipeline import radimg

pytestmark = pytest.mark.integration  # launches mpiexec itself (no --with-mpi needed)

N = 128
CELL = 60.0  # arcsec; MWA at 150 MHz has a ~5' beam
# (x, y) pixel, flux: sources exactly on pixel centres
PIX = [(64, 64, 2.0), (80, 40, 1.0), (30, 90, 0.5), (100, 100, 0.8)]
NOISE = 0.1


def _sources():
    return pixel_sources(PIX, N, CELL)


def _config(tmp, alg="clean", **dec):
    cfg = {
        "input": {"simulate": True, "ms": str(tmp / "sim.ms")},
        "simulate": small_observation(_sources(), noise_jy=NOISE),
        "image": {"npix": N, "cell_arcsec": CELL, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-6},
        "gridder": {"precision": "double", "nthreads": 1},
        "deconvolution": {
            "algorithm": alg,
            "niter": 5000,
            "gain": 0.1,
            "mgain": 0.8,
            "auto_threshold": 3.0,
            "nmajor": 20,
            **dec,
        },
        "output": {"path": str(tmp / "out" / "run.h5"), "overwrite": True},
    }
    path = tmp / f"cfg_{alg}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(cfg, out, ranks, *sets, resume=False, status=0):
    args = ["run", cfg, "--set", f"output.path={out}"]
    for s in sets:
        args += ["--set", s]
    if resume:
        args.append("--resume")
    r = radimg(*args, ranks=ranks, timeout=240)
    assert r.returncode == status, r.stdout + r.stderr
    return r


def _images(path):
    from radimg.io.product import read_product

    return read_product(path)


def _same(a, b, names=("model", "residual", "restored"), tol=1e-6):
    for k in names:
        scale = np.abs(a[k]).max()
        assert np.abs(a[k].astype(float) - b[k].astype(float)).max() <= tol * scale, k


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deconv")
    cfg = _config(tmp)
    out = tmp / "ref.h5"
    _run(cfg, out, 1)
    return tmp, cfg, out


def test_clean_recovers_point_sources_and_reaches_thermal_noise(clean_run):
    from radimg.io.ms import read_ms

    tmp, _, out = clean_run
    p = _images(out)
    model = p["images"]["model"].astype(float)
    residual = p["images"]["residual"].astype(float)
    yy, xx = np.mgrid[-2:3, -2:3]
    for x, y, f in PIX:
        box = model[y - 2 : y + 3, x - 2 : x + 3]
        flux = box.sum()
        assert flux == pytest.approx(f, rel=0.01), (x, y)
        # flux-weighted centroid of the components
        assert abs((box * xx).sum() / flux) <= 0.05 and abs((box * yy).sum() / flux) <= 0.05
    d = read_ms(tmp / "sim.ms", precision="double")
    w = d.weight[d.weight > 0]
    # natural weights w = 1/sigma^2: image noise sqrt(sum w^2 sigma^2) / sum w = 1/sqrt(sum w)
    expected = 1.0 / np.sqrt(w.sum())
    assert residual.std() == pytest.approx(expected, rel=0.10)
    wcs = p["wcs"]
    assert 0 < wcs["bmin_deg"] <= wcs["bmaj_deg"] < 10 * CELL / 3600
    r = p["images"]["restored"]
    assert r[64, 64] == pytest.approx(2.0, rel=0.02)  # Jy/beam at a point source


@pytest.mark.parametrize("ranks", [2, 3])
def test_clean_rank_count_independent(clean_run, ranks):
    tmp, cfg, out = clean_run
    got = tmp / f"r{ranks}.h5"
    _run(cfg, got, ranks)
    _same(_images(out)["images"], _images(got)["images"])


def test_clean_resume_at_another_rank_count(clean_run):
    tmp, cfg, out = clean_run
    got = tmp / "resumed.h5"
    # a run stopped by request is not final: exit 3, never 0 (issue #12)
    r = _run(cfg, got, 2, "deconvolution.stop_after_major=2", status=3)
    assert "stopped early" in r.stdout
    assert r.stderr.count("is not final") == 1, r.stderr  # once, not once per rank
    assert (tmp / "resumed.h5.ckpt.h5").exists()
    r = _run(cfg, got, 3, resume=True)
    assert "resuming" in r.stdout
    _same(_images(out)["images"], _images(got)["images"])


def test_admm_resume_at_another_rank_count(tmp_path):
    """ADMM's vis-space dual lives in the load-balanced row layout; the checkpoint stores it
    by global row id, so 2 ranks -> stop -> 3 ranks equals 1 uninterrupted rank."""
    cfg = _config(
        tmp_path,
        "admm",
        niter=8,
        admm_dual_iters=3,
        admm_power_iters=15,
        checkpoint_every=3,
    )
    sets = ("image.npix=64",)
    ref = tmp_path / "ref.h5"
    _run(cfg, ref, 1, *sets)
    got = tmp_path / "got.h5"
    _run(cfg, got, 2, *sets, "deconvolution.stop_after_major=4", status=3)
    _run(cfg, got, 3, *sets, resume=True)
    a, b = _images(ref), _images(got)
    _same(a["images"], b["images"])
    assert a["images"]["model"].min() >= 0.0


def test_resume_without_checkpoint_is_refused(tmp_path):
    cfg = _config(tmp_path)
    r = radimg("run", cfg, "--set", f"output.path={tmp_path / 'none.h5'}", "--resume")
    assert r.returncode == 2
    assert "checkpoint" in r.stderr
