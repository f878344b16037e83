"""Checkpoint gather under mpiexec: per-rank arrays and vis-space rows (uneven, shuffled row
ids, some rows on no rank) reach rank 0 as raw buffers, also when split into many tiny
messages, and each rank reads back exactly its own rows."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("piece", [1 << 28, 40])  # 40 B: every array in many pieces
def test_checkpoint_gathers_rows_and_per_rank_arrays(tmp_path_factory, piece):
    from mpi4py import MPI

    from radimg.deconv.checkpoint import read_checkpoint, write_checkpoint
    from radimg.io.product import make_wcs_info

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    nrows, nchan = 1003, 3
    rng = np.random.default_rng(3)
    z_all = rng.normal(size=(nrows, nchan)) + 1j * rng.normal(size=(nrows, nchan))
    owner = rng.integers(0, size, nrows)
    owner[::97] = -1  # rows no rank holds stay 0
    perm = rng.permutation(nrows)
    mine = perm[owner[perm] == rank]  # shuffled order, uneven counts (rank may have none)
    path = comm.bcast(str(tmp_path_factory.mktemp("ck") / "c.ckpt.h5") if rank == 0 else None)
    image = np.arange(12.0).reshape(3, 4)
    per_rank = {f"u/b{rank}": np.full((5 + rank,), float(rank))}
    write_checkpoint(
        comm,
        path,
        image=image,
        wcs_info=make_wcs_info(4, 3, 1e-4, (0.0, -0.5), 1.5e8),
        run_attrs={
            "config_yaml": "x: 1\n",
            "n_ranks": size,
            "timings_json": "{}",
            "load_balance_json": "{}",
        },
        counters={"it": 7},
        per_rank=per_rank,
        vis_arrays={"z": z_all[mine]},
        row_id=mine,
        nrows_total=nrows,
        max_piece_bytes=piece,
    )
    want = np.where((owner >= 0)[:, None], z_all, 0.0)
    if rank == 0:
        full = read_checkpoint(path, row_id=np.arange(nrows), vis_names=("z",))
        assert np.array_equal(full["extras"]["z"], want)
        for r in range(size):
            assert np.array_equal(full["extras"][f"u/b{r}"], np.full((5 + r,), float(r)))
    # a resume at this rank count reads only its own rows (any order, repeats allowed)
    ask = np.concatenate([mine[::-1], mine[:2]])
    ck = read_checkpoint(path, row_id=ask, vis_names=("z",))
    assert np.array_equal(ck["extras"]["z"], z_all[ask])
    assert ck["counters"] == {"it": 7}
    assert np.array_equal(ck["image"], image)
    # without vis_names the vis-space array is not read at all
    assert "z" not in read_checkpoint(path)["extras"]
    comm.Barrier()
