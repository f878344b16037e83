"""Bad input through the real command line: exit status, a message naming the culprit, no product.

Complements tests/test_pipeline.py (missing MS, not an MS, missing column, zero rows, all
flagged, NaN visibilities, existing output, unwritable directory, YAML syntax, unknown key,
wrong type, memory plan): these are the other mistakes an operator makes in a survey
config or meets in a damaged Measurement Set. A user error exits 2 with
``radimg: error: ...`` and no traceback; a warning-only case exits 0 and says what it did.

Cases that show a pipeline/reader bug are ``xfail(strict=True)`` with the reason, so they
turn into failures (and get their marker removed) once fixed.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent

pytestmark = pytest.mark.integration


def write_config(tmp: pathlib.Path, name="cfg.yaml", ms=None, **over) -> pathlib.Path:
    """A small MWA-like setup (128 tiles, 2 integrations, 2 channels, 128^2 image)."""
    cfg = {
        "input": {"simulate": ms is None, "ms": str(ms or tmp / "sim.ms")},
        "simulate": {
            "telescope": "mwa",
            "dec_deg": -27.0,
            "nchan": 2,
            "chan_width_hz": 2.0e6,
            "ha_start_h": -0.02,
            "ha_stop_h": 0.02,
            "integration_s": 60.0,
            "noise_jy": 0.0,
            "sources": [{"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 1.0}],
        },
        "image": {"npix": 128, "cell_arcsec": 240.0, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-4},
        "gridder": {"nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp / "out" / "run.h5"), "overwrite": True},
    }
    for key, val in over.items():
        sec, k = key.split(".")
        cfg.setdefault(sec, {})[k] = val
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def radimg(*args, timeout=300):
    exe = BIN / "radimg"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "radimg.cli"]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def refused(r, *needles, product=None):
    """Exit 2, every needle in stderr, no traceback, no product."""
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert "radimg: error:" in r.stderr, r.stderr
    if product is not None:
        assert not pathlib.Path(product).exists(), product


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> pathlib.Path:
    """One simulated MS for the cases that damage or mis-address an MS."""
    tmp = tmp_path_factory.mktemp("badin")
    r = radimg("simulate", write_config(tmp))
    assert r.returncode == 0, r.stderr
    return tmp / "sim.ms"


def _copy_and(ms, dst, mutate):
    from casacore.tables import table

    shutil.copytree(ms, dst)
    with table(str(dst), readonly=False, ack=False) as t:
        mutate(t)
    return dst


# ---- config values ------------------------------------------------------------------------


def test_cell_so_large_the_field_reaches_the_horizon(tmp_path):
    cfg = write_config(tmp_path, **{"image.cell_arcsec": 3600.0})  # 128 deg half-width
    refused(radimg("run", cfg), "image.cell_arcsec", "horizon", product=tmp_path / "out" / "run.h5")


def test_negative_niter(tmp_path):
    cfg = write_config(tmp_path, **{"deconvolution.niter": -5})
    refused(radimg("run", cfg), "deconvolution.niter", "-5", product=tmp_path / "out" / "run.h5")


@pytest.mark.parametrize(
    "item, key",
    [
        ("image.cell_arcsec=[1, 2]", "image.cell_arcsec"),
        ("output.overwrite=maybe", "output.overwrite"),
        ("image.npix=12.5", "image.npix"),
        ("simulate.sources=7", "simulate.sources"),
    ],
)
def test_set_value_of_the_wrong_type(tmp_path, item, key):
    cfg = write_config(tmp_path)
    refused(radimg("run", cfg, "--set", item), key, product=tmp_path / "out" / "run.h5")


def test_set_without_equals_or_section(tmp_path):
    cfg = write_config(tmp_path)
    refused(radimg("run", cfg, "--set", "image.npix"), "--set", "image.npix")
    refused(radimg("run", cfg, "--set", "npix=128"), "npix=128")


def test_unknown_simulate_telescope_suggests_nearest(tmp_path):
    cfg = write_config(tmp_path, **{"simulate.telescope": "meerkaat"})
    refused(
        radimg("run", cfg),
        "simulate.telescope",
        "meerkaat",
        "meerkat",
        product=tmp_path / "out" / "run.h5",
    )
    assert not (tmp_path / "sim.ms").exists()


@pytest.mark.parametrize("eps", [0.5, 0.0, -1e-5])
def test_epsilon_out_of_range(tmp_path, eps):
    cfg = write_config(tmp_path, **{"wterm.epsilon": eps})
    refused(radimg("run", cfg), "wterm.epsilon", product=tmp_path / "out" / "run.h5")


def test_robust_out_of_range(tmp_path):
    cfg = write_config(tmp_path, **{"image.weighting": "briggs", "image.robust": 3.0})
    refused(radimg("run", cfg), "image.robust", "<= 2", product=tmp_path / "out" / "run.h5")


def test_unknown_wterm_mode_lists_choices(tmp_path):
    cfg = write_config(tmp_path, **{"wterm.mode": "wproject"})
    refused(radimg("run", cfg), "wterm.mode", "wproject", "wstack-wproject")


def test_weighting_typo_suggests_nearest(tmp_path):
    cfg = write_config(tmp_path, **{"image.weighting": "brigs"})
    refused(radimg("run", cfg), "image.weighting", "briggs")


def test_odd_npix(tmp_path):
    cfg = write_config(tmp_path, **{"image.npix": 255})
    refused(radimg("run", cfg), "image.npix", "even")


@pytest.mark.parametrize(
    "key, value",
    [
        ("deconvolution.gain", 1.5),
        ("deconvolution.mgain", 0.0),
        ("input.chunk_rows", 0),
        ("gridder.nthreads", 0),
        ("deconvolution.threshold_jy", -1.0),
        ("deconvolution.algorithm", "clen"),
    ],
)
def test_other_out_of_range_values(tmp_path, key, value):
    cfg = write_config(tmp_path, **{key: value})
    refused(radimg("run", cfg), key, product=tmp_path / "out" / "run.h5")


def test_hour_angles_reversed(tmp_path):
    cfg = write_config(tmp_path, **{"simulate.ha_start_h": 1.0, "simulate.ha_stop_h": 0.5})
    refused(radimg("run", cfg), "simulate.ha_stop_h", "simulate.ha_start_h")


def test_config_path_is_a_directory_or_missing(tmp_path):
    refused(radimg("run", tmp_path), str(tmp_path), "directory")
    refused(radimg("run", tmp_path / "missing.yaml"), "missing.yaml")


def test_config_top_level_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- image\n- npix\n")
    refused(radimg("run", p), "list.yaml", "mapping")


def test_mem_per_rank_unparsable(tmp_path):
    cfg = write_config(tmp_path)
    refused(radimg("run", cfg, "--mem-per-rank", "lots"), "resources.mem_per_rank", "lots")


def test_output_path_is_a_directory(tmp_path):
    (tmp_path / "outdir").mkdir()
    cfg = write_config(tmp_path, **{"output.path": str(tmp_path / "outdir")})
    refused(radimg("run", cfg), "outdir", "directory")


# ---- Measurement Set contents ------------------------------------------------------------


def test_datacolumn_typo_names_the_columns_present(ms, tmp_path):
    cfg = write_config(tmp_path, ms=ms, **{"input.datacolumn": "DAT"})
    r = radimg("run", cfg)
    refused(r, "'DAT'", "DATA", str(ms), product=tmp_path / "out" / "run.h5")


@pytest.mark.parametrize(
    "key, value, needle", [("input.spw", 3, "spectral window 3"), ("input.field", 2, "field 2")]
)
def test_spw_or_field_out_of_range(ms, tmp_path, key, value, needle):
    cfg = write_config(tmp_path, ms=ms, **{key: value})
    refused(radimg("run", cfg), needle, "out of range", product=tmp_path / "out" / "run.h5")


def test_nan_weights_are_flagged_with_a_count(ms, tmp_path):
    def poison(t):
        for col in ("WEIGHT_SPECTRUM", "WEIGHT"):
            if col in t.colnames() and t.iscelldefined(col, 0):
                w = t.getcol(col)
                w[:7] = np.nan
                t.putcol(col, w)

    bad = _copy_and(ms, tmp_path / "nanw.ms", poison)
    cfg = write_config(tmp_path, ms=bad)
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stderr
    assert "NaN" in r.stderr and "flagged" in r.stderr and "nanw.ms" in r.stderr, r.stderr
    assert (tmp_path / "out" / "run.h5").exists()


def test_all_weights_zero(ms, tmp_path):
    def zero(t):
        for col in ("WEIGHT_SPECTRUM", "WEIGHT"):
            if col in t.colnames() and t.iscelldefined(col, 0):
                w = t.getcol(col)
                w[...] = 0.0
                t.putcol(col, w)

    bad = _copy_and(ms, tmp_path / "zerow.ms", zero)
    cfg = write_config(tmp_path, ms=bad)
    refused(radimg("run", cfg), "zerow.ms", "zero weight", product=tmp_path / "out" / "run.h5")


def _truncate_data_file(ms_copy: pathlib.Path, which: str) -> pathlib.Path:
    """Cut a main-table storage file to a quarter of its size: ``which`` is ``table.f0`` or
    ``largest`` (the visibilities)."""
    if which == "largest":
        victim = max(ms_copy.glob("table.f*"), key=lambda p: p.stat().st_size)
    else:
        victim = ms_copy / which
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 4)
    return victim


@pytest.mark.parametrize("which", ["table.f0", "largest"])
def test_truncated_ms_data_file(ms, tmp_path, which):
    bad = tmp_path / "trunc.ms"
    shutil.copytree(ms, bad)
    _truncate_data_file(bad, which)
    cfg = write_config(tmp_path, ms=bad)
    r = radimg("run", cfg, timeout=120)
    refused(r, "trunc.ms", product=tmp_path / "out" / "run.h5")


def test_corrupt_table_descriptor(ms, tmp_path):
    """Garbage over the main table's descriptor (table.dat), size unchanged."""
    bad = tmp_path / "corrupt.ms"
    shutil.copytree(ms, bad)
    with open(bad / "table.dat", "r+b") as f:
        f.seek(64)
        f.write(np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8).tobytes())
    cfg = write_config(tmp_path, ms=bad)
    refused(radimg("run", cfg, timeout=120), "corrupt.ms", product=tmp_path / "out" / "run.h5")


def test_missing_subtable(ms, tmp_path):
    bad = tmp_path / "nospw.ms"
    shutil.copytree(ms, bad)
    shutil.rmtree(bad / "SPECTRAL_WINDOW")
    cfg = write_config(tmp_path, ms=bad)
    refused(radimg("run", cfg), "nospw.ms", "SPECTRAL_WINDOW", product=tmp_path / "out" / "run.h5")


def test_memory_plan_over_budget_prints_the_plan(ms, tmp_path):
    cfg = write_config(tmp_path, ms=ms)
    r = radimg("run", cfg, "--mem-per-rank", "1MiB")
    refused(r, "resources.mem_per_rank", "1MiB", product=tmp_path / "out" / "run.h5")
    for part in ("DOES NOT FIT", "samples", "stack_grids", "more ranks needed"):
        assert part in r.stderr, (part, r.stderr)


# ---- warnings, not refusals --------------------------------------------------------------


def test_cell_too_coarse_for_the_baselines_warns_of_aliasing(ms, tmp_path):
    # MWA's ~2.9 km baselines at 150 MHz need cells <= ~75 arcsec; 600 arcsec aliases
    cfg = write_config(tmp_path, ms=ms, **{"image.cell_arcsec": 600.0})
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stderr
    assert "radimg: warning: image.cell_arcsec: 600 arcsec is too coarse" in r.stderr, r.stderr
    assert "alias" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "out" / "run.h5").exists()
    fine = write_config(tmp_path, name="fine.yaml", ms=ms, **{"image.cell_arcsec": 60.0})
    r = radimg("run", fine)
    assert r.returncode == 0 and "alias" not in r.stderr, r.stderr


def test_npix_not_fft_friendly_is_rounded_up_with_a_warning(ms, tmp_path):
    cfg = write_config(tmp_path, ms=ms, **{"image.npix": 262})  # 2 * 131
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stderr
    assert "image.npix" in r.stderr and "262" in r.stderr and "rounded up to 270" in r.stderr
    from radimg.io.product import read_product

    assert read_product(tmp_path / "out" / "run.h5", images=False)["shape"] == (270, 270)


def test_clean_with_beam_undersampled_names_cell(ms, tmp_path):
    cfg = write_config(
        tmp_path, ms=ms, **{"deconvolution.algorithm": "clean", "deconvolution.niter": 10}
    )
    r = radimg("run", cfg)
    assert r.returncode in (0, 2), r.stderr
    assert "Traceback" not in r.stderr and "image.cell_arcsec" in r.stderr, r.stderr
