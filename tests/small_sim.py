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
