"""ES kernel: parameters meet epsilon, correction equals a brute-force Fourier transform."""

import numpy as np
import pytest

from radimg.kernels.es import es_correction, es_error, es_kernel, es_parameters

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 1e-7])
@pytest.mark.parametrize("sigma", [1.5, 2.0])
def test_parameters_meet_epsilon(eps, sigma):
    W, beta = es_parameters(eps, sigma)
    # Re-measure on a finer grid than the search used.
    assert es_error(W, beta, sigma, nx=129, nt=97) <= 1.05 * eps
    # Smallest: one cell less support cannot reach eps whatever beta is.
    if W > 2:
        betas = np.linspace(1.0 * (W - 1), 3.2 * (W - 1), 45)
        assert min(es_error(W - 1, b, sigma, nx=33, nt=24) for b in betas) > eps


def test_parameters_monotone():
    Ws = [es_parameters(e)[0] for e in (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)]
    assert Ws == sorted(Ws)
    with pytest.raises(ValueError):
        es_parameters(1e-20)


def test_kernel_shape():
    W, beta = es_parameters(1e-5)
    x = np.linspace(-1.2, 1.2, 25)
    k = es_kernel(x, W, beta)
    assert k[np.abs(x) > 1].max() == 0.0
    assert es_kernel(0.0, W, beta) == 1.0
    np.testing.assert_array_equal(k, es_kernel(-x, W, beta))


@pytest.mark.parametrize("W,beta", [(4, 8.8), (7, 16.1), (12, 27.5)])
def test_correction_vs_bruteforce(W, beta):
    # Brute force: midpoint rule on a very fine grid of the kernel in grid-cell offsets,
    # with the square-root edge resolved by sheer sample count.
    ny = 400_001
    y = (np.arange(ny) + 0.5) / ny * W - 0.5 * W
    k = es_kernel(y / (0.5 * W), W, beta)
    dy = W / ny
    nu = np.linspace(-0.3, 0.3, 13)
    ref = np.array([(k * np.cos(2 * np.pi * f * y)).sum() * dy for f in nu])
    got = es_correction(nu, W, beta)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * ref.max())
    assert isinstance(es_correction(0.1, W, beta), float)
