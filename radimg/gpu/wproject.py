"""CUDA twins of radimg/kernels/wproject.py: gridding and degridding with the compact
w-projection residual kernel tables of ``wterm.mode: wstack-wproject``.

Pratley & McEwen 2019, eqs. 5-6: a sample of stack ``k`` is (de)gridded with the combined
anti-aliasing + w-projection kernel of its residual ``dw = w - w_k``, which the CPU module
stores as ``2 R`` one-dimensional tables over (sub-cell offset, dw) (``tab_x``, ``tab_y``,
rank ``R``) and evaluates with 4-point Lagrange interpolation in both. The maths here is the
CPU kernels' line for line (``_sample_setup``, ``_fill_1d``, the phase ``exp(2 pi i dw psi0)``,
reflection to ``w >= 0``); only the parallel structure differs:

- one thread per sample, samples in the CPU tile order (``tile_layout``) so neighbouring
  threads touch neighbouring cells;
- the thread's ``R x S`` interpolated kernel terms per axis live in ``cuda.local`` arrays whose
  size is a compile-time constant: kernels are memoised per (precision, R, S) with both rounded
  up (:func:`kernels`), and the operator asks for the tables' own ``R`` and largest support;
- gridding, shared path (default when it fits): samples are sorted into ``T x T`` tiles by
  their first footprint cell and cut into chunks; one block per chunk accumulates its samples'
  footprints in a shared-memory copy of the tile plus its ``S_max - 1`` margin (two float
  shared atomics per cell: CUDA has no complex atomics), then adds the non-zero cells to the
  grid with float atomics on a real view of it. ``T`` is the largest of 32, 16, 8 whose region
  fits the shared budget (48 KiB); when none does (double precision with very wide kernels)
  or ``max_shared=0``, the global path runs instead: every footprint cell goes straight to the
  grid with two global float atomics;
- degridding reads the grid directly (each sample is one thread, one output element).

Arithmetic follows the CPU kernels: coordinates, Lagrange weights and phases in float64,
kernel terms in the tables' precision, accumulation in the grid's precision.

"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from radimg.gpu._device import simulator_enabled

try:  # guarded like radimg.gpu.gridder: radimg.gpu imports without numba.cuda
    import numba
    from numba import cuda
except Exception:  # pragma: no cover
    numba = None
    cuda = None

__all__ = ["kernels", "kernel_signatures", "kernel_shape", "grid_wproject", "degrid_wproject",
           "DeviceTables", "upload_tables", "tile_chunks", "shared_tile", "SHARED_BYTES"]

SHARED_BYTES = 48 * 1024  # per-block shared memory every CUDA GPU offers without opt-in
_TILES = (32, 16, 8)  # shared-path tile sizes tried, largest first
_CHUNK = 2048  # samples per block at most on the shared path
# threads per block; small under the numba CUDA simulator (tests only), which runs every
# thread as a Python thread (radimg.gpu.gridder._BLOCK says why)
_BLOCK = 32 if simulator_enabled() else 128
_R_STEP = 4  # R and S of the local arrays are rounded up to these (fewer specialisations)
_S_STEP = 8


def _require_cuda():
    if cuda is None:
        from radimg.gpu._device import GpuUnavailableError

        raise GpuUnavailableError("numba.cuda is not importable; pip install radimg[gpu]")


if cuda is not None:
    from radimg.gpu.scalar import DEVICE as _SCALAR

    # written once for CPU and GPU (radimg/kernels/scalar.py)
    _wp_setup = _SCALAR.wproject_setup
    _fill_1d = _SCALAR.fill_1d


def _make_grid_kernel(nbc, maxr, maxs):
    def wp_grid_kernel(uvw, fscale, vis, weight, use_weight, idx, wk, xs, ys, tab_x, tab_y,
                       hs_x, hs_y, dw0, ddw, tmax, q, psi0, grid):
        """grid: (nyp, 2 nxp) real view of the stack's complex grid; samples are added."""
        n = cuda.grid(1)
        if n >= idx.shape[0]:
            return
        nyp = grid.shape[0]
        nxp = grid.shape[1] // 2
        nchan = fscale.shape[0]
        R = tab_x.shape[0]
        ka = cuda.local.array((maxr, maxs), nbc)
        kb = cuda.local.array((maxr, maxs), nbc)
        row, ch, flip, dw, iw, fw, sx, sy, ox, oy, jx, jy = _wp_setup(
            uvw, fscale, nchan, idx[n], wk, xs, ys, dw0, ddw, hs_x, hs_y)
        val = vis[row, ch]
        vr = val.real * 1.0
        vi = val.imag * 1.0
        if use_weight:
            wt = weight[row, ch] * 1.0
            vr *= wt
            vi *= wt
        if flip:
            vi = -vi
        ph = 2.0 * math.pi * dw * psi0
        c = math.cos(ph)
        s = -math.sin(ph)
        vr, vi = vr * c - vi * s, vr * s + vi * c
        _fill_1d(tab_x, iw, fw, ox, sx, tmax, q, ka)
        _fill_1d(tab_y, iw, fw, oy, sy, tmax, q, kb)
        x0 = jx % nxp
        for b in range(sy):
            yy = (jy + b) % nyp
            for a in range(sx):
                # sum_r conj(kb[r, b]) conj(ka[r, a]) = conj(sum_r kb ka)
                kr = 0.0
                ki = 0.0
                for r in range(R):
                    z = kb[r, b] * ka[r, a]
                    kr += z.real
                    ki += z.imag
                ki = -ki
                xx = (x0 + a) % nxp
                cuda.atomic.add(grid, (yy, 2 * xx), vr * kr - vi * ki)
                cuda.atomic.add(grid, (yy, 2 * xx + 1), vr * ki + vi * kr)

    return wp_grid_kernel


def _make_grid_shared_kernel(nbc, nbr, maxr, maxs):
    def wp_grid_shared_kernel(uvw, fscale, vis, weight, use_weight, idx, work_lo, work_hi,
                              work_tile, tsize, rw, wk, xs, ys, tab_x, tab_y, hs_x, hs_y, dw0,
                              ddw, tmax, q, psi0, grid):
        """One block per chunk of a tile's samples: footprints summed in shared memory over
        the tile's (rw x rw) region, then added to ``grid`` ((nyp, 2 nxp) real view)."""
        wi = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        nyp = grid.shape[0]
        nxp = grid.shape[1] // 2
        nchan = fscale.shape[0]
        R = tab_x.shape[0]
        y0 = work_tile[wi, 0] * tsize
        x0 = work_tile[wi, 1] * tsize
        sh = cuda.shared.array(0, nbr)
        for c in range(tid, 2 * rw * rw, nthr):
            sh[c] = 0
        cuda.syncthreads()
        ka = cuda.local.array((maxr, maxs), nbc)
        kb = cuda.local.array((maxr, maxs), nbc)
        for n in range(work_lo[wi] + tid, work_hi[wi], nthr):
            row, ch, flip, dw, iw, fw, sx, sy, ox, oy, jx, jy = _wp_setup(
                uvw, fscale, nchan, idx[n], wk, xs, ys, dw0, ddw, hs_x, hs_y)
            val = vis[row, ch]
            vr = val.real * 1.0
            vi = val.imag * 1.0
            if use_weight:
                wt = weight[row, ch] * 1.0
                vr *= wt
                vi *= wt
            if flip:
                vi = -vi
            ph = 2.0 * math.pi * dw * psi0
            c = math.cos(ph)
            s = -math.sin(ph)
            vr, vi = vr * c - vi * s, vr * s + vi * c
            _fill_1d(tab_x, iw, fw, ox, sx, tmax, q, ka)
            _fill_1d(tab_y, iw, fw, oy, sy, tmax, q, kb)
            x1 = jx % nxp
            ry0 = (jy % nyp - y0) % nyp
            rx0 = (x1 - x0) % nxp
            # the host tiled by the same first cell; a last-bit difference in u * xs on the
            # device could move it by one: such a sample takes the global path
            inside = ry0 + sy <= rw and rx0 + sx <= rw
            for b in range(sy):
                yy = (jy + b) % nyp
                for a in range(sx):
                    kr = 0.0
                    ki = 0.0
                    for r in range(R):
                        z = kb[r, b] * ka[r, a]
                        kr += z.real
                        ki += z.imag
                    ki = -ki
                    gr = vr * kr - vi * ki
                    gi = vr * ki + vi * kr
                    if inside:
                        base = 2 * ((ry0 + b) * rw + rx0 + a)
                        cuda.atomic.add(sh, base, gr)
                        cuda.atomic.add(sh, base + 1, gi)
                    else:
                        xx = (x1 + a) % nxp
                        cuda.atomic.add(grid, (yy, 2 * xx), gr)
                        cuda.atomic.add(grid, (yy, 2 * xx + 1), gi)
        cuda.syncthreads()
        for c in range(tid, rw * rw, nthr):
            gr = sh[2 * c]
            gi = sh[2 * c + 1]
            if gr != 0 or gi != 0:
                r = c // rw
                cc = c - r * rw
                jy2 = (y0 + r) % nyp
                jx2 = (x0 + cc) % nxp
                cuda.atomic.add(grid, (jy2, 2 * jx2), gr)
                cuda.atomic.add(grid, (jy2, 2 * jx2 + 1), gi)

    return wp_grid_shared_kernel


def _make_degrid_kernel(nbc, maxr, maxs):
    def wp_degrid_kernel(uvw, fscale, grid, idx, wk, xs, ys, tab_x, tab_y, hs_x, hs_y, dw0,
                         ddw, tmax, q, psi0, out):
        """grid (nyp, nxp) complex; ``out[row, chan]`` is set for every sample in ``idx``."""
        n = cuda.grid(1)
        if n >= idx.shape[0]:
            return
        nyp = grid.shape[0]
        nxp = grid.shape[1]
        nchan = fscale.shape[0]
        R = tab_x.shape[0]
        ka = cuda.local.array((maxr, maxs), nbc)
        kb = cuda.local.array((maxr, maxs), nbc)
        part = cuda.local.array(maxr, numba.complex128)
        row, ch, flip, dw, iw, fw, sx, sy, ox, oy, jx, jy = _wp_setup(
            uvw, fscale, nchan, idx[n], wk, xs, ys, dw0, ddw, hs_x, hs_y)
        _fill_1d(tab_x, iw, fw, ox, sx, tmax, q, ka)
        _fill_1d(tab_y, iw, fw, oy, sy, tmax, q, kb)
        x0 = jx % nxp
        acc = 0j
        for b in range(sy):
            yy = (jy + b) % nyp
            for r in range(R):
                part[r] = 0j
            for a in range(sx):
                g = grid[yy, (x0 + a) % nxp]
                for r in range(R):
                    part[r] += g * ka[r, a]
            for r in range(R):
                acc += part[r] * kb[r, b]
        ph = 2.0 * math.pi * dw * psi0
        acc *= complex(math.cos(ph), math.sin(ph))
        if flip:
            acc = acc.conjugate()
        out[row, ch] = acc

    return wp_degrid_kernel


class _Kernels(NamedTuple):
    grid: object
    grid_shared: object
    degrid: object
    maxr: int
    maxs: int


def kernel_shape(rank, smax):
    """The (R, S) local-array sizes compiled for tables of ``rank`` terms and supports up to
    ``smax`` cells (rounded up so a few specialisations serve every run)."""
    maxr = _R_STEP * max(1, -(-int(rank) // _R_STEP))
    maxs = _S_STEP * max(1, -(-int(smax) // _S_STEP))
    return maxr, maxs


@functools.cache
def _kernels(real_dtype, maxr, maxs):
    _require_cuda()
    rdt = np.dtype(real_dtype)
    if rdt not in (np.float32, np.float64):
        raise TypeError(f"real dtype must be float32 or float64, got {rdt}")
    nbc = numba.complex64 if rdt == np.float32 else numba.complex128
    nbr = numba.from_dtype(rdt)
    opts = {"fastmath": False}
    return _Kernels(grid=cuda.jit(**opts)(_make_grid_kernel(nbc, maxr, maxs)),
                    grid_shared=cuda.jit(**opts)(_make_grid_shared_kernel(nbc, nbr, maxr, maxs)),
                    degrid=cuda.jit(**opts)(_make_degrid_kernel(nbc, maxr, maxs)),
                    maxr=maxr, maxs=maxs)


def kernels(real_dtype, rank, smax):
    """The CUDA w-projection kernels for one precision and table shape (memoised; compiled on
    first launch). ``rank``: the tables' R; ``smax``: the largest support in cells."""
    return _kernels(np.dtype(real_dtype).type, *kernel_shape(rank, smax))


def kernel_signatures(real_dtype, rank=4, smax=16):
    """``{name: (python_function, signature)}`` as launched, for ``numba.cuda.compile_ptx``."""
    _require_cuda()
    rdt = np.dtype(real_dtype)
    t = numba.types
    r = numba.from_dtype(rdt)
    c = t.complex64 if rdt == np.float32 else t.complex128
    arr = t.Array
    f64, i64 = t.float64, t.int64
    k = kernels(rdt, rank, smax)
    tabs = (arr(c, 3, "C"), arr(c, 3, "C"), arr(f64, 1, "C"), arr(f64, 1, "C"), f64, f64, f64,
            i64, f64)
    head = (arr(f64, 2, "C"), arr(f64, 1, "C"))
    return {
        "wp_grid": (k.grid.py_func, (*head, arr(c, 2, "C"), arr(r, 2, "C"), t.boolean,
                                     arr(i64, 1, "C"), f64, f64, f64, *tabs, arr(r, 2, "C"))),
        "wp_grid_shared": (k.grid_shared.py_func, (
            *head, arr(c, 2, "C"), arr(r, 2, "C"), t.boolean, arr(i64, 1, "C"),
            arr(i64, 1, "C"), arr(i64, 1, "C"), arr(i64, 2, "C"), i64, i64, f64, f64, f64,
            *tabs, arr(r, 2, "C"))),
        "wp_degrid": (k.degrid.py_func, (*head, arr(c, 2, "C"), arr(i64, 1, "C"), f64, f64,
                                         f64, *tabs, arr(c, 2, "C"))),
    }


# ----------------------------------------------------------------------------- host side


class DeviceTables(NamedTuple):
    """:class:`radimg.kernels.wproject.WKernelTables` resident on the device (kernel part)."""

    tab_x: object
    tab_y: object
    hs_x: object
    hs_y: object
    dw0: float
    ddw: float
    tmax: float
    q: int
    psi0: float
    rank: int
    smax: int


def upload_tables(tables, xp, stats=None):
    """Copy the kernel tables to the device once (small: ``2 R nw nt`` complex)."""
    from radimg.gpu._device import to_device
    from radimg.kernels.wproject import support_max

    if isinstance(tables, DeviceTables):
        return tables
    return DeviceTables(
        tab_x=to_device(tables.tab_x, xp, stats), tab_y=to_device(tables.tab_y, xp, stats),
        hs_x=to_device(tables.hs_x, xp, stats, dtype=np.float64),
        hs_y=to_device(tables.hs_y, xp, stats, dtype=np.float64),
        dw0=float(tables.dw0), ddw=float(tables.ddw), tmax=float(tables.tmax), q=int(tables.q),
        psi0=float(tables.psi0), rank=int(tables.rank), smax=int(support_max(tables)))


def shared_tile(smax, real_dtype, max_shared=SHARED_BYTES):
    """(T, rw): the largest tile size T of 32, 16, 8 whose shared region ``rw = T + smax - 1``
    squared (two reals per cell) fits ``max_shared`` bytes, or None (global path)."""
    isz = np.dtype(real_dtype).itemsize
    for t in _TILES:
        rw = t + int(smax) - 1
        if 2 * rw * rw * isz <= max_shared:
            return t, rw
    return None


class StackTiles(NamedTuple):
    """One stack's samples in ``T x T`` tiles of their first footprint cell, cut into chunks
    (one block each): ``idx`` sorted by tile; ``work_lo``/``work_hi`` the chunks' ranges in
    it; ``work_tile`` (nwork, 2) their tile (ty, tx)."""

    idx: object
    work_lo: object
    work_hi: object
    work_tile: object
    nwork: int
    tsize: int
    rw: int


def tile_chunks(uvw, freq, idx, wk, cell_rad, nxp, nyp, tables, tsize, rw, chunk=_CHUNK):
    """Host-side tiling for the shared path (a :class:`StackTiles` of numpy arrays).

    The first footprint cell is computed with the kernels' own arithmetic
    (``_wp_setup``); a sample whose device value differs in the last bit still lands in the
    right place (the kernel sends it through global atomics).
    """
    from radimg.kernels.wproject import sample_supports

    idx = np.ascontiguousarray(idx, dtype=np.int64)
    uvw = np.asarray(uvw, dtype=np.float64)
    fs = _fscale(freq)
    row, ch = np.divmod(idx, fs.size)
    u = uvw[row, 0] * fs[ch]
    v = uvw[row, 1] * fs[ch]
    flip = uvw[row, 2] * fs[ch] < 0.0
    u = np.where(flip, -u, u)
    v = np.where(flip, -v, v)
    sx, sy = sample_supports(uvw, freq, idx, np.full(idx.size, float(wk)), tables)
    jx = np.mod(np.ceil(u * (nxp * cell_rad) - 0.5 * sx).astype(np.int64), nxp)
    jy = np.mod(np.ceil(v * (nyp * cell_rad) - 0.5 * sy).astype(np.int64), nyp)
    ntx = -(-nxp // tsize)
    key = (jy // tsize) * ntx + jx // tsize
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    tiles, start, counts = np.unique(key_s, return_index=True, return_counts=True)
    nch = (counts + chunk - 1) // chunk
    first = np.repeat(start, nch)
    k = np.arange(int(nch.sum())) - np.repeat(np.cumsum(nch) - nch, nch)
    work_lo = (first + k * chunk).astype(np.int64)
    work_hi = np.minimum(work_lo + chunk, np.repeat(start + counts, nch)).astype(np.int64)
    wt = np.repeat(tiles, nch)
    work_tile = np.ascontiguousarray(np.column_stack([wt // ntx, wt % ntx]), dtype=np.int64)
    return StackTiles(idx=idx[order], work_lo=work_lo, work_hi=work_hi, work_tile=work_tile,
                      nwork=int(work_lo.size), tsize=int(tsize), rw=int(rw))


def upload_tiles(tiles, xp, stats=None):
    """A :class:`StackTiles` with its arrays on the device."""
    from radimg.gpu._device import to_device

    return tiles._replace(idx=to_device(tiles.idx, xp, stats, dtype=np.int64),
                          work_lo=to_device(tiles.work_lo, xp, stats, dtype=np.int64),
                          work_hi=to_device(tiles.work_hi, xp, stats, dtype=np.int64),
                          work_tile=to_device(tiles.work_tile, xp, stats, dtype=np.int64))


def launch_grid_tiles(dt, uvw_d, fscale_d, vis_d, weight_d, use_weight, tiles, wk, xs, ys,
                      grid_r, block=_BLOCK):
    """Shared path: grid one stack's samples (device :class:`StackTiles`) into ``grid_r``."""
    if tiles.nwork == 0:
        return
    k = kernels(grid_r.dtype, dt.rank, dt.smax)
    shb = 2 * tiles.rw * tiles.rw * np.dtype(grid_r.dtype).itemsize
    k.grid_shared[tiles.nwork, block, 0, shb](
        uvw_d, fscale_d, vis_d, weight_d, use_weight, tiles.idx, tiles.work_lo, tiles.work_hi,
        tiles.work_tile, tiles.tsize, tiles.rw, float(wk), float(xs), float(ys), dt.tab_x,
        dt.tab_y, dt.hs_x, dt.hs_y, dt.dw0, dt.ddw, dt.tmax, dt.q, dt.psi0, grid_r)


def _blocks(n, block):
    return (n + block - 1) // block


def launch_grid(dt, uvw_d, fscale_d, vis_d, weight_d, use_weight, idx_d, wk, xs, ys, grid_r,
                block=_BLOCK):
    """Grid the samples ``idx_d`` of one stack into ``grid_r`` (real view), on the device."""
    n = int(idx_d.shape[0])
    if n == 0:
        return
    k = kernels(grid_r.dtype, dt.rank, dt.smax)
    k.grid[_blocks(n, block), block](uvw_d, fscale_d, vis_d, weight_d, use_weight, idx_d,
                                     float(wk), float(xs), float(ys), dt.tab_x, dt.tab_y,
                                     dt.hs_x, dt.hs_y, dt.dw0, dt.ddw, dt.tmax, dt.q, dt.psi0,
                                     grid_r)


def launch_degrid(dt, uvw_d, fscale_d, grid_d, idx_d, wk, xs, ys, out_d, block=_BLOCK):
    """Degrid the samples ``idx_d`` of one stack off ``grid_d`` into ``out_d[row, chan]``."""
    n = int(idx_d.shape[0])
    if n == 0:
        return
    rdt = np.float32 if grid_d.dtype == np.complex64 else np.float64
    k = kernels(rdt, dt.rank, dt.smax)
    k.degrid[_blocks(n, block), block](uvw_d, fscale_d, grid_d, idx_d, float(wk), float(xs),
                                       float(ys), dt.tab_x, dt.tab_y, dt.hs_x, dt.hs_y, dt.dw0,
                                       dt.ddw, dt.tmax, dt.q, dt.psi0, out_d)


def _fscale(freq):
    from radimg.constants import C_LIGHT

    return np.ascontiguousarray(np.atleast_1d(np.asarray(freq, dtype=np.float64)) / C_LIGHT)


def grid_wproject(uvw, freq, vis, idx_sorted, tile_ptr, colour_ptr, wk, cell_rad, tables, grid,
                  *, weight=None, block=_BLOCK, max_shared=SHARED_BYTES, chunk=_CHUNK,
                  stats=None):
    """GPU twin of :func:`radimg.kernels.wproject.grid_wproject` (same arguments; the tile
    pointers are accepted for signature parity: the GPU needs no colouring, atomics resolve
    the overlaps). Host arrays in: ``grid`` is updated in place and returned; device arrays
    in: the device grid is updated in place. ``max_shared=0`` forces the global path;
    ``chunk`` bounds the samples per block on the shared path."""
    del tile_ptr, colour_ptr
    from radimg.gpu._device import get_xp, is_host_array, to_device, to_host

    xp = get_xp()
    cdt = grid.dtype
    rdt = np.float32 if cdt == np.complex64 else np.float64
    host = is_host_array(grid, xp)
    g = to_device(grid, xp, stats) if host else grid
    dt = upload_tables(tables, xp, stats)
    use_w = weight is not None
    wgt = to_device(weight if use_w else np.ones((1, 1)), xp, stats, dtype=rdt)
    nyp, nxp = g.shape
    args = (dt, to_device(uvw, xp, stats, dtype=np.float64), to_device(_fscale(freq), xp, stats),
            to_device(vis, xp, stats), wgt, use_w)
    tile = shared_tile(dt.smax, rdt, max_shared)
    if tile is not None:
        host_idx = idx_sorted if is_host_array(idx_sorted, xp) else xp.asnumpy(idx_sorted)
        tiles = tile_chunks(uvw, freq, host_idx, wk, cell_rad, nxp, nyp, tables, *tile,
                            chunk=chunk)
        launch_grid_tiles(*args, upload_tiles(tiles, xp, stats), wk, nxp * cell_rad,
                          nyp * cell_rad, g.view(rdt), block)
    else:
        launch_grid(*args, to_device(idx_sorted, xp, stats, dtype=np.int64), wk,
                    nxp * cell_rad, nyp * cell_rad, g.view(rdt), block)
    if host:
        grid[...] = to_host(g, xp, stats)
        return grid
    return g


def degrid_wproject(uvw, freq, grid, idx, wk, cell_rad, tables, *, out=None, block=_BLOCK,
                    stats=None):
    """GPU twin of :func:`radimg.kernels.wproject.degrid_wproject`: (len(idx),) complex, or
    ``out[row, chan]`` set for each sample when ``out`` is given. Host in, host out."""
    from radimg.gpu._device import get_xp, is_host_array, to_device, to_host

    xp = get_xp()
    nyp, nxp = grid.shape
    fs = _fscale(freq)
    host = is_host_array(grid, xp)
    g = to_device(grid, xp, stats) if host else grid
    dt = upload_tables(tables, xp, stats)
    idx = np.asarray(idx, dtype=np.int64) if host else idx
    idx_d = to_device(idx, xp, stats, dtype=np.int64)
    if out is None:
        # one row per sample: degrid into a (nsel, 1) block addressed by a 1-channel layout
        nrow, nchan = int(np.asarray(uvw).shape[0]), fs.size
        o = xp.zeros((nrow, nchan), dtype=g.dtype)
    else:
        o = to_device(out, xp, stats) if is_host_array(out, xp) else out
    launch_degrid(dt, to_device(uvw, xp, stats, dtype=np.float64), to_device(fs, xp, stats),
                  g, idx_d, wk, nxp * cell_rad, nyp * cell_rad, o, block)
    if out is None:
        flat = o.reshape(-1)[idx_d]
        return to_host(flat, xp, stats) if host else flat
    if is_host_array(out, xp):
        out[...] = to_host(o, xp, stats)
        return out
    return o
