"""Images and layers (SPEC section 3): the immutable input every driver consumes.

An ``Image`` is an ordered tuple of ``Layer`` objects, bottom first.  Layers are immutable
and may be shared between images (a committed layer extends its container's image without
copying the layers below).  ``image_from_dict`` validates everything SPEC section 7 asks for
and raises ``BadInput`` naming the source, the layer and the entry at fault.

A layer's entries are a tuple of ``Entry`` objects, or, for the big generated images,
columns (``simulator.layercols``) that make the same tuple on each read of ``entries``: an
object per entry alone cost 370 B a file of a 1,000,000-file image (issue 7 allows 200 for
the image and its merged tree together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import BadInput
from .paths import parent_of, path_problem

ENTRY_TYPES = ("file", "dir", "symlink", "hardlink", "whiteout")
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
MAX_MODE = 0o7777
MAX_ID = 2**32 - 2  # uid/gid: 32-bit, (uid_t)-1 is reserved by chown(2)
MAX_FILE_SIZE = 2**63 - 1  # off_t
AUFS_PREFIX = ".wh."  # OCI/AUFS whiteout prefix: reserved, never a real name

_ALLOWED = {
    "file": {"path", "type", "size", "mode", "uid", "gid", "digest"},
    "dir": {"path", "type", "mode", "uid", "gid", "opaque"},
    "symlink": {"path", "type", "target", "mode", "uid", "gid"},
    "hardlink": {"path", "type", "target"},
    "whiteout": {"path", "type"},
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One change a layer makes at one path."""

    path: str
    type: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    target: str | None = None
    opaque: bool = False
    digest: str | None = None


class Layer:
    """One image layer: its id and its entries, in order.

    The entries are either a tuple of ``Entry`` objects or, for big generated images, a
    ``simulator.layercols.LayerColumns`` that makes that tuple on each read of ``entries``
    (a 1,000,000-file image as objects alone broke issue 7's 200 B a file).  Immutable.
    """

    __slots__ = ("id", "_entries", "_columns", "_derived")

    def __init__(self, id: str, entries: tuple[Entry, ...]):
        self.id = id
        self._entries = tuple(entries)
        self._columns = None
        self._derived: dict[Any, Any] | None = None

    @classmethod
    def from_columns(cls, id: str, columns) -> Layer:
        layer = cls.__new__(cls)
        layer.id, layer._entries, layer._columns, layer._derived = id, None, columns, None
        return layer

    def derived(self, key: Any, compute: Callable[[Layer], Any]) -> Any:
        """``compute(self)``, once per ``key``: drivers price every layer at the end of every
        run (``image_physical_bytes``), and a layer's entries never change."""
        memo = self._derived
        if memo is None:
            memo = self._derived = {}
        if key not in memo:
            memo[key] = compute(self)
        return memo[key]

    @property
    def entries(self) -> tuple[Entry, ...]:
        entries = self._entries
        return entries if entries is not None else self._columns.entries()

    def columns(self):
        """The ``simulator.layercols.LayerColumns`` behind the entries, or None."""
        return self._columns

    def entry_count(self) -> int:
        """The number of entries (without making them).  Not ``__len__``: a layer with no
        entries is still a layer (``layer or default`` must not replace it)."""
        return len(self._entries) if self._entries is not None else len(self._columns)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Layer:
            return NotImplemented
        return self.id == other.id and self.entries == other.entries  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.id, self.entry_count()))

    def __repr__(self) -> str:
        return f"Layer(id={self.id!r}, entries=<{self.entry_count()}>)"


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    layers: tuple[Layer, ...]
    source: str = field(default="<memory>", compare=False)

    def with_layer(self, layer: Layer) -> Image:
        """The image with one more layer on top (what ``docker commit`` makes)."""
        return Image(self.name, self.layers + (layer,), self.source)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": [layer_to_dict(layer) for layer in self.layers]}


def entry_to_dict(e: Entry) -> dict[str, Any]:
    d: dict[str, Any] = {"path": e.path, "type": e.type}
    if e.type == "file":
        d.update(size=e.size, mode=e.mode)
        if e.digest is not None:
            d["digest"] = e.digest
    elif e.type == "dir":
        d["mode"] = e.mode
        if e.opaque:
            d["opaque"] = True
    elif e.type in ("symlink", "hardlink"):
        d["target"] = e.target
    if e.type in ("file", "dir", "symlink") and (e.uid or e.gid):
        d.update(uid=e.uid, gid=e.gid)
    return d


def layer_to_dict(layer: Layer) -> dict[str, Any]:
    return {"id": layer.id, "entries": [entry_to_dict(e) for e in layer.entries]}


# -- loading and validation ---------------------------------------------------------------


def _int_field(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{where}: '{key}' must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise BadInput(f"{where}: '{key}' = {value} is out of range [{lo}, {hi}]")
    return value


def entry_from_dict(raw: object, where: str) -> Entry:
    """One validated entry; ``where`` names it in messages."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: an entry must be an object, not {type(raw).__name__}")
    path = raw.get("path")
    problem = path_problem(path)
    if problem:
        raise BadInput(f"{where}: {problem}")
    assert isinstance(path, str)
    where = f"{where} ({path})"
    if path.rsplit("/", 1)[1].startswith(AUFS_PREFIX):
        raise BadInput(f"{where}: names starting with '{AUFS_PREFIX}' are reserved for whiteouts")
    kind = raw.get("type")
    if kind not in ENTRY_TYPES:
        raise BadInput(f"{where}: 'type' must be one of {', '.join(ENTRY_TYPES)}, not {kind!r}")
    unknown = set(raw) - _ALLOWED[kind]
    if unknown:
        raise BadInput(f"{where}: unknown or inapplicable key(s) for a {kind}: {', '.join(sorted(unknown))}")
    default_mode = DEFAULT_DIR_MODE if kind == "dir" else DEFAULT_FILE_MODE
    mode = _int_field(raw, "mode", default_mode, 0, MAX_MODE, where)
    uid = _int_field(raw, "uid", 0, 0, MAX_ID, where)
    gid = _int_field(raw, "gid", 0, 0, MAX_ID, where)
    size = _int_field(raw, "size", 0, 0, MAX_FILE_SIZE, where) if kind == "file" else 0
    opaque = raw.get("opaque", False)
    if not isinstance(opaque, bool):
        raise BadInput(f"{where}: 'opaque' must be true or false, not {opaque!r}")
    digest = raw.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise BadInput(f"{where}: 'digest' must be a string")
    target = raw.get("target")
    if kind == "symlink":
        if not isinstance(target, str) or not target or "\0" in target or len(target.encode()) >= 4096:
            raise BadInput(f"{where}: a symlink needs a non-empty string 'target' under 4096 bytes")
    elif kind == "hardlink":
        problem = path_problem(target)
        if problem:
            raise BadInput(f"{where}: hardlink 'target': {problem}")
    if kind == "symlink":
        mode = 0o777  # Linux ignores a symlink's mode: lstat always shows 0777
    return Entry(path, kind, size, mode, uid, gid, target, opaque, digest)


def layer_from_dict(raw: object, where: str) -> Layer:
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: a layer must be an object")
    unknown = set(raw) - {"id", "entries"}
    if unknown:
        raise BadInput(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    layer_id = raw.get("id")
    if not isinstance(layer_id, str) or not layer_id:
        raise BadInput(f"{where}: 'id' must be a non-empty string")
    where = f"{where} '{layer_id}'"
    entries = raw.get("entries", [])
    if not isinstance(entries, list):
        raise BadInput(f"{where}: 'entries' must be a list")
    parsed = tuple(entry_from_dict(e, f"{where} entry {i}") for i, e in enumerate(entries))
    _check_layer_consistency(parsed, where)
    return Layer(layer_id, parsed)


def _check_layer_consistency(entries: tuple[Entry, ...], where: str) -> None:
    """Contradictions inside one layer: duplicate paths, anything below a non-directory."""
    kinds: dict[str, str] = {}
    for e in entries:
        if e.path in kinds:
            raise BadInput(f"{where}: two entries for {e.path}")
        kinds[e.path] = e.type
    for e in entries:
        parent = parent_of(e.path)
        while parent != "/":
            kind = kinds.get(parent)
            if kind is not None and kind != "dir":
                raise BadInput(f"{where}: {e.path} lies below {parent}, which this layer makes a {kind}")
            parent = parent_of(parent)


def image_from_dict(raw: object, source: str = "<memory>") -> Image:
    """A validated ``Image`` from the parsed JSON document; cross-layer checks included."""
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: an image must be a JSON object with 'name' and 'layers'")
    unknown = set(raw) - {"name", "layers"}
    if unknown:
        raise BadInput(f"{source}: unknown key(s): {', '.join(sorted(unknown))}")
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise BadInput(f"{source}: 'name' must be a string")
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise BadInput(f"{source}: 'layers' must be a non-empty list")
    layers = tuple(layer_from_dict(layer, f"{source}: layer {i}") for i, layer in enumerate(layers_raw))
    ids = [layer.id for layer in layers]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise BadInput(f"{source}: layer id {dup!r} appears twice")
    image = Image(name, layers, source)
    from .imagetree import ImageTree  # validates what only the merged view can show

    ImageTree.build(image)
    return image
