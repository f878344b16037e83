"""GPU gridder and operator: availability, device selection, simulator equality, PTX, real GPU.

- The numba CUDA simulator must be switched on before numba is imported, and this process has
  imported numba already, so the simulator tests (tests/gpu_sim/sim_gridder.py: every kernel and
  the operator against their CPU twins at 1e-5 / 1e-10) run in a subprocess.
- PTX: every kernel compiles with its real launch signatures through ``numba.cuda.compile_ptx``
  when numba-cuda and its NVVM are installed (``pip install -e .[gpu-sim]``); skipped otherwise.
- ``@pytest.mark.gpu`` tests need a real GPU and skip cleanly without one.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import radimg.gpu as rgpu
from radimg.gpu import _device

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- no GPU needed


@pytest.mark.unit
def _run_simulator_file(path, **env_extra):
    """Run one tests/gpu_sim file in a fresh interpreter with the CUDA simulator on (it must
    be set before numba is imported); every test in it must pass, none skip."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", **env_extra)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", path],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], tail


def test_import_without_cupy_or_gpu():
    """Importing radimg.gpu (and the kernel module) never needs cupy or a device."""
    code = ("import sys; sys.modules['cupy'] = None; import radimg.gpu, radimg.gpu.gridder, "
            "radimg.gpu.operator; print(radimg.gpu.gpu_available())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.unit
def test_local_rank_from_env():
    f = rgpu.local_rank_from_env
    assert f({}) is None
    assert f({"SLURM_LOCALID": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == 3
    assert f({"OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == 1
    assert f({"MPI_LOCALRANKID": "2"}) == 2
    assert f({"SLURM_LOCALID": "", "MPI_LOCALRANKID": "5"}) == 5


@pytest.mark.unit
def test_device_for_rank():
    assert rgpu.device_for_rank(None, 4) == 0
    assert [rgpu.device_for_rank(r, 4) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert rgpu.device_for_rank(0, 1) == 0
    with pytest.raises(rgpu.GpuUnavailableError):
        rgpu.device_for_rank(0, 0)


@pytest.mark.unit
def test_device_gpu_without_gpu_fails_clearly(monkeypatch):
    """``gridder.device: gpu`` on a machine without a usable GPU stops at start-up with a
    message that says what was asked, why it cannot run, and what to do."""
    monkeypatch.setattr(_device, "_cupy_status",
                        lambda: (False, "cupy.cuda.is_available() is False (no CUDA driver)"))
    monkeypatch.setattr(_device, "simulator_enabled", lambda: False)
    with pytest.raises(rgpu.GpuUnavailableError) as exc:
        rgpu.check_gpu_available()
    msg = str(exc.value)
    assert "gridder.device: gpu" in msg
    assert "is_available() is False" in msg
    assert "gridder.device: cpu" in msg
    assert not rgpu.gpu_available()
    # The operator refuses before doing any work.
    from radimg.gpu.operator import make_operator

    with pytest.raises(rgpu.GpuUnavailableError, match="gridder.device: gpu"):
        make_operator(np.zeros((4, 3)), np.array([1e8]), 16, 16, 1e-3, mode="none")


@pytest.mark.unit
def test_availability_uses_is_available_not_import(monkeypatch):
    """An importable cupy whose ``cuda.is_available()`` is False is not a usable GPU."""
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    ok, reason = _device._cupy_status()
    assert not ok and "is_available() is False" in reason


@pytest.mark.unit
def test_transfer_stats_counts_bytes():
    st = _device.TransferStats()
    st.begin()
    a = _device.to_device(np.zeros(10), np, st)
    _device.to_host(a, np, st)
    assert st.as_dict()["h2d_bytes_last_call"] == 80
    assert st.as_dict()["d2h_bytes_last_call"] == 80
    st.begin()
    assert st.as_dict()["h2d_bytes_last_call"] == 0 and st.total_h2d == 80


# ----------------------------------------------------------------------------- simulator


def test_kernels_match_cpu_under_cuda_simulator():
    """Every CUDA kernel (ES and w-projection) and both GPU operators equal their CPU twins
    (1e-5 single, 1e-10 double) under the numba CUDA simulator, with tiny inputs (50 samples,
    32^2 grid; simulator blocks of 32 and 8x8 threads, radimg.gpu.gridder._BLOCK), and a
    major-cycle loop moves only images after set_data."""
    _run_simulator_file("tests/gpu_sim/sim_gridder.py")


def test_admm_on_device_under_cuda_simulator():
    """ADMM with the resident GPU operator (tests/gpu_sim/sim_admm.py): after set-up every
    power-method and ADMM iteration moves one image each way, never samples (600 samples,
    4800 bytes, against 1024-byte images), and the model equals CPU ADMM's to 1e-5 of peak."""
    _run_simulator_file("tests/gpu_sim/sim_admm.py")


def test_gpu_pipeline_under_cuda_simulator():
    """``radimg run`` with ``gridder.device: gpu`` (CLEAN in modes none and wstack-wproject,
    ADMM in mode none) on the simulator: products equal the CPU run's to 1e-5 (single) and the
    timing record shows only images crossing host <-> device after set-up
    (tests/gpu_sim/sim_pipeline.py)."""
    _run_simulator_file("tests/gpu_sim/sim_pipeline.py", RADIMG_GPU_SIMULATOR="1")


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_gpu_distributed_operator_under_cuda_simulator(nranks):
    """The GPU operator in the CPU's distributed scheme at 1-3 ranks
    (tests/gpu_sim/sim_mpi_dist.py; none single, wstack and wstack-wproject double): the CPU
    scheme's rows and load figures (max/mean load <= 1.01), and the global image, the
    prediction and the resident residual equal the CPU distributed operator's and the
    one-rank serial operator's to 1e-5 (single) / 1e-10 (double): rank-count invariance."""
    mpiexec = pathlib.Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("no mpiexec next to the interpreter (pip install mpich)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", OMP_NUM_THREADS="1")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    r = subprocess.run([str(mpiexec), "-n", str(nranks), sys.executable,
                        "tests/gpu_sim/sim_mpi_dist.py"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert f"GPU-DIST-OK ranks={nranks}" in r.stdout, r.stdout


def test_gpu_pipeline_three_ranks_under_cuda_simulator(tmp_path):
    """``mpiexec -n 3 radimg run`` with ``gridder.device: gpu`` (wstack-wproject, CLEAN;
    tests/gpu_sim/sim_mpi_pipeline.py): the product reports scheme ``balanced`` with
    max/mean load <= 1.01 and the CPU run's per-rank loads, and every image equals the CPU
    run's to 1e-5 of its peak (single)."""
    mpiexec = pathlib.Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("no mpiexec next to the interpreter (pip install mpich)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", RADIMG_GPU_SIMULATOR="1",
               OMP_NUM_THREADS="1")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    r = subprocess.run([str(mpiexec), "-n", "3", sys.executable,
                        "tests/gpu_sim/sim_mpi_pipeline.py", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "GPU-PIPELINE-OK ranks=3" in r.stdout, r.stdout


# ----------------------------------------------------------------------------- PTX


_PTX_SCRIPT = r"""
import sys, types
import numpy as np
from numba import cuda
import numba.cuda.dispatcher as disp
cc = tuple(int(x) for x in sys.argv[1].split("."))
# numba-cuda compiles device functions for the *current* device; no device here, so stand one
# in with the target compute capability (the kernels themselves get it from compile_ptx).
disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
from radimg.gpu import gridder as gg
for dt in (np.float32, np.float64):
    for name, (fn, sig) in gg.kernel_signatures(dt).items():
        ptx, restype = cuda.compile_ptx(fn, sig, cc=cc)
        assert ".entry" in ptx, name
        if name == "grid":
            suffix = "f32" if dt == np.float32 else "f64"
            assert "atom.shared.add." + suffix in ptx, "no shared-memory atomics"
            assert "atom.global.add." + suffix in ptx or "red.global.add." + suffix in ptx
        print("PTX-OK", np.dtype(dt).name, name, len(ptx))
# w-projection kernels, local arrays sized for a 25 deg field's tables (R 7, supports to 40)
from radimg.gpu import wproject as gw
for dt in (np.float32, np.float64):
    suffix = "f32" if dt == np.float32 else "f64"
    for name, (fn, sig) in gw.kernel_signatures(dt, rank=7, smax=40).items():
        ptx, restype = cuda.compile_ptx(fn, sig, cc=cc)
        assert ".entry" in ptx, name
        if name.startswith("wp_grid"):
            assert "atom.global.add." + suffix in ptx or "red.global.add." + suffix in ptx
        if name == "wp_grid_shared":
            assert "atom.shared.add." + suffix in ptx, "no shared-memory atomics"
        print("PTX-OK", np.dtype(dt).name, name, len(ptx))
"""


def _numba_cuda_ptx_reason():
    """None when numba-cuda (NVIDIA's target, with NVVM from the cu12 wheels) is importable."""
    r = subprocess.run(
        [sys.executable, "-c", "from numba import cuda; print(cuda.implementation)"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    if r.returncode != 0 or r.stdout.strip() != "NVIDIA":
        return ("numba-cuda is not installed (the built-in numba.cuda needs a CUDA toolkit for "
                "NVVM); pip install -e .[gpu-sim] to run the PTX checks")
    return None


@pytest.mark.parametrize("cc", ["8.0", "9.0"])
def test_kernels_compile_to_ptx(cc):
    reason = _numba_cuda_ptx_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, cc], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert r.stdout.count("PTX-OK") == 16, r.stdout


# ----------------------------------------------------------------------------- real GPU


def _need_gpu():
    if not rgpu.gpu_available():
        pytest.skip("no usable CUDA GPU (cupy absent or cupy.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def gpu_problem():
    rng = np.random.default_rng(3)
    nrow, nchan, npix, cell = 2000, 4, 64, 4e-3
    uvw = rng.uniform(-1, 1, (nrow, 3)) * np.array([2000.0, 2000.0, 300.0])
    freq = np.linspace(1.0e8, 1.3e8, nchan)
    vis = rng.normal(size=(nrow, nchan)) + 1j * rng.normal(size=(nrow, nchan))
    wgt = rng.uniform(0.5, 1.5, (nrow, nchan))
    img = rng.normal(size=(npix, npix))
    return uvw, freq, npix, cell, vis, wgt, img


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["none", "wstack", "wstack-wproject"])
@pytest.mark.parametrize("precision,tol", [("single", 1e-5), ("double", 1e-10)])
def test_gpu_operator_matches_cpu(gpu_problem, mode, precision, tol):
    _need_gpu()
    from radimg.gpu.operator import make_operator
    from radimg.ops.operator import make_operator as make_cpu

    uvw, freq, npix, cell, vis, wgt, img = gpu_problem
    kw = dict(mode=mode, epsilon=1e-5, precision=precision)
    cpu = make_cpu(uvw, freq, npix, npix, cell, **kw)
    gpu = make_operator(uvw, freq, npix, npix, cell, **kw)
    a, b = cpu.hdot(vis, wgt), gpu.hdot(vis, wgt)
    assert np.abs(a - b).max() <= tol * np.abs(a).max()
    a, b = cpu.dot(img), gpu.dot(img)
    assert np.abs(a - b).max() <= tol * np.abs(a).max()


@pytest.mark.gpu
@pytest.mark.parametrize("cdt", [np.complex64, np.complex128])
def test_gpu_kernels_match_cpu_with_device_arrays(gpu_problem, cdt):
    _need_gpu()
    import cupy

    from radimg.gpu import gridder as gg
    from radimg.kernels import gridder as cg
    from radimg.ops.operator import make_operator as make_cpu

    uvw, freq, npix, cell, vis, wgt, _ = gpu_problem
    op = make_cpu(uvw, freq, npix, npix, cell, mode="wstack", epsilon=1e-5)
    spec, lay = op.spec, op.layout()
    tol = 1e-5 if cdt == np.complex64 else 1e-10
    v = vis.astype(cdt)
    dlay = gg.upload_layout(lay, spec.W, cupy)
    for p in (0, spec.nplanes // 2):
        for ms in (gg.SHARED_BYTES, 0):
            ref = cg.grid_plane(lay, spec, uvw, freq, v, p, weight=wgt)
            got = gg.grid_plane(dlay, spec, cupy.asarray(uvw), freq, cupy.asarray(v), p,
                                weight=cupy.asarray(wgt), max_shared=ms)
            assert isinstance(got, cupy.ndarray)
            assert np.abs(got.get() - ref).max() <= tol * np.abs(ref).max()
            dref = cg.degrid_plane(lay, spec, uvw, freq, ref, p)
            dgot = gg.degrid_plane(dlay, spec, cupy.asarray(uvw), freq, cupy.asarray(ref), p,
                                   max_shared=ms)
            assert np.abs(dgot.get() - dref).max() <= tol * np.abs(dref).max()


@pytest.mark.gpu
def test_gpu_residual_moves_only_images(gpu_problem):
    _need_gpu()
    from radimg.gpu.operator import make_operator

    uvw, freq, npix, cell, vis, wgt, img = gpu_problem
    gpu = make_operator(uvw, freq, npix, npix, cell, mode="wstack", precision="single")
    gpu.set_data(vis, wgt)
    for _ in range(3):
        gpu.residual_image(img)
        st = gpu.stats
        assert st["h2d_bytes_last_call"] == img.size * 4  # float32 model (single)
        assert st["d2h_bytes_last_call"] == img.size * 4
    summary = gpu.transfer_summary()
    assert summary["device_major_cycles"] == 3
    assert summary["h2d_bytes_total"] - summary["h2d_bytes_setup"] == 3 * img.size * 4


@pytest.mark.gpu
def test_select_device_one_rank_per_gpu(monkeypatch):
    _need_gpu()
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    monkeypatch.setenv("SLURM_LOCALID", str(n + 0))
    assert rgpu.select_device() == 0
    assert cupy.cuda.Device().id == 0
