"""The container's visible tree as ``layerbench view`` prints it (SPEC section 6).

``{"/path": {"type": "file"|"dir"|"symlink", "size": N, "mode": M}}``: sizes are 0 for
directories and symlinks, ``mode`` is the permission bits (``st_mode & 0o7777``).  The same
shape comes out of a real mount (``simulator.real``), so the two compare with ``==``.
"""

from __future__ import annotations

from .imagetree import ImageDir
from .namespace import Namespace
from .nodes import DIR_TYPES, FILE_TYPES, type_name


def view_of(ns: Namespace) -> dict[str, dict[str, int | str]]:
    out: dict[str, dict[str, int | str]] = {}
    todo: list[tuple[str, object]] = [("", ns.root)]
    while todo:
        prefix, d = todo.pop()
        names = list(d.children) if isinstance(d, ImageDir) else d.names()  # type: ignore[union-attr]
        for name in names:
            node = ns.child(d, name)  # type: ignore[arg-type]
            path = f"{prefix}/{name}"
            size = node.size if node.__class__ in FILE_TYPES else 0  # type: ignore[union-attr]
            out[path] = {"type": type_name(node), "size": size, "mode": node.mode & 0o7777}  # type: ignore[union-attr]
            if node.__class__ in DIR_TYPES:
                todo.append((path, node))
    return dict(sorted(out.items()))
