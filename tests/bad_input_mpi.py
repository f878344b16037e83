"""The ``radimg run`` cases of the bad-input matrix at several ranks, in one MPI job.

Run by tests/test_bad_input_mpi.py as ``mpiexec -n 2 python tests/bad_input_mpi.py DIR``.
Rank 0 builds each case's inputs in DIR; every rank runs ``radimg.cli.main`` in-process;
rank 0 checks every rank's exit status, that exactly one rank printed the error, and the
rest of ``bad_input_cases.assert_outcome``. A case that left ranks waiting would hang the
job (the launcher's timeout then fails the test); a rank that aborted ends the job non-zero.
Prints one line per case and ``ALL <n> CASES PASSED`` at the end; exits 1 if any failed.
"""

import pathlib
import sys
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import bad_input_cases as B  # noqa: E402


def main(root):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    root = pathlib.Path(root)
    shared = B.make_shared(root / "shared", comm=comm)
    cases = [c for c in B.CASES if size in c.ranks]
    failures = []
    for i, c in enumerate(cases):
        ws = B.Workspace(root / f"case{i:03d}", shared)
        if rank == 0:
            ws.dir.mkdir(parents=True)
        comm.Barrier()
        try:
            argv, digests, before = B.prepare(c, ws, comm)
            rc, err, out = B.execute(argv)
        except Exception:  # noqa: BLE001 - a broken case must not hang the other ranks
            rc, err, out = -1, traceback.format_exc(), ""
        results = comm.gather((rc, err, out), root=0)
        status = "ok"
        if rank == 0:
            rcs = [r[0] for r in results]
            printed = sum("radimg: error:" in r[1] for r in results)
            err_all = "".join(r[1] for r in results)
            out_all = "".join(r[2] for r in results)
            try:
                assert len(set(rcs)) == 1, f"{c.id}: ranks exited {rcs}"
                B.assert_outcome(c, ws, rcs[0], err_all, out_all, before, digests, printed)
            except AssertionError as exc:
                status = "FAILED"
                failures.append(f"{c.id}: {exc}")
            for fn in ws.cleanup:
                fn()
            print(f"[{size} ranks] {status:6s} {c.id}", flush=True)
        comm.Barrier()
    if rank == 0:
        if failures:
            print("\n".join(["", *failures]), flush=True)
            return 1
        print(f"ALL {len(cases)} CASES PASSED at {size} ranks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
