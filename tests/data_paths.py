"""Where the real Measurement Sets shipped with pyuvdata 3.1.3 live (without importing it).

pyuvdata is a test dependency (pyproject ``test`` extra); tests that need its files call
``pyuvdata_ms(name)``, which skips the test cleanly when pyuvdata or the file is absent.
"""

import importlib.util
import pathlib

import pytest

MWA_MS = "1102865728_small.ms"  # MWA Phase I, Cotter; XX XY YX YY, 10 channels
VLA_MS = "day2_TDEM0003_10s_norx_1src_1spw.ms"  # VLA D config via CASA importuvfits; RR..LL
HERA_MS = "zen.2456865.60537.xy.uvcRREAAM.ms"  # PAPER/HERA; a single XY correlation
NOT_AN_MS = "multi_len_spw.ms"  # only OBSERVATION and SPECTRAL_WINDOW subtables, no main table


def pyuvdata_data_dir():
    """The ``pyuvdata/data`` directory, or None when pyuvdata is not installed."""
    spec = importlib.util.find_spec("pyuvdata")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "data"
    return path if path.is_dir() else None


def pyuvdata_ms(name):
    """Path of one of pyuvdata's data files; skips the calling test when unavailable."""
    d = pyuvdata_data_dir()
    if d is None:
        pytest.skip("pyuvdata (test extra, ==3.1.3) is not installed: its real MS files are needed")
    path = d / name
    if not path.exists():
        pytest.skip(f"{path} is not shipped with this pyuvdata version (3.1.3 ships it)")
    return path
