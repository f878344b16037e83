"""Typed config: precedence, every error kind, dump round trip, --set parsing."""

import pathlib

import pytest
import yaml

from radimg import config as C
from radimg.config import ConfigError, resolve

pytestmark = pytest.mark.unit

REPO = pathlib.Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- defaults and dump --------------------------------------------------------------


def test_defaults_have_required_sections_and_keys():
    d = C.defaults()
    assert d["input"] == {
        "ms": "out/demo.ms",
        "datacolumn": "DATA",
        "simulate": False,
        "spw": 0,
        "field": 0,
        "chan_range": None,
        "uv_range_lambda": None,
        "chunk_rows": 100000,
        "autocorrelations": False,
        "lock_wait_s": 60.0,
    }
    assert d["image"]["npix"] == 2048 and d["image"]["npix_y"] is None
    assert d["image"]["cell_arcsec"] == 30.0
    # wterm.mode auto (issue #13): radimg.ops.choose picks the mode, padding and stacks
    assert d["wterm"]["mode"] == "auto" and d["wterm"]["nstacks"] == "auto"
    assert d["wterm"]["oversampling"] == "auto"
    assert d["gridder"] == {
        "device": "cpu",
        "precision": "single",
        "nthreads": "auto",
        "fft": "auto",
    }
    assert d["deconvolution"]["scales_pix"] == [0]
    assert d["output"]["path"] == "out/run.h5" and d["output"]["fits_dir"] is None
    assert d["resources"]["mem_per_rank"] is None
    sim = d["simulate"]
    assert (sim["telescope"], sim["ra_deg"], sim["dec_deg"]) == ("mwa", 0.0, -27.0)
    assert (sim["freq_hz"], sim["chan_width_hz"], sim["nchan"]) == (1.5e8, 1.0e6, 4)
    assert (sim["ha_start_h"], sim["ha_stop_h"], sim["integration_s"]) == (-0.5, 0.5, 20.0)
    assert (sim["noise_jy"], sim["seed"]) == (0.0, 42)
    assert 3 <= len(sim["sources"]) <= 5
    for s in sim["sources"]:
        assert set(s) == set(C.SOURCE_KEYS)
        assert 1.0 <= s["flux_jy"] <= 5.0


def test_defaults_is_a_fresh_copy():
    d = C.defaults()
    d["simulate"]["sources"].clear()
    d["deconvolution"]["scales_pix"].append(4)
    assert len(C.defaults()["simulate"]["sources"]) >= 3
    assert C.defaults()["deconvolution"]["scales_pix"] == [0]


def test_dump_round_trips_to_defaults():
    text = C.dump_default()
    assert yaml.safe_load(text) == C.defaults()
    assert resolve(yaml_text=text) == C.defaults()


def test_dump_has_a_comment_per_key():
    lines = C.dump_default().splitlines()
    for sect, keys in C.SCHEMA.items():
        i = lines.index(f"{sect}:")
        for key in keys:
            j = next(k for k in range(i, len(lines)) if lines[k].startswith(f"  {key}:"))
            assert lines[j - 1].strip().startswith("#"), key


def test_to_yaml_round_trip():
    cfg = resolve(overrides=["image.npix=512", "deconvolution.scales_pix=[0, 4, 16]"])
    assert resolve(yaml_text=C.to_yaml(cfg)) == cfg
    assert C.validate(yaml.safe_load(C.to_yaml(cfg))) == cfg


def test_demo_config_resolves():
    cfg = resolve(REPO / "configs" / "demo.yaml")
    assert cfg["input"]["simulate"] is True and cfg["input"]["ms"] == "out/demo.ms"
    assert cfg["image"]["npix"] == 1024
    fov_deg = cfg["image"]["npix"] * cfg["image"]["cell_arcsec"] / 3600
    assert 20 < fov_deg < 23
    # the demo is a wide field: it must correct the w-term
    assert cfg["wterm"]["mode"] != "none" and cfg["wterm"]["epsilon"] == 1e-4
    assert cfg["gridder"]["precision"] == "single"
    # the demo CLEANs and restores (issue #13: in no more time than its dirty image took)
    assert cfg["deconvolution"]["algorithm"] == "clean"
    assert cfg["deconvolution"]["auto_threshold"] > 0 and 0 < cfg["deconvolution"]["mgain"] < 1
    assert cfg["output"]["path"] == "out/demo.h5" and cfg["output"]["overwrite"] is True
    assert cfg["simulate"]["telescope"] == "mwa"
    # ref_freq_hz omitted in the file: filled from simulate.freq_hz
    assert all(s["ref_freq_hz"] == cfg["simulate"]["freq_hz"] for s in cfg["simulate"]["sources"])


# ---- precedence and --set parsing ---------------------------------------------------


def test_precedence_defaults_file_set(tmp_path):
    p = write(tmp_path, "image:\n  npix: 512\n  cell_arcsec: 10.0\nwterm:\n  epsilon: 1.0e-6\n")
    cfg = resolve(p, ["image.npix=256", "image.npix=128"])
    assert cfg["image"]["npix"] == 128  # last --set wins over earlier --set and the file
    assert cfg["image"]["cell_arcsec"] == 10.0  # file over default
    assert cfg["wterm"]["epsilon"] == 1e-6
    assert cfg["image"]["weighting"] == "briggs"  # default kept


def test_empty_file_and_null_section(tmp_path):
    assert resolve(write(tmp_path, "")) == C.defaults()
    assert resolve(write(tmp_path, "image:\n", "b.yaml")) == C.defaults()


@pytest.mark.parametrize(
    "item, sect, key, expected",
    [
        ("wterm.epsilon=1e-4", "wterm", "epsilon", 1e-4),  # YAML 1.1 reads 1e-4 as a string
        ("wterm.epsilon=1.0e-4", "wterm", "epsilon", 1e-4),
        ("image.cell_arcsec=20", "image", "cell_arcsec", 20.0),
        ("input.chunk_rows=1e5", "input", "chunk_rows", 100000),
        ("output.checkpoint=false", "output", "checkpoint", False),
        ("output.overwrite=yes", "output", "overwrite", True),
        ("output.fits_dir=", "output", "fits_dir", None),
        ("output.fits_dir=null", "output", "fits_dir", None),
        ("output.fits_dir=out/fits", "output", "fits_dir", "out/fits"),
        ("image.npix_y=1024", "image", "npix_y", 1024),
        ("wterm.nstacks=auto", "wterm", "nstacks", "auto"),
        ("wterm.mode=AUTO", "wterm", "mode", "auto"),
        ("wterm.oversampling=auto", "wterm", "oversampling", "auto"),
        ("wterm.oversampling=1.5", "wterm", "oversampling", 1.5),
        ("wterm.nstacks=8", "wterm", "nstacks", 8),
        ("gridder.nthreads=AUTO", "gridder", "nthreads", "auto"),
        ("image.weighting=Uniform", "image", "weighting", "uniform"),
        ("deconvolution.scales_pix=[0, 4, 16]", "deconvolution", "scales_pix", [0, 4, 16]),
        ("deconvolution.scales_pix=8", "deconvolution", "scales_pix", [8]),
        ("resources.mem_per_rank=8GiB", "resources", "mem_per_rank", "8GiB"),
        ("input.ms=a=b.ms", "input", "ms", "a=b.ms"),  # only the first '=' splits
    ],
)
def test_set_values(item, sect, key, expected):
    cfg = resolve(overrides=[item])
    assert cfg[sect][key] == expected
    assert type(cfg[sect][key]) is type(expected)


def test_set_sources_flow_list():
    cfg = resolve(overrides=["simulate.sources=[{ra_deg: 1, dec_deg: -20, flux_jy: 2}]"])
    (src,) = cfg["simulate"]["sources"]
    assert src == {
        "ra_deg": 1.0,
        "dec_deg": -20.0,
        "flux_jy": 2.0,
        "spectral_index": 0.0,
        "ref_freq_hz": 1.5e8,
        "major_arcsec": 0.0,
        "minor_arcsec": 0.0,
        "pa_deg": 0.0,
        "q_jy": 0.0,
        "u_jy": 0.0,
        "v_jy": 0.0,
        "rm_rad_m2": 0.0,
    }


def test_parse_set():
    assert C.parse_set("image.npix=64") == ("image", "npix", 64)
    assert C.parse_set("a.b= [1, 2]") == ("a", "b", [1, 2])
    for bad in ("image.npix", "npix=64", "a.b.c=1", ".npix=3"):
        with pytest.raises(ConfigError, match="section.key=value"):
            C.parse_set(bad)


# ---- errors -------------------------------------------------------------------------


def test_unknown_section_suggests(tmp_path):
    p = write(tmp_path, "input:\n  ms: x.ms\nimgae:\n  npix: 64\n")
    with pytest.raises(ConfigError) as e:
        resolve(p)
    msg = str(e.value)
    assert "'imgae'" in msg and "did you mean 'image'" in msg
    assert str(p) in msg and "line 3" in msg


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(
        ConfigError, match=r"'image\.cel_arcsec'.*did you mean 'image\.cell_arcsec'"
    ):
        resolve(overrides=["image.cel_arcsec=3"])
    # a key that lives in another section
    with pytest.raises(ConfigError, match=r"did you mean 'wterm\.epsilon'"):
        resolve(overrides=["image.epsilon=1e-3"])
    p = write(tmp_path, "gridder:\n  device: cpu\n  precison: double\n")
    with pytest.raises(
        ConfigError, match=r"'gridder\.precison'.*line 3.*did you mean 'gridder\.precision'"
    ):
        resolve(p)
    with pytest.raises(ConfigError, match=r"unknown config section 'zzz'.*valid sections"):
        resolve(overrides=["zzz.a=1"])


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("image.npix=abc", ["'image.npix'", "'abc'", "even integer >= 32"]),
        ("image.npix=1001", ["'image.npix'", "1001", "even integer"]),
        ("image.npix=16", ["'image.npix'", "16", ">= 32"]),
        ("image.npix=true", ["'image.npix'", "True", "integer"]),
        ("image.npix=64.5", ["'image.npix'", "64.5"]),
        ("image.cell_arcsec=0", ["'image.cell_arcsec'", "> 0"]),
        ("image.robust=3", ["'image.robust'", "3", "<= 2"]),
        (
            "image.weighting=brigs",
            ["'image.weighting'", "'brigs'", "natural, uniform, briggs", "did you mean 'briggs'"],
        ),
        ("wterm.mode=wproject", ["'wterm.mode'", "auto, none, wstack, wstack-wproject"]),
        ("wterm.nstacks=0", ["'wterm.nstacks'", '"auto" or an integer >= 1']),
        ("wterm.epsilon=0.1", ["'wterm.epsilon'", "< 0.1"]),
        ("wterm.epsilon=1e-13", ["'wterm.epsilon'", "> 1e-12"]),
        ("wterm.oversampling=1.1", ["'wterm.oversampling'", '"auto" or a number >= 1.2']),
        ("wterm.oversampling=big", ["'wterm.oversampling'", '"auto" or a number']),
        ("gridder.device=tpu", ["'gridder.device'", "'tpu'", "cpu, gpu"]),
        ("deconvolution.gain=0", ["'deconvolution.gain'", "> 0"]),
        ("deconvolution.mgain=1.5", ["'deconvolution.mgain'", "<= 1"]),
        (
            "deconvolution.scales_pix=[0, -1]",
            ["'deconvolution.scales_pix'", "list of integers >= 0"],
        ),
        ("deconvolution.scales_pix=[]", ["'deconvolution.scales_pix'", "non-empty"]),
        ("output.overwrite=maybe", ["'output.overwrite'", "'maybe'", "true or false"]),
        ("output.path=", ["'output.path'", "None", "a path ending in .h5 or .hdf5"]),
        ("resources.mem_per_rank=8 parsecs", ["'resources.mem_per_rank'", "8 parsecs", "8GiB"]),
        ("simulate.nchan=0", ["'simulate.nchan'", ">= 1"]),
        ("simulate.dec_deg=95", ["'simulate.dec_deg'", "<= 90"]),
        (
            "simulate.sources=[{ra_deg: 1, dec_deg: 2, flux: 3}]",
            ["'simulate.sources'", "unknown key 'flux'", "did you mean 'flux_jy'"],
        ),
        ("simulate.sources=[{ra_deg: 1, dec_deg: 2}]", ["'simulate.sources'", "lacks flux_jy"]),
        ("simulate.sources=[{ra_deg: 1, dec_deg: x, flux_jy: 2}]", ["source [0].dec_deg", "'x'"]),
        ("simulate.sources=[5]", ["'simulate.sources'", "source [0] is 5"]),
    ],
)
def test_bad_values_name_key_value_and_form(item, fragments):
    with pytest.raises(ConfigError) as e:
        resolve(overrides=[item])
    msg = str(e.value)
    assert f"--set {item}" in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_bad_value_in_file_names_file_and_line(tmp_path):
    p = write(tmp_path, "# comment\nwterm:\n  mode: wstack\n  epsilon: big\n")
    with pytest.raises(ConfigError) as e:
        resolve(p)
    msg = str(e.value)
    assert f"{p}, line 4" in msg and "'wterm.epsilon'" in msg and "'big'" in msg and "number" in msg


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = write(tmp_path, "image:\n  npix: 64\n  cell_arcsec: [1, 2\nwterm:\n  mode: none\n")
    with pytest.raises(ConfigError) as e:
        resolve(p)
    msg = str(e.value)
    assert "YAML syntax error" in msg and str(p) in msg and "line " in msg
    p2 = write(tmp_path, "image:\n  npix: 64\n   cell_arcsec: 3\n", "b.yaml")
    with pytest.raises(ConfigError, match=r"b\.yaml, line 3"):
        resolve(p2)


def test_structural_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        resolve(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="section 'image'.*must be a mapping"):
        resolve(write(tmp_path, "image: 5\n", "b.yaml"))


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_cross_checks():
    with pytest.raises(ConfigError, match="horizon"):
        resolve(overrides=["image.npix=8192", "image.cell_arcsec=120"])
    with pytest.raises(ConfigError, match="ha_stop_h"):
        resolve(overrides=["simulate.ha_start_h=1", "simulate.ha_stop_h=0.5"])
    with pytest.raises(ConfigError, match=r"'simulate\.telescope'.*did you mean 'mwa'"):
        resolve(overrides=["input.simulate=true", "simulate.telescope=mwaa"])
    # an unknown telescope is only an error when the simulation will run
    assert (
        resolve(overrides=["simulate.telescope=elsewhere.ms"])["simulate"]["telescope"]
        == "elsewhere.ms"
    )
    assert (
        resolve(overrides=["input.simulate=true", "simulate.telescope=VLA"])["simulate"][
            "telescope"
        ]
        == "vla"
    )


# ---- helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, nbytes",
    [
        ("8GiB", 8 * 2**30),
        ("500MB", 500 * 10**6),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("64kib", 64 * 1024),
        ("2T", 2 * 10**12),
        ("1024", 1024),
        (4096, 4096),
    ],
)
def test_parse_bytes(text, nbytes):
    assert C.parse_bytes(text) == nbytes


@pytest.mark.parametrize("bad", ["", "GiB", "8 parsecs", "-1GiB", "0", True])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError):
        C.parse_bytes(bad)


def test_fft_friendly_matches_brute_force():
    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 700):
        m = C.fft_friendly(n)
        assert m >= n and m % 2 == 0 and smooth(m)
        assert not any(k % 2 == 0 and smooth(k) for k in range(max(n, 2), m))
    assert C.fft_friendly(1024) == 1024
    assert C.fft_friendly(1030) == 1050
    assert C.fft_friendly(2047) == 2048
