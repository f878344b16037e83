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

pytestmark = pytest.mark.unit

NPIX, CELL, EPS = 256, 240.0 * P.ARCSEC, 1e-4


@pytest.fixture(scope="module")
def obs():
    """u, v, w (wavelengths) of a small MWA snapshot; with freq = c they are also 'metres'."""
    _, w, u, v, _ = P._simulate_w_sample(small_observation([], nchan=1, integration_s=60.0))
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
    """One rank: the replayed tile sets are the operator's (cells received and served,
    planes owned, grid size), so the exchange terms are counted, not guessed."""
    op = _operator(obs, mode, "single")
    ex = _exchange(obs, op, mode, "single")
    assert ex["recv_cells"] == [int(op._fwd_recv.sum())]
    assert ex["send_cells"] == [int(op._fwd_send.sum())]
    assert ex["remote_cells"] == [0]
    assert ex["planes_owned"] == [len(op.my_planes)]
    assert ex["nplanes"] == op.nplanes
    assert ex["grid_cells"] == int(np.prod(op._grid_shape))
    assert ex["samples"] == [op.nsamples]
    if mode == "wstack-wproject":
        biggest = max(i.size for i in op.op.stack_idx)
        assert ex["max_stack_samples"] == [biggest]
    assert ex["recv_cells"][0] > 0


def test_exchange_replay_two_ranks_covers_one_rank(obs):
    """Two ranks: every tile someone touches is served once per requesting rank, so served
    cells add up to received cells, and each rank receives at most the one-rank total."""
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
        assert max(two["recv_cells"]) <= one["recv_cells"][0]
        assert sum(two["recv_cells"]) >= one["recv_cells"][0]
        assert sum(two["samples"]) == w.size and min(two["samples"]) > 0
        assert 0 < sum(two["remote_cells"]) < sum(two["recv_cells"])


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
@pytest.mark.parametrize("precision", ["single", "double"])
def test_terms_equal_operator_arrays(obs, mode, precision):
    """``grid_tiles`` is the int64 cell lists the operator keeps plus the send and receive
    buffers of one application; the fixed part of ``stack_grids`` is its scratch grid plus
    the int64 cells of every tile. Changing either structure fails here."""
    op = _operator(obs, mode, precision)
    ex = _exchange(obs, op, mode, precision)
    t = _terms(obs, op, ex, mode, precision)
    isz = np.dtype(op.cdtype).itemsize
    index = sum(c.nbytes for c in op._need_cells.values())
    index += sum(c.nbytes for lst in op._serve for _, c in lst)
    buffers = int(op._fwd_send.sum() + op._fwd_recv.sum()) * isz
    assert t["grid_tiles"][0] == index + buffers
    fixed = op._scratch.nbytes + sum(c.nbytes for c in op._tile_cells)
    owner = min(len(op.my_planes), P.OWNER_GRIDS[mode]) * op._scratch.nbytes
    assert t["stack_grids"][0] == fixed + owner
    if mode == "wstack-wproject":
        assert t["kernels"][0] == op.op.tables.tab_x.nbytes + op.op.tables.tab_y.nbytes


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_model_bounds_traced_peak(obs, mode):
    """The pipeline's arrays around the operator (read, redistribute, imaging weights, PSF
    and dirty ``hdot``, a major-cycle ``dot``), traced by tracemalloc (numpy allocations;
    numba's internal ones are left to scripts/bench_memory.py): the model's total is at
    least the traced peak (never an underestimate) and at most 1.25 times it (1 rank holds
    fewer copies than the model counts: nothing is redistributed; measured 1.03)."""
    u, v, w = obs
    precision = "double"
    warm = _operator(obs, mode, precision)  # compile / load numba code outside the trace
    warm.hdot(np.ones((w.size, 1), warm.cdtype))
    del warm
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    uvw = np.stack([u, v, w], 1)  # "as read"
    weight = np.ones((w.size, 1), np.float64)
    vis_read = (np.ones((w.size, 1)) * (1 + 1j)).astype(np.complex128)
    op = DistributedOperator(None, uvw, [P.C_LIGHT], weight, NPIX, NPIX, CELL, epsilon=EPS,
                             mode=mode, precision=precision)
    vis = op.redistribute_vis(vis_read)
    del vis_read
    wgt = op.weight * 1.0
    psf = op.hdot(np.ones_like(vis), wgt)
    dirty = op.hdot(vis, wgt)
    model = op.dot(dirty - 0.1 * psf)
    peak = tracemalloc.get_traced_memory()[1] - t0
    tracemalloc.stop()
    ex = _exchange(obs, op, mode, precision)
    total = sum(int(v[0]) for v in _terms(obs, op, ex, mode, precision).values())
    assert model.shape == vis.shape
    assert peak <= total <= 1.25 * peak, (peak, total)
