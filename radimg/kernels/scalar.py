"""Scalar functions shared by the CPU kernels and their CUDA twins, written once.

:func:`build` compiles the same plain Python functions with a given decorator:
``numba.njit(**JIT_OPTIONS)`` for the CPU kernels (:data:`CPU`, used by
radimg.kernels.gridder and radimg.kernels.wproject) and ``numba.cuda.jit(device=True)`` for
the GPU kernels (radimg.gpu.gridder and radimg.gpu.wproject call ``build`` once, guarded by
the CUDA import). A CPU/GPU twin therefore cannot drift: there is one source for the
exponential-of-semicircle kernel, the 4-point Lagrange weights, the w-kernel support rule,
the separable w-projection kernel fill and the opening of a flat sample index into
(row, channel, reflected u, v, w).

The functions that call others (``fill_1d``, ``wproject_setup``) are closures over the
functions compiled by the same ``build`` call, so each target links its own versions.
Pure functions: no globals besides ``math``, no allocation, no I/O.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numba

from radimg.kernels._jit import JIT_OPTIONS

__all__ = ["build", "CPU"]


def build(jit):
    """The scalar functions compiled with ``jit`` (a decorator taking a function).

    Returns
    -------
    SimpleNamespace with

    - ``es(x, beta)``: exponential of semicircle ``exp(beta (sqrt(1 - x^2) - 1))``, 0 for
      ``|x| >= 1`` (x = offset / (W/2)).
    - ``lagrange4(x)``: weights of the nodes -1, 0, 1, 2 at ``x`` in [0, 1), a 4-tuple.
    - ``dw_node(dw, dw0, ddw, nw)``: ``(iw, fw)``, first of the 4 table nodes around ``dw``
      on the grid ``dw0 + k ddw`` (k < nw), clamped, and the position in that stencil.
    - ``support(hs, iw, fw)``: kernel support (cells, >= 1) from the half-support table
      ``hs`` at the 4 nodes from ``iw`` (the outer two only when ``fw`` leaves [0, 1]).
    - ``sample_uvw(uvw, fscale, nchan, i)``: ``(row, ch, flip, u, v, w)`` of flat sample
      ``i = row * nchan + ch``, in wavelengths, reflected to ``w >= 0`` (``flip``).
    - ``fill_1d(tab, iw, fw, g, S, tmax, q, out)``: ``out[r, a]`` = w-projection kernel
      term ``r`` at offset ``g - a`` (a < S) from the tables ``tab`` (rank, dw node,
      offset): 4-point Lagrange in dw times 4-point Lagrange in the offset (16 taps).
    - ``wproject_setup(uvw, fscale, nchan, i, wk, xs, ys, dw0, ddw, hs_x, hs_y)``:
      ``(row, ch, flip, dw, iw, fw, Sx, Sy, ox, oy, jx, jy)`` of a sample of the stack at
      ``wk``: residual ``dw = w - wk``, supports, first grid cells ``jx, jy`` and the
      offsets ``ox, oy`` of the sample from them.
    """

    @jit
    def es(x, beta):
        t = 1.0 - x * x
        if t <= 0.0:
            return 0.0
        return math.exp(beta * (math.sqrt(t) - 1.0))

    @jit
    def lagrange4(x):
        return (-x * (x - 1.0) * (x - 2.0) / 6.0, (x + 1.0) * (x - 1.0) * (x - 2.0) / 2.0,
                -(x + 1.0) * x * (x - 2.0) / 2.0, (x + 1.0) * x * (x - 1.0) / 6.0)

    @jit
    def dw_node(dw, dw0, ddw, nw):
        pw = (dw - dw0) / ddw
        iw = int(math.floor(pw)) - 1
        if iw < 0:
            iw = 0
        if iw > nw - 4:
            iw = nw - 4
        return iw, pw - (iw + 1)

    @jit
    def support(hs, iw, fw):
        h = max(hs[iw + 1], hs[iw + 2])
        if fw < 0.0 or fw > 1.0:
            h = max(h, max(hs[iw], hs[iw + 3]))
        s = int(math.ceil(2.0 * h))
        return max(s, 1)

    @jit
    def sample_uvw(uvw, fscale, nchan, i):
        row = i // nchan
        ch = i - row * nchan
        f = fscale[ch]
        u = uvw[row, 0] * f
        v = uvw[row, 1] * f
        w = uvw[row, 2] * f
        flip = w < 0.0
        if flip:
            u = -u
            v = -v
            w = -w
        return row, ch, flip, u, v, w

    @jit
    def fill_1d(tab, iw, fw, g, S, tmax, q, out):
        w0, w1, w2, w3 = lagrange4(fw)
        p0 = (g + tmax) * q
        ip = int(math.floor(p0))
        c0, c1, c2, c3 = lagrange4(p0 - ip)
        base = ip - 1
        for r in range(tab.shape[0]):
            for a in range(S):
                j = base - a * q
                v0 = (w0 * tab[r, iw, j] + w1 * tab[r, iw + 1, j] + w2 * tab[r, iw + 2, j]
                      + w3 * tab[r, iw + 3, j])
                v1 = (w0 * tab[r, iw, j + 1] + w1 * tab[r, iw + 1, j + 1]
                      + w2 * tab[r, iw + 2, j + 1] + w3 * tab[r, iw + 3, j + 1])
                v2 = (w0 * tab[r, iw, j + 2] + w1 * tab[r, iw + 1, j + 2]
                      + w2 * tab[r, iw + 2, j + 2] + w3 * tab[r, iw + 3, j + 2])
                v3 = (w0 * tab[r, iw, j + 3] + w1 * tab[r, iw + 1, j + 3]
                      + w2 * tab[r, iw + 2, j + 3] + w3 * tab[r, iw + 3, j + 3])
                out[r, a] = c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3

    @jit
    def wproject_setup(uvw, fscale, nchan, i, wk, xs, ys, dw0, ddw, hs_x, hs_y):
        row, ch, flip, u, v, w = sample_uvw(uvw, fscale, nchan, i)
        dw = w - wk
        iw, fw = dw_node(dw, dw0, ddw, hs_x.shape[0])
        sx = support(hs_x, iw, fw)
        sy = support(hs_y, iw, fw)
        gx = u * xs
        gy = v * ys
        jx = int(math.ceil(gx - 0.5 * sx))
        jy = int(math.ceil(gy - 0.5 * sy))
        return row, ch, flip, dw, iw, fw, sx, sy, gx - jx, gy - jy, jx, jy

    return SimpleNamespace(es=es, lagrange4=lagrange4, dw_node=dw_node, support=support,
                           sample_uvw=sample_uvw, fill_1d=fill_1d,
                           wproject_setup=wproject_setup)


#: The CPU build (numba.njit with radimg's JIT options).
CPU = build(numba.njit(**JIT_OPTIONS))
