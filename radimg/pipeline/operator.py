"""Stage *operator*: the imaging backend, built by one factory (:func:`make_backend`).

An imaging backend holds this rank's samples and the measurement operator over them, and
gives the later stages global images (identical on every rank) and the whitened operator
ADMM needs; it is the only object that knows how the work is split between ranks and
devices. The interface (:class:`ImagingBackend`):

- ``psf()``, ``dirty()``: ``Phi^H W 1 / sum W`` and ``Phi^H W y / sum W``, global;
- ``predict(model, by=None)``: this rank's model visibilities (``by``: another predictor of
  the same samples, e.g. the CLEAN model's direct Fourier transform);
- ``residual(model, predict=None)``: ``Phi^H W (y - Phi x) / sum W``, global (a major cycle);
- ``whiten(sw)``, ``forward_whitened(x)``, ``adjoint_whitened(v)``, ``xp``: ADMM's
  ``Phi_w = diag(sw) Phi`` and its adjoint (vis-space vectors in the array module ``xp``),
  ``vis_to_host`` / ``vis_from_host`` for checkpoints;
- ``load_balance()``: the scheme's per-rank figures for ``load_balance_json`` (or None),
  ``transfers()``: host <-> device byte counters for the timing table, and
  ``operator_record()``: the product's ``operator_json``;
- attributes ``scheme`` (``balanced``), ``op``, ``vis``, ``uvw``,
  ``data_weight``, ``imaging_weight``, ``weight_sum``, ``row_id`` and ``nrows_total`` (the MS
  row of each local sample row, for checkpoints of vis-space vectors), ``samples_on_host``.

Backends today:

- :class:`DistributedBackend` (``gridder.device: cpu``): Pratley & McEwen (2019) sec. 4.
  Rows move so every rank carries the same gridding load, w-plane owners exchange grid
  tiles with one Alltoallv per application, images are summed inside the operator.
- :class:`GpuDistributedBackend` (``gridder.device: gpu``): the same scheme, with the
  per-plane work on each rank's device and the samples resident there; tiles of planes
  owned by another rank are staged through the host.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from radimg.pipeline.common import agreed


def make_backend(job, geom, obs, weigh):
    """The imaging backend of this run (collective): the one place that chooses how the
    operator is distributed.

    Parameters
    ----------
    job : radimg.pipeline.context.Job
    geom : radimg.pipeline.context.ImageGeometry
    obs : radimg.pipeline.context.Observation, this rank's rows as read (its ``data.vis``
        moves into the backend)
    weigh : callable ``(uvw, data_weight) -> (imaging_weight, weight_sum)``, the weights
        stage, called on the samples the backend keeps (after any redistribution)

    Returns
    -------
    ImagingBackend
    """
    options, choice = operator_options(job, geom, obs.data)
    backend = GpuDistributedBackend if job.use_gpu else DistributedBackend
    return backend(job, geom, obs, weigh, options, choice)


def operator_options(job, geom, data):
    """Keyword arguments of the operator constructors, with ``wterm.mode: auto`` decided
    (radimg.ops.choose: every mode costed on this data set and image, decided once on rank 0
    from global values and broadcast, so the same at any rank count). Returns
    ``(options, choice)``, ``choice`` None unless the mode was ``auto``."""
    wcfg, gcfg = job.cfg["wterm"], job.cfg["gridder"]
    oversampling = wcfg["oversampling"]
    options = dict(
        epsilon=float(wcfg["epsilon"]),
        mode=wcfg["mode"],
        nstacks=wcfg["nstacks"],
        oversampling=oversampling if oversampling == "auto" else float(oversampling),
        nthreads=job.nthreads,
        precision=gcfg["precision"],
        fft=gcfg["fft"],
    )
    choice = None
    if wcfg["mode"] == "auto":
        from radimg.parallel.choose import decide

        with job.timer.stage("operator setup"):
            choice = decide(job.comm, data.uvw, data.freq, data.weight != 0, geom.npix_x,
                            geom.npix_y, geom.cell_rad, geom.cell_rad, options["epsilon"],
                            precision=gcfg["precision"], oversampling=options["oversampling"],
                            nstacks=wcfg["nstacks"],
                            small_inversion=bool(job.cfg["image"]["small_inversion"]))
        options.update(choice.operator_kwargs(options["oversampling"], wcfg["nstacks"]))
        job.log(choice.log_line())
    return options, choice


class ImagingBackend(ABC):
    """The interface of an imaging backend (module doc) and what both backends share.
    Subclasses build ``op``, set the sample attributes and implement the abstract methods;
    images come out as float64 arrays ``(npix_y, npix_x)``, identical on every rank."""

    scheme = ""
    samples_on_host = True
    xp = np
    #: Set by the pipeline when only rank 0 uses the PSF and dirty image (no deconvolution):
    #: a backend may then return None for them on the other ranks, which take part in the
    #: collectives but never hold the requested-size images.
    images_on_root = False
    #: True where :func:`radimg.pipeline.images.make_images` makes both images with
    #: ``fine=False`` and resamples them afterwards with ``fine(image)``.
    defers_resampling = False

    def __init__(self, job, geom, options, choice):
        self.job, self.geom = job, geom
        self.options, self.choice = options, choice

    def _with_small_inversion(self, build, uvw, freq, valid):
        """``build(npix_x, npix_y, cell)`` through image.small_inversion (the operator grids
        on the coarsest cells the data allow; images are resampled to the requested cells
        exactly; radimg.ops.resample), agreed on by every rank; logs the chosen geometry."""
        from radimg.ops.resample import small_inversion

        job, geom = self.job, self.geom
        op = agreed(job.comm, lambda: small_inversion(
            build, uvw, freq, valid, geom.npix_x, geom.npix_y, geom.cell_rad,
            epsilon=self.options["epsilon"], mode=self.options["mode"],
            nthreads=job.nthreads, comm=job.comm,
            enabled=bool(job.cfg["image"]["small_inversion"]),
        ))
        small = getattr(op, "small_geometry", None)
        if small is not None:
            d = small.describe()
            job.log("small inversion: gridding {} x {} pixels of {:.4g} x {:.4g} arcsec "
                    "(field period {} x {} pixels)".format(*d["coarse_npix"][::-1],
                                                           *d["coarse_cell_arcsec"][::-1],
                                                           *d["fine_period"][::-1]))
        return op

    @abstractmethod
    def psf(self):
        """``Phi^H W 1 / sum W`` (collective)."""

    @abstractmethod
    def dirty(self):
        """``Phi^H W y / sum W`` (collective)."""

    @abstractmethod
    def residual(self, model, predict=None):
        """``Phi^H W (y - Phi x) / sum W`` for the model image ``x`` (collective);
        ``predict(model)`` replaces :meth:`predict` where the backend predicts on the host."""

    @abstractmethod
    def whiten(self, sw):
        """Keep ADMM's whitening factors ``sw`` (row, chan) float64 and return the whitened
        data ``y_w = sw * y`` (row, chan) complex, in the array module :attr:`xp`."""

    @abstractmethod
    def forward_whitened(self, x):
        """``Phi_w x``: vis (row, chan) in :attr:`xp` of a host image."""

    @abstractmethod
    def adjoint_whitened(self, vis):
        """``Phi_w^H v``: the global host image of a vis vector (collective)."""

    def predict(self, model, by=None):
        """Model visibilities (row, chan) of this rank's samples: ``op.dot``, or ``by``."""
        rdt = np.real(self.vis).dtype
        with self.job.timer.stage("major: predict"):
            return (by or self.op.dot)(np.ascontiguousarray(model, dtype=rdt))

    def vis_to_host(self, vis):
        """A vis-space vector of this backend as a host array (checkpoints)."""
        return vis

    def vis_from_host(self, vis, dtype):
        """A host vis-space vector (a resumed checkpoint's) as this backend holds them."""
        return vis.astype(dtype)

    def load_balance(self):
        """Per-rank figures of the distribution scheme (collective), or None."""
        return None

    def transfers(self):
        """Host <-> device byte counters (name -> value) for the timing table."""
        return {}

    def operator_record(self):
        """``/run`` ``operator_json``: the w-term mode run (and asked for), the geometry the
        operator built, and with ``wterm.mode: auto`` the chooser's table."""
        from radimg.ops.resample import SmallInversion

        op, options, choice = self.op, self.options, self.choice
        inner = op.op if isinstance(op, SmallInversion) else op  # the (distributed) operator
        serial = getattr(inner, "op", inner)  # DistributedOperator -> its serial operator
        small = getattr(op, "small_geometry", None)
        rec = {
            "requested_mode": self.job.cfg["wterm"]["mode"],
            "mode": options["mode"],
            "epsilon": options["epsilon"],
            "oversampling": getattr(inner, "oversampling", options["oversampling"]),
            "oversampling_w": getattr(serial, "oversampling_w", None)
            if options["mode"] == "wstack" else None,
            "nplanes": getattr(inner, "nplanes", getattr(inner, "nstacks", None)),
            "w_kernel": getattr(getattr(inner, "geometry", None), "wkernel", None)
            if options["mode"] == "wstack" else None,
            "small_inversion": None if small is None else small.describe(),
            "choice": None if choice is None else choice.describe(),
        }
        return {k: (float(v) if isinstance(v, np.floating) else
                    int(v) if isinstance(v, np.integer) else v) for k, v in rec.items()}


def per_weight(image, weight_sum, keep_single=False):
    """``image / weight_sum`` in float64. A float32 image (single precision) is converted
    once and divided in place, so no third requested-size image exists at the dirty
    stage's peak (plan_memory.FINE_IMAGE_BYTES); a float64 one is divided into a new array
    (the operator may hold on to its own). With ``keep_single`` a float32 image (a new
    array the operator does not keep) stays float32 and is divided in place: the images of
    a run that only writes them (the product stores float32) then take half the memory."""
    if keep_single and np.asarray(image).dtype == np.float32:
        image /= np.float32(weight_sum)
        return image
    out = np.asarray(image, dtype=np.float64)
    if np.shares_memory(out, image):
        return out / weight_sum
    out /= weight_sum
    return out


def _distribute(backend, job, obs, weigh, options, operator_class):
    """Build ``backend.op`` (``operator_class``: the CPU or GPU distributed operator, under
    the small-inversion layer when it applies), move the samples to their ranks and make
    the imaging weights: the set-up both distributed backends share."""
    from radimg.parallel.plan import configured_exchange_buffer

    data = obs.data
    with job.timer.stage("operator setup"):
        backend.op = backend._with_small_inversion(
            lambda nx, ny, cell: operator_class(
                job.comm, data.uvw, data.freq, data.weight, nx, ny, cell, **options,
                exchange_buffer_bytes=configured_exchange_buffer(job.cfg),
            ),
            data.uvw, data.freq, data.weight != 0,
        )
        backend.uvw, backend.data_weight = backend.op.uvw, backend.op.weight
        backend.vis = backend.op.redistribute_vis(data.vis)
        del data.vis  # the read order's copy: only the redistributed one from here on
    backend.row_id, backend.nrows_total = backend.op.row_id, obs.nrows_total
    backend.imaging_weight, backend.weight_sum = weigh(backend.uvw, backend.data_weight)


class DistributedBackend(ImagingBackend):
    """CPU, Pratley & McEwen (2019) sec. 4 (:class:`radimg.parallel.operator.
    DistributedOperator`): rows redistributed by gridding load before the weights are made;
    every image the operator returns is already the global one."""

    scheme = "balanced"

    def __init__(self, job, geom, obs, weigh, options, choice):
        from radimg.parallel.operator import DistributedOperator

        super().__init__(job, geom, options, choice)
        _distribute(self, job, obs, weigh, options, DistributedOperator)

    def _image(self, vis, weight):
        # the operator's adjoint ends with the Allreduce over ranks (eq. 10)
        return np.asarray(self.op.hdot(vis, weight), dtype=np.float64)

    @property
    def defers_resampling(self):
        """A run that only writes its images through a small inversion makes both coarse
        images first and resamples them afterwards (:meth:`fine`): rank 0 then keeps the
        scratch grid and accumulator from the PSF to the dirty image (no second round of
        page faults, ~0.4 s on the real 4096 x 30\" job) and holds the coarse PSF (28 MiB)
        instead of the requested-size one (64 MiB) while the dirty image is made."""
        from radimg.ops.resample import SmallInversion

        return self.images_on_root and isinstance(self.op, SmallInversion)

    def psf(self, fine=True):
        # rank 0 of a run that only writes its images resamples the PSF without the
        # scratch grid alive (made again, zeroed, for the dirty image)
        root = self.job.comm.rank == 0
        return self._global_image(np.ones_like(self.vis), fine=fine,
                                  release=self.images_on_root and root and fine)

    def dirty(self, fine=True):
        # a run that only writes its images applies the operator for the last time here
        return self._global_image(self.vis, release=self.images_on_root, fine=fine)

    def fine(self, image, nthreads=None):
        """A coarse image of ``psf(fine=False)`` / ``dirty(fine=False)`` resampled to the
        requested cells (None stays None: ranks other than 0), with ``nthreads`` FFT threads
        (default the operator's)."""
        return None if image is None else self.op.to_fine(image, nthreads=nthreads)

    def _global_image(self, vis, release=False, fine=True):
        """``Phi^H W vis / sum W``. With :attr:`images_on_root` (a run that only writes
        its images) the image is reduced onto rank 0 alone; the other ranks get None and
        never resample to the requested size (320 MiB per rank at 4096^2). ``release``:
        the operator's scratch grid is freed before the image is resampled (rank 0 of the
        real 4096 x 30\" job peaks ~180 MiB lower with both this and the Reduce).
        ``fine=False`` (small inversion, images on root): the coarse image, float32 in
        single precision, for :meth:`fine` later."""
        from radimg.ops.resample import SmallInversion

        if not self.images_on_root:
            return per_weight(self.op.hdot(vis, self.imaging_weight), self.weight_sum)
        small = isinstance(self.op, SmallInversion)
        inner = self.op.op if small else self.op
        img = inner.hdot(vis, self.imaging_weight, root_only=True, release=release)
        if img is None:
            return None
        # kept float32 in single precision, as the product stores them; the resampled
        # image is a new array (the inner operator's output is not kept either)
        img = per_weight(img, self.weight_sum, keep_single=small)
        return self.op.to_fine(img) if small and fine else img

    def residual(self, model, predict=None):
        residual_vis = self.vis - (predict or self.predict)(model)
        with self.job.timer.stage("major: image"):
            return per_weight(self.op.hdot(residual_vis, self.imaging_weight),
                              self.weight_sum)

    def whiten(self, sw):
        self._sw = sw
        return sw * self.vis

    def forward_whitened(self, x):
        return self._sw * self.predict(x)

    def adjoint_whitened(self, vis):
        with self.job.timer.stage("major: image"):
            return self._image(vis, self._sw)

    def load_balance(self):
        return self.op.load_balance()


class GpuDistributedBackend(ImagingBackend):
    """GPU in the CPU's distributed scheme (:class:`radimg.parallel.gpu_operator.
    GpuDistributedOperator`): rows redistributed by gridding load before the weights are
    made, plane owners and the tile exchange as on the CPU, the per-plane work on each rank's
    device; the samples, imaging weights (and ADMM's whitening) are resident there (issue #7:
    the PSF, the dirty image and every major-cycle residual then move images, plus the tiles
    of planes owned elsewhere, staged through the host). Every image the operator returns is
    already the global one."""

    scheme = "balanced"
    samples_on_host = False  # the residual is made on the device from resident samples

    def __init__(self, job, geom, obs, weigh, options, choice):
        from radimg.parallel.gpu_operator import GpuDistributedOperator

        super().__init__(job, geom, options, choice)
        _distribute(self, job, obs, weigh, options, GpuDistributedOperator)
        with job.timer.stage("operator setup"):
            self.op.set_data(self.vis, self.imaging_weight)
        self.op.samples_of = self
        self.xp = self.op.xp

    def _own_samples(self):
        """Products of a cube's output channel may share one device operator
        (radimg.pipeline.cube): load this backend's samples when another's are there."""
        if getattr(self.op, "samples_of", None) is not self:
            with self.job.timer.stage("operator setup"):
                self.op.set_data(self.vis, self.imaging_weight)
            self.op.samples_of = self

    def psf(self):
        self._own_samples()
        return per_weight(self.op.psf_image(), self.weight_sum)

    def dirty(self):
        self._own_samples()
        return per_weight(self.op.dirty_image(), self.weight_sum)

    def residual(self, model, predict=None):
        # one image in, one image out; ``predict`` is not used (the samples are resident)
        self._own_samples()
        with self.job.timer.stage("major: residual"):
            model = np.ascontiguousarray(model, dtype=np.float64)
            return per_weight(self.op.residual_image(model), self.weight_sum)

    def whiten(self, sw):
        # y_w, z and the residuals stay on the device; per iteration one image goes in
        # (wdot) and one comes out (whdot)
        return self.op.set_whitening(sw)

    def forward_whitened(self, x):
        with self.job.timer.stage("major: predict"):
            return self.op.wdot(x)

    def adjoint_whitened(self, vis):
        with self.job.timer.stage("major: image"):
            return np.asarray(self.op.whdot(vis), dtype=np.float64)

    def vis_to_host(self, vis):
        return self.op.vis_to_host(vis)

    def vis_from_host(self, vis, dtype):
        return self.op.vis_to_device(vis)

    def load_balance(self):
        return self.op.load_balance()

    def transfers(self):
        return self.op.transfer_summary()
