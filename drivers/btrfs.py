"""btrfs: Docker's btrfs driver, a subvolume snapshot per layer and per container.

Layout modelled (moby ``daemon/graphdriver/btrfs/btrfs.go``)::

    /var/lib/docker/btrfs/subvolumes/<layer>   subvolume; a child layer is a snapshot of it
    /var/lib/docker/btrfs/subvolumes/<ctr>     snapshot of the image's top layer

Snapshots share every data extent and tree block; a container then owns only what it
rewrites.  Data is copy-on-write in ``sector_size`` blocks: a full-sector overwrite writes
elsewhere with no copy, a partial one read-modify-writes the sector (``copyup_bytes``).
Extents are allocated at writeback (SPEC section 5: fsync, commit, end of workload), one
per contiguous dirty run, split at ``BTRFS_MAX_EXTENT_SIZE``.  The driver uses the naive
differ and does not share the page cache between containers (docker docs
``btrfs-driver.md``).

Each finding below was measured on kernel 6.18 here (btrfs-progs 6.2, 4 KiB sectors,
``btrfs filesystem du`` after ``sync``) and is checked in CI by ``tests/test_real_btrfs.py``:

* A 4 KiB aligned write into an inherited 1 MiB file costs 4096 exclusive bytes; a 1-byte
  write too; 8 KiB at offset 6000 costs 3 sectors.  Appending 100 B to an inherited
  10000-B file rewrites its tail sector (4096); appending 10000 B costs 3 sectors.
* Shrinking ``truncate`` costs nothing (10000 -> 5000: 0 exclusive; the shared extent is
  only trimmed).  *Extending* from an unaligned size - by ``truncate`` or by a write past
  EOF - zeroes the old tail sector and so rewrites it, even when that sector is a hole
  (10000 -> 20000: 4096; write 1 B at 65536 of a 10000-B file: 8192).  Extending from an
  aligned size costs nothing; the new range is a hole.
* Inline extents: a file is stored in its metadata leaf iff at writeback it is non-empty,
  smaller than a sector and at most ``max_inline`` bytes (2048 inline, 2049 -> 4096 data).
  An inline file that outgrows that is converted: its sector 0 becomes a regular extent
  (inherited 1000-B inline file truncated to 20000: 4096; written 1 B at 8192: 8192).
  A regular file cut below the limit and rewritten becomes inline again (4096-B file,
  truncate 100, write 50 B: 0 data).
* Rename, chmod, unlink, hard links: no data.  ``fi du`` counts a hard-linked inode once.
* ``btrfs filesystem du`` "Exclusive" counts the *referenced* part of each unshared extent
  (a 1 MiB private extent truncated to 4096 shows 4096); qgroups count whole extents: the
  bookends stay allocated (same case: 1 MiB in the qgroup).  So ``container_alloc_bytes``
  is the referenced private sectors (``fi du``) and ``container_physical_bytes`` holds the
  whole extents (bookend retention) plus metadata.
* qgroup exclusive metadata: 16 KiB for an untouched snapshot (its root), one node per
  CoW'd leaf plus the root; 50 new dirs + 50 new files: 65536 (4 nodes).  Counted once
  although metadata is DUP on disk.
"""

from __future__ import annotations

from simulator.hooks import NEED_TRUNC_OPEN
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode
from simulator.ranges import RangeSet
from simulator.units import MiB, ceil_div
from simulator.viewstats import private_inodes

from .base import BaseDriver, BaseMount
from .options import Option

BTRFS_MAX_EXTENT_SIZE = 128 * MiB  # fs/btrfs/fs.h, uncompressed data extents
# On-disk item sizes (fs/btrfs/ctree.h, uapi btrfs_tree.h): what a leaf holds per object.
LEAF_HEADER_BYTES = 101  # struct btrfs_header
ITEM_HEADER_BYTES = 25  # struct btrfs_item
INODE_ITEM_BYTES = 160  # struct btrfs_inode_item
INODE_REF_BYTES = 10  # struct btrfs_inode_ref + name
DIR_ITEM_BYTES = 30  # struct btrfs_dir_item + name; stored twice (DIR_ITEM and DIR_INDEX)
FILE_EXTENT_BYTES = 53  # struct btrfs_file_extent_item (regular extent)
INLINE_EXTENT_HEADER = 21  # the same item up to the inline data
XATTR_ITEM_BYTES = 64  # a dir_item-shaped xattr with a short name and value (the hook has no size)
NAME_BYTES = 8  # mean name length assumed for objects the hooks do not name
KEY_PTR_BYTES = 33  # struct btrfs_key_ptr: an internal node's fan-out is node / 33
# A transaction CoWs the touched fs-tree path plus the extent, csum, free-space, root and
# device trees: measured here, a 1-byte overwrite in a snapshot wrote 241664 B to the loop
# device = 4096 data + 7 nodes x 16 KiB x 2 (DUP) + 2 superblock copies x 4 KiB
# (REAL_KERNEL.md sections 3 and 6).
TRANSACTION_COW_NODES = 7
SUPERBLOCK_WRITE_BYTES = 2 * 4096
_BEYOND_EOF = 1 << 63  # past any sector index: "to the end of the file"


class _Extents:
    """A run of sectors written back at once: extents of ``chunk`` sectors laid end to
    end, and which of its sectors files still reference.  Symbolic: a 1 TiB run is one
    object.  An extent stays wholly allocated while any sector of it is referenced."""

    __slots__ = ("start", "length", "chunk", "refs")

    def __init__(self, start: int, length: int, chunk: int):
        self.start, self.length, self.chunk = start, length, chunk
        self.refs = RangeSet([(start, start + length)])

    def live_sectors(self) -> int:
        """Sectors of the extents still allocated (bookends included)."""
        chunks = RangeSet()
        for a, b in self.refs:
            chunks.add((a - self.start) // self.chunk, ceil_div(b - self.start, self.chunk))
        sectors = chunks.total() * self.chunk
        last = (self.length - 1) // self.chunk
        if chunks.covers(last, last + 1):
            sectors -= (last + 1) * self.chunk - self.length  # the last extent is shorter
        return sectors


class _FileState:
    """Where one container file's data lives, in sector indices."""

    __slots__ = ("size", "shared", "runs", "pending", "inline", "flush_on_close")

    def __init__(self, inode: FileInode, inline_limit: int, sector: int):
        origin = inode.origin
        self.size = origin.size if origin is not None else inode.size
        image_inline = origin is not None and 0 < origin.size <= inline_limit and origin.size < sector
        self.shared = RangeSet()  # sectors still mapped to image extents
        if origin is not None and not image_inline and origin.size:
            self.shared.add(0, ceil_div(origin.size, sector))
        self.runs: list[_Extents] = []  # the container's own extents
        self.pending = RangeSet()  # sectors the kernel dirtied itself (tail zeroing)
        self.inline = "shared" if image_inline else ""  # "", "shared" or "private"
        self.flush_on_close = False  # truncated to 0: written back at the next close

    def private(self) -> RangeSet:
        out = RangeSet()
        for run in self.runs:
            out.update(run.refs)
        return out

    def drop(self, start: int, end: int) -> None:
        """Sectors ``[start, end)`` no longer reference what they did."""
        self.shared.remove(start, end)
        for run in self.runs:
            run.refs.remove(start, end)
        self.runs = [r for r in self.runs if r.refs]


def live_inodes(ns) -> list[FileInode]:
    """Distinct private files still linked: those under private directories and promoted
    hard-linked image files, which may be reachable only through image directories."""
    out = dict.fromkeys(private_inodes(ns))
    for inode in ns.promoted.values():
        if inode.nlink > 0:
            out[inode] = None
    return list(out)


class BtrfsMount(BaseMount):
    def __init__(self, driver: BtrfsDriver, id: str, tree: ImageTree) -> None:
        super().__init__(driver, id, tree)
        opts = driver.options
        self.sector = int(opts["sector_size"])
        self.inline_limit = min(int(opts["max_inline"]), self.sector - 1)
        self.chunk = BTRFS_MAX_EXTENT_SIZE // self.sector
        self.touched: set[int] = set()  # image objects whose items this container rewrote
        self.new_item_bytes = 0  # leaf bytes of objects the container added
        # Within one operation (reset by every lookup): the file it created, and whether
        # it replaced a non-empty file (a rename over one flushes the source).
        self._created: FileInode | None = None
        self._replaced_nonempty = False

    def _state(self, inode: FileInode) -> _FileState:
        st = inode.drv
        if st is None:
            st = inode.drv = _FileState(inode, self.inline_limit, self.sector)
            if inode.origin is not None:
                self.touched.add(id(inode.origin))
        return st

    def _dirty(self) -> None:
        self.driver.transaction_open = True  # type: ignore[attr-defined]

    def _rmw(self, st: _FileState, sector: int) -> None:
        """A partial write (or a tail zeroing) of ``sector``: read first if it is shared."""
        if st.shared.covers(sector, sector + 1):
            self.tally.copyup_bytes += self.sector
            self.tally.cow_copy_bytes += self.sector

    def _extend(self, st: _FileState, old: int) -> None:
        """Growing a file from an unaligned size zeroes (so rewrites) its old tail sector."""
        if old % self.sector:
            tail = old // self.sector
            self._rmw(st, tail)
            st.shared.remove(tail, tail + 1)
            st.pending.add(tail, tail + 1)

    def _flush(self, inode: FileInode) -> None:
        """``filemap_flush``: the file's dirty pages are written back now."""
        self.ns.writeback(inode)
        st = inode.drv
        if st is not None and st.pending:
            self._write_sectors(inode, st, st.pending.copy())

    # -- hooks --------------------------------------------------------------------------
    def lookup(self, parent, name: str) -> int:
        self._created = None
        self._replaced_nonempty = False
        return 1

    def closed(self, node, op: str) -> None:
        if node.__class__ is not FileInode:
            return
        st = self._state(node)
        if op == "create" and node is not self._created:
            st.flush_on_close = True  # open(O_TRUNC) of an existing file, even an empty one
        if st.flush_on_close:  # btrfs_release_file: BTRFS_INODE_FLUSH_ON_CLOSE
            st.flush_on_close = False
            self._flush(node)

    def remove(self, node, last_link: bool) -> None:
        if node.__class__ in (FileInode, ImageFile):
            self._replaced_nonempty = node.size > 0
        else:
            self._replaced_nonempty = node.__class__ not in (Dir, ImageDir)  # a symlink's size > 0

    def meta_copy_up(self, node) -> None:
        base = node.base if node.__class__ is Dir else None
        self.touched.add(id(base) if base is not None else id(node))
        self._dirty()

    def copy_up(self, inode: FileInode, need: str) -> None:
        st = self._state(inode)
        if need == NEED_TRUNC_OPEN:
            st.flush_on_close = True
        self._dirty()

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        st = self._state(inode)
        sector, end = self.sector, offset + length
        if offset > st.size:
            self._extend(st, st.size)
        first, last = offset // sector, (end - 1) // sector
        if offset % sector:
            self._rmw(st, first)
        if end % sector and (last != first or not offset % sector):
            self._rmw(st, last)
        st.shared.remove(first, last + 1)  # rewritten: no longer the image's data
        st.size = inode.size
        self._dirty()

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        st = self._state(inode)
        if new_size > old_size:
            self._extend(st, old_size)
        else:
            keep = ceil_div(new_size, self.sector)
            st.drop(keep, _BEYOND_EOF)
            st.pending.truncate(keep)
            if new_size == 0:
                st.inline = ""
                st.flush_on_close = True  # btrfs_setsize: BTRFS_INODE_FLUSH_ON_CLOSE
        st.size = new_size
        self._dirty()

    def writeback(self, inode: FileInode, ranges: RangeSet) -> None:
        st = self._state(inode)
        sectors = ranges.units(self.sector)
        sectors.update(st.pending)
        self._write_sectors(inode, st, sectors)

    def _write_sectors(self, inode: FileInode, st: _FileState, sectors: RangeSet) -> None:
        st.pending.clear()
        sectors.truncate(ceil_div(st.size, self.sector))
        if not sectors:
            return
        tally = self.tally
        if 0 < st.size <= self.inline_limit:  # fits a leaf: the data goes inline
            st.drop(0, 1)
            st.inline = "private"
            self.new_item_bytes += INLINE_EXTENT_HEADER + st.size
            self._dirty()
            return
        if st.inline:
            sectors.add(0, 1)  # converting an inline extent rewrites sector 0
            st.inline = ""
        for start, end in sectors:
            st.drop(start, end)
            st.runs.append(_Extents(start, end - start, self.chunk))
            self.new_item_bytes += (ITEM_HEADER_BYTES + FILE_EXTENT_BYTES) * ceil_div(end - start, self.chunk)
        tally.device_write_bytes += sectors.total() * self.sector
        self._dirty()

    def flush_pending(self) -> None:
        """Tail sectors zeroed by an extension with no data write after it."""
        for inode in live_inodes(self.ns):
            st = inode.drv
            if st is not None and st.pending:
                self._write_sectors(inode, st, st.pending.copy())

    def fsync(self, node) -> None:
        self.tally.fsyncs += 1
        if node.__class__ is FileInode and node.drv is not None and node.drv.pending:
            self._write_sectors(node, node.drv, node.drv.pending.copy())
        self.driver.commit_transaction()  # type: ignore[attr-defined]

    def metadata(self, op: str, node) -> None:
        self.tally.metadata_ops += 1
        if op == "create":
            self._created = node
        elif op == "rename" and self._replaced_nonempty and node.__class__ is FileInode:
            self._flush(node)  # btrfs_rename: filemap_flush of a file replacing a non-empty one
        if op in ("create", "mkdir", "symlink"):
            self.new_item_bytes += object_item_bytes(NAME_BYTES)
        elif op == "link":
            self.new_item_bytes += 3 * ITEM_HEADER_BYTES + INODE_REF_BYTES + 2 * DIR_ITEM_BYTES + 3 * NAME_BYTES
        elif op == "setxattr":
            self.new_item_bytes += ITEM_HEADER_BYTES + XATTR_ITEM_BYTES
        self._dirty()

    def cache_key(self, node) -> object:
        # One inode per file in the container's subvolume, before and after it is written;
        # no sharing with other containers (docker docs: no page cache sharing).
        if node.__class__ is FileInode and node.origin is not None:
            return (self.id, node.origin)
        return (self.id, node)

    # -- state at the end ---------------------------------------------------------------
    def metadata_nodes(self) -> int:
        """Tree blocks of the container's fs tree not shared with the image's: the root,
        the leaves its changes CoW'd and the leaves its new items fill."""
        node = int(self.driver.options["node_size"])
        usable = node - LEAF_HEADER_BYTES
        image_bytes, ranks = self.driver.tree_items(self.ns.tree)
        leaves = max(1, ceil_div(image_bytes + self.new_item_bytes, usable))
        if leaves == 1:
            return 1  # the root leaf, CoW'd at the snapshot
        image_leaves = max(1, ceil_div(image_bytes, usable))
        old = {ranks.get(t, 0) * image_leaves // max(1, len(ranks)) for t in self.touched}
        fanout = usable // KEY_PTR_BYTES
        internal, level = 0, leaves
        while level > 1:
            level = ceil_div(level, fanout)
            internal += level
        return min(leaves, len(old) + ceil_div(self.new_item_bytes, usable)) + internal

    def usage(self) -> dict[str, int]:
        """What the real file system reports for this container's subvolume:
        ``fi_du_exclusive`` (referenced private sectors), ``data_extent_bytes`` (whole
        private extents) and ``qgroup_exclusive`` (data extents + metadata nodes once)."""
        self.flush_pending()
        sector = self.sector
        files = referenced = whole = data = 0
        for inode in live_inodes(self.ns):
            st = self._state(inode)
            private = st.private()
            n = private.total()
            referenced += n
            whole += sum(run.live_sectors() for run in st.runs)
            if n:
                tail = ceil_div(st.size, sector) - 1
                data += n * sector - (tail * sector + sector - st.size if private.covers(tail, tail + 1) else 0)
            if st.inline == "private":
                data += st.size
            files += bool(n or st.inline == "private" or inode.origin is None)
        nodes = self.metadata_nodes()
        node = int(self.driver.options["node_size"])
        return {"files": files, "data_bytes": data, "fi_du_exclusive": referenced * sector,
                "data_extent_bytes": whole * sector, "metadata_nodes": nodes,
                "qgroup_exclusive": whole * sector + nodes * node}

    def space(self) -> Space:
        u = self.usage()
        dup = 2 if self.driver.options["metadata_dup"] else 1
        node = int(self.driver.options["node_size"])
        return Space(whiteouts=None, opaque_dirs=None, container_files=u["files"],
                     container_data_bytes=u["data_bytes"], container_alloc_bytes=u["fi_du_exclusive"],
                     image_physical_bytes=0,
                     container_physical_bytes=u["data_extent_bytes"] + u["metadata_nodes"] * node * dup,
                     page_cache_bytes=0, cow_blocks=u["data_extent_bytes"] // self.sector)


def object_item_bytes(name_len: int) -> int:
    """Leaf bytes of one inode with one name: inode item, inode ref, dir item and index."""
    return (4 * ITEM_HEADER_BYTES + INODE_ITEM_BYTES + INODE_REF_BYTES + name_len
            + 2 * (DIR_ITEM_BYTES + name_len))


class BtrfsDriver(BaseDriver):
    name = "btrfs"
    summary = "Docker btrfs: subvolume snapshots, 4 KiB CoW extents, bookends, no shared page cache"
    mount_class = BtrfsMount
    OPTIONS = (
        Option("sector_size", 4096, "data allocation unit (mkfs.btrfs -s), bytes",
               minimum=4096, maximum=65536, power_of_two=True),
        Option("node_size", 16384, "metadata tree block (mkfs.btrfs -n), bytes",
               minimum=4096, maximum=65536, power_of_two=True),
        Option("max_inline", 2048, "largest file stored inline in metadata (mount -o max_inline)",
               minimum=0, maximum=65536),
        Option("metadata_dup", True, "metadata written twice (mkfs.btrfs -m dup, the default)"),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self._items: dict[int, tuple[int, dict[int, int]]] = {}
        self.transaction_open = False  # metadata or data changed since the last commit

    def commit_transaction(self) -> None:
        """A btrfs transaction commit (fsync, the final sync): CoW of the tree paths."""
        if self.transaction_open and self.counting:
            dup = 2 if self.options["metadata_dup"] else 1
            node = int(self.options["node_size"])
            self.tally.device_write_bytes += TRANSACTION_COW_NODES * node * dup + SUPERBLOCK_WRITE_BYTES
        self.transaction_open = False

    def space(self) -> Space:
        for mount in self.containers.values():
            mount.flush_pending()  # type: ignore[attr-defined]
        self.commit_transaction()  # the final sync, one transaction for every container
        return super().space()

    @property
    def block_size(self) -> int:
        return int(self.options["sector_size"])

    def _diff(self, id: str):
        mount = self.containers.get(id)
        if mount is not None:
            mount.flush_pending()  # type: ignore[attr-defined]
        return super()._diff(id)

    def tree_items(self, tree: ImageTree) -> tuple[int, dict[int, int]]:
        """Leaf bytes of a merged image's fs tree, and each object's rank in key order
        (creation order approximates inode numbers), computed once per tree."""
        cached = self._items.get(id(tree))
        if cached is None:
            total = object_item_bytes(0)
            ranks: dict[int, int] = {id(tree.root): 0}
            for path, node in tree.walk():
                name = len(path.rsplit("/", 1)[1])
                total += object_item_bytes(name)
                ranks.setdefault(id(node), len(ranks))
                if node.__class__ is ImageFile:
                    total += self._extent_item_bytes(node.size)
            cached = self._items[id(tree)] = (total, ranks)
        return cached

    def _extent_item_bytes(self, size: int) -> int:
        if 0 < size <= min(int(self.options["max_inline"]), self.block_size - 1):
            return ITEM_HEADER_BYTES + INLINE_EXTENT_HEADER + size
        return (ITEM_HEADER_BYTES + FILE_EXTENT_BYTES) * ceil_div(size, BTRFS_MAX_EXTENT_SIZE)

    def layer_cost(self, id: str) -> int:
        """A layer subvolume owns its own files' extents and the leaves its entries fill
        (at least the snapshot's root), metadata doubled on disk when DUP."""
        sector = self.block_size
        node = int(self.options["node_size"])
        data = items = 0
        for e in self.images[id].layers[-1].entries:
            items += object_item_bytes(len(e.path.rsplit("/", 1)[1]))
            if e.type == "file":
                items += self._extent_item_bytes(e.size)
                if not 0 < e.size <= min(int(self.options["max_inline"]), sector - 1):
                    data += ceil_div(e.size, sector) * sector
        nodes = max(1, ceil_div(items, node - LEAF_HEADER_BYTES))
        return data + nodes * node * (2 if self.options["metadata_dup"] else 1)
