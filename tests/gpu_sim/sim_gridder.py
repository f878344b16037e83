"""GPU kernels and operator vs their CPU twins, under the numba CUDA simulator.

Run by tests/test_gpu.py in a subprocess with NUMBA_ENABLE_CUDASIM=1 (the variable must be set
before numba is imported). The file name does not start with ``test_`` so the main run never
collects it without the simulator. Tiny sizes: the simulator runs every CUDA thread as a Python
thread.
"""

import numpy as np
import pytest

from radimg.gpu import gridder as gg
from radimg.gpu._device import simulator_enabled
from radimg.kernels import gridder as cg
from radimg.ops.operator import make_operator as make_cpu_operator

pytestmark = pytest.mark.skipif(not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1")

TOL = {np.complex64: 1e-5, np.complex128: 1e-10}
NPIX, CELL = 16, 2e-2  # 16^2 image, 32^2 padded grid, ~18 deg field (w matters)
# ES-kernel operators at 1e-3: fewer w-planes and a narrower kernel than 1e-4 (the simulator's
# time goes with both), the same code paths; the tolerances compare GPU with CPU, not with
# the sky, so they do not depend on it
EPS_ES = 1e-3


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    nrow, nchan = 25, 2  # 50 samples
    uvw = rng.uniform(-1, 1, (nrow, 3)) * np.array([300.0, 300.0, 100.0])
    freq = np.array([1.0e8, 1.2e8])
    vis = rng.normal(size=(nrow, nchan)) + 1j * rng.normal(size=(nrow, nchan))
    wgt = rng.uniform(0.5, 1.5, (nrow, nchan))
    img = rng.normal(size=(NPIX, NPIX))
    ops = {m: make_cpu_operator(uvw, freq, NPIX, NPIX, CELL, mode=m, epsilon=EPS_ES)
           for m in ("none", "wstack")}
    return dict(uvw=uvw, freq=freq, vis=vis, wgt=wgt, img=img, ops=ops, rng=rng)


@pytest.mark.parametrize("cdt", [np.complex64, np.complex128])
@pytest.mark.parametrize("mode", ["none", "wstack"])
@pytest.mark.parametrize("max_shared", [gg.SHARED_BYTES, 0], ids=["shared", "global"])
def test_grid_plane_matches_cpu(problem, cdt, mode, max_shared):
    op = problem["ops"][mode]
    spec, lay = op.spec, op.layout()
    vis = problem["vis"].astype(cdt)
    for p in range(spec.nplanes):
        ref = cg.grid_plane(lay, spec, problem["uvw"], problem["freq"], vis, p,
                            weight=problem["wgt"])
        got = gg.grid_plane(lay, spec, problem["uvw"], problem["freq"], vis, p,
                            weight=problem["wgt"], block=16, max_shared=max_shared)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        if np.abs(ref).max() > 0:
            assert _rel(got, ref) < TOL[cdt], p
        else:
            assert np.abs(got).max() == 0


@pytest.mark.parametrize("cdt", [np.complex64, np.complex128])
@pytest.mark.parametrize("mode", ["none", "wstack"])
@pytest.mark.parametrize("max_shared", [gg.SHARED_BYTES, 0], ids=["shared", "global"])
def test_degrid_plane_matches_cpu(problem, cdt, mode, max_shared):
    op = problem["ops"][mode]
    spec, lay = op.spec, op.layout()
    rng = np.random.default_rng(7)
    shape = (spec.nyp, spec.nxp)
    ref = np.zeros(problem["vis"].shape, cdt)
    got = np.zeros(problem["vis"].shape, cdt)
    for p in range(spec.nplanes):
        grid = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(cdt)
        cg.degrid_plane(lay, spec, problem["uvw"], problem["freq"], grid, p, out=ref)
        gg.degrid_plane(lay, spec, problem["uvw"], problem["freq"], grid, p, out=got, block=16,
                        max_shared=max_shared)
    assert got.dtype == cdt
    assert _rel(got, ref) < TOL[cdt]


def test_grid_chunks_and_index_subset(problem):
    """Tiles split over several blocks (chunk=3), and a layout of a sample subset (a rank's
    share) with a mask: the result does not depend on how the work is cut."""
    op = problem["ops"]["wstack"]
    spec = op.spec
    mask = problem["wgt"] > 0.7
    idx = np.arange(0, 50, 2)
    lay = cg.make_layout(problem["uvw"], problem["freq"], spec, mask=mask, idx=idx)
    dlay = gg.upload_layout(lay, spec.W, np, chunk=3)
    assert dlay.nwork > (np.diff(lay.slot_start) > 0).sum()
    for p in (0, spec.nplanes // 2):
        ref = cg.grid_plane(lay, spec, problem["uvw"], problem["freq"], problem["vis"], p)
        got = gg.grid_plane(dlay, spec, problem["uvw"], problem["freq"], problem["vis"], p,
                            block=8)
        assert _rel(got, ref) < 1e-10
        ref = cg.degrid_plane(lay, spec, problem["uvw"], problem["freq"], ref, p)
        got = gg.degrid_plane(dlay, spec, problem["uvw"], problem["freq"], got, p, block=8)
        assert _rel(got, ref) < 1e-10


@pytest.mark.parametrize("cdt", [np.complex64, np.complex128])
@pytest.mark.parametrize("padded", [True, False])
def test_image_plane_stages_match_cpu(problem, cdt, padded):
    rng = problem["rng"]
    shape = (32, 32) if padded else (NPIX, NPIX)
    wp, nshift = 37.5, -0.013
    img = problem["img"]
    ref = cg.image_to_plane(img, CELL, CELL, wp, nshift, np.full(shape, 9.0, cdt))
    got = gg.image_to_plane(img, CELL, CELL, wp, nshift, np.full(shape, 9.0, cdt))
    assert _rel(got, ref) < TOL[cdt]
    f = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(cdt)
    acc0 = rng.normal(size=(NPIX, NPIX))
    ref = cg.plane_to_image(f, CELL, CELL, wp, nshift, acc0.copy())
    got = gg.plane_to_image(f, CELL, CELL, wp, nshift, acc0.copy())
    assert _rel(got, ref) < TOL[cdt]


@pytest.mark.parametrize("mode,precision", [("none", "single"), ("wstack", "double"),
                                            ("wstack", "single")])
def test_operator_matches_cpu(problem, mode, precision):
    from radimg.gpu.operator import make_operator
    from radimg.ops.operator import make_operator as make_cpu

    args = (problem["uvw"], problem["freq"], NPIX, NPIX, CELL)
    kw = dict(mode=mode, epsilon=EPS_ES, precision=precision)
    cpu = make_cpu(*args, **kw)
    gpu = make_operator(*args, block=16, **kw)
    tol = 1e-5 if precision == "single" else 1e-10
    vis, wgt, img = problem["vis"], problem["wgt"], problem["img"]
    a, b = cpu.hdot(vis, wgt), gpu.hdot(vis, wgt)
    assert b.dtype == a.dtype and _rel(b, a) < tol
    a, b = cpu.dot(img), gpu.dot(img)
    assert b.dtype == a.dtype and _rel(b, a) < tol
    # adjointness of the GPU pair: <Phi x, y> = <x, Phi^H y>
    lhs = np.vdot(vis, b.astype(np.complex128)).real
    rhs = float((img * gpu.hdot(vis)).sum())
    assert abs(lhs - rhs) < (1e-4 if precision == "single" else 1e-10) * abs(lhs)


def test_residual_moves_only_images(problem):
    """Data residency: after set_data, a major cycle moves one image in and one image out."""
    from radimg.gpu.operator import make_operator

    gpu = make_operator(problem["uvw"], problem["freq"], NPIX, NPIX, CELL, mode="wstack",
                        epsilon=EPS_ES, precision="single", block=16)
    cpu = problem["ops"]["wstack"]
    vis, wgt, img = problem["vis"], problem["wgt"], problem["img"]
    assert gpu.stats["setup_h2d_bytes"] > 0
    gpu.set_data(vis, wgt)
    assert gpu.stats["h2d_bytes_last_call"] == vis.size * (8 + 4)  # complex64 + float32
    res = gpu.residual(img)
    st = gpu.stats
    assert st["h2d_bytes_last_call"] == img.size * 4  # the model, in float32 (single)
    assert st["d2h_bytes_last_call"] == img.size * 4  # the float32 residual
    ref = cpu.hdot(vis - cpu.dot(img), wgt) / wgt.sum()
    assert _rel(res, ref) < 1e-5
    d = gpu.dirty()
    assert gpu.stats["h2d_bytes_last_call"] == 0
    assert _rel(d, cpu.hdot(vis, wgt) / wgt.sum()) < 1e-5
    psf = gpu.psf()
    assert abs(psf[NPIX // 2, NPIX // 2] - 1.0) < 1e-5


# ----------------------------------------------------------------------------- w-projection


@pytest.fixture(scope="module")
def wp_problem(problem):
    """wstack-wproject operators (2 stacks, one masked sample) in both precisions. The w
    column is scaled down (|w| <= 25 lambda): on this 32-cell padded grid over 18 deg the
    full |w| <= 100 lambda gives w-kernels about as wide as the grid (half support ~17
    cells), and the simulator's global-atomic path then takes minutes; the kernels' code
    paths (rank >= 2 terms, two stacks, shared tiles split over blocks) are the same."""
    uvw = problem["uvw"] * np.array([1.0, 1.0, 0.25])
    mask = np.ones(problem["vis"].shape, bool)
    mask[3, 1] = False
    ops = {prec: make_cpu_operator(uvw, problem["freq"], NPIX, NPIX, CELL,
                                   mode="wstack-wproject", epsilon=1e-4, nstacks=2,
                                   precision=prec, weight_mask=mask)
           for prec in ("single", "double")}
    return dict(problem, uvw=uvw, wp_ops=ops, mask=mask)


@pytest.mark.parametrize("max_shared", [gg.SHARED_BYTES, 0], ids=["shared", "global"])
@pytest.mark.parametrize("precision", ["single", "double"])
def test_wproject_kernels_match_cpu(wp_problem, precision, max_shared):
    """The CUDA w-projection grid / degrid kernels equal radimg.kernels.wproject's, per stack
    (1e-5 single, 1e-10 double), with the tables' real rank and supports; gridding through
    shared-memory tiles (tiles split over several blocks: chunk=4) and through global
    atomics."""
    from radimg.gpu import wproject as gwp
    from radimg.kernels import wproject as wpk

    op = wp_problem["wp_ops"][precision]
    assert op.nstacks == 2 and op.tables.rank >= 2  # the low-rank sum is exercised
    tol = TOL[op.cdtype]
    uvw, freq = wp_problem["uvw"], wp_problem["freq"]
    vis = wp_problem["vis"].astype(op.cdtype)
    wgt = wp_problem["wgt"].astype(op.rdtype)
    rng = np.random.default_rng(11)
    for k in range(op.nstacks):
        idx_s, tile_ptr, colour_ptr = op._layout(k, None)
        ref = np.zeros((op.nyp, op.nxp), op.cdtype)
        wpk.grid_wproject(uvw, freq, vis, idx_s, tile_ptr, colour_ptr, op.centres[k], op.cell,
                          op.tables, ref, weight=wgt)
        got = gwp.grid_wproject(uvw, freq, vis, idx_s, tile_ptr, colour_ptr, op.centres[k],
                                op.cell, op.tables, np.zeros_like(ref), weight=wgt, block=16,
                                max_shared=max_shared, chunk=4)
        if max_shared:
            t, rw = gwp.shared_tile(gwp.upload_tables(op.tables, np).smax, op.rdtype)
            tiles = gwp.tile_chunks(uvw, freq, idx_s, op.centres[k], op.cell, op.nxp,
                                    op.nyp, op.tables, t, rw, chunk=4)
            assert tiles.nwork > len(np.unique(tiles.work_tile, axis=0))  # split tiles
        assert np.abs(ref).max() > 0 and got.dtype == ref.dtype
        assert _rel(got, ref) < tol, k
        grid = (rng.normal(size=ref.shape) + 1j * rng.normal(size=ref.shape)).astype(op.cdtype)
        ref = wpk.degrid_wproject(uvw, freq, grid, op.stack_idx[k], op.centres[k], op.cell,
                                  op.tables)
        got = gwp.degrid_wproject(uvw, freq, grid, op.stack_idx[k], op.centres[k], op.cell,
                                  op.tables, block=16)
        assert np.abs(ref).max() > 0 and got.dtype == ref.dtype
        assert _rel(got, ref) < tol, k
        out_ref = np.zeros(vis.shape, op.cdtype)
        out_got = np.zeros(vis.shape, op.cdtype)
        wpk.degrid_wproject(uvw, freq, grid, op.stack_idx[k], op.centres[k], op.cell,
                            op.tables, out=out_ref)
        gwp.degrid_wproject(uvw, freq, grid, op.stack_idx[k], op.centres[k], op.cell,
                            op.tables, out=out_got, block=16)
        assert _rel(out_got, out_ref) < tol, k


@pytest.mark.parametrize("precision,max_shared", [("single", gg.SHARED_BYTES),
                                                  ("double", 0)])
def test_wproject_operator_matches_cpu(wp_problem, precision, max_shared):
    """GpuWProjectOperator (mode wstack-wproject) equals the CPU WProjectOperator: hdot, dot
    (masked sample predicts 0), adjointness."""
    from radimg.gpu.operator import make_operator

    cpu = wp_problem["wp_ops"][precision]
    gpu = make_operator(wp_problem["uvw"], wp_problem["freq"], NPIX, NPIX, CELL,
                        mode="wstack-wproject", epsilon=1e-4, nstacks=2, precision=precision,
                        weight_mask=wp_problem["mask"], block=16, max_shared=max_shared)
    assert (gpu._tiles[0] is not None) == bool(max_shared)
    assert gpu.nstacks == cpu.nstacks and np.array_equal(gpu.centres, cpu.centres)
    tol = 1e-5 if precision == "single" else 1e-10
    vis, wgt, img = wp_problem["vis"], wp_problem["wgt"], wp_problem["img"]
    a, b = cpu.hdot(vis, wgt), gpu.hdot(vis, wgt)
    assert b.dtype == a.dtype and _rel(b, a) < tol
    a, b = cpu.dot(img), gpu.dot(img)
    assert b.dtype == a.dtype and _rel(b, a) < tol
    assert b[3, 1] == 0
    lhs = np.vdot(vis, b.astype(np.complex128)).real
    rhs = float((img * gpu.hdot(vis)).sum())
    assert abs(lhs - rhs) < (1e-4 if precision == "single" else 1e-10) * abs(lhs)


@pytest.mark.parametrize("mode", ["none", "wstack-wproject"])
def test_major_cycle_loop_moves_no_samples(wp_problem, mode):
    """Data residency over a major-cycle loop: after set_data, each of N residual_image()
    calls moves exactly one model image (float32: single) host -> device and one residual image
    device -> host, never a sample-sized buffer; the residuals equal the CPU operator's."""
    from radimg.gpu.operator import make_operator
    from radimg.ops.operator import make_operator as make_cpu

    args = (wp_problem["uvw"], wp_problem["freq"], NPIX, NPIX, CELL)
    # (mode wstack shares this code path: test_residual_moves_only_images covers it)
    kw = dict(mode=mode, epsilon=1e-4, precision="single",
              nstacks=2 if mode == "wstack-wproject" else "auto")
    cpu = make_cpu(*args, **kw)
    gpu = make_operator(*args, block=16, **kw)
    vis, wgt = wp_problem["vis"], wp_problem["wgt"].astype(np.float32)
    img_bytes = NPIX * NPIX  # pixels; the 50 samples never cross again
    gpu.set_data(vis, wgt)
    assert gpu.resident
    before = gpu.transfers.total_h2d
    assert gpu.transfer_summary()["h2d_bytes_setup"] == before  # geometry + samples, once
    rng = np.random.default_rng(5)
    model = np.zeros((NPIX, NPIX))
    ncycles = 2
    for _ in range(ncycles):
        model[rng.integers(NPIX), rng.integers(NPIX)] += rng.uniform(0.5, 1.0)
        res = gpu.residual_image(model)
        h2d, d2h = gpu.transfers.call_h2d, gpu.transfers.call_d2h
        assert h2d == img_bytes * 4 and d2h == img_bytes * 4
        ref = cpu.hdot(vis - cpu.dot(model), wgt)
        assert _rel(res, ref) < 1e-5
    s = gpu.transfer_summary()
    assert s["device_major_cycles"] == ncycles
    assert s["h2d_bytes_total"] - before == ncycles * img_bytes * 4
    assert s["h2d_bytes_per_cycle"] == img_bytes * 4
    assert s["d2h_bytes_per_cycle"] == img_bytes * 4
    # PSF and dirty image from the resident samples: image out, nothing in
    gpu.psf_image()
    assert gpu.transfers.call_h2d == 0 and gpu.transfers.call_d2h == img_bytes * 4
    d = gpu.dirty_image()
    assert gpu.transfers.call_h2d == 0
    assert _rel(d, cpu.hdot(vis, wgt)) < 1e-5


def test_wproject_shared_path_accumulates_in_shared_memory(wp_problem, monkeypatch):
    """On the shared path every footprint cell goes to shared memory (none falls back to a
    global atomic); only the tiles' non-zero cells reach the grid. Counted through the
    simulator's atomic add."""
    from numba.cuda.simulator import kernelapi

    from radimg.gpu import wproject as gwp

    counts = {"shared": 0, "global": 0}
    orig = kernelapi.FakeCUDAAtomic.add

    def add(self, array, index, val):
        counts["global" if np.ndim(array) == 2 else "shared"] += 1
        return orig(self, array, index, val)

    monkeypatch.setattr(kernelapi.FakeCUDAAtomic, "add", add)
    op = wp_problem["wp_ops"]["single"]
    idx_s, tile_ptr, colour_ptr = op._layout(0, None)
    args = (wp_problem["uvw"], wp_problem["freq"], wp_problem["vis"].astype(op.cdtype), idx_s,
            tile_ptr, colour_ptr, op.centres[0], op.cell, op.tables)
    g = gwp.grid_wproject(*args, np.zeros((op.nyp, op.nxp), op.cdtype), block=16)
    shared, flushed = counts["shared"], counts["global"]
    counts.update({"shared": 0, "global": 0})
    gwp.grid_wproject(*args, np.zeros_like(g), block=16, max_shared=0)
    assert shared > 0 and shared == counts["global"]  # every footprint cell, once
    assert 0 < flushed < shared  # the tiles' cells, not every footprint cell
