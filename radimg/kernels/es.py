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
    "es_corrections",
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


def leggauss(n):
    """Gauss-Legendre nodes and weights on [-1, 1] (``numpy.polynomial.legendre.leggauss``
    to rounding) by Newton's method on the three-term recurrence, O(n^2) numpy work.

    numpy's version solves an eigenvalue problem in LAPACK, which under ``mpiexec`` on few
    cores (OpenBLAS threads of every rank spinning) took up to 0.1 s per call and ~4 s of a
    run's set-up (issue #13); this one needs no BLAS.
    """
    n = int(n)
    k = np.arange(1, n + 1, dtype=np.float64)
    x = np.cos(np.pi * (k - 0.25) / (n + 0.5))  # Tricomi's initial guess
    for _ in range(100):
        p0, p1 = np.ones_like(x), x.copy()
        for j in range(2, n + 1):
            p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
        dp = n * (x * p1 - p0) / (x * x - 1.0)
        dx = p1 / dp
        x -= dx
        if np.abs(dx).max() < 1e-16:
            break
    p0, p1 = np.ones_like(x), x.copy()
    for j in range(2, n + 1):
        p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
    dp = n * (x * p1 - p0) / (x * x - 1.0)
    w = 2.0 / ((1.0 - x * x) * dp * dp)
    return x[::-1].copy(), w[::-1].copy()


@functools.lru_cache(maxsize=64)
def _gl_theta(nquad):
    """Gauss-Legendre nodes on theta in [0, pi/2] for the substitution x = sin(theta)."""
    z, wq = leggauss(nquad)
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


def es_corrections(nu_over_N, W, betas, nquad):
    """:func:`es_correction` of several kernel shapes ``betas`` at the same frequencies with
    the same ``nquad``-node rule: the cosines are shared, one matrix product gives every
    transform. Returns ``(nu.size, len(betas))`` float64 (``nu`` flattened)."""
    nu = np.asarray(nu_over_N, dtype=np.float64).ravel()
    betas = np.asarray(betas, dtype=np.float64)
    xs, ws = _gl_theta(int(nquad))
    phi = np.exp(betas[:, None] * (np.sqrt(np.maximum(1.0 - xs * xs, 0.0)) - 1.0)) * ws
    half = 0.5 * W
    return 2.0 * half * (np.cos(np.outer(nu, xs) * (2.0 * np.pi * half)) @ phi.T)


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
    """(beta, measured error) minimising the 1-D error for support W (cached): from the
    generated table radimg/kernels/es_betas.py where it holds the pair (the oversampling
    factors the operators try), else :func:`best_beta_computed`."""
    from radimg.kernels.es_betas import BEST_BETA

    hit = BEST_BETA.get((int(W), round(float(oversampling), 6)))
    return hit if hit is not None else best_beta_computed(W, oversampling)


def best_beta_computed(W, oversampling):
    """(beta, measured error) by a golden-section search over beta of :func:`es_error`
    (what scripts/make_es_table.py tabulates)."""
    # The optimum sits near beta ~ 2.3 W for sigma = 2 (FINUFFT); bracket widely.
    f = lambda b: es_error(W, b, oversampling, nx=33, nt=24)  # noqa: E731
    beta, _ = _golden_min(f, 0.8 * W, 3.2 * W, 1e-3 * W)
    return float(beta), float(es_error(W, beta, oversampling))


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


# ----------------------------------------------------------------------------- piecewise poly
#
# The gridder does not evaluate exp/sqrt per tap. For a sample at continuous grid position g
# (cells) the first cell it touches is ``f0 = floor(g - W/2) + 1`` and its fractional offset
# ``s = f0 - g + W/2`` lies in (0, 1]; tap ``a`` (cell ``f0 + a``) has kernel argument
# ``x = 2 (s + a) / W - 1``. Per tap the kernel is a polynomial of degree ``D`` in
# ``mu = 2 s - 1`` in [-1, 1] (ducc0's approach), interpolated at Chebyshev nodes once per
# (W, beta). The piecewise polynomial *is* the gridding kernel: its gridding correction is its
# own Fourier transform (:func:`es_poly_correction`, exact quadrature of the pieces) and its
# error is measured with it (:func:`es_poly_error`), so the fit error is never hidden.

POLY_EXTRA_DEGREE = 3  # D = W + 3 (the fit error is set by the kernel's sqrt edge, not D)


def es_poly_degree(W):
    return int(W) + POLY_EXTRA_DEGREE


@functools.lru_cache(maxsize=64)
def _cheb_to_monomial(n):
    """(n, n) matrix taking Chebyshev coefficients to monomial ones (ascending), from
    ``T_{k+1} = 2 x T_k - T_{k-1}``: what ``chebyshev.cheb2poly`` does per vector, once."""
    m = np.zeros((n, n))
    m[0, 0] = 1.0
    if n > 1:
        m[1, 1] = 1.0
    for k in range(1, n - 1):
        m[1:, k + 1] = 2.0 * m[:-1, k]
        m[:, k + 1] -= m[:, k - 1]
    return m


@functools.lru_cache(maxsize=256)
def _es_poly_coeffs_cached(W, beta):
    D = es_poly_degree(W)
    n = D + 1
    mu = np.cos(np.pi * (np.arange(n) + 0.5) / n)  # Chebyshev nodes: near-minimax fit
    s = 0.5 * (mu + 1.0)
    taps = np.arange(W)
    y = es_kernel(2.0 * (s[:, None] + taps[None, :]) / W - 1.0, W, beta)  # (n, W)
    cheb = np.polynomial.chebyshev.chebfit(mu, y, D)  # (D + 1, W), all taps in one fit
    coef = np.ascontiguousarray((_cheb_to_monomial(n) @ cheb)[::-1])  # highest degree first
    # The kernel is even: tap W-1-a at mu is tap a at -mu. Impose it exactly (the fits agree
    # to rounding), so the gridder may evaluate even and odd parts once for both taps.
    sign = (-1.0) ** (D - np.arange(D + 1))
    for a in range(W // 2):
        coef[:, W - 1 - a] = coef[:, a] * sign
    if W % 2:
        coef[sign < 0, W // 2] = 0.0
    coef.setflags(write=False)
    return coef


@functools.lru_cache(maxsize=256)
def _es_poly_even_odd_cached(W, beta):
    coef = _es_poly_coeffs_cached(W, beta)
    D = coef.shape[0] - 1
    nh = (W + 1) // 2
    asc = coef[::-1, :nh]  # ascending powers of mu
    even = np.ascontiguousarray(asc[0::2][::-1])  # in mu^2, highest first
    odd = np.ascontiguousarray(asc[1::2][::-1]) if D >= 1 else np.zeros((1, nh))
    even.setflags(write=False)
    odd.setflags(write=False)
    return even, odd


def es_poly_even_odd(W, beta):
    """Taps ``a < (W + 1) // 2`` split as ``E_a(mu^2) + mu O_a(mu^2)`` (tap ``W - 1 - a`` is
    ``E_a - mu O_a``): two arrays of coefficients in ``mu^2``, highest degree first."""
    return _es_poly_even_odd_cached(int(W), float(beta))


def es_poly_coeffs(W, beta):
    """Monomial coefficients ``(D + 1, W)`` float64, highest degree first (Horner order):
    tap ``a`` of a sample with ``mu = 2 s - 1`` is ``sum_d coef[d, a] mu^(D - d)``."""
    return _es_poly_coeffs_cached(int(W), float(beta))


def es_poly_taps(g, W, beta):
    """Reference (numpy) evaluation of the piecewise-polynomial kernel.

    Parameters
    ----------
    g : ndarray (n,) float64, continuous grid positions in cells.

    Returns
    -------
    (f0, taps): int64 (n,) first cell touched, float64 (n, W) kernel weights of cells
    ``f0 .. f0 + W - 1``.
    """
    g = np.atleast_1d(np.asarray(g, dtype=np.float64))
    coef = es_poly_coeffs(W, beta)
    f0 = np.floor(g - 0.5 * W) + 1.0
    mu = 2.0 * (f0 - g + 0.5 * W) - 1.0
    taps = np.zeros((g.size, W))
    for d in range(coef.shape[0]):
        taps = taps * mu[:, None] + coef[d][None, :]
    return f0.astype(np.int64), taps


@functools.lru_cache(maxsize=64)
def _gl_unit(n):
    z, wq = np.polynomial.legendre.leggauss(n)
    return z, wq


def es_poly_correction(nu_over_N, W, beta):
    """Fourier transform of the piecewise-polynomial kernel (see :func:`es_correction`).

    Each of the ``W`` unit cells holds a polynomial of degree ``D``; Gauss-Legendre with
    ``D + 24`` nodes per cell integrates polynomial times cosine (``|nu| <= 1/2``) to
    rounding error.
    """
    nu = np.asarray(nu_over_N, dtype=np.float64)
    coef = es_poly_coeffs(W, beta)
    z, wq = _gl_unit(coef.shape[0] + 24)  # mu nodes in [-1, 1]; s = (mu + 1) / 2
    s = 0.5 * (z + 1.0)
    vals = np.zeros((W, z.size))
    for d in range(coef.shape[0]):
        vals = vals * z[None, :] + coef[d][:, None]
    # tap a covers offsets y = s + a - W/2 (cells); dy = ds = dmu / 2
    y = (s[None, :] + np.arange(W)[:, None] - 0.5 * W).ravel()
    wts = (vals * (0.5 * wq)[None, :]).ravel()
    flat = nu.ravel()
    out = np.empty(flat.size)
    chunk = 4096
    for st in range(0, flat.size, chunk):
        f = flat[st : st + chunk]
        out[st : st + chunk] = np.cos(np.outer(f, y) * (2.0 * np.pi)) @ wts
    out = out.reshape(nu.shape)
    return out if out.ndim else float(out)


def es_poly_error(W, beta, oversampling=2.0, nx=64, nt=48, kind="max"):
    """Measured 1-D error of gridding with the piecewise-polynomial kernel (as
    :func:`es_error`): ``kind="max"`` the worst case over sample offset ``t`` and image
    position ``nu``; ``kind="rms"`` the largest over ``nu`` of the rms over ``t``."""
    nu = np.linspace(0.0, 0.5 / oversampling, nx)
    t = (np.arange(nt) + 0.5) / nt
    f0, k = es_poly_taps(t, W, beta)
    offs = t[:, None] - (f0[:, None] + np.arange(W)[None, :])
    ph = np.exp(-2j * np.pi * nu[:, None, None] * offs[None, :, :])
    s = (ph * k[None, :, :]).sum(axis=-1)
    e = np.abs(s / es_poly_correction(nu, W, beta)[:, None] - 1.0)
    if kind == "rms":
        return float(np.sqrt((e * e).mean(axis=1)).max())
    return float(e.max())
