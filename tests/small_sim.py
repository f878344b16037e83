"""The small simulated observation shared by the end-to-end tests (CLI, deconvolution, Slurm).

128 MWA tiles, 3 two-minute integrations, 2 channels at 150 MHz: about 48k samples, enough
for a wide-field image in seconds.
"""


def small_observation(sources, noise_jy=0.0, **over):
    """``simulate:`` section of a radimg config; ``over`` replaces any key."""
    sim = {
        "telescope": "mwa",
        "ra_deg": 0.0,
        "dec_deg": -27.0,
        "freq_hz": 1.5e8,
        "chan_width_hz": 2.0e6,
        "nchan": 2,
        "ha_start_h": -0.05,
        "ha_stop_h": 0.05,
        "integration_s": 120.0,
        "noise_jy": noise_jy,
        "seed": 1,
        "sources": sources,
    }
    sim.update(over)
    return sim


def pixel_sources(pix, npix, cell_arcsec, ra_deg=0.0, dec_deg=-27.0, freq_hz=1.5e8):
    """``simulate.sources`` entries for point sources on pixel centres: ``pix`` is a list of
    ``(x, y, flux_jy)`` in an ``npix x npix`` image with ``cell_arcsec`` cells around the
    phase centre of :func:`small_observation` (positions from radimg's astropy WCS)."""
    import numpy as np

    from radimg.io.product import image_wcs, make_wcs_info

    info = make_wcs_info(npix, npix, np.radians(cell_arcsec / 3600),
                         (np.radians(ra_deg), np.radians(dec_deg)), freq_hz)
    wcs = image_wcs(info)
    out = []
    for x, y, f in pix:
        c = wcs.pixel_to_world(x, y)
        out.append({"ra_deg": float(c.ra.deg), "dec_deg": float(c.dec.deg), "flux_jy": f})
    return out
