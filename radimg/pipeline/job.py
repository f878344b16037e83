"""The job behind ``radimg run``: :func:`run` (failure handling) and the stages in order."""

from __future__ import annotations

from functools import partial

from radimg.pipeline.common import JobInterrupted, config_error, everywhere, user_errors
from radimg.pipeline.context import ImageGeometry, Job
from radimg.progress import StageTimer


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
        On every rank, when SIGTERM/SIGUSR1 stopped deconvolution after a checkpoint, or
        ``deconvolution.stop_after_major`` ended it.
    ConfigError, MSError, ProductError, OSError, NotImplementedError
        User errors, raised on every rank alike. Any other exception on a rank of a
        multi-rank job is reported with its rank and aborts the job (``MPI_Abort(1)``).
    """
    from radimg.deconv.checkpoint import checkpoint_path
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
    job = Job(comm, cfg, resume, verbose, timer, signals,
              checkpoint_path(cfg["output"]["path"]))
    try:
        return run_stages(job)
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
        err = config_error(f"unsupported combination ({keys}): {exc}")
        if getattr(exc, "radimg_collective", False):
            err = everywhere(err)
        raise err from exc
    except BaseException as exc:
        if comm.size > 1 and not isinstance(exc, user_errors()):
            # One rank failed (or was interrupted) alone: end the job now rather than
            # leave the other ranks in their next collective.
            abort_on_exception(comm, exc, 130 if isinstance(exc, KeyboardInterrupt) else 1)
        raise
    finally:
        signals.restore()


def run_stages(job):
    """preflight -> read -> operator (with weights) -> images -> deconvolve -> write."""
    from radimg.pipeline.deconvolve import deconvolve
    from radimg.pipeline.images import make_images, wcs_info
    from radimg.pipeline.operator import make_backend
    from radimg.pipeline.preflight import preflight
    from radimg.pipeline.read import read
    from radimg.pipeline.weights import drop_beyond_uv_grid, weigh
    from radimg.pipeline.write import write

    preflight(job)
    obs = read(job)
    geom = ImageGeometry.from_config(job.cfg, warn=job.rank == 0)
    from radimg.pipeline.cube import image_cube, is_cube

    if is_cube(obs):  # several Stokes parameters or output channels (issue #15)
        return image_cube(job, geom, obs)
    weighting_summary = drop_beyond_uv_grid(job.comm, obs.data, geom)
    backend = make_backend(
        job, geom, obs, partial(weigh, job, geom, obs.data.freq, summary=weighting_summary)
    )
    backend.images_on_root = not job.deconvolves  # only rank 0 writes them then
    psf, dirty, beam = make_images(job, backend, geom)
    wcs = wcs_info(obs.meta, geom, beam)
    images = {"dirty": dirty, "psf": psf}
    deconvolved = None
    if job.deconvolves:
        # From here a stop signal ends the job after the next checkpoint (JobInterrupted),
        # or, once deconvolution is over, after the product is written.
        job.signals.defer(True)
        with job.timer.stage("deconvolve"):
            deconvolved = deconvolve(job, backend, geom, psf, dirty, beam, wcs)
        images.update(deconvolved.images)

    job.signals.defer(True)  # the product is seconds away: finish it rather than lose it
    product = write(job, backend, images, wcs, obs.summary, weighting_summary, deconvolved)
    if deconvolved is not None and deconvolved.stopped_early:
        # deconvolution.stop_after_major: the product holds the state so far, not a final
        # image; the documented "not final" status (3), as for a stop by signal.
        dcfg, out_path = job.cfg["deconvolution"], job.cfg["output"]["path"]
        raise JobInterrupted(
            f"stopped after {dcfg['stop_after_major']} major cycle(s) (ADMM: iterations) as "
            f"deconvolution.stop_after_major asks; {out_path} is not final and the "
            f"checkpoint {job.checkpoint_path} is complete",
            signal_name="stop_after_major",
            checkpoint=job.checkpoint_path,
            rank=job.rank,
        )
    return product
