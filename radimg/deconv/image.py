"""Image-plane helpers of deconvolution: robust noise, masks, restoring beam, restoration.

Pure array functions (no MPI). Images are ``(npix_y, npix_x)``, north up, east left
(docs/internals.md): x runs west, y runs north.
"""

from __future__ import annotations

import math
import os

import numpy as np

from radimg.constants import FWHM_PER_SIGMA

__all__ = [
    "BeamFitWarning",
    "auto_mask",
    "box_mask",
    "SpectralConv",
    "conv_centred",
    "fit_beam",
    "gaussian_beam_image",
    "load_mask",
    "mad_sigma",
    "restore",
]



def mad_sigma(image, mask=None):
    """Robust noise: 1.4826 * median(|x - median(x)|) over ``mask`` (all pixels if None)."""
    a = np.asarray(image, dtype=np.float64)
    if mask is not None:
        a = a[np.asarray(mask, bool)]
    if a.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def box_mask(shape, boxes):
    """Boolean mask that is True inside the pixel boxes ``[x0, y0, x1, y1]`` (inclusive,
    0-based, x = column, y = row); all True if ``boxes`` is empty."""
    if not boxes:
        return np.ones(shape, bool)
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, min(y0, y1)) : max(y0, y1) + 1, max(0, min(x0, x1)) : max(x0, x1) + 1] = True
    return m


def load_mask(path, shape):
    """A clean mask from a FITS image or an HDF5 file (nonzero = clean here).

    FITS: the primary HDU's data, degenerate axes squeezed (WSClean/CASA masks work).
    HDF5: dataset ``mask``, else ``/images/mask``, else the first 2-D dataset found.
    The array must have ``shape`` = (npix_y, npix_x) in radimg's orientation (same as
    the FITS images radimg and WSClean write).

    Raises
    ------
    ValueError
        Unreadable file, no 2-D array, or the wrong shape.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ValueError(f"deconvolution.mask_path: file not found: {p}")
    low = p.lower()
    try:
        if low.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            from astropy.io import fits

            with fits.open(p) as h:
                data = np.asarray(h[0].data)
        else:
            import h5py

            with h5py.File(p, "r") as f:
                data = None
                for name in ("mask", "images/mask"):
                    if name in f:
                        data = f[name][()]
                        break
                if data is None:
                    found = []
                    f.visititems(
                        lambda n, o: (
                            found.append(n) if isinstance(o, h5py.Dataset) and o.ndim >= 2 else None
                        )
                    )
                    if not found:
                        raise ValueError("no 2-D dataset")
                    data = f[found[0]][()]
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"deconvolution.mask_path: cannot read {p}: {exc}") from None
    data = np.squeeze(np.asarray(data))
    if data.shape != tuple(shape):
        raise ValueError(
            f"deconvolution.mask_path: {p} holds a {data.shape} array; the image is {tuple(shape)}"
        )
    return np.nan_to_num(data.astype(np.float64)) != 0


def auto_mask(model, grow_pix=1):
    """Auto-mask (WSClean ``-auto-mask`` style): the pixels that already hold components,
    grown by ``grow_pix`` pixels so a component may move by one pixel."""
    m = np.asarray(model) != 0
    if grow_pix > 0 and m.any():
        from scipy.ndimage import binary_dilation

        m = binary_dilation(m, iterations=int(grow_pix))
    return m


def _connected_to_centre(above, cy, cx):
    """Pixels 4-connected to (cy, cx) through ``above``, grown one ring per pass (numpy)."""
    out = np.zeros_like(above)
    out[cy, cx] = above[cy, cx]
    while True:
        g = out.copy()
        g[1:] |= out[:-1]
        g[:-1] |= out[1:]
        g[:, 1:] |= out[:, :-1]
        g[:, :-1] |= out[:, 1:]
        g &= above
        if np.array_equal(g, out):
            return out
        out = g


def _main_lobe(psf, level=0.35):
    """Pixels of the PSF main lobe: above ``level`` of the peak and connected to the centre
    (CASA's ``psfcutoff`` 0.35 convention). Searched in a window around the centre that
    doubles while the lobe touches its edge (no full-image labelling)."""
    ny, nx = psf.shape
    cy, cx = ny // 2, nx // 2
    h = 16
    while True:
        y0, y1 = max(0, cy - h), min(ny, cy + h + 1)
        x0, x1 = max(0, cx - h), min(nx, cx + h + 1)
        win = psf[y0:y1, x0:x1]
        above = (win > level * psf[cy, cx]) & np.isfinite(win)  # an Inf pixel is no lobe
        lobe = _connected_to_centre(above, cy - y0, cx - x0)
        whole = y0 == 0 and x0 == 0 and y1 == ny and x1 == nx
        touches = lobe[0].any() or lobe[-1].any() or lobe[:, 0].any() or lobe[:, -1].any()
        if whole or not touches:
            out = np.zeros(psf.shape, bool)
            out[y0:y1, x0:x1] = lobe
            return out
        h *= 2


#: CASA's ``psfcutoff``: the main lobe is the pixels above this fraction of the PSF peak that
#: connect to the centre.
LOBE_LEVEL = 0.35

#: Smallest Gaussian sigma (pixels) the second-moment estimate may return: at 0.2 px a sampled
#: Gaussian's nearest neighbours are 4e-6 of its peak, below any PSF's sidelobes.
MIN_SIGMA_PIX = 0.2

#: Moments are taken on at most this many pixels along either axis of the lobe's box (a
#: sub-lattice of pixels: the model is sampled on the same pixels, so the match stays exact).
_MOMENT_BOX = 128


class BeamFitWarning(UserWarning):
    """The least-squares beam fit failed and the second-moment estimate was used."""


def _fit_centred_gaussian(dx, dy, val, p0, iters=100):
    """Least squares of ``exp(-0.5 (a dx^2 + b dy^2 + 2 c dx dy)) - val`` over (a, b, c) by
    Levenberg-Marquardt (3 parameters: numpy is enough, and scipy.optimize would cost a
    second of import time in every run).

    Returns ``(p, converged)``; ``converged`` is false when ``iters`` ran out first. Raises
    ``numpy.linalg.LinAlgError`` when the normal equations are singular (lobe pixels that do
    not determine all three parameters: a "+" of 5 pixels has ``dx dy = 0`` everywhere).
    """
    basis = np.stack([dx * dx, dy * dy, 2.0 * dx * dy], axis=1)

    def resid(p):
        g = np.exp(-0.5 * (basis @ p))
        return g - val, g

    p = np.asarray(p0, dtype=np.float64)
    r, g = resid(p)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(iters):
        jac = -0.5 * g[:, None] * basis
        jtj = jac.T @ jac
        jtr = jac.T @ r
        step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj)), -jtr)
        pn = p + step
        rn, gn = resid(pn)
        cn = float(rn @ rn)
        if cn < cost:
            small = np.abs(step).max() <= 1e-12 * max(np.abs(pn).max(), 1e-300)
            p, r, g, cost, lam = pn, rn, gn, cn, lam * 0.3
            if small or cost == 0.0:
                return p, True
        else:
            lam *= 10.0
            if lam > 1e12:  # no step lowers the cost: a minimum to rounding
                return p, True
    return p, False


def _cov_from_axes(s1, s2, theta):
    """Covariance (x, y pixels) of a Gaussian with sigmas ``s1``, ``s2`` along the directions
    at ``theta`` and ``theta + 90 deg`` from +x."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([s1 * s1, s2 * s2]) @ rot.T


def _window_moments(dx, dy, val):
    """Value-weighted second moments ``(<dx^2>, <dy^2>, <dx dy>)`` (pixels^2)."""
    s = val.sum()
    return np.array([val @ (dx * dx), val @ (dy * dy), val @ (dx * dy)]) / s


def _moment_pixels(psf, lobe, cy, cx):
    """Pixels for the second-moment estimate: the main lobe and the 3 x 3 pixels around the
    centre. The lobe alone leaves a one-pixel lobe without any width and a "+" of five pixels
    without the ``dx dy`` term; the centre's diagonal neighbours supply both. A wider ring
    would not: on the real MWA PSF at 2' it holds the dense core's pedestal (0.1-0.25 of the
    peak) and widened the beam by over 40%. Large lobes are taken on a sub-lattice through the
    centre (the model is sampled on the same pixels, so the match stays exact).

    Returns ``dx, dy, val`` (float64, pixels from the centre; values clipped at 0)."""
    sel = lobe.copy()
    sel[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2] = True
    ys, xs = np.nonzero(sel)
    stride = max(1, -(-int(max(np.ptp(ys), np.ptp(xs)) + 1) // _MOMENT_BOX))
    if stride > 1:  # the sub-lattice through the centre pixel
        keep = ((ys - cy) % stride == 0) & ((xs - cx) % stride == 0)
        ys, xs = ys[keep], xs[keep]
    val = psf[ys, xs].astype(np.float64) / float(psf[cy, cx])
    val = np.where(np.isfinite(val), np.clip(val, 0.0, None), 0.0)
    return (xs - cx).astype(np.float64), (ys - cy).astype(np.float64), val


def _bounded_lm(resid, q0, lo, hi, iters=200):
    """Levenberg-Marquardt on a few parameters with box bounds (steps clipped into the box)
    and a forward-difference Jacobian; numpy only (scipy.optimize costs 1.4 s to import).
    Returns ``(q, cost)`` with ``cost = |resid(q)|^2``, the best point found."""
    q = np.clip(np.asarray(q0, dtype=np.float64), lo, hi)
    r = resid(q)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(iters):
        if cost < 1e-28:
            break
        h = 1e-7 * (1.0 + np.abs(q))
        jac = np.empty((r.size, q.size))
        for k in range(q.size):
            qk = q.copy()
            qk[k] += h[k]
            jac[:, k] = (resid(qk) - r) / h[k]
        jtj = jac.T @ jac
        try:
            step = np.linalg.lstsq(
                jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jac.T @ r, rcond=None
            )[0]
        except np.linalg.LinAlgError:
            break
        qn = np.clip(q + step, lo, hi)
        rn = resid(qn)
        cn = float(rn @ rn)
        if cn < cost:
            done = np.abs(qn - q).max() <= 1e-13 * (1.0 + np.abs(q).max())
            q, r, cost, lam = qn, rn, cn, lam * 0.3
            if done:
                break
        else:
            lam *= 10.0
            if lam > 1e12:
                break
    return q, cost


def _moment_beam(dx, dy, val, max_sigma):
    """Covariance (pixels^2) of the peak-1 Gaussian whose value-weighted second moments on
    the pixels ``(dx, dy)`` equal those of ``val`` there.

    Raw moments of a lobe cut at 0.35 of the peak and sampled on pixels underestimate the
    width (a continuous Gaussian cut at 0.35 keeps 0.43 of its variance; a lobe one pixel
    across keeps almost none), so the Gaussian is sampled on the same pixels and its moments
    matched: exact for a sampled Gaussian of any width, and for any other lobe the Gaussian
    of the same second moments on those pixels. Sigmas are bounded to
    [``MIN_SIGMA_PIX``, ``max_sigma``], so the result is always a valid beam. (Not by the
    extent of the pixels: an elongated lobe one pixel wide breaks up on the pixel grid, and a
    sigma-12 px Gaussian left a lobe of 13 pixels.)

    Returns
    -------
    cov : ndarray (2, 2) float64, in (x, y) pixels.
    converged : bool
    """
    target = _window_moments(dx, dy, val)
    lo, hi = math.log(MIN_SIGMA_PIX), math.log(max(max_sigma, 2.0 * MIN_SIGMA_PIX))
    eps = 1e-12
    tx, ty = max(target[0], 0.0), max(target[1], 0.0)
    norm = math.sqrt(max(tx * ty, eps))

    def model(q):
        cov = _cov_from_axes(math.exp(q[0]), math.exp(q[1]), q[2])
        inv = np.linalg.inv(cov)  # an SPD 2 x 2 with bounded sigmas: never singular
        g = np.exp(-0.5 * (inv[0, 0] * dx * dx + inv[1, 1] * dy * dy + 2 * inv[0, 1] * dx * dy))
        return _window_moments(dx, dy, g)

    def resid(q):
        m = model(q)
        # log of the variances: the moments of an undersampled lobe span decades
        return np.array(
            [
                math.log((max(m[0], 0.0) + eps) / (tx + eps)),
                math.log((max(m[1], 0.0) + eps) / (ty + eps)),
                (m[2] - target[2]) / norm,
            ]
        )

    # start: the raw moments widened by the continuous cut-at-0.35 factor
    evals, evecs = np.linalg.eigh(np.array([[tx, target[2]], [target[2], ty]]))
    start = np.sqrt(np.clip(evals / 0.43, MIN_SIGMA_PIX**2 * 1.1, math.exp(2 * hi) * 0.9))
    theta0 = math.atan2(evecs[1, 0], evecs[0, 0])
    q0 = np.clip(
        [math.log(start[0]), math.log(start[1]), theta0], [lo, lo, -np.inf], [hi, hi, np.inf]
    )
    q, cost = _bounded_lm(resid, q0, np.array([lo, lo, -np.inf]), np.array([hi, hi, np.inf]))
    ok = math.sqrt(cost) < 1e-3 and max(q[0], q[1]) < hi - 1e-6
    return _cov_from_axes(math.exp(q[0]), math.exp(q[1]), q[2]), ok


def _area_beam(lobe, cy, cx):
    """Covariance (pixels^2) from the lobe's area moments: a Gaussian cut at ``LOBE_LEVEL``
    leaves an ellipse of semi-axes ``sigma sqrt(2 ln(1/level))``, whose area moments are a
    quarter of the squared semi-axes; each pixel adds its own 1/12. Coarse, but it needs only
    the lobe's outline: it serves a lobe that no Gaussian's moments match (flat-topped)."""
    ys, xs = np.nonzero(lobe)
    d = np.stack([(xs - cx).astype(np.float64), (ys - cy).astype(np.float64)])
    m = d @ d.T / d.shape[1] + np.eye(2) / 12.0
    return m / (0.5 * math.log(1.0 / LOBE_LEVEL))


def _beam_from_cov(cov, cell_deg):
    """(bmaj, bmin, bpa) in degrees from a covariance in (x, y) pixels (x west, y north)."""
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 1e-12, None)
    smaj, smin = math.sqrt(evals[1]), math.sqrt(evals[0])
    vx, vy = evecs[0, 1], evecs[1, 1]  # major-axis direction in (x, y) pixels
    # x runs west: east component is -vx; PA from north (+y) through east
    pa = math.degrees(math.atan2(-vx, vy))
    pa = (pa + 90.0) % 180.0 - 90.0
    return smaj * FWHM_PER_SIGMA * cell_deg, smin * FWHM_PER_SIGMA * cell_deg, pa


def _angle(deg):
    """An angle for a message: arcmin from 1', else arcsec."""
    return f"{deg * 60:.4g}'" if deg >= 1.0 / 60.0 else f'{deg * 3600:.4g}"'


def _no_lobe_error(psf, cy, cx, cell_deg):
    from radimg.config import ConfigError

    finite = np.isfinite(psf)
    what = (
        "has no finite pixel"
        if not finite.any()
        else "is zero everywhere"
        if not np.any(psf[finite])
        else f"has {psf[cy, cx]:.4g} at its centre pixel [{cy}, {cx}], not a positive peak"
    )
    return ConfigError(
        f"image.cell_arcsec: the PSF {what}, so it has no main lobe and no restoring beam "
        f'can be fitted (cell {cell_deg * 3600:.4g}"). Check that the selected data has '
        "unflagged samples with finite UVW and weights, and that image.cell_arcsec is at most "
        "a third of the synthesised beam"
    )


def fit_beam(psf, cell_deg, *, details=False):
    """Elliptical Gaussian fitted to the PSF main lobe (least squares, peak fixed at 1).

    The lobe is the pixels above 0.35 of the peak connected to the centre (CASA's
    ``psfcutoff``), so sidelobes and a broad pedestal (MWA's dense core) do not widen the
    beam. WSClean 3.1 fits a whole box instead, and in that version only the x >= 0, y >= 0
    quadrant of the box enters its model (unsigned index arithmetic): on the MWA benchmark PSF
    it reports 5.81' x 4.89' at 113.6 deg where the main lobe is 5.00' x 4.45' at -89.8 deg
    (``scripts/bench_deconv.py`` reproduces WSClean's figures from its own PSF).

    A real PSF need not suit a least-squares fit: at coarse cells the lobe is 1 to 5 pixels
    (pyuvdata's MWA snapshot at 2': a "+" of 5 pixels, whose normal equations are singular),
    and strong sidelobes or an elongated lobe can stall the fit or send it to a beam the lobe
    does not support (more than a factor 2 from the second moments). Then the beam comes
    from the second moments of the lobe and the centre's 3 x 3 neighbours, matched to a
    Gaussian sampled on the same pixels (exact for a sampled Gaussian of any width, 0.3 px
    sigma included; on the MWA PSF at 2' 7% and 9% wider than the least-squares lobe at 30"
    cells, where the centre's diagonal neighbours hold some of the dense core's pedestal),
    with a :class:`BeamFitWarning` that says why. Only a PSF without a lobe (no finite
    positive centre pixel: all zero, NaN) is an error.

    Parameters
    ----------
    psf : ndarray (npix_y, npix_x), float32 or float64; peak at ``[npix_y // 2, npix_x // 2]``
        (normalised to 1 there; non-finite pixels count as 0). Not copied.
    cell_deg : float, pixel size in degrees.
    details : bool, optional
        Also return a dict: ``method`` ("least squares" or "second moments"), ``lobe_pixels``,
        ``reason`` (why the fallback was taken; "" otherwise).

    Returns
    -------
    (bmaj_deg, bmin_deg, bpa_deg) : FWHM axes and position angle east of north, degrees
        (``-90 <= bpa < 90``); with ``details``, ``(beam, info)``.

    Raises
    ------
    radimg.config.ConfigError
        The PSF has no main lobe (its centre pixel is not finite and positive).

    Notes
    -----
    Long because this docstring holds the measured reasons for the lobe rule and the
    fallback (40 lines); the code is one recipe in sequence (lobe, least squares, checks,
    second-moment fallback), under 90 lines.
    """
    import warnings

    psf = np.asarray(psf)  # no copy: the PSF may be the size of the image
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    peak = float(psf[cy, cx])
    if not (np.isfinite(peak) and peak > 0):
        raise _no_lobe_error(psf, cy, cx, cell_deg)
    lobe = _main_lobe(psf, LOBE_LEVEL)  # relative to the centre; NaN pixels never enter
    n_lobe = int(lobe.sum())
    ys, xs = np.nonzero(lobe)
    dy = (ys - cy).astype(float)
    dx = (xs - cx).astype(float)
    val = psf[ys, xs].astype(np.float64) / peak

    mdx, mdy, mval = _moment_pixels(psf, lobe, cy, cx)
    # a beam wider than the image cannot be told from the image
    mcov, m_ok = _moment_beam(mdx, mdy, mval, max_sigma=float(max(psf.shape)))
    if not m_ok:  # no Gaussian matches the lobe's moments (flat top, ridge)
        mcov = _area_beam(lobe, cy, cx)
    reason = ""
    cov = None
    basis = np.stack([dx * dx, dy * dy, dx * dy], axis=1)
    if np.linalg.matrix_rank(basis) < 3:
        reason = (
            f"the main lobe ({n_lobe} pixel(s) above {LOBE_LEVEL} of the peak) does not "
            "determine an elliptical Gaussian: the least-squares fit is singular"
        )
    else:
        # start from the second-moment beam (the inverse covariance [[a, c], [c, b]])
        inv0 = np.linalg.inv(mcov)
        try:
            (a, b, c), converged = _fit_centred_gaussian(
                dx, dy, val, [inv0[0, 0], inv0[1, 1], inv0[0, 1]]
            )
        except np.linalg.LinAlgError:
            reason = f"the least-squares fit to the {n_lobe}-pixel main lobe is singular"
        else:
            det = a * b - c * c
            if not converged:
                reason = f"the least-squares fit to the {n_lobe}-pixel main lobe did not converge"
            elif not (np.isfinite([a, b, c]).all() and a > 0 and b > 0 and det > 0):
                reason = (
                    f"the least-squares fit to the {n_lobe}-pixel main lobe gave a non-physical "
                    f"Gaussian (inverse covariance a={a:.3g}, b={b:.3g}, c={c:.3g})"
                )
            else:
                cov = np.array([[b, -c], [-c, a]]) / det
                lsq = np.sqrt(np.linalg.eigvalsh(cov))
                mom = np.sqrt(np.linalg.eigvalsh(mcov))
                ratio = lsq / mom
                if not np.all((ratio > 0.5) & (ratio < 2.0)):
                    reason = (
                        f"the least-squares fit to the {n_lobe}-pixel main lobe gave sigmas "
                        f"{lsq[1]:.3g} x {lsq[0]:.3g} px, more than a factor 2 from the lobe's "
                        f"second moments ({mom[1]:.3g} x {mom[0]:.3g} px)"
                    )
                    cov = None
    if cov is None:
        cov = mcov
        beam = _beam_from_cov(cov, cell_deg)
        sig = np.sqrt(np.linalg.eigvalsh(cov))
        note = (
            ""
            if m_ok
            else " (no Gaussian has the lobe's value-weighted moments, as for a flat top, a "
            "ridge or a lone pixel: the beam is from the lobe's outline, an approximation)"
        )
        under = ""
        if sig[0] * FWHM_PER_SIGMA < 3.0:
            under = (
                f"; the beam is {sig[0] * FWHM_PER_SIGMA:.2g} pixels across its minor axis: "
                f"a cell of at most a third of it (image.cell_arcsec <= "
                f'{beam[1] * 3600 / 3:.3g}") samples the PSF properly'
            )
        warnings.warn(
            f"restoring beam: {reason}; using the main lobe's second moments instead: "
            f"{_angle(beam[0])} x {_angle(beam[1])} at {beam[2]:.1f} deg{note}{under}",
            BeamFitWarning,
            stacklevel=2,
        )
        method = "second moments"
    else:
        beam = _beam_from_cov(cov, cell_deg)
        method = "least squares"
    if details:
        return beam, {"method": method, "lobe_pixels": n_lobe, "reason": reason}
    return beam


def gaussian_beam_image(shape, beam_deg, cell_deg):
    """Peak-1 elliptical Gaussian (bmaj, bmin, bpa in degrees) centred at [ny//2, nx//2]."""
    bmaj, bmin, bpa = beam_deg
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    dx = (x - nx // 2).astype(float)
    dy = (y - ny // 2).astype(float)
    smaj = bmaj / cell_deg / FWHM_PER_SIGMA
    smin = bmin / cell_deg / FWHM_PER_SIGMA
    t = math.radians(bpa)
    # unit vectors of the major axis in (x, y) pixels: east = -x
    ux, uy = -math.sin(t), math.cos(t)
    pmaj = dx * ux + dy * uy
    pmin = -dx * uy + dy * ux
    return np.exp(-0.5 * ((pmaj / smaj) ** 2 + (pmin / smin) ** 2))


def _good_size(n):
    """Smallest 2^a 3^b 5^c >= n (fast FFT length; radimg.ops.fft.good_size's rule)."""
    from radimg.ops.fft import good_size

    return good_size(n, even=False, minimum=1)


def _conv_length(n, k):
    """Shortest cyclic length for ``conv_centred`` of an axis of ``n`` pixels with a kernel
    of ``k`` taps centred at ``k // 2``: ``n + max(k // 2, k - 1 - k // 2)``.

    The output ``y[p] = sum_i a[i] k[p + c - i]`` (``c = k // 2``, ``p`` in ``[0, n)``)
    reads kernel indices ``t = p + c - i`` in ``[c - n + 1, c + n - 1]``; with period ``M``
    every ``t`` outside ``[0, k)`` must land in the zero padding ``[k, M)``: ``M >= n + c``
    for ``t >= k`` and ``M >= n + k - 1 - c`` for ``t < 0``. Not the linear length
    ``n + k - 1``: for a PSF as large as a 1024^2 image, 1536 instead of 2048 (1.8x fewer
    points), exactly the same result.
    """
    c = k // 2
    return n + max(c, k - 1 - c)


def conv_centred(a, k):
    """Linear convolution of image ``a`` with a kernel ``k`` whose centre ``k[ky//2, kx//2]``
    maps ``a[p]`` onto ``p``; the result has ``a``'s shape (numpy real FFTs of a fast cyclic
    size that no wrapped term reaches, ``_conv_length``; no scipy.signal, whose import
    alone costs seconds)."""
    a = np.asarray(a, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    sy = _good_size(_conv_length(a.shape[0], k.shape[0]))
    sx = _good_size(_conv_length(a.shape[1], k.shape[1]))
    f = np.fft.rfft2(a, (sy, sx))
    f *= np.fft.rfft2(k, (sy, sx))
    full = np.fft.irfft2(f, (sy, sx))
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    return full[cy : cy + a.shape[0], cx : cx + a.shape[1]]


class SpectralConv:
    """``conv_centred`` of images of one ``shape`` with fixed kernels, the kernels' spectra
    computed once (minor cycles convolve with the same PSF / scale kernels many times).
    All kernels share one fast FFT size, so an image's spectrum (``spectrum``) serves every
    kernel (``apply``).

    Both 2-D FFTs are pruned to the rows that matter: the forward one transforms along x only
    the input's rows (the rest of the period is zero padding), the backward one along x only
    the rows of the result that are kept; for a 1024^2 image and PSF (period 1536) that is
    a third less of both x passes. :meth:`subtract_from` (the minor cycles' residual update)
    also works in buffers kept between calls, so no call faults in fresh pages (three
    arrays of the period's size per call before: 0.04-0.12 s of the real-MWA CLEAN job's
    minor cycles, varying with the page faults).
    """

    def __init__(self, shape, kernels, nthreads=1):
        self.shape = tuple(shape)
        self.nthreads = max(1, int(nthreads))  # ducc0's FFT threads
        ks = [np.asarray(k, dtype=np.float64) for k in kernels]
        self.size = (
            _good_size(max(_conv_length(self.shape[0], k.shape[0]) for k in ks)),
            _good_size(max(_conv_length(self.shape[1], k.shape[1]) for k in ks)),
        )
        self.centre = [(k.shape[0] // 2, k.shape[1] // 2) for k in ks]
        # the kernels' spectra carry the backward transform's 1 / (sy sx)
        norm = 1.0 / (self.size[0] * self.size[1])
        self.spectra = [self.spectrum(k) * norm for k in ks]
        self._buffers = None  # (rows, spec) of subtract_from, made at its first call

    def _forward(self, a, rows, spec):
        """``rfft2(a, self.size)`` into ``spec``: x pass over ``a``'s rows only (``rows``:
        an (>= ny, sx) float64 work array), then the y pass over every column."""
        import ducc0.fft

        sy, sx = self.size
        a = np.asarray(a, dtype=np.float64)[:sy, :sx]  # as numpy crops
        ny, nx = a.shape
        rows = rows[:ny]
        rows[:, :nx] = a
        rows[:, nx:] = 0.0
        ducc0.fft.r2c(rows, axes=(1,), out=spec[:ny], nthreads=self.nthreads)
        spec[ny:] = 0.0
        return ducc0.fft.c2c(spec, axes=(0,), forward=True, out=spec, nthreads=self.nthreads)

    def _backward(self, spec, i, rows):
        """The kept ``shape`` of the convolution with kernel ``i`` from the product spectrum
        ``spec`` (overwritten): y pass over every column, x pass over the kept rows only,
        into ``rows`` (an (ny, sx) float64 work array)."""
        import ducc0.fft

        ny, nx = self.shape
        cy, cx = self.centre[i]
        ducc0.fft.c2c(spec, axes=(0,), forward=False, out=spec, nthreads=self.nthreads)
        ducc0.fft.c2r(spec[cy : cy + ny], axes=(1,), lastsize=self.size[1], forward=False,
                      out=rows, allow_overwriting_input=True, nthreads=self.nthreads)
        return rows[:, cx : cx + nx]

    def _spec_array(self):
        return np.empty((self.size[0], self.size[1] // 2 + 1), dtype=np.complex128)

    def spectrum(self, a):
        """``numpy.fft.rfft2(a, self.size)`` by ducc0 (2x faster than numpy's at 1536^2)."""
        a = np.asarray(a)
        rows = np.empty((min(a.shape[0], self.size[0]), self.size[1]))
        return self._forward(a, rows, self._spec_array())

    def apply(self, spec, i):
        """The image whose spectrum is ``spec`` convolved with kernel ``i`` (a new array)."""
        product = spec * self.spectra[i]
        return self._backward(product, i, np.empty((self.shape[0], self.size[1])))

    def __call__(self, a, i=0):
        return self.apply(self.spectrum(a), i)

    def subtract_from(self, target, a, i=0):
        """``target -= self(a, i)`` (``a`` of ``shape``), in work buffers kept between calls."""
        if self._buffers is None:
            self._buffers = (np.empty((self.shape[0], self.size[1])), self._spec_array())
        rows, spec = self._buffers
        self._forward(a, rows, spec)
        spec *= self.spectra[i]
        target -= self._backward(spec, i, rows)
        return target


def restore(model, residual, beam_deg, cell_deg):
    """Restored image (Jy/beam) = model (Jy/pixel) convolved with the peak-1 restoring beam
    plus the residual (Jy/beam)."""
    # crop the kernel to where it matters so the FFT stays small
    cy, cx = model.shape[0] // 2, model.shape[1] // 2
    r = int(min(cy, cx, max(8, 5 * beam_deg[0] / cell_deg)))
    g = gaussian_beam_image((2 * r + 1, 2 * r + 1), beam_deg, cell_deg)
    return conv_centred(model, g) + residual
