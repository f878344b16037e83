"""CPU/GPU scalar twins are written once (radimg/kernels/scalar.py, issue #14 item 4).

The CPU kernels and the CUDA kernels call the same Python source compiled for each target;
these tests fail if either side grows its own copy again, and check the functions against
plain numpy formulas. GPU-versus-CPU results of whole kernels: tests/test_gpu.py (CUDA
simulator, PTX)."""

from __future__ import annotations

import ast
import math
import pathlib

import numpy as np
import pytest

from radimg.kernels import gridder as kg
from radimg.kernels import wproject as kw
from radimg.kernels.scalar import CPU, build

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[1] / "radimg"
NAMES = ("es", "lagrange4", "dw_node", "support", "sample_uvw", "fill_1d", "wproject_setup")


def _defined_functions(path):
    """Names of every function defined in ``path`` (nested ones too)."""
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_no_second_copy_in_kernels_or_gpu():
    """No module of radimg/kernels or radimg/gpu besides scalar.py defines one of the shared
    scalar functions (with or without a leading underscore)."""
    banned = set(NAMES) | {"_" + n for n in NAMES} | {"_coords", "_wp_setup"}
    found = {}
    for sub in ("kernels", "gpu"):
        for path in sorted((ROOT / sub).glob("*.py")):
            if path.name == "scalar.py":
                continue
            hit = _defined_functions(path) & banned
            if hit:
                found[str(path.relative_to(ROOT))] = sorted(hit)
    assert not found, f"scalar twins written again: {found}"


def test_cpu_kernels_use_the_shared_build():
    assert kg._sample_uvw is CPU.sample_uvw
    assert kw._sample_uvw is CPU.sample_uvw
    assert kw._fill_1d is CPU.fill_1d
    assert kw._sample_setup is CPU.wproject_setup
    assert kw._support is CPU.support
    assert kw._dw_node is CPU.dw_node


def test_gpu_build_is_the_same_source():
    """The CUDA device functions (real target or simulator, whichever imports) are the same
    code objects as the CPU ones, and the GPU kernels call them."""
    pytest.importorskip("numba.cuda")
    from radimg.gpu import gridder as gg
    from radimg.gpu import wproject as gw
    from radimg.gpu.scalar import DEVICE

    if DEVICE is None:
        pytest.skip("numba.cuda not importable")
    for name in NAMES:
        assert getattr(DEVICE, name).py_func.__code__ is getattr(CPU, name).py_func.__code__
    assert gg._es is DEVICE.es and gg._sample_uvw is DEVICE.sample_uvw
    assert gw._fill_1d is DEVICE.fill_1d and gw._wp_setup is DEVICE.wproject_setup


def test_scalar_functions_against_formulas():
    """Plain-Python build (the decorator is the identity) and the CPU build agree bitwise,
    and both match numpy formulas: the ES kernel, Lagrange weights that reproduce cubics,
    the support rule, the sample opening with reflection and a 1-D fill of a separable
    table."""
    py = build(lambda f: f)
    x = np.linspace(-1.2, 1.2, 49)
    beta = 2.3 * 7
    want = np.where(np.abs(x) < 1, np.exp(beta * (np.sqrt(np.maximum(1 - x * x, 0)) - 1)), 0)
    for b in (py, CPU):
        got = np.array([b.es(float(t), beta) for t in x])
        assert np.array_equal(got, want)
    for t in (0.0, 0.25, 0.7, 0.999):
        w = np.array(CPU.lagrange4(t))
        assert np.array_equal(w, np.array(py.lagrange4(t)))
        nodes = np.array([-1.0, 0.0, 1.0, 2.0])
        for p in (lambda z: 1.0 + 0 * z, lambda z: z, lambda z: z**3 - 2 * z):
            assert abs(w @ p(nodes) - p(t)) < 1e-12
    hs = np.array([1.0, 2.2, 3.1, 4.9, 6.0, 7.5])
    iw, fw = CPU.dw_node(2.6, 0.0, 1.0, hs.size)
    assert (iw, fw) == py.dw_node(2.6, 0.0, 1.0, hs.size) and iw == 1
    assert CPU.support(hs, iw, fw) == math.ceil(2 * max(hs[2], hs[3]))
    assert CPU.support(hs, iw, 1.5) == math.ceil(2 * max(hs[1:5]))
    uvw = np.array([[10.0, -20.0, -5.0], [1.0, 2.0, 3.0]])
    fscale = np.array([0.5, 2.0])
    assert CPU.sample_uvw(uvw, fscale, 2, 1) == (0, 1, True, -20.0, 40.0, 10.0)
    assert CPU.sample_uvw(uvw, fscale, 2, 2) == py.sample_uvw(uvw, fscale, 2, 2)
    # a table linear in the offset and the dw node: the Lagrange fill reproduces it exactly
    q, tmax, S = 8, 4.0, 5
    nt = int(2 * tmax * q) + 8
    t_off = np.arange(nt) / q - tmax  # table entry j holds offset j / q - tmax
    tab = np.stack([np.add.outer(0.5 * np.arange(6), 3.0 * t_off)]).astype(np.complex128)
    out_c = np.zeros((1, S), np.complex128)
    out_p = np.zeros((1, S), np.complex128)
    g = 2.3
    CPU.fill_1d(tab, 1, 0.4, g, S, tmax, q, out_c)
    py.fill_1d(tab, 1, 0.4, g, S, tmax, q, out_p)
    assert np.array_equal(out_c, out_p)
    want = 0.5 * (2 + 0.4) + 3.0 * (g - np.arange(S))
    assert np.allclose(out_c[0].real, want, rtol=0, atol=1e-12)
