"""WSClean images our simulated MS with the source at its true RA/Dec.

This is the check that the simulator's uvw and visibility signs, and the MS writer, are what
real tools expect: a mirrored sign would put the source at the point reflected through the
phase centre, a wrong frame would smear or shift it.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ensure_wsclean():
    exe = shutil.which("wsclean")
    if exe:
        return exe
    if shutil.which("apt-get") is None:
        pytest.skip("wsclean is not installed and apt-get is not available to install it")
    if os.geteuid() != 0:
        pytest.skip("wsclean is not installed and installing it with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=300
        )
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wsclean"],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"could not install wsclean with apt-get: {exc}; {out.decode(errors='replace')[-300:]}"
        )
    exe = shutil.which("wsclean")
    if exe is None:
        pytest.skip("apt-get install wsclean succeeded but no wsclean executable was found")
    return exe


def _has_option(exe, option):
    r = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    return option in (r.stdout + r.stderr)


@pytest.mark.parametrize(
    "telescope,dec0,offset",
    [
        # MWA at 150 MHz: 3 deg east and 2 deg north of a phase centre near zenith.
        ("mwa", -27.0, (3.0, 2.0)),
        # MeerKAT at 1.4 GHz: 0.3 deg west and 0.2 deg south (other quadrant, other site).
        ("meerkat", -45.0, (-0.3, -0.2)),
    ],
)
def test_wsclean_puts_source_at_its_radec(tmp_path, telescope, dec0, offset):
    exe = _ensure_wsclean()
    from astropy.io import fits
    from astropy.wcs import WCS

    from radimg.sim.simulate import simulate

    ra0 = 30.0
    dra_deg, ddec = offset
    src_ra = ra0 + dra_deg / np.cos(np.radians(dec0 + ddec))
    src_dec = dec0 + ddec
    if telescope == "mwa":
        freq, width, nchan, cell_arcsec, ha = 1.5e8, 1e6, 2, 90.0, 0.2
    else:
        freq, width, nchan, cell_arcsec, ha = 1.4e9, 1e6, 2, 6.0, 0.2
    cfg = {
        "telescope": telescope,
        "ra_deg": ra0,
        "dec_deg": dec0,
        "freq_hz": freq,
        "chan_width_hz": width,
        "nchan": nchan,
        "ha_start_h": -ha,
        "ha_stop_h": ha,
        "integration_s": 60.0,
        "noise_jy": 0.0,
        "seed": 1,
        "sources": [{"ra_deg": src_ra, "dec_deg": src_dec, "flux_jy": 10.0}],
    }
    ms = simulate(cfg, tmp_path / "point.ms")
    npix = 512
    name = str(tmp_path / "img")
    cmd = [exe, "-size", str(npix), str(npix), "-scale", f"{cell_arcsec}asec", "-niter", "0"]
    cmd += ["-weight", "natural", "-j", "2", "-name", name, "-no-update-model-required"]
    if _has_option(exe, "-use-wgridder"):
        cmd.append("-use-wgridder")
    r = subprocess.run(cmd + [str(ms)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    with fits.open(name + "-dirty.fits") as hdul:
        img = np.asarray(hdul[0].data, dtype=np.float64).squeeze()
        wcs = WCS(hdul[0].header).celestial
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    px, py = wcs.all_world2pix([[src_ra, src_dec]], 0)[0]
    assert abs(ix - px) <= 1.0 and abs(iy - py) <= 1.0, (
        f"WSClean peak at pixel (x={ix}, y={iy}), source RA/Dec maps to ({px:.2f}, {py:.2f}); "
        f"mirrored would be ({npix - px:.2f}, {npix - py:.2f})"
    )

    # Sub-pixel peak (parabola through the 3 pixels on each axis) lands on the source: a
    # wrong uvw frame would shift or smear it by more. The flux is recovered too.
    def vertex(a, b, c):
        return 0.5 * (a - c) / (a - 2 * b + c)

    fx = ix + vertex(img[iy, ix - 1], img[iy, ix], img[iy, ix + 1])
    fy = iy + vertex(img[iy - 1, ix], img[iy, ix], img[iy + 1, ix])
    assert abs(fx - px) < 0.15 and abs(fy - py) < 0.15, (fx, fy, px, py)
    assert img[iy, ix] == pytest.approx(10.0, rel=0.2)  # sampled up to half a pixel off peak
    # Orientation as in docs/internals.md: east left (RA decreases with x), north up.
    assert wcs.wcs.cdelt[0] < 0 < wcs.wcs.cdelt[1]
    assert wcs.wcs.crpix[0] == npix // 2 + 1 and wcs.wcs.crpix[1] == npix // 2 + 1
