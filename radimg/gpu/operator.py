"""GPU twin of radimg/ops/operator.py: the wide-field measurement operator with data resident on
the device.

Same maths, same geometry, same ``dot`` / ``hdot`` / stage methods as
:class:`radimg.ops.operator.WideFieldOperator` (Pratley & McEwen 2019, eqs. 2-3 and 7): the CPU
operator is built once on the host for its geometry (kernel parameters, w-planes, tile layout,
gridding correction) and everything the per-call work reads is copied to the device at
construction and kept there: uvw, the channel scales, the sorted sample layout, the correction
image and, after :meth:`set_data`, the visibilities and weights.

Data residency (the VLASS memo, sec. 2.1, reports CPU <-> GPU transfers dominating GPU imaging
runtimes): after set-up, a major cycle (:meth:`residual`) moves one model image in and one
residual image out; no sample data crosses PCIe. Every call counts its host <-> device bytes;
``stats`` reports them next to the operator sizes for the timing table.

FFTs (cuFFT via ``cupy.fft``), chirps and tapers are vectorised cupy glue
(``xp = cupy`` on a GPU, ``numpy`` under the numba CUDA simulator, which the tests use); the
gridding itself runs in the numba.cuda kernels of :mod:`radimg.gpu.gridder`.

``mode="wstack-wproject"`` (:class:`GpuWProjectOperator`) runs the CUDA twins of the
w-projection residual kernels (radimg/gpu/wproject.py) with the CPU operator's stacks and
tables, resident like everything else.

With ``gridder.device: gpu`` the pipeline (radimg/pipeline.py) calls :meth:`set_data` once,
then :meth:`psf_image`, :meth:`dirty_image` and, every major cycle, :meth:`residual_image`
(local, unnormalised images: it sums them over ranks and divides by the global weight sum),
and puts :meth:`transfer_summary` (bytes host -> device and back, set-up, per major cycle and
per ADMM iteration) in each rank's timing counters.

ADMM (radimg/deconv/admm.py) keeps its visibility-space vectors on the device too: the
pipeline calls :meth:`set_whitening` once (the whitening factors go over, the whitened data
``y_w`` is made on the device from the resident samples) and then :meth:`wdot` (host image in,
device vis out) and :meth:`whdot` (device vis in, local host image out); the residual, the dual
variable, the l2-ball projection and the norms are array-module generic in admm.py (``xp``).
Per ADMM iteration one image goes in and one comes out (plus the two norms' scalars, which
these counters leave out); the SARA prox (PyWavelets) works on host images. A checkpoint moves
the dual variable ``z`` to the host (:meth:`vis_to_host`), a resume moves it back
(:meth:`vis_to_device`): counted in the totals, outside the per-iteration counters.

Images go to the device in the operator's precision (float32 for ``precision: single``).
"""

from __future__ import annotations

import numpy as np

from radimg.constants import C_LIGHT
from radimg.gpu import gridder as _gg
from radimg.gpu import wproject as _gwp
from radimg.gpu._device import TransferStats, get_xp, is_host_array, to_device, to_host

__all__ = ["GpuWideFieldOperator", "GpuWProjectOperator", "ResidentOperator", "make_operator"]


def make_operator(uvw, freq, npix_x, npix_y, cell_rad, *, epsilon=1e-5, mode="wstack",
                  nstacks="auto", oversampling=2.0, nthreads=1, precision="double", fft="auto",
                  weight_mask=None, oversampling_w=None, block=None, max_shared=None,
                  **kwargs):
    """GPU twin of :func:`radimg.ops.operator.make_operator` (same arguments; its default
    mode here is ``wstack``, the faster one on a GPU), on this process's samples alone: the
    geometry is resolved from them (:func:`radimg.ops.operator.geometry_for_samples`).

    The distributed scheme (rows balanced by load, global w-planes/stacks, plane owners,
    tile exchange) is :class:`radimg.parallel.gpu_operator.GpuDistributedOperator`. Raises
    :class:`radimg.gpu.GpuUnavailableError` when no GPU is usable.
    """
    from radimg.ops.geometry import Field
    from radimg.ops.operator import geometry_for_samples

    get_xp()  # no GPU: refuse before any work
    geo = geometry_for_samples(uvw, freq, Field.of(npix_x, npix_y, cell_rad), epsilon, mode,
                               weight_mask=weight_mask, nstacks=nstacks,
                               oversampling=oversampling, oversampling_w=oversampling_w,
                               precision=precision, nthreads=nthreads, wkernel="es")
    launch = {k: v for k, v in (("block", block), ("max_shared", max_shared)) if v is not None}
    common = dict(nthreads=nthreads, fft=fft, weight_mask=weight_mask, **kwargs)
    if mode == "wstack-wproject":
        return GpuWProjectOperator(uvw, freq, geo, **launch, **common)
    return GpuWideFieldOperator(uvw, freq, geo, **launch, **common)


class ResidentOperator:
    """What both GPU operators share: resident samples, the major-cycle images, ``dot`` /
    ``hdot`` for host or device arrays, and host <-> device byte counts.

    Subclasses set ``xp``, ``transfers``, ``nrow``, ``nchan``, ``npix_x``, ``npix_y``,
    ``cdtype``, ``rdtype``, ``setup_h2d_bytes``, ``_nvalid`` (unmasked samples) and implement
    ``_dot_dev(image_d) -> vis_d`` and ``_hdot_dev(vis_d, weight_d) -> image_d``.
    """

    def _init_resident(self):
        self._vis = None
        self._weight = None
        self._wsum = 0.0
        self.data_h2d_bytes = 0
        self._cycles = []  # (h2d, d2h) bytes of each residual() call: one per major cycle
        self._sw = None  # ADMM whitening factors (device), after set_whitening()
        self._admm_fwd = []  # (h2d, d2h) bytes of each wdot() call
        self._admm_adj = []  # (h2d, d2h) bytes of each whdot() call

    @property
    def resident(self):
        """True once :meth:`set_data` has put the samples on the device."""
        return self._vis is not None

    # ------------------------------------------------------------------ resident data
    def set_data(self, vis, weight=None):
        """Copy the visibilities (and weights) to the device once; :meth:`dirty`, :meth:`psf`
        and :meth:`residual` then use them without moving sample data again."""
        self.transfers.begin()
        self._vis = self._dev_vis(vis)
        self._weight = None if weight is None else self._dev_weight(weight)
        # the weight sum is taken on the host copy: no device reduction read back per call
        self._wsum = (float(np.sum(weight, dtype=np.float64)) if weight is not None
                      else float(self._nvalid))
        self.data_h2d_bytes = self.transfers.call_h2d

    def dirty(self, *, normalise=True):
        """``Phi^H W y`` (divided by ``sum W`` when ``normalise``) from the resident data."""
        self._need_data()
        self.transfers.begin()
        img = self._hdot_dev(self._vis, self._weight)
        return self._image_out(img, normalise)

    def psf(self, *, normalise=True):
        """``Phi^H W 1`` from the resident weights (unit visibilities made on the device)."""
        self._need_data()
        self.transfers.begin()
        ones = self.xp.ones((self.nrow, self.nchan), dtype=self.cdtype)
        return self._image_out(self._hdot_dev(ones, self._weight), normalise)

    def residual(self, model, *, normalise=True):
        """Major-cycle residual ``Phi^H W (y - Phi x)`` for a host or device model image:
        one image in, one image out. Each call's bytes are kept for
        :meth:`transfer_summary`."""
        self._need_data()
        self.transfers.begin()
        vis = self._dot_dev(self._image_in(model) if is_host_array(model, self.xp) else model)
        vis = self._vis - vis
        img = self._hdot_dev(vis, self._weight)
        out = self._image_out(img, normalise, like=model)
        self._cycles.append((self.transfers.call_h2d, self.transfers.call_d2h))
        return out

    # The pipeline's names (radimg/pipeline.py): local, unnormalised, host images; the pipeline
    # sums them over ranks (AllSumAll, eq. 7) and divides by the global weight sum.
    def psf_image(self):
        """Local ``Phi^H W 1`` (host, unnormalised) from the resident weights."""
        return self.psf(normalise=False)

    def dirty_image(self):
        """Local ``Phi^H W y`` (host, unnormalised) from the resident samples."""
        return self.dirty(normalise=False)

    def residual_image(self, model):
        """Local ``Phi^H W (y - Phi x)`` (host, unnormalised): one major cycle's image."""
        return self.residual(model, normalise=False)

    def transfer_summary(self):
        """Host <-> device bytes for the timing table: set-up (geometry, tables, samples,
        weights, ADMM whitening factors, once), per major cycle (the largest :meth:`residual`
        call; every cycle moves the same), per ADMM iteration when ADMM ran (the largest
        :meth:`wdot` plus the largest :meth:`whdot`: an ADMM or power-method iteration calls
        each once; ``device_admm_applies`` counts the :meth:`wdot` calls) and totals."""
        h2d = [c[0] for c in self._cycles]
        d2h = [c[1] for c in self._cycles]
        out = {
            "h2d_bytes_setup": int(self.setup_h2d_bytes + self.data_h2d_bytes),
            "h2d_bytes_per_cycle": int(max(h2d, default=0)),
            "d2h_bytes_per_cycle": int(max(d2h, default=0)),
            "device_major_cycles": len(self._cycles),
        }
        if self._admm_fwd or self._admm_adj:
            f, a = self._admm_fwd, self._admm_adj
            out["h2d_bytes_per_admm_iteration"] = int(
                max((c[0] for c in f), default=0) + max((c[0] for c in a), default=0))
            out["d2h_bytes_per_admm_iteration"] = int(
                max((c[1] for c in f), default=0) + max((c[1] for c in a), default=0))
            out["device_admm_applies"] = len(f)
        out["h2d_bytes_total"] = int(self.transfers.total_h2d)
        out["d2h_bytes_total"] = int(self.transfers.total_d2h)
        return out

    # ------------------------------------------------------------------ ADMM (whitened)
    # ADMM's operator is Phi_w = diag(sw) Phi (radimg/deconv/admm.py); its vis-space vectors
    # live on the device, its images (SARA prox, PyWavelets) on the host.
    def set_whitening(self, sw):
        """Copy ADMM's whitening factors ``sw`` (row, chan) real to the device once (set-up
        bytes) and return the whitened data ``y_w = sw * y`` (device, cdtype) made from the
        resident samples."""
        self._need_data()
        self.transfers.begin()
        self._sw = self._dev_weight(sw)
        self.data_h2d_bytes += self.transfers.call_h2d
        return self._sw * self._vis

    def wdot(self, image):
        """``Phi_w x``: host image (npix_y, npix_x) in (one image host -> device in the
        operator's precision), device vis (row, chan) cdtype out."""
        self._need_whitening()
        self.transfers.begin()
        vis = self._dot_dev(self._image_in(image))
        vis *= self._sw
        self._admm_fwd.append((self.transfers.call_h2d, self.transfers.call_d2h))
        return vis

    def whdot(self, vis):
        """Local ``Phi_w^H v`` (host, unnormalised, rdtype) of a device vis (row, chan): one
        image device -> host, no sample data."""
        self._need_whitening()
        self.transfers.begin()
        vis = self.xp.ascontiguousarray(vis, dtype=self.cdtype)
        img = self._image_out(self._hdot_dev(vis, self._sw), False)
        self._admm_adj.append((self.transfers.call_h2d, self.transfers.call_d2h))
        return img

    def vis_to_host(self, vis):
        """A device vis vector to the host (ADMM checkpoints: the dual variable), counted."""
        self.transfers.begin()
        return to_host(vis, self.xp, self.transfers)

    def vis_to_device(self, vis):
        """A host vis vector to the device in cdtype (ADMM resume), counted."""
        self.transfers.begin()
        return self._dev_vis(np.asarray(vis))

    def _need_whitening(self):
        if self._sw is None:
            raise RuntimeError("call set_data(vis, weight) and set_whitening(sw) first")

    def _need_data(self):
        if self._vis is None:
            raise RuntimeError("call set_data(vis, weight) first")

    def _image_out(self, img, normalise, like=None):
        if normalise and self._wsum > 0:
            img = img / self._wsum
        img = img.astype(self.rdtype, copy=False)
        if like is not None and not is_host_array(like, self.xp):
            return img
        return to_host(img, self.xp, self.transfers)

    # ------------------------------------------------------------------ conversions
    def _dev_vis(self, vis):
        if vis.shape != (self.nrow, self.nchan):
            raise ValueError(f"vis must be (row, chan) = {(self.nrow, self.nchan)}, got {vis.shape}")
        return to_device(vis, self.xp, self.transfers, dtype=self.cdtype)

    def _dev_weight(self, weight):
        if weight.shape != (self.nrow, self.nchan):
            raise ValueError("weight must have the shape of vis")
        return to_device(weight, self.xp, self.transfers, dtype=self.rdtype)

    def _image_in(self, image):
        if image.shape != (self.npix_y, self.npix_x):
            raise ValueError(f"image must be (npix_y, npix_x) = {(self.npix_y, self.npix_x)}")
        # in the operator's precision: the CPU pipeline rounds the model to it too (predict)
        return to_device(image, self.xp, self.transfers, dtype=self.rdtype)

    # ------------------------------------------------------------------ operator
    def dot(self, image):
        """Forward operator: image (npix_y, npix_x) real -> vis (row, chan) complex.

        A host image gives host visibilities (sample data moves off the device: use
        :meth:`residual` in a major cycle); a device image gives device visibilities.
        """
        self.transfers.begin()
        host = is_host_array(image, self.xp)
        vis = self._dot_dev(self._image_in(image) if host else image)
        return to_host(vis, self.xp, self.transfers) if host else vis

    def hdot(self, vis, weight=None):
        """Adjoint: vis (row, chan) complex (times ``weight``) -> image (npix_y, npix_x) real.

        Host arrays are copied to the device on every call (use :meth:`set_data` and
        :meth:`dirty` / :meth:`residual` to keep them there); device arrays are used in place
        and give a device image.
        """
        self.transfers.begin()
        host = is_host_array(vis, self.xp)
        vis_d = self._dev_vis(vis) if host else vis
        w_d = None
        if weight is not None:
            w_d = self._dev_weight(weight) if is_host_array(weight, self.xp) else weight
        img = self._hdot_dev(vis_d, w_d)
        return self._image_out(img, False) if host else img


class GpuWideFieldOperator(ResidentOperator):
    """Measurement operator on one GPU, modes ``none`` and ``wstack``.

    Public: ``dot(image) -> vis``, ``hdot(vis, weight=None) -> image`` (host arrays in, host
    arrays out; device arrays in, device arrays out), :meth:`set_data` plus :meth:`dirty`,
    :meth:`psf`, :meth:`residual` (and the pipeline's :meth:`psf_image`, :meth:`dirty_image`,
    :meth:`residual_image`, :meth:`transfer_summary`) for resident data, :meth:`set_whitening`,
    :meth:`wdot`, :meth:`whdot` for ADMM with device-resident vis-space vectors, the stage
    methods and ``stats``.

    Extra keyword arguments: ``block`` (threads per block, default 128; 32 under the
    simulator), ``max_shared`` (shared-memory budget per block in bytes; 0 forces the
    global-atomics path), ``cpu`` (a :class:`radimg.ops.operator.WideFieldOperator` already
    built for this geometry and these samples: used instead of building one; the other
    arguments are then ignored). ``geometry`` (:class:`radimg.ops.geometry.Geometry`) and
    the remaining keyword arguments are the CPU operator's.
    """

    def __init__(self, uvw, freq, geometry, *, block=_gg._BLOCK, max_shared=_gg.SHARED_BYTES,
                 cpu=None, **kwargs):
        from radimg.ops.operator import WideFieldOperator

        if geometry.wkernel != "es":  # the CUDA kernels evaluate the ES w-kernel
            raise ValueError("the GPU operator grids w with the ES kernel: resolve its "
                             "geometry with wkernel='es'")
        self.xp = xp = get_xp()  # raises GpuUnavailableError before any work
        self.transfers = TransferStats()
        self._block = int(block)
        self._max_shared = int(max_shared)
        if cpu is None:
            cpu = WideFieldOperator(uvw, freq, geometry, **kwargs)
        self._cpu = cpu
        for name in ("nrow", "nchan", "npix_x", "npix_y", "cell_x", "cell_y", "mode", "epsilon",
                     "precision", "cdtype", "rdtype", "spec", "planes", "oversampling", "mask"):
            setattr(self, name, getattr(cpu, name))
        self.nthreads = cpu.nthreads
        st = self.transfers
        st.begin()
        # Resident for the operator's lifetime (set-up transfers, counted once).
        self._uvw = to_device(cpu.uvw, xp, st, dtype=np.float64)
        self._fscale = to_device(cpu.freq / C_LIGHT, xp, st, dtype=np.float64)
        self._spec_f = to_device(_gg.spec_array(cpu.spec), xp, st)
        layout = cpu.layout()
        self._layout = _gg.upload_layout(layout, cpu.spec.W, xp, st)
        self._correction = to_device(cpu.correction, xp, st, dtype=np.float64)
        self._coef, self._coefw = _gg._tables_dev(cpu.spec, xp, st)
        self._kernels = _gg.kernels(self.rdtype)
        self._nvalid = int(self._layout.nsamples)
        self.setup_h2d_bytes = st.call_h2d
        self._init_resident()

    # ------------------------------------------------------------------ description
    @property
    def nplanes(self):
        return self.spec.nplanes

    @property
    def stats(self):
        """The CPU operator's sizes plus device, residency and transfer counts."""
        s = dict(self._cpu.stats)
        s["fft"] = "cufft" if self.xp.__name__ == "cupy" else "numpy (CUDA simulator)"
        s["device"] = "cuda" if self.xp.__name__ == "cupy" else "simulator"
        s["resident_bytes"] = int(sum(
            int(a.nbytes) for a in (self._uvw, self._fscale, self._correction, self._vis,
                                    self._weight, *self._layout[:8]) if a is not None))
        s["setup_h2d_bytes"] = self.setup_h2d_bytes
        s.update(self.transfers.as_dict())
        return s


    # ------------------------------------------------------------------ stages
    def new_grid(self):
        return self.xp.zeros((self.spec.nyp, self.spec.nxp), dtype=self.cdtype)

    def _fft2(self, grid):
        # Unnormalised forward transform (radimg/ops/fft.py convention).
        return self.xp.fft.fft2(grid).astype(self.cdtype, copy=False)

    def _ifft2(self, grid):
        # Unnormalised backward transform: norm="forward" puts 1/N on the forward side only.
        return self.xp.fft.ifft2(grid, norm="forward").astype(self.cdtype, copy=False)

    def image_to_plane_grid(self, image, p, out=None):
        """``F Z S_p x`` on the device: the Fourier grid of plane ``p`` (eq. 9); ``image`` is a
        host or device (npix_y, npix_x) real image."""
        img = self._image_in(image) if is_host_array(image, self.xp) else image
        return self._plane_grid(img * self._correction, p, out)

    def _plane_grid(self, img_corr, p, out=None):
        """``F Z`` of the chirped, corrected device image ``img_corr`` for plane ``p``."""
        grid = self.new_grid() if out is None else out
        k = self._kernels
        grid.fill(0)  # a cupy fill (one memset-like kernel); numpy under the simulator
        k.image_to_plane[_gg._grid2d(img_corr.shape), _gg._BLOCK2D](
            img_corr, self.cell_x, self.cell_y, float(self.planes[p]), float(self.spec.nshift),
            grid)
        return self._fft2(grid)

    def plane_grid_to_image(self, grid, p, out=None):
        """``S_p^H Z^H F^H grid``: add plane ``p``'s image to ``out`` (device float64)."""
        if out is None:
            out = self.xp.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        tmp = self.xp.zeros_like(out)
        fgrid = self._ifft2(grid)
        self._kernels.plane_to_image[_gg._grid2d(tmp.shape), _gg._BLOCK2D](
            fgrid, self.cell_x, self.cell_y, float(self.planes[p]), float(self.spec.nshift), tmp)
        out += tmp * self._correction
        return out

    def grid_samples(self, vis, p, weight=None, out=None):
        """``[G]_p^H W^H`` on the device: add the resident samples touching plane ``p`` to
        ``out``; ``vis``, ``weight`` are device arrays."""
        grid = self.new_grid() if out is None else out
        rdt = np.dtype(self.rdtype)
        wgt = weight if weight is not None else self.xp.ones((1, 1), dtype=rdt)
        _gg._launch_grid(self._kernels, self._layout, self._spec_f, self._uvw, self._fscale,
                         vis, wgt, weight is not None, self.spec.W, self.spec.Ww, int(p),
                         self._coef, self._coefw, grid.view(rdt), self._block, self._max_shared)
        return grid

    def degrid_samples(self, grid, p, out=None):
        """``[G]_p``: add plane ``p``'s contribution at the resident samples to ``out``."""
        if out is None:
            out = self.xp.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        _gg._launch_degrid(self._kernels, self._layout, self._spec_f, self._uvw, self._fscale,
                           self.xp.ascontiguousarray(grid).view(np.dtype(self.rdtype)),
                           self.spec.W, self.spec.Ww, int(p), self._coef, self._coefw, out,
                           self._block,
                           self._max_shared)
        return out

    # The distributed scheme's four owner steps (radimg.parallel.gpu_operator): the image
    # factor once per application, then per plane the owner's transform.
    def scale_image(self, img_d):
        """The image-domain factor common to every plane: ``x / g`` (device float64)."""
        return img_d * self._correction

    def owner_forward(self, img_s, p):
        """``F Z S_p`` of an image :meth:`scale_image` made: plane ``p``'s device grid."""
        return self._plane_grid(img_s, p)

    def owner_adjoint(self, grid, p, acc):
        """``acc += S_p^H Z^H F^H grid`` without the common factor (:meth:`finish_image`)."""
        fgrid = self._ifft2(grid)
        self._kernels.plane_to_image[_gg._grid2d(acc.shape), _gg._BLOCK2D](
            fgrid, self.cell_x, self.cell_y, float(self.planes[p]), float(self.spec.nshift),
            acc)
        return acc

    def finish_image(self, acc):
        """The common factor of the adjoint, in place on the device float64 sum."""
        acc *= self._correction
        return acc

    # ------------------------------------------------------------------ operator
    def _dot_dev(self, img_d):
        vis = self.xp.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        img_corr = img_d * self._correction
        grid = self.new_grid()
        for p in range(self.nplanes):
            fgrid = self._plane_grid(img_corr, p, out=grid)
            self.degrid_samples(fgrid, p, out=vis)
        return vis

    def _hdot_dev(self, vis_d, weight_d):
        acc = self.xp.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        grid = self.new_grid()
        for p in range(self.nplanes):
            grid[...] = 0
            self.grid_samples(vis_d, p, weight=weight_d, out=grid)
            fgrid = self._ifft2(grid)
            self._kernels.plane_to_image[_gg._grid2d(acc.shape), _gg._BLOCK2D](
                fgrid, self.cell_x, self.cell_y, float(self.planes[p]), float(self.spec.nshift),
                acc)
        acc *= self._correction
        return acc.astype(self.rdtype, copy=False)


class GpuWProjectOperator(ResidentOperator):
    """``wterm.mode: wstack-wproject`` on one GPU: the twin of
    :class:`radimg.ops.wproject.WProjectOperator` (Pratley & McEwen 2019, eqs. 3-8).

    The CPU operator is built on the host for its geometry (k-means stacks, kernel tables,
    per-stack samples in tile order, the image-domain factors ``S_k``); the tables, uvw, the
    sample lists and the image factors are copied to the device once. Per stack ``k``:
    ``S_k`` and ``Z`` (chirp, taper, padding) are cupy glue, ``F`` is cuFFT, and ``[GC]_k``
    runs in the CUDA kernels of :mod:`radimg.gpu.wproject`.

    Extra keyword arguments: ``block`` (threads per block of the sample kernels, default 128),
    ``max_shared`` (shared-memory budget per block in bytes for the tiled gridding kernel; 0
    forces the global-atomics path), ``cpu`` (a :class:`radimg.ops.wproject.WProjectOperator`
    already built for these samples: used instead of building one, the other arguments are
    then ignored). ``geometry`` (:class:`radimg.ops.geometry.Geometry`, with its w-stacks)
    and the remaining keyword arguments are the CPU operator's.
    """

    def __init__(self, uvw, freq, geometry, *, block=_gwp._BLOCK,
                 max_shared=_gwp.SHARED_BYTES, cpu=None, **kwargs):
        from radimg.ops.wproject import WProjectOperator

        self.xp = xp = get_xp()  # raises GpuUnavailableError before any work
        self.transfers = TransferStats()
        self._block = int(block)
        if cpu is None:
            cpu = WProjectOperator(uvw, freq, geometry, **kwargs)
        self._cpu = cpu
        for name in ("nrow", "nchan", "npix_x", "npix_y", "cell", "epsilon", "precision",
                     "cdtype", "rdtype", "nstacks", "centres", "nxp", "nyp", "W", "beta",
                     "tables"):
            setattr(self, name, getattr(cpu, name))
        self.mode = "wstack-wproject"
        self.nthreads = cpu.nthreads
        st = self.transfers
        st.begin()
        # Resident for the operator's lifetime (set-up transfers, counted once).
        self._uvw = to_device(cpu.uvw, xp, st, dtype=np.float64)
        self._fscale = to_device(cpu.freq / C_LIGHT, xp, st, dtype=np.float64)
        self._tables = _gwp.upload_tables(cpu.tables, xp, st)
        # Samples of each stack sorted by grid tile (neighbouring threads, nearby cells): the
        # shared-memory tiles when the region fits max_shared, else the CPU's tile order.
        tile = _gwp.shared_tile(self._tables.smax, self.rdtype, max_shared)
        self._tiles = [None] * self.nstacks
        self._idx = []
        for k in range(self.nstacks):
            if tile is not None:
                tiles = _gwp.upload_tiles(_gwp.tile_chunks(
                    cpu.uvw, cpu.freq, cpu.stack_idx[k], cpu.centres[k], self.cell, self.nxp,
                    self.nyp, cpu.tables, *tile), xp, st)
                self._tiles[k] = tiles
                self._idx.append(tiles.idx)
            else:
                self._idx.append(to_device(cpu._layout(k, None)[0], xp, st, dtype=np.int64))
        self._nm1 = to_device(cpu._nm1, xp, st, dtype=np.float64)
        self._amp = to_device(cpu._amp, xp, st, dtype=np.float64)
        self._rows = to_device(cpu._rows, xp, st, dtype=np.int64)
        self._cols = to_device(cpu._cols, xp, st, dtype=np.int64)
        self._nvalid = int(sum(int(i.size) for i in cpu.stack_idx))
        self.setup_h2d_bytes = st.call_h2d
        self._init_resident()

    @property
    def stats(self):
        """The CPU operator's sizes plus device, residency and transfer counts."""
        s = dict(self._cpu.stats)
        s["fft"] = "cufft" if self.xp.__name__ == "cupy" else "numpy (CUDA simulator)"
        s["device"] = "cuda" if self.xp.__name__ == "cupy" else "simulator"
        s["resident_bytes"] = int(sum(
            int(a.nbytes) for a in (self._uvw, self._fscale, self._nm1, self._amp, self._vis,
                                    self._weight, self._tables.tab_x, self._tables.tab_y,
                                    *self._idx) if a is not None))
        s["setup_h2d_bytes"] = self.setup_h2d_bytes
        s.update(self.transfers.as_dict())
        return s

    # ------------------------------------------------------------------ stages
    def _chirp(self, k):
        return 2.0 * np.pi * float(self.centres[k]) * self._nm1

    def image_to_stack_grid(self, image_d, k):
        """``F Z S_k x`` on the device: stack ``k``'s padded uv grid (nyp, nxp) complex."""
        xp = self.xp
        ph = self._chirp(k)
        a = image_d * self._amp
        pad = xp.zeros((self.nyp, self.nxp), dtype=self.cdtype)
        pad[self._rows[:, None], self._cols[None, :]] = a * xp.cos(ph) + 1j * (a * xp.sin(ph))
        return xp.fft.fft2(pad).astype(self.cdtype, copy=False)

    def stack_grid_to_image(self, grid, k, out):
        """``out += Re S_k^H Z^H F^H grid`` (out: device float64 (npix_y, npix_x))."""
        xp = self.xp
        full = xp.fft.ifft2(grid, norm="forward")  # unnormalised backward transform
        z = full[self._rows[:, None], self._cols[None, :]]
        ph = self._chirp(k)
        out += self._amp * (z.real * xp.cos(ph) + z.imag * xp.sin(ph))
        return out

    def degrid_samples(self, grid, k, out):
        """``[GC]_k grid`` at stack ``k``'s resident samples, written to ``out[row, chan]``."""
        _gwp.launch_degrid(self._tables, self._uvw, self._fscale,
                           self.xp.ascontiguousarray(grid), self._idx[k], self.centres[k],
                           self.nxp * self.cell, self.nyp * self.cell, out, self._block)
        return out

    def grid_samples(self, vis, k, weight=None, out=None):
        """``[GC]_k^H W^H``: add stack ``k``'s resident samples to ``out`` (device)."""
        grid = (self.xp.zeros((self.nyp, self.nxp), dtype=self.cdtype) if out is None
                else out)
        rdt = np.dtype(self.rdtype)
        wgt = weight if weight is not None else self.xp.ones((1, 1), dtype=rdt)
        args = (self._tables, self._uvw, self._fscale, vis, wgt, weight is not None)
        geo = (self.centres[k], self.nxp * self.cell, self.nyp * self.cell, grid.view(rdt),
               self._block)
        if self._tiles[k] is not None:
            _gwp.launch_grid_tiles(*args, self._tiles[k], *geo)
        else:
            _gwp.launch_grid(*args, self._idx[k], *geo)
        return grid

    # The distributed scheme's owner steps (radimg.parallel.gpu_operator); ``S_k`` is applied
    # whole per stack here, so the common factor steps are the identity.
    def scale_image(self, img_d):
        return img_d

    def owner_forward(self, img_d, k):
        """``F Z S_k x``: stack ``k``'s device grid."""
        return self.image_to_stack_grid(img_d, k)

    def owner_adjoint(self, grid, k, acc):
        """``acc += Re S_k^H Z^H F^H grid``."""
        return self.stack_grid_to_image(grid, k, acc)

    def finish_image(self, acc):
        return acc

    # ------------------------------------------------------------------ operator
    def _dot_dev(self, img_d):
        vis = self.xp.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        for k in range(self.nstacks):
            if int(self._idx[k].size):
                self.degrid_samples(self.image_to_stack_grid(img_d, k), k, vis)
        return vis

    def _hdot_dev(self, vis_d, weight_d):
        acc = self.xp.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        for k in range(self.nstacks):
            if int(self._idx[k].size):
                grid = self.grid_samples(vis_d, k, weight=weight_d)
                self.stack_grid_to_image(grid, k, acc)
        return acc.astype(self.rdtype, copy=False)
