#!/usr/bin/env python
"""The reconstruction SNR of Pratley et al. (2018) / Pratley & McEwen (2019) against the
true sky image.

    SNR = 20 log10( ||x||_2 / ||x - x_hat||_2 )   dB

- ADMM (or any model in Jy/pixel): ``x`` the true image, ``x_hat`` the product's
  ``/images/model`` (the paper's metric as PURIFY computes it);
- CLEAN: ``x`` the true image convolved with the product's restoring beam (Jy/beam),
  ``x_hat`` the product's ``/images/restored`` (``--restored``; CLEAN's model is a set of
  components, not an estimate of the sky's brightness per pixel).

Both are printed for every product (``model`` and ``restored``), so ADMM and CLEAN can be
compared on one problem with either yardstick.

    python scripts/paper_snr.py out/paper/admm.h5 --truth out/paper/galaxy_1024.fits [--json F]

The true image must be on the product's pixel grid (same WCS, as scripts/make_galaxy.py
writes it for the paper configs); its orientation is matched through both WCSs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np


def snr_db(truth, estimate):
    """20 log10(||truth|| / ||truth - estimate||), float (inf when equal)."""
    truth = np.asarray(truth, dtype=np.float64)
    err = float(np.linalg.norm(truth - np.asarray(estimate, dtype=np.float64)))
    return math.inf if err == 0 else 20.0 * math.log10(float(np.linalg.norm(truth)) / err)


def truth_on_grid(truth_path, wcs_info, shape):
    """The true image (Jy/pixel) as an array indexed like the product's images; ValueError
    when its pixels are not the product's."""
    from radimg.io.product import image_wcs
    from radimg.sim.sky_image import load_sky_image

    sky = load_sky_image(truth_path)
    if sky.flux.shape != tuple(shape):
        raise ValueError(f"{truth_path}: {sky.flux.shape} pixels, the product has {shape}")
    pw = image_wcs(wcs_info)
    ny, nx = shape
    probe = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx // 3, ny // 5]], dtype=float)
    world = pw.pixel_to_world_values(probe[:, 0], probe[:, 1])
    tx, ty = sky.wcs.world_to_pixel_values(world[0], world[1])
    img = sky.flux
    # the product's pixel (x, y) is the truth's (tx, ty): identity or flips only
    if np.allclose(tx, nx - 1 - probe[:, 0], atol=1e-3):
        img = img[:, ::-1]
        tx = nx - 1 - tx
    if np.allclose(ty, ny - 1 - probe[:, 1], atol=1e-3):
        img = img[::-1, :]
        ty = ny - 1 - ty
    if not (np.allclose(tx, probe[:, 0], atol=1e-3) and np.allclose(ty, probe[:, 1], atol=1e-3)):
        raise ValueError(f"{truth_path}: its pixels are not the product's (compare the WCSs)")
    return np.ascontiguousarray(img)


def product_snr(product, truth_path):
    """dict: ``model_snr_db`` (model vs truth), ``restored_snr_db`` (restored vs truth
    convolved with the restoring beam), fluxes and the beam."""
    from radimg.deconv.image import restore
    from radimg.io.product import read_product

    p = read_product(product, images=["model", "restored"])
    w = p["wcs"]
    truth = truth_on_grid(truth_path, w, p["shape"])
    model = p["images"]["model"].astype(np.float64)
    restored = p["images"]["restored"].astype(np.float64)
    cell = abs(float(w["cdelt_deg"][1]))
    beam = (float(w["bmaj_deg"]), float(w["bmin_deg"]), float(w["bpa_deg"]))
    truth_b = restore(truth, np.zeros_like(truth), beam, cell)
    dec = json.loads(p["run"].get("deconvolution_json", "{}") or "{}")
    return {
        "product": str(product),
        "truth": str(truth_path),
        "n_ranks": int(p["run"].get("n_ranks", 0)),
        "deconvolution": dec,
        "model_snr_db": snr_db(truth, model),
        "restored_snr_db": snr_db(truth_b, restored),
        "truth_flux_jy": float(truth.sum()),
        "model_flux_jy": float(model.sum()),
        "beam_arcsec": [beam[0] * 3600, beam[1] * 3600, beam[2]],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("products", nargs="+", help="radimg products (.h5)")
    ap.add_argument("--truth", required=True, help="the true sky image (FITS/HDF5, Jy/pixel)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    rows = [product_snr(p, a.truth) for p in a.products]
    for r in rows:
        alg = r["deconvolution"].get("algorithm", "?")
        print(f"{r['product']}: {alg}, {r['n_ranks']} ranks: model vs truth "
              f"{r['model_snr_db']:.2f} dB, restored vs truth * beam {r['restored_snr_db']:.2f} dB "
              f"(model {r['model_flux_jy']:.4g} Jy of {r['truth_flux_jy']:.4g})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
