"""Numba gridder / degridder with the separable ES kernel (2-D, or 3-D for w-stacking).

Samples are ``(row, chan)`` pairs addressed by a flat index ``row * nchan + chan``; their
coordinates in wavelengths (``uvw[row] * freq[chan] / C``) are computed on the fly, so the
data cube is never copied per channel.

Grid convention (see :class:`GridSpec`): the padded grid is ``(nyp, nxp)`` complex; a sample
lands at continuous grid position ``gx = u * cell_x * nxp``, ``gy = -v * cell_y * nyp``
(modulo the grid size), so that an *unnormalised inverse* FFT of the grid gives
``sum_k V_k exp(-2 pi i (u l + v m))`` at image offset ``(iy', ix') = (m, -l) / cell``
(l toward east means x runs west; see docs/internals.md). Samples with ``w < 0`` are reflected
(``-u, -v, -w, conj V``) before gridding; degridding undoes it.

w-stacking (Ye et al. 2021; Arras et al. 2021, ducc0.wgridder): planes ``w_p = w0 + p dw``;
a sample contributes to the ``Ww`` planes nearest its ``w`` with ES weight
``phi((w - w_p) / dw)``; before that its value is multiplied by ``exp(-2 pi i w nshift)`` (the
centre of the ``n - 1`` range, which halves the number of planes); the rest of
``exp(-2 pi i w (n - 1))`` is a per-plane image-domain chirp (see radimg/ops/operator.py).

Threading without write races: the grid is cut into tiles no smaller than the kernel support
along each axis, with an even number of tiles per axis. A sample belongs to the tile that
holds the first grid cell of its footprint, so its footprint touches only that tile and the
next one along each axis (cyclically). Tiles are coloured by ``(ty % 2, tx % 2)``; tiles of one
colour never touch the same grid cell, so each colour is one race-free ``prange`` over tiles.
Inside a tile, samples are sorted by their first w-plane, so the samples that touch plane ``p``
form one contiguous run found by binary search. This is also the unit a distributed version
ships between ranks: :func:`touched_tiles` says which tiles of a plane an index subset needs.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from radimg.constants import C_LIGHT
from radimg.kernels import scalar as _scalar
from radimg.kernels._jit import JIT_OPTIONS, PARALLEL_JIT_OPTIONS
from radimg.kernels.es import es_poly_coeffs, es_poly_even_odd
from radimg.kernels.trig import cis_cycles
from radimg.kernels.wcheb import monomial_table

__all__ = [
    "C_LIGHT",
    "GridSpec",
    "SampleLayout",
    "make_layout",
    "tile_bounds",
    "TILE_MIN",
    "grid_plane",
    "degrid_plane",
    "touched_tiles",
    "plane_to_image",
    "image_to_plane",
]


# Threading layer: numba's OpenMP workers keep the cores busy between parallel regions, which
# starves the FFT threads that run between them on every plane (measured on 2 cores, case b of
# scripts/bench_operator.py: hdot 7.0 s with "omp" vs 4.4 s with "workqueue", 5.4 s on one
# thread). Take the workqueue layer unless the user chose one (NUMBA_THREADING_LAYER) or a
# parallel kernel already ran. No radimg code calls numba kernels from several Python threads,
# which is the one thing workqueue does not allow.
if os.environ.get("NUMBA_THREADING_LAYER") is None and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"
TILE_MIN = 16  # cells; tiles smaller than this cost more bookkeeping than they save


@dataclass(frozen=True)
class GridSpec:
    """Geometry shared by the gridder, the degridder and the image-domain stages.

    Attributes
    ----------
    nxp, nyp : padded grid size along x (image columns) and y (image rows).
    W, beta : ES kernel support (cells) and shape in u and v.
    xscale, yscale : grid cells per wavelength: ``gx = u * xscale``, ``gy = v * yscale``
        (``xscale = cell_x * nxp``, ``yscale = -cell_y * nyp``).
    nplanes : number of w-planes (1 without w-stacking).
    Ww, betaw : ES kernel support (planes) and shape in w (Ww = 1 without w-stacking).
    w0, dw : first plane's w and the plane spacing (wavelengths).
    nshift : centre of the ``n - 1`` range applied per sample (0 without w-stacking).
    wkernel : ``"es"`` (the ES kernel in w) or ``"cheb"`` (the w-term's Chebyshev
        expansion, radimg/kernels/wcheb.py: ``Ww = nplanes`` terms, every sample on all of
        them with weight ``T_p(mu)``, placed by ``w0``, ``dw`` so that its first plane is 0).
    """

    nxp: int
    nyp: int
    W: int
    beta: float
    xscale: float
    yscale: float
    nplanes: int = 1
    Ww: int = 1
    betaw: float = 0.0
    w0: float = 0.0
    dw: float = 1.0
    nshift: float = 0.0
    wkernel: str = "es"

    @property
    def wstack(self) -> bool:
        return self.Ww > 1


class SampleLayout(NamedTuple):
    """Sorted sample index and tile bookkeeping (see module docstring).

    idx : int64 (nsel,) flat sample indices ``row * nchan + chan``, sorted by tile colour,
        tile, first plane.
    p0 : int32 (nsel,) first w-plane each sample touches (0 in 2-D).
    slot_start : int64 (ntiles + 1,) start of each tile's run in ``idx`` (tiles in colour order).
    slot_pmin, slot_pmax : int32 (ntiles,) first/last plane any sample of the tile touches.
    slot_tile : int32 (ntiles, 2) tile coordinates ``(ty, tx)`` of each slot.
    colour_start : int64 (5,) slot range of each of the 4 colours.
    ybounds, xbounds : int64 (nty + 1,), (ntx + 1,) tile boundaries in grid cells.
    nchan : int
    """

    idx: np.ndarray
    p0: np.ndarray
    slot_start: np.ndarray
    slot_pmin: np.ndarray
    slot_pmax: np.ndarray
    slot_tile: np.ndarray
    colour_start: np.ndarray
    ybounds: np.ndarray
    xbounds: np.ndarray
    nchan: int

    @property
    def nsamples(self) -> int:
        return int(self.idx.size)


def tile_bounds(n, W, tile):
    """Even number of tiles, each at least max(W, tile) cells (one tile if n is too small)."""
    t = max(W, tile)
    nt = 2 * (n // (2 * t))
    if nt < 2:
        return np.array([0, n], dtype=np.int64)
    return (np.arange(nt + 1, dtype=np.int64) * n) // nt


def _set_threads(nthreads):
    nthreads = int(nthreads) if nthreads else numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(max(1, min(nthreads, numba.config.NUMBA_NUM_THREADS)))


# ----------------------------------------------------------------------------- layout

# shared with the CUDA twins (radimg/kernels/scalar.py)
_sample_uvw = _scalar.CPU.sample_uvw


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _layout_keys_kernel(uvw, fscale, cand, spec_f, spec_i, ytile, xtile, ntx, slot_of_tile):
    # spec_f = (xscale, yscale, w0, dw); spec_i = (nxp, nyp, W, Ww, nplanes)
    xscale, yscale, w0, dw = spec_f[0], spec_f[1], spec_f[2], spec_f[3]
    nxp, nyp, W, Ww, nplanes = spec_i[0], spec_i[1], spec_i[2], spec_i[3], spec_i[4]
    nchan = fscale.size
    n = cand.size
    slot = np.empty(n, dtype=np.int64)
    p0 = np.empty(n, dtype=np.int32)
    halfW = 0.5 * W
    halfWw = 0.5 * Ww
    for k in numba.prange(n):
        _, _, _, u, v, w = _sample_uvw(uvw, fscale, nchan, cand[k])
        jx0 = int(math.floor(u * xscale - halfW)) + 1
        jy0 = int(math.floor(v * yscale - halfW)) + 1
        jx0 %= nxp
        jy0 %= nyp
        if Ww > 1:
            q = int(math.floor((w - w0) / dw - halfWw)) + 1
            q = min(max(q, 0), nplanes - Ww)
        else:
            q = 0
        p0[k] = q
        slot[k] = slot_of_tile[ytile[jy0] * ntx + xtile[jx0]]
    return slot, p0


@numba.njit(**JIT_OPTIONS)
def _slot_ranges_kernel(slot_sorted, p0_sorted, nslots, Ww):
    start = np.zeros(nslots + 1, dtype=np.int64)
    pmin = np.full(nslots, 2**30, dtype=np.int32)
    pmax = np.full(nslots, -1, dtype=np.int32)
    for k in range(slot_sorted.size):
        s = slot_sorted[k]
        start[s + 1] += 1
        q = p0_sorted[k]
        if q < pmin[s]:
            pmin[s] = q
        if q + Ww - 1 > pmax[s]:
            pmax[s] = q + Ww - 1
    for s in range(nslots):
        start[s + 1] += start[s]
    return start, pmin, pmax


@numba.njit(**JIT_OPTIONS)
def _stable_counting_pass(keys, nkeys, src):
    """The indices ``src`` reordered stably by ``keys[src]`` (integers in [0, nkeys))."""
    cnt = np.zeros(nkeys + 1, dtype=np.int64)
    for j in range(src.size):
        cnt[keys[src[j]] + 1] += 1
    for k in range(nkeys):
        cnt[k + 1] += cnt[k]
    out = np.empty(src.size, dtype=np.int64)
    for j in range(src.size):
        i = src[j]
        q = keys[i]
        out[cnt[q]] = i
        cnt[q] += 1
    return out


@numba.njit(**JIT_OPTIONS)
def _order_by_slot_plane(slot, p0, nslots, nplanes):
    """``np.argsort(slot * nplanes + p0, kind="stable")`` by two stable counting passes (by
    ``p0``, then by ``slot``): O(n + nslots + nplanes) instead of a comparison sort. 10 M
    samples (bench_operator case a): ~0.4 s against 1.2-1.5 s; the same order."""
    by_plane = _stable_counting_pass(p0, nplanes, np.arange(slot.size))
    return _stable_counting_pass(slot, nslots, by_plane)


def make_layout(uvw, freq, spec: GridSpec, *, mask=None, idx=None, tile=TILE_MIN, nthreads=1):
    """Sort the selected samples into race-free tile order for :func:`grid_plane`.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres.
    freq : ndarray (chan,) float64, Hz.
    spec : GridSpec
    mask : ndarray (row, chan) bool, optional
        True where a sample is used; samples outside it are never touched (they cost nothing).
    idx : ndarray (nsel,) int, optional
        Flat indices ``row * nchan + chan`` of the subset to lay out (e.g. one rank's share);
        combined with ``mask`` when both are given.
    tile : int
        Minimum tile size in cells (raised to the kernel support).

    Returns
    -------
    SampleLayout
    """
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
    nrow, nchan = uvw.shape[0], freq.size
    if idx is None:
        cand = np.arange(nrow * nchan, dtype=np.int64)
    else:
        cand = np.ascontiguousarray(idx, dtype=np.int64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        cand = cand[mask[cand]]
    _set_threads(nthreads)
    ybounds = tile_bounds(spec.nyp, spec.W, tile)
    xbounds = tile_bounds(spec.nxp, spec.W, tile)
    nty, ntx = ybounds.size - 1, xbounds.size - 1
    ytile = np.repeat(np.arange(nty, dtype=np.int64), np.diff(ybounds))
    xtile = np.repeat(np.arange(ntx, dtype=np.int64), np.diff(xbounds))
    ty, tx = np.meshgrid(np.arange(nty), np.arange(ntx), indexing="ij")
    colour = ((ty % 2) * 2 + (tx % 2)).ravel()
    tile_order = np.argsort(colour, kind="stable")  # slot -> tile id
    slot_of_tile = np.empty_like(tile_order)
    slot_of_tile[tile_order] = np.arange(tile_order.size)
    colour_start = np.searchsorted(colour[tile_order], np.arange(5)).astype(np.int64)
    slot_tile = np.stack([ty.ravel()[tile_order], tx.ravel()[tile_order]], axis=1).astype(np.int32)

    spec_f = np.array([spec.xscale, spec.yscale, spec.w0, spec.dw], dtype=np.float64)
    spec_i = np.array([spec.nxp, spec.nyp, spec.W, spec.Ww, spec.nplanes], dtype=np.int64)
    fscale = freq / C_LIGHT
    slot, p0 = _layout_keys_kernel(uvw, fscale, cand, spec_f, spec_i, ytile, xtile, ntx,
                                   slot_of_tile.astype(np.int64))
    order = _order_by_slot_plane(slot, p0, tile_order.size, spec.nplanes)
    idx_sorted = cand[order]
    p0_sorted = p0[order]
    start, pmin, pmax = _slot_ranges_kernel(slot[order], p0_sorted, tile_order.size, spec.Ww)
    return SampleLayout(idx_sorted, p0_sorted, start, pmin, pmax, slot_tile, colour_start,
                        ybounds, xbounds, nchan)


def touched_tiles(layout: SampleLayout, p: int):
    """Boolean ``(nty, ntx)`` map of the grid tiles that the layout's samples touch on plane p.

    A tile's samples spill into the next tile along each axis (cyclically), so those count too.
    ``layout.ybounds`` / ``layout.xbounds`` give the tiles' cell ranges.
    """
    nty, ntx = layout.ybounds.size - 1, layout.xbounds.size - 1
    out = np.zeros((nty, ntx), dtype=bool)
    live = (layout.slot_pmin <= p) & (layout.slot_pmax >= p)
    live &= np.diff(layout.slot_start) > 0
    ty, tx = layout.slot_tile[live, 0], layout.slot_tile[live, 1]
    for dy in (0, 1):
        for dx in (0, 1):
            out[(ty + dy) % nty, (tx + dx) % ntx] = True
    return out


def plane_tiles(layout: SampleLayout, nplanes: int):
    """(rows, cols): boolean ``(nplanes, nty)`` and ``(nplanes, ntx)`` maps of the tile rows
    and tile columns the layout's samples touch on each plane (:func:`touched_tiles`
    projected on each axis, for every plane at once)."""
    nty, ntx = layout.ybounds.size - 1, layout.xbounds.size - 1
    live = np.diff(layout.slot_start) > 0
    pmin = layout.slot_pmin[live].astype(np.int64)
    pmax = layout.slot_pmax[live].astype(np.int64)

    def spans(t, nt):
        d = np.zeros((nplanes + 1, nt), dtype=np.int64)
        for off in (0, 1):  # a tile's samples spill into the next tile (cyclically)
            tt = (t.astype(np.int64) + off) % nt
            np.add.at(d, (pmin, tt), 1)
            np.add.at(d, (pmax + 1, tt), -1)
        return np.cumsum(d, axis=0)[:nplanes] > 0

    return spans(layout.slot_tile[live, 0], nty), spans(layout.slot_tile[live, 1], ntx)


# ----------------------------------------------------------------------------- grid / degrid
#
# Kernel weights come from the piecewise polynomials of radimg.kernels.es (es_poly_coeffs):
# per sample and axis, W Horner evaluations of degree D that vectorise across the taps. The
# grid is addressed through its interleaved real view (re, im, re, im, ...), so one kernel row
# is a contiguous axpy of length 2 W; the cyclic wrap is handled per row (no modulo per tap).


@numba.njit(**JIT_OPTIONS)
def _first_above(p0, a, b, x):
    """First index in [a, b] with p0[index] > x (p0[a:b] sorted): ``a + searchsorted(p0[a:b], x,
    side="right")``, written out because numba's ``searchsorted`` lives in ``numba.np.arraymath``,
    whose import (with scipy.linalg for its BLAS check) costs every rank 0.1 s when a cached
    kernel that uses it is loaded."""
    while a < b:
        m = (a + b) >> 1
        if p0[m] > x:
            b = m
        else:
            a = m + 1
    return a


@numba.njit(**JIT_OPTIONS)
def _run_for_plane(p0, a, b, p, Ww):
    """[lo, hi) of samples in p0[a:b] (sorted) with p - Ww + 1 <= p0 <= p (integers)."""
    return _first_above(p0, a, b, p - Ww), _first_above(p0, a, b, p)


@numba.njit(**JIT_OPTIONS)
def _taps(coef, W, g, out):
    """Kernel weights of the W cells from floor(g - W/2) + 1 into ``out``; returns that cell.

    ``coef`` is the pair (even, odd) of :func:`radimg.kernels.es.es_poly_even_odd`: the kernel
    is even, so mirrored taps share one evaluation (half the multiply-adds, in mu^2)."""
    even, odd = coef
    halfW = 0.5 * W
    f0 = math.floor(g - halfW) + 1.0
    mu = 2.0 * (f0 - g + halfW) - 1.0
    mu2 = mu * mu
    nh = even.shape[1]
    for a in range(nh):
        out[a] = even[0, a]
    for a in range(W - nh):  # odd W: the middle tap is even, no odd part
        out[W - 1 - a] = odd[0, a]
    for d in range(1, even.shape[0]):
        for a in range(nh):
            out[a] = out[a] * mu2 + even[d, a]
    for d in range(1, odd.shape[0]):
        for a in range(W - nh):
            out[W - 1 - a] = out[W - 1 - a] * mu2 + odd[d, a]
    for a in range(W - nh):
        e = out[a]
        o = mu * out[W - 1 - a]
        out[a] = e + o
        out[W - 1 - a] = e - o
    return int(f0)


@numba.njit(**JIT_OPTIONS)
def _wtap(coefw, Ww, gw, p):
    """Kernel weight of plane p for a sample at continuous plane position gw (0 outside)."""
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




# ------------------------------------------------------------------ prepared (sorted) path
#
# An operator application grids or degrids every sample on Ww planes. Gathering uvw and vis
# through the random flat index (an integer division and two cache misses per sample and
# plane), the reflection and the w-shift phase (a sincos) are hoisted out of the plane loop:
# :func:`prepare_samples` writes grid coordinates (and, for gridding, the prepared values) in
# layout order once; the per-plane kernels stream through them.


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _prepare_samples_kernel(uvw, fscale, idx, spec_f, wstack, vis, weight, use_weight,
                            with_vis, coords, vals):
    nchan = fscale.size
    xscale, yscale, w0, dw, nshift = spec_f[0], spec_f[1], spec_f[4], spec_f[5], spec_f[6]
    for k in numba.prange(idx.size):
        row, ch, flip, u, v, w = _sample_uvw(uvw, fscale, nchan, idx[k])
        coords[k, 0] = u * xscale
        coords[k, 1] = v * yscale
        coords[k, 2] = (w - w0) / dw if wstack else 0.0
        if with_vis:
            val = complex(vis[row, ch])
            if use_weight:
                val *= weight[row, ch]
            if flip:
                val = val.conjugate()
            if wstack and nshift != 0.0:
                cs, sn = cis_cycles(w * nshift)
                val *= complex(cs, -sn)
            vals[k] = val


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _finish_samples_kernel(uvw, fscale, idx, spec_f, wstack, acc, out):
    nchan = fscale.size
    nshift = spec_f[6]
    for k in numba.prange(idx.size):
        row, ch, flip, u, v, w = _sample_uvw(uvw, fscale, nchan, idx[k])
        val = complex(acc[k])
        if wstack and nshift != 0.0:
            cs, sn = cis_cycles(w * nshift)
            val *= complex(cs, sn)
        if flip:
            val = val.conjugate()
        out[row, ch] += val


def prepare_samples(layout: SampleLayout, spec: GridSpec, uvw, freq, vis=None, weight=None,
                    nthreads=1):
    """Grid coordinates ``(nsel, 3)`` float64 (cells, cells, planes) of the layout's samples
    in layout order, and with ``vis`` their values (times ``weight``, reflected, w-shift
    phase applied) as ``(nsel,)`` complex of vis's precision (else None)."""
    nsel = layout.idx.size
    coords = np.empty((nsel, 3), dtype=np.float64)
    with_vis = vis is not None
    vals = np.empty(nsel if with_vis else 1,
                    dtype=_complex_dtype(vis.dtype) if with_vis else np.complex128)
    use_weight = weight is not None
    wgt = weight if use_weight else np.ones((1, 1), dtype=np.float64)
    visa = vis if with_vis else np.zeros((1, 1), dtype=np.complex128)
    _set_threads(nthreads)
    _prepare_samples_kernel(uvw, np.asarray(freq, np.float64) / C_LIGHT, layout.idx,
                            _spec_f(spec), spec.wstack, visa, wgt, use_weight, with_vis, coords,
                            vals)
    return coords, (vals if with_vis else None)


def finish_samples(layout: SampleLayout, spec: GridSpec, uvw, freq, acc, out, nthreads=1):
    """``out[row, chan] += `` the degridded sums ``acc`` (layout order) with the w-shift phase
    and reflection applied."""
    _set_threads(nthreads)
    _finish_samples_kernel(uvw, np.asarray(freq, np.float64) / C_LIGHT, layout.idx,
                           _spec_f(spec), spec.wstack, acc, out)
    return out


# Compile-time support (issue #13 item 3): :func:`sorted_kernels` makes, per support ``W``,
# w support ``Ww`` and polynomial row counts ``De``, ``Do``, one grid and one degrid kernel in
# which these are compile-time constants (closure constants; numba caches each variant on
# disk), as ducc0 does with templates. With constant trip counts the tap polynomials unroll
# and a kernel row (2 W reals, interleaved re/im) is a fixed-length axpy that LLVM turns into
# vector FMAs / muls; tests/test_gridder.py checks the compiled code holds vector
# instructions for W >= 9; rows of W <= 8 are unrolled instead, faster there (see
# CONST_ROWS in :func:`sorted_kernels`: 2.5-3x at W = 7, 8). (``numba.literally``
# arguments did the same but cost ~0.1 s of dispatch per call, every plane.)


@numba.njit(inline="always", **JIT_OPTIONS)
def _taps_c(even, odd, W, De, Do, g, out):
    """:func:`_taps` for a compile-time ``W`` and row counts ``De``, ``Do`` of the even / odd
    coefficient tables (all loops have constant trip counts)."""
    halfW = 0.5 * W
    f0 = math.floor(g - halfW) + 1.0
    mu = 2.0 * (f0 - g + halfW) - 1.0
    mu2 = mu * mu
    nh = (W + 1) // 2
    no = W - nh
    for a in range(nh):
        out[a] = even[0, a]
    for d in range(1, De):
        for a in range(nh):
            out[a] = out[a] * mu2 + even[d, a]
    for a in range(no):
        out[W - 1 - a] = odd[0, a]
    for d in range(1, Do):
        for a in range(no):
            out[W - 1 - a] = out[W - 1 - a] * mu2 + odd[d, a]
    for a in range(no):
        e = out[a]
        o = mu * out[W - 1 - a]
        out[a] = e + o
        out[W - 1 - a] = e - o
    return int(f0)


@numba.njit(**JIT_OPTIONS)
def _row_axpy(gr, ju, xu, ka, k2):
    """``gr[ju, xu + q] += ka * k2[q]``: one kernel row onto the grid's interleaved real view.
    Unsigned indices (no negative-index select) and a run-time trip count let LLVM vectorise
    it with run-time alias checks (the grid kernel's rows for W >= 9)."""
    for q in range(k2.size):
        gr[ju, xu + numba.uint64(q)] += ka * k2[q]


@numba.njit(**JIT_OPTIONS)
def _row_dot(gr, ju, xu, ka, acc2):
    """``acc2[q] += ka * gr[ju, xu + q]`` (degridding's row): unsigned indices (no
    negative-index select) and a run-time trip count; LLVM vectorises it with run-time alias
    checks."""
    for q in range(acc2.size):
        acc2[q] += ka * gr[ju, xu + numba.uint64(q)]


@functools.cache
def sorted_kernels(W, Ww, De, Do, parallel=True, cache=True):
    """``(grid, degrid)`` kernels of the prepared path compiled for support ``W``, w support
    ``Ww`` and ``De`` / ``Do`` rows of the even / odd tap polynomials (see above).
    ``parallel=False, cache=False``: the same code without threads, compiled in this process
    (numba compiles a ``prange`` body as a separate function, and a variant loaded from the
    disk cache carries no LLVM IR): the variant whose IR tests inspect.

    Long because the two kernels are closures over the same compile-time constants (W, Ww,
    De, Do, CONST_ROWS) and are read side by side (the degrid kernel is the grid kernel's
    adjoint, line for line); each is under the length limit on its own."""
    W, Ww, De, Do = int(W), int(Ww), int(De), int(Do)
    W2 = 2 * W
    # Grid rows of W <= 8 as a compile-time-count loop (unrolled), wider ones as the
    # run-time-count axpy that LLVM vectorises behind alias checks: that loop's vector body
    # (8 floats or 4 doubles, interleaved) never runs for rows of 14-16 reals, which then
    # went through its scalar remainder. Measured, one thread, 1e6 samples per plane, ns per
    # sample (single / double), unrolled vs vectorised: W 7: 65/64 vs 158/132, W 8: 86/78 vs
    # 214/211, W 9: 102/97 vs 80/81, W 12: 152/153 vs 107/113; equal images to the bit.
    CONST_ROWS = W <= 8
    opts = dict(PARALLEL_JIT_OPTIONS if parallel else JIT_OPTIONS, cache=bool(cache))

    @numba.njit(**opts)
    def grid_kernel(coords, vals, p0, slot_start, slot_pmin, slot_pmax, colour_start, p, coef,
                    coefw, gr):
        even, odd = coef
        nyp = gr.shape[0]
        nxp = gr.shape[1] // 2
        for c in range(4):
            for s in numba.prange(colour_start[c], colour_start[c + 1]):
                if slot_pmin[s] > p or slot_pmax[s] < p:
                    continue
                lo, hi = _run_for_plane(p0, slot_start[s], slot_start[s + 1], p, Ww)
                if lo >= hi:
                    continue
                ku = np.empty(W)
                kv = np.empty(W)
                kvg = np.empty(W, dtype=gr.dtype)  # kv in the grid's precision (row axpys)
                kx2 = np.empty(W2, dtype=gr.dtype)
                for k in range(lo, hi):
                    kw = 1.0
                    if Ww > 1:
                        kw = _wtap(coefw, Ww, coords[k, 2], p)
                        if kw == 0.0:
                            continue
                    val = vals[k] * kw
                    jx0 = _taps_c(even, odd, W, De, Do, coords[k, 0], ku) % nxp
                    jy = _taps_c(even, odd, W, De, Do, coords[k, 1], kv) % nyp
                    vr, vi = val.real, val.imag
                    for b in range(W):
                        kx2[2 * b] = vr * ku[b]
                        kx2[2 * b + 1] = vi * ku[b]
                    x0 = 2 * jx0
                    if x0 + W2 <= 2 * nxp and CONST_ROWS:  # no wrap, W <= 8
                        # a row of 2W reals with a compile-time count through a 1-D view of
                        # the grid row, unrolled by LLVM (see CONST_ROWS)
                        for a in range(W):
                            kvg[a] = kv[a]
                        for a in range(W):
                            ka = kvg[a]
                            row = gr[jy]
                            for q in range(W2):
                                row[x0 + q] += ka * kx2[q]
                            jy += 1
                            if jy == nyp:
                                jy = 0
                    elif x0 + W2 <= 2 * nxp:  # no wrap, W >= 9
                        # unsigned indices (no negative-index wrap select) and a run-time
                        # trip count: LLVM vectorises the row with run-time alias checks
                        xu = numba.uint64(x0)
                        for a in range(W):
                            kvg[a] = kv[a]
                        for a in range(W):
                            _row_axpy(gr, numba.uint64(jy), xu, kvg[a], kx2)
                            jy += 1
                            if jy == nyp:
                                jy = 0
                    else:
                        nfirst = 2 * nxp - x0
                        for a in range(W):
                            ka = kv[a]
                            for q in range(nfirst):
                                gr[jy, x0 + q] += ka * kx2[q]
                            for q in range(nfirst, W2):
                                gr[jy, q - nfirst] += ka * kx2[q]
                            jy += 1
                            if jy == nyp:
                                jy = 0

    @numba.njit(**opts)
    def degrid_kernel(coords, gr, p0, slot_start, slot_pmin, slot_pmax, p, coef, coefw, acc):
        even, odd = coef
        nyp = gr.shape[0]
        nxp = gr.shape[1] // 2
        nslots = slot_start.size - 1
        for s in numba.prange(nslots):
            if slot_pmin[s] > p or slot_pmax[s] < p:
                continue
            lo, hi = _run_for_plane(p0, slot_start[s], slot_start[s + 1], p, Ww)
            if lo >= hi:
                continue
            ku = np.empty(W)
            kv = np.empty(W)
            kvg = np.empty(W, dtype=gr.dtype)
            acc2 = np.empty(W2, dtype=gr.dtype)
            for k in range(lo, hi):
                kw = 1.0
                if Ww > 1:
                    kw = _wtap(coefw, Ww, coords[k, 2], p)
                    if kw == 0.0:
                        continue
                jx0 = _taps_c(even, odd, W, De, Do, coords[k, 0], ku) % nxp
                jy = _taps_c(even, odd, W, De, Do, coords[k, 1], kv) % nyp
                x0 = 2 * jx0
                for q in range(W2):
                    acc2[q] = 0.0
                if x0 + W2 <= 2 * nxp:  # no wrap
                    # the row as a run-time-count loop (:func:`_row_dot`): here it is the
                    # faster form (75 against 91 ns per sample and plane at W = 7 for the
                    # compile-time count that the grid kernel's rows use)
                    xu = numba.uint64(x0)
                    for a in range(W):
                        kvg[a] = kv[a]
                    for a in range(W):
                        _row_dot(gr, numba.uint64(jy), xu, kvg[a], acc2)
                        jy += 1
                        if jy == nyp:
                            jy = 0
                else:
                    nfirst = 2 * nxp - x0
                    for a in range(W):
                        ka = kv[a]
                        for q in range(nfirst):
                            acc2[q] += ka * gr[jy, x0 + q]
                        for q in range(nfirst, W2):
                            acc2[q] += ka * gr[jy, q - nfirst]
                        jy += 1
                        if jy == nyp:
                            jy = 0
                re = 0.0
                im = 0.0
                for b in range(W):
                    re += acc2[2 * b] * ku[b]
                    im += acc2[2 * b + 1] * ku[b]
                acc[k] += complex(re * kw, im * kw)

    return grid_kernel, degrid_kernel


def _spec_kernels(spec: GridSpec):
    coef, coefw = _coefs(spec)
    return coef, coefw, sorted_kernels(spec.W, spec.Ww, coef[0].shape[0], coef[1].shape[0])


def grid_plane_prepared(layout: SampleLayout, spec: GridSpec, coords, vals, p, out,
                        nthreads=1):
    """:func:`grid_plane` from :func:`prepare_samples` output (adds into ``out``)."""
    coef, coefw, (kernel, _) = _spec_kernels(spec)
    _set_threads(nthreads)
    kernel(coords, vals, layout.p0, layout.slot_start, layout.slot_pmin, layout.slot_pmax,
           layout.colour_start, int(p), coef, coefw, _real_view(out))
    return out


def degrid_plane_prepared(layout: SampleLayout, spec: GridSpec, coords, grid, p, acc,
                          nthreads=1):
    """Add plane ``p``'s kernel sums to ``acc`` (nsel,) complex in layout order (finish with
    :func:`finish_samples`)."""
    coef, coefw, (_, kernel) = _spec_kernels(spec)
    _set_threads(nthreads)
    kernel(coords, _real_view(np.ascontiguousarray(grid)), layout.p0, layout.slot_start,
           layout.slot_pmin, layout.slot_pmax, int(p), coef, coefw, acc)
    return acc


def _spec_f(spec: GridSpec):
    return np.array([spec.xscale, spec.yscale, spec.beta, spec.betaw, spec.w0, spec.dw,
                     spec.nshift], dtype=np.float64)


def _coefs(spec: GridSpec):
    """The u, v tap tables and the w-tap table (:func:`_wtap`'s Horner rows): the ES
    kernel's, or with ``wkernel == "cheb"`` the Chebyshev polynomials' (every sample's tap
    ``a`` is then plane ``a`` and ``mu`` its position in the w range)."""
    coef = es_poly_even_odd(spec.W, spec.beta)
    if spec.Ww <= 1:
        coefw = np.ones((1, 1))
    elif spec.wkernel == "cheb":
        coefw = monomial_table(spec.Ww)
    else:
        coefw = es_poly_coeffs(spec.Ww, spec.betaw)
    return coef, coefw


def _real_view(grid):
    return grid.view(np.float32 if grid.dtype == np.complex64 else np.float64)


def _complex_dtype(dt):
    return np.complex64 if np.dtype(dt) in (np.complex64, np.float32) else np.complex128


def grid_plane(layout: SampleLayout, spec: GridSpec, uvw, freq, vis, p=0, *, weight=None,
               out=None, nthreads=1):
    """Grid the layout's samples that touch w-plane ``p`` (adjoint of :func:`degrid_plane`).

    One plane through the prepared path (:func:`prepare_samples` + :func:`grid_plane_prepared`);
    an operator applying many planes prepares once and calls the latter per plane.

    Parameters
    ----------
    layout : SampleLayout from :func:`make_layout` (any index subset of the samples).
    spec : GridSpec
    uvw : ndarray (row, 3) float64, metres.
    freq : ndarray (chan,) float64, Hz.
    vis : ndarray (row, chan) complex64 | complex128; its dtype sets the grid precision.
    p : int, plane index (0 without w-stacking).
    weight : ndarray (row, chan) float, optional; multiplies vis.
    out : ndarray (nyp, nxp) complex, optional; the samples are *added* to it.
    nthreads : int

    Returns
    -------
    ndarray (nyp, nxp) complex64 | complex128
    """
    cdt = _complex_dtype(vis.dtype)
    if out is None:
        out = np.zeros((spec.nyp, spec.nxp), dtype=cdt)
    if out.shape != (spec.nyp, spec.nxp) or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous (nyp, nxp) array")
    coords, vals = prepare_samples(layout, spec, uvw, freq, vis, weight, nthreads)
    return grid_plane_prepared(layout, spec, coords, vals.astype(out.dtype, copy=False), p, out,
                               nthreads)


def degrid_plane(layout: SampleLayout, spec: GridSpec, uvw, freq, grid, p=0, *, out=None,
                 nthreads=1):
    """Degrid plane ``p`` at the layout's samples, *adding* to ``out`` (row, chan).

    ``out`` defaults to zeros of the grid's complex dtype; samples outside the layout are left
    untouched. One plane through the prepared path (:func:`prepare_samples`,
    :func:`degrid_plane_prepared`, :func:`finish_samples`).
    """
    nrow, nchan = uvw.shape[0], np.atleast_1d(freq).size
    if out is None:
        out = np.zeros((nrow, nchan), dtype=grid.dtype)
    coords, _ = prepare_samples(layout, spec, uvw, freq, nthreads=nthreads)
    acc = np.zeros(layout.idx.size, dtype=_complex_dtype(grid.dtype))
    degrid_plane_prepared(layout, spec, coords, grid, p, acc, nthreads)
    return finish_samples(layout, spec, uvw, freq, acc, out, nthreads)


# ----------------------------------------------------------------------------- image domain


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _plane_to_image_kernel(fgrid, cell_x, cell_y, wp, nshift, acc):
    """acc[iy, ix] += Re[fgrid[iy' mod nyp, ix' mod nxp] * exp(-2 pi i wp (n - 1 - nshift))]."""
    ny, nx = acc.shape
    nyp, nxp = fgrid.shape
    cropped = nyp == ny and nxp == nx  # already cut to the image, in image order
    twopi = 2.0 * math.pi
    for iy in numba.prange(ny):
        dy = iy - ny // 2
        m = dy * cell_y
        jy = (dy + ny // 2) if cropped else dy % nyp
        for ix in range(nx):
            dx = ix - nx // 2
            l = -dx * cell_x
            val = fgrid[jy, (dx + nx // 2) if cropped else dx % nxp]
            if wp != 0.0:
                nm1 = math.sqrt(1.0 - l * l - m * m) - 1.0 - nshift
                ph = twopi * wp * nm1
                acc[iy, ix] += val.real * math.cos(ph) + val.imag * math.sin(ph)
            else:
                acc[iy, ix] += val.real


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _image_to_plane_kernel(img, cell_x, cell_y, wp, nshift, grid):
    """grid[iy' mod nyp, ix' mod nxp] = img[iy, ix] * exp(+2 pi i wp (n - 1 - nshift)); rest 0."""
    ny, nx = img.shape
    nyp, nxp = grid.shape
    cropped = nyp == ny and nxp == nx  # write in image order, no padding
    twopi = 2.0 * math.pi
    if not cropped:
        for jy in numba.prange(nyp):
            for jx in range(nxp):
                grid[jy, jx] = 0.0
    for iy in numba.prange(ny):
        dy = iy - ny // 2
        m = dy * cell_y
        jy = (dy + ny // 2) if cropped else dy % nyp
        for ix in range(nx):
            dx = ix - nx // 2
            l = -dx * cell_x
            jx = (dx + nx // 2) if cropped else dx % nxp
            val = img[iy, ix]
            if wp != 0.0:
                nm1 = math.sqrt(1.0 - l * l - m * m) - 1.0 - nshift
                ph = twopi * wp * nm1
                grid[jy, jx] = complex(val * math.cos(ph), val * math.sin(ph))
            else:
                grid[jy, jx] = val


def plane_to_image(fgrid, cell_x, cell_y, wp, nshift, acc, nthreads=1):
    """Add the real part of the chirped, cropped inverse-FFT plane to ``acc`` (ny, nx) float64.

    ``fgrid`` is the padded (nyp, nxp) transform, or already cropped to (ny, nx) in image order.
    """
    _set_threads(nthreads)
    _plane_to_image_kernel(fgrid, float(cell_x), float(cell_y), float(wp), float(nshift), acc)
    return acc


def image_to_plane(img, cell_x, cell_y, wp, nshift, grid, nthreads=1):
    """Write the chirped image into the centre (cyclically) of the zeroed padded ``grid``, or
    straight into a (ny, nx) complex array in image order."""
    _set_threads(nthreads)
    _image_to_plane_kernel(img, float(cell_x), float(cell_y), float(wp), float(nshift), grid)
    return grid


# ----------------------------------------------------------------------------- chirp
#
# The w-screen exp(-2 pi i w_p (n - 1 - nshift)) depends on l^2 and m^2 only, so it is held on
# one quadrant ``(ny // 2 + 1, nx // 2 + 1)`` of |dy|, |dx| and read for all four. Across
# planes w_p = w0 + p dw it follows the recurrence P_{p+1} = P_p * exp(-2 pi i dw c) (complex
# multiplies instead of sincos per pixel and plane).


@numba.njit(inline="always", **JIT_OPTIONS)
def _c_at(ax, ay, cell_x, cell_y, nshift):
    """``c = n - 1 - nshift`` at quadrant offset ``(ay, ax)``: the one expression every
    w-screen kernel uses (so they agree to the bit)."""
    l = ax * cell_x
    m = ay * cell_y
    return math.sqrt(1.0 - l * l - m * m) - 1.0 - nshift


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _quadrant_c_kernel(ny, nx, cell_x, cell_y, nshift, out):
    qy, qx = out.shape
    for ay in numba.prange(qy):
        for ax in range(qx):
            out[ay, ax] = _c_at(ax, ay, cell_x, cell_y, nshift)


def quadrant_c(ny, nx, cell_x, cell_y, nshift, nthreads=1):
    """``n - 1 - nshift`` at ``|dy|, |dx|`` = (0 .. ny // 2, 0 .. nx // 2), float64."""
    out = np.empty((ny // 2 + 1, nx // 2 + 1), dtype=np.float64)
    _set_threads(nthreads)
    _quadrant_c_kernel(ny, nx, float(cell_x), float(cell_y), float(nshift), out)
    return out


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _phasor_kernel(cq, w, out):
    qy, qx = cq.shape
    for ay in numba.prange(qy):
        cr = np.empty(qx)
        ci = np.empty(qx)
        for ax in range(qx):  # vectorised (radimg.kernels.trig.cis_cycles)
            cr[ax], ci[ax] = cis_cycles(w * cq[ay, ax])
        for ax in range(qx):
            out[ay, ax] = complex(cr[ax], -ci[ax])


def phasor(cq, w, out=None, nthreads=1):
    """Quadrant of ``exp(-2 pi i w c)`` (complex128) for ``c`` from :func:`quadrant_c`."""
    if out is None:
        out = np.empty(cq.shape, dtype=np.complex128)
    _set_threads(nthreads)
    _phasor_kernel(cq, float(w), out)
    return out


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _phasor_mul_kernel(ph, step):
    qy, qx = ph.shape
    for ay in numba.prange(qy):
        for ax in range(qx):
            ph[ay, ax] *= step[ay, ax]


def phasor_mul(ph, step, nthreads=1):
    _set_threads(nthreads)
    _phasor_mul_kernel(ph, step)
    return ph


def _rowmap(ny, nr):
    """Row of image row iy in an (nr, nx) array: iy itself, or (iy - ny // 2) mod nr."""
    iy = np.arange(ny, dtype=np.int64)
    return iy if nr == ny else (iy - ny // 2) % nr


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _chirp_adjoint_kernel(fg, ph, use_ph, step, use_step, rowmap, colmap, acc, zero):
    """Quadrant row ``ay`` serves image rows cy - ay and cy + ay, quadrant column ``ax``
    image columns cx - ax and cx + ax: each screen value is read once per plane and, with
    ``use_step``, advanced to the next plane in the same pass. ``zero``: every cell read is
    set to 0 (the caller zeroes the rest of the grid, not the whole of it)."""
    ny, nx = acc.shape
    cy, cx = ny // 2, nx // 2
    qy = max(cy, ny - 1 - cy) + 1
    qx = max(cx, nx - 1 - cx) + 1
    for ay in numba.prange(qy):
        for side in range(2):
            iy = cy - ay if side == 0 else cy + ay
            if iy < 0 or iy >= ny or (side == 1 and ay == 0):
                continue
            jy = rowmap[iy]
            for ax in range(qx):
                p = ph[ay, ax] if use_ph else complex(1.0, 0.0)
                ix = cx - ax
                if ix >= 0:
                    val = fg[jy, colmap[ix]]
                    acc[iy, ix] += val.real * p.real - val.imag * p.imag
                    if zero:
                        fg[jy, colmap[ix]] = 0
                ix = cx + ax
                if ax > 0 and ix < nx:
                    val = fg[jy, colmap[ix]]
                    acc[iy, ix] += val.real * p.real - val.imag * p.imag
                    if zero:
                        fg[jy, colmap[ix]] = 0
        if use_step:
            for ax in range(qx):
                ph[ay, ax] *= step[ay, ax]


def chirp_adjoint(fg, ph, acc, nthreads=1, step=None, zero=False):
    """``acc += Re(fg * P)``: fg (ny, nx) complex in image order, or larger (padded): image
    pixel ``(iy, ix)`` at ``((iy - ny // 2) mod nyp, (ix - nx // 2) mod nxp)`` per axis whose
    size differs; ``P`` a quadrant from :func:`phasor` (None: no w-screen). ``step``: then
    ``P *= step`` in place (the next plane's screen). ``zero``: the cells of ``fg`` read
    are set to 0 as they are read."""
    _set_threads(nthreads)
    use = ph is not None
    one = np.ones((1, 1), np.complex128)
    use_step = use and step is not None
    _chirp_adjoint_kernel(fg, ph if use else one, use, step if use_step else one, use_step,
                          _rowmap(acc.shape[0], fg.shape[0]), _rowmap(acc.shape[1], fg.shape[1]),
                          acc, bool(zero))
    return acc


@numba.njit(inline="always", **JIT_OPTIONS)
def _quadrant(ny, nx):
    """Centre ``(cy, cx)`` of an (ny, nx) image and its quadrant's size ``(qy, qx)``."""
    cy, cx = ny // 2, nx // 2
    return cy, cx, max(cy, ny - 1 - cy) + 1, max(cx, nx - 1 - cx) + 1


@numba.njit(inline="always", **JIT_OPTIONS)
def _mirrored_row(ay, side, cy, ny):
    """Image row of quadrant row ``ay`` above (side 0) or below (side 1) the centre, or -1
    where there is none (outside the image; below the centre row itself)."""
    iy = cy - ay if side == 0 else cy + ay
    if iy < 0 or iy >= ny or (side == 1 and ay == 0):
        return -1
    return iy


@numba.njit(inline="always", **JIT_OPTIONS)
def _screen_row(ay, qx, cell_x, cell_y, nshift, w, cr, ci):
    """Row ``ay`` of the quadrant of ``exp(-2 pi i w c)``, ``c = n - 1 - nshift`` computed
    as :func:`_quadrant_c_kernel` computes it (so the same bits): ``cr - i ci``."""
    for ax in range(qx):  # vectorised (radimg.kernels.trig.cis_cycles)
        cr[ax], ci[ax] = cis_cycles(w * _c_at(ax, ay, cell_x, cell_y, nshift))


@numba.njit(inline="always", **JIT_OPTIONS)
def _screen_amp(ay, qx, cell_x, cell_y, nshift, amp, rr, ri, cr, ci):
    """Row ``ay`` of :func:`_screen_row`'s screen times ``(rr + i ri) A(c)``, ``A`` the real
    polynomial ``amp`` in ``c`` (highest power first): a Chebyshev plane's screen
    (radimg/kernels/wcheb.py)."""
    deg = amp.size
    for ax in range(qx):
        c = _c_at(ax, ay, cell_x, cell_y, nshift)
        a = amp[0]
        for d in range(1, deg):
            a = a * c + amp[d]
        x = cr[ax] * rr + ci[ax] * ri  # (cr - i ci)(rr + i ri) = x - i y
        y = ci[ax] * rr - cr[ax] * ri
        cr[ax] = a * x
        ci[ax] = a * y


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _chirp_adjoint_w_kernel(fg, cell_x, cell_y, nshift, w, amp, rr, ri, rowmap, acc, zero):
    """:func:`_chirp_adjoint_kernel` with the screen made row by row of the quadrant as it
    is used (no screen or ``n - 1`` array, one pass over the image); ``zero`` as there.

    Image column ``cx + ax`` is grid column ``ax`` and ``cx - ax`` is ``W - ax`` (``W`` =
    the padded grid's width; an ``fg`` of the image's width is in image order), so each
    image row is read as two contiguous runs (no column map: 22.7 -> 19 ms per plane at
    2880 x 2592 in a 4320 x 3888 grid, one thread, the same sums to the bit)."""
    ny, nx = acc.shape
    cy, cx, qy, qx = _quadrant(ny, nx)
    nr = nx - cx  # image columns cx .. nx - 1
    # fg in image order (its width is the image's, as _rowmap) or padded, FFT order
    br, bl = (cx, cx) if fg.shape[1] == nx else (0, fg.shape[1])
    for ay in numba.prange(qy):
        cr = np.empty(qx)
        ci = np.empty(qx)
        _screen_row(ay, qx, cell_x, cell_y, nshift, w, cr, ci)
        if amp.size:
            _screen_amp(ay, qx, cell_x, cell_y, nshift, amp, rr, ri, cr, ci)
        for side in range(2):  # Re(val * (cr - i ci)) = val.re cr + val.im ci
            iy = _mirrored_row(ay, side, cy, ny)
            if iy < 0:
                continue
            row = fg[rowmap[iy]]
            out = acc[iy]
            for ax in range(nr):
                val = row[br + ax]
                out[cx + ax] += val.real * cr[ax] + val.imag * ci[ax]
            for ax in range(1, cx + 1):
                val = row[bl - ax]
                out[cx - ax] += val.real * cr[ax] + val.imag * ci[ax]
            if zero:
                row[br : br + nr] = 0
                row[bl - cx : bl] = 0


def chirp_adjoint_w(fg, cell_x, cell_y, nshift, w, acc, nthreads=1, zero=False, amp=None,
                    rot=1.0):
    """:func:`chirp_adjoint` with ``P = phasor(quadrant_c(..., cell_x, cell_y, nshift), w)``
    computed on the fly: the same sums (to the last bit) without the (ny/2, nx/2) complex128
    screen per plane (28.5 MiB per rank on the real 4096 x 30\" job), the float64
    ``n - 1`` quadrant (14 MiB) or a pass to write them. ``zero`` as for
    :func:`chirp_adjoint`. ``amp`` (polynomial in ``c``, highest power first) and ``rot``
    (complex): ``P`` times ``rot A(c)`` (a Chebyshev plane's screen)."""
    _set_threads(nthreads)
    if fg.shape[1] < acc.shape[1]:
        raise ValueError("fg must be at least as wide as acc")
    amp, rr, ri = _amp_args(amp, rot)
    _chirp_adjoint_w_kernel(fg, float(cell_x), float(cell_y), float(nshift), float(w), amp,
                            rr, ri, _rowmap(acc.shape[0], fg.shape[0]), acc, bool(zero))
    return acc


def _amp_args(amp, rot):
    """The chirp kernels' ``amp, rr, ri`` (an empty ``amp``: no amplitude)."""
    amp = np.zeros(0) if amp is None else np.ascontiguousarray(amp, dtype=np.float64)
    rot = complex(rot)
    return amp, rot.real, rot.imag


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _chirp_forward_w_kernel(img, cell_x, cell_y, nshift, w, amp, rr, ri, rowmap, colmap, out):
    """:func:`_chirp_forward_kernel` with the screen made per quadrant row (image rows
    cy - ay and cy + ay share it): ``out = img * conj(P) = img * (cr + i ci)``."""
    ny, nx = img.shape
    cy, cx, qy, qx = _quadrant(ny, nx)
    for ay in numba.prange(qy):
        cr = np.empty(qx)
        ci = np.empty(qx)
        _screen_row(ay, qx, cell_x, cell_y, nshift, w, cr, ci)
        if amp.size:
            _screen_amp(ay, qx, cell_x, cell_y, nshift, amp, rr, ri, cr, ci)
        for side in range(2):
            iy = _mirrored_row(ay, side, cy, ny)
            if iy < 0:
                continue
            jy = rowmap[iy]
            for ix in range(nx):
                ax = abs(ix - cx)
                val = img[iy, ix]
                out[jy, colmap[ix]] = complex(val * cr[ax], val * ci[ax])


def chirp_forward_w(img, cell_x, cell_y, nshift, w, out, nthreads=1, amp=None, rot=1.0):
    """:func:`chirp_forward` with the screen computed on the fly (see
    :func:`chirp_adjoint_w`, also for ``amp`` and ``rot``)."""
    _set_threads(nthreads)
    if out.shape != img.shape:
        out[...] = 0
    amp, rr, ri = _amp_args(amp, rot)
    _chirp_forward_w_kernel(img, float(cell_x), float(cell_y), float(nshift), float(w), amp,
                            rr, ri, _rowmap(img.shape[0], out.shape[0]),
                            _rowmap(img.shape[1], out.shape[1]), out)
    return out


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _chirp_forward_kernel(img, ph, use_ph, rowmap, colmap, out):
    ny, nx = img.shape
    cy, cx = ny // 2, nx // 2
    for iy in numba.prange(ny):
        ay = abs(iy - cy)
        jy = rowmap[iy]
        for ix in range(nx):
            val = img[iy, ix]
            if use_ph:
                p = ph[ay, abs(ix - cx)]
                out[jy, colmap[ix]] = complex(val * p.real, -val * p.imag)
            else:
                out[jy, colmap[ix]] = val


def chirp_forward(img, ph, out, nthreads=1):
    """``out = img * conj(P)``, in image order or, for a larger (padded) ``out``, at the
    positions :func:`chirp_adjoint` reads, everything else zeroed; the adjoint of
    :func:`chirp_adjoint`'s real part."""
    _set_threads(nthreads)
    use = ph is not None
    if out.shape != img.shape:  # the image fills only part of a padded array
        out[...] = 0
    _chirp_forward_kernel(img, ph if use else np.ones((1, 1), np.complex128), use,
                          _rowmap(img.shape[0], out.shape[0]), _rowmap(img.shape[1], out.shape[1]),
                          out)
    return out
