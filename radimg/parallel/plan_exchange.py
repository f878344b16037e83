"""The distributed operator's tile exchange replayed on a uvw subsample, no MPI
(``radimg plan``: the cells each rank receives and sends per operator application)."""

from __future__ import annotations

import numpy as np

from radimg.constants import C_LIGHT
from radimg.ops.geometry import Field, resolve_geometry, samples_w_range, wproject_geometry
from radimg.parallel.plan_model import largest_remainder

__all__ = ["operator_exchange", "tables_covering"]


def tables_covering(w, centres, npix_x, npix_y, cell_rad, epsilon, oversampling, precision,
                     nbins=20_000):
    """Kernel tables for the residual range of the samples ``w`` AND of the plan's w-bin
    centres (the histogram's half-bin offsets), so both lookups stay inside the tables."""
    from radimg.kernels import wproject as wpk
    from radimg.ops.wproject import WProjectOperator

    wabs = np.abs(np.asarray(w, dtype=np.float64))
    hw = 0.5 * (wabs.max() if wabs.size else 1.0) / nbins
    lab = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), wabs)
    dw = wabs - centres[lab]
    lo = float(min(dw.min(), 0.0)) - hw if dw.size else -hw
    hi = float(max(dw.max(), 0.0)) + hw if dw.size else hw
    geo = wproject_geometry(Field.of(npix_x, npix_y, cell_rad), epsilon, precision=precision,
                            oversampling=oversampling, centres=centres, dw_range=(lo, hi))
    return WProjectOperator(np.zeros((0, 3)), [wpk.C_LIGHT], geo).tables


def _exchange_counts(rank, plane, tile, n_ranks, nplanes, tile_cells, cap_cells=None):
    """From (rank, plane, tile) marks: cells each rank touches (own planes included), cells
    it receives from other ranks, cells it sends to other ranks, planes it owns, and the
    cells of its exchange buffers (the largest round's send plus the largest round's
    receive cells, rounds as :func:`radimg.parallel.operator.exchange_rounds` makes them
    with ``cap_cells``)."""
    from radimg.parallel.operator import exchange_rounds

    code = np.unique((rank.astype(np.int64) * nplanes + plane) * tile_cells.size + tile)
    rk, rest = np.divmod(code, nplanes * tile_cells.size)
    pl, tl = np.divmod(rest, tile_cells.size)
    live = np.zeros(nplanes, bool)
    live[pl] = True
    owner = np.full(nplanes, -1, np.int64)
    owner[live] = np.arange(int(live.sum())) % n_ranks
    cells = tile_cells[tl]
    other = cells * (owner[pl] != rk)
    touched = np.bincount(rk, weights=cells, minlength=n_ranks).astype(np.int64)
    recv = np.bincount(rk, weights=other, minlength=n_ranks).astype(np.int64)
    send = np.bincount(owner[pl], weights=other, minlength=n_ranks).astype(np.int64)
    owned = np.bincount(owner[live], minlength=n_ranks).astype(np.int64)
    # per (plane, rank): cells received by the toucher, sent by the owner
    recv_pc = np.zeros((nplanes, n_ranks), np.int64)
    send_pc = np.zeros((nplanes, n_ranks), np.int64)
    np.add.at(recv_pc, (pl, rk), other)
    np.add.at(send_pc, (pl, np.maximum(owner[pl], 0)), other)
    bounds = exchange_rounds(send_pc, recv_pc, cap_cells)
    sums_s = np.add.reduceat(send_pc, bounds[:-1], axis=0) if nplanes else send_pc
    sums_r = np.add.reduceat(recv_pc, bounds[:-1], axis=0) if nplanes else recv_pc
    buf = (sums_s.max(axis=0) + sums_r.max(axis=0)) if nplanes else np.zeros(n_ranks, np.int64)
    return touched, recv, send, owned, buf.astype(np.int64), int(bounds.size - 1)


def _balanced_ranks(keys, load, n_ranks):
    """Rank of each sample: samples ordered by key, the load prefix sum cut evenly."""
    order = np.argsort(keys, kind="stable")
    cum = np.cumsum(load[order].astype(np.float64))
    tot = cum[-1] if cum.size else 0.0
    rk = np.zeros(keys.size, np.int64)
    if tot > 0:
        mid = cum - 0.5 * load[order]
        rk[order] = np.minimum((mid * n_ranks / tot).astype(np.int64), n_ranks - 1)
    return rk


def operator_exchange(u, v, w, n_ranks, n_samples, mode, npix_x, npix_y, cell_rad, *,
                      epsilon=1e-5, nstacks="auto", oversampling=2.0, precision="single",
                      centres=None, tile=64, tables=None, oversampling_w=None,
                      exchange_buffer_bytes=None, wkernel="auto"):
    """The distributed operator's tile exchange replayed on a uvw subsample (no MPI).

    Samples (wavelengths; any sign) are keyed as :class:`DistributedOperator` keys its rows
    (first w-plane and gridder tile for ``none``/``wstack``, stack and exchange tile of the
    footprint for ``wstack-wproject``), cut into ``n_ranks`` equal-load ranges and marked on
    the tiles each rank's samples touch per plane (``wstack``: the plane range of each tile's
    samples and the next tile along each axis, :func:`radimg.kernels.gridder.touched_tiles`;
    ``wstack-wproject``: the 2 x 2 tiles around each footprint). Planes are dealt round-robin
    over the live ones. A subsample can only miss tiles, so cells are a lower bound (tiles
    are >= 64 cells, so a dense uv coverage is found by a subsample of ~10**5 points).

    Returns
    -------
    dict with per-rank lists ``recv_cells`` / ``send_cells`` (cells received from / sent to
    other ranks per application), ``buffer_cells`` (the Alltoallv buffers: the largest
    round's send plus receive cells with ``exchange_buffer_bytes``), ``exchange_rounds``,
    ``remote_cells`` (= ``recv_cells``),
    ``touched_cells`` (cells of every tile the rank's samples touch, own planes included),
    ``planes_owned``, ``samples`` (scaled to ``n_samples``) and ``grid_cells``, ``nplanes``,
    ``tile_shape``; for ``wstack-wproject`` also ``tables`` (the kernel tables built).
    """
    u, v, w = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, w))
    uvw = np.stack([u, v, w], axis=1)
    fc = np.array([C_LIGHT])  # freq = c: uvw in wavelengths are the "metres" themselves
    field = Field.of(npix_x, npix_y, cell_rad)
    if mode == "wstack-wproject":
        marks = _wproject_marks(uvw, fc, n_ranks, field, epsilon, oversampling, precision,
                                centres, tables, tile)
    else:
        nsel, wmin, wmax = samples_w_range(uvw, fc)
        geo = resolve_geometry(field, epsilon, mode, nsel, wmin, wmax, nstacks=nstacks,
                               oversampling=oversampling, oversampling_w=oversampling_w,
                               precision=precision, wkernel=wkernel)
        marks = _wstack_marks(uvw, fc, n_ranks, geo, tile)
    rk, (R, Pl, T), yb, xb, (nyp, nxp), nplanes, out = marks
    ycell, xcell = np.diff(yb), np.diff(xb)
    tile_cells = (ycell[:, None] * xcell[None, :]).ravel().astype(np.int64)
    if R:
        R, Pl, T = (np.concatenate(a) for a in (R, Pl, T))
    else:
        R = Pl = T = np.zeros(0, np.int64)
    cbytes = 8 if precision == "single" else 16
    cap = None if exchange_buffer_bytes is None else max(1, int(exchange_buffer_bytes) // cbytes)
    touched, recv, send, owned, buf, nrounds = _exchange_counts(R, Pl, T, n_ranks, nplanes,
                                                                tile_cells, cap)
    counts = np.bincount(rk, minlength=n_ranks).astype(np.float64)
    samples = largest_remainder(counts, int(n_samples)) if counts.sum() else counts
    if "max_stack_sub" in out:  # scaled from the subsample like the rank's samples
        out["max_stack_samples"] = (
            out.pop("max_stack_sub") * int(n_samples) // max(w.size, 1)
        ).astype(np.int64).tolist()
    out.update(
        recv_cells=recv.tolist(), send_cells=send.tolist(), remote_cells=recv.tolist(),
        buffer_cells=buf.tolist(), exchange_rounds=nrounds,
        touched_cells=touched.tolist(),
        planes_owned=owned.tolist(), samples=np.asarray(samples, np.int64).tolist(),
        grid_cells=int(nyp * nxp), nplanes=int(nplanes),
        tile_shape=(int(ycell.max()), int(xcell.max())),
    )
    return out


def _wproject_marks(uvw, fc, n_ranks, field, epsilon, oversampling,
                    precision, centres, tables, tile):
    """Ranks and tile marks of the ``wstack-wproject`` operator: samples keyed by stack and
    exchange tile of their footprint, each marking the 2 x 2 tiles around it.

    Returns ``(rank (sample,), (ranks, planes, tiles) lists of marks, ybounds, xbounds,
    (nyp, nxp), nplanes, {"max_stack_sub": (n_ranks,), "tables": WKernelTables})``.
    """
    from radimg.ops.wproject import WProjectOperator
    from radimg.parallel.operator import even_bounds, tile_of

    w = uvw[:, 2]
    wabs = np.abs(w)
    lab = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), wabs)
    dw = wabs - centres[lab]
    geo = wproject_geometry(field, epsilon, precision=precision, oversampling=oversampling,
                            centres=centres,
                            dw_range=(float(dw.min()), float(dw.max())) if dw.size else (0.0, 0.0))
    op = WProjectOperator(uvw, fc, geo, tables=tables)
    t = op.tables
    nyp, nxp = op.nyp, op.nxp
    smax = int(np.ceil(2.0 * max(t.hs_x.max(), t.hs_y.max()))) + 1
    yb = even_bounds(nyp, max(int(tile), smax + 2))
    xb = even_bounds(nxp, max(int(tile), smax + 2))
    nty, ntx = yb.size - 1, xb.size - 1
    nplanes = op.nstacks
    keys = np.zeros(w.size, np.int64)
    load = np.zeros(w.size, np.int64)
    marks = []
    for k in range(nplanes):
        idx = op.stack_idx[k]
        if idx.size == 0:
            continue
        jx, jy, sx, sy = op.sample_footprints(k)
        keys[idx] = k * nty * ntx + tile_of(jy, yb) * ntx + tile_of(jx, xb)
        load[idx] = sx.astype(np.int64) * sy
        marks.append((idx, k, [(tile_of((jy - 1) % nyp, yb), tile_of((jx - 1) % nxp, xb)),
                               (tile_of((jy + sy) % nyp, yb), tile_of((jx + sx) % nxp, xb))]))
    rk = _balanced_ranks(keys, load, n_ranks)
    per_rs = np.zeros((n_ranks, nplanes), np.int64)
    np.add.at(per_rs, (rk, op.labels), 1)
    R, Pl, T = [], [], []
    for idx, k, ((tya, txa), (tyb, txb)) in marks:
        for ty in (tya, tyb):
            for tx in (txa, txb):
                R.append(rk[idx])
                Pl.append(np.full(idx.size, k, np.int64))
                T.append(ty * ntx + tx)
    return rk, (R, Pl, T), yb, xb, (nyp, nxp), nplanes, {"max_stack_sub": per_rs.max(axis=1),
                                                         "tables": t}


def _wstack_marks(uvw, fc, n_ranks, geo, tile):
    """Ranks and tile marks of the ``none``/``wstack`` operator: samples keyed by first
    w-plane and gridder tile, each (rank, tile) marking its plane range on that tile and the
    next tile along each axis (:func:`radimg.kernels.gridder.touched_tiles`).

    Returns ``(rank (sample,), (ranks, planes, tiles) lists of marks, ybounds, xbounds,
    (nyp, nxp), nplanes, {})``.
    """
    from radimg.kernels.gridder import tile_bounds
    from radimg.parallel.operator import sample_keys


    w = uvw[:, 2]
    spec = geo.grid_spec
    yb, xb = tile_bounds(spec.nyp, spec.W, tile), tile_bounds(spec.nxp, spec.W, tile)
    nty, ntx = yb.size - 1, xb.size - 1
    nyp, nxp, nplanes = spec.nyp, spec.nxp, spec.nplanes
    keys = sample_keys(uvw, np.full(w.size, C_LIGHT), spec, yb, xb)
    rk = _balanced_ranks(keys, np.ones(w.size, np.int64), n_ranks)
    p0, tl = np.divmod(keys, nty * ntx)
    # per (rank, tile): the plane range of its samples (touched_tiles' slot_pmin/pmax)
    g = rk * (nty * ntx) + tl
    ug, inv = np.unique(g, return_inverse=True)
    pmin = np.full(ug.size, nplanes, np.int64)
    pmax = np.zeros(ug.size, np.int64)
    np.minimum.at(pmin, inv, p0)
    np.maximum.at(pmax, inv, p0 + spec.Ww - 1)
    grk, gtl = np.divmod(ug, nty * ntx)
    ty, tx = np.divmod(gtl, ntx)
    span = pmax - pmin + 1
    rep = np.repeat(np.arange(ug.size), span)
    pl = pmin[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(span) - span, span))
    R, Pl, T = [], [], []
    for dy in (0, 1):
        for dx in (0, 1):
            R.append(grk[rep])
            Pl.append(pl)
            T.append(((ty[rep] + dy) % nty) * ntx + (tx[rep] + dx) % ntx)
    return rk, (R, Pl, T), yb, xb, (nyp, nxp), nplanes, {}
