"""The restoring-beam fit against an analytic elliptical Gaussian laid out on the sky (the
oracle works in RA/Dec offsets through astropy's WCS, not in radimg's pixel conventions):
FWHM axes and the FITS position angle (north through east) come back, which pins x running
west and y north (docs/internals.md) into the BPA that the product and FITS export write."""

import math

import numpy as np
import pytest

from radimg.deconv.image import fit_beam, gaussian_beam_image

pytestmark = pytest.mark.unit

N = 64
CELL_DEG = 1.0 / 60.0


def _sky_gaussian(bmaj_deg, bmin_deg, bpa_deg, dec_deg=-27.0):
    """Peak-1 Gaussian evaluated at every pixel's sky position (astropy WCS of the product)."""
    from astropy.coordinates import SkyCoord

    from radimg.io.product import image_wcs, make_wcs_info

    wcs = image_wcs(
        make_wcs_info(N, N, math.radians(CELL_DEG), (0.3, math.radians(dec_deg)), 1.5e8)
    )
    y, x = np.mgrid[0:N, 0:N]
    world = wcs.pixel_to_world(x.ravel(), y.ravel())
    centre = wcs.pixel_to_world(N // 2, N // 2)
    centre = SkyCoord(centre.ra, centre.dec)
    east, north = centre.spherical_offsets_to(SkyCoord(world.ra, world.dec))
    e = east.deg.reshape(N, N)
    n = north.deg.reshape(N, N)
    t = math.radians(bpa_deg)
    pmaj = e * math.sin(t) + n * math.cos(t)  # along the major axis (PA from north to east)
    pmin = e * math.cos(t) - n * math.sin(t)
    f = 2.0 * math.sqrt(2.0 * math.log(2.0))
    return np.exp(-0.5 * ((pmaj / (bmaj_deg / f)) ** 2 + (pmin / (bmin_deg / f)) ** 2))


def _pa_diff(a, b):
    return abs((a - b + 90.0) % 180.0 - 90.0)


@pytest.mark.parametrize("bpa", [0.0, 30.0, 60.0, 90.0, -45.0, 113.6, 150.0])
def test_fit_beam_recovers_sky_gaussian_in_fits_convention(bpa):
    bmaj, bmin = 6.0 * CELL_DEG, 3.5 * CELL_DEG
    psf = _sky_gaussian(bmaj, bmin, bpa)
    got = fit_beam(psf, CELL_DEG)
    assert got[0] == pytest.approx(bmaj, rel=2e-3)
    assert got[1] == pytest.approx(bmin, rel=2e-3)
    assert _pa_diff(got[2], bpa) <= 0.2
    assert -90.0 <= got[2] < 90.0
    # and the image restore() draws with that beam is the same Gaussian on the sky
    assert np.abs(gaussian_beam_image(psf.shape, got, CELL_DEG) - psf).max() <= 5e-3


def test_position_angle_sense_east_of_north():
    """BPA 45 deg: the major axis runs north-east, i.e. up and to the LEFT (x runs west)."""
    psf = _sky_gaussian(8 * CELL_DEG, 3 * CELL_DEG, 45.0)
    c = N // 2
    assert psf[c + 4, c - 4] > 0.2 and psf[c + 4, c + 4] < 1e-3
    assert _pa_diff(fit_beam(psf, CELL_DEG)[2], 45.0) <= 0.2


def test_fit_uses_the_main_lobe_only():
    """A broad pedestal and sidelobes outside the main lobe (as MWA's dense core gives) do
    not widen the fit: only pixels above 0.35 of the peak that connect to it count (CASA's
    psfcutoff convention); WSClean 3.1 fits a whole box and reports a larger beam."""
    g = _sky_gaussian(5 * CELL_DEG, 4 * CELL_DEG, 20.0)
    y, x = np.mgrid[0:N, 0:N] - N // 2
    r = np.hypot(x, y)
    pedestal = 0.2 * np.exp(-0.5 * (r / 12.0) ** 2) * (r > 4.5)
    got = fit_beam(g + pedestal, CELL_DEG)
    assert got[0] == pytest.approx(5 * CELL_DEG, rel=0.03)
    assert got[1] == pytest.approx(4 * CELL_DEG, rel=0.03)


@pytest.mark.parametrize("width", [3.0, 25.0])  # 25: the lobe outgrows the first window
def test_main_lobe_matches_scipy_label(width):
    """The windowed numpy flood fill equals scipy.ndimage.label's component of the centre."""
    from scipy.ndimage import label

    from radimg.deconv.image import _main_lobe

    rng = np.random.default_rng(4)
    n = 128
    y, x = np.mgrid[0:n, 0:n] - n // 2
    psf = np.exp(-0.5 * (x**2 + 0.6 * y**2 + 0.5 * x * y) / width**2)
    psf += 0.3 * rng.standard_normal((n, n)) * np.exp(-0.5 * (np.hypot(x, y) / (3 * width)) ** 2)
    psf /= psf[n // 2, n // 2]
    lab, _ = label(psf > 0.35)
    assert np.array_equal(_main_lobe(psf), lab == lab[n // 2, n // 2])
