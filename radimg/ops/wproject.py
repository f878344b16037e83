"""w-stacking + w-projection hybrid measurement operator (``wterm.mode: wstack-wproject``).

Pratley & McEwen 2019, eqs. 3-8. Per stack ``k`` (samples reflected to ``w >= 0`` and
clustered on ``w`` by k-means):

    Phi_k = [GC]_k F Z S_k,     S_k = exp(+2 pi i w_k (n - 1)) / (g(l) g(m))

(the sign is ours: forward ``V = sum x exp(+2 pi i (u l + v m + w (n - 1)))``, see
docs/internals.md; the paper writes the opposite convention, and its ``1 / n``, which a model
in Jy/pixel cancels with the pixel's solid angle ``dl dm / n``, is left out), ``Z`` zero pads to the
``(nyp, nxp)`` grid, ``F`` is an unnormalised FFT and ``[GC]_k`` interpolates with the
combined anti-aliasing + w-projection kernel of the residual ``w - w_k``
(radimg/kernels/wproject.py). The adjoint is ``Re sum_k S_k^H Z^H F^H [GC]_k^H`` (eq. 7/10).

Grid layout: image pixel ``[iy, ix]`` (``px = ix - npix_x//2``, ``py = iy - npix_y//2``,
``l = -px cell``, ``m = py cell``) is placed at padded index ``[-py mod nyp, px mod nxp]``,
so a forward FFT gives ``G[jy, jx] = sum f exp(2 pi i (jx du l + jy dv m))`` with
``du = 1 / (nxp cell)``: grid cell ``j`` sits at ``u = j du`` (mod ``nxp``).

The stage methods (``image_to_stack_grid``, ``stack_grid_to_image``, ``degrid_samples``,
``grid_samples``) are the pieces a distributed version (eqs. 9-10) places on different ranks.
"""

from __future__ import annotations

import math
import time

import numpy as np

from radimg.constants import C_LIGHT
from radimg.kernels import wproject as wpk
from radimg.ops.geometry import W_SHARE, Geometry, scaling_target
from radimg.ops.kmeans import SERIAL, kmeans_w

__all__ = ["WProjectOperator", "choose_nstacks", "fit_stacks", "kmeans_w_local"]


# Cost model constants (seconds), measured on the development machine (one core, double):
# an unnormalised complex FFT costs ~_C_FFT * N log2 N, one kernel cell of one separable
# term ~_C_CELL, one 16-tap table lookup ~_C_TAP. Only their ratios matter for choosing K.
_C_FFT = 1.0e-9
_C_PIX = 2.0e-9  # per padded-grid cell per stack (pad, chirp, copy) besides the FFT
_C_CELL = 1.0e-8
_C_TAP = 4.0e-8


def _lloyd_sorted(ws, cs, k, max_iter=100):
    """1-D Lloyd iterations on sorted ``ws`` (``cs``: its prefix sums with a leading 0):
    quantile start, then each iteration costs O(k log n), not O(n)."""
    centres = np.unique(np.quantile(ws, (np.arange(k) + 0.5) / k))
    for _ in range(max_iter):
        edges = 0.5 * (centres[1:] + centres[:-1])
        bounds = np.concatenate([[0], np.searchsorted(ws, edges), [ws.size]])
        cnt = np.diff(bounds)
        new = np.where(cnt > 0, (cs[bounds[1:]] - cs[bounds[:-1]]) / np.maximum(cnt, 1), centres)
        if np.max(np.abs(new - centres)) <= 1e-12 * max(1.0, ws[-1]):  # np.allclose's test,
            break  # without its ~25 us of overhead per call (thousands per chooser run)
        centres = new
    return np.sort(centres)


def kmeans_w_local(w_abs, k, max_iter=100):
    """Serial 1-D k-means (Lloyd, quantile start on sorted values, as the cost model runs it);
    the operators use :func:`radimg.ops.kmeans.kmeans_w`."""
    w_abs = np.asarray(w_abs, dtype=np.float64).ravel()
    if w_abs.size == 0:
        return np.zeros(k), np.zeros(0, np.int32)
    ws = np.sort(w_abs)
    centres = _lloyd_sorted(ws, np.concatenate([[0.0], np.cumsum(ws)]), k, max_iter)
    labels = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), w_abs).astype(np.int32)
    return centres, labels


def stack_centres(w_abs, k, collectives=None):
    """k-means centres on |w| (paper section 4.1), then stacks whose residual range is far
    wider than the typical one are split into equal-width pieces.

    k-means minimises the squared residual, so the few samples in the tail of the w
    distribution share wide stacks; their residual sets the size of the kernel tables and
    the largest supports. Splitting them caps ``|w - w_k|`` at twice the median stack
    half-width for a handful of extra FFTs.

    With ``collectives`` (:class:`radimg.parallel.mpi.Collectives`, passed in by
    radimg.parallel) the samples ``w_abs`` are this rank's share: k-means and the per-stack
    ranges are reduced over the ranks, so every rank gets the same centres, equal to the
    serial ones on all samples up to summation order.
    """
    coll = SERIAL if collectives is None else collectives
    w_abs = np.asarray(w_abs, dtype=np.float64).ravel()
    centres, _ = kmeans_w(w_abs, k, collectives=collectives)
    n_all = int(coll.allreduce(np.array([w_abs.size], np.int64), "sum")[0])
    centres = np.unique(np.asarray(centres, dtype=np.float64))
    if n_all == 0 or centres.size == 0:
        return np.zeros(max(1, centres.size))
    labels = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), w_abs)
    lo = np.full(centres.size, np.inf)
    hi = np.full(centres.size, -np.inf)
    np.minimum.at(lo, labels, w_abs)
    np.maximum.at(hi, labels, w_abs)
    coll.allreduce(lo, "min")
    coll.allreduce(hi, "max")
    used = np.isfinite(lo)
    return _split_tails(centres[used], lo[used], hi[used])


def _split_tails(centres, lo, hi):
    """Stacks whose residual half-range exceeds twice the median one are split into
    equal-width pieces (see :func:`stack_centres`)."""
    half = np.maximum(hi - centres, centres - lo)
    if centres.size < 3:
        return centres
    cap = max(2.0 * float(np.median(half)), 1e-9)
    out = []
    for c, a, b, hw in zip(centres, lo, hi, half, strict=True):
        if hw <= cap:
            out.append(c)
        else:
            n = int(math.ceil((b - a) / (2.0 * cap)))
            out.extend(a + (b - a) * (np.arange(n) + 0.5) / n)
    return np.unique(np.asarray(out))


def _sorted_stack_centres(ws, cs, k):
    """:func:`stack_centres` for the cost model on sorted ``ws`` (prefix sums ``cs``): Lloyd
    by prefix sums (:func:`_lloyd_sorted`, so ~1 ms for 2e4 samples instead of ~70 ms), the
    same tail splits. Its k-means start differs from radimg.parallel.kmeans, so the centres
    can differ slightly from the operator's own; the cost model only needs their spread."""
    if ws.size == 0:
        return np.zeros(1)
    centres = np.unique(_lloyd_sorted(ws, cs, k))
    bounds = np.searchsorted(ws, 0.5 * (centres[1:] + centres[:-1]))
    b0 = np.concatenate([[0], bounds])
    b1 = np.concatenate([bounds, [ws.size]])
    used = b1 > b0
    return _split_tails(centres[used], ws[b0[used]], ws[b1[used] - 1])


def _terms_estimate(h, field):
    # rank of the cross-term expansion grows with 2 pi h |c| where the taper still matters
    # (about twice the field half-width for oversampling 2)
    lx, ly = min(0.6, field.npix_x * field.cell), min(0.6, field.npix_y * field.cell)
    cmax = abs(math.sqrt(max(1e-6, 1 - lx * lx - ly * ly)) - math.sqrt(1 - lx * lx)
               - math.sqrt(1 - ly * ly) + 1.0)
    return 1.0 + 2.0 * 2.0 * math.pi * h * cmax


def predicted_cost(w_abs, k, geometry):
    """Predicted seconds of one operator application with ``k`` stacks (FFTs + kernels) on
    the ``wstack-wproject`` ``geometry``: ``(total, fft, kernels)``."""
    ws = np.sort(np.abs(np.asarray(w_abs, dtype=np.float64).ravel()))
    return CostModel(geometry)(ws, np.concatenate([[0.0], np.cumsum(ws)]), k)


class CostModel:
    """The geometry part of :func:`predicted_cost`, computed once for every K tried."""

    def __init__(self, geometry):
        self.field, self.W = geometry.field, geometry.W
        self.slx, self.sly = geometry.slopes
        self.npx = geometry.nxp * geometry.nyp

    def __call__(self, ws, cs, k):
        centres = _sorted_stack_centres(ws, cs, k)
        labels = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), ws)
        dw = ws - centres[labels]
        R = _terms_estimate(np.abs(dw).max() if dw.size else 0.0, self.field)
        sx = wpk.support_estimate(dw, self.W, self.slx)
        sy = wpk.support_estimate(dw, self.W, self.sly)
        kern = float(np.sum(_C_CELL * (R + 1) * sx * sy + _C_TAP * R * (sx + sy)))
        fft = centres.size * self.npx * (_C_FFT * math.log2(self.npx) + _C_PIX)
        return fft + kern, fft, kern


def choose_nstacks(w_abs, geometry, kmax=64, max_samples=20000, seed=0, n_total=None):
    """Number of w-stacks that minimises the predicted time of one operator application.

    Parameters
    ----------
    w_abs : ndarray, float64
        |w| of every (valid) sample, wavelengths.
    geometry : radimg.ops.geometry.Geometry, mode ``wstack-wproject`` (its stacks unset).
    kmax : int
        Largest K tried.
    max_samples : int
        The kernel cost is estimated from a seeded random subset of this size (scaled up).
    n_total : int, optional
        Number of samples that ``w_abs`` stands for when it is already a subsample (the
        distributed operator gathers one): the kernel cost is scaled to it.

    Returns
    -------
    int
    """
    w_abs = np.abs(np.asarray(w_abs, dtype=np.float64).ravel())
    scale = 1.0 if n_total is None or w_abs.size == 0 else float(n_total) / w_abs.size
    if w_abs.size > max_samples:
        rng = np.random.default_rng(seed)
        scale *= w_abs.size / max_samples
        w_abs = rng.choice(w_abs, max_samples, replace=False)
    best, best_cost = 1, np.inf
    ws = np.sort(w_abs)
    cs = np.concatenate([[0.0], np.cumsum(ws)])
    nuniq = max(1, int(np.count_nonzero(np.diff(ws)) + 1) if ws.size else 1)
    model = CostModel(geometry)
    for k in range(1, kmax + 1):
        if k > nuniq:
            break
        _, fft, kern = model(ws, cs, k)
        cost = fft + scale * kern
        if cost < best_cost:
            best, best_cost = k, cost
        elif fft > best_cost:  # FFT cost alone already exceeds the best: stop
            break
    return best


def fit_stacks(geometry, uvw, freq, weight_mask=None, nstacks="auto"):
    """``geometry`` (mode ``wstack-wproject``) with w-stacks fitted to these samples alone:
    ``nstacks`` ("auto": :func:`choose_nstacks`) k-means centres on ``|w|``
    (:func:`stack_centres`) and the residual range they leave. radimg.parallel fits them to
    all ranks' samples instead (:func:`radimg.parallel.operator.wproject_stacks`)."""
    w_abs = np.abs(np.asarray(uvw, dtype=np.float64)[:, 2:3]
                   * np.atleast_1d(np.asarray(freq, dtype=np.float64))[None, :] / C_LIGHT)
    w_fit = w_abs.ravel() if weight_mask is None else w_abs[np.asarray(weight_mask) != 0]
    if nstacks == "auto":
        nstacks = choose_nstacks(w_fit, geometry)
    centres = stack_centres(w_fit, int(nstacks))
    dw = w_fit - centres[np.searchsorted(0.5 * (centres[1:] + centres[:-1]), w_fit)]
    dw_range = (float(dw.min()), float(dw.max())) if dw.size else (0.0, 0.0)
    return geometry.with_stacks(centres, dw_range)


class WProjectOperator:
    """Hybrid w-stacking / w-projection operator (Pratley & McEwen 2019, eqs. 3-8).

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    geometry : radimg.ops.geometry.Geometry
        Mode ``wstack-wproject`` with its w-stacks (``centres``, ``dw_range``): from
        :func:`fit_stacks` on these samples (:func:`radimg.ops.operator.make_operator`) or
        the global ones of radimg.parallel. The ES kernel has half of epsilon, the w-kernel
        tables the other half.
    nthreads : int
    fft : str
        FFT registry name (radimg/ops/fft.py).
    weight_mask : ndarray (row, chan) bool or weights, optional
        Samples where it is False / 0 are dropped at construction: they carry no load, are
        never gridded and predict 0.
    tables : WKernelTables, optional
        Ready kernel tables (built for the same geometry).
    """

    def __init__(self, uvw, freq, geometry, *, nthreads=1, fft="auto", weight_mask=None,
                 tables=None):
        t0 = time.perf_counter()
        if not isinstance(geometry, Geometry) or geometry.mode != "wstack-wproject":
            raise ValueError("WProjectOperator needs a Geometry of mode 'wstack-wproject'")
        if not geometry.centres:
            raise ValueError("the geometry has no w-stacks yet (radimg.ops.wproject.fit_stacks)")
        self.geometry = geo = geometry
        self.uvw = np.ascontiguousarray(uvw, dtype=np.float64)
        self.freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
        self.nrow, self.nchan = self.uvw.shape[0], self.freq.size
        self.npix_x, self.npix_y, self.cell = geo.npix_x, geo.npix_y, geo.field.cell
        self.epsilon, self.precision = geo.epsilon, geo.precision
        self.oversampling = geo.oversampling
        self.nthreads = max(1, int(nthreads))
        self.cdtype, self.rdtype = geo.cdtype, geo.rdtype
        self.nxp, self.nyp, self.W, self.beta = geo.nxp, geo.nyp, geo.W, geo.beta

        w_abs = np.abs((self.uvw[:, 2:3] * self.freq[None, :] / C_LIGHT).ravel())
        vmask = None if weight_mask is None else (np.asarray(weight_mask).ravel() != 0)
        self.centres = np.asarray(geo.centres, dtype=np.float64)
        self.nstacks = self.centres.size
        edges = 0.5 * (self.centres[1:] + self.centres[:-1])
        self.labels = np.searchsorted(edges, w_abs).astype(np.int32)
        self._vmask = vmask
        self.dw_range = geo.dw_range
        self.tables_source = "given"
        if tables is None:
            # on-disk cache keyed by every parameter (radimg/ops/kernel_cache.py): a rerun
            # of the same geometry loads them instead of building them
            from radimg.ops.kernel_cache import cached_wkernel_tables

            nthreads = self.nthreads
            tables, self.tables_source = cached_wkernel_tables(
                lambda **p: wpk.build_wkernel_tables(**p, nthreads=nthreads),
                npix_x=self.npix_x, npix_y=self.npix_y, cell_rad=self.cell, nxp=self.nxp,
                nyp=self.nyp, dw_min=self.dw_range[0], dw_max=self.dw_range[1],
                epsilon=W_SHARE * self.epsilon, W=self.W, beta=self.beta, dtype=self.cdtype)
        self.tables = tables
        order = np.argsort(self.labels, kind="stable")
        if vmask is not None:
            order = order[vmask[order]]
        bounds = np.searchsorted(self.labels[order], np.arange(self.nstacks + 1))
        self.stack_idx = [order[bounds[k]:bounds[k + 1]].astype(np.int64)
                          for k in range(self.nstacks)]
        self._layouts = {}

        # image-domain pieces shared by all stacks (n - 1 on a quadrant: made on first use;
        # the set-up's load-only and table-only operators never need it)
        px = np.arange(self.npix_x) - self.npix_x // 2
        py = np.arange(self.npix_y) - self.npix_y // 2
        self._image_factors = None
        self._rows = np.ascontiguousarray(np.mod(-py, self.nyp), dtype=np.int64)
        self._cols = np.ascontiguousarray(np.mod(px, self.nxp), dtype=np.int64)

        from radimg.ops.fft import get_fft

        # "auto" resolved here alone; radimg.parallel passes a name agreed over the ranks
        self._fft = get_fft(fft, self.nthreads, work=self.fft_work())
        self.timings = {"setup": time.perf_counter() - t0, "fft": 0.0, "image": 0.0,
                        "grid": 0.0, "degrid": 0.0}

    # ------------------------------------------------------------------ helpers
    def fft_work(self):
        """Padded cells transformed per application (stacks x grid), for the FFT choice."""
        return float(self.nstacks) * self.nxp * self.nyp

    def _factors(self):
        """``(nm1q,)``: ``n - 1`` on the quadrant ``[|py|, |px|]``, (npix_y//2 + 1,
        npix_x//2 + 1) float64, for the chirp; the amplitude ``1 / (g g)`` is evaluated from the
        tables' ``corr_y``, ``corr_x`` where needed, never held as an image."""
        if self._image_factors is None:
            ay = np.arange(self.npix_y // 2 + 1) * self.cell
            ax = np.arange(self.npix_x // 2 + 1) * self.cell
            nm1q = np.sqrt(1.0 - ay[:, None] ** 2 - ax[None, :] ** 2) - 1.0
            self._image_factors = (nm1q,)
        return self._image_factors

    @property
    def _nm1(self):
        """``n - 1`` on the whole image (npix_y, npix_x) (the GPU operator's copy)."""
        nm1q = self._factors()[0]
        px = np.arange(self.npix_x) - self.npix_x // 2
        py = np.arange(self.npix_y) - self.npix_y // 2
        return nm1q[np.abs(py)][:, np.abs(px)]

    @property
    def _amp(self):
        """``1 / (g(l) g(m))`` on the whole image (npix_y, npix_x) (the GPU operator's copy)."""
        return self.scale_image(np.ones((self.npix_y, self.npix_x)))

    def _col_slabs(self):
        """The padded-grid columns that hold image columns: two contiguous slabs."""
        k = self.npix_x // 2
        return (slice(self.nxp - k, self.nxp), slice(0, self.npix_x - k))

    def _row_pass(self, g, rows, forward):
        """1-D FFTs along u of the grid ``rows`` (sorted indices), in place."""
        for r0, r1 in self._runs(rows, self.nyp):
            self._fft.rows(g, r0, r1, forward)

    def _col_pass(self, g, forward):
        """1-D FFTs along v of the image's grid columns, in place."""
        for cs in self._col_slabs():
            self._fft.cols(g, cs.start, cs.stop, forward)

    def prepare_fft(self, grid=None):
        """Make every FFT plan ``dot`` / ``hdot`` use, on ``grid`` (any (nyp, nxp) grid of
        the operator's dtype; its contents are destroyed) or a temporary one. With measured
        FFTW plans this is where planning happens (or wisdom is read), not in the first
        application; radimg.parallel plans on one rank and shares the wisdom."""
        g = grid if grid is not None else self._fft.empty((self.nyp, self.nxp), self.cdtype)
        g[...] = 0
        prev = getattr(self._fft, "plan_in_place", None)
        if prev is not None:
            self._fft.plan_in_place = True
        try:
            for fwd in (False, True):
                self._fft.rows(g, 0, 1, fwd)
                self._col_pass(g, fwd)
        finally:
            if prev is not None:
                self._fft.plan_in_place = prev
        g[...] = 0

    @staticmethod
    def _runs(rows, n):
        """Contiguous runs of the sorted row indices; one run of all ``n`` rows when they
        are scattered (one transform over everything is then cheaper)."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return []
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [rows.size]])
        runs = [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]
        return runs if len(runs) <= 4 else [(0, n)]

    def _threads(self):
        import numba

        numba.set_num_threads(max(1, min(self.nthreads, numba.config.NUMBA_NUM_THREADS)))

    def _layout(self, k, idx):
        if idx is None:
            lay = self._layouts.get(k)
            if lay is None:
                lay = wpk.tile_layout(self.uvw, self.freq, self.stack_idx[k], self.centres[k],
                                      self.cell, self.nxp, self.nyp, self.tables)
                self._layouts[k] = lay
            return lay
        return wpk.tile_layout(self.uvw, self.freq, idx, self.centres[k], self.cell, self.nxp,
                               self.nyp, self.tables)

    # ------------------------------------------------------------------ stages
    def scale_image(self, image, inplace=False):
        """``image / (g(l) g(m))`` (the amplitude part of ``S_k``, the same for every stack)
        as a new float64 (npix_y, npix_x) array, or in ``image`` itself (``inplace``, a
        C-contiguous float64 array): apply it once per application and pass
        ``scaled=False`` to the stage methods (:meth:`dot`, :meth:`hdot`)."""
        img = scaling_target(image, inplace)
        t = self.tables
        self._threads()
        return wpk.scale_image(img, t.corr_y, t.corr_x)

    def _pad_buffer(self, out):
        """``out`` (or a new grid) with every cell outside the image's positions zeroed."""
        if out is None:
            out = self._fft.empty((self.nyp, self.nxp), self.cdtype)
            out[...] = 0
            return out
        if out.shape != (self.nyp, self.nxp) or out.dtype != self.cdtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous ({self.nyp}, {self.nxp}) {self.cdtype.__name__}")
        cy, cx = self.npix_y // 2, self.npix_x // 2
        r1 = self.nyp - (self.npix_y - 1 - cy)  # rows [cy + 1, r1) hold no image pixel
        out[cy + 1 : r1] = 0
        for rs in (slice(0, cy + 1), slice(r1, self.nyp)):
            out[rs, self.npix_x - cx : self.nxp - cx] = 0
        return out

    def image_to_stack_grid(self, image, k, rows=None, out=None, scaled=True):
        """``F Z S_k x``: the padded uv grid (nyp, nxp) complex of stack ``k``.

        Pruned: the padded image is non-zero on the image's columns only, so the first pass
        (along v) transforms those columns; the second (along u) only the grid ``rows``
        someone reads (default all; other rows are left partial). ``out``: a grid to work
        in (any contents; returned). ``scaled=False``: ``image`` already went through
        :meth:`scale_image`.
        """
        t0 = time.perf_counter()
        self._threads()
        pad = self._pad_buffer(out)
        t = self.tables
        wpk.image_to_pad(image, self._factors()[0], self.centres[k], t.corr_y, t.corr_x, pad,
                         scale=scaled)
        t1 = time.perf_counter()
        self._col_pass(pad, True)
        self._row_pass(pad, np.arange(self.nyp) if rows is None else np.asarray(rows), True)
        self.timings["image"] += t1 - t0
        self.timings["fft"] += time.perf_counter() - t1
        return pad

    def stack_grid_to_image(self, grid, k, out=None, overwrite=False, scaled=True, rows=None):
        """``Re S_k^H Z^H F^H grid`` accumulated into ``out`` (npix_y, npix_x) real.

        Pruned: the first pass (along u) transforms the grid rows that hold data, the
        second (along v) only the image's columns. ``overwrite``: ``grid`` may be used as
        the work array (it is then destroyed), else it is copied. ``scaled=False`` leaves
        out the ``1 / (g g)`` factor (apply :meth:`scale_image` once to the sum).
        ``rows``: sorted grid rows that may hold data (default: found by a scan).
        """
        if out is None:
            out = np.zeros((self.npix_y, self.npix_x), dtype=self.rdtype)
        t0 = time.perf_counter()
        g = grid if overwrite and grid.flags.c_contiguous else np.array(grid, order="C")
        self._row_pass(g, np.flatnonzero(g.any(axis=1)) if rows is None else rows, False)
        self._col_pass(g, False)
        t1 = time.perf_counter()
        self._threads()
        t = self.tables
        wpk.pad_to_image(g, self._factors()[0], self.centres[k], t.corr_y, t.corr_x, out,
                         scale=scaled)
        self.timings["fft"] += t1 - t0
        self.timings["image"] += time.perf_counter() - t1
        return out

    def degrid_samples(self, grid, k, idx=None, out=None):
        """``[GC]_k grid`` at samples ``idx`` (flat ``row * nchan + chan``; default: the whole
        stack). Returns (len(idx),) complex, or writes ``out[row, chan]`` when given."""
        self._threads()
        t0 = time.perf_counter()
        idx = self.stack_idx[k] if idx is None else idx
        res = wpk.degrid_wproject(self.uvw, self.freq, grid, idx, self.centres[k], self.cell,
                                  self.tables, out=out)
        self.timings["degrid"] += time.perf_counter() - t0
        return res

    def grid_samples(self, vis, k, idx=None, out_grid=None, weight=None):
        """``[GC]_k^H (weight * vis)`` of samples ``idx`` accumulated into ``out_grid``."""
        self._threads()
        if out_grid is None:
            out_grid = np.zeros((self.nyp, self.nxp), dtype=self.cdtype)
        t0 = time.perf_counter()
        idx_s, tile_ptr, colour_ptr = self._layout(k, idx)
        wpk.grid_wproject(self.uvw, self.freq, vis, idx_s, tile_ptr, colour_ptr,
                          self.centres[k], self.cell, self.tables, out_grid, weight=weight)
        self.timings["grid"] += time.perf_counter() - t0
        return out_grid

    # ------------------------------------------------------------------ operator
    def dot(self, image):
        """Forward: image (npix_y, npix_x) real -> vis (row, chan) complex."""
        img = self.scale_image(image)
        vis = np.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        pad = None
        for k in range(self.nstacks):
            if self.stack_idx[k].size:
                pad = self.image_to_stack_grid(img, k, out=pad, scaled=False)
                self.degrid_samples(pad, k, out=vis)
        return vis

    def hdot(self, vis, weight=None):
        """Adjoint: vis (row, chan) complex (times weight) -> image (npix_y, npix_x) real."""
        vis = np.asarray(vis)
        if vis.dtype != self.cdtype:
            vis = vis.astype(self.cdtype)
        if weight is not None:
            weight = np.asarray(weight, dtype=self.rdtype)
        out = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        g = None
        for k in range(self.nstacks):
            if self.stack_idx[k].size:
                if g is None:
                    g = np.zeros((self.nyp, self.nxp), dtype=self.cdtype)
                else:
                    g[...] = 0
                self.grid_samples(vis, k, out_grid=g, weight=weight)
                self.stack_grid_to_image(g, k, out, overwrite=True, scaled=False)
        return self.scale_image(out, inplace=True).astype(self.rdtype, copy=False)

    # ------------------------------------------------------------------ load, stats
    def per_sample_support(self):
        """(support_x, support_y) in cells per sample, each (row, chan) int32 (eq. 8);
        the gridding load of a sample is their product."""
        idx = np.arange(self.nrow * self.nchan, dtype=np.int64)
        wk_of = self.centres[self.labels]
        sx, sy = wpk.sample_supports(self.uvw, self.freq, idx, wk_of, self.tables)
        if self._vmask is not None:
            sx[~self._vmask] = 0
            sy[~self._vmask] = 0
        return sx.reshape(self.nrow, self.nchan), sy.reshape(self.nrow, self.nchan)

    def sample_footprints(self, k, idx=None):
        """First grid cell and extent of each sample's kernel footprint in stack ``k``.

        Parameters
        ----------
        k : int
        idx : ndarray (nsel,) int64, flat ``row * nchan + chan`` (default: the stack's samples)

        Returns
        -------
        jx, jy : ndarray (nsel,) int64, first cell (mod ``nxp``, ``nyp``)
        sx, sy : ndarray (nsel,) int32, support in cells; the kernel reads cells
            ``(jy + b) % nyp, (jx + a) % nxp`` for ``a < sx``, ``b < sy`` (as the gridder
            computes them, up to rounding in the last bit of the position).
        """
        idx = self.stack_idx[k] if idx is None else np.asarray(idx, dtype=np.int64)
        fs = self.freq / C_LIGHT
        row, ch = np.divmod(idx, self.nchan)
        u = self.uvw[row, 0] * fs[ch]
        v = self.uvw[row, 1] * fs[ch]
        sgn = np.where(self.uvw[row, 2] * fs[ch] < 0, -1.0, 1.0)
        sx, sy = wpk.sample_supports(self.uvw, self.freq, idx,
                                     np.full(idx.size, self.centres[k]), self.tables)
        jx = np.ceil((sgn * u) * (self.nxp * self.cell) - 0.5 * sx).astype(np.int64)
        jy = np.ceil((sgn * v) * (self.nyp * self.cell) - 0.5 * sy).astype(np.int64)
        return np.mod(jx, self.nxp), np.mod(jy, self.nyp), sx, sy

    def per_sample_load(self):
        """Kernel cells touched per sample, (row, chan) int64: the load that the balancer
        equalises (paper section 4.1). Measured from the kernel tables, so it includes the
        ~3x larger w-slope that the anti-aliasing taper imposes (radimg.kernels.wproject)."""
        sx, sy = self.per_sample_support()
        return sx.astype(np.int64) * sy

    @property
    def stats(self):
        t = self.tables
        sx, sy = self.per_sample_support()
        return {
            "nstacks": self.nstacks, "centres": self.centres.tolist(),
            "samples_per_stack": [int(i.size) for i in self.stack_idx],
            "padded": (self.nyp, self.nxp), "W": self.W, "beta": self.beta,
            "rank": t.rank, "table_q": t.q, "table_dw_nodes": int(t.hs_x.size),
            "tables": self.tables_source,
            "table_bytes": int(t.tab_x.nbytes + t.tab_y.nbytes),
            "mean_load": float(np.mean((sx.astype(np.float64) * sy)[sx > 0])) if sx.any() else 0.0,
            "max_support": int(max(sx.max(), sy.max())) if sx.size else 0,
            "timings": dict(self.timings),
        }
