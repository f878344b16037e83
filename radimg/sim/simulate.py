"""Simulate an observation and write it as a Measurement Set.

Layout -> earth-rotation uvw over an hour-angle range -> exact DFT predict (with w-term) of
point and Gaussian sources -> seeded thermal noise -> MS. Visibilities follow the sign of
``docs/internals.md``: ``V = S exp(+2 pi i (u l + v m + w (n - 1)))`` with uvw straight from
the MS UVW column, so radimg, WSClean and CASA all image the sources at their RA/Dec
(tests/test_wsclean.py checks this with WSClean).
"""

from __future__ import annotations

import math
import os

import numpy as np
from astropy.utils import iers

# Nothing here may download (IERS tables): uvw uses erfa with UT1 = UTC and no polar motion.
iers.conf.auto_download = False

C_LIGHT = 299792458.0
SIM_KEYS = (
    "telescope", "ra_deg", "dec_deg", "freq_hz", "chan_width_hz", "nchan", "ha_start_h",
    "ha_stop_h", "integration_s", "noise_jy", "seed", "sources", "sky_image",
    "sky_image_spectral_index", "sky_image_predict", "uv_distribution", "gaussian_rows",
    "uv_sigma_lambda", "uv_max_lambda", "w_sigma_lambda", "w_max_lambda", "input_snr_db",
    "nspw", "spw_spacing_hz", "feeds", "correlations",
)  # fmt: skip
#: Defaults of the polarisation and spectral-window keys (radimg.sim.polarisation).
POL_DEFAULTS = {"nspw": 1, "spw_spacing_hz": "auto", "feeds": "auto", "correlations": "auto"}
#: Defaults of the keys a caller's dict may leave out (``radimg.config`` fills them all).
GAUSSIAN_DEFAULTS = {
    "uv_distribution": "earth_rotation",
    "gaussian_rows": 100_000,
    "uv_sigma_lambda": 382.0,
    "uv_max_lambda": 1145.0,
    "w_sigma_lambda": 200.0,
    "w_max_lambda": 600.0,
    "input_snr_db": None,
}
# Rows simulated and written per chunk: bounds memory for large simulations.
CHUNK_ROWS = 200_000


def default_sim_config() -> dict:
    """The demo observation: MWA Phase I at 150 MHz over a ~20 deg field with real w-terms.

    Dec -27 is close to the MWA zenith; five point sources spread from the phase centre out
    to 8 deg, so an image of 1024^2 pixels of 75 arcsec (21 deg) needs w-correction.
    30 minutes of 30 s integrations, 4 channels: 60 x 8128 baselines x 4 = 1.95 million
    samples, written in a few seconds.
    """
    src = [
        (0.0, -27.0, 5.0),
        (4.0, -24.0, 3.0),
        (352.0, -30.0, 2.0),
        (2.0, -35.0, 1.0),
        (357.0, -20.0, 1.5),
    ]
    return {
        "telescope": "mwa",
        "ra_deg": 0.0,
        "dec_deg": -27.0,
        "freq_hz": 1.5e8,
        "chan_width_hz": 1.0e6,
        "nchan": 4,
        "ha_start_h": -0.25,
        "ha_stop_h": 0.25,
        "integration_s": 30.0,
        "noise_jy": 0.01,
        "seed": 42,
        "sources": [
            {"ra_deg": r, "dec_deg": d, "flux_jy": s, "spectral_index": -0.7} for r, d, s in src
        ],
    }


def resolve_sim_config(sim_cfg):
    unknown = set(sim_cfg) - set(SIM_KEYS)
    if unknown:
        raise ValueError(f"unknown simulate key(s) {sorted(unknown)}; valid: {', '.join(SIM_KEYS)}")
    cfg = {**default_sim_config(), **GAUSSIAN_DEFAULTS, **POL_DEFAULTS, **sim_cfg}
    if cfg["uv_distribution"] not in ("earth_rotation", "gaussian"):
        raise ValueError(
            f"uv_distribution must be earth_rotation or gaussian, got {cfg['uv_distribution']!r}"
        )
    for k in ("uv_sigma_lambda", "uv_max_lambda", "w_max_lambda"):
        if not float(cfg[k]) > 0:
            raise ValueError(f"{k} must be > 0, got {cfg[k]}")
    if not float(cfg["w_sigma_lambda"]) >= 0:
        raise ValueError(f"w_sigma_lambda must be >= 0, got {cfg['w_sigma_lambda']}")
    if int(cfg["gaussian_rows"]) < 1:
        raise ValueError(f"gaussian_rows must be >= 1, got {cfg['gaussian_rows']}")
    if cfg["input_snr_db"] is not None:
        if float(sim_cfg.get("noise_jy", 0.0)) > 0:
            raise ValueError("input_snr_db and noise_jy both set the noise; set one")
        cfg["noise_jy"] = 0.0  # the default's noise gives way to the SNR
    if int(cfg["nchan"]) < 1:
        raise ValueError(f"nchan must be >= 1, got {cfg['nchan']}")
    if float(cfg["noise_jy"]) < 0:
        raise ValueError(f"noise_jy must be >= 0, got {cfg['noise_jy']}")
    return cfg


def baselines(nant: int):
    """All cross-correlation pairs ``(ant1 < ant2)``, in MS order; ndarrays (bl,) int32."""
    a1, a2 = np.triu_indices(nant, k=1)
    return a1.astype(np.int32), a2.astype(np.int32)


def simulate(sim_cfg: dict, ms_path, overwrite: bool = False, nthreads: int | None = None,
             marker: str | None = None, log=None) -> str:
    """Simulate the observation ``sim_cfg`` and write it to the Measurement Set ``ms_path``.

    Parameters
    ----------
    sim_cfg : dict
        Keys (missing ones take ``default_sim_config()`` values): ``telescope``
        ("mwa" | "vla" | "meerkat" | path of an MS whose ANTENNA table to use), ``ra_deg``,
        ``dec_deg`` (J2000 phase centre), ``freq_hz`` (first channel), ``chan_width_hz``,
        ``nchan``, ``ha_start_h``, ``ha_stop_h``, ``integration_s``, ``noise_jy`` (rms of the
        real and of the imaginary part of each Stokes I visibility), ``seed``, ``sources``
        (list of dicts, see ``radimg.sim.sky.sky_arrays``).
    ms_path : str or path-like
    overwrite : bool
        Replace an existing MS, which must be one radimg simulated (it carries the marker
        keyword, ``radimg.io.ms_write.MARKER_KEYWORD``); any other existing path is an error.
    nthreads : int, optional
        Threads for the DFT (default: all numba threads).
    marker : str, optional
        Value of the marker keyword (default: the resolved ``sim_cfg`` as text); the
        pipeline stores the ``simulate:`` section's YAML to recognise an identical MS.
    log : callable(str), optional
        Receives a line saying how a sky image is predicted (DFT or operator).

    Returns
    -------
    str
        ``ms_path``.

    Notes
    -----
    Each parallel-hand correlation gets independent noise of rms ``noise_jy * sqrt(2)`` so
    that Stokes I ``(XX + YY) / 2`` has rms ``noise_jy``; WEIGHT is ``1 / sigma^2`` per
    correlation and SIGMA its rms (1 and 1 without noise). Cross hands (none are written)
    would be 0. Rows are ordered by time, then baseline; no autocorrelations.
    """
    import numba

    from radimg.config import ConfigError
    from radimg.io.ms_write import MSWriter
    from radimg.sim import polarisation as pol
    from radimg.sim.sky import sky_arrays

    cfg, layout = _checked_inputs(sim_cfg, ms_path, overwrite)
    log = log or (lambda msg: None)
    ra0, dec0 = np.radians(float(cfg["ra_deg"])), np.radians(float(cfg["dec_deg"]))
    freq, nchan_w, nspw = _frequencies(cfg)
    nchan = freq.size
    integ = float(cfg["integration_s"])
    mjd, a1, a2, nrows = _sample_times(cfg, layout, ra0)
    nbl = a1.size
    try:
        sky = sky_arrays(cfg["sources"], ra0, dec0, freq, float(cfg["freq_hz"]))
    except ValueError as exc:
        raise ConfigError(
            f"simulate.sources: {exc} (RA/Dec {cfg['ra_deg']:g}/{cfg['dec_deg']:g} deg); "
            "every source must lie within 90 deg of the phase centre"
        ) from None
    sky, predict_how, image_op = _add_sky_image(cfg, sky, ra0, dec0, freq, nrows * nchan, log)
    noise = float(cfg["noise_jy"])
    polarised = pol.is_polarised(cfg["sources"])
    corr = pol.corr_types(cfg["feeds"], cfg["correlations"], polarised, layout.corr_types)
    ncorr = len(corr)
    rng = np.random.default_rng(int(cfg["seed"]))
    nthreads = numba.get_num_threads() if nthreads is None else int(nthreads)
    tsec = mjd * 86400.0
    half = 0.5 * integ

    parts = _model_chunks(cfg, layout, mjd, a1, a2, nrows, freq, sky, image_op, ra0, dec0,
                          nthreads)
    snr = cfg.get("input_snr_db")
    if snr is not None:
        parts, noise = _noise_for_snr(parts, float(snr), nrows * nchan, log)
    sigma_corr = noise * np.sqrt(2.0) if noise > 0 else 1.0
    history = f"radimg.sim.simulate: {cfg!r}" + (
        f"; sky image predicted by {predict_how}" if predict_how else "") + (
        f"; input SNR {float(snr):g} dB -> noise_jy {noise:.9g}" if snr is not None else "")

    with MSWriter(
        ms_path,
        nrows=nrows * nspw,
        freq=freq.reshape(nspw, nchan_w),
        chan_width=float(cfg["chan_width_hz"]),
        corr_types=corr,
        phase_centre=(ra0, dec0),
        antenna_positions=layout.positions,
        antenna_names=layout.names,
        dish_diameter=layout.dish_diameter,
        telescope_name=layout.telescope,
        time_range=(tsec[0] - half, tsec[-1] + half),
        field_name="radimg_sim",
        mount=layout.mount,
        history=history,
        overwrite=overwrite,
        marker=f"radimg.sim.simulate: {cfg!r}" if marker is None else marker,
    ) as w:
        for r0, uvw, vis in parts:
            n = vis.shape[0]
            rows = np.arange(r0, r0 + n)
            data_all = _correlations(vis, uvw, freq, sky, corr, polarised, nthreads)
            for k in range(nspw):  # window k: rows k * nrows + ..., DATA_DESC_ID k
                data = data_all[:, k * nchan_w : (k + 1) * nchan_w]
                if noise > 0:
                    z = rng.standard_normal((n, nchan_w, ncorr, 2))
                    data = data + sigma_corr * (z[..., 0] + 1j * z[..., 1])
                w.put_rows(
                    k * nrows + r0,
                    data_desc_id=k,
                    time=tsec[rows // nbl],
                    antenna1=a1[rows % nbl],
                    antenna2=a2[rows % nbl],
                    uvw=uvw,
                    data=data.astype(np.complex64),
                    interval=integ,
                    weight=np.full((n, ncorr), 1.0 / sigma_corr**2, dtype=np.float32),
                    sigma=np.full((n, ncorr), sigma_corr, dtype=np.float32),
                )
    return ms_path


def _checked_inputs(sim_cfg, ms_path, overwrite):
    """``(resolved config, array layout)``, or a ConfigError/MSError/FileExistsError that
    names the bad key or path; nothing is written."""
    from radimg.config import ConfigError
    from radimg.io.ms import MSError
    from radimg.io.ms_write import check_replaceable
    from radimg.io.paths import check_not_inside_table
    from radimg.sim.layouts import load_layout

    try:
        cfg = resolve_sim_config(sim_cfg)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    if os.path.lexists(os.fspath(ms_path)) and not overwrite:
        raise FileExistsError(
            f"{os.fspath(ms_path)} exists (use --overwrite to replace an MS radimg simulated)"
        )
    check_replaceable(ms_path)
    check_not_inside_table(ms_path, "input.ms")
    try:
        layout = load_layout(cfg["telescope"])
    except MSError:
        raise
    except ValueError as exc:
        raise ConfigError(f"simulate.telescope: {exc}") from None
    return cfg, layout


def _frequencies(cfg):
    """Channel frequencies (chan,) float64 Hz of all ``nspw`` windows of ``nchan`` channels,
    window by window; returns ``(freq, nchan_per_window, nspw)``."""
    nchan_w, nspw = int(cfg["nchan"]), int(cfg["nspw"])
    spacing = cfg["spw_spacing_hz"]
    spacing = nchan_w * float(cfg["chan_width_hz"]) if spacing in (None, "auto") else spacing
    freq = (float(cfg["freq_hz"]) + np.arange(nspw)[:, None] * float(spacing)
            + np.arange(nchan_w)[None, :] * float(cfg["chan_width_hz"])).ravel()
    return freq, nchan_w, nspw


def _sample_times(cfg, layout, ra0):
    """Time steps and baselines of the observation.

    Returns ``(mjd (time,) float64 days, antenna1 (baseline,), antenna2 (baseline,),
    nrows)``; row ``r`` is time ``r // nbaseline``, baseline ``r % nbaseline``.
    """
    from radimg.sim.uvw import array_longitude, hour_angle_times

    integ = float(cfg["integration_s"])
    lon = array_longitude(layout.positions)
    mjd = hour_angle_times(cfg["ha_start_h"], cfg["ha_stop_h"], integ, ra0, lon)
    a1, a2 = baselines(len(layout.names))
    nbl = a1.size
    if cfg["uv_distribution"] == "gaussian":
        # random uvw (Pratley et al. 2018); rows cycle the baselines, one time step per
        # nbl rows from the track's first integration
        nrows = int(cfg["gaussian_rows"])
        ntime = -(-nrows // nbl)
        mjd = mjd[0] + np.arange(ntime) * integ / 86400.0
    else:
        nrows = nbl * mjd.size
    return mjd, a1, a2, nrows


def _add_sky_image(cfg, sky, ra0, dec0, freq, nsamples, log):
    """Add ``cfg["sky_image"]`` (if any) to the point/Gaussian sky.

    A sky image predicted by DFT joins ``sky``'s component arrays; one predicted by the
    operator comes back as ``image_op = (image, image_cell, scale (chan,))`` for
    ``_model_chunks``. Returns ``(sky, predict_how ("dft" | "operator" | None), image_op)``.
    """
    if not cfg.get("sky_image"):
        return sky, None, None
    from radimg.sim import sky_image as skyimg

    image = skyimg.load_sky_image(cfg["sky_image"])
    predict_how, why = skyimg.choose_predict(
        image, ra0, dec0, nsamples, cfg.get("sky_image_predict") or "auto"
    )
    log(f"sky image {cfg['sky_image']}: {image.nnz} non-zero pixels, "
        f"{float(image.flux.sum()):.6g} Jy; predicted by {why}")
    scale = (freq / float(cfg["freq_hz"])) ** float(cfg.get("sky_image_spectral_index", 0.0))
    if predict_how != "dft":
        return sky, predict_how, (image, skyimg.on_radimg_grid(image, ra0, dec0), scale)
    il, im, iflux = skyimg.components(image, ra0, dec0)
    zeros = np.zeros(il.size)
    sky = {
        "l": np.concatenate([sky["l"], il]),
        "m": np.concatenate([sky["m"], im]),
        "flux": np.concatenate([sky["flux"], iflux[:, None] * scale[None, :]]),
        "major": np.concatenate([sky["major"], zeros]),
        "minor": np.concatenate([sky["minor"], zeros]),
        "pa": np.concatenate([sky["pa"], zeros]),
    }
    return sky, predict_how, None


def _model_chunks(cfg, layout, mjd, a1, a2, nrows, freq, sky, image_op, ra0, dec0, nthreads):
    """Yield ``(first row, uvw (row, 3) float64 metres, Stokes I model vis (row, chan)
    complex128)`` in row order, ``CHUNK_ROWS``-ish rows (whole time steps) at a time."""
    from radimg.kernels.dft import dft_predict
    from radimg.sim.uvw import antenna_uvw, gaussian_uvw

    gaussian = cfg["uv_distribution"] == "gaussian"
    nbl = a1.size
    au = None if gaussian else antenna_uvw(layout.positions, mjd, ra0, dec0)  # (time, ant, 3)
    uvw_rng = np.random.default_rng([int(cfg["seed"]), 16])  # its own stream: noise unchanged
    rows_per_chunk = max(1, CHUNK_ROWS // nbl) * nbl
    for r0 in range(0, nrows, rows_per_chunk):
        r1 = min(nrows, r0 + rows_per_chunk)
        if gaussian:
            uvw = gaussian_uvw(
                r1 - r0, uvw_rng, uv_sigma=float(cfg["uv_sigma_lambda"]),
                uv_max=float(cfg["uv_max_lambda"]), w_sigma=float(cfg["w_sigma_lambda"]),
                w_max=float(cfg["w_max_lambda"]),
            ) * (C_LIGHT / float(cfg["freq_hz"]))
        else:
            t0, t1 = r0 // nbl, r1 // nbl
            uvw = (au[t0:t1, a1] - au[t0:t1, a2]).reshape(-1, 3)
        vis = dft_predict(uvw, freq, sky["l"], sky["m"], sky["flux"], sky["major"],
                          sky["minor"], sky["pa"], nthreads=nthreads)
        if image_op is not None:
            from radimg.sim import sky_image as skyimg

            image, image_cell, scale = image_op
            vis = vis + skyimg.predict_operator(image, image_cell, uvw, freq, scale,
                                                nthreads=nthreads)
        yield r0, uvw, vis


def _noise_for_snr(parts, snr_db, nsamples, log):
    """Noise rms per part (real, imaginary) that gives the model ``parts`` an input SNR of
    ``snr_db``; returns ``(parts as a list, noise_jy)``.

    The noise follows from the whole model (Pratley et al. 2018; PURIFY's
    SNR_to_standard_deviation): rms per part = ||y0||_2 / sqrt(2 M) 10^(-SNR/20), so
    20 log10(||y0|| / ||n||) = SNR; the model is held (16 B per sample) to know ||y0||.
    """
    parts = list(parts)
    y2 = sum(float(np.vdot(v, v).real) for _, _, v in parts)
    noise = math.sqrt(y2 / (2.0 * nsamples)) * 10.0 ** (-snr_db / 20.0)
    log(f"input SNR {snr_db:g} dB: ||y0||_2 = {math.sqrt(y2):.6g} Jy over {nsamples} samples, "
        f"noise {noise:.6g} Jy rms per part")
    return parts, noise


def _correlations(vis, uvw, freq, sky, corr, polarised, nthreads):
    """Noise-free DATA (row, chan, corr) complex128 of one chunk: Stokes I ``vis``, and Q, U,
    V predicted here when the sky is polarised, mixed into the correlations ``corr``."""
    from radimg.kernels.dft import dft_predict
    from radimg.sim import polarisation as pol

    if not polarised:
        return pol.correlations({"I": vis}, corr)
    stokes = {"I": vis, **{k.upper(): dft_predict(
        uvw, freq, sky["l"], sky["m"], sky[f"flux_{k}"], sky["major"],
        sky["minor"], sky["pa"], nthreads=nthreads) for k in "quv"}}
    return pol.correlations(stokes, corr)
