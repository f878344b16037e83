"""Channel groups: the output channels of a cube as a second axis of distribution beside
the w-stacks (issue #15 item 5).

With ``G`` groups the ranks are cut into ``G`` contiguous blocks (rank ``r`` is in group
``r * G // size``) and output channel ``c`` belongs to group ``c mod G``. Each group images
its own channels with its own sub-communicator: every (output channel, w-stack) grid has one
owner rank inside the channel's group (the distributed operator's plane owners), a rank
holds the samples and grids of its group's channels only, and the groups work at the same
time instead of every rank taking part in every channel's collectives one channel after
another. Rows move once, before the imaging: each rank sends every group the columns of
that group's channels of the rows it read; a group's members receive contiguous blocks of
the global row order (the rows as read, concatenated in rank order), so what a group holds
does not depend on how the rows were read.
"""

from __future__ import annotations

import numpy as np

from radimg.parallel.mpi import allreduce_array
from radimg.parallel.redistribute import exscan, redistribute

__all__ = ["auto_groups", "resolve_groups", "group_of", "group_members", "channels_of", "move_to_group",
           "split", "assemble"]


def auto_groups(size, nchan_out):
    """``resources.channel_groups: auto``: the largest divisor of the rank count that is at
    most the number of output channels (equal groups; 1 with one rank or one channel)."""
    size, nchan_out = int(size), int(nchan_out)
    if size < 2 or nchan_out < 2:
        return 1
    return max(g for g in range(1, min(size, nchan_out) + 1) if size % g == 0)


def resolve_groups(want, size, nchan_out, joined):
    """``resources.channel_groups`` for a cube of ``nchan_out`` output channels on ``size``
    ranks: ``auto`` is :func:`auto_groups` (1 for a joined deconvolution, which needs every
    image's operator on the same ranks); an explicit value above the rank count or the
    output channels, or above 1 with a joined deconvolution, is a ConfigError."""
    from radimg.config import ConfigError

    if want == "auto":
        return 1 if joined else auto_groups(size, nchan_out)
    want = int(want)
    if want > 1 and joined:
        raise ConfigError(
            f"resources.channel_groups = {want}: a joined deconvolution "
            "(deconvolution.join_channels / join_polarizations) needs every image's operator "
            "on the same ranks; use 1 or auto"
        )
    if want > min(int(size), int(nchan_out)):
        raise ConfigError(
            f"resources.channel_groups = {want} exceeds the {size} rank(s) or the "
            f"{nchan_out} output channel(s) (image.channels_out) of this run; use auto"
        )
    return want


def group_of(rank, size, ngroups):
    """The group of ``rank``: contiguous blocks of ranks, sizes differing by at most one."""
    return int(rank) * int(ngroups) // int(size)


def group_members(size, ngroups, g):
    """The ranks of group ``g`` (ascending)."""
    return [r for r in range(int(size)) if group_of(r, size, ngroups) == g]


def channels_of(nchan_out, ngroups, g):
    """The output channels of group ``g``: ``c mod ngroups == g`` (ascending)."""
    return [c for c in range(int(nchan_out)) if c % int(ngroups) == g]


def move_to_group(comm, ngroups, arrays_of):
    """Send every group its columns of this rank's rows (collective over ``comm``).

    Parameters
    ----------
    comm : mpi4py communicator of all ranks
    ngroups : int
    arrays_of : callable ``g -> dict name -> ndarray (row, ...)``, the arrays group ``g``
        needs of this rank's rows (the same names and row count for every ``g``)

    Returns
    -------
    dict name -> ndarray (row, ...)
        This rank's share of its group's arrays: global rows ``[first, stop)`` of the rows
        as read (concatenated in rank order) cut evenly over the group's members, with the
        name ``"row"`` added (int64, the global row index of each row).
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    first = arrays_of(0)
    nrow = next(iter(first.values())).shape[0] if first else 0
    row0 = int(exscan(comm, np.array([nrow], np.int64))[0])
    ntot = int(allreduce_array(comm, np.array([nrow], np.int64), "sum")[0])
    grow = row0 + np.arange(nrow, dtype=np.int64)
    mine = None
    for g in range(int(ngroups)):
        members = np.asarray(group_members(size, ngroups, g), dtype=np.int64)
        dest = members[(grow * members.size) // max(ntot, 1)]
        arrays = dict(first if g == 0 else arrays_of(g), row=grow)
        moved = redistribute(comm, arrays, dest)
        if g == group_of(rank, size, ngroups):
            mine = moved
    return mine


def split(comm, ngroups):
    """The sub-communicator of this rank's group (collective)."""
    size, rank = comm.Get_size(), comm.Get_rank()
    return comm.Split(group_of(rank, size, ngroups), rank)


def assemble(comm, sub, full, mine, index):
    """Put a group's arrays into the full ones on every rank (collective over ``comm``).

    ``full`` : ndarray, zeros, shaped like the whole cube along some axis; ``mine`` : this
    group's part, ``full[index] = mine`` on the group's first rank (``sub.rank == 0``) and
    nothing elsewhere, then one sum over all ranks: every element has one contributor, so
    the result is exact. Returns ``full``.
    """
    if sub.Get_rank() == 0:
        full[index] = mine
    return allreduce_array(comm, np.ascontiguousarray(full), "sum")
