"""``wterm.mode: auto`` end to end (issue #13): ``radimg run`` says which mode it chose and
why in one log line, records it in ``/run`` ``operator_json``, makes the same images as the
run that names that mode, the same choice and images at 1 and 2 ranks, and ``radimg plan``
predicts the same choice."""

import json

import h5py
import numpy as np
import pytest
import yaml
from test_pipeline import radimg, small_config

pytestmark = pytest.mark.integration

EPS = 1.0e-5


def _config(tmp, name, **wterm):
    p = small_config(tmp, **{"output.path": str(tmp / f"{name}.h5")})
    cfg = yaml.safe_load(p.read_text())
    cfg["wterm"] = {"epsilon": EPS, **wterm}  # no mode: the default, auto
    q = tmp / f"{name}.yaml"
    q.write_text(yaml.safe_dump(cfg))
    return q


def _product(path):
    with h5py.File(path, "r") as f:
        return {"dirty": f["images/dirty"][...].astype(float),
                "psf": f["images/psf"][...].astype(float),
                "operator": json.loads(f["run"].attrs["operator_json"]),
                "config": yaml.safe_load(f["run"].attrs["config_yaml"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auto")
    out = {}
    cfg = _config(tmp, "auto")
    for ranks in (1, 2):
        p = tmp / f"auto{ranks}.h5"
        r = radimg("run", cfg, "--set", f"output.path={p}", ranks=ranks if ranks > 1 else None)
        assert r.returncode == 0, r.stdout + r.stderr
        out[ranks] = dict(_product(p), log=r.stdout)
    mode = out[1]["operator"]["mode"]
    p = tmp / "explicit.h5"
    r = radimg("run", _config(tmp, "explicit", mode=mode), "--set", f"output.path={p}")
    assert r.returncode == 0, r.stdout + r.stderr
    out["explicit"] = _product(p)
    out["plan"] = json.loads(radimg("plan", cfg, "--ranks", "2", "--json").stdout)
    out["plan_text"] = radimg("plan", cfg, "--ranks", "2").stdout
    return out


def test_log_and_product_say_which_mode_and_why(runs):
    one = runs[1]
    assert one["config"]["wterm"]["mode"] == "auto"
    rec = one["operator"]
    assert rec["requested_mode"] == "auto" and rec["mode"] in ("wstack", "wstack-wproject")
    lines = [ln for ln in one["log"].splitlines() if "w-term: auto ->" in ln]
    assert len(lines) == 1, one["log"]
    assert f"auto -> {rec['mode']} (" in lines[0] and "meets epsilon" in lines[0]
    assert "none misses epsilon" in lines[0]  # a 17 deg field with w: none cannot do
    ch = rec["choice"]
    assert [c["mode"] for c in ch["candidates"]] == ["none", "wstack", "wstack-wproject"]
    (chosen,) = [c for c in ch["candidates"] if c["chosen"]]
    assert chosen["mode"] == rec["mode"] and chosen["meets_epsilon"]
    assert rec["nplanes"] >= 1 and rec["oversampling"] == chosen["oversampling"]
    if rec["mode"] == "wstack":  # the w axis run is the one the chooser costed
        assert rec["w_kernel"] == chosen["wkernel"] in ("es", "cheb")


def test_same_choice_and_images_at_one_and_two_ranks(runs):
    assert runs[2]["operator"]["choice"] == runs[1]["operator"]["choice"]
    for name in ("dirty", "psf"):
        peak = np.abs(runs[1][name]).max()
        assert np.abs(runs[2][name] - runs[1][name]).max() <= 1e-6 * peak, name


def test_auto_builds_the_operator_of_the_named_mode(runs):
    exp = runs["explicit"]
    assert exp["operator"]["requested_mode"] == exp["operator"]["mode"] == runs[1][
        "operator"]["mode"]
    assert exp["operator"]["choice"] is None
    for k in ("oversampling", "oversampling_w", "nplanes", "w_kernel", "small_inversion"):
        assert exp["operator"][k] == runs[1]["operator"][k], k
    for name in ("dirty", "psf"):
        peak = np.abs(exp[name]).max()
        assert np.abs(exp[name] - runs[1][name]).max() <= 1e-6 * peak, name


def test_plan_predicts_the_choice(runs):
    plan = runs["plan"]["wterm"]
    text = runs["plan_text"]
    assert f"w-term mode: auto -> {plan['mode']}:" in text
    assert sum(ln.strip().startswith("* ") for ln in text.splitlines()) == 1
    run = runs[1]["operator"]["choice"]
    assert plan["mode"] == run["mode"]
    assert [c["meets_epsilon"] for c in plan["candidates"]] == [
        c["meets_epsilon"] for c in run["candidates"]]
