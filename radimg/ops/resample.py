"""Small inversion: grid on the coarsest cells the data allow, resample exactly to the user's.

The uv grid of an operator spans ``1 / cell``; when the data (and the w-term) only reach a
fraction of that, most of the grid, and most of every w-plane's FFT, is zeros. The
:class:`SmallInversion` layer wraps any operator built on a coarser image of the same
field (plus a margin) and maps between that image and the requested one by band-limited
interpolation through the image spectrum, in both directions:

    hdot:  D_fine  = R D_coarse            R   = Crop  B_f  P   F_c  Win / N_c
    dot:   V       = Phi_c (R^H x_fine)    R^H = Win  B_c  P^H F_f  Crop^H / N_c

``F`` / ``B`` are unnormalised forward / backward DFTs of the coarse (``N_c`` points) and fine
(``N_f`` points) periods, ``P`` zero-pads the coarse band ``|k| <= K`` into the fine spectrum
(``P^H`` crops it), ``Crop`` takes the requested pixels out of the fine period and ``Win`` is
a window on the coarse image. ``R^H`` is the exact adjoint of ``R``, so ``dot`` / ``hdot`` stay
adjoint to rounding, and ``dot`` is as accurate as ``hdot`` (its error per sample is ``R``'s
error on that sample's fringe).

Why a window, and which one. The dirty image is not periodic over any period, so plain
Fourier interpolation of it rings at the period's edges. Both grids therefore span a period
``P = N_f cell`` a little larger than the field, and the coarse image is multiplied by a
flat-top window ``Win``: exactly 1 over the requested pixels, falling smoothly to exactly 0
at ``+-P/2`` (an indicator convolved with an exponential-of-semicircle bump of half-width
``delta``, half the margin). ``Win * fringe`` is then periodic and its spectrum is the
fringe's frequency smeared by the window's spectrum ``sinc * bump_hat``, which decays fast
beyond ``~ beta / (2 pi delta)``; where ``Win = 1`` nothing is divided back, so operator
errors are not amplified.

Which band. A sample's fringe ``exp(-2 pi i (u l + v m + w (n - 1)))`` is not band-limited
to ``|u|``: its local frequency along ``l`` is ``u - w l / n``, so over the period it reaches
``F_x = max_k (|u_k| + |w_k| s_x)`` with ``s_x = max |l / n|`` at the period's corner
(:func:`local_frequency_max`; ``F_y`` likewise). The coarse band must hold ``F P`` plus the
window's spectral spread ``K_w`` (measured, :func:`window_margin`): the interpolation error
of a unit fringe is at most ``2 sum_{|kappa| >= K_w} |c_kappa| <= (4 / pi) sum M(kappa
delta / P) / kappa`` over its out-of-band Fourier coefficients, ``M`` the running maximum of
the bump's normalised transform; ``K_w`` is the smallest margin that keeps this below
``INTERP_SHARE * epsilon`` of the peak. The inner operator keeps the full ``epsilon``.

The coarse image (``N_c`` pixels of ``P / N_c``) is the image the wrapped operator makes:
every w-plane FFT and the kernel tables shrink with it; the fine period is transformed once
per ``dot`` / ``hdot``, pruned to the rows and columns that carry data.
:func:`choose_geometry` picks the period from a cost model (pixels times the w range the
extended field needs) and returns None when the data need the full grid: the layer is then
not used at all. The imaging-weight density grid is not affected (it stays at the user's
geometry, as WSClean's does).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from radimg.constants import C_LIGHT
from radimg.kernels.es import es_corrections, leggauss
from radimg.ops.fft import good_size

__all__ = [
    "SmallGeometry",
    "SmallInversion",
    "candidate_periods",
    "choose_geometry",
    "local_frequency_max",
    "small_inversion",
    "tabulate_windows",
    "window_margin",
]

#: Share of epsilon for the resampling error (the wrapped operator keeps all of epsilon:
#: it measures <= 0.25 epsilon, so the sum stays well inside epsilon).
INTERP_SHARE = 0.1
#: Only use the layer when the cost model predicts at least this saving.
MIN_GAIN = 0.85
_BETAS = np.arange(6.0, 62.0, 4.0)  # window bump shapes tried
_NQUAD = 320  # Gauss-Legendre nodes of every bump transform (see _bump_envelope)
_XI_STEP = 0.02  # tabulation step of the bump's transform (cycles per bump half-width)
_EXTENSIONS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4)


# ----------------------------------------------------------------------------- window
@functools.cache
def _bump_envelopes():
    """``{beta: (env, xi_max)}`` for every bump shape of ``_BETAS``: ``env`` the running
    maximum from the right of ``|bump_hat(xi)| / bump_hat(0)`` on the grid ``xi = k *
    _XI_STEP`` (cycles per unit of the bump's half-width, bump on [-1, 1]) up to ``xi_max``.
    Beyond it the envelope decays at least like ``1 / xi`` (the bump's edge jump
    ``exp(-beta)`` dominates there).

    ``bump_hat`` is :func:`radimg.kernels.es.es_correction` ``(xi, 2, beta)`` with one
    Gauss-Legendre rule of ``_NQUAD`` nodes on theta for every beta: it integrates
    ``cos(2 pi xi sin(theta)) exp(beta cos(theta))`` to rounding with ``2 pi xi_max + beta +
    64`` nodes, at most 313 for the betas tried (equal to the 512-node rule to 2e-15). The
    betas' xi grids are prefixes of one grid, so the cosines are computed once for all of
    them (one matrix product): 0.07 -> 0.01 s of every job's set-up, on every rank.
    """
    betas = np.asarray(_BETAS, dtype=np.float64)
    xi = np.arange(0.0, float(betas.max()) / np.pi + 12.0 + _XI_STEP, _XI_STEP)
    ft_all = np.abs(es_corrections(xi, 2, betas, _NQUAD))  # (xi, beta)
    out = {}
    for b, beta in enumerate(betas):
        n = np.arange(0.0, beta / np.pi + 12.0 + _XI_STEP, _XI_STEP).size  # this beta's grid
        ft = ft_all[:n, b] / ft_all[0, b]
        out[float(beta)] = (np.maximum.accumulate(ft[::-1])[::-1], float(xi[n - 1]))
    return out


def _bump_envelope(beta):
    """``(env, xi_max)`` of bump shape ``beta`` (one of ``_BETAS``; :func:`_bump_envelopes`)."""
    return _bump_envelopes()[float(beta)]


def tabulate_windows():
    """Tabulate every window bump shape :func:`window_margin` tries (cached per process),
    ahead of the first call (radimg.parallel.choose: ranks that wait for rank 0's decision
    do it meanwhile)."""
    _bump_envelopes()


@functools.lru_cache(maxsize=256)
def window_margin(ramp_frac, target):
    """Smallest spectral margin (coarse spectral cells) for a window whose ramp half-width is
    ``ramp_frac`` of the period, and the bump shape ``beta`` that gives it. Memoised (a pure
    function of its two numbers): the mode decision asks for 7 distinct pairs 56 times on
    the real MWA CLEAN job, 0.035 s of rank 0's set-up.

    The bound (module docstring): ``(4 / pi) sum_{kappa >= K} M(kappa * ramp_frac) / kappa
    <= target``, ``M`` the bump's transform envelope, with its ``1 / xi`` tail beyond the
    tabulated range added analytically. Returns ``(K, beta)``; ``K`` is ``inf`` when no
    bump reaches ``target``.
    """
    best = (math.inf, float(_BETAS[0]))
    for beta in _BETAS:
        env, xi_max = _bump_envelope(float(beta))
        kmax = int(xi_max / ramp_frac)
        kappa = np.arange(1, kmax + 1, dtype=np.float64)
        idx = np.minimum((kappa * ramp_frac / _XI_STEP).astype(np.int64), env.size - 1)
        terms = env[idx] / kappa
        tail = env[-1] * xi_max / (ramp_frac * kmax)  # sum beyond kmax of M(xi_max) xi_max/(xi k)
        suffix = (4.0 / np.pi) * (np.cumsum(terms[::-1])[::-1] + tail)
        ok = np.flatnonzero(suffix <= target)
        if ok.size and ok[0] + 1 < best[0]:
            best = (int(ok[0]) + 1, float(beta))
    return best


def _bump_cdf(t, beta):
    """CDF of the ES bump ``exp(beta (sqrt(1 - t^2) - 1))`` on [-1, 1] (normalised), by
    Gauss-Legendre after ``t = sin(theta)`` (smooth integrand)."""
    t = np.clip(np.asarray(t, dtype=np.float64), -1.0, 1.0)
    z, wq = leggauss(64)
    lo = -0.5 * np.pi
    hi = np.arcsin(t)
    half = 0.5 * (hi - lo)
    th = lo + half[..., None] * (z + 1.0)
    f = np.exp(beta * (np.cos(th) - 1.0)) * np.cos(th)
    part = half * (f @ wq)
    z2 = 0.5 * np.pi * (z + 1.0) - 0.5 * np.pi
    total = 0.5 * np.pi * float((np.exp(beta * (np.cos(z2) - 1.0)) * np.cos(z2)) @ wq)
    return part / total


def flat_top(pos, flat, ramp, beta):
    """Window at positions ``pos``: exactly 1 for ``|pos| <= flat``, exactly 0 for
    ``|pos| >= flat + 2 ramp``, smooth between (indicator of ``|pos| <= flat + ramp``
    convolved with the ES bump of half-width ``ramp``)."""
    a = flat + ramp
    pos = np.asarray(pos, dtype=np.float64)
    return _bump_cdf((pos + a) / ramp, beta) - _bump_cdf((pos - a) / ramp, beta)


# ----------------------------------------------------------------------------- geometry
class SmallGeometry(NamedTuple):
    """Fine (requested) and coarse (inner operator) images over one period, per axis."""

    npix_x: int  # requested image
    npix_y: int
    cell_x: float  # requested cells, radians
    cell_y: float
    nf_x: int  # fine period in requested cells (>= npix)
    nf_y: int
    nc_x: int  # coarse image = the inner operator's image, over the same period
    nc_y: int
    band_x: int  # kept spectral band |k| <= band (coarse spectral cells)
    band_y: int
    beta_x: float  # window bump shapes
    beta_y: float
    fmax_x: float  # max local frequency of the data over the period (wavelengths)
    fmax_y: float
    cost_ratio: float  # predicted cost of the coarse operator over the plain one

    @property
    def cell_cx(self):
        return self.nf_x * self.cell_x / self.nc_x

    @property
    def cell_cy(self):
        return self.nf_y * self.cell_y / self.nc_y

    @property
    def cell_c(self):
        """The inner operator's cell: a scalar when square, else ``(cell_cx, cell_cy)``."""
        if self.cell_cx == self.cell_cy:
            return self.cell_cx
        return (self.cell_cx, self.cell_cy)

    def describe(self):
        return {
            "fine_period": [self.nf_y, self.nf_x],
            "coarse_npix": [self.nc_y, self.nc_x],
            "coarse_cell_arcsec": [math.degrees(self.cell_cy) * 3600.0,
                                   math.degrees(self.cell_cx) * 3600.0],
            "band": [self.band_y, self.band_x],
            "fmax_lambda": [self.fmax_y, self.fmax_x],
            "predicted_cost_ratio": self.cost_ratio,
        }


def _half_extent(npix, cell):
    """Largest |offset| of a pixel centre from the phase centre (pixel npix // 2)."""
    return max(npix // 2, npix - 1 - npix // 2) * cell


def candidate_periods(npix_x, npix_y, cell_x, cell_y):
    """Fine periods ``(nf_x, nf_y)`` tried (FFT-friendly, a few percent to 40% beyond the
    image) and the corner slopes ``(s_x, s_y)`` of ``|l / n|``, ``|m / n|`` over each."""
    out = []
    for ext in _EXTENSIONS:
        nf_x = good_size(math.ceil(npix_x * (1.0 + ext)))
        nf_y = good_size(math.ceil(npix_y * (1.0 + ext)))
        if (nf_x, nf_y) in [o[:2] for o in out]:
            continue
        hx, hy = 0.5 * nf_x * cell_x, 0.5 * nf_y * cell_y
        r2 = hx * hx + hy * hy
        if r2 >= 0.98:  # the period must stay well inside the horizon
            continue
        n = math.sqrt(1.0 - r2)
        out.append((nf_x, nf_y, hx / n, hy / n))
    return out


def local_frequency_max(uvw, freq, valid, slopes):
    """``max_k |u_k| + |w_k| s_x`` and ``max_k |v_k| + |w_k| s_y`` for each slope pair.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres
    freq : ndarray (chan,) float64, Hz
    valid : ndarray (row, chan) bool, or None (all samples count)
    slopes : ndarray (ncand, 2) float64, ``(s_x, s_y)``

    Returns
    -------
    ndarray (ncand, 2) float64, wavelengths (0 when no sample counts). Reduce with max
    over ranks for the global value.
    """
    uvw = np.asarray(uvw, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    slopes = np.asarray(slopes, dtype=np.float64).reshape(-1, 2)
    if valid is None:
        fmax = np.full(uvw.shape[0], freq.max() if freq.size else 0.0)
    else:
        valid = np.asarray(valid, dtype=bool)
        fmax = np.where(valid, freq[None, :], 0.0).max(axis=1) if valid.size else np.zeros(0)
    scale = fmax / C_LIGHT
    keep = scale > 0
    if not keep.any():
        return np.zeros((slopes.shape[0], 2))
    au = np.abs(uvw[keep, 0]) * scale[keep]
    av = np.abs(uvw[keep, 1]) * scale[keep]
    aw = np.abs(uvw[keep, 2]) * scale[keep]
    out = np.empty((slopes.shape[0], 2))
    for i, (sx, sy) in enumerate(slopes):
        out[i, 0] = np.max(au + aw * sx)
        out[i, 1] = np.max(av + aw * sy)
    return out


def _wcost(hx, hy):
    """Half range of ``n - 1`` over a (half-extent hx, hy) field: sets the w-plane count."""
    return 1.0 - math.sqrt(max(1e-12, 1.0 - hx * hx - hy * hy))


def choose_geometry(npix_x, npix_y, cell_x, cell_y, epsilon, periods, fmax, *, wterm=True,
                    square=False):
    """Coarse geometry of least predicted cost, or None when the layer would not pay.

    Parameters
    ----------
    npix_x, npix_y, cell_x, cell_y : requested image (cells in radians)
    epsilon : float, operator accuracy (the resampling gets ``INTERP_SHARE`` of it)
    periods : list from :func:`candidate_periods`
    fmax : ndarray (ncand, 2), global :func:`local_frequency_max` for those periods
    wterm : bool, the operator corrects w (its plane count grows with the field's n range)
    square : bool, the inner operator needs square pixels (``wstack-wproject``)

    Pure and deterministic: ranks that pass the same global values get the same geometry.
    """
    if square and (npix_x != npix_y or not math.isclose(cell_x, cell_y, rel_tol=1e-12)):
        return None  # a common coarse cell would need a rational period ratio: not worth it
    target = INTERP_SHARE * float(epsilon)
    lx0, my0 = _half_extent(npix_x, cell_x), _half_extent(npix_y, cell_y)
    plain = npix_x * npix_y * math.log2(npix_x * npix_y) * (
        _wcost(lx0, my0) if wterm else 1.0)
    best = None
    for (nf_x, nf_y, _sx, _sy), (fx, fy) in zip(periods, np.asarray(fmax), strict=True):
        px, py = nf_x * cell_x, nf_y * cell_y
        hx, hy = 0.5 * px, 0.5 * py
        n_min = math.sqrt(1.0 - hx * hx - hy * hy)
        dims = []
        for P, L, F in ((px, lx0, fx), (py, my0, fy)):
            ramp = 0.5 * (0.5 * P - L)
            if ramp <= 0:
                dims = None
                break
            k_w, beta = window_margin(ramp / P, target * n_min)
            if not math.isfinite(k_w):
                dims = None
                break
            band = math.ceil(F * P) + k_w
            dims.append((band, beta))
        if dims is None:
            continue
        (bx, betax), (by, betay) = dims
        nc_x, nc_y = good_size(2 * bx + 2), good_size(2 * by + 2)
        if square:
            nc_x = nc_y = max(nc_x, nc_y)
        if nc_x >= nf_x or nc_y >= nf_y:
            continue
        cost = nc_x * nc_y * math.log2(nc_x * nc_y) * (_wcost(hx, hy) if wterm else 1.0)
        if best is None or cost < best[0]:
            best = (cost, SmallGeometry(
                npix_x=int(npix_x), npix_y=int(npix_y), cell_x=float(cell_x),
                cell_y=float(cell_y), nf_x=int(nf_x), nf_y=int(nf_y), nc_x=int(nc_x),
                nc_y=int(nc_y), band_x=(nc_x - 1) // 2, band_y=(nc_y - 1) // 2,
                beta_x=betax, beta_y=betay, fmax_x=float(fx), fmax_y=float(fy),
                cost_ratio=cost / plain))
    if best is None or best[1].cost_ratio > MIN_GAIN:
        return None
    return best[1]


def geometry_from_samples(uvw, freq, valid, npix_x, npix_y, cell_x, cell_y, epsilon, *,
                          wterm=True, square=False, collectives=None, comm=None):
    """:func:`choose_geometry` from this rank's samples; collective when ``collectives``
    (:class:`radimg.parallel.mpi.Collectives`) or an mpi4py ``comm`` is given: one maximum
    of the local-frequency maxima over the ranks (exact, so in any order)."""
    periods = candidate_periods(npix_x, npix_y, cell_x, cell_y)
    fmax = local_frequency_max(uvw, freq, valid, [(p[2], p[3]) for p in periods])
    fmax = np.ascontiguousarray(fmax)
    if collectives is not None:
        collectives.allreduce(fmax, "max")
    elif comm is not None and comm.Get_size() > 1:
        # a bare communicator (the pipeline's call): the maximum of every rank's copy,
        # gathered with the communicator's own method; no import of radimg.parallel here
        fmax = np.ascontiguousarray(np.max(np.stack(comm.allgather(fmax)), axis=0))
    if not periods:
        return None
    return choose_geometry(npix_x, npix_y, cell_x, cell_y, epsilon, periods, fmax,
                           wterm=wterm, square=square)


# ----------------------------------------------------------------------------- the layer
class SmallInversion:
    """An operator on the requested image made of an operator on a coarser one (module doc).

    ``dot(image)`` / ``hdot(vis, weight)`` take and give images of the requested
    ``(npix_y, npix_x)``; every other attribute (``uvw``, ``weight``, ``row_id``,
    ``redistribute_vis``, ...) is the wrapped operator's. The GPU operators' image methods
    (``psf_image``, ``dirty_image``, ``residual_image``, ``wdot``, ``whdot``) are wrapped the
    same way, on host images.

    Parameters
    ----------
    op : operator on the coarse image ``(geom.nc_y, geom.nc_x)`` of cell ``geom.cell_c``
    geom : SmallGeometry
    nthreads : int, FFT threads
    """

    def __init__(self, op, geom: SmallGeometry, nthreads=1):
        self.op = op
        self.small_geometry = geom
        self.npix_x, self.npix_y = geom.npix_x, geom.npix_y
        self.nthreads = max(1, int(nthreads))
        g = geom
        # Coarse pixel j sits at offset (j - nc // 2) coarse cells; rolled so the phase
        # centre is at index 0 (the DFTs' origin). Same orientation as the fine grid.
        self._cy = (np.arange(g.nc_y) + g.nc_y // 2) % g.nc_y  # rolled index -> image row
        self._cx = (np.arange(g.nc_x) + g.nc_x // 2) % g.nc_x
        self._fy = (np.arange(g.npix_y) - g.npix_y // 2) % g.nf_y  # image row -> fine index
        self._fx = (np.arange(g.npix_x) - g.npix_x // 2) % g.nf_x
        wy = self._window_axis(g.nc_y, g.cell_cy, g.npix_y, g.cell_y, g.nf_y, g.beta_y)
        wx = self._window_axis(g.nc_x, g.cell_cx, g.npix_x, g.cell_x, g.nf_x, g.beta_x)
        # separable window in rolled order (never formed as an image: 8 bytes a pixel)
        self._wy = np.ascontiguousarray(wy[self._cy][:, None])
        self._wx = np.ascontiguousarray(wx[self._cx][None, :])

    @staticmethod
    def _window_axis(nc, cell_c, npix, cell, nf, beta):
        period = nf * cell
        flat = _half_extent(npix, cell)
        ramp = 0.5 * (0.5 * period - flat)
        pos = (np.arange(nc) - nc // 2) * cell_c
        return flat_top(pos, flat, ramp, beta)

    def __getattr__(self, name):
        # only called for attributes this class lacks: the wrapped operator's
        if name == "op":
            raise AttributeError(name)
        return getattr(self.op, name)

    # ------------------------------------------------------------------ resampling
    _CHUNK = 256  # fine-image rows per 1-D transform batch (bounded temporaries)

    def _fine_row_blocks(self):
        """(fine-period rows, image rows) of the two runs that map one onto the other:
        image row ``iy`` is fine index ``(iy - npix_y // 2) mod nf_y``."""
        g = self.small_geometry
        cy = g.npix_y // 2
        return ((g.nf_y - cy, g.nf_y, 0), (0, g.npix_y - cy, cy))

    def to_fine(self, coarse, nthreads=None):
        """``R``: coarse image (nc_y, nc_x) -> requested image (npix_y, npix_x), float64
        for float64 input, float32 otherwise. ``nthreads``: FFT threads (default the
        operator's; a rank that resamples while the others sleep may take their cores).

        Index maps are contiguous runs (rolls), copied as slices, and the last transform
        runs on blocks of :attr:`_CHUNK` rows, so the temporaries stay a few MB beyond the
        half-spectrum (nf_y, band_x + 1); the 1 / N_c normalisation rides on the window."""
        import scipy.fft as sf

        g = self.small_geometry
        wk = self.nthreads if nthreads is None else max(1, int(nthreads))
        coarse = np.asarray(coarse)
        if coarse.shape != (g.nc_y, g.nc_x):
            raise ValueError(f"coarse image must be {(g.nc_y, g.nc_x)}, got {coarse.shape}")
        rdt = np.float64 if coarse.dtype == np.float64 else np.float32
        cdt = np.complex128 if rdt == np.float64 else np.complex64
        # rolled so the phase centre is at index 0 (the DFTs' origin), windowed, normalised
        x = np.roll(coarse.astype(rdt, copy=False), (-(g.nc_y // 2), -(g.nc_x // 2)), (0, 1))
        x *= (self._wy * (1.0 / (g.nc_y * g.nc_x))).astype(rdt)
        x *= self._wx.astype(rdt)
        X = sf.rfft2(x, workers=wk, overwrite_x=True)  # (nc_y, nc_x // 2 + 1)
        del x
        kx, ky = g.band_x, g.band_y
        # axis 0 into the fine period (only the kept columns carry data)
        Y = np.zeros((g.nf_y, kx + 1), dtype=cdt)
        Y[: ky + 1] = X[: ky + 1, : kx + 1]
        Y[g.nf_y - ky :] = X[g.nc_y - ky :, : kx + 1]
        del X
        Y = sf.ifft(Y, axis=0, norm="forward", workers=wk, overwrite_x=True)
        # axis 1: the half-spectrum is zero-padded to nf_x // 2 + 1 by irfft itself
        out = np.empty((g.npix_y, g.npix_x), dtype=rdt)
        cx = g.npix_x // 2
        for f0, f1, i0 in self._fine_row_blocks():
            for a in range(f0, f1, self._CHUNK):
                b = min(f1, a + self._CHUNK)
                z = sf.irfft(Y[a:b], n=g.nf_x, axis=1, norm="forward", workers=wk)
                rows = slice(i0 + a - f0, i0 + b - f0)
                out[rows, :cx] = z[:, g.nf_x - cx :]
                out[rows, cx:] = z[:, : g.npix_x - cx]
        return out

    def to_coarse(self, fine):
        """``R^H``: requested image (npix_y, npix_x) -> coarse image (nc_y, nc_x); the exact
        adjoint of :meth:`to_fine` (same slicing and row blocks)."""
        import scipy.fft as sf

        g, wk = self.small_geometry, self.nthreads
        fine = np.asarray(fine)
        if fine.shape != (g.npix_y, g.npix_x):
            raise ValueError(f"image must be (npix_y, npix_x) = {(g.npix_y, g.npix_x)}")
        rdt = np.float64 if fine.dtype == np.float64 else np.float32
        cdt = np.complex128 if rdt == np.float64 else np.complex64
        kx, ky = g.band_x, g.band_y
        cx = g.npix_x // 2
        Y = np.zeros((g.nf_y, kx + 1), dtype=cdt)
        z = np.zeros((self._CHUNK, g.nf_x), dtype=rdt)
        for f0, f1, i0 in self._fine_row_blocks():
            for a in range(f0, f1, self._CHUNK):
                b = min(f1, a + self._CHUNK)
                rows = slice(i0 + a - f0, i0 + b - f0)
                zz = z[: b - a]
                zz[:, g.nf_x - cx :] = fine[rows, :cx]
                zz[:, : g.npix_x - cx] = fine[rows, cx:]  # the columns between stay 0
                Y[a:b] = sf.rfft(zz, axis=1, workers=wk)[:, : kx + 1]  # unnormalised
        del z
        Y = sf.fft(Y, axis=0, workers=wk, overwrite_x=True)
        X = np.zeros((g.nc_y, g.nc_x // 2 + 1), dtype=cdt)
        X[: ky + 1, : kx + 1] = Y[: ky + 1]
        X[g.nc_y - ky :, : kx + 1] = Y[g.nf_y - ky :]
        del Y
        x = sf.irfft2(X, s=(g.nc_y, g.nc_x), workers=wk, overwrite_x=True)
        del X
        x *= self._wy.astype(rdt)
        x *= self._wx.astype(rdt)
        return np.roll(x, (g.nc_y // 2, g.nc_x // 2), (0, 1))

    # ------------------------------------------------------------------ operator
    def dot(self, image):
        """Forward: requested image (npix_y, npix_x) -> vis of the wrapped operator."""
        image = np.asarray(image)
        return self.op.dot(self.to_coarse(image).astype(image.dtype, copy=False))

    def hdot(self, vis, weight=None):
        """Adjoint: vis (times weight) -> requested image (npix_y, npix_x)."""
        return self._fine(self.op.hdot(vis, weight))

    def _fine(self, img):
        img = np.asarray(img)
        return self.to_fine(img).astype(img.dtype, copy=False)

    # GPU resident operators (radimg/gpu/operator.py): the pipeline's image methods
    def psf_image(self):
        return self._fine(self.op.psf_image())

    def dirty_image(self):
        return self._fine(self.op.dirty_image())

    def residual_image(self, model):
        return self._fine(self.op.residual_image(self.to_coarse(np.asarray(model))))

    def wdot(self, image):
        return self.op.wdot(self.to_coarse(np.asarray(image)))

    def whdot(self, vis):
        return self._fine(self.op.whdot(vis))

    @property
    def stats(self):
        s = dict(self.op.stats)
        s["small_inversion"] = self.small_geometry.describe()
        return s

    def load_balance(self):
        out = dict(self.op.load_balance())
        out["small_inversion"] = self.small_geometry.describe()
        return out


def small_inversion(build, uvw, freq, valid, npix_x, npix_y, cell_rad, *, epsilon, mode,
                    enabled=True, nthreads=1, collectives=None, comm=None):
    """Build an operator for the requested image, through :class:`SmallInversion` when the
    data allow a coarser grid.

    Parameters
    ----------
    build : callable ``(npix_x, npix_y, cell_rad) -> operator`` (cell a float or a pair)
    uvw, freq, valid : this rank's samples (metres, Hz, (row, chan) bool or None)
    npix_x, npix_y, cell_rad : the requested image (cell a float or ``(cell_x, cell_y)``)
    epsilon : float; mode : ``wterm.mode`` (``wstack-wproject`` needs square pixels)
    enabled : False builds the plain operator (``image.small_inversion: false``)
    collectives : :class:`radimg.parallel.mpi.Collectives` or None; collective when given
    comm : mpi4py communicator or None, the same as ``collectives=Collectives(comm)``.

    Returns
    -------
    SmallInversion, or the plain operator when the layer is off or would not pay.
    """
    cx, cy = (cell_rad, cell_rad) if np.ndim(cell_rad) == 0 else cell_rad
    geom = None
    if enabled:
        geom = geometry_from_samples(uvw, freq, valid, npix_x, npix_y, float(cx), float(cy),
                                     epsilon, wterm=mode != "none",
                                     square=mode == "wstack-wproject",
                                     collectives=collectives, comm=comm)
    if geom is None:
        return build(npix_x, npix_y, cell_rad)
    return SmallInversion(build(geom.nc_x, geom.nc_y, geom.cell_c), geom, nthreads)
