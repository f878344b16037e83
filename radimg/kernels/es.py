"""Exponential-of-semicircle (ES) gridding kernel (Barnett et al. 2019, FINUFFT).

``phi(x) = exp(beta * (sqrt(1 - x^2) - 1))`` for ``|x| <= 1``, 0 outside, where
``x = offset / (W / 2)`` and the offset is measured in grid cells, so the kernel covers
``W`` grid cells.

Parameters ``(W, beta)`` are not guessed from a formula: :func:`es_parameters` measures the
worst-case 1-D error of the gridding approximation directly (the kernel sum over the ``W``
grid points it touches, corrected by its Fourier transform, against the exact exponential)
and returns the smallest support that meets the requested accuracy, with the ``beta`` that
minimises that error. The search runs lazily on first use for a given oversampling and is
cached; nothing is computed at import time.

The gridding correction :func:`es_correction` is the kernel's continuous Fourier transform,
computed by Gauss-Legendre quadrature after the substitution ``x = sin(theta)``, which turns
the square-root edge of the semicircle into a smooth periodic integrand so the quadrature
converges exponentially (accurate to ~1e-15, not an asymptotic approximation).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from radimg.kernels._jit import JIT_OPTIONS

__all__ = [
    "es_kernel",
    "es_correction",
    "es_parameters",
    "es_error",
    "MIN_SUPPORT",
    "MAX_SUPPORT",
]

MIN_SUPPORT = 2
MAX_SUPPORT = 16


@numba.njit(**JIT_OPTIONS)
def _es_kernel_scalar(x, beta):
    # x in units of half-support; outside |x| <= 1 the kernel vanishes.
    t = 1.0 - x * x
    if t <= 0.0:
        return 0.0
    return np.exp(beta * (np.sqrt(t) - 1.0))


def es_kernel(x, W, beta):
    """Kernel value at ``x = offset / (W/2)``.

    Parameters
    ----------
    x : float or ndarray, float64
        Offset in units of the half-support; the kernel is 0 for ``|x| > 1``.
    W : int
        Support in grid cells (kept in the signature so callers pass a consistent pair).
    beta : float
        Shape parameter.

    Returns
    -------
    float or ndarray float64, same shape as ``x``.
    """
    del W  # the shape depends on beta only once x is scaled by W/2
    x = np.asarray(x, dtype=np.float64)
    t = 1.0 - x * x
    out = np.where(t > 0.0, np.exp(beta * (np.sqrt(np.maximum(t, 0.0)) - 1.0)), 0.0)
    return out if out.ndim else float(out)


@functools.lru_cache(maxsize=64)
def _gl_theta(nquad):
    """Gauss-Legendre nodes on theta in [0, pi/2] for the substitution x = sin(theta)."""
    z, wq = np.polynomial.legendre.leggauss(nquad)
    theta = 0.25 * np.pi * (z + 1.0)
    return np.sin(theta), np.cos(theta) * wq * 0.25 * np.pi


def es_correction(nu_over_N, W, beta, nquad=None):
    """Fourier transform of the ES kernel, by Gauss-Legendre quadrature.

    ``phihat(nu) = integral over y in [-W/2, W/2] of phi(2y/W) exp(-2 pi i nu y) dy``
    with ``y`` in grid cells and ``nu`` in cycles per grid cell (``nu = k / N`` for image
    pixel ``k`` of an ``N``-point padded grid). The kernel is even, so the transform is real.

    Parameters
    ----------
    nu_over_N : float or ndarray, float64
        Frequency in cycles per grid cell; the imaged field is ``|nu| <= 1/(2 sigma)``.
    W : int
        Kernel support in grid cells.
    beta : float
    nquad : int, optional
        Quadrature order; the default is ample for the whole field for W <= 16.

    Returns
    -------
    ndarray float64, shape of ``nu_over_N``.
    """
    nu = np.asarray(nu_over_N, dtype=np.float64)
    if nquad is None:
        nquad = int(2 * W + 1.5 * beta + 40)
    xs, ws = _gl_theta(nquad)
    # Even integrand: integral over [-1, 1] = 2 * integral over [0, 1]; x = sin(theta).
    phi = np.exp(beta * (np.sqrt(np.maximum(1.0 - xs * xs, 0.0)) - 1.0)) * ws
    flat = nu.ravel()
    out = np.empty(flat.size)
    half = 0.5 * W
    chunk = 4096
    for s in range(0, flat.size, chunk):
        f = flat[s : s + chunk]
        out[s : s + chunk] = 2.0 * half * (np.cos(np.outer(f, xs) * (2.0 * np.pi * half)) @ phi)
    out = out.reshape(nu.shape)
    return out if out.ndim else float(out)


def es_error(W, beta, oversampling=2.0, nx=64, nt=48):
    """Measured worst-case 1-D relative error of gridding with this kernel.

    For a sample at fractional grid position ``t`` and an image position ``nu`` in the
    un-padded field ``|nu| <= 1/(2 sigma)`` the gridded approximation of
    ``exp(2 pi i nu t)`` is ``sum_j phi((t - j)/(W/2)) exp(2 pi i nu j) / phihat(nu)``
    over the ``W`` grid points ``j`` it touches. Returns the maximum over ``t`` and ``nu``
    of ``|approx / exact - 1|``.
    """
    nu = np.linspace(0.0, 0.5 / oversampling, nx)
    t = (np.arange(nt) + 0.5) / nt
    j0 = np.ceil(t - 0.5 * W)  # first grid point touched: offsets in (-W/2, W/2]
    offs = t[:, None] - (j0[:, None] + np.arange(W)[None, :])  # (nt, W) = t - j
    k = es_kernel(offs / (0.5 * W), W, beta)  # (nt, W)
    # approx/exact = sum_j k exp(-2 pi i nu (t - j)) / phihat(nu)
    ph = np.exp(-2j * np.pi * nu[:, None, None] * offs[None, :, :])  # (nx, nt, W)
    s = (ph * k[None, :, :]).sum(axis=-1)
    corr = es_correction(nu, W, beta)
    return float(np.abs(s / corr[:, None] - 1.0).max())


def _golden_min(f, a, b, tol):
    g = 0.5 * (np.sqrt(5.0) - 1.0)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (c, fc) if fc < fd else (d, fd)


@functools.lru_cache(maxsize=256)
def _best_beta(W, oversampling):
    """(beta, measured error) minimising the 1-D error for support W (cached)."""
    # The optimum sits near beta ~ 2.3 W for sigma = 2 (FINUFFT); bracket widely.
    f = lambda b: es_error(W, b, oversampling, nx=33, nt=24)  # noqa: E731
    beta, _ = _golden_min(f, 0.8 * W, 3.2 * W, 1e-3 * W)
    return float(beta), es_error(W, beta, oversampling)


def _support_table(oversampling):
    """(W, best beta, its error) for every W, for one oversampling factor."""
    return tuple((W, *_best_beta(W, oversampling)) for W in range(MIN_SUPPORT, MAX_SUPPORT + 1))


def es_parameters(epsilon, oversampling=2.0):
    """Smallest support ``W`` (and its ``beta``) whose measured 1-D error meets ``epsilon``.

    Parameters
    ----------
    epsilon : float
        Target worst-case relative error of the 1-D gridding approximation
        (see :func:`es_error`). A d-dimensional operator should ask for ``epsilon / d``
        per axis if it wants a worst-case bound; errors of independent samples add
        incoherently, so in practice a factor ~2 suffices.
    oversampling : float
        Padded grid size over image size (> 1).

    Returns
    -------
    (W, beta) : (int, float)

    Raises
    ------
    ValueError if no support up to ``MAX_SUPPORT`` reaches ``epsilon``.
    """
    if not oversampling > 1.0:
        raise ValueError(f"oversampling must be > 1, got {oversampling}")
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    sigma = round(float(oversampling), 6)
    err = np.inf
    for W in range(MIN_SUPPORT, MAX_SUPPORT + 1):  # lazily: stop at the first W that meets eps
        beta, err = _best_beta(W, sigma)
        if err <= epsilon:
            return W, beta
    raise ValueError(
        f"epsilon={epsilon:g} is not reachable with support <= {MAX_SUPPORT} at "
        f"oversampling {oversampling} (best {err:.2e}); raise the oversampling"
    )
