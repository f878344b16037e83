"""FFT registry (radimg/ops/fft.py): backend choice, run transforms, wisdom sharing."""

import numpy as np
import pytest

from radimg.ops import fft as F


def _grid(n0, n1, dt, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n0, n1)) + 1j * rng.normal(size=(n0, n1))).astype(dt)


def test_resolve_auto_is_deterministic(monkeypatch):
    """"auto" depends only on what imports and on the work, never on timings: the same
    inputs give the same name (the per-call timed chooser could differ between ranks)."""
    monkeypatch.setattr(F, "available", lambda: ["scipy", "fftw", "numpy"])
    assert F.resolve("auto", work=F.MEASURE_WORK) == "fftw-measure"
    assert F.resolve("auto", work=F.MEASURE_WORK / 2) == "scipy"
    monkeypatch.setattr(F, "available", lambda: ["scipy", "numpy"])
    assert F.resolve("auto", work=F.MEASURE_WORK) == "scipy"
    monkeypatch.setattr(F, "available", lambda: ["numpy"])
    assert F.resolve("auto", work=F.MEASURE_WORK) == "numpy"
    assert F.resolve("fftw") == "fftw"  # explicit names pass through


@pytest.mark.parametrize("n", [64, 48, 40, 37])
def test_row_block_divides(n):
    b = F.row_block(n)
    assert b in (8, 16, 32)
    assert n % b == 0 or b == 32


@pytest.mark.parametrize("name", ["scipy", "numpy", "fftw", "fftw-measure", "timed"])
@pytest.mark.parametrize("dt", [np.complex64, np.complex128])
def test_rows_cols_equal_numpy(name, dt):
    """rows / cols transform exactly the run asked (FFTW: whole row blocks; the rows of a
    block outside the run are transformed too, which callers allow), in place."""
    if name.startswith("fftw") and "fftw" not in F.available():
        pytest.skip("pyfftw not installed")
    f = F.get_fft(name, nthreads=1)
    a = _grid(48, 40, dt)
    g = f.empty(a.shape, dt)
    g[...] = a
    f.rows(g, 5, 19, forward=False)
    ref = a.copy()
    ref[5:19] = np.fft.ifft(a[5:19], axis=1) * a.shape[1]
    b = F.row_block(48)
    lo, hi = (5 // b) * b, min(48, -(-19 // b) * b)
    tol = 1e-4 if dt == np.complex64 else 1e-12
    scale = np.abs(ref).max()
    np.testing.assert_allclose(g[5:19], ref[5:19], atol=tol * scale, rtol=0)
    # rows outside the block cover are untouched
    np.testing.assert_array_equal(g[:lo], a[:lo])
    np.testing.assert_array_equal(g[hi:], a[hi:])
    g[...] = a
    f.cols(g, 3, 29, forward=True)
    ref = a.copy()
    ref[:, 3:29] = np.fft.fft(a[:, 3:29], axis=0)
    np.testing.assert_allclose(g, ref, atol=tol * np.abs(ref).max(), rtol=0)


def test_share_wisdom_serial_plans_once(monkeypatch):
    """Without other ranks share_wisdom just prepares (measured FFTW) or does nothing."""
    calls = []

    class Measured:
        measure = True

    class Plain:
        measure = False

    F.share_wisdom(None, Measured(), lambda: calls.append(1))
    F.share_wisdom(None, Plain(), lambda: calls.append(2))
    assert calls == [1]
