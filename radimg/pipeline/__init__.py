"""The SPMD job behind ``radimg run``: config -> read -> weight -> operator -> images -> product.

Every rank runs this function. Rank ``r`` reads its own row range of the Measurement Set,
the uniform/Briggs density grid is combined with an Allreduce, each rank applies the
measurement operator to its own samples and the partial images are summed (AllSumAll,
Pratley & McEwen 2019 eq. 7). Only rank 0 writes the product, to a temporary name that is
renamed when complete.

User errors (bad config, bad MS, unwritable output) are detected collectively and raised as
the same exception on every rank, so the CLI can exit cleanly with status 2 everywhere.
Anything unexpected on one rank aborts the whole job (``abort_on_exception``): the rank's
traceback, prefixed ``[rank R/N]``, then ``MPI_Abort``, so no rank waits in a collective.

SIGTERM/SIGUSR1 (Slurm's time limit, ``--signal=USR1@T``) on any rank: during deconvolution
every rank stops after the same major cycle, a complete checkpoint is written and the run
raises :class:`JobInterrupted` (the CLI exits 3 and says how to resume); before that
(reading, gridding) the job ends at once with exit 128 + signal number and no product
(``radimg.parallel.mpi.StopSignals``).

Progress and timings: rank 0 reports long stages (``radimg.progress.Progress``: a redrawn
line on a terminal, periodic plain lines in batch); every rank's ``StageTimer`` records
seconds per stage, peak memory and counters, printed as one table at the end and stored in
the product's ``/run`` ``timings_json``.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from radimg import __version__
from radimg.progress import Progress, StageTimer, records_table, timings_record
from radimg.progress import log as progress_log

ARCSEC = np.pi / (180.0 * 3600.0)

#: Exit status of a run stopped by SIGTERM/SIGUSR1 after writing a checkpoint (cli.py).
EXIT_INTERRUPTED = 3

#: Test-only fault injection (tests/test_failure.py), e.g. "rank=1,stage=dirty" (raise
#: RuntimeError; "error=NotImplementedError" for that type) or "rank=all,stage=major,sleep=1.5"
#: (slow every major cycle). Never set it in production.
FAULT_ENV = "RADIMG_FAULT_INJECT"


def _fault_point(rank, stage):
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kv = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if kv.get("stage") != stage or kv.get("rank", "all") not in ("all", str(rank)):
        return
    if "sleep" in kv:
        time.sleep(float(kv["sleep"]))
        return
    error = {"NotImplementedError": NotImplementedError}.get(kv.get("error"), RuntimeError)
    raise error(
        f"{FAULT_ENV}: injected fault on rank {rank} at stage {stage!r} (t={time.time():.3f})"
    )


class JobInterrupted(Exception):
    """A stop signal ended the run after a complete checkpoint (every rank raises it).

    ``signal_name``, ``checkpoint`` (path), ``exit_code`` (:data:`EXIT_INTERRUPTED`) and
    ``rank`` (the CLI prints the message on rank 0 only).
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message, *, signal_name, checkpoint, rank):
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        self.rank = rank


def _collective_check(comm, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 and re-raise any user error on every rank
    (:func:`radimg.parallel.mpi.check_on_root`)."""
    from radimg.parallel.mpi import check_on_root

    return check_on_root(comm, fn, *args, **kwargs)


def _any_rank_error(comm, exc):
    """Collective: if any rank saw a user error, raise the first one everywhere."""
    from radimg.parallel.mpi import raise_from_any_rank

    raise_from_any_rank(comm, exc)


def _agreed(comm, build):
    """``build()`` on every rank; a user error it raises (a geometry the config cannot
    have, decided from globally reduced values, so every rank raises it at the same point)
    ends every rank with the first rank's error instead of leaving the others waiting."""
    from radimg.config import ConfigError

    err = result = None
    try:
        result = build()
    except ConfigError as exc:
        err = exc
    _any_rank_error(comm, err)
    return result


def _everywhere(exc):
    """A user error that every rank raises alike (decided from replicated data)."""
    from radimg.parallel.mpi import everywhere

    return everywhere(exc)


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


def _threads_checked(comm, requested):
    """:func:`threads_per_rank`, refusing (on every rank) more threads than this rank's
    cores: 1000 threads on 2 cores only thrash."""
    from radimg.config import ConfigError

    n = threads_per_rank(comm, requested)
    err = None
    if requested != "auto":
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if n > ncpu:
            err = ConfigError(
                f"gridder.nthreads = {n} threads per rank, but rank {comm.rank} may use "
                f"{ncpu} core(s); set gridder.nthreads <= {ncpu} (or auto)"
            )
    _any_rank_error(comm, err)
    return n


def image_shape(cfg):
    """(npix_y, npix_x) of the images a run makes: image.npix(_y) rounded up to an
    FFT-friendly size (the run warns when it rounds)."""
    from radimg.config import fft_friendly

    img = cfg["image"]
    return fft_friendly(int(img["npix_y"] or img["npix"])), fft_friendly(int(img["npix"]))


def _check_mask(cfg):
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


def _check_fits_dir(cfg):
    """output.fits_dir: outside any MS, a directory (or creatable), and no FITS file there
    that radimg would replace unless radimg wrote it."""
    from radimg.config import ConfigError
    from radimg.io.paths import check_not_inside_table
    from radimg.io.product import check_output_path, fits_targets, is_radimg_fits

    d = cfg["output"]["fits_dir"]
    if os.path.lexists(d) and not os.path.isdir(d):
        raise ConfigError(f"output.fits_dir: {d} exists and is not a directory")
    check_not_inside_table(os.path.join(d, "x.fits"), "output.fits_dir")
    for target in fits_targets(cfg["output"]["path"], d, _image_names(cfg)).values():
        check_output_path(target, True, what="output.fits_dir", replaceable=is_radimg_fits)


def _image_names(cfg):
    names = ["dirty", "psf"]
    if cfg["deconvolution"]["algorithm"] != "none":
        names += ["model", "residual", "restored"]
    return names


def _preflight(cfg, resume):
    """Checks of everything a run will write or read besides the MS, before any work
    (rank 0; :func:`_collective_check` raises the same error on every rank)."""
    from radimg.config import ConfigError
    from radimg.deconv.checkpoint import checkpoint_path
    from radimg.io.paths import same_or_inside
    from radimg.io.product import check_output_path

    out = cfg["output"]
    dcfg = cfg["deconvolution"]
    ms = cfg["input"]["ms"]
    deconvolve = dcfg["algorithm"] != "none"
    writes = {"output.path": out["path"]}
    if deconvolve and (out["checkpoint"] or dcfg["stop_after_major"] > 0):
        writes["the checkpoint (output.path + .ckpt.h5)"] = checkpoint_path(out["path"])
    if out["fits_dir"]:
        writes["output.fits_dir"] = out["fits_dir"]
    for what, path in writes.items():
        if same_or_inside(path, ms) or same_or_inside(ms, path):
            raise ConfigError(
                f"{what} {path} and input.ms {ms} overlap; radimg never writes into (or over) "
                "the Measurement Set it images"
            )
    check_output_path(out["path"], out["overwrite"] or resume)
    if out["fits_dir"] and os.path.realpath(out["path"]) == os.path.realpath(out["fits_dir"]):
        raise ConfigError(f"output.fits_dir and output.path are the same path: {out['path']}")
    for what, path in writes.items():
        if what.startswith("the checkpoint"):
            check_output_path(path, True, what=what)
    if out["fits_dir"]:
        _check_fits_dir(cfg)
    if dcfg["algorithm"] == "clean":
        _check_mask(cfg)


def _log(comm, verbose, msg):
    progress_log(comm.rank, verbose, msg)


def _log_small_inversion(comm, verbose, op):
    """One line on the geometry the small-inversion layer chose (radimg.ops.resample)."""
    g = getattr(op, "small_geometry", None)
    if g is not None:
        d = g.describe()
        _log(comm, verbose, "small inversion: gridding {} x {} pixels of {:.4g} x {:.4g} arcsec "
             "(field period {} x {} pixels)".format(*d["coarse_npix"][::-1],
                                                    *d["coarse_cell_arcsec"][::-1],
                                                    *d["fine_period"][::-1]))


def _choose_wterm(comm, cfg, data, npix_x, npix_y, cell_rad, oversampling):
    """``wterm.mode: auto``: radimg.ops.choose's decision, the same on every rank
    (collective; rank 0 decides from global values and broadcasts)."""
    from radimg.ops.choose import decide

    return decide(comm, data.uvw, data.freq, data.weight != 0, npix_x, npix_y, cell_rad,
                  cell_rad, float(cfg["wterm"]["epsilon"]),
                  precision=cfg["gridder"]["precision"], oversampling=oversampling,
                  nstacks=cfg["wterm"]["nstacks"],
                  small_inversion=bool(cfg["image"]["small_inversion"]))


def _operator_record(requested, opkw, op, choice):
    """``/run`` ``operator_json``: the w-term mode run (and asked for), the geometry the
    operator built, and with ``wterm.mode: auto`` the chooser's table."""
    from radimg.ops.resample import SmallInversion

    inner = op.op if isinstance(op, SmallInversion) else op  # the (distributed) operator
    serial = getattr(inner, "op", inner)  # DistributedOperator -> its serial operator
    small = getattr(op, "small_geometry", None)
    rec = {
        "requested_mode": requested,
        "mode": opkw["mode"],
        "epsilon": opkw["epsilon"],
        "oversampling": getattr(inner, "oversampling", opkw["oversampling"]),
        "oversampling_w": getattr(serial, "oversampling_w", None)
        if opkw["mode"] == "wstack" else None,
        "nplanes": getattr(inner, "nplanes", getattr(inner, "nstacks", None)),
        "small_inversion": None if small is None else small.describe(),
        "choice": None if choice is None else choice.describe(),
    }
    return {k: (float(v) if isinstance(v, np.floating) else
                int(v) if isinstance(v, np.integer) else v) for k, v in rec.items()}


def _simulate_if_needed(cfg, verbose):
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


def _drop_beyond_uv_grid(comm, data, npix_x, npix_y, cell_rad, cell_arcsec):
    """Give weight 0 to the samples beyond the uv grid, as WSClean does (issue #12), and
    count them; warn (rank 0) when there are any.

    Samples with ``|u|`` or ``|v|`` beyond ``1 / (2 cell)`` fall outside both the weight
    grid and the imaging grid (whose uv extent does not depend on the padding): gridded,
    they would fold back (alias) onto shorter spacings and, under uniform/Briggs, carry
    their raw natural weight beside density-normalised ones. They are dropped before the
    operator is built, so they take no part in gridding, load balancing or normalisation at
    any rank count (radimg.ops.weighting.drop_beyond_grid, docs/internals.md). Returns the
    summary recorded in the product's ``weighting_json``."""
    from mpi4py import MPI

    from radimg.ops.weighting import WEIGHT_PADDING, drop_beyond_grid, weight_grid

    grid = weight_grid(npix_x, npix_y, cell_rad, WEIGHT_PADDING)
    n_before = int(np.count_nonzero(data.weight))
    n_drop, n_rows = drop_beyond_grid(data.uvw, data.freq, data.weight, npix_x, npix_y, cell_rad)
    lam = 299792458.0 / float(np.max(data.freq))
    uv = np.abs(data.uvw[:, :2]).max(axis=1) / lam if data.uvw.size else np.zeros(0)
    counts = comm.allreduce(
        np.array([n_drop, n_rows, n_before, uv.size], dtype=np.int64), op=MPI.SUM
    )
    n_drop, n_rows, n_before, n_rows_all = (int(c) for c in counts)
    uv_max = comm.allreduce(float(uv.max()) if uv.size else 0.0, op=MPI.MAX)
    umax = grid.uv_max_lambda[0]
    need = f"{umax / uv_max * cell_arcsec:.3g}" if uv_max > 0 else "a smaller"
    if n_drop == n_before:
        raise _everywhere(_config_error(
            f"image.cell_arcsec: {cell_arcsec:g} arcsec: every one of the {n_before} unflagged "
            f"samples lies beyond the uv grid (which holds |u|, |v| < {umax:.0f} wavelengths "
            "at this cell); "
            f"nothing to image. The longest baselines ({uv_max:.0f} wavelengths) need cells "
            f"<= {need} arcsec."
        ))
    if n_drop and comm.rank == 0:
        warnings.warn(
            f"image.cell_arcsec: {cell_arcsec:g} arcsec is too coarse for the longest "
            f"baselines ({uv_max:.0f} wavelengths need <= {need} arcsec): {n_drop} of "
            f"{n_before} unflagged samples ({n_rows} of {n_rows_all} rows) lie beyond the uv "
            f"grid (which holds |u|, |v| < {umax:.0f} wavelengths at this cell) and are left "
            "out, as WSClean does, rather than aliased; the PSF is undersampled. Use a smaller "
            "cell to image them.",
            stacklevel=3,
        )
    return {
        **grid.summary(),
        "padding": WEIGHT_PADDING,
        "samples_unflagged": n_before,
        "samples_beyond_uv_grid": n_drop,
        "rows_beyond_uv_grid": n_rows,
    }


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
        # what the FITS export needs besides the WCS (radimg.io.product.OBS_KEYS)
        "bandwidth_hz": float(meta.get("bandwidth_hz", 0.0)),
        "stokes": "I",
        "date_obs": str(meta.get("date_obs", "")),
        "telescope": str(meta.get("telescope", "")),
        "observer": str(meta.get("observer", "")),
        "field_name": str(meta.get("field_name", "")),
    }


def _config_error(msg):
    from radimg.config import ConfigError

    return ConfigError(msg)


def _check_resumable(ckpt_path, cfg):
    """A resume needs a checkpoint of the same algorithm and image geometry."""
    import yaml

    from radimg.deconv.checkpoint import read_checkpoint

    if not os.path.exists(ckpt_path):
        raise _config_error(
            f"--resume: no checkpoint {ckpt_path} (output.path + .ckpt.h5); run without --resume"
        )
    try:
        ck = read_checkpoint(ckpt_path)
    except (KeyError, ValueError, OSError) as exc:
        raise _config_error(f"--resume: cannot read checkpoint {ckpt_path}: {exc}") from None
    old = yaml.safe_load(ck["config_yaml"]) or {}
    for sect, key in (
        ("deconvolution", "algorithm"),
        ("image", "npix"),
        ("image", "npix_y"),
        ("image", "cell_arcsec"),
        ("image", "weighting"),
        ("input", "ms"),
    ):
        a = old.get(sect, {}).get(key)
        b = cfg[sect][key]
        if a != b:
            raise _config_error(
                f"--resume: {sect}.{key} is {b!r} but the checkpoint {ckpt_path} was made "
                f"with {a!r}"
            )


def _loop_end(state):
    if state.get("interrupted"):
        return "(interrupted)"
    return "(stopped early)" if state.get("stopped") else "(done)"


def _deconvolve(ctx, dirty, psf, timer):
    """CLEAN (Cotton-Schwab) or ADMM on the distributed operator; returns
    ({model, residual, restored}, extra /run attributes). The restoring beam is
    ``ctx["beam"]``, fitted when the PSF was made."""
    from radimg.config import to_yaml
    from radimg.deconv.checkpoint import read_checkpoint, write_checkpoint
    from radimg.deconv.image import box_mask, load_mask, restore
    from radimg.parallel.mpi import bcast_array

    comm, cfg, op, vis = ctx["comm"], ctx["cfg"], ctx["op"], ctx["vis"]
    dcfg = cfg["deconvolution"]
    image_of, wsum = ctx["image_of"], ctx["wsum"]
    shape = dirty.shape
    verbose = ctx["verbose"]
    do_ckpt = bool(cfg["output"]["checkpoint"]) or dcfg["stop_after_major"] > 0
    signals = ctx["signals"]
    written = {"at": None}  # counters of the latest checkpoint written

    def log(msg):
        _log(comm, verbose, msg)

    def stop_check():
        # Collective (the loop calls it on every rank after a checkpoint): Allreduce(MAX)
        # of the stop-signal flags, so every rank stops after the same cycle.
        return signals.stop_requested()

    def interrupted(at):
        return JobInterrupted(
            f"stopped by {signals.signal_name()} after {at}; the checkpoint "
            f"{ctx['ckpt_path']} is complete",
            signal_name=signals.signal_name(),
            checkpoint=ctx["ckpt_path"],
            rank=comm.rank,
        )

    rdt = np.real(vis).dtype

    def predict(model):
        with timer.stage("major: predict"):
            return op.dot(np.ascontiguousarray(model, dtype=rdt))

    def residual_of(model, predict=predict):
        if getattr(op, "resident", False):  # GPU (issue #7): one image in, one image out
            with timer.stage("major: residual"):
                m = np.ascontiguousarray(model, dtype=np.float64)
                return image_of(None, local=lambda: op.residual_image(m)) / wsum
        r = vis - predict(model)
        with timer.stage("major: image"):
            return image_of(r) / wsum

    run_attrs = {
        "config_yaml": to_yaml(cfg),
        "n_ranks": comm.size,
        "timings_json": "{}",
        "load_balance_json": "{}",
    }
    ck = None
    if ctx["resume"]:
        ck = read_checkpoint(ctx["ckpt_path"], row_id=ctx["row_id"], vis_names=("z",))
        log(f"resuming from {ctx['ckpt_path']}: {ck['counters']}")

    if dcfg["algorithm"] == "clean":
        from radimg.deconv.major import cotton_schwab, new_clean_state

        def user_mask():
            m = box_mask(shape, dcfg["mask_boxes"])
            if dcfg["mask_path"]:
                m &= load_mask(dcfg["mask_path"], shape)
            return m

        mask = _collective_check(comm, user_mask)
        # A CLEAN model has few components: predict them by a direct Fourier transform
        # while that is faster than the gridded op.dot (radimg.deconv.predict; same choice
        # on every rank). Not for the GPU's resident operator (its residual stays there).
        clean_predict, chooser = predict, None
        if (dcfg.get("predict", "auto") != "operator" and not getattr(op, "resident", False)
                and hasattr(op, "uvw") and hasattr(op, "freq")):
            from radimg.deconv.predict import MajorPredict

            chooser = MajorPredict(op, np.radians(ctx["cell_deg"]), comm=comm,
                                   nthreads=ctx.get("nthreads", 1), dtype=vis.dtype,
                                   mode=dcfg.get("predict", "auto"))

            def clean_predict(model):
                with timer.stage("major: predict"):
                    return chooser(np.ascontiguousarray(model, dtype=rdt))

        if ck is None:
            state, residual = new_clean_state(shape), dirty.copy()
        else:
            c = ck["counters"]
            am = ck["extras"].get("auto_mask")
            state = {
                "model": ck["image"],
                "nmajor": int(c["nmajor"]),
                "iters": int(c["iters"]),
                "auto_mask": None if am is None else np.asarray(am).astype(bool),
                "done": bool(c["done"]),
                "reached": c.get("reached"),  # absent in checkpoints before the stop rule
            }
            residual = residual_of(state["model"], clean_predict)

        def write_ckpt(st):
            arrays = (
                {} if st["auto_mask"] is None else {"auto_mask": st["auto_mask"].astype(np.uint8)}
            )
            counters = {
                "algorithm": "clean",
                "nmajor": st["nmajor"],
                "iters": st["iters"],
                "done": st["done"],
                "reached": st["reached"],
            }
            with timer.stage("checkpoint"):
                write_checkpoint(
                    comm,
                    ctx["ckpt_path"],
                    image=st["model"],
                    wcs_info=ctx["wcs_info"],
                    run_attrs=run_attrs,
                    counters=counters,
                    arrays=arrays,
                )
            written["at"] = ("clean", st["nmajor"], st["iters"])

        def on_ckpt(st):
            if do_ckpt:
                write_ckpt(st)

        prog = Progress(comm.rank, dcfg["nmajor"], "major cycle", verbose=verbose)
        prog.n = state["nmajor"]

        def cycle_residual(model):
            _fault_point(comm.rank, "major")
            r = residual_of(model, clean_predict)
            timer.count("major cycles")
            prog.update(1)
            return r

        model, residual, state = cotton_schwab(
            cycle_residual,
            residual,
            psf,
            dcfg,
            comm=comm,
            user_mask=mask,
            state=state,
            on_checkpoint=on_ckpt,
            stop_check=stop_check,
            log=lambda msg: prog.note(msg, level=1, labelled=False),
        )
        prog.close(_loop_end(state))
        if chooser is not None:
            timer.set_counter("predicts by DFT", chooser.used["dft"])
        if state.get("interrupted"):
            if written["at"] != ("clean", state["nmajor"], state["iters"]):
                write_ckpt(state)
            raise interrupted(f"major cycle {state['nmajor']}")
        summary = {
            "algorithm": "clean",
            "major_cycles": state["nmajor"],
            "components": state["iters"],
            "stopped_early": state["stopped"],
        }
        log(f"CLEAN: {state['iters']} components in {state['nmajor']} major cycles")
    else:
        from radimg.deconv.admm import SARA, admm, epsilon_bound, power_norm

        weight = np.asarray(ctx["weight"], dtype=np.float64)
        if dcfg["admm_sigma_jy"] > 0:
            sw = np.where(weight > 0, 1.0 / dcfg["admm_sigma_jy"], 0.0)
        else:
            sw = np.sqrt(np.clip(weight, 0.0, None))  # WEIGHT = 1 / sigma^2
        sw = np.where(ctx["wgt"] != 0, sw, 0.0)
        m = comm.allreduce(int(np.count_nonzero(sw)))
        eps = epsilon_bound(m)
        resident = getattr(op, "resident", False)
        if resident:
            # GPU (issue #7): y_w, z and the residuals stay on the device; per iteration one
            # image goes in (wdot) and one comes out (whdot)
            xp, y_w = op.xp, op.set_whitening(sw)

            def fwd(x):
                with timer.stage("major: predict"):
                    return op.wdot(x)

            def adj(v):
                with timer.stage("major: image"):
                    return image_of(None, local=lambda: op.whdot(v))

        else:
            xp, y_w = np, sw * vis

            def fwd(x):
                return sw * predict(x)

            def adj(v):
                with timer.stage("major: image"):
                    return image_of(v, sw)

        sara = SARA(shape, levels=dcfg["admm_levels"], comm=comm)
        state = None
        if ck is None:
            with timer.stage("power method"):
                op_norm = power_norm(fwd, adj, shape, comm=comm, niter=dcfg["admm_power_iters"])
        else:
            c, ex = ck["counters"], ck["extras"]
            op_norm = float(c["op_norm"])
            state = {
                "x": ck["image"],
                "z": op.vis_to_device(ex["z"]) if resident else ex["z"].astype(y_w.dtype),
                "u": {b: np.asarray(ex[f"u/{b}"], dtype=np.float64) for b in sara.mine},
                "weights": None
                if not c["reweighted"]
                else {b: np.asarray(ex[f"weights/{b}"], dtype=np.float64) for b in sara.mine},
                "it": int(c["it"]),
                "round": int(c["round"]),
                "tau": float(c["tau"]),
                "done": bool(c["done"]),
            }
        log(f"ADMM: ||Phi_w||^2 = {op_norm:.6g}, epsilon = {eps:.6g} ({m} samples)")

        def write_ckpt(st):
            per_rank = {f"u/{b}": st["u"][b] for b in sara.mine}
            if st["weights"] is not None:
                per_rank.update({f"weights/{b}": st["weights"][b] for b in sara.mine})
            counters = {
                "algorithm": "admm",
                "it": st["it"],
                "round": st["round"],
                "tau": st["tau"],
                "done": st["done"],
                "op_norm": op_norm,
                "reweighted": st["weights"] is not None,
            }
            with timer.stage("checkpoint"):
                write_checkpoint(
                    comm,
                    ctx["ckpt_path"],
                    image=st["x"],
                    wcs_info=ctx["wcs_info"],
                    run_attrs=run_attrs,
                    counters=counters,
                    per_rank=per_rank,
                    vis_arrays={"z": op.vis_to_host(st["z"]) if resident else st["z"]},
                    row_id=ctx["row_id"],
                    nrows_total=ctx["nrows_total"],
                )
            written["at"] = ("admm", st["it"], st["round"])

        def on_ckpt(st):
            if do_ckpt:
                write_ckpt(st)

        prog = Progress(comm.rank, dcfg["niter"], "ADMM iteration", verbose=verbose)
        prog.n = 0 if state is None else state["it"]
        fwd_calls = [0]

        def fwd_loop(x):
            # admm() calls fwd once before its loop, then once per iteration
            fwd_calls[0] += 1
            if fwd_calls[0] > 1:
                _fault_point(comm.rank, "major")
                timer.count("ADMM iterations")
            out = fwd(x)
            if fwd_calls[0] > 1:
                prog.update(1)
            return out

        model, state = admm(
            fwd_loop,
            adj,
            y_w,
            shape,
            eps=eps,
            op_norm=op_norm,
            comm=comm,
            sara=sara,
            niter=dcfg["niter"],
            tol=dcfg["admm_tol"],
            kappa=dcfg["admm_kappa"],
            dual_iters=dcfg["admm_dual_iters"],
            reweights=dcfg["admm_reweights"],
            state=state,
            checkpoint_every=dcfg["checkpoint_every"] if do_ckpt else 0,
            on_checkpoint=on_ckpt,
            stop_after=dcfg["stop_after_major"],
            stop_check=stop_check,
            log=lambda msg: prog.note(msg, level=1, labelled=False),
            xp=xp,
        )
        prog.close(_loop_end(state))
        if state.get("interrupted"):
            if written["at"] != ("admm", state["it"], state["round"]):
                write_ckpt(state)
            raise interrupted(f"ADMM iteration {state['it']}")
        residual = residual_of(model)
        summary = {
            "algorithm": "admm",
            "iterations": state["it"],
            "epsilon": eps,
            "op_norm": op_norm,
            "stopped_early": state["stopped"],
            "converged": state["done"],
        }
        log(f"ADMM: {state['it']} iterations, converged {state['done']}")
    if state["stopped"]:
        log(
            f"stopped early as deconvolution.stop_after_major asks; continue with --resume "
            f"(checkpoint {ctx['ckpt_path']})"
        )

    with timer.stage("restore"):
        # the beam fitted right after the PSF was made (_run)
        beam = ctx["beam"]
        restored = restore(model, residual, beam, ctx["cell_deg"]) if comm.rank == 0 else None
    model = bcast_array(comm, np.ascontiguousarray(model, dtype=np.float64))
    images = {"model": model, "residual": residual, "restored": restored}
    return images, {"deconvolution_json": json.dumps(summary)}


def _user_errors():
    """Exceptions raised collectively (the same on every rank): they may propagate to the
    CLI on every rank without any rank left waiting."""
    from radimg.config import ConfigError
    from radimg.io.ms import MSError
    from radimg.io.product import ProductError

    return (
        JobInterrupted,
        ConfigError,
        MSError,
        ProductError,
        FileExistsError,
        FileNotFoundError,
        PermissionError,
        NotADirectoryError,
        NotImplementedError,
    )


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

    Raises
    ------
    JobInterrupted
        On every rank, when SIGTERM/SIGUSR1 stopped deconvolution after a checkpoint.
    ConfigError, MSError, ProductError, OSError, NotImplementedError
        User errors, raised on every rank alike. Any other exception on a rank of a
        multi-rank job is reported with its rank and aborts the job (``MPI_Abort(1)``).
    """
    from radimg.parallel.mpi import (
        StopSignals,
        abort_on_exception,
        get_comm,
        install_abort_handler,
    )

    if comm is None:
        comm = get_comm()
    install_abort_handler(comm)
    timer = StageTimer(startup=True)  # + the process's start-up before this call
    signals = StopSignals(comm).install()
    try:
        return _run(cfg, resume, verbose, comm, timer, signals)
    except NotImplementedError as exc:
        # An option combination this build lacks: the user changes the config (exit 2).
        keys = ", ".join(
            f"{sect}.{key}={cfg[sect][key]}"
            for sect, key in (
                ("wterm", "mode"),
                ("gridder", "device"),
                ("deconvolution", "algorithm"),
            )
        )
        err = _config_error(f"unsupported combination ({keys}): {exc}")
        if getattr(exc, "radimg_collective", False):
            err = _everywhere(err)
        raise err from exc
    except BaseException as exc:
        if comm.size > 1 and not isinstance(exc, _user_errors()):
            # One rank failed (or was interrupted) alone: end the job now rather than
            # leave the other ranks in their next collective.
            abort_on_exception(comm, exc, 130 if isinstance(exc, KeyboardInterrupt) else 1)
        raise
    finally:
        signals.restore()


def _run(cfg, resume, verbose, comm, timer, signals):
    """The body of :func:`run` (same arguments, plus this rank's timer and stop signals)."""
    from radimg.config import to_yaml
    from radimg.io import ms as msio
    from radimg.io.product import write_product

    out_cfg = cfg["output"]
    img_cfg = cfg["image"]
    in_cfg = cfg["input"]
    wcfg = cfg["wterm"]
    gcfg = cfg["gridder"]

    use_gpu = gcfg["device"] == "gpu"
    if use_gpu:
        # Decided at start-up, before any reading: every rank checks its own GPU.
        from radimg.config import ConfigError
        from radimg.gpu._device import GpuUnavailableError, check_gpu_available, select_device

        gpu_err = None
        try:
            check_gpu_available()
            select_device()
        except GpuUnavailableError as exc:
            gpu_err = ConfigError(f"rank {comm.rank}: {exc}")
        _any_rank_error(comm, gpu_err)
    dcfg = cfg["deconvolution"]
    deconvolve = dcfg["algorithm"] != "none"
    from radimg.deconv.checkpoint import checkpoint_path

    ckpt_path = checkpoint_path(out_cfg["path"])
    if resume:
        if not deconvolve:
            raise _everywhere(
                _config_error("--resume needs deconvolution.algorithm clean or admm")
            )
        _collective_check(comm, _check_resumable, ckpt_path, cfg)

    # Refuse unusable outputs, masks and thread counts before any expensive work. A resumed
    # run replaces the product its interrupted part wrote.
    _collective_check(comm, _preflight, cfg, resume)
    nthreads = _threads_checked(comm, gcfg["nthreads"])
    if comm.rank == 0:
        from radimg.io.product import remove_stale_temporaries

        for p in remove_stale_temporaries(out_cfg["path"]) + remove_stale_temporaries(ckpt_path):
            _log(comm, verbose, f"removed {p}, left by an interrupted run")

    if in_cfg["simulate"]:  # a stage of the table only when there is one
        with timer.stage("simulate"):
            made = _collective_check(comm, _simulate_if_needed, cfg, verbose)
            if made:
                _log(comm, verbose, f"simulated observation written to {in_cfg['ms']}")

    if cfg["resources"].get("mem_per_rank"):
        _collective_check(comm, _check_memory_plan, cfg, comm.size)

    with timer.stage("read"):
        meta = _collective_check(
            comm, msio.ms_metadata, in_cfg["ms"], spw=in_cfg["spw"], field=in_cfg["field"],
            lock_wait_s=in_cfg["lock_wait_s"],
        )
        if meta["nrows"] == 0:
            raise _everywhere(msio.MSError(f"{in_cfg['ms']}: the Measurement Set has zero rows"))
        start, stop = msio.row_ranges(meta["nrows"], comm.size)[comm.rank]
        err, data = None, None
        prog = Progress(comm.rank, stop - start, "reading rows (rank 0)", verbose=verbose)
        try:
            data = msio.read_ms(
                in_cfg["ms"],
                datacolumn=in_cfg["datacolumn"],
                rows=(start, stop),
                chunk_rows=in_cfg["chunk_rows"],
                spw=in_cfg["spw"],
                field=in_cfg["field"],
                precision=gcfg["precision"],
                on_chunk=lambda done, total: prog.set(done),
                autocorrelations=in_cfg["autocorrelations"],
                lock_wait_s=in_cfg["lock_wait_s"],
            )
            prog.set(stop - start)
        except (ValueError, OSError) as exc:
            err = exc
        prog.close("" if err is None else "(failed)")
        _fault_point(comm.rank, "read")
        _any_rank_error(comm, err)
        counts = comm.allreduce(
            np.array(
                [
                    data.n_nonfinite_flagged,
                    np.count_nonzero(data.weight),
                    data.weight.size,
                    data.n_autocorr_rows,
                    data.n_bad_uvw_rows,
                ],
                dtype=np.int64,
            )
        )
        n_bad, n_good, n_total, n_auto, n_bad_uvw = (int(c) for c in counts)
    if n_bad and comm.rank == 0:
        warnings.warn(
            f"{in_cfg['ms']}: {n_bad} visibilities or weights were NaN/Inf and have been flagged",
            stacklevel=2,
        )
    if n_bad_uvw and comm.rank == 0:
        warnings.warn(
            f"{in_cfg['ms']}: {n_bad_uvw} cross-correlation rows have a UVW that is NaN/Inf or "
            "exactly (0, 0, 0) and have been flagged",
            stacklevel=2,
        )
    if n_good == 0:
        why = []
        if n_bad_uvw:
            why.append(f"{n_bad_uvw} rows with NaN/Inf or all-zero UVW")
        if n_auto:
            why.append(f"{n_auto} autocorrelation rows left out (input.autocorrelations)")
        raise _everywhere(msio.MSError(
            f"{in_cfg['ms']}: every sample is flagged or has zero weight "
            f"(column {in_cfg['datacolumn']}, {n_total} samples"
            + (f"; {', '.join(why)}" if why else "")
            + "); nothing to image"
        ))
    from mpi4py import MPI

    read_summary = {
        "samples": n_total,
        "unflagged": n_good,
        "nonfinite_flagged": n_bad,
        "autocorrelation_rows_excluded": n_auto,
        "bad_uvw_rows_flagged": n_bad_uvw,
    }
    auto_note = f", {n_auto} autocorrelation rows left out" if n_auto else ""
    _log(
        comm,
        verbose,
        f"read {n_total} samples ({n_good} unflagged{auto_note}) on {comm.size} rank(s)",
    )

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
    weighting_summary = _drop_beyond_uv_grid(
        comm, data, npix_x, npix_y, cell_rad, img_cfg["cell_arcsec"]
    )

    oversampling = wcfg["oversampling"]
    opkw = dict(
        epsilon=float(wcfg["epsilon"]),
        mode=wcfg["mode"],
        nstacks=wcfg["nstacks"],
        oversampling=oversampling if oversampling == "auto" else float(oversampling),
        nthreads=nthreads,
        precision=gcfg["precision"],
        fft=gcfg["fft"],
    )
    choice = None
    if wcfg["mode"] == "auto":
        # radimg.ops.choose: every mode costed on this data set and image, decided once on
        # rank 0 from global values and broadcast (the same at any rank count)
        with timer.stage("operator setup"):
            choice = _choose_wterm(comm, cfg, data, npix_x, npix_y, cell_rad,
                                   opkw["oversampling"])
        opkw.update(choice.operator_kwargs(opkw["oversampling"], wcfg["nstacks"]))
        _log(comm, verbose, choice.log_line())
    # The GPU operator runs on each rank's own rows (samples stay resident on the device);
    # the load-balanced tile exchange is CPU-only for now.
    distributed = opkw["mode"] in ("none", "wstack", "wstack-wproject") and not use_gpu
    from radimg.ops.resample import small_inversion

    small_kw = dict(epsilon=opkw["epsilon"], mode=opkw["mode"], nthreads=nthreads, comm=comm,
                    enabled=bool(img_cfg["small_inversion"]))
    with timer.stage("operator setup"):
        if distributed:
            # Pratley & McEwen (2019) sec. 4: rows move so every rank carries the same
            # gridding load; plane owners exchange grid tiles with one Alltoallv per apply.
            from radimg.parallel.operator import DistributedOperator

            # image.small_inversion (radimg.ops.resample): the operator grids on the coarsest
            # cells the data allow; images are resampled to the requested cells exactly.
            op = _agreed(comm, lambda: small_inversion(
                lambda nx, ny, cell: DistributedOperator(
                    comm, data.uvw, data.freq, data.weight, nx, ny, cell, **opkw
                ),
                data.uvw, data.freq, data.weight != 0, npix_x, npix_y, cell_rad, **small_kw,
            ))
            _log_small_inversion(comm, verbose, op)
            uvw, weight = op.uvw, op.weight
            vis = op.redistribute_vis(data.vis)
        else:
            uvw, weight, vis = data.uvw, data.weight, data.vis
        del data.vis

    with timer.stage("weights"):
        _fault_point(comm.rank, "weights")
        from radimg.ops.weighting import density_grid, imaging_weights

        scheme = img_cfg["weighting"]
        local = density = None
        if scheme != "natural":
            local = density_grid(uvw, data.freq, weight, npix_x, npix_y, cell_rad)
            density = np.empty_like(local)
            comm.Allreduce(local, density, op=MPI.SUM)
            local = None  # not needed past the Allreduce: one grid fewer at the rank filter
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
        # the float64 density and factor grids (half-plane, ~0.72 of an image each) are
        # not needed after this (plan.py's IMAGE_ARRAYS does not count them at the peak)
        del local, density
        wsum = comm.allreduce(float(wgt.sum(dtype=np.float64)))
        weighting_summary.update(
            scheme=scheme,
            robust=float(img_cfg["robust"]) if scheme == "briggs" else None,
            taper_arcsec=float(img_cfg["taper_arcsec"]),
            samples_weighted=int(comm.allreduce(int(np.count_nonzero(wgt)))),
        )
    _log(
        comm,
        verbose,
        f"weights: {scheme}"
        + (f" (robust {float(img_cfg['robust']):g})" if scheme == "briggs" else "")
        + f", {weighting_summary['samples_weighted']} samples weighted, "
        f"{weighting_summary['samples_beyond_uv_grid']} beyond the uv grid left out "
        f"(weight grid {weighting_summary['grid_shape'][0]} x "
        f"{weighting_summary['grid_shape'][1]}, uv cell "
        f"{weighting_summary['uv_cell_lambda'][0]:.4g} wavelengths)",
    )

    if distributed:
        row_id = op.row_id

        def image_of(v, w=wgt):
            return np.asarray(op.hdot(v, w), dtype=np.float64)

    else:
        row_id = np.arange(start, stop, dtype=np.int64)
        with timer.stage("operator setup"):
            if use_gpu:
                from radimg.gpu.operator import make_operator
            else:
                from radimg.ops.operator import make_operator

            # GPU: wstack-wproject takes global w-stacks over comm, like the CPU operator
            op = _agreed(comm, lambda: small_inversion(
                lambda nx, ny, cell: make_operator(
                    uvw, data.freq, nx, ny, cell, weight_mask=wgt != 0, **opkw,
                    **({"comm": comm} if use_gpu else {}),
                ),
                uvw, data.freq, wgt != 0, npix_x, npix_y, cell_rad, **small_kw,
            ))
            _log_small_inversion(comm, verbose, op)
            if use_gpu:
                # Issue #7: samples and imaging weights go to the device once; the PSF, the
                # dirty image and every major-cycle residual then move only images.
                op.set_data(vis, wgt)

        def image_of(v, w=wgt, local=None):
            # local: the GPU operator's image of its resident samples (v is then unused)
            img = op.hdot(v, w) if local is None else local()
            img = np.ascontiguousarray(img, dtype=np.float64)
            out = np.empty_like(img)
            comm.Allreduce(img, out, op=MPI.SUM)  # AllSumAll (eq. 7)
            return out

    with (
        timer.stage("psf"),
        Progress(comm.rank, None, "gridding PSF", verbose=verbose, ticker=True),
    ):
        _fault_point(comm.rank, "psf")
        psf = (image_of(None, local=op.psf_image) if use_gpu
               else image_of(np.ones_like(vis))) / wsum
    with timer.stage("beam"):
        # Fitted now, before the dirty image and any minor cycle, so that a PSF without a
        # main lobe (a user error, raised on every rank) costs nothing more; rank 0 fits and
        # warns (once) when it falls back to the lobe's second moments.
        from radimg.deconv.image import fit_beam

        beam = _collective_check(comm, fit_beam, psf, float(np.degrees(cell_rad)))
    with (
        timer.stage("dirty"),
        Progress(comm.rank, None, "gridding dirty image", verbose=verbose, ticker=True),
    ):
        _fault_point(comm.rank, "dirty")
        dirty = (image_of(None, local=op.dirty_image) if use_gpu else image_of(vis)) / wsum
    _log(comm, verbose, f"dirty image peak {dirty.max():.4g} Jy/beam, PSF peak {psf.max():.4f}")

    images = {"dirty": dirty, "psf": psf}
    wcs_info = _wcs_info(cfg, meta, npix_x, npix_y, cell_rad)
    wcs_info.update(bmaj_deg=beam[0], bmin_deg=beam[1], bpa_deg=beam[2])
    extra_attrs = {}
    if deconvolve:
        ctx = dict(
            comm=comm,
            cfg=cfg,
            op=op,
            vis=vis,
            wgt=wgt,
            weight=weight,
            wsum=wsum,
            image_of=image_of,
            row_id=row_id,
            nrows_total=int(meta["nrows"]),
            wcs_info=wcs_info,
            ckpt_path=ckpt_path,
            resume=resume,
            verbose=verbose,
            cell_deg=float(np.degrees(cell_rad)),
            signals=signals,
            beam=beam,
            nthreads=nthreads,
        )
        # From here a stop signal ends the job after the next checkpoint (JobInterrupted),
        # or, once deconvolution is over, after the product is written.
        signals.defer(True)
        with timer.stage("deconvolve"):
            deconv_images, extra_attrs = _deconvolve(ctx, dirty, psf, timer)
        images.update(deconv_images)

    signals.defer(True)  # the product is seconds away: finish it rather than lose it
    if use_gpu:  # host <-> device bytes (set-up, per cycle / ADMM iteration): timing rows
        for name, val in op.transfer_summary().items():
            timer.set_counter(name, val)
    records = comm.gather(timer.record(), root=0)
    operator_record = _operator_record(wcfg["mode"], opkw, op, choice)
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
        run_attrs = {
            "config_yaml": to_yaml(cfg),
            "radimg_version": __version__,
            "n_ranks": comm.size,
            "timings_json": json.dumps(timings_record(records)),
            "load_balance_json": json.dumps(lb_record),
            "read_json": json.dumps(read_summary),
            "weighting_json": json.dumps(weighting_summary),
            "operator_json": json.dumps(operator_record),
        }
        run_attrs.update(extra_attrs)
        images = {k: v.astype(np.float32) for k, v in images.items()}
        product = write_product(
            out_cfg["path"], images, wcs_info, run_attrs, overwrite=out_cfg["overwrite"] or resume
        )
        product = out_cfg["path"] if product is None else product
        if out_cfg.get("fits_dir"):
            from radimg.io.product import export_fits

            export_fits(out_cfg["path"], out_cfg["fits_dir"])
        if verbose >= 1:
            print(records_table(records), flush=True)
            print(
                f"[radimg] load balance ({lb_record['scheme']}): samples per rank "
                f"{lb_record['samples_per_rank']}, max/mean load {lb_record['max_over_mean']:.4f}",
                flush=True,
            )
            print(f"[radimg] wrote {out_cfg['path']}", flush=True)
    comm.Barrier()
    if json.loads(extra_attrs.get("deconvolution_json", "{}")).get("stopped_early"):
        # deconvolution.stop_after_major: the product holds the state so far, not a final
        # image; the documented "not final" status (3), as for a stop by signal.
        raise JobInterrupted(
            f"stopped after {dcfg['stop_after_major']} major cycle(s) (ADMM: iterations) as "
            f"deconvolution.stop_after_major asks; {out_cfg['path']} is not final and the "
            f"checkpoint {ckpt_path} is complete",
            signal_name="stop_after_major",
            checkpoint=ckpt_path,
            rank=comm.rank,
        )
    return product
