"""1-D k-means on |w| for w-stacking (Pratley & McEwen 2019, sections 3 and 5), the
algorithm alone: the reductions over ranks come in as an argument (``collectives``), so
this module needs no MPI; :mod:`radimg.parallel.kmeans` binds them to a communicator.

Samples are first reflected to ``w >= 0`` (a sample with ``w < 0`` is imaged as its conjugate
``(-u, -v, -w, conj(V))``), then clustered in 1-D. The distributed version Allreduces the
per-cluster sums and counts every iteration, so every rank holds identical centres, equal to
the serial result on the concatenated data up to floating-point summation order.

Determinism: the initial centres are the ``(i + 1/2)/k`` quantiles of a global histogram of
w (integer counts, Allreduced exactly), so they do not depend on how samples are spread over
ranks. Labels come from the sorted centres' midpoints with ``searchsorted`` (ties go to the
upper cluster), so assignment is identical on every rank.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_w", "assign_labels", "SERIAL", "SerialCollectives"]


class SerialCollectives:
    """The collectives of a single process: reductions return their input unchanged."""

    parallel = False

    @staticmethod
    def allreduce(arr, op="sum"):
        return arr

    @staticmethod
    def allgather(obj):
        return [obj]


#: The serial stand-in for :class:`radimg.parallel.mpi.Collectives`.
SERIAL = SerialCollectives()

_INIT_BINS = 4096


def assign_labels(w_abs: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest-centre labels for reflected w; ``centres`` must be sorted ascending.

    Returns ndarray (nsamp,) int32. Exact ties at a midpoint go to the upper cluster.
    """
    mids = 0.5 * (centres[1:] + centres[:-1])
    return np.searchsorted(mids, w_abs, side="right").astype(np.int32)


def _as_weights(valid, n):
    """Sample multiplicities: bool mask -> 0/1, numeric -> as float (0 = ignored)."""
    if valid is None:
        return np.ones(n, dtype=np.float64)
    v = np.asarray(valid).reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"valid has {v.shape[0]} entries but w has {n}")
    if v.dtype == bool:
        return v.astype(np.float64)
    v = v.astype(np.float64)
    if np.any(v < 0) or not np.all(np.isfinite(v)):
        raise ValueError("valid weights must be finite and >= 0")
    return v


def _global_minmax(coll, w, mult):
    sel = w[mult > 0]
    lo = np.array([sel.min() if sel.size else np.inf])
    hi = np.array([sel.max() if sel.size else -np.inf])
    coll.allreduce(lo, "min")
    coll.allreduce(hi, "max")
    return float(lo[0]), float(hi[0])


def _initial_centres(coll, w, mult, k, lo, hi):
    """Quantile centres from a global histogram (sums of multiplicities are Allreduced).

    Integer-valued multiplicities sum exactly in float64, so the histogram, and with it the
    initial centres, are bitwise identical for any split of the data over ranks.
    """
    if hi <= lo:
        return np.full(k, lo)
    edges = np.linspace(lo, hi, _INIT_BINS + 1)
    hist = np.histogram(w, bins=edges, weights=mult)[0].astype(np.float64)
    coll.allreduce(hist, "sum")
    cdf = np.concatenate([[0.0], np.cumsum(hist)])
    targets = (np.arange(k) + 0.5) / k * cdf[-1]
    # Linear interpolation of the inverse CDF (bins with zero count are flat and skipped).
    centres = np.interp(targets, cdf, edges)
    return np.sort(centres)


def _reseed_empty(coll, w, mult, labels, centres, empty):
    """Move each empty centre onto the sample farthest from its own centre (global).

    Every rank proposes its ``len(empty)`` farthest distinct w values; the global top set
    (by distance, ties to smaller w) is chosen identically on all ranks.
    """
    m = len(empty)
    d = np.where(mult > 0, np.abs(w - centres[labels]), -1.0)
    order = np.lexsort((w, -d))[:m]
    cand = np.full((m, 2), [-1.0, np.inf])
    cand[: order.size, 0] = d[order]
    cand[: order.size, 1] = w[order]
    if coll.parallel:
        cand = np.concatenate(coll.allgather(cand))
    cand = cand[cand[:, 0] > 0]
    pick = np.lexsort((cand[:, 1], -cand[:, 0]))
    seen = set(centres.tolist())
    new = centres.copy()
    j = 0
    for idx in pick:
        if j == m:
            break
        val = float(cand[idx, 1])
        if val in seen:
            continue
        seen.add(val)
        new[empty[j]] = val
        j += 1
    return np.sort(new)


def kmeans_w(w, k, valid=None, max_iter=100, tol=1e-10, *, collectives=None):
    """Cluster w into ``k`` stacks (global when ``collectives`` span several ranks).

    Parameters
    ----------
    w : ndarray (nsamp,) or any shape, float
        w in wavelengths; reflected to ``|w|`` here (conjugation, DESIGN.md).
    k : int
        Number of clusters (w-stacks).
    valid : ndarray (nsamp,) bool or float >= 0, optional
        Sample mask or multiplicity (e.g. histogram counts). Zero-weight (flagged) samples
        take no part in the clustering but still receive a label.
    max_iter : int
    tol : float
        Stop when no label changes globally or the largest centre move is
        ``<= tol * max(1, spread of w)``.
    collectives : object, optional
        The reductions over the ranks (:class:`radimg.parallel.mpi.Collectives`, or any
        object with ``parallel``, ``allreduce(array, op)`` in place and ``allgather(obj)``);
        None runs serially. Every rank must call with the same ``k``, ``max_iter``, ``tol``.

    Returns
    -------
    centres : ndarray (k,) float64, sorted ascending, identical on every rank
    labels : ndarray (nsamp,) int32, index into ``centres`` (flattened order of ``w``)
    """
    coll = SERIAL if collectives is None else collectives
    k = int(k)
    if k < 1:
        raise ValueError("k must be >= 1")
    w_abs = np.abs(np.asarray(w, dtype=np.float64).reshape(-1))
    mult = _as_weights(valid, w_abs.size)
    lo, hi = _global_minmax(coll, w_abs, mult)
    if not np.isfinite(lo):  # no valid sample anywhere
        return np.zeros(k), np.zeros(w_abs.size, dtype=np.int32)
    centres = _initial_centres(coll, w_abs, mult, k, lo, hi)
    labels = assign_labels(w_abs, centres)
    scale = max(1.0, hi - lo)
    for _ in range(max_iter):
        stats = np.zeros((2, k))
        stats[0] = np.bincount(labels, weights=mult * w_abs, minlength=k)
        stats[1] = np.bincount(labels, weights=mult, minlength=k)
        coll.allreduce(stats, "sum")
        sums, counts = stats
        new = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), centres)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            new = _reseed_empty(coll, w_abs, mult, labels, new, empty)
        new = np.sort(new)
        new_labels = assign_labels(w_abs, new)
        changed = np.array([np.count_nonzero((new_labels != labels) & (mult > 0))], np.int64)
        coll.allreduce(changed, "sum")
        shift = float(np.max(np.abs(new - centres)))
        centres, labels = new, new_labels
        if changed[0] == 0 or shift <= tol * scale:
            break
    return centres, labels
