"""The ``radimg`` command line: a thin argparse layer over config, pipeline and product.

Nothing scientific is imported at module level, so ``radimg --help`` (and argument errors)
never load numpy-heavy modules, numba, h5py, casacore or mpi4py (pfb-imaging's rule). Each
command imports what it needs inside its function.

Exit codes: 0 success; 2 a user error (bad config, missing or existing file, permissions,
unreadable MS or product, an unsupported option combination), printed as
``radimg: error: <message>`` without a traceback; 1 an unexpected exception (traceback
printed, with ``[rank R/N]`` under MPI); 3 ``run`` stopped by SIGTERM/SIGUSR1 during
deconvolution after writing a complete checkpoint (continue with ``--resume``);
143 stopped by SIGTERM before anything could be checkpointed (no product); 130 interrupted
(Ctrl-C; under mpiexec the whole job ends at once, ``MPI_Abort(130)``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from radimg import __version__

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 3  # = radimg.pipeline.EXIT_INTERRUPTED (not imported: --help stays light)
EXIT_SIGINT = 130  # = radimg.parallel.mpi.EXIT_SIGINT

_RUN_EPILOG = """\
exit status:
  0    product written
  1    internal error (traceback with [rank R/N])
  2    user error: the message names the config key or file
  3    stopped by SIGTERM or SIGUSR1 during deconvolution after writing a complete
       checkpoint (OUTPUT.ckpt.h5); continue with: radimg run CONFIG --resume
       (same output.path, any number of ranks)
  143  stopped by SIGTERM before deconvolution (nothing to checkpoint yet): no product,
       nothing to resume; run again (SIGUSR1 there is only noted: deconvolution then stops
       at its first checkpoint)
  130  Ctrl-C (SIGINT): under mpiexec the whole job ends at once, in any stage (one
       line per interrupted rank, no traceback); no product; a checkpoint already
       written is complete and resumable with --resume
Under Slurm ask for an early warning so the last major cycle can finish and checkpoint:
sbatch --signal=USR1@300 ... (jobs/slurm/*.sbatch do; see jobs/README.md)."""


# --------------------------------------------------------------------------------------
# Commands (each imports its scientific dependencies lazily)
# --------------------------------------------------------------------------------------


def _verbosity(args) -> int:
    """0 = quiet, 1 = normal, 2 = verbose."""
    if getattr(args, "quiet", False):
        return 0
    return 2 if getattr(args, "verbose", False) else 1


def _resolve(args, extra: list[str] | None = None) -> dict:
    from radimg.config import resolve

    return resolve(args.config, list(args.set or []) + list(extra or []))


def _small_pages():
    """Ask numpy for ordinary pages (no ``madvise(MADV_HUGEPAGE)`` on its large arrays)
    unless ``NUMPY_MADVISE_HUGEPAGE`` says otherwise (see :func:`_pages_for`)."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2: numpy.core
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
    _set_madvise_hugepage(False)


def _pages_for(cfg):
    """Small pages for a run that only makes its images, numpy's huge pages otherwise.

    Where transparent huge pages are ``madvise`` with on-demand compaction (this machine,
    and common), the first touch of a large array stalls while the kernel compacts memory:
    0.9 s for a fresh 256 MiB array against 0.1 s with small pages. Huge pages then make the
    FFTs' column passes faster (fewer TLB misses): 35.9 against 39.0 s for a second
    application on scripts/bench_operator.py case b. A run with two applications (PSF and
    dirty image) pays the stalls and gains little (bench_operator case c 2.4 -> 1.2 s with
    small pages; the real 4096 x 30\" job 9.6-9.8 against 10.2-10.4 s in one alternated
    set, within noise in another); CLEAN and ADMM apply the operator again every cycle or
    iteration into the same kept buffers, so they keep numpy's default."""
    if cfg is not None and (cfg.get("deconvolution") or {}).get("algorithm") == "none":
        _small_pages()


def cmd_run(args) -> int:
    extra = []
    if args.overwrite:
        extra.append("output.overwrite=true")
    if args.mem_per_rank is not None:
        extra.append(f"resources.mem_per_rank={args.mem_per_rank}")
    from radimg.config import ConfigError

    err = cfg = None
    try:
        cfg = _resolve(args, extra)
    except ConfigError as exc:
        err = exc
    # Every rank resolves the config itself; they agree on the outcome (one collective), so
    # a rank that cannot read the config never leaves the others waiting in MPI.
    from radimg.parallel.mpi import get_comm, raise_from_any_rank

    raise_from_any_rank(get_comm(), err)
    _pages_for(cfg)
    from radimg import pipeline

    interrupted = getattr(pipeline, "JobInterrupted", ())
    try:
        pipeline.run(cfg, resume=args.resume, verbose=_verbosity(args))
    except interrupted as exc:
        if exc.rank == 0:
            print(
                f"radimg: {exc}; continue with: {_resume_command(args)} (any number of ranks)",
                file=sys.stderr,
                flush=True,
            )
        return exc.exit_code
    return EXIT_OK


def _resume_command(args) -> str:
    """The ``radimg run`` command line that continues this run from its checkpoint."""
    import shlex

    parts = ["radimg", "run", args.config]
    for item in args.set or []:
        parts += ["--set", item]
    if args.mem_per_rank is not None:
        parts += ["--mem-per-rank", args.mem_per_rank]
    return shlex.join([*parts, "--resume"])


def cmd_simulate(args) -> int:
    cfg = _resolve(args)
    from radimg.sim.simulate import simulate

    log = None if args.quiet else (lambda msg: print(f"radimg: {msg}", flush=True))
    simulate(cfg["simulate"], cfg["input"]["ms"], overwrite=args.overwrite, log=log)
    if not args.quiet:
        print(f"radimg: wrote simulated Measurement Set {cfg['input']['ms']}")
    return EXIT_OK


def _jsonable(obj):
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _cell(v, key: str = "") -> str:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if (
        ("bytes" in key or key.startswith("memory"))
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    ):
        from radimg.progress import format_bytes

        return format_bytes(v)
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_cell(x, key) for x in v) + "]"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


MAX_RANK_ROWS = 16


def _short(key: str) -> str:
    """Column name for a per-rank key: drop the redundant "_per_rank"."""
    return key.replace("_per_rank", "").replace("memory_breakdown.", "mem.")


def format_plan(result: dict, n_ranks: int) -> str:
    """Human-readable plan: summary values side by side, then per-rank tables per scheme
    (their min/mean/max above ``MAX_RANK_ROWS`` ranks).

    ``result`` holds ``"balanced"`` and ``"naive"`` dicts (scalars, per-rank lists, nested
    dicts); any other top-level keys are printed first as ``key: value``.
    """
    lines = []
    if isinstance(result.get("wterm"), dict) and result["wterm"].get("candidates"):
        # wterm.mode: the candidates with their predicted cost and accuracy, the chosen one
        # marked (radimg.ops.choose)
        from radimg.ops.choose import choice_table

        wt = result["wterm"]
        if wt["requested"] == "auto":
            lines.append(f"w-term mode: auto -> {wt['mode']}: {wt['reason']}")
        else:
            lines.append(f"w-term mode: {wt['mode']} (as configured)")
        lines += ["  " + ln for ln in choice_table(wt)]
        lines.append(f"  ({wt.get('cost_unit', 'predicted seconds')}; error bound relative "
                     "to the peak)")
        lines.append("")
    for k, v in result.items():
        if k == "wterm":
            continue
        if k not in ("balanced", "naive"):
            if isinstance(v, dict):
                for fk, fv in _flatten(v).items():
                    lines.append(f"{k}.{fk}: {_cell(fv, fk)}")
            else:
                lines.append(f"{k}: {_cell(v, k)}")
    schemes = [s for s in ("balanced", "naive") if isinstance(result.get(s), dict)]
    flat = {s: _flatten(result[s]) for s in schemes}
    keys = list(dict.fromkeys(k for s in schemes for k in flat[s]))

    def per_rank(v):
        v = v.tolist() if hasattr(v, "tolist") else v
        return isinstance(v, list) and len(v) == n_ranks

    scalar_keys = [k for k in keys if not any(per_rank(flat[s].get(k)) for s in schemes)]
    rank_keys = [k for k in keys if k not in scalar_keys]
    if scalar_keys:
        lines.append("")
        rows = []
        for k in scalar_keys:
            rows.append([k] + [_cell(flat[s].get(k, ""), k) for s in schemes])
        lines += _table(["", *schemes], rows)
    for s in schemes:
        cols = [k for k in rank_keys if k in flat[s]]
        if not cols:
            continue
        vals = {}
        for k in cols:
            v = flat[s][k]
            vals[k] = v.tolist() if hasattr(v, "tolist") else v
        names = [_short(k) for k in cols]
        lines.append("")
        if n_ranks <= MAX_RANK_ROWS:
            lines.append(f"per rank, {s}:")
            rows = [
                [str(r)] + [_cell(vals[k][r] if per_rank(vals[k]) else vals[k], k) for k in cols]
                for r in range(n_ranks)
            ]
            lines += _table(["rank", *names], rows)
        else:
            # thousands of ranks: the distribution, not the list
            lines.append(f"per rank, {s} ({n_ranks} ranks):")
            rows = []
            for k, name in zip(cols, names, strict=True):
                v = [float(x) for x in vals[k]] if per_rank(vals[k]) else [float(vals[k])]
                mean = sum(v) / len(v)
                ratio = f"{max(v) / mean:.3f}" if mean > 0 else "-"
                rows.append([name, _cell(min(v), k), _cell(mean, k), _cell(max(v), k), ratio])
            lines += _table(["", "min", "mean", "max", "max/mean"], rows)
    return "\n".join(lines).lstrip("\n") + "\n"


def cmd_plan(args) -> int:
    from radimg.config import ConfigError, parse_bytes

    extra = []
    if args.mem_per_rank is not None:
        extra.append(f"resources.mem_per_rank={args.mem_per_rank}")
    cfg = _resolve(args, extra)
    if args.ranks < 1:
        raise ConfigError(f"--ranks must be >= 1, got {args.ranks}")
    mem = cfg["resources"]["mem_per_rank"]
    mem_bytes = parse_bytes(mem) if mem is not None else None
    from radimg.parallel.plan import plan_from_config
    from radimg.parallel.plan_cube import cube_plan, format_cube_plan

    result = plan_from_config(cfg, args.ranks, mem_bytes)
    cube = cube_plan(cfg, args.ranks, mem_bytes)  # None for a single image
    if cube is not None:
        result["cube"] = cube
    if args.json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print(f"radimg plan for {args.ranks} rank(s), config {args.config}")
        print(format_plan(result, args.ranks), end="")
        if cube is not None:
            print(format_cube_plan(cube), end="")
    return EXIT_OK


def cmd_export(args) -> int:
    from radimg.io.product import export_fits

    paths = export_fits(
        args.product, args.fits, overwrite=args.overwrite, degenerate_axes=args.degenerate_axes
    )
    for p in paths:
        print(p)
    return EXIT_OK


def cmd_info(args) -> int:
    from radimg.io.product import info_text

    print(info_text(args.product), end="")
    return EXIT_OK


def cmd_preview(args) -> int:
    from radimg.preview import preview

    for p in preview(args.product, args.png, args.load_png, dpi=args.dpi):
        print(p)
    return EXIT_OK


def cmd_config(args) -> int:
    from radimg.config import ConfigError, dump_default, resolve, to_yaml

    if args.dump:
        if args.config is not None or args.set:
            raise ConfigError("config --dump takes no CONFIG or --set (it prints the defaults)")
        print(dump_default(), end="")
        return EXIT_OK
    if args.config is None and not args.set:
        raise ConfigError("config: give --dump, or CONFIG [--set ...] to print the resolved config")
    print(to_yaml(resolve(args.config, args.set or [])), end="")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

_SET_HELP = (
    "override one config key, e.g. --set image.npix=1024 --set wterm.epsilon=1e-4 "
    "(value parsed as YAML; repeatable; applied after CONFIG)"
)


def _add_set(p):
    p.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], help=_SET_HELP
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``radimg`` command (no scientific imports).

    Long because it is the flat list of the subcommands and their options, one
    ``add_parser``/``add_argument`` call each, read top to bottom like ``radimg --help``;
    splitting it per command would scatter that one table without making any call clearer.
    """
    parser = argparse.ArgumentParser(
        prog="radimg",
        description=(
            "Load-balanced distributed wide-field radio-interferometric imager. "
            "Run `radimg run` under mpiexec/srun for several ranks; one process is a valid run."
        ),
        epilog="`radimg COMMAND --help` describes each command. `radimg config --dump` lists every config key.",
    )
    parser.add_argument("--version", action="version", version=f"radimg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="image a Measurement Set (the main job; run under mpiexec -n N / srun)",
        description=(
            "Image the MS of CONFIG into an HDF5 product: weights, w-stacks, load-balanced "
            "gridding, deconvolution, restore. With input.simulate: true the MS is simulated first."
        ),
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    _add_set(p)
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint of output.path"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing product (sets output.overwrite)",
    )
    p.add_argument(
        "--mem-per-rank",
        metavar="SIZE",
        help="memory per rank, e.g. 8GiB (sets resources.mem_per_rank)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="more output: in batch logs a progress line per step (chunk read, major "
        "cycle) instead of one per RADIMG_PROGRESS_INTERVAL (30 s); tracebacks of user errors",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress, log lines or timing table; warnings and errors only",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "simulate",
        help="write the simulated Measurement Set described by the config's simulate: section",
        description="Write input.ms from the simulate: section of CONFIG (array, sky, hour angles, noise).",
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    _add_set(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing MS at input.ms")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "plan",
        help="stacks, per-rank load and memory, communication for N ranks (no MPI launch)",
        description=(
            "Plan a run for N ranks without launching them: w-stacks, per-rank load and memory, "
            "communication volume, for the load-balanced and the naive (one stack per rank) assignment."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument(
        "--ranks", "-n", type=int, required=True, metavar="N", help="number of MPI ranks"
    )
    p.add_argument(
        "--mem-per-rank",
        metavar="SIZE",
        help="memory per rank, e.g. 8GiB (sets resources.mem_per_rank)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    _add_set(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "export",
        help="write FITS files for each image of a product",
        description="Write <stem>-<image>.fits for each image of PRODUCT.h5 (north up, east left, SIN WCS).",
    )
    p.add_argument("product", metavar="PRODUCT.h5", help="HDF5 product of `radimg run`")
    p.add_argument(
        "--fits", required=True, metavar="DIR", help="output directory (created if missing)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing FITS files")
    p.add_argument(
        "--degenerate-axes",
        action="store_true",
        help="WSClean layout: data (1, 1, ny, nx) with FREQ and STOKES axes",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "config",
        help="print the full default config with comments (--dump), or a resolved config",
        description=(
            "--dump prints every key with its default and meaning. "
            "CONFIG [--set ...] prints the configuration a run would use."
        ),
    )
    p.add_argument("config", metavar="CONFIG", nargs="?", help="YAML config file to resolve")
    p.add_argument("--dump", action="store_true", help="print the default config with comments")
    _add_set(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "info",
        help="what a product holds: sizes, beam, timings, load balance",
        description="Summarise PRODUCT.h5: images and statistics, WCS, restoring beam, timings, load balance.",
    )
    p.add_argument("product", metavar="PRODUCT.h5", help="HDF5 product of `radimg run`")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "preview",
        help="quick-look PNGs: images on sky axes with the beam, per-rank load and memory",
        description=(
            "Write a PNG with the restored (else dirty) image, the residual and the PSF on "
            "RA/Dec axes with the restoring beam, and optionally a PNG of per-rank load, "
            "traffic, time and memory from the product's load-balance record."
        ),
    )
    p.add_argument("product", metavar="PRODUCT.h5", help="HDF5 product of `radimg run`")
    p.add_argument("--png", metavar="OUT.png", help="image figure (replaced if it exists)")
    p.add_argument(
        "--load-png", metavar="LOAD.png", help="per-rank load/memory bar charts (replaced)"
    )
    p.add_argument("--dpi", type=int, default=110, help="resolution (default 110)")
    p.set_defaults(func=cmd_preview)
    return parser


# --------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------


def _user_error_types() -> tuple[type, ...]:
    """Exception types that mean "the user must fix something".

    Modules are looked up in ``sys.modules`` rather than imported: if one of their
    exceptions was raised, the module is loaded; if not, importing it here would only slow
    the error path (and pull in casacore or h5py).
    """
    # NotImplementedError: an option combination this build does not support (the message
    # names the keys); the user must change the config, not report a bug.
    types: list[type] = [
        FileExistsError,
        FileNotFoundError,
        PermissionError,
        NotADirectoryError,
        NotImplementedError,
    ]
    for mod, name in (
        ("radimg.config", "ConfigError"),
        ("radimg.io.ms", "MSError"),
        ("radimg.io.product", "ProductError"),
    ):
        m = sys.modules.get(mod)
        t = getattr(m, name, None) if m is not None else None
        if isinstance(t, type):
            types.append(t)
    return tuple(types)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        # OSError's own str() is "[Errno 13] Permission denied: 'x'": keep it readable.
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings for an operator, not a developer: ``radimg: warning: <message>`` (the
    message names the config key), without the source line."""
    print(f"radimg: warning: {message}", file=file or sys.stderr, flush=True)


def _mpi_rank_size() -> tuple[int, int]:
    """(rank, size) of MPI.COMM_WORLD when this process initialised MPI, else (0, 1)."""
    mod = sys.modules.get("mpi4py.MPI")
    try:
        if mod is not None and mod.Is_initialized() and not mod.Is_finalized():
            return mod.COMM_WORLD.Get_rank(), mod.COMM_WORLD.Get_size()
    except Exception:  # noqa: BLE001 - no MPI: a single process
        pass
    return 0, 1


def _user_error(exc: BaseException, verbose: bool = False) -> int:
    """Report a user error once and return exit status 2.

    Raised on every rank alike (``radimg.parallel.mpi.everywhere``): rank 0 prints it, every
    rank exits 2. Raised on one rank of a multi-rank job only: that rank prints it with its
    rank and ends the job with ``MPI_Abort(2)``; exiting alone would leave the other ranks
    waiting in their next collective for ever.
    """
    rank, size = _mpi_rank_size()
    collective = bool(getattr(exc, "radimg_collective", False))
    if size > 1 and collective and rank != 0:
        return EXIT_USER
    if verbose:
        traceback.print_exc()
    prefix = f"[rank {rank}/{size}] " if size > 1 and not collective else ""
    print(f"radimg: error: {prefix}{_message(exc)}", file=sys.stderr, flush=True)
    if size > 1 and not collective:
        import time

        from radimg.parallel.mpi import IO_DRAIN_S, get_comm

        time.sleep(IO_DRAIN_S)
        get_comm().Abort(EXIT_USER)
    return EXIT_USER


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``radimg``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if "mpi4py.MPI" in sys.modules:  # a multi-rank job ends as a whole (MPI_Abort(130))
            from radimg.parallel.mpi import abort_interrupted

            abort_interrupted()
        print("radimg: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        # `radimg config --dump | head`: the reader left; not an error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    except SystemExit:
        raise
    except BaseException as exc:
        if isinstance(exc, _user_error_types()):
            return _user_error(exc, verbose=getattr(args, "verbose", False))
        traceback.print_exc()
        print(
            f"radimg: internal error ({type(exc).__name__}); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


def entry() -> None:
    """The ``radimg`` console command: :func:`main` with the garbage collector's first
    generation collected every 10,000 allocations instead of 700, then exit without its
    passes over every object at interpreter shutdown.

    Loading numba's compiled kernels makes a large object graph: at the default threshold a
    rank ran ~270 collections (2 full) during the real MWA CLEAN job, 0.09-0.14 s, and the
    job took 2.16-2.39 s against 1.92-2.16 s at 10,000 (18 collections; four alternated
    pairs). At shutdown the collector's passes took 0.17-0.22 s of every run's exit (0.03 s
    after ``gc.freeze``, which moves the objects out of its reach; reference counting still
    closes files and frees memory). In-process callers (tests) call :func:`main`, with the
    interpreter's settings."""
    import gc

    gc.set_threshold(10_000, 10, 10)
    rc = main()
    gc.freeze()
    sys.exit(rc)


if __name__ == "__main__":
    entry()
