"""The synthetic set-up of Pratley & McEwen (2019), section 5, planned without launching
ranks (scripts/bench_scaling.py's load-balance figures at 2 to 1024 ranks)."""

from __future__ import annotations

import math

import numpy as np

from radimg.parallel.plan_model import DEFAULT_NBINS, gaussian_tile_prob, largest_remainder, plan

__all__ = ["paper_setup", "paper_w_histogram", "paper_plan"]


def paper_setup() -> dict:
    """The synthetic set-up of Pratley & McEwen (2019), section 5.

    2e9 samples, 1024^2 pixels of 90 arcsec (25.6 deg field), Kaiser-Bessel ``J_min = 4``,
    w Gaussian with sigma 200 wavelengths constrained to +-600 (modelled as truncation),
    u and v Gaussian with sigma pi/3 "radians", i.e. a third of the unpadded grid's half
    width (u = +-pi at the grid's Nyquist edge ``1 / (2 cell)``). Double precision as in
    PURIFY; padding factor 2.
    """
    return {
        "n_samples": 2_000_000_000,
        "npix": 1024,
        "cell_arcsec": 90.0,
        "J_min": 4,
        "w_sigma": 200.0,
        "w_clip": 600.0,
        "uv_sigma_frac": 1.0 / 3.0,
        "precision": "double",
        "oversampling": 2.0,
    }


def paper_w_histogram(nbins: int = DEFAULT_NBINS, setup: dict | None = None):
    """Histogram of reflected ``|w|`` for the paper set-up (truncated Gaussian), exact counts.

    Returns
    -------
    edges : ndarray (nbins + 1,) float64, wavelengths, over ``[0, w_clip]``
    counts : ndarray (nbins,) int64, summing to ``n_samples``
    """
    from scipy.special import erf

    s = paper_setup() if setup is None else setup
    edges = np.linspace(0.0, s["w_clip"], nbins + 1)
    cdf = erf(edges / (s["w_sigma"] * math.sqrt(2.0)))  # CDF of |w| up to normalisation
    return edges, largest_remainder(np.diff(cdf), int(s["n_samples"]))


def paper_plan(n_ranks: int, nbins: int = DEFAULT_NBINS, tile: int = 64, **kw) -> dict:
    """:func:`radimg.parallel.plan_model.plan` for :func:`paper_setup` (Gaussian uv tile occupancy)."""
    s = paper_setup()
    edges, counts = paper_w_histogram(nbins, s)
    npad = 2 * math.ceil(s["oversampling"] * s["npix"] / 2)
    # sigma = (pi/3) / pi of the unpadded half-width npix/2 cells on the padded grid.
    sigma_cells = s["uv_sigma_frac"] * s["npix"] / 2.0
    kw.setdefault("precision", s["precision"])
    return plan(
        n_ranks=n_ranks,
        npix=s["npix"],
        cell_arcsec=s["cell_arcsec"],
        J_min=s["J_min"],
        w_hist=(edges, counts),
        tile_prob=gaussian_tile_prob(npad, tile, sigma_cells),
        oversampling=s["oversampling"],
        tile=tile,
        **kw,
    )
