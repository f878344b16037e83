"""Stage *write*: the HDF5 product on rank 0 (written to a temporary name and renamed), the
FITS export when asked, and the run's tables (timings, load balance)."""

from __future__ import annotations

import json

import numpy as np

from radimg import __version__
from radimg.progress import records_table, timings_record


def write(job, backend, images, wcs_info, read_summary, weighting_summary, deconvolved=None):
    """Gather every rank's figures and write the product on rank 0 (collective).

    Parameters
    ----------
    job : radimg.pipeline.context.Job
    backend : radimg.pipeline.operator.ImagingBackend
    images : dict name -> ndarray (npix_y, npix_x), written as float32 (rank 0's)
    wcs_info : dict, the images' WCS and restoring beam
    read_summary, weighting_summary : dict, ``/run`` ``read_json`` and ``weighting_json``
    deconvolved : radimg.pipeline.deconvolve.Deconvolved or None

    Returns
    -------
    str or None
        The product path on rank 0, None elsewhere.
    """
    comm, timer, cfg = job.comm, job.timer, job.cfg
    for name, val in backend.transfers().items():  # host <-> device bytes: timing rows
        timer.set_counter(name, val)
    records = comm.gather(timer.record(), root=0)
    operator_record = backend.operator_record()
    samples = comm.gather(int(np.count_nonzero(backend.imaging_weight)), root=0)
    scheme_figures = backend.load_balance()  # collective
    product = None
    if comm.rank == 0:
        from radimg.config import to_yaml

        lb_record = _load_balance_record(backend.scheme, samples, scheme_figures)
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
        if deconvolved is not None:
            run_attrs.update(deconvolved.run_attrs())
        product = _write_files(job, images, wcs_info, run_attrs)
        if job.verbose >= 1:
            print(records_table(records), flush=True)
            print(
                f"[radimg] load balance ({lb_record['scheme']}): samples per rank "
                f"{lb_record['samples_per_rank']}, max/mean load "
                f"{lb_record['max_over_mean']:.4f}",
                flush=True,
            )
            print(f"[radimg] wrote {cfg['output']['path']}", flush=True)
    comm.Barrier()
    return product


def _write_files(job, images, wcs_info, run_attrs):
    """The product (and the FITS files when ``output.fits_dir`` is set); its path."""
    from radimg.io.product import write_product

    out_cfg = job.cfg["output"]
    images = {k: v.astype(np.float32, copy=False) for k, v in images.items()}
    product = write_product(
        out_cfg["path"], images, wcs_info, run_attrs, overwrite=out_cfg["overwrite"] or job.resume
    )
    if out_cfg.get("fits_dir"):
        from radimg.io.product import export_fits

        export_fits(out_cfg["path"], out_cfg["fits_dir"])
    return out_cfg["path"] if product is None else product


def _load_balance_record(scheme, samples, scheme_figures):
    """``/run`` ``load_balance_json``: imaging-weighted samples per rank and, for the
    balanced scheme, the operator's per-rank load figures (its max/mean load)."""
    mean = float(np.mean(samples)) or 1.0
    record = {
        "scheme": scheme,
        "samples_per_rank": samples,
        "max_over_mean": float(max(samples) / mean),
    }
    if scheme_figures is not None:
        record.update(scheme_figures)
        record["max_over_mean"] = scheme_figures["load_max_over_mean"]
    return record
