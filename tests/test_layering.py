"""Imports flow one way (issue #14 item 5), checked on the source text (ast, no imports run).

Layers, lowest first; a module may import from a lower layer or from its own package, never
from a higher layer or from another package of the same layer:

    0  radimg (the version), radimg.constants, radimg.config, radimg.progress
    1  radimg.kernels (pure numba), radimg.io (file formats)
    2  radimg.ops (operator pieces)
    3  radimg.gpu (CUDA twins), radimg.sim (simulator)
    4  radimg.parallel (every MPI call)
    5  radimg.deconv
    6  radimg.pipeline, radimg.preview
    7  radimg.cli

Function-local (lazy) imports count as imports. A second rule: no private name (``_x``) is
imported from another module; a name used elsewhere is public.

The exceptions below are known, each with why and who removes it; an entry that no longer
matches any import fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[1] / "radimg"

LAYERS = {
    "radimg": 0,
    "radimg.constants": 0,
    "radimg.config": 0,
    "radimg.progress": 0,
    "radimg.kernels": 1,
    "radimg.io": 1,
    "radimg.ops": 2,
    "radimg.gpu": 3,
    "radimg.sim": 3,
    "radimg.parallel": 4,
    "radimg.deconv": 5,
    "radimg.pipeline": 6,
    "radimg.preview": 6,
    "radimg.cli": 7,
}

#: (importing module, imported module) -> why it is still there.
KNOWN_UPWARD = {
}

#: (importing module, imported module, name) -> why it is still there.
KNOWN_PRIVATE = {
}


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layered unit of a module: ``radimg.<package or top-level module>``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(path: pathlib.Path, module: str):
    """``(target module, [names], line)`` for every radimg import in ``path``."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "radimg" or target.startswith("radimg."):
                # "from radimg.ops import wproject" imports a module: count it as one
                names = [a.name for a in node.names]
                yield target, names, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("radimg"):
                    yield a.name, [], node.lineno


def violations(root: pathlib.Path = ROOT):
    """``(upward, private, used_known_upward, used_known_private)`` for the tree at ``root``."""
    upward, private = [], []
    seen_up, seen_priv = set(), set()
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        src_unit = _unit(module)
        if src_unit not in LAYERS:
            upward.append(f"{module}: package {src_unit} has no layer in tests/test_layering.py")
            continue
        for target, names, line in _imports(path, module):
            targets = [target]
            if names and target in {"radimg", *LAYERS}:
                # "from radimg.ops import wproject": the module radimg.ops.wproject
                targets = [f"{target}.{n}" if target != "radimg" or n != "__version__"
                           else target for n in names]
            for tgt in targets:
                dst_unit = _unit(tgt)
                if dst_unit == src_unit or dst_unit not in LAYERS:
                    continue
                if LAYERS[dst_unit] >= LAYERS[src_unit]:
                    key = (module, ".".join(tgt.split(".")[:3]))
                    if key in KNOWN_UPWARD:
                        seen_up.add(key)
                    else:
                        upward.append(f"{module}:{line} imports {tgt} "
                                      f"(layer {LAYERS[dst_unit]} >= {LAYERS[src_unit]})")
            for n in names:
                if n.startswith("_") and not (n.startswith("__") and n.endswith("__")):
                    if target == module:
                        continue
                    key = (module, target, n)
                    if key in KNOWN_PRIVATE:
                        seen_priv.add(key)
                    else:
                        private.append(f"{module}:{line} imports private {n} from {target}")
    return upward, private, seen_up, seen_priv


def test_imports_flow_one_way():
    upward, _, seen, _ = violations()
    assert not upward, "imports against the layering:\n" + "\n".join(upward)
    stale = set(KNOWN_UPWARD) - seen
    assert not stale, f"KNOWN_UPWARD entries no longer needed (remove them): {sorted(stale)}"


def test_no_private_names_across_modules():
    _, private, _, seen = violations()
    assert not private, "private names imported across modules:\n" + "\n".join(private)
    stale = set(KNOWN_PRIVATE) - seen
    assert not stale, f"KNOWN_PRIVATE entries no longer needed (remove them): {sorted(stale)}"


def test_the_checker_finds_both_kinds(tmp_path):
    """The checker itself: an upward import (kernels -> parallel), a same-layer import
    between packages (kernels -> io), a lazy one inside a function, a relative one and a
    private name are all reported; a downward import is not."""
    pkg = tmp_path / "radimg"
    for sub in ("kernels", "parallel", "io", "ops"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels" / "bad.py").write_text(
        "from radimg.parallel.mpi import allreduce_array\n"
        "def f():\n    from radimg.io import ms\n"
    )
    (pkg / "ops" / "lazy.py").write_text(
        "def g():\n    from ..parallel import kmeans\n    from radimg.kernels.bad import _x\n"
    )
    (pkg / "parallel" / "good.py").write_text("from radimg.ops.lazy import g\n")
    upward, private, _, _ = violations(pkg)
    text = "\n".join(upward)
    assert "radimg.kernels.bad:1 imports radimg.parallel.mpi" in text
    assert "radimg.kernels.bad:3 imports radimg.io.ms" in text
    assert "radimg.ops.lazy:2 imports radimg.parallel.kmeans" in text
    assert not any("radimg.parallel.good" in u for u in upward)
    assert private == ["radimg.ops.lazy:3 imports private _x from radimg.kernels.bad"]
