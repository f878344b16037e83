#!/usr/bin/env python
"""GPU vs CPU operator throughput on the operator benchmark problems (scripts/bench_operator.py).

For each case: the CPU operator's ``hdot`` next to the GPU operator's ``hdot`` with host data
(visibilities cross PCIe every call), ``dirty`` and ``residual`` with resident data (one image
in, one image out: a major cycle) and ``dot``; a major-cycle loop (``--cycles``) on both, as
the pipeline runs it (CPU: ``hdot(vis - dot(model))``; GPU: ``set_data`` once, then
``residual_image``), with the host<->device bytes per cycle and of the set-up
(``transfer_summary``); set-up time, samples/s, and the GPU/CPU difference relative to the
peak. ``--mode`` is none, wstack or wstack-wproject (the w-projection CUDA kernels).

The major-cycle loop and the dirty+PSF timing use the operators ``radimg run`` builds at one
rank (radimg.parallel: ``DistributedOperator`` on the CPU, ``GpuDistributedOperator`` on the
GPU, the same scheme): dirty+PSF is the figure issue #14 item 6 sets a target on (GPU >= 5x
radimg on all the CPU's cores, ``speedup_dirty_psf``), and the bytes per major cycle its
other target (one image each way). ``--nthreads`` defaults to every core this process may
use, so the CPU side is radimg on the whole machine.

Without a usable GPU it prints "GPU unavailable: <reason>", writes JSON saying so (``--json``)
and exits 0. ``--simulator`` (with ``NUMBA_ENABLE_CUDASIM=1``) runs the same code on the numba
CUDA simulator to check the script itself; its timings mean nothing.

Example: ``python scripts/bench_gpu.py --case all --scale 1 --nthreads 16 --json
out/bench_gpu.json`` (bench_operator.py's cases a, b, c at full size).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _write(path, payload):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=1)


def _timed(sync, repeat, fn, *args):
    """Best of ``repeat`` calls of ``fn(*args)`` (device synchronised around each)."""
    best = np.inf
    out = None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn(*args)
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _planes(stats):
    """w-planes (wstack) or w-stacks (wstack-wproject) of an operator's stats."""
    return int(stats.get("nplanes", stats.get("nstacks", 1)))


def _dirty_psf_cpu(op, vis, ones, wgt):
    """The CPU pipeline's dirty image and PSF (two adjoints)."""
    return op.hdot(vis, wgt), op.hdot(ones, wgt)


def _dirty_psf_gpu(op):
    """The GPU pipeline's dirty image and PSF from resident samples."""
    return op.dirty_image(), op.psf_image()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", help="a, b, c or all (comma list allowed)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mode", default="wstack", choices=["none", "wstack", "wstack-wproject"])
    ap.add_argument("--epsilon", type=float, default=1e-5)
    ap.add_argument("--nthreads", type=int, default=len(os.sched_getaffinity(0)),
                    help="CPU operator threads (default: every core this process may use)")
    ap.add_argument("--precision", default="single", choices=["single", "double"])
    ap.add_argument("--oversampling", default="2.0")
    ap.add_argument("--repeat", type=int, default=2, help="best of N timed calls")
    ap.add_argument("--cycles", type=int, default=3, help="major cycles in the loop timing")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU operator")
    ap.add_argument("--simulator", action="store_true",
                    help="accept the numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): checks the "
                         "script, not the speed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from radimg.gpu import GpuUnavailableError, check_gpu_available, select_device

    try:
        kind = check_gpu_available(allow_simulator=args.simulator)
    except GpuUnavailableError as exc:
        print(f"GPU unavailable: {exc}")
        _write(args.json, dict(argv=sys.argv[1:], gpu_available=False, reason=str(exc),
                               results=[]))
        return []

    from bench_operator import make_case, point_sources_vis

    from radimg.gpu.operator import make_operator as make_gpu
    from radimg.ops.operator import make_operator as make_cpu
    from radimg.parallel.gpu_operator import GpuDistributedOperator
    from radimg.parallel.operator import DistributedOperator

    nosync = lambda: None  # noqa: E731
    if kind == "simulator":
        gpu_name, sync = "numba CUDA simulator (timings meaningless)", nosync
    else:
        import cupy

        dev = select_device()
        props = cupy.cuda.runtime.getDeviceProperties(dev)
        gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        sync = cupy.cuda.Device(dev).synchronize
    print(f"GPU: {gpu_name}")
    cdt = np.complex64 if args.precision == "single" else np.complex128
    rdt = np.float32 if args.precision == "single" else np.float64
    ov = args.oversampling if args.oversampling == "auto" else float(args.oversampling)
    kw = dict(mode=args.mode, epsilon=args.epsilon, precision=args.precision, oversampling=ov)

    # Compile (numba CPU and CUDA kernels, cuFFT plans) before anything is timed.
    wrng = np.random.default_rng(0)
    wuvw = wrng.uniform(-50, 50, (200, 3))
    for make in (make_cpu, make_gpu):
        wop = make(wuvw, np.array([1e8]), 64, 64, 1e-3, **kw)
        wop.dot(wop.hdot(np.ones((200, 1), cdt)).astype(np.float64))

    cases = "abc" if args.case == "all" else args.case.replace(",", "")
    results = []
    for case in cases:
        rng = np.random.default_rng(1234 + ord(case))
        d = make_case(case, args.scale, rng)
        uvw, freq, npix, cell = d["uvw"], d["freq"], d["npix"], d["cell"]
        nsamp = uvw.shape[0] * freq.size
        lms = [(0.0, 0.0), (0.3 * npix * cell, -0.2 * npix * cell)]
        vis = point_sources_vis(uvw, freq, lms, [1.0, 0.5], cdt)
        wgt = np.ones(vis.shape, dtype=rdt)
        model = np.zeros((npix, npix))
        model[npix // 2, npix // 2] = 0.9
        print(f"\ncase {case}: {d['desc']}", flush=True)
        row = dict(case=case, desc=d["desc"], nsamples=int(nsamp), npix=npix, gpu=gpu_name,
                   precision=args.precision, epsilon=args.epsilon, mode=args.mode, runs=[])

        ref = None
        if not args.no_cpu:
            t0 = time.perf_counter()
            cpu = make_cpu(uvw, freq, npix, npix, cell, nthreads=args.nthreads, **kw)
            t_set = time.perf_counter() - t0
            t_h, ref = _timed(nosync, args.repeat, cpu.hdot, vis, wgt)
            t_d, _ = _timed(nosync, args.repeat, cpu.dot, model)
            # radimg run's operator at one rank: dirty + PSF, then the major-cycle loop
            run_op = DistributedOperator(None, uvw, freq, wgt, npix, npix, cell,
                                         nthreads=args.nthreads, **kw)
            ones = np.ones_like(vis)
            t_dp, _ = _timed(nosync, args.repeat, _dirty_psf_cpu, run_op, vis, ones, wgt)
            t0 = time.perf_counter()
            for _ in range(args.cycles):
                run_op.hdot(vis - run_op.dot(model), wgt)
            t_cyc = (time.perf_counter() - t0) / max(args.cycles, 1)
            del run_op, ones
            row["runs"].append(dict(code=f"cpu x{args.nthreads}", setup_s=t_set, hdot_s=t_h,
                                    dot_s=t_d, major_cycle_s=t_cyc, samples_per_s=nsamp / t_h,
                                    dirty_psf_s=t_dp, nplanes=_planes(cpu.stats)))

        t0 = time.perf_counter()
        gpu = make_gpu(uvw, freq, npix, npix, cell, **kw)
        sync()
        t_set = time.perf_counter() - t0
        t_h, img = _timed(sync, args.repeat, gpu.hdot, vis, wgt)
        hdot_bytes = (gpu.stats["h2d_bytes_last_call"], gpu.stats["d2h_bytes_last_call"])
        t_d, _ = _timed(sync, args.repeat, gpu.dot, model)
        dot_bytes = (gpu.stats["h2d_bytes_last_call"], gpu.stats["d2h_bytes_last_call"])
        t0 = time.perf_counter()
        gpu.set_data(vis, wgt)
        sync()
        t_up = time.perf_counter() - t0
        t_dirty, _ = _timed(sync, args.repeat, gpu.dirty)
        t_res, _ = _timed(sync, args.repeat, gpu.residual, model)
        st = gpu.stats
        # radimg run's operator at one rank, on resident data (a fresh operator's counters):
        # dirty + PSF, then the major-cycle loop
        loop = GpuDistributedOperator(None, uvw, freq, wgt, npix, npix, cell, **kw)
        loop.set_data(vis, wgt)
        sync()
        t_dp, _ = _timed(sync, args.repeat, _dirty_psf_gpu, loop)
        t0 = time.perf_counter()
        for _ in range(args.cycles):
            loop.residual_image(model)
        sync()
        t_cyc = (time.perf_counter() - t0) / max(args.cycles, 1)
        moved = loop.transfer_summary()
        del loop
        err = (float(np.abs(img - ref).max() / np.abs(ref).max()) if ref is not None else None)
        row["runs"].append(dict(
            code="gpu", setup_s=t_set, hdot_s=t_h, dot_s=t_d, set_data_s=t_up,
            dirty_resident_s=t_dirty, residual_resident_s=t_res, samples_per_s=nsamp / t_h,
            samples_per_s_resident=nsamp / t_dirty, hdot_h2d_bytes=hdot_bytes[0],
            hdot_d2h_bytes=hdot_bytes[1], dot_h2d_bytes=dot_bytes[0], dot_d2h_bytes=dot_bytes[1],
            residual_h2d_bytes=st["h2d_bytes_last_call"],
            residual_d2h_bytes=st["d2h_bytes_last_call"], setup_h2d_bytes=st["setup_h2d_bytes"],
            resident_bytes=st["resident_bytes"], nplanes=_planes(st), err_vs_cpu=err,
            major_cycle_s=t_cyc, cycles=args.cycles, dirty_psf_s=t_dp,
            h2d_bytes_per_cycle=moved["h2d_bytes_per_cycle"],
            d2h_bytes_per_cycle=moved["d2h_bytes_per_cycle"],
            h2d_bytes_setup_incl_data=moved["h2d_bytes_setup"],
            sample_bytes=int(vis.nbytes + wgt.nbytes)))
        if not args.no_cpu:
            row["speedup_dirty_psf"] = row["runs"][0]["dirty_psf_s"] / t_dp
            row["image_bytes"] = int(npix * npix * np.dtype(rdt).itemsize)
        results.append(row)
        print(f"{'code':<10}{'setup s':>9}{'hdot s':>9}{'dot s':>9}{'cycle s':>9}{'Msamp/s':>9}"
              "  notes")
        for r in row["runs"]:
            notes = ""
            if r["code"] == "gpu":
                notes = (f"per cycle H2D {r['h2d_bytes_per_cycle']} B, D2H "
                         f"{r['d2h_bytes_per_cycle']} B (samples+weights {r['sample_bytes']} B "
                         f"sent once); resident dirty {r['dirty_resident_s']:.3f} s; host hdot "
                         f"moves {r['hdot_h2d_bytes'] + r['hdot_d2h_bytes']} B; err/peak vs "
                         f"cpu {r['err_vs_cpu']}")
            notes = f"dirty+PSF {r['dirty_psf_s']:.3f} s; " + notes
            print(f"{r['code']:<10}{r['setup_s']:>9.2f}{r['hdot_s']:>9.3f}{r['dot_s']:>9.3f}"
                  f"{r['major_cycle_s']:>9.3f}{r['samples_per_s'] / 1e6:>9.2f}  {notes}",
                  flush=True)
        if "speedup_dirty_psf" in row:
            print(f"GPU dirty+PSF speed-up over the CPU on {args.nthreads} threads: "
                  f"{row['speedup_dirty_psf']:.2f}x (target >= 5); one image is "
                  f"{row['image_bytes']} B", flush=True)
    _write(args.json, dict(argv=sys.argv[1:], gpu_available=True, gpu=gpu_name, scale=args.scale,
                           results=results))
    return results


if __name__ == "__main__":
    main()
