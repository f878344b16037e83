"""A cube (issue #15: Stokes I, Q, U, V in 2 output channels) through `radimg run`'s
pipeline at this rank count equals the same job on one rank (rank 0 alone, COMM_SELF), to
1e-6 of each image's peak: the selection's rows split over ranks, per-image imaging weights
(Briggs: a global density grid per image) and operators (load-balanced per image), with
the output channels imaged by groups of ranks (resources.channel_groups: auto gives 2 groups
at 2 and 4 ranks, 1 at 3; 2 asked for at 3 ranks: groups of 2 and 1 ranks) or every rank
on every channel (1), dirty or deconvolved image by image (CLEAN)."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

NPIX = 64


def _config(ms, out, groups="auto", clean=False):
    cfg = {
        "input": {"ms": ms, "spw": "all"},
        "image": {"npix": NPIX, "cell_arcsec": 10.0, "weighting": "briggs", "robust": 0.0,
                  "stokes": "IQUV", "channels_out": 2},
        "wterm": {"mode": "wstack", "epsilon": 1e-6},
        "gridder": {"nthreads": 1, "precision": "double"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": out, "overwrite": True},
        "resources": {"channel_groups": groups},
    }
    if clean:
        cfg["deconvolution"] = {"algorithm": "clean", "niter": 30, "auto_threshold": 0.0,
                                "threshold_jy": 0.0, "mgain": 0.8}
    return cfg


def _groups_expected(groups, size):
    if groups != "auto":
        return groups
    return 2 if size % 2 == 0 else 1


@pytest.mark.parametrize("groups,clean", [("auto", False), (1, False), (2, False),
                                          ("auto", True)])
def test_cube_equals_the_one_rank_cube(tmp_path_factory, groups, clean):
    import h5py
    import yaml
    from mpi4py import MPI

    from radimg.config import resolve
    from radimg.pipeline import run

    comm = MPI.COMM_WORLD
    d = comm.bcast(str(tmp_path_factory.mktemp("cube")) if comm.rank == 0 else None)
    ms = f"{d}/pol.ms"
    if comm.rank == 0:
        from radimg.sim.simulate import simulate

        simulate({
            "telescope": "vla", "ra_deg": 150.0, "dec_deg": 30.0, "freq_hz": 1.4e9,
            "chan_width_hz": 4e6, "nchan": 2, "nspw": 2, "spw_spacing_hz": 2e7,
            "ha_start_h": -0.05, "ha_stop_h": 0.05, "integration_s": 100.0,
            "noise_jy": 0.01, "seed": 5, "feeds": "linear",
            "sources": [{"ra_deg": 150.05, "dec_deg": 30.04, "flux_jy": 2.0, "q_jy": 0.3,
                         "u_jy": -0.2, "v_jy": 0.1, "rm_rad_m2": 40.0}],
        }, ms)
    comm.Barrier()
    if groups == 2 and comm.size < 2:
        groups = 1  # more groups than ranks is a ConfigError (tests/bad_input_cases.py)
    dist = run(resolve(yaml_text=yaml.safe_dump(_config(ms, f"{d}/dist.h5", groups, clean))),
               verbose=0, comm=comm)
    if comm.rank == 0:
        one = run(resolve(yaml_text=yaml.safe_dump(_config(ms, f"{d}/one.h5", 1, clean))),
                  verbose=0, comm=MPI.COMM_SELF)
        names = ["dirty", "psf", "dirty_mfs", "psf_mfs"]
        if clean:
            names += ["model", "residual", "restored", "restored_mfs"]
        with h5py.File(dist) as a, h5py.File(one) as b:
            wj = json.loads(a["run"].attrs["weighting_json"])
            assert wj["channel_groups"] == _groups_expected(groups, comm.size)
            assert [(x["channel"], x["stokes"]) for x in wj["per_image"]] == \
                [(c, p) for c in range(2) for p in "IQUV"]
            for name in names:
                x, y = a["images"][name][()], b["images"][name][()]
                assert x.shape == y.shape and x.shape[-2:] == (NPIX, NPIX)
                planes = x.reshape(-1, NPIX, NPIX), y.reshape(-1, NPIX, NPIX)
                for px, py in zip(*planes, strict=True):
                    assert np.abs(px - py).max() <= 1e-6 * np.abs(py).max(), name
            assert a["run"].attrs["n_ranks"] == comm.size
    comm.Barrier()
