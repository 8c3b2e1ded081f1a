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
* The mount clamps ``max_inline`` to the sector (``max_inline=65536`` shows 4096): a
  4095-B file is inline, a 4096-B one is not.
* Rename, chmod, unlink, hard links: no data.  ``fi du`` counts a hard-linked inode once.
* Writeback earlier than SPEC section 5's rule, as btrfs does it (the only exceptions):
  a file truncated to 0 (``truncate(2)``, or ``open(O_TRUNC)`` of an existing file, even
  an empty one) is flushed at its next close (``BTRFS_INODE_FLUSH_ON_CLOSE``; an open for
  reading consumes the flag too), and a rename over a non-empty file flushes the source
  (``btrfs_rename``).  Measured: O_TRUNC, write 200000 B, cut to 100 B leaves sector 0 a
  regular extent and a 200704-B bookend; a new file doing the same ends inline.
* Cutting a file inside a dirty page keeps that page dirty: the sector is written.
* ``btrfs filesystem du`` "Exclusive" counts the *referenced* part of each unshared extent
  (a 1 MiB private extent truncated to 4096 shows 4096); qgroups count whole extents: the
  bookends stay allocated (same case: 1 MiB in the qgroup).  So ``container_alloc_bytes``
  is the referenced private sectors (``fi du``) and ``container_physical_bytes`` holds the
  whole extents (bookend retention) plus metadata.
* qgroup exclusive metadata: 16 KiB for an untouched snapshot (its root), one node per
  CoW'd leaf plus the root; 50 new dirs + 50 new files: 65536 (4 nodes).  Counted once
  although metadata is DUP on disk.  Which leaves a container CoWs follows key order, as
  ``drivers.btrfs_tree`` and ``drivers.btrfs_cow`` say with what was measured there (an
  inode item rewritten by data, chmod or relatime on a first read or a link walked through;
  entries added or removed, even if undone by the end, ``entry``; new objects and orphan
  items in the last leaf; leaves under a third full pushed into their neighbours).  btrfs
  lays one image into 9 or 10 leaves run to run, so the model predicts a mean and
  ``validate`` compares with the mean of three real runs (docs/fidelity.md).
* The real backend reads these figures after a quota rescan (the live counters drift), and
  lists a container only after measuring it (a listing's atime updates CoW leaves):
  ``simulator/real/btrfs.py``.
"""

from __future__ import annotations

from pyroaring import BitMap64

from simulator.hooks import NEED_TRUNC_OPEN
from simulator.imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode
from simulator.ranges import RangeSet
from simulator.units import ceil_div
from simulator.writeruns import PASSING_KINDS

from . import btrfs_usage
from .base import BaseDriver, BaseMount
from .btrfs_cow import image_identity
from .btrfs_layout import (BEYOND_EOF, BTRFS_MAX_EXTENT_SIZE, ITEM_HEADER_BYTES, XATTR_ITEM_BYTES, FileState,
                           extent_item_bytes, live_inodes)
from .btrfs_tree import TreeLayout, tree_layout
from .options import Option

# A transaction CoWs the touched fs-tree path plus the extent, csum, free-space, root and
# device trees: measured here, a 1-byte overwrite in a snapshot wrote 241664 B to the loop
# device = 4096 data + 7 nodes x 16 KiB x 2 (DUP) + 2 superblock copies x 4 KiB
# (REAL_KERNEL.md sections 3 and 6).
TRANSACTION_COW_NODES = 7
SUPERBLOCK_WRITE_BYTES = 2 * 4096
ATTRIBUTE_OPS = frozenset(("chmod", "chown", "utime", "setxattr"))  # rewrite an inode item only
NEW_OBJECT_OPS = frozenset(("create", "mkdir", "symlink"))  # a new inode: the highest number, the last leaf


class BtrfsMount(BaseMount):
    def __init__(self, driver: BtrfsDriver, id: str, tree: ImageTree) -> None:
        super().__init__(driver, id, tree)
        opts = driver.options
        self.sector = int(opts["sector_size"])
        self.inline_limit = min(int(opts["max_inline"]), self.sector - 1)
        self.chunk = BTRFS_MAX_EXTENT_SIZE // self.sector
        self.touched = BitMap64()  # image objects (id) whose items this container rewrote
        self.xattr_bytes = 0  # leaf bytes of the xattrs the container set
        # Names added to (True) or removed from image directories, whatever became of them,
        # and whether the container made any object (``entry``, ``metadata``)
        self.entries: set[tuple[ImageDir, str, bool]] = set()
        self.made_objects = False
        # Within one operation (reset by every lookup): the file it created, and whether
        # it replaced a non-empty file (a rename over one flushes the source).
        self._created: FileInode | None = None
        self._replaced_nonempty = False

    def file_state(self, inode: FileInode) -> FileState:
        """The file's sectors, extents and inline state, made on first use (an image file's
        first use also rewrites its inode item: its leaf is CoW'd)."""
        st = inode.drv
        if st is None:
            st = inode.drv = FileState(inode, self.inline_limit, self.sector)
            if inode.origin is not None:
                self.touched.add(id(inode.origin))
        return st

    def _dirty(self) -> None:
        self.driver.transaction_open = True  # type: ignore[attr-defined]

    def _rmw(self, st: FileState, sector: int) -> None:
        """A partial write (or a tail zeroing) of ``sector``: read first if it is shared."""
        if st.shared.covers(sector, sector + 1):
            self.tally.copyup_bytes += self.sector
            self.tally.cow_copy_bytes += self.sector

    def _extend(self, st: FileState, old: int) -> None:
        """Growing a file from an unaligned size zeroes (so rewrites) its old tail sector."""
        if old % self.sector:
            tail = old // self.sector
            self._rmw(st, tail)
            st.shared.remove(tail, tail + 1)
            st.pending.add(tail, tail + 1)

    def _flush(self, inode: FileInode) -> None:
        """``filemap_flush``: the file's dirty pages are written back now."""
        self.ns.writeback(inode)
        self._write_pending(inode)

    def _write_pending(self, inode: FileInode) -> None:
        """Tail sectors zeroed by an extension with no data write after it go to disk."""
        st = inode.drv
        if st is not None and st.pending:
            self._write_sectors(inode, st, st.pending.copy())

    # -- hooks --------------------------------------------------------------------------
    def lookup(self, parent, name: str) -> int:
        self._created = None
        self._replaced_nonempty = False
        return 1

    def closed(self, node, op: str) -> None:
        if op == "read" and node.__class__ is ImageFile:
            # relatime: the first read of an image file, laid down moments before, rewrites its
            # inode item (atime) and CoWs the leaf (import-scan, 186 reads, max_inline=0:
            # 131072 B of qgroup exclusive metadata, not 16384)
            self.touched.add(id(node))
            return
        if node.__class__ is not FileInode:
            return
        st = self.file_state(node)
        if op == "create" and node is not self._created:
            st.flush_on_close = True  # open(O_TRUNC) of an existing file, even an empty one
        if st.flush_on_close:  # btrfs_release_file: BTRFS_INODE_FLUSH_ON_CLOSE
            st.flush_on_close = False
            self._flush(node)

    def followed(self, parent, name: str, link) -> None:
        if link.__class__ is ImageSymlink:  # relatime on a link walked through, as on a read:
            self.touched.add(id(link))  # a stat through one in a 300-file directory, 2 nodes, not 1

    def remove(self, node, last_link: bool) -> None:
        if node.__class__ in (FileInode, ImageFile):
            self._replaced_nonempty = node.size > 0
        else:
            self._replaced_nonempty = node.__class__ not in (Dir, ImageDir)  # a symlink's size > 0

    def meta_copy_up(self, node) -> None:
        # A directory made private only because something below it changed rewrites none of
        # its items (its entries' changes are found at the end: drivers.btrfs_cow).
        self._dirty()

    def copy_up(self, inode: FileInode, need: str) -> None:
        st = self.file_state(inode)
        if need == NEED_TRUNC_OPEN:
            st.flush_on_close = True
        self._dirty()

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        st = self.file_state(inode)
        sector, end = self.sector, offset + length
        if offset > st.size:
            self._extend(st, st.size)
        first, last = offset // sector, (end - 1) // sector
        if offset % sector:
            self._rmw(st, first)
        if end % sector and (last != first or not offset % sector):
            self._rmw(st, last)
        st.shared.remove(first, last + 1)  # rewritten: no longer the image's data
        st.dirty.add(first, last + 1)
        st.size = inode.size
        self._dirty()

    # -- runs of writes (simulator.writeruns) and of stats (simulator.statruns) --
    idempotent_lookup = True  # resets the operation's state: once is all
    # A queued file's hooks change its own sector state, sums and the open-transaction flag;
    # its writeback, the order-dependent part, waits for an fsync, a commit or the end,
    # which flush first.  (A lookup resets per-operation state that each operation sets
    # after its own lookup.)
    runs_pass = PASSING_KINDS

    def lookup_many(self, parents: list, groups: list, depths) -> None:
        self.lookup(parents[-1], groups[-1][-1])  # resets the operation's state: once is all
        depths[1] += sum(map(len, groups))

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        """``write`` for each, in order, where order matters: a partial sector is read
        first only while it is still the image's (``shared`` only shrinks), and growing
        past the end zeroes the old tail; the dirty sectors are one union.  Nothing is in
        order to keep when no write starts past the file's end (none, or each where the one
        before ended) and none reads a sector first (each is sector-aligned, or the run
        meets no sector of the image's): ``union`` alone answers it (a log's appends, a
        database's page writes)."""
        st = self.file_state(inode)
        sector, shared, size = self.sector, st.shared, st.size
        if (max(starts) <= size or starts[0] <= size and starts[1:] == ends[:-1]) and (
                not shared or min(starts) // sector >= shared.end()
                or not any(offset % sector for offset in starts) and not any(end % sector for end in ends)):
            sectors = union.units(sector)
            if shared:
                for first, end in sectors:
                    shared.remove(first, end)
            st.dirty.update(sectors)
            st.size = inode.size
            self._dirty()
            return
        firsts, lasts = [], []
        for offset, end in zip(starts, ends):
            if offset > size:
                self._extend(st, size)
            first, last = offset // sector, (end - 1) // sector
            if shared and first < shared.end():  # else no sector of it is the image's
                if offset % sector:
                    self._rmw(st, first)
                if end % sector and (last != first or not offset % sector):
                    self._rmw(st, last)
                shared.remove(first, last + 1)
            firsts.append(first)
            lasts.append(last + 1)
            if end > size:
                size = end
        st.dirty.add_many(firsts, lasts)
        st.size = inode.size
        self._dirty()

    def batchable(self, inode: FileInode) -> bool:
        """Not flushed at close: sector CoW is then this file's own until writeback."""
        return inode.drv is not None and not inode.drv.flush_on_close

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        st = self.file_state(inode)
        if new_size > old_size:
            self._extend(st, old_size)
        else:
            keep = ceil_div(new_size, self.sector)
            cut = new_size // self.sector
            if new_size % self.sector and st.dirty.covers(cut, cut + 1):
                st.pending.add(cut, cut + 1)  # the cut page stays dirty (its tail zeroed)
            st.drop(keep, BEYOND_EOF)
            st.pending.truncate(keep)
            st.dirty.truncate(keep)
            if new_size == 0:
                st.inline = ""
                st.flush_on_close = True  # btrfs_setsize: BTRFS_INODE_FLUSH_ON_CLOSE
        st.size = new_size
        self._dirty()

    def writeback(self, inode: FileInode, ranges: RangeSet) -> None:
        st = self.file_state(inode)
        sectors = ranges.units(self.sector)
        sectors.update(st.pending)
        self._write_sectors(inode, st, sectors)

    def _write_sectors(self, inode: FileInode, st: FileState, sectors: RangeSet) -> None:
        st.pending.clear()
        st.dirty.clear()
        sectors.truncate(ceil_div(st.size, self.sector))
        if not sectors:
            return
        tally = self.tally
        if 0 < st.size <= self.inline_limit:  # fits a leaf: the data goes inline
            st.drop(0, 1)
            st.inline = "private"
            self._dirty()
            return
        if st.inline:
            sectors.add(0, 1)  # converting an inline extent rewrites sector 0
            st.inline = ""
        st.rewrite(sectors, self.chunk)
        tally.device_write_bytes += sectors.total() * self.sector
        self._dirty()

    def flush_pending(self) -> None:
        for inode in live_inodes(self.ns):
            self._write_pending(inode)

    def fsync(self, node) -> None:
        self.tally.fsyncs += 1
        if node.__class__ is FileInode:
            self._write_pending(node)
        self.driver.commit_transaction()  # type: ignore[attr-defined]

    def entry(self, parent: Dir, name: str, added: bool) -> None:
        """The parent's inode item and the name's DIR_ITEM and DIR_INDEX leaves are CoW'd,
        even if the name is back by the end (``tests/test_real_btrfs.py``)."""
        if parent.base is not None:
            self.entries.add((parent.base, name, added))

    def metadata(self, op: str, node) -> None:
        self.tally.metadata_ops += 1
        if op in NEW_OBJECT_OPS:
            self.made_objects = True
        elif op in ("rename", "link"):
            ident = image_identity(node)  # its INODE_REF and inode item (ctime, nlink) rewritten
            if ident is not None:
                self.touched.add(id(ident))
        if op == "create":
            self._created = node
        elif op == "rename" and self._replaced_nonempty and node.__class__ is FileInode:
            self._flush(node)  # btrfs_rename: filemap_flush of a file replacing a non-empty one
        if op == "setxattr":
            self.xattr_bytes += ITEM_HEADER_BYTES + XATTR_ITEM_BYTES
        if op in ATTRIBUTE_OPS and node.__class__ is Dir and node.base is not None:
            self.touched.add(id(node.base))  # its inode item is rewritten in place
        self._dirty()

    def cache_key(self, node) -> object:
        # One inode per file in the container's subvolume, before and after it is written;
        # no sharing with other containers (docker docs: no page cache sharing).
        if node.__class__ is FileInode and node.origin is not None:
            return node.origin
        return node

    # -- state at the end (drivers.btrfs_usage) --------------------------------------------
    def usage(self) -> dict[str, int]:
        """What the real file system reports for this container's subvolume."""
        return btrfs_usage.usage(self)

    def space(self) -> Space:
        return btrfs_usage.space(self)


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

    def layout(self, tree: ImageTree) -> TreeLayout:
        """The image's fs tree in key order (``drivers.btrfs_tree``)."""
        return tree_layout(tree, int(self.options["node_size"]), self.block_size, int(self.options["max_inline"]),
                           self.extent_item_bytes)

    def extent_item_bytes(self, size: int) -> int:
        return extent_item_bytes(size, min(int(self.options["max_inline"]), self.block_size - 1))

    def layer_cost(self, id: str) -> int:
        return btrfs_usage.layer_bytes(self, self.images[id].layers[-1])
