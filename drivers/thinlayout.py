"""Where a thin device's filesystem keeps each file: an image file's record as its layer
laid it (``FileRec``), a container's map of one file's blocks (``FileMap``), the layers'
files and directories looked up through the snapshot chain (``Layout``), and a container's
nodes found on its device (``ThinPlaces``, with xfs's directory formats).  Pure bookkeeping over byte offsets of the
device; ``drivers.thinfs`` decides what each operation writes.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.imagetree import ImageDir, ImageFile
from simulator.nodes import Dir, FileInode, Symlink
from simulator.ranges import RangeSet

from .xfsalloc import XFS_DIR_SF_HEADER, sf_entry_bytes

if TYPE_CHECKING:
    from .thinfs import ThinFs


@dataclass(frozen=True)
class FileRec:
    """An image file as laid down: its fs inode and extents ``(device offset, bytes)``."""

    ino: int
    extents: tuple[tuple[int, int], ...]


class FileMap:
    """A container's view of one file's blocks: sorted ``(file_off, dev_off, length)``."""

    __slots__ = ("ino", "extents", "size", "disk_size")

    def __init__(self, ino: int, rec: FileRec | None = None, size: int = 0):
        self.ino = ino
        self.size = size  # as the fs last saw it (a write past it zeroes the old last block's tail)
        # xfs's i_disk_size: the size on disk, which a writeback moves up to the end of what it
        # wrote (xfs_setfilesize) and a truncate sets; a write past the end leaves it behind
        self.disk_size = size
        self.extents: list[tuple[int, int, int]] = []
        off = 0
        for dev, length in (rec.extents if rec else ()):
            self.extents.append((off, dev, length))
            off += length

    def map(self, start: int, end: int, out: RangeSet) -> RangeSet:
        """Add the device ranges of file bytes ``[start, end)`` to ``out``; return the
        unmapped parts."""
        holes = RangeSet([(start, end)])
        i = max(bisect_right(self.extents, (start, 1 << 62, 0)) - 1, 0)
        while i < len(self.extents) and self.extents[i][0] < end:
            f, d, n = self.extents[i]
            s, e = max(start, f), min(end, f + n)
            if s < e:
                out.add(d + s - f, d + e - f)
                holes.remove(s, e)
            i += 1
        return holes

    def cut(self, limit: int) -> list[tuple[int, int]]:
        """Drop blocks at or past byte ``limit`` (truncate); return them as (device offset,
        bytes)."""
        kept, dropped = [], []
        for f, d, n in self.extents:
            if f + n <= limit:
                kept.append((f, d, n))
                continue
            if f < limit:
                kept.append((f, d, limit - f))
            cut_from = max(limit - f, 0)
            dropped.append((d + cut_from, n - cut_from))
        self.extents = kept
        return dropped


class Layout:
    """Image files and directories as each layer laid them down (looked up through the chain)."""

    def __init__(self, parent: Layout | None = None, root: tuple[int, int] = (0, 0)):
        self.parent = parent
        self.root = parent.root if parent is not None else root
        self.files: dict[int, FileRec] = {}
        self.dirs: dict[str, tuple[int, int] | None] = {}
        # Answers found below this layout, remembered: only the top layout of a chain is ever
        # written (``build_layer``), and it checks its own maps first, so a lookup costs one
        # walk down the chain per name, not one per call (128 layers: 128 probes a read).
        # A layout that holds nothing of its kind (a container's, until a commit writes it)
        # asks its parent instead, so every container on an image shares the image layout's
        # answers: a container reading 6,210 files kept 288 KiB of them for itself.  Only
        # one level: the parent answers from its own maps and memo, even when it holds no
        # directories itself (many image layers hold none: asking on down the chain took
        # 33 calls a lookup on the bench image).
        self._files_below: dict[int, FileRec] = {}
        self.links: dict[str, int] = {}  # symlink path -> fs inode (ext4 layers: ``drivers.thinlaying``)
        self._dirs_below: dict[str, tuple[int, int]] = {}
        # ``build_layer`` numbers a layer's files on from its parent's (``FsState`` is copied
        # at each snapshot), so along a chain each layout's inos start above the one below:
        # the layout holding an ino is a bisection away, not a walk down 32 or 128 layers.
        self.first_ino = 0
        self._chain: tuple[list[int], list[Layout]] | None = None

    def file(self, ino: int) -> FileRec:
        layout = self if self.files or self.parent is None else self.parent
        rec = layout.files.get(ino) or layout._files_below.get(ino)
        return rec if rec is not None else layout._file_below(ino)

    def _file_below(self, ino: int) -> FileRec:
        """The record of ``ino`` from the layouts below this one, remembered."""
        chain = self._chain
        if chain is None:
            chain = self._chain = self._layouts_below()
        i = bisect_right(chain[0], ino) - 1
        rec = chain[1][i].files.get(ino) if i >= 0 else None
        if rec is None:
            raise KeyError(ino)
        self._files_below[ino] = rec
        return rec

    def _layouts_below(self) -> tuple[list[int], list[Layout]]:
        """The layouts below this one that hold files, bottom first, and their first inos."""
        layouts: list[Layout] = []
        layout = self.parent
        while layout is not None:
            if layout.files:
                layouts.append(layout)
            layout = layout.parent
        layouts.reverse()
        return [layout.first_ino for layout in layouts], layouts

    def link(self, path: str) -> int | None:
        """The inode of the image symlink at ``path``, where its layer recorded one."""
        layout: Layout | None = self
        while layout is not None:
            if path in layout.links:
                return layout.links[path]
            layout = layout.parent
        return None

    def dir(self, path: str) -> tuple[int, int]:
        if path == "/":
            return self.root
        layout = self if self.dirs or self.parent is None else self.parent
        return layout._dir_here(path)

    def _dir_here(self, path: str) -> tuple[int, int]:
        """``dir`` answered from this layout's own map, its memo and the layouts below."""
        if path in self.dirs:
            found = self.dirs[path]
            return found if found is not None else self.root
        loc = self._dirs_below.get(path)
        if loc is not None:
            return loc
        loc = self.root
        layout = self.parent
        while layout is not None:
            if path in layout.dirs:
                found = layout.dirs[path]
                loc = found if found is not None else self.root
                break
            layout = layout.parent
        self._dirs_below[path] = loc
        return loc


def has_dir(layout: Layout, path: str) -> bool:
    node: Layout | None = layout
    while node is not None:
        if path in node.dirs:
            return node.dirs[path] is not None
        node = node.parent
    return False


class ThinPlaces:
    """Where a container's nodes are on its device: a directory's inode and block, any
    node's inode, a file's block map.  Mixed into the devicemapper mount, which keeps the
    state it reads: ``fs`` (its ``ThinFs``), ``dirs`` and ``inodes`` (what it made), and
    ``_added`` / ``_dropped`` (the last names added and removed, from the ``entry`` hook)."""

    fs: ThinFs
    ns: object
    dirs: dict[Dir, int]
    inodes: dict[object, int]
    _added: tuple[object, str]
    _dropped: tuple[object, str]
    # xfs: bytes of each changed directory's entries in shortform (by the namespace's
    # directory: names change only in private ones), and the blocks image directories took
    # or gave back in this container (by fs inode)
    sf_sizes: dict[object, int]
    dir_blocks: dict[int, int]

    def _dir_location(self, d) -> tuple[int, int]:
        """(fs inode, dir block) of a directory of this container's view."""
        if d is None:
            loc = self.fs.layout.root
        elif d.__class__ is Dir and d.base is None:
            return self.inodes[d], self.dirs[d]
        else:
            loc = self.fs.layout.dir((d.base if d.__class__ is Dir else d).path)
        if self.dir_blocks:
            block = self.dir_blocks.get(loc[0])
            if block is not None:
                return loc[0], block
        return loc

    def _entries_changed(self, d) -> None:
        """Names were added to or removed from directory ``d``: what it writes (xfs: in its
        inode while they fit, else in its block: ``drivers.xfsalloc``)."""
        ino, block = self._dir_location(d)
        fs = self.fs
        if not fs.ext4:
            node = d if d is not None else self.ns.root  # type: ignore[attr-defined]
            size = self.sf_sizes.get(node)
            if size is None:
                names = node.names() if node.__class__ is Dir else node.children
                size = self.sf_sizes[node] = XFS_DIR_SF_HEADER + sum(map(sf_entry_bytes, names))
            new = fs.dir_format(ino, block, size)
            if new != block:
                if d.__class__ is Dir and d.base is None:
                    self.dirs[d] = new
                else:
                    self.dir_blocks[ino] = new
                block = new
        fs.entries_changed(ino, block)

    def _entry_size(self, parent, name: str, added: bool) -> None:
        """xfs: keep a changed directory's shortform size as names come and go."""
        size = self.sf_sizes.get(parent)
        if size is not None:
            self.sf_sizes[parent] = size + (sf_entry_bytes(name) if added else -sf_entry_bytes(name))

    def _inode_of(self, node) -> int:
        if node.__class__ is FileInode:
            return self._filemap(node).ino
        if node.__class__ is ImageFile:
            return self.fs.layout.file(node.ino).ino
        if node.__class__ is Dir or node.__class__ is ImageDir:
            return self._dir_location(node)[0]
        parent, name = self._dropped  # an image symlink's name changes only by unlink or rename
        ino = self._symlink_ino(node, parent, name)  # else (no layer laid it): its directory's
        return ino if ino is not None else self._dir_location(parent)[0]

    def _symlink_ino(self, link, parent, name: str) -> int | None:
        """A symbolic link's inode: one this container made, or the image's where its layer
        recorded one (``drivers.thinlaying``), found by the link's path in the image:
        ``parent/name`` for an image link, ``Symlink.image_path`` for a private copy of one,
        which a rename or a hard link may have named otherwise since (fuzz seed 95142:
        ``rename /c /a``, then ``/a`` replaced, freed the inode of the image's own ``/a`` a
        second time; a hard link to an image link dirtied the inode of the last name
        removed, on xfs a cluster short: tests/test_real_thin_xfs.py)."""
        ino = self.inodes.get(link)
        if ino is not None:
            return ino
        path = link.image_path if link.__class__ is Symlink else None
        if path is None:
            base = parent.base if parent.__class__ is Dir else parent
            if base is None:
                return None
            path = f"{base.path.rstrip('/')}/{name}"
        return self.fs.layout.link(path)

    def _new_inode(self, is_dir: bool) -> int:
        """A new inode in the directory the operation looked up last, for the name it added."""
        parent, name = self._added
        return self.fs.new_inode(self._dir_location(parent)[0], name, is_dir)

    def _filemap(self, inode: FileInode) -> FileMap:
        fm = inode.drv
        if fm is None:
            if inode.origin is not None:
                rec = self.fs.layout.file(inode.origin.ino)
                fm = FileMap(rec.ino, rec, inode.origin.size)
            else:
                fm = FileMap(self._new_inode(False))
            inode.drv = fm
        return fm
