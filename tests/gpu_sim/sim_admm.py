"""ADMM with device-resident samples (issue #7) against CPU ADMM, under the numba CUDA simulator.

Run by tests/test_gpu.py in a subprocess with NUMBA_ENABLE_CUDASIM=1. Sizes are chosen so that
sample data is much larger than an image (600 samples: 4800 bytes complex64 against 1024
bytes for a 16^2 float32 image), so a sample-sized transfer anywhere in an iteration breaks
the byte counts below.
"""

import numpy as np
import pytest

from radimg.gpu._device import simulator_enabled

pytestmark = pytest.mark.skipif(not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1")

NPIX, CELL = 16, 2e-2
NROW, NCHAN = 300, 2
IMG_BYTES = NPIX * NPIX * 4  # float32: the operator's precision


@pytest.fixture(scope="module")
def problem():
    from radimg.ops.operator import make_operator as make_cpu

    rng = np.random.default_rng(11)
    uvw = rng.uniform(-1, 1, (NROW, 3)) * np.array([300.0, 300.0, 100.0])
    freq = np.array([1.0e8, 1.2e8])
    kw = dict(mode="none", epsilon=1e-3, precision="single")  # 1e-3: a narrower kernel, faster
    # under the simulator; GPU and CPU are compared with each other, not with the sky
    cpu = make_cpu(uvw, freq, NPIX, NPIX, CELL, **kw)
    sky = np.zeros((NPIX, NPIX))
    sky[5, 6], sky[10, 9], sky[11, 4] = 3.0, 2.0, 1.5
    weight = rng.uniform(0.5, 1.5, (NROW, NCHAN))
    sigma = 1.0 / np.sqrt(weight)  # WEIGHT = 1 / sigma^2
    vis = cpu.dot(sky).astype(np.complex128)
    vis += sigma * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    sw = np.sqrt(weight)
    sw[7, :] = 0.0  # a flagged row: whitened away on both paths
    return dict(uvw=uvw, freq=freq, kw=kw, cpu=cpu, vis=vis, weight=weight, sw=sw)


def _run_admm(fwd, adj, y_w, xp):
    from radimg.deconv.admm import SARA, admm, epsilon_bound, power_norm

    shape = (NPIX, NPIX)
    op_norm = power_norm(fwd, adj, shape, niter=8)
    eps = epsilon_bound(NROW * NCHAN - NCHAN)
    x, state = admm(fwd, adj, y_w, shape, eps=eps, op_norm=op_norm, sara=SARA(shape, levels=2),
                    niter=6, dual_iters=4, kappa=1e-3, xp=xp)
    return x, state, op_norm


def test_admm_on_device_moves_only_images_and_equals_cpu(problem):
    """After set-up (geometry, samples, weights, whitening factors) every power-method and
    ADMM iteration moves exactly one image host -> device and one device -> host; the model
    equals CPU ADMM's to 1e-5 of its peak."""
    from radimg.gpu.operator import make_operator

    cpu, vis, sw = problem["cpu"], problem["vis"], problem["sw"]
    gpu = make_operator(problem["uvw"], problem["freq"], NPIX, NPIX, CELL,
                        **problem["kw"])
    nvis = vis.size
    assert nvis * 8 >= 4 * IMG_BYTES  # a sample-sized transfer cannot hide in an image's bytes

    # CPU oracle: the pipeline's host path (radimg/pipeline.py)
    x_cpu, st_cpu, norm_cpu = _run_admm(
        lambda x: sw * cpu.dot(x.astype(np.float32)),
        lambda v: np.asarray(cpu.hdot(v, sw), dtype=np.float64),
        sw * vis, np)

    gpu.set_data(vis, problem["weight"])
    y_w = gpu.set_whitening(sw)
    assert gpu.transfers.call_h2d == nvis * 4  # the whitening factors, once (float32)
    h2d0, d2h0 = gpu.transfers.total_h2d, gpu.transfers.total_d2h
    assert gpu.transfer_summary()["h2d_bytes_setup"] == h2d0

    x_gpu, st_gpu, norm_gpu = _run_admm(
        gpu.wdot, lambda v: np.asarray(gpu.whdot(v), dtype=np.float64), y_w, gpu.xp)

    s = gpu.transfer_summary()
    nfwd, nadj = len(gpu._admm_fwd), len(gpu._admm_adj)
    assert s["device_admm_applies"] == nfwd
    # power method (at most 8 pairs), the dirty image and the start vis, 6 ADMM iterations
    assert nfwd == nadj and st_gpu["it"] + 2 <= nfwd <= st_gpu["it"] + 1 + 8
    assert st_gpu["it"] == st_cpu["it"] == 6
    # every call: one model image in (wdot) or one image out (whdot), nothing sample-sized
    assert gpu._admm_fwd == [(IMG_BYTES, 0)] * nfwd
    assert gpu._admm_adj == [(0, IMG_BYTES)] * nadj
    assert s["h2d_bytes_per_admm_iteration"] == IMG_BYTES
    assert s["d2h_bytes_per_admm_iteration"] == IMG_BYTES
    assert gpu.transfers.total_h2d - h2d0 == nfwd * IMG_BYTES
    assert gpu.transfers.total_d2h - d2h0 == nadj * IMG_BYTES
    assert s["h2d_bytes_setup"] == h2d0  # nothing after set-up counted as set-up

    assert abs(norm_gpu - norm_cpu) <= 1e-5 * norm_cpu
    peak = float(np.abs(x_cpu).max())
    assert peak > 0.1  # ADMM found the sources: a real comparison
    assert float(np.abs(x_gpu - x_cpu).max()) <= 1e-5 * peak, np.abs(x_gpu - x_cpu).max() / peak
    z_ref = st_cpu["z"]
    assert float(np.abs(st_gpu["z"] - z_ref).max()) <= 1e-4 * float(np.abs(z_ref).max())

    # the host-vector path this replaces moves the samples every call: the sizes above would
    # have caught it
    gpu.transfers.begin()
    gpu.hdot(y_w, sw)
    assert gpu.transfers.call_h2d >= nvis * 8


def test_admm_checkpoint_vectors_round_trip(problem):
    """The dual variable goes to the host for a checkpoint and back for a resume (counted,
    sample-sized, outside the per-iteration counters)."""
    from radimg.gpu.operator import make_operator

    gpu = make_operator(problem["uvw"], problem["freq"], NPIX, NPIX, CELL,
                        **problem["kw"])
    vis = problem["vis"]
    gpu.set_data(vis, problem["weight"])
    with pytest.raises(RuntimeError, match="set_whitening"):
        gpu.wdot(np.zeros((NPIX, NPIX)))
    y_w = gpu.set_whitening(problem["sw"])
    h = gpu.vis_to_host(y_w)
    assert gpu.transfers.call_d2h == vis.size * 8
    np.testing.assert_allclose(h, problem["sw"] * vis, rtol=1e-6)
    d = gpu.vis_to_device(h.astype(np.complex128))
    assert gpu.transfers.call_h2d == vis.size * 8 and d.dtype == np.complex64
    assert "device_admm_applies" not in gpu.transfer_summary()
