"""The merged image view stored as columns, with node objects made only where a run looks.

Why: issue 7 asks for at most 200 bytes of RAM per file entry of a 1,000,000-file image.  A
tree of slotted objects cannot get there: one ``ImageFile`` (80 B), its name (~60 B), its
slot in the parent's ``children`` dict (~35 B) and its size ``int`` (32 B) already exceed it,
and the old tree measured 830 B a file (``layerbench bench``).  So ``ImageTree.build`` builds
the object tree as before (the OCI rules stay in one place, ``imagetree._Builder``), then
``compact`` moves it into numpy columns, one row per *name* (a hard link's names are rows
with one ``ino``), in breadth-first order so that a directory's children are one contiguous
row range ``[first, first + count)`` in their original ``children`` order (readdir, ``walk``
and diff order depend on it).  Names are one UTF-8 blob, each followed by NUL (no path
component holds NUL), so a directory's names decode with one ``decode().split``.  The
object tree is then dropped; 84 B a file entry remain at 1,000,000 files (bench_image_memory).

Objects come back on demand, and once made they stay (identity matters: namespaces key
promoted inodes by ``ImageFile``, drivers key caches by ``id``).  A directory object is made
with its ``children`` and ``probes`` slots holding a ``_Lazy`` stand-in; the stand-in's first
use builds the real dict and puts it in the slot, so every later ``d.children.get(name)`` is
the plain C dict lookup it always was.  (A ``__getattr__`` or a property would be lazier
but slows every attribute read of the class 2-2.5x on CPython 3.11: it defeats the
specialised slot load.)  Memory then grows with the directories a run opens, which is what
issue 7 allows ("in proportion to what it changes"); a full ``walk`` makes every object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .imagetree import ImageDir, ImageFile, ImageSymlink

if TYPE_CHECKING:
    from .imagetree import ImageNode

FILE, DIR, SYMLINK = 0, 1, 2  # the ``kind`` column
NO_PROBES = -1  # ``probe`` column: the name is probed in every layer of the stack (the default)
NO_STRING = -1  # ``string`` column: no digest (files) / no target
COLUMNS = ("kind", "size", "mode", "uid", "gid", "layer", "ino", "nlink", "string", "first", "count", "probe",
           "stack_off", "stack_flat")


def _names_blob(names: list[str]) -> tuple[bytes, np.ndarray]:
    """All names, each followed by NUL, and the offset of each (plus one past the end)."""
    blob = ("\0".join(names) + "\0").encode() if names else b""
    ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0)
    offsets = np.empty(len(names) + 1, dtype=np.uint32 if len(blob) < 2**32 else np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    return blob, offsets


class _Lazy:
    """Stands in a directory's ``children`` or ``probes`` slot until first used."""

    __slots__ = ("store", "row", "owner", "attr", "value")

    def __init__(self, store: TreeStore, row: int, owner: ImageDir, attr: str):
        self.store, self.row, self.owner, self.attr, self.value = store, row, owner, attr, None

    def real(self) -> dict:
        value = self.value
        if value is None:
            if self.attr == "children":
                value = self.store.children(self.row, self.owner.path)
            else:
                value = self.store.probes(self.row)
            self.value = value
            setattr(self.owner, self.attr, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self.real().get(key, default)

    def items(self):
        return self.real().items()

    def keys(self):
        return self.real().keys()

    def values(self):
        return self.real().values()

    def __getitem__(self, key: str) -> Any:
        return self.real()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.real()

    def __iter__(self):
        return iter(self.real())

    def __len__(self) -> int:
        return len(self.real())

    def __bool__(self) -> bool:
        return bool(self.real())

    def __eq__(self, other: object) -> bool:
        return self.real() == (other.real() if isinstance(other, _Lazy) else other)

    __hash__ = None  # type: ignore[assignment]  # as a dict's

    def __repr__(self) -> str:
        return repr(self.real())


def loaded(value: Any) -> Any:
    """``value`` itself, or the real dict a ``_Lazy`` stands for."""
    return value.real() if value.__class__ is _Lazy else value


class TreeStore:
    """One row per name of the merged view (row 0 is ``/``); see the module docstring."""

    def __init__(self, columns: dict[str, np.ndarray], blob: bytes, offsets: np.ndarray,
                 strings: tuple[bytes, np.ndarray], hidden: tuple[np.ndarray, bytes, np.ndarray, np.ndarray]):
        self.kind: np.ndarray  # FILE, DIR or SYMLINK
        self.size: np.ndarray  # files' sizes
        self.mode: np.ndarray
        self.uid: np.ndarray
        self.gid: np.ndarray
        self.layer: np.ndarray  # the layer the node comes from (a directory's: its stack's top)
        self.ino: np.ndarray  # files' inode numbers (shared by a hard link's names)
        self.nlink: np.ndarray  # files' names in the merged view
        self.string: np.ndarray  # index into the strings blob: a file's digest, a symlink's target
        self.first: np.ndarray  # a directory's first child row
        self.count: np.ndarray  # and its number of children
        self.probe: np.ndarray  # lookup probes of this name in its directory, NO_PROBES: all
        self.stack_off: np.ndarray  # a directory's stack is stack_flat[stack_off[r]:stack_off[r + 1]]
        self.stack_flat: np.ndarray
        for name in COLUMNS:
            setattr(self, name, columns[name])
        self.blob, self.offsets = blob, offsets
        # Digests and symlink targets, one blob like the names: the strings came from the
        # image's layers during the build, and a list of them would keep its arenas too.
        self.strings_blob, self.strings_offsets = strings
        # Probe counts of names no layer's lookup finds visible (whiteouts, hidden entries):
        # per such name its directory's row (sorted), the name, and the count.
        self.hidden_row, self.hidden_blob, self.hidden_offsets, self.hidden_count = hidden
        self.inodes: dict[int, ImageFile] = {}  # ino -> the object of a hard-linked inode

    def copy(self) -> TreeStore:
        """The same store in new objects.  ``ImageTree.build`` calls it once the object tree
        is freed: CPython's allocator returns a 1 MiB arena to the system only when all of it
        is free, and the few objects made *while* the tree existed (array headers, lists) sat
        in ~60 of the tree's arenas and kept them (sys._debugmallocstats: 94 arenas for 36 MB
        of live blocks at 100,000 files).  Made afresh, they pack into one or two."""
        columns = {name: getattr(self, name).copy() for name in COLUMNS}
        hidden = (self.hidden_row.copy(), self.hidden_blob, self.hidden_offsets.copy(), self.hidden_count.copy())
        return TreeStore(columns, self.blob, self.offsets.copy(), (self.strings_blob, self.strings_offsets.copy()),
                         hidden)

    def text(self, s: int) -> str:
        return self.strings_blob[int(self.strings_offsets[s]):int(self.strings_offsets[s + 1]) - 1].decode()

    def names(self, a: int, b: int) -> list[str]:
        return self.blob[int(self.offsets[a]):int(self.offsets[b])].decode().split("\0")[: b - a]

    def directory(self, row: int, path: str) -> ImageDir:
        d = ImageDir.__new__(ImageDir)
        d.mode, d.uid, d.gid, d.layer, d.path = (int(self.mode[row]), int(self.uid[row]), int(self.gid[row]),
                                                 int(self.layer[row]), path)
        d.stack = tuple(self.stack_flat[self.stack_off[row]:self.stack_off[row + 1]].tolist())
        d.children = _Lazy(self, row, d, "children")  # type: ignore[assignment]
        d.probes = _Lazy(self, row, d, "probes")  # type: ignore[assignment]
        return d

    def children(self, row: int, path: str) -> dict[str, ImageNode]:
        n = int(self.count[row])
        if n == 0:
            return {}
        a = int(self.first[row])
        b = a + n
        prefix = "/" if path == "/" else path + "/"
        out: dict[str, ImageNode] = {}
        inodes, text = self.inodes, self.text
        for j, (name, kind, size, mode, uid, gid, layer, ino, nlink, s) in enumerate(zip(
                self.names(a, b), self.kind[a:b].tolist(), self.size[a:b].tolist(), self.mode[a:b].tolist(),
                self.uid[a:b].tolist(), self.gid[a:b].tolist(), self.layer[a:b].tolist(), self.ino[a:b].tolist(),
                self.nlink[a:b].tolist(), self.string[a:b].tolist())):
            if kind == FILE:
                node = inodes.get(ino) if nlink > 1 else None
                if node is None:
                    node = ImageFile(size, mode, uid, gid, layer, None if s == NO_STRING else text(s), ino)
                    node.nlink = nlink
                    if nlink > 1:
                        inodes[ino] = node
            elif kind == DIR:
                node = self.directory(a + j, prefix + name)
            else:
                node = ImageSymlink(text(s), uid, gid, layer)
            out[name] = node
        return out

    def probes(self, row: int) -> dict[str, int]:
        n = int(self.count[row])
        out: dict[str, int] = {}
        if n:
            a = int(self.first[row])
            out = {name: p for name, p in zip(self.names(a, a + n), self.probe[a:a + n].tolist()) if p != NO_PROBES}
        lo, hi = np.searchsorted(self.hidden_row, [row, row + 1])
        if hi > lo:
            names = self.hidden_blob[int(self.hidden_offsets[lo]):int(self.hidden_offsets[hi])].decode().split("\0")
            out.update(zip(names, self.hidden_count[lo:hi].tolist()))
        return out


def compact(root: ImageDir) -> TreeStore:
    """The store of an object tree built by ``imagetree._Builder``."""
    rows: list[ImageNode] = [root]
    names: list[str] = [""]
    probe: list[int] = [NO_PROBES]
    first: list[int] = [0]
    count: list[int] = [0]
    hidden_row: list[int] = []
    hidden_names: list[str] = []
    hidden_count: list[int] = []
    i = 0
    while i < len(rows):  # breadth first: a directory's children get consecutive rows
        d = rows[i]
        if d.__class__ is ImageDir:
            children, probes = d.children, d.probes  # type: ignore[union-attr]
            first[i], count[i] = len(rows), len(children)
            rows.extend(children.values())
            names.extend(children)
            probe.extend(probes.get(name, NO_PROBES) for name in children)
            for name, p in probes.items():
                if name not in children:
                    hidden_row.append(i)
                    hidden_names.append(name)
                    hidden_count.append(p)
            first.extend(0 for _ in children)
            count.extend(0 for _ in children)
        i += 1
    n = len(rows)
    kind = np.empty(n, dtype=np.uint8)
    size = np.zeros(n, dtype=np.int64)
    mode = np.empty(n, dtype=np.uint16)
    uid = np.empty(n, dtype=np.uint32)
    gid = np.empty(n, dtype=np.uint32)
    layer = np.empty(n, dtype=np.int32)
    ino = np.zeros(n, dtype=np.int64)
    nlink = np.zeros(n, dtype=np.int32)
    string = np.full(n, NO_STRING, dtype=np.int32)
    stack_len = np.zeros(n + 1, dtype=np.int64)
    stack_flat: list[int] = []
    strings: list[str] = []
    for r, node in enumerate(rows):
        cls = node.__class__
        mode[r], uid[r], gid[r], layer[r] = node.mode, node.uid, node.gid, node.layer
        if cls is ImageFile:
            kind[r] = FILE
            size[r], ino[r], nlink[r] = node.size, node.ino, node.nlink  # type: ignore[union-attr]
            if node.digest is not None:  # type: ignore[union-attr]
                string[r] = len(strings)
                strings.append(node.digest)  # type: ignore[union-attr]
        elif cls is ImageDir:
            kind[r] = DIR
            stack_len[r + 1] = len(node.stack)  # type: ignore[union-attr]
            stack_flat.extend(node.stack)  # type: ignore[union-attr]
        else:
            kind[r] = SYMLINK
            string[r] = len(strings)
            strings.append(node.target)  # type: ignore[union-attr]
    blob, offsets = _names_blob(names)
    order = np.argsort(np.array(hidden_row, dtype=np.int64), kind="stable")
    h_blob, h_offsets = _names_blob([hidden_names[j] for j in order.tolist()])
    hidden = (np.array(hidden_row, dtype=np.int64)[order], h_blob, h_offsets,
              np.array(hidden_count, dtype=np.int32)[order])
    columns = dict(kind=kind, size=size, mode=mode, uid=uid, gid=gid, layer=layer, ino=ino, nlink=nlink,
                   string=string, first=np.array(first, dtype=np.int32), count=np.array(count, dtype=np.int32),
                   probe=np.array(probe, dtype=np.int32), stack_off=np.cumsum(stack_len).astype(np.int32),
                   stack_flat=np.array(stack_flat, dtype=np.int32))
    return TreeStore(columns, blob, offsets, _names_blob(strings), hidden)
