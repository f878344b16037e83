"""``wterm.mode: auto``: the fastest w-term mode and geometry that meets epsilon (issue #13).

Every candidate is costed with the cost model of the operator that would run it, on the
geometry that operator would build, and checked against ``epsilon``:

- ``none`` (2-D gridding, radimg/ops/operator.py): one padded grid. It ignores
  ``exp(2 pi i w (n - 1))``; per sample the dropped phase is ``phi = 2 pi |w| (1 - n)`` and
  ``|1 - exp(i phi)| <= phi``, so (a unit source has unit amplitude anywhere: the operator
  carries no ``1 / n``, docs/internals.md) the image (or visibility) error relative to the
  peak of a unit source is at most

      e_none = 2 pi max|w| (1 - n_min),   n_min = n at the image's farthest corner

  whatever the sky and the weights. ``none`` meets epsilon when ``e_none <= NONE_SHARE eps``
  (the kernels keep the rest: they measure <= 0.25 eps). This is a bound, not an estimate:
  for real data it admits ``none`` only for (nearly) coplanar samples or tiny fields, which
  is when ``none`` is exact enough for every sky.
- ``wstack`` (improved w-stacking): supports, padding, w-plane spacing and count from
  :func:`radimg.ops.geometry.resolve_geometry` (its cost model; accuracy by construction).
- ``wstack-wproject``: k-means stacks from :func:`radimg.ops.wproject.choose_nstacks` and
  the time from :func:`radimg.ops.wproject.predicted_cost`. Its kernel tables are built for
  epsilon, but measured errors exceed it on fields wider than ~31 deg (:data:`
  WPROJECT_MAX_NM1`); there the chooser does not count on it.

Each candidate gets the small-inversion geometry :mod:`radimg.ops.resample` decides for its
mode (``none`` needs no w range, ``wstack-wproject`` square pixels), so its operator works on
that coarse image, plus the cost of resampling. The operators' cost models were written
separately (in different units), so their per-plane and per-sample parts are scaled by
factors measured on this machine against real ``dot`` + ``hdot`` times (:data:`CALIBRATION`,
``scripts/bench_choose.py``) before modes are compared.

All costs are one ``dot`` plus one ``hdot`` (a major cycle's work) in seconds of one core.
The decision does not use the rank or thread count: ``gridder.nthreads: auto`` gives each
rank ``cores / ranks`` threads, and a choice that moved with it would make images depend on
the rank count (DESIGN.md "Determinism"). The inputs are global values (sample count,
``|w|`` range, local-frequency maxima) and the rank-count independent subsample of ``|w|``
(:func:`radimg.parallel.operator.global_subsample`), so the same data give the same choice
at any rank count; the pipeline decides on rank 0 and broadcasts the result. The collective
part (:func:`radimg.parallel.choose.summarize` and ``decide``) lives in radimg.parallel;
this module is the pure model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from radimg.constants import C_LIGHT

__all__ = [
    "MODES",
    "Candidate",
    "WSummary",
    "WtermChoice",
    "choose_wterm",
    "none_error_bound",
    "subsample_slice",
    "summary_from_wavelengths",
]

MODES = ("none", "wstack", "wstack-wproject")
#: Share of epsilon that mode ``none``'s w-term error bound may take (its kernels and the
#: small-inversion resampling take <= 0.25 + 0.1 of epsilon, measured).
NONE_SHARE = 0.5
#: Measured seconds / model seconds of one dot + hdot, per mode, for the model's per-plane
#: part (FFTs, w-screens, copies) and per-sample part (kernels); one thread, single
#: precision, epsilon 1e-5, on the 2-core development machine. Least-squares fit of the
#: total time (relative errors) over the cases of scripts/bench_choose.py (real MWA
#: snapshot at 1024 x 60" and 4096 x 30", narrow-field MeerKAT, the demo; the fastest of
#: two runs of each; wstack-wproject without the 4096 x 30" case, outside WPROJECT_MAX_NM1).
#: The fitted totals match those runs to within 17% (wstack at 4096 x 30": 35% low). With
#: these factors auto picked the measured-fastest mode that met epsilon in all 6 cases of
#: later runs (two more cases not in the fit: real MWA 2048 x 40", real VLA 512 x 0.4"),
#: after the operators' FFT changes too. The bench prints a refit: rerun it when the
#: operators' speed changes (kernels, FFTs) and copy its factors here. The
#: operators' models were written for choosing within one mode (wproject's kernel part
#: only had to rank stack counts: its per-sample supports and term counts are 0.6-3x the
#: real tables', so its two factors are an overall fit, not per-part truths), so only
#: calibrated costs may be compared across modes.
CALIBRATION = {
    "none": {"planes": 0.81, "kernels": 0.72},
    "wstack": {"planes": 0.32, "kernels": 0.71},
    "wstack-wproject": {"planes": 0.83, "kernels": 0.37},
}
#: Resampling (small inversion) cost per point of its 1-D transforms x log2(length), both
#: directions, seconds (measured with the CALIBRATION runs: 0.24-0.97 x 2e-9, median 0.3).
COST_RESAMPLE = 6.0e-10
#: Widest field on which ``wstack-wproject`` has been measured to meet epsilon, as ``1 - n``
#: at the corner of the image its operator grids (the coarse period under small inversion).
#: ``python scripts/bench_choose.py --field-scan``: pyuvdata's real MWA snapshot at 1024 px,
#: epsilon 1e-5, double precision, max |dot - DFT| / max |DFT| for a source at the centre
#: and one near the corner, with the w-kernel support cut of 82d0db4/8c390d0
#: (radimg/kernels/wproject.py): 17 deg (1 - n = 0.022) 4.0e-6, 20.5 deg (0.032) 4.2e-6,
#: 25 deg (0.049) 4.3e-6, 28 deg (0.061) 4.7e-6, 31 deg (0.075) 8.6e-6; 34 deg (0.093)
#: 2.6e-5 (wstack 3.7e-6 on all). Beyond 0.075 the chooser does not count on wstack-wproject
#: (before the support fix the limit was 0.05: 31 deg gave 6.9e-5).
WPROJECT_MAX_NM1 = 0.075
#: Size of the |w| subsample the wproject cost model reads (as radimg.parallel.operator).
MAX_W_SAMPLES = 20000


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class WSummary:
    """What the chooser needs to know about the samples, global over ranks.

    Attributes
    ----------
    nsel : int, samples (row, chan) with non-zero weight.
    wmin, wmax : float, range of ``|w|`` over them, wavelengths (as the wstack operator
        computes it).
    w_sample : ndarray (<= MAX_W_SAMPLES,) float64, ``|w|`` of the rank-count independent
        subsample (wavelengths), or None on ranks other than the deciding one.
    periods : list of resample.candidate_periods tuples ``(nf_x, nf_y, s_x, s_y)``.
    fmax : ndarray (len(periods), 2) float64, global resample.local_frequency_max.
    """

    nsel: int
    wmin: float
    wmax: float
    w_sample: np.ndarray | None
    periods: list
    fmax: np.ndarray


def subsample_slice(offset, tot, max_samples):
    """The rank-count independent subsample of a distributed array, as a slice of one
    rank's part (pure; the rank arithmetic of
    :func:`radimg.parallel.operator.global_subsample`).

    Parameters
    ----------
    offset : int
        Global index of this rank's first element (the ranks' parts in rank order).
    tot : int
        Global size.
    max_samples : int

    Returns
    -------
    slice
        All elements when ``tot <= max_samples``, else those whose global index is a
        multiple of ``stride = ceil(tot / max_samples)`` (at most ``max_samples``).
    """
    if tot <= max_samples:
        return slice(None)
    stride = -(-int(tot) // int(max_samples))
    return slice((-int(offset)) % stride, None, stride)


def summary_from_wavelengths(u, v, w, n_samples, npix_x, npix_y, cell_x, cell_y, *,
                             max_samples=MAX_W_SAMPLES):
    """:class:`WSummary` from a subsample of ``(u, v, w)`` in wavelengths standing for
    ``n_samples`` samples (``radimg plan``: no MS read in full, no MPI)."""
    from radimg.ops.resample import candidate_periods, local_frequency_max

    u, v, w = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, w))
    absw = np.abs(w)
    periods = candidate_periods(npix_x, npix_y, cell_x, cell_y)
    uvw = np.stack([u, v, w], axis=1)
    fmax = local_frequency_max(uvw, np.array([C_LIGHT]), None, [(p[2], p[3]) for p in periods])
    sample = absw[subsample_slice(0, absw.size, max_samples)]
    if absw.size == 0:
        return WSummary(0, 0.0, 0.0, sample, periods, fmax)
    return WSummary(int(n_samples), float(absw.min()), float(absw.max()), sample, periods,
                    fmax)


# ----------------------------------------------------------------------------- model
def none_error_bound(wmax, npix_x, npix_y, cell_x, cell_y):
    """Worst-case error of mode ``none`` relative to a unit source's peak (module doc):
    ``2 pi max|w| (1 - n_min)`` over the requested image."""
    lx = max(npix_x // 2, npix_x - 1 - npix_x // 2) * cell_x
    my = max(npix_y // 2, npix_y - 1 - npix_y // 2) * cell_y
    r2 = lx * lx + my * my
    if r2 >= 1.0:
        return math.inf
    n_min = math.sqrt(1.0 - r2)
    # 1 - n without cancellation for small fields
    return 2.0 * math.pi * float(wmax) * (r2 / (1.0 + n_min))


def _resample_cost(g):
    """Model seconds of ``to_fine`` + ``to_coarse`` of a SmallGeometry (their 1-D passes)."""
    if g is None:
        return 0.0

    def t(n, count):
        return count * n * math.log2(max(n, 2))

    one = (0.5 * t(g.nc_x, g.nc_y) + 0.5 * t(g.nc_y, g.nc_x // 2 + 1)  # rfft2 of coarse
           + t(g.nf_y, g.band_x + 1)  # fine period along y, kept columns
           + 0.5 * t(g.nf_x, g.npix_y))  # irfft along x, requested rows
    return 2.0 * COST_RESAMPLE * one


@dataclass
class Candidate:
    """One mode with the geometry its operator would build, costed and checked.

    ``predicted_s``: calibrated seconds of one dot + one hdot on one core (``inf`` when
    the mode cannot be built); ``error_bound``: the error relative to the peak that the mode
    is built to stay under (epsilon for the w modes, :func:`none_error_bound` for none).
    """

    mode: str
    meets_epsilon: bool
    predicted_s: float
    error_bound: float
    oversampling: float | None = None
    oversampling_w: float | None = None
    nplanes: int | None = None  # w-planes (wstack), stacks (wstack-wproject), 1 (none)
    support: int | None = None
    grid: tuple | None = None  # padded grid (nyp, nxp) of the inner operator
    image: tuple | None = None  # inner operator's image (ny, nx): coarse when small
    small: object = None  # resample.SmallGeometry or None
    model_planes_s: float = 0.0  # uncalibrated model seconds, one dot + one hdot: planes
    model_kernels_s: float = 0.0  # ... and kernel (per-sample) work
    resample_s: float = 0.0
    note: str = ""
    wkernel: str | None = None  # wstack's w axis: "es" planes or "cheb" terms

    def describe(self):
        d = {k: v for k, v in asdict(self).items() if k != "small"}
        d["small_inversion"] = None if self.small is None else self.small.describe()
        d["geometry"] = geometry_text(self)
        for k in ("grid", "image"):
            d[k] = None if d[k] is None else [int(x) for x in d[k]]
        for k in ("predicted_s", "error_bound"):
            if not math.isfinite(d[k]):
                d[k] = None  # JSON has no inf
        return d


@dataclass
class WtermChoice:
    """The chooser's answer: the chosen candidate and every candidate considered."""

    mode: str
    candidates: list
    epsilon: float
    reason: str = ""
    requested: str = "auto"
    extra: dict = field(default_factory=dict)

    def log_line(self) -> str:
        """One line for the run log: the mode, its geometry and why."""
        return f"w-term: {self.requested} -> {self.mode} ({geometry_text(self.chosen)}): " \
            + self.reason

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.mode == self.mode)

    def operator_kwargs(self, oversampling="auto", nstacks="auto"):
        """``mode``, ``oversampling`` and ``nstacks`` for the operator of the chosen mode
        (``oversampling``/``nstacks``: the config's values, kept where they apply).

        ``wstack`` keeps ``"auto"`` oversampling: the operator then resolves the padding
        and the w-plane spacing from the same global values with the same function, while
        a number would also fix the w axis' factor to it."""
        c = self.chosen
        kw = {"mode": c.mode, "oversampling": oversampling, "nstacks": nstacks}
        if c.mode == "none":
            kw["oversampling"] = c.oversampling
            kw["nstacks"] = "auto"
        elif c.mode == "wstack-wproject":
            kw["oversampling"] = c.oversampling
            kw["nstacks"] = int(c.nplanes)
        return kw

    def describe(self):
        return {
            "requested": self.requested,
            "mode": self.mode,
            "epsilon": self.epsilon,
            "reason": self.reason,
            "cost_unit": "predicted seconds of one dot + one hdot on one core",
            "candidates": [dict(c.describe(), chosen=c.mode == self.mode)
                           for c in self.candidates],
            **self.extra,
        }


def _inner(small, npix_x, npix_y, cell_x, cell_y):
    if small is None:
        return npix_x, npix_y, cell_x, cell_y
    return small.nc_x, small.nc_y, small.cell_cx, small.cell_cy


def _small(summary, npix_x, npix_y, cell_x, cell_y, epsilon, mode, enabled):
    if not enabled or not summary.periods:
        return None
    from radimg.ops.resample import choose_geometry

    return choose_geometry(npix_x, npix_y, cell_x, cell_y, epsilon, summary.periods,
                           summary.fmax, wterm=mode != "none",
                           square=mode == "wstack-wproject")


def _wide_field(mode, summary, small, npix_x, npix_y, cell_x, cell_y, epsilon, precision,
                oversampling, nstacks):
    """Candidate ``none`` / ``wstack`` from resolve_geometry on the inner image."""
    from radimg.ops import geometry as G

    nx, ny, cx, cy = _inner(small, npix_x, npix_y, cell_x, cell_y)
    cand = Candidate(mode, False, math.inf, math.inf, small=small, image=(ny, nx))
    if mode == "none":
        cand.error_bound = none_error_bound(summary.wmax, npix_x, npix_y, cell_x, cell_y)
    else:
        cand.error_bound = float(epsilon)
    try:
        geo = G.resolve_geometry(G.Field(nx, ny, cx, cy), epsilon, mode, summary.nsel,
                                 summary.wmin, summary.wmax, oversampling=oversampling,
                                 precision=precision)
    except ValueError as exc:
        cand.note = f"cannot be built: {exc}"
        return cand
    nplanes = geo.nplanes
    if mode == "wstack" and nstacks not in ("auto", None):
        if int(nstacks) < nplanes:
            cand.note = (f"wterm.nstacks {int(nstacks)} is too few for epsilon here "
                         f"(needs >= {nplanes})")
            return cand
        nplanes = int(nstacks)
    # resolve_geometry's cost, split into its per-plane and per-kernel-update parts
    npts = geo.nxp * geo.nyp
    plane = G.COST_FFT * npts * math.log2(npts) + G.COST_CELL * npts + G.COST_PIXEL * nx * ny
    updates = G.COST_UPDATE * summary.nsel * geo.W * geo.W * geo.Ww
    cand.oversampling = geo.oversampling
    cand.oversampling_w = geo.oversampling_w if mode == "wstack" else None
    cand.wkernel = geo.wkernel if mode == "wstack" else None
    cand.nplanes = int(nplanes)
    cand.support = geo.W
    cand.grid = (geo.nyp, geo.nxp)
    cand.model_planes_s = 2.0 * nplanes * plane
    cand.model_kernels_s = 2.0 * updates
    cand.meets_epsilon = cand.error_bound <= (NONE_SHARE * epsilon if mode == "none"
                                              else epsilon)
    if mode == "none" and not cand.meets_epsilon:
        cand.note = (f"w-term error up to {cand.error_bound:.2g} of the peak "
                     f"(2 pi max|w| (1-n), max|w| {summary.wmax:.4g} wavelengths) > "
                     f"{NONE_SHARE:g} x epsilon")
    return cand


def _wproject(summary, small, npix_x, npix_y, cell_x, cell_y, epsilon, oversampling, nstacks,
              cost_wide=True):
    """Candidate ``wstack-wproject`` from the stack cost model on the |w| subsample.
    ``cost_wide=False``: a field wider than it was measured to meet epsilon on is not
    costed (its stack choice took 0.15 s of the real 4096 x 30\" job's set-up, for a
    candidate ``auto`` cannot take)."""
    from radimg.ops.geometry import Field, wproject_geometry
    from radimg.ops.wproject import choose_nstacks, predicted_cost

    nx, ny, cx, cy = _inner(small, npix_x, npix_y, cell_x, cell_y)
    cand = Candidate("wstack-wproject", False, math.inf, float(epsilon), small=small,
                     image=(ny, nx))
    field = Field(nx, ny, cx, cy)
    if not field.square:
        cand.note = "needs square pixels"
        return cand
    nm1 = field.one_minus_n
    if nm1 > WPROJECT_MAX_NM1 and not cost_wide:
        cand.note = (f"not costed: its field (1 - n = {nm1:.3g} at the corner) is wider than "
                     f"the {WPROJECT_MAX_NM1:g} where it was measured to meet epsilon")
        return cand
    sigma = 2.0 if oversampling in ("auto", None) else float(oversampling)
    ws = summary.w_sample
    if ws is None:
        raise ValueError("the |w| subsample is needed (it lives on the deciding rank)")
    ws = np.abs(np.asarray(ws, dtype=np.float64))
    try:
        geo = wproject_geometry(field, float(epsilon), oversampling=sigma)
        if nstacks in ("auto", None):
            k = choose_nstacks(ws, geo, n_total=summary.nsel)
        else:
            k = int(nstacks)
        _, fft, kern = predicted_cost(ws, k, geo)
    except ValueError as exc:
        cand.note = f"cannot be built: {exc}"
        return cand
    scale = summary.nsel / ws.size if ws.size else 0.0
    cand.oversampling = sigma
    cand.nplanes = int(k)
    cand.support = geo.W
    cand.grid = (geo.nyp, geo.nxp)
    cand.model_planes_s = 2.0 * fft
    cand.model_kernels_s = 2.0 * scale * kern
    cand.meets_epsilon = nm1 <= WPROJECT_MAX_NM1
    if not cand.meets_epsilon:
        cand.error_bound = math.inf  # unknown: measured above epsilon on such fields
        cand.note = (f"its field (1 - n = {nm1:.3g} at the corner) is wider than the "
                     f"{WPROJECT_MAX_NM1:g} where it was measured to meet epsilon")
    return cand


def choose_wterm(summary: WSummary, npix_x, npix_y, cell_x, cell_y, epsilon, *,
                 precision="single", modes=MODES, oversampling="auto", nstacks="auto",
                 small_inversion=True, requested="auto"):
    """The fastest candidate of ``modes`` that meets ``epsilon``, and the table of all.

    Parameters
    ----------
    summary : WSummary (with ``w_sample``: call on the deciding rank)
    npix_x, npix_y, cell_x, cell_y : requested image (cells in radians)
    epsilon : float, ``wterm.epsilon``
    precision : {"single", "double"}
    modes : the modes to consider (``radimg plan`` of an explicit mode passes one)
    oversampling : "auto" or a float (``wterm.oversampling``); "auto" lets each mode's cost
        model pick it (wstack-wproject: 2)
    nstacks : "auto" or an int (``wterm.nstacks``: w-planes for wstack, stacks for
        wstack-wproject)
    small_inversion : bool, ``image.small_inversion``
    requested : the config's ``wterm.mode`` (recorded)

    Returns
    -------
    WtermChoice. Pure and deterministic in its arguments.

    Raises
    ------
    radimg.config.ConfigError when no candidate meets epsilon (an explicit mode that
    cannot, e.g. ``none`` on wide-field data, is still returned: the user asked for it).
    """
    cands = []
    for mode in modes:
        small = _small(summary, npix_x, npix_y, cell_x, cell_y, epsilon, mode,
                       small_inversion)
        if mode == "wstack-wproject":
            c = _wproject(summary, small, npix_x, npix_y, cell_x, cell_y, epsilon,
                          oversampling, nstacks, cost_wide=len(modes) == 1)
        else:
            c = _wide_field(mode, summary, small, npix_x, npix_y, cell_x, cell_y, epsilon,
                            precision, oversampling, nstacks)
        if c.grid is not None:
            cal = CALIBRATION[mode]
            c.resample_s = _resample_cost(small)
            c.predicted_s = (cal["planes"] * c.model_planes_s
                             + cal["kernels"] * c.model_kernels_s + c.resample_s)
        cands.append(c)
    ok = [c for c in cands if c.meets_epsilon and math.isfinite(c.predicted_s)]
    if len(modes) == 1:
        c = cands[0]
        reason = f"wterm.mode {c.mode} (as configured)"
        return WtermChoice(c.mode, cands, float(epsilon), reason, requested)
    if not ok:
        from radimg.config import ConfigError

        raise ConfigError(
            f"wterm.mode auto: no w-term mode reaches wterm.epsilon {epsilon:g} here ("
            + "; ".join(f"{c.mode}: {c.note or 'misses epsilon'}" for c in cands)
            + "); raise wterm.epsilon or choose gridder.precision double"
        )
    # cheapest; ties (equal model seconds) go to the simpler mode, in MODES order
    best = min(ok, key=lambda c: (c.predicted_s, MODES.index(c.mode)))
    others = []
    for c in cands:
        if c is best:
            continue
        if not math.isfinite(c.predicted_s):
            others.append(f"{c.mode} {c.note or 'cannot be built'}")
        elif not c.meets_epsilon and c.mode == "none":
            others.append(f"none misses epsilon (w-term error bound {c.error_bound:.2g} > "
                          f"{NONE_SHARE * epsilon:.2g})")
        elif not c.meets_epsilon:
            others.append(f"{c.mode} not counted on: {c.note}")
        else:
            others.append(f"{c.mode} {c.predicted_s:.3g} s")
    reason = (f"predicted {best.predicted_s:.3g} s per dot + hdot on one core, the fastest "
              f"that meets epsilon {epsilon:g}; " + "; ".join(others))
    return WtermChoice(best.mode, cands, float(epsilon), reason, requested)


def geometry_text(c: Candidate) -> str:
    """Short geometry of a candidate for tables and log lines."""
    if not math.isfinite(c.predicted_s):
        return "-"
    parts = []
    if c.image is not None:
        parts.append(f"{c.image[1]}x{c.image[0]} px" + (" (small inv.)" if c.small else ""))
    if c.grid is not None:
        parts.append(f"grid {c.grid[1]}x{c.grid[0]}")
    if c.mode == "wstack" and c.wkernel == "cheb":
        parts.append(f"{c.nplanes} Chebyshev w-terms, sigma {c.oversampling:g}")
    elif c.mode == "wstack":
        parts.append(f"{c.nplanes} planes, sigma {c.oversampling:g}/{c.oversampling_w:g}")
    elif c.mode == "wstack-wproject":
        parts.append(f"{c.nplanes} stacks")
    else:
        parts.append(f"sigma {c.oversampling:g}")
    return ", ".join(parts)


def choice_table(choice) -> list[str]:
    """The candidates as text lines, the chosen one marked ``*`` (``radimg plan``, the
    benchmark). ``choice``: a :class:`WtermChoice` or its :meth:`~WtermChoice.describe`."""
    d = choice.describe() if isinstance(choice, WtermChoice) else choice

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    rows = [["", "mode", "predicted s", "error bound", "meets eps", "geometry"]]
    for c in d["candidates"]:
        rows.append(["*" if c["chosen"] else "", c["mode"], num(c["predicted_s"], ".3g"),
                     num(c["error_bound"], ".2g"), "yes" if c["meets_epsilon"] else "no",
                     c["geometry"]])
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(x.ljust(wd) for x, wd in zip(r, width, strict=True)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * wd for wd in width))
    return out
