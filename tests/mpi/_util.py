"""Helpers shared by the tests run under mpiexec (imported by path-relative import)."""

import numpy as np


def uneven_slices(n, size, seed=0):
    """Contiguous, deliberately uneven row ranges (one rank may be empty) for ``size`` ranks."""
    rng = np.random.default_rng(seed)
    if size == 1:
        return [(0, n)]
    cuts = np.sort(rng.integers(0, n + 1, size - 1))
    if size >= 3:
        cuts[0] = cuts[1]  # rank 1 gets nothing: empty ranks must take part correctly
    edges = np.concatenate([[0], cuts, [n]])
    return [(int(edges[i]), int(edges[i + 1])) for i in range(size)]
