"""The one place that holds numba JIT options (africanus ``util/numba.py`` style), and the one
adjustment radimg makes to how numba loads its on-disk cache.

Why the adjustment: numba's ``Cache.load_overload`` refreshes the CPU target context before it
loads a cached kernel, and the first refresh of a process imports and installs every lowering
registry numba has (numpy, linalg, random, polynomial, typed containers, jitclass, third-party
entry points): 0.29-0.35 s per process on the 2-core dev machine, paid by every rank at once,
for a load that does not use them (a cached kernel is object code, its types and its
environment; ``CompileResult._rebuild`` needs only the codegen). numba refreshes the contexts
again before any compilation (``CompilerBase.__init__``), so a cache miss still compiles with
every registry installed. :func:`_load_without_refresh` loads first and refreshes only when the
load finds nothing (or fails, and then takes numba's own path). On a numba whose ``Cache`` does
not have the methods this relies on, nothing is changed.
"""

from __future__ import annotations

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL_JIT_OPTIONS = {**JIT_OPTIONS, "parallel": True}


def _link_symbols(target_context):
    """What the refresh does that cached object code needs: the symbols it links against.

    numba's runtime (NRT: the allocator of arrays made inside a kernel) adds its C functions to
    LLVM's symbol table in ``rtsys.initialize`` (called from the refresh, once per process), and
    ``numba.cpython.hashing`` adds CPython's hash secret when imported. The other symbols come
    from the context's own ``init`` and from ``reload_init`` (the parallel threading layer).
    """
    from numba.core.runtime import rtsys
    from numba.cpython import hashing  # noqa: F401

    rtsys.initialize(target_context)


def _install_cache_load_without_refresh():
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - numba is a dependency
        return
    cache = caching.Cache
    original = cache.__dict__.get("load_overload")
    if original is None or getattr(original, "_radimg", False):
        return
    if not all(hasattr(cache, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")):
        return

    def _load_without_refresh(self, sig, target_context):
        try:
            _link_symbols(target_context)
            with self._guard_against_spurious_io_errors():
                data = self._load_overload(sig, target_context)
        except Exception:
            data = None  # numba's own path below reloads it after a refresh, or raises
        if data is None:
            return original(self, sig, target_context)
        return data

    _load_without_refresh._radimg = True
    _load_without_refresh.__doc__ = original.__doc__
    cache.load_overload = _load_without_refresh


_install_cache_load_without_refresh()
