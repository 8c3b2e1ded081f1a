"""zfs: Docker's zfs driver; every layer and container is a clone of a snapshot.  Model only.

There is no ZFS in this kernel (not in the module list, no zpool tool), so this driver has
no real backend; its rules come from the sources named below.

Layout modelled (moby ``daemon/graphdriver/zfs/zfs.go``; DRIVERS.md section 5)::

    pool/docker/<layer0>             a filesystem, layer 0 untarred in
    pool/docker/<layer k>            clone of <layer k-1>@<snap>, layer k applied (naive ApplyDiff)
    pool/docker/<ctr>                clone of <top layer>@<snap>: the container

Snapshots and clones copy nothing.  A file's data is a set of blocks (records):

* A file no larger than ``recordsize`` is one block of its size rounded up to 512 bytes
  (``dnode_set_blksz``: ``P2ROUNDUP(size, SPA_MINBLOCKSIZE)``); the block grows with the
  file and, past ``recordsize``, the file is ``recordsize`` records, the last one whole
  (no compression: Docker sets none and ``compression=off`` is the default we model).
* A block takes ``round_up(block, 2**ashift)`` on disk.  ``ashift`` defaults to 9: a pool
  on a file or loop vdev, the kind a test rig builds, reports 512-byte sectors
  (``vdev_file.c``: ``vdev_file_physical_ashift = SPA_MINBLOCKSHIFT``); pass ``ashift=12``
  for 4 KiB-sector disks.

Copy-on-write, with SPEC section 5's writeback rule (allocation at fsync, commit or end):
every record a writeback touches gets a new block (``cow_blocks`` counts these
allocations).  When the record was still the image's, the bytes of its old data that the
writes do not replace are read and carried into the new block.  ``copyup_bytes`` counts,
as SPEC section 5 defines it for block drivers, the shared records read-modify-written: a
4 KiB write into a 128 KiB record counts the record's 131072 bytes (its data bytes when it
is the file's last, shorter one); a write covering the record's data whole reads nothing.  A record already private is rewritten to a new block too (CoW;
the old one is freed, no snapshot holds it) and copies nothing from the image.  ZFS merges
in memory and writes the record once, unlike dm-thin, which copies the whole chunk before
the write lands.  A shrinking truncate frees the records past the end and rewrites the one
holding the new end (its tail is zeroed); growing a one-block file rewrites that block at
its new size.  Deleting an image file frees nothing: the snapshot keeps it.

Metadata, kept simple: a dnode is 512 bytes (``dnodesize=legacy``); a directory the
container created, or whose entries changed, adds one 512-byte microzap block; indirect
blocks, the ZIL and the MOS are not modelled.  Lookups cost one walk (depth 1).  The ARC is
shared between clones ("single copy ARC", Docker docs): a read of a record still shared
caches it under the image file, a private record per container; the ARC holds whole blocks,
so a read brings in every block it touches.  Commit uses the naive diff.
"""

from __future__ import annotations

from dataclasses import replace

from simulator.diff import DiffResult
from simulator.hooks import NEED_DATA
from simulator.imagetree import ImageFile
from simulator.metrics import Space
from simulator.nodes import Dir, FileInode, Symlink
from simulator.ranges import RangeSet
from simulator.units import MiB, ceil_div, round_up
from simulator.viewstats import walk_private
from simulator.writeruns import PASSING_KINDS

from .base import BaseDriver, BaseMount, layer_footprint
from .options import Option

ZFS_DEFAULT_RECORDSIZE = 128 * 1024  # zfsprops(7) recordsize default
ZFS_MAX_RECORDSIZE = 1 * MiB  # zfs_max_recordsize default (OpenZFS >= 0.6.5)
SPA_MINBLOCKSIZE = 512  # spa.h SPA_MINBLOCKSHIFT = 9: block sizes are multiples of it
FILE_VDEV_ASHIFT = 9  # vdev_file.c vdev_file_physical_ashift = SPA_MINBLOCKSHIFT
MAX_ASHIFT = 16  # zpoolprops(7): ashift 9..16
DNODE_BYTES = 512  # DNODE_MIN_SIZE, dnodesize=legacy
MICROZAP_BYTES = 512  # a directory's first ZAP block (dnode_allocate blocksize 0 -> 512)
_END = 1 << 63  # past any record index


class _Records:
    """A container file's blocks: which records it owns and what it still shares."""

    __slots__ = ("private", "shared_end", "blksz", "pending", "dnode")

    def __init__(self, shared_end: int, blksz: int) -> None:
        self.private = RangeSet()  # record indices allocated to the container
        self.shared_end = shared_end  # bytes [0, shared_end) still in the image's records
        self.blksz = blksz  # the file's block size (0: no block yet)
        self.pending = RangeSet()  # records to rewrite at the next writeback (truncate, resize)
        self.dnode = False  # the dnode changed: the file is in the container's storage


class ZfsMount(BaseMount):
    def __init__(self, driver: ZfsDriver, id: str, tree) -> None:
        super().__init__(driver, id, tree)
        self.recordsize = int(driver.options["recordsize"])
        self.sector = 1 << int(driver.options["ashift"])
        self.pending: dict[FileInode, None] = {}  # files with records awaiting a rewrite

    # -- block geometry --
    def blksz(self, size: int, current: int = 0) -> int:
        """Block size of a file of ``size`` bytes whose block size was ``current``."""
        if size > self.recordsize or current == self.recordsize:
            return self.recordsize
        return max(current, round_up(size, SPA_MINBLOCKSIZE))

    def asize(self, block: int) -> int:
        return round_up(block, self.sector)

    def _records(self, inode: FileInode) -> _Records:
        st = inode.drv
        if st is None:
            origin = inode.origin
            size = origin.size if origin is not None else 0
            st = inode.drv = _Records(size, self.blksz(size))
        return st

    def _resize(self, inode: FileInode, st: _Records) -> None:
        new = self.blksz(inode.size, st.blksz)
        if new != st.blksz:
            if st.blksz and (st.shared_end or st.private):
                st.pending.add(0, 1)  # the one block is laid out again at its new size
                self.pending[inode] = None
            st.blksz = new

    # -- hooks --
    def copy_up(self, inode: FileInode, need: str) -> None:
        st = self._records(inode)
        if need != NEED_DATA:  # attributes, names, O_TRUNC, truncate: the dnode changes
            st.dnode = True

    def write(self, inode: FileInode, offset: int, length: int) -> None:
        st = self._records(inode)
        st.dnode = True
        self._resize(inode, st)

    # -- runs of writes (simulator.writeruns) --
    idempotent_lookup = True  # one dataset: a lookup costs one probe and changes nothing
    # A queued file's hooks size its own records; other files' writes, reads (the ARC),
    # names and attributes touch theirs, the shared cache or sums.
    runs_pass = PASSING_KINDS

    def batchable(self, inode: FileInode) -> bool:
        """Always: writes only mark the dnode and size the block; records CoW at writeback."""
        return True

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        """``write`` for each, at once: the block size a file gets grows with its size, and
        sizing it once at the run's final size lays out what the steps would (the pending
        rewrite of the one block is a set; ``_resize`` only compares block sizes)."""
        st = self._records(inode)
        st.dnode = True
        self._resize(inode, st)

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None:
        st = self._records(inode)
        st.dnode = True
        if new_size == 0:
            st.private.clear()
            st.pending.clear()
            st.shared_end = st.blksz = 0
            self.pending.pop(inode, None)
        elif new_size < old_size:
            block = st.blksz
            if block:
                keep = ceil_div(new_size, block)
                st.private.truncate(keep)
                st.pending.truncate(keep)
                tail = new_size // block
                if new_size % block and (st.private.covers(tail, tail + 1) or st.shared_end > new_size):
                    st.pending.add(tail, tail + 1)  # zfs_trunc zeroes the tail of this block
                    self.pending[inode] = None
            st.shared_end = min(st.shared_end, new_size)
        else:
            self._resize(inode, st)

    def writeback(self, inode: FileInode, ranges: RangeSet) -> None:
        self._allocate(inode, self._records(inode), ranges)

    def fsync(self, node) -> None:
        super().fsync(node)
        if node.__class__ is FileInode and node in self.pending:
            self._allocate(node, node.drv, RangeSet())

    def remove(self, node, last_link: bool) -> None:
        if last_link and node.__class__ is FileInode:
            self.pending.pop(node, None)

    def _allocate(self, inode: FileInode, st: _Records, dirty: RangeSet) -> None:
        """New blocks for every record ``dirty`` or a pending rewrite touches."""
        self.pending.pop(inode, None)
        block = st.blksz
        if not block:
            st.pending.clear()
            return
        records = dirty.units(block)
        records.update(st.pending)
        st.pending.clear()
        records.truncate(ceil_div(inode.size, block))
        count = records.total()
        if not count:
            return
        shared_end = st.shared_end
        shared_limit = ceil_div(shared_end, block)
        carried = 0
        for start, end in records:
            for s, e in st.private.gaps(start, min(end, shared_limit)):
                carried += _partially_written_bytes(dirty, s, e, block, shared_end)
        tally = self.tally
        tally.copyup_bytes += carried
        tally.cow_copy_bytes += carried
        tally.device_write_bytes += count * self.asize(block)
        self.driver.cow_blocks += count
        st.private.update(records)
        st.dnode = True

    def settle(self) -> None:
        """Rewrites a truncate or resize left pending on files with nothing dirty."""
        for inode in list(self.pending):
            self._allocate(inode, inode.drv, RangeSet())

    # -- ARC --
    def read(self, node, offset: int, length: int) -> None:
        cache = self.driver.page_cache
        image = node if node.__class__ is ImageFile else node.origin if node.drv is None else None
        if image is not None:  # the image's blocks, shared by every clone
            block = self.blksz(image.size)
            first, last = offset // block, ceil_div(offset + length, block)
            cache.touch(image, first * block, (last - first) * block)
            return
        st: _Records | None = node.drv
        block = st.blksz if st is not None else 0
        if not block:
            return
        first, last = offset // block, ceil_div(offset + length, block)
        mine = st.private.copy()
        mine.update(st.pending)
        mine.update(node.dirty.units(block))
        shared_limit = ceil_div(st.shared_end, block) if node.origin is not None else 0
        shared = mine.gaps(first, min(last, shared_limit))
        for s, e in shared:
            cache.touch(node.origin, s * block, (e - s) * block)
        for s, e in shared.gaps(first, last):
            cache.touch((self.id, node), s * block, (e - s) * block)

    # -- state at the end --
    def space(self) -> Space:
        self.settle()
        files = data = alloc = meta = 0
        seen: set[int] = set()
        meta += self._dir_bytes(self.ns.root)
        for _path, _parent, _name, node in walk_private(self.ns):
            if node.__class__ is Dir:
                meta += self._dir_bytes(node)
            elif node.__class__ is Symlink:
                meta += DNODE_BYTES
            elif node.__class__ is FileInode and id(node) not in seen:
                seen.add(id(node))
                st: _Records | None = node.drv
                if st is not None and node.origin is not None and not st.dnode:
                    continue  # opened for writing, never changed
                files += 1
                meta += DNODE_BYTES
                if st is not None and st.blksz:
                    alloc += st.private.total() * self.asize(st.blksz)
                    for s, e in st.private:
                        data += max(0, min(e * st.blksz, node.size) - s * st.blksz)
        return Space(whiteouts=None, opaque_dirs=None, container_files=files, container_data_bytes=data,
                     container_alloc_bytes=alloc, image_physical_bytes=0,
                     container_physical_bytes=alloc + meta, page_cache_bytes=0, cow_blocks=0)

    @staticmethod
    def _dir_bytes(d: Dir) -> int:
        """A directory's private metadata: its dnode if it changed, its ZAP if entries did."""
        base = d.base
        if base is None:
            return DNODE_BYTES + MICROZAP_BYTES
        zap = False
        for name, node in d.own.items():
            lower = base.children.get(name)
            if node is None or lower is None:
                zap = True
            elif node.__class__ is FileInode:
                zap = node.origin is not lower
            elif node.__class__ is Dir:
                zap = node.base is not lower
            if zap:
                break
        return (DNODE_BYTES if zap or d.modified else 0) + (MICROZAP_BYTES if zap else 0)


class ZfsDriver(BaseDriver):
    name = "zfs"
    summary = "Docker zfs (model only): a clone per layer and container, record CoW, shared ARC"
    naive_diff = True  # moby zfs.go: graphdriver.NewNaiveDiffDriver
    page_cache_shared = True
    mount_class = ZfsMount
    OPTIONS = (
        Option("recordsize", ZFS_DEFAULT_RECORDSIZE, "largest data block of a file, bytes",
               minimum=SPA_MINBLOCKSIZE, maximum=ZFS_MAX_RECORDSIZE, power_of_two=True),
        Option("ashift", FILE_VDEV_ASHIFT, "log2 of the pool's sector size (9 for file vdevs)",
               minimum=FILE_VDEV_ASHIFT, maximum=MAX_ASHIFT),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self.cow_blocks = 0  # record allocations for containers, retired ones included

    def file_bytes(self, size: int) -> int:
        """On-disk data bytes of a file written whole (a layer's untar)."""
        recordsize, sector = int(self.options["recordsize"]), 1 << int(self.options["ashift"])
        if size <= recordsize:
            return round_up(round_up(size, SPA_MINBLOCKSIZE), sector)
        return ceil_div(size, recordsize) * round_up(recordsize, sector)

    def layer_cost(self, id: str) -> int:
        """The layer's files whole, a dnode per file or symlink, dnode + ZAP per directory
        the layer creates or adds entries to."""
        layer = self.images[id].layers[-1]
        dirs = layer_footprint(layer, SPA_MINBLOCKSIZE)[2]
        data, nodes = layer.derived(("zfs", self.options["recordsize"], self.options["ashift"]), self._files_cost)
        return data + nodes * DNODE_BYTES + dirs * (DNODE_BYTES + MICROZAP_BYTES)

    def _files_cost(self, layer) -> tuple[int, int]:
        """(data bytes, dnodes) of a layer's files and symlinks (its ``derived`` value)."""
        entries = layer.entries
        return (sum(self.file_bytes(e.size) for e in entries if e.type == "file"),
                sum(e.type in ("file", "symlink") for e in entries))

    def _diff(self, id: str) -> DiffResult:
        mount = self.containers.get(id)
        if mount is not None:
            mount.settle()  # a commit is a writeback point
        return super()._diff(id)

    def space(self) -> Space:
        return replace(super().space(), cow_blocks=self.cow_blocks)


def _partially_written_bytes(dirty: RangeSet, s: int, e: int, block: int, data_end: int) -> int:
    """Data bytes of the records ``[s, e)`` (data ending at ``data_end``) that ``dirty`` does
    not cover whole: the shared records a writeback must read before rewriting them."""
    lo, hi = s * block, min(e * block, data_end)
    covered = 0
    last = ceil_div(data_end, block)  # one past the record holding the last data byte
    for a, b in dirty:
        if b <= lo or a >= hi:
            continue
        first = max(ceil_div(a, block), s)
        stop = min(last if b >= data_end else b // block, e)
        if stop > first:
            covered += min(stop * block, data_end) - first * block
    return hi - lo - covered
