"""Shared pytest set-up: pinned numba cache, no network for astropy, common fixtures."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
# w-kernel tables (radimg.ops.kernel_cache) go to the checkout's own ignored cache, not the
# user's ~/.cache/radimg
os.environ.setdefault("RADIMG_CACHE_DIR", str(REPO / ".radimg_cache"))

from astropy.utils import iers  # noqa: E402

# Nothing may download at run time (CI has no internet beyond package registries).
iers.conf.auto_download = False
iers.conf.auto_max_age = None


def pytest_ignore_collect(collection_path, config):
    """tests/mpi/ holds code that runs under mpiexec (tests/test_mpi_launch.py launches it
    with ``--with-mpi``); a plain run would only collect it to skip it."""
    if collection_path.parent.name == "mpi" and collection_path.parent.parent.name == "tests":
        try:
            return not config.getoption("--with-mpi")
        except ValueError:
            return True
    return None
