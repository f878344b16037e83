"""Imaging weights: natural, uniform, Briggs (robust) and a Gaussian taper (pure, no MPI).

The definitions are WSClean 3.1's (``ImageWeights``, structures/imageweights.{h,cpp}), so
that radimg's dirty images and PSFs of a Measurement Set equal WSClean's; docs/internals.md
("Imaging weights") writes them out and says where radimg departs from it (the taper).

The density grid is computed per rank with :func:`density_grid`; the pipeline sums the
local grids over ranks (Allreduce) and passes the global grid back in as ``density=``, so the
weights are identical to a serial run on all the data, at any rank count.

Conventions
-----------
- The weight grid is the uv grid of the *padded* image as WSClean pads it
  (:func:`weight_grid`): ``nx = ceil(npix_x * padding)`` rounded up to a multiple of 4
  (WSClean's ``-padding``, default 1.2, :data:`WEIGHT_PADDING`), the same for ``ny``; uv
  cells of ``1 / (nx cell_x)`` by ``1 / (ny cell_y)`` wavelengths. It holds the half plane
  ``v >= 0`` only: ``(ny // 2, nx)``.
- A sample ``(u, v)`` in wavelengths (``u = U / (c / f)``) with ``v < 0`` is first replaced
  by ``(-u, -v)`` (its Hermitian twin, the same point of the real image's uv plane), then
  ``x = floor(u nx cell_x + nx / 2)``, ``y = floor(v ny cell_y)``: cells have their lower
  edges on multiples of the cell size (not centred on them). The grid covers
  ``-1/(2 cell_x) <= u < 1/(2 cell_x)``, ``0 <= v < 1/(2 cell_y)``.
- A sample whose cell is beyond the grid is **dropped** (imaging weight 0) under every
  scheme, natural included, as WSClean does; :func:`drop_beyond_grid` zeroes and counts
  them. The imaging grid has the same uv extent (``+-1/(2 cell)`` at any padding), so
  these are the samples that would otherwise alias.
- ``D[y, x]`` is the sum of the (Stokes I, per channel) weights of the samples in the
  cell, each sample counted once.
- A sample's imaging weight is ``w G[y, x]``. Natural: ``G = 1``. Uniform: ``G = 1 / D``.
  Briggs (Briggs 1995, WSClean's normalisation): ``G = 1 / (1 + s2 D)`` with
  ``s2 = (5 * 10**-R)**2 / (sum D^2 / sum D)``, sums over the cells of the half-plane
  grid (``sum D`` = the sum of the gridded weights).
- Rank filter (WSClean's default ``-weighting-rank-filter 3``, size 16): a non-zero
  ``G[y, x]`` above 3 times the mean of the non-zero ``G`` in the 16 x 16 window
  ``[y - 8, y + 8) x [x - 8, x + 8)`` (clipped to the half-plane grid) is set to 3 times
  that mean. It caps the weight of lone samples among densely sampled cells under uniform
  and Briggs weighting; natural ``G`` (all 1) never changes.
- Taper: ``exp(-rho^2 / (2 sigma_uv^2))`` with ``rho = |(u, v)|`` in wavelengths at the
  sample itself. The taper is specified, as in WSClean's ``-taper-gaussian``, by the FWHM
  (arcsec) of the image-domain Gaussian it convolves the PSF with:
  ``sigma_l = FWHM / (2 sqrt(2 ln 2))`` radians, ``sigma_uv = 1 / (2 pi sigma_l)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from radimg.constants import ARCSEC, C_LIGHT, FWHM_PER_SIGMA
from radimg.kernels._jit import JIT_OPTIONS

__all__ = [
    "C_LIGHT",
    "WEIGHT_PADDING",
    "RANK_FILTER_LEVEL",
    "RANK_FILTER_SIZE",
    "weight_factors",
    "rank_filter",
    "WeightGrid",
    "weight_grid",
    "density_grid",
    "drop_beyond_grid",
    "imaging_weights",
    "briggs_s2",
    "taper_sigma_uv",
]

#: WSClean's default ``-padding``: its weight grid is the uv grid of the image padded by it.
WEIGHT_PADDING = 1.2
#: WSClean's default ``-weighting-rank-filter`` level (on by default; < 1 switches it off)
#: and ``-weighting-rank-filter-size`` (window, cells).
RANK_FILTER_LEVEL = 3.0
RANK_FILTER_SIZE = 16


@dataclass(frozen=True)
class WeightGrid:
    """Geometry of the half-plane weight (density) grid.

    Attributes
    ----------
    nx, ny : int
        Padded image size (even, multiples of 4); the grid array is ``(ny // 2, nx)``.
    cell_x, cell_y : float
        Image pixel size, radians.
    """

    nx: int
    ny: int
    cell_x: float
    cell_y: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny // 2, nx)``: rows ``v >= 0``, columns ``u`` from ``-1/(2 cell_x)``."""
        return (self.ny // 2, self.nx)

    @property
    def uv_cell_lambda(self) -> tuple[float, float]:
        """uv cell size ``(du, dv)`` in wavelengths."""
        return (1.0 / (self.nx * self.cell_x), 1.0 / (self.ny * self.cell_y))

    @property
    def uv_max_lambda(self) -> tuple[float, float]:
        """The grid covers ``-umax <= u < umax``, ``0 <= v < vmax`` (wavelengths)."""
        return (0.5 / self.cell_x, 0.5 / self.cell_y)

    def summary(self) -> dict:
        """JSON-ready description (for the product's ``/run`` attributes and the log)."""
        return {
            "grid_shape": list(self.shape),
            "padded_image": [self.ny, self.nx],
            "uv_cell_lambda": list(self.uv_cell_lambda),
            "uv_max_lambda": list(self.uv_max_lambda),
        }


def _padded_size(n: int, padding: float) -> int:
    # WSClean Settings::RecalculatePaddedDimensions: ceil(n * padding), then up to a
    # multiple of 4; ImageWeights then makes it even (already is).
    p = int(math.ceil(int(n) * float(padding)))
    return p + (4 - p % 4) % 4


def weight_grid(npix_x, npix_y, cell_rad, padding=WEIGHT_PADDING) -> WeightGrid:
    """The weight grid of an ``npix_x x npix_y`` image with pixels of ``cell_rad`` radians.

    Parameters
    ----------
    npix_x, npix_y : int
    cell_rad : float or (float, float)
        Pixel size ``cell`` or ``(cell_x, cell_y)``, radians.
    padding : float
        WSClean's ``-padding`` (>= 1): the grid is the uv grid of the image padded by it.
    """
    if not padding >= 1.0:
        raise ValueError(f"padding must be >= 1, got {padding!r}")
    c = np.atleast_1d(np.asarray(cell_rad, dtype=np.float64))
    cx, cy = float(c[0]), float(c[-1])
    if not (cx > 0 and cy > 0 and math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"cell_rad must be finite and > 0, got {cell_rad!r}")
    return WeightGrid(_padded_size(npix_x, padding), _padded_size(npix_y, padding), cx, cy)


@njit(**JIT_OPTIONS)
def _cell(u_m, v_m, lam, nx, ny, cell_x, cell_y):
    """Flat cell index ``y * nx + x`` of a sample, or -1 beyond the grid (WSClean's
    ImageWeights::uvToXY and isWithinLimits, same operation order)."""
    u = u_m / lam
    v = v_m / lam
    if v < 0.0:
        u = -u
        v = -v
    fx = math.floor(u * nx * cell_x + nx // 2)
    fy = math.floor(v * ny * cell_y)
    if not (fx >= 0.0 and fx < nx and fy >= 0.0 and fy < ny // 2):  # NaN fails too
        return -1
    return int(fy) * nx + int(fx)


@njit(**JIT_OPTIONS)
def _density_kernel(uvw, freq, weight, nx, ny, cell_x, cell_y, out):
    flat = out.ravel()
    for r in range(uvw.shape[0]):
        for c in range(freq.shape[0]):
            wt = weight[r, c]
            if wt == 0.0:
                continue
            k = _cell(uvw[r, 0], uvw[r, 1], C_LIGHT / freq[c], nx, ny, cell_x, cell_y)
            if k >= 0:
                flat[k] += wt
    return out


@njit(**JIT_OPTIONS)
def _drop_kernel(uvw, freq, weight, nx, ny, cell_x, cell_y, zero):
    """Count (and zero when ``zero``) the samples of non-zero weight beyond the grid;
    also return the number of rows that had at least one."""
    n = 0
    nrows = 0
    for r in range(uvw.shape[0]):
        hit = False
        for c in range(freq.shape[0]):
            if weight[r, c] == 0.0:
                continue
            lam = C_LIGHT / freq[c]
            if _cell(uvw[r, 0], uvw[r, 1], lam, nx, ny, cell_x, cell_y) < 0:
                n += 1
                hit = True
                if zero:
                    weight[r, c] = 0.0
        if hit:
            nrows += 1
    return n, nrows


@njit(**JIT_OPTIONS)
def _weights_kernel(uvw, freq, weight, nx, ny, cell_x, cell_y, factor, natural, out):
    """out = weight * factor[cell]; 0 beyond the grid. ``natural``: factor 1 (WSClean's
    natural grid is 1 wherever a sample is, and the rank filter never changes it)."""
    flat = factor.ravel()
    for r in range(uvw.shape[0]):
        for c in range(freq.shape[0]):
            wt = weight[r, c]
            out[r, c] = 0.0
            if wt == 0.0:
                continue
            k = _cell(uvw[r, 0], uvw[r, 1], C_LIGHT / freq[c], nx, ny, cell_x, cell_y)
            if k < 0:
                continue
            out[r, c] = wt if natural else wt * flat[k]
    return out


@njit(**JIT_OPTIONS)
def _factors_kernel(density, uniform, s2, out):
    """WSClean's FinishGridding: uniform ``1 / D``, Briggs ``1 / (1 + D s2)``, 0 where
    ``D == 0`` for uniform (Briggs: 1 there, never looked up)."""
    d = density.ravel()
    o = out.ravel()
    for i in range(d.size):
        if uniform:
            o[i] = 1.0 / d[i] if d[i] != 0.0 else 0.0
        else:
            o[i] = 1.0 / (1.0 + d[i] * s2)
    return out


@njit(**JIT_OPTIONS)
def _rank_filter_kernel(g, level, half, out):
    """WSClean's ImageWeights::RankFilter: a non-zero ``g[y, x]`` above ``level`` times the
    mean of the non-zero values in the window ``[y - half, y + half) x [x - half, x + half)``
    (clipped to the grid) becomes ``level`` times that mean. Read from ``g``, written to
    ``out``. Window sums are separable: per-row sums over x (kept for the last ``2 half``
    rows in a ring), then sums of those over y; no running sums, so no cancellation."""
    ny, nx = g.shape
    nring = 2 * half
    rs = np.zeros((nring, nx), dtype=np.float64)
    rc = np.zeros((nring, nx), dtype=np.int64)
    done = 0  # rows whose x-window sums are in the ring
    for y in range(ny):
        y1 = 0 if y <= half else y - half
        y2 = ny if y + half >= ny else y + half
        while done < y2:
            k = done % nring
            for x in range(nx):
                x1 = 0 if x <= half else x - half
                x2 = nx if x + half >= nx else x + half
                sm = 0.0
                cn = 0
                for xi in range(x1, x2):
                    v = g[done, xi]
                    if v != 0.0:
                        sm += v
                        cn += 1
                rs[k, x] = sm
                rc[k, x] = cn
            done += 1
        for x in range(nx):
            w = g[y, x]
            out[y, x] = w
            if w == 0.0:
                continue
            sm = 0.0
            cn = 0
            for yi in range(y1, y2):
                sm += rs[yi % nring, x]
                cn += rc[yi % nring, x]
            if cn == 0:
                continue
            mean = sm / cn
            if w > mean * level:
                out[y, x] = mean * level
    return out


def _check(uvw, freq, weight):
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
    weight = np.asarray(weight)
    if uvw.ndim != 2 or uvw.shape[1] != 3:
        raise ValueError(f"uvw must be (row, 3) metres, got shape {uvw.shape}")
    if weight.shape != (uvw.shape[0], freq.shape[0]):
        raise ValueError(
            f"weight must be (row, chan) = {(uvw.shape[0], freq.shape[0])}, got {weight.shape}"
        )
    return uvw, freq


def _grid_args(grid):
    return grid.nx, grid.ny, grid.cell_x, grid.cell_y


def density_grid(uvw, freq, weight, npix_x, npix_y, cell_rad, out=None, *, padding=WEIGHT_PADDING):
    """Sum of weights per cell of the half-plane weight grid (:func:`weight_grid`).

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    weight : ndarray (row, chan) float; 0 = flagged (not counted)
    npix_x, npix_y : int
        Image size.
    cell_rad : float
    out : ndarray ``weight_grid(...).shape`` float64, optional
        Accumulated into (not zeroed) when given.
    padding : float
        See :func:`weight_grid`.

    Returns
    -------
    ndarray (ny // 2, nx) float64, ``[y, x]``: the local density (Allreduce it over
    ranks). Samples beyond the grid add nothing.
    """
    uvw, freq = _check(uvw, freq, weight)
    g = weight_grid(npix_x, npix_y, cell_rad, padding)
    if out is None:
        out = np.zeros(g.shape, dtype=np.float64)
    elif out.shape != g.shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float64 {g.shape}")
    w = np.ascontiguousarray(weight)
    if w.dtype not in (np.float32, np.float64):
        w = w.astype(np.float64)
    _density_kernel(uvw, freq, w, *_grid_args(g), out)
    return out


def drop_beyond_grid(
    uvw, freq, weight, npix_x, npix_y, cell_rad, *, padding=WEIGHT_PADDING, drop=True
):
    """Zero (in place) the weights of samples beyond the weight grid and count them.

    WSClean gives these samples weight 0 under every weighting (its grid lookup returns 0
    beyond the grid); radimg drops them before the operator is built, so they take no part
    in gridding, load balancing or the normalisation, at any rank count.

    Parameters
    ----------
    uvw, freq : as :func:`density_grid`
    weight : ndarray (row, chan) float32 | float64, C-contiguous; modified in place
    npix_x, npix_y, cell_rad, padding : see :func:`weight_grid`
    drop : bool
        False: only count.

    Returns
    -------
    (int, int)
        Samples (row, chan) of non-zero weight beyond the grid, and rows with at least one.
    """
    uvw, freq = _check(uvw, freq, weight)
    if drop and not (
        isinstance(weight, np.ndarray)
        and weight.flags.c_contiguous
        and weight.flags.writeable
        and weight.dtype in (np.float32, np.float64)
    ):
        raise ValueError("weight must be a writeable C-contiguous float32/float64 array")
    w = weight if drop else np.ascontiguousarray(weight, dtype=np.float64)
    g = weight_grid(npix_x, npix_y, cell_rad, padding)
    n, nrows = _drop_kernel(uvw, freq, w, *_grid_args(g), bool(drop))
    return int(n), int(nrows)


def taper_sigma_uv(taper_arcsec: float) -> float:
    """uv-domain sigma (wavelengths) of a Gaussian taper whose image-domain FWHM is given."""
    sigma_l = taper_arcsec * ARCSEC / FWHM_PER_SIGMA
    return 1.0 / (2.0 * math.pi * sigma_l)


def briggs_s2(density, robust) -> float:
    """WSClean's Briggs factor ``s2 = (5 * 10**-R)**2 / (sum D^2 / sum D)`` (0 when empty)."""
    d = np.asarray(density, dtype=np.float64)
    sum_d = float(d.sum())
    sum_d2 = float(np.sum(d * d))
    if sum_d <= 0.0 or sum_d2 <= 0.0:
        return 0.0
    num = 5.0 * math.exp(-math.log(10.0) * float(robust))
    return num * num / (sum_d2 / sum_d)


def rank_filter(grid, level=RANK_FILTER_LEVEL, size=RANK_FILTER_SIZE):
    """WSClean's weighting rank filter on a half-plane factor grid (returns a new grid).

    Parameters
    ----------
    grid : ndarray (ny // 2, nx) float64
        Per-cell weight factors (:func:`weight_factors` before filtering).
    level : float
        A non-zero value above ``level`` times the mean of the non-zero values in its
        ``size x size`` window (``[y - size//2, y + size//2)``, same in x, clipped to the
        grid) is set to ``level`` times that mean. ``level < 1``: no filtering (WSClean
        filters when ``level >= 1``).
    size : int
        Window size in cells (WSClean's ``-weighting-rank-filter-size``).
    """
    g = np.ascontiguousarray(grid, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"grid must be 2-D, got shape {g.shape}")
    half = int(size) // 2
    if not level >= 1.0 or half == 0 or g.size == 0:
        return g.copy()
    return _rank_filter_kernel(g, float(level), half, np.empty_like(g))


def weight_factors(
    density,
    scheme,
    robust=0.0,
    *,
    rank_filter_level=RANK_FILTER_LEVEL,
    rank_filter_size=RANK_FILTER_SIZE,
):
    """The per-cell factor ``G`` that multiplies a sample's weight: WSClean's
    ``FinishGridding`` (uniform ``1 / D``, Briggs ``1 / (1 + s2 D)``) then its rank filter.

    Parameters
    ----------
    density : ndarray (ny // 2, nx) float64, the global density grid
    scheme : {"uniform", "briggs"} (natural needs no grid: its factor is 1)
    robust : float
    rank_filter_level, rank_filter_size : see :func:`rank_filter`

    Returns
    -------
    ndarray (ny // 2, nx) float64
    """
    d = np.ascontiguousarray(density, dtype=np.float64)
    if scheme not in ("uniform", "briggs"):
        raise ValueError(f"weight_factors: scheme must be uniform or briggs, got {scheme!r}")
    s2 = briggs_s2(d, robust) if scheme == "briggs" else 0.0
    g = _factors_kernel(d, scheme == "uniform", s2, np.empty_like(d))
    return rank_filter(g, rank_filter_level, rank_filter_size)


def imaging_weights(
    uvw,
    freq,
    weight,
    *,
    scheme,
    robust=0.0,
    npix_x,
    npix_y,
    cell_rad,
    taper_arcsec=0.0,
    density=None,
    padding=WEIGHT_PADDING,
    rank_filter_level=RANK_FILTER_LEVEL,
    rank_filter_size=RANK_FILTER_SIZE,
):
    """Imaging weights per sample (WSClean 3.1's definitions, module docstring).

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    weight : ndarray (row, chan) float32 | float64; 0 = flagged (stays 0)
    scheme : {"natural", "uniform", "briggs"}
    robust : float
        Briggs robustness R (used only for ``scheme="briggs"``).
    npix_x, npix_y : int
    cell_rad : float
    taper_arcsec : float
        FWHM of the image-domain Gaussian taper in arcsec (0: none). See module docstring.
    density : ndarray (ny // 2, nx) float64, optional
        The *global* density grid (sum over ranks of :func:`density_grid`). Computed from
        these samples when omitted (serial); not used by ``natural``.
    padding : float
        See :func:`weight_grid`.
    rank_filter_level, rank_filter_size : see :func:`rank_filter` (WSClean's defaults,
        3 and 16, filter; natural weights are never changed by it).

    Returns
    -------
    ndarray (row, chan), dtype of ``weight`` (float64 unless float32). 0 for flagged
    samples and for samples beyond the weight grid, under every scheme.
    """
    dtype = np.asarray(weight).dtype
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    uvw, freq = _check(uvw, freq, weight)
    w = np.ascontiguousarray(weight, dtype=np.float64)
    g = weight_grid(npix_x, npix_y, cell_rad, padding)
    scheme = str(scheme).lower()
    if scheme not in ("natural", "uniform", "briggs"):
        raise ValueError(
            f"unknown weighting scheme {scheme!r}; expected natural, uniform or briggs"
        )
    if scheme == "natural":
        factor = np.zeros((1, 1))  # not read
    else:
        if density is None:
            density = density_grid(uvw, freq, w, npix_x, npix_y, cell_rad, padding=padding)
        density = np.asarray(density)
        if density.shape != g.shape:
            raise ValueError(
                f"density must be the weight grid's shape {g.shape}, got {density.shape}"
            )
        factor = weight_factors(
            density,
            scheme,
            robust,
            rank_filter_level=rank_filter_level,
            rank_filter_size=rank_filter_size,
        )
    out = np.empty_like(w)
    _weights_kernel(uvw, freq, w, *_grid_args(g), factor, scheme == "natural", out)
    if taper_arcsec and taper_arcsec > 0:
        sig = taper_sigma_uv(taper_arcsec)
        lam = freq / C_LIGHT
        u = uvw[:, 0:1] * lam[None, :]
        v = uvw[:, 1:2] * lam[None, :]
        out *= np.exp(-(u * u + v * v) / (2.0 * sig * sig))
    return out.astype(dtype, copy=False)
