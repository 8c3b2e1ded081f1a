"""Operation traces (SPEC section 4): one JSON object a line, validated before any work.

An ``Op`` is a flat, immutable record.  For the two-path operations (``rename``, ``move``,
``link``) the existing object is ``path`` and the new name is ``dst``; the JSON keys stay
``src``/``dst`` as the SPEC fixes them.  ``symlink`` keeps its JSON shape: ``target`` is the
link's text and ``path`` the new link.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, NamedTuple

from .errors import BadInput
from .image import MAX_FILE_SIZE, MAX_ID, MAX_MODE
from .paths import NAME_MAX, path_problem

try:  # 5-10x faster than json.loads on trace lines; json decides whatever orjson refuses
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency, but stay usable without it
    _loads = json.loads

XATTR_SIZE_MAX = 65536  # linux/limits.h: larger values fail with E2BIG
OPEN_MODES = ("r", "w", "rw")
TRACE_LINE_MEMO = 65536  # distinct lines remembered while parsing (a few MiB at most)

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


class Op(NamedTuple):
    """A tuple: built at a fifth of a frozen dataclass's cost (parsing and workload builders
    make millions), immutable, so a repeated trace line can share one."""

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
        if not isinstance(target, str) or not target or "\0" in target \
                or len(target.encode(errors="surrogatepass")) >= 4096:
            raise BadInput(f"{where}: 'target' must be a non-empty string under 4096 bytes")
        if not target.isascii() and any("\ud800" <= c <= "\udfff" for c in target):  # json.loads of "\ud800"
            raise BadInput(f"{where}: 'target' is not valid Unicode (a lone surrogate)")
        fields["target"] = target
    if kind == "commit" and "layer" in raw:
        if not isinstance(raw["layer"], str) or not raw["layer"]:
            raise BadInput(f"{where}: 'layer' must be a non-empty string")
        fields["layer"] = raw["layer"]
    return Op(**fields)


# The fast path of ``parse_trace_lines``: ops whose fields are all paths and integers.
_FAST_INTS = {"size": MAX_FILE_SIZE, "offset": MAX_FILE_SIZE, "length": MAX_FILE_SIZE, "uid": MAX_ID,
              "gid": MAX_ID, "container": 1_000_000, "mode": MAX_MODE}
_FAST_KINDS = {kind: (frozenset(required), frozenset(required + optional + ("op", "container")))
               for kind, (required, optional) in OP_FIELDS.items()
               if kind not in ("setxattr", "symlink", "commit")}


def _plain_path(path: str) -> bool:
    """A sufficient test that ``path_problem(path)`` is None: absolute, ASCII, at most
    NAME_MAX bytes in all (so no component or the whole is too long), no empty component
    and no component starting with a dot (so no '.' or '..').  Others take the full check."""
    return (len(path) <= NAME_MAX and path.startswith("/") and path.isascii() and "//" not in path
            and "/." not in path and not path.endswith("/") and "\0" not in path)


# Each JSON key of a fast line: the Op field it fills (its index) and the largest integer it
# may hold (0: a path).  "mode" of open is the access string, which the loop handles.
_FAST_KEYS: dict[str, tuple[int, int]] = {
    **{key: (Op._fields.index(key), hi) for key, hi in _FAST_INTS.items()},
    "path": (Op._fields.index("path"), 0), "src": (Op._fields.index("path"), 0),
    "dst": (Op._fields.index("dst"), 0)}
_ACCESS, _OFFSET, _LENGTH = Op._fields.index("access"), Op._fields.index("offset"), Op._fields.index("length")
_DEFAULTS = list(Op(""))


def _fast_op(raw: object, good_paths: set[str]) -> Op | None:
    """The ``Op`` of an ordinary line, or None to let ``op_from_dict`` decide (and word the
    error).  Accepts only what ``op_from_dict`` accepts, and builds the same ``Op``."""
    if raw.__class__ is not dict:
        return None
    kind = raw.get("op")  # type: ignore[attr-defined]
    spec = _FAST_KINDS.get(kind)  # type: ignore[arg-type]
    if spec is None:
        return None
    required, allowed = spec
    keys = raw.keys()  # type: ignore[attr-defined]
    if not (keys <= allowed and required <= keys):
        return None
    values = _DEFAULTS.copy()
    values[0] = kind
    for key, value in raw.items():  # type: ignore[attr-defined]
        if key == "op":
            continue
        index, hi = _FAST_KEYS[key]
        if hi:
            if value.__class__ is not int or value < 0 or value > hi:
                if key == "mode" and kind == "open" and value.__class__ is str and value in OPEN_MODES:
                    values[_ACCESS] = value
                    continue
                return None
            if key == "mode" and kind == "open":
                return None
        elif value.__class__ is not str:
            return None
        elif value not in good_paths:
            if not _plain_path(value):
                return None
            good_paths.add(value)
        values[index] = value
    if values[_OFFSET] + values[_LENGTH] > MAX_FILE_SIZE:
        return None
    return Op._make(values)


def parse_trace_lines(lines: Iterable[str], source: str) -> Iterator[Op]:
    """Ops from JSON Lines; blank lines are skipped, every other line must be an op.

    Most lines take a fast path (``orjson`` where installed, ``_fast_op``); any line it does
    not accept goes through ``json.loads`` and ``op_from_dict``, which decide exactly as
    before and word the error (orjson reads integers past 64 bits as floats, for one)."""
    good_paths: set[str] = set()
    seen: dict[str, Op] = {}  # a line read before is the same (immutable) Op: logs repeat lines
    for lineno, line in enumerate(lines, 1):
        op = seen.get(line)
        if op is None:
            try:
                op = _fast_op(_loads(line), good_paths)
            except ValueError:
                op = None
            if op is not None:
                if len(seen) >= TRACE_LINE_MEMO:
                    seen.clear()
                seen[line] = op
        if op is not None:
            yield op
            continue
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
