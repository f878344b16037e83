"""The major cycle's predict of a CLEAN model with few components, by a direct Fourier
transform of those components (no MPI inside the kernels, no I/O).

A CLEAN model after one minor cycle holds a few hundred non-zero pixels. Predicting them
one by one,

``V(row, chan) = sum_s x_s exp(+2 pi i (u l_s + v m_s + w (n_s - 1)))``

(the operator's forward, ``docs/internals.md``: ``x`` in Jy/pixel, no ``1 / n``; exact, no
gridding error), costs
``rows x components`` sine/cosine pairs, while the gridded predict (``op.dot``) costs the
same whatever the model: w-plane FFTs and degridding every sample. On pyuvdata's real MWA
snapshot at 1024 x 1' (72.6 k samples, 358 then 729 components) the DFT takes 0.01-0.03
s per major cycle on 2 ranks (0.1-0.3 s before its loops vectorised) against ~0.2 s for
``op.dot``. :class:`MajorPredict` chooses per major
cycle from cost models (never from measured times: the choice must not change the image
between runs), and every rank chooses alike.

With uniformly spaced channels the phase is linear in the channel index, so each (row,
component) needs two sine/cosine pairs (the first channel and the step) and the channels
follow by complex multiplication; otherwise one pair per (row, channel, component).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from radimg.constants import C_LIGHT
from radimg.kernels._jit import JIT_OPTIONS, PARALLEL_JIT_OPTIONS
from radimg.kernels.trig import cis_cycles

__all__ = [
    "MajorPredict",
    "component_predict",
    "component_predict_seconds",
    "gridded_predict_seconds",
    "model_components",
]

#: One core's seconds of :func:`component_predict`, measured on the development machine
#: (20 000 rows x 100 components, 1-32 channels, the row-block kernels): per (row,
#: component) with equally spaced channels 3.0 ns + 0.12 ns a channel; one sine/cosine per
#: (row, channel, component) otherwise, 1.5-1.6 ns (so one or two channels take that way).
#: The per-row loops with ``math.cos`` / ``math.sin`` before them: 29 + 2.4 ns and 19-27 ns.
DFT_S_PAIR = 3.0e-9
DFT_S_CHAN = 0.12e-9
DFT_S_EVAL = 1.6e-9
#: the DFT is chosen when predicted below this fraction of the gridded predict (both are
#: models; the operators' were fitted to within ~2x of measured dot times)
CHOOSE_DFT_BELOW = 0.8


#: Rows per block of the DFT kernels: a thread takes a block, and every loop over the
#: block's rows (independent: each row has its own accumulators) vectorises.
_ROWS = 64


@njit(**JIT_OPTIONS)
def _block_uvw(uvw, r0, nr):
    """Rows ``r0 .. r0 + nr`` of ``uvw`` as (3, _ROWS), zero beyond ``nr``: the vectorised
    loops run over all _ROWS (a fixed count) and read u, v, w contiguously."""
    out = np.zeros((3, _ROWS))
    for j in range(nr):
        out[0, j] = uvw[r0 + j, 0]
        out[1, j] = uvw[r0 + j, 1]
        out[2, j] = uvw[r0 + j, 2]
    return out


@njit(inline="always", **JIT_OPTIONS)
def _block_x(xyz, ls, ms, ns, x):
    """``x = u l + v m + w (n - 1)`` (metres) of one component for a block's rows."""
    for j in range(_ROWS):
        x[j] = xyz[0, j] * ls + xyz[1, j] * ms + xyz[2, j] * ns


@njit(**JIT_OPTIONS)
def _store_block(acc, r0, nr, out_re, out_im):
    """A block's accumulators (2 nchan, _ROWS), (re, im) per channel, into rows ``r0 ..
    r0 + nr`` of the outputs."""
    for j in range(nr):
        for c in range(out_re.shape[1]):
            out_re[r0 + j, c] = acc[2 * c, j]
            out_im[r0 + j, c] = acc[2 * c + 1, j]


@njit(**PARALLEL_JIT_OPTIONS)
def _uniform_kernel(uvw, scale0, dscale, l, m, nm1, amp, out_re, out_im):  # noqa: E741
    """Equally spaced channels: per (row, component) two phases, ``x scale0`` and ``x
    dscale`` cycles (``x = u l + v m + w (n - 1)``, metres), the channels by rotation.

    Blocks of ``_ROWS`` rows: per component, the loops over the block's rows evaluate the
    phases (:func:`radimg.kernels.trig.cis_cycles`, plain arithmetic) and rotate and add
    them into each row's own accumulators. Both vectorise (the rows are independent; the
    sum over components keeps its order per row and channel). Measured on the real MWA
    snapshot's sizes (3630 rows x 10 channels x 734 components, one core): 125 -> 12 ms,
    within 1.3e-13 of the peak of the previous per-row loop with ``math.cos`` /
    ``math.sin``."""
    nrow, nchan = out_re.shape
    nsrc = l.shape[0]
    for b in prange((nrow + _ROWS - 1) // _ROWS):
        r0 = b * _ROWS
        nr = min(_ROWS, nrow - r0)
        xyz = _block_uvw(uvw, r0, nr)
        x = np.empty(_ROWS)
        scr = np.empty((4, _ROWS))  # amp cis(first channel), cis(step)
        acc = np.zeros((2 * nchan, _ROWS))
        for s in range(nsrc):
            _block_x(xyz, l[s], m[s], nm1[s], x)
            a = amp[s]
            for j in range(_ROWS):
                c0, s0 = cis_cycles(x[j] * scale0)
                c1, s1 = cis_cycles(x[j] * dscale)
                scr[0, j] = a * c0
                scr[1, j] = a * s0
                scr[2, j] = c1
                scr[3, j] = s1
            for c in range(nchan):
                for j in range(_ROWS):
                    pr = scr[0, j]
                    pi = scr[1, j]
                    acc[2 * c, j] += pr
                    acc[2 * c + 1, j] += pi
                    scr[0, j] = pr * scr[2, j] - pi * scr[3, j]
                    scr[1, j] = pr * scr[3, j] + pi * scr[2, j]
        _store_block(acc, r0, nr, out_re, out_im)


@njit(**PARALLEL_JIT_OPTIONS)
def _general_kernel(uvw, scale, l, m, nm1, amp, out_re, out_im):  # noqa: E741
    """Any channels: one phase per (row, channel, component), ``x scale[c]`` cycles; blocks
    of rows as :func:`_uniform_kernel`."""
    nrow, nchan = out_re.shape
    nsrc = l.shape[0]
    for b in prange((nrow + _ROWS - 1) // _ROWS):
        r0 = b * _ROWS
        nr = min(_ROWS, nrow - r0)
        xyz = _block_uvw(uvw, r0, nr)
        x = np.empty(_ROWS)
        acc = np.zeros((2 * nchan, _ROWS))
        for s in range(nsrc):
            _block_x(xyz, l[s], m[s], nm1[s], x)
            a = amp[s]
            for c in range(nchan):
                f = scale[c]
                for j in range(_ROWS):
                    cs, sn = cis_cycles(x[j] * f)
                    acc[2 * c, j] += a * cs
                    acc[2 * c + 1, j] += a * sn
        _store_block(acc, r0, nr, out_re, out_im)


def model_components(model, cell_rad):
    """The non-zero pixels of ``model`` as DFT components.

    Parameters
    ----------
    model : ndarray (npix_y, npix_x), Jy/pixel.
    cell_rad : float, pixel size (radians), the same on both axes.

    Returns
    -------
    l, m, nm1, amp : ndarray (ncomp,) float64
        Direction cosines (``l = -(ix - npix_x // 2) cell``, ``m = (iy - npix_y // 2)
        cell``), ``n - 1`` (without cancellation near the centre) and the amplitude
        ``x`` (Jy/pixel: the forward operator has no ``1 / n``, docs/internals.md).
    """
    model = np.asarray(model)
    ny, nx = model.shape
    iy, ix = np.nonzero(model)
    l = -(ix - nx // 2) * float(cell_rad)  # noqa: E741
    m = (iy - ny // 2) * float(cell_rad)
    r2 = l * l + m * m
    n = np.sqrt(1.0 - r2)
    nm1 = -r2 / (1.0 + n)
    amp = model[iy, ix].astype(np.float64)
    return l, m, nm1, amp


def _uniform_step(freq):
    """(f0, df) when the channels are equally spaced (to 1e-9 of the band), else None."""
    if freq.size < 3:
        return (float(freq[0]), float(freq[-1] - freq[0]) if freq.size == 2 else 0.0)
    d = np.diff(freq)
    if np.abs(d - d.mean()).max() <= 1e-9 * max(np.abs(freq).max(), 1.0):
        return float(freq[0]), float(d.mean())
    return None


def component_predict(uvw, freq, model, cell_rad, *, nthreads=1, dtype=np.complex128):
    """Visibilities of the image ``model`` by a direct Fourier transform of its non-zero
    pixels: the forward operator exactly (``tests/reference.py`` ``dft_predict``).

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres (MS convention, not reflected).
    freq : ndarray (chan,) float64, Hz.
    model : ndarray (npix_y, npix_x), Jy/pixel, north up / east left.
    cell_rad : float, pixel size, radians.
    nthreads : int, threads (numba prange over rows).
    dtype : complex dtype of the result.

    Returns
    -------
    ndarray (row, chan) of ``dtype``
    """
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    l, m, nm1, amp = model_components(model, cell_rad)  # noqa: E741
    nrow, nchan = uvw.shape[0], freq.size
    out_re = np.empty((nrow, nchan))
    out_im = np.empty((nrow, nchan))
    if nrow and l.size:
        old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(nthreads), numba.config.NUMBA_NUM_THREADS)))
        try:
            step = _uniform_step(freq)
            if step is not None and DFT_S_PAIR + DFT_S_CHAN * nchan < DFT_S_EVAL * nchan:
                _uniform_kernel(uvw, step[0] / C_LIGHT, step[1] / C_LIGHT, l, m, nm1, amp,
                                out_re, out_im)
            else:
                _general_kernel(uvw, freq / C_LIGHT, l, m, nm1, amp, out_re, out_im)
        finally:
            numba.set_num_threads(old)
    else:
        out_re[...] = 0.0
        out_im[...] = 0.0
    out = np.empty((nrow, nchan), dtype=dtype)
    out.real = out_re
    out.imag = out_im
    return out


def gridded_predict_seconds(op, comm=None):
    """Predicted seconds of one core for one ``op.dot``, from the operators' own cost models
    (the constants their geometry choices use) and the geometry they built (``op.stats``).

    wstack / none (``radimg.ops.geometry``): ``planes x (COST_FFT P log2 P + COST_CELL P +
    COST_PIXEL P / 4) + COST_UPDATE x samples x W^2 Ww``; wstack-wproject
    (``radimg.ops.wproject``): ``stacks x P x (_C_FFT log2 P + _C_PIX) + _C_CELL x samples x
    W^2``, ``P`` the padded grid's cells, samples those with weight on every rank. The
    w-projection kernels are at least the ES kernel's ``W^2`` (their measured load is
    larger, 10x on the real MWA snapshot, but its sum over ranks moved by 1.3% between 1
    and 2 ranks, and the choice must not), so its kernel part is a lower bound. Under small
    inversion the inner operator's (its resampling FFTs are left out). A function of global
    values: every rank, at any rank count, gets the same. None when the operator reports
    no such figures.
    """
    try:
        st = op.stats
    except AttributeError:
        return None
    nvis = st.get("nsamples")
    if nvis is None:
        return None
    nvis = float(nvis if comm is None else comm.allreduce(int(nvis)))
    if "nstacks" in st:
        from radimg.ops import wproject as wp

        nyp, nxp = st["padded"]
        npts = float(nyp * nxp)
        return (st["nstacks"] * npts * (wp._C_FFT * math.log2(npts) + wp._C_PIX)
                + wp._C_CELL * nvis * st["W"] ** 2)
    if "nplanes" in st:
        from radimg.ops import geometry as wo

        nyp, nxp = st["padded_grid"]
        npts = float(nyp * nxp)
        plane = wo.COST_FFT * npts * math.log2(npts) + (wo.COST_CELL + wo.COST_PIXEL / 4) * npts
        kernel = st["support"] ** 2 * (st.get("support_w") or 1)
        return st["nplanes"] * plane + wo.COST_UPDATE * nvis * kernel
    return None


def component_predict_seconds(nrows, nchan, ncomp, uniform=True):
    """Predicted seconds of one core for :func:`component_predict` (measured on this
    machine's cores: ``DFT_S_PAIR`` per (row, component) plus ``DFT_S_CHAN`` per channel of
    it with equally spaced channels, ``DFT_S_EVAL`` per (row, channel, component) else;
    the cheaper of the two where both apply, as :func:`component_predict` takes)."""
    each = nchan * DFT_S_EVAL
    if uniform:
        each = min(each, DFT_S_PAIR + DFT_S_CHAN * nchan)
    return nrows * ncomp * each


class MajorPredict:
    """The major cycle's predict: ``op.dot(model)`` or :func:`component_predict`, whichever
    the cost models say is faster for this model's number of components.

    The choice is a function of global values only (components, rows and channels, the
    operator's geometry and kernel load), never of measured times: the two predicts differ
    by the operator's epsilon, so a choice that followed the machine's load would make
    images differ between runs, rank counts and a resumed run at that level
    (``tests/test_deconv_pipeline.py`` compares those to 1e-6).

    Parameters
    ----------
    op : operator with ``dot``, ``uvw`` (this rank's rows, metres), ``freq`` and ``stats``.
    cell_rad : float, the model's pixel size.
    comm : mpi4py communicator or None.
    nthreads : int, DFT threads on this rank.
    dtype : the visibilities' complex dtype (``op.dot``'s).
    mode : ``deconvolution.predict``: "auto" (the cost models decide), "dft" or "operator".
    """

    def __init__(self, op, cell_rad, *, comm=None, nthreads=1, dtype=np.complex64,
                 mode="auto"):
        if mode not in ("auto", "dft", "operator"):
            raise ValueError(f"mode must be auto, dft or operator, not {mode!r}")
        self.mode = mode
        self.op = op
        self.comm = comm
        self.cell_rad = float(cell_rad)
        self.nthreads = int(nthreads)
        self.dtype = dtype
        self.uvw = np.ascontiguousarray(op.uvw, dtype=np.float64)
        self.freq = np.asarray(op.freq, dtype=np.float64)
        nrow = int(self.uvw.shape[0])
        self.nrows = nrow if comm is None else int(comm.allreduce(nrow))
        self.uniform = _uniform_step(self.freq) is not None
        self.t_dot = gridded_predict_seconds(op, comm)
        self.used = {"dft": 0, "dot": 0}

    def use_dft(self, ncomp):
        """True when the DFT of ``ncomp`` components is predicted to take less than
        ``CHOOSE_DFT_BELOW`` of ``op.dot`` (identical on every rank); always with mode
        ``dft``, never with ``operator``."""
        if self.mode != "auto":
            return self.mode == "dft"
        if self.t_dot is None:
            return False
        t = component_predict_seconds(self.nrows, self.freq.size, ncomp, self.uniform)
        return t < CHOOSE_DFT_BELOW * self.t_dot

    def __call__(self, model):
        """Visibilities of ``model`` (identical on every rank) for this rank's rows."""
        if self.use_dft(int(np.count_nonzero(model))):
            self.used["dft"] += 1
            return component_predict(self.uvw, self.freq, model, self.cell_rad,
                                     nthreads=self.nthreads, dtype=self.dtype)
        self.used["dot"] += 1
        return self.op.dot(model)


