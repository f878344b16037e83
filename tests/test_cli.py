"""CLI: help for every command, lazy imports, exit codes, dispatch to the other modules."""

import json
import math
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import yaml

import radimg
from radimg import cli
from radimg.config import defaults

pytestmark = pytest.mark.unit

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ("run", "simulate", "plan", "export", "config", "info")
HEAVY = ("numpy", "numba", "h5py", "casacore", "astropy", "scipy", "mpi4py", "cupy")


def radimg_cmd(*args, **kw):
    """Run ``python -m radimg.cli ARGS`` in a subprocess (same code as the entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "radimg.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


# ---- subprocess: help, lazy imports, exit codes ---------------------------------------


def test_help_top_level():
    r = radimg_cmd("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_every_command(command):
    r = radimg_cmd(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: radimg {command}")


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from radimg.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['plan', '--help'], ['config', '--dump']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "HEAVY=\n" in r.stderr, r.stderr


def test_config_dump_equals_defaults():
    r = radimg_cmd("config", "--dump")
    assert r.returncode == 0
    assert yaml.safe_load(r.stdout) == defaults()
    assert "# pixel size, arcsec" in r.stdout


def test_config_resolve_prints_effective_config(tmp_path):
    r = radimg_cmd("config", REPO / "configs/demo.yaml", "--set", "image.npix=512")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["image"]["npix"] == 512 and cfg["input"]["simulate"] is True


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "image.cel_arcsec=3"], ["image.cel_arcsec", "did you mean 'image.cell_arcsec'"]),
        (["--set", "image.npix=big"], ["image.npix", "'big'", "even integer"]),
        (["--set", "gridder.precision=quad"], ["gridder.precision", "'quad'", "single, double"]),
        (["--set", "nodot=3"], ["section.key=value"]),
    ],
)
def test_bad_set_exits_2(args, fragments):
    r = radimg_cmd("run", REPO / "configs/demo.yaml", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("radimg: error: ")
    assert "Traceback" not in r.stderr
    for frag in fragments:
        assert frag in r.stderr, r.stderr


def test_yaml_syntax_error_exits_2(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("image:\n  npix: 64\n  cell_arcsec: [30\nwterm: {mode: none}\n")
    r = radimg_cmd("plan", p, "--ranks", "2")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert str(p) in r.stderr and "line " in r.stderr and "YAML syntax error" in r.stderr


def test_missing_config_and_product_exit_2(tmp_path):
    r = radimg_cmd("simulate", tmp_path / "none.yaml")
    assert r.returncode == 2 and "config file not found" in r.stderr
    r = radimg_cmd("info", tmp_path / "none.h5")
    assert r.returncode == 2 and "no such product" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2():
    assert radimg_cmd().returncode == 2  # no command
    assert radimg_cmd("plan", "x.yaml").returncode == 2  # --ranks missing
    assert radimg_cmd("frobnicate").returncode == 2


# ---- in process: dispatch with stand-ins for the other modules ------------------------


def fake_module(monkeypatch, dotted, **attrs):
    """Install a stand-in module so that ``from a.b import c`` inside the CLI finds it."""
    mod = types.ModuleType(dotted)
    mod.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, dotted, mod)
    parent, _, child = dotted.rpartition(".")
    if parent in sys.modules:
        monkeypatch.setattr(sys.modules[parent], child, mod, raising=False)
    return mod


@pytest.fixture
def demo():
    return str(REPO / "configs" / "demo.yaml")


def test_run_dispatch(monkeypatch, demo):
    calls = []
    fake_module(monkeypatch, "radimg.pipeline", run=lambda cfg, **kw: calls.append((cfg, kw)))
    rc = cli.main(
        [
            "run",
            demo,
            "--set",
            "image.npix=256",
            "--resume",
            "--overwrite",
            "--mem-per-rank",
            "2GiB",
            "--verbose",
        ]
    )
    assert rc == 0
    ((cfg, kw),) = calls
    assert kw == {"resume": True, "verbose": 2}
    assert cfg["image"]["npix"] == 256
    assert cfg["output"]["overwrite"] is True
    assert cfg["resources"]["mem_per_rank"] == "2GiB"
    cli.main(["run", demo, "-q"])
    assert calls[-1][1] == {"resume": False, "verbose": 0}


def test_run_error_mapping(monkeypatch, demo, capsys):
    class MSError(Exception):
        pass

    fake_module(monkeypatch, "radimg.io.ms", MSError=MSError)

    def raise_(exc):
        def run(cfg, **kw):
            raise exc

        return run

    fake_module(
        monkeypatch, "radimg.pipeline", run=raise_(MSError("cannot open out/x.ms: no table"))
    )
    assert cli.main(["run", demo]) == 2
    err = capsys.readouterr().err
    assert err == "radimg: error: cannot open out/x.ms: no table\n"

    fake_module(
        monkeypatch,
        "radimg.pipeline",
        run=raise_(PermissionError(13, "Permission denied", "/x/y.h5")),
    )
    assert cli.main(["run", demo]) == 2
    assert capsys.readouterr().err == "radimg: error: Permission denied: /x/y.h5\n"

    fake_module(monkeypatch, "radimg.pipeline", run=raise_(ZeroDivisionError("bug")))
    assert cli.main(["run", demo]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: bug" in err


def test_simulate_dispatch(monkeypatch, demo, capsys):
    calls = []
    fake_module(
        monkeypatch,
        "radimg.sim.simulate",
        simulate=lambda sim, ms, overwrite=False, log=None: calls.append((sim, ms, overwrite)),
    )
    assert cli.main(["simulate", demo, "--set", "input.ms=/tmp/x.ms", "--overwrite"]) == 0
    ((sim, ms, overwrite),) = calls
    assert ms == "/tmp/x.ms" and overwrite is True
    assert set(sim) == set(defaults()["simulate"]) and sim["telescope"] == "mwa"
    assert "/tmp/x.ms" in capsys.readouterr().out


def fake_plan(cfg, n_ranks, mem_per_rank_bytes):
    fake_plan.args = (cfg, n_ranks, mem_per_rank_bytes)
    return {
        "nstacks": 3,
        "balanced": {
            "max_over_mean": 1.01,
            "load": np.array([10, 11, 12][:n_ranks]),
            "memory_bytes": [1e9] * n_ranks,
            "comm": {"bytes": 12345},
        },
        "naive": {
            "max_over_mean": 1.8,
            "load": [3, 20, 10][:n_ranks],
            "memory_bytes": [1e9] * n_ranks,
            "comm": {"bytes": 0},
        },
    }


def test_plan_table_and_json(monkeypatch, demo, capsys):
    fake_module(monkeypatch, "radimg.parallel.plan", plan_from_config=fake_plan)
    assert cli.main(["plan", demo, "--ranks", "3", "--mem-per-rank", "8GiB"]) == 0
    cfg, n, mem = fake_plan.args
    assert n == 3 and mem == 8 * 2**30 and cfg["image"]["npix"] == 1024
    out = capsys.readouterr().out
    assert "nstacks: 3" in out and "balanced" in out and "naive" in out
    assert "max_over_mean" in out and "comm.bytes" in out and "per rank, balanced:" in out

    assert cli.main(["plan", demo, "--ranks", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["balanced"]["load"] == [10, 11, 12] and data["naive"]["max_over_mean"] == 1.8
    assert fake_plan.args[2] is None  # no memory limit given

    assert cli.main(["plan", demo, "--ranks", "0"]) == 2
    assert cli.main(["plan", demo, "--ranks", "2", "--mem-per-rank", "lots"]) == 2
    assert "resources.mem_per_rank" in capsys.readouterr().err


def test_info_and_export(tmp_path, capsys):
    from radimg.io.product import make_wcs_info, write_product

    wcs = make_wcs_info(32, 32, math.radians(1 / 60), (0.0, math.radians(-27)), 1.5e8)
    path = write_product(
        tmp_path / "p.h5",
        {"dirty": np.ones((32, 32)), "psf": np.ones((32, 32))},
        wcs,
        {"config_yaml": "", "n_ranks": 2},
    )
    assert cli.main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "2 rank(s)" in out and "dirty" in out and "32 x 32" in out
    assert cli.main(["export", path, "--fits", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out.split()
    assert sorted(pathlib.Path(p).name for p in out) == ["p-dirty.fits", "p-psf.fits"]
    assert cli.main(["export", path, "--fits", str(tmp_path / "f")]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", path, "--fits", str(tmp_path / "f"), "--overwrite"]) == 0


def test_entry_point_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'radimg = "radimg.cli:entry"' in text
    assert radimg.__version__ in radimg_cmd("--version").stdout


def test_entry_exits_with_main_code(monkeypatch):
    """``entry`` (the console script) exits with :func:`main`'s code; it changes the
    collector's threshold for the command's own process only, so the test restores it."""
    import gc

    before = gc.get_threshold()
    try:
        monkeypatch.setattr(cli, "main", lambda: 2)
        with pytest.raises(SystemExit) as exc:
            cli.entry()
        assert exc.value.code == 2
        assert gc.get_threshold()[0] == 10_000
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_format_plan_many_ranks_shows_distribution():
    n = 100
    result = {
        "balanced": {"load_per_rank": list(range(1, n + 1)), "memory_per_rank_bytes": [2**30] * n}
    }
    text = cli.format_plan(result, n)
    assert f"per rank, balanced ({n} ranks):" in text
    assert "max/mean" in text and "1.0 GiB" in text
    assert len(text.splitlines()) < 10  # no row per rank


def test_unsupported_combination_is_a_user_error(monkeypatch, demo, capsys):
    """NotImplementedError (an option combination this build lacks) exits 2, not 1."""

    def run(cfg, **kw):
        raise NotImplementedError("wterm.mode: 'wstack-wproject' is not supported with X")

    fake_module(monkeypatch, "radimg.pipeline", run=run)
    assert cli.main(["run", demo]) == 2
    err = capsys.readouterr().err
    assert err == "radimg: error: wterm.mode: 'wstack-wproject' is not supported with X\n"


def test_interrupted_run_exits_3_and_says_how_to_resume(monkeypatch, demo, capsys):
    class JobInterrupted(Exception):
        exit_code = 3

        def __init__(self, msg, rank):
            super().__init__(msg)
            self.rank = rank

    for rank, shown in ((0, True), (1, False)):

        def run(cfg, rank=rank, **kw):
            raise JobInterrupted("stopped by SIGTERM after major cycle 2; the checkpoint x", rank)

        fake_module(monkeypatch, "radimg.pipeline", run=run, JobInterrupted=JobInterrupted)
        argv = ["run", demo, "--set", "output.path=/x y/r.h5", "--set", "image.npix=256"]
        assert cli.main(argv) == 3 == cli.EXIT_INTERRUPTED
        err = capsys.readouterr().err
        if shown:
            assert "SIGTERM after major cycle 2" in err
            resume = (
                f"radimg run {demo} --set 'output.path=/x y/r.h5' --set image.npix=256 --resume"
            )
            assert resume in err, err
        else:
            assert err == ""  # one message per job, from rank 0


def test_run_help_documents_exit_codes_and_signals():
    r = radimg_cmd("run", "--help")
    assert r.returncode == 0
    for s in ("exit status", "3 ", "--resume", "SIGTERM", "SIGUSR1", "143", "--signal=USR1"):
        assert s in r.stdout, s


def test_exit_code_constants_agree():
    from radimg import pipeline

    assert cli.EXIT_INTERRUPTED == pipeline.EXIT_INTERRUPTED == pipeline.JobInterrupted.exit_code


def test_run_asks_numpy_for_small_pages(monkeypatch):
    """A `radimg run` that only makes its images turns off numpy's huge-page madvise (first
    touches of large arrays stalled on memory compaction); a deconvolving run keeps it, and
    NUMPY_MADVISE_HUGEPAGE set by the user always stands."""
    from numpy._core.multiarray import _set_madvise_hugepage

    from radimg.cli import _pages_for

    before = _set_madvise_hugepage(True)
    try:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
        _pages_for({"deconvolution": {"algorithm": "clean"}})
        assert _set_madvise_hugepage(True) is True  # untouched
        _pages_for({"deconvolution": {"algorithm": "none"}})
        assert _set_madvise_hugepage(True) is False  # it was off
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
        _pages_for({"deconvolution": {"algorithm": "none"}})
        assert _set_madvise_hugepage(True) is True  # the user's choice stands
    finally:
        _set_madvise_hugepage(before)
