"""End-to-end runs of ``radimg run`` through the CLI: images right, rank-count independent,
and every bad input refused with a message naming the culprit, exit status 2, no product.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from small_sim import small_observation

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")

pytestmark = pytest.mark.integration

# A small wide-field MWA-like observation: 128 tiles, 3 integrations, 2 channels,
# a 256^2 image at 4' cells (17 deg field) with sources out to 6 deg.
SOURCES = [
    {"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 2.0},
    {"ra_deg": 5.0, "dec_deg": -24.0, "flux_jy": 1.0},
    {"ra_deg": 356.0, "dec_deg": -31.0, "flux_jy": 1.5},
]


def small_config(tmp, **over):
    cfg = {
        "input": {"simulate": True, "ms": str(tmp / "sim.ms")},
        "simulate": small_observation(SOURCES),
        "image": {"npix": 256, "cell_arcsec": 240.0, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-6},
        "gridder": {"precision": "double", "nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp / "out" / "run.h5"), "overwrite": True},
    }
    for key, val in over.items():
        sec, k = key.split(".")
        cfg.setdefault(sec, {})[k] = val
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def radimg(*args, ranks=None, timeout=300):
    cmd = [str(BIN / "radimg"), *map(str, args)]
    if not (BIN / "radimg").exists():
        cmd = [sys.executable, "-m", "radimg.cli", *map(str, args)]
    if ranks is not None:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    """One simulated MS shared by the tests of this module (made by a 1-rank run)."""
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = small_config(tmp)
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp


def test_run_writes_product_and_sources_land_on_wcs_pixels(sim_dir):
    from astropy.coordinates import SkyCoord

    from radimg.io.product import image_wcs, read_product

    prod = read_product(sim_dir / "out" / "run.h5")
    dirty, psf = prod["images"]["dirty"], prod["images"]["psf"]
    assert dirty.shape == psf.shape == (256, 256)
    assert dirty.dtype == np.float32
    # PSF normalised to 1 at the centre; the centre source (2 Jy) images to ~2 Jy/beam.
    assert psf[128, 128] == pytest.approx(1.0, abs=1e-5)
    assert psf.max() == pytest.approx(1.0, abs=1e-5)
    wcs = image_wcs(prod["wcs"])
    for src in SOURCES:
        x, y = wcs.world_to_pixel(SkyCoord(src["ra_deg"], src["dec_deg"], unit="deg"))
        ix, iy = int(round(float(x))), int(round(float(y)))
        box = dirty[iy - 3 : iy + 4, ix - 3 : ix + 4]
        jy, jx = np.unravel_index(np.argmax(box), box.shape)
        assert (jy - 3, jx - 3) == (0, 0), f"peak of {src} is off its WCS pixel"
    assert dirty[128, 128] == pytest.approx(2.0, rel=0.05)
    run = prod["run"]
    assert int(run["n_ranks"]) == 1
    assert "dirty" in str(run["timings_json"])


def test_run_result_independent_of_rank_count(sim_dir):
    from radimg.io.product import read_product

    ref = read_product(sim_dir / "out" / "run.h5")["images"]
    for n in (2, 3):
        out = sim_dir / f"r{n}.h5"
        r = radimg("run", sim_dir / "cfg.yaml", "--set", f"output.path={out}", ranks=n)
        assert r.returncode == 0, r.stdout + r.stderr
        prod = read_product(out)
        got = prod["images"]
        for name in ("dirty", "psf"):
            scale = np.abs(ref[name]).max()
            assert np.abs(got[name] - ref[name]).max() <= 1e-6 * scale, (n, name)
        # the stage table at the end, and the same figures per rank in the product
        table = r.stdout[r.stdout.index("stage") :]
        assert f"rank {n - 1}" in table and "max/mean" in table and "peak memory" in table
        for stage in ("read", "operator setup", "weights", "psf", "dirty", "total"):
            assert f"\n{stage} " in table, stage
        t = prod["timings"]
        assert len(t["per_rank"]) == len(t["peak_rss_bytes_per_rank"]) == n
        assert all(p["peak_rss_bytes"] > 2**20 and p["dirty"] > 0 for p in t["per_rank"])
        assert t["counters_per_rank"] == [{}] * n


def test_wstack_wproject_run_matches_wstack_at_1_and_2_ranks(sim_dir):
    """Mode wstack-wproject end to end (k-means stacks, w-projection kernels, tile exchange):
    the same dirty image and PSF as the wstack run to the kernel accuracy, and the same
    images at 1 and 2 ranks to 1e-6 (global stacks, so the rank count does not change them)."""
    from radimg.io.product import read_product

    ref = read_product(sim_dir / "out" / "run.h5")["images"]
    got = {}
    for n in (None, 2):
        out = sim_dir / f"wp{n}.h5"
        r = radimg("run", sim_dir / "cfg.yaml", "--set", f"output.path={out}",
                   "--set", "wterm.mode=wstack-wproject", "--set", "wterm.epsilon=1e-5",
                   "--set", "input.simulate=false", ranks=n)
        assert r.returncode == 0, r.stdout + r.stderr
        prod = read_product(out)
        mode = yaml.safe_load(str(prod["run"]["config_yaml"]))["wterm"]["mode"]
        assert mode == "wstack-wproject", mode
        got[n] = prod["images"]
    for name in ("dirty", "psf"):
        scale = np.abs(ref[name]).max()
        assert np.abs(got[None][name] - ref[name]).max() <= 1e-4 * scale, name
        assert np.abs(got[2][name] - got[None][name]).max() <= 1e-6 * scale, name


def test_export_fits_opens_with_astropy(sim_dir, tmp_path):
    from astropy.io import fits

    r = radimg("export", sim_dir / "out" / "run.h5", "--fits", tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted(tmp_path.glob("*.fits"))
    assert len(files) >= 2
    with fits.open(files[0]) as hdul:
        assert hdul[0].header["CTYPE1"].startswith("RA---SIN")


# ---- bad input: exit 2, message names the culprit, no product ---------------------------


def _flagged_copy(src, dst, mutate):
    from casacore.tables import table

    shutil.copytree(src, dst)
    with table(str(dst), readonly=False, ack=False) as t:
        mutate(t)


def _expect_refusal(r, *needles, product=None):
    assert r.returncode == 2, r.stdout + r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    assert "Traceback" not in r.stderr
    if product is not None:
        assert not pathlib.Path(product).exists()


@pytest.mark.parametrize("ranks", [None, 2])
def test_missing_ms(sim_dir, tmp_path, ranks):
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(tmp_path / "nope.ms")})
    r = radimg("run", cfg, ranks=ranks)
    _expect_refusal(r, "nope.ms", product=tmp_path / "out" / "run.h5")


def test_not_an_ms(tmp_path):
    (tmp_path / "junk.ms").mkdir()
    (tmp_path / "junk.ms" / "readme.txt").write_text("not a table")
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(tmp_path / "junk.ms")})
    _expect_refusal(radimg("run", cfg), "junk.ms", product=tmp_path / "out" / "run.h5")


def test_missing_data_column(sim_dir, tmp_path):
    cfg = small_config(
        tmp_path,
        **{
            "input.simulate": False,
            "input.ms": str(sim_dir / "sim.ms"),
            "input.datacolumn": "CORRECTED_DATA",
        },
    )
    _expect_refusal(radimg("run", cfg), "CORRECTED_DATA", product=tmp_path / "out" / "run.h5")


def test_zero_rows(tmp_path):
    from radimg.io.ms_write import write_ms
    from radimg.sim.layouts import load_layout

    lay = load_layout("mwa")
    ms = write_ms(
        tmp_path / "empty.ms",
        time=np.zeros(0),
        antenna1=np.zeros(0, int),
        antenna2=np.zeros(0, int),
        uvw=np.zeros((0, 3)),
        data=np.zeros((0, 2, 2), np.complex64),
        interval=10.0,
        freq=[1.5e8, 1.51e8],
        chan_width=1e6,
        phase_centre=(0.0, -0.47),
        antenna_positions=lay.positions,
        antenna_names=lay.names,
    )
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(ms)})
    _expect_refusal(
        radimg("run", cfg), "empty.ms", "zero rows", product=tmp_path / "out" / "run.h5"
    )


@pytest.mark.parametrize("ranks", [None, 2])
def test_everything_flagged(sim_dir, tmp_path, ranks):
    ms = tmp_path / "flagged.ms"

    def flag_all(t):
        f = t.getcol("FLAG")
        f[...] = True
        t.putcol("FLAG", f)

    _flagged_copy(sim_dir / "sim.ms", ms, flag_all)
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(ms)})
    _expect_refusal(radimg("run", cfg, ranks=ranks), "flagged", product=tmp_path / "out" / "run.h5")


def test_nan_visibilities_are_flagged_with_a_count(sim_dir, tmp_path):
    ms = tmp_path / "nan.ms"

    def poison(t):
        d = t.getcol("DATA")
        d[:5, 0, :] = np.nan
        t.putcol("DATA", d)

    _flagged_copy(sim_dir / "sim.ms", ms, poison)
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(ms)})
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stderr
    assert "5 visibilities" in r.stderr and "NaN" in r.stderr


def test_output_exists_refused_without_overwrite(sim_dir, tmp_path):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"precious")
    cfg = small_config(
        tmp_path,
        **{
            "input.simulate": False,
            "input.ms": str(sim_dir / "sim.ms"),
            "output.path": str(out),
            "output.overwrite": False,
        },
    )
    _expect_refusal(radimg("run", cfg), "exists.h5")
    assert out.read_bytes() == b"precious"


def test_output_dir_not_writable(sim_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = small_config(
        tmp_path,
        **{
            "input.simulate": False,
            "input.ms": str(sim_dir / "sim.ms"),
            "output.path": str(blocker / "run.h5"),
        },
    )
    _expect_refusal(radimg("run", cfg), str(blocker))


def test_yaml_syntax_error_and_unknown_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("image:\n  npix: [1, 2\n")
    r = radimg("run", bad)
    _expect_refusal(r, "bad.yaml", "line")
    cfg = small_config(tmp_path)
    r = radimg("run", cfg, "--set", "image.npixx=128")
    _expect_refusal(r, "image.npixx", "npix")
    r = radimg("run", cfg, "--set", "image.npix=big")
    _expect_refusal(r, "image.npix", "big")


def test_input_ms_is_not_modified(sim_dir, tmp_path):
    import hashlib

    ms = sim_dir / "sim.ms"

    def digest():
        h = hashlib.sha256()
        for p in sorted(ms.rglob("*")):
            if p.is_file() and not p.name.startswith("table.lock"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
        return h.hexdigest()

    before = digest()
    cfg = small_config(
        tmp_path, **{"input.simulate": False, "input.ms": str(ms), "image.weighting": "briggs"}
    )
    r = radimg("run", cfg)
    assert r.returncode == 0, r.stderr
    assert digest() == before


def test_memory_plan_over_budget_is_refused(sim_dir, tmp_path):
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(sim_dir / "sim.ms")})
    r = radimg("run", cfg, "--mem-per-rank", "1MiB")
    _expect_refusal(r, "resources.mem_per_rank", "1MiB", product=tmp_path / "out" / "run.h5")
    r = radimg("run", cfg, "--mem-per-rank", "8GiB")
    assert r.returncode == 0, r.stderr


def test_gpu_requested_without_gpu_fails_at_start(tmp_path):
    """No usable GPU here: the run stops before reading anything, naming the key."""
    try:
        import cupy

        if cupy.cuda.is_available():
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    cfg = small_config(tmp_path, **{"gridder.device": "gpu"})
    r = radimg("run", cfg, ranks=2)
    _expect_refusal(r, "gridder.device", product=tmp_path / "out" / "run.h5")


def test_quiet_prints_nothing_but_warnings_and_verbose_more(sim_dir, tmp_path):
    cfg = small_config(tmp_path, **{"input.simulate": False, "input.ms": str(sim_dir / "sim.ms")})
    r = radimg("run", cfg, "-q", ranks=2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert all(ln.startswith("radimg: warning:") for ln in r.stderr.splitlines()), r.stderr
    normal = radimg("run", cfg)
    assert normal.returncode == 0, normal.stderr
    assert "peak memory" in normal.stdout and "[radimg] wrote" in normal.stdout
    assert "[radimg] gridding dirty image" in normal.stderr  # the stage's final line
    verbose = radimg("run", cfg, "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.count("[radimg] reading rows") > normal.stderr.count(
        "[radimg] reading rows"
    )


def test_info_shows_the_stage_table(sim_dir):
    r = radimg("info", sim_dir / "out" / "run.h5")
    assert r.returncode == 0, r.stderr
    assert "timings (per rank):" in r.stdout and "peak memory" in r.stdout
    assert "dirty" in r.stdout.split("timings (per rank):")[1]
