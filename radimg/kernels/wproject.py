"""w-projection residual kernels for the w-stacking + w-projection hybrid (compact tables).

Pratley & McEwen 2019, eqs. 5-6: a sample of stack ``k`` is interpolated off the stack's
padded grid with a kernel ``[GC](t; dw)`` that combines the anti-aliasing kernel with the
w-projection kernel of its residual ``dw = w - w_k``. Here the kernel is the inverse Fourier
transform of the image-domain taper

    T(l, m; dw) = g(l) g(m) exp(2 pi i dw Psi(l, m)),      Psi = n - 1 inside the field,

where ``g`` is the Fourier transform of the ES kernel (radimg/kernels/es.py). With
``t`` in grid cells and ``lam = l / (N cell)`` in cycles per cell,
``K(t_u, t_v) = int T exp(+2 pi i (t_u lam_l + t_v lam_m))``, so that
``sum_j K(x - j) exp(2 pi i j lam) ~= exp(2 pi i x lam) T(lam)`` (Poisson summation).

Construction:

* ``Psi`` is the exact ``n - 1`` wherever ``g`` matters (up to ~0.6 of the padded width),
  clamped smoothly (C-infinity ramp) only further out, to keep ``n`` defined. Clamping at the
  field edge would hold the chirp's local frequency at its eq.-8 value ``|dw| l_max / n``,
  but a smooth non-analytic ramp has slowly decaying spectral tails that cost more support
  than they save (measured: tails of 1e-5..1e-6 ten cells out). So the support grows as
  ``W + 2 |dw| slope`` with the slope taken where ``g`` is still ~1e-3 (``field_slopes``),
  about 3x the field-edge slope for oversampling 2.
* ``Psi = Psi1(l) + Psi1(m) + c(l, m)`` with ``Psi1(l) = Psi(l, 0)``. The separable part is
  handled exactly per axis. The cross term ``c`` (~ l^2 m^2 / 4) is small, so
  ``g(l) g(m) exp(2 pi i dw c)`` over the ``dw`` range has low numerical rank ``R`` (SVD
  over l x (m, dw), truncated at a measured max-abs error): ``sum_r a_r(l) b_r(m; dw)``.
* Hence ``K(t_u, t_v; dw) = e^{2 pi i dw psi_0} sum_r A_r(t_u; dw) B_r(t_v; dw)``: ``2 R``
  one-dimensional tables over (sub-cell offset, dw), interpolated with 4-point Lagrange in
  both (16 taps). A sample costs ``2 R S`` interpolated values plus ``(R + 1) S^2``
  multiply-adds; no per-sample matrix is ever stored. ``R`` grows with the stack's residual
  range (typically 4-7 at 25 deg, |dw| <= 10 lambda).
* Table sampling (offset oversampling ``q`` and ``dw`` spacing) follows from the 4-point
  Lagrange error bound weighted by ``|g|`` (error far from the field counts for less).

Support (eq. 8) is read off the tables: the half width beyond which the term envelope falls
below a threshold, tabulated over ``dw``; the threshold is never below the level at which the
plain ES kernel (``dw = 0``) is cut, whose tail es_parameters already accounts for.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from radimg.constants import C_LIGHT
from radimg.kernels import scalar as _scalar
from radimg.kernels._blas import blas_threads
from radimg.kernels._jit import JIT_OPTIONS, PARALLEL_JIT_OPTIONS
from radimg.kernels.es import es_correction, leggauss
from radimg.kernels.trig import cis_cycles

__all__ = [
    "C_LIGHT",
    "WKernelTables",
    "build_wkernel_tables",
    "field_slopes",
    "support_estimate",
    "grid_wproject",
    "degrid_wproject",
    "sample_supports",
]

_LAM_MAX = 1.25
# Support cut: the kernel envelope's level, relative to where the plain ES kernel is cut.
# Measured on the real MWA 34 deg field (4096 x 30", 32 stacks, epsilon 1e-5, single, 2880^2
# coarse image): x3 (before) left 8.2e-5 of the dirty peak against the direct DFT, x1 1.8e-5,
# x0.3 6.6e-6 (PSF 5.7e-7) for 2.5x the kernel cells (+9% of the PSF + dirty time); the small
# fields of the tests met epsilon at x3 already.
_THR_SCALE = 0.3


class WKernelTables(NamedTuple):
    """Compact tables of the combined anti-aliasing + w-projection kernel (see module doc)."""

    tab_x: np.ndarray  # (R, nw, nt) complex: A_r(t_u; dw) along the grid's x (u) axis
    tab_y: np.ndarray  # (R, nw, nt) complex: B_r(t_v; dw) along the grid's y (v) axis
    hs_x: np.ndarray  # (nw,) float64 half support along x at each dw node
    hs_y: np.ndarray  # (nw,) float64
    dw0: float  # dw of node 0
    ddw: float  # dw node spacing
    tmax: float  # the t axis runs from -tmax with step 1/q
    q: int  # sub-cell oversampling of the t axis
    psi0: float  # per-sample scalar phase exp(2 pi i dw psi0) taken out of the tables
    corr_x: np.ndarray  # (npix_x,) g at image columns (lam = (ix - npix_x//2) / nxp)
    corr_y: np.ndarray  # (npix_y,)
    rank: int
    W: int
    beta: float


# ----------------------------------------------------------------------------- geometry


def _smooth_step(x):
    """C-infinity step: 0 for x <= 0, 1 for x >= 1."""
    x = np.clip(x, 0.0, 1.0)
    with np.errstate(divide="ignore", over="ignore"):
        a = np.where(x > 0, np.exp(-1.0 / np.where(x > 0, x, 1.0)), 0.0)
        b = np.where(x < 1, np.exp(-1.0 / np.where(x < 1, 1.0 - x, 1.0)), 0.0)
    return a / (a + b)


def _clamp(l_abs, l_f, b):
    """Smooth clamp s(l): identity for |l| <= l_f, s' ramps to 0 over [l_f, l_f + b]."""
    l_abs = np.asarray(l_abs, dtype=np.float64)
    z, wq = leggauss(48)
    hi = np.clip(l_abs, l_f, l_f + b)
    # integral of (1 - step((x - l_f) / b)) over [l_f, hi]
    half = 0.5 * (hi - l_f)
    xs = l_f + half[..., None] * (z + 1.0)
    integ = half * ((1.0 - _smooth_step((xs - l_f) / b)) @ wq)
    return np.where(l_abs <= l_f, l_abs, l_f + integ)


def _clamp_geometry(npix_x, npix_y, cell_rad, nxp, nyp):
    """Where the direction cosines start to be clamped (per axis) and over what width.

    The clamp only keeps ``n`` defined: it starts where ``g`` (hence the weight of the
    region in the kernel) is already ~1e-4, never inside the field. A clamp right at the
    field edge would keep the kernel support at its eq.-8 value in principle, but the
    smooth-but-not-analytic transition it needs gives the kernel slowly decaying tails that
    cost more support than they save (measured).
    """
    lfx = (max(npix_x // 2, npix_x - 1 - npix_x // 2) + 0.5) * cell_rad
    lfy = (max(npix_y // 2, npix_y - 1 - npix_y // 2) + 0.5) * cell_rad
    if lfx * lfx + lfy * lfy >= 0.995:
        raise ValueError("the image field reaches the horizon (l^2 + m^2 >= 1)")
    Lx, Ly = nxp * cell_rad, nyp * cell_rad
    cx, cy, bx, by = max(lfx, 0.6 * Lx), max(lfy, 0.6 * Ly), 0.3 * Lx, 0.3 * Ly
    for _ in range(200):
        if (cx + 0.5 * bx) ** 2 + (cy + 0.5 * by) ** 2 <= 0.97**2:
            break
        cx, cy = max(lfx, 0.95 * cx), max(lfy, 0.95 * cy)
        bx, by = 0.95 * bx, 0.95 * by
    return (lfx, cx, bx), (lfy, cy, by)


def field_slopes(npix_x, npix_y, cell_rad, nxp, nyp, lam_eff=0.65):
    """Effective |d Psi / d lam| along each grid axis (cells per unit dw), for eq. 8.

    The w-projection kernel of residual ``dw`` spans about ``2 |dw| slope`` cells beyond the
    anti-aliasing support (Pratley & McEwen 2019, eq. 8: ``2 dw / du`` with ``1/du`` the
    padded field width, times ``l / n``). The slope is taken at ``lam_eff`` cycles per cell
    rather than at the field edge (0.25 for oversampling 2) because the anti-aliasing taper
    ``g`` is still ~1e-3 there and the kernel must reproduce ``g * chirp`` to epsilon.
    """
    (_, cx, bx), (_, cy, by) = _clamp_geometry(npix_x, npix_y, cell_rad, nxp, nyp)
    sx = float(_clamp(lam_eff * nxp * cell_rad, cx, bx))
    sy = float(_clamp(lam_eff * nyp * cell_rad, cy, by))
    n_c = math.sqrt(1.0 - sx * sx - sy * sy)
    return nxp * cell_rad * sx / n_c, nyp * cell_rad * sy / n_c


def support_estimate(dw, W, slope):
    """Predicted 1-D support (cells) for residual ``dw`` (eq. 8 with J_min = W)."""
    return np.maximum(W, np.ceil(W + 2.0 * np.abs(dw) * slope))


# ----------------------------------------------------------------------------- tables


def _half_supports(tab_x, tab_y, t, dws, W, tol_abs, tmax):
    """Half width (cells) beyond which the kernel envelope stays below the cut, per dw node.

    The cut is never below the level at which the plain ES kernel (dw = 0) is cut at W/2:
    that tail is inside the ES error budget already (es_parameters measures the cut kernel).
    """
    ny_ = np.abs(tab_y).max(axis=2)  # (R, nw)
    nx_ = np.abs(tab_x).max(axis=2)
    env_x = np.einsum("rwt,rw->wt", np.abs(tab_x), ny_)
    env_y = np.einsum("rwt,rw->wt", np.abs(tab_y), nx_)
    i0 = int(np.argmin(np.abs(dws)))
    thr = max(tol_abs / (4.0 * tmax), float(np.interp(0.5 * W + 0.5, t, env_x[i0])))
    thr *= _THR_SCALE
    hs_x = _monotone_in_abs(dws, np.array([np.abs(t[e > thr]).max() for e in env_x]))
    hs_y = _monotone_in_abs(dws, np.array([np.abs(t[e > thr]).max() for e in env_y]))
    return hs_x, hs_y, thr


def _monotone_in_abs(dws, hs):
    """``hs`` made non-decreasing in ``|dw|`` (a running maximum over the nodes sorted by
    ``|dw|``, both signs together): a larger ``|dw|`` never gets a smaller support. At a low
    cut level the envelope's ripple would otherwise let it dip by a few cells, and the
    nodes of ``-dw`` and ``+dw`` (whose kernels mirror each other) differ; this only widens."""
    order = np.argsort(np.abs(dws), kind="stable")
    out = np.empty_like(hs)
    out[order] = np.maximum.accumulate(hs[order])
    return out


def _node_terms(dws, U, p1x, p1y, cross, gg, chunk=16):
    """The dw-dependent factors of the separable terms at every dw node.

    Returns ``ax, by`` : ndarray (nw, R, nl) complex128, the l- and m-factors (see
    :func:`build_wkernel_tables`). The cross-term phase ``exp(2 pi i dw c)`` is advanced from
    node to node by one complex multiply (re-seeded exactly at every chunk start), not an
    exponential per element per node.
    """
    nw, R, nl = dws.size, U.shape[1], U.shape[0]
    ax = np.exp(2j * np.pi * dws[:, None] * p1x[None, :])[:, None, :] * U.T[None]
    by = np.empty((nw, R, nl), dtype=np.complex128)
    uh = np.ascontiguousarray(U.conj().T)
    if nw > 1:
        step = np.exp(2j * np.pi * (dws[1] - dws[0]) * cross)
    for c0 in range(0, nw, chunk):
        ph = np.exp(2j * np.pi * dws[c0] * cross)
        for i in range(c0, min(nw, c0 + chunk)):
            if i > c0:
                ph *= step
            by[i] = uh @ (ph * gg)
    by *= np.exp(2j * np.pi * dws[:, None] * p1y[None, :])[:, None, :]
    return ax, by


def _lam_to_t(a, kidx, M, qq, tt, nthreads=1, chunk=32):
    """``out[r, w, j] = sum_l a[w, r, l] exp(2 pi i (k_l / M) t_j) / M`` at
    ``t_j = -tt + j / qq``, ``j < 2 tt qq + 1``: one inverse FFT of length ``M qq`` per row
    (``(k / M)(j / qq) = k j / (M qq)``), instead of a dense (lam x t) matrix product.

    Parameters
    ----------
    a : ndarray (nw, R, nl) complex128
    kidx : ndarray (nl,) int64, integer frequencies ``k = lam M`` of the columns of ``a``
    M, qq : int; tt : float (integer-valued)

    Returns
    -------
    ndarray (R, nw, nt) complex128
    """
    import scipy.fft as sf

    nw, R, nl = a.shape
    N = int(M) * int(qq)
    nt = int(2 * tt * qq) + 1
    cols = np.arange(nt) % N  # the transform is periodic in t with period M
    pos = kidx % N
    shift = np.exp(-2j * np.pi * kidx * tt / M) / M
    out = np.empty((R, nw, nt), dtype=np.complex128)
    for c0 in range(0, nw, chunk):
        c1 = min(nw, c0 + chunk)
        buf = np.zeros(((c1 - c0) * R, N), dtype=np.complex128)
        buf[:, pos] = a[c0:c1].reshape(-1, nl) * shift
        res = sf.ifft(buf, axis=1, norm="forward", workers=max(1, int(nthreads)),
                      overwrite_x=True)
        out[:, c0:c1] = res[:, cols].reshape(c1 - c0, R, nt).transpose(1, 0, 2)
    return out


def build_wkernel_tables(npix_x, npix_y, cell_rad, nxp, nyp, dw_min, dw_max, epsilon, W, beta,
                         dtype=np.complex128, nthreads=1):
    """Tables of the combined kernel for residuals ``dw`` in ``[dw_min, dw_max]``; see
    :func:`_build_wkernel_tables` for the parameters. The BLAS / LAPACK calls of the
    construction run on at most ``nthreads`` OpenBLAS threads (radimg/kernels/_blas.py)."""
    with blas_threads(nthreads):
        return _build_wkernel_tables(npix_x, npix_y, cell_rad, nxp, nyp, dw_min, dw_max,
                                     epsilon, W, beta, dtype=dtype, nthreads=nthreads)


def _build_wkernel_tables(npix_x, npix_y, cell_rad, nxp, nyp, dw_min, dw_max, epsilon, W,
                          beta, dtype=np.complex128, nthreads=1):
    """Tables of the combined kernel for residuals ``dw`` in ``[dw_min, dw_max]``.

    Parameters
    ----------
    npix_x, npix_y : int
        Image size; the field edge fixes where ``Psi`` must be exact.
    cell_rad : float
    nxp, nyp : int
        Padded grid size (cells).
    dw_min, dw_max : float
        Range of residual w (wavelengths) the tables must cover.
    epsilon : float
        Accuracy budget of the w-part (SVD rank, table sampling, truncation).
    W, beta : ES kernel parameters (radimg.kernels.es.es_parameters).
    dtype : complex64 | complex128
        Storage precision of the tables.
    nthreads : int
        Threads of the FFTs that evaluate the tables.

    Returns
    -------
    WKernelTables

    Notes
    -----
    Long because it is one numerical recipe that reads best in sequence: field geometry and
    lam sampling, the error budget, the dw sampling rate, the low-rank (SVD) cross term and
    its rank search, then a coarse and a fine tabulation; each step feeds the next's
    tolerances, and the hot loops are already separate numba kernels.
    """
    eps = float(epsilon)
    (_, cx, bx), (_, cy, by) = _clamp_geometry(npix_x, npix_y, cell_rad, nxp, nyp)
    slx, sly = field_slopes(npix_x, npix_y, cell_rad, nxp, nyp, lam_eff=0.8)
    dw_min, dw_max = float(min(dw_min, 0.0)), float(max(dw_max, 0.0))
    h = max(-dw_min, dw_max)
    # margin: at the support cut of _THR_SCALE even small |dw| reach ~6 cells past W / 2
    tmax = math.ceil(0.5 * W + h * max(slx, sly) + 16.0)
    # lam sampling: spacing 1/M with M > 2 tmax so the periodic images of K stay outside
    M = int(2 * tmax + 8)
    nl = int(_LAM_MAX * M)
    lam = np.arange(-nl, nl + 1) / M
    gx = es_correction(lam, W, beta)
    g0 = gx[nl]
    # Psi along each axis (clamped outside the field), and the cross term
    sx = _clamp(np.abs(lam) * nxp * cell_rad, cx, bx)
    sy = _clamp(np.abs(lam) * nyp * cell_rad, cy, by)
    p1x = np.sqrt(1.0 - sx * sx) - 1.0
    p1y = np.sqrt(1.0 - sy * sy) - 1.0
    cross = (np.sqrt(1.0 - sx[:, None] ** 2 - sy[None, :] ** 2) - 1.0) - p1x[:, None] - p1y[None, :]
    gf = es_correction([(npix_x // 2) / nxp], W, beta)[0] * es_correction(
        [(npix_y // 2) / nyp], W, beta)[0] / g0**2
    tol_abs = 0.25 * eps * gf * g0 * g0  # absolute error allowed in T (peak g0^2)
    ga = np.abs(gx)
    rel = ga * g0 > 1e-3 * tol_abs  # where T can matter at all
    # take the mid-range of Psi1 out as a scalar phase: halves the oscillation in dw
    ox = 0.5 * (p1x[rel].max() + p1x[rel].min())
    oy = 0.5 * (p1y[rel].max() + p1y[rel].min())
    p1x, p1y = p1x - ox, p1y - oy
    # table sampling from the 4-point Lagrange error (3/128) (2 pi f h)^4, weighted by |T|
    lag = 3.0 / 128.0
    tol_i = 0.5 * tol_abs
    wgt4 = (lag * ga[rel] * g0 / tol_i) ** 0.25
    q = int(max(8, math.ceil(np.max(2.0 * np.pi * np.abs(lam[rel]) * wgt4))))
    rate = max(np.max(np.abs(p1x[rel]) * wgt4), np.max(np.abs(p1y[rel]) * wgt4),
               np.max(np.abs(cross[np.ix_(rel, rel)]) * (lag * np.outer(ga[rel], ga[rel])
                                                       / tol_i) ** 0.25), 1e-9)
    ddw = 1.0 / (2.0 * np.pi * rate)
    nw = int(math.ceil((dw_max - dw_min) / ddw)) + 5
    dw0 = dw_min - 2.0 * ddw
    dws = dw0 + ddw * np.arange(nw)
    # low-rank cross term over the dw range: rows l, columns (m, dw)
    nc = 12
    dws_c = 0.5 * (dw_min + dw_max) + 0.5 * (dw_max - dw_min) * np.cos(
        np.pi * (np.arange(nc) + 0.5) / nc)
    ir = np.nonzero(rel)[0]
    E = np.exp(2j * np.pi * dws_c[None, None, :] * cross[np.ix_(ir, ir)][:, :, None])
    E *= ga[ir][:, None, None] * gx[ir][None, :, None]
    E = E.reshape(ir.size, -1)
    # left singular vectors of E from the SVD of the small triangle R^H of E^H = Q R (LAPACK's
    # complex SVD of the wide matrix is needlessly slow, seconds, under threaded OpenBLAS; the
    # eigenvectors of the Gram matrix E E^H square the condition number, so singular values
    # below ~1e-8 of the largest drown in roundoff and the rank search at epsilon 1e-6 ran to
    # 150 terms where 9 meet it)
    V, sv, _ = np.linalg.svd(np.linalg.qr(E.conj().T, mode="r").conj().T)
    rank = max(1, int(np.sum(sv > 0.5 * tol_abs)))
    while rank > 1:  # smallest rank whose max-abs reconstruction error meets the budget
        Vr = V[:, :rank - 1]
        if np.abs(E - Vr @ (Vr.conj().T @ E)).max() > 0.5 * tol_abs:
            break
        rank -= 1
    while rank < V.shape[1]:
        Vr = V[:, :rank]
        if np.abs(E - Vr @ (Vr.conj().T @ E)).max() <= 0.5 * tol_abs:
            break
        rank += 1
    U = V[:, :rank] * np.sign(gx[ir])[:, None]  # E used |g| on the rows
    # Per dw node, the l- and m-factors of the R terms (both table passes share them):
    # ax[w, r, l] = exp(2 pi i dw p1x(l)) U[l, r]; by[w, r, m] = exp(2 pi i dw p1y(m)) *
    # sum_l conj(U[l, r]) g(l) g(m) exp(2 pi i dw c(l, m)).
    ax, by = _node_terms(dws, U, p1x[ir], p1y[ir], cross[np.ix_(ir, ir)],
                         gx[ir][:, None] * gx[ir][None, :])
    kidx = np.rint(lam[ir] * M).astype(np.int64)  # lam = k / M on the tabulated band

    def tabulate(qq, tt):
        """A_r(t; dw) and B_r(t; dw) on t = -tt + k / qq, all dw nodes: (R, nw, nt)."""
        t_ = -tt + np.arange(int(2 * tt * qq) + 1) / qq
        return _lam_to_t(ax, kidx, M, qq, tt, nthreads), _lam_to_t(by, kidx, M, qq, tt,
                                                                  nthreads), t_

    # a coarse pass finds the supports, so the fine tables span only what is used
    tab_x, tab_y, t = tabulate(4, tmax)
    hs_x, hs_y, _ = _half_supports(tab_x, tab_y, t, dws, W, tol_abs, tmax)
    tfine = float(math.ceil(max(hs_x.max(), hs_y.max()) + 0.25 + 3.0))
    # The coarse pass must see the envelope fall inside its table; the fine table may then
    # reach a few cells further (up to M / 2, where periodic images would start to overlap).
    if max(hs_x.max(), hs_y.max()) > tmax - 1.0 or 2.0 * tfine > M:
        raise RuntimeError(f"w-kernel half support {max(hs_x.max(), hs_y.max()):.1f} exceeds "
                           f"its table ({tmax}); this is a bug in the tmax estimate")
    tmax = tfine
    tab_x, tab_y, t = tabulate(q, tmax)
    hs_x, hs_y, _ = _half_supports(tab_x, tab_y, t, dws, W, tol_abs, tmax)
    if max(hs_x.max(), hs_y.max()) > tmax - 2.0:
        raise RuntimeError("w-kernel support beyond its table; this is a bug")
    px = np.arange(npix_x) - npix_x // 2
    py = np.arange(npix_y) - npix_y // 2
    return WKernelTables(
        tab_x=np.ascontiguousarray(tab_x, dtype=dtype),
        tab_y=np.ascontiguousarray(tab_y, dtype=dtype),
        hs_x=hs_x, hs_y=hs_y, dw0=float(dw0), ddw=float(ddw), tmax=float(tmax), q=q,
        psi0=float(ox + oy),
        corr_x=es_correction(px / nxp, W, beta), corr_y=es_correction(py / nyp, W, beta),
        rank=rank, W=int(W), beta=float(beta),
    )


# ----------------------------------------------------------------------------- numba


# The scalar pieces, shared with the CUDA twins (radimg/kernels/scalar.py).
_dw_node = _scalar.CPU.dw_node
_support = _scalar.CPU.support
_fill_1d = _scalar.CPU.fill_1d
_sample_setup = _scalar.CPU.wproject_setup
_sample_uvw = _scalar.CPU.sample_uvw


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _degrid_kernel(uvw, fscale, grid, idx, wk, xs, ys, tab_x, tab_y, hs_x, hs_y, dw0, ddw,
                   tmax, q, psi0, smax, out, out2d, to2d):
    nchan = fscale.size
    nyp, nxp = grid.shape
    R = tab_x.shape[0]
    nchunk = (idx.size + 255) // 256
    for c in numba.prange(nchunk):
        ka = np.empty((R, smax), dtype=tab_x.dtype)
        kb = np.empty((R, smax), dtype=tab_x.dtype)
        gtmp = np.empty(smax, dtype=grid.dtype)
        for n in range(c * 256, min(idx.size, (c + 1) * 256)):
            row, ch, flip, dw, iw, fw, Sx, Sy, ox, oy, jx, jy = _sample_setup(
                uvw, fscale, nchan, idx[n], wk, xs, ys, dw0, ddw, hs_x, hs_y)
            _fill_1d(tab_x, iw, fw, ox, Sx, tmax, q, ka)
            _fill_1d(tab_y, iw, fw, oy, Sy, tmax, q, kb)
            acc = 0j
            x0 = jx % nxp
            wrap = x0 + Sx > nxp
            for b in range(Sy):
                yy = (jy + b) % nyp
                grow = grid[yy]
                if wrap:
                    for a in range(Sx):
                        gtmp[a] = grow[(x0 + a) % nxp]
                else:
                    for a in range(Sx):
                        gtmp[a] = grow[x0 + a]
                for r in range(R):
                    s_ = 0j
                    kar = ka[r]
                    for a in range(Sx):
                        s_ += gtmp[a] * kar[a]
                    acc += s_ * kb[r, b]
            ph = 2.0 * np.pi * dw * psi0
            acc *= complex(math.cos(ph), math.sin(ph))
            if flip:
                acc = acc.conjugate()
            if to2d:
                out2d[row, ch] = acc
            else:
                out[n] = acc


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _grid_kernel(uvw, fscale, vis, weight, use_weight, idx, tile_ptr, colour_ptr, wk, xs, ys,
                 tab_x, tab_y, hs_x, hs_y, dw0, ddw, tmax, q, psi0, smax, grid):
    nchan = fscale.size
    nyp, nxp = grid.shape
    R = tab_x.shape[0]
    for col in range(4):
        t0 = colour_ptr[col]
        t1 = colour_ptr[col + 1]
        for tt in numba.prange(t1 - t0):
            tile = t0 + tt
            ka = np.empty((R, smax), dtype=tab_x.dtype)
            kb = np.empty((R, smax), dtype=tab_x.dtype)
            krow = np.empty(smax, dtype=grid.dtype)
            for n in range(tile_ptr[tile], tile_ptr[tile + 1]):
                row, ch, flip, dw, iw, fw, Sx, Sy, ox, oy, jx, jy = _sample_setup(
                    uvw, fscale, nchan, idx[n], wk, xs, ys, dw0, ddw, hs_x, hs_y)
                val = complex(vis[row, ch])
                if use_weight:
                    val *= weight[row, ch]
                if flip:
                    val = val.conjugate()
                ph = 2.0 * np.pi * dw * psi0
                val *= complex(math.cos(ph), -math.sin(ph))
                _fill_1d(tab_x, iw, fw, ox, Sx, tmax, q, ka)
                _fill_1d(tab_y, iw, fw, oy, Sy, tmax, q, kb)
                for r in range(R):
                    for a in range(Sx):
                        ka[r, a] = ka[r, a].conjugate()
                x0 = jx % nxp
                wrap = x0 + Sx > nxp
                for b in range(Sy):
                    yy = (jy + b) % nyp
                    kbv = kb[0, b].conjugate() * val
                    kar = ka[0]
                    for a in range(Sx):
                        krow[a] = kbv * kar[a]
                    for r in range(1, R):
                        kbv = kb[r, b].conjugate() * val
                        kar = ka[r]
                        for a in range(Sx):
                            krow[a] += kbv * kar[a]
                    grow = grid[yy]
                    if wrap:
                        for a in range(Sx):
                            grow[(x0 + a) % nxp] += krow[a]
                    else:
                        for a in range(Sx):
                            grow[x0 + a] += krow[a]


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _supports_kernel(uvw, fscale, idx, wk_of, dw0, ddw, hs_x, hs_y, out_x, out_y):
    nchan = fscale.size
    for n in numba.prange(idx.size):
        row, ch, flip, u, v, w = _sample_uvw(uvw, fscale, nchan, idx[n])
        iw, fw = _dw_node(w - wk_of[n], dw0, ddw, hs_x.size)
        out_x[n] = _support(hs_x, iw, fw)
        out_y[n] = _support(hs_y, iw, fw)


@numba.njit(**JIT_OPTIONS)
def _chirp_row(nm1_row, wk, cr, ci):
    """cr + i ci = exp(2 pi i wk (n - 1)) along one quadrant row (vectorised)."""
    for ax in range(nm1_row.size):
        c, s = cis_cycles(wk * nm1_row[ax])
        cr[ax] = c
        ci[ax] = s


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _quadrant_chirp_kernel(nm1q, wk, out):
    ny, nx = nm1q.shape
    for ay in numba.prange(ny):
        cr = np.empty(nx)
        ci = np.empty(nx)
        _chirp_row(nm1q[ay], wk, cr, ci)
        for ax in range(nx):
            out[ay, ax] = complex(cr[ax], ci[ax])


@numba.njit(**JIT_OPTIONS)
def _scale_row(cy_inv, corr_x, use_amp, v):
    """v[ix] (pixel row, image order) *= 1 / (g(l) g(m)) when ``use_amp`` (vectorised).

    No ``1 / n``: the model is in Jy/pixel, whose solid-angle Jacobian ``dl dm / n`` cancels
    the measurement equation's ``1 / n`` (docs/internals.md, "Units and conventions")."""
    if not use_amp:
        return
    nx = v.size
    for ix in range(nx):
        v[ix] *= cy_inv / corr_x[ix]


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _image_to_pad_kernel(image, nm1q, wk, corr_y, corr_x, use_amp, pad_r):
    """pad[-py mod nyp, px mod nxp] = image[iy, ix] (/ (g g)) exp(2 pi i wk (n - 1)).

    ``pad_r`` is the padded grid's interleaved real view (nyp, 2 nxp): the image row's two
    halves are two contiguous runs of it (px >= 0 from column 0, px < 0 ending at nxp)."""
    ny, nx = image.shape
    nyp = pad_r.shape[0]
    nxp = pad_r.shape[1] // 2
    cy, cx = ny // 2, nx // 2
    nq = nm1q.shape[1]
    for ay in numba.prange(nm1q.shape[0]):
        cr = np.empty(nq)
        ci = np.empty(nq)
        v = np.empty(nx)
        _chirp_row(nm1q[ay], wk, cr, ci)
        for half in range(2):
            if half == 0:
                iy = cy + ay
            else:
                iy = cy - ay
                if ay == 0:
                    continue
            if iy < 0 or iy >= ny:
                continue
            for ix in range(nx):
                v[ix] = image[iy, ix]
            _scale_row(1.0 / corr_y[iy], corr_x, use_amp, v)
            prow = pad_r[(cy - iy) % nyp]
            for ax in range(nx - cx):  # px = ax >= 0 -> grid column ax
                x = v[cx + ax]
                prow[2 * ax] = x * cr[ax]
                prow[2 * ax + 1] = x * ci[ax]
            for ax in range(1, cx + 1):  # px = -ax -> grid column nxp - ax
                x = v[cx - ax]
                j = 2 * (nxp - ax)
                prow[j] = x * cr[ax]
                prow[j + 1] = x * ci[ax]


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _pad_to_image_kernel(full_r, nm1q, wk, corr_y, corr_x, use_amp, out):
    """out[iy, ix] += Re[full[-py mod nyp, px mod nxp] conj(exp(2 pi i wk (n - 1)))]
    (/ (g g)); ``full_r`` the interleaved real view as in :func:`_image_to_pad_kernel`."""
    ny, nx = out.shape
    nyp = full_r.shape[0]
    nxp = full_r.shape[1] // 2
    cy, cx = ny // 2, nx // 2
    nq = nm1q.shape[1]
    for ay in numba.prange(nm1q.shape[0]):
        cr = np.empty(nq)
        ci = np.empty(nq)
        v = np.empty(nx)
        _chirp_row(nm1q[ay], wk, cr, ci)
        for half in range(2):
            if half == 0:
                iy = cy + ay
            else:
                iy = cy - ay
                if ay == 0:
                    continue
            if iy < 0 or iy >= ny:
                continue
            frow = full_r[(cy - iy) % nyp]
            for ax in range(nx - cx):
                v[cx + ax] = frow[2 * ax] * cr[ax] + frow[2 * ax + 1] * ci[ax]
            for ax in range(1, cx + 1):
                j = 2 * (nxp - ax)
                v[cx - ax] = frow[j] * cr[ax] + frow[j + 1] * ci[ax]
            _scale_row(1.0 / corr_y[iy], corr_x, use_amp, v)
            orow = out[iy]
            for ix in range(nx):
                orow[ix] += v[ix]


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _scale_image_kernel(img, corr_y, corr_x):
    for iy in numba.prange(img.shape[0]):
        _scale_row(1.0 / corr_y[iy], corr_x, True, img[iy])


def quadrant_chirp(nm1q, wk):
    """``exp(2 pi i wk (n - 1))`` on one quadrant ``[|py|, |px|]`` of the image: ``n`` depends
    on ``l^2, m^2`` only, so a quarter of the phases serve every pixel."""
    out = np.empty(nm1q.shape, dtype=np.complex128)
    _quadrant_chirp_kernel(nm1q, float(wk), out)
    return out


def _real_view(a):
    if not a.flags.c_contiguous:
        raise ValueError("the padded grid must be C-contiguous")
    return a.view(np.float32 if a.dtype == np.complex64 else np.float64)


def image_to_pad(image, nm1q, wk, corr_y, corr_x, pad, *, scale=True):
    """``pad[-py mod nyp, px mod nxp] = image * exp(2 pi i wk (n - 1)) / (g(l) g(m))``
    (S_k and Z, eq. 4); other cells of ``pad`` are not touched.

    Parameters
    ----------
    image : ndarray (npix_y, npix_x) float64
    nm1q : ndarray (npix_y // 2 + 1, npix_x // 2 + 1) float64, ``n - 1`` at ``|py|, |px|``
    wk : float, stack centre (wavelengths)
    corr_y, corr_x : ndarray (npix_y,), (npix_x,) float64, ``g`` at the image rows / columns
    pad : ndarray (nyp, nxp) complex64 | complex128, C-contiguous
    scale : bool, False when ``image`` already carries ``1 / (g g)`` (:func:`scale_image`)
    """
    _image_to_pad_kernel(np.ascontiguousarray(image, dtype=np.float64), nm1q, float(wk),
                         corr_y, corr_x, bool(scale), _real_view(pad))
    return pad


def pad_to_image(full, nm1q, wk, corr_y, corr_x, out, *, scale=True):
    """``out += Re[full[-py mod nyp, px mod nxp] conj(exp(2 pi i wk (n - 1)))] / (g g)``
    (Z^H, S_k^H); without the ``1 / (g g)`` when ``scale`` is False (apply it once to the
    sum over stacks with :func:`scale_image`). Arguments as :func:`image_to_pad`."""
    _pad_to_image_kernel(_real_view(full), nm1q, float(wk), corr_y, corr_x, bool(scale), out)
    return out


def scale_image(img, corr_y, corr_x):
    """``img *= 1 / (g(l) g(m))`` in place (float64 (npix_y, npix_x)); returns ``img``."""
    _scale_image_kernel(img, corr_y, corr_x)
    return img


# ----------------------------------------------------------------------------- wrappers


def _fscale(freq):
    return np.ascontiguousarray(np.asarray(freq, dtype=np.float64) / C_LIGHT)


def sample_supports(uvw, freq, idx, wk_of, tables: WKernelTables):
    """Kernel support (cells along x, y) of each sample ``idx`` (flat ``row * nchan + chan``)
    whose stack centre is ``wk_of`` (same length as idx): the per-sample load of eq. 8."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    ox = np.empty(idx.size, np.int32)
    oy = np.empty(idx.size, np.int32)
    _supports_kernel(np.ascontiguousarray(uvw, dtype=np.float64), _fscale(freq), idx,
                     np.ascontiguousarray(wk_of, dtype=np.float64), tables.dw0, tables.ddw,
                     tables.hs_x, tables.hs_y, ox, oy)
    return ox, oy


def support_max(tables):
    return int(math.ceil(2.0 * max(tables.hs_x.max(), tables.hs_y.max()))) + 1


def degrid_wproject(uvw, freq, grid, idx, wk, cell_rad, tables: WKernelTables, *, out=None):
    """Degrid samples ``idx`` of one stack (centre ``wk``) off its padded grid.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    grid : ndarray (nyp, nxp) complex64 | complex128
        ``G[jy, jx] = sum f exp(2 pi i (u_jx l + v_jy m))`` (see radimg/ops/wproject.py).
    idx : ndarray (nsel,) int64, flat sample index ``row * nchan + chan``
    wk : float, stack centre (wavelengths, w >= 0 after reflection)
    out : ndarray (row, chan) complex, optional
        When given, results are written to ``out[row, chan]`` and ``out`` is returned.

    Returns
    -------
    ndarray (nsel,) complex (grid dtype), or ``out``.
    """
    nyp, nxp = grid.shape
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    to2d = out is not None
    flat = np.empty(0 if to2d else idx.size, dtype=grid.dtype)
    o2 = out if to2d else np.empty((1, 1), dtype=grid.dtype)
    _degrid_kernel(np.ascontiguousarray(uvw, dtype=np.float64), _fscale(freq), grid, idx,
                   float(wk), nxp * cell_rad, nyp * cell_rad, tables.tab_x, tables.tab_y,
                   tables.hs_x, tables.hs_y, tables.dw0, tables.ddw, tables.tmax, tables.q,
                   tables.psi0, support_max(tables), flat, o2, to2d)
    return out if to2d else flat


def tile_layout(uvw, freq, idx, wk, cell_rad, nxp, nyp, tables: WKernelTables):
    """Sort samples into grid tiles coloured so same-colour tiles never share a grid cell.

    Tiles are at least the largest support wide with an even count per axis (one tile when
    the grid is too small), a sample belongs to the tile of its first footprint cell, so it
    touches that tile and the next along each axis only.

    Returns
    -------
    idx_sorted : ndarray int64, tile_ptr : ndarray (ntiles + 1,) int64 (tiles in colour
    order), colour_ptr : ndarray (5,) int64 (tile ranges of the 4 colours)
    """
    idx = np.asarray(idx, dtype=np.int64)
    smax = support_max(tables)
    fs = _fscale(freq)
    nchan = fs.size
    row, ch = np.divmod(idx, nchan)
    u = uvw[row, 0] * fs[ch]
    v = uvw[row, 1] * fs[ch]
    w = uvw[row, 2] * fs[ch]
    sgn = np.where(w < 0, -1.0, 1.0)
    sx, sy = sample_supports(uvw, freq, idx, np.full(idx.size, wk), tables)
    jx = np.mod(np.ceil(sgn * u * nxp * cell_rad - 0.5 * sx).astype(np.int64), nxp)
    jy = np.mod(np.ceil(sgn * v * nyp * cell_rad - 0.5 * sy).astype(np.int64), nyp)

    def ntiles(n):
        k = 2 * (n // (2 * (smax + 1)))
        return k if k >= 2 else 1

    ntx, nty = ntiles(nxp), ntiles(nyp)
    tx = (jx * ntx) // nxp
    ty = (jy * nty) // nyp
    colour = (ty % 2) * 2 + (tx % 2)
    # tile number in colour-major order
    tiles_per_colour = []
    order_tiles = []
    for c in range(4):
        ys_ = np.arange(c // 2, nty, 2) if nty > 1 else (np.arange(1) if c // 2 == 0 else np.arange(0))
        xs_ = np.arange(c % 2, ntx, 2) if ntx > 1 else (np.arange(1) if c % 2 == 0 else np.arange(0))
        tl = (ys_[:, None] * ntx + xs_[None, :]).ravel()
        order_tiles.append(tl)
        tiles_per_colour.append(tl.size)
    order_tiles = np.concatenate(order_tiles)
    rank_of_tile = np.empty(ntx * nty, np.int64)
    rank_of_tile[order_tiles] = np.arange(order_tiles.size)
    del colour
    key = rank_of_tile[ty * ntx + tx]
    perm = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=order_tiles.size)
    tile_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    colour_ptr = np.concatenate([[0], np.cumsum(tiles_per_colour)]).astype(np.int64)
    return idx[perm], tile_ptr, colour_ptr


def grid_wproject(uvw, freq, vis, idx_sorted, tile_ptr, colour_ptr, wk, cell_rad,
                  tables: WKernelTables, grid, *, weight=None):
    """Grid samples of one stack onto ``grid`` (accumulates), race-free across threads.

    Parameters
    ----------
    vis : ndarray (row, chan) complex
    idx_sorted, tile_ptr, colour_ptr : from :func:`tile_layout`
    grid : ndarray (nyp, nxp) complex64 | complex128, accumulated in place
    weight : ndarray (row, chan) real, optional (multiplies vis)
    """
    use_w = weight is not None
    wgt = weight if use_w else np.ones((1, 1), dtype=np.float64)
    nyp, nxp = grid.shape
    _grid_kernel(np.ascontiguousarray(uvw, dtype=np.float64), _fscale(freq), vis, wgt, use_w,
                 idx_sorted, tile_ptr, colour_ptr, float(wk), nxp * cell_rad, nyp * cell_rad,
                 tables.tab_x, tables.tab_y, tables.hs_x, tables.hs_y, tables.dw0, tables.ddw,
                 tables.tmax, tables.q, tables.psi0, support_max(tables), grid)
    return grid
