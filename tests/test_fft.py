"""FFT registry (radimg/ops/fft.py): backend choice, run transforms, wisdom sharing."""

import numpy as np
import pytest

from radimg.ops import fft as F


def _grid(n0, n1, dt, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n0, n1)) + 1j * rng.normal(size=(n0, n1))).astype(dt)


def _only(names):
    """A stand-in for :func:`radimg.ops.fft.available` where just ``names`` import."""
    return lambda probe=None: [n for n in names if probe is None or n in probe]


def test_resolve_auto_is_deterministic(monkeypatch):
    """"auto" depends only on what imports and on the work, never on timings: the same
    inputs give the same name (the per-call timed chooser could differ between ranks)."""
    monkeypatch.setattr(F, "available", _only(["ducc0", "scipy", "fftw", "numpy"]))
    assert F.resolve("auto", work=F.MEASURE_WORK) == "ducc0"
    assert F.resolve("auto", work=0.0) == "ducc0"
    monkeypatch.setattr(F, "available", _only(["scipy", "fftw", "numpy"]))
    assert F.resolve("auto", work=F.MEASURE_WORK) == "fftw-measure"
    assert F.resolve("auto", work=F.MEASURE_WORK / 2) == "scipy"
    monkeypatch.setattr(F, "available", _only(["scipy", "numpy"]))
    assert F.resolve("auto", work=F.MEASURE_WORK) == "scipy"
    monkeypatch.setattr(F, "available", _only(["numpy"]))
    assert F.resolve("auto", work=F.MEASURE_WORK) == "numpy"
    assert F.resolve("fftw") == "fftw"  # explicit names pass through


@pytest.mark.parametrize("n", [64, 48, 40, 37])
def test_row_block_divides(n):
    b = F.row_block(n)
    assert b in (8, 16, 32)
    assert n % b == 0 or b == 32


@pytest.mark.parametrize("name", ["ducc0", "scipy", "numpy", "fftw", "fftw-measure", "timed"])
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


def test_good_size_is_the_one_rule():
    """radimg.ops.fft.good_size against a brute-force search: the smallest even 5-smooth
    length >= max(ceil(n), 16) (even=False, minimum=1: any 5-smooth length, as the
    deconvolution's convolutions use it); and no other module defines its own rule."""
    import ast
    import math
    import pathlib

    from radimg.ops.fft import good_size

    def smooth(m):
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        return m == 1

    for n in [0.5, *range(1, 400), 1153.2, 2 * 77, 4097]:
        even = next(m for m in range(max(math.ceil(n), 16), 10**6)
                    if m % 2 == 0 and smooth(m))
        assert good_size(n) == even, n
        anyl = next(m for m in range(max(math.ceil(n), 1), 10**6) if smooth(m))
        assert good_size(n, even=False, minimum=1) == anyl, n
    assert good_size(154) == 160  # 2 x 77: 7- and 11-smooth lengths are not used
    root = pathlib.Path(__file__).resolve().parents[1] / "radimg"
    defs = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef) and "good_size" in node.name
    )
    # deconv/image.py's _good_size is a one-line call of the shared rule
    assert defs == ["deconv/image.py", "ops/fft.py"], defs
