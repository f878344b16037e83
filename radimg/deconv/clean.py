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
from numba import config, njit, prange, set_num_threads

from radimg.deconv.image import SpectralConv
from radimg.kernels._jit import JIT_OPTIONS, PARALLEL_JIT_OPTIONS

__all__ = [
    "clark_minor",
    "hogbom_minor",
    "hogbom_minor_plain",
    "multiscale_minor",
    "psf_sidelobe_outside",
    "scale_kernels",
]


_KERNEL_CUT = 1.5  # scale kernels are cut at this many FWHM from their centre
# hogbom_minor subtracts a pass's components one shifted PSF at a time up to this many
# pixels, by FFT above. Measured on 2 threads (SpectralConv.subtract_from against
# _sub_shifted_many): 512^2 FFT 1.5 ms, a shifted PSF 0.09-0.2 ms; 1024^2 9.6 ms against
# 0.33-0.48 ms; 2048^2 40 ms against 1.3-3.9 ms: even at ~16-30 components
_DIRECT_SUBTRACT_MAX = 24
# hogbom_minor: each active-set pass cleans down to this fraction of its starting peak
PASS_FRACTION = 0.5
# hogbom_minor: fewest active pixels per thread of a sweep. Starting a parallel region costs
# ~0.1 ms with numba's workqueue layer (radimg's: kernels/gridder.py) on the 2-core dev
# machine, against ~2-10 ns a pixel of sweep: measured per component, 1 vs 2 threads, 11 k
# active pixels 111 vs 228 us, 117 k 816 vs 990 us, 301 k 1553 vs 1336 us. The real MWA
# 1024^2 CLEAN (11-23 k active pixels) sweeps on one thread: 45-58 -> ~17 ms for its 383
# component pass.
_SWEEP_CHUNK_MIN = 150_000

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


@njit(**PARALLEL_JIT_OPTIONS)
def _sub_shifted_many(img, kern, amps, pys, pxs):
    """``_sub_shifted`` of every component ``k`` (``amps[k]`` at ``(pys[k], pxs[k])``), the
    image's rows in parallel: each pixel gets the components' products in ``k`` order, as
    one ``_sub_shifted`` call per component in that order gives it (the same bits)."""
    ny, nx = img.shape
    ky, kx = kern.shape
    cy = ky // 2
    cx = kx // 2
    for y in prange(ny):
        for k in range(amps.size):
            yy = y - pys[k] + cy
            if yy < 0 or yy >= ky:
                continue
            px = pxs[k]
            x0 = max(0, px - cx)
            x1 = min(nx, px - cx + kx)
            amp = amps[k]
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


@njit(inline="always", **JIT_OPTIONS)
def _sweep(vals, ay, ax, psf, amp, oy, ox, lo, hi):
    """Active pixels ``lo .. hi``: subtract ``amp`` times the PSF shifted by ``(oy, ox)``
    (``psf[ay - oy, ax - ox]`` where inside it) and return their new peak ``(|value|,
    index)``, the first of equal peaks (-1.0, -1 for none)."""
    ky, kx = psf.shape
    best = -1.0
    bi = -1
    for i in range(lo, hi):
        yy = ay[i] - oy
        xx = ax[i] - ox
        if 0 <= yy < ky and 0 <= xx < kx:
            vals[i] -= amp * psf[yy, xx]
        a = abs(vals[i])
        if a > best:
            best = a
            bi = i
    return best, bi


@njit(**PARALLEL_JIT_OPTIONS)
def _active_hogbom_kernel(vals, ay, ax, psf, model, comp, hits, gain, stop, niter, nchunk):
    """Hogbom on the active pixels ``(ay[i], ax[i])`` only, with the exact (whole) PSF.

    ``vals`` (the residual at the active pixels) is updated in place exactly as the plain
    loop (``_hogbom_kernel``) updates those pixels of the image: the same products in the
    same order, and the peak chosen among them in row-major order with the same tie rule,
    so while no pixel outside the set rises above ``stop`` the components are bitwise the
    plain loop's. Components go to ``model`` and to ``comp`` (for the caller's one FFT
    update of the whole residual), their active indices to ``hits``. Returns the number of
    components. Each sweep (subtract, find the next peak) runs over ``nchunk`` contiguous
    chunks in parallel, the chunks' peaks combined in chunk order (the first of equal
    peaks wins, as in one serial sweep).
    """
    na = vals.size
    cy = psf.shape[0] // 2
    cx = psf.shape[1] // 2
    best = -1.0
    bi = -1
    for i in range(na):
        a = abs(vals[i])
        if a > best:
            best = a
            bi = i
    cbest = np.empty(nchunk)
    cidx = np.empty(nchunk, dtype=np.int64)
    n = 0
    while n < niter:
        if bi < 0 or best <= stop:
            break
        amp = gain * vals[bi]
        py = ay[bi]
        px = ax[bi]
        model[py, px] += amp
        comp[py, px] += amp
        hits[n] = bi
        n += 1
        # subtract the shifted PSF at every active pixel and find the next peak in the
        # same pass (one sweep of the set per component)
        if nchunk == 1:  # no parallel region: starting one costs ~0.1 ms (workqueue)
            best, bi = _sweep(vals, ay, ax, psf, amp, py - cy, px - cx, 0, na)
            continue
        for c in prange(nchunk):
            cbest[c], cidx[c] = _sweep(vals, ay, ax, psf, amp, py - cy, px - cx,
                                       c * na // nchunk, (c + 1) * na // nchunk)
        best = -1.0
        bi = -1
        for c in range(nchunk):
            if cbest[c] > best:
                best = cbest[c]
                bi = cidx[c]
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
def _subminor_kernel(img, psf2, comp, mask, norm, gain, stop, niter):
    """Hogbom on one scale: components (amplitude ``gain * img[p] / norm``) go to comp[p]
    and ``amp * psf2`` shifted to p is subtracted from ``img``; stop at |peak| <= stop, or
    when the peak rises to twice where it started (a runaway: ``psf2`` is cut to the image,
    so it is not exactly positive definite)."""
    n = 0
    start = -1.0
    while n < niter:
        py, px, val = _peak(img, mask)
        if py < 0 or abs(val) <= stop:
            break
        if start < 0.0:
            start = abs(val)
        elif abs(val) > 2.0 * start:
            break
        amp = gain * val / norm
        comp[py, px] += amp
        _sub_shifted(img, psf2, amp, py, px)
        n += 1
    return n


# ----------------------------------------------------------------------------- wrappers


def hogbom_minor(residual, psf, model, mask, *, gain, stop, niter, psf_conv=None,
                 threads=None):
    """Hogbom CLEAN until the peak |residual| in ``mask`` is <= ``stop`` or ``niter``.

    Only pixels above ``stop`` can become components, so each pass runs the Hogbom loop on
    those pixels alone (the "active set", as WSClean's sub-minor loop) with the exact PSF,
    down to ``max(stop, PASS_FRACTION * its starting peak)``, then subtracts the pass's
    components from the whole residual (one FFT convolution, or shifted PSFs for a few)
    and selects again. A pixel outside the set (below ``stop`` when the pass began, e.g. a
    source hidden under a sidelobe of a brighter one) rises as the pass cleans; ending
    each pass at a fraction of its peak lets it join the next pass before the loop runs
    below it, instead of cleaning its sidelobes as sources (a single pass, WSClean's way,
    put -0.02 Jy components on the sidelobes of a hidden 0.4 Jy source in the test). The
    components are the plain loop's, in the same order, whenever no pixel outside a pass's
    set rises above the pass's current peak. Cost: (components x active pixels) plus an
    update per pass, instead of (components x image pixels) x 2 (real MWA 1024^2, 786
    components: 0.68 -> 0.18 s of CPU). ``tests/test_deconv.py`` compares it with the plain
    loop (``hogbom_minor_plain``).

    Parameters
    ----------
    residual : ndarray (npix_y, npix_x) float64, Jy/beam; updated in place.
    psf : ndarray (npix_y, npix_x) float64, peak 1 at the centre.
    model : ndarray (npix_y, npix_x) float64, Jy/pixel; updated in place.
    mask : ndarray (npix_y, npix_x) bool; where components may go.
    gain : float, loop gain.
    stop : float, Jy/beam.
    niter : int, most components to add.
    psf_conv : SpectralConv or None
        Convolution with ``psf`` (its spectrum made once); the major loop passes one so
        the PSF's FFT is not redone every minor cycle. None: made here when needed.
    threads : int or None
        Threads of the active-set sweeps (default: ``psf_conv``'s FFT threads, else 1).

    Returns
    -------
    int : components added.
    """
    mask = np.asarray(mask, bool)
    psf = np.ascontiguousarray(psf, dtype=np.float64)
    if threads is None:
        threads = psf_conv.nthreads if psf_conv is not None else 1
    done = 0
    while done < niter:
        active = np.abs(residual) > stop
        active &= mask
        ay, ax = np.nonzero(active)
        if ay.size == 0:
            break
        vals = residual[ay, ax]
        floor = max(stop, PASS_FRACTION * float(np.abs(vals).max()))
        comp = np.zeros_like(model)
        hits = np.empty(int(niter - done), dtype=np.int64)
        nchunk = max(1, min(threads, ay.size // _SWEEP_CHUNK_MIN))
        set_num_threads(max(1, min(threads, config.NUMBA_NUM_THREADS)))
        n = int(
            _active_hogbom_kernel(vals, ay, ax, psf, model, comp, hits, float(gain),
                                  float(floor), int(niter - done), nchunk)
        )
        if n == 0:
            break
        done += n
        # the components' pixels in row-major order (the active set's order), as
        # np.nonzero(comp) gives them, without a pass over the image
        u = np.unique(hits[:n])
        cy, cx = ay[u], ax[u]
        if cy.size <= _DIRECT_SUBTRACT_MAX:
            # a few components (the later passes): shifted PSFs beat two FFTs
            _sub_shifted_many(residual, psf, comp[cy, cx], cy, cx)
        else:
            if psf_conv is None:
                psf_conv = SpectralConv(residual.shape, [psf])
            psf_conv.subtract_from(residual, comp)
        residual[ay, ax] = vals  # the active pixels exactly as the loop left them
    return done


def hogbom_minor_plain(residual, psf, model, mask, *, gain, stop, niter):
    """The plain Hogbom loop (every component: peak search and PSF subtraction over the
    whole image); ``hogbom_minor``'s oracle, and Clark's single-step fallback. Arguments
    and return as ``hogbom_minor``."""
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
    conv_psf = None  # PSF spectrum, made at the first full-residual update
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
            n = hogbom_minor_plain(residual, psf, model, mask, gain=gain, stop=stop, niter=1)
            done += n
            if n == 0:
                break
            continue
        model += comp

        # the full residual update (Clark's "major" step inside the minor cycle)
        if conv_psf is None:
            conv_psf = SpectralConv(residual.shape, [psf])
        conv_psf.subtract_from(residual, comp)
        done += n
    return done


def scale_kernels(scales_pix, shape):
    """Unit-sum, centred scale kernels (S, ny, nx): scale 0 is a delta; scale s > 0 is
    a Gaussian with FWHM ``s`` pixels (instead of Cornwell's tapered paraboloid) cut at a
    radius of ``_KERNEL_CUT`` FWHM (smooth in uv, so the cross PSFs stay compact)."""
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
            k[r2 > (_KERNEL_CUT * s) ** 2] = 0.0
            out[i] = k / k.sum()
    return out


def multiscale_minor(
    residual,
    psf,
    model,
    mask,
    *,
    scales_pix,
    scale_bias,
    gain,
    stop,
    niter,
    subminor_gain=0.2,
):
    """Multiscale CLEAN (Cornwell 2008) on the scales ``scales_pix`` (pixels, 0 = point).

    Kernels ``K_a`` have unit sum (``scale_kernels``), so a component of amplitude ``A`` at
    scale ``a`` adds flux ``A`` to the model. With ``I_a = K_a * R`` (R the residual) and
    ``B_a = K_a * B`` (B the PSF), one pass is:

    1. find the peak of ``bias_a * |I_a| / B_a(0)`` over scales and pixels, where
       ``bias_a = 1 - scale_bias * s_a / max(s)``. ``I_a(p) / B_a(0)`` is the flux a point
       source at ``p`` would have, so a point source scores the same on every scale and the
       bias (<= 1) sends it to scale 0; an extended source scores higher on the scale that
       matches it.
    2. sub-minor loop on the chosen scale only: Hogbom on ``I_a`` with the doubly convolved
       PSF ``B_aa = K_a * K_a * B``, component amplitude ``gain * I_a(p) / B_aa(0)`` (each
       step removes the fraction ``gain`` of the peak of ``I_a``: exact for a source shaped
       like ``K_a``; it would overestimate a point source by ``B_a(0) / B_aa(0)``, which is
       why step 1 scores point flux and the bias keeps points on scale 0). It stops at
       ``(1 - subminor_gain)`` of its start peak.
    3. the new components, convolved with ``K_a``, are added to the model and subtracted from
       ``R`` by an FFT convolution with the PSF, so ``R`` stays exactly ``dirty - B * model``
       (no drift of per-scale images and no edge inconsistency) and step 1 restarts from
       freshly convolved ``I_a``.

    Stops when the biased peak is <= ``stop`` (which bounds |R| too, as scale 0 has bias 1)
    or after ``niter`` components. Guards: scale-s components stay a kernel radius inside
    the image, scales whose kernel is wider than half the image are left out, and a pass
    after which the biased peak exceeds 1.5 x the lowest seen is undone (its scale dropped;
    at scale 0 the minor cycle ends): PSF and ``B_aa`` are cut to the image, so far off
    centre they are not exact and CLEAN could run away. Returns the number of components; ``residual`` and
    ``model`` are updated in place.

    Long because it is one numerical recipe that reads best in sequence: the set-up of the
    per-scale kernels and PSFs, then steps 1-3 above in order inside one loop whose guards
    share its state (lowest peak seen, scales dropped); the numba inner loops are already
    separate kernels.
    """
    scales = sorted(set(int(s) for s in scales_pix) | {0})
    shape = residual.shape
    cy, cx = shape[0] // 2, shape[1] // 2
    kerns = scale_kernels(scales, shape)
    # kernels cropped to their support: the FFTs are N + kernel, not 2N
    small = []
    for a, s in enumerate(scales):
        b = int(np.ceil(_KERNEL_CUT * s))
        small.append(np.ascontiguousarray(kerns[a][cy - b : cy + b + 1, cx - b : cx + b + 1]))
    conv_k = SpectralConv(shape, small)
    conv_psf = SpectralConv(shape, [psf])
    kpsf = [psf if s == 0 else conv_k(psf, a) for a, s in enumerate(scales)]
    peak_a = np.array([float(k[cy, cx]) for k in kpsf])  # B_a(0)
    psf2 = {}  # B_aa, made when a scale is first chosen
    smax = max(scales) or 1
    bias = np.array([1.0 - scale_bias * s / smax for s in scales])
    # a scale-s component must lie a kernel radius inside the image (as WSClean's scale
    # border): near the edge K_a * R is cut and B_aa no longer predicts how a component
    # changes it, and the sub-minor loop would chase that mismatch
    masks = []
    for s in scales:
        m = mask.astype(np.uint8)
        b = int(np.ceil(_KERNEL_CUT * s))
        if b > 0:
            m[:b] = 0
            m[-b:] = 0
            m[:, :b] = 0
            m[:, -b:] = 0
        masks.append(m)
    # a kernel wider than half the image cannot be cleaned: K_a * R and B_aa are then mostly
    # edge effects (and the loop runs away); such scales are left out
    active = [
        bias[a] > 0.0 and 2 * int(np.ceil(_KERNEL_CUT * s)) < min(shape) / 2
        for a, s in enumerate(scales)
    ]
    done = 0
    last = None  # (scale, model, residual, components) before the last pass
    floor = np.inf  # lowest biased peak so far
    while done < niter:
        best, ba, imgs = -1.0, -1, {}
        spec = conv_k.spectrum(residual)  # one forward FFT serves every scale
        for a, s in enumerate(scales):
            if not active[a]:
                continue
            img = residual.copy() if s == 0 else conv_k.apply(spec, a)
            py, _, val = _peak(img, masks[a])
            if py < 0:
                continue
            score = bias[a] * abs(val) / peak_a[a]
            imgs[a] = img
            if score > best:
                best, ba = score, a
        if last is not None and best > 1.5 * floor:
            # runaway after the last pass (B_aa and the PSF are cut to the image, so they
            # mispredict how components far off centre change K_a * R): undo that pass and
            # leave its scale out; at scale 0 this minor cycle ends (the major cycle goes on)
            a, m0, r0, n0 = last
            model[...] = m0
            residual[...] = r0
            done -= n0
            last = None
            if scales[a] == 0:
                break
            active[a] = False
            continue
        floor = min(floor, best)
        if ba < 0 or best <= stop:
            break
        if ba not in psf2:
            psf2[ba] = kpsf[ba] if scales[ba] == 0 else conv_k(kpsf[ba], ba)
        # sub-minor threshold in units of I_a
        sub_stop = max(stop, (1.0 - subminor_gain) * best) * peak_a[ba] / bias[ba]
        comp = np.zeros(shape)
        n = int(
            _subminor_kernel(
                imgs[ba],
                psf2[ba],
                comp,
                masks[ba],
                float(psf2[ba][cy, cx]),
                float(gain),
                float(sub_stop),
                int(niter - done),
            )
        )
        if n == 0:
            break
        last = (ba, model.copy(), residual.copy(), n)
        inc = comp if scales[ba] == 0 else conv_k(comp, ba)
        model += inc
        conv_psf.subtract_from(residual, inc)
        done += n
    return done
