"""Distributed 1-D k-means on w for w-stacking (Pratley & McEwen 2019, sections 3 and 5).

The algorithm is :func:`radimg.ops.kmeans.kmeans_w`; here it gets the MPI reductions of a
communicator (:class:`radimg.parallel.mpi.Collectives`), so every rank holds identical
centres, equal to the serial result on the concatenated data up to summation order.
"""

from __future__ import annotations

from radimg.ops import kmeans as _km
from radimg.ops.kmeans import assign_labels
from radimg.parallel.mpi import Collectives

__all__ = ["kmeans_w", "assign_labels"]


def kmeans_w(w, k, valid=None, comm=None, max_iter=100, tol=1e-10):
    """Cluster w into ``k`` stacks, global over ``comm`` (None: serial).

    Parameters and returns as :func:`radimg.ops.kmeans.kmeans_w`; ``comm`` is an mpi4py
    communicator (every rank calls with the same ``k``, ``max_iter``, ``tol``).
    """
    return _km.kmeans_w(w, k, valid, max_iter, tol, collectives=Collectives.of(comm))
