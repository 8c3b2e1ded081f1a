"""Operation traces (SPEC section 4): one JSON object a line, validated before any work.

An ``Op`` is a flat, immutable record.  For the two-path operations (``rename``, ``move``,
``link``) the existing object is ``path`` and the new name is ``dst``; the JSON keys stay
``src``/``dst`` as the SPEC fixes them.  ``symlink`` keeps its JSON shape: ``target`` is the
link's text and ``path`` the new link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .errors import BadInput
from .image import MAX_FILE_SIZE, MAX_ID, MAX_MODE
from .paths import path_problem

XATTR_SIZE_MAX = 65536  # linux/limits.h: larger values fail with E2BIG
OPEN_MODES = ("r", "w", "rw")

# op -> (required fields, optional fields); "container" is always optional.
OP_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "create": (("path", "size"), ("mode",)),
    "write": (("path", "offset", "length"), ()),
    "append": (("path", "length"), ()),
    "truncate": (("path", "size"), ()),
    "open": (("path", "mode"), ()),
    "read": (("path", "offset", "length"), ()),
    "stat": (("path",), ()),
    "unlink": (("path",), ()),
    "mkdir": (("path",), ("mode",)),
    "rmdir": (("path",), ()),
    "remove_tree": (("path",), ()),
    "rename": (("src", "dst"), ()),
    "move": (("src", "dst"), ()),
    "chmod": (("path", "mode"), ()),
    "chown": (("path", "uid", "gid"), ()),
    "utime": (("path",), ()),
    "setxattr": (("path", "name", "size"), ()),
    "link": (("src", "dst"), ()),
    "symlink": (("target", "path"), ()),
    "fsync": (("path",), ()),
    "commit": ((), ("layer",)),
}
WRITE_OPS = frozenset({"create", "write", "append"})


@dataclass(frozen=True, slots=True)
class Op:
    kind: str
    path: str = ""
    dst: str = ""
    container: int = 0
    size: int = 0
    offset: int = 0
    length: int = 0
    mode: int = -1  # chmod/create/mkdir permission bits; -1 = the default
    access: str = ""  # open: "r", "w" or "rw"
    uid: int = 0
    gid: int = 0
    name: str = ""  # setxattr
    target: str = ""  # symlink text
    layer: str = ""  # commit: the new layer's id ("" = generated)

    def to_dict(self) -> dict[str, Any]:
        """The SPEC section 4 JSON object for this op."""
        d: dict[str, Any] = {"op": self.kind}
        if self.container:
            d["container"] = self.container
        required, optional = OP_FIELDS[self.kind]
        for key in required + optional:
            value = self._json_value(key)
            if key in optional and value in (-1, ""):
                continue
            d[key] = value
        return d

    def _json_value(self, key: str) -> Any:
        if key == "src":
            return self.path
        if key == "mode" and self.kind == "open":
            return self.access
        return getattr(self, key)


def _int(raw: dict[str, Any], key: str, hi: int, where: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{where}: '{key}' must be an integer, not {value!r}")
    if value < 0:
        raise BadInput(f"{where}: '{key}' must not be negative ({value})")
    if value > hi:
        raise BadInput(f"{where}: '{key}' = {value} exceeds the maximum {hi}")
    return value


def _path(raw: dict[str, Any], key: str, where: str) -> str:
    problem = path_problem(raw[key])
    if problem:
        raise BadInput(f"{where}: '{key}': {problem}")
    return raw[key]


def op_from_dict(raw: object, where: str) -> Op:
    """One validated ``Op``; ``where`` (file and line) prefixes every message."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: an operation must be a JSON object")
    kind = raw.get("op")
    if kind not in OP_FIELDS:
        raise BadInput(f"{where}: unknown op {kind!r}")
    required, optional = OP_FIELDS[kind]
    missing = [k for k in required if k not in raw]
    if missing:
        raise BadInput(f"{where}: '{kind}' needs field(s) {', '.join(missing)}")
    unknown = set(raw) - set(required) - set(optional) - {"op", "container"}
    if unknown:
        raise BadInput(f"{where}: unknown field(s) for '{kind}': {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {"kind": kind}
    if "container" in raw:
        fields["container"] = _int(raw, "container", 1_000_000, where)
    for key in ("path", "dst"):
        if key in raw:
            fields[key] = _path(raw, key, where)
    if "src" in raw:
        fields["path"] = _path(raw, "src", where)
    for key, hi in (("size", MAX_FILE_SIZE), ("offset", MAX_FILE_SIZE), ("length", MAX_FILE_SIZE),
                    ("uid", MAX_ID), ("gid", MAX_ID)):
        if key in raw:
            fields[key] = _int(raw, key, hi, where)
    if "offset" in fields and fields["offset"] + fields.get("length", 0) > MAX_FILE_SIZE:
        raise BadInput(f"{where}: offset + length exceeds the maximum file size {MAX_FILE_SIZE}")
    if "mode" in raw:
        if kind == "open":
            if raw["mode"] not in OPEN_MODES:
                raise BadInput(f"{where}: open 'mode' must be one of {', '.join(OPEN_MODES)}")
            fields["access"] = raw["mode"]
        else:
            fields["mode"] = _int(raw, "mode", MAX_MODE, where)
    if kind == "setxattr":
        name = raw["name"]
        if not isinstance(name, str) or "." not in name or not name.split(".", 1)[1] or "\0" in name:
            raise BadInput(f"{where}: 'name' must be a namespaced xattr name such as 'user.comment'")
        fields["name"] = name
    if kind == "symlink":
        target = raw["target"]
        if not isinstance(target, str) or not target or "\0" in target or len(target.encode()) >= 4096:
            raise BadInput(f"{where}: 'target' must be a non-empty string under 4096 bytes")
        fields["target"] = target
    if kind == "commit" and "layer" in raw:
        if not isinstance(raw["layer"], str) or not raw["layer"]:
            raise BadInput(f"{where}: 'layer' must be a non-empty string")
        fields["layer"] = raw["layer"]
    return Op(**fields)


def parse_trace_lines(lines: Iterable[str], source: str) -> Iterator[Op]:
    """Ops from JSON Lines; blank lines are skipped, every other line must be an op."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}: line {lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: invalid JSON: {exc.msg}") from None
        yield op_from_dict(raw, where)


def dump_trace(ops: Iterable[Op]) -> str:
    """The JSONL text of ``ops`` (one compact object a line)."""
    return "".join(json.dumps(op.to_dict(), separators=(",", ":")) + "\n" for op in ops)
