"""Run planning without launching ranks: stacks, per-rank load, memory, communication.

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

Memory model per rank (bytes; each term listed in ``memory_breakdown``):
- ``samples``: uvw (3 x float64) + vis (complex of ``precision``) + weight (real of
  ``precision``) + stack index (int32) per sample held.
- ``grid_tiles``: the tiles ``M_jk`` of every stack k a rank grids into (eq. 9), tile x tile
  complex cells each, including a kernel margin of ``ceil(support_max / 2)`` cells.
- ``stack_grids``: the full padded grid of every stack the rank owns (stack k -> rank
  ``k mod n_ranks``, for both schemes) for ``S_k``, ``Z``, ``F``.
- ``images``: replicated images (dirty/residual, model, psf) in ``precision``.
- ``kernels``: ``kernel_storage="table"`` (default): compact 1-D radial w-kernel tables,
  ``n_planes_k x (support_max_k / 2) x 64`` complex per stack present, with
  ``n_planes_k = 1 + ceil(16 * max|dw_k| * (1 - sqrt(1 - l_max^2)))`` (16 planes per turn of
  edge phase). ``"sparse"``: PURIFY-style precomputed [GC] and [GC]^H, two complex values plus
  an int64 column index per touched cell (``load`` cells), the storage of the paper's
  section 5 (21 GB per node there).

Communication per operator application (``comm_bytes_per_apply``, summed over all ranks): the
Alltoallv of grid tiles between the stack owner and the ranks that grid it (one direction:
``dot`` sends owner -> griders, ``hdot`` the same volume back) plus, for ``hdot``, the image
AllSumAll counted as a ring Allreduce, ``2 (n - 1)`` image sizes.
"""

from __future__ import annotations

import math

import numpy as np

from radimg.parallel.balance import field_lmax, sample_support
from radimg.parallel.kmeans import kmeans_w

__all__ = [
    "paper_setup",
    "paper_w_histogram",
    "gaussian_tile_prob",
    "plan",
    "plan_from_config",
    "fits_memory",
    "j_min_from_epsilon",
    "format_bytes",
]

C_LIGHT = 299792458.0
ARCSEC = math.pi / (180.0 * 3600.0)
_DEFAULT_NBINS = 100_000


def paper_setup() -> dict:
    """The synthetic set-up of Pratley & McEwen (2019), section 5.

    2e9 samples, 1024^2 pixels of 90 arcsec (25.6 deg field), Kaiser-Bessel ``J_min = 4``,
    w Gaussian with sigma 200 wavelengths constrained to +-600 (modelled as truncation),
    u and v Gaussian with sigma pi/3 "radians", i.e. a third of the unpadded grid's half
    width (u = +-pi at the grid's Nyquist edge ``1 / (2 cell)``). Double precision as in
    PURIFY; padding factor 2.
    """
    return {
        "n_samples": 2_000_000_000,
        "npix": 1024,
        "cell_arcsec": 90.0,
        "J_min": 4,
        "w_sigma": 200.0,
        "w_clip": 600.0,
        "uv_sigma_frac": 1.0 / 3.0,
        "precision": "double",
        "oversampling": 2.0,
    }


def _largest_remainder(expected: np.ndarray, total: int) -> np.ndarray:
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


def paper_w_histogram(nbins: int = _DEFAULT_NBINS, setup: dict | None = None):
    """Histogram of reflected ``|w|`` for the paper set-up (truncated Gaussian), exact counts.

    Returns
    -------
    edges : ndarray (nbins + 1,) float64, wavelengths, over ``[0, w_clip]``
    counts : ndarray (nbins,) int64, summing to ``n_samples``
    """
    from scipy.special import erf

    s = paper_setup() if setup is None else setup
    edges = np.linspace(0.0, s["w_clip"], nbins + 1)
    cdf = erf(edges / (s["w_sigma"] * math.sqrt(2.0)))  # CDF of |w| up to normalisation
    return edges, _largest_remainder(np.diff(cdf), int(s["n_samples"]))


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


def _w_histogram_from_samples(w, nbins, n_samples=None, valid=None):
    w = np.abs(np.asarray(w, dtype=np.float64).reshape(-1))
    if valid is not None:
        w = w[np.asarray(valid).reshape(-1) > 0]
    hi = float(w.max()) if w.size else 0.0
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, nbins + 1)
    counts = np.histogram(w, bins=edges)[0].astype(np.int64)
    if n_samples is not None and n_samples != counts.sum():
        counts = _largest_remainder(counts, int(n_samples))
    return edges, counts


class _BinnedSequence:
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


def _per_rank_stack(seq: _BinnedSequence, bin_stack, nstacks, B):
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
    nbins: int = _DEFAULT_NBINS,
    kernel_storage: str = "table",
    combine: str = "max",
    method: str = "cuts",
    wproject: bool = True,
    n_images: int = 3,
    support_model: str = "eq8",
    centres=None,
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
            counts = _largest_remainder(counts, int(n_samples))
    elif w is not None:
        edges, counts = _w_histogram_from_samples(w, nbins, n_samples, valid)
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
            oversampling, precision, valid=counts > 0,
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
    seq = _BinnedSequence(counts, bin_load)
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
    grid_bytes = npad_x * npad_y * cbytes
    image_bytes = n_images * npix_x * npix_y * rbytes
    sample_bytes = 24 + cbytes + rbytes + 4
    planes = 1 + np.ceil(16.0 * stack_dwmax * (1.0 - math.sqrt(1.0 - l_max * l_max)))
    table_bytes_k = (planes * np.maximum(1, stack_smax // 2) * 64 * cbytes).astype(np.int64)
    owned_grids = np.bincount(owner, minlength=n_ranks).astype(np.int64) * grid_bytes

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
            tile_mem = tiles_rk.sum(axis=1) * tile_bytes
        else:
            a2a = 0
            tile_mem = np.zeros(n_ranks, np.int64)  # the owner grids straight into its stack grid
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
        breakdown = {
            "samples": (samples * sample_bytes).astype(np.int64),
            "grid_tiles": tile_mem.astype(np.int64),
            "stack_grids": owned_grids,
            "images": np.full(n_ranks, image_bytes, np.int64),
            "kernels": kern.astype(np.int64),
        }
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


def format_bytes(n) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} TiB"


def fits_memory(plan_result: dict, mem_per_rank, scheme: str = "balanced"):
    """Whether every rank's estimated memory fits ``mem_per_rank`` bytes.

    Returns
    -------
    (ok, message) : (bool, str) the message holds a per-component table for the worst rank.
    """
    sch = plan_result[scheme]
    mem = np.asarray(sch["memory_per_rank_bytes"], dtype=np.int64)
    worst = int(np.argmax(mem))
    ok = bool(mem.max() <= mem_per_rank)
    lines = [
        f"{scheme} distribution over {len(mem)} rank(s): peak {format_bytes(mem.max())} on rank "
        f"{worst}, limit {format_bytes(mem_per_rank)} per rank: {'fits' if ok else 'DOES NOT FIT'}",
        f"  {'component':<12} {'rank ' + str(worst):>14} {'max over ranks':>16}",
    ]
    for k, v in sch["memory_breakdown"].items():
        lines.append(f"  {k:<12} {format_bytes(v[worst]):>14} {format_bytes(max(v)):>16}")
    if not ok:
        need = int(math.ceil(mem.sum() / mem_per_rank))
        lines.append(f"  more ranks needed (at least ~{need}), or less precision / a smaller image")
    return ok, "\n".join(lines)


def paper_plan(n_ranks: int, nbins: int = _DEFAULT_NBINS, tile: int = 64, **kw) -> dict:
    """:func:`plan` for :func:`paper_setup` (Gaussian uv tile occupancy)."""
    s = paper_setup()
    edges, counts = paper_w_histogram(nbins, s)
    npad = 2 * math.ceil(s["oversampling"] * s["npix"] / 2)
    # sigma = (pi/3) / pi of the unpadded half-width npix/2 cells on the padded grid.
    sigma_cells = s["uv_sigma_frac"] * s["npix"] / 2.0
    kw.setdefault("precision", s["precision"])
    return plan(
        n_ranks=n_ranks,
        npix=s["npix"],
        cell_arcsec=s["cell_arcsec"],
        J_min=s["J_min"],
        w_hist=(edges, counts),
        tile_prob=gaussian_tile_prob(npad, tile, sigma_cells),
        oversampling=s["oversampling"],
        tile=tile,
        **kw,
    )


# --------------------------------------------------------------------------------------
# From a radimg config (no MPI launch)
# --------------------------------------------------------------------------------------

_MAX_SAMPLE_ROWS = 200_000


def _ms_w_sample(path, spw=0, max_rows=_MAX_SAMPLE_ROWS):
    """(n_samples, w (lambda), u, v (lambda)) from a strided subsample of the MS UVW column."""
    from casacore.tables import table  # lazy: only planning from a real MS needs casacore

    with table(str(path), ack=False) as t:
        nrows = t.nrows()
        step = max(1, -(-nrows // max_rows))
        uvw = t.getcol("UVW", startrow=0, nrow=-1, rowincr=step) if nrows else np.zeros((0, 3))
        frow = None
        if "FLAG_ROW" in t.colnames() and nrows:
            frow = t.getcol("FLAG_ROW", startrow=0, nrow=-1, rowincr=step)
    with table(f"{path}::SPECTRAL_WINDOW", ack=False) as s:
        freq = np.asarray(s.getcell("CHAN_FREQ", spw), dtype=np.float64)
    if frow is not None:
        uvw = uvw[~frow]
    lam = freq / C_LIGHT
    u = (uvw[:, 0:1] * lam[None, :]).ravel()
    v = (uvw[:, 1:2] * lam[None, :]).ravel()
    w = (uvw[:, 2:3] * lam[None, :]).ravel()
    return nrows * freq.size, w, u, v


def _simulate_w_sample(sim: dict, max_times=50):
    """(n_samples, w, u, v) of the observation ``input.simulate`` would write, no MS written.

    The simulator's own geometry (layout, hour angles, J2000 uvw; radimg.sim) at up to
    ``max_times`` of its integrations, so stacks, supports and tiles are those of the run.
    """
    from radimg.sim.layouts import load_layout
    from radimg.sim.simulate import _resolve, baselines
    from radimg.sim.uvw import antenna_uvw, array_longitude, hour_angle_times

    cfg = _resolve(dict(sim))
    layout = load_layout(cfg["telescope"])
    ra0, dec0 = math.radians(float(cfg["ra_deg"])), math.radians(float(cfg["dec_deg"]))
    nchan = int(cfg["nchan"])
    freq = float(cfg["freq_hz"]) + np.arange(nchan) * float(cfg["chan_width_hz"])
    lon = array_longitude(layout.positions)
    mjd = hour_angle_times(cfg["ha_start_h"], cfg["ha_stop_h"], float(cfg["integration_s"]),
                           ra0, lon)
    a1, a2 = baselines(len(layout.names))
    n_samples = a1.size * mjd.size * nchan
    sub = mjd[:: max(1, -(-mjd.size // max_times))]
    au = antenna_uvw(layout.positions, sub, ra0, dec0)  # (time, ant, 3)
    uvw = (au[:, a1] - au[:, a2]).reshape(-1, 3)
    lam = freq / C_LIGHT
    f = lambda a: (a[:, None] * lam[None, :]).ravel()  # noqa: E731
    return n_samples, f(uvw[:, 2]), f(uvw[:, 0]), f(uvw[:, 1])


def _tile_prob_from_uv(u, v, npad_x, npad_y, cell_rad, tile):
    """Empirical tile occupancy from uv samples (and their conjugates) in wavelengths."""
    ntx = -(-npad_x // tile)
    nty = -(-npad_y // tile)
    uc = np.concatenate([u, -u]) * npad_x * cell_rad + npad_x // 2
    vc = np.concatenate([v, -v]) * npad_y * cell_rad + npad_y // 2
    ok = (uc >= 0) & (uc < npad_x) & (vc >= 0) & (vc < npad_y)
    ix = (uc[ok] // tile).astype(np.int64)
    iy = (vc[ok] // tile).astype(np.int64)
    p = np.bincount(iy * ntx + ix, minlength=ntx * nty).astype(np.float64)
    return p / p.sum() if p.sum() > 0 else None


def plan_from_config(cfg: dict, n_ranks: int, mem_per_rank_bytes: int | None = None) -> dict:
    """:func:`plan` for a resolved radimg config, with no MPI launch.

    Samples come from a strided subsample of the MS UVW column (casacore, lazy import) and
    the SPECTRAL_WINDOW frequencies, or, for ``input.simulate: true``, from a cheap estimate
    of the configured observation. ``wterm.nstacks: auto`` plans one stack per rank.
    """
    img, wt, gr, inp = cfg["image"], cfg["wterm"], cfg["gridder"], cfg["input"]
    npix_x = int(img["npix"])
    npix_y = int(img.get("npix_y") or npix_x)
    cell_rad = float(img["cell_arcsec"]) * ARCSEC
    oversampling = float(wt.get("oversampling", 2.0))
    npad_x = 2 * math.ceil(oversampling * npix_x / 2)
    npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    tile = 64
    if inp.get("simulate"):
        n_samples, w, u, v = _simulate_w_sample(cfg.get("simulate", {}))
        source = "estimate from the simulate: section"
    else:
        n_samples, w, u, v = _ms_w_sample(inp["ms"], int(inp.get("spw", 0)))
        source = f"MS {inp['ms']} (UVW subsample)"
    mode = wt.get("mode", "wstack-wproject")
    nstacks = 1 if mode == "none" else wt.get("nstacks", "auto")
    centres = None
    eps = float(wt.get("epsilon", 1e-5))
    if mode == "wstack-wproject":
        # The stacks the operator itself would choose (cost model, k-means, tail splits),
        # from the w subsample; supports come from its real kernel tables.
        from radimg.ops.wproject import choose_nstacks, stack_centres

        w_abs = np.abs(np.asarray(w, dtype=np.float64))
        if nstacks in (None, "auto"):
            nstacks = choose_nstacks(
                w_abs, npix_x, npix_y, cell_rad, eps, oversampling, n_total=int(n_samples)
            )
        centres = stack_centres(w_abs, int(nstacks))
    if mem_per_rank_bytes is None:
        mem_per_rank_bytes = (cfg.get("resources") or {}).get("mem_per_rank")
        if isinstance(mem_per_rank_bytes, str):
            from radimg.config import parse_bytes

            mem_per_rank_bytes = parse_bytes(mem_per_rank_bytes)
    result = plan(
        n_ranks=n_ranks,
        npix=(npix_x, npix_y),
        cell_arcsec=float(img["cell_arcsec"]),
        nstacks=nstacks,
        epsilon=eps,
        w=w,
        n_samples=int(n_samples),
        tile_prob=_tile_prob_from_uv(u, v, npad_x, npad_y, cell_rad, tile),
        precision=gr.get("precision", "single"),
        oversampling=oversampling,
        tile=tile,
        mem_per_rank=mem_per_rank_bytes,
        wproject=(mode == "wstack-wproject"),
        nbins=20_000,
        support_model="tables" if mode == "wstack-wproject" else "eq8",
        centres=centres,
    )
    result["source"] = source
    return result
