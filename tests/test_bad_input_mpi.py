"""The ``radimg run`` cases of the bad-input matrix at 2 ranks under mpiexec (issue #12:
every kind also at 2 ranks): same exit status on every rank, the message printed once,
nothing left behind, no rank left waiting (tests/bad_input_mpi.py does the work)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bad_input_cases as B  # noqa: E402
from test_mpi_launch import _mpiexec, _run  # noqa: E402

# not marked ``mpi``: pytest-mpi would skip it (see tests/test_mpi_launch.py)
pytestmark = pytest.mark.integration
HERE = pathlib.Path(__file__).parent


def test_run_cases_at_two_ranks(tmp_path):
    n = sum(2 in c.ranks for c in B.CASES)
    args = [*_mpiexec(), "-n", "2", sys.executable, str(HERE / "bad_input_mpi.py"), str(tmp_path)]
    rc, out, err, _ = _run(args, 600)
    assert rc == 0, f"rc {rc}\n{out[-8000:]}\n{err[-4000:]}"
    assert f"ALL {n} CASES PASSED at 2 ranks" in out, out[-4000:]
