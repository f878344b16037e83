"""The typed objects the stages pass to each other: the job (:class:`Job`), the image
geometry (:class:`ImageGeometry`) and this rank's share of the observation
(:class:`Observation`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from radimg.constants import ARCSEC
from radimg.pipeline.common import fault_point, log


@dataclass
class Job:
    """One rank's view of the run: what every stage reads, fixed at start-up.

    Attributes
    ----------
    comm : mpi4py communicator
    cfg : dict, the resolved config (:mod:`radimg.config`)
    resume : bool, continue from the checkpoint (``--resume``)
    verbose : int, 0 quiet, 1 normal, 2 verbose
    timer : radimg.progress.StageTimer, this rank's seconds per stage and counters
    signals : radimg.parallel.mpi.StopSignals, SIGTERM/SIGUSR1 handling
    checkpoint_path : str, ``output.path + .ckpt.h5``
    nthreads : int, threads per rank (set by :func:`radimg.pipeline.preflight.preflight`)
    """

    comm: Any
    cfg: dict
    resume: bool
    verbose: int
    timer: Any
    signals: Any
    checkpoint_path: str
    nthreads: int = 1

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def use_gpu(self) -> bool:
        return self.cfg["gridder"]["device"] == "gpu"

    @property
    def deconvolves(self) -> bool:
        return self.cfg["deconvolution"]["algorithm"] != "none"

    def log(self, msg):
        """One ``[radimg]`` line on rank 0."""
        log(self.comm, self.verbose, msg)

    def fault_point(self, stage):
        """The test-only fault injection point ``stage`` (:data:`radimg.pipeline.FAULT_ENV`)."""
        fault_point(self.comm.rank, stage)


@dataclass(frozen=True)
class ImageGeometry:
    """The requested image: ``npix_x`` x ``npix_y`` pixels (FFT-friendly) of ``cell_rad``
    radians (``cell_arcsec`` as configured)."""

    npix_x: int
    npix_y: int
    cell_rad: float
    cell_arcsec: float

    @classmethod
    def from_config(cls, cfg, warn=True):
        """``image.npix``/``npix_y`` rounded up to FFT-friendly sizes (a warning for each
        rounded value when ``warn``) and ``image.cell_arcsec``."""
        from radimg.config import fft_friendly

        img_cfg = cfg["image"]
        npix_x = int(img_cfg["npix"])
        npix_y = int(img_cfg["npix_y"] or img_cfg["npix"])
        for key, val in (("image.npix", npix_x), ("image.npix_y", npix_y)):
            good = fft_friendly(val)
            if good != val and warn:
                warnings.warn(
                    f"{key}: {val} is not FFT-friendly (2^a 3^b 5^c 7^d); rounded up to {good}",
                    stacklevel=3,
                )
        cell_arcsec = img_cfg["cell_arcsec"]
        return cls(fft_friendly(npix_x), fft_friendly(npix_y),
                   float(cell_arcsec) * ARCSEC, cell_arcsec)

    @property
    def shape(self) -> tuple[int, int]:
        """``(npix_y, npix_x)``, the shape of every image array."""
        return (self.npix_y, self.npix_x)

    @property
    def cell_deg(self) -> float:
        return float(np.degrees(self.cell_rad))


@dataclass
class Observation:
    """This rank's share of the Measurement Set, as read.

    Attributes
    ----------
    meta : dict, :func:`radimg.io.ms.ms_metadata` (``nrows``, ``freq``, ``phase_centre`` ...)
    data : radimg.io.ms.VisData, the rows ``rows`` of the MS (its ``vis`` is handed to the
        imaging backend, which drops this reference)
    rows : (int, int), the row range ``[start, stop)`` this rank read
    summary : dict, the product's ``read_json``
    """

    meta: dict
    data: Any
    rows: tuple[int, int]
    summary: dict

    @property
    def nrows_total(self) -> int:
        return int(self.meta["nrows"])
