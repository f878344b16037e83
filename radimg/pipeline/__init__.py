"""The SPMD job behind ``radimg run``, as a package of stages.

Every rank runs :func:`run`. The stages, one module each, in the order they run
(:func:`radimg.pipeline.job.run_stages`):

==============  =============================================================================
preflight       checks before any work: GPU, ``--resume``, outputs, mask, threads, memory
                plan; stale temporaries removed; the simulated MS written (``simulate``)
read            each rank reads its own row range of the Measurement Set
operator        the imaging backend from one factory (:func:`~radimg.pipeline.operator.
                make_backend`): load-balanced (Pratley & McEwen 2019 sec. 4) on CPU or
                GPU; it calls *weights* on the samples it keeps
weights         samples beyond the uv grid dropped, imaging weights from the global density
                grid (one Allreduce)
images          PSF, restoring beam, dirty image
deconvolve      CLEAN or ADMM through one checkpoint-progress-interrupt helper, restore
write           the HDF5 product on rank 0 (temporary name, renamed), FITS, tables
==============  =============================================================================

The stages share a typed context (:mod:`radimg.pipeline.context`: ``Job``,
``ImageGeometry``, ``Observation``) and the collective error helpers of
:mod:`radimg.pipeline.common`.

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

from radimg.pipeline.common import EXIT_INTERRUPTED, FAULT_ENV, JobInterrupted
from radimg.pipeline.job import run
from radimg.pipeline.preflight import image_shape, threads_per_rank

__all__ = [
    "EXIT_INTERRUPTED",
    "FAULT_ENV",
    "JobInterrupted",
    "image_shape",
    "run",
    "threads_per_rank",
]
