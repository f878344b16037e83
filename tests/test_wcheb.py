"""The w-term's Chebyshev expansion (radimg/kernels/wcheb.py) against its definitions:
scipy's Bessel functions, numpy's Chebyshev polynomials and the exponential itself."""

import numpy as np
import pytest
from scipy.special import jv

from radimg.kernels import wcheb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("K", [2, 3, 5, 9, 14])
def test_monomial_table_holds_chebyshev_polynomials(K):
    tab = wcheb.monomial_table(K)
    mu = np.linspace(-1.0, 1.0, 101)
    for p in range(K):
        got = np.polyval(tab[:, p], mu)  # highest power first, as the gridder's Horner loop
        np.testing.assert_allclose(got, np.polynomial.chebyshev.chebval(mu, np.eye(K)[p]),
                                   rtol=0, atol=1e-15 * 4.0**K)  # monomial cancellation


@pytest.mark.parametrize("p", [0, 1, 2, 5, 11])
@pytest.mark.parametrize("z_max", [1e-3, 0.1, 2.0, 6.0])
def test_amplitude_poly_is_the_bessel_function(p, z_max):
    a, h = np.pi * 40.0, z_max / (np.pi * 40.0)
    c = np.linspace(-h, h, 201)
    got = np.polyval(wcheb.amplitude_poly(p, a, h), c)
    ref = (1.0 if p == 0 else 2.0) * jv(p, a * c)
    assert np.abs(got - ref).max() <= 1e-15 * max(1.0, z_max**2)


@pytest.mark.parametrize("z", [1e-3, 0.01, 0.2, 1.0, 3.0])
def test_truncated_expansion_within_its_bound(z):
    """sum_{p<K} eps_p (-i)^p J_p(z) T_p(mu) against exp(-i z mu) for every K the bound
    allows: the error never exceeds tail_bound, and planes_for takes the fewest terms that
    reach epsilon (one fewer does not, by the bound)."""
    mu = np.linspace(-1.0, 1.0, 401)
    exact = np.exp(-1j * z * mu)
    for K in range(2, 15):
        terms = [(1.0 if p == 0 else 2.0) * (-1j) ** p * jv(p, z)
                 * np.polynomial.chebyshev.chebval(mu, np.eye(K)[p]) for p in range(K)]
        err = np.abs(np.sum(terms, axis=0) - exact).max()
        assert err <= wcheb.tail_bound(K, z) * (1 + 1e-9) + 1e-15
    for eps in (1e-3, 1e-5, 1e-8):
        K = wcheb.planes_for(eps, z)
        assert K is not None and wcheb.tail_bound(K, z) <= eps
        assert K == 2 or wcheb.tail_bound(K - 1, z) > eps
    assert np.conj(wcheb.rotation(3)) == (-1j) ** 3


def test_planes_for_gives_up_where_es_planes_are_cheaper():
    assert wcheb.planes_for(1e-5, 50.0) is None
    assert wcheb.tail_bound(3, 10.0) == np.inf
