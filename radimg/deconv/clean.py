"""CLEAN minor cycles: Hogbom, Clark and multiscale (numba kernels, no MPI, no I/O).

Every function works in place on ``residual`` (Jy/beam) and ``model`` (Jy/pixel), both
``(npix_y, npix_x)`` float64, with a PSF of the same shape whose peak (1.0) sits at
``[npix_y // 2, npix_x // 2]``. Components may be negative. A component at pixel ``p``
subtracts ``amp * psf`` shifted so its peak lands on ``p``; the part of the shifted PSF that
falls outside the image is dropped (the PSF is the same size as the image, as in WSClean).

References: Hogbom (1974); Clark (1980); Cornwell (2008, IEEE JSTSP 2, 793) for multiscale
CLEAN with scale bias.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from radimg.kernels._jit import JIT_OPTIONS

__all__ = [
    "clark_minor",
    "hogbom_minor",
    "multiscale_minor",
    "psf_sidelobe_outside",
    "scale_kernels",
]


# ----------------------------------------------------------------------------- kernels


@njit(**JIT_OPTIONS)
def _peak(res, mask):
    """(iy, ix, value) of the largest |res| where mask != 0; iy = -1 if none."""
    best = -1.0
    by = -1
    bx = -1
    ny, nx = res.shape
    for y in range(ny):
        for x in range(nx):
            if mask[y, x]:
                a = abs(res[y, x])
                if a > best:
                    best = a
                    by = y
                    bx = x
    if by < 0:
        return -1, -1, 0.0
    return by, bx, res[by, bx]


@njit(**JIT_OPTIONS)
def _sub_shifted(img, kern, amp, py, px):
    """img -= amp * kern shifted so kern's centre [ny//2, nx//2] lands on (py, px)."""
    ny, nx = img.shape
    ky, kx = kern.shape
    cy = ky // 2
    cx = kx // 2
    y0 = max(0, py - cy)
    y1 = min(ny, py - cy + ky)
    x0 = max(0, px - cx)
    x1 = min(nx, px - cx + kx)
    for y in range(y0, y1):
        yy = y - py + cy
        for x in range(x0, x1):
            img[y, x] -= amp * kern[yy, x - px + cx]


@njit(**JIT_OPTIONS)
def _hogbom_kernel(res, psf, model, mask, gain, stop, niter):
    n = 0
    while n < niter:
        py, px, val = _peak(res, mask)
        if py < 0 or abs(val) <= stop:
            break
        amp = gain * val
        model[py, px] += amp
        _sub_shifted(res, psf, amp, py, px)
        n += 1
    return n


@njit(**JIT_OPTIONS)
def _clark_active_kernel(res, patch, comp, ay, ax, gain, stop, niter):
    """Hogbom on an active pixel list with a PSF patch; components go to comp[y, x].

    ay, ax: active pixel coordinates; the residual values there are updated in a local copy,
    the full residual is left for the caller's FFT subtraction.
    """
    na = ay.size
    vals = np.empty(na)
    for i in range(na):
        vals[i] = res[ay[i], ax[i]]
    hy = patch.shape[0] // 2
    hx = patch.shape[1] // 2
    n = 0
    while n < niter:
        best = -1.0
        bi = -1
        for i in range(na):
            a = abs(vals[i])
            if a > best:
                best = a
                bi = i
        if bi < 0 or best <= stop:
            break
        amp = gain * vals[bi]
        py = ay[bi]
        px = ax[bi]
        comp[py, px] += amp
        for i in range(na):
            dy = ay[i] - py
            dx = ax[i] - px
            if -hy <= dy < patch.shape[0] - hy and -hx <= dx < patch.shape[1] - hx:
                vals[i] -= amp * patch[dy + hy, dx + hx]
        n += 1
    return n


@njit(**JIT_OPTIONS)
def _multiscale_kernel(rs, bab, kerns, peaks, bias, model, mask, gain, stop, niter):
    """Cornwell (2008) multiscale CLEAN.

    rs : (S, ny, nx) residual smoothed by each scale kernel.
    bab : (S, S, ny, nx) PSF smoothed by kernels a and b (peak at centre).
    kerns : (S, ny, nx) scale kernels (unit sum, centred).
    peaks : (S,) bab[a, a] at the centre (normalises the component amplitude).
    bias : (S,) scale weights (<= 1) applied to the peak search.
    Stop when the point-scale residual peak (rs[0] is the unsmoothed residual when scale 0 is
    present) falls to ``stop``.
    """
    ns = rs.shape[0]
    n = 0
    while n < niter:
        by = -1
        bx = -1
        bs = -1
        best = -1.0
        for s in range(ns):
            py, px, val = _peak(rs[s], mask)
            if py >= 0 and bias[s] * abs(val) > best:
                best = bias[s] * abs(val)
                by = py
                bx = px
                bs = s
        if bs < 0:
            break
        _, _, v0 = _peak(rs[0], mask)
        if abs(v0) <= stop and abs(rs[bs][by, bx]) <= stop:
            break
        amp = gain * rs[bs][by, bx] / peaks[bs]
        _sub_shifted(model, kerns[bs], -amp, by, bx)
        for t in range(ns):
            _sub_shifted(rs[t], bab[bs, t], amp, by, bx)
        n += 1
    return n


# ----------------------------------------------------------------------------- wrappers


def _fft_conv(a, k):
    """Linear convolution of image ``a`` with a centred kernel ``k`` of the same shape."""
    from scipy.signal import fftconvolve

    # "same" would centre an even-sized kernel half a pixel off: cut the full result so
    # k[ky // 2, kx // 2] maps a[p] onto p exactly
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    full = fftconvolve(a, k, mode="full")
    return full[cy : cy + a.shape[0], cx : cx + a.shape[1]]


def hogbom_minor(residual, psf, model, mask, *, gain, stop, niter):
    """Hogbom CLEAN until the peak |residual| in ``mask`` is <= ``stop`` or ``niter``.

    Parameters
    ----------
    residual : ndarray (npix_y, npix_x) float64, Jy/beam; updated in place.
    psf : ndarray (npix_y, npix_x) float64, peak 1 at the centre.
    model : ndarray (npix_y, npix_x) float64, Jy/pixel; updated in place.
    mask : ndarray (npix_y, npix_x) bool; where components may go.
    gain : float, loop gain.
    stop : float, Jy/beam.
    niter : int, most components to add.

    Returns
    -------
    int : components added.
    """
    return int(
        _hogbom_kernel(
            residual, psf, model, mask.astype(np.uint8), float(gain), float(stop), int(niter)
        )
    )


def psf_sidelobe_outside(psf, half):
    """Largest |psf| outside the central ``(2 half + 1)^2`` patch (Clark's selection level)."""
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    a = np.abs(psf).copy()
    a[max(0, cy - half) : cy + half + 1, max(0, cx - half) : cx + half + 1] = 0.0
    return float(a.max())


def clark_minor(residual, psf, model, mask, *, gain, stop, niter, patch_half=32):
    """Clark CLEAN: Hogbom on the active pixels with a PSF patch, then subtract the new
    components from the whole residual with the full PSF (FFT convolution); repeat.

    Parameters as ``hogbom_minor``; ``patch_half``: half-width of the PSF patch, pixels.
    Active pixels are those with |residual| above max(stop, peak * largest sidelobe outside
    the patch): below that level the patch approximation could pick a wrong component. Each
    pass cleans the active set down to half the peak only, so the sidelobes the patch leaves
    out (at most that fraction of the flux cleaned in the pass) cannot build up.
    """
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    h = int(min(patch_half, cy, cx))
    patch = np.ascontiguousarray(psf[cy - h : cy + h + 1, cx - h : cx + h + 1])
    side = psf_sidelobe_outside(psf, h)
    done = 0
    while done < niter:
        r = np.where(mask, np.abs(residual), 0.0)
        peak = float(r.max())
        if peak <= stop:
            break
        level = max(stop, side * peak)
        ay, ax = np.nonzero(r > level)
        if ay.size == 0:
            break
        comp = np.zeros_like(model)
        n = int(
            _clark_active_kernel(
                residual,
                patch,
                comp,
                ay.astype(np.int64),
                ax.astype(np.int64),
                float(gain),
                float(max(level, 0.5 * peak)),
                int(niter - done),
            )
        )
        if n == 0:
            # the active set cannot go lower: one plain Hogbom step keeps progress exact
            n = hogbom_minor(residual, psf, model, mask, gain=gain, stop=stop, niter=1)
            done += n
            if n == 0:
                break
            continue
        model += comp

        # the full residual update (Clark's "major" step inside the minor cycle)
        residual -= _fft_conv(comp, psf)
        done += n
    return done


def scale_kernels(scales_pix, shape):
    """Unit-sum, centred scale kernels (S, ny, nx): scale 0 is a delta; scale s > 0 is
    Cornwell's tapered paraboloid of radius s/2... here a Gaussian with FWHM ``s`` pixels
    cut at 3 FWHM (smooth in uv, so the cross PSFs stay compact)."""
    ny, nx = shape
    cy, cx = ny // 2, nx // 2
    y, x = np.mgrid[0:ny, 0:nx]
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    out = np.zeros((len(scales_pix), ny, nx))
    for i, s in enumerate(scales_pix):
        if s <= 0:
            out[i, cy, cx] = 1.0
        else:
            sig = s / (2.0 * np.sqrt(2.0 * np.log(2.0)))
            k = np.exp(-0.5 * r2 / sig**2)
            k[r2 > (1.5 * s) ** 2] = 0.0
            out[i] = k / k.sum()
    return out


def multiscale_minor(residual, psf, model, mask, *, scales_pix, scale_bias, gain, stop, niter):
    """Multiscale CLEAN (Cornwell 2008) on the scales ``scales_pix`` (pixels, 0 = point).

    Scale ``s`` is searched with weight ``1 - scale_bias * s / max(scales)`` (Cornwell's
    bias toward small scales). Returns the number of components; ``residual`` and ``model``
    are updated in place.
    """
    scales = sorted(set(int(s) for s in scales_pix))
    if scales[0] != 0:
        scales = [0, *scales]
    kerns = scale_kernels(scales, residual.shape)
    ns = len(scales)
    rs = np.empty((ns, *residual.shape))
    for a in range(ns):
        rs[a] = residual if scales[a] == 0 else _fft_conv(residual, kerns[a])
    bab = np.empty((ns, ns, *residual.shape))
    ka_psf = [psf if scales[a] == 0 else _fft_conv(psf, kerns[a]) for a in range(ns)]
    for a in range(ns):
        for b in range(a, ns):
            bab[a, b] = ka_psf[a] if scales[b] == 0 else _fft_conv(ka_psf[a], kerns[b])
            bab[b, a] = bab[a, b]
    cy, cx = residual.shape[0] // 2, residual.shape[1] // 2
    peaks = np.array([bab[a, a, cy, cx] for a in range(ns)])
    smax = max(scales) or 1
    bias = np.array([1.0 - scale_bias * s / smax for s in scales])
    n = int(
        _multiscale_kernel(
            rs,
            bab,
            kerns,
            peaks,
            bias,
            model,
            mask.astype(np.uint8),
            float(gain),
            float(stop),
            int(niter),
        )
    )
    residual[...] = rs[0]
    return n
