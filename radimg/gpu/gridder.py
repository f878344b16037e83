"""CUDA twins of radimg/kernels/gridder.py: ES grid / degrid per w-plane and the image-domain
plane <-> image stages, with the same signatures and the same results.

The CPU gridder's tile layout (:class:`radimg.kernels.gridder.SampleLayout`) is reused as is:
samples sorted by tile and, inside a tile, by first w-plane, so the samples that touch plane
``p`` form one contiguous run per tile. On the GPU a tile's run is cut into chunks of at most
``chunk`` samples and each chunk is one thread block (dense uv tiles are spread over many
blocks instead of serialising on one). A block

- grids: accumulates its samples' footprints in a shared-memory copy of the tile plus its
  ``W - 1`` margin (real and imaginary parts as two floats: CUDA has no complex atomics, and
  shared-memory float atomics are cheap), then adds the non-zero cells to the global grid with
  float atomics on a real view of it (neighbouring tiles' margins overlap);
- degrids: loads the same region of the plane into shared memory once, then each thread
  interpolates one sample at a time from it.

When the region does not fit the shared-memory budget (large tiles, double precision with
``W = 16`` and a custom tile size) both kernels fall back to global-memory atomics / reads;
the results are the same.

Arithmetic follows the CPU kernels: coordinates, kernel values and phases in float64,
accumulation in the grid's precision (float32 for complex64, float64 for complex128).

Compiled kernels are memoised per dtype (:func:`kernels`; africanus ``rime/cuda/phase.py``):
the shared-memory dtype is a compile-time constant of each specialisation.

The w-projection residual kernels of ``wstack-wproject`` (compact rank-R tables) have their
own CUDA twins in :mod:`radimg.gpu.wproject`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from radimg.constants import C_LIGHT
from radimg.gpu._device import get_xp, is_host_array, simulator_enabled, to_device, to_host
from radimg.kernels.es import MAX_SUPPORT
from radimg.kernels.gridder import GridSpec, SampleLayout

try:  # guarded: radimg.gpu must import without numba.cuda (future numba without the target)
    import numba
    from numba import cuda
except Exception:  # pragma: no cover
    numba = None
    cuda = None

__all__ = [
    "DeviceLayout",
    "upload_layout",
    "grid_plane",
    "degrid_plane",
    "plane_to_image",
    "image_to_plane",
    "kernels",
    "kernel_signatures",
    "kernel_tables",
    "SHARED_BYTES",
]

SHARED_BYTES = 48 * 1024  # the per-block shared memory every CUDA GPU offers without opt-in
_CHUNK = 4096  # samples per block at most (dense tiles are split over blocks)
# Threads per block for the sample kernels and the image kernels. The numba CUDA simulator
# runs every thread of a block as a Python thread, so under it (tests only) blocks are small:
# the same code paths (shared-memory tiles, strided cooperative loops over blockDim) run,
# several times faster. The kernels read the block size from blockDim, never from these.
_BLOCK = 32 if simulator_enabled() else 128
_BLOCK2D = (8, 8) if simulator_enabled() else (16, 16)
_MAXW = MAX_SUPPORT  # local kernel-weight arrays are sized at compile time


def _require_cuda():
    if cuda is None:
        from radimg.gpu._device import GpuUnavailableError

        raise GpuUnavailableError("numba.cuda is not importable; pip install radimg[gpu]")


# ----------------------------------------------------------------------------- device functions

if cuda is not None:
    # Note: numba-cuda compiles a device function for the *current* device's compute
    # capability, so compile_ptx of these kernels needs a device, or (tests/test_gpu.py) a
    # stand-in for get_current_device.
    from radimg.gpu.scalar import DEVICE as _SCALAR

    _device_fn = cuda.jit(device=True)
    # written once for CPU and GPU (radimg/kernels/scalar.py)
    _es = _SCALAR.es
    _sample_uvw = _SCALAR.sample_uvw

    @_device_fn
    def _lower(p0, lo, hi, val):
        """First i in [lo, hi) with p0[i] >= val (p0 sorted there)."""
        while lo < hi:
            mid = (lo + hi) // 2
            if p0[mid] < val:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @_device_fn
    def _upper(p0, lo, hi, val):
        """First i in [lo, hi) with p0[i] > val."""
        while lo < hi:
            mid = (lo + hi) // 2
            if p0[mid] <= val:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @_device_fn
    def _taps(coef, W, beta, g, out):
        """Kernel weights of the W cells from floor(g - W/2) + 1 into ``out``; returns that
        cell. ``coef`` (D + 1, W): the CPU gridder's piecewise polynomial (Horner in
        ``mu = 2 s - 1``, as radimg.kernels.gridder._taps); with 0 rows, the exact ES kernel."""
        halfW = 0.5 * W
        f0 = math.floor(g - halfW) + 1.0
        if coef.shape[0] > 0:
            mu = 2.0 * (f0 - g + halfW) - 1.0
            for a in range(W):
                out[a] = coef[0, a]
            for d in range(1, coef.shape[0]):
                for a in range(W):
                    out[a] = out[a] * mu + coef[d, a]
        else:
            inv = 1.0 / halfW
            for a in range(W):
                out[a] = _es((f0 + a - g) * inv, beta)
        return int(f0)

    @_device_fn
    def _wtap(coefw, Ww, betaw, gw, p):
        """Kernel weight of plane p for a sample at continuous plane position gw."""
        if coefw.shape[0] == 0:
            return _es((gw - p) / (0.5 * Ww), betaw)
        halfW = 0.5 * Ww
        f0 = math.floor(gw - halfW) + 1.0
        a = p - int(f0)
        if a < 0 or a >= Ww:
            return 0.0
        mu = 2.0 * (f0 - gw + halfW) - 1.0
        k = coefw[0, a]
        for d in range(1, coefw.shape[0]):
            k = k * mu + coefw[d, a]
        return k

    @_device_fn
    def _sample_setup(uvw, fscale, nchan, i, spec_f, W, Ww, p, coef, coefw, ku, kv):
        """As the CPU gridder's per-sample set-up: (row, ch, flip, jx0, jy0, kw, phase_arg);
        ku/kv are filled in place."""
        xscale = spec_f[0]
        yscale = spec_f[1]
        beta = spec_f[2]
        betaw = spec_f[3]
        w0 = spec_f[4]
        dw = spec_f[5]
        nshift = spec_f[6]
        row, ch, flip, u, v, w = _sample_uvw(uvw, fscale, nchan, i)
        kw = 1.0
        ph = 0.0
        if Ww > 1:
            kw = _wtap(coefw, Ww, betaw, (w - w0) / dw, p)
            ph = w * nshift
        jx0 = _taps(coef, W, beta, u * xscale, ku)
        jy0 = _taps(coef, W, beta, v * yscale, kv)
        return row, ch, flip, jx0, jy0, kw, ph

    @_device_fn
    def _run(p0, work_lo, work_hi, wi, p, Ww):
        """[lo, hi) of the chunk's samples with p - Ww + 1 <= p0 <= p (empty: lo >= hi)."""
        a0 = work_lo[wi]
        b0 = work_hi[wi]
        if p0[a0] > p or p0[b0 - 1] + Ww - 1 < p:
            return a0, a0
        return _lower(p0, a0, b0, p - Ww + 1), _upper(p0, a0, b0, p)


# ----------------------------------------------------------------------------- kernels


def _make_grid_kernel(nbr):
    def grid_kernel(uvw, fscale, vis, weight, use_weight, idx, p0, work_slot, work_lo, work_hi,
                    slot_tile, ybounds, xbounds, spec_f, W, Ww, p, coef, coefw, use_shared,
                    grid):
        """grid: (nyp, 2 nxp) real view of the complex plane; the samples are added to it."""
        wi = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        lo, hi = _run(p0, work_lo, work_hi, wi, p, Ww)
        if lo >= hi:
            return  # uniform over the block: no syncthreads is skipped by only some threads
        nyp = grid.shape[0]
        nxp = grid.shape[1] // 2
        nchan = fscale.shape[0]
        s = work_slot[wi]
        y0 = ybounds[slot_tile[s, 0]]
        x0 = xbounds[slot_tile[s, 1]]
        rh = ybounds[slot_tile[s, 0] + 1] - y0 + W - 1
        rw = xbounds[slot_tile[s, 1] + 1] - x0 + W - 1
        sh = cuda.shared.array(0, nbr)
        if use_shared:
            for c in range(tid, 2 * rh * rw, nthr):
                sh[c] = 0
            cuda.syncthreads()
        ku = cuda.local.array(_MAXW, numba.float64)
        kv = cuda.local.array(_MAXW, numba.float64)
        twopi = 2.0 * math.pi
        for k in range(lo + tid, hi, nthr):
            row, ch, flip, jx0, jy0, kw, ph = _sample_setup(
                uvw, fscale, nchan, idx[k], spec_f, W, Ww, p, coef, coefw, ku, kv)
            if kw == 0.0:
                continue
            val = vis[row, ch]
            vr = val.real * 1.0
            vi = val.imag * 1.0
            if use_weight:
                wt = weight[row, ch] * 1.0
                vr *= wt
                vi *= wt
            if flip:
                vi = -vi
            if ph != 0.0:
                c = math.cos(twopi * ph)
                sn = -math.sin(twopi * ph)
                vr, vi = vr * c - vi * sn, vr * sn + vi * c
            vr *= kw
            vi *= kw
            jx0 = jx0 % nxp
            jy0 = jy0 % nyp
            ry0 = jy0 - y0
            rx0 = jx0 - x0
            inside = use_shared and ry0 >= 0 and ry0 + W <= rh and rx0 >= 0 and rx0 + W <= rw
            for a in range(W):
                ar = vr * kv[a]
                ai = vi * kv[a]
                if inside:
                    base = 2 * ((ry0 + a) * rw + rx0)
                    for b in range(W):
                        cuda.atomic.add(sh, base + 2 * b, ar * ku[b])
                        cuda.atomic.add(sh, base + 2 * b + 1, ai * ku[b])
                else:
                    jy = (jy0 + a) % nyp
                    for b in range(W):
                        jx = (jx0 + b) % nxp
                        cuda.atomic.add(grid, (jy, 2 * jx), ar * ku[b])
                        cuda.atomic.add(grid, (jy, 2 * jx + 1), ai * ku[b])
        if use_shared:
            cuda.syncthreads()
            for c in range(tid, rh * rw, nthr):
                gr = sh[2 * c]
                gi = sh[2 * c + 1]
                if gr != 0 or gi != 0:
                    r = c // rw
                    q = c - r * rw
                    jy = (y0 + r) % nyp
                    jx = (x0 + q) % nxp
                    cuda.atomic.add(grid, (jy, 2 * jx), gr)
                    cuda.atomic.add(grid, (jy, 2 * jx + 1), gi)

    return grid_kernel


def _make_degrid_kernel(nbr):
    def degrid_kernel(uvw, fscale, grid, idx, p0, work_slot, work_lo, work_hi, slot_tile,
                      ybounds, xbounds, spec_f, W, Ww, p, coef, coefw, use_shared, out):
        """grid: (nyp, 2 nxp) real view; out (row, chan) complex: the samples are added."""
        wi = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        lo, hi = _run(p0, work_lo, work_hi, wi, p, Ww)
        if lo >= hi:
            return
        nyp = grid.shape[0]
        nxp = grid.shape[1] // 2
        nchan = fscale.shape[0]
        s = work_slot[wi]
        y0 = ybounds[slot_tile[s, 0]]
        x0 = xbounds[slot_tile[s, 1]]
        rh = ybounds[slot_tile[s, 0] + 1] - y0 + W - 1
        rw = xbounds[slot_tile[s, 1] + 1] - x0 + W - 1
        sh = cuda.shared.array(0, nbr)
        if use_shared:
            for c in range(tid, rh * rw, nthr):
                r = c // rw
                q = c - r * rw
                jy = (y0 + r) % nyp
                jx = (x0 + q) % nxp
                sh[2 * c] = grid[jy, 2 * jx]
                sh[2 * c + 1] = grid[jy, 2 * jx + 1]
            cuda.syncthreads()
        ku = cuda.local.array(_MAXW, numba.float64)
        kv = cuda.local.array(_MAXW, numba.float64)
        twopi = 2.0 * math.pi
        for k in range(lo + tid, hi, nthr):
            row, ch, flip, jx0, jy0, kw, ph = _sample_setup(
                uvw, fscale, nchan, idx[k], spec_f, W, Ww, p, coef, coefw, ku, kv)
            if kw == 0.0:
                continue
            jx0 = jx0 % nxp
            jy0 = jy0 % nyp
            ry0 = jy0 - y0
            rx0 = jx0 - x0
            inside = use_shared and ry0 >= 0 and ry0 + W <= rh and rx0 >= 0 and rx0 + W <= rw
            accr = 0.0
            acci = 0.0
            for a in range(W):
                rr = 0.0
                ri = 0.0
                if inside:
                    base = 2 * ((ry0 + a) * rw + rx0)
                    for b in range(W):
                        rr += sh[base + 2 * b] * ku[b]
                        ri += sh[base + 2 * b + 1] * ku[b]
                else:
                    jy = (jy0 + a) % nyp
                    for b in range(W):
                        jx = (jx0 + b) % nxp
                        rr += grid[jy, 2 * jx] * ku[b]
                        ri += grid[jy, 2 * jx + 1] * ku[b]
                accr += rr * kv[a]
                acci += ri * kv[a]
            accr *= kw
            acci *= kw
            if ph != 0.0:
                c = math.cos(twopi * ph)
                sn = math.sin(twopi * ph)
                accr, acci = accr * c - acci * sn, accr * sn + acci * c
            if flip:
                acci = -acci
            # Each sample appears once in a layout, so one launch never writes a row twice.
            out[row, ch] += complex(accr, acci)

    return degrid_kernel


def _plane_to_image_kernel(fgrid, cell_x, cell_y, wp, nshift, acc):
    """acc[iy, ix] += Re[fgrid[iy' mod nyp, ix' mod nxp] exp(-2 pi i wp (n - 1 - nshift))]."""
    iy, ix = cuda.grid(2)
    ny, nx = acc.shape
    if iy >= ny or ix >= nx:
        return
    nyp, nxp = fgrid.shape
    cropped = nyp == ny and nxp == nx
    dy = iy - ny // 2
    dx = ix - nx // 2
    m = dy * cell_y
    l = -dx * cell_x
    jy = (dy + ny // 2) if cropped else dy % nyp
    jx = (dx + nx // 2) if cropped else dx % nxp
    val = fgrid[jy, jx]
    if wp != 0.0:
        ph = 2.0 * math.pi * wp * (math.sqrt(1.0 - l * l - m * m) - 1.0 - nshift)
        acc[iy, ix] += val.real * math.cos(ph) + val.imag * math.sin(ph)
    else:
        acc[iy, ix] += val.real


def _image_to_plane_kernel(img, cell_x, cell_y, wp, nshift, grid):
    """grid[iy' mod nyp, ix' mod nxp] = img[iy, ix] exp(+2 pi i wp (n - 1 - nshift)); the
    rest of a padded grid is zeroed by :func:`_zero_kernel` first."""
    iy, ix = cuda.grid(2)
    ny, nx = img.shape
    if iy >= ny or ix >= nx:
        return
    nyp, nxp = grid.shape
    cropped = nyp == ny and nxp == nx
    dy = iy - ny // 2
    dx = ix - nx // 2
    m = dy * cell_y
    l = -dx * cell_x
    jy = (dy + ny // 2) if cropped else dy % nyp
    jx = (dx + nx // 2) if cropped else dx % nxp
    val = img[iy, ix] * 1.0
    if wp != 0.0:
        ph = 2.0 * math.pi * wp * (math.sqrt(1.0 - l * l - m * m) - 1.0 - nshift)
        grid[jy, jx] = complex(val * math.cos(ph), val * math.sin(ph))
    else:
        grid[jy, jx] = complex(val, 0.0)


def _zero_kernel(a):
    i, j = cuda.grid(2)
    if i < a.shape[0] and j < a.shape[1]:
        a[i, j] = 0


class _Kernels(NamedTuple):
    grid: object
    degrid: object
    plane_to_image: object
    image_to_plane: object
    zero: object


@functools.cache
def kernels(real_dtype):
    """The CUDA kernels for one precision (``float32`` or ``float64``), compiled lazily on first
    launch and memoised here (one specialisation per dtype, as africanus rime/cuda does)."""
    _require_cuda()
    rdt = np.dtype(real_dtype)
    if rdt not in (np.float32, np.float64):
        raise TypeError(f"real dtype must be float32 or float64, got {rdt}")
    nbr = numba.from_dtype(rdt)
    opts = {"fastmath": False}
    return _Kernels(
        grid=cuda.jit(**opts)(_make_grid_kernel(nbr)),
        degrid=cuda.jit(**opts)(_make_degrid_kernel(nbr)),
        plane_to_image=cuda.jit(**opts)(_plane_to_image_kernel),
        image_to_plane=cuda.jit(**opts)(_image_to_plane_kernel),
        zero=cuda.jit(**opts)(_zero_kernel),
    )


def kernel_signatures(real_dtype):
    """The argument types each kernel is launched with, for ``numba.cuda.compile_ptx``.

    Returns ``{name: (python_function, signature_tuple)}``.
    """
    _require_cuda()
    rdt = np.dtype(real_dtype)
    t = numba.types
    r = numba.from_dtype(rdt)
    c = t.complex64 if rdt == np.float32 else t.complex128
    i64, i32 = t.int64, t.int32
    f64 = t.float64
    arr = t.Array
    k = kernels(rdt)
    tab = arr(f64, 2, "C")
    lay = (arr(i64, 1, "C"), arr(i32, 1, "C"), arr(i64, 1, "C"), arr(i64, 1, "C"),
           arr(i64, 1, "C"), arr(i32, 2, "C"), arr(i64, 1, "C"), arr(i64, 1, "C"))
    return {
        "grid": (k.grid.py_func, (arr(f64, 2, "C"), arr(f64, 1, "C"), arr(c, 2, "C"),
                                  arr(r, 2, "C"), t.boolean, *lay, arr(f64, 1, "C"), i64, i64,
                                  i64, tab, tab, t.boolean, arr(r, 2, "C"))),
        "degrid": (k.degrid.py_func, (arr(f64, 2, "C"), arr(f64, 1, "C"), arr(r, 2, "C"),
                                      *lay, arr(f64, 1, "C"), i64, i64, i64, tab, tab,
                                      t.boolean, arr(c, 2, "C"))),
        "plane_to_image": (k.plane_to_image.py_func, (arr(c, 2, "C"), f64, f64, f64, f64,
                                                      arr(f64, 2, "C"))),
        "image_to_plane": (k.image_to_plane.py_func, (arr(f64, 2, "C"), f64, f64, f64, f64,
                                                      arr(c, 2, "C"))),
        "zero": (k.zero.py_func, (arr(c, 2, "C"),)),
    }


# ----------------------------------------------------------------------------- layout on device


class DeviceLayout(NamedTuple):
    """A :class:`SampleLayout` resident on the device, cut into per-block work chunks.

    work_slot, work_lo, work_hi : int64 (nwork,) tile slot and ``idx`` range of each block.
    region_cells : int, the largest tile-plus-margin region (cells) any block needs.
    nchan, nsamples : int
    """

    idx: object
    p0: object
    work_slot: object
    work_lo: object
    work_hi: object
    slot_tile: object
    ybounds: object
    xbounds: object
    nwork: int
    region_cells: int
    nchan: int
    nsamples: int
    W: int


def upload_layout(layout: SampleLayout, W: int, xp=None, stats=None, chunk=_CHUNK):
    """Copy a layout to the device once (the operator keeps it there for its lifetime)."""
    if isinstance(layout, DeviceLayout):
        return layout
    xp = get_xp() if xp is None else xp
    counts = np.diff(layout.slot_start)
    live = np.flatnonzero(counts > 0)
    nch = (counts[live] + chunk - 1) // chunk
    work_slot = np.repeat(live, nch).astype(np.int64)
    first = np.repeat(layout.slot_start[live], nch)
    k = np.arange(work_slot.size) - np.repeat(np.cumsum(nch) - nch, nch)
    work_lo = (first + k * chunk).astype(np.int64)
    work_hi = np.minimum(work_lo + chunk, layout.slot_start[work_slot + 1]).astype(np.int64)
    th = int(np.diff(layout.ybounds).max())
    tw = int(np.diff(layout.xbounds).max())
    dev = lambda a, dt: to_device(np.ascontiguousarray(a, dtype=dt), xp, stats)  # noqa: E731
    return DeviceLayout(
        idx=dev(layout.idx, np.int64), p0=dev(layout.p0, np.int32),
        work_slot=dev(work_slot, np.int64), work_lo=dev(work_lo, np.int64),
        work_hi=dev(work_hi, np.int64), slot_tile=dev(layout.slot_tile, np.int32),
        ybounds=dev(layout.ybounds, np.int64), xbounds=dev(layout.xbounds, np.int64),
        nwork=int(work_slot.size), region_cells=(th + W - 1) * (tw + W - 1),
        nchan=int(layout.nchan), nsamples=int(layout.idx.size), W=int(W))


def spec_array(spec: GridSpec):
    """The float64 parameter vector the kernels read (as radimg.kernels.gridder._spec_f)."""
    return np.array([spec.xscale, spec.yscale, spec.beta, spec.betaw, spec.w0, spec.dw,
                     spec.nshift], dtype=np.float64)


def kernel_tables(spec: GridSpec):
    """(coef, coefw) float64 tap tables matching the CPU gridder's kernel evaluation.

    The CPU gridder evaluates its kernel as a piecewise polynomial when it imports
    ``es_poly_coeffs`` (radimg.kernels.es); then these are the same tables. Otherwise (the
    exact ES kernel) both have 0 rows and the kernels evaluate ``exp(beta (sqrt(1-x^2) - 1))``.
    """
    from radimg.kernels import gridder as cg

    poly = getattr(cg, "es_poly_coeffs", None)
    if poly is None:
        return np.zeros((0, spec.W)), np.zeros((0, max(spec.Ww, 1)))
    coef = np.ascontiguousarray(poly(spec.W, spec.beta), dtype=np.float64)
    coefw = (np.ascontiguousarray(poly(spec.Ww, spec.betaw), dtype=np.float64) if spec.Ww > 1
             else np.ones((1, 1)))
    return coef, coefw


def _tables_dev(spec, xp, stats):
    coef, coefw = kernel_tables(spec)
    return to_device(coef, xp, stats), to_device(coefw, xp, stats)


def _shared_bytes(dlay: DeviceLayout, rdt, max_shared):
    nbytes = 2 * dlay.region_cells * np.dtype(rdt).itemsize
    return nbytes if nbytes <= max_shared else 0


def _real_view(a, rdt):
    """(n, 2 m) real view of a C-contiguous (n, m) complex device array (no copy)."""
    return a.view(rdt)


def _launch_grid(k, dlay, spec_f, uvw, fscale, vis, weight, use_weight, W, Ww, p, coef, coefw,
                 grid_r, block, max_shared):
    if dlay.nwork == 0:
        return
    shb = _shared_bytes(dlay, grid_r.dtype, max_shared)
    k.grid[dlay.nwork, block, 0, shb](
        uvw, fscale, vis, weight, use_weight, dlay.idx, dlay.p0, dlay.work_slot, dlay.work_lo,
        dlay.work_hi, dlay.slot_tile, dlay.ybounds, dlay.xbounds, spec_f, W, Ww, p, coef, coefw,
        shb > 0, grid_r)


def _launch_degrid(k, dlay, spec_f, uvw, fscale, grid_r, W, Ww, p, coef, coefw, out, block,
                   max_shared):
    if dlay.nwork == 0:
        return
    shb = _shared_bytes(dlay, grid_r.dtype, max_shared)
    k.degrid[dlay.nwork, block, 0, shb](
        uvw, fscale, grid_r, dlay.idx, dlay.p0, dlay.work_slot, dlay.work_lo, dlay.work_hi,
        dlay.slot_tile, dlay.ybounds, dlay.xbounds, spec_f, W, Ww, p, coef, coefw, shb > 0, out)


def _grid2d(shape):
    return ((shape[0] + _BLOCK2D[0] - 1) // _BLOCK2D[0],
            (shape[1] + _BLOCK2D[1] - 1) // _BLOCK2D[1])


def _real_of(cdt):
    return np.float32 if np.dtype(cdt) == np.complex64 else np.float64


def _complex_dtype(dt):
    return np.complex64 if np.dtype(dt) in (np.complex64, np.float32) else np.complex128


# ----------------------------------------------------------------------------- public twins


def grid_plane(layout, spec: GridSpec, uvw, freq, vis, p=0, *, weight=None, out=None,
               nthreads=1, block=_BLOCK, max_shared=SHARED_BYTES, stats=None):
    """GPU twin of :func:`radimg.kernels.gridder.grid_plane` (same arguments and result).

    ``layout`` may be a :class:`SampleLayout` (uploaded on every call) or a resident
    :class:`DeviceLayout`. Arrays may be host (numpy: copied in, and the result copied back)
    or device (cupy: used in place, result on the device). ``nthreads`` is accepted for
    signature parity and ignored. ``max_shared=0`` forces the global-atomics path.
    """
    del nthreads
    xp = get_xp()
    cdt = _complex_dtype(vis.dtype)
    rdt = _real_of(cdt)
    host_out = out is None and is_host_array(vis, xp) or (out is not None
                                                          and is_host_array(out, xp))
    if out is not None and (out.shape != (spec.nyp, spec.nxp) or not out.flags.c_contiguous):
        raise ValueError("out must be a C-contiguous (nyp, nxp) array")
    dlay = upload_layout(layout, spec.W, xp, stats)
    grid = (xp.zeros((spec.nyp, spec.nxp), dtype=cdt) if out is None
            else to_device(out, xp, stats, dtype=cdt))
    use_weight = weight is not None
    wgt = to_device(weight if use_weight else np.ones((1, 1)), xp, stats, dtype=rdt)
    _launch_grid(kernels(rdt), dlay, to_device(spec_array(spec), xp, stats),
                 to_device(uvw, xp, stats, dtype=np.float64),
                 to_device(np.asarray(freq, np.float64) / C_LIGHT, xp, stats),
                 to_device(vis, xp, stats, dtype=cdt), wgt, use_weight, spec.W, spec.Ww,
                 int(p), *_tables_dev(spec, xp, stats), _real_view(grid, rdt), block, max_shared)
    if not host_out:
        return grid
    res = to_host(grid, xp, stats)
    if out is None:
        return res
    out[...] = res
    return out


def degrid_plane(layout, spec: GridSpec, uvw, freq, grid, p=0, *, out=None, nthreads=1,
                 block=_BLOCK, max_shared=SHARED_BYTES, stats=None):
    """GPU twin of :func:`radimg.kernels.gridder.degrid_plane`: plane ``p`` interpolated at the
    layout's samples, *added* to ``out`` (row, chan); host in, host out (see grid_plane)."""
    del nthreads
    xp = get_xp()
    cdt = _complex_dtype(grid.dtype)
    rdt = _real_of(cdt)
    nrow, nchan = uvw.shape[0], np.atleast_1d(freq).size
    host_out = is_host_array(grid, xp) if out is None else is_host_array(out, xp)
    dlay = upload_layout(layout, spec.W, xp, stats)
    vis = (xp.zeros((nrow, nchan), dtype=cdt) if out is None
           else to_device(out, xp, stats, dtype=out.dtype))
    g = to_device(grid, xp, stats, dtype=cdt)
    _launch_degrid(kernels(rdt), dlay, to_device(spec_array(spec), xp, stats),
                   to_device(uvw, xp, stats, dtype=np.float64),
                   to_device(np.atleast_1d(np.asarray(freq, np.float64)) / C_LIGHT, xp, stats),
                   _real_view(g, rdt), spec.W, spec.Ww, int(p), *_tables_dev(spec, xp, stats), vis,
                   block, max_shared)
    if not host_out:
        return vis
    res = to_host(vis, xp, stats)
    if out is None:
        return res
    out[...] = res
    return out


def plane_to_image(fgrid, cell_x, cell_y, wp, nshift, acc, nthreads=1, stats=None):
    """GPU twin of :func:`radimg.kernels.gridder.plane_to_image` (adds to ``acc`` float64)."""
    del nthreads
    xp = get_xp()
    host = is_host_array(acc, xp)
    f = to_device(fgrid, xp, stats)
    a = to_device(acc, xp, stats, dtype=np.float64)
    kernels(_real_of(f.dtype)).plane_to_image[_grid2d(a.shape), _BLOCK2D](
        f, float(cell_x), float(cell_y), float(wp), float(nshift), a)
    if host:
        acc[...] = to_host(a, xp, stats)
        return acc
    return a


def image_to_plane(img, cell_x, cell_y, wp, nshift, grid, nthreads=1, stats=None):
    """GPU twin of :func:`radimg.kernels.gridder.image_to_plane`: the chirped image written
    cyclically into the zeroed padded ``grid`` (or a (ny, nx) complex array in image order)."""
    del nthreads
    xp = get_xp()
    host = is_host_array(grid, xp)
    g = to_device(grid, xp, stats) if host else grid
    im = to_device(img, xp, stats, dtype=np.float64)
    k = kernels(_real_of(g.dtype))
    if g.shape != im.shape:
        k.zero[_grid2d(g.shape), _BLOCK2D](g)
    k.image_to_plane[_grid2d(im.shape), _BLOCK2D](im, float(cell_x), float(cell_y), float(wp),
                                                   float(nshift), g)
    if host:
        grid[...] = to_host(g, xp, stats)
        return grid
    return g
