"""Every function in radimg/ reads on one screen (issue #14): none is longer than
``MAX_LINES`` lines (signature and docstring included, as ``ast`` counts them) unless its
docstring says why, with the words "long because" and the reason (a flat argparse option
list, a flat table schema, one numerical recipe that reads best in sequence, ...).

Methods and nested functions count on their own; classes are not counted.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "radimg"
MAX_LINES = 120


def long_functions(source: str, name: str = "<source>", max_lines: int = MAX_LINES):
    """``"name:function (n lines)"`` for each function of ``source`` over ``max_lines``
    lines whose docstring does not say "long because"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if n > max_lines and "long because" not in doc.lower():
                found.append(f"{name}:{node.name} ({n} lines)")
    return found


def test_every_radimg_function_fits_one_screen_or_says_why():
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50  # the whole package, not one folder
    long = []
    for path in paths:
        long += long_functions(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert not long, f"functions over {MAX_LINES} lines without a stated reason: {long}"


def _function(nlines, doc):
    body = "".join(f"    x{i} = {i}\n" for i in range(nlines - 2))
    return f"def f():\n    {doc!r}\n{body}"


@pytest.mark.parametrize(
    ("nlines", "doc", "flagged"),
    [
        (MAX_LINES, "Short enough.", False),
        (MAX_LINES + 1, "One line too many.", True),
        (MAX_LINES + 1, "Long because it is a flat table schema.", False),
        (MAX_LINES + 1, "LONG BECAUSE case does not matter.", False),
    ],
)
def test_the_check_flags_a_long_function_without_a_reason(nlines, doc, flagged):
    src = _function(nlines, doc)
    assert ast.parse(src).body[0].end_lineno == nlines
    assert bool(long_functions(src)) is flagged
    # a method is checked too
    method = "class C:\n" + "".join("    " + line + "\n" for line in src.splitlines())
    assert bool(long_functions(method)) is flagged
