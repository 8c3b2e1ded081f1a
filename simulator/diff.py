"""Diffs: what ``docker commit`` puts in a new layer, the native way or the naive way.

moby's graphdriver offers two differs (``daemon/graphdriver/fsdiff.go``):

* **native** (overlay2, aufs): tar the writable layer as it is.  Everything in it is part
  of the layer, including files opened for writing but never changed and the ancestor
  directories a copy-up brought along; the cost is the writable layer's size.
* **naive** (``NaiveDiffDriver``: devicemapper, btrfs, zfs, vfs): walk *both* whole trees and
  keep what differs by ``lstat`` (mode, owner, size, mtime) - never by content, and of the
  xattrs only ``security.capability``.  It scans every file of the image.

Both turn a deletion into a whiteout and a re-created or moved directory into an opaque
directory with its whole content, as the OCI layer format needs.  Whole files go into the
layer whatever the driver's copy-on-write unit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .image import Entry, Layer
from .imagetree import ImageDir, ImageFile, ImageSymlink
from .namespace import Namespace
from .nodes import Dir, Node, Symlink
from .paths import join
from .viewstats import ImageTotals, view_totals


@dataclass(frozen=True, slots=True)
class Change:
    """moby ``archive.Change``: ``kind`` is 'A' (add), 'C' (modify) or 'D' (delete)."""

    path: str
    kind: str


@dataclass
class DiffResult:
    layer: Layer
    changes: list[Change]
    files_scanned: int

    @property
    def size(self) -> int:
        """Data bytes the layer holds (whole files, hard links once): moby's ``DiffSize``."""
        return sum(e.size for e in self.layer.entries if e.type == "file")


class _DiffWalk:
    def __init__(self, ns: Namespace, naive: bool):
        self.ns, self.naive = ns, naive
        self.entries: list[Entry] = []
        self.changes: list[Change] = []
        self.links: dict[int, str] = {}  # id(inode) -> first path in this layer
        self.paths: set[str] = set()  # leaf paths already in the layer
        self.walked = 0

    def run(self) -> None:
        self._private_dir(self.ns.root, "/", relocated=False)
        # A hard-linked image file made private through one name changed under all its
        # names; the names the container never touched are not in its private dirs.  A
        # modified one belongs in the layer even when every touched name is gone since
        # (unlinked, renamed over), or the layer would show the old file there: found by
        # unpacking exported layers with umoci (tests/test_aufs_umoci.py).
        for image_file, inode in self.ns.promoted.items():
            if id(inode) not in self.links and not inode.modified:
                continue
            for path in self.ns.tree.link_names.get(image_file, ()):
                if path not in self.paths and self.ns.exists(path) is inode:
                    self.changes.append(Change(path, "C"))
                    self._leaf(path, inode)

    def _private_dir(self, d: Dir, path: str, relocated: bool) -> None:
        base = d.base
        if relocated and base is not None:  # moved here: its image content is new here too
            for name, child in base.children.items():
                if name not in d.own:
                    self._image_subtree(join(path, name), child)
        for name, node in d.own.items():
            self.walked += 1
            child_path = join(path, name)
            lower = None if relocated or base is None else base.children.get(name)
            if node is None:
                if lower is not None:
                    self.changes.append(Change(child_path, "D"))
                    self.entries.append(Entry(child_path, "whiteout"))
                continue
            kind = "A" if lower is None else "C"
            if node.__class__ is Dir:
                moved = node.base is not None and node.base is not lower
                fresh = node.base is None or moved
                if fresh or not self.naive or node.modified:
                    self.changes.append(Change(child_path, kind))
                    self.entries.append(Entry(child_path, "dir", mode=node.mode, uid=node.uid, gid=node.gid,
                                              opaque=fresh and lower is not None))
                self._private_dir(node, child_path, relocated=relocated or moved)
            # The naive differ compares lstat by path: an unmodified file renamed over this
            # name is a change here too (its origin is not the lower file of this name).
            elif kind == "A" or not self.naive or getattr(node, "modified", True) \
                    or node.origin is not lower:  # type: ignore[union-attr]
                self.changes.append(Change(child_path, kind))
                self._leaf(child_path, node)

    def _image_subtree(self, path: str, node) -> None:
        self.walked += 1
        self.changes.append(Change(path, "A"))
        if isinstance(node, ImageDir):
            self.entries.append(Entry(path, "dir", mode=node.mode, uid=node.uid, gid=node.gid))
            for name, child in node.children.items():
                if child.__class__ is ImageFile and child in self.ns.promoted:
                    child = self.ns.promoted[child]
                    self.walked += 1
                    self.changes.append(Change(join(path, name), "A"))
                    self._leaf(join(path, name), child)
                else:
                    self._image_subtree(join(path, name), child)
        else:  # a hard-linked image file changed through another name shows that change
            self._leaf(path, self.ns.promoted.get(node, node) if node.__class__ is ImageFile else node)

    def _leaf(self, path: str, node: Node) -> None:
        self.paths.add(path)
        if node.__class__ in (Symlink, ImageSymlink):
            self.entries.append(Entry(path, "symlink", mode=0o777, uid=node.uid, gid=node.gid,
                                      target=node.target))  # type: ignore[union-attr]
            return
        first = self.links.get(id(node))
        if first is not None:
            self.entries.append(Entry(path, "hardlink", target=first))
            return
        self.links[id(node)] = path
        digest = node.digest if isinstance(node, ImageFile) else None
        self.entries.append(Entry(path, "file", size=node.size, mode=node.mode, uid=node.uid,  # type: ignore[union-attr]
                                  gid=node.gid, digest=digest))  # type: ignore[union-attr]


def container_diff(ns: Namespace, layer_id: str, naive: bool, totals: ImageTotals | None = None) -> DiffResult:
    """The layer a commit of ``ns`` produces, and the files the differ examined."""
    walk = _DiffWalk(ns, naive)
    walk.run()
    if naive:
        totals = totals or ImageTotals(4096)
        lower = totals.resolve_links(totals.subtree(ns.tree.root))
        upper = view_totals(ns, totals, lambda inode: 0)
        scanned = lower.entries() + upper.entries()
    else:
        scanned = walk.walked
    return DiffResult(Layer(layer_id, tuple(walk.entries)), walk.changes, scanned)
