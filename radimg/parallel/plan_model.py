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

import numpy as np

from radimg.constants import ARCSEC
from radimg.parallel.balance import field_lmax, sample_support
from radimg.parallel.kmeans import kmeans_w
from radimg.parallel.plan_memory import fits_memory, memory_terms

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
) -> dict:
    """Stacks, per-rank load, memory and communication for naive vs balanced distribution.

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
    npad_cell_rad = min(npad_x, npad_y) * cell_rad
    if J_min is None:
        J_min = j_min_from_epsilon(epsilon, oversampling)
    nst = n_ranks if nstacks in (None, "auto") else int(nstacks)
    if precision not in ("single", "double"):
        raise ValueError("precision must be 'single' or 'double'")
    cbytes = 8 if precision == "single" else 16
    rbytes = cbytes // 2

    if w_hist is not None:
        edges, counts = np.asarray(w_hist[0], np.float64), np.asarray(w_hist[1], np.int64)
        if n_samples is not None and n_samples != counts.sum():
            counts = largest_remainder(counts, int(n_samples))
    elif w is not None:
        edges, counts = w_histogram_from_samples(w, nbins, n_samples, valid)
    else:
        raise ValueError("plan needs w samples or a w histogram")
    total_samples = int(counts.sum())
    centres_bin = 0.5 * (edges[1:] + edges[:-1])

    if centres is None:
        # k-means on the histogram (bin centres weighted by counts) -> stacks (paper sec. 5).
        centres, bin_stack = kmeans_w(centres_bin, nst, valid=counts.astype(np.float64))
    else:
        # given stacks, labelled as WProjectOperator labels its samples
        centres = np.sort(np.asarray(centres, dtype=np.float64).ravel())
        nst = centres.size
        bin_stack = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), centres_bin)
    dw = centres_bin - centres[bin_stack]
    table_bytes_real = None
    if support_model not in ("eq8", "tables"):
        raise ValueError(f"support_model must be 'eq8' or 'tables', not {support_model!r}")
    if wproject and support_model == "tables":
        from radimg.parallel.balance import wproject_supports

        sx, sy, tinfo = wproject_supports(
            centres_bin, centres[bin_stack], npix_x, npix_y, cell_rad, epsilon,
            oversampling, precision, valid=counts > 0, tables=tables,
        )
        J_min = tinfo["W"]
        support = np.maximum(sx, sy)
        bin_load = sx * sy
        table_bytes_real = tinfo["table_bytes"]
    elif wproject:
        support = sample_support(dw, J_min, l_max, npad_cell_rad, combine)
        bin_load = support * support
    else:
        support = np.full(dw.shape, J_min, np.int64)
        bin_load = support * support
    bin_load = np.where(counts > 0, bin_load, 0).astype(np.int64)

    # Ordered by (stack, w): bins are already in w order and labels are monotone in w.
    seq = BinnedSequence(counts, bin_load)
    stack_samples = np.bincount(bin_stack, weights=counts, minlength=nst).astype(np.int64)
    stack_load = np.zeros(nst, np.int64)
    np.add.at(stack_load, bin_stack, counts * bin_load)
    stack_smax = np.zeros(nst, np.int64)
    np.maximum.at(stack_smax, bin_stack, np.where(counts > 0, support, 0))
    stack_dwmax = np.zeros(nst)
    np.maximum.at(stack_dwmax, bin_stack, np.where(counts > 0, np.abs(dw), 0.0))
    owner = np.arange(nst) % n_ranks

    # Balanced: contiguous load ranges of the (stack, w) ordered samples.
    if method == "cuts":
        B = seq.midpoint_cuts(n_ranks)
    elif method == "paper":
        B = seq.greedy_cuts(n_ranks)
    else:
        raise ValueError(f"method must be 'cuts' or 'paper', not {method!r}")
    bal_samples_rk, bal_load_rk = _per_rank_stack(seq, bin_stack, nst, B)
    # Naive: stack k on rank k mod n.
    nai_samples_rk = np.zeros((n_ranks, nst), np.int64)
    nai_load_rk = np.zeros((n_ranks, nst), np.int64)
    nai_samples_rk[owner, np.arange(nst)] = stack_samples
    nai_load_rk[owner, np.arange(nst)] = stack_load

    # Tile model.
    ntx = -(-npad_x // tile)
    nty = -(-npad_y // tile)
    ntiles = ntx * nty
    if tile_prob is None:
        tile_prob = np.full(ntiles, 1.0 / ntiles)
    tile_prob = np.asarray(tile_prob, dtype=np.float64).ravel()
    if tile_prob.size != ntiles:
        raise ValueError(f"tile_prob must have {ntiles} entries ({nty} x {ntx} tiles of {tile})")
    tile_cum = np.cumsum(tile_prob) / tile_prob.sum()
    occupied = (tile_prob > 0).astype(np.int64)
    n_occ = int(occupied.sum())
    tile_bytes = tile * tile * cbytes
    if mode is None:
        mode = "wstack-wproject" if wproject else "wstack"
    planes = 1 + np.ceil(16.0 * stack_dwmax * (1.0 - math.sqrt(1.0 - l_max * l_max)))
    table_bytes_k = (planes * np.maximum(1, stack_smax // 2) * 64 * cbytes).astype(np.int64)
    owned_stacks = np.bincount(owner, minlength=n_ranks).astype(np.int64)

    def scheme(samples_rk, load_rk, naive):
        load = load_rk.sum(axis=1)
        samples = samples_rk.sum(axis=1)
        tiles_rk = np.zeros((n_ranks, nst), np.int64)
        if not naive:
            # Each rank holds a slice of each stack's tile-ordered samples.
            cum = np.cumsum(samples_rk, axis=0)
            for k in range(nst):
                if stack_samples[k] == 0:
                    continue
                margin = -(-int(math.ceil(stack_smax[k] / 2)) // tile)
                lo_f = (cum[:, k] - samples_rk[:, k]) / stack_samples[k]
                hi_f = cum[:, k] / stack_samples[k]
                for j in np.flatnonzero(samples_rk[:, k]):
                    tiles_rk[j, k] = _tiles_touched(
                        lo_f[j], hi_f[j], tile_cum, occupied, margin, ntx, ntiles
                    )
            remote = tiles_rk * (owner[None, :] != np.arange(n_ranks)[:, None])
            a2a = int(remote.sum()) * tile_bytes
        else:
            a2a = 0  # each rank owns the stack it grids; its tiles only travel to itself
            for k in range(nst):
                if stack_samples[k]:
                    margin = -(-int(math.ceil(stack_smax[k] / 2)) // tile)
                    tiles_rk[owner[k], k] = _tiles_touched(
                        0.0, 1.0, tile_cum, occupied, margin, ntx, ntiles
                    )
        # own stacks skip the buffers: only tiles of stacks owned by another rank count
        tiles_rk = tiles_rk * (owner[None, :] != np.arange(n_ranks)[:, None])
        recv_cells = tiles_rk.sum(axis=1) * tile * tile
        send_cells = np.bincount(
            owner, weights=tiles_rk.sum(axis=0), minlength=n_ranks
        ).astype(np.int64) * tile * tile
        owned = owned_stacks
        big = samples_rk.max(axis=1) if nst else None
        if exchange is not None and not naive:
            recv_cells = np.asarray(exchange["recv_cells"], np.int64)
            send_cells = np.asarray(exchange["send_cells"], np.int64)
            owned = np.asarray(exchange["planes_owned"], np.int64)
            big = exchange.get("max_stack_samples")
            a2a = int(np.sum(exchange["remote_cells"])) * cbytes
        present = samples_rk > 0
        if kernel_storage == "table" and table_bytes_real is not None:
            # one set of tables covers every stack; each rank with samples holds it
            kern = (samples > 0) * np.int64(table_bytes_real)
        elif kernel_storage == "table":
            kern = (present * table_bytes_k[None, :]).sum(axis=1)
        elif kernel_storage == "sparse":
            kern = load * 2 * (cbytes + 8)
        else:
            raise ValueError("kernel_storage must be 'table' or 'sparse'")
        breakdown = memory_terms(
            mode, precision, samples=samples, nchan=nchan, recv_cells=recv_cells,
            send_cells=send_cells, planes_owned=owned,
            grid_cells=(exchange or {}).get("grid_cells", npad_x * npad_y),
            image_pixels=npix_x * npix_y, kernel_bytes=kern, max_stack_samples=big,
            small=small, dot=dot,
        )
        mem = sum(breakdown.values())
        allreduce = 2 * (n_ranks - 1) * (npix_x * npix_y * rbytes) if n_ranks > 1 else 0
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

    result = {
        "n_ranks": n_ranks,
        "n_samples": total_samples,
        "geometry": {
            "npix_x": npix_x,
            "npix_y": npix_y,
            "cell_arcsec": float(cell_arcsec),
            "npad_x": npad_x,
            "npad_y": npad_y,
            "l_max": l_max,
            "J_min": int(J_min),
            "tile": tile,
            "occupied_tiles": n_occ,
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
            "samples": stack_samples.tolist(),
            "load": stack_load.tolist(),
            "max_support": stack_smax.tolist(),
            "owner_rank": owner.tolist(),
        },
        "balanced": scheme(bal_samples_rk, bal_load_rk, naive=False),
        "naive": scheme(nai_samples_rk, nai_load_rk, naive=True),
    }
    if mem_per_rank is not None:
        ok, msg = fits_memory(result, mem_per_rank)
        result["mem_per_rank_bytes"] = int(mem_per_rank)
        result["fits"] = ok
        result["memory_message"] = msg
    return result
