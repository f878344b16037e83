"""The SPMD job behind ``radimg run``: config -> read -> weight -> operator -> images -> product.

Every rank runs this function. Rank ``r`` reads its own row range of the Measurement Set,
the uniform/Briggs density grid is combined with an Allreduce, each rank applies the
measurement operator to its own samples and the partial images are summed (AllSumAll,
Pratley & McEwen 2019 eq. 7). Only rank 0 writes the product, to a temporary name that is
renamed when complete.

User errors (bad config, bad MS, unwritable output) are detected collectively and raised as
the same exception on every rank, so the CLI can exit cleanly with status 2 everywhere.
Anything unexpected on one rank aborts the whole job through the abort handler.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import contextmanager

import numpy as np

from radimg import __version__

ARCSEC = np.pi / (180.0 * 3600.0)


class Timer:
    """Per-stage wall-clock timings (seconds), kept in insertion order."""

    def __init__(self):
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


class CollectiveError(RuntimeError):
    """Raised on ranks that did not see a user error themselves but must stop with it."""


def _collective_check(comm, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 and re-raise any user error on every rank.

    User errors are exceptions that derive from ``ValueError``, ``OSError`` (file exists,
    permission) or ``NotImplementedError``; they become the same exception type on all ranks.
    """
    err = None
    result = None
    if comm.rank == 0:
        try:
            result = fn(*args, **kwargs)
        except (ValueError, OSError, NotImplementedError) as exc:
            err = exc
    err, result = comm.bcast((err, result), root=0)
    if err is not None:
        raise err
    return result


def _any_rank_error(comm, exc):
    """Collective: if any rank saw a user error, raise the first one everywhere."""
    errs = comm.allgather(exc)
    for e in errs:
        if e is not None:
            raise e


def threads_per_rank(comm, requested="auto"):
    """Threads for this rank: the config value, else SLURM_CPUS_PER_TASK, else the cores
    this process may use divided among the ranks that share the node."""
    if requested != "auto":
        return int(requested)
    env = os.environ.get("SLURM_CPUS_PER_TASK")
    if env:
        return max(1, int(env))
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local = node.Get_size()
    node.Free()
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, ncpu // max(1, local))


def _log(comm, verbose, msg):
    if comm.rank == 0 and verbose >= 1:
        print(f"[radimg] {msg}", flush=True)


def _simulate_if_needed(cfg, verbose):
    """Write the simulated MS described by ``cfg['simulate']`` unless an identical one exists."""
    from radimg.config import to_yaml

    ms = cfg["input"]["ms"]
    stamp = os.path.join(ms, "RADIMG_SIMULATE.yaml")
    want = to_yaml({"simulate": cfg["simulate"]})
    if os.path.isdir(ms) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == want:
                return False
    from radimg.sim.simulate import simulate

    simulate(cfg["simulate"], ms, overwrite=True)
    with open(stamp, "w") as f:
        f.write(want)
    return True


def _check_memory_plan(cfg, n_ranks):
    """Refuse a run whose planned memory per rank exceeds ``resources.mem_per_rank``."""
    from radimg.config import ConfigError, parse_bytes
    from radimg.parallel.plan import fits_memory, plan_from_config

    limit = parse_bytes(cfg["resources"]["mem_per_rank"])
    plan = plan_from_config(cfg, n_ranks, limit)
    ok, message = fits_memory(plan, limit)
    if not ok:
        raise ConfigError(
            f"resources.mem_per_rank: the plan for {n_ranks} rank(s) needs more than "
            f"{cfg['resources']['mem_per_rank']} per rank; use more ranks, a smaller image or "
            f"a larger limit.\n{message}"
        )


def _wcs_info(cfg, meta, npix_x, npix_y, cell_rad):
    ra, dec = meta["phase_centre"]
    cell_deg = np.degrees(cell_rad)
    freq = np.asarray(meta["freq"], dtype=float)
    return {
        "ctype": ["RA---SIN", "DEC--SIN"],
        "crval_deg": [float(np.degrees(ra) % 360.0), float(np.degrees(dec))],
        "crpix": [npix_x // 2 + 1, npix_y // 2 + 1],
        "cdelt_deg": [-cell_deg, cell_deg],
        "freq_hz": float(freq.mean()),
        "bmaj_deg": 0.0,
        "bmin_deg": 0.0,
        "bpa_deg": 0.0,
    }


def run(cfg: dict, resume: bool = False, verbose: int = 1, comm=None) -> str | None:
    """Run the imaging job described by the resolved config ``cfg`` on every rank.

    Parameters
    ----------
    cfg : dict
        Resolved configuration (``radimg.config``).
    resume : bool
        Continue from the latest checkpoint (deconvolution).
    verbose : int
        0 quiet, 1 normal, 2 verbose.
    comm : mpi4py communicator, optional
        Defaults to ``MPI.COMM_WORLD``.

    Returns
    -------
    str or None
        The product path on rank 0, None elsewhere.
    """
    from radimg.parallel.mpi import get_comm, install_abort_handler

    if comm is None:
        comm = get_comm()
    install_abort_handler(comm)
    timer = Timer()
    t_start = time.perf_counter()

    from radimg.config import to_yaml
    from radimg.io import ms as msio
    from radimg.io.product import check_output_path, write_product

    out_cfg = cfg["output"]
    img_cfg = cfg["image"]
    in_cfg = cfg["input"]
    wcfg = cfg["wterm"]
    gcfg = cfg["gridder"]

    if gcfg["device"] != "cpu":
        raise NotImplementedError(
            "gridder.device: gpu is not available in this build yet (the CUDA gridder is a "
            "separate issue); use gridder.device: cpu"
        )
    if cfg["deconvolution"]["algorithm"] != "none":
        _collective_check(comm, lambda: None)
        if comm.rank == 0:
            warnings.warn(
                f"deconvolution.algorithm: {cfg['deconvolution']['algorithm']} is not "
                "implemented yet; writing dirty image and PSF only",
                stacklevel=2,
            )

    # Refuse an unusable output before any expensive work.
    _collective_check(comm, check_output_path, out_cfg["path"], out_cfg["overwrite"])

    with timer.stage("simulate"):
        if in_cfg["simulate"]:
            made = _collective_check(comm, _simulate_if_needed, cfg, verbose)
            if made:
                _log(comm, verbose, f"simulated observation written to {in_cfg['ms']}")

    if cfg["resources"].get("mem_per_rank"):
        _collective_check(comm, _check_memory_plan, cfg, comm.size)

    with timer.stage("read"):
        meta = _collective_check(
            comm, msio.ms_metadata, in_cfg["ms"], spw=in_cfg["spw"], field=in_cfg["field"]
        )
        if meta["nrows"] == 0:
            raise msio.MSError(f"{in_cfg['ms']}: the Measurement Set has zero rows")
        start, stop = msio.row_ranges(meta["nrows"], comm.size)[comm.rank]
        err, data = None, None
        try:
            data = msio.read_ms(
                in_cfg["ms"],
                datacolumn=in_cfg["datacolumn"],
                rows=(start, stop),
                chunk_rows=in_cfg["chunk_rows"],
                spw=in_cfg["spw"],
                field=in_cfg["field"],
                precision=gcfg["precision"],
            )
        except (ValueError, OSError) as exc:
            err = exc
        _any_rank_error(comm, err)
        n_bad = comm.allreduce(int(data.n_nonfinite_flagged))
        n_good = comm.allreduce(int(np.count_nonzero(data.weight)))
        n_total = comm.allreduce(int(data.weight.size))
    if n_bad and comm.rank == 0:
        warnings.warn(
            f"{in_cfg['ms']}: {n_bad} visibilities or weights were NaN/Inf and have been flagged",
            stacklevel=2,
        )
    if n_good == 0:
        raise msio.MSError(
            f"{in_cfg['ms']}: every sample is flagged or has zero weight "
            f"(column {in_cfg['datacolumn']}, {n_total} samples); nothing to image"
        )
    from mpi4py import MPI

    _log(comm, verbose, f"read {n_total} samples ({n_good} unflagged) on {comm.size} rank(s)")

    from radimg.config import fft_friendly

    npix_x = int(img_cfg["npix"])
    npix_y = int(img_cfg["npix_y"] or img_cfg["npix"])
    for key, val in (("image.npix", npix_x), ("image.npix_y", npix_y)):
        good = fft_friendly(val)
        if good != val and comm.rank == 0:
            warnings.warn(
                f"{key}: {val} is not FFT-friendly (2^a 3^b 5^c 7^d); rounded up to {good}",
                stacklevel=2,
            )
    npix_x, npix_y = fft_friendly(npix_x), fft_friendly(npix_y)
    cell_rad = float(img_cfg["cell_arcsec"]) * ARCSEC

    nthreads = threads_per_rank(comm, gcfg["nthreads"])
    opkw = dict(
        epsilon=float(wcfg["epsilon"]),
        mode=wcfg["mode"],
        nstacks=wcfg["nstacks"],
        oversampling=float(wcfg["oversampling"]),
        nthreads=nthreads,
        precision=gcfg["precision"],
        fft=gcfg["fft"],
    )
    distributed = wcfg["mode"] in ("none", "wstack")
    with timer.stage("operator setup"):
        if distributed:
            # Pratley & McEwen (2019) sec. 4: rows move so every rank carries the same
            # gridding load; plane owners exchange grid tiles with one Alltoallv per apply.
            from radimg.parallel.operator import DistributedOperator

            op = DistributedOperator(
                comm, data.uvw, data.freq, data.weight, npix_x, npix_y, cell_rad, **opkw
            )
            uvw, weight = op.uvw, op.weight
            vis = op.redistribute_vis(data.vis)
        else:
            uvw, weight, vis = data.uvw, data.weight, data.vis
        del data.vis

    with timer.stage("weights"):
        from radimg.ops.weighting import density_grid, imaging_weights

        scheme = img_cfg["weighting"]
        density = None
        if scheme != "natural":
            local = density_grid(uvw, data.freq, weight, npix_x, npix_y, cell_rad)
            density = np.empty_like(local)
            comm.Allreduce(local, density, op=MPI.SUM)
        wgt = imaging_weights(
            uvw,
            data.freq,
            weight,
            scheme=scheme,
            robust=float(img_cfg["robust"]),
            npix_x=npix_x,
            npix_y=npix_y,
            cell_rad=cell_rad,
            taper_arcsec=float(img_cfg["taper_arcsec"]),
            density=density,
        ).astype(weight.dtype, copy=False)
        wsum = comm.allreduce(float(wgt.sum(dtype=np.float64)))

    if distributed:

        def image_of(v):
            return np.asarray(op.hdot(v, wgt), dtype=np.float64)

    else:
        with timer.stage("operator setup"):
            from radimg.ops.operator import make_operator

            op = make_operator(
                uvw, data.freq, npix_x, npix_y, cell_rad, weight_mask=wgt != 0, **opkw
            )

        def image_of(v):
            img = np.ascontiguousarray(op.hdot(v, wgt), dtype=np.float64)
            out = np.empty_like(img)
            comm.Allreduce(img, out, op=MPI.SUM)  # AllSumAll (eq. 7)
            return out

    with timer.stage("psf"):
        psf = image_of(np.ones_like(vis)) / wsum
    with timer.stage("dirty"):
        dirty = image_of(vis) / wsum
    _log(comm, verbose, f"dirty image peak {dirty.max():.4g} Jy/beam, PSF peak {psf.max():.4f}")

    timings = dict(timer.stages)
    timings["total"] = time.perf_counter() - t_start
    all_timings = comm.gather(timings, root=0)
    n_local = int(np.count_nonzero(wgt))
    lb = comm.gather({"samples": n_local}, root=0)
    lb_dist = op.load_balance() if distributed else None

    product = None
    if comm.rank == 0:
        samples = [d["samples"] for d in lb]
        mean = float(np.mean(samples)) or 1.0
        lb_record = {
            "scheme": "balanced" if distributed else "row-range",
            "samples_per_rank": samples,
            "max_over_mean": float(max(samples) / mean),
        }
        if lb_dist is not None:
            lb_record.update(lb_dist)
            lb_record["max_over_mean"] = lb_dist["load_max_over_mean"]
        wcs_info = _wcs_info(cfg, meta, npix_x, npix_y, cell_rad)
        run_attrs = {
            "config_yaml": to_yaml(cfg),
            "radimg_version": __version__,
            "n_ranks": comm.size,
            "timings_json": json.dumps({"rank0": timings, "per_rank": all_timings}),
            "load_balance_json": json.dumps(lb_record),
        }
        images = {"dirty": dirty.astype(np.float32), "psf": psf.astype(np.float32)}
        product = write_product(
            out_cfg["path"], images, wcs_info, run_attrs, overwrite=out_cfg["overwrite"]
        )
        product = out_cfg["path"] if product is None else product
        if out_cfg.get("fits_dir"):
            from radimg.io.product import export_fits

            export_fits(out_cfg["path"], out_cfg["fits_dir"])
        if verbose >= 1:
            print(_timing_table(all_timings), flush=True)
            print(
                f"[radimg] load balance ({lb_record['scheme']}): samples per rank "
                f"{lb_record['samples_per_rank']}, max/mean load {lb_record['max_over_mean']:.4f}",
                flush=True,
            )
            print(f"[radimg] wrote {out_cfg['path']}", flush=True)
    comm.Barrier()
    return product


def _timing_table(per_rank):
    names = list(per_rank[0].keys())
    head = f"{'stage':<16}" + "".join(f"{'rank ' + str(r):>10}" for r in range(len(per_rank)))
    lines = [head]
    for n in names:
        lines.append(f"{n:<16}" + "".join(f"{t.get(n, 0.0):>9.2f}s" for t in per_rank))
    return "\n".join(lines)
