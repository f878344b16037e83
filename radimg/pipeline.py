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
    progress_log(comm.rank, verbose, msg)


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


def _warn_if_aliased(comm, data, cell_rad, cell_arcsec):
    """Warn (rank 0) when the cell is too coarse for the longest baselines: samples with
    |u| or |v| > 1 / (2 cell) lie beyond the uv grid's Nyquist limit and fold back (alias)
    onto shorter spacings, and the PSF main lobe spans fewer than two pixels."""
    from mpi4py import MPI

    lam = 299792458.0 / float(np.max(data.freq))
    uv = np.abs(data.uvw[:, :2]).max(axis=1) / lam if data.uvw.size else np.zeros(0)
    limit = 0.5 / cell_rad
    n_over = comm.allreduce(int(np.count_nonzero(uv > limit)), op=MPI.SUM)
    uv_max = comm.allreduce(float(uv.max()) if uv.size else 0.0, op=MPI.MAX)
    n_rows = comm.allreduce(int(uv.size), op=MPI.SUM)
    if n_over and comm.rank == 0:
        warnings.warn(
            f"image.cell_arcsec: {cell_arcsec:g} arcsec is too coarse for the longest "
            f"baselines ({uv_max:.0f} wavelengths need <= {limit / uv_max * cell_arcsec:.3g} "
            f"arcsec): {n_over} of {n_rows} rows lie beyond the uv grid and alias; the PSF is "
            "undersampled. Use a smaller cell for a faithful image.",
            stacklevel=3,
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
    ({model, residual, restored}, beam_deg, extra /run attributes)."""
    from radimg.config import to_yaml
    from radimg.deconv.checkpoint import read_checkpoint, write_checkpoint
    from radimg.deconv.image import box_mask, fit_beam, load_mask, restore
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

    def residual_of(model):
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
            }
            residual = residual_of(state["model"])

        def write_ckpt(st):
            arrays = (
                {} if st["auto_mask"] is None else {"auto_mask": st["auto_mask"].astype(np.uint8)}
            )
            counters = {
                "algorithm": "clean",
                "nmajor": st["nmajor"],
                "iters": st["iters"],
                "done": st["done"],
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
            r = residual_of(model)
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
        # Fitted on rank 0; a user error (undersampled beam) is raised on every rank.
        beam = _collective_check(comm, fit_beam, psf, ctx["cell_deg"])
        restored = restore(model, residual, beam, ctx["cell_deg"]) if comm.rank == 0 else None
    model = bcast_array(comm, np.ascontiguousarray(model, dtype=np.float64))
    images = {"model": model, "residual": residual, "restored": restored}
    return images, beam, {"deconvolution_json": json.dumps(summary)}


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
    timer = StageTimer()
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
        raise _config_error(f"unsupported combination ({keys}): {exc}") from exc
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
    from radimg.io.product import check_output_path, write_product

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
            raise _config_error("--resume needs deconvolution.algorithm clean or admm")
        _collective_check(comm, _check_resumable, ckpt_path, cfg)

    # Refuse an unusable output before any expensive work. A resumed run replaces the
    # product its interrupted part wrote.
    _collective_check(comm, check_output_path, out_cfg["path"], out_cfg["overwrite"] or resume)
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
            comm, msio.ms_metadata, in_cfg["ms"], spw=in_cfg["spw"], field=in_cfg["field"]
        )
        if meta["nrows"] == 0:
            raise msio.MSError(f"{in_cfg['ms']}: the Measurement Set has zero rows")
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
            )
            prog.set(stop - start)
        except (ValueError, OSError) as exc:
            err = exc
        prog.close("" if err is None else "(failed)")
        _fault_point(comm.rank, "read")
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
    _warn_if_aliased(comm, data, cell_rad, img_cfg["cell_arcsec"])

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
    # The GPU operator runs on each rank's own rows (samples stay resident on the device);
    # the load-balanced tile exchange is CPU-only for now.
    distributed = wcfg["mode"] in ("none", "wstack", "wstack-wproject") and not use_gpu
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
        _fault_point(comm.rank, "weights")
        from radimg.ops.weighting import density_grid, imaging_weights

        scheme = img_cfg["weighting"]
        local = density = None
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
        # the two image-sized float64 density grids are not needed after this (plan.py's
        # IMAGE_ARRAYS no longer counts them at the peak)
        del local, density
        wsum = comm.allreduce(float(wgt.sum(dtype=np.float64)))

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
            op = make_operator(
                uvw, data.freq, npix_x, npix_y, cell_rad, weight_mask=wgt != 0, **opkw,
                **({"comm": comm} if use_gpu else {}),
            )
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
    with (
        timer.stage("dirty"),
        Progress(comm.rank, None, "gridding dirty image", verbose=verbose, ticker=True),
    ):
        _fault_point(comm.rank, "dirty")
        dirty = (image_of(None, local=op.dirty_image) if use_gpu else image_of(vis)) / wsum
    _log(comm, verbose, f"dirty image peak {dirty.max():.4g} Jy/beam, PSF peak {psf.max():.4f}")

    images = {"dirty": dirty, "psf": psf}
    wcs_info = _wcs_info(cfg, meta, npix_x, npix_y, cell_rad)
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
        )
        # From here a stop signal ends the job after the next checkpoint (JobInterrupted),
        # or, once deconvolution is over, after the product is written.
        signals.defer(True)
        with timer.stage("deconvolve"):
            deconv_images, beam, extra_attrs = _deconvolve(ctx, dirty, psf, timer)
        images.update(deconv_images)
        wcs_info.update(bmaj_deg=beam[0], bmin_deg=beam[1], bpa_deg=beam[2])

    signals.defer(True)  # the product is seconds away: finish it rather than lose it
    if use_gpu:  # host <-> device bytes (set-up, per cycle / ADMM iteration): timing rows
        for name, val in op.transfer_summary().items():
            timer.set_counter(name, val)
    records = comm.gather(timer.record(), root=0)
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
    return product
