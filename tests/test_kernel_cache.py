"""Set-up pieces of issue #13: the on-disk kernel-table cache (radimg/ops/kernel_cache.py),
the FFT-based table construction against the dense-product definition, the LAPACK-free
Gauss-Legendre rule and the BLAS thread cap."""

import multiprocessing as mp
import os

import numpy as np
import pytest

from radimg.kernels import wproject as wpk
from radimg.kernels._blas import _openblas, blas_threads
from radimg.kernels.es import es_parameters, leggauss
from radimg.ops import kernel_cache as kc

pytestmark = pytest.mark.unit

NPIX, CELL = 128, np.deg2rad(20.0) / 128
W, BETA = es_parameters(0.5e-5, 2.0)
PARAMS = dict(npix_x=NPIX, npix_y=NPIX, cell_rad=CELL, nxp=256, nyp=256, dw_min=-3.0,
              dw_max=4.0, epsilon=1e-5, W=W, beta=BETA, dtype=np.complex64)


def _same(a, b):
    for name in ("tab_x", "tab_y", "hs_x", "hs_y", "corr_x", "corr_y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("dw0", "ddw", "tmax", "q", "psi0", "rank", "W", "beta"):
        assert getattr(a, name) == getattr(b, name)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIMG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting_build():
    calls = []

    def build(**p):
        calls.append(p)
        return wpk.build_wkernel_tables(**p)

    return build, calls


def test_build_store_then_load_bitwise(cache):
    build, calls = _counting_build()
    t1, how1 = kc.cached_wkernel_tables(build, **PARAMS)
    t2, how2 = kc.cached_wkernel_tables(build, **PARAMS)
    assert (how1, how2) == ("built", "cache") and len(calls) == 1
    _same(t1, t2)
    files = list(cache.glob("wkernel-*.npz"))
    assert len(files) == 1 and not list(cache.glob(".tmp-*"))
    # any parameter change is another key
    t3, how3 = kc.cached_wkernel_tables(build, **{**PARAMS, "dw_max": 4.000001})
    assert how3 == "built" and len(calls) == 2 and len(list(cache.glob("wkernel-*"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_damaged_file_is_rebuilt(cache, damage):
    build, calls = _counting_build()
    good, _ = kc.cached_wkernel_tables(build, **PARAMS)
    (path,) = cache.glob("wkernel-*.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # one byte inside the table data: only the checksum sees it
        b = bytearray(raw)
        b[len(b) // 2] ^= 0x5A
        path.write_bytes(bytes(b))
    elif damage == "foreign":
        np.savez(path, format=np.str_("something else"))
    else:
        path.write_bytes(b"")
    again, how = kc.cached_wkernel_tables(build, **PARAMS)
    assert how == "built" and len(calls) == 2
    _same(good, again)
    third, how = kc.cached_wkernel_tables(build, **PARAMS)  # the rebuilt file is sound
    assert how == "cache"
    _same(good, third)


def test_cache_off_and_unwritable(tmp_path, monkeypatch):
    build, calls = _counting_build()
    monkeypatch.setenv("RADIMG_CACHE_DIR", "off")
    _, how = kc.cached_wkernel_tables(build, **PARAMS)
    assert how.startswith("built (no cache") and kc.cache_dir() is None
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RADIMG_CACHE_DIR", str(blocker / "cache"))
    t, how = kc.cached_wkernel_tables(build, **PARAMS)
    assert how.startswith("built (no cache") and t.tab_x.size and len(calls) == 2


def _writer(args):
    directory, seed = args
    os.environ["RADIMG_CACHE_DIR"] = directory
    t, how = kc.cached_wkernel_tables(wpk.build_wkernel_tables, **PARAMS)
    return float(np.abs(t.tab_x).sum()), how


def test_concurrent_writers_leave_one_sound_file(cache):
    """Four processes miss at once and all write the same key: every one gets its tables,
    the directory ends with one complete file and no temporaries, and it loads."""
    with mp.get_context("fork").Pool(4) as pool:
        res = pool.map(_writer, [(str(cache), i) for i in range(4)])
    assert len({r[0] for r in res}) == 1
    assert len(list(cache.glob("wkernel-*.npz"))) == 1 and not list(cache.glob(".tmp-*"))
    _, how = kc.cached_wkernel_tables(wpk.build_wkernel_tables, **PARAMS)
    assert how == "cache"


def test_trim_keeps_the_cap(cache, monkeypatch):
    build, _ = _counting_build()
    kc.cached_wkernel_tables(build, **PARAMS)
    size = next(cache.glob("wkernel-*.npz")).stat().st_size
    monkeypatch.setenv("RADIMG_CACHE_MAX_BYTES", str(int(1.5 * size)))
    kc.cached_wkernel_tables(build, **{**PARAMS, "dw_max": 5.0})
    assert len(list(cache.glob("wkernel-*.npz"))) == 1


def test_fft_tabulation_equals_the_dense_product():
    """_lam_to_t (one FFT per row) against the definition sum_l a exp(2 pi i lam t) / M."""
    rng = np.random.default_rng(3)
    M, qq, tt = 37, 6, 11.0
    kidx = np.arange(-20, 21)
    a = rng.standard_normal((5, 3, kidx.size)) + 1j * rng.standard_normal((5, 3, kidx.size))
    got = wpk._lam_to_t(a, kidx, M, qq, tt, chunk=2)
    t = -tt + np.arange(int(2 * tt * qq) + 1) / qq
    P = np.exp(2j * np.pi * np.outer(kidx / M, t)) / M
    ref = np.einsum("wrl,lt->rwt", a, P)
    assert np.abs(got - ref).max() <= 1e-13 * np.abs(ref).max()


def test_node_terms_recurrence_equals_direct():
    rng = np.random.default_rng(4)
    dws = -2.0 + 0.37 * np.arange(40)
    U = rng.standard_normal((9, 3)) + 1j * rng.standard_normal((9, 3))
    p1x, p1y = rng.standard_normal(9), rng.standard_normal(9)
    cross = 0.1 * rng.standard_normal((9, 9))
    gg = rng.standard_normal((9, 9))
    ax, by = wpk._node_terms(dws, U, p1x, p1y, cross, gg, chunk=16)
    for i, d in enumerate(dws):
        ref_a = np.exp(2j * np.pi * d * p1x)[None, :] * U.T
        ref_b = (U.conj().T @ (np.exp(2j * np.pi * d * cross) * gg)) * np.exp(
            2j * np.pi * d * p1y)[None, :]
        np.testing.assert_allclose(ax[i], ref_a, rtol=0, atol=1e-13)
        np.testing.assert_allclose(by[i], ref_b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 16, 48, 64, 257, 512])
def test_leggauss_equals_numpy(n):
    x, w = leggauss(n)
    x0, w0 = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(x, x0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, w0, rtol=1e-9, atol=0)  # numpy is the less exact one
    # exact for polynomials of degree < 2n: Legendre P_j integrates to 2 (j = 0) or 0
    for j in range(0, min(2 * n, 60)):
        got = w @ np.polynomial.legendre.legval(x, np.eye(j + 1)[j])
        assert abs(got - (2.0 if j == 0 else 0.0)) <= 1e-13, (j, got)


def test_blas_threads_caps_and_restores():
    libs = _openblas()
    if not libs:
        pytest.skip("numpy's BLAS is not an OpenBLAS this process can reach")
    before = [get() for get, _ in libs]
    with blas_threads(1):
        assert all(get() == 1 for get, _ in libs)
    assert [get() for get, _ in libs] == before
