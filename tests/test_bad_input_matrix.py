"""The bad-input matrix (tests/bad_input_cases.py) at one rank, in-process.

Each case: exit status, the message naming the culprit, no traceback, no "internal error",
nothing left behind, every Measurement Set it touched unchanged. The same ``run`` cases at 2
ranks under mpiexec: tests/test_bad_input_mpi.py.
"""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bad_input_cases as B  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return B.make_shared(tmp_path_factory.mktemp("bad-input-shared"))


@pytest.mark.parametrize("c", B.CASES, ids=[c.id for c in B.CASES])
def test_bad_input(c, shared, tmp_path):
    ws = B.Workspace(tmp_path / "case", shared)
    ws.dir.mkdir()
    try:
        argv, digests, before = B.prepare(c, ws)
        rc, err, out = B.execute(argv)
        B.assert_outcome(c, ws, rc, err, out, before, digests)
    finally:
        for fn in ws.cleanup:
            fn()


def test_the_matrix_is_large_and_covers_every_kind():
    """Issue #12: at least 150 cases, of every kind, each kind of `run` also at 2 ranks."""
    kinds = {c.kind for c in B.CASES}
    assert len(B.CASES) >= 150
    assert {"config", "paths", "ms", "deconv", "simulate", "plan", "product", "simcmd",
            "cli"} <= kinds
    for k in B.RUN_KINDS:
        assert any(2 in c.ranks for c in B.CASES if c.kind == k), k
