"""The binned load model of ``radimg plan``: stacks, per-rank load, memory, communication
for N ranks without launching them (:func:`plan`).

Pure numpy (no MPI). For billions of samples nothing per-sample is materialised: the
reflected w distribution is a fine histogram (default 10**5 bins over ``[0, max|w|]``),
k-means runs on the bin centres weighted by counts, every sample of a bin gets the load of
the bin centre (eq. 8 evaluated at the centre; the bin width is far below the w step that
changes the support by one cell), and rank cut points fall *inside* bins at whole-sample
granularity ("fractional splits of bins"): a cut at load position ``t`` in bin ``b`` leaves
``floor((t - start_b) / load_b)`` of the bin's samples on the left. The resulting per-rank
loads are exactly those that :func:`radimg.parallel.balance.balanced_assignment` gives for
the same samples ordered by (stack, w).

In the real run samples are ordered by (stack, grid tile). Since the uv position does not
depend on w (to the accuracy of this model), the per-sample load along the tile order is a
random mix of the same stack's loads and per-rank totals agree up to sampling noise; the tile
order is used here only to estimate which grid tiles each rank touches.

Memory terms: :mod:`radimg.parallel.plan_memory`; the paper's set-up:
:mod:`radimg.parallel.plan_paper`; the operator's exchange replayed:
:mod:`radimg.parallel.plan_exchange`; samples from an MS or the simulator:
:mod:`radimg.parallel.plan_sampling`; a radimg config: :mod:`radimg.parallel.plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from radimg.constants import ARCSEC
from radimg.parallel.balance import field_lmax, sample_support
from radimg.parallel.kmeans import kmeans_w
from radimg.parallel.plan_memory import CODE_BYTES, fits_memory, memory_terms, peak_bytes

__all__ = [
    "plan",
    "gaussian_tile_prob",
    "j_min_from_epsilon",
    "largest_remainder",
    "w_histogram_from_samples",
    "BinnedSequence",
    "DEFAULT_NBINS",
]

DEFAULT_NBINS = 100_000


def largest_remainder(expected: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing exactly to ``total`` from non-negative expected counts."""
    expected = np.asarray(expected, dtype=np.float64)
    if expected.sum() <= 0:
        return np.zeros(expected.shape, np.int64)
    scaled = expected * (total / expected.sum())
    base = np.floor(scaled).astype(np.int64)
    short = int(total - base.sum())
    if short > 0:
        idx = np.argsort(-(scaled - base), kind="stable")[:short]
        base[idx] += 1
    return base


def gaussian_tile_prob(npad: int, tile: int, sigma_cells: float) -> np.ndarray:
    """Probability per grid tile (row-major ``(tile_y, tile_x)``) for Gaussian u, v.

    The Hermitian reflection to ``w >= 0`` keeps a symmetric uv Gaussian symmetric.
    """
    from scipy.special import ndtr

    nt = -(-npad // tile)
    e = (np.arange(nt + 1) * tile - npad // 2).astype(np.float64)
    p1 = np.diff(ndtr(e / sigma_cells))
    p = np.outer(p1, p1).ravel()
    return p / p.sum()


def j_min_from_epsilon(epsilon: float, oversampling: float = 2.0) -> int:
    """Anti-aliasing kernel support for an accuracy target.

    Uses :func:`radimg.kernels.es.es_parameters` when available, else the ES-kernel rule of
    thumb for ``oversampling = 2`` (about one cell per decade of accuracy, plus two).
    """
    try:
        from radimg.kernels.es import es_parameters

        return int(es_parameters(epsilon, oversampling)[0])
    except Exception:  # noqa: BLE001 - module absent or different signature: estimate
        return int(min(16, max(4, math.ceil(math.log10(1.0 / epsilon)) + 2)))


def w_histogram_from_samples(w, nbins, n_samples=None, valid=None):
    w = np.abs(np.asarray(w, dtype=np.float64).reshape(-1))
    if valid is not None:
        w = w[np.asarray(valid).reshape(-1) > 0]
    hi = float(w.max()) if w.size else 0.0
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, nbins + 1)
    counts = np.histogram(w, bins=edges)[0].astype(np.int64)
    if n_samples is not None and n_samples != counts.sum():
        counts = largest_remainder(counts, int(n_samples))
    return edges, counts


class BinnedSequence:
    """Samples ordered by bin, each bin a run of ``count`` samples of equal ``load``."""

    def __init__(self, counts, load):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.load = np.asarray(load, dtype=np.int64)
        self.end = np.cumsum(self.counts * self.load)  # load position at the end of each bin
        self.start = self.end - self.counts * self.load
        self.cend = np.cumsum(self.counts)
        self.total = int(self.end[-1]) if self.end.size else 0

    def floor_to_sample(self, t):
        """Largest whole-sample boundary position <= t (vectorised)."""
        t = np.asarray(t, dtype=np.int64)
        b = np.clip(np.searchsorted(self.end, t, side="right"), 0, self.end.size - 1)
        inside = np.where(self.load[b] > 0, (t - self.start[b]) // np.maximum(self.load[b], 1), 0)
        inside = np.clip(inside, 0, self.counts[b])
        pos = self.start[b] + inside * self.load[b]
        return np.where(t >= self.total, self.total, pos)

    def samples_before(self, t):
        """Number of samples whose end is <= t (t a sample boundary)."""
        t = np.asarray(t, dtype=np.int64)
        b = np.clip(np.searchsorted(self.end, t, side="right"), 0, self.end.size - 1)
        inside = np.where(self.load[b] > 0, (t - self.start[b]) // np.maximum(self.load[b], 1), 0)
        inside = np.clip(inside, 0, self.counts[b])
        n = self.cend[b] - self.counts[b] + inside
        return np.where(t >= self.total, self.cend[-1], n)

    def next_end(self, t):
        """End of the first positive-load sample starting at or after t."""
        b = int(np.searchsorted(self.end, t, side="right"))
        while b < self.end.size and (self.load[b] == 0 or self.counts[b] == 0):
            b += 1
        if b >= self.end.size:
            return self.total
        k = max(0, (int(t) - int(self.start[b])) // int(self.load[b]))
        return int(self.start[b]) + (k + 1) * int(self.load[b])

    def midpoint_cuts(self, n_ranks):
        """``method="cuts"``: as :func:`radimg.parallel.balance.midpoint_ranks` (positions)."""
        T = self.total
        B = np.zeros(n_ranks + 1, dtype=np.int64)
        B[-1] = T
        if T == 0 or n_ranks == 1:
            return B
        if (2 * T + 1) * n_ranks >= 2**62:
            raise OverflowError("load total too large for exact int64 cut points")
        n = np.int64(n_ranks)
        key = np.where(self.counts > 0, (2 * self.end - self.load) * n, -1)
        key = np.maximum.accumulate(key)  # last-sample midpoint key, made monotone
        targets = 2 * np.arange(1, n_ranks, dtype=np.int64) * np.int64(T)
        b = np.searchsorted(key, targets, side="left")
        L = self.load[b]
        num = targets - (2 * self.start[b] + L) * n
        den = 2 * n * np.maximum(L, 1)
        i = np.where(L > 0, -(-num // den), 0)
        i = np.clip(i, 0, self.counts[b])
        B[1:-1] = self.start[b] + i * L
        return B

    def greedy_cuts(self, n_ranks):
        """Paper section 4.1 fill; as :func:`radimg.parallel.balance.greedy_cut_positions`."""
        avg = self.total // n_ranks
        B = np.zeros(n_ranks + 1, dtype=np.int64)
        B[-1] = self.total
        for j in range(n_ranks - 1):
            b = int(B[j])
            c = int(self.floor_to_sample(b + avg))
            if c <= b and b < self.total:
                c = self.next_end(b)
            B[j + 1] = min(max(c, b), self.total)
        return B


def _per_rank_stack(seq: BinnedSequence, bin_stack, nstacks, B):
    """Samples and load of each (rank, stack) for contiguous load ranges ``B``."""
    st_lo = np.full(nstacks, seq.total, np.int64)
    st_hi = np.zeros(nstacks, np.int64)
    for k in range(nstacks):
        sel = np.flatnonzero(bin_stack == k)
        if sel.size:
            st_lo[k] = seq.start[sel[0]]
            st_hi[k] = seq.end[sel[-1]]
    lo = np.clip(B[:-1, None], st_lo[None, :], st_hi[None, :])
    hi = np.clip(B[1:, None], st_lo[None, :], st_hi[None, :])
    load = (hi - lo).astype(np.int64)
    samples = (seq.samples_before(hi) - seq.samples_before(lo)).astype(np.int64)
    return samples, load


def _tiles_touched(frac_lo, frac_hi, tile_cum, occupied, margin_rows, ntx, ntiles):
    """Tiles a rank touches when it holds the [frac_lo, frac_hi) slice of a stack's samples
    in row-major tile order, plus ``margin_rows`` tile rows either side for the kernel."""
    if frac_hi <= frac_lo:
        return 0
    t0 = int(np.searchsorted(tile_cum, frac_lo, side="right"))
    t1 = int(np.searchsorted(tile_cum, frac_hi, side="left"))
    t0 = min(t0, ntiles - 1)
    t1 = min(max(t1, t0), ntiles - 1)
    n = int(occupied[t0 : t1 + 1].sum())
    return min(ntiles, n + 2 * margin_rows * ntx)


def plan(
    *,
    n_ranks: int,
    npix,
    cell_arcsec: float,
    nstacks="auto",
    J_min: int | None = None,
    epsilon: float = 1e-5,
    w=None,
    w_hist=None,
    n_samples: int | None = None,
    valid=None,
    tile_prob=None,
    precision: str = "single",
    oversampling: float = 2.0,
    tile: int = 64,
    mem_per_rank: int | None = None,
    nbins: int = DEFAULT_NBINS,
    kernel_storage: str = "table",
    combine: str = "max",
    method: str = "cuts",
    wproject: bool = True,
    n_images: int = 3,
    support_model: str = "eq8",
    centres=None,
    mode: str | None = None,
    nchan: int = 1,
    exchange: dict | None = None,
    tables=None,
    small=None,
    dot: bool = True,
    deconvolution: dict | None = None,
) -> dict:
    """Stacks, per-rank load, memory and communication for naive vs balanced distribution.

    Long because its 30 keyword parameters each take a signature line and a documented
    meaning below; the body only chains the steps (w histogram, stacks, supports, cuts, tile
    model, :func:`_scheme` per assignment) and assembles the result.

    Parameters
    ----------
    n_ranks : int
    npix : int or (npix_x, npix_y)
    cell_arcsec : float
    nstacks : int or "auto"
        "auto" means one stack per rank (the paper's set-up, needed for the naive scheme).
    J_min : int, optional
        Anti-aliasing support; from ``epsilon`` when omitted.
    w : ndarray, optional
        w samples in wavelengths (any sign; may be a subsample: ``n_samples`` rescales).
    w_hist : (edges, counts), optional
        Histogram of reflected ``|w|`` instead of samples.
    n_samples : int, optional
        Total number of (unflagged) samples represented.
    valid : ndarray, optional
        Mask/weight for ``w`` (0 = flagged, excluded).
    tile_prob : ndarray (ntiles,), optional
        Fraction of samples per padded-grid tile, row-major; None = uniform over the grid.
    precision : {"single", "double"}
    oversampling : float
        Padding factor (padded grid = ``oversampling * npix``, rounded up to even).
    tile : int
        Grid tile side (cells) exchanged by the Alltoallv.
    mem_per_rank : int, optional
        Bytes per rank; adds ``fits`` and ``memory_message``.
    kernel_storage : {"table", "sparse"}
    combine : {"max", "sum"}
        Support rule, see :func:`radimg.parallel.balance.sample_support`.
    method : {"cuts", "paper"}
        Cut rule of :func:`radimg.parallel.balance.balanced_assignment`.
    wproject : bool
        False for w-stacking only / no w-correction: every sample has support ``J_min``.
    support_model : {"eq8", "tables"}
        ``"eq8"``: the paper's support rule with ``J_min`` (for the paper's own set-up).
        ``"tables"``: the supports and kernel-table size of radimg's ``wstack-wproject``
        operator, read off its real kernel tables
        (:func:`radimg.parallel.balance.wproject_supports`; ~3x eq. 8 per axis, ``J_min``
        is the operator's ES support for ``epsilon``). What ``radimg plan`` uses.
    centres : ndarray, optional
        Stack centres (wavelengths) to use instead of k-means with ``nstacks`` (e.g. the
        operator's own choice, :func:`radimg.ops.wproject.stack_centres`).
    mode : {"none", "wstack", "wstack-wproject"}, optional
        Operator whose memory is modelled (default from ``wproject``).
    nchan : int
        Channels per row (per-row arrays are shared by a row's samples); 1 counts them per
        sample (an upper bound).
    exchange : dict, optional
        The balanced scheme's real exchange (:func:`radimg.parallel.plan_exchange.operator_exchange`): per-rank
        ``recv_cells``, ``send_cells``, ``remote_cells``, ``planes_owned``, ``samples``;
        replaces the tile model's cells in the memory and communication figures.
    tables : WKernelTables, optional
        Ready kernel tables for ``support_model="tables"`` (not rebuilt).
    small : radimg.ops.resample.SmallGeometry, optional
        Small inversion: ``npix`` / ``cell_arcsec`` are then the coarse image the operator
        grids; the requested image and the resampling add the ``resample`` memory term.
    dot : bool
        The run applies the forward operator (deconvolves); see :func:`radimg.parallel.plan_memory.memory_terms`.
    deconvolution : dict, optional
        The run's deconvolution (radimg.parallel.plan_memory.deconvolution_bytes): adds
        the ``deconvolution`` memory term.

    Returns
    -------
    dict with ``"balanced"``, ``"naive"`` (per-scheme dicts: ``load_per_rank``,
    ``max_over_mean``, ``samples_per_rank``, ``memory_per_rank_bytes``, ``memory_breakdown``,
    ``peak_memory_bytes``, ``comm_bytes_per_apply``, ``comm_breakdown``), ``"stacks"``
    (centres, samples, load, max support, owner rank) and the geometry used.
    """
    n_ranks = int(n_ranks)
    if n_ranks < 1:
        raise ValueError("n_ranks must be >= 1")
    npix_x, npix_y = (int(npix), int(npix)) if np.ndim(npix) == 0 else (int(npix[0]), int(npix[1]))
    cell_rad = float(cell_arcsec) * ARCSEC
    npad_x = 2 * math.ceil(oversampling * npix_x / 2)
    npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    l_max = field_lmax(npix_x, npix_y, cell_rad)
    if J_min is None:
        J_min = j_min_from_epsilon(epsilon, oversampling)
    nst = n_ranks if nstacks in (None, "auto") else int(nstacks)
    if precision not in ("single", "double"):
        raise ValueError("precision must be 'single' or 'double'")
    cbytes = 8 if precision == "single" else 16

    edges, counts = _w_counts(w, w_hist, n_samples, valid, nbins)
    centres_bin = 0.5 * (edges[1:] + edges[:-1])
    given = centres is not None
    centres, bin_stack = _stack_labels(centres, centres_bin, counts, nst)
    if given:
        nst = centres.size
    dw = centres_bin - centres[bin_stack]
    if support_model not in ("eq8", "tables"):
        raise ValueError(f"support_model must be 'eq8' or 'tables', not {support_model!r}")
    support, bin_load, J_min, table_bytes_real = _bin_supports(
        wproject, support_model, centres_bin, centres[bin_stack], dw, counts, J_min, l_max,
        npix_x, npix_y, npad_x, npad_y, cell_rad, epsilon, oversampling, precision, combine,
        tables,
    )
    stacks = _StackStats.of(bin_stack, counts, bin_load, support, dw, nst, n_ranks)
    seq = BinnedSequence(counts, bin_load)  # bins are in w order, labels monotone in w
    if method not in ("cuts", "paper"):
        raise ValueError(f"method must be 'cuts' or 'paper', not {method!r}")
    # Balanced: contiguous load ranges of the (stack, w) ordered samples.
    B = seq.midpoint_cuts(n_ranks) if method == "cuts" else seq.greedy_cuts(n_ranks)
    bal_samples_rk, bal_load_rk = _per_rank_stack(seq, bin_stack, nst, B)
    # Naive: stack k on rank k mod n.
    nai_samples_rk = np.zeros((n_ranks, nst), np.int64)
    nai_load_rk = np.zeros((n_ranks, nst), np.int64)
    nai_samples_rk[stacks.owner, np.arange(nst)] = stacks.samples
    nai_load_rk[stacks.owner, np.arange(nst)] = stacks.load

    tiles = _TileModel.of(npad_x, npad_y, tile, tile_prob)
    ctx = _SchemeContext(
        n_ranks=n_ranks, npix_x=npix_x, npix_y=npix_y, npad_x=npad_x, npad_y=npad_y,
        precision=precision, cbytes=cbytes, stacks=stacks, tiles=tiles,
        mode=mode if mode is not None else ("wstack-wproject" if wproject else "wstack"),
        kernel_storage=kernel_storage, table_bytes_real=table_bytes_real,
        table_bytes_k=_table_bytes_per_stack(stacks, l_max, cbytes),
        exchange=exchange, nchan=nchan, small=small, dot=dot, deconvolution=deconvolution,
    )
    result = {
        "n_ranks": n_ranks,
        "n_samples": int(counts.sum()),
        "geometry": {
            "npix_x": npix_x,
            "npix_y": npix_y,
            "cell_arcsec": float(cell_arcsec),
            "npad_x": npad_x,
            "npad_y": npad_y,
            "l_max": l_max,
            "J_min": int(J_min),
            "tile": tile,
            "occupied_tiles": int(tiles.occupied.sum()),
            "precision": precision,
            "kernel_storage": kernel_storage,
            "support_rule": combine if support_model == "eq8" else "kernel tables",
            "support_model": support_model,
            "assignment": method,
            "w_bins": int(counts.size),
        },
        "stacks": {
            "nstacks": nst,
            "centres_lambda": centres.tolist(),
            "samples": stacks.samples.tolist(),
            "load": stacks.load.tolist(),
            "max_support": stacks.smax.tolist(),
            "owner_rank": stacks.owner.tolist(),
        },
        "balanced": _scheme(bal_samples_rk, bal_load_rk, False, ctx),
        "naive": _scheme(nai_samples_rk, nai_load_rk, True, ctx),
    }
    if mem_per_rank is not None:
        ok, msg = fits_memory(result, mem_per_rank)
        result["mem_per_rank_bytes"] = int(mem_per_rank)
        result["fits"] = ok
        result["memory_message"] = msg
    return result


def _w_counts(w, w_hist, n_samples, valid, nbins):
    """``(edges (nbins + 1,) float64, counts (nbins,) int64)`` of reflected ``|w|`` from a
    given histogram (rescaled to ``n_samples``) or from samples."""
    if w_hist is not None:
        edges, counts = np.asarray(w_hist[0], np.float64), np.asarray(w_hist[1], np.int64)
        if n_samples is not None and n_samples != counts.sum():
            counts = largest_remainder(counts, int(n_samples))
        return edges, counts
    if w is not None:
        return w_histogram_from_samples(w, nbins, n_samples, valid)
    raise ValueError("plan needs w samples or a w histogram")


def _stack_labels(centres, centres_bin, counts, nst):
    """``(stack centres (nstacks,) float64, stack of each w bin (nbins,) int)``."""
    if centres is None:
        # k-means on the histogram (bin centres weighted by counts) -> stacks (paper sec. 5).
        return kmeans_w(centres_bin, nst, valid=counts.astype(np.float64))
    # given stacks, labelled as WProjectOperator labels its samples
    centres = np.sort(np.asarray(centres, dtype=np.float64).ravel())
    return centres, np.searchsorted(0.5 * (centres[1:] + centres[:-1]), centres_bin)


def _bin_supports(wproject, support_model, centres_bin, bin_centre, dw, counts, J_min, l_max,
                  npix_x, npix_y, npad_x, npad_y, cell_rad, epsilon, oversampling, precision,
                  combine, tables):
    """Kernel support and load of each w bin under the chosen support model.

    Returns ``(support (nbins,) int64, load (nbins,) int64 = cells per sample (0 for empty
    bins), J_min, kernel-table bytes or None)``; ``"tables"`` reads the real operator's
    tables (its ``J_min`` is their ES support).
    """
    table_bytes_real = None
    if wproject and support_model == "tables":
        from radimg.parallel.balance import wproject_supports

        sx, sy, tinfo = wproject_supports(
            centres_bin, bin_centre, npix_x, npix_y, cell_rad, epsilon,
            oversampling, precision, valid=counts > 0, tables=tables,
        )
        J_min = tinfo["W"]
        support = np.maximum(sx, sy)
        bin_load = sx * sy
        table_bytes_real = tinfo["table_bytes"]
    elif wproject:
        npad_cell_rad = min(npad_x, npad_y) * cell_rad
        support = sample_support(dw, J_min, l_max, npad_cell_rad, combine)
        bin_load = support * support
    else:
        support = np.full(dw.shape, J_min, np.int64)
        bin_load = support * support
    bin_load = np.where(counts > 0, bin_load, 0).astype(np.int64)
    return support, bin_load, J_min, table_bytes_real


@dataclass(frozen=True)
class _StackStats:
    """Per-stack totals (each (nstacks,)): samples, load (cells), largest support, largest
    ``|w - centre|`` (wavelengths), owner rank (stack k on rank k mod n) and stacks owned
    per rank (n_ranks,)."""

    samples: np.ndarray
    load: np.ndarray
    smax: np.ndarray
    dwmax: np.ndarray
    owner: np.ndarray
    owned: np.ndarray

    @classmethod
    def of(cls, bin_stack, counts, bin_load, support, dw, nst, n_ranks):
        samples = np.bincount(bin_stack, weights=counts, minlength=nst).astype(np.int64)
        load = np.zeros(nst, np.int64)
        np.add.at(load, bin_stack, counts * bin_load)
        smax = np.zeros(nst, np.int64)
        np.maximum.at(smax, bin_stack, np.where(counts > 0, support, 0))
        dwmax = np.zeros(nst)
        np.maximum.at(dwmax, bin_stack, np.where(counts > 0, np.abs(dw), 0.0))
        owner = np.arange(nst) % n_ranks
        owned = np.bincount(owner, minlength=n_ranks).astype(np.int64)
        return cls(samples, load, smax, dwmax, owner, owned)


@dataclass(frozen=True)
class _TileModel:
    """The padded grid as ``nty x ntx`` tiles of ``tile`` cells a side: cumulative sample
    fraction (ntiles,) in row-major order and which tiles hold samples (ntiles,) int64."""

    tile: int
    ntx: int
    ntiles: int
    cum: np.ndarray
    occupied: np.ndarray

    @classmethod
    def of(cls, npad_x, npad_y, tile, tile_prob):
        ntx = -(-npad_x // tile)
        nty = -(-npad_y // tile)
        ntiles = ntx * nty
        if tile_prob is None:
            tile_prob = np.full(ntiles, 1.0 / ntiles)
        tile_prob = np.asarray(tile_prob, dtype=np.float64).ravel()
        if tile_prob.size != ntiles:
            raise ValueError(
                f"tile_prob must have {ntiles} entries ({nty} x {ntx} tiles of {tile})"
            )
        cum = np.cumsum(tile_prob) / tile_prob.sum()
        return cls(tile, ntx, ntiles, cum, (tile_prob > 0).astype(np.int64))

    def touched(self, frac_lo, frac_hi, support):
        """Tiles a rank touches holding the [frac_lo, frac_hi) slice of a stack whose
        largest kernel support is ``support`` cells."""
        margin = -(-int(math.ceil(support / 2)) // self.tile)
        return _tiles_touched(frac_lo, frac_hi, self.cum, self.occupied, margin, self.ntx,
                              self.ntiles)


def _table_bytes_per_stack(stacks, l_max, cbytes):
    """Kernel-table bytes (nstacks,) int64 of each stack under the eq. 8 model."""
    planes = 1 + np.ceil(16.0 * stacks.dwmax * (1.0 - math.sqrt(1.0 - l_max * l_max)))
    return (planes * np.maximum(1, stacks.smax // 2) * 64 * cbytes).astype(np.int64)


@dataclass(frozen=True)
class _SchemeContext:
    """What :func:`_scheme` needs besides the per-rank samples and load."""

    n_ranks: int
    npix_x: int
    npix_y: int
    npad_x: int
    npad_y: int
    precision: str
    cbytes: int
    stacks: _StackStats
    tiles: _TileModel
    mode: str
    kernel_storage: str
    table_bytes_real: int | None
    table_bytes_k: np.ndarray
    exchange: dict | None
    nchan: int
    small: object
    dot: bool
    deconvolution: dict | None = None


def _remote_tiles(samples_rk, naive, ctx):
    """Tiles (n_ranks, nstacks) each rank grids of stacks another rank owns, and the
    Alltoallv bytes per apply of the tile model."""
    n_ranks, nst = samples_rk.shape
    st = ctx.stacks
    tiles_rk = np.zeros((n_ranks, nst), np.int64)
    if not naive:
        # Each rank holds a slice of each stack's tile-ordered samples.
        cum = np.cumsum(samples_rk, axis=0)
        for k in range(nst):
            if st.samples[k] == 0:
                continue
            lo_f = (cum[:, k] - samples_rk[:, k]) / st.samples[k]
            hi_f = cum[:, k] / st.samples[k]
            for j in np.flatnonzero(samples_rk[:, k]):
                tiles_rk[j, k] = ctx.tiles.touched(lo_f[j], hi_f[j], st.smax[k])
        remote = tiles_rk * (st.owner[None, :] != np.arange(n_ranks)[:, None])
        a2a = int(remote.sum()) * ctx.tiles.tile * ctx.tiles.tile * ctx.cbytes
    else:
        a2a = 0  # each rank owns the stack it grids; its tiles only travel to itself
        for k in range(nst):
            if st.samples[k]:
                tiles_rk[st.owner[k], k] = ctx.tiles.touched(0.0, 1.0, st.smax[k])
    # own stacks skip the buffers: only tiles of stacks owned by another rank count
    return tiles_rk * (st.owner[None, :] != np.arange(n_ranks)[:, None]), a2a


def _scheme(samples_rk, load_rk, naive, ctx):
    """Load, memory and communication figures of one assignment of samples to ranks
    (``samples_rk``, ``load_rk``: (n_ranks, nstacks) int64)."""
    n_ranks, npix2 = ctx.n_ranks, ctx.npix_x * ctx.npix_y
    tile_cells = ctx.tiles.tile * ctx.tiles.tile
    load = load_rk.sum(axis=1)
    samples = samples_rk.sum(axis=1)
    tiles_rk, a2a = _remote_tiles(samples_rk, naive, ctx)
    recv_cells = tiles_rk.sum(axis=1) * tile_cells
    send_cells = np.bincount(
        ctx.stacks.owner, weights=tiles_rk.sum(axis=0), minlength=n_ranks
    ).astype(np.int64) * tile_cells
    owned = ctx.stacks.owned
    big = samples_rk.max(axis=1) if samples_rk.shape[1] else None
    exchange = ctx.exchange
    buffer_cells = None  # the tile model: one exchange round
    if exchange is not None and not naive:
        buffer_cells = exchange.get("buffer_cells")
        recv_cells = np.asarray(exchange["recv_cells"], np.int64)
        send_cells = np.asarray(exchange["send_cells"], np.int64)
        owned = np.asarray(exchange["planes_owned"], np.int64)
        big = exchange.get("max_stack_samples")
        a2a = int(np.sum(exchange["remote_cells"])) * ctx.cbytes
    present = samples_rk > 0
    if ctx.kernel_storage == "table" and ctx.table_bytes_real is not None:
        # one set of tables covers every stack; each rank with samples holds it
        kern = (samples > 0) * np.int64(ctx.table_bytes_real)
    elif ctx.kernel_storage == "table":
        kern = (present * ctx.table_bytes_k[None, :]).sum(axis=1)
    elif ctx.kernel_storage == "sparse":
        kern = load * 2 * (ctx.cbytes + 8)
    else:
        raise ValueError("kernel_storage must be 'table' or 'sparse'")
    breakdown = memory_terms(
        ctx.mode, ctx.precision, samples=samples, nchan=ctx.nchan, recv_cells=recv_cells,
        send_cells=send_cells, planes_owned=owned,
        grid_cells=(exchange or {}).get("grid_cells", ctx.npad_x * ctx.npad_y),
        image_pixels=npix2, kernel_bytes=kern, max_stack_samples=big,
        small=ctx.small, dot=ctx.dot, buffer_cells=buffer_cells,
        deconvolution=ctx.deconvolution,
    )
    breakdown["code"] = np.full(n_ranks, CODE_BYTES, np.int64)
    mem = peak_bytes(breakdown, dirty_only=not ctx.dot)
    allreduce = 2 * (n_ranks - 1) * (npix2 * (ctx.cbytes // 2)) if n_ranks > 1 else 0
    mean = load.mean() if n_ranks else 0.0
    return {
        "load_per_rank": load.tolist(),
        "max_over_mean": float(load.max() / mean) if mean > 0 else 1.0,
        "samples_per_rank": samples.tolist(),
        "stacks_per_rank": present.sum(axis=1).tolist(),
        "memory_per_rank_bytes": mem.tolist(),
        "peak_memory_bytes": int(mem.max()),
        "memory_breakdown": {k: v.tolist() for k, v in breakdown.items()},
        "exchange_cells": {"recv": recv_cells.tolist(), "send": send_cells.tolist()},
        "comm_bytes_per_apply": int(a2a + allreduce),
        "comm_breakdown": {
            "alltoall_tiles_bytes": int(a2a),
            "image_allreduce_bytes": int(allreduce),
        },
    }
