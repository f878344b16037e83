"""Serial wide-field measurement operator, modes ``none`` and ``wstack``.

Forward (docs/internals.md): ``V_k = sum_pix x exp(+2 pi i (u l + v m + w (n - 1)))``;
adjoint: ``D = sum_k wgt_k Re[V_k exp(-2 pi i (u l + v m + w (n - 1)))]``. No ``1 / n`` in
either: the model is in Jy/pixel, and the measurement equation's ``1 / n`` cancels against a
pixel's solid angle ``dl dm / n``, so a point source of flux S is ``S exp(...)`` (as the
simulator, WSClean and CASA have it) and CLEAN recovers S anywhere in the field.

In the notation of Pratley & McEwen (2019), eqs. 2-3 and 7, per w-plane ``k``:
``Phi_k = W [G]_k F Z S_k`` and ``Phi^H = sum_k S_k^H Z^H F^H [G]_k^H W^H``, with

- ``S_k``: pixel-wise ``exp(+2 pi i w_k (n - 1 - nshift)) / (g(l) g(m) g_w(n - 1 - nshift))``
  (chirp and gridding correction of all three kernel axes by quadrature; eq. 4 without the
  paper's ``1 / n``, see above);
- ``Z``: zero padding by the oversampling factor; ``F``: FFT (radimg/ops/fft.py);
- ``[G]_k``: the separable ES kernel (as piecewise polynomials, radimg/kernels/es.py) in u, v
  and, for w-stacking, in w around plane ``k`` (radimg/kernels/gridder.py), with the
  per-sample phase ``exp(2 pi i w nshift)``.

``mode="wstack"`` is the "improved w-stacking" of Ye et al. (2021) / Arras et al. (2021)
(ducc0.wgridder): planes uniformly spaced by ``dw = 1 / (2 sigma_w h)`` where ``h`` is the
half range of ``n - 1`` over the image, every sample spread over ``Ww`` planes. The w axis
has its own oversampling factor ``sigma_w`` and kernel: it sets only the plane spacing, not
an FFT size, so a narrow w range takes a large ``sigma_w`` and few planes, a wide one a small
``sigma_w``. :func:`resolve_geometry` picks both factors ("auto") from a cost model.
``mode="none"`` ignores ``w`` (2-D gridding, exact only for coplanar data or small fields).

On narrow fields the w axis may instead be the w-term's Chebyshev expansion
(``Geometry.wkernel == "cheb"``, radimg/kernels/wcheb.py): ``K`` terms, every sample on all of
them with weight ``T_p(mu)`` (``mu`` its place in the ``|w|`` range) through the same gridder
kernels, and plane ``p``'s screen ``eps_p (-i)^p J_p(pi dw c) exp(2 pi i w_mid c)`` with no
w correction. Where ``|2 pi w (n - 1)|`` stays below ~0.1 three terms reach epsilon 1e-5,
against the 6-7 planes every sample touches with the ES kernel's support; the cost model
(:func:`resolve_geometry`) takes the cheaper.

Per application, ``dot``/``hdot`` gather sample coordinates (and prepared values) once in
layout order, then per plane: grid, FFT in place on the rows that hold data and the image's
columns only, and apply the w-screen, which is symmetric in l and m (one quadrant) and
advanced from plane to plane by a complex recurrence (exact every ``_RESEED`` planes).

The stage methods (``image_to_plane_grid``, ``plane_grid_to_image``, ``grid_samples``,
``degrid_samples``, ``layout``) are the pieces a distributed operator (radimg/parallel) splits
between the ranks that own planes and the ranks that own samples.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from radimg.kernels import gridder as _g
from radimg.kernels import wcheb
from radimg.kernels._jit import PARALLEL_JIT_OPTIONS
from radimg.kernels.es import es_poly_correction
from radimg.ops.fft import get_fft, good_size
from radimg.ops.fft import resolve as resolve_fft
from radimg.ops.geometry import (
    MODES,
    Field,
    Geometry,
    resolve_geometry,
    samples_w_range,
    scaling_target,
    wproject_geometry,
)

__all__ = ["make_operator", "geometry_for_samples", "WideFieldOperator", "MODES", "good_size",
           "Field", "Geometry", "resolve_geometry"]

_MIN_UPDATES_PER_THREAD = 2_000_000  # kernel updates (~5 ms) before a 2nd thread pays
_RESEED = 32  # planes between exact w-screens in the recurrence (error ~ 32 ulp)
#: Cost per point of ducc0's 1-D FFT along y (axis 0, strided) over one along x, by the
#: grid's itemsize; measured with 1-2 threads on the 2-core dev machine: 2.19 / 1.66 ns at
#: 4320 x 3888 complex64 (1 thread), 2.49 / 1.05 ns at 4800^2 complex128 (2 threads).
STRIDED_PASS_COST = {8: 1.3, 16: 2.4}


def make_operator(uvw, freq, npix_x, npix_y, cell_rad, *, epsilon=1e-5, mode="wstack-wproject",
                  nstacks="auto", oversampling=2.0, nthreads=1, precision="double", fft="auto",
                  weight_mask=None, oversampling_w=None, wkernel="auto", **kwargs):
    """The measurement operator for ``mode`` on these samples alone (serial use): its
    :class:`radimg.ops.geometry.Geometry` resolved from them (:func:`geometry_for_samples`),
    then the operator built on it.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres (MS UVW column).
    freq : ndarray (chan,) float64, Hz.
    npix_x, npix_y : int, image size; images are ``(npix_y, npix_x)``.
    cell_rad : float, pixel size in radians (or a pair ``(cell_x, cell_y)``).
    epsilon : float, target accuracy; kernel supports and plane spacing follow from it.
    mode : {"none", "wstack", "wstack-wproject"}
    nstacks : "auto" or int; for ``wstack`` an explicit number of w-planes (must be enough for
        epsilon), for ``wstack-wproject`` the number of k-means w-stacks.
    oversampling : float or "auto", padded grid over image size; "auto" picks the factor
        (and with it the support and plane count) from a cost model.
    nthreads : int
    precision : {"single", "double"}; complex64/float32 or complex128/float64.
    fft : {"auto", "scipy", "fftw", "numpy", "ducc0"}
    weight_mask : ndarray (row, chan), optional; bool or weights, samples where it is
        False/0 are dropped at construction and cost nothing afterwards.
    oversampling_w : float, "auto" or None, the w axis's factor of mode ``wstack``.
    wkernel : {"auto", "es", "cheb"}, the w axis of mode ``wstack``
        (:func:`radimg.ops.geometry.resolve_geometry`).
    **kwargs : the operator's own options (``tile``, ``tables``, ``plan_fft``).
    """
    geo = geometry_for_samples(uvw, freq, Field.of(npix_x, npix_y, cell_rad), epsilon, mode,
                               weight_mask=weight_mask, nstacks=nstacks,
                               oversampling=oversampling, oversampling_w=oversampling_w,
                               precision=precision, nthreads=nthreads, wkernel=wkernel)
    common = dict(nthreads=nthreads, fft=fft, weight_mask=weight_mask, **kwargs)
    if mode in ("none", "wstack"):
        return WideFieldOperator(uvw, freq, geo, **common)
    from radimg.ops.wproject import WProjectOperator

    return WProjectOperator(uvw, freq, geo, **common)


def geometry_for_samples(uvw, freq, field, epsilon, mode, *, weight_mask=None, nstacks="auto",
                         oversampling=2.0, oversampling_w=None, precision="double",
                         nthreads=1, wkernel="auto"):
    """The :class:`Geometry` of ``mode`` over ``field`` for these samples alone: the
    ``|w|`` range and count of the samples ``weight_mask`` keeps (``none`` / ``wstack``), or
    their k-means w-stacks (``wstack-wproject``, :func:`radimg.ops.wproject.fit_stacks`).
    The distributed operators resolve the same objects from global values instead."""
    if mode in ("none", "wstack"):
        nsel, wmin, wmax = samples_w_range(uvw, freq, weight_mask)
        return resolve_geometry(field, epsilon, mode, nsel, wmin, wmax,
                                oversampling=oversampling, oversampling_w=oversampling_w,
                                precision=precision, nstacks=nstacks, wkernel=wkernel)
    if mode == "wstack-wproject":
        from radimg.ops.wproject import fit_stacks

        geo = wproject_geometry(field, epsilon, precision=precision, oversampling=oversampling)
        return fit_stacks(geo, uvw, freq, weight_mask, nstacks)
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _correction_kernel(cx, cy, cell_x, cell_y, nshift, dw, cheb, cheb_half, out):
    """out[dy, dx] = 1 / (cx[dx] cy[dy] g_w((n - 1 - nshift) dw)) at offsets ``dx``, ``dy``
    (pixels, >= 0) from the phase centre; g_w from a Chebyshev series on
    [-cheb_half, cheb_half] (empty series: no w axis). No 1/n: Jy/pixel model (module
    docstring). Each row's Clenshaw recurrence runs over all its pixels per coefficient
    (loops that vectorise; per pixel the same operations in the same order as one pixel at
    a time, bitwise equal: 0.083 -> 0.007 s on one core for the 1296 x 1440 quadrant of the
    real 4096 x 30" job)."""
    ny, nx = out.shape
    deg = cheb.size
    for iy in numba.prange(ny):
        m = iy * cell_y
        t = np.empty(nx)
        b1 = np.zeros(nx)
        b2 = np.zeros(nx)
        for ix in range(nx):
            l = ix * cell_x
            n = math.sqrt(1.0 - l * l - m * m)
            t[ix] = ((n - 1.0 - nshift) * dw) / cheb_half
        for j in range(deg - 1, 0, -1):  # Clenshaw
            cj = cheb[j]
            for ix in range(nx):
                b0 = 2.0 * t[ix] * b1[ix] - b2[ix] + cj
                b2[ix] = b1[ix]
                b1[ix] = b0
        for ix in range(nx):
            gw = t[ix] * b1[ix] - b2[ix] + cheb[0] if deg > 0 else 1.0
            out[iy, ix] = 1.0 / (cx[ix] * cy[iy] * gw)


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _scale_mirrored(img, quadrant, out, add):
    """``out = img * c`` (``add``: ``out += img * c``) where ``c[iy, ix] =
    quadrant[|iy - ny // 2|, |ix - nx // 2|]``; ``out`` may be ``img``."""
    ny, nx = img.shape
    cy, cx = ny // 2, nx // 2
    for iy in numba.prange(ny):
        q = quadrant[abs(iy - cy)]
        for ix in range(cx):  # left half, mirrored
            v = img[iy, ix] * q[cx - ix]
            out[iy, ix] = out[iy, ix] + v if add else v
        for ix in range(cx, nx):
            v = img[iy, ix] * q[ix - cx]
            out[iy, ix] = out[iy, ix] + v if add else v


def _chebyshev_fit(f, half, tol=1e-14):
    """Chebyshev coefficients of f on [-half, half], degree grown until the tail is < tol."""
    for deg in (16, 32, 48, 64, 96, 128):
        k = np.arange(deg + 1)
        x = np.cos(np.pi * (k + 0.5) / (deg + 1))
        c = np.polynomial.chebyshev.chebfit(x, f(x * half), deg)
        if np.abs(c[-4:]).max() < tol * np.abs(c).max():
            return np.trim_zeros(c, "b")
    return c


class WideFieldOperator:
    """Measurement operator for modes ``none`` and ``wstack`` (see module docstring).

    Public: ``dot(image) -> vis``, ``hdot(vis, weight=None) -> image``, the stage methods
    and ``stats``. Construct with :func:`make_operator`.
    """

    def __init__(self, uvw, freq, geometry, *, nthreads=1, fft="auto", weight_mask=None,
                 tile=None, plan_fft=True):
        """Set up the operator (see the class docstring) on ``geometry`` (a
        :class:`radimg.ops.geometry.Geometry` of mode ``none`` or ``wstack``, resolved by the
        caller: :func:`make_operator` from these samples, radimg.parallel from global
        values) in sequence: the samples' tile layout, pruned FFT rows, per-plane work and
        the image-domain correction."""
        if not isinstance(geometry, Geometry) or geometry.mode not in ("none", "wstack"):
            raise ValueError("WideFieldOperator needs a Geometry of mode 'none' or 'wstack'")
        self.uvw = np.ascontiguousarray(uvw, dtype=np.float64)
        self.freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
        if self.uvw.ndim != 2 or self.uvw.shape[1] != 3:
            raise ValueError(f"uvw must be (row, 3), got {self.uvw.shape}")
        self.nrow, self.nchan = self.uvw.shape[0], self.freq.size
        self.geometry = geo = geometry
        field = geo.field
        self.npix_x, self.npix_y = field.npix_x, field.npix_y
        self.cell_x, self.cell_y = field.cell_x, field.cell_y
        self.mode, self.epsilon, self.precision = geo.mode, geo.epsilon, geo.precision
        self.oversampling, self.oversampling_w = geo.oversampling, geo.oversampling_w
        self.nthreads = max(1, int(nthreads))
        self.cdtype, self.rdtype = geo.cdtype, geo.rdtype
        self._fft_name = fft
        self._bufs = {}
        wstack = geo.wstack

        if weight_mask is not None:
            weight_mask = np.asarray(weight_mask)
            if weight_mask.shape != (self.nrow, self.nchan):
                raise ValueError(f"weight_mask must be (row, chan) = {(self.nrow, self.nchan)}")
            weight_mask = weight_mask != 0
        self.mask = weight_mask
        self.spec = geo.grid_spec
        W, beta, nxp, nyp = geo.W, geo.beta, geo.nxp, geo.nyp
        nplanes, Ww, betaw, dw, nshift = geo.nplanes, geo.Ww, geo.betaw, geo.dw, geo.nshift
        w0, half = geo.w0, field.half
        self.planes = w0 + dw * np.arange(nplanes) if wstack else np.zeros(1)
        self._cheb = wstack and geo.wkernel == "cheb"
        if self._cheb:  # every term's screen is centred on w_mid (radimg/kernels/wcheb.py)
            self.planes = np.full(nplanes, w0 + 0.5 * (nplanes - 1) * dw)
            self._wamp = [wcheb.amplitude_poly(p, math.pi * dw, half) for p in range(nplanes)]
            self._wrot = [wcheb.rotation(p) for p in range(nplanes)]
        self._tile = tile or _g.TILE_MIN
        self._layout = _g.make_layout(self.uvw, self.freq, self.spec, mask=weight_mask,
                                      tile=self._tile, nthreads=self.nthreads)
        # Pruned FFTs: image rows/columns <-> padded-grid rows/columns, and the grid rows
        # this operator's samples can touch (their tile rows and the next, cyclically).
        self._img_rows = (np.arange(self.npix_y) - self.npix_y // 2) % nyp
        self._img_cols = (np.arange(self.npix_x) - self.npix_x // 2) % nxp
        lay = self._layout
        live = np.diff(lay.slot_start) > 0
        nty = lay.ybounds.size - 1
        tys = np.unique(np.concatenate([lay.slot_tile[live, 0], (lay.slot_tile[live, 0] + 1) % nty]))
        rows = np.zeros(nyp, dtype=bool)
        for ty in tys:
            rows[lay.ybounds[ty] : lay.ybounds[ty + 1]] = True
        self._grid_rows = np.flatnonzero(rows)
        # ... and per plane, the tile rows and columns its samples can touch (hdot transforms
        # only those lines first: _backward_planned)
        self._plane_ty, self._plane_tx = _g.plane_tiles(lay, self.spec.nplanes)
        # Kernel updates per plane; planes with little work are gridded on one thread (waking
        # a second costs more than it saves, and far more when the core is busy elsewhere).
        cnt = np.bincount(lay.p0, minlength=self.spec.nplanes).astype(np.int64)
        c = np.concatenate([[0], np.cumsum(cnt)])
        p_ = np.arange(self.spec.nplanes)
        lo = np.maximum(p_ - self.spec.Ww + 1, 0)
        self._plane_updates = (c[p_ + 1] - c[lo]) * self.spec.W * self.spec.W
        self.fft = get_fft(self._choose_fft(fft), self.nthreads)
        if self.fft.name == "fftw-measure" and plan_fft:
            self.prepare_fft()  # plan (or load wisdom) now, not in dot/hdot

        # Image-domain correction 1 / (g(l) g(m) g_w(n - 1 - nshift)) by quadrature (no 1/n).
        # It depends on |l| and |m| only: made on one quadrant of offsets from the phase
        # centre and mirrored (a quarter of the work: 0.36 -> 0.1 s at 2880 x 2592).
        px = np.abs(np.arange(self.npix_x) - self.npix_x // 2)
        py = np.abs(np.arange(self.npix_y) - self.npix_y // 2)
        gx = es_poly_correction(np.arange(px.max() + 1) / nxp, W, beta)
        gy = es_poly_correction(np.arange(py.max() + 1) / nyp, W, beta)
        if wstack and not self._cheb:
            chalf = max(half * dw, 1e-300)
            cheb = _chebyshev_fit(lambda t: es_poly_correction(t, Ww, betaw), chalf)
        else:
            chalf, cheb = 1.0, np.zeros(0)
        quadrant = np.empty((gy.size, gx.size), dtype=np.float64)
        _g._set_threads(self.nthreads)
        _correction_kernel(gx, gy, self.cell_x, self.cell_y, nshift, dw, cheb, chalf, quadrant)
        # Kept as the quadrant and applied mirrored (scale_image): the full image of it was
        # 57 MiB per rank on the real 4096 x 30" job, a quarter of that now; in single
        # precision float32 (7 MiB; it scales float32 planes' sum, 6e-8 relative)
        self._corr_q = quadrant.astype(self.rdtype, copy=False)
        self._nshift = nshift
        self._cq_cache = None  # n - 1 - nshift quadrant, made when the serial path needs it

    @property
    def _cq(self):
        """``n - 1 - nshift`` on one quadrant of |dy|, |dx| (the w-screen is symmetric), for
        the serial operator's screen recurrences; the distributed operator's chirp kernels
        compute it on the fly instead (one float64 quadrant less per rank)."""
        if self._cq_cache is None and self.spec.wstack:
            self._cq_cache = _g.quadrant_c(self.npix_y, self.npix_x, self.cell_x, self.cell_y,
                                           self._nshift, self.nthreads)
        return self._cq_cache

    @property
    def correction(self):
        """The image-domain correction ``1 / (g(l) g(m) g_w(n - 1 - nshift))`` as a new
        (npix_y, npix_x) float64 array (the operator keeps one quadrant of it; the
        applications use :meth:`scale_image`)."""
        return self.scale_image(np.ones((self.npix_y, self.npix_x)), inplace=True)

    def scale_image(self, image, inplace=False):
        """``image`` times the correction, as a new float64 (npix_y, npix_x) array, or in
        ``image`` itself (``inplace``, a C-contiguous float64 array): apply it once per
        application and pass ``scaled=False`` to the stage methods (as
        :meth:`radimg.ops.wproject.WProjectOperator.scale_image`)."""
        img = scaling_target(image, inplace)
        if img.shape != (self.npix_y, self.npix_x):
            raise ValueError(f"image must be (npix_y, npix_x) = {(self.npix_y, self.npix_x)}")
        _g._set_threads(self.nthreads)
        _scale_mirrored(img, self._corr_q, img, False)
        return img

    def _add_scaled(self, image, out):
        """``out += image * correction`` (both float64 (npix_y, npix_x))."""
        _g._set_threads(self.nthreads)
        _scale_mirrored(np.ascontiguousarray(image, dtype=np.float64), self._corr_q, out, True)
        return out

    def _choose_fft(self, fft):
        """``"auto"``: :func:`radimg.ops.fft.resolve` on this process (FFTW with measured
        plans, wisdom kept on disk, when the transforms per application repay planning,
        else scipy); radimg.parallel passes a name agreed over the ranks instead."""
        s = self.spec
        return resolve_fft(fft, work=float(s.nplanes) * s.nxp * s.nyp)

    def prepare_fft(self):
        """Make every FFT plan ``dot`` / ``hdot`` use (on the operator's scratch grid)."""
        g = self._buffer("grid", (self.spec.nyp, self.spec.nxp), self.cdtype)
        prev = getattr(self.fft, "plan_in_place", None)
        if prev is not None:
            self.fft.plan_in_place = True
        try:
            g[...] = 0
            self._backward_inplace(g, rows=self._grid_rows)
            g[...] = 0
            self._forward_inplace(g, self._grid_rows, zero_rest=False)
        finally:
            if prev is not None:
                self.fft.plan_in_place = prev

    # ------------------------------------------------------------------ description
    @property
    def nplanes(self):
        return self.spec.nplanes

    @property
    def stats(self):
        """Sizes that set cost: planes, supports, padded grid, samples laid out."""
        s = self.spec
        return {
            "mode": self.mode,
            "nplanes": s.nplanes,
            "support": s.W,
            "support_w": s.Ww,
            "beta": s.beta,
            "padded_grid": (s.nyp, s.nxp),
            "oversampling": self.oversampling,
            "oversampling_w": self.oversampling_w if s.wstack else None,
            "dw": s.dw if s.wstack else None,
            "w_kernel": s.wkernel if s.wstack else None,
            "nshift": s.nshift,
            "nsamples": self._layout.nsamples,
            "precision": self.precision,
            "fft": self.fft.name,
        }

    # ------------------------------------------------------------------ stages
    def layout(self, idx=None):
        """SampleLayout for all (unmasked) samples, or for the flat-index subset ``idx``."""
        if idx is None:
            return self._layout
        if isinstance(idx, _g.SampleLayout):
            return idx
        return _g.make_layout(self.uvw, self.freq, self.spec, mask=self.mask, idx=idx,
                              tile=self._tile, nthreads=self.nthreads)

    def _buffer(self, name, shape, dtype):
        """Reusable FFT-aligned scratch array (contents undefined)."""
        key = (name, tuple(shape), np.dtype(dtype).str)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = self.fft.empty(shape, dtype)
        return buf

    def _col_slices(self):
        """Image columns <-> padded-grid columns: two contiguous runs (grid, image)."""
        k = self.npix_x // 2
        nxp = self.spec.nxp
        return ((slice(nxp - k, nxp), slice(0, k)), (slice(0, self.npix_x - k),
                                                     slice(k, self.npix_x)))

    def _grid_col_slabs(self):
        """The padded-grid columns holding image columns: two contiguous slabs."""
        k = self.npix_x // 2
        nxp = self.spec.nxp
        return (slice(nxp - k, nxp), slice(0, self.npix_x - k))

    @staticmethod
    def _runs(rows):
        """Contiguous runs ``[(start, stop), ...]`` of the sorted row indices."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return []
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [rows.size]])
        return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]

    def _row_runs(self, rows):
        """The runs of grid rows the row passes transform for ``rows``: contiguous runs,
        or every row when they are scattered (one transform beats many)."""
        runs = self._runs(rows)
        return [(0, self.spec.nyp)] if len(runs) > 4 else runs

    def _col_runs(self, cols):
        """As :meth:`_row_runs` for grid columns."""
        runs = self._runs(cols)
        return [(0, self.spec.nxp)] if len(runs) > 4 else runs

    def _grid_row_slabs(self):
        """The padded-grid rows holding image rows: two contiguous slabs."""
        k = self.npix_y // 2
        return (slice(self.spec.nyp - k, self.spec.nyp), slice(0, self.npix_y - k))

    def _backward_inplace(self, grid, rows=None):
        """Unnormalised inverse FFT of ``grid`` in place where the image needs it: the grid
        ``rows`` (default: the non-empty ones) along x, then the image's columns along y.
        Image pixel ``(iy, ix)`` is then at ``grid[self._img_rows[iy], self._img_cols[ix]]``;
        other cells hold partial results."""
        if rows is None:
            rows = np.flatnonzero(grid.any(axis=1))
        return self._backward_planned(grid, rows)[0]

    def _pass_order(self, rows, cols):
        """``("rows", row runs)`` or ``("cols", column runs)``: which of the data's lines
        the pruned 2-D FFT transforms (the other axis' pass runs over the image's lines),
        by the cost of both orders; x first (over ``rows``) when ``cols`` is None or the
        FFT backend's row passes may take rows outside a run."""
        runs = self._row_runs(rows)
        if cols is None or not getattr(self.fft, "exact_rows", False):
            return "rows", runs
        nyp, nxp = self.spec.nyp, self.spec.nxp
        cruns = self._col_runs(cols)
        k = STRIDED_PASS_COST.get(np.dtype(self.cdtype).itemsize, 2.0)
        lx, ly = math.log2(nxp), math.log2(nyp)
        nr = sum(b - a for a, b in runs)
        nc = sum(b - a for a, b in cruns)
        if k * nc * nyp * ly + self.npix_y * nxp * lx < nr * nxp * lx + k * self.npix_x * nyp * ly:
            return "cols", cruns
        return "rows", runs

    def _backward_planned(self, grid, rows, cols=None):
        """:meth:`_backward_inplace` of a grid whose data lie in grid ``rows`` and, when
        given, grid ``cols``: the first pass runs over the data's lines and the second over
        the image's, in the cheaper order (as ducc0's wgridder does per plane). Along y the
        pass is strided and costs more per point (:data:`STRIDED_PASS_COST`), so with few
        data columns the y pass goes first, over them. Returns ``(grid, plan)``, ``plan``
        for :meth:`_zero_transformed`."""
        order, runs = self._pass_order(rows, cols)
        if order == "rows":
            for r0, r1 in runs:
                self.fft.rows(grid, r0, r1, False)
            for cs in self._grid_col_slabs():
                self.fft.cols(grid, cs.start, cs.stop, False)
        else:
            for c0, c1 in runs:
                self.fft.cols(grid, c0, c1, False)
            for rs in self._grid_row_slabs():
                self.fft.rows(grid, rs.start, rs.stop, False)
        return grid, (order, runs)

    def _zero_transformed(self, grid, plan):
        """After :meth:`_backward_planned` (its ``plan``) and a chirp pass that zeroed what
        it read (the image's cells), zero the rest the passes wrote: the lines of the first
        pass outside the image's lines of the other axis, and the image's lines of the
        second pass outside the image's lines of the first axis. The grid is then all
        zeros again without a pass over all of it (a plane's memset was 4.7 s of
        bench_operator case b's 39 s; the image covers 73% of that grid)."""
        order, runs = plan
        kx, ky = self.npix_x // 2, self.npix_y // 2
        c0, c1 = self.npix_x - kx, self.spec.nxp - kx  # grid columns holding no image column
        r0, r1 = self.npix_y - ky, self.spec.nyp - ky  # grid rows holding no image row
        if order == "rows":
            for a, b in runs:
                grid[a:b, c0:c1] = 0
            for cs in self._grid_col_slabs():
                grid[r0:r1, cs] = 0
        else:
            for a, b in runs:
                grid[r0:r1, a:b] = 0
            for rs in self._grid_row_slabs():
                grid[rs, c0:c1] = 0
        return grid

    def plane_lines(self, p):
        """(rows, cols): the padded-grid rows and columns plane ``p``'s samples can touch."""
        lay = self._layout
        rows = np.repeat(self._plane_ty[p], np.diff(lay.ybounds))
        cols = np.repeat(self._plane_tx[p], np.diff(lay.xbounds))
        return np.flatnonzero(rows), np.flatnonzero(cols)

    def _pruned_backward(self, grid, rows=None):
        """Inverse FFT of ``grid`` (not modified) cropped to (npix_y, npix_x), image order."""
        g = self._backward_inplace(grid.copy(), rows)
        return g[self._img_rows][:, self._img_cols]

    def _forward_inplace(self, grid, rows, zero_rest=True, cols=None):
        """Adjoint of :meth:`_backward_planned`: ``grid`` holds the chirped image at the
        image positions, zeros elsewhere (:func:`chirp_forward`); FFT along y on the image's
        columns, then along x on the grid ``rows``, or, when ``cols`` are given and that
        order is cheaper (:meth:`_pass_order`), along x on the image's rows, then along y
        on the grid ``cols``. ``zero_rest``: the other rows (columns) set to 0, so only the
        data's lines hold values."""
        order, runs = self._pass_order(rows, cols)
        if order == "cols":
            for rs in self._grid_row_slabs():
                self.fft.rows(grid, rs.start, rs.stop, True)
            for c0, c1 in runs:
                self.fft.cols(grid, c0, c1, True)
        else:
            for cs in self._grid_col_slabs():
                self.fft.cols(grid, cs.start, cs.stop, True)
            for r0, r1 in runs:
                self.fft.rows(grid, r0, r1, True)
        if zero_rest:  # the lines outside the runs (and outside the data's, if widened)
            lines = grid.T if order == "cols" else grid
            prev = 0
            for a, b in runs:
                lines[prev:a] = 0
                prev = b
            lines[prev:] = 0
            if len(runs) == 1 and runs[0] == (0, lines.shape[0]):
                keep = np.zeros(lines.shape[0], dtype=bool)
                keep[np.asarray(cols if order == "cols" else rows)] = True
                lines[~keep] = 0
        return grid

    def new_grid(self):
        """Zeroed (nyp, nxp) grid, aligned for the FFT backend."""
        g = self.fft.empty((self.spec.nyp, self.spec.nxp), self.cdtype)
        g[...] = 0
        return g

    def image_to_plane_grid(self, image, p, out=None, rows=None, scaled=True, cols=None):
        """``F Z S_p x``: the Fourier grid of plane ``p`` that degridding reads (eq. 9).

        ``rows``: grid rows to compute (others come back 0); default all of them. Pass
        ``self.grid_rows`` when only this operator's samples will read the grid.
        ``cols``: grid columns that will be read too; the grid may then be computed on
        those columns (others 0) instead, where that FFT order is cheaper: only the cells
        of ``rows`` x ``cols`` are the plane's values either way.
        ``scaled=False``: ``image`` already carries the correction (``image *
        self.correction``, once per application instead of per plane).
        """
        grid = out if out is not None else self.fft.empty((self.spec.nyp, self.spec.nxp),
                                                          self.cdtype)
        img = self.scale_image(image) if scaled else np.asarray(image, dtype=np.float64)
        rows = np.arange(self.spec.nyp) if rows is None else np.asarray(rows)
        if not self.spec.wstack:
            return self._image_to_grid(img, None, grid, rows, cols=cols)
        if grid.shape != (self.spec.nyp, self.spec.nxp) or not grid.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous (nyp, nxp) array")
        self._chirp_forward_plane(img, p, grid)
        return self._forward_inplace(grid, rows, cols=cols)

    def _screen(self, p):
        """``(w, amp, rot)`` of plane ``p``'s screen for the on-the-fly chirp kernels: its w
        alone (ES planes), or w_mid with the term's amplitude and phase (Chebyshev)."""
        if self._cheb:
            return self.planes[p], self._wamp[p], self._wrot[p]
        return self.planes[p], None, 1.0

    def _chirp_forward_plane(self, img, p, grid):
        """``grid`` = ``img`` times plane ``p``'s conjugate screen at the image positions,
        zeros elsewhere."""
        w, amp, rot = self._screen(p)
        return _g.chirp_forward_w(img, self.cell_x, self.cell_y, self._nshift, w, grid,
                                  self.nthreads, amp=amp, rot=rot)

    def _phasor(self, p):
        """Quadrant of the plane-p w-screen exp(-2 pi i w_p (n - 1 - nshift)); None in 2-D
        and for Chebyshev terms (their screens have amplitudes: the on-the-fly kernels)."""
        if not self.spec.wstack or self._cheb:
            return None
        return _g.phasor(self._cq, self.planes[p], nthreads=self.nthreads)

    def _image_to_grid(self, img, ph, grid, rows, zero_rest=True, cols=None):
        if grid.shape != (self.spec.nyp, self.spec.nxp) or not grid.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous (nyp, nxp) array")
        _g.chirp_forward(img, ph, grid, self.nthreads)
        return self._forward_inplace(grid, rows, zero_rest, cols=cols)

    @property
    def grid_rows(self):
        """Padded-grid rows that this operator's samples touch (any plane)."""
        return self._grid_rows

    def plane_grid_to_image(self, grid, p, out=None, overwrite=True, scaled=True, rows=None,
                            zero=False, cols=None):
        """``S_p^H Z^H F^H grid``: add plane ``p``'s image to ``out`` (npix_y, npix_x) float64
        (or the operator's float32 in single precision, as the distributed ``hdot`` keeps it).

        ``grid`` is the gridded (not yet transformed) plane; it is overwritten when
        ``overwrite``. Summing this over all planes of ``grid_samples`` output is ``hdot``.
        ``scaled=False`` leaves out the correction (multiply the sum over planes by
        ``self.correction`` once). ``rows``: grid rows that may hold data (default: a scan).
        ``zero`` (with ``overwrite``): ``grid`` is left all zeros, ready for the next plane,
        for a fraction of a full memset (:meth:`_zero_transformed`). ``cols``: grid columns
        that may hold data (lets the FFT's strided pass go first, over them).
        """
        if out is None:
            out = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        if out.dtype not in (np.float64, np.dtype(self.rdtype)):
            raise ValueError(f"out must be float64 or {np.dtype(self.rdtype)}, got {out.dtype}")
        if not overwrite:
            grid, zero = grid.copy(), False
        if rows is None:
            rows = np.flatnonzero(grid.any(axis=1))
        fgrid, plan = self._backward_planned(grid, rows, cols)
        if scaled:
            tmp = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
            self._add_scaled(self._chirp_adjoint_plane(fgrid, p, tmp, zero), out)
        else:
            self._chirp_adjoint_plane(fgrid, p, out, zero)
        if zero:
            self._zero_transformed(fgrid, plan)
        return out

    def _chirp_adjoint_plane(self, fgrid, p, out, zero=False):
        """``out += Re(fgrid * screen_p)`` at the image positions (screen made on the fly);
        ``zero``: the cells read are set to 0."""
        if not self.spec.wstack:
            return _g.chirp_adjoint(fgrid, None, out, self.nthreads, zero=zero)
        w, amp, rot = self._screen(p)
        return _g.chirp_adjoint_w(fgrid, self.cell_x, self.cell_y, self._nshift, w, out,
                                  self.nthreads, zero=zero, amp=amp, rot=rot)

    def grid_samples(self, vis, p, idx=None, weight=None, out=None):
        """``[G]_p^H W^H``: grid the samples of ``idx`` (layout or flat indices; default all)
        that touch plane ``p``, adding them to ``out``."""
        if out is None:
            out = self.new_grid()
        vis = self._as_vis(vis)
        wgt = None if weight is None else np.asarray(weight)
        return _g.grid_plane(self.layout(idx), self.spec, self.uvw, self.freq, vis, p,
                             weight=wgt, out=out, nthreads=self.nthreads)

    def degrid_samples(self, grid, p, idx=None, out=None):
        """``[G]_p``: add plane ``p``'s contribution at the samples of ``idx`` to ``out``."""
        if out is None:
            out = np.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        return _g.degrid_plane(self.layout(idx), self.spec, self.uvw, self.freq, grid, p,
                               out=out, nthreads=self.nthreads)

    def _as_vis(self, vis):
        vis = np.asarray(vis)
        if vis.shape != (self.nrow, self.nchan):
            raise ValueError(f"vis must be (row, chan) = {(self.nrow, self.nchan)}, got {vis.shape}")
        return vis.astype(self.cdtype, copy=False)

    # ------------------------------------------------------------------ operator
    def _phasors(self):
        """Plane-0 w-screen and the per-plane step of the recurrence (None, None where
        :meth:`_phasor` gives None)."""
        ph = self._phasor(0)
        if ph is None:
            return None, None
        return ph, _g.phasor(self._cq, self.spec.dw, nthreads=self.nthreads)

    def _next_phasor(self, ph, step, p):
        """w-screen of plane ``p`` from plane ``p - 1``'s (re-seeded exactly every 32)."""
        if ph is None:
            return None
        if p % _RESEED == 0:
            return _g.phasor(self._cq, self.planes[p], out=ph, nthreads=self.nthreads)
        return _g.phasor_mul(ph, step, self.nthreads)

    def _kthreads(self, p):
        """Threads for the (de)gridding kernels of plane ``p``."""
        return self.nthreads if self._plane_updates[p] >= _MIN_UPDATES_PER_THREAD else 1

    def dot(self, image):
        """Forward operator: image (npix_y, npix_x) real -> vis (row, chan) complex.

        Samples outside the weight mask come back as 0.
        """
        image = np.asarray(image)
        if image.shape != (self.npix_y, self.npix_x):
            raise ValueError(f"image must be (npix_y, npix_x) = {(self.npix_y, self.npix_x)}")
        lay = self._layout
        img = self.scale_image(image)
        coords, _ = _g.prepare_samples(lay, self.spec, self.uvw, self.freq,
                                       nthreads=self.nthreads)
        acc = np.zeros(lay.nsamples, dtype=self.cdtype)
        grid = self._buffer("grid", (self.spec.nyp, self.spec.nxp), self.cdtype)
        ph, step = self._phasors()
        for p in range(self.nplanes):
            if p:
                ph = self._next_phasor(ph, step, p)
            rows, cols = self.plane_lines(p)
            if self._cheb:
                self._chirp_forward_plane(img, p, grid)
                fgrid = self._forward_inplace(grid, rows, False, cols=cols)
            else:
                fgrid = self._image_to_grid(img, ph, grid, rows, zero_rest=False, cols=cols)
            _g.degrid_plane_prepared(lay, self.spec, coords, fgrid, p, acc, self._kthreads(p))
        vis = np.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        return _g.finish_samples(lay, self.spec, self.uvw, self.freq, acc, vis, self.nthreads)

    def hdot(self, vis, weight=None):
        """Adjoint: vis (row, chan) complex (times ``weight``) -> image (npix_y, npix_x) real."""
        vis = self._as_vis(vis)
        if weight is not None:
            weight = np.asarray(weight)
            if weight.shape != vis.shape:
                raise ValueError("weight must have the shape of vis")
        lay = self._layout
        coords, vals = _g.prepare_samples(lay, self.spec, self.uvw, self.freq, vis, weight,
                                          self.nthreads)
        acc = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        grid = self._buffer("grid", (self.spec.nyp, self.spec.nxp), self.cdtype)
        grid[...] = 0  # once: each plane leaves it zeroed (chirp reads, _zero_transformed)
        ph, step = self._phasors()
        for p in range(self.nplanes):
            if p and p % _RESEED == 0:
                ph = self._next_phasor(ph, step, p)  # exact screen now and then
            _g.grid_plane_prepared(lay, self.spec, coords, vals, p, grid, self._kthreads(p))
            fgrid, plan = self._backward_planned(grid, *self.plane_lines(p))
            if self._cheb:
                self._chirp_adjoint_plane(fgrid, p, acc, zero=True)
            else:
                _g.chirp_adjoint(fgrid, ph, acc, self.nthreads, step=step, zero=True)  # advances ph
            self._zero_transformed(fgrid, plan)
        self.scale_image(acc, inplace=True)
        return acc.astype(self.rdtype, copy=False)
