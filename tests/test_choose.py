"""``wterm.mode: auto`` (radimg/ops/choose.py): what the chooser decides on synthetic cases,
that the mode it picks meets epsilon against the direct DFT (tests/reference.py), and that
``radimg plan`` shows the table."""

import math

import numpy as np
import pytest
from reference import C_LIGHT, dft_dirty, dft_predict

from radimg.ops import choose as CH
from radimg.ops.operator import make_operator
from radimg.ops.resample import small_inversion
from radimg.parallel.choose import summarize

pytestmark = pytest.mark.unit

FREQ = np.array([1.0e8, 1.2e8])


def synth(fov_deg, npix, wmax, nrow=1500, seed=3, umax_frac=0.4):
    """Random uvw (metres) inside the uv grid of ``npix`` pixels over ``fov_deg``, |w| <=
    ``wmax`` wavelengths at the highest frequency; cell in radians."""
    rng = np.random.default_rng(seed)
    cell = math.radians(fov_deg) / npix
    lam = C_LIGHT / FREQ.max()
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-umax_frac / cell, umax_frac / cell, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-wmax, wmax, nrow) * lam
    return uvw, cell


def choice_for(uvw, npix, cell, eps, precision="double", **kw):
    valid = np.ones((uvw.shape[0], FREQ.size), bool)
    s = summarize(uvw, FREQ, valid, npix, npix, cell, cell)
    return CH.choose_wterm(s, npix, npix, cell, cell, eps, precision=precision, **kw)


def build(choice, uvw, npix, cell, eps, precision="double", mode=None):
    """The chosen (or ``mode``'s) operator as the pipeline builds it (small inversion)."""
    kw = CH.WtermChoice(mode or choice.mode, choice.candidates, eps).operator_kwargs()
    m = kw["mode"]
    return small_inversion(
        lambda nx, ny, c: make_operator(uvw, FREQ, nx, ny, c, epsilon=eps, precision=precision,
                                        **kw),
        uvw, FREQ, None, npix, npix, cell, epsilon=eps, mode=m)


def errors(op, uvw, npix, cell, seed=5):
    """(hdot, dot) max error relative to the peak against the direct DFT, on the whole
    image, for a sky with a source in the corner (largest 1 - n)."""
    rng = np.random.default_rng(seed)
    vis = rng.normal(size=(uvw.shape[0], FREQ.size)) + 1j * rng.normal(size=(uvw.shape[0],
                                                                            FREQ.size))
    ref = dft_dirty(uvw, FREQ, vis, None, npix, npix, cell)
    got = np.asarray(op.hdot(vis))
    e_h = np.abs(got - ref).max() / np.abs(ref).max()
    img = np.zeros((npix, npix))
    img[0, 0] = 1.0
    img[npix // 2, npix // 2] = 0.7
    img[rng.integers(0, npix, 5), rng.integers(0, npix, 5)] = rng.uniform(0.2, 0.5, 5)
    vref = dft_predict(uvw, FREQ, img, cell)
    e_d = np.abs(op.dot(img) - vref).max() / np.abs(vref).max()
    return e_h, e_d


def test_none_error_bound_is_the_phase_bound():
    npix, cell, wmax = 100, math.radians(5.0) / 100, 40.0
    lx = (npix // 2) * cell
    n = math.sqrt(1 - 2 * lx * lx)
    want = 2 * math.pi * wmax * (1 - n)  # no 1/n: a unit source is 1 anywhere
    assert CH.none_error_bound(wmax, npix, npix, cell, cell) == pytest.approx(want, rel=1e-9)
    assert CH.none_error_bound(0.0, npix, npix, cell, cell) == 0.0


def test_coplanar_picks_none():
    uvw, cell = synth(10.0, 64, 0.0)
    ch = choice_for(uvw, 64, cell, 1e-5)
    assert ch.mode == "none"
    c = {x.mode: x for x in ch.candidates}
    assert c["none"].meets_epsilon and c["none"].error_bound == 0.0
    assert c["none"].predicted_s < c["wstack"].predicted_s
    assert ch.reason.startswith("predicted") and "none" not in ch.reason.split(";")[1:]


def test_wide_field_with_w_picks_a_w_mode():
    uvw, cell = synth(20.0, 64, 200.0)
    ch = choice_for(uvw, 64, cell, 1e-5)
    assert ch.mode in ("wstack", "wstack-wproject")
    none = ch.candidates[0]
    assert none.mode == "none" and not none.meets_epsilon and none.error_bound > 1.0
    assert "none misses epsilon" in ch.reason
    # the table and the one-line log say the same
    text = "\n".join(CH.choice_table(ch))
    assert text.count("\n* ") + text.startswith("*") == 1 and ch.mode in ch.log_line()


@pytest.mark.parametrize(
    "fov, npix, wmax, eps, expect",
    [
        (10.0, 64, 0.0, 1e-5, "none"),  # coplanar
        (1.0, 64, 1.0, 1e-3, "none"),  # near-coplanar, narrow: bound ~2.4e-4 <= 5e-4
        (20.0, 64, 200.0, 1e-5, None),  # wide field: a w mode
    ],
)
def test_the_chosen_mode_meets_epsilon_against_the_dft(fov, npix, wmax, eps, expect):
    uvw, cell = synth(fov, npix, wmax)
    ch = choice_for(uvw, npix, cell, eps)
    if expect is not None:
        assert ch.mode == expect
    else:
        assert ch.mode != "none"
    e_h, e_d = errors(build(ch, uvw, npix, cell, eps), uvw, npix, cell)
    assert e_h <= eps and e_d <= eps, (ch.mode, e_h, e_d)
    none = ch.candidates[0]
    if none.meets_epsilon:
        assert none.error_bound <= CH.NONE_SHARE * eps


def test_rejecting_none_matters():
    """Where the chooser rejects ``none``, ``none`` really misses epsilon (so the oracle
    test above would fail had it been picked), and its measured error stays within the
    bound where it is accepted."""
    uvw, cell = synth(20.0, 64, 200.0)
    ch = choice_for(uvw, 64, cell, 1e-5)
    e_h, e_d = errors(build(ch, uvw, 64, cell, 1e-5, mode="none"), uvw, 64, cell)
    assert max(e_h, e_d) > 1e-3
    assert max(e_h, e_d) <= ch.candidates[0].error_bound + 1e-5
    uvw, cell = synth(1.0, 64, 1.0)
    ch = choice_for(uvw, 64, cell, 1e-3)
    e_h, e_d = errors(build(ch, uvw, 64, cell, 1e-3, mode="none"), uvw, 64, cell)
    assert max(e_h, e_d) <= ch.candidates[0].error_bound + 1e-5


def test_single_precision_choice_meets_epsilon():
    uvw, cell = synth(20.0, 64, 200.0)
    ch = choice_for(uvw, 64, cell, 1e-4, precision="single")
    e_h, e_d = errors(build(ch, uvw, 64, cell, 1e-4, precision="single"), uvw, 64, cell)
    assert e_h <= 1e-4 and e_d <= 1e-4, (ch.mode, e_h, e_d)


def test_decision_follows_the_calibrated_cost(monkeypatch):
    uvw, cell = synth(15.0, 64, 200.0)
    cal = {k: dict(v) for k, v in CH.CALIBRATION.items()}
    for cheap, dear in (("wstack", "wstack-wproject"), ("wstack-wproject", "wstack")):
        c2 = {k: dict(v) for k, v in cal.items()}
        c2[cheap] = {"planes": 1e-3, "kernels": 1e-3}
        c2[dear] = {"planes": 1e3, "kernels": 1e3}
        monkeypatch.setattr(CH, "CALIBRATION", c2)
        ch = choice_for(uvw, 64, cell, 1e-5)
        assert ch.mode == cheap
        ok = [c for c in ch.candidates if c.meets_epsilon]
        assert ch.chosen.predicted_s == min(c.predicted_s for c in ok)


def test_wproject_not_counted_on_beyond_its_measured_field():
    """Beyond its measured field auto neither takes nor costs wstack-wproject (its stack
    choice is set-up time spent on a candidate that cannot win); asked for explicitly, it
    is costed all the same."""
    uvw, cell = synth(36.0, 64, 100.0)
    ch = choice_for(uvw, 64, cell, 1e-5)
    wp = [c for c in ch.candidates if c.mode == "wstack-wproject"][0]
    assert not wp.meets_epsilon and "wider" in wp.note and ch.mode == "wstack"
    assert wp.note.startswith("not costed") and wp.grid is None
    assert "wstack-wproject not costed" in ch.reason
    only = choice_for(uvw, 64, cell, 1e-5, modes=("wstack-wproject",)).chosen
    assert only.grid is not None and math.isfinite(only.predicted_s)
    assert not only.meets_epsilon and "wider" in only.note
    uvw, cell = synth(20.0, 64, 100.0)
    wp = [c for c in choice_for(uvw, 64, cell, 1e-5).candidates
          if c.mode == "wstack-wproject"][0]
    assert wp.meets_epsilon


def test_no_mode_meets_epsilon_is_a_config_error():
    from radimg.config import ConfigError

    uvw, cell = synth(36.0, 64, 100.0)
    with pytest.raises(ConfigError, match="wterm.epsilon"):
        choice_for(uvw, 64, cell, 1e-5, modes=("none", "wstack-wproject"))


def test_explicit_mode_is_kept_and_costed():
    uvw, cell = synth(20.0, 64, 200.0)
    ch = choice_for(uvw, 64, cell, 1e-5, modes=("none",), requested="none")
    assert ch.mode == "none" and not ch.chosen.meets_epsilon
    assert "as configured" in ch.reason and len(ch.candidates) == 1


def test_operator_kwargs():
    uvw, cell = synth(20.0, 64, 200.0)
    ch = choice_for(uvw, 64, cell, 1e-5)
    by = {c.mode: c for c in ch.candidates}
    kw = CH.WtermChoice("none", ch.candidates, 1e-5).operator_kwargs()
    assert kw == {"mode": "none", "oversampling": by["none"].oversampling, "nstacks": "auto"}
    kw = CH.WtermChoice("wstack", ch.candidates, 1e-5).operator_kwargs("auto", "auto")
    assert kw == {"mode": "wstack", "oversampling": "auto", "nstacks": "auto"}
    kw = CH.WtermChoice("wstack-wproject", ch.candidates, 1e-5).operator_kwargs()
    assert kw["nstacks"] == by["wstack-wproject"].nplanes and kw["oversampling"] == 2.0
    # the wstack geometry the chooser costs is the one the operator builds from "auto"
    op = make_operator(uvw, FREQ, 64, 64, cell, epsilon=1e-5, mode="wstack",
                       oversampling="auto", precision="double")
    assert (op.spec.nplanes, op.oversampling, op.oversampling_w) == (
        by["wstack"].nplanes, by["wstack"].oversampling, by["wstack"].oversampling_w)


def test_summary_from_wavelengths_matches_summarize():
    uvw, cell = synth(20.0, 64, 200.0)
    valid = np.ones((uvw.shape[0], FREQ.size), bool)
    a = summarize(uvw, FREQ, valid, 64, 64, cell, cell)
    lam = FREQ / C_LIGHT
    u, v, w = ((uvw[:, i:i + 1] * lam[None, :]).ravel() for i in range(3))
    b = CH.summary_from_wavelengths(u, v, w, u.size, 64, 64, cell, cell)
    assert a.nsel == b.nsel
    assert a.wmax == pytest.approx(b.wmax, rel=1e-12)
    np.testing.assert_allclose(a.fmax, b.fmax, rtol=1e-12)
    assert CH.choose_wterm(a, 64, 64, cell, cell, 1e-5).mode == \
        CH.choose_wterm(b, 64, 64, cell, cell, 1e-5).mode


# ---- radimg plan -------------------------------------------------------------------------


def _plan_cfg(tmp_path, mode="auto"):
    import yaml
    from small_sim import small_observation

    from radimg.config import resolve

    cfg = {
        "input": {"simulate": True, "ms": str(tmp_path / "sim.ms")},
        "simulate": small_observation([{"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 1.0}]),
        "image": {"npix": 256, "cell_arcsec": 240.0, "weighting": "natural"},
        "wterm": {"epsilon": 1.0e-5},
        "gridder": {"precision": "double", "nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp_path / "out.h5")},
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    cfg = resolve(str(p), [])
    cfg["wterm"]["mode"] = mode  # (the config's own default is tested in test_config)
    return cfg


def test_plan_shows_the_choice_table(tmp_path):
    from radimg.cli import format_plan
    from radimg.parallel.plan import plan_from_config

    res = plan_from_config(_plan_cfg(tmp_path), 2)
    wt = res["wterm"]
    assert [c["mode"] for c in wt["candidates"]] == list(CH.MODES)
    chosen = [c for c in wt["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["mode"] == wt["mode"] != "none"
    # the plan models the mode it chose
    assert res["geometry"]["support_model"] == (
        "tables" if wt["mode"] == "wstack-wproject" else "eq8")
    out = format_plan(res, 2)
    assert f"w-term mode: auto -> {wt['mode']}" in out
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(("*", "none", "wstack"))]
    assert sum(ln.strip().startswith("*") for ln in rows) == 1
    for mode in CH.MODES:
        assert any(mode in ln and "predicted" not in ln for ln in rows), mode
    assert "predicted seconds of one dot + one hdot" in out


def test_plan_of_an_explicit_mode(tmp_path):
    from radimg.cli import format_plan
    from radimg.parallel.plan import plan_from_config

    res = plan_from_config(_plan_cfg(tmp_path, "none"), 1)
    (c,) = res["wterm"]["candidates"]
    assert c["mode"] == "none" and c["chosen"] and not c["meets_epsilon"]
    assert "w-term mode: none (as configured)" in format_plan(res, 1)
