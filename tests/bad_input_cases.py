"""The bad-input matrix: mistakes a user makes, each with the answer radimg must give.

Every case runs through the CLI entry point (``radimg.cli.main``, in-process: a subprocess
would add only start-up time) in a fresh directory, and the runner asserts (issue #12):

- the exit status (2 for a user error; 0 where radimg only warns and says what it did; 3
  for a run stopped by request),
- every needle in stderr (the key, file or column, and what was expected), no traceback,
  never "internal error", and, under MPI, the message printed by one rank only,
- no product and no leftover directory: nothing appears in the case's directory that was
  not there before (exit 2),
- the checksum of every Measurement Set the case touches is unchanged.

The cases of the ``run`` command also run at 2 ranks under ``mpiexec``
(tests/mpi/test_bad_input_mpi.py); the other commands are serial tools.

A case is ``Case(id, kind, argv, needles, ...)``: ``argv(ws)`` builds the command line in
the :class:`Workspace` ``ws`` (configs, damaged MS copies, products). Kinds: ``config``,
``paths``, ``ms``, ``deconv``, ``simulate`` (all through ``radimg run``), and ``plan``,
``product`` (info/export/preview), ``simcmd`` (``radimg simulate``), ``cli``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field

import numpy as np
import yaml

RUN_KINDS = ("config", "paths", "ms", "deconv", "simulate")

# The small observation every case starts from: 128 MWA tiles, 2 integrations, 2 channels.
SIM = {
    "telescope": "mwa",
    "ra_deg": 0.0,
    "dec_deg": -27.0,
    "freq_hz": 1.5e8,
    "chan_width_hz": 2.0e6,
    "nchan": 2,
    "ha_start_h": -0.02,
    "ha_stop_h": 0.02,
    "integration_s": 60.0,
    "noise_jy": 0.0,
    "seed": 1,
    "sources": [{"ra_deg": 0.0, "dec_deg": -27.0, "flux_jy": 1.0}],
}


def base_config(ms, out) -> dict:
    return {
        "input": {"simulate": False, "ms": str(ms)},
        "simulate": dict(SIM),
        "image": {"npix": 128, "cell_arcsec": 60.0, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-4},
        "gridder": {"nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(out), "overwrite": False},
    }


def ms_digest(ms) -> str:
    """SHA-256 over every file of an MS directory (casacore's lock files excluded: opening
    a table read-only rewrites them)."""
    h = hashlib.sha256()
    root = pathlib.Path(ms)
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("table.lock"):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def tree(d) -> set[str]:
    """Every path below ``d`` (lock files left out), to see what a case created."""
    root = pathlib.Path(d)
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("table.lock")
    }


# --------------------------------------------------------------------------------------
# Shared inputs
# --------------------------------------------------------------------------------------


@dataclass
class Shared:
    """Inputs made once per session: a simulated MS and a product of it."""

    root: pathlib.Path
    ms: pathlib.Path
    product: pathlib.Path
    real_ms: pathlib.Path | None  # pyuvdata's real MWA snapshot, if installed


def make_shared(root, comm=None) -> Shared:
    """Simulate the base MS and image it into a product (collective under ``comm``: rank 0
    writes the MS, every rank takes part in the run)."""
    from radimg import cli
    from radimg.sim.simulate import simulate

    root = pathlib.Path(root)
    ms = root / "base.ms"
    product = root / "prod" / "base.h5"
    cfg = root / "base.yaml"
    if comm is None or comm.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if not ms.exists():
            simulate(dict(SIM), ms)
        c = base_config(ms, product)
        c["deconvolution"] = {"algorithm": "clean", "niter": 20, "auto_threshold": 0.0}
        cfg.write_text(yaml.safe_dump(c))
    if comm is not None:
        comm.Barrier()
    if not product.exists():
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            rc = cli.main(["run", str(cfg), "-q"])
        assert rc == 0, "could not make the shared product"
    real = None
    try:
        import importlib.util

        spec = importlib.util.find_spec("pyuvdata")
        if spec and spec.origin:
            cand = pathlib.Path(spec.origin).parent / "data" / "1102865728_small.ms"
            real = cand if cand.exists() else None
    except (ImportError, ValueError):
        real = None
    return Shared(root, ms, product, real)


@dataclass
class Workspace:
    """A case's own directory, with helpers that build its inputs."""

    dir: pathlib.Path
    shared: Shared
    watched: list = field(default_factory=list)  # MSs whose checksums must not change
    cleanup: list = field(default_factory=list)  # callables run after the case

    @property
    def out(self) -> pathlib.Path:
        return self.dir / "out" / "run.h5"

    def config(self, name="cfg.yaml", ms=None, text=None, **over) -> str:
        """Write a config (the base one with ``section.key`` overrides, or raw ``text``)."""
        ms = self.shared.ms if ms is None else ms
        self.watch(ms)
        p = self.dir / name
        if text is not None:
            p.write_text(textwrap.dedent(text).replace("@MS@", str(ms)).replace(
                "@OUT@", str(self.out)))
            return str(p)
        cfg = base_config(ms, self.out)
        for key, val in over.items():
            sect, k = key.split(".")
            cfg.setdefault(sect, {})[k] = val
        p.write_text(yaml.safe_dump(cfg))
        return str(p)

    def watch(self, ms) -> None:
        if ms is not None and os.path.isdir(ms) and str(ms) not in self.watched:
            self.watched.append(str(ms))

    def ms_copy(self, mutate=None, name="bad.ms", source=None, files=None) -> pathlib.Path:
        """A copy of the base MS (or ``source``) in this case's directory, changed by
        ``mutate(table, path)`` (opened writable) and then ``files(path)`` (closed: file-level
        damage)."""
        dst = self.dir / name
        shutil.copytree(source or self.shared.ms, dst)
        if mutate is not None:
            from casacore.tables import table

            t = table(str(dst), readonly=False, ack=False)
            try:
                mutate(t, dst)
            finally:
                t.close()
        if files is not None:
            files(dst)
        self.watch(dst)
        return dst

    def sub_mutate(self, ms, sub, fn) -> None:
        from casacore.tables import table

        t = table(str(pathlib.Path(ms) / sub), readonly=False, ack=False)
        try:
            fn(t)
        finally:
            t.close()

    def product_copy(self, name="prod.h5", mutate=None) -> pathlib.Path:
        dst = self.dir / name
        shutil.copy(self.shared.product, dst)
        if mutate is not None:
            import h5py

            with h5py.File(dst, "r+") as f:
                mutate(f)
        return dst


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    argv: Callable[[Workspace], list]
    needles: tuple = ()
    status: int = 2
    check: Callable[[Workspace, str], None] | None = None  # more assertions (exit 0 cases)
    ranks: tuple = (1, 2)  # run cases: also under mpiexec -n 2
    leaves: tuple = ()  # what an error may leave: the MS a run simulated before failing


# --------------------------------------------------------------------------------------
# Case builders
# --------------------------------------------------------------------------------------

CASES: list[Case] = []


def case(id, kind, argv, *needles, status=2, check=None, ranks=(1, 2), leaves=()):
    if kind not in RUN_KINDS:
        ranks = (1,)
    CASES.append(Case(id, kind, argv, tuple(needles), status, check, ranks, tuple(leaves)))


def run_set(*sets, **over):
    """``radimg run CFG --set ...`` on the base config with ``over`` in the file."""

    def argv(ws):
        a = ["run", ws.config(**over)]
        for s in sets:
            a += ["--set", s]
        return a

    return argv


def run_ms(mutate, *sets, name="bad.ms", source=None, files=None, **over):
    """``radimg run`` on a damaged copy of the base MS."""

    def argv(ws):
        ms = ws.ms_copy(mutate, name=name, source=source, files=files)
        a = ["run", ws.config(ms=ms, **over)]
        for s in sets:
            a += ["--set", s]
        return a

    return argv


def _flow(val) -> str:
    """A value as it would be typed after ``--set key=`` (YAML flow style)."""
    if isinstance(val, str):
        return val if val else "''"
    return yaml.safe_dump(val, default_flow_style=True).strip().removesuffix("...").strip()


def _product_exists(ws, err):
    assert ws.out.exists(), err


# ---- config values ------------------------------------------------------------------------

for key, val, needles in [
    ("image.npix", "big", ("image.npix", "'big'", "integer")),
    ("image.npix", 255, ("image.npix", "even")),
    ("image.npix", 16, ("image.npix", ">= 32")),
    ("image.npix", 12.5, ("image.npix",)),
    ("image.npix_y", 7, ("image.npix_y",)),
    ("image.cell_arcsec", 0.0, ("image.cell_arcsec", "> 0")),
    ("image.cell_arcsec", -60.0, ("image.cell_arcsec",)),
    ("image.cell_arcsec", [1, 2], ("image.cell_arcsec",)),
    ("image.cell_arcsec", 3600.0, ("image.cell_arcsec", "horizon")),
    ("image.cell_arcsec", "1e400", ("image.cell_arcsec",)),
    ("image.weighting", "brigs", ("image.weighting", "briggs")),
    ("image.weighting", "superuniform", ("image.weighting", "natural, uniform, briggs")),
    ("image.robust", 3.0, ("image.robust", "<= 2")),
    ("image.robust", "medium", ("image.robust",)),
    ("image.taper_arcsec", -5.0, ("image.taper_arcsec", ">= 0")),
    ("wterm.mode", "wproject", ("wterm.mode", "wstack-wproject")),
    ("wterm.epsilon", 0.5, ("wterm.epsilon",)),
    ("wterm.epsilon", 0.0, ("wterm.epsilon",)),
    ("wterm.epsilon", -1e-5, ("wterm.epsilon",)),
    ("wterm.epsilon", 1e-11, ("wterm.epsilon", "gridder.precision", "single")),
    ("wterm.nstacks", 0, ("wterm.nstacks", ">= 1")),
    ("wterm.nstacks", "many", ("wterm.nstacks",)),
    ("wterm.oversampling", 1.0, ("wterm.oversampling",)),
    ("gridder.device", "tpu", ("gridder.device", "cpu, gpu")),
    ("gridder.precision", "half", ("gridder.precision", "single, double")),
    ("gridder.nthreads", 0, ("gridder.nthreads",)),
    ("gridder.fft", "mkl", ("gridder.fft",)),
    ("deconvolution.algorithm", "clen", ("deconvolution.algorithm", "clean")),
    ("deconvolution.niter", -5, ("deconvolution.niter", "-5")),
    ("deconvolution.gain", 1.5, ("deconvolution.gain",)),
    ("deconvolution.mgain", 0.0, ("deconvolution.mgain",)),
    ("deconvolution.threshold_jy", -1.0, ("deconvolution.threshold_jy",)),
    ("deconvolution.auto_threshold", -3, ("deconvolution.auto_threshold",)),
    ("deconvolution.scales_pix", [0, -4], ("deconvolution.scales_pix",)),
    ("deconvolution.mask_boxes", [[0, 0, 5]], ("deconvolution.mask_boxes",)),
    ("deconvolution.mask_boxes", [[-1, 0, 5, 5]], ("deconvolution.mask_boxes",)),
    ("deconvolution.nmajor", 0, ("deconvolution.nmajor",)),
    ("input.chunk_rows", 0, ("input.chunk_rows",)),
    ("input.spw", -1, ("input.spw",)),
    ("input.autocorrelations", "sometimes", ("input.autocorrelations", "true or false")),
    ("input.lock_wait_s", -1, ("input.lock_wait_s",)),
    ("output.overwrite", "maybe", ("output.overwrite",)),
    ("output.path", "", ("output.path",)),
    ("output.path", "result.fits", ("output.path", ".h5")),
    ("output.path", "preview.png", ("output.path", ".h5")),
    ("output.path", "obs.ms", ("output.path", ".h5")),
    ("output.path", "product", ("output.path", ".h5")),
    ("resources.mem_per_rank", 8, ("resources.mem_per_rank", "unit")),
    ("resources.mem_per_rank", "8.5", ("resources.mem_per_rank", "unit")),
    ("resources.mem_per_rank", "lots", ("resources.mem_per_rank", "lots")),
    ("resources.mem_per_rank", "-2GiB", ("resources.mem_per_rank",)),
    ("simulate.ha_start_h", 1.0, ("simulate.ha_stop_h", "simulate.ha_start_h")),
    ("simulate.nchan", 0, ("simulate.nchan",)),
    ("simulate.sources", 7, ("simulate.sources",)),
    ("simulate.sources", [{"ra_deg": 0, "dec": -27, "flux_jy": 1}], ("simulate.sources", "dec_deg")),
]:
    case(f"config-{key}={val!r}"[:80], "config", run_set(f"{key}={_flow(val)}"), *needles)


case("config-corners-past-horizon", "config",
     run_set("image.npix=1024", "image.cell_arcsec=330"), "image.npix", "corners", "horizon")
case("config-set-without-equals", "config", run_set("image.npix"), "--set", "image.npix")
case("config-set-without-section", "config", run_set("npix=128"), "npix=128")
case("config-set-unknown-key", "config", run_set("image.npixx=128"), "image.npixx", "image.npix")
case("config-set-unknown-section", "config", run_set("imgae.npix=128"), "imgae", "image")
case("config-set-bad-yaml", "config", run_set("image.npix=[1,"), "--set", "image.npix")
case("config-missing-file", "config", lambda ws: ["run", str(ws.dir / "missing.yaml")],
     "missing.yaml", "not found")
case("config-is-a-directory", "config", lambda ws: ["run", str(ws.dir)], "directory")


def _cfg_text(text, name="cfg.yaml"):
    def argv(ws):
        return ["run", ws.config(name=name, text=text)]

    return argv


case("config-yaml-syntax-error", "config", _cfg_text("image: {npix: 128\n"), "cfg.yaml",
     "YAML syntax error", "line")
case("config-yaml-tab-indent", "config", _cfg_text("image:\n\tnpix: 128\n"), "cfg.yaml", "line")
case("config-top-level-list", "config", _cfg_text("- image\n- npix\n"), "cfg.yaml", "mapping")
case("config-top-level-scalar", "config", _cfg_text("hello\n"), "cfg.yaml", "mapping")
case("config-section-not-mapping", "config", _cfg_text("image: 128\n"), "image", "mapping")
case("config-unknown-section", "config", _cfg_text("imaging: {npix: 128}\n"), "imaging",
     "image")
case("config-unknown-key-in-file", "config", _cfg_text("image: {cell: 30}\n"), "image.cell",
     "image.cell_arcsec", "line 1")
case("config-key-in-wrong-section", "config", _cfg_text("image: {epsilon: 1.0e-4}\n"),
     "image.epsilon", "wterm.epsilon")
case("config-duplicate-key", "config",
     _cfg_text("input: {ms: '@MS@'}\nimage:\n  npix: 128\n  npix: 4096\n"),
     "duplicate key 'npix'", "line 4", "line 3")
case("config-duplicate-section", "config",
     _cfg_text("input: {ms: '@MS@'}\nimage: {npix: 128}\nimage: {npix: 256}\n"),
     "duplicate key 'image'", "line 3")
case("config-binary-file", "config",
     lambda ws: ["run", str(_write_bytes(ws.dir / "cfg.yaml", b"\xff\xfe\x00garbage"))],
     "cfg.yaml")


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


case("config-nthreads-beyond-cores", "config", run_set("gridder.nthreads=1000"),
     "gridder.nthreads", "1000", "core")
case("config-nstacks-too-few", "config", run_set("wterm.nstacks=1"), "wterm.nstacks",
     "w-planes")
case("config-gpu-without-gpu", "config", run_set("gridder.device=gpu"), "gpu")
case("config-memory-limit-below-the-plan", "config", run_set("resources.mem_per_rank=20MB"),
     "resources.mem_per_rank", "DOES NOT FIT")
case("config-memory-limit-1MiB", "config",
     lambda ws: ["run", ws.config(), "--mem-per-rank", "1MiB"],
     "resources.mem_per_rank", "1MiB", "more ranks needed")

# ---- output paths and data safety ------------------------------------------------------------


def _ms_file(ws, rel):
    ms = ws.ms_copy(name="obs.ms")
    return ms, str(ms / rel)


def _out_into_ms(rel, what="output.path", extra=()):
    def argv(ws):
        ms, target = _ms_file(ws, rel)
        sets = {"output.path": target} if what == "output.path" else {what: target}
        return ["run", ws.config(**sets, **dict(extra)), "--overwrite"]

    return argv


case("paths-output-over-an-ms-storage-file", "paths", _out_into_ms("table.f1.h5"),
     "output.path", "inside the Measurement Set")
case("paths-output-inside-an-ms-subtable", "paths", _out_into_ms("ANTENNA/run.h5"),
     "inside the Measurement Set")
case("paths-output-inside-the-input-ms", "paths",
     lambda ws: ["run", ws.config(**{"output.path": str(ws.shared.ms / "run.h5")})],
     "output.path", "input.ms", "never writes into")


def _symlink_into_ms(ws):
    ms = ws.ms_copy(name="obs.ms")
    (ws.dir / "link").symlink_to(ms)
    return ["run", ws.config(**{"output.path": str(ws.dir / "link" / "run.h5")})]


case("paths-output-via-symlink-into-ms", "paths", _symlink_into_ms, "inside the Measurement Set")
case("paths-fits-dir-inside-ms", "paths",
     lambda ws: ["run", ws.config(**{"output.fits_dir": str(ws.ms_copy(name="o.ms") / "fits")})],
     "output.fits_dir", "inside the Measurement Set")
case("paths-output-named-like-a-storage-file", "paths",
     lambda ws: ["run", ws.config(**{"output.path": str(ws.ms_copy(name="obs.ms") / "table.f1")}),
                 "--overwrite"], "output.path", ".h5")
case("paths-clean-output-inside-an-ms-subtable", "paths",
     lambda ws: ["run", ws.config(**{
         "output.path": str(ws.ms_copy(name="o.ms") / "SPECTRAL_WINDOW" / "x.h5"),
         "deconvolution.algorithm": "clean"})],
     "inside the Measurement Set")


def _foreign_output(ws):
    target = ws.dir / "out" / "run.h5"
    target.parent.mkdir()
    target.write_bytes(b"my thesis")
    return ["run", ws.config(), "--overwrite"]


def _foreign_intact(ws, err):
    assert (ws.dir / "out" / "run.h5").read_bytes() == b"my thesis"


case("paths-overwrite-refuses-a-foreign-file", "paths", _foreign_output, "output.path",
     "not written by radimg", check=_foreign_intact)


def _existing_output(ws):
    shutil.copytree(ws.shared.product.parent, ws.dir / "out")
    os.rename(ws.dir / "out" / ws.shared.product.name, ws.dir / "out" / "run.h5")
    return ["run", ws.config()]


case("paths-existing-product-without-overwrite", "paths", _existing_output, "already exists",
     "--overwrite")


def _output_parent_is_a_file(ws):
    (ws.dir / "plain").write_text("x")
    return ["run", ws.config(**{"output.path": str(ws.dir / "plain" / "run.h5")})]


case("paths-output-parent-is-a-file", "paths", _output_parent_is_a_file, "not a directory")


def _output_is_a_directory(ws):
    (ws.dir / "dir.h5").mkdir()
    return ["run", ws.config(**{"output.path": str(ws.dir / "dir.h5")})]


case("paths-output-is-a-directory", "paths", _output_is_a_directory, "dir.h5", "directory")


def _fits_dir_is_a_file(ws):
    (ws.dir / "fits").write_text("x")
    return ["run", ws.config(**{"output.fits_dir": str(ws.dir / "fits")})]


case("paths-fits-dir-is-a-file", "paths", _fits_dir_is_a_file, "output.fits_dir",
     "not a directory")


def _fits_dir_holds_foreign_fits(ws):
    d = ws.dir / "fits"
    d.mkdir()
    (d / "run-dirty.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    return ["run", ws.config(**{"output.fits_dir": str(d), "output.overwrite": True})]


case("paths-fits-dir-holds-a-foreign-fits", "paths", _fits_dir_holds_foreign_fits,
     "run-dirty.fits", "not written by radimg")
case("paths-fits-dir-equals-output", "paths",
     lambda ws: ["run", ws.config(**{"output.fits_dir": str(ws.out)})], "same path")
case("paths-output-is-the-input-ms", "paths",
     lambda ws: ["run", ws.config(**{"input.ms": str(ws.dir / "x.h5"),
                                     "output.path": str(ws.dir / "x.h5")})],
     "x.h5")


def _home_expanded(ws):
    os.environ["HOME"] = str(ws.dir / "home")
    (ws.dir / "home").mkdir()
    return ["run", ws.config(**{"output.path": "~/run.h5"})]


def _home_check(ws, err):
    assert (ws.dir / "home" / "run.h5").is_file(), err
    assert not (ws.dir / "~").exists() and not pathlib.Path("~").exists(), err


case("paths-tilde-means-home", "paths", _home_expanded, status=0, check=_home_check,
     ranks=(1,))


def _demo_trap(ws):
    """The demo config (simulate: true, overwrite: true) pointed at a real MS images it."""
    src = ws.shared.real_ms or ws.shared.ms
    real = ws.dir / "myobs.ms"
    shutil.copytree(src, real)
    from casacore.tables import table

    with table(str(real), readonly=False, ack=False) as t:  # a real MS has no marker
        if "RADIMG_SIMULATED" in t.keywordnames():
            t.removekeyword("RADIMG_SIMULATED")
    ws.watch(real)
    return ["run", str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"),
            "--set", f"input.ms={real}", "--set", f"output.path={ws.out}",
            "--set", "image.npix=128", "--set", "image.cell_arcsec=120", "--set",
            "wterm.mode=wstack", "--set", "gridder.nthreads=1"]


case("paths-demo-config-on-a-real-ms-images-it", "paths", _demo_trap,
     "was not simulated by radimg", "imaging it", status=0, check=_product_exists)


def _simulate_over_foreign_ms(ws):
    real = ws.ms_copy(name="myobs.ms", mutate=lambda t, p: t.removekeyword("RADIMG_SIMULATED"))
    return ["simulate", ws.config(ms=real, **{"input.simulate": True}), "--overwrite"]


case("simcmd-overwrite-refuses-a-real-ms", "simcmd", _simulate_over_foreign_ms,
     "myobs.ms", "did not simulate", "never replaces")


def _simulate_over_a_directory(ws):
    d = ws.dir / "notes"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    return ["simulate", ws.config(**{"input.ms": str(d)}), "--overwrite"]


def _notes_intact(ws, err):
    assert (ws.dir / "notes" / "thesis.tex").read_text() == "precious"


case("simcmd-overwrite-refuses-a-plain-directory", "simcmd", _simulate_over_a_directory,
     "notes", "did not simulate", check=_notes_intact)
case("simcmd-into-an-ms", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.ms_copy(name="o.ms") / "new.ms")})],
     "input.ms", "inside the Measurement Set")
case("simcmd-existing-without-overwrite", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.ms_copy(name="sim.ms"))})],
     "exists", "--overwrite")
case("simcmd-unknown-telescope", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.dir / "s.ms"),
                                          "simulate.telescope": "lofar"})],
     "simulate.telescope", "lofar")
case("simcmd-layout-ms-missing", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.dir / "s.ms"),
                                          "simulate.telescope": str(ws.dir / "nope.ms")})],
     "simulate.telescope", "nope.ms")
case("simcmd-layout-not-an-ms", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.dir / "s.ms"),
                                          "simulate.telescope": str(ws.dir)})],
     "not a Measurement Set")
case("simcmd-source-behind-the-sky", "simcmd",
     lambda ws: ["simulate", ws.config(**{
         "input.ms": str(ws.dir / "s.ms"),
         "simulate.sources": [{"ra_deg": 180.0, "dec_deg": 27.0, "flux_jy": 1.0}]})],
     "simulate.sources", "90 deg")
case("simcmd-source-missing-flux", "simcmd",
     lambda ws: ["simulate", ws.config(**{
         "input.ms": str(ws.dir / "s.ms"),
         "simulate.sources": [{"ra_deg": 0.0, "dec_deg": -27.0}]})],
     "simulate.sources", "flux_jy")
case("simcmd-negative-noise", "simcmd",
     lambda ws: ["simulate", ws.config(**{"input.ms": str(ws.dir / "s.ms"),
                                          "simulate.noise_jy": -1})],
     "simulate.noise_jy")

def _sky_fits(kind):
    def argv(ws):
        from astropy.io import fits

        img = np.zeros((32, 32))
        img[16, 16] = 1.0
        h = fits.Header()
        if kind != "no-wcs":
            h.update({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRPIX1": 17, "CRPIX2": 17,
                      "CRVAL1": 0.0, "CRVAL2": -27.0, "CDELT1": -0.03, "CDELT2": 0.03})
        h["BUNIT"] = "Jy/beam" if kind == "jy-beam" else "Jy/pixel"
        if kind == "nan":
            img[3, 3] = np.nan
        path = ws.dir / "sky.fits"
        fits.PrimaryHDU(img, header=h).writeto(path)
        return ["simulate", ws.config(**{"input.ms": str(ws.dir / "s.ms"),
                                         "simulate.sky_image": str(path)})]

    return argv


for kind, needle in (("no-wcs", "no celestial WCS"), ("nan", "NaN"), ("jy-beam", "Jy/beam")):
    case(f"simcmd-sky-image-{kind}", "simcmd", _sky_fits(kind), "simulate.sky_image",
         "sky.fits", needle)

# simulate through `radimg run` (input.simulate: true)
case("simulate-run-unknown-telescope", "simulate",
     run_set("simulate.telescope=meerkaat", **{"input.simulate": True,
                                               "input.ms": "__DIR__/sim.ms"}),
     "simulate.telescope", "meerkat")
case("simulate-run-source-behind-the-sky", "simulate",
     run_set(**{"input.simulate": True, "input.ms": "__DIR__/sim.ms",
                "simulate.sources": [{"ra_deg": 180.0, "dec_deg": 27.0, "flux_jy": 1.0}]}),
     "simulate.sources", "90 deg")


case("simulate-run-every-sample-beyond-the-uv-grid", "simulate",
     run_set(**{"input.simulate": True, "input.ms": "__DIR__/mk.ms",
                "simulate.telescope": "meerkat", "simulate.dec_deg": -45.0,
                "simulate.freq_hz": 1.4e9, "image.npix": 32, "image.cell_arcsec": 1200.0}),
     "image.cell_arcsec", "every one of the", "beyond the uv grid", leaves=("mk.ms",))


def _sim_other_section(ws):
    """A simulated MS of another simulate: section is replaced only with overwrite."""
    ms = ws.ms_copy(name="sim.ms")
    return ["run", ws.config(ms=ms, **{"input.simulate": True, "simulate.nchan": 3})]


case("simulate-run-other-section-needs-overwrite", "simulate", _sim_other_section,
     "input.ms", "another simulate", "output.overwrite")

# ---- Measurement Set problems -------------------------------------------------------------


def _ms_path(path_fn):
    def argv(ws):
        p = path_fn(ws)
        return ["run", ws.config(ms=p)]

    return argv


case("ms-missing", "ms", _ms_path(lambda ws: ws.dir / "nope.ms"), "nope.ms", "does not exist")
case("ms-is-a-file", "ms", _ms_path(lambda ws: _write_bytes(ws.dir / "f.ms", b"x")), "f.ms",
     "not a Measurement Set")


def _empty_dir(ws):
    (ws.dir / "empty.ms").mkdir()
    return ws.dir / "empty.ms"


case("ms-empty-directory", "ms", _ms_path(_empty_dir), "empty.ms", "not a Measurement Set")


def _subtable_as_ms(ws):
    ms = ws.ms_copy(name="o.ms")
    return ms / "ANTENNA"


case("ms-a-subtable-given", "ms", _ms_path(_subtable_as_ms), "ANTENNA", "not a Measurement Set")
for sub in ("SPECTRAL_WINDOW", "FIELD", "DATA_DESCRIPTION", "POLARIZATION"):
    case(f"ms-missing-{sub}", "ms",
         run_ms(None, files=lambda p, sub=sub: shutil.rmtree(p / sub), name=f"no{sub.lower()}.ms"),
         sub)


def _truncate(which):
    def files(p):
        victim = max(p.glob("table.f*"), key=lambda q: q.stat().st_size) if which == "largest" \
            else p / which
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 4)

    return files


case("ms-truncated-table-f0", "ms", run_ms(None, files=_truncate("table.f0"), name="trunc.ms"),
     "trunc.ms")
case("ms-truncated-largest", "ms", run_ms(None, files=_truncate("largest"), name="trunc.ms"),
     "trunc.ms")


def _corrupt_descriptor(p):
    with open(p / "table.dat", "r+b") as f:
        f.seek(64)
        f.write(np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8).tobytes())


case("ms-corrupt-descriptor", "ms", run_ms(None, files=_corrupt_descriptor, name="corrupt.ms"),
     "corrupt.ms")
def _empty_ms(ws, name="empty.ms"):
    """The base MS with no rows (every subtable kept)."""
    from casacore.tables import table

    dst = ws.dir / name
    with table(str(ws.shared.ms), ack=False) as t:
        q = t.query("FALSE")
        q.copy(str(dst), deep=True, valuecopy=True)
        q.close()
    ws.watch(dst)
    return dst


case("ms-zero-rows", "ms", lambda ws: ["run", ws.config(ms=_empty_ms(ws))], "empty.ms",
     "zero rows")
case("ms-datacolumn-typo", "ms", run_set(**{"input.datacolumn": "DAT"}), "'DAT'", "DATA")
case("ms-datacolumn-absent", "ms", run_set(**{"input.datacolumn": "CORRECTED_DATA"}),
     "CORRECTED_DATA", "not found")
case("ms-spw-out-of-range", "ms", run_set(**{"input.spw": 3}), "spectral window 3",
     "out of range")
case("ms-field-out-of-range", "ms", run_set(**{"input.field": 2}), "field 2", "out of range")


def _set_col(col, fn):
    def mutate(t, p):
        a = t.getcol(col)
        a = fn(a)
        t.putcol(col, a)

    return mutate


def _weights(fn):
    def mutate(t, p):
        for col in ("WEIGHT_SPECTRUM", "WEIGHT"):
            if col in t.colnames() and t.iscelldefined(col, 0):
                t.putcol(col, fn(t.getcol(col)))

    return mutate


case("ms-all-weights-zero", "ms", run_ms(_weights(lambda w: w * 0), name="zerow.ms"),
     "zerow.ms", "zero weight")
case("ms-all-weights-negative", "ms", run_ms(_weights(lambda w: -np.abs(w) - 1), name="negw.ms"),
     "negw.ms", "zero weight")
case("ms-all-flagged", "ms", run_ms(_set_col("FLAG", lambda f: np.ones_like(f)), name="fl.ms"),
     "fl.ms", "flagged")
case("ms-all-flag-row", "ms",
     run_ms(_set_col("FLAG_ROW", lambda f: np.ones_like(f)), name="flrow.ms"), "flrow.ms",
     "flagged")
case("ms-all-data-nan", "ms",
     run_ms(_set_col("DATA", lambda d: d * np.nan), name="nan.ms"), "nan.ms", "NaN")
case("ms-all-uvw-nan", "ms",
     run_ms(_set_col("UVW", lambda u: u * np.nan), name="nanuvw.ms"), "nanuvw.ms", "UVW")
case("ms-all-uvw-zero", "ms",
     run_ms(_set_col("UVW", lambda u: u * 0), name="zerouvw.ms"), "zerouvw.ms", "UVW")


def _some_nan_weights(w):
    w = w.copy()
    w[:7] = np.nan
    return w


def _warned(*needles):
    def check(ws, err):
        assert ws.out.exists(), err
        for n in needles:
            assert n in err, (n, err)

    return check


case("ms-some-weights-nan-warns", "ms", run_ms(_weights(_some_nan_weights), name="nanw.ms"),
     status=0, check=_warned("nanw.ms", "NaN", "flagged"))


def _some_uvw_nan(u):
    u = u.copy()
    u[:5] = np.nan
    return u


case("ms-some-uvw-nan-warns", "ms", run_ms(_set_col("UVW", _some_uvw_nan), name="someuvw.ms"),
     status=0, check=_warned("someuvw.ms", "UVW", "flagged"))


def _spw(fn):
    def mutate(t, p):
        s = p / "SPECTRAL_WINDOW"
        from casacore.tables import table

        with table(str(s), readonly=False, ack=False) as st:
            fn(st)

    return mutate


def _chan_freq(value):
    def fn(st):
        f = st.getcell("CHAN_FREQ", 0)
        f[:] = value
        st.putcell("CHAN_FREQ", 0, f)

    return fn


for val, name in ((0.0, "zero"), (np.nan, "nan"), (-1.5e8, "negative"), (np.inf, "inf")):
    case(f"ms-chan-freq-{name}", "ms", run_ms(_spw(_chan_freq(val)), name=f"f{name}.ms"),
         f"f{name}.ms", "CHAN_FREQ", "> 0 Hz")


def _field(fn):
    def mutate(t, p):
        from casacore.tables import table

        with table(str(p / "FIELD"), readonly=False, ack=False) as ft:
            fn(ft)

    return mutate


def _phase_dir(value):
    def fn(ft):
        d = ft.getcell("PHASE_DIR", 0)
        d[...] = value
        ft.putcell("PHASE_DIR", 0, d)

    return fn


case("ms-phase-dir-nan", "ms", run_ms(_field(_phase_dir(np.nan)), name="pdnan.ms"),
     "pdnan.ms", "PHASE_DIR", "finite")
case("ms-phase-dir-dec-beyond-pole", "ms", run_ms(_field(_phase_dir(2.0)), name="pdpole.ms"),
     "pdpole.ms", "PHASE_DIR", "90 deg")


def _corr_types(types):
    def mutate(t, p):
        from casacore.tables import table

        with table(str(p / "POLARIZATION"), readonly=False, ack=False) as pt:
            pt.putcell("CORR_TYPE", 0, np.array(types, dtype=np.int32))

    return mutate


case("ms-no-stokes-i-correlation", "ms", run_ms(_corr_types([10, 11]), name="xy.ms"),
     "xy.ms", "Stokes I", "CORR_TYPE")


def _all_auto(t, p):
    a1 = t.getcol("ANTENNA1")
    t.putcol("ANTENNA2", a1)


case("ms-only-autocorrelations", "ms", run_ms(_all_auto, name="auto.ms"), "auto.ms",
     "autocorrelation", "input.autocorrelations")

# ---- selection, Stokes parameters and output channels (issue #15) ---------------------------
# The base MS holds XX and YY (no cross hands) in 2 channels.

case("config-image.stokes-unknown-letter", "config", run_set("image.stokes=IQX"),
     "image.stokes", "'X'")
case("ms-stokes-u-from-parallel-hands", "ms", run_set("image.stokes=IU"), "image.stokes",
     "Stokes U", "CORR_TYPE")
case("ms-chan-range-selects-nothing", "ms", run_set("input.chan_range=[5, 6]"),
     "input.chan_range", "selects no channel")
case("ms-uv-range-leaves-nothing", "ms", run_set("input.uv_range_lambda=[1.0e7, null]"),
     "input.uv_range_lambda", "nothing to image")
case("ms-channels-out-above-channels", "ms", run_set("image.channels_out=3"),
     "image.channels_out", "2 channel")


def _flag_channel(chan):
    def mutate(t, p):
        f = t.getcol("FLAG")
        f[:, chan, :] = True
        t.putcol("FLAG", f)

    return mutate


case("ms-output-channel-without-data", "ms",
     run_ms(_flag_channel(1), "image.channels_out=2", name="ch1flagged.ms"),
     "ch1flagged.ms", "output channel 1", "image.channels_out")


def _shifted_centre(t, p):
    from casacore.tables import table

    with table(str(p / "FIELD"), readonly=False, ack=False) as ft:
        d = ft.getcell("PHASE_DIR", 0)
        d[..., 0] += 0.01
        ft.putcell("PHASE_DIR", 0, d)


def _two_ms(mutate):
    def argv(ws):
        a = ws.ms_copy(None, name="a.ms")
        b = ws.ms_copy(mutate, name="b.ms")
        return ["run", ws.config(**{"input.ms": [str(a), str(b)]})]

    return argv


case("ms-list-different-phase-centres", "ms", _two_ms(_shifted_centre), "b.ms",
     "different phase centres", "image.phase_centre")
case("ms-list-same-phase-centre-images", "ms", _two_ms(None), status=0, check=_product_exists)
case("ms-spw-list-images", "ms", run_set("input.spw=[0]"), status=0, check=_product_exists)
case("deconv-stop-after-major-of-a-stokes-cube", "deconv",
     run_set("image.stokes=IQ", "deconvolution.algorithm=clean",
             "deconvolution.stop_after_major=1"),
     "deconvolution.stop_after_major", "image.stokes", "without checkpoints")
case("deconv-stop-after-major-of-a-channel-cube", "deconv",
     run_set("image.channels_out=2", "deconvolution.algorithm=clean",
             "deconvolution.stop_after_major=1"),
     "deconvolution.stop_after_major", "image.channels_out")
case("deconv-resume-of-a-cube", "deconv",
     lambda ws: ["run", ws.config(), "--set", "image.channels_out=2", "--set",
                 "deconvolution.algorithm=clean", "--resume"],
     "--resume", "image by image", "cannot resume")
case("deconv-spectral-terms-above-channels-out", "deconv",
     run_set("image.channels_out=2", "deconvolution.join_channels=true",
             "deconvolution.spectral_terms=3"),
     "deconvolution.spectral_terms = 3", "image.channels_out = 2")
case("deconv-spectral-terms-zero", "deconv", run_set("deconvolution.spectral_terms=0"),
     "deconvolution.spectral_terms")
case("deconv-joined-clark", "deconv",
     run_set("image.channels_out=2", "deconvolution.join_channels=true",
             "deconvolution.algorithm=clean", "deconvolution.minor=clark"),
     "deconvolution.join_channels", "deconvolution.minor = clark")
case("deconv-joined-admm", "deconv",
     run_set("image.stokes=IQ", "deconvolution.join_polarizations=true",
             "deconvolution.algorithm=admm"),
     "join_polarizations", "deconvolution.algorithm = admm")
case("deconv-resume-joined", "deconv",
     lambda ws: ["run", ws.config(), "--set", "image.channels_out=2", "--set",
                 "deconvolution.algorithm=clean", "--set", "deconvolution.join_channels=true",
                 "--resume"],
     "--resume", "deconvolution.join_channels", "cannot resume")
case("ms-channel-groups-above-ranks-or-channels", "ms",
     run_set("image.channels_out=2", "resources.channel_groups=3"),
     "resources.channel_groups = 3", "image.channels_out")
case("deconv-channel-groups-with-a-join", "deconv",
     run_set("image.channels_out=2", "deconvolution.algorithm=clean",
             "deconvolution.join_channels=true", "resources.channel_groups=2"),
     "resources.channel_groups = 2", "joined")
case("deconv-admm-of-stokes-q", "deconv",
     run_set("image.stokes=Q", "deconvolution.algorithm=admm"),
     "deconvolution.algorithm = admm", "x >= 0", "image.stokes")


def _locked(ws):
    ms = ws.ms_copy(name="locked.ms")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from casacore.tables import table
            t = table({str(ms)!r}, readonly=False, lockoptions='permanent', ack=False)
            print('locked', flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    ws.cleanup.append(lambda: (holder.kill(), holder.wait()))
    return ["run", ws.config(ms=ms, **{"input.lock_wait_s": 1.0})]


case("ms-write-locked-by-another-process", "ms", _locked, "locked.ms", "write-locked",
     "input.lock_wait_s", ranks=(1,))

# ---- deconvolution inputs -------------------------------------------------------------------

CLEAN = {"deconvolution.algorithm": "clean", "deconvolution.niter": 10}


def _mask_file(make):
    def argv(ws):
        path = make(ws)
        return ["run", ws.config(**CLEAN, **{"deconvolution.mask_path": str(path)})]

    return argv


case("deconv-mask-missing", "deconv", _mask_file(lambda ws: ws.dir / "mask.fits"),
     "deconvolution.mask_path", "not found")
case("deconv-mask-is-a-directory", "deconv", _mask_file(lambda ws: ws.dir),
     "deconvolution.mask_path", "directory")


def _fits_mask(shape):
    def make(ws):
        from astropy.io import fits

        p = ws.dir / "mask.fits"
        fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(p)
        return p

    return make


case("deconv-mask-wrong-shape", "deconv", _mask_file(_fits_mask((64, 64))),
     "deconvolution.mask_path", "(64, 64)", "(128, 128)")
case("deconv-mask-all-zero", "deconv", _mask_file(lambda ws: _zero_mask(ws)),
     "mask", "no pixel")


def _zero_mask(ws):
    from astropy.io import fits

    p = ws.dir / "zero.fits"
    fits.PrimaryHDU(np.zeros((128, 128), np.float32)).writeto(p)
    return p


case("deconv-mask-not-fits-or-hdf5", "deconv",
     _mask_file(lambda ws: _write_bytes(ws.dir / "mask.txt", b"1 0 1\n")),
     "deconvolution.mask_path", "mask.txt")


def _h5_no_2d(ws):
    import h5py

    p = ws.dir / "mask.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.ones(5)
    return p


case("deconv-mask-hdf5-without-2d", "deconv", _mask_file(_h5_no_2d),
     "deconvolution.mask_path", "mask.h5")
case("deconv-mask-box-off-image", "deconv",
     run_set(**CLEAN, **{"deconvolution.mask_boxes": [[500, 500, 600, 600]]}),
     "deconvolution.mask_boxes[0]", "outside")
case("deconv-resume-without-checkpoint", "deconv",
     lambda ws: ["run", ws.config(**CLEAN), "--resume"], "--resume", "no checkpoint")
case("deconv-resume-with-algorithm-none", "deconv",
     lambda ws: ["run", ws.config(), "--resume"], "--resume", "deconvolution.algorithm")


def _resume_corrupt(ws):
    ws.out.parent.mkdir(parents=True)
    (ws.out.parent / "run.h5.ckpt.h5").write_bytes(b"not hdf5")
    return ["run", ws.config(**CLEAN), "--resume"]


case("deconv-resume-corrupt-checkpoint", "deconv", _resume_corrupt, "--resume", "checkpoint")


def _resume_other_geometry(ws):
    ws.out.parent.mkdir(parents=True)
    shutil.copy(ws.shared.product, ws.out.parent / "run.h5.ckpt.h5")
    return ["run", ws.config(**CLEAN), "--resume"]


case("deconv-resume-not-a-checkpoint", "deconv", _resume_other_geometry, "--resume",
     "checkpoint")


def _stopped(ws, err):
    assert ws.out.exists() and "not final" in err, err


case("deconv-stop-after-major-exits-3", "deconv",
     run_set(**{**CLEAN, "deconvolution.stop_after_major": 1,
                "deconvolution.auto_threshold": 0.0, "deconvolution.niter": 200}),
     "not final", status=3, check=_stopped)

# ---- warnings only (exit 0, and what was done is said) ----------------------------------------

case("warn-cell-too-coarse-drops-and-counts", "config",
     run_set(**{"image.cell_arcsec": 600.0}), status=0,
     check=_warned("image.cell_arcsec", "600 arcsec is too coarse"))
case("warn-npix-rounded-up", "config", run_set(**{"image.npix": 262}), status=0,
     check=_warned("image.npix", "262", "rounded up to 270"))


def _autocorr_rows(t, p):
    n = t.nrows()
    a1 = t.getcol("ANTENNA1")
    a2 = t.getcol("ANTENNA2")
    a2[: n // 10] = a1[: n // 10]
    t.putcol("ANTENNA2", a2)


case("warn-autocorrelations-left-out", "ms", run_ms(_autocorr_rows, name="auto10.ms"),
     status=0, check=_product_exists)

# ---- plan -----------------------------------------------------------------------------------------


def _plan(ms_fn=None, *extra, **over):
    def argv(ws):
        ms = None if ms_fn is None else ms_fn(ws)
        return ["plan", ws.config(ms=ms, **over), "--ranks", "2", *extra]

    return argv


case("plan-missing-ms", "plan", _plan(lambda ws: ws.dir / "nope.ms"), "nope.ms",
     "does not exist")
case("plan-truncated-ms", "plan",
     lambda ws: ["plan", ws.config(ms=ws.ms_copy(files=_truncate("largest"), name="trunc.ms")),
                 "--ranks", "2"], "trunc.ms")
case("plan-no-spectral-window", "plan",
     lambda ws: ["plan", ws.config(ms=ws.ms_copy(files=lambda p: shutil.rmtree(
         p / "SPECTRAL_WINDOW"), name="nospw.ms")), "--ranks", "2"],
     "nospw.ms", "SPECTRAL_WINDOW")
case("plan-zero-rows", "plan",
     lambda ws: ["plan", ws.config(ms=_empty_ms(ws)), "--ranks", "2"], "empty.ms",
     "zero rows")
case("plan-zero-hz", "plan",
     lambda ws: ["plan", ws.config(ms=ws.ms_copy(_spw(_chan_freq(0.0)), name="f0.ms")),
                 "--ranks", "2"], "f0.ms", "CHAN_FREQ")
case("plan-ranks-zero", "plan", lambda ws: ["plan", ws.config(), "--ranks", "0"], "--ranks")
case("plan-ranks-negative", "plan", lambda ws: ["plan", ws.config(), "--ranks", "-3"],
     "--ranks")
case("plan-mem-without-unit", "plan",
     lambda ws: ["plan", ws.config(), "--ranks", "2", "--mem-per-rank", "8"],
     "resources.mem_per_rank", "unit")


def _huge_plan_ok(ws, err):
    pass


case("plan-huge-image-models-without-allocating", "plan",
     lambda ws: ["plan", ws.config(**{"image.npix": 200000, "image.cell_arcsec": 1.0}),
                 "--ranks", "2", "--mem-per-rank", "64GiB"], status=0, check=_huge_plan_ok)

# ---- products: info, export, preview ---------------------------------------------------------------


def _prod(cmd, make=None, *extra):
    def argv(ws):
        p = make(ws) if make else ws.product_copy()
        return [cmd, str(p), *[e(ws) if callable(e) else e for e in extra]]

    return argv


def _nan_wcs(f):
    f["images"].attrs["crval_deg"] = np.array([np.nan, np.nan])


def _no_wcs(f):
    del f["images"].attrs["cdelt_deg"]


for cmd, extra in (("info", ()), ("export", ("--fits", lambda ws: str(ws.dir / "fits"))),
                   ("preview", ("--png", lambda ws: str(ws.dir / "p.png")))):
    case(f"product-{cmd}-missing", "product", _prod(cmd, lambda ws: ws.dir / "nope.h5", *extra),
         "nope.h5")
    case(f"product-{cmd}-not-hdf5", "product",
         _prod(cmd, lambda ws: _write_bytes(ws.dir / "x.h5", b"hello"), *extra), "x.h5")
    case(f"product-{cmd}-foreign-hdf5", "product", _prod(cmd, lambda ws: _foreign_h5(ws), *extra),
         "foreign.h5")
    case(f"product-{cmd}-nan-phase-centre", "product",
         _prod(cmd, lambda ws: ws.product_copy(mutate=_nan_wcs), *extra), "crval_deg", "finite")
    case(f"product-{cmd}-wcs-missing", "product",
         _prod(cmd, lambda ws: ws.product_copy(mutate=_no_wcs), *extra), "cdelt_deg")


def _foreign_h5(ws):
    import h5py

    p = ws.dir / "foreign.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.ones(3)
    return p


case("product-export-into-ms", "product",
     _prod("export", None, "--fits", lambda ws: str(ws.ms_copy(name="o.ms") / "fits")),
     "inside the Measurement Set")
case("product-export-fits-dir-is-a-file", "product",
     _prod("export", None, "--fits", lambda ws: str(_write_bytes(ws.dir / "f", b"x"))),
     "not a directory")


def _export_over_foreign(ws):
    d = ws.dir / "fits"
    d.mkdir()
    (d / "prod-dirty.fits").write_bytes(b"mine")
    return ["export", str(ws.product_copy()), "--fits", str(d), "--overwrite"]


case("product-export-overwrite-refuses-foreign", "product", _export_over_foreign,
     "prod-dirty.fits", "not written by radimg")


def _export_existing(ws):
    d = ws.dir / "fits"
    argv = ["export", str(ws.product_copy()), "--fits", str(d)]
    from radimg import cli

    with redirect_stdout(io.StringIO()):
        assert cli.main(argv) == 0
    return argv


case("product-export-existing-without-overwrite", "product", _export_existing,
     "already exists", "--overwrite")
for dpi in ("0", "-5", "100000"):
    case(f"product-preview-dpi-{dpi}", "product",
         _prod("preview", None, "--png", lambda ws: str(ws.dir / "p.png"), "--dpi", dpi),
         "--dpi", dpi)
case("product-preview-jpg", "product",
     _prod("preview", None, "--png", lambda ws: str(ws.dir / "p.jpg")), "p.jpg", ".png")
case("product-preview-load-jpeg", "product",
     _prod("preview", None, "--load-png", lambda ws: str(ws.dir / "l.jpeg")), "l.jpeg", ".png")
case("product-preview-into-ms", "product",
     _prod("preview", None, "--png", lambda ws: str(ws.ms_copy(name="o.ms") / "p.png")),
     "inside the Measurement Set")


def _preview_over_foreign(ws):
    (ws.dir / "p.png").write_bytes(b"\x89PNG\r\n\x1a\nmy figure")
    return ["preview", str(ws.product_copy()), "--png", str(ws.dir / "p.png")]


case("product-preview-refuses-foreign-png", "product", _preview_over_foreign, "p.png",
     "not written by radimg")
case("product-preview-same-file-twice", "product",
     _prod("preview", None, "--png", lambda ws: str(ws.dir / "p.png"), "--load-png",
           lambda ws: str(ws.dir / "p.png")), "same file")
case("product-preview-nothing-asked", "product", _prod("preview"), "--png")


def _info_dec30(ws, err):
    pass


# ---- the command line itself ----------------------------------------------------------------------

case("cli-unknown-command", "cli", lambda ws: ["frobnicate"], "invalid choice")
case("cli-run-without-config", "cli", lambda ws: ["run"], "CONFIG")
case("cli-plan-without-ranks", "cli", lambda ws: ["plan", ws.config()], "--ranks")
case("cli-plan-ranks-not-a-number", "cli", lambda ws: ["plan", ws.config(), "--ranks", "two"],
     "--ranks")
case("cli-preview-dpi-not-a-number", "cli",
     lambda ws: ["preview", str(ws.product_copy()), "--png", "x.png", "--dpi", "high"], "--dpi")
case("cli-config-dump-with-config", "cli", lambda ws: ["config", "--dump", ws.config()],
     "--dump")
case("cli-export-without-fits", "cli", lambda ws: ["export", str(ws.product_copy())], "--fits")


# --------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------


def fill_dir_placeholders(argv_list, ws):
    """Configs may name ``__DIR__`` (the case's directory) in values."""
    for p in ws.dir.glob("*.yaml"):
        data = p.read_bytes()
        if b"__DIR__" in data:
            p.write_bytes(data.replace(b"__DIR__", str(ws.dir).encode()))
    return argv_list


def prepare(c: Case, ws: Workspace, comm=None):
    """Build the case's inputs (rank 0) and return (argv, MS digests, tree of ws.dir)."""
    argv = digests = before = None
    if comm is None or comm.rank == 0:
        argv = fill_dir_placeholders([str(a) for a in c.argv(ws)], ws)
        digests = {ms: ms_digest(ms) for ms in ws.watched}
        before = tree(ws.dir)
    if comm is not None:
        argv = comm.bcast(argv, root=0)
    return argv, digests, before


def execute(argv):
    """``radimg ARGV`` in-process: (exit status, stderr, stdout)."""
    from radimg import cli

    err, out = io.StringIO(), io.StringIO()
    home = os.environ.get("HOME")
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 2
    finally:
        if home is not None:
            os.environ["HOME"] = home
    return rc, err.getvalue(), out.getvalue()


def assert_outcome(c: Case, ws: Workspace, rc, err, out, before_tree, digests, printed_by=1):
    """The checks of the module docstring (on rank 0 under MPI; ``printed_by``: how many
    ranks printed an error line)."""
    assert rc == c.status, f"{c.id}: exit {rc}, expected {c.status}\n{err}"
    assert "Traceback" not in err, f"{c.id}: traceback\n{err}"
    assert "internal error" not in err, f"{c.id}: called an internal error\n{err}"
    for n in c.needles:
        assert n in err, f"{c.id}: {n!r} not in the message\n{err}"
    if c.status == 2:
        assert "radimg: error:" in err or "usage:" in err, f"{c.id}: no error line\n{err}"
        assert printed_by == 1, f"{c.id}: the error was printed by {printed_by} ranks"
        new = {p for p in tree(ws.dir) - before_tree if p.split(os.sep)[0] not in c.leaves}
        assert not new, f"{c.id}: left behind {sorted(new)}\n{err}"
    if c.check is not None:
        c.check(ws, err + out)
    for ms, d in digests.items():
        assert ms_digest(ms) == d, f"{c.id}: the Measurement Set {ms} changed"
