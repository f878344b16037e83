"""Physical and unit constants, defined once (every module imports them from here).

Pure Python floats: numba freezes module globals into compiled kernels, so a kernel that
reads ``C_LIGHT`` sees the same constant as the Python code around it.
"""

from __future__ import annotations

import math

__all__ = ["C_LIGHT", "ARCSEC", "ARCMIN", "DEG", "FWHM_PER_SIGMA"]

#: Speed of light in vacuum, m/s (exact, SI). Wavelengths: ``uvw * freq / C_LIGHT``.
C_LIGHT = 299792458.0
#: One degree in radians.
DEG = math.pi / 180.0
#: One arcminute in radians.
ARCMIN = math.pi / (180.0 * 60.0)
#: One arcsecond in radians.
ARCSEC = math.pi / (180.0 * 3600.0)
#: FWHM of a Gaussian in units of its standard deviation, ``2 sqrt(2 ln 2)``.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
