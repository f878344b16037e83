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

Memory model per rank (bytes; each term listed in ``memory_breakdown``). It counts what
``radimg run`` holds at its peak, the PSF / dirty-image ``hdot`` (or a major-cycle ``dot``) of
:class:`radimg.parallel.operator.DistributedOperator`; ``c`` / ``r`` are the complex / real
item sizes of ``precision``, ``G`` the padded grid's cells, ``P`` the image's pixels:

- ``samples``: every per-sample array alive then, ``s * B_s + rows * B_r`` for the rank's
  ``s`` samples and ``rows = s / nchan`` rows (:data:`SAMPLE_BYTES`). ``none``/``wstack``:
  vis, imaging weight, redistributed weight, weight as read (4 x ``c``/``r``), the valid and
  operator masks (2), two sample layouts (the serial operator's and the distributed one's,
  int64 index + int32 plane each: 24), and inside ``hdot`` the PSF's ``ones_like(vis)``, the
  row-padded vis and weight copies (``c + c + r``), ``prepare_samples`` coordinates (24) and
  values (``c``); per row uvw as read, redistributed and the serial operator's copy with the
  anchors (3 x 24), ``row_id`` and the destination rank (2 x 8). ``wstack-wproject``: vis,
  PSF ones (2 ``c``), three weights (3 ``r``), masks (2), stack labels (4), stack index and
  the per-stack tile layout cached by ``grid_samples`` (2 x 8); per row uvw as read and
  redistributed, ``row_id``, destination (64); plus, for the samples of the rank's largest
  stack, the work arrays of building its tile layout in the first ``hdot``
  (:data:`LAYOUT_TRANSIENT_BYTES`: row/channel, u/v/w, sign, supports, first cells, tiles,
  sort key and permutation, ~140 bytes).
- ``grid_tiles``: the tile exchange buffers. Every cell a rank receives from other ranks
  (tiles ``M_jk`` of the stacks/planes it touches and does not own; its own stacks skip the
  buffers, its samples grid/degrid on the owner's grid) and every cell it serves to other
  ranks as owner is held once in the send or receive buffer of ``dot``/``hdot`` (``c``, both
  alive around the Alltoallv): ``(recv_cells + send_cells) * c``, so 0 at one rank. Tiles
  are kept as int32 tile ids (4 bytes per tile, not counted), no per-cell index.
- ``stack_grids``: full padded grids held at once. Owned stacks are transformed one at a
  time, so this does NOT grow with the number of stacks owned: the scratch grid
  (``c`` per cell), plus owner FFT work (:data:`OWNER_GRIDS`: none since issue #13: both
  modes make an owner's plane in the scratch grid in both directions, the FFTs are pruned
  1-D passes in place and the image-domain factors are applied once per application, so
  tracemalloc sees no grid-sized or per-plane image temporaries in ``dot`` or ``hdot``).
- ``images``: replicated images and image-sized work arrays, :data:`IMAGE_ARRAYS` float64
  images (dirty, psf, the ``hdot`` accumulator and its temporaries, the operator's
  correction / chirp factors; the local and summed weighting density grids are dropped
  after the weights stage, so they are not counted).
- ``kernels``: ``kernel_storage="table"`` (default): compact 1-D radial w-kernel tables,
  ``n_planes_k x (support_max_k / 2) x 64`` complex per stack present, with
  ``n_planes_k = 1 + ceil(16 * max|dw_k| * (1 - sqrt(1 - l_max^2)))`` (16 planes per turn of
  edge phase); with ``support_model="tables"`` the real tables' size (every rank holds one
  copy). ``"sparse"``: PURIFY-style precomputed [GC] and [GC]^H, two complex values plus
  an int64 column index per touched cell (``load`` cells), the storage of the paper's
  section 5 (21 GB per node there).

The exchanged cells come from the tile model below (uv occupancy, kernel margin, one stack
per plane), or, from :func:`plan_from_config`, from the operator's own tiling replayed on the
uvw subsample (:func:`operator_exchange`: w-planes of ``wstack`` with their ``Ww`` spread,
exchange tiles and footprints of ``wstack-wproject``). What the model leaves out: the
Python/numba/MPI process itself (~150-250 MiB, measured by scripts/bench_memory.py as the
baseline), the reader's chunk buffers and set-up transients that stay below the peak.
scripts/bench_memory.py compares the model with the measured peak RSS.

Communication per operator application (``comm_bytes_per_apply``, summed over all ranks): the
Alltoallv of grid tiles between the stack owner and the ranks that grid it (one direction:
``dot`` sends owner -> griders, ``hdot`` the same volume back) plus, for ``hdot``, the image
AllSumAll counted as a ring Allreduce, ``2 (n - 1)`` image sizes.
"""

from __future__ import annotations

import math

import numpy as np

from radimg.constants import ARCSEC, C_LIGHT
from radimg.parallel.balance import field_lmax, sample_support
from radimg.parallel.kmeans import kmeans_w
from radimg.progress import format_bytes

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

_DEFAULT_NBINS = 100_000

# Memory model constants (see the module docstring; pinned by tests/test_plan_memory.py).
# Per-sample bytes are (n_complex, n_real, fixed); per-row bytes are fixed.
SAMPLE_BYTES = {
    "wstack": ((4, 4, 2 + 24 + 24), 3 * 24 + 2 * 8),
    "wstack-wproject": ((2, 3, 2 + 4 + 2 * 8), 2 * 24 + 2 * 8),
}
OWNER_GRIDS = {"wstack": 0, "wstack-wproject": 0}  # extra full grids (c) of an owner's FFTs
IMAGE_ARRAYS = {"wstack": 5, "wstack-wproject": 5}  # float64 images held at the peak
LAYOUT_TRANSIENT_BYTES = 40  # per sample of the largest stack: wproject tile_layout (traced)
# Of IMAGE_ARRAYS, the images the pipeline holds at the requested size (PSF, the image being
# made, its float64 copy); with small inversion the rest are the operator's coarse ones.
FINE_IMAGES = 3


def _mkey(mode):
    return "wstack-wproject" if mode == "wstack-wproject" else "wstack"


def memory_terms(mode, precision, *, samples, nchan, recv_cells, send_cells, planes_owned,
                 grid_cells, image_pixels, kernel_bytes, max_stack_samples=None, small=None,
                 dot=True):
    """Per-rank memory terms (bytes) of the model in the module docstring.

    Parameters
    ----------
    mode : {"none", "wstack", "wstack-wproject"}
    precision : {"single", "double"}
    samples, recv_cells, send_cells, planes_owned, kernel_bytes : ndarray (rank,) int
        (``recv_cells`` / ``send_cells``: cells received from / sent to other ranks)
    nchan : int, channels per row
    grid_cells, image_pixels : int, padded grid cells and image pixels
    max_stack_samples : ndarray (rank,) int, optional
        Samples of the rank's largest stack (``wstack-wproject``; default: all its samples).
    small : radimg.ops.resample.SmallGeometry, optional
        Small inversion: ``image_pixels`` are the coarse image's; adds ``resample``.
    dot : bool
        The run applies the forward operator (deconvolution); False for a dirty image and
        PSF only (``wstack-wproject`` then holds no zero-padded grid beside the scratch).

    Returns
    -------
    dict term -> ndarray (rank,) int64 (``samples``, ``grid_tiles``, ``stack_grids``,
    ``images``, ``kernels``)
    """
    c = 8 if precision == "single" else 16
    r = c // 2
    m = _mkey(mode)
    (nc, nr, fixed), per_row = SAMPLE_BYTES[m]
    s = np.asarray(samples, dtype=np.int64)
    rows = -(-s // max(1, int(nchan)))
    owned = np.asarray(planes_owned, dtype=np.int64)
    n = s.size
    owner_grids = np.minimum(owned, OWNER_GRIDS[m] if (dot or m == "wstack") else 0)
    per_sample = s * (nc * c + nr * r + fixed) + rows * per_row
    if m == "wstack-wproject":
        big = s if max_stack_samples is None else np.asarray(max_stack_samples, np.int64)
        per_sample = per_sample + big * LAYOUT_TRANSIENT_BYTES
    out = {
        "samples": per_sample,
        "grid_tiles": (np.asarray(recv_cells, np.int64) + np.asarray(send_cells, np.int64))
        * c,
        "stack_grids": np.int64(grid_cells) * (c + owner_grids * c),
        "images": np.full(n, IMAGE_ARRAYS[m] * int(image_pixels) * 8, np.int64),
        "kernels": np.asarray(kernel_bytes, dtype=np.int64),
    }
    if small is not None:
        out["images"] = np.full(n, (IMAGE_ARRAYS[m] - FINE_IMAGES) * int(image_pixels) * 8,
                                np.int64)
        out["resample"] = np.full(n, resample_bytes(small, precision), np.int64)
    return out


def resample_bytes(g, precision):
    """Bytes of the requested images the pipeline holds around a small-inversion operator:
    :data:`FINE_IMAGES` float64 images (the PSF, and while the dirty image is made its
    float64 copy and the copy divided by the weight sum). The peak of one
    :meth:`radimg.ops.resample.SmallInversion.to_fine` (the requested rows' half spectrum
    over the fine period and its inverse transform, ``npix_y * nf_x * 3/2`` complex values)
    comes before those two copies and is smaller than them, so it is not added (measured
    on the real MWA job, 4096 x 30": the dirty stage peaks 145 MiB above the PSF stage,
    one float64 image)."""
    del precision  # the pipeline's images are float64 in either precision
    return int(FINE_IMAGES * g.npix_x * g.npix_y * 8)



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
        The balanced scheme's real exchange (:func:`operator_exchange`): per-rank
        ``recv_cells``, ``send_cells``, ``remote_cells``, ``planes_owned``, ``samples``;
        replaces the tile model's cells in the memory and communication figures.
    tables : WKernelTables, optional
        Ready kernel tables for ``support_model="tables"`` (not rebuilt).
    small : radimg.ops.resample.SmallGeometry, optional
        Small inversion: ``npix`` / ``cell_arcsec`` are then the coarse image the operator
        grids; the requested image and the resampling add the ``resample`` memory term.
    dot : bool
        The run applies the forward operator (deconvolves); see :func:`memory_terms`.

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


#: Resident memory of a radimg rank before it holds any data: Python, numpy, numba's loaded
#: kernels, casacore, h5py and MPI (an idle ``radimg run`` process measured 156 MiB by
#: scripts/bench_memory.py). The model's terms exclude it; the limit check adds it.
PROCESS_BASELINE_BYTES = 160 * 2**20
#: Largest geometry :func:`plan_from_config` builds to replay the tile exchange.
REPLAY_MAX_BYTES = 4 * 2**30


def fits_memory(plan_result: dict, mem_per_rank, scheme: str = "balanced"):
    """Whether every rank's estimated memory, plus :data:`PROCESS_BASELINE_BYTES`, fits
    ``mem_per_rank`` bytes.

    Returns
    -------
    (ok, message) : (bool, str) the message holds a per-component table for the worst rank.
    """
    sch = plan_result[scheme]
    mem = np.asarray(sch["memory_per_rank_bytes"], dtype=np.int64) + PROCESS_BASELINE_BYTES
    worst = int(np.argmax(mem))
    ok = bool(mem.max() <= mem_per_rank)
    lines = [
        f"{scheme} distribution over {len(mem)} rank(s): peak {format_bytes(mem.max())} on rank "
        f"{worst}, limit {format_bytes(mem_per_rank)} per rank: {'fits' if ok else 'DOES NOT FIT'}",
        f"  {'component':<12} {'rank ' + str(worst):>14} {'max over ranks':>16}",
    ]
    for k, v in sch["memory_breakdown"].items():
        lines.append(f"  {k:<12} {format_bytes(v[worst]):>14} {format_bytes(max(v)):>16}")
    base = format_bytes(PROCESS_BASELINE_BYTES)
    lines.append(f"  {'process':<12} {base:>14} {base:>16}")
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
_MAX_KMEANS_SAMPLES = 200_000
_MAX_EXCHANGE_SAMPLES = 1_000_000  # tiles still converge at 4e5 (-4 % cells); replay ~2 s at 1e6


def _tables_covering(w, centres, npix_x, npix_y, cell_rad, epsilon, oversampling, precision,
                     nbins=20_000):
    """Kernel tables for the residual range of the samples ``w`` AND of the plan's w-bin
    centres (the histogram's half-bin offsets), so both lookups stay inside the tables."""
    from radimg.kernels import wproject as wpk
    from radimg.ops.wproject import WProjectOperator

    wabs = np.abs(np.asarray(w, dtype=np.float64))
    hw = 0.5 * (wabs.max() if wabs.size else 1.0) / nbins
    lab = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), wabs)
    dw = wabs - centres[lab]
    lo = float(min(dw.min(), 0.0)) - hw if dw.size else -hw
    hi = float(max(dw.max(), 0.0)) + hw if dw.size else hw
    return WProjectOperator(
        np.zeros((0, 3)), [wpk.C_LIGHT], npix_x, npix_y, cell_rad, epsilon=epsilon,
        oversampling=oversampling, precision=precision, centres=centres, dw_range=(lo, hi),
    ).tables


def _ms_w_sample(path, spw=0, max_rows=_MAX_SAMPLE_ROWS, field=0, autocorrelations=False):
    """(n_samples, w, u, v (wavelengths), nchan) from a strided subsample of the UVW column
    of the rows a run would image (radimg.io.ms.uvw_subsample: the MS is checked as the
    run checks it, so a bad MS is the same clean error)."""
    from radimg.io.ms import MSError, uvw_subsample

    n_rows, uvw, freq = uvw_subsample(
        path, spw, field, max_rows=max_rows, autocorrelations=autocorrelations
    )
    if uvw.shape[0] == 0:
        raise MSError(
            f"{path}: no unflagged cross-correlation rows with a valid UVW in spectral "
            f"window {spw}, field {field}; nothing to plan"
        )
    lam = freq / C_LIGHT
    u = (uvw[:, 0:1] * lam[None, :]).ravel()
    v = (uvw[:, 1:2] * lam[None, :]).ravel()
    w = (uvw[:, 2:3] * lam[None, :]).ravel()
    return n_rows * freq.size, w, u, v, freq.size


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
    return n_samples, f(uvw[:, 2]), f(uvw[:, 0]), f(uvw[:, 1]), nchan


def _tile_prob_from_uv(u, v, npad_x, npad_y, cell_rad, tile):
    """Empirical tile occupancy from uv samples (and their conjugates) in wavelengths."""
    ntx = -(-npad_x // tile)
    nty = -(-npad_y // tile)
    cx, cy = (cell_rad, cell_rad) if np.ndim(cell_rad) == 0 else cell_rad
    uc = np.concatenate([u, -u]) * npad_x * cx + npad_x // 2
    vc = np.concatenate([v, -v]) * npad_y * cy + npad_y // 2
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
    tile = 64
    if inp.get("simulate"):
        n_samples, w, u, v, nchan = _simulate_w_sample(cfg.get("simulate", {}))
        source = "estimate from the simulate: section"
    else:
        n_samples, w, u, v, nchan = _ms_w_sample(
            inp["ms"], int(inp.get("spw", 0)), field=int(inp.get("field", 0)),
            autocorrelations=bool(inp.get("autocorrelations", False)),
        )
        source = f"MS {inp['ms']} (UVW subsample)"
    eps = float(wt.get("epsilon", 1e-5))
    precision = gr.get("precision", "single")
    # wterm.mode (auto: the fastest mode that meets epsilon), its oversampling, stacks and
    # image.small_inversion's coarse image, as `radimg run` decides them (radimg.ops.choose)
    choice = _wterm_choice(u, v, w, int(n_samples), npix_x, npix_y, cell_rad, eps, precision,
                           wt, bool(img.get("small_inversion", True)))
    chosen = choice.chosen
    mode = chosen.mode
    nstacks = 1 if mode == "none" else wt.get("nstacks", "auto")
    if mode == "wstack-wproject" and chosen.nplanes is not None:
        nstacks = chosen.nplanes
    oversampling = chosen.oversampling
    if oversampling is None:  # the mode cannot be built here: model it as configured
        ov = wt.get("oversampling", "auto")
        oversampling = 2.0 if ov == "auto" else float(ov)
    oversampling_w = chosen.oversampling_w
    npad_x = 2 * math.ceil(oversampling * npix_x / 2)
    npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    centres = None
    # image.small_inversion: the operator is built on the coarse image the data allow
    # (radimg.ops.resample, as `radimg run` decides it); the requested image is what the
    # pipeline holds around it.
    small = chosen.small
    fine = (npix_x, npix_y)
    cells = cell_rad  # the operator's cell (a pair when small inversion's cells differ)
    if small is not None:
        npix_x, npix_y, cell_rad, cells = small.nc_x, small.nc_y, small.cell_cx, small.cell_c
        npad_x = 2 * math.ceil(oversampling * npix_x / 2)
        npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    if mode == "wstack-wproject":
        # The stacks the operator itself would choose (cost model, k-means, tail splits),
        # from the w subsample; supports come from its real kernel tables.
        from radimg.ops.wproject import choose_nstacks, stack_centres

        w_abs = np.abs(np.asarray(w, dtype=np.float64))
        if nstacks in (None, "auto"):
            nstacks = choose_nstacks(
                w_abs, npix_x, npix_y, cell_rad, eps, oversampling, n_total=int(n_samples)
            )
        # k-means on at most _MAX_KMEANS_SAMPLES points (1e6 took ~6 s in the memory check of
        # `radimg run`; the centres move by a small fraction of a stack's width)
        w_fit = w_abs
        if w_abs.size > _MAX_KMEANS_SAMPLES:
            w_fit = np.random.default_rng(0).choice(w_abs, _MAX_KMEANS_SAMPLES, replace=False)
        centres = stack_centres(w_fit, int(nstacks))
    if mem_per_rank_bytes is None:
        mem_per_rank_bytes = (cfg.get("resources") or {}).get("mem_per_rank")
        if isinstance(mem_per_rank_bytes, str):
            from radimg.config import parse_bytes

            mem_per_rank_bytes = parse_bytes(mem_per_rank_bytes)
    # The operator's own exchange on a seeded subsample (exchange tiles are >= 64 cells).
    sub = np.arange(w.size)
    if w.size > _MAX_EXCHANGE_SAMPLES:
        sub = np.sort(np.random.default_rng(0).choice(w.size, _MAX_EXCHANGE_SAMPLES, False))
    # The replay builds the operator's geometry, which holds a few image- and grid-sized
    # arrays: above REPLAY_MAX_BYTES (npix 200000 would allocate ~300 GiB) the plan models
    # the memory without it (the images and grids alone show that such a run cannot fit).
    replay_bytes = 16 * npix_x * npix_y + 16 * npad_x * npad_y
    exchange = None
    if replay_bytes <= REPLAY_MAX_BYTES:
        exchange = operator_exchange(
            u[sub], v[sub], w[sub], n_ranks, int(n_samples),
            "wstack" if mode == "wstack" else mode,
            npix_x, npix_y, cells, epsilon=eps, nstacks=nstacks, oversampling=oversampling,
            oversampling_w=oversampling_w, precision=precision, centres=centres,
            tables=_tables_covering(w, centres, npix_x, npix_y, cell_rad, eps, oversampling,
                                    precision) if mode == "wstack-wproject" else None,
        )
    result = plan(
        n_ranks=n_ranks,
        npix=(npix_x, npix_y),
        cell_arcsec=cell_rad / ARCSEC,
        nstacks=nstacks,
        epsilon=eps,
        w=w,
        n_samples=int(n_samples),
        tile_prob=_tile_prob_from_uv(u, v, npad_x, npad_y, cells, tile),
        precision=precision,
        oversampling=oversampling,
        tile=tile,
        mem_per_rank=mem_per_rank_bytes,
        wproject=(mode == "wstack-wproject"),
        nbins=20_000,
        support_model="tables" if mode == "wstack-wproject" else "eq8",
        centres=centres,
        mode=mode,
        nchan=int(nchan),
        exchange=exchange,
        tables=None if exchange is None else exchange.get("tables"),
        small=small,
        dot=(cfg.get("deconvolution") or {}).get("algorithm", "clean") != "none",
    )
    result["geometry"]["image_npix"] = list(fine)
    result["wterm"] = choice.describe()
    result["small_inversion"] = None if small is None else small.describe()
    if exchange is None:
        result["exchange"] = {
            "replayed": False,
            "why": f"the image needs ~{format_bytes(replay_bytes)} to replay here; tile "
            "traffic is modelled from the uv occupancy only",
        }
    else:
        result["exchange"] = {k: v for k, v in exchange.items() if k != "tables"}
    result["source"] = source
    return result


def _wterm_choice(u, v, w, n_samples, npix_x, npix_y, cell_rad, epsilon, precision, wt,
                  small_inversion):
    """radimg.ops.choose on the uvw subsample (wavelengths) standing for ``n_samples``, after
    the samples beyond the user's uv grid are dropped as the run drops them: the table of
    every mode for ``wterm.mode: auto``, the configured mode alone otherwise."""
    from radimg.ops.choose import MODES, choose_wterm, summary_from_wavelengths
    from radimg.ops.weighting import drop_beyond_grid

    u, v, w = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, w))
    uvw = np.stack([u, v, w], axis=1)
    weight = np.ones((uvw.shape[0], 1), dtype=np.float64)
    if uvw.shape[0]:
        drop_beyond_grid(uvw, np.array([C_LIGHT]), weight, npix_x, npix_y, cell_rad)
    keep = weight[:, 0] != 0
    n_kept = int(round(n_samples * keep.mean())) if keep.size else 0
    summ = summary_from_wavelengths(u[keep], v[keep], w[keep], n_kept, npix_x, npix_y,
                                    cell_rad, cell_rad)
    mode = wt.get("mode", "auto")
    ov = wt.get("oversampling", "auto")
    return choose_wterm(summ, npix_x, npix_y, cell_rad, cell_rad, epsilon,
                        precision=precision, modes=MODES if mode == "auto" else (mode,),
                        oversampling=ov if ov == "auto" else float(ov),
                        nstacks=wt.get("nstacks", "auto"), small_inversion=small_inversion,
                        requested=mode)


def _small_geometry(u, v, w, npix_x, npix_y, cell_rad, epsilon, mode, enabled):
    """The coarse geometry ``radimg run`` would pick (radimg.ops.resample) from the uvw
    subsample (wavelengths), after the samples beyond the user's uv grid are dropped as the
    run drops them; None when the layer is off or would not pay. The coarse cells may
    differ per axis (modes none / wstack)."""
    if not enabled or len(w) == 0:
        return None
    from radimg.ops.resample import geometry_from_samples
    from radimg.ops.weighting import drop_beyond_grid

    uvw = np.stack([np.asarray(u), np.asarray(v), np.asarray(w)], axis=1).astype(np.float64)
    freq = np.array([C_LIGHT])  # uvw in wavelengths are the "metres" themselves
    weight = np.ones((uvw.shape[0], 1), dtype=np.float64)
    drop_beyond_grid(uvw, freq, weight, npix_x, npix_y, cell_rad)
    return geometry_from_samples(uvw, freq, weight != 0, npix_x, npix_y, cell_rad, cell_rad,
                                 epsilon, wterm=mode != "none",
                                 square=mode == "wstack-wproject")


def _exchange_counts(rank, plane, tile, n_ranks, nplanes, tile_cells):
    """From (rank, plane, tile) marks: cells each rank touches (own planes included), cells
    it receives from other ranks, cells it sends to other ranks, planes it owns."""
    code = np.unique((rank.astype(np.int64) * nplanes + plane) * tile_cells.size + tile)
    rk, rest = np.divmod(code, nplanes * tile_cells.size)
    pl, tl = np.divmod(rest, tile_cells.size)
    live = np.zeros(nplanes, bool)
    live[pl] = True
    owner = np.full(nplanes, -1, np.int64)
    owner[live] = np.arange(int(live.sum())) % n_ranks
    cells = tile_cells[tl]
    other = cells * (owner[pl] != rk)
    touched = np.bincount(rk, weights=cells, minlength=n_ranks).astype(np.int64)
    recv = np.bincount(rk, weights=other, minlength=n_ranks).astype(np.int64)
    send = np.bincount(owner[pl], weights=other, minlength=n_ranks).astype(np.int64)
    owned = np.bincount(owner[live], minlength=n_ranks).astype(np.int64)
    return touched, recv, send, owned


def _balanced_ranks(keys, load, n_ranks):
    """Rank of each sample: samples ordered by key, the load prefix sum cut evenly."""
    order = np.argsort(keys, kind="stable")
    cum = np.cumsum(load[order].astype(np.float64))
    tot = cum[-1] if cum.size else 0.0
    rk = np.zeros(keys.size, np.int64)
    if tot > 0:
        mid = cum - 0.5 * load[order]
        rk[order] = np.minimum((mid * n_ranks / tot).astype(np.int64), n_ranks - 1)
    return rk


def operator_exchange(u, v, w, n_ranks, n_samples, mode, npix_x, npix_y, cell_rad, *,
                      epsilon=1e-5, nstacks="auto", oversampling=2.0, precision="single",
                      centres=None, tile=64, tables=None, oversampling_w=None):
    """The distributed operator's tile exchange replayed on a uvw subsample (no MPI).

    Samples (wavelengths; any sign) are keyed as :class:`DistributedOperator` keys its rows
    (first w-plane and gridder tile for ``none``/``wstack``, stack and exchange tile of the
    footprint for ``wstack-wproject``), cut into ``n_ranks`` equal-load ranges and marked on
    the tiles each rank's samples touch per plane (``wstack``: the plane range of each tile's
    samples and the next tile along each axis, :func:`radimg.kernels.gridder.touched_tiles`;
    ``wstack-wproject``: the 2 x 2 tiles around each footprint). Planes are dealt round-robin
    over the live ones. A subsample can only miss tiles, so cells are a lower bound (tiles
    are >= 64 cells, so a dense uv coverage is found by a subsample of ~10**5 points).

    Returns
    -------
    dict with per-rank lists ``recv_cells`` / ``send_cells`` (cells received from / sent to
    other ranks: the Alltoallv buffers), ``remote_cells`` (= ``recv_cells``),
    ``touched_cells`` (cells of every tile the rank's samples touch, own planes included),
    ``planes_owned``, ``samples`` (scaled to ``n_samples``) and ``grid_cells``, ``nplanes``,
    ``tile_shape``; for ``wstack-wproject`` also ``tables`` (the kernel tables built).
    """
    u, v, w = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, w))
    uvw = np.stack([u, v, w], axis=1)
    fc = np.array([C_LIGHT])  # freq = c: uvw in wavelengths are the "metres" themselves
    out = {}
    if mode == "wstack-wproject":
        from radimg.ops.wproject import WProjectOperator
        from radimg.parallel.operator import even_bounds, tile_of

        wabs = np.abs(w)
        lab = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), wabs)
        dw = wabs - centres[lab]
        op = WProjectOperator(
            uvw, fc, npix_x, npix_y, cell_rad, epsilon=epsilon, oversampling=oversampling,
            precision=precision, centres=centres, tables=tables,
            dw_range=(float(dw.min()), float(dw.max())) if dw.size else (0.0, 0.0),
        )
        t = op.tables
        nyp, nxp = op.nyp, op.nxp
        smax = int(np.ceil(2.0 * max(t.hs_x.max(), t.hs_y.max()))) + 1
        yb = even_bounds(nyp, max(int(tile), smax + 2))
        xb = even_bounds(nxp, max(int(tile), smax + 2))
        nty, ntx = yb.size - 1, xb.size - 1
        nplanes = op.nstacks
        keys = np.zeros(w.size, np.int64)
        load = np.zeros(w.size, np.int64)
        marks = []
        for k in range(nplanes):
            idx = op.stack_idx[k]
            if idx.size == 0:
                continue
            jx, jy, sx, sy = op.sample_footprints(k)
            keys[idx] = k * nty * ntx + tile_of(jy, yb) * ntx + tile_of(jx, xb)
            load[idx] = sx.astype(np.int64) * sy
            marks.append((idx, k, [(tile_of((jy - 1) % nyp, yb), tile_of((jx - 1) % nxp, xb)),
                                   (tile_of((jy + sy) % nyp, yb), tile_of((jx + sx) % nxp, xb))]))
        rk = _balanced_ranks(keys, load, n_ranks)
        per_rs = np.zeros((n_ranks, nplanes), np.int64)
        np.add.at(per_rs, (rk, op.labels), 1)
        out["max_stack_sub"] = per_rs.max(axis=1)
        R, Pl, T = [], [], []
        for idx, k, ((tya, txa), (tyb, txb)) in marks:
            for ty in (tya, tyb):
                for tx in (txa, txb):
                    R.append(rk[idx])
                    Pl.append(np.full(idx.size, k, np.int64))
                    T.append(ty * ntx + tx)
        out["tables"] = t
    else:
        from radimg.ops.operator import WideFieldOperator
        from radimg.parallel.operator import sample_keys

        wabs = np.abs(w)
        anchors = np.zeros((2, 3))
        anchors[:, 2] = (wabs.min(), wabs.max()) if wabs.size else (0.0, 0.0)
        geo = WideFieldOperator(
            anchors, fc, npix_x, npix_y, cell_rad, epsilon=epsilon, mode=mode, nstacks=nstacks,
            oversampling=oversampling, precision=precision, fft="numpy", tile=tile,
            oversampling_w=oversampling_w,
        )
        spec = geo.spec
        lay = geo.layout()
        yb, xb = lay.ybounds, lay.xbounds
        nty, ntx = yb.size - 1, xb.size - 1
        nyp, nxp, nplanes = spec.nyp, spec.nxp, spec.nplanes
        keys = sample_keys(uvw, np.full(w.size, C_LIGHT), spec, yb, xb)
        rk = _balanced_ranks(keys, np.ones(w.size, np.int64), n_ranks)
        p0, tl = np.divmod(keys, nty * ntx)
        # per (rank, tile): the plane range of its samples (touched_tiles' slot_pmin/pmax)
        g = rk * (nty * ntx) + tl
        ug, inv = np.unique(g, return_inverse=True)
        pmin = np.full(ug.size, nplanes, np.int64)
        pmax = np.zeros(ug.size, np.int64)
        np.minimum.at(pmin, inv, p0)
        np.maximum.at(pmax, inv, p0 + spec.Ww - 1)
        grk, gtl = np.divmod(ug, nty * ntx)
        ty, tx = np.divmod(gtl, ntx)
        span = pmax - pmin + 1
        rep = np.repeat(np.arange(ug.size), span)
        pl = pmin[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(span) - span, span))
        R, Pl, T = [], [], []
        for dy in (0, 1):
            for dx in (0, 1):
                R.append(grk[rep])
                Pl.append(pl)
                T.append(((ty[rep] + dy) % nty) * ntx + (tx[rep] + dx) % ntx)
    ycell, xcell = np.diff(yb), np.diff(xb)
    tile_cells = (ycell[:, None] * xcell[None, :]).ravel().astype(np.int64)
    if R:
        R, Pl, T = (np.concatenate(a) for a in (R, Pl, T))
    else:
        R = Pl = T = np.zeros(0, np.int64)
    touched, recv, send, owned = _exchange_counts(R, Pl, T, n_ranks, nplanes, tile_cells)
    counts = np.bincount(rk, minlength=n_ranks).astype(np.float64)
    samples = _largest_remainder(counts, int(n_samples)) if counts.sum() else counts
    if "max_stack_sub" in out:  # scaled from the subsample like the rank's samples
        out["max_stack_samples"] = (
            out.pop("max_stack_sub") * int(n_samples) // max(w.size, 1)
        ).astype(np.int64).tolist()
    out.update(
        recv_cells=recv.tolist(), send_cells=send.tolist(), remote_cells=recv.tolist(),
        touched_cells=touched.tolist(),
        planes_owned=owned.tolist(), samples=np.asarray(samples, np.int64).tolist(),
        grid_cells=int(nyp * nxp), nplanes=int(nplanes),
        tile_shape=(int(ycell.max()), int(xcell.max())),
    )
    return out
