"""The GPU measurement operator inside the distributed scheme (Pratley & McEwen 2019, sec. 4).

:class:`GpuDistributedOperator` is :class:`radimg.parallel.operator.DistributedOperator` with
its per-plane work on the device: the set-up is the CPU one, unchanged (rows moved so every
rank carries the same kernel load, global w-planes / k-means w-stacks and kernel tables,
plane owners dealt round-robin over the live planes, the tiles ``M_jk`` each rank needs, one
Alltoallv per application), and the GPU twin of the serial operator
(:mod:`radimg.gpu.operator`) is built from the serial CPU operator the set-up made, so both
grid exactly the same samples with the same geometry and kernels.

Per application on the device: the owner's chirp, correction and FFT of its planes, the
gridding / degridding of this rank's resident samples; the images are summed over ranks
inside the adjoint (AllSumAll, eq. 10), so every image this operator returns is the global
one.

Tiles travel by **host staging**: an owner copies a plane's grid to the host when another
rank asked for tiles of it, the tiles are packed there (the CPU's ``_pack_tiles``) and go in
the CPU scheme's one Alltoallv; a receiver unpacks them into a host grid and copies that grid
to the device. The adjoint runs the same way back. So a plane crosses PCIe only when another
rank needs part of it: at one rank (or when every rank owns the planes its samples touch) a
major cycle moves one image in and one image out, as the resident single-GPU operator does;
otherwise each served or received plane adds one padded grid each way per application
(counted in ``transfers``). Device-side tile packing or CUDA-aware MPI would cut that to the
tiles themselves; not measured yet (no GPU was reachable), so the simpler staging stays.

The resident-data methods (``set_data``, ``psf_image``, ``dirty_image``,
``residual_image``, ``set_whitening``, ``wdot``, ``whdot``, ``transfer_summary``) are
:class:`radimg.gpu.operator.ResidentOperator`'s; here their images are already global.
"""

from __future__ import annotations

import numpy as np

from radimg.gpu._device import get_xp, to_device, to_host
from radimg.gpu.operator import GpuWideFieldOperator, GpuWProjectOperator, ResidentOperator
from radimg.parallel.mpi import allreduce_array, allreduce_scalar
from radimg.parallel.operator import UNPACK, UNPACK_ADD, DistributedOperator

__all__ = ["GpuDistributedOperator"]


class GpuDistributedOperator(ResidentOperator, DistributedOperator):
    """Load-balanced distributed ``dot`` / ``hdot`` with the per-plane work on this rank's GPU.

    Parameters are :class:`radimg.parallel.operator.DistributedOperator`'s, plus ``block``
    and ``max_shared`` (the GPU operators' launch options). Collective. Raises
    :class:`radimg.gpu.GpuUnavailableError` before any collective work when this rank has no
    usable GPU.

    ``dot(image)`` / ``hdot(vis, weight)`` take and give host arrays (device arrays give
    device vis; the adjoint's image is always the global host image); ``uvw``, ``weight``,
    ``row_id``, ``redistribute_vis`` and ``load_balance`` are the CPU scheme's.
    """

    WKERNEL = "es"  # the CUDA kernels' w-kernel (no Chebyshev terms on the GPU)

    def __init__(self, comm, uvw, freq, weight, npix_x, npix_y, cell_rad, *, block=None,
                 max_shared=None, **kwargs):
        self.xp = get_xp()  # no GPU: refuse before any collective work
        DistributedOperator.__init__(self, comm, uvw, freq, weight, npix_x, npix_y, cell_rad,
                                     **kwargs)
        launch = {k: v for k, v in (("block", block), ("max_shared", max_shared))
                  if v is not None}
        if self.mode == "wstack-wproject":
            dev = GpuWProjectOperator(None, None, self.geometry, cpu=self.op, **launch)
        else:
            dev = GpuWideFieldOperator(None, None, self.geometry, cpu=self.op, **launch)
        self.dev = dev
        self.transfers = dev.transfers  # one set of counters for the set-up and every call
        self.setup_h2d_bytes = dev.setup_h2d_bytes
        self._nvalid = dev._nvalid
        self._init_resident()

    def set_data(self, vis, weight=None):
        """Resident samples (collective): as the single-GPU operator's, with the weight sum
        that normalises the images taken over all ranks (the images are global)."""
        ResidentOperator.set_data(self, vis, weight)
        self._wsum = allreduce_scalar(self.comm, self._wsum)

    def _setup_fft(self):
        # cuFFT on the device (numpy under the simulator): no host FFT plans to make
        pass

    @property
    def fft_backend(self):
        return "cufft" if self.xp.__name__ == "cupy" else "numpy (CUDA simulator)"

    @property
    def stats(self):
        """The CPU scheme's figures plus the device's residency and transfer counts."""
        s = DistributedOperator.stats.fget(self)
        d = self.dev.stats
        for k in ("fft", "device", "resident_bytes", "setup_h2d_bytes"):
            s[k] = d[k]
        s.update(self.transfers.as_dict())
        return s

    # ------------------------------------------------------------------ device applications
    def _dot_dev(self, img_d):
        """``Phi x`` for a device image: this rank's samples' vis (device, (nrow, nchan))."""
        xp, dev, st = self.xp, self.dev, self.transfers
        self.n_dot += 1  # the CPU scheme's work counters: the device runs the same samples
        vis = xp.zeros((self.nrow, self.nchan), dtype=self.cdtype)
        send_buf = np.empty(self._buf_cells[0], dtype=self.cdtype)
        recv_buf = np.empty(self._buf_cells[1], dtype=self.cdtype)
        if self.my_planes:
            img_s = dev.scale_image(img_d)
        for rnd in self._rounds:  # the CPU operator's exchange rounds
            send = send_buf[: int(rnd.send.sum())]
            for p in rnd.mine:
                g = dev.owner_forward(img_s, p)
                if rnd.serve[p]:  # host staging: the tiles other ranks asked for
                    gh = to_host(g, xp, st)
                    for tiles, off in rnd.serve[p]:
                        self._pack(gh, tiles, send, off)
                    del gh
                if p in self._touched:  # own samples degrid straight from the owner's grid
                    self.kernel_cells["degrid"] += self._plane_cells(p)
                    dev.degrid_samples(g, p, out=vis)
                del g
            recv = recv_buf[: int(rnd.recv.sum())]
            self._alltoallv(send, rnd.send, recv, rnd.recv)
            for p, tiles, off in rnd.recv_plan:
                self._pack(self._scratch, tiles, recv, off, UNPACK)
                self.kernel_cells["degrid"] += self._plane_cells(p)
                dev.degrid_samples(to_device(self._scratch, xp, st), p, out=vis)
        return vis

    def _hdot_dev(self, vis_d, weight_d):
        """``Phi^H W v`` of device vis: the global image on the host (rdtype), after the
        Allreduce; the device sum crosses to the host once (one image)."""
        xp, dev, st = self.xp, self.dev, self.transfers
        self.n_hdot += 1
        send_buf = np.empty(self._buf_cells[1], dtype=self.cdtype)
        recv_buf = np.empty(self._buf_cells[0], dtype=self.cdtype)
        acc = xp.zeros((self.npix_y, self.npix_x), dtype=np.float64)
        for rnd in self._rounds:  # the CPU operator's exchange rounds
            send = send_buf[: int(rnd.recv.sum())]
            for p, tiles, off in rnd.recv_plan:  # other ranks' planes: grid, stage, pack
                self.kernel_cells["grid"] += self._plane_cells(p)
                g = dev.grid_samples(vis_d, p, weight=weight_d,
                                     out=xp.zeros(self._grid_shape, dtype=self.cdtype))
                self._pack(to_host(g, xp, st), tiles, send, off)
                del g
            recv = recv_buf[: int(rnd.send.sum())]
            self._alltoallv(send, rnd.recv, recv, rnd.send)
            for p in rnd.mine:
                g = xp.zeros(self._grid_shape, dtype=self.cdtype)
                if p in self._touched:  # own samples grid straight onto the owner's grid
                    self.kernel_cells["grid"] += self._plane_cells(p)
                    dev.grid_samples(vis_d, p, weight=weight_d, out=g)
                if rnd.serve[p]:  # the other ranks' tiles, summed on the host
                    self._scratch[...] = 0
                    for tiles, off in rnd.serve[p]:
                        self._pack(self._scratch, tiles, recv, off, UNPACK_ADD)
                    g += to_device(self._scratch, xp, st)
                dev.owner_adjoint(g, p, acc)
                del g
        del send_buf, recv_buf
        if self.my_planes:
            dev.finish_image(acc)
        # one image to the host in the operator's precision (as the single-GPU operator
        # moves it), summed over ranks in float64
        img = to_host(acc.astype(self.rdtype, copy=False), xp, st).astype(np.float64)
        allreduce_array(self.comm, img, "sum")
        return img.astype(self.rdtype, copy=False)

    def _image_out(self, img, normalise, like=None):
        # _hdot_dev's image is on the host already (it was summed over ranks there)
        if normalise and self._wsum > 0:
            img = img / self._wsum
        return np.asarray(img).astype(self.rdtype, copy=False)
