"""Per-sample gridding load and load-balanced sample-to-rank assignment (pure, no MPI).

Pratley & McEwen (2019), section 4.1 and eq. 8. The distributed twins of these functions are
in :mod:`radimg.parallel.redistribute`; tests show they agree.

Support of the w-projection kernel (derivation of eq. 8 in radimg's units)
-------------------------------------------------------------------------
After w-stacking, a sample of stack k still carries the residual ``dw = w - w_k``
(wavelengths). Its image-domain phase screen is ``exp(-2 pi i dw (n(l, m) - 1))``. The local
spatial frequency of that screen (wavelengths) is the phase gradient over ``2 pi``:
``dw * grad(n) = -dw * (l, m) / n``, whose magnitude grows with radius ``r`` as
``|dw| r / sqrt(1 - r^2)``. Over a field of maximum radius ``l_max`` the w-kernel in the uv
plane therefore extends to a half-width of

    h(dw) = |dw| * l_max / sqrt(1 - l_max^2)          [wavelengths]

The padded uv grid has cells of ``du = 1 / (npad * cell_rad)`` wavelengths, so the full
width in cells is ``2 h(dw) * npad * cell_rad``; the anti-aliasing kernel alone spans
``J_min`` cells. Eq. 8 of the paper takes

    support(dw) = max(J_min, ceil(2 |dw| l_max / sqrt(1 - l_max^2) * npad * cell_rad))

(``combine="max"``, the default, as in the paper); the convolution of the two kernels is at
most ``J_min + ceil(...)`` wide (``combine="sum"``, a conservative bound). The load of one
sample is ``support**2``: the number of grid cells its 2-D kernel touches. For the small-angle
limit the paper writes ``2 dw / du_eff`` with ``1 / du_eff = l_max / sqrt(1 - l_max^2) *
npad * cell_rad``, proportional to the field of view as section 3 states. ``l_max`` should be
the largest radius in the imaged field (the corner, :func:`field_lmax`), since the kernel is
sized for the worst direction.

Assignment
----------
Samples are ordered (by stack, then by grid tile, so a rank touches few tiles of few stacks)
and the ordered sequence is cut into ``n_ranks`` contiguous pieces using the prefix sum of
loads (total ``T``).

- ``method="paper"``: each rank in turn is filled while its load stays ``<= floor(T /
  n_ranks)``; the last rank takes the remainder (section 4.1: "allowing the last node to
  overfill slightly and keeping the rest of the nodes under the average load"). Every
  rank's shortfall (< one sample's load) piles up on the last rank, whose overfill is up to
  ``(n_ranks - 1) * max(load)``: with equal loads of 16 and 10**4 samples per rank that is
  ~10 % at 1024 ranks.
- ``method="cuts"`` (default): a sample goes to the rank whose ideal interval
  ``[j T/n, (j+1) T/n)`` holds its load midpoint, so every rank is within one sample's load
  of the mean and nothing accumulates. This keeps max/mean <= 1.01 down to ~10**4 samples
  per rank at 1024 ranks, where the paper's rule does not.

Both are computed in a distributed way from global prefix sums without gathering samples
(:func:`radimg.parallel.redistribute.prefix_sum_boundaries`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "field_lmax",
    "w_kernel_halfwidth",
    "sample_support",
    "sample_load",
    "balanced_assignment",
    "naive_assignment",
    "assignment_from_boundaries",
    "load_per_rank",
    "greedy_cut_positions",
    "midpoint_ranks",
    "exclusive_offsets",
    "tile_ids",
    "sample_order",
    "wproject_supports",
]


def field_lmax(npix_x: int, npix_y: int, cell_rad: float) -> float:
    """Largest direction-cosine radius of the image (its corner), as used for the kernel size."""
    r = cell_rad * math.hypot(npix_x / 2.0, npix_y / 2.0)
    if r >= 1.0:
        raise ValueError(f"field corner radius {r:.3f} >= 1: the image extends beyond the sky")
    return r


def w_kernel_halfwidth(dw, l_max: float):
    """uv half-width (wavelengths) of the w-kernel for residual ``dw``: ``|dw| l / sqrt(1-l^2)``."""
    if not 0.0 <= l_max < 1.0:
        raise ValueError("l_max must lie in [0, 1)")
    return np.abs(dw) * (l_max / math.sqrt(1.0 - l_max * l_max))


def sample_support(dw, J_min: int, l_max: float, npad_cell_rad: float, combine: str = "max"):
    """1-D support (cells) of the combined kernel for residual ``dw`` (paper eq. 8).

    Parameters
    ----------
    dw : ndarray or float
        Residual ``w - w_k`` in wavelengths.
    J_min : int
        Support of the anti-aliasing kernel (cells).
    l_max : float
        Largest field radius in direction cosines (:func:`field_lmax`).
    npad_cell_rad : float
        Padded grid width in radians, ``npad * cell_rad`` (the inverse of the uv cell size).
    combine : {"max", "sum"}
        ``max(J_min, Jw)`` as in the paper, or the conservative ``J_min + Jw``.

    Returns
    -------
    ndarray of int64 (shape of ``dw``)
    """
    jw = np.ceil(2.0 * w_kernel_halfwidth(np.asarray(dw, dtype=np.float64), l_max) * npad_cell_rad)
    jw = jw.astype(np.int64)
    if combine == "max":
        return np.maximum(np.int64(J_min), jw)
    if combine == "sum":
        return np.int64(J_min) + jw
    raise ValueError(f"combine must be 'max' or 'sum', not {combine!r}")


def sample_load(dw, J_min, l_max, npad_cell_rad, combine="max", valid=None):
    """Per-sample load ``support**2`` (int64); zero where ``valid`` is False (flagged)."""
    s = sample_support(dw, J_min, l_max, npad_cell_rad, combine)
    load = s * s
    if valid is not None:
        load = np.where(np.asarray(valid, dtype=bool), load, np.int64(0))
    return load.astype(np.int64)


def wproject_supports(w_abs, wk, npix_x, npix_y, cell_rad, epsilon, oversampling=2.0,
                      precision="double", valid=None, tables=None):
    """Real 1-D supports of the ``wstack-wproject`` kernels (what the operator grids with).

    Eq. 8 (:func:`sample_support`) underestimates the support about 3x: the anti-aliasing
    taper still matters out to ~0.6 of the padded field, where the chirp is steeper than at
    the field edge (radimg/kernels/wproject.py). This builds the operator's own kernel tables
    for the residual range ``w_abs - wk`` and reads each sample's support off them with the
    gridder's rule, so the load ``sx * sy`` is the number of cells the kernel really touches.

    Parameters
    ----------
    w_abs : ndarray (n,) float64, reflected ``|w|`` (wavelengths) of samples or bin centres
    wk : ndarray (n,) float64, centre of each one's stack
    npix_x, npix_y, cell_rad, epsilon, oversampling, precision : as WProjectOperator
    valid : ndarray (n,) bool, optional; entries that are False do not widen the tables
    tables : WKernelTables, optional; ready tables covering the residual range (not rebuilt)

    Returns
    -------
    sx, sy : ndarray (n,) int64, supports along x and y (cells)
    info : dict with ``W`` (anti-aliasing support), ``table_bytes``, ``rank``, ``max_support``
    """
    from radimg.kernels import wproject as wpk
    from radimg.ops.wproject import WProjectOperator

    w_abs = np.asarray(w_abs, dtype=np.float64).ravel()
    wk = np.asarray(wk, dtype=np.float64).ravel()
    dw = w_abs - wk
    sel = dw if valid is None else dw[np.asarray(valid, dtype=bool).ravel()]
    dw_range = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
    # An operator with no samples builds exactly the tables the real one would.
    from radimg.ops.geometry import Field, wproject_geometry

    geo = wproject_geometry(Field.of(npix_x, npix_y, cell_rad), epsilon, precision=precision,
                            oversampling=oversampling,
                            centres=np.unique(wk) if wk.size else np.zeros(1), dw_range=dw_range)
    t = WProjectOperator(np.zeros((0, 3)), [wpk.C_LIGHT], geo, tables=tables).tables
    uvw = np.zeros((w_abs.size, 3))
    uvw[:, 2] = w_abs  # with freq = c, w in wavelengths is the uvw value itself
    sx, sy = wpk.sample_supports(uvw, [wpk.C_LIGHT], np.arange(w_abs.size), wk, t)
    info = {
        "W": int(t.W),
        "table_bytes": int(t.tab_x.nbytes + t.tab_y.nbytes),
        "rank": int(t.rank),
        "max_support": int(max(sx.max(initial=0), sy.max(initial=0))),
    }
    return sx.astype(np.int64), sy.astype(np.int64), info


def exclusive_offsets(counts) -> np.ndarray:
    """Exclusive prefix sum in int64 (displacements); safe when the total exceeds 2**31."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def greedy_cut_positions(ends: np.ndarray, total: int, n_ranks: int, next_end=None) -> np.ndarray:
    """Rank boundaries in load space for the paper's greedy fill (serial core).

    Parameters
    ----------
    ends : ndarray (nsamp,) int64, non-decreasing
        Inclusive prefix sums of the ordered loads (the end position of each sample).
    total : int
        Sum of all loads.
    n_ranks : int

    Returns
    -------
    ndarray (n_ranks + 1,) int64: ``B[0] = 0``, ``B[-1] = total``; rank j holds the samples
    with ``B[j] < end <= B[j+1]`` (zero-load samples at position 0 go to rank 0).
    """
    avg = int(total) // int(n_ranks)
    B = np.empty(n_ranks + 1, dtype=np.int64)
    B[0] = 0
    B[-1] = total
    for j in range(n_ranks - 1):
        b = int(B[j])
        i = np.searchsorted(ends, b + avg, side="right")
        cand = int(ends[i - 1]) if i > 0 else 0
        cand = max(cand, b)
        if cand == b and b < total:
            # The next sample alone exceeds the average: it still has to go somewhere.
            k = np.searchsorted(ends, b, side="right")
            cand = int(ends[k])
        B[j + 1] = min(cand, total)
    return B


def midpoint_ranks(starts, load, total: int, n_ranks: int) -> np.ndarray:
    """Rank of each sample for ``method="cuts"``: the interval holding its load midpoint.

    ``rank = floor((2 start + load) n / (2 T))`` computed exactly in int64 while it cannot
    overflow, else in extended precision.
    """
    starts = np.asarray(starts, dtype=np.int64)
    load = np.asarray(load, dtype=np.int64)
    if total <= 0:
        return np.zeros(starts.shape, dtype=np.int32)
    if (2 * int(total) + 1) * n_ranks < 2**62:
        r = ((2 * starts + load) * np.int64(n_ranks)) // np.int64(2 * total)
    else:
        r = np.floor((2 * starts + load).astype(np.longdouble) * n_ranks / (2 * total))
    return np.clip(r, 0, n_ranks - 1).astype(np.int32)


def balanced_assignment(load, n_ranks: int, method: str = "cuts") -> np.ndarray:
    """Cut ordered samples into ``n_ranks`` contiguous pieces of balanced load (eq. 8 loads).

    Parameters
    ----------
    load : ndarray (nsamp,) int
        Per-sample loads in the global processing order (stack, then grid tile).
    n_ranks : int
    method : {"cuts", "paper"}
        See the module docstring ("paper": ranks 0..n-2 at most the mean, last overfills).

    Returns
    -------
    boundaries : ndarray (n_ranks + 1,) int64, non-decreasing sample indices;
        rank j gets samples ``boundaries[j]:boundaries[j+1]``.
    """
    load = np.asarray(load, dtype=np.int64).reshape(-1)
    if n_ranks < 1:
        raise ValueError("n_ranks must be >= 1")
    if np.any(load < 0):
        raise ValueError("loads must be >= 0")
    ends = np.cumsum(load, dtype=np.int64)
    total = int(ends[-1]) if ends.size else 0
    if method == "paper":
        B = greedy_cut_positions(ends, total, n_ranks)
        # Rank j holds samples with B[j] < end <= B[j+1]; zero-load samples with end 0 -> rank 0.
        idx = np.searchsorted(ends, B, side="right").astype(np.int64)
        idx[0] = 0
        idx[-1] = load.size
        return idx
    if method == "cuts":
        starts = ends - load
        ranks = midpoint_ranks(starts, load, total, n_ranks)
        return np.searchsorted(ranks, np.arange(n_ranks + 1), side="left").astype(np.int64)
    raise ValueError(f"method must be 'paper' or 'cuts', not {method!r}")


def assignment_from_boundaries(boundaries, nsamp=None) -> np.ndarray:
    """Per-sample rank (int32) from contiguous ``boundaries`` (n_ranks + 1,)."""
    boundaries = np.asarray(boundaries, dtype=np.int64)
    n = int(boundaries[-1]) if nsamp is None else int(nsamp)
    return (np.searchsorted(boundaries[1:], np.arange(n, dtype=np.int64), side="right")).astype(
        np.int32
    )


def naive_assignment(stack_labels, n_ranks: int) -> np.ndarray:
    """One stack per rank: stack k goes to rank ``k mod n_ranks`` (the pre-2019 scheme)."""
    return (np.asarray(stack_labels, dtype=np.int64) % int(n_ranks)).astype(np.int32)


def load_per_rank(load, dest, n_ranks: int) -> np.ndarray:
    """Exact int64 load summed per destination rank."""
    out = np.zeros(n_ranks, dtype=np.int64)
    np.add.at(out, np.asarray(dest, dtype=np.int64), np.asarray(load, dtype=np.int64))
    return out


def tile_ids(u_cells, v_cells, npad_x: int, npad_y: int, tile: int) -> np.ndarray:
    """Tile index (int64, row-major over ``(tile_y, tile_x)``) of grid positions.

    ``u_cells, v_cells`` are grid coordinates relative to the grid centre (cells); positions
    off the grid are clipped to the edge tiles.
    """
    ntx = -(-npad_x // tile)
    nty = -(-npad_y // tile)
    ix = np.clip(np.floor(np.asarray(u_cells) + npad_x // 2).astype(np.int64) // tile, 0, ntx - 1)
    iy = np.clip(np.floor(np.asarray(v_cells) + npad_y // 2).astype(np.int64) // tile, 0, nty - 1)
    return iy * ntx + ix


def sample_order(stack_labels, tiles=None) -> np.ndarray:
    """Stable processing order: by stack, then by tile (then by original index)."""
    stack_labels = np.asarray(stack_labels, dtype=np.int64)
    if tiles is None:
        return np.argsort(stack_labels, kind="stable")
    return np.lexsort((np.asarray(tiles, dtype=np.int64), stack_labels))
