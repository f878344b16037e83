"""``stop_check`` (the hook a SIGTERM handler sets): CLEAN's major loop and ADMM stop after
the cycle / checkpoint interval where it first returns True, flag the state as stopped and
interrupted, leave a checkpoint behind, and a run continued from that state ends exactly
where an uninterrupted one does."""

import copy

import numpy as np
import pytest
from test_deconv import COMPS, _conv, _dirty, _psf

from radimg.deconv.admm import admm
from radimg.deconv.major import cotton_schwab

pytestmark = pytest.mark.unit

PARAMS = {
    "niter": 5000,
    "gain": 0.1,
    "mgain": 0.5,
    "threshold_jy": 1e-4,
    "auto_threshold": 0.0,
    "auto_mask": 0.0,
    "nmajor": 20,
    "minor": "hogbom",
    "scales_pix": [0],
    "scale_bias": 0.6,
    "psf_patch_pix": 16,
    "checkpoint_every": 0,
    "stop_after_major": 0,
}


class After:
    """stop_check that answers True from its ``k``-th call on."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.k


def _clean(state=None, residual=None, **kw):
    psf = _psf()
    sky, dirty = _dirty(COMPS, psf)

    def residual_of(model):
        return dirty - _conv(model, psf)

    if residual is None:
        residual = dirty.copy()
    return cotton_schwab(residual_of, residual, psf, PARAMS, state=state, **kw), residual_of


def test_clean_stop_check_stops_after_cycle_two_and_resumes_exactly():
    (ref_model, ref_res, ref), _ = _clean()
    assert ref["done"] and ref["nmajor"] > 3 and not ref["interrupted"]

    saved = []
    stop = After(2)
    (model, res, st), residual_of = _clean(
        stop_check=stop, on_checkpoint=lambda s: saved.append(copy.deepcopy(s))
    )
    assert stop.calls == 2
    assert st["nmajor"] == 2 and st["stopped"] and st["interrupted"] and not st["done"]
    # checkpoint_every is 0, so the interrupted cycle wrote the one checkpoint
    assert [s["nmajor"] for s in saved] == [2]
    assert np.array_equal(saved[0]["model"], model)

    ck = saved[0]
    state = {k: ck[k] for k in ("model", "nmajor", "iters", "auto_mask", "done", "reached")}
    (m2, r2, st2), _ = _clean(state=state, residual=residual_of(state["model"]))
    assert st2["done"] and not st2["stopped"] and not st2["interrupted"]
    assert st2["nmajor"] == ref["nmajor"] and st2["iters"] == ref["iters"]
    assert np.array_equal(m2, ref_model)
    assert np.array_equal(r2, ref_res)


def test_clean_stop_check_never_fires():
    stop = After(10**9)
    (_, _, st), _ = _clean(stop_check=stop)
    assert st["done"] and not st["interrupted"] and stop.calls == st["nmajor"]


def _admm_problem():
    rng = np.random.default_rng(5)
    shape = (16, 16)
    a = (rng.standard_normal((400, 256)) + 1j * rng.standard_normal((400, 256))) / 20
    xt = np.zeros(shape)
    xt[4, 5], xt[10, 11], xt[8, 3] = 1.0, 0.5, 0.7
    y = (a @ xt.ravel()).reshape(400, 1) + 0.01 * rng.standard_normal((400, 1))

    def fwd(x):
        return (a @ x.ravel()).reshape(400, 1)

    def adj(v):
        return (a.conj().T @ v.ravel()).real.reshape(shape)

    lam = float(np.linalg.norm(a, 2) ** 2)
    return fwd, adj, y, shape, lam


def test_admm_stop_check_stops_at_checkpoint_interval_and_resumes_exactly():
    fwd, adj, y, shape, lam = _admm_problem()
    kw = dict(eps=0.2, op_norm=lam, niter=12, tol=1e-9, dual_iters=5, checkpoint_every=2)
    ref_x, ref = admm(fwd, adj, y, shape, **kw)
    assert ref["it"] == 12 and not ref["interrupted"]

    saved = []
    stop = After(2)
    x, st = admm(
        fwd,
        adj,
        y,
        shape,
        stop_check=stop,
        on_checkpoint=lambda s: saved.append(copy.deepcopy(s)),
        **kw,
    )
    # called after the checkpoints at iterations 2 and 4; fires at the second
    assert stop.calls == 2
    assert st["it"] == 4 and st["stopped"] and st["interrupted"]
    assert [s["it"] for s in saved] == [2, 4]
    x2, st2 = admm(fwd, adj, y, shape, state=copy.deepcopy(saved[-1]), **kw)
    assert st2["it"] == 12 and not st2["interrupted"]
    assert np.array_equal(x2, ref_x)


def test_admm_stop_check_without_checkpoint_interval_writes_one():
    fwd, adj, y, shape, lam = _admm_problem()
    saved = []
    x, st = admm(
        fwd,
        adj,
        y,
        shape,
        eps=0.2,
        op_norm=lam,
        niter=12,
        tol=1e-9,
        dual_iters=5,
        stop_check=After(3),
        on_checkpoint=lambda s: saved.append(s["it"]),
    )
    assert st["it"] == 3 and st["interrupted"] and saved == [3]


def test_read_checkpoint_refuses_a_product_that_is_not_one(tmp_path):
    """A plain product (no checkpoint counters) and a missing file are clear errors."""
    from radimg.deconv.checkpoint import read_checkpoint
    from radimg.io.product import ProductError, make_wcs_info, write_product

    p = tmp_path / "plain.h5"
    write_product(
        p,
        {"model": np.zeros((4, 4))},
        make_wcs_info(4, 4, 1e-4, (0.0, -0.5), 1.5e8),
        {"config_yaml": "", "n_ranks": 1, "timings_json": "{}", "load_balance_json": "{}"},
    )
    with pytest.raises(ValueError, match="not a checkpoint"):
        read_checkpoint(p)
    with pytest.raises(ProductError):
        read_checkpoint(tmp_path / "missing.h5")
