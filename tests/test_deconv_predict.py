"""The major cycle's component predict (radimg.deconv.predict) against the brute-force DFT
of tests/reference.py and against the gridded operator it stands in for; the choice between
the two follows measured times and is the operator's whenever nothing is known."""

import numpy as np
import pytest
from reference import C_LIGHT, dft_predict

from radimg.deconv.predict import (
    MajorPredict,
    component_predict,
    component_predict_seconds,
    gridded_predict_seconds,
    model_components,
)
from radimg.ops.operator import make_operator

pytestmark = pytest.mark.unit

NPIX = 128
CELL = np.deg2rad(10.0 / 60.0)  # 128 x 10' = 21 deg: w-terms and 1/n matter


def _uvw(nrow, freq, seed=3):
    rng = np.random.default_rng(seed)
    lam = C_LIGHT / np.max(freq)
    uvmax = 0.45 / CELL
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-uvmax, uvmax, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-300.0, 300.0, nrow) * lam
    return uvw


def _model(ncomp, seed=4):
    rng = np.random.default_rng(seed)
    model = np.zeros((NPIX, NPIX))
    iy = rng.integers(0, NPIX, ncomp)
    ix = rng.integers(0, NPIX, ncomp)
    model[iy, ix] = rng.normal(size=ncomp)
    model[0, 0] = 0.7  # the corners, far from the phase centre
    model[NPIX - 1, NPIX - 1] = -0.4
    return model


@pytest.mark.parametrize(
    "freq",
    [
        np.array([1.5e8]),  # one channel
        1.7e8 + 3.2e6 * np.arange(10),  # uniform: the phasor recurrence over channels
        np.array([1.0e8, 1.1e8, 1.35e8, 1.4e8]),  # uneven: one sine/cosine per channel
    ],
    ids=["one", "uniform", "uneven"],
)
def test_component_predict_is_the_direct_fourier_transform(freq):
    uvw = _uvw(400, freq)
    model = _model(40)
    got = component_predict(uvw, freq, model, CELL)
    ref = dft_predict(uvw, freq, model, CELL)
    assert got.shape == ref.shape and got.dtype == np.complex128
    assert np.abs(got - ref).max() <= 1e-11 * np.abs(ref).max()
    single = component_predict(uvw, freq, model, CELL, dtype=np.complex64, nthreads=2)
    assert single.dtype == np.complex64
    assert np.abs(single - ref).max() <= 1e-6 * np.abs(ref).max()


def test_component_predict_of_an_empty_model_is_zero():
    freq = np.array([1.5e8, 1.6e8])
    got = component_predict(_uvw(10, freq), freq, np.zeros((NPIX, NPIX)), CELL)
    assert got.shape == (10, 2) and not got.any()
    l, m, nm1, amp = model_components(np.zeros((4, 4)), CELL)  # noqa: E741
    assert l.size == m.size == nm1.size == amp.size == 0


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_component_predict_equals_the_gridded_forward_operator(mode):
    """The operator's ``dot`` (accurate to epsilon) and the DFT give the same visibilities:
    same signs, pixel directions and 1/n."""
    freq = 1.5e8 + 2.0e6 * np.arange(3)
    uvw = _uvw(600, freq, seed=9)
    model = _model(25, seed=10)
    op = make_operator(uvw, freq, NPIX, NPIX, CELL, mode=mode, epsilon=1e-6)
    want = op.dot(model)
    got = component_predict(uvw, freq, model, CELL)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


class _Op:
    """A stand-in operator: ``dot`` is the reference DFT and counts its calls; ``stats`` as
    the distributed operators report them."""

    def __init__(self, uvw, freq, stats=None):
        self.uvw, self.freq, self.calls = uvw, freq, 0
        if stats is not None:
            self.stats = stats

    def dot(self, image):
        self.calls += 1
        return dft_predict(self.uvw, self.freq, image, CELL)


# as the demo's distributed wstack operator reports them at one rank
WSTACK_STATS = {"nplanes": 11, "padded_grid": (2048, 2048), "support": 6, "support_w": 5,
                "nsamples": 1_918_208}


def test_gridded_predict_seconds_follows_the_operators_cost_models():
    """The wstack formula of radimg.ops.operator (planes x FFT, copies, w-screens + kernel
    cells of the samples) and the wproject one of radimg.ops.wproject; None without the
    figures."""
    from radimg.ops import geometry as wo
    from radimg.ops import wproject as wp

    p = 2048.0 * 2048.0
    want = 11 * (wo.COST_FFT * p * np.log2(p) + (wo.COST_CELL + wo.COST_PIXEL / 4) * p)
    want += wo.COST_UPDATE * 1_918_208 * 36 * 5
    assert gridded_predict_seconds(_Op(None, None, WSTACK_STATS)) == pytest.approx(want)
    wpst = {"nstacks": 8, "padded": (2048, 2048), "W": 7, "nsamples": 72_594}
    want = 8 * p * (wp._C_FFT * np.log2(p) + wp._C_PIX) + wp._C_CELL * 72_594 * 49
    assert gridded_predict_seconds(_Op(None, None, wpst)) == pytest.approx(want)
    assert gridded_predict_seconds(_Op(None, None)) is None
    assert gridded_predict_seconds(_Op(None, None, {"nsamples": 3})) is None


def test_major_predict_chooses_by_the_cost_models_and_gives_the_same_visibilities():
    freq = 1.5e8 + 1.0e6 * np.arange(4)
    uvw = _uvw(300, freq)
    model = _model(30)
    ncomp = int(np.count_nonzero(model))
    # an operator without cost figures: always its own dot
    op = _Op(uvw, freq)
    mp = MajorPredict(op, CELL, dtype=np.complex128)
    ref = mp(model)
    assert op.calls == 1 and mp.used == {"dft": 0, "dot": 1} and not mp.use_dft(1)
    # the demo's operator (1.9 M samples, 11 planes of 2048^2, ~2 s a dot) for 300 rows:
    # the DFT of a few hundred components is far cheaper
    op = _Op(uvw, freq, WSTACK_STATS)
    mp = MajorPredict(op, CELL, dtype=np.complex128)
    assert mp.use_dft(ncomp)
    got = mp(model)
    assert op.calls == 0 and mp.used == {"dft": 1, "dot": 0}
    assert np.abs(got - ref).max() <= 1e-11 * np.abs(ref).max()
    # the switch point: DFT cost (rows x components) against the operator's
    t_dot = mp.t_dot
    n_even = int(0.8 * t_dot / component_predict_seconds(300, 4, 1))
    assert mp.use_dft(n_even - 1) and not mp.use_dft(n_even + 1)
    mp.uniform = False  # uneven channels: one sine/cosine per channel
    assert not mp.use_dft(int(0.8 * t_dot / component_predict_seconds(300, 4, 1, False)) + 1)
    assert MajorPredict(op, CELL)(model).dtype == np.complex64
    # deconvolution.predict: dft always, operator never, whatever the cost models say
    assert MajorPredict(_Op(uvw, freq), CELL, mode="dft").use_dft(10**9)
    assert not MajorPredict(op, CELL, mode="operator").use_dft(1)
    with pytest.raises(ValueError, match="auto, dft or operator"):
        MajorPredict(op, CELL, mode="fast")


@pytest.mark.parametrize("name", ["_uniform_kernel", "_general_kernel"])
def test_dft_kernels_vectorise(name):
    """The row-block DFT kernels evaluate the phases and accumulate in vector arithmetic
    (<N x double>, N >= 4) over each block's rows: compiled here without threads (a
    ``prange`` body is a separate function ``inspect_llvm`` does not show), same results."""
    import numba
    from test_gridder import _vector_ops

    from radimg.deconv import predict

    fn = getattr(predict, name)
    serial = numba.njit(cache=False, error_model="numpy")(fn.py_func)
    freq = 1.5e8 + 1.0e6 * np.arange(3)
    uvw = _uvw(70, freq)  # one full block of rows and a partial one
    l, m, nm1, amp = model_components(_model(12), CELL)  # noqa: E741
    scale = (freq[0] / C_LIGHT, (freq[1] - freq[0]) / C_LIGHT) if name == "_uniform_kernel" \
        else (freq / C_LIGHT,)
    outs = [np.empty((70, 3)) for _ in range(4)]
    serial(uvw, *scale, l, m, nm1, amp, outs[0], outs[1])
    fn(uvw, *scale, l, m, nm1, amp, outs[2], outs[3])
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
    ops = _vector_ops(serial.inspect_llvm(serial.signatures[0]))
    assert ("fmul", 8, "double") in ops or ("fmul", 4, "double") in ops, ops
    assert any(op == "fadd" for op, _, _ in ops), ops
