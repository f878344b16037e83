"""Path safety: radimg writes only where it may, and never into a Measurement Set.

radimg creates products, checkpoints, FITS directories and simulated MSs. None of them may
land inside a casacore table (an MS or one of its subtables: a product at
``obs.ms/table.f1`` replaced a storage file of the MS, which then no longer opened), and a
path the user gives with ``~`` means their home directory, not a directory named ``~``.
"""

from __future__ import annotations

import os

__all__ = ["expand", "table_containing", "check_not_inside_table", "same_or_inside"]


def expand(path: str | os.PathLike | None) -> str | None:
    """``~`` and ``~user`` expanded (a shell does it for command-line arguments, YAML does
    not); None stays None."""
    if path is None:
        return None
    return os.path.expanduser(os.fspath(path))


def _is_table(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "table.dat"))


def table_containing(path: str | os.PathLike) -> str | None:
    """The casacore table directory (MS or subtable) that ``path`` lies inside, or None.

    Only the ancestors of ``path`` are checked, after resolving symbolic links (a link that
    points into an MS counts as inside it); ``path`` itself may be a table.
    """
    real = os.path.realpath(os.fspath(path))
    parent = os.path.dirname(real)
    while True:
        if _is_table(parent):
            # report the outermost table (the MS, not its subtable)
            outer = parent
            up = os.path.dirname(parent)
            while up != parent and _is_table(up):
                outer, parent, up = up, up, os.path.dirname(up)
            return outer
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up


def check_not_inside_table(path: str | os.PathLike, what: str = "output") -> None:
    """Raise FileExistsError when ``path`` lies inside a casacore table (an MS).

    ``what`` names the path in the message, e.g. ``"output.path"``.
    """
    table = table_containing(path)
    if table is not None:
        raise FileExistsError(
            f"{what} {os.fspath(path)} lies inside the Measurement Set (casacore table) "
            f"{table}; radimg never writes into a Measurement Set: choose a path outside it"
        )


def same_or_inside(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """True when ``path`` is ``other`` or lies inside it (symbolic links resolved)."""
    a = os.path.realpath(os.fspath(path))
    b = os.path.realpath(os.fspath(other))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)
