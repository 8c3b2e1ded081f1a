"""A layer's entries stored as columns, for the big generated images (issue 7's memory target).

An ``Entry`` object per entry costs ~370 B a file in a 1,000,000-file image (``layerbench
bench``: the object, its path string, its size ``int``), nearly twice issue 7's 200 B for the
image and its tree together.  A ``LayerColumns`` holds the same entries in ~30 B each: the
path as an index into a prefix table shared by the image's layers (its parent directory's
path) plus its last component in one NUL-separated UTF-8 blob (no path holds NUL), the type,
size and mode as numpy columns, and the rare fields (owners, opaque flags, symlink targets,
digests) only where some entry has them.  ``Layer.entries`` makes ``Entry`` objects from it
on each call, in the order they were added, so every reader of a layer sees what it saw
before; they are garbage again once the caller is done.  Small layers (loaded JSON, commits,
tests) keep their ``Entry`` tuple: the columns pay off only in bulk.
"""

from __future__ import annotations

import numpy as np

from .image import ENTRY_TYPES, Entry

TYPE_CODES = {name: code for code, name in enumerate(ENTRY_TYPES)}


def _blob(strings: list[str]) -> bytes:
    return ("\0".join(strings) + "\0").encode() if strings else b""


def _split(blob: bytes) -> list[str]:
    return blob.decode().split("\0")[:-1] if blob else []


class LayerColumns:
    """One layer's entries; see the module docstring.  Build with ``ColumnsBuilder``."""

    __slots__ = ("prefixes", "prefix", "names", "kind", "size", "mode", "uid", "gid", "opaque",
                 "target_rows", "targets", "digest_rows", "digests")

    def __len__(self) -> int:
        return len(self.kind)

    def entries(self) -> tuple[Entry, ...]:
        prefixes, types = self.prefixes, ENTRY_TYPES
        n = len(self.kind)
        uid = self.uid.tolist() if self.uid is not None else [0] * n
        gid = self.gid.tolist() if self.gid is not None else [0] * n
        opaque = self.opaque.tolist() if self.opaque is not None else [False] * n
        targets = dict(zip(self.target_rows.tolist(), _split(self.targets))) if self.targets else {}
        digests = dict(zip(self.digest_rows.tolist(), _split(self.digests))) if self.digests else {}
        return tuple(Entry(f"{prefixes[p]}/{name}", types[k], size, mode, u, g, targets.get(i), o, digests.get(i))
                     for i, (p, name, k, size, mode, u, g, o) in enumerate(zip(
                         self.prefix.tolist(), _split(self.names), self.kind.tolist(), self.size.tolist(),
                         self.mode.tolist(), uid, gid, opaque)))

    def footprint(self, block: int) -> tuple[int, int, int]:
        """``drivers.base.layer_footprint`` from the columns, making no ``Entry``: data bytes
        of the files in ``block``s, inodes (directories included, hard links not), and the
        directories: those the layer lists plus every ancestor of every entry."""
        kind, size = self.kind, self.size
        files = kind == TYPE_CODES["file"]
        data = int((-(-size[files] // block) * block).sum())
        dirs = {f"{self.prefixes[p]}/{name}" for p, name, k in zip(self.prefix.tolist(), _split(self.names),
                                                                kind.tolist()) if k == TYPE_CODES["dir"]}
        for parent in {self.prefixes[p] for p in np.unique(self.prefix).tolist()}:
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = parent.rsplit("/", 1)[0]
        others = int(((kind != TYPE_CODES["dir"]) & (kind != TYPE_CODES["hardlink"])).sum())
        return data, others + len(dirs), len(dirs)

    def copy(self) -> LayerColumns:
        """The same columns in new objects (see ``ColumnsBuilder.layers``)."""
        new = LayerColumns.__new__(LayerColumns)
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(new, name, value.copy() if isinstance(value, np.ndarray) else value)
        return new


class ColumnsBuilder:
    """Collects entries layer by layer (``add``), then makes the ``Layer`` objects."""

    def __init__(self, layers: int, known_dirs: list[str] = ()):
        self.prefix_ids: dict[str, int] = {"": 0}
        self.prefix_list: list[str] = [""]
        for d in known_dirs:  # existing strings: the table reuses them instead of new slices
            self.prefix_ids.setdefault(d, len(self.prefix_list))
            if len(self.prefix_ids) > len(self.prefix_list):
                self.prefix_list.append(d)
        self.rows: list[list[tuple]] = [[] for _ in range(layers)]

    def add(self, layer: int, path: str, kind: str, size: int = 0, mode: int = 0, target: str | None = None,
            uid: int = 0, gid: int = 0, opaque: bool = False, digest: str | None = None) -> None:
        cut = path.rfind("/")
        prefix = path[:cut]
        pid = self.prefix_ids.get(prefix)
        if pid is None:
            pid = self.prefix_ids[prefix] = len(self.prefix_list)
            self.prefix_list.append(prefix)
        self.rows[layer].append((pid, path[cut + 1:], TYPE_CODES[kind], size, mode, uid, gid, opaque, target, digest))

    def _columns(self, rows: list[tuple]) -> LayerColumns:
        c = LayerColumns.__new__(LayerColumns)
        c.prefixes = self.prefix_list
        pid, names, kind, size, mode, uid, gid, opaque, target, digest = (zip(*rows) if rows else ((),) * 10)
        c.prefix = np.array(pid, dtype=np.int32)
        c.names = _blob(list(names))
        c.kind = np.array(kind, dtype=np.uint8)
        c.size = np.array(size, dtype=np.int64)
        c.mode = np.array(mode, dtype=np.uint16)
        c.uid = np.array(uid, dtype=np.uint32) if any(uid) else None
        c.gid = np.array(gid, dtype=np.uint32) if any(gid) else None
        c.opaque = np.array(opaque, dtype=bool) if any(opaque) else None
        rows_t = [i for i, t in enumerate(target) if t is not None]
        c.target_rows, c.targets = np.array(rows_t, dtype=np.int32), _blob([target[i] for i in rows_t])
        rows_d = [i for i, d in enumerate(digest) if d is not None]
        c.digest_rows, c.digests = np.array(rows_d, dtype=np.int32), _blob([digest[i] for i in rows_d])
        return c

    def layers(self, id_prefix: str) -> tuple:
        """The ``Layer`` objects, ``<id_prefix><k>``.  The columns are made while the entries' temporary tuples
        exist, then copied once those are freed: CPython returns a 1 MiB arena to the system
        only when all of it is free, and the kept objects would otherwise sit scattered among
        the freed ones and hold their arenas (see ``simulator.treestore``)."""
        from .image import Layer

        raw = []
        while self.rows:
            raw.append(self._columns(self.rows.pop(0)))
        self.prefix_list = list(self.prefix_list)
        out = []
        for k, c in enumerate(raw):
            c = c.copy()
            c.prefixes = self.prefix_list
            out.append(Layer.from_columns(f"{id_prefix}{k}", c))
        return tuple(out)
