"""The one place that holds numba JIT options (africanus ``util/numba.py`` style)."""

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL_JIT_OPTIONS = {**JIT_OPTIONS, "parallel": True}
