"""Shared pytest set-up: pinned numba cache, no network for astropy, common fixtures."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from astropy.utils import iers  # noqa: E402

# Nothing may download at run time (CI has no internet beyond package registries).
iers.conf.auto_download = False
iers.conf.auto_max_age = None
