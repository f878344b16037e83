"""The per-rank memory model of ``radimg plan`` and the memory check of ``radimg run``.

Memory model per rank (bytes; each term listed in ``memory_breakdown``). It counts what
``radimg run`` holds at its peak, the PSF / dirty-image ``hdot`` (or a major-cycle ``dot``) of
:class:`radimg.parallel.operator.DistributedOperator`; ``c`` / ``r`` are the complex / real
item sizes of ``precision``, ``G`` the padded grid's cells, ``P`` the image's pixels:

- ``samples``: every per-sample array alive then, ``s * B_s + rows * B_r`` for the rank's
  ``s`` samples and ``rows = s / nchan`` rows (:data:`SAMPLE_BYTES`). ``none``/``wstack``:
  vis (``c``), imaging weight, redistributed weight, weight as read (3 ``r``), the valid and
  operator masks (2), the serial operator's sample layout (int64 index + int32 plane: 12;
  the distributed operator uses it as it is), and inside ``hdot`` the PSF's ``ones_like(vis)``
  (``c``), ``prepare_samples`` coordinates (24) and values (``c``); per row uvw as read and
  redistributed (2 x 24; the serial operator uses the redistributed array itself since the
  geometry is handed down whole and no anchor rows are appended), ``row_id`` and the
  destination rank (2 x 8). ``wstack-wproject``: vis,
  PSF ones (2 ``c``), three weights (3 ``r``), masks (2), stack labels (4), stack index and
  the per-stack tile layout cached by ``grid_samples`` (2 x 8); per row uvw as read and
  redistributed, ``row_id``, destination (64); plus, for the samples of the rank's largest
  stack, the work arrays of building its tile layout in the first ``hdot``
  (:data:`LAYOUT_TRANSIENT_BYTES`: row/channel, u/v/w, sign, supports, first cells, tiles,
  sort key and permutation, ~140 bytes).
- ``grid_tiles``: the tile exchange buffers. Every cell a rank receives from other ranks
  (tiles ``M_jk`` of the stacks/planes it touches and does not own; its own stacks skip the
  buffers, its samples grid/degrid on the owner's grid) and every cell it serves to other
  ranks as owner is held once in the send or receive buffer of ``dot``/``hdot`` (``c``, both
  alive around the Alltoallv): ``(recv_cells + send_cells) * c``, so 0 at one rank. Tiles
  are kept as int32 tile ids (4 bytes per tile, not counted), no per-cell index.
- ``stack_grids``: full padded grids held at once. Owned stacks are transformed one at a
  time, so this does NOT grow with the number of stacks owned: the scratch grid
  (``c`` per cell), plus owner FFT work (:data:`OWNER_GRIDS`: none since issue #13: both
  modes make an owner's plane in the scratch grid in both directions, the FFTs are pruned
  1-D passes in place and the image-domain factors are applied once per application, so
  tracemalloc sees no grid-sized or per-plane image temporaries in ``dot`` or ``hdot``).
- ``images``: replicated images and image-sized work arrays, :data:`IMAGE_ARRAYS` float64
  images (dirty, psf, the ``hdot`` accumulator and its temporaries, the operator's
  correction / chirp factors; the local and summed weighting density grids are dropped
  after the weights stage, so they are not counted).
- ``kernels``: ``kernel_storage="table"`` (default): compact 1-D radial w-kernel tables,
  ``n_planes_k x (support_max_k / 2) x 64`` complex per stack present, with
  ``n_planes_k = 1 + ceil(16 * max|dw_k| * (1 - sqrt(1 - l_max^2)))`` (16 planes per turn of
  edge phase); with ``support_model="tables"`` the real tables' size (every rank holds one
  copy). ``"sparse"``: PURIFY-style precomputed [GC] and [GC]^H, two complex values plus
  an int64 column index per touched cell (``load`` cells), the storage of the paper's
  section 5 (21 GB per node there).

- ``code``: what a run loads beyond an idle process (:data:`CODE_BYTES`, every rank).

The per-rank figure (``memory_per_rank_bytes``) is the peak over the run's phases
(:func:`peak_bytes`), not the sum of every term: the requested images of small inversion
(``resample``) are made after the operator application, whose exchange buffers are gone by
then. On the real MWA 4096 x 30" job at 2 ranks (scripts/bench_wsclean.py) the plan is
0.95x rank 0's measured peak and 0.82x rank 1's (peak RSS minus an idle process); summing
every term and leaving the code out gave 1.04x and 0.72x.

The exchanged cells come from the tile model of :func:`radimg.parallel.plan_model.plan`
(uv occupancy, kernel margin, one stack per plane), or, from
:func:`radimg.parallel.plan.plan_from_config`, from the operator's own tiling replayed on the
uvw subsample (:func:`radimg.parallel.plan_exchange.operator_exchange`: w-planes of
``wstack`` with their ``Ww`` spread, exchange tiles and footprints of ``wstack-wproject``). What the model leaves out: the
Python/numba/MPI process itself (~150-250 MiB, measured by scripts/bench_memory.py as the
baseline), the reader's chunk buffers and set-up transients that stay below the peak.
scripts/bench_memory.py compares the model with the measured peak RSS.

Communication per operator application (``comm_bytes_per_apply``, summed over all ranks): the
Alltoallv of grid tiles between the stack owner and the ranks that grid it (one direction:
``dot`` sends owner -> griders, ``hdot`` the same volume back) plus, for ``hdot``, the image
AllSumAll counted as a ring Allreduce, ``2 (n - 1)`` image sizes.
"""

from __future__ import annotations

import math

import numpy as np

from radimg.progress import format_bytes

__all__ = [
    "SAMPLE_BYTES",
    "OWNER_GRIDS",
    "IMAGE_ARRAYS",
    "SINGLE_ACCUMULATOR_SAVING",
    "LAYOUT_TRANSIENT_BYTES",
    "FINE_IMAGES",
    "FINE_IMAGE_BYTES",
    "FINE_IMAGE_BYTES_KEPT",
    "CLEAN_IMAGES",
    "ADMM_IMAGES",
    "deconvolution_bytes",
    "PROCESS_BASELINE_BYTES",
    "CODE_BYTES",
    "memory_terms",
    "peak_bytes",
    "resample_bytes",
    "fits_memory",
]

# Memory model constants (see the module docstring; pinned by tests/test_plan_memory.py).
# Per-sample bytes are (n_complex, n_real, fixed); per-row bytes are fixed.
SAMPLE_BYTES = {
    "wstack": ((3, 3, 2 + 12 + 24), 2 * 24 + 2 * 8),
    "wstack-wproject": ((2, 3, 2 + 4 + 2 * 8), 2 * 24 + 2 * 8),
}
OWNER_GRIDS = {"wstack": 0, "wstack-wproject": 0}  # extra full grids (c) of an owner's FFTs
# float64 images held at the peak; wstack: the accumulator and a quarter image for the
# correction (kept as a quadrant; the w-screen and n - 1 are made on the fly)
IMAGE_ARRAYS = {"wstack": 4.25, "wstack-wproject": 5}
#: Of IMAGE_ARRAYS, the float64 images saved in single precision: ``hdot``'s accumulator
#: and the correction's quadrant are float32 there (radimg.parallel.operator's
#: ``_accumulator``, radimg.ops.operator's ``_corr_q``).
SINGLE_ACCUMULATOR_SAVING = {"wstack": 0.5 + 0.125, "wstack-wproject": 0.5}
LAYOUT_TRANSIENT_BYTES = 40  # per sample of the largest stack: wproject tile_layout (traced)
# Of IMAGE_ARRAYS, the images the pipeline holds at the requested size (PSF, the image being
# made, its float64 copy); with small inversion the rest are the operator's coarse ones.
FINE_IMAGES = 3
#: Bytes per requested pixel of those FINE_IMAGES at the peak (the dirty stage): the PSF and
#: the new image in float64, plus the operator's output while it is converted: float32 in
#: single precision (the float64 copy is then divided in place), a third float64 image in
#: double (the operator's own float64 image is never divided in place).
FINE_IMAGE_BYTES = {"single": 8 + 8 + 4, "double": 8 + 8 + 8}
#: The same without a deconvolution, with small inversion (the images are only written):
#: single precision keeps the PSF and the dirty image float32, divided in place
#: (radimg.pipeline.operator.per_weight's ``keep_single``).
FINE_IMAGE_BYTES_KEPT = {"single": 4 + 4, "double": 8 + 8 + 8}


def _mkey(mode):
    return "wstack-wproject" if mode == "wstack-wproject" else "wstack"


def memory_terms(mode, precision, *, samples, nchan, recv_cells, send_cells, planes_owned,
                 grid_cells, image_pixels, kernel_bytes, max_stack_samples=None, small=None,
                 dot=True, buffer_cells=None, deconvolution=None):
    """Per-rank memory terms (bytes) of the model in the module docstring.

    Parameters
    ----------
    mode : {"none", "wstack", "wstack-wproject"}
    precision : {"single", "double"}
    samples, recv_cells, send_cells, planes_owned, kernel_bytes : ndarray (rank,) int
        (``recv_cells`` / ``send_cells``: cells received from / sent to other ranks)
    nchan : int, channels per row
    grid_cells, image_pixels : int, padded grid cells and image pixels
    max_stack_samples : ndarray (rank,) int, optional
        Samples of the rank's largest stack (``wstack-wproject``; default: all its samples).
    small : radimg.ops.resample.SmallGeometry, optional
        Small inversion: ``image_pixels`` are the coarse image's; adds ``resample`` (on
        rank 0 only without ``dot``: the other ranks never make the requested images).
    dot : bool
        The run applies the forward operator (deconvolution); False for a dirty image and
        PSF only (``wstack-wproject`` then holds no zero-padded grid beside the scratch).
    deconvolution : dict, optional
        Adds the ``deconvolution`` term (:func:`deconvolution_bytes`).
    buffer_cells : ndarray (rank,) int, optional
        Cells of the exchange buffers when the planes travel in rounds (the largest round's
        send plus receive cells, radimg.parallel.operator.exchange_rounds); default: one
        round, ``recv_cells + send_cells``.

    Returns
    -------
    dict term -> ndarray (rank,) int64 (``samples``, ``grid_tiles``, ``stack_grids``,
    ``images``, ``kernels``)
    """
    c = 8 if precision == "single" else 16
    r = c // 2
    m = _mkey(mode)
    (nc, nr, fixed), per_row = SAMPLE_BYTES[m]
    s = np.asarray(samples, dtype=np.int64)
    rows = -(-s // max(1, int(nchan)))
    owned = np.asarray(planes_owned, dtype=np.int64)
    n = s.size
    owner_grids = np.minimum(owned, OWNER_GRIDS[m] if (dot or m == "wstack") else 0)
    per_sample = s * (nc * c + nr * r + fixed) + rows * per_row
    if m == "wstack-wproject":
        big = s if max_stack_samples is None else np.asarray(max_stack_samples, np.int64)
        per_sample = per_sample + big * LAYOUT_TRANSIENT_BYTES
    coarse = IMAGE_ARRAYS[m] - FINE_IMAGES - (SINGLE_ACCUMULATOR_SAVING[m]
                                              if precision == "single" else 0.0)
    out = {
        "samples": per_sample,
        "grid_tiles": (np.asarray(recv_cells, np.int64) + np.asarray(send_cells, np.int64)
                       if buffer_cells is None else np.asarray(buffer_cells, np.int64)) * c,
        "stack_grids": np.int64(grid_cells) * (c + owner_grids * c),
        "images": np.full(n, int(coarse * int(image_pixels) * 8)
                          + FINE_IMAGE_BYTES[precision] * int(image_pixels), np.int64),
        "kernels": np.asarray(kernel_bytes, dtype=np.int64),
    }
    if small is not None:
        out["images"] = np.full(n, int(coarse * int(image_pixels) * 8), np.int64)
        psf_b, rest_b = resample_bytes(small, precision, keep=not dot, split=True)
        if not dot:
            # dirty image and PSF only: rank 0 alone makes the requested images, both after
            # the dirty image's application (radimg.pipeline.images: the backend's
            # defers_resampling), holding the coarse PSF (float32 in single) during it
            psf_b, rest_b = int(image_pixels) * (4 if precision == "single" else 8), psf_b + rest_b
        out["requested_psf"] = np.full(n, psf_b, np.int64)
        out["resample"] = np.full(n, rest_b, np.int64)
        if not dot:
            out["requested_psf"][1:] = 0
            out["resample"][1:] = 0
    if deconvolution:
        out["deconvolution"] = deconvolution_bytes(deconvolution, s, precision)
    return out


#: CLEAN's requested-size float64 images beside the PSF and dirty image (IMAGE_ARRAYS): the
#: model, the residual being cleaned, the minor cycle's work copy, the next residual.
CLEAN_IMAGES = 4
#: ADMM's (approximate, not yet measured against a run): SARA's 9 bases' coefficients and
#: their duals, the model and its previous iterate, the residual and a gradient.
ADMM_IMAGES = 2 * 9 + 4


def deconvolution_bytes(deconvolution, samples, precision):
    """Per-rank bytes of deconvolution beside the operator (the ``deconvolution`` term).

    ``deconvolution``: ``{"algorithm": "clean" | "admm", "npix": (nx, ny) requested,
    "nscales": scales > 0 of multiscale CLEAN}``; ``samples``: (rank,) this rank's samples.
    CLEAN (measured with tracemalloc on the demo: PSF spectrum 18 MiB, 3 images and the
    residual visibilities held after the first major cycle): :data:`CLEAN_IMAGES` images
    and, per major cycle, the predicted and residual visibilities on every rank; on rank 0,
    which runs the minor cycle, the PSF's spectrum at the cyclic convolution length
    (radimg.deconv.image.SpectralConv: n + n // 2, 5-smooth) and a subtraction's spectrum,
    product and output, plus per multiscale scale a spectrum and a scale-convolved PSF.
    ADMM: :data:`ADMM_IMAGES` images and 3 visibility vectors (approximate).
    """
    from radimg.ops.fft import good_size

    s = np.asarray(samples, dtype=np.int64)
    if not deconvolution or deconvolution.get("algorithm", "none") == "none":
        return np.zeros(s.size, np.int64)
    c = 8 if precision == "single" else 16
    nx, ny = (int(v) for v in deconvolution["npix"])
    px = nx * ny
    if deconvolution["algorithm"] == "admm":
        return ADMM_IMAGES * 8 * px + 3 * s * c
    lx = good_size(nx + nx // 2, even=False, minimum=1)
    ly = good_size(ny + ny // 2, even=False, minimum=1)
    spectrum = ly * (lx // 2 + 1) * 16
    nsc = int(deconvolution.get("nscales", 0))
    root = spectrum + 2 * spectrum + ly * lx * 8 + nsc * (spectrum + 8 * px)
    out = CLEAN_IMAGES * 8 * px + 2 * s * c
    out[:1] += root
    return out.astype(np.int64)


def resample_bytes(g, precision, keep=False, split=False):
    """Bytes of the requested images the pipeline holds around a small-inversion operator:
    :data:`FINE_IMAGE_BYTES` per requested pixel (the PSF, and while the dirty image is made
    the operator's image and its float64 copy, divided in place). The peak of one
    :meth:`radimg.ops.resample.SmallInversion.to_fine` (the requested rows' half spectrum
    over the fine period and its inverse transform, ``npix_y * nf_x * 3/2`` complex values)
    comes before those two copies and is smaller than them, so it is not added (measured
    on the real MWA job, 4096 x 30": the dirty stage peaks 145 MiB above the PSF stage,
    one float64 image). ``keep``: no deconvolution, :data:`FINE_IMAGE_BYTES_KEPT`, and then
    the transient half spectrum of :meth:`~radimg.ops.resample.SmallInversion.to_fine`
    (``nf_y * (band_x + 1)`` complex) is added, as nothing larger follows it. ``split``:
    ``(psf, rest)``, the PSF's share (alive from the PSF stage on, so during the dirty
    image's operator application too) and the rest (alive from the dirty image's
    resampling on)."""
    per_pixel = (FINE_IMAGE_BYTES_KEPT if keep else FINE_IMAGE_BYTES)[precision]
    px = g.npix_x * g.npix_y
    total = int(per_pixel * px)
    if keep:
        total += int(g.nf_y * (g.band_x + 1) * (8 if precision == "single" else 16))
    psf = int((4 if keep and precision == "single" else 8) * px)
    return (psf, total - psf) if split else total


#: Resident memory of a radimg rank before it holds any data: Python, numpy, numba's loaded
#: kernels, casacore, h5py and MPI (an idle ``radimg run`` process measured 156 MiB by
#: scripts/bench_memory.py). The model's terms exclude it; the limit check adds it.
PROCESS_BASELINE_BYTES = 160 * 2**20


#: Code a run loads beyond an idle process (numba's compiled kernels from the cache, LLVM,
#: ducc0's and casacore's libraries): the ``code`` term of every rank. Measured: a 256^2
#: run of the real MWA snapshot at 2 ranks peaks 17-31 MiB per rank above an idle radimg
#: process plus its own plan (scripts/bench_wsclean.py --npix 256 --cell-arcsec 480); 45-59
#: MiB before numba's cached kernels were loaded without installing all its registries
#: (radimg/kernels/_jit.py).
CODE_BYTES = 25 * 2**20


def peak_bytes(terms, dirty_only=False):
    """Per-rank peak (ndarray (rank,) int64) of the terms of :func:`memory_terms` (plus
    ``code``): they are not all alive at once. During an operator application every term
    but ``resample`` is (the requested PSF, ``requested_psf``, is held while the dirty
    image's operator runs); with small inversion the requested images are made after it,
    when its exchange buffers (``grid_tiles``) are gone, so that phase holds every term but
    ``grid_tiles``; in a run that only writes its images (``dirty_only``) rank 0 has freed
    the scratch grid (``stack_grids``) by then too (radimg.pipeline.operator's
    ``release``). The peak is the larger phase (the sum of all terms without small
    inversion)."""
    t = {k: np.asarray(v, dtype=np.int64) for k, v in terms.items()}
    total = sum(t.values())
    if "resample" not in t:
        return total
    freed = t.get("grid_tiles", 0) + (t.get("stack_grids", 0) if dirty_only else 0)
    return np.maximum(total - t["resample"], total - freed)



def fits_memory(plan_result: dict, mem_per_rank, scheme: str = "balanced"):
    """Whether every rank's estimated memory, plus :data:`PROCESS_BASELINE_BYTES`, fits
    ``mem_per_rank`` bytes.

    Returns
    -------
    (ok, message) : (bool, str) the message holds a per-component table for the worst rank.
    """
    sch = plan_result[scheme]
    mem = np.asarray(sch["memory_per_rank_bytes"], dtype=np.int64) + PROCESS_BASELINE_BYTES
    worst = int(np.argmax(mem))
    ok = bool(mem.max() <= mem_per_rank)
    lines = [
        f"{scheme} distribution over {len(mem)} rank(s): peak {format_bytes(mem.max())} on rank "
        f"{worst}, limit {format_bytes(mem_per_rank)} per rank: {'fits' if ok else 'DOES NOT FIT'}",
        f"  {'component':<12} {'rank ' + str(worst):>14} {'max over ranks':>16}",
    ]
    for k, v in sch["memory_breakdown"].items():
        lines.append(f"  {k:<12} {format_bytes(v[worst]):>14} {format_bytes(max(v)):>16}")
    base = format_bytes(PROCESS_BASELINE_BYTES)
    lines.append(f"  {'process':<12} {base:>14} {base:>16}")
    if not ok:
        need = int(math.ceil(mem.sum() / mem_per_rank))
        lines.append(f"  more ranks needed (at least ~{need}), or less precision / a smaller image")
    return ok, "\n".join(lines)
