#!/usr/bin/env python
"""How ``radimg run`` fails under mpiexec: how fast, with what exit status, leaving what.

The scenarios of tests/test_failure.py (which asserts the behaviour; this script measures
it), through the same helpers (tests/failure_util.py) and the same test-only fault hook
(``RADIMG_FAULT_INJECT``, radimg/pipeline.py), on the same small simulated observation
(128 MWA tiles, 48k samples, 128 x 128 image, CLEAN with several major cycles):

- ``exception-dirty`` / ``exception-major``: a RuntimeError on rank 1 while gridding the
  dirty image / at the start of the first major cycle. Expected: non-zero exit, the rank's
  traceback prefixed ``[rank 1/N]``, no product, no checkpoint.
- ``sigterm-psf``: SIGTERM to rank 1 while every rank sleeps in the PSF stage (before
  deconvolution: nothing to save). Expected: exit 143, the rank says why, no product.
- ``sigterm-clean``: SIGTERM to rank 1 after the first checkpoint (every major cycle slowed
  by 1.5 s of injected sleep). Expected: every rank stops after the same cycle, exit 3, a
  complete checkpoint, no product; ``--resume`` (at ``--resume-ranks``) then ends with the
  images of the uninterrupted reference run.
- ``sigint-mpiexec-psf`` / ``sigint-mpiexec-clean``: SIGINT to mpiexec (Ctrl-C in a
  terminal; hydra forwards it to every rank) while the ranks sleep in the PSF stage / after
  the first checkpoint. Expected: exit 130 at once, one line per rank and no traceback, no
  product; in CLEAN the checkpoint written before stays complete and ``--resume`` ends
  with the reference images.
- ``sigint-rank-psf`` / ``sigint-rank-clean``: SIGINT to rank 1 alone while it waits in a
  collective for rank 0, which sleeps 60 s (PSF stage / first major cycle). Expected: exit
  130 at once (not when rank 0 arrives), rank 1 says why, no product, no checkpoint.
- ``kill9``: SIGKILL to every process of the job (mpiexec, proxy, ranks) 2 s after the
  first checkpoint. Expected: no product, a complete checkpoint; ``--resume`` ends with the
  reference images.
- ``kill9-mpiexec``: SIGKILL to mpiexec alone while the ranks sleep 30 s in the PSF stage.
  Expected: hydra's proxy takes the ranks down with it (no orphan left), no product.

Latency is from the fault (the ``t=`` the failing rank stamps in its message) or from the
signal (taken just before ``kill``) to the moment the last process of the job has ended
(mpiexec, its proxy and the ranks, each in a process group of its own; polled every 10 ms);
the time to mpiexec's own exit is kept too. After each run the input Measurement Set's
checksum is compared with the one taken after simulating.

    .venv/bin/python scripts/bench_failure.py --repeats 3 --json out/bench_failure.json

Exit status 0 when every run behaved as expected, 1 otherwise (the table says which).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import signal
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import failure_util as fu  # noqa: E402 - needs the sys.path entry above

TOL = 1e-6  # resumed vs uninterrupted images, relative to the image's peak (as the tests)
SLOW_MAJOR = "rank=all,stage=major,sleep=1.5"  # time to signal between checkpoints


def _product_state(path):
    """'absent', 'complete' (h5py opens it and it has /images and /run) or 'unreadable'."""
    import h5py

    path = pathlib.Path(path)
    if not path.exists():
        return "absent"
    try:
        with h5py.File(path, "r") as f:
            return "complete" if "images" in f and "run" in f else "unreadable"
    except OSError:
        return "unreadable"


def _checkpoint_state(path):
    """(state as in :func:`_product_state`, counters or None): a complete checkpoint also
    reads back through ``radimg.deconv.checkpoint.read_checkpoint`` with finite images."""
    import numpy as np

    from radimg.deconv.checkpoint import read_checkpoint

    state = _product_state(path)
    if state != "complete":
        return state, None
    try:
        ck = read_checkpoint(path)
    except (OSError, ValueError, KeyError):
        return "unreadable", None
    if not np.isfinite(ck["image"]).all():
        return "unreadable", ck["counters"]
    return "complete", ck["counters"]


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.ms = tmp / "sim.ms"
        self.digest = None
        self.ref = None
        self.nmajor = None
        self.n = 0

    def _fresh(self, name):
        self.n += 1
        d = self.tmp / f"{self.n:02d}-{name}"
        d.mkdir()
        out = d / "out" / "run.h5"
        return d, out, fu.failure_config(d, self.ms, out)

    def prepare(self):
        from radimg.io.product import read_product

        cfg = fu.failure_config(self.tmp, self.ms, self.tmp / "ref.h5")
        t0 = time.time()
        rc, out, err, _ = fu.run_job(["simulate", cfg], timeout=300)
        if rc != 0:
            raise fu.JobError(f"simulate failed (rc {rc})\n{out}{err}")
        t_sim = time.time() - t0
        self.digest = fu.ms_digest(self.ms)
        t0 = time.time()
        rc, out, err, t_end = fu.run_job(["run", cfg], ranks=self.args.ranks, timeout=600)
        if rc != 0:
            raise fu.JobError(f"the reference run failed (rc {rc})\n{out}{err}")
        prod = read_product(self.tmp / "ref.h5")
        self.ref = prod["images"]
        self.nmajor = int(json.loads(prod["run"]["deconvolution_json"])["major_cycles"])
        return {
            "simulate_s": round(t_sim, 3),
            "run_s": round(t_end - t0, 3),
            "ranks": self.args.ranks,
            "major_cycles": self.nmajor,
            "ms_unchanged": fu.ms_digest(self.ms) == self.digest,
        }

    def _record(self, job, t_fault, out):
        """The record of a finished job (``job.finish`` returned) faulted at ``t_fault``."""
        ck_state, counters = _checkpoint_state(pathlib.Path(str(out) + ".ckpt.h5"))
        return {
            "exit_status": job.p.returncode,
            "latency_s": round(job.t_last - t_fault, 3),
            "latency_mpiexec_s": round(job.t_exit - t_fault, 3),
            "product": _product_state(out),
            "temporaries": fu.temporaries(out.parent) if out.parent.exists() else [],
            "checkpoint": ck_state,
            "checkpoint_counters": counters,
            "ms_unchanged": fu.ms_digest(self.ms) == self.digest,
        }

    def _resume(self, cfg, out, ranks):
        from radimg.io.product import read_product

        t0 = time.time()
        rc, stdout, err, t_end = fu.run_job(["run", cfg, "--resume"], ranks=ranks, timeout=600)
        res = {"ranks": ranks, "exit_status": rc, "seconds": round(t_end - t0, 3)}
        if rc == 0:
            res["max_rel_diff"] = fu.max_rel_diff(read_product(out)["images"], self.ref)
        else:
            res["tail"] = (stdout + err)[-2000:]
        res["temporaries"] = fu.temporaries(out.parent)
        res["ms_unchanged"] = fu.ms_digest(self.ms) == self.digest
        return res

    # ---- scenarios: each returns the run's record with an "ok" and the reasons if not ---

    def exception(self, stage):
        victim = 1 if self.args.ranks > 1 else 0
        _, out, cfg = self._fresh(f"exception-{stage}")
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault=f"rank={victim},stage={stage}")
        rc, _, err, _ = job.finish(300)
        m = re.search(r"injected fault on rank (\d+) at stage '(\w+)' \(t=([0-9.]+)\)", err)
        if not m:
            return {"ok": False, "why": ["the fault was not reported"], "tail": err[-2000:]}
        rec = self._record(job, float(m.group(3)), out)
        rec["reason_printed"] = f"[rank {victim}/{self.args.ranks}]" in err and "Traceback" in err
        return self._judge(rec, rc_ok=rc != 0, want_ckpt="absent")

    def sigterm_psf(self):
        _, out, cfg = self._fresh("sigterm-psf")
        victim = 1 if self.args.ranks > 1 else 0
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault="rank=all,stage=psf,sleep=30")
        pids = fu.rank_pids(job.p.pid, self.args.ranks)
        job.wait_for(lambda: "gridding PSF" in job.text, 300, "the PSF stage")
        t0 = time.time()
        os.kill(pids[victim], signal.SIGTERM)
        _, _, err, _ = job.finish(60)
        rec = self._record(job, t0, out)
        rec["reason_printed"] = (
            f"[rank {victim}/{self.args.ranks}] SIGTERM received before deconvolution" in err
        )
        return self._judge(rec, rc_ok=rec["exit_status"] == 143, want_ckpt="absent")

    def sigterm_clean(self):
        _, out, cfg = self._fresh("sigterm-clean")
        victim = 1 if self.args.ranks > 1 else 0
        ckpt = pathlib.Path(str(out) + ".ckpt.h5")
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault=SLOW_MAJOR)
        pids = fu.rank_pids(job.p.pid, self.args.ranks)
        job.wait_for(ckpt.exists, 300, "the first checkpoint")
        t0 = time.time()
        os.kill(pids[victim], signal.SIGTERM)
        _, _, err, _ = job.finish(120)
        rec = self._record(job, t0, out)
        rec["reason_printed"] = (
            f"[rank {victim}/{self.args.ranks}] SIGTERM received: stopping after the current "
            "major cycle"
            in err
            and "radimg: stopped by SIGTERM after major cycle" in err
        )
        rec["resume"] = self._resume(cfg, out, self.args.resume_ranks)
        return self._judge(rec, rc_ok=rec["exit_status"] == 3, want_ckpt="complete")

    def sigint(self, target, stage):
        """SIGINT to mpiexec (``target="mpiexec"``) or to rank 1 waiting for a slow rank 0
        (``"rank"``), in the PSF stage or in CLEAN."""
        name = f"sigint-{target}-{stage}"
        if self.args.ranks < 2:
            return {"ok": False, "why": [f"{name} needs --ranks >= 2"]}
        _, out, cfg = self._fresh(name)
        ckpt = pathlib.Path(str(out) + ".ckpt.h5")
        slow = "all" if target == "mpiexec" else "0"
        if stage == "psf":
            fault, ready = f"rank={slow},stage=psf,sleep=60", "gridding PSF"
        elif target == "mpiexec":
            fault, ready = SLOW_MAJOR, None  # ready: the first checkpoint
        else:
            fault, ready = "rank=0,stage=major,sleep=60", "major 0: peak"
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault=fault)
        pids = fu.rank_pids(job.p.pid, self.args.ranks)
        if ready is None:
            job.wait_for(ckpt.exists, 300, "the first checkpoint")
        else:
            job.wait_for(lambda: ready in job.text, 300, ready)
        if target == "rank":
            time.sleep(2.0)  # rank 1 finishes its share and waits for rank 0 in MPI
        t0 = time.time()
        os.kill(job.p.pid if target == "mpiexec" else pids[1], signal.SIGINT)
        # well inside rank 0's 60 s sleep: an end here means nobody waited for it
        _, _, err, _ = job.finish(30)
        rec = self._record(job, t0, out)
        speakers = range(self.args.ranks) if target == "mpiexec" else [1]
        rec["reason_printed"] = "Traceback" not in err and all(
            f"[rank {r}/{self.args.ranks}] SIGINT (Ctrl-C) received: ending the job now" in err
            for r in speakers
        )
        want_ckpt = "absent"
        if target == "mpiexec" and stage == "clean":
            want_ckpt = "complete"
            rec["resume"] = self._resume(cfg, out, self.args.resume_ranks)
        return self._judge(rec, rc_ok=rec["exit_status"] == 130, want_ckpt=want_ckpt)

    def kill9(self):
        _, out, cfg = self._fresh("kill9")
        ckpt = pathlib.Path(str(out) + ".ckpt.h5")
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault=SLOW_MAJOR)
        job.wait_for(ckpt.exists, 300, "the first checkpoint")
        time.sleep(2.0)  # somewhere in a later major cycle
        t0 = time.time()
        job.kill(signal.SIGKILL)
        job.finish(30)
        rec = self._record(job, t0, out)
        rec["reason_printed"] = None  # nothing can speak after SIGKILL
        rec["resume"] = self._resume(cfg, out, self.args.ranks)
        return self._judge(rec, rc_ok=rec["exit_status"] == -signal.SIGKILL, want_ckpt="complete")

    def kill9_mpiexec(self):
        _, out, cfg = self._fresh("kill9-mpiexec")
        job = fu.Job(["run", cfg], ranks=self.args.ranks, fault="rank=all,stage=psf,sleep=30")
        fu.rank_pids(job.p.pid, self.args.ranks)
        job.wait_for(lambda: "gridding PSF" in job.text, 300, "the PSF stage")
        job.refresh_tree(every=0.0)
        t0 = time.time()
        job.p.send_signal(signal.SIGKILL)
        # well inside the ranks' 30 s sleep: an end here means they were taken down
        job.finish(20)
        rec = self._record(job, t0, out)
        rec["reason_printed"] = None
        return self._judge(rec, rc_ok=rec["exit_status"] == -signal.SIGKILL, want_ckpt="absent")

    def _judge(self, rec, rc_ok, want_ckpt):
        why = []
        if not rc_ok:
            why.append(f"exit status {rec['exit_status']}")
        if rec["reason_printed"] is False:
            why.append("the failing rank's traceback/reason was not printed")
        if rec["product"] != "absent":
            why.append(f"product {rec['product']}")
        if rec["temporaries"]:
            why.append(f"temporaries {rec['temporaries']}")
        if rec["checkpoint"] != want_ckpt:
            why.append(f"checkpoint {rec['checkpoint']} (expected {want_ckpt})")
        if want_ckpt == "complete" and rec["checkpoint_counters"]:
            c = rec["checkpoint_counters"]
            if c.get("done") or not 1 <= int(c.get("nmajor", 0)) < self.nmajor:
                why.append(f"checkpoint counters {c}")
        if not rec["ms_unchanged"]:
            why.append("the input MS changed")
        res = rec.get("resume")
        if res is not None:
            if res["exit_status"] != 0:
                why.append(f"resume exit status {res['exit_status']}")
            elif max(res["max_rel_diff"].values()) > TOL:
                why.append(f"resumed images differ: {res['max_rel_diff']}")
            if res["temporaries"] or not res["ms_unchanged"]:
                why.append("resume left temporaries or changed the MS")
        rec["ok"] = not why
        if why:
            rec["why"] = why
        return rec


SCENARIOS = {
    "exception-dirty": lambda b: b.exception("dirty"),
    "exception-major": lambda b: b.exception("major"),
    "sigterm-psf": Bench.sigterm_psf,
    "sigterm-clean": Bench.sigterm_clean,
    "sigint-mpiexec-psf": lambda b: b.sigint("mpiexec", "psf"),
    "sigint-mpiexec-clean": lambda b: b.sigint("mpiexec", "clean"),
    "sigint-rank-psf": lambda b: b.sigint("rank", "psf"),
    "sigint-rank-clean": lambda b: b.sigint("rank", "clean"),
    "kill9": Bench.kill9,
    "kill9-mpiexec": Bench.kill9_mpiexec,
}


def _summary(runs):
    lat = [r["latency_s"] for r in runs if "latency_s" in r]
    s = {
        "runs": len(runs),
        "ok": sum(bool(r.get("ok")) for r in runs),
        "exit_status": sorted({r.get("exit_status") for r in runs}, key=str),
        "latency_s": {"min": min(lat), "median": statistics.median(lat), "max": max(lat)}
        if lat
        else None,
        "reason_printed": [r.get("reason_printed") for r in runs],
        "product": sorted({r.get("product") for r in runs}, key=str),
        "checkpoint": sorted({r.get("checkpoint") for r in runs}, key=str),
        "ms_unchanged": all(r.get("ms_unchanged") for r in runs),
    }
    diffs = [
        max(r["resume"]["max_rel_diff"].values())
        for r in runs
        if "resume" in r and "max_rel_diff" in r["resume"]
    ]
    if diffs:
        s["resume_max_rel_diff"] = max(diffs)
    return s


def _table(summaries):
    header = [
        "scenario",
        "ok",
        "exit",
        "latency s min/med/max",
        "reason",
        "product",
        "checkpoint",
        "resume max rel diff",
        "MS same",
    ]
    rows = []
    for name, s in summaries.items():
        lat = s["latency_s"]
        reasons = [x for x in s["reason_printed"] if x is not None]
        rows.append(
            [
                name,
                f"{s['ok']}/{s['runs']}",
                ",".join(map(str, s["exit_status"])),
                f"{lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f}" if lat else "-",
                f"{sum(reasons)}/{len(reasons)}" if reasons else "n/a",
                ",".join(s["product"]),
                ",".join(s["checkpoint"]),
                f"{s['resume_max_rel_diff']:.1e}" if "resume_max_rel_diff" in s else "-",
                "yes" if s["ms_unchanged"] else "NO",
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
        for r in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each scenario (default 3)")
    ap.add_argument("--ranks", type=int, default=3, help="MPI ranks of every run (default 3)")
    ap.add_argument(
        "--resume-ranks",
        type=int,
        default=2,
        help="ranks of the --resume after SIGTERM during CLEAN (default 2: another count "
        "than the interrupted run; the resume after kill -9 uses --ranks)",
    )
    ap.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run only these scenarios")
    ap.add_argument("--json", metavar="OUT", help="write the figures and every run's record here")
    ap.add_argument(
        "--workdir",
        help="keep the MS, configs and products here (default: a temporary directory, removed)",
    )
    args = ap.parse_args(argv)
    if fu.mpiexec_path() is None:
        ap.error("no mpiexec next to the interpreter (pip install mpich; run from the repo venv)")

    names = args.only or list(SCENARIOS)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_failure-") as scratch:
        tmp = pathlib.Path(args.workdir or scratch).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        if any(tmp.iterdir()):
            ap.error(f"--workdir {tmp} is not empty (old products would be judged)")
        bench = Bench(args, tmp)
        print(
            f"simulating the MS and an uninterrupted {args.ranks}-rank reference run in {tmp} ...",
            flush=True,
        )
        reference = bench.prepare()
        print(
            f"  reference: {reference['run_s']:.1f} s, {reference['major_cycles']} major cycles",
            flush=True,
        )
        runs = {name: [] for name in names}
        for rep in range(args.repeats):
            for name in names:
                try:
                    rec = SCENARIOS[name](bench)
                except fu.JobError as exc:
                    rec = {"ok": False, "why": [str(exc)[:2000]]}
                rec["repeat"] = rep
                runs[name].append(rec)
                lat = rec.get("latency_s")
                status = "ok" if rec["ok"] else "FAILED: " + "; ".join(rec["why"])[:300]
                if rec.get("checkpoint_counters"):
                    status += (
                        f", checkpoint after major cycle {rec['checkpoint_counters']['nmajor']}"
                    )
                print(
                    f"  [{rep + 1}/{args.repeats}] {name}: exit {rec.get('exit_status')}, "
                    f"{'-' if lat is None else f'{lat:.2f} s'}, {status}",
                    flush=True,
                )
        final_ms = fu.ms_digest(bench.ms) == bench.digest

    summaries = {name: _summary(r) for name, r in runs.items()}
    ok = all(s["ok"] == s["runs"] for s in summaries.values()) and final_ms
    print()
    print(
        f"radimg failure behaviour, mpiexec -n {args.ranks}, {args.repeats} repeats "
        f"(latency: fault/signal -> last process of the job ended)"
    )
    print(_table(summaries))
    print(f"input MS checksum unchanged after all runs: {'yes' if final_ms else 'NO'}")
    print(
        f"total {time.time() - t_start:.0f} s; {'all as expected' if ok else 'SOME RUNS NOT AS EXPECTED'}"
    )
    if args.json:
        doc = {
            "what": "radimg run failure behaviour under mpiexec (scripts/bench_failure.py)",
            "command": " ".join([pathlib.Path(sys.executable).name, *sys.argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "ranks": args.ranks,
            "resume_ranks": args.resume_ranks,
            "repeats": args.repeats,
            "tolerance_resume": TOL,
            "latency_definition": "time.time() of the fault (stamped by the failing rank) or "
            "just before kill, to when no process of the job (mpiexec, proxy, ranks) is alive "
            "(polled every 10 ms); latency_mpiexec_s: to mpiexec's own exit",
            "reference": reference,
            "summary": summaries,
            "runs": runs,
            "ms_unchanged": final_ms,
            "ok": ok,
        }
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
