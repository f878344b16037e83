"""Chebyshev expansion of the w-term (narrow fields): the tables mode ``wstack`` uses when
its geometry has ``wkernel == "cheb"`` (radimg/ops/geometry.py picks it by cost).

With the samples' ``|w|`` in ``[w_mid - dw / 2, w_mid + dw / 2]``, ``w = w_mid - mu dw / 2``
(``mu`` in [-1, 1]) and ``c = n - 1 - nshift`` in ``[-h, h]``, the Jacobi-Anger expansion
(Abramowitz & Stegun 9.1.44-45) gives, with ``z = pi dw c``::

    exp(2 pi i w c) = exp(2 pi i w_mid c) sum_p eps_p (-i)^p J_p(z) T_p(mu),

``eps_0 = 1``, ``eps_p = 2``. Truncated after ``K`` terms the error is at most
``2 sum_{p >= K} |J_p(z)| <= 2 (z / 2)^K / K! / (1 - z / (2 (K + 1)))`` (:func:`tail_bound`,
from ``|J_p(z)| <= (z / 2)^p / p!``), for every sample and pixel alike. So ``K`` "planes" do
what the ES w-kernel does with ``Ww`` planes spread by its support (6-7 at epsilon 1e-5):
plane ``p`` grids every sample with weight ``T_p(mu)`` (a polynomial in ``mu``, evaluated by
the gridder's w-tap code from :func:`monomial_table`), and its image-domain screen is
``eps_p (-i)^p J_p(pi dw c) exp(2 pi i w_mid c)`` (:func:`amplitude_poly`,
:func:`rotation`). On a field where ``z`` stays below ~0.1 at epsilon 1e-5, three planes
suffice, each sample is gridded three times instead of 6-7 (the same pipeline, no
image-domain w correction). Wide fields need ``K`` growing with ``z`` and the ES planes win;
the geometry's cost model decides.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["KMAX", "tail_bound", "planes_for", "monomial_table", "amplitude_poly", "rotation"]

KMAX = 16  # beyond this many terms the ES w-planes are always cheaper (z ~ 5)


def tail_bound(K, z):
    """Upper bound on ``|exp(-i z mu) - sum_{p < K} eps_p (-i)^p J_p(z) T_p(mu)|`` over
    ``|mu| <= 1`` (inf where the bound does not hold, ``z >= 2 (K + 1)``)."""
    z = abs(float(z))
    if z >= 2.0 * (K + 1):
        return math.inf
    return 2.0 * (0.5 * z) ** K / math.factorial(K) / (1.0 - z / (2.0 * (K + 1)))


def planes_for(epsilon, z, kmax=KMAX):
    """Smallest ``K >= 2`` whose truncation error at ``|z|`` is <= ``epsilon``, or None."""
    for K in range(2, kmax + 1):
        if tail_bound(K, z) <= epsilon:
            return K
    return None


@functools.lru_cache(maxsize=32)
def monomial_table(K):
    """``(K, K)`` float64 (read-only, as the ES tables): column ``p`` holds ``T_p``'s
    monomial coefficients, highest power first (row 0 is ``mu^(K - 1)``), the layout of the
    gridder's w-tap Horner loop."""
    out = np.zeros((K, K))
    for p in range(K):
        c = np.polynomial.chebyshev.cheb2poly(np.eye(p + 1)[p])  # lowest power first
        out[K - 1 - np.arange(p + 1), p] = c
    out.setflags(write=False)
    return out


def amplitude_poly(p, a, h, tol=1e-18):
    """Coefficients (highest power first) of the polynomial in ``c`` equal to
    ``eps_p J_p(a c)`` for ``|c| <= h``: the series ``J_p(x) = sum_k (-1)^k (x / 2)^(2k + p)
    / (k! (k + p)!)`` cut where its terms fall below ``tol`` at ``|c| = h``."""
    scale = 1.0 if p == 0 else 2.0
    coef = {}
    x2 = 0.5 * abs(a) * h
    for k in range(64):
        term = scale * x2 ** (2 * k + p) / (math.factorial(k) * math.factorial(k + p))
        coef[2 * k + p] = scale * (-1) ** k * (0.5 * a) ** (2 * k + p) / (
            math.factorial(k) * math.factorial(k + p))
        if term < tol and k > 0:
            break
    deg = max(coef)
    out = np.zeros(deg + 1)
    for d, v in coef.items():
        out[deg - d] = v
    return out


def rotation(p):
    """``conj((-i)^p) = i^p``: the constant of plane ``p``'s adjoint screen (the chirp
    kernels' ``P = i^p A_p(c) exp(-2 pi i w_mid c)``)."""
    return (1.0, 1j, -1.0, -1j)[p % 4]
