"""The operator geometry, resolved once: :class:`Field` (the image) and :class:`Geometry`
(the image plus everything an operator's set-up decides from it: padding, kernels, w-planes
or w-stacks).

Every operator is built from a :class:`Geometry` and nothing below it re-derives one. Who
resolves it:

- serial use (:func:`radimg.ops.operator.make_operator`): :func:`resolve_geometry` /
  :func:`wproject_geometry` from the samples given;
- the distributed operators (radimg.parallel): the same functions fed global values (the
  ``|w|`` range and sample count reduced over the ranks, the k-means stacks of all ranks'
  samples), so every rank holds an equal object and no rank's own samples can change it;
- the small-inversion layer (radimg.ops.resample) hands its inner operator the coarse
  :class:`Field` (:meth:`radimg.ops.resample.SmallGeometry.coarse_field`).

Names used throughout: ``npix_x``, ``npix_y`` (image columns, rows), ``cell_x``, ``cell_y``
(radians), ``lx``, ``my`` (largest ``|l|``, ``|m|`` of a pixel centre), ``nmin`` (smallest
``n - 1`` over the field), ``nxp``, ``nyp`` (padded grid), ``W``, ``beta`` (ES kernel in u,
v), ``Ww``, ``betaw`` (in w), ``w0``, ``dw``, ``nplanes``, ``nshift`` (w-planes),
``centres``, ``dw_range`` (w-stacks and the residual ``w - w_k`` range).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from radimg.constants import C_LIGHT
from radimg.kernels import gridder as _g
from radimg.kernels import wcheb
from radimg.kernels.es import es_parameters, es_poly_correction
from radimg.ops.fft import good_size

__all__ = ["Field", "Geometry", "resolve_geometry", "wproject_geometry", "samples_w_range",
           "scaling_target", "ES_SHARE", "W_SHARE"]

MODES = ("none", "wstack", "wstack-wproject")
WKERNELS = ("es", "cheb")  # the w axis of mode wstack (Geometry.wkernel)

# wstack-wproject's split of epsilon: the ES kernel gets ES_SHARE per axis (measured: the
# 2-D error stays < eps / 4), the w-kernel tables W_SHARE (their own budget is conservative).
ES_SHARE = 0.5
W_SHARE = 1.0

# Candidate oversampling factors of modes none / wstack: in u, v they set the padded FFT
# size; in w only the plane spacing (dw = 1 / (2 sigma_w h)), so the w axis may use large
# factors with short kernels.
SIGMAS = (1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5)
SIGMAS_W = (1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
# Per-axis share of epsilon for the worst-case 1-D kernel error: axis errors of independent
# sample offsets add in quadrature (eps / sqrt(ndim)); measured on the DFT tests
# (tests/test_operator.py data, all factors 1.25-2.0, both precisions) the operator's max
# error is <= 0.25 epsilon with this share (and <= 0.35 epsilon even with a share of 1).
AXIS_SHARE = {2: 1.0 / math.sqrt(2.0), 3: 1.0 / math.sqrt(3.0)}
# Cost model, seconds on one core of the 2-core AMD EPYC dev machine (measured with the
# per-stage profile of scripts/bench_operator.py cases a, b, c at scale 0.05, FFTW plans):
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


@dataclass(frozen=True)
class Field:
    """The image an operator makes: ``npix_x`` x ``npix_y`` pixels of ``cell_x`` x ``cell_y``
    radians, pixel ``[npix_y // 2, npix_x // 2]`` at the phase centre. Raises ValueError
    when the field reaches the horizon."""

    npix_x: int
    npix_y: int
    cell_x: float
    cell_y: float

    def __post_init__(self):
        object.__setattr__(self, "npix_x", int(self.npix_x))
        object.__setattr__(self, "npix_y", int(self.npix_y))
        object.__setattr__(self, "cell_x", float(self.cell_x))
        object.__setattr__(self, "cell_y", float(self.cell_y))
        if self.lx * self.lx + self.my * self.my >= 1.0:
            raise ValueError("the image extends beyond the horizon (l^2 + m^2 >= 1)")

    @classmethod
    def of(cls, npix_x, npix_y, cell_rad):
        """From a cell that is a scalar (square pixels) or a pair ``(cell_x, cell_y)``."""
        cx, cy = (cell_rad, cell_rad) if np.ndim(cell_rad) == 0 else cell_rad
        return cls(npix_x, npix_y, cx, cy)

    @property
    def shape(self):
        """``(npix_y, npix_x)``, the shape of every image array."""
        return (self.npix_y, self.npix_x)

    @property
    def lx(self):
        """Largest ``|l|`` of a pixel centre."""
        return max(self.npix_x // 2, self.npix_x - 1 - self.npix_x // 2) * self.cell_x

    @property
    def my(self):
        """Largest ``|m|`` of a pixel centre."""
        return max(self.npix_y // 2, self.npix_y - 1 - self.npix_y // 2) * self.cell_y

    @property
    def nmin(self):
        """Smallest ``n - 1`` over the field (at a corner; 0 at the phase centre)."""
        return math.sqrt(1.0 - self.lx * self.lx - self.my * self.my) - 1.0

    @property
    def one_minus_n(self):
        """``1 - n`` at the farthest pixel centre, without cancellation (``-nmin``)."""
        r2 = self.lx * self.lx + self.my * self.my
        return r2 / (1.0 + math.sqrt(1.0 - r2))

    @property
    def half(self):
        """Half range ``h`` of ``n - 1``: ``n - 1 - nmin / 2`` lies in ``[-h, h]``."""
        return -0.5 * self.nmin

    @property
    def square(self):
        return math.isclose(self.cell_x, self.cell_y, rel_tol=1e-12, abs_tol=0.0)

    @property
    def cell(self):
        """The cell of square pixels (``wstack-wproject`` needs them)."""
        if not self.square:
            raise NotImplementedError("wstack-wproject needs square pixels (cell_x == cell_y)")
        return self.cell_x


@dataclass(frozen=True)
class Geometry:
    """Everything an operator's set-up decides, resolved once (module docstring).

    Attributes
    ----------
    field : Field
    mode : {"none", "wstack", "wstack-wproject"}
    epsilon : float, the accuracy asked for
    precision : {"single", "double"}
    oversampling : float, padded grid over image size in u, v
    nxp, nyp : int, padded grid
    W, beta : ES kernel support (cells) and shape in u, v
    nsel : int, samples the geometry was resolved for (its cost model's count)
    wmin, wmax : float, ``|w|`` range of those samples (wavelengths; 0 without w-stacking)
    oversampling_w, Ww, betaw, dw_max : the w axis of ``wstack`` (None, 1, 0, inf otherwise)
    nplanes, w0, dw, nshift : the w-planes (1, 0, 1, 0 without w-stacking)
    centres : tuple of float, the w-stacks of ``wstack-wproject`` (sorted; () when not yet
        chosen)
    dw_range : (float, float), the residual ``w - w_k`` range its kernel tables cover
    cost : float, the cost model's seconds per application (``none``/``wstack``)
    wkernel : ``wstack``'s w axis: ``"es"`` (ES kernel over ``Ww`` of ``nplanes``
        uniformly spaced planes) or ``"cheb"`` (``nplanes = Ww`` terms of the w-term's
        Chebyshev expansion, radimg/kernels/wcheb.py; ``w0``, ``dw`` then place every
        sample's ``|w|`` at a first plane of 0 and ``oversampling_w`` is None)
    """

    field: Field
    mode: str
    epsilon: float
    precision: str
    oversampling: float
    nxp: int
    nyp: int
    W: int
    beta: float
    nsel: int = 0
    wmin: float = 0.0
    wmax: float = 0.0
    oversampling_w: float | None = None
    Ww: int = 1
    betaw: float = 0.0
    dw_max: float = math.inf
    nplanes: int = 1
    w0: float = 0.0
    dw: float = 1.0
    nshift: float = 0.0
    centres: tuple = ()
    dw_range: tuple = (0.0, 0.0)
    cost: float = 0.0
    wkernel: str = "es"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.precision not in ("single", "double"):
            raise ValueError(f"precision must be 'single' or 'double', got {self.precision!r}")
        if self.wkernel not in WKERNELS:
            raise ValueError(f"wkernel must be one of {WKERNELS}, got {self.wkernel!r}")

    # -- what every layer reads -------------------------------------------------------
    @property
    def npix_x(self):
        return self.field.npix_x

    @property
    def npix_y(self):
        return self.field.npix_y

    @property
    def wstack(self):
        return self.mode == "wstack"

    @property
    def cdtype(self):
        return np.complex64 if self.precision == "single" else np.complex128

    @property
    def rdtype(self):
        return np.float32 if self.precision == "single" else np.float64

    @property
    def nstacks(self):
        """``wstack-wproject``: number of w-stacks."""
        return len(self.centres)

    @property
    def grid_spec(self):
        """:class:`radimg.kernels.gridder.GridSpec` of modes ``none`` / ``wstack``: the
        gridder's view of this geometry."""
        f = self.field
        return _g.GridSpec(nxp=self.nxp, nyp=self.nyp, W=self.W, beta=self.beta,
                           xscale=f.cell_x * self.nxp, yscale=-f.cell_y * self.nyp,
                           nplanes=self.nplanes, Ww=self.Ww, betaw=self.betaw, w0=self.w0,
                           dw=self.dw, nshift=self.nshift, wkernel=self.wkernel)

    @cached_property
    def slopes(self):
        """``wstack-wproject``: cells per unit residual w along x and y (eq. 8's slope,
        :func:`radimg.kernels.wproject.field_slopes`)."""
        from radimg.kernels.wproject import field_slopes

        f = self.field
        return field_slopes(f.npix_x, f.npix_y, f.cell, self.nxp, self.nyp)

    def with_stacks(self, centres, dw_range):
        """This ``wstack-wproject`` geometry with its w-stacks chosen."""
        if self.mode != "wstack-wproject":
            raise ValueError("w-stacks belong to mode wstack-wproject")
        c = np.sort(np.asarray(centres, dtype=np.float64).ravel())
        return dataclasses.replace(self, centres=tuple(float(x) for x in c),
                                   dw_range=(float(dw_range[0]), float(dw_range[1])))

    def describe(self):
        """JSON-ready summary (the operator's ``stats`` and ``operator_json``)."""
        out = {"mode": self.mode, "npix": [self.npix_y, self.npix_x],
               "cell_arcsec": [math.degrees(self.field.cell_y) * 3600.0,
                               math.degrees(self.field.cell_x) * 3600.0],
               "padded_grid": [self.nyp, self.nxp], "support": self.W,
               "oversampling": self.oversampling}
        if self.mode == "wstack":
            out.update(nplanes=self.nplanes, support_w=self.Ww,
                       oversampling_w=self.oversampling_w, dw=self.dw, w_kernel=self.wkernel)
        elif self.mode == "wstack-wproject":
            out.update(nstacks=self.nstacks, dw_range=list(self.dw_range))
        return out


def samples_w_range(uvw, freq, mask=None):
    """``(nsel, wmin, wmax)``: samples counted and their ``|w|`` range in wavelengths
    (``mask`` (row, chan): the samples that count; (0, 0, 0) when none do)."""
    uvw = np.asarray(uvw, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    absw = np.abs(uvw[:, 2])[:, None] * (freq / C_LIGHT)[None, :]
    sel = absw[np.asarray(mask) != 0] if mask is not None else absw.ravel()
    if sel.size == 0:
        return 0, 0.0, 0.0
    return int(sel.size), float(sel.min()), float(sel.max())


@functools.lru_cache(maxsize=1024)
def _dynamic_range(W, beta, sigma):
    """Largest gridding correction over the field, relative to the centre's: rounding errors
    of the grid are amplified by this much at the field edge."""
    return es_poly_correction(0.0, W, beta) / es_poly_correction(0.5 / sigma, W, beta)


def resolve_geometry(field, epsilon, mode, nsel, wmin, wmax, *, oversampling="auto",
                     oversampling_w=None, precision="double", nstacks="auto", wkernel="auto"):
    """The :class:`Geometry` of modes ``none`` / ``wstack`` for ``nsel`` samples whose
    ``|w|`` spans ``[wmin, wmax]`` wavelengths.

    Accuracy: every axis gets a worst-case 1-D kernel error (:func:`es_parameters`, measured,
    not a formula) of ``epsilon * AXIS_SHARE[ndim]`` (= eps / sqrt(ndim): independent axis
    errors add in quadrature), whatever factor is chosen ("auto" never trades accuracy for
    speed; see AXIS_SHARE for the measured margin). Speed: with ``oversampling="auto"`` the
    factors minimise the cost model above (FFT, per-plane image work and kernel updates); the
    w axis gets its own factor ``oversampling_w`` ("auto" or None: chosen too when
    ``oversampling`` is "auto", else equal to ``oversampling``).

    Rounding: the grid's rounding error (unit roundoff of ``precision``) is amplified by the
    gridding corrections, up to the product of their dynamic ranges (measured:
    :func:`_dynamic_range`); "auto" only takes factors where unit roundoff times that stays
    below ``ROUNDING_LIMIT * epsilon`` (the measured error is 0.0034-0.02 of it; small
    factors with long kernels are excluded in single precision).

    W-planes (``wstack``): ``nstacks`` "auto"/None takes the cost model's count and the
    largest spacing ``dw_max``; an int spreads that many planes over ``[wmin, wmax]`` (a
    ConfigError when below the w-kernel support or too sparse for ``epsilon``).

    The w axis's kernel (``wkernel``): "es" (the ES kernel over uniformly spaced planes),
    "cheb" (the Chebyshev expansion of the w-term, radimg/kernels/wcheb.py: the fewest terms
    whose truncation bound is within the w axis's share of epsilon; a ValueError beyond
    ``wcheb.KMAX`` terms) or "auto": both costed, the cheaper taken, where the w axis is
    the cost model's to choose (``oversampling_w`` auto, ``nstacks`` auto), else "es".

    Deterministic in its arguments, so ranks that pass the same global values agree.
    """
    if mode not in ("none", "wstack"):
        raise ValueError(f"resolve_geometry handles modes 'none' and 'wstack', not {mode!r}")
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    if wkernel not in ("auto",) + WKERNELS:
        raise ValueError(f"wkernel must be 'auto' or one of {WKERNELS}, got {wkernel!r}")
    half = field.half
    wstack = mode == "wstack"
    if not wstack:
        wmin = wmax = 0.0
    ndim = 3 if wstack else 2
    eps_axis = epsilon * AXIS_SHARE[ndim]
    npix = field.npix_x * field.npix_y
    unit = 2.0**-24 if precision == "single" else 2.0**-53

    def uv(sigma):
        W, beta = es_parameters(eps_axis, sigma)
        return (W, beta, good_size(math.ceil(sigma * field.npix_x)),
                good_size(math.ceil(sigma * field.npix_y)))

    def wax(sigma_w):
        Ww, betaw = es_parameters(eps_axis, sigma_w)
        dw_max = 0.5 / (sigma_w * half) if half > 0 else np.inf
        nplanes = (int(math.ceil((wmax - wmin) / dw_max)) + Ww) if np.isfinite(dw_max) else Ww
        return Ww, betaw, dw_max, nplanes

    def candidates(sigmas, make):
        out = []
        for sg in sigmas:
            try:
                out.append((sg, make(sg)))
            except ValueError:
                continue
        return out

    if oversampling == "auto":
        uvc = candidates(SIGMAS, uv)
    else:
        uvc = [(float(oversampling), uv(float(oversampling)))]
    if not uvc:
        raise ValueError(f"epsilon={epsilon:g} is not reachable with any oversampling factor")
    auto_w = oversampling_w in ("auto", None) and oversampling == "auto" or oversampling_w == "auto"
    explicit_planes = nstacks not in ("auto", None)
    use_es = not wstack or wkernel != "cheb"
    cheb_K = None
    if wstack and (wkernel == "cheb" or wkernel == "auto" and auto_w and not explicit_planes):
        if explicit_planes:
            raise ValueError("wkernel 'cheb' sets its own plane count; nstacks must be auto")
        cheb_K = wcheb.planes_for(eps_axis, math.pi * _cheb_span(wmin, wmax) * half)
        if cheb_K is None and wkernel == "cheb":
            raise ValueError(f"wkernel 'cheb' needs more than {wcheb.KMAX} terms here (w range "
                             f"{wmax - wmin:.4g} wavelengths, n - 1 half range {half:.3g})")
    best = None
    for sigma, (W, beta, nxp, nyp) in uvc:
        if not wstack:
            wc = [(None, (1, 0.0, np.inf, 1))]
        elif auto_w:
            wc = candidates(SIGMAS_W, wax)
        else:
            sw = sigma if oversampling_w in ("auto", None) else float(oversampling_w)
            wc = [(sw, wax(sw))]
        npts = nxp * nyp
        plane = COST_FFT * npts * math.log2(npts) + COST_CELL * npts + COST_PIXEL * npix
        r_uv = _dynamic_range(W, beta, sigma) ** 2
        choice = len(uvc) > 1 or len(wc) > 1 or cheb_K is not None and use_es
        for sw, (Ww, betaw, dw_max, nplanes) in (wc if use_es else []):
            r = r_uv * (_dynamic_range(Ww, betaw, sw) if wstack else 1.0)
            if choice and unit * r > ROUNDING_LIMIT * epsilon:
                continue  # rounding would spoil epsilon; explicit factors are taken as given
            cost = nplanes * plane + COST_UPDATE * nsel * W * W * Ww
            if best is None or cost < best["cost"]:
                best = dict(oversampling=float(sigma), W=int(W), beta=float(beta),
                            nxp=int(nxp), nyp=int(nyp),
                            oversampling_w=None if sw is None else float(sw), Ww=int(Ww),
                            betaw=float(betaw), dw_max=float(dw_max), nplanes=int(nplanes),
                            cost=float(cost), wkernel="es")
        if cheb_K is not None and not (choice and unit * r_uv > ROUNDING_LIMIT * epsilon):
            # every sample on all K terms, no w correction (its dynamic range is r_uv's)
            cost = cheb_K * plane + COST_UPDATE * nsel * W * W * cheb_K
            if best is None or cost < best["cost"]:
                best = dict(oversampling=float(sigma), W=int(W), beta=float(beta),
                            nxp=int(nxp), nyp=int(nyp), oversampling_w=None, Ww=int(cheb_K),
                            betaw=0.0, dw_max=math.inf, nplanes=int(cheb_K),
                            cost=float(cost), wkernel="cheb")
    if best is None:
        raise ValueError(f"epsilon={epsilon:g} is not reachable in {precision} precision")
    geo = Geometry(field=field, mode=mode, epsilon=float(epsilon), precision=precision,
                   nsel=int(nsel), wmin=float(wmin), wmax=float(wmax), **best)
    return _with_planes(geo, nstacks) if wstack else geo


def _cheb_span(wmin, wmax):
    """The ``dw`` of a Chebyshev geometry: the ``|w|`` range, a little wider so that rounding
    in ``(w - w0) / dw`` cannot put a sample outside its terms' interval."""
    return (wmax - wmin) * (1.0 + 4e-7) + 1e-12 * (1.0 + abs(wmax))


def _with_planes(geo, nstacks):
    """``geo`` (mode ``wstack``) with its w-planes laid out (:func:`resolve_geometry`)."""
    from radimg.config import ConfigError

    dw_max, nplanes_auto, Ww = geo.dw_max, geo.nplanes, geo.Ww
    wmin, wmax = geo.wmin, geo.wmax
    if geo.wkernel == "cheb":
        # plane position gw = (w - w0) / dw in [Ww / 2 - 1, Ww / 2) for every sample: first
        # plane 0, tap a = plane a, mu = Ww - 1 - 2 gw in (-1, 1] (radimg/kernels/wcheb.py)
        dw = _cheb_span(wmin, wmax)
        w0 = wmin - (0.5 * Ww - 1.0 + 1e-7) * dw
        return dataclasses.replace(geo, w0=float(w0), dw=float(dw),
                                   nshift=0.5 * geo.field.nmin)
    if nstacks == "auto" or nstacks is None:
        dw = dw_max if np.isfinite(dw_max) else 1.0
        nplanes = nplanes_auto
    else:
        nplanes = int(nstacks)
        if nplanes < Ww:
            raise ConfigError(
                f"wterm.nstacks = {nplanes}: mode wstack needs at least {Ww} w-planes "
                f"(the w-kernel support at wterm.epsilon {geo.epsilon:g}); use auto"
            )
        dw = (wmax - wmin) / max(nplanes - Ww, 1) if wmax > wmin else dw_max
        if dw > dw_max * (1 + 1e-12):
            raise ConfigError(
                f"wterm.nstacks = {nplanes} is too few for wterm.epsilon "
                f"{geo.epsilon:g} here: need >= {nplanes_auto} (or auto)"
            )
    w0 = wmin - (0.5 * Ww - 0.5) * dw
    return dataclasses.replace(geo, nplanes=int(nplanes), w0=float(w0), dw=float(dw),
                               nshift=0.5 * geo.field.nmin)


def wproject_geometry(field, epsilon, *, precision="double", oversampling=2.0, nsel=0,
                      centres=None, dw_range=(0.0, 0.0)):
    """The :class:`Geometry` of mode ``wstack-wproject``: padded grid at ``oversampling``
    ("auto" = 2: its cost model trades stacks, not padding), the ES kernel at ``ES_SHARE``
    of epsilon per axis; w-stacks ``centres`` and the residual range ``dw_range`` when
    known (:meth:`Geometry.with_stacks` adds them later)."""
    if oversampling == "auto":
        oversampling = 2.0
    oversampling = float(oversampling)
    field.cell  # noqa: B018  (square pixels or NotImplementedError)
    W, beta = es_parameters(ES_SHARE * float(epsilon), oversampling)
    geo = Geometry(field=field, mode="wstack-wproject", epsilon=float(epsilon),
                   precision=precision, oversampling=oversampling,
                   nxp=good_size(oversampling * field.npix_x),
                   nyp=good_size(oversampling * field.npix_y), W=int(W), beta=float(beta),
                   nsel=int(nsel))
    return geo if centres is None else geo.with_stacks(centres, dw_range)


def scaling_target(image, inplace):
    """The C-contiguous array an operator's ``scale_image`` multiplies: ``image`` itself
    when ``inplace`` (it must be such an array, float64 or float32: a single-precision
    operator's accumulator), else a new float64 copy of it."""
    if inplace:
        if image.dtype not in (np.float64, np.float32) or not image.flags.c_contiguous:
            raise ValueError("inplace scaling needs a C-contiguous float64 or float32 image")
        return image
    return np.array(image, dtype=np.float64, order="C")
