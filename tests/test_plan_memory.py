"""The plan's memory model (radimg/parallel/plan.py) against what the distributed operator
really allocates (issue #4): the exchange replay against the operator's own tile sets, each
term against the operator's arrays, and the whole model against tracemalloc's peak."""

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from small_sim import small_observation  # noqa: E402

from radimg.parallel import plan as P  # noqa: E402
from radimg.parallel.operator import DistributedOperator  # noqa: E402
from radimg.parallel.plan_sampling import simulate_w_sample  # noqa: E402

pytestmark = pytest.mark.unit

NPIX, CELL, EPS = 256, 240.0 * P.ARCSEC, 1e-4


@pytest.fixture(scope="module")
def obs():
    """u, v, w (wavelengths) of a small MWA snapshot; with freq = c they are also 'metres'."""
    _, w, u, v, _ = simulate_w_sample(small_observation([], nchan=1, integration_s=60.0))
    return u, v, w


def _operator(obs, mode, precision):
    u, v, w = obs
    return DistributedOperator(
        None, np.stack([u, v, w], 1), [P.C_LIGHT], np.ones((w.size, 1), np.float32), NPIX,
        NPIX, CELL, epsilon=EPS, mode=mode, precision=precision,
    )


def _exchange(obs, op, mode, precision):
    u, v, w = obs
    return P.operator_exchange(
        u, v, w, 1, w.size, mode, NPIX, NPIX, CELL, epsilon=EPS, precision=precision,
        centres=getattr(op, "centres", None),
    )


def _terms(obs, op, ex, mode, precision):
    kern = 0
    if mode == "wstack-wproject":
        kern = op.op.tables.tab_x.nbytes + op.op.tables.tab_y.nbytes
    return P.memory_terms(
        mode, precision, samples=ex["samples"], nchan=1, recv_cells=ex["recv_cells"],
        send_cells=ex["send_cells"], planes_owned=ex["planes_owned"],
        grid_cells=ex["grid_cells"], image_pixels=NPIX * NPIX, kernel_bytes=[kern],
        max_stack_samples=ex.get("max_stack_samples"),
    )


@pytest.mark.parametrize("mode", ["none", "wstack", "wstack-wproject"])
def test_exchange_replay_equals_operator(obs, mode):
    """One rank: the replayed tile sets are the operator's (cells its samples touch, planes
    owned, grid size), so the exchange terms are counted, not guessed; it owns every plane,
    so nothing goes through the exchange buffers (own planes skip them)."""
    op = _operator(obs, mode, "single")
    ex = _exchange(obs, op, mode, "single")
    touched = sum(int(op._tile_ncells[t].sum()) for t in op._touched.values())
    assert ex["touched_cells"] == [touched]
    assert ex["recv_cells"] == [int(op._fwd_recv.sum())] == [0]
    assert ex["send_cells"] == [int(op._fwd_send.sum())] == [0]
    assert ex["remote_cells"] == [0]
    assert ex["planes_owned"] == [len(op.my_planes)]
    assert ex["nplanes"] == op.nplanes
    assert ex["grid_cells"] == int(np.prod(op._grid_shape))
    assert ex["samples"] == [op.nsamples]
    if mode == "wstack-wproject":
        biggest = max(i.size for i in op.op.stack_idx)
        assert ex["max_stack_samples"] == [biggest]
    assert ex["touched_cells"][0] > 0


def test_exchange_replay_two_ranks_covers_one_rank(obs):
    """Two ranks: every tile someone touches on a plane it does not own is served once per
    requesting rank, so sent cells add up to received cells; each rank touches at most the
    one-rank total, and only part of what the ranks touch travels."""
    u, v, w = obs
    for mode in ("wstack", "wstack-wproject"):
        centres = None
        if mode == "wstack-wproject":
            from radimg.ops.wproject import stack_centres

            centres = stack_centres(np.abs(w), 4)
        one = P.operator_exchange(u, v, w, 1, w.size, mode, NPIX, NPIX, CELL, epsilon=EPS,
                                  centres=centres)
        two = P.operator_exchange(u, v, w, 2, w.size, mode, NPIX, NPIX, CELL, epsilon=EPS,
                                  centres=centres)
        assert sum(two["send_cells"]) == sum(two["recv_cells"])
        assert one["recv_cells"] == one["send_cells"] == [0]
        assert max(two["touched_cells"]) <= one["touched_cells"][0]
        assert sum(two["touched_cells"]) >= one["touched_cells"][0]
        assert sum(two["samples"]) == w.size and min(two["samples"]) > 0
        assert two["remote_cells"] == two["recv_cells"]
        assert 0 < sum(two["recv_cells"]) < sum(two["touched_cells"])


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
@pytest.mark.parametrize("precision", ["single", "double"])
def test_terms_equal_operator_arrays(obs, mode, precision):
    """``grid_tiles`` is the send and receive buffers of one application (the tile lists
    are int32 tile ids, no per-cell index: pinned below); the fixed part of ``stack_grids``
    is the scratch grid. Changing either structure fails here. The buffers at 2-4 ranks:
    tests/mpi/test_dist_operator.py::test_grid_tiles_term_equals_buffers."""
    op = _operator(obs, mode, precision)
    ex = _exchange(obs, op, mode, precision)
    t = _terms(obs, op, ex, mode, precision)
    isz = np.dtype(op.cdtype).itemsize
    buffers = int(op._fwd_send.sum() + op._fwd_recv.sum()) * isz
    assert t["grid_tiles"][0] == buffers
    lists = list(op._touched.values()) + [t for _, t, _ in op._recv_plan]
    lists += [t for v in op._serve_by_plane.values() for t, _ in v]
    assert all(a.dtype == np.int32 for a in lists)
    index = sum(a.nbytes for a in lists)  # not in the model: 4 bytes per tile of >= 64 cells
    assert index * 100 < int(np.prod(op._grid_shape)) * isz
    fixed = op._scratch.nbytes
    owner = min(len(op.my_planes), P.OWNER_GRIDS[mode]) * op._scratch.nbytes
    assert t["stack_grids"][0] == fixed + owner
    if mode == "wstack-wproject":
        assert t["kernels"][0] == op.op.tables.tab_x.nbytes + op.op.tables.tab_y.nbytes


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_model_bounds_traced_peak(mode):
    """:func:`_traced_peak_check` in a fresh interpreter: tracemalloc counts every
    allocation of the process, and after other test files a run of the whole suite held
    ~10 MB more during the operator's construction (state left by earlier tests), which no
    run of this file alone ever showed; the child sees only this check."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); import test_plan_memory as t; "
            f"t._traced_peak_check(t.obs.__wrapped__(), {mode!r})")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]


def _traced_peak_check(obs, mode):
    """The pipeline's arrays around the operator (read, redistribute, imaging weights, PSF
    and dirty ``hdot``, a major-cycle ``dot``), traced by tracemalloc (numpy allocations;
    numba's internal ones are left to scripts/bench_memory.py): the model's total is at
    least the traced peak (never an underestimate) and at most 1.25 times it (1 rank holds
    fewer copies than the model counts: nothing is redistributed; measured 1.09 wstack,
    1.14 wstack-wproject)."""
    u, v, w = obs
    precision = "double"
    # Compile / load every numba function the traced steps call outside the trace: with an
    # empty numba cache (a fresh clone) compiling ``dot`` inside it added ~15 MB of llvmlite
    # objects and failed the bound.
    warm = _operator(obs, mode, precision)
    warm.dot(warm.hdot(np.ones((w.size, 1), warm.cdtype)))
    del warm
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    uvw = np.stack([u, v, w], 1)  # "as read"
    weight = np.ones((w.size, 1), np.float64)
    vis_read = (np.ones((w.size, 1)) * (1 + 1j)).astype(np.complex128)
    steps = []  # (step, current, peak so far) for the failure message

    def step(name):
        cur, pk = tracemalloc.get_traced_memory()
        steps.append((name, cur - t0, pk - t0))

    op = DistributedOperator(None, uvw, [P.C_LIGHT], weight, NPIX, NPIX, CELL, epsilon=EPS,
                             mode=mode, precision=precision)
    step("operator")
    vis = op.redistribute_vis(vis_read)
    del vis_read
    wgt = op.weight * 1.0
    step("redistribute")
    psf = op.hdot(np.ones_like(vis), wgt)
    step("psf")
    dirty = op.hdot(vis, wgt)
    step("dirty")
    model = op.dot(dirty - 0.1 * psf)
    step("dot")
    peak = tracemalloc.get_traced_memory()[1] - t0
    top = tracemalloc.take_snapshot().statistics("lineno")[:5]
    tracemalloc.stop()
    ex = _exchange(obs, op, mode, precision)
    total = sum(int(v[0]) for v in _terms(obs, op, ex, mode, precision).values())
    assert model.shape == vis.shape
    assert peak <= total <= 1.25 * peak, (peak, total, steps, [str(t) for t in top])


def test_small_inversion_plans_the_coarse_operator(obs):
    """With image.small_inversion the plan models the operator on the coarse geometry that
    radimg.ops.resample picks from the same samples (grids and images shrink) and adds the
    requested images the pipeline holds (``resample``); off, it plans the requested grid."""
    from radimg.ops.resample import geometry_from_samples

    u, v, w = obs
    npix, cell = 512, 30.0 * P.ARCSEC  # ~4 deg field, cells far finer than the baselines need
    uvw = np.stack([u, v, w], 1)
    g = geometry_from_samples(uvw, [P.C_LIGHT], None, npix, npix, cell, cell, EPS,
                              square=True)
    assert g is not None and g.nc_x < npix
    got = P._small_geometry(u, v, w, npix, npix, cell, EPS, "wstack-wproject", True)
    assert got == g
    t = P.memory_terms("wstack", "single", samples=[1000], nchan=1, recv_cells=[0],
                       send_cells=[0], planes_owned=[1], grid_cells=4 * g.nc_x * g.nc_y,
                       image_pixels=g.nc_x * g.nc_y, kernel_bytes=[0], small=g)
    # with a deconvolution (dot): the float64 PSF (from the PSF stage on) and the dirty
    # image's float32 output and float64 copy (from its resampling on)
    assert t["requested_psf"][0] + t["resample"][0] == \
        P.FINE_IMAGE_BYTES["single"] * npix * npix == 20 * npix * npix
    assert t["requested_psf"][0] == 8 * npix * npix
    # images only written: the coarse float32 PSF held while the dirty image is made, then
    # both requested float32 images, on rank 0 alone, plus to_fine's transient half spectrum
    k = P.memory_terms("wstack", "single", samples=[1000, 1000], nchan=1, recv_cells=[0, 0],
                       send_cells=[0, 0], planes_owned=[1, 1], grid_cells=4 * g.nc_x * g.nc_y,
                       image_pixels=g.nc_x * g.nc_y, kernel_bytes=[0, 0], small=g, dot=False)
    assert k["requested_psf"].tolist() == [4 * g.nc_x * g.nc_y, 0]
    assert k["resample"].tolist() == [8 * npix * npix + g.nf_y * (g.band_x + 1) * 8, 0]
    total = sum(k.values())
    assert P.peak_bytes(k).tolist() == np.maximum(total - k["resample"],
                                                  total - k["grid_tiles"]).tolist()
    # a run that only writes its images resamples with the scratch grid freed
    assert P.peak_bytes(k, dirty_only=True).tolist() == np.maximum(
        total - k["resample"], total - k["grid_tiles"] - k["stack_grids"]).tolist()
    assert P.peak_bytes(k, dirty_only=True)[0] < P.peak_bytes(k)[0]
    # single precision: hdot's accumulator and the correction quadrant are float32
    assert t["images"][0] == (P.IMAGE_ARRAYS["wstack"] - P.FINE_IMAGES
                              - P.SINGLE_ACCUMULATOR_SAVING["wstack"]) * g.nc_x * g.nc_y * 8
    assert P._small_geometry(u, v, w, npix, npix, cell, EPS, "wstack", False) is None


def test_dirty_only_run_holds_no_owner_grid(obs):
    """wstack-wproject's hdot transforms in the scratch grid, so a run without
    deconvolution (no dot) plans the scratch grid alone; wstack keeps its slab copy."""
    kw = dict(precision="single", samples=[10], nchan=1, recv_cells=[0], send_cells=[0],
              planes_owned=[3], grid_cells=1000, image_pixels=100, kernel_bytes=[0])
    wp = P.memory_terms("wstack-wproject", dot=False, **kw)["stack_grids"][0]
    ws = P.memory_terms("wstack", dot=False, **kw)["stack_grids"][0]
    assert wp == 1000 * 8
    assert ws == 1000 * 8 * (1 + P.OWNER_GRIDS["wstack"])
    assert P.memory_terms("wstack-wproject", **kw)["stack_grids"][0] == 1000 * 8 * (
        1 + P.OWNER_GRIDS["wstack-wproject"])


def test_deconvolution_term():
    """The plan's ``deconvolution`` term (radimg.parallel.plan_memory.deconvolution_bytes):
    none without deconvolution; CLEAN's images and visibilities on every rank and the minor
    cycle's convolution spectra on rank 0 only (at the cyclic length n + n // 2, 5-smooth:
    1536 for 1024); each multiscale scale adds a spectrum and an image; it joins the total
    through memory_terms."""
    from radimg.parallel.plan_memory import CLEAN_IMAGES, deconvolution_bytes

    samples = np.array([1000, 3000])
    assert not deconvolution_bytes(None, samples, "single").any()
    assert not deconvolution_bytes({"algorithm": "none"}, samples, "single").any()
    hog = deconvolution_bytes({"algorithm": "clean", "npix": (1024, 1024)}, samples, "single")
    spectrum = 1536 * 769 * 16
    root = 3 * spectrum + 1536 * 1536 * 8
    assert hog[1] == CLEAN_IMAGES * 8 * 1024**2 + 2 * 3000 * 8
    assert hog[0] == CLEAN_IMAGES * 8 * 1024**2 + 2 * 1000 * 8 + root
    ms = deconvolution_bytes({"algorithm": "clean", "npix": (1024, 1024), "nscales": 2},
                             samples, "double")
    assert ms[0] - ms[1] == root + 2 * (spectrum + 8 * 1024**2) - 2 * 2000 * 16
    kw = dict(samples=[10], nchan=1, recv_cells=[0], send_cells=[0], planes_owned=[1],
              grid_cells=100, image_pixels=100, kernel_bytes=[0])
    t = P.memory_terms("wstack", "single", **kw,
                       deconvolution={"algorithm": "clean", "npix": (10, 10)})
    assert t["deconvolution"][0] > 0 and "deconvolution" not in P.memory_terms(
        "wstack", "single", **kw)
