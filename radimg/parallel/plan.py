"""``radimg plan``: run planning without launching ranks, from a radimg config.

:func:`plan_from_config` samples the MS or the simulator (:mod:`radimg.parallel.plan_sampling`),
decides ``wterm.mode`` and small inversion as ``radimg run`` would (radimg.ops.choose,
radimg.ops.resample), replays the operator's tile exchange
(:mod:`radimg.parallel.plan_exchange`) and runs the binned load model
(:func:`radimg.parallel.plan_model.plan`) with the memory model
(:mod:`radimg.parallel.plan_memory`). The paper's set-up is :mod:`radimg.parallel.plan_paper`.
The names of those modules are re-exported here (the interface of this module before it was
split by subject).
"""

from __future__ import annotations

import math

import numpy as np

from radimg.constants import ARCSEC, C_LIGHT
from radimg.parallel.plan_exchange import operator_exchange, tables_covering
from radimg.parallel.plan_memory import (
    FINE_IMAGE_BYTES,
    FINE_IMAGES,
    IMAGE_ARRAYS,
    LAYOUT_TRANSIENT_BYTES,
    OWNER_GRIDS,
    PROCESS_BASELINE_BYTES,
    SAMPLE_BYTES,
    SINGLE_ACCUMULATOR_SAVING,
    fits_memory,
    memory_terms,
    peak_bytes,
    resample_bytes,
)
from radimg.parallel.plan_model import (
    BinnedSequence,
    gaussian_tile_prob,
    j_min_from_epsilon,
    plan,
)
from radimg.parallel.plan_paper import paper_plan, paper_setup, paper_w_histogram
from radimg.parallel.plan_sampling import ms_w_sample, simulate_w_sample, tile_prob_from_uv
from radimg.progress import format_bytes

__all__ = [
    "paper_setup",
    "paper_w_histogram",
    "paper_plan",
    "gaussian_tile_prob",
    "plan",
    "plan_from_config",
    "configured_exchange_buffer",
    "fits_memory",
    "memory_terms",
    "peak_bytes",
    "resample_bytes",
    "operator_exchange",
    "j_min_from_epsilon",
    "format_bytes",
    "BinnedSequence",
    "SAMPLE_BYTES",
    "OWNER_GRIDS",
    "IMAGE_ARRAYS",
    "SINGLE_ACCUMULATOR_SAVING",
    "LAYOUT_TRANSIENT_BYTES",
    "FINE_IMAGES",
    "FINE_IMAGE_BYTES",
    "PROCESS_BASELINE_BYTES",
    "REPLAY_MAX_BYTES",
    "ARCSEC",
    "C_LIGHT",
]

_MAX_KMEANS_SAMPLES = 200_000
_MAX_EXCHANGE_SAMPLES = 1_000_000  # tiles still converge at 4e5 (-4 % cells); replay ~2 s at 1e6
#: Largest geometry :func:`plan_from_config` builds to replay the tile exchange.
REPLAY_MAX_BYTES = 4 * 2**30


def plan_from_config(cfg: dict, n_ranks: int, mem_per_rank_bytes: int | None = None,
                     channels: tuple[int, int] | None = None) -> dict:
    """:func:`plan` for a resolved radimg config, with no MPI launch.

    Samples come from a strided subsample of the MS UVW column (casacore, lazy import) and
    the SPECTRAL_WINDOW frequencies, or, for ``input.simulate: true``, from a cheap estimate
    of the configured observation. ``wterm.nstacks: auto`` plans one stack per rank.
    ``channels`` ``(first, stop)``: only those channels of the selection's ascending axis
    (one output channel of a cube, :mod:`radimg.parallel.plan_cube`).
    """
    img, wt, gr = cfg["image"], cfg["wterm"], cfg["gridder"]
    npix_x = int(img["npix"])
    npix_y = int(img.get("npix_y") or npix_x)
    cell_rad = float(img["cell_arcsec"]) * ARCSEC
    tile = 64
    n_samples, w, u, v, nchan, source = _w_samples(cfg, channels)
    eps = float(wt.get("epsilon", 1e-5))
    precision = gr.get("precision", "single")
    # wterm.mode (auto: the fastest mode that meets epsilon), its oversampling, stacks and
    # image.small_inversion's coarse image, as `radimg run` decides them (radimg.ops.choose)
    choice = _wterm_choice(u, v, w, int(n_samples), npix_x, npix_y, cell_rad, eps, precision,
                           wt, bool(img.get("small_inversion", True)))
    chosen = choice.chosen
    mode = chosen.mode
    nstacks = 1 if mode == "none" else wt.get("nstacks", "auto")
    if mode == "wstack-wproject" and chosen.nplanes is not None:
        nstacks = chosen.nplanes
    oversampling = chosen.oversampling
    if oversampling is None:  # the mode cannot be built here: model it as configured
        ov = wt.get("oversampling", "auto")
        oversampling = 2.0 if ov == "auto" else float(ov)
    oversampling_w = chosen.oversampling_w
    npad_x = 2 * math.ceil(oversampling * npix_x / 2)
    npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    centres = None
    # image.small_inversion: the operator is built on the coarse image the data allow
    # (radimg.ops.resample, as `radimg run` decides it); the requested image is what the
    # pipeline holds around it.
    small = chosen.small
    fine = (npix_x, npix_y)
    cells = cell_rad  # the operator's cell (a pair when small inversion's cells differ)
    if small is not None:
        npix_x, npix_y, cell_rad, cells = small.nc_x, small.nc_y, small.cell_cx, small.cell_c
        npad_x = 2 * math.ceil(oversampling * npix_x / 2)
        npad_y = 2 * math.ceil(oversampling * npix_y / 2)
    if mode == "wstack-wproject":
        nstacks, centres = _operator_stacks(w, nstacks, npix_x, npix_y, cell_rad, eps,
                                            oversampling, int(n_samples))
    if mem_per_rank_bytes is None:
        mem_per_rank_bytes = _configured_mem_per_rank(cfg)
    # The operator's own exchange on a seeded subsample (exchange tiles are >= 64 cells).
    sub = np.arange(w.size)
    if w.size > _MAX_EXCHANGE_SAMPLES:
        sub = np.sort(np.random.default_rng(0).choice(w.size, _MAX_EXCHANGE_SAMPLES, False))
    # The replay builds the operator's geometry, which holds a few image- and grid-sized
    # arrays: above REPLAY_MAX_BYTES (npix 200000 would allocate ~300 GiB) the plan models
    # the memory without it (the images and grids alone show that such a run cannot fit).
    replay_bytes = 16 * npix_x * npix_y + 16 * npad_x * npad_y
    exchange = None
    if replay_bytes <= REPLAY_MAX_BYTES:
        exchange = operator_exchange(
            u[sub], v[sub], w[sub], n_ranks, int(n_samples),
            "wstack" if mode == "wstack" else mode,
            npix_x, npix_y, cells, epsilon=eps, nstacks=nstacks, oversampling=oversampling,
            oversampling_w=oversampling_w, precision=precision, centres=centres,
            wkernel=chosen.wkernel or "auto",
            tables=tables_covering(w, centres, npix_x, npix_y, cell_rad, eps, oversampling,
                                    precision) if mode == "wstack-wproject" else None,
            exchange_buffer_bytes=configured_exchange_buffer(cfg),
        )
    result = plan(
        n_ranks=n_ranks,
        npix=(npix_x, npix_y),
        cell_arcsec=cell_rad / ARCSEC,
        nstacks=nstacks,
        epsilon=eps,
        w=w,
        n_samples=int(n_samples),
        tile_prob=tile_prob_from_uv(u, v, npad_x, npad_y, cells, tile),
        precision=precision,
        oversampling=oversampling,
        tile=tile,
        mem_per_rank=mem_per_rank_bytes,
        wproject=(mode == "wstack-wproject"),
        nbins=20_000,
        support_model="tables" if mode == "wstack-wproject" else "eq8",
        centres=centres,
        mode=mode,
        nchan=int(nchan),
        exchange=exchange,
        tables=None if exchange is None else exchange.get("tables"),
        small=small,
        dot=(cfg.get("deconvolution") or {}).get("algorithm", "clean") != "none",
        deconvolution=_deconvolution(cfg, fine),
    )
    result["geometry"]["image_npix"] = list(fine)
    result["wterm"] = choice.describe()
    result["small_inversion"] = None if small is None else small.describe()
    if exchange is None:
        result["exchange"] = {
            "replayed": False,
            "why": f"the image needs ~{format_bytes(replay_bytes)} to replay here; tile "
            "traffic is modelled from the uv occupancy only",
        }
    else:
        result["exchange"] = {k: v for k, v in exchange.items() if k != "tables"}
    result["source"] = source
    return result


def _w_samples(cfg, channels):
    """``(n_samples, w, u, v, nchan, source)``: the u, v, w subsample (sample,) float64
    wavelengths, raveled (row, chan) with channels fastest, of the MS or of the simulator's
    estimate; ``n_samples`` the total it stands for; ``channels`` ``(first, stop)`` keeps
    only those channels. ``source`` says where they came from (for the plan's output)."""
    img, inp = cfg["image"], cfg["input"]
    if inp.get("simulate"):
        n_samples, w, u, v, nchan = simulate_w_sample(cfg.get("simulate", {}))
        source = "estimate from the simulate: section"
    else:
        n_samples, w, u, v, nchan = ms_w_sample(
            inp["ms"], inp.get("spw", 0), field=inp.get("field", 0),
            autocorrelations=bool(inp.get("autocorrelations", False)),
            chan_range=inp.get("chan_range"),
            phase_centre=img.get("phase_centre"),
        )
        source = f"MS {inp['ms']} (UVW subsample)"
    if channels is not None:  # the samples are (row, chan) raveled, channels fastest
        a, b = channels
        u, v, w = (np.asarray(x).reshape(-1, nchan)[:, a:b].ravel() for x in (u, v, w))
        n_samples, nchan = n_samples // nchan * (b - a), b - a
    return n_samples, w, u, v, nchan, source


def _operator_stacks(w, nstacks, npix_x, npix_y, cell_rad, eps, oversampling, n_samples):
    """``(nstacks, centres (nstacks,) float64 wavelengths)``: the stacks the
    wstack-wproject operator itself would choose (cost model, k-means, tail splits) from
    the w subsample; its supports come from its real kernel tables."""
    from radimg.ops.geometry import Field, wproject_geometry
    from radimg.ops.wproject import choose_nstacks, stack_centres

    w_abs = np.abs(np.asarray(w, dtype=np.float64))
    if nstacks in (None, "auto"):
        geo = wproject_geometry(Field.of(npix_x, npix_y, cell_rad), eps,
                                oversampling=oversampling)
        nstacks = choose_nstacks(w_abs, geo, n_total=n_samples)
    # k-means on at most _MAX_KMEANS_SAMPLES points (1e6 took ~6 s in the memory check of
    # `radimg run`; the centres move by a small fraction of a stack's width)
    w_fit = w_abs
    if w_abs.size > _MAX_KMEANS_SAMPLES:
        w_fit = np.random.default_rng(0).choice(w_abs, _MAX_KMEANS_SAMPLES, replace=False)
    return nstacks, stack_centres(w_fit, int(nstacks))


def _deconvolution(cfg, fine):
    """The run's deconvolution as :func:`radimg.parallel.plan_memory.deconvolution_bytes`
    takes it (``fine``: the requested (npix_x, npix_y))."""
    d = cfg.get("deconvolution") or {}
    scales = [s for s in (d.get("scales_pix") or []) if s]
    return {"algorithm": d.get("algorithm", "clean"), "npix": tuple(fine),
            "nscales": len(scales)}


def configured_exchange_buffer(cfg):
    """``resources.exchange_buffer`` in bytes, or None (one exchange round): what
    ``radimg run`` gives the distributed operator and the plan replays."""
    return _resource_bytes(cfg, "exchange_buffer")


def _configured_mem_per_rank(cfg):
    """``resources.mem_per_rank`` in bytes, or None."""
    return _resource_bytes(cfg, "mem_per_rank")


def _resource_bytes(cfg, key):
    """``resources.<key>``, a size string (or a number of bytes), in bytes; None if unset."""
    from radimg.config import parse_bytes

    size = (cfg.get("resources") or {}).get(key)
    return parse_bytes(size) if isinstance(size, str) else size


def _wterm_choice(u, v, w, n_samples, npix_x, npix_y, cell_rad, epsilon, precision, wt,
                  small_inversion):
    """radimg.ops.choose on the uvw subsample (wavelengths) standing for ``n_samples``, after
    the samples beyond the user's uv grid are dropped as the run drops them: the table of
    every mode for ``wterm.mode: auto``, the configured mode alone otherwise."""
    from radimg.ops.choose import MODES, choose_wterm, summary_from_wavelengths
    from radimg.ops.weighting import drop_beyond_grid

    u, v, w = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, w))
    uvw = np.stack([u, v, w], axis=1)
    weight = np.ones((uvw.shape[0], 1), dtype=np.float64)
    if uvw.shape[0]:
        drop_beyond_grid(uvw, np.array([C_LIGHT]), weight, npix_x, npix_y, cell_rad)
    keep = weight[:, 0] != 0
    n_kept = int(round(n_samples * keep.mean())) if keep.size else 0
    summ = summary_from_wavelengths(u[keep], v[keep], w[keep], n_kept, npix_x, npix_y,
                                    cell_rad, cell_rad)
    mode = wt.get("mode", "auto")
    ov = wt.get("oversampling", "auto")
    return choose_wterm(summ, npix_x, npix_y, cell_rad, cell_rad, epsilon,
                        precision=precision, modes=MODES if mode == "auto" else (mode,),
                        oversampling=ov if ov == "auto" else float(ov),
                        nstacks=wt.get("nstacks", "auto"), small_inversion=small_inversion,
                        requested=mode)


def _small_geometry(u, v, w, npix_x, npix_y, cell_rad, epsilon, mode, enabled):
    """The coarse geometry ``radimg run`` would pick (radimg.ops.resample) from the uvw
    subsample (wavelengths), after the samples beyond the user's uv grid are dropped as the
    run drops them; None when the layer is off or would not pay. The coarse cells may
    differ per axis (modes none / wstack)."""
    if not enabled or len(w) == 0:
        return None
    from radimg.ops.resample import geometry_from_samples
    from radimg.ops.weighting import drop_beyond_grid

    uvw = np.stack([np.asarray(u), np.asarray(v), np.asarray(w)], axis=1).astype(np.float64)
    freq = np.array([C_LIGHT])  # uvw in wavelengths are the "metres" themselves
    weight = np.ones((uvw.shape[0], 1), dtype=np.float64)
    drop_beyond_grid(uvw, freq, weight, npix_x, npix_y, cell_rad)
    return geometry_from_samples(uvw, freq, weight != 0, npix_x, npix_y, cell_rad, cell_rad,
                                 epsilon, wterm=mode != "none",
                                 square=mode == "wstack-wproject")
