"""Deconvolution checkpoints: ``<output.path>.ckpt.h5``, written atomically by rank 0.

A checkpoint is a radimg product (``radimg.io.product.write_product``: temporary file +
rename) whose ``/images/model`` is a float32 preview and whose ``/extras`` hold the exact
state in float64:

- ``model`` (CLEAN) or ``x`` (ADMM): the image, replicated on every rank.
- ``auto_mask`` (CLEAN, when active), ``u/<basis>`` and ``weights/<basis>`` (ADMM duals and
  reweighting factors of each SARA basis; a basis lives on one rank, gathered here).
- ``z`` (ADMM, vis space): per-rank rows in the load-balanced layout are gathered and stored
  by GLOBAL row id (the row index of the MS), an array ``(nrows_total, nchan)``; a resume
  with any number of ranks reads only its own rows (by its ``row_id``) from the file.

Everything travels to rank 0 as raw buffers (``Send``/``Recv`` of uint8 views, rank by rank,
in pieces of at most ``MAX_PIECE_BYTES``), never as pickled Python objects, so no message
count passes 2**31 and rank 0 holds each array once (plus one piece), whatever its size.

Counters (major cycles, iterations, ...) are JSON in the ``/run`` attribute ``checkpoint_json``.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["checkpoint_path", "read_checkpoint", "write_checkpoint"]


def checkpoint_path(output_path):
    return os.fspath(output_path) + ".ckpt.h5"


MAX_PIECE_BYTES = 1 << 28  # 256 MiB: far below the int32 count limit of one MPI message


def _send_buffer(comm, a, dest, tag, piece):
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    for i in range(0, b.size, piece):
        comm.Send(b[i : i + piece], dest=dest, tag=tag)


def _recv_buffer(comm, out, source, tag, piece):
    """Receive into the C-contiguous ``out`` (its bytes, piece by piece)."""
    b = out.reshape(-1).view(np.uint8)
    for i in range(0, b.size, piece):
        comm.Recv(b[i : i + piece], source=source, tag=tag)
    return out


def _gather_named(comm, arrays, piece):
    """Rank 0 gets every rank's ``{name: ndarray}`` (names unique across ranks) as buffers;
    only names, shapes and dtypes travel as Python objects. Other ranks get ``{}``."""
    rank, size = comm.Get_rank(), comm.Get_size()
    meta = [(n, a.shape, a.dtype.str) for n, a in sorted(arrays.items())]
    metas = comm.gather(meta, root=0)
    out = {}
    if rank == 0:
        out.update({n: np.asarray(a) for n, a in arrays.items()})
        for src in range(1, size):
            for name, shape, dt in metas[src]:
                out[name] = _recv_buffer(comm, np.empty(shape, np.dtype(dt)), src, 11, piece)
    else:
        for name, _, _ in meta:
            _send_buffer(comm, arrays[name], 0, 11, piece)
    return out


def _gather_rows(comm, a, row_id, nrows_total, piece):
    """Rank 0 gets the ``(nrows_total, ...)`` array whose rows ``row_id`` each rank holds
    (rows no rank holds stay 0); other ranks get None."""
    a = np.ascontiguousarray(a)
    rid = np.ascontiguousarray(row_id, dtype=np.int64)
    if comm is None or comm.Get_size() == 1:
        full = np.zeros((int(nrows_total),) + a.shape[1:], dtype=a.dtype)
        full[rid] = a
        return full
    rank, size = comm.Get_rank(), comm.Get_size()
    counts = comm.gather(int(rid.size), root=0)
    row_bytes = max(1, a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)))
    rows_per = max(1, piece // row_bytes)
    if rank != 0:
        _send_buffer(comm, rid, 0, 12, piece)
        flat = a.reshape(-1).view(np.uint8)
        # the same message pattern the receiver expects: blocks of whole rows, in pieces
        for r0 in range(0, rid.size, rows_per):
            b0 = r0 * row_bytes
            nb = min(rows_per, rid.size - r0) * row_bytes
            for i in range(0, nb, piece):
                comm.Send(flat[b0 + i : b0 + min(nb, i + piece)], dest=0, tag=13)
        return None
    full = np.zeros((int(nrows_total),) + a.shape[1:], dtype=a.dtype)
    full[rid] = a
    for src in range(1, size):
        r = _recv_buffer(comm, np.empty(counts[src], np.int64), src, 12, piece)
        # receive the rows in blocks of whole rows and place each block at once, so rank 0
        # never holds a second copy of a rank's share
        blk = np.empty((min(rows_per, max(counts[src], 1)),) + a.shape[1:], dtype=a.dtype)
        done = 0
        bb = blk.reshape(-1).view(np.uint8)
        while done < counts[src]:
            k = min(rows_per, counts[src] - done)
            nb = k * row_bytes
            for i in range(0, nb, piece):
                comm.Recv(bb[i : min(nb, i + piece)], source=src, tag=13)
            full[r[done : done + k]] = blk[:k]
            done += k
    return full


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
    max_piece_bytes=MAX_PIECE_BYTES,
):
    """Collective: write a checkpoint (rank 0 writes).

    image : replicated model image (float64).
    counters : JSON-able dict (same on every rank; rank 0's is stored).
    arrays : replicated extras {name: ndarray}.
    per_rank : {name: ndarray} held by this rank only (names unique across ranks).
    vis_arrays : {name: (row, chan) ndarray} of this rank's rows, stored by ``row_id``.
    max_piece_bytes : largest single MPI message (lower it in tests to split transfers).
    """
    from radimg.io.product import write_product

    rank = 0 if comm is None else comm.Get_rank()
    piece = int(max_piece_bytes)
    if comm is None:
        gathered = dict(per_rank or {})
    else:
        gathered = _gather_named(comm, dict(per_rank or {}), piece)
    vis = {}
    for name in sorted(vis_arrays or {}):  # same order on every rank
        full = _gather_rows(comm, vis_arrays[name], row_id, nrows_total, piece)
        if rank == 0:
            vis[name] = full
    if rank == 0:
        extras = {"model_exact": np.asarray(image, np.float64)}
        for name, a in (arrays or {}).items():
            extras[name] = np.asarray(a)
        extras.update(gathered)
        extras.update(vis)
        attrs = dict(run_attrs)
        attrs["checkpoint_json"] = json.dumps(counters)
        attrs["checkpoint_vis_json"] = json.dumps(sorted(vis))
        write_product(path, {"model": image}, wcs_info, attrs, overwrite=True, extras=extras)
    if comm is not None:
        comm.Barrier()


def read_checkpoint(path, row_id=None, vis_names=()):
    """Read a checkpoint on this rank.

    Vis-space arrays named in ``vis_names`` are read for this rank's ``row_id`` only (an HDF5
    selection), never whole; other vis-space arrays are not read at all.

    Returns
    -------
    dict : ``counters`` (dict), ``image`` (float64), ``extras`` (name -> ndarray, vis-space
    arrays already cut to this rank's ``row_id``), ``config_yaml`` (str).
    """
    import h5py

    f = None
    try:
        f = h5py.File(os.fspath(path), "r")
        f["run"].attrs["checkpoint_json"]
    except (OSError, KeyError):
        if f is not None:
            f.close()
        from radimg.io.product import read_product

        read_product(path, images=False)  # raises the product's own error, naming the file
        raise ValueError(f"{os.fspath(path)} is a radimg product but not a checkpoint") from None
    with f:
        run = f["run"].attrs
        counters = json.loads(_text(run["checkpoint_json"]))
        config_yaml = _text(run.get("config_yaml", ""))
        # vis-space arrays are as large as the data: read only when asked for, by row
        skip = set(json.loads(_text(run.get("checkpoint_vis_json", "[]")))) - set(vis_names)
        ex = {}
        if "extras" in f:
            names = []
            f["extras"].visititems(
                lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None
            )
            for name in names:
                if name in skip:
                    continue
                ds = f["extras"][name]
                if name in vis_names:
                    rid = np.asarray(row_id, dtype=np.int64)
                    uniq, inv = np.unique(rid, return_inverse=True)
                    got = ds[uniq] if uniq.size else np.empty((0,) + ds.shape[1:], ds.dtype)
                    ex[name] = np.ascontiguousarray(got[inv])
                else:
                    ex[name] = ds[()]
    return {
        "counters": counters,
        "image": np.asarray(ex.pop("model_exact"), dtype=np.float64),
        "extras": ex,
        "config_yaml": config_yaml,
    }


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)
