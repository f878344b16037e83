"""Samples for ``radimg plan`` without reading an MS in full or writing one: a strided
UVW subsample of the rows a run would image, or the simulator's own geometry at a few of
its integrations; and the uv tile occupancy they give."""

from __future__ import annotations

import math

import numpy as np

from radimg.constants import C_LIGHT

__all__ = ["ms_w_sample", "simulate_w_sample", "tile_prob_from_uv", "MAX_SAMPLE_ROWS"]

MAX_SAMPLE_ROWS = 200_000


def ms_w_sample(path, spw=0, max_rows=MAX_SAMPLE_ROWS, field=0, autocorrelations=False,
                chan_range=None, phase_centre=None):
    """(n_samples, w, u, v (wavelengths), nchan) from a strided subsample of the UVW column
    of the rows a run would image (radimg.io.ms.uvw_subsample: the MS is checked as the
    run checks it, so a bad MS is the same clean error)."""
    from radimg.io.ms import MSError, uvw_subsample

    n_rows, uvw, freq = uvw_subsample(
        path, spw, field, max_rows=max_rows, autocorrelations=autocorrelations,
        chan_range=chan_range, phase_centre=phase_centre,
    )
    if uvw.shape[0] == 0:
        raise MSError(
            f"{path}: no unflagged cross-correlation rows with a valid UVW in spectral "
            f"window {spw}, field {field}; nothing to plan"
        )
    lam = freq / C_LIGHT
    u = (uvw[:, 0:1] * lam[None, :]).ravel()
    v = (uvw[:, 1:2] * lam[None, :]).ravel()
    w = (uvw[:, 2:3] * lam[None, :]).ravel()
    return n_rows * freq.size, w, u, v, freq.size


def simulate_w_sample(sim: dict, max_times=50):
    """(n_samples, w, u, v) of the observation ``input.simulate`` would write, no MS written.

    The simulator's own geometry (layout, hour angles, J2000 uvw; radimg.sim) at up to
    ``max_times`` of its integrations, so stacks, supports and tiles are those of the run.
    """
    from radimg.sim.layouts import load_layout
    from radimg.sim.simulate import baselines, resolve_sim_config
    from radimg.sim.uvw import antenna_uvw, array_longitude, hour_angle_times

    cfg = resolve_sim_config(dict(sim))
    layout = load_layout(cfg["telescope"])
    ra0, dec0 = math.radians(float(cfg["ra_deg"])), math.radians(float(cfg["dec_deg"]))
    nchan = int(cfg["nchan"])
    freq = float(cfg["freq_hz"]) + np.arange(nchan) * float(cfg["chan_width_hz"])
    lon = array_longitude(layout.positions)
    mjd = hour_angle_times(cfg["ha_start_h"], cfg["ha_stop_h"], float(cfg["integration_s"]),
                           ra0, lon)
    a1, a2 = baselines(len(layout.names))
    n_samples = a1.size * mjd.size * nchan
    sub = mjd[:: max(1, -(-mjd.size // max_times))]
    au = antenna_uvw(layout.positions, sub, ra0, dec0)  # (time, ant, 3)
    uvw = (au[:, a1] - au[:, a2]).reshape(-1, 3)
    lam = freq / C_LIGHT
    f = lambda a: (a[:, None] * lam[None, :]).ravel()  # noqa: E731
    return n_samples, f(uvw[:, 2]), f(uvw[:, 0]), f(uvw[:, 1]), nchan


def tile_prob_from_uv(u, v, npad_x, npad_y, cell_rad, tile):
    """Empirical tile occupancy from uv samples (and their conjugates) in wavelengths."""
    ntx = -(-npad_x // tile)
    nty = -(-npad_y // tile)
    cx, cy = (cell_rad, cell_rad) if np.ndim(cell_rad) == 0 else cell_rad
    uc = np.concatenate([u, -u]) * npad_x * cx + npad_x // 2
    vc = np.concatenate([v, -v]) * npad_y * cy + npad_y // 2
    ok = (uc >= 0) & (uc < npad_x) & (vc >= 0) & (vc < npad_y)
    ix = (uc[ok] // tile).astype(np.int64)
    iy = (vc[ok] // tile).astype(np.int64)
    p = np.bincount(iy * ntx + ix, minlength=ntx * nty).astype(np.float64)
    return p / p.sum() if p.sum() > 0 else None
