"""Deconvolution checkpoints: ``<output.path>.ckpt.h5``, written atomically by rank 0.

A checkpoint is a radimg product (``radimg.io.product.write_product``: temporary file +
rename) whose ``/images/model`` is a float32 preview and whose ``/extras`` hold the exact
state in float64:

- ``model`` (CLEAN) or ``x`` (ADMM): the image, replicated on every rank.
- ``auto_mask`` (CLEAN, when active), ``u/<basis>`` and ``weights/<basis>`` (ADMM duals and
  reweighting factors of each SARA basis; a basis lives on one rank, gathered here).
- ``z`` (ADMM, vis space): per-rank rows in the load-balanced layout are gathered and stored
  by GLOBAL row id (the row index of the MS), an array ``(nrows_total, nchan)``; a resume
  with any number of ranks picks its own rows by its ``row_id``.

Counters (major cycles, iterations, ...) are JSON in the ``/run`` attribute ``checkpoint_json``.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["checkpoint_path", "read_checkpoint", "write_checkpoint"]


def checkpoint_path(output_path):
    return os.fspath(output_path) + ".ckpt.h5"


def write_checkpoint(
    comm,
    path,
    *,
    image,
    wcs_info,
    run_attrs,
    counters,
    arrays=None,
    per_rank=None,
    vis_arrays=None,
    row_id=None,
    nrows_total=None,
):
    """Collective: write a checkpoint (rank 0 writes).

    image : replicated model image (float64).
    counters : JSON-able dict (same on every rank; rank 0's is stored).
    arrays : replicated extras {name: ndarray}.
    per_rank : {name: ndarray} held by this rank only (names unique across ranks).
    vis_arrays : {name: (row, chan) ndarray} of this rank's rows, stored by ``row_id``.
    """
    from radimg.io.product import write_product

    rank = 0 if comm is None else comm.Get_rank()
    gathered = [per_rank or {}] if comm is None else comm.gather(per_rank or {}, root=0)
    vis = {}
    for name, a in (vis_arrays or {}).items():
        parts = [(row_id, a)] if comm is None else comm.gather((row_id, a), root=0)
        if rank == 0:
            full = np.zeros((int(nrows_total), a.shape[1]), dtype=a.dtype)
            for rid, blk in parts:
                full[rid] = blk
            vis[name] = full
    if rank == 0:
        extras = {"model_exact": np.asarray(image, np.float64)}
        for name, a in (arrays or {}).items():
            extras[name] = np.asarray(a)
        for d in gathered:
            for name, a in d.items():
                extras[name] = np.asarray(a)
        extras.update(vis)
        attrs = dict(run_attrs)
        attrs["checkpoint_json"] = json.dumps(counters)
        write_product(path, {"model": image}, wcs_info, attrs, overwrite=True, extras=extras)
    if comm is not None:
        comm.Barrier()


def read_checkpoint(path, row_id=None, vis_names=()):
    """Read a checkpoint on this rank.

    Returns
    -------
    dict : ``counters`` (dict), ``image`` (float64), ``extras`` (name -> ndarray, vis-space
    arrays already cut to this rank's ``row_id``), ``config_yaml`` (str).
    """
    from radimg.io.product import read_product

    prod = read_product(path, images=False)
    ex = dict(prod.get("extras", {}))
    for name in vis_names:
        if name in ex:
            ex[name] = np.ascontiguousarray(ex[name][np.asarray(row_id, dtype=np.int64)])
    counters = json.loads(str(prod["run"]["checkpoint_json"]))
    return {
        "counters": counters,
        "image": np.asarray(ex.pop("model_exact"), dtype=np.float64),
        "extras": ex,
        "config_yaml": str(prod["run"].get("config_yaml", "")),
    }
