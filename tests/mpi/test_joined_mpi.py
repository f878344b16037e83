"""Joined-channel and joined-polarisation CLEAN of a cube (issue #15 item 4) through
`radimg run`'s pipeline at this rank count equals the same job on one rank (rank 0 alone,
COMM_SELF): the model, residual, restored and spectral-index images to 1e-6 of each
image's peak (each image's rows split over ranks, its own operator and major cycles; the
minor cycles on rank 0 with the model broadcast)."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

NPIX = 64


def _config(ms, out):
    return {
        "input": {"ms": ms},
        "image": {"npix": NPIX, "cell_arcsec": 12.0, "weighting": "briggs", "robust": 0.0,
                  "stokes": "IQ", "channels_out": 3},
        "wterm": {"mode": "wstack", "epsilon": 1e-6},
        "gridder": {"nthreads": 1, "precision": "double"},
        "deconvolution": {"algorithm": "clean", "join_channels": True,
                          "join_polarizations": True, "spectral_terms": 2, "niter": 300,
                          "threshold_jy": 0.01, "auto_threshold": 0.0},
        "output": {"path": out, "overwrite": True},
    }


def test_joined_clean_equals_the_one_rank_run(tmp_path_factory):
    import h5py
    import yaml
    from mpi4py import MPI

    from radimg.config import resolve
    from radimg.pipeline import run

    comm = MPI.COMM_WORLD
    d = comm.bcast(str(tmp_path_factory.mktemp("joined")) if comm.rank == 0 else None)
    ms = f"{d}/spec.ms"
    if comm.rank == 0:
        from radimg.sim.simulate import simulate

        simulate({
            "telescope": "vla", "ra_deg": 150.0, "dec_deg": 30.0, "freq_hz": 1.2e9,
            "chan_width_hz": 1e8, "nchan": 3, "ha_start_h": -0.1, "ha_stop_h": 0.1,
            "integration_s": 120.0, "noise_jy": 0.01, "seed": 5, "feeds": "linear",
            "sources": [
                {"ra_deg": 150.05, "dec_deg": 30.04, "flux_jy": 2.0, "q_jy": 0.3,
                 "spectral_index": -0.8, "ref_freq_hz": 1.3e9},
                {"ra_deg": 149.96, "dec_deg": 29.98, "flux_jy": 1.0,
                 "spectral_index": 0.4, "ref_freq_hz": 1.3e9},
            ],
        }, ms)
    comm.Barrier()
    cfg = _config(ms, f"{d}/dist.h5")
    dist = run(resolve(yaml_text=yaml.safe_dump(cfg)), verbose=0, comm=comm)
    if comm.rank == 0:
        one = run(resolve(yaml_text=yaml.safe_dump(_config(ms, f"{d}/one.h5"))), verbose=0,
                  comm=MPI.COMM_SELF)
        with h5py.File(dist) as a, h5py.File(one) as b:
            assert a["run"].attrs["n_ranks"] == comm.size
            assert a["run"].attrs["deconvolution_json"] == b["run"].attrs["deconvolution_json"]
            for name in ("model", "residual", "restored", "model_mfs", "restored_mfs",
                         "spectral_index"):
                x, y = a["images"][name][()], b["images"][name][()]
                assert x.shape == y.shape and x.shape[-2:] == (NPIX, NPIX)
                assert np.array_equal(np.isnan(x), np.isnan(y)), name
                x, y = np.nan_to_num(x), np.nan_to_num(y)
                scale = np.abs(y).max()
                assert scale > 0, name
                assert np.abs(x - y).max() <= 1e-6 * scale, name
    comm.Barrier()
