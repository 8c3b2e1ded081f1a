"""A container's private nodes, layered over the shared, read-only ``ImageTree``.

A container starts with one private ``Dir`` (its root) whose ``base`` is the image's root.
Everything else stays shared until the container changes it: a directory becomes private
(``Dir(base=ImageDir)``) when something inside it or about it changes, a file becomes a
private ``FileInode`` (``origin`` = the ``ImageFile``) on its first change.  This mirrors how
every copy-on-write driver works and keeps a container's memory proportional to what it
changes, never a copy of the image.

``Dir.own`` maps a name to a private node or to ``None`` (the name is hidden: deleted).
"""

from __future__ import annotations

from typing import Any

from .imagetree import ImageDir, ImageFile, ImageSymlink
from .ranges import EMPTY_RANGES, RangeSet


class FileInode:
    """A regular file owned by a container.  Hard links are names for the same object.

    ``written``: byte ranges written since the file left the image, still within its size
    (the container's own, still-live data).  ``dirty``: ranges written since the last
    writeback (SPEC section 5: writeback at fsync, commit or the end of the workload).
    ``drv`` is the driver's per-file state (copy-up state, chunk maps); the model never
    reads it.

    Both sets start as the shared, immutable ``EMPTY_RANGES``: a create that writes once
    allocated two sets (six objects) before, a fifth of its cost.  ``dirty`` is always
    within ``written``, and from a file's first write to its first writeback the two are
    equal, so ``Namespace`` (the only writer of both) makes them one object then: it
    changes a shared set once, and a writeback puts ``EMPTY_RANGES`` back in ``dirty``
    instead of clearing it.  Readers never need to tell the cases apart.
    """

    __slots__ = ("size", "mode", "uid", "gid", "origin", "written", "dirty", "nlink", "modified", "drv")

    def __init__(self, size: int, mode: int, uid: int, gid: int, origin: ImageFile | None):
        self.size, self.mode, self.uid, self.gid, self.origin = size, mode, uid, gid, origin
        self.written: RangeSet = EMPTY_RANGES
        self.dirty: RangeSet = EMPTY_RANGES
        self.nlink = 0
        self.modified = origin is None  # content or attributes differ from the image (naive diff)
        self.drv: Any = None

    @classmethod
    def from_image(cls, f: ImageFile) -> FileInode:
        return cls(f.size, f.mode, f.uid, f.gid, f)


class Symlink:
    """A symbolic link owned by a container.  ``image_path``: where in the image the link it
    was copied from lies (``Namespace.private_node``), None for a link the container made.
    A symlink has no inode number in the image model, so a driver that keeps the image's
    inodes (devicemapper) finds a copied link's inode by that path, whatever names the copy
    has had since (renamed, hard-linked)."""

    __slots__ = ("target", "mode", "uid", "gid", "nlink", "image_path")

    def __init__(self, target: str, uid: int = 0, gid: int = 0, image_path: str | None = None):
        self.target, self.mode, self.uid, self.gid, self.nlink = target, 0o777, uid, gid, 0
        self.image_path = image_path


class Dir:
    """A private directory.  ``base`` is the merged image directory it extends, if any.

    ``opaque``: created where the lower layers had a visible entry of that name, so nothing
    below shows through (overlayfs's opaque xattr; OCI's ``.wh..wh..opq``).
    ``moved``: renamed from elsewhere while keeping its lower contents (overlay redirect).
    """

    __slots__ = ("mode", "uid", "gid", "base", "own", "opaque", "moved", "modified")

    def __init__(self, mode: int, uid: int, gid: int, base: ImageDir | None, opaque: bool = False):
        self.mode, self.uid, self.gid, self.base, self.opaque = mode, uid, gid, base, opaque
        self.own: dict[str, Node | None] = {}
        self.moved = False
        self.modified = base is None

    @classmethod
    def from_image(cls, d: ImageDir) -> Dir:
        return cls(d.mode, d.uid, d.gid, d)

    def names(self) -> list[str]:
        """Visible names, image names first then the container's own, without duplicates."""
        own = self.own
        out = [n for n in self.base.children if n not in own] if self.base else []
        out.extend(n for n, node in own.items() if node is not None)
        return out


PrivateNode = FileInode | Symlink | Dir
Node = FileInode | Symlink | Dir | ImageFile | ImageSymlink | ImageDir
DirNode = Dir | ImageDir
FILE_TYPES = (FileInode, ImageFile)
DIR_TYPES = (Dir, ImageDir)
LINK_TYPES = (Symlink, ImageSymlink)


def type_name(node: Node) -> str:
    if isinstance(node, FILE_TYPES):
        return "file"
    if isinstance(node, DIR_TYPES):
        return "dir"
    return "symlink"
