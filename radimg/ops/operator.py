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

from radimg.constants import C_LIGHT
from radimg.kernels import gridder as _g
from radimg.kernels._jit import PARALLEL_JIT_OPTIONS
from radimg.kernels.es import es_parameters, es_poly_correction
from radimg.ops.fft import get_fft, good_size
from radimg.ops.fft import resolve as resolve_fft

__all__ = ["make_operator", "WideFieldOperator", "MODES", "good_size", "resolve_geometry",
           "resolve_oversampling"]

MODES = ("none", "wstack", "wstack-wproject")
_MIN_UPDATES_PER_THREAD = 2_000_000  # kernel updates (~5 ms) before a 2nd thread pays
_RESEED = 32  # planes between exact w-screens in the recurrence (error ~ 32 ulp)


def make_operator(uvw, freq, npix_x, npix_y, cell_rad, *, epsilon=1e-5, mode="wstack-wproject",
                  nstacks="auto", oversampling=2.0, nthreads=1, precision="double", fft="auto",
                  weight_mask=None, **kwargs):
    """Build the measurement operator for ``mode``.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres (MS UVW column).
    freq : ndarray (chan,) float64, Hz.
    npix_x, npix_y : int, image size; images are ``(npix_y, npix_x)``.
    cell_rad : float, pixel size in radians (or a pair ``(cell_x, cell_y)``).
    epsilon : float, target accuracy; kernel supports and plane spacing follow from it.
    mode : {"none", "wstack", "wstack-wproject"}
    nstacks : "auto" or int; for ``wstack`` an explicit number of w-planes (must be enough for
        epsilon); passed through to ``wstack-wproject``.
    oversampling : float or "auto", padded grid over image size; "auto" picks the factor
        (and with it the support and plane count) from a cost model.
    nthreads : int
    precision : {"single", "double"}; complex64/float32 or complex128/float64.
    fft : {"auto", "scipy", "fftw", "numpy"}
    weight_mask : ndarray (row, chan), optional; bool or weights, samples where it is
        False/0 are dropped at construction and cost nothing afterwards.
    """
    common = dict(epsilon=epsilon, nstacks=nstacks, oversampling=oversampling,
                  nthreads=nthreads, precision=precision, fft=fft)
    if weight_mask is not None:
        common["weight_mask"] = weight_mask
    if mode in ("none", "wstack"):
        return WideFieldOperator(uvw, freq, npix_x, npix_y, cell_rad, mode=mode, **common,
                                 **kwargs)
    if mode == "wstack-wproject":
        try:
            from radimg.ops.wproject import WProjectOperator
        except ModuleNotFoundError as exc:
            if exc.name not in ("radimg.ops.wproject",):
                raise
            raise NotImplementedError(
                "mode 'wstack-wproject' needs radimg/ops/wproject.py (WProjectOperator), which "
                "is not available in this build; use mode='wstack' (same accuracy, more planes)"
            ) from None
        return WProjectOperator(uvw, freq, npix_x, npix_y, cell_rad, **common, **kwargs)
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


# Candidate oversampling factors: in u, v they set the padded FFT size; in w only the plane
# spacing (dw = 1 / (2 sigma_w h)), so the w axis may use large factors with short kernels.
_SIGMAS = (1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5)
_SIGMAS_W = (1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
# Cost model, seconds on one core of the 2-core AMD EPYC dev machine (measured with the
# per-stage profile of scripts/bench_operator.py cases a, b, c at scale 0.05, FFTW plans):
# Per-axis share of epsilon for the worst-case 1-D kernel error: axis errors of independent
# sample offsets add in quadrature (eps / sqrt(ndim)); measured on the DFT tests
# (tests/test_operator.py data, all factors 1.25-2.0, both precisions) the operator's max
# error is <= 0.25 epsilon with this share (and <= 0.35 epsilon even with a share of 1).
AXIS_SHARE = {2: 1.0 / math.sqrt(2.0), 3: 1.0 / math.sqrt(3.0)}
COST_FFT = 6.5e-10   # per padded cell * log2(cells), one plane, both pruned passes
COST_CELL = 1.5e-9   # per padded cell per plane: zeroing, copies
COST_PIXEL = 3e-9    # per image pixel per plane: w-screen recurrence and accumulation
COST_UPDATE = 4e-9   # per kernel cell update: sample * W^2 * Ww (kernel taps included)
# Rounding: "auto" takes factors with unit roundoff x dynamic range <= ROUNDING_LIMIT x
# epsilon. Measured on the real MWA 34 deg field in single precision (epsilon 1e-5, 2 ranks,
# against the direct DFT): the error was 0.0034-0.02 of unit x r (sigma 1.25: 6.2e-4 for
# unit x r = 0.18; 1.5: 2.1e-6 for 1.0e-4; 1.75: 1.4e-7; 2.0: 4.9e-7), so 12.5 keeps the
# rounding part below epsilon / 4 (the former 0.1 excluded every factor below 2 there, and
# 145 w-planes of 5760 x 5184 cost 1.5x the 1.5 / 1.5 geometry's 112 of 4320 x 3888).
ROUNDING_LIMIT = 12.5


def _field_half(npix_x, npix_y, cell_x, cell_y):
    """Half range ``h`` of ``n - 1`` over the image (n - 1 - nshift lies in [-h, h])."""
    lx = max(npix_x // 2, npix_x - 1 - npix_x // 2) * cell_x
    my = max(npix_y // 2, npix_y - 1 - npix_y // 2) * cell_y
    if lx * lx + my * my >= 1.0:
        raise ValueError("the image extends beyond the horizon (l^2 + m^2 >= 1)")
    return -0.5 * (math.sqrt(1.0 - lx * lx - my * my) - 1.0)


def _dynamic_range(W, beta, sigma):
    """Largest gridding correction over the field, relative to the centre's: rounding errors
    of the grid are amplified by this much at the field edge."""
    return es_poly_correction(0.0, W, beta) / es_poly_correction(0.5 / sigma, W, beta)


def resolve_geometry(npix_x, npix_y, cell_x, cell_y, epsilon, mode, nsel, wmin, wmax, *,
                     oversampling="auto", oversampling_w=None, precision="double"):
    """Kernel supports, oversampling factors, padded grid and plane count for ``mode``.

    Accuracy: every axis gets a worst-case 1-D kernel error (:func:`es_parameters`, measured,
    not a formula) of ``epsilon * AXIS_SHARE[ndim]`` (= eps / sqrt(ndim): independent axis
    errors add in quadrature), whatever factor is chosen ("auto" never trades accuracy for
    speed; see AXIS_SHARE for the measured margin). Speed: with
    ``oversampling="auto"`` the factors minimise the cost model above (FFT, per-plane image
    work and kernel updates); the w axis gets its own factor ``oversampling_w`` ("auto" or
    None: chosen too when ``oversampling`` is "auto", else equal to ``oversampling``).

    Rounding: the grid's rounding error (unit roundoff of ``precision``) is amplified by the
    gridding corrections, up to the product of their dynamic ranges (measured:
    :func:`_dynamic_range`); "auto" only takes factors where unit roundoff times that stays
    below ``ROUNDING_LIMIT * epsilon`` (the measured error is 0.0034-0.02 of it; small
    factors with long kernels are excluded in single precision).

    ``nsel``: samples gridded; ``wmin, wmax``: range of ``|w|`` in wavelengths. Returns a dict
    with ``oversampling, W, beta, nxp, nyp, oversampling_w, Ww, betaw, dw_max, nplanes,
    cost``. Deterministic in its arguments, so ranks that pass the same global values agree.
    """
    half = _field_half(npix_x, npix_y, cell_x, cell_y)
    wstack = mode == "wstack"
    ndim = 3 if wstack else 2
    eps_axis = epsilon * AXIS_SHARE[ndim]
    npix = npix_x * npix_y
    unit = 2.0**-24 if precision == "single" else 2.0**-53

    def uv(sigma):
        W, beta = es_parameters(eps_axis, sigma)
        return W, beta, good_size(math.ceil(sigma * npix_x)), good_size(math.ceil(sigma * npix_y))

    def wax(sigma_w):
        Ww, betaw = es_parameters(eps_axis, sigma_w)
        dw_max = 0.5 / (sigma_w * half) if half > 0 else np.inf
        nplanes = (int(math.ceil((wmax - wmin) / dw_max)) + Ww) if np.isfinite(dw_max) else Ww
        return Ww, betaw, dw_max, nplanes

    def candidates(sigmas):
        out = []
        for sg in sigmas:
            try:
                out.append((sg, uv(sg)))
            except ValueError:
                continue
        return out

    if oversampling == "auto":
        uvc = candidates(_SIGMAS)
    else:
        uvc = [(float(oversampling), uv(float(oversampling)))]
    if not uvc:
        raise ValueError(f"epsilon={epsilon:g} is not reachable with any oversampling factor")
    auto_w = oversampling_w in ("auto", None) and oversampling == "auto" or oversampling_w == "auto"
    best = None
    for sigma, (W, beta, nxp, nyp) in uvc:
        if not wstack:
            wc = [(sigma, (1, 0.0, np.inf, 1))]
        elif auto_w:
            wc = []
            for sw in _SIGMAS_W:
                try:
                    wc.append((sw, wax(sw)))
                except ValueError:
                    continue
        else:
            sw = sigma if oversampling_w in ("auto", None) else float(oversampling_w)
            wc = [(sw, wax(sw))]
        npts = nxp * nyp
        plane = COST_FFT * npts * math.log2(npts) + COST_CELL * npts + COST_PIXEL * npix
        r_uv = _dynamic_range(W, beta, sigma) ** 2
        for sw, (Ww, betaw, dw_max, nplanes) in wc:
            r = r_uv * (_dynamic_range(Ww, betaw, sw) if wstack else 1.0)
            if (len(uvc) > 1 or len(wc) > 1) and unit * r > ROUNDING_LIMIT * epsilon:
                continue  # rounding would spoil epsilon; explicit factors are taken as given
            cost = nplanes * plane + COST_UPDATE * nsel * W * W * Ww
            if best is None or cost < best["cost"]:
                best = dict(oversampling=sigma, W=W, beta=beta, nxp=nxp, nyp=nyp,
                            oversampling_w=sw, Ww=Ww, betaw=betaw, dw_max=dw_max,
                            nplanes=nplanes, cost=cost)
    if best is None:
        raise ValueError(f"epsilon={epsilon:g} is not reachable in {precision} precision")
    return best


def resolve_oversampling(npix_x, npix_y, cell_x, cell_y, epsilon, mode, nsel, wmin, wmax,
                         precision="double"):
    """(oversampling, oversampling_w) that ``oversampling="auto"`` picks; pass both to
    :class:`WideFieldOperator` (``oversampling=..., oversampling_w=...``) to rebuild the same
    geometry from global values (radimg/parallel)."""
    g = resolve_geometry(npix_x, npix_y, cell_x, cell_y, epsilon, mode, nsel, wmin, wmax,
                         precision=precision)
    return g["oversampling"], g["oversampling_w"]


@numba.njit(**PARALLEL_JIT_OPTIONS)
def _correction_kernel(cx, cy, cell_x, cell_y, nshift, dw, cheb, cheb_half, out):
    """out[iy, ix] = 1 / (cx[ix] cy[iy] g_w((n - 1 - nshift) dw)); g_w from a Chebyshev
    series on [-cheb_half, cheb_half] (empty series: no w axis). No 1/n: Jy/pixel model
    (module docstring)."""
    ny, nx = out.shape
    deg = cheb.size
    for iy in numba.prange(ny):
        m = (iy - ny // 2) * cell_y
        for ix in range(nx):
            l = -(ix - nx // 2) * cell_x
            n = math.sqrt(1.0 - l * l - m * m)
            gw = 1.0
            if deg > 0:
                t = ((n - 1.0 - nshift) * dw) / cheb_half
                # Clenshaw
                b1 = 0.0
                b2 = 0.0
                for j in range(deg - 1, 0, -1):
                    b1, b2 = 2.0 * t * b1 - b2 + cheb[j], b1
                gw = t * b1 - b2 + cheb[0]
            out[iy, ix] = 1.0 / (cx[ix] * cy[iy] * gw)


def _chebyshev_fit(f, half, tol=1e-14):
    """Chebyshev coefficients of f on [-half, half], degree grown until the tail is < tol."""
    for deg in (16, 32, 48, 64, 96, 128):
        k = np.arange(deg + 1)
        x = np.cos(np.pi * (k + 0.5) / (deg + 1))
        c = np.polynomial.chebyshev.chebfit(x, f(x * half), deg)
        if np.abs(c[-4:]).max() < tol * np.abs(c).max():
            return np.trim_zeros(c, "b")
    return c


def _w_planes(geo, nstacks, wmin, wmax, nmin, epsilon, epsilon_f):
    """W-stacking planes of mode ``wstack``: ``(nplanes, Ww, betaw, w0, dw, nshift)``.

    ``geo`` from :func:`resolve_geometry`; ``nstacks`` "auto"/None (``geo``'s count and the
    largest spacing ``dw_max``) or an int (spread over ``[wmin, wmax]`` wavelengths, a
    ConfigError when below the w-kernel support or too sparse for ``epsilon``); ``nmin``
    the smallest ``n - 1`` of the field (``nshift = nmin / 2``).
    """
    dw_max, nplanes_auto = geo["dw_max"], geo["nplanes"]
    nshift = 0.5 * nmin
    Ww, betaw = geo["Ww"], geo["betaw"]
    if nstacks == "auto" or nstacks is None:
        dw = dw_max if np.isfinite(dw_max) else 1.0
        nplanes = nplanes_auto
    else:
        nplanes = int(nstacks)
        if nplanes < Ww:
            from radimg.config import ConfigError

            raise ConfigError(
                f"wterm.nstacks = {nplanes}: mode wstack needs at least {Ww} w-planes "
                f"(the w-kernel support at wterm.epsilon {epsilon:g}); use auto"
            )
        dw = (wmax - wmin) / max(nplanes - Ww, 1) if wmax > wmin else dw_max
        if dw > dw_max * (1 + 1e-12):
            from radimg.config import ConfigError

            raise ConfigError(
                f"wterm.nstacks = {nplanes} is too few for wterm.epsilon "
                f"{epsilon_f:g} here: need >= {nplanes_auto} (or auto)"
            )
    w0 = wmin - (0.5 * Ww - 0.5) * dw
    return nplanes, Ww, betaw, w0, dw, nshift


class WideFieldOperator:
    """Measurement operator for modes ``none`` and ``wstack`` (see module docstring).

    Public: ``dot(image) -> vis``, ``hdot(vis, weight=None) -> image``, the stage methods
    and ``stats``. Construct with :func:`make_operator`.
    """

    def __init__(self, uvw, freq, npix_x, npix_y, cell_rad, *, epsilon=1e-5, mode="wstack",
                 nstacks="auto", oversampling=2.0, nthreads=1, precision="double", fft="auto",
                 weight_mask=None, tile=None, oversampling_w=None, plan_fft=True):
        """Set up the operator (see the class docstring) in sequence: geometry, w-planes
        (:func:`_w_planes`), the samples' tile layout, pruned FFT rows, per-plane work and
        the image-domain correction."""
        if mode not in ("none", "wstack"):
            raise ValueError(f"WideFieldOperator handles modes 'none' and 'wstack', not {mode!r}")
        if precision not in ("single", "double"):
            raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
        self.uvw = np.ascontiguousarray(uvw, dtype=np.float64)
        self.freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
        if self.uvw.ndim != 2 or self.uvw.shape[1] != 3:
            raise ValueError(f"uvw must be (row, 3), got {self.uvw.shape}")
        self.nrow, self.nchan = self.uvw.shape[0], self.freq.size
        self.npix_x, self.npix_y = int(npix_x), int(npix_y)
        cx, cy = (cell_rad, cell_rad) if np.ndim(cell_rad) == 0 else cell_rad
        self.cell_x, self.cell_y = float(cx), float(cy)
        self.mode = mode
        self.epsilon = float(epsilon)
        self.nthreads = max(1, int(nthreads))
        self.precision = precision
        self.cdtype = np.complex64 if precision == "single" else np.complex128
        self.rdtype = np.float32 if precision == "single" else np.float64
        self._fft_name = fft
        self._bufs = {}

        # Field extent and n - 1 range (n - 1 <= 0, its maximum 0 at the phase centre).
        lx = max(self.npix_x // 2, self.npix_x - 1 - self.npix_x // 2) * self.cell_x
        my = max(self.npix_y // 2, self.npix_y - 1 - self.npix_y // 2) * self.cell_y
        if lx * lx + my * my >= 1.0:
            raise ValueError("the image extends beyond the horizon (l^2 + m^2 >= 1)")
        nmin = math.sqrt(1.0 - lx * lx - my * my) - 1.0

        wstack = mode == "wstack"

        if weight_mask is not None:
            weight_mask = np.asarray(weight_mask)
            if weight_mask.shape != (self.nrow, self.nchan):
                raise ValueError(f"weight_mask must be (row, chan) = {(self.nrow, self.nchan)}")
            weight_mask = weight_mask != 0
        self.mask = weight_mask
        nsel = self.nrow * self.nchan if weight_mask is None else int(weight_mask.sum())
        wmin = wmax = 0.0
        if wstack:
            absw = np.abs(self.uvw[:, 2])[:, None] * (self.freq / C_LIGHT)[None, :]
            sel = absw[weight_mask] if weight_mask is not None else absw
            wmin, wmax = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
        half = -0.5 * nmin  # n - 1 - nshift in [-half, half]

        geo = resolve_geometry(self.npix_x, self.npix_y, self.cell_x, self.cell_y,
                               self.epsilon, mode, nsel, wmin, wmax, oversampling=oversampling,
                               oversampling_w=oversampling_w, precision=precision)
        self.oversampling = geo["oversampling"]
        self.oversampling_w = geo["oversampling_w"]
        self.geometry = geo
        W, beta, nxp, nyp = geo["W"], geo["beta"], geo["nxp"], geo["nyp"]
        xscale, yscale = self.cell_x * nxp, -self.cell_y * nyp

        nplanes, Ww, betaw, w0, dw, nshift = 1, 1, 0.0, 0.0, 1.0, 0.0
        if wstack:
            nplanes, Ww, betaw, w0, dw, nshift = _w_planes(geo, nstacks, wmin, wmax, nmin,
                                                           epsilon, self.epsilon)
        self.spec = _g.GridSpec(nxp=nxp, nyp=nyp, W=W, beta=beta, xscale=xscale, yscale=yscale,
                                nplanes=nplanes, Ww=Ww, betaw=betaw, w0=w0, dw=dw, nshift=nshift)
        self.planes = w0 + dw * np.arange(nplanes) if wstack else np.zeros(1)
        self._tile = tile or _g._TILE_MIN
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
        gx = es_poly_correction((np.arange(self.npix_x) - self.npix_x // 2) / nxp, W, beta)
        gy = es_poly_correction((np.arange(self.npix_y) - self.npix_y // 2) / nyp, W, beta)
        if wstack:
            chalf = max(half * dw, 1e-300)
            cheb = _chebyshev_fit(lambda t: es_poly_correction(t, Ww, betaw), chalf)
        else:
            chalf, cheb = 1.0, np.zeros(0)
        self.correction = np.empty((self.npix_y, self.npix_x), dtype=np.float64)
        _g._set_threads(self.nthreads)
        _correction_kernel(gx, gy, self.cell_x, self.cell_y, nshift, dw, cheb, chalf,
                           self.correction)
        # n - 1 - nshift on one quadrant of |dy|, |dx| (the w-screen is symmetric).
        self._cq = _g.quadrant_c(self.npix_y, self.npix_x, self.cell_x, self.cell_y, nshift,
                                 self.nthreads) if wstack else None

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

    def _backward_inplace(self, grid, rows=None):
        """Unnormalised inverse FFT of ``grid`` in place where the image needs it: the grid
        ``rows`` (default: the non-empty ones) along x, then the image's columns along y.
        Image pixel ``(iy, ix)`` is then at ``grid[self._img_rows[iy], self._img_cols[ix]]``;
        other cells hold partial results."""
        if rows is None:
            rows = np.flatnonzero(grid.any(axis=1))
        runs = self._runs(rows)
        if len(runs) > 4:  # scattered rows: one transform over all of them
            runs = [(0, self.spec.nyp)]
        for r0, r1 in runs:
            self.fft.rows(grid, r0, r1, False)
        for cs in self._grid_col_slabs():
            self.fft.cols(grid, cs.start, cs.stop, False)
        return grid

    def _pruned_backward(self, grid, rows=None):
        """Inverse FFT of ``grid`` (not modified) cropped to (npix_y, npix_x), image order."""
        g = self._backward_inplace(grid.copy(), rows)
        return g[self._img_rows][:, self._img_cols]

    def _forward_inplace(self, grid, rows, zero_rest=True):
        """Adjoint of :meth:`_backward_inplace`: ``grid`` holds the chirped image at the image
        positions, zeros elsewhere (:func:`chirp_forward`); FFT along y on the image's
        columns, then along x on the grid ``rows``. ``zero_rest``: other rows set to 0."""
        for cs in self._grid_col_slabs():
            self.fft.cols(grid, cs.start, cs.stop, True)
        runs = self._runs(rows)
        if len(runs) > 4:
            runs = [(0, self.spec.nyp)]
        prev = 0
        for r0, r1 in runs:
            self.fft.rows(grid, r0, r1, True)
            if zero_rest:
                grid[prev:r0] = 0
            prev = r1
        if zero_rest:
            grid[prev:] = 0
            if len(runs) == 1 and runs[0] == (0, self.spec.nyp):
                keep = np.zeros(self.spec.nyp, dtype=bool)
                keep[np.asarray(rows)] = True
                grid[~keep] = 0
        return grid

    def new_grid(self):
        """Zeroed (nyp, nxp) grid, aligned for the FFT backend."""
        g = self.fft.empty((self.spec.nyp, self.spec.nxp), self.cdtype)
        g[...] = 0
        return g

    def image_to_plane_grid(self, image, p, out=None, rows=None, scaled=True):
        """``F Z S_p x``: the Fourier grid of plane ``p`` that degridding reads (eq. 9).

        ``rows``: grid rows to compute (others come back 0); default all of them. Pass
        ``self.grid_rows`` when only this operator's samples will read the grid.
        ``scaled=False``: ``image`` already carries the correction (``image *
        self.correction``, once per application instead of per plane).
        """
        grid = out if out is not None else self.fft.empty((self.spec.nyp, self.spec.nxp),
                                                          self.cdtype)
        img = np.asarray(image, dtype=np.float64)
        if scaled:
            img = img * self.correction
        rows = np.arange(self.spec.nyp) if rows is None else np.asarray(rows)
        return self._image_to_grid(img, self._phasor(p), grid, rows)

    def _phasor(self, p):
        """Quadrant of the plane-p w-screen exp(-2 pi i w_p (n - 1 - nshift)); None in 2-D."""
        if not self.spec.wstack:
            return None
        return _g.phasor(self._cq, self.planes[p], nthreads=self.nthreads)

    def _image_to_grid(self, img, ph, grid, rows, zero_rest=True):
        if grid.shape != (self.spec.nyp, self.spec.nxp) or not grid.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous (nyp, nxp) array")
        _g.chirp_forward(img, ph, grid, self.nthreads)
        return self._forward_inplace(grid, rows, zero_rest)

    @property
    def grid_rows(self):
        """Padded-grid rows that this operator's samples touch (any plane)."""
        return self._grid_rows

    def plane_grid_to_image(self, grid, p, out=None, overwrite=True, scaled=True, rows=None):
        """``S_p^H Z^H F^H grid``: add plane ``p``'s image to ``out`` (npix_y, npix_x) float64.

        ``grid`` is the gridded (not yet transformed) plane; it is overwritten when
        ``overwrite``. Summing this over all planes of ``grid_samples`` output is ``hdot``.
        ``scaled=False`` leaves out the correction (multiply the sum over planes by
        ``self.correction`` once). ``rows``: grid rows that may hold data (default: a scan).
        """
        if out is None:
            out = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        if out.dtype != np.float64:
            raise ValueError("out must be float64 (image sums are accumulated in double)")
        if not overwrite:
            grid = grid.copy()
        fgrid = self._backward_inplace(grid, rows)
        if not scaled:
            _g.chirp_adjoint(fgrid, self._phasor(p), out, self.nthreads)
            return out
        tmp = np.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        _g.chirp_adjoint(fgrid, self._phasor(p), tmp, self.nthreads)
        out += tmp * self.correction
        return out

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
        """Plane-0 w-screen and the per-plane step of the recurrence (None, None in 2-D)."""
        if not self.spec.wstack:
            return None, None
        return self._phasor(0), _g.phasor(self._cq, self.spec.dw, nthreads=self.nthreads)

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
        img = image.astype(np.float64) * self.correction
        coords, _ = _g.prepare_samples(lay, self.spec, self.uvw, self.freq,
                                       nthreads=self.nthreads)
        acc = np.zeros(lay.nsamples, dtype=self.cdtype)
        grid = self._buffer("grid", (self.spec.nyp, self.spec.nxp), self.cdtype)
        ph, step = self._phasors()
        for p in range(self.nplanes):
            if p:
                ph = self._next_phasor(ph, step, p)
            fgrid = self._image_to_grid(img, ph, grid, self._grid_rows, zero_rest=False)
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
        ph, step = self._phasors()
        for p in range(self.nplanes):
            if p and p % _RESEED == 0:
                ph = self._next_phasor(ph, step, p)  # exact screen now and then
            grid[...] = 0
            _g.grid_plane_prepared(lay, self.spec, coords, vals, p, grid, self._kthreads(p))
            fgrid = self._backward_inplace(grid, rows=self._grid_rows)
            _g.chirp_adjoint(fgrid, ph, acc, self.nthreads, step=step)  # advances ph
        acc *= self.correction
        return acc.astype(self.rdtype, copy=False)
