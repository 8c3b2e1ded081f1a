"""The filesystem on a thin device: which 4 KiB fs blocks each operation writes, and when.
Pure arithmetic over byte offsets of the device.

Where mkfs puts things, and the numbers behind it, are in ``drivers.fsgeometry``; where each
file is, in ``drivers.thinlayout``.  Both filesystems place inodes and blocks by group as
the kernel does: ext4 by block group (``drivers.ext4alloc``), xfs by allocation group
(``drivers.xfsalloc``); image layers are laid step by step as the real backend lays them
(``drivers.thinlaying``).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable

from pyroaring import BitMap64

from simulator.ranges import RangeSet
from simulator.units import ceil_div, round_up

from .fsgeometry import EXT4_BLOCKS_PER_GROUP, FS_BLOCK, XFS_MOUNT_LOG_CLEAR, Geometry
from .ext4alloc import EXT4_MB_STREAM_BLOCKS, Ext4Groups
from .thinlayout import FileMap, FileRec, Layout
from .thinpool import ThinDevice, WriteCost
from .xfsalloc import (AGF_HEADERS, AGI_HEADERS, NO_BLOCK, XFS_CHUNK_BLOCKS, XFS_CLUSTER_BLOCKS, XFS_DIR_SF_MAX,
                       XfsGroups)

if TYPE_CHECKING:
    from .thinlaying import LaidView

GROUP_BYTES = EXT4_BLOCKS_PER_GROUP * FS_BLOCK


@dataclass
class FsState:
    log_head: int = 0  # bytes written to the log so far (the head, modulo its size)
    next_image_ino: int = 1  # ImageTree's file numbering, continued layer by layer


@dataclass
class ThinFs:
    """One thin device and the filesystem on it; writes become chunk costs."""

    geometry: Geometry
    device: ThinDevice
    layout: Layout
    state: FsState
    # ext4's block groups or xfs's allocation groups (``drivers.ext4alloc``, ``drivers.xfsalloc``)
    groups: Ext4Groups | XfsGroups
    on_cost: Callable[[WriteCost, int], None] | None = None
    # on an image layer, the merged view as laid (``drivers.thinlaying``)
    view: LaidView | None = None
    # blocks a truncate or an extending write zeroed in part, dirty in the page cache until
    # written back: file -> {file block: device offset}; a file removed drops its own
    zeroed: dict[FileMap, dict[int, int]] = field(default_factory=dict)
    # Metadata blocks dirtied since the last commit: a roaring bitmap, since a container that
    # reads thousands of image files dirties their inode blocks (relatime) and keeps them
    # (read-startup: ~4,000 blocks, 512 KiB as a set, 16 KiB here).
    pending: BitMap64 = field(default_factory=BitMap64)
    # xfs: the inode clusters in ``pending`` (first blocks), each logged as one item
    clusters: BitMap64 = field(default_factory=BitMap64)
    # xfs: blocks an fsync logged that are not home yet.  An fsync forces the log only
    # (xfs_log_force); the AIL writes the items home later, within a run at the unmount.
    # A block freed before then is stale and never written (measured: a directory whose
    # inode an fsync logged, emptied and removed, left its inode cluster unwritten).
    logged: BitMap64 = field(default_factory=BitMap64)
    _revoked: bool = False  # a metadata block freed since the last commit (ext4)
    _mount_logged: bool = False  # a transaction committed on this mount (ext4)
    _sampled: bool = False  # a regular file opened on this mount (ext4_sample_last_mounted)

    @property
    def chunk(self) -> int:
        return self.device.chunk

    @property
    def ext4(self) -> bool:
        return self.geometry.ext4 is not None

    def snapshot(self, id: str, on_cost=None) -> ThinFs:
        return ThinFs(self.geometry, ThinDevice(id, self.chunk, self.device), Layout(self.layout),
                      replace(self.state), self.groups.snapshot(), on_cost)

    # -- writes --
    def write(self, ranges: RangeSet) -> WriteCost:
        cost = self.device.write(ranges)
        if self.on_cost is not None:
            self.on_cost(cost, self.chunk)
        return cost

    def log_ranges(self, nbytes: int) -> RangeSet:
        """Where the next ``nbytes`` of the log go: on from the head, wrapping; an ext4
        journal's first block is its superblock (jbd2's log starts at s_first = 1)."""
        g = self.geometry
        first = FS_BLOCK if self.ext4 else 0
        out = RangeSet()
        pos = first + self.state.log_head % (g.log_bytes - first)
        while nbytes > 0:
            n = min(nbytes, g.log_bytes - pos)
            out.add(g.log_start + pos, g.log_start + pos + n)
            nbytes -= n
            pos = first
        return out

    def mount(self) -> None:
        """What mounting and unmounting writes: the superblock; xfs also clears the log
        ahead of its head and leaves an unmount record (REAL_KERNEL 4a)."""
        ranges = RangeSet([(0, FS_BLOCK)])
        self.groups.mount()
        self._mount_logged = self._sampled = False
        if self.geometry.fs == "xfs":  # the unmount record at the head, then the cleared blocks
            ranges.update(self.log_ranges(FS_BLOCK + XFS_MOUNT_LOG_CLEAR))
            self.state.log_head += FS_BLOCK
        self.write(ranges)

    def commit(self, home: bool = True) -> None:
        """A journal commit (fsync, sync, umount): the log write, then the home writes;
        ``home=False`` (xfs's fsync) leaves the logged blocks to go home later (``logged``)."""
        if not self.pending:
            if home and self.logged:
                self.write(RangeSet.of_units(self.logged, FS_BLOCK))
                self.logged.clear()
            return
        if self.groups.__class__ is XfsGroups:
            for chunk in self.groups.settle():  # type: ignore[union-attr]
                self._drop_chunk(chunk)
        nbytes = self.geometry.log_write_bytes(len(self.pending) - (XFS_CLUSTER_BLOCKS - 1) * len(self.clusters))
        if nbytes and self._revoked:
            nbytes += FS_BLOCK  # the transaction's revoke block
        self._revoked = False
        if nbytes and self.ext4 and not self._mount_logged:
            self._mount_logged = True  # the log's tail moved: jbd2 rewrites its superblock (at
            g = self.geometry  # unmount, jbd2_mark_journal_empty); a mount that logged nothing does not
            self.write(RangeSet([(g.log_start, g.log_start + FS_BLOCK)]))
        if nbytes:  # ext4 without a journal writes its metadata home directly
            log = self.log_ranges(nbytes)
            self.state.log_head += nbytes
            self.write(log)
        if home:
            self.pending |= self.logged
            self.logged.clear()
            self.write(RangeSet.of_units(self.pending, FS_BLOCK))
        else:
            self.logged |= self.pending
        self.pending.clear()
        self.clusters.clear()

    def _drop_chunk(self, chunk: int) -> None:
        """A freed xfs inode chunk: its clusters are stale, not written; its blocks are freed."""
        for block in range(chunk, chunk + XFS_CHUNK_BLOCKS):
            self.pending.discard(block)
            self.clusters.discard(block)
            self.logged.discard(block)
        self.dirty_alloc([(chunk * FS_BLOCK, XFS_CHUNK_BLOCKS * FS_BLOCK)])

    def write_home(self, blocks: Iterable[int]) -> None:
        """Write these metadata blocks home now, where dirty (journal-less ext4's fsync:
        ``sync_mapping_buffers``, ``sync_inode_metadata``); the rest stays dirty."""
        home = RangeSet()
        for b in sorted(set(blocks)):
            if b in self.pending:
                self.pending.discard(b)
                home.add(b * FS_BLOCK, (b + 1) * FS_BLOCK)
        if home:
            self.write(home)

    # -- metadata (an xfs shortform directory has no block: NO_BLOCK, negative) --
    def dirty_block(self, block: int) -> None:
        if block >= 0:
            self.pending.add(block)

    def entries_changed(self, ino: int, block: int) -> None:
        """A name was added to or removed from directory ``ino``: its block, and its inode
        (mtime and ctime: ext4_add_entry / ext4_delete_entry, xfs_dir_createname /
        xfs_dir_removename log it)."""
        self.dirty_block(block)
        self.dirty_inode(ino)

    def dirty_inode(self, ino: int) -> None:
        groups = self.groups
        if groups.__class__ is XfsGroups:  # the inode's whole cluster goes home
            first = groups.cluster(ino)  # type: ignore[union-attr]
            if first not in self.clusters:
                self.clusters.add(first)
                self.pending.update(range(first, first + XFS_CLUSTER_BLOCKS))
        else:
            self.pending.add(self.geometry.inode_block(ino))

    def dirty_alloc(self, extents: Iterable[tuple[int, int]] = ()) -> None:
        """Blocks ``extents`` (device offset, bytes) were allocated or freed: the headers
        that count them (ext4: each group's block bitmap and descriptor block; xfs: the AG's
        AGF and free-space btree roots)."""
        groups = self.groups
        for dev, n in extents:
            if groups.__class__ is XfsGroups:  # an extent never spans AGs (nor is past the end in one)
                ag = dev // FS_BLOCK // groups.agblocks  # type: ignore[union-attr]
                if ag < len(groups.ags):  # type: ignore[union-attr]
                    self.pending.update(groups.headers(ag, AGF_HEADERS))  # type: ignore[union-attr]
                continue
            for g in range(dev // GROUP_BYTES, (dev + n - 1) // GROUP_BYTES + 1):
                self.pending.add(groups.block_bitmap(g))  # type: ignore[union-attr]
                self.pending.add(groups.descriptor_block(g))  # type: ignore[union-attr]

    def dirty_ialloc(self, ino: int) -> None:
        """Inode ``ino`` was allocated or freed (ext4: its group's inode bitmap and descriptor;
        xfs: its AG's AGI and inode btree roots)."""
        groups = self.groups
        g = groups.group_of(ino)
        if groups.__class__ is XfsGroups:
            self.pending.update(groups.headers(g, AGI_HEADERS))  # type: ignore[union-attr]
            return
        self.pending.add(groups.inode_bitmap(g))  # type: ignore[union-attr]
        self.pending.add(groups.descriptor_block(g))  # type: ignore[union-attr]

    def journal_super(self, opened: bool = False) -> None:
        """ext4 changes its superblock in a transaction: an inode put on the orphan list
        (unlink of the last name, rmdir, a truncate that does not grow: ``s_last_orphan``), or the
        first regular file opened on a mount (``ext4_sample_last_mounted``, ``opened``).
        With a journal the block is logged (measured: ``logdump`` shows FS block 0 in the
        container's transaction); without one it is written home, as at every mount."""
        if self.ext4 and (not opened or not self._sampled):
            self._sampled = self._sampled or opened
            self.pending.add(0)

    def forget_block(self, block: int) -> None:
        """A dirty block freed before it was written (``ext4_forget``): it is not written; a
        journal records its revocation (``jbd2_journal_revoke``: a revoke block at commit)."""
        if block < 0:
            return
        self.pending.discard(block)
        self.logged.discard(block)
        self._revoked = self.ext4

    def new_inode(self, parent: int, name: str, is_dir: bool) -> int:
        """A new inode for entry ``name`` of directory inode ``parent``, placed by group; an
        xfs chunk allocated for it is initialised, and counted as allocated blocks."""
        ino = self.groups.new_inode(parent, name, is_dir)
        if self.groups.__class__ is XfsGroups and self.groups.fresh:  # type: ignore[union-attr]
            for first in self.groups.fresh:  # type: ignore[union-attr]
                self.pending.update(range(first, first + XFS_CHUNK_BLOCKS))
                self.dirty_alloc([(first * FS_BLOCK, XFS_CHUNK_BLOCKS * FS_BLOCK)])
            self.groups.fresh.clear()  # type: ignore[union-attr]
        return ino

    def free_inode(self, ino: int, is_dir: bool) -> None:
        self.groups.free_inode(ino, is_dir)
        self.dirty_ialloc(ino)

    def free_extents(self, extents: Iterable[tuple[int, int]]) -> None:
        """Blocks (device offset, bytes) go back to the fs (the pool keeps them: no discard)."""
        extents = list(extents)
        for dev, n in extents:
            self.groups.release(dev // FS_BLOCK, n // FS_BLOCK)
        if extents:
            self.dirty_alloc(extents)

    # -- a file's end: the block holding it is zeroed past it (dirty in the page cache) --
    def resize(self, fm: FileMap, old: int, new: int) -> None:
        """A truncate from ``old`` to ``new`` bytes: blocks past the new end go back, and the
        block holding the end that stays, if it has data, is zeroed past it (the new end's
        when shrinking, the old end's when growing: ext4_block_truncate_page,
        xfs_setattr_size).  Measured: a 10,000-byte file cut to 100 bytes unshares 5
        blocks, to 4,096 bytes 4."""
        self.free_extents(fm.cut(round_up(new, FS_BLOCK)))
        pending = self.zeroed.get(fm)
        if pending:  # pages cut away before they were written are dropped
            for block in [b for b in pending if b * FS_BLOCK >= new]:
                del pending[block]
        fm.size = fm.disk_size = new
        end = min(old, new)
        if end % FS_BLOCK:
            self._zero_tail(fm, end // FS_BLOCK)

    def extend(self, fm: FileMap, start: int, end: int, written: RangeSet | None = None) -> None:
        """A write ``[start, ...)`` (the first of a run, which ends at ``end``) takes the file
        past its size: if it starts in a later block than the old end, that block's tail is
        zeroed (ext4_da_write_begin; xfs_file_write_checks) and written back, unless the
        writes cover it (``written``)."""
        old = fm.size
        fm.size = end
        block = old // FS_BLOCK
        if old % FS_BLOCK and start // FS_BLOCK > block \
                and (written is None or not written.overlap(block * FS_BLOCK, (block + 1) * FS_BLOCK)):
            self._zero_tail(fm, block)

    def _zero_tail(self, fm: FileMap, block: int) -> None:
        mapped = RangeSet()
        fm.map(block * FS_BLOCK, (block + 1) * FS_BLOCK, mapped)
        if mapped:  # a hole stays one
            self.zeroed.setdefault(fm, {})[block] = next(iter(mapped))[0]

    def write_zeroed(self, fm: FileMap | None = None, start: int = 0) -> None:
        """Write back the zeroed blocks of ``fm`` (fsync, writeback; only those holding bytes
        at ``start`` or after: a growing xfs truncate), or of every file (sync)."""
        for key in [fm] if fm is not None else list(self.zeroed):
            pages = self.zeroed.get(key)
            if not pages:
                continue
            blocks = [b for b in pages if (b + 1) * FS_BLOCK > start]
            if blocks:
                self.write(RangeSet((dev, dev + FS_BLOCK) for dev in [pages.pop(b) for b in blocks]))
            if not pages:
                del self.zeroed[key]

    # -- data --
    def alloc(self, nbytes: int, regular: bool, near: int, stream: bool = False) -> list[tuple[int, int]]:
        """Fresh fs blocks for ``nbytes`` (a multiple of FS_BLOCK) for inode ``near``, as
        (device offset, bytes), from its group (ext4 puts a regular file's apart from
        directories', and a ``stream`` may take a stream's freed blocks: ``Ext4Groups.alloc``)."""
        if stream and self.groups.__class__ is Ext4Groups:
            blocks = self.groups.alloc(nbytes // FS_BLOCK, regular, self.groups.group_of(near), True)
        else:
            blocks = self.groups.alloc(nbytes // FS_BLOCK, regular, self.groups.group_of(near))
        return [(b * FS_BLOCK, n * FS_BLOCK) for b, n in blocks]

    def new_dir_block(self, ino: int) -> int:
        """A new directory's block (ext4); none on xfs, whose new directories are shortform."""
        if not self.ext4:
            return NO_BLOCK
        return self.dir_block(ino)

    def dir_block(self, ino: int) -> int:
        """A block for directory ``ino``'s entries, allocated and dirty."""
        block = self.alloc(FS_BLOCK, regular=False, near=ino)[0][0] // FS_BLOCK
        self.pending.add(block)
        self.dirty_alloc([(block * FS_BLOCK, FS_BLOCK)])
        return block

    def dir_format(self, ino: int, block: int, entry_bytes: int) -> int:
        """The block directory ``ino`` keeps its entries in, now that they take
        ``entry_bytes`` in shortform: xfs moves them to a block of their own when they
        outgrow the inode and back, freeing it, when they fit again (``drivers.xfsalloc``);
        ext4 keeps ``block``."""
        if self.ext4:
            return block
        shortform = entry_bytes <= XFS_DIR_SF_MAX
        if shortform and block >= 0:
            self.forget_block(block)
            self.free_extents([(block * FS_BLOCK, FS_BLOCK)])
            return NO_BLOCK
        if not shortform and block < 0:
            return self.dir_block(ino)
        return block

    def write_file(self, fm: FileMap, ranges: RangeSet, size: int, open_for_write: bool = False) -> None:
        """Writeback of a file's dirty ``ranges``: overwrite mapped blocks in place (on the
        fs; the pool decides about chunks), allocate the rest together (delalloc); a large
        file still ``open_for_write`` allocates as a stream (``Ext4Groups.alloc``)."""
        out = RangeSet()
        unmapped = RangeSet()
        for start, end in ranges.units(FS_BLOCK):
            unmapped.update(fm.map(start * FS_BLOCK, end * FS_BLOCK, out))
        if unmapped:
            stream = open_for_write and ceil_div(size, FS_BLOCK) > EXT4_MB_STREAM_BLOCKS
            pieces = self.alloc(unmapped.total(), True, fm.ino, stream)
            self.dirty_alloc(pieces)
            for f_start, f_end in unmapped:
                while f_start < f_end:
                    dev, n = pieces[0]
                    take = min(n, f_end - f_start)
                    insort(fm.extents, (f_start, dev, take))
                    out.add(dev, dev + take)
                    f_start += take
                    pieces[0] = (dev + take, n - take)
                    if pieces[0][1] == 0:
                        pieces.pop(0)
            self.dirty_inode(fm.ino)
        self.write(out)
        fm.disk_size = max(fm.disk_size, min(size, ranges.end()))


def mkfs(geometry: Geometry, chunk: int) -> ThinFs:
    """The base device: what mkfs writes (headers, inode tables or the root's inode chunk,
    the whole journal/log, the root directory's block)."""
    g = geometry
    fs_blocks = g.base_size // FS_BLOCK
    if g.ext4 is not None:  # mkfs's root block is the first of group 0's data
        groups: Ext4Groups | XfsGroups = Ext4Groups(g.ext4, fs_blocks, (g.log_start // FS_BLOCK, g.log_bytes // FS_BLOCK))
        root_block = g.data_start // FS_BLOCK
    else:
        groups = XfsGroups.make(fs_blocks)
        root_block = NO_BLOCK  # the root is shortform
    fs = ThinFs(g, ThinDevice("base", chunk), Layout(root=(g.root_ino, root_block)), FsState(), groups)
    ranges = RangeSet([(g.inode_start, g.inode_start + g.mkfs_inode_bytes), (g.log_start, g.log_start + g.log_bytes)])
    if root_block >= 0:
        ranges.add(root_block * FS_BLOCK, (root_block + 1) * FS_BLOCK)
    if g.ext4 is not None:  # group 0's headers; later groups: backup superblocks, flex groups' tables
        ranges.add(0, g.header_blocks * FS_BLOCK)
        lay = g.ext4
        for group in range(1, lay.groups):
            if lay.used(group):
                start = group * EXT4_BLOCKS_PER_GROUP * FS_BLOCK
                ranges.add(start, start + lay.used(group) * FS_BLOCK)
    else:  # every AG's headers
        for ag in range(len(groups.ags)):  # type: ignore[union-attr]
            start = ag * groups.agblocks * FS_BLOCK  # type: ignore[union-attr]
            ranges.add(start, start + g.header_blocks * FS_BLOCK)
    fs.write(ranges)
    return fs


__all__ = ["FS_BLOCK", "FileMap", "FileRec", "FsState", "Geometry", "Layout", "ThinFs", "mkfs"]
