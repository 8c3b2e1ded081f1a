"""Absolute container paths: validation and splitting.

Paths in images and traces are absolute, ``/``-separated, with no empty, ``.`` or ``..``
components (SPEC section 3).  Limits are Linux's: NAME_MAX 255 bytes, PATH_MAX 4096 bytes.
"""

from __future__ import annotations

NAME_MAX = 255  # linux/limits.h
PATH_MAX = 4096  # linux/limits.h, including the terminating NUL


def shown(path: str, limit: int = 80) -> str:
    """``path`` quoted for a one-line message, shortened in the middle when long."""
    if len(path) <= limit:
        return repr(path)
    half = (limit - 3) // 2
    return repr(path[:half] + "..." + path[-half:])


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a valid absolute path, or None when it is."""
    if not isinstance(path, str):
        return f"path must be a string, not {type(path).__name__}"
    if not path.startswith("/"):
        return f"path {shown(path)} is not absolute"
    if path == "/":
        return "path '/' names the root, which cannot be an entry or an operand here"
    if "\0" in path:
        return f"path {shown(path)} contains a NUL byte"
    if not path.isascii():
        try:
            path.encode()
        except UnicodeEncodeError:  # json.loads makes a lone surrogate of "\ud800"
            return f"path {shown(path)} is not valid Unicode (a lone surrogate)"
    if len(path.encode()) >= PATH_MAX:
        return f"path of {len(path.encode())} bytes exceeds PATH_MAX ({PATH_MAX})"
    for part in path[1:].split("/"):
        if part in ("", ".", ".."):
            return f"path {shown(path)} has an empty, '.' or '..' component"
        if len(part.encode()) > NAME_MAX:
            return f"path {shown(path)} has a component longer than NAME_MAX ({NAME_MAX} bytes)"
    return None


def components(path: str) -> list[str]:
    """``'/a/b'`` -> ``['a', 'b']`` for an already validated path."""
    return path[1:].split("/")


def parent_of(path: str) -> str:
    """``'/a/b'`` -> ``'/a'``; ``'/a'`` -> ``'/'``."""
    head = path.rsplit("/", 1)[0]
    return head or "/"


def join(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"
