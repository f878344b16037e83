"""Stage *preflight*: everything a run can refuse before it reads a visibility.

The GPU, ``--resume``'s checkpoint, the outputs (product, checkpoint, FITS directory: never
inside the MS, replaceable), the clean mask, the thread count, the planned memory per rank;
then the leftovers of an interrupted run are removed and, with ``input.simulate``, the
simulated MS is written. Checks of files run on rank 0 and raise the same error on every
rank (:func:`radimg.pipeline.common.collective_check`).
"""

from __future__ import annotations

import os
import warnings

from radimg.pipeline.common import (
    any_rank_error,
    collective_check,
    config_error,
    everywhere,
)
from radimg.progress import log as progress_log


def preflight(job):
    """Run every check (collective), then set ``job.nthreads``, remove stale temporaries and
    simulate the MS when asked (stage ``simulate``)."""
    comm, cfg = job.comm, job.cfg
    if job.use_gpu:
        check_gpu(comm)  # at start-up, before any reading: every rank checks its own GPU
    if job.resume:
        if not job.deconvolves:
            raise everywhere(config_error("--resume needs deconvolution.algorithm clean or admm"))
        collective_check(comm, check_resumable, job.checkpoint_path, cfg)

    # Refuse unusable outputs, masks and thread counts before any expensive work. A resumed
    # run replaces the product its interrupted part wrote.
    collective_check(comm, check_outputs, cfg, job.resume)
    job.nthreads = threads_checked(comm, cfg["gridder"]["nthreads"])
    if comm.rank == 0:
        from radimg.io.product import remove_stale_temporaries

        out_path = cfg["output"]["path"]
        for p in remove_stale_temporaries(out_path) + remove_stale_temporaries(
            job.checkpoint_path
        ):
            job.log(f"removed {p}, left by an interrupted run")

    if cfg["input"]["simulate"]:  # a stage of the table only when there is one
        with job.timer.stage("simulate"):
            if collective_check(comm, simulate_if_needed, cfg, job.verbose):
                job.log(f"simulated observation written to {cfg['input']['ms']}")

    if cfg["resources"].get("mem_per_rank"):
        collective_check(comm, check_memory_plan, cfg, comm.size)


def check_gpu(comm):
    """Collective: every rank's GPU usable, else a ConfigError (naming the rank) everywhere."""
    from radimg.config import ConfigError
    from radimg.gpu._device import GpuUnavailableError, check_gpu_available, select_device

    gpu_err = None
    try:
        check_gpu_available()
        select_device()
    except GpuUnavailableError as exc:
        gpu_err = ConfigError(f"rank {comm.rank}: {exc}")
    any_rank_error(comm, gpu_err)


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
    ranks_on_node = node.Get_size()
    node.Free()
    return max(1, _usable_cores() // max(1, ranks_on_node))


def _usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def threads_checked(comm, requested):
    """:func:`threads_per_rank`, refusing (on every rank) more threads than this rank's
    cores: 1000 threads on 2 cores only thrash."""
    nthreads = threads_per_rank(comm, requested)
    err = None
    if requested != "auto":
        ncpu = _usable_cores()
        if nthreads > ncpu:
            err = config_error(
                f"gridder.nthreads = {nthreads} threads per rank, but rank {comm.rank} may use "
                f"{ncpu} core(s); set gridder.nthreads <= {ncpu} (or auto)"
            )
    any_rank_error(comm, err)
    return nthreads


def image_shape(cfg):
    """(npix_y, npix_x) of the images a run makes: image.npix(_y) rounded up to an
    FFT-friendly size (the run warns when it rounds)."""
    from radimg.config import fft_friendly

    img = cfg["image"]
    return fft_friendly(int(img["npix_y"] or img["npix"])), fft_friendly(int(img["npix"]))


def check_mask(cfg):
    """The clean mask (boxes and file) the run will use, checked before any gridding:
    a readable file of the image's shape, boxes that overlap the image, and at least one
    pixel left to clean. Returns the boolean mask (npix_y, npix_x)."""
    from radimg.config import ConfigError
    from radimg.deconv.image import box_mask, load_mask

    dcfg = cfg["deconvolution"]
    shape = image_shape(cfg)
    ny, nx = shape
    for i, (x0, y0, x1, y1) in enumerate(dcfg["mask_boxes"]):
        if min(x0, x1) >= nx or min(y0, y1) >= ny:
            raise ConfigError(
                f"deconvolution.mask_boxes[{i}] = {[x0, y0, x1, y1]} lies outside the "
                f"{nx} x {ny} image (x = column 0..{nx - 1}, y = row 0..{ny - 1})"
            )
    mask = box_mask(shape, dcfg["mask_boxes"])
    if dcfg["mask_path"]:
        path = dcfg["mask_path"]
        if os.path.isdir(path):
            raise ConfigError(f"deconvolution.mask_path: {path} is a directory, not a mask file")
        try:
            mask &= load_mask(path, shape)
        except (ValueError, OSError) as exc:
            msg = str(exc)
            if not msg.startswith("deconvolution.mask_path"):
                msg = f"deconvolution.mask_path: {path}: {msg}"
            raise ConfigError(msg) from None
    if not mask.any():
        raise ConfigError(
            "the clean mask (deconvolution.mask_boxes and deconvolution.mask_path) selects no "
            "pixel: CLEAN would find nothing to clean"
        )
    return mask


def image_names(cfg):
    """The images the product will hold."""
    names = ["dirty", "psf"]
    if cfg["deconvolution"]["algorithm"] != "none":
        names += ["model", "residual", "restored"]
    return names


def check_fits_dir(cfg):
    """output.fits_dir: outside any MS, a directory (or creatable), and no FITS file there
    that radimg would replace unless radimg wrote it."""
    from radimg.config import ConfigError
    from radimg.io.paths import check_not_inside_table
    from radimg.io.product import check_output_path, fits_targets, is_radimg_fits

    fits_dir = cfg["output"]["fits_dir"]
    if os.path.lexists(fits_dir) and not os.path.isdir(fits_dir):
        raise ConfigError(f"output.fits_dir: {fits_dir} exists and is not a directory")
    check_not_inside_table(os.path.join(fits_dir, "x.fits"), "output.fits_dir")
    for target in fits_targets(cfg["output"]["path"], fits_dir, image_names(cfg)).values():
        check_output_path(target, True, what="output.fits_dir", replaceable=is_radimg_fits)


def check_outputs(cfg, resume):
    """Checks of everything a run will write or read besides the MS, before any work
    (rank 0; :func:`collective_check` raises the same error on every rank)."""
    from radimg.config import ConfigError, ms_paths
    from radimg.deconv.checkpoint import checkpoint_path
    from radimg.io.paths import same_or_inside
    from radimg.io.product import check_output_path

    out = cfg["output"]
    dcfg = cfg["deconvolution"]
    mss = ms_paths(cfg["input"]["ms"])
    deconvolves = dcfg["algorithm"] != "none"
    writes = {"output.path": out["path"]}
    if deconvolves and (out["checkpoint"] or dcfg["stop_after_major"] > 0):
        writes["the checkpoint (output.path + .ckpt.h5)"] = checkpoint_path(out["path"])
    if out["fits_dir"]:
        writes["output.fits_dir"] = out["fits_dir"]
    for what, path in writes.items():
        for ms in mss:
            if same_or_inside(path, ms) or same_or_inside(ms, path):
                raise ConfigError(
                    f"{what} {path} and input.ms {ms} overlap; radimg never writes into (or "
                    "over) the Measurement Set it images"
                )
    check_output_path(out["path"], out["overwrite"] or resume)
    if out["fits_dir"] and os.path.realpath(out["path"]) == os.path.realpath(out["fits_dir"]):
        raise ConfigError(f"output.fits_dir and output.path are the same path: {out['path']}")
    for what, path in writes.items():
        if what.startswith("the checkpoint"):
            check_output_path(path, True, what=what)
    if out["fits_dir"]:
        check_fits_dir(cfg)
    check_deconvolvable(cfg)
    if dcfg["algorithm"] == "clean":
        check_mask(cfg)


def check_deconvolvable(cfg):
    """A cube (several Stokes parameters or output channels) is deconvolved image by image
    (CLEAN or ADMM, as WSClean's ``-channels-out`` without ``-join-channels``) or with
    joined channels and/or polarisations (radimg.deconv.joined: joined Hogbom CLEAN; no
    ADMM, Clark, multiscale or auto-mask there yet); neither writes checkpoints, so
    stop_after_major is refused for cubes; ADMM (x >= 0) of a Stokes parameter that may be
    negative is refused."""
    from radimg.config import ConfigError, stokes_products

    dcfg = cfg["deconvolution"]
    algo = dcfg["algorithm"]
    if algo == "none":
        return
    img = cfg["image"]
    pols = stokes_products(img["stokes"])
    cube = len(pols) > 1 or img["channels_out"] > 1
    joined = dcfg["join_channels"] or dcfg["join_polarizations"]
    if cube and not joined and dcfg["stop_after_major"] > 0:
        raise ConfigError(
            f"deconvolution.stop_after_major > 0: image.stokes = {img['stokes']} and "
            f"image.channels_out = {img['channels_out']} make a cube, deconvolved image by "
            "image without checkpoints; set deconvolution.stop_after_major: 0"
        )
    if cube and joined:
        unsupported = [
            (algo == "admm", "deconvolution.algorithm = admm (use clean)"),
            (dcfg["minor"] == "clark", "deconvolution.minor = clark (use hogbom)"),
            (any(s > 0 for s in dcfg["scales_pix"]), "deconvolution.scales_pix with a "
             "scale > 0 (multiscale; use [0])"),
            (dcfg["auto_mask"] > 0, "deconvolution.auto_mask > 0 (use 0, or a mask)"),
            (dcfg["stop_after_major"] > 0, "deconvolution.stop_after_major > 0 (joined runs "
             "write no checkpoint)"),
        ]
        bad = [what for cond, what in unsupported if cond]
        if bad:
            raise ConfigError(
                "joined deconvolution (deconvolution.join_channels / join_polarizations) is "
                "Hogbom CLEAN only; not available with " + "; ".join(bad)
            )
    if algo == "admm" and pols[0] in ("Q", "U", "V", "XY", "YX", "RL", "LR"):
        raise ConfigError(
            f"deconvolution.algorithm = admm constrains the sky to x >= 0, but image.stokes = "
            f"{pols[0]} may be negative; use deconvolution.algorithm: clean (it cleans "
            "negative peaks too) or none"
        )


def check_resumable(ckpt_path, cfg):
    """A resume needs a checkpoint of the same algorithm and image geometry."""
    import yaml

    from radimg.config import defaults, stokes_products
    from radimg.deconv.checkpoint import read_checkpoint

    dcfg, img = cfg["deconvolution"], cfg["image"]
    cube = len(stokes_products(img["stokes"])) > 1 or img["channels_out"] > 1
    if cube and (dcfg["join_channels"] or dcfg["join_polarizations"]):
        raise config_error(
            "--resume: joined deconvolution (deconvolution.join_channels / "
            "join_polarizations) writes no checkpoint and cannot resume; run it again "
            "without --resume"
        )
    if cube:
        raise config_error(
            "--resume: a cube (image.stokes / image.channels_out) is deconvolved image by "
            "image without checkpoints and cannot resume; run it again without --resume"
        )
    if not os.path.exists(ckpt_path):
        raise config_error(
            f"--resume: no checkpoint {ckpt_path} (output.path + .ckpt.h5); run without --resume"
        )
    try:
        ck = read_checkpoint(ckpt_path)
    except (KeyError, ValueError, OSError) as exc:
        raise config_error(f"--resume: cannot read checkpoint {ckpt_path}: {exc}") from None
    old = yaml.safe_load(ck["config_yaml"]) or {}
    for sect, key in (
        ("deconvolution", "algorithm"),
        ("image", "npix"),
        ("image", "npix_y"),
        ("image", "cell_arcsec"),
        ("image", "weighting"),
        ("image", "stokes"),
        ("image", "phase_centre"),
        ("input", "ms"),
        ("input", "spw"),
        ("input", "chan_range"),
        ("input", "uv_range_lambda"),
    ):
        # a checkpoint older than a key holds its default (issue #15 added the selection's)
        then = old.get(sect, {}).get(key, defaults()[sect][key])
        now = cfg[sect][key]
        if then != now:
            raise config_error(
                f"--resume: {sect}.{key} is {now!r} but the checkpoint {ckpt_path} was made "
                f"with {then!r}"
            )


def simulate_if_needed(cfg, verbose):
    """Write the simulated MS described by ``cfg['simulate']`` when ``input.ms`` does not
    hold it yet; returns True when it wrote one.

    radimg replaces only an MS that it simulated itself (marker keyword), and only with
    ``output.overwrite``. An existing path that radimg did not simulate (a real
    observation, say, with ``--set input.ms=obs.ms`` on the demo config) is never touched:
    it is imaged as it is, and the run says so.
    """
    from radimg.config import ConfigError, to_yaml
    from radimg.io.ms_write import radimg_ms_marker

    ms = cfg["input"]["ms"]
    want = to_yaml({"simulate": cfg["simulate"]})
    if os.path.lexists(ms):
        have = radimg_ms_marker(ms)
        if have is None:
            warnings.warn(
                f"input.simulate is true but input.ms {ms} exists and was not simulated by "
                "radimg: imaging it as it is (radimg never replaces it)",
                stacklevel=2,
            )
            return False
        if have == want:
            return False
        if not cfg["output"]["overwrite"]:
            raise ConfigError(
                f"input.ms {ms} is an MS radimg simulated from another simulate: section; "
                "set output.overwrite: true to replace it, or choose another input.ms"
            )
    from radimg.sim.simulate import simulate

    simulate(cfg["simulate"], ms, overwrite=True, marker=want,
             log=lambda msg: progress_log(0, verbose, msg))
    return True


def check_memory_plan(cfg, n_ranks):
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
