"""Distributed load-balanced assignment and the Alltoallv that moves samples (paper sec. 4).

Serial twins live in :mod:`radimg.parallel.balance`; tests under ``tests/mpi/`` check that
``prefix_sum_boundaries`` run on any number of ranks gives the same destinations as
``balanced_assignment`` on the concatenated samples, and that ``redistribute`` delivers every
sample exactly once.

All counts, displacements and loads are int64: ``n_ranks * K`` and the global load exceed
2**31 at SKA scale (paper section 4.2).
"""

from __future__ import annotations

import numpy as np

from radimg.parallel.balance import midpoint_ranks
from radimg.parallel.mpi import allreduce_array, comm_rank_size

__all__ = ["redistribute", "prefix_sum_boundaries", "global_positions", "message_rounds"]

# Classic MPI counts and displacements are C ints; stay below 2**31 bytes per message and
# per round so neither overflows, whatever the MPI library (MPI-4 large counts not assumed).
MAX_MESSAGE_BYTES = 2**31 - 1


def message_rounds(send_counts, row_bytes: int, size: int, max_message_bytes: int):
    """Split per-destination item counts into rounds that each stay under the byte limit.

    Pure helper (tested without MPI). In every round each destination receives at most
    ``cap = max(1, max_message_bytes // (row_bytes * size))`` items from this rank, so one
    round's whole send buffer (and every displacement in it) is below ``max_message_bytes``.

    Returns
    -------
    cap : int
        Items per destination per round.
    rounds : ndarray (nrounds, size) int64
        Items sent to each destination in each round (local view; the global number of
        rounds is the max over ranks and is agreed with an Allreduce by the caller).
    """
    send_counts = np.asarray(send_counts, dtype=np.int64)
    cap = max(1, int(max_message_bytes) // max(1, int(row_bytes) * int(size)))
    nrounds = int(-(-int(send_counts.max(initial=0)) // cap))
    r = np.arange(nrounds, dtype=np.int64)[:, None]
    rounds = np.clip(send_counts[None, :] - r * cap, 0, cap)
    return cap, rounds


def _alltoall_int64(comm, counts: np.ndarray) -> np.ndarray:
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    out = np.empty_like(counts)
    comm.Alltoall(counts, out)
    return out


def redistribute(comm, arrays: dict, dest_rank, max_message_bytes: int = MAX_MESSAGE_BYTES) -> dict:
    """Send row ``i`` of every array to rank ``dest_rank[i]`` (one Alltoallv per round).

    Parameters
    ----------
    comm : mpi4py communicator (None: serial, returns the rows unchanged, order kept)
    arrays : dict name -> ndarray (nsamp, ...)
        All with the same first dimension; any dtype and trailing shape.
    dest_rank : ndarray (nsamp,) int
    max_message_bytes : int
        Upper bound on one round's per-rank send buffer; messages above it are split into
        several Alltoallv rounds. Lower it in tests to exercise the splitting.

    Returns
    -------
    dict name -> ndarray (nrecv, ...): received rows ordered by source rank, and within a
    source in the sender's original order (stable), so results are deterministic.
    """
    dest = np.asarray(dest_rank, dtype=np.int64).reshape(-1)
    n = dest.size
    for name, a in arrays.items():
        if a.shape[0] != n:
            raise ValueError(f"array {name!r} has {a.shape[0]} rows, dest_rank has {n}")
    rank, size = comm_rank_size(comm)
    if n and (dest.min() < 0 or dest.max() >= size):
        raise ValueError(f"dest_rank must lie in [0, {size})")
    if comm is None or size == 1:
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    from mpi4py import MPI

    order = np.argsort(dest, kind="stable")
    send_counts = np.bincount(dest, minlength=size).astype(np.int64)
    recv_counts = _alltoall_int64(comm, send_counts)
    nrecv = int(recv_counts.sum())
    out = {}
    for name in sorted(arrays):  # same order on every rank
        a = np.ascontiguousarray(arrays[name])
        trail = a.shape[1:]
        row_bytes = a.dtype.itemsize * int(np.prod(trail, dtype=np.int64))
        sendbuf = np.ascontiguousarray(a[order]).view(np.uint8).reshape(n, row_bytes)
        recv = np.empty((nrecv, row_bytes), dtype=np.uint8)
        cap, _ = message_rounds(send_counts, row_bytes, size, max_message_bytes)
        nr = np.array([-(-int(send_counts.max(initial=0)) // cap)], dtype=np.int64)
        allreduce_array(comm, nr, "max")
        send_off = np.zeros(size + 1, np.int64)
        np.cumsum(send_counts, out=send_off[1:])
        recv_off = np.zeros(size + 1, np.int64)
        np.cumsum(recv_counts, out=recv_off[1:])
        for r in range(int(nr[0])):
            sc = np.clip(send_counts - r * cap, 0, cap)
            rc = np.clip(recv_counts - r * cap, 0, cap)
            sidx = np.concatenate(
                [
                    np.arange(send_off[d] + r * cap, send_off[d] + r * cap + sc[d])
                    for d in range(size)
                ]
            ).astype(np.int64)
            ridx = np.concatenate(
                [
                    np.arange(recv_off[s] + r * cap, recv_off[s] + r * cap + rc[s])
                    for s in range(size)
                ]
            ).astype(np.int64)
            sb = np.ascontiguousarray(sendbuf[sidx])
            rb = np.empty((ridx.size, row_bytes), dtype=np.uint8)
            scb = sc * row_bytes
            rcb = rc * row_bytes
            sdisp = np.concatenate([[0], np.cumsum(scb)[:-1]]).astype(np.int64)
            rdisp = np.concatenate([[0], np.cumsum(rcb)[:-1]]).astype(np.int64)
            comm.Alltoallv([sb, (scb, sdisp), MPI.BYTE], [rb, (rcb, rdisp), MPI.BYTE])
            recv[ridx] = rb
        out[name] = recv.view(a.dtype).reshape((nrecv,) + trail)
    return out


def global_positions(comm, load, keys=None, nkeys=None):
    """Global start position (int64) of each local sample in the load prefix sum.

    The global order is rank-major (rank 0's samples, then rank 1's, ...) when ``keys`` is
    None; with ``keys`` (e.g. ``stack * ntiles + tile``) it is key-major, then rank, then
    local order, which equals a stable sort by key of the rank-major concatenation. Only
    per-key totals travel (Allreduce + Exscan of ``nkeys`` int64), never the samples.

    Returns
    -------
    starts : ndarray (nsamp,) int64, in the caller's local order
    total : int, global sum of loads
    """
    load = np.asarray(load, dtype=np.int64).reshape(-1)
    rank, size = comm_rank_size(comm)
    if keys is None:
        local = np.array([load.sum()], dtype=np.int64)
        off = exscan(comm, local)
        tot = allreduce_array(comm, local.copy(), "sum")
        starts = off[0] + np.cumsum(load) - load
        return starts.astype(np.int64), int(tot[0])
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if nkeys is None:
        mx = np.array([keys.max(initial=-1)], dtype=np.int64)
        nkeys = int(allreduce_array(comm, mx, "max")[0]) + 1
    per_key = np.zeros(nkeys, dtype=np.int64)
    np.add.at(per_key, keys, load)
    rank_off = exscan(comm, per_key)
    key_tot = allreduce_array(comm, per_key.copy(), "sum")
    key_base = np.zeros(nkeys, np.int64)
    np.cumsum(key_tot[:-1], out=key_base[1:])
    order = np.argsort(keys, kind="stable")
    sl = load[order]
    sk = keys[order]
    cs = np.cumsum(sl) - sl  # exclusive cumsum over the sorted local samples
    first = np.searchsorted(sk, sk, side="left")  # first index of each sample's key group
    within = cs - cs[first]
    starts = np.empty_like(load)
    starts[order] = key_base[sk] + rank_off[sk] + within
    return starts, int(key_tot.sum())


def exscan(comm, arr):
    """Exclusive prefix sum over ranks (rank 0 gets zeros); serial: zeros."""
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    out = np.zeros_like(arr)
    if comm is None or comm.Get_size() == 1:
        return out
    from mpi4py import MPI

    comm.Exscan(arr, out, op=MPI.SUM)
    if comm.Get_rank() == 0:
        out[:] = 0  # Exscan leaves rank 0's buffer undefined
    return out


def prefix_sum_boundaries(comm, local_load, n_ranks=None, method="cuts", keys=None, nkeys=None):
    """Destination rank of every local sample, balancing the global load (paper sec. 4.1).

    The distributed twin of :func:`radimg.parallel.balance.balanced_assignment` on the
    global order defined by :func:`global_positions`. ``method="cuts"`` needs only one
    Exscan and one Allreduce; ``method="paper"`` (greedy fill, every rank except the last
    ``<= floor(mean)``) adds ``n_ranks - 1`` small Allreduces, one per cut point.

    Returns
    -------
    dest : ndarray (nsamp,) int32
    boundaries : ndarray (n_ranks + 1,) int64, cut points in load space (identical on all ranks)
    """
    rank, size = comm_rank_size(comm)
    n_ranks = size if n_ranks is None else int(n_ranks)
    load = np.asarray(local_load, dtype=np.int64).reshape(-1)
    starts, total = global_positions(comm, load, keys, nkeys)
    ends = starts + load
    if method == "cuts":
        dest = midpoint_ranks(starts, load, total, n_ranks)
        B = np.array(
            [(j * total) // n_ranks for j in range(n_ranks + 1)], dtype=np.int64
        )  # nominal ideal cut points, reported for information
        return dest, B
    if method != "paper":
        raise ValueError(f"method must be 'paper' or 'cuts', not {method!r}")
    avg = total // n_ranks
    sorted_ends = np.sort(ends)
    B = np.zeros(n_ranks + 1, dtype=np.int64)
    B[-1] = total
    for j in range(n_ranks - 1):
        b = int(B[j])
        i = np.searchsorted(sorted_ends, b + avg, side="right")
        cand = np.array([max(int(sorted_ends[i - 1]) if i > 0 else 0, b)], dtype=np.int64)
        allreduce_array(comm, cand, "max")
        c = int(cand[0])
        if c == b and b < total:
            k = np.searchsorted(sorted_ends, b, side="right")
            nxt = np.array([sorted_ends[k] if k < sorted_ends.size else np.iinfo(np.int64).max])
            nxt = nxt.astype(np.int64)
            allreduce_array(comm, nxt, "min")
            c = int(nxt[0])
        B[j + 1] = min(c, total)
    dest = np.searchsorted(B[1:-1], ends, side="left").astype(np.int32)
    return dest, B
