"""radimg.kernels._jit loads numba's cached kernels without refreshing the target context
(issue #13, start-up): a cached kernel that allocates, hashes strings and does complex
arithmetic loads and runs right in a fresh process without numba's lowering registries being
imported, and a function compiled later in that process (a cache miss) still gets them."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

MODULE = '''
import numba
import numpy as np

@numba.njit(cache=True)
def cached_alloc(n):
    out = np.empty(n, dtype=np.complex128)  # numba's runtime (NRT) allocates it
    for i in range(n):
        out[i] = complex(i, 1.0) * complex(0.5, -1.0)
    return out

@numba.njit(cache=True)
def cached_hash(s):
    return hash(s)  # CPython's hash secret, a symbol numba adds when hashing is imported
'''

RUN = '''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import radimg.kernels._jit as jit
import fns
out = fns.cached_alloc(5)
assert np.array_equal(out, (np.arange(5) + 1j) * (0.5 - 1j)), out
assert fns.cached_hash("radimg") == hash("radimg")
print("hits", sum(fns.cached_alloc.stats.cache_hits.values()),
      sum(fns.cached_hash.stats.cache_hits.values()))
print("patched", getattr(type(fns.cached_alloc._cache).load_overload, "_radimg", False))
print("arraymath", "numba.np.arraymath" in sys.modules)
import numba
@numba.njit
def median(a):
    return np.median(a)  # a compile: numba refreshes, np.median's lowering is there
print("median", median(np.array([3.0, 1.0, 2.0])))
'''


def _run(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], env=env, text=True,
                         capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.splitlines())


def test_cached_kernels_load_without_numba_registries(tmp_path):
    (tmp_path / "fns.py").write_text(textwrap.dedent(MODULE))
    first = _run(tmp_path)  # compiles and stores both
    assert first["hits"] == "0 0"
    second = _run(tmp_path)  # loads both from the cache
    assert second["hits"] == "1 1"
    assert second["patched"] == "True"
    # the refresh numba does before a cached load imports numba.np.arraymath; it did not run
    assert second["arraymath"] == "False"
    assert second["median"] == "2.0"
