"""The filesystem on a thin device: which 4 KiB fs blocks each operation writes, and when.
Pure arithmetic over byte offsets of the device.

Where mkfs puts things, and the numbers behind it, are in ``drivers.fsgeometry``; where each
file is, in ``drivers.thinlayout``.  xfs is mkfs's picture flattened into one allocation
group (the layout drawn in ``drivers/devicemapper.py``); ext4 places inodes and blocks by
group as the kernel does (``drivers.ext4alloc``) and lays image layers step by step
(``drivers.ext4layer``).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable

from pyroaring import BitMap64

from simulator.image import Layer
from simulator.ranges import RangeSet
from simulator.units import round_up

from .fsgeometry import (EXT4_BLOCKS_PER_GROUP, FIRST_FREE_INODE, FS_BLOCK, ROOT_INODE, XFS_MOUNT_LOG_CLEAR,
                         Geometry)
from .ext4alloc import Ext4Groups
from .thinlayout import FileMap, FileRec, Layout, has_dir
from .thinpool import ThinDevice, WriteCost

if TYPE_CHECKING:
    from .ext4layer import Ext4View

GROUP_BYTES = EXT4_BLOCKS_PER_GROUP * FS_BLOCK


@dataclass
class FsState:
    next_data: int
    next_inode: int
    log_head: int  # bytes written to the log so far (the head, modulo its size)
    next_image_ino: int = 1  # ImageTree's file numbering, continued layer by layer


@dataclass
class ThinFs:
    """One thin device and the filesystem on it; writes become chunk costs."""

    geometry: Geometry
    device: ThinDevice
    layout: Layout
    state: FsState
    on_cost: Callable[[WriteCost, int], None] | None = None
    # ext4's block groups (``drivers.ext4alloc``; None on xfs, whose one flat group stays),
    # and, on an image layer, the merged view as laid (``drivers.ext4layer``)
    groups: Ext4Groups | None = None
    view: Ext4View | None = None
    # blocks a truncate or an extending write zeroed in part, dirty in the page cache until
    # written back: file -> {file block: device offset}; a file removed drops its own
    zeroed: dict[FileMap, dict[int, int]] = field(default_factory=dict)
    # Metadata blocks dirtied since the last commit: a roaring bitmap, since a container that
    # reads thousands of image files dirties their inode blocks (relatime) and keeps them
    # (read-startup: ~4,000 blocks, 512 KiB as a set, 16 KiB here).
    pending: BitMap64 = field(default_factory=BitMap64)
    # Whether the allocation bitmaps' blocks are in ``pending`` already: a create dirties
    # them every time, and adding three numbers to a bitmap costs twice a set's (0.2 us).
    _alloc_pending: bool = False
    _ialloc_pending: bool = False
    _revoked: bool = False  # a metadata block freed since the last commit (ext4)
    _mount_logged: bool = False  # a transaction committed on this mount (ext4)
    _sampled: bool = False  # a regular file opened on this mount (ext4_sample_last_mounted)

    @property
    def chunk(self) -> int:
        return self.device.chunk

    def snapshot(self, id: str, on_cost=None) -> ThinFs:
        groups = self.groups.snapshot() if self.groups is not None else None
        return ThinFs(self.geometry, ThinDevice(id, self.chunk, self.device), Layout(self.layout),
                      replace(self.state), on_cost, groups=groups)

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
        first = FS_BLOCK if self.groups is not None else 0
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
        if self.groups is not None:
            self.groups.mount()
            self._mount_logged = self._sampled = False
        if self.geometry.fs == "xfs":  # the unmount record at the head, then the cleared blocks
            ranges.update(self.log_ranges(FS_BLOCK + XFS_MOUNT_LOG_CLEAR))
            self.state.log_head += FS_BLOCK
        self.write(ranges)

    def commit(self) -> None:
        """A journal commit (fsync, sync, umount): the log write, then the home writes."""
        if not self.pending:
            return
        nbytes = self.geometry.log_write_bytes(len(self.pending))
        if nbytes and self._revoked:
            nbytes += FS_BLOCK  # the transaction's revoke block
        self._revoked = False
        if nbytes and self.groups is not None and not self._mount_logged:
            self._mount_logged = True  # the log's tail moved: jbd2 rewrites its superblock (at
            g = self.geometry  # unmount, jbd2_mark_journal_empty); a mount that logged nothing does not
            self.write(RangeSet([(g.log_start, g.log_start + FS_BLOCK)]))
        if nbytes:  # ext4 without a journal writes its metadata home directly
            log = self.log_ranges(nbytes)
            self.state.log_head += nbytes
            self.write(log)
        home = RangeSet()
        for b in self.pending:  # in order
            home.add(b * FS_BLOCK, (b + 1) * FS_BLOCK)
        self.pending.clear()
        self._alloc_pending = self._ialloc_pending = False
        self.write(home)

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

    # -- metadata --
    def dirty_block(self, block: int) -> None:
        self.pending.add(block)

    def entries_changed(self, ino: int, block: int) -> None:
        """A name was added to or removed from directory ``ino``: its block; on ext4 its inode
        too (mtime and ctime, ext4_add_entry / ext4_delete_entry), in its own group's table
        (xfs's flat picture keeps its one inode region)."""
        self.pending.add(block)
        if self.groups is not None:
            self.dirty_inode(ino)

    def dirty_inode(self, ino: int) -> None:
        self.pending.add(self.geometry.inode_block(ino))

    def dirty_alloc(self, extents: Iterable[tuple[int, int]] = ()) -> None:
        """Blocks ``extents`` (device offset, bytes) were allocated or freed: the headers
        that count them (ext4: each group's block bitmap and descriptor block)."""
        groups = self.groups
        if groups is None:
            if not self._alloc_pending:
                self.pending.update(self.geometry.alloc_blocks)
                self._alloc_pending = True
            return
        for dev, n in extents:
            for g in range(dev // GROUP_BYTES, (dev + n - 1) // GROUP_BYTES + 1):
                self.pending.add(groups.block_bitmap(g))
                self.pending.add(groups.descriptor_block(g))

    def dirty_ialloc(self, ino: int | None = None) -> None:
        """Inode ``ino`` was allocated or freed (ext4: its group's inode bitmap and descriptor;
        xfs: its one set of headers, whichever the inode)."""
        groups = self.groups
        if groups is None or ino is None:
            if not self._ialloc_pending:
                self.pending.update(self.geometry.ialloc_blocks)
                self._ialloc_pending = True
            return
        g = groups.group_of(ino)
        self.pending.add(groups.inode_bitmap(g))
        self.pending.add(groups.descriptor_block(g))

    def journal_super(self, opened: bool = False) -> None:
        """ext4 changes its superblock in a transaction: an inode put on the orphan list
        (unlink of the last name, rmdir, a truncate that shrinks: ``s_last_orphan``), or the
        first regular file opened on a mount (``ext4_sample_last_mounted``, ``opened``).
        With a journal the block is logged (measured: ``logdump`` shows FS block 0 in the
        container's transaction); without one it is written home, as at every mount."""
        if self.groups is not None and (not opened or not self._sampled):
            self._sampled = self._sampled or opened
            self.pending.add(0)

    def forget_block(self, block: int) -> None:
        """A dirty block freed before it was written (``ext4_forget``): it is not written; a
        journal records its revocation (``jbd2_journal_revoke``: a revoke block at commit)."""
        self.pending.discard(block)
        self._alloc_pending = self._ialloc_pending = False  # in case it was one of theirs
        self._revoked = self.groups is not None

    def new_inode(self, parent: int = ROOT_INODE, name: str = "", is_dir: bool = False) -> int:
        """A new inode for entry ``name`` of directory inode ``parent`` (ext4 places it by
        group, ``drivers.ext4alloc``; xfs numbers on)."""
        if self.groups is not None:
            return self.groups.new_inode(parent, name, is_dir)
        ino = self.state.next_inode
        self.state.next_inode += 1
        return ino

    def free_inode(self, ino: int, is_dir: bool) -> None:
        if self.groups is not None:
            self.groups.free_inode(ino, is_dir)
        self.dirty_ialloc(ino)

    def free_extents(self, extents: Iterable[tuple[int, int]]) -> None:
        """Blocks (device offset, bytes) go back to the fs (the pool keeps them: no discard)."""
        extents = list(extents)
        if self.groups is not None:
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
        fm.size = new
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

    def write_zeroed(self, fm: FileMap | None = None) -> None:
        """Write back the zeroed blocks of ``fm`` (fsync, writeback), or of every file (sync)."""
        for key in [fm] if fm is not None else list(self.zeroed):
            pages = self.zeroed.pop(key, None)
            if pages:
                self.write(RangeSet((dev, dev + FS_BLOCK) for dev in pages.values()))

    # -- data --
    def alloc(self, nbytes: int, regular: bool = True, near: int = ROOT_INODE) -> list[tuple[int, int]]:
        """Fresh fs blocks for ``nbytes`` (a multiple of FS_BLOCK) for inode ``near``, as
        (device offset, bytes); ext4 puts a regular file's apart from directories'
        (``Ext4Groups.alloc``), xfs takes them in order, skipping the log."""
        if self.groups is not None:
            blocks = self.groups.alloc(nbytes // FS_BLOCK, regular, self.groups.group_of(near))
            return [(b * FS_BLOCK, n * FS_BLOCK) for b, n in blocks]
        g, s = self.geometry, self.state
        out: list[tuple[int, int]] = []
        log_end = g.log_start + g.log_bytes
        while nbytes > 0:
            if g.log_start <= s.next_data < log_end:
                s.next_data = log_end
            room = g.log_start - s.next_data if s.next_data < g.log_start else nbytes
            n = min(nbytes, room)
            out.append((s.next_data, n))
            s.next_data += n
            nbytes -= n
        return out

    def new_dir_block(self, ino: int = ROOT_INODE) -> int:
        return self.alloc(FS_BLOCK, regular=False, near=ino)[0][0] // FS_BLOCK

    def write_file(self, fm: FileMap, ranges: RangeSet, size: int) -> None:
        """Writeback of a file's dirty ``ranges``: overwrite mapped blocks in place (on the
        fs; the pool decides about chunks), allocate the rest together (delalloc)."""
        out = RangeSet()
        unmapped = RangeSet()
        for start, end in ranges.units(FS_BLOCK):
            unmapped.update(fm.map(start * FS_BLOCK, end * FS_BLOCK, out))
        if unmapped:
            pieces = self.alloc(unmapped.total(), near=fm.ino)
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


def mkfs(geometry: Geometry, chunk: int) -> ThinFs:
    """The base device: what mkfs writes (headers, inode table or first inode chunk, the
    whole journal/log, the root directory's block)."""
    g = geometry
    fs = ThinFs(g, ThinDevice("base", chunk), Layout(), FsState(g.data_start, FIRST_FREE_INODE, 0))
    if g.ext4 is not None:  # mkfs's root block is the first of group 0's data: the flat picture's
        fs.groups = Ext4Groups(g.ext4, g.base_size // FS_BLOCK, (g.log_start // FS_BLOCK, g.log_bytes // FS_BLOCK))
    root_block = fs.new_dir_block() if fs.groups is None else g.data_start // FS_BLOCK
    fs.layout.root = (ROOT_INODE, root_block)
    ranges = RangeSet([(0, g.header_blocks * FS_BLOCK), (g.inode_start, g.inode_start + g.mkfs_inode_bytes),
                       (g.log_start, g.log_start + g.log_bytes),
                       (root_block * FS_BLOCK, (root_block + 1) * FS_BLOCK)])
    if g.ext4 is not None:  # later groups: backup superblocks, flex groups' bitmaps and tables
        lay = g.ext4
        for group in range(1, lay.groups):
            if lay.used(group):
                start = group * EXT4_BLOCKS_PER_GROUP * FS_BLOCK
                ranges.add(start, start + lay.used(group) * FS_BLOCK)
    fs.write(ranges)
    return fs


def build_layer(fs: ThinFs, layer: Layer) -> None:
    """Untar ``layer`` into its fresh snapshot ``fs`` (Docker's ApplyDiff): mount, write
    each file's data, update directories and inodes, sync, unmount."""
    layout, state = fs.layout, fs.state
    fs.mount()
    layout.first_ino = state.next_image_ino
    inodes: dict[str, int] = {}  # path -> fs inode of this layer's files (hard link targets)

    def ensure_dir(path: str, fresh: bool = False) -> tuple[int, int]:
        if path == "/" or not fresh and has_dir(layout, path):
            return layout.dir(path)
        parent = path.rsplit("/", 1)[0] or "/"
        parent_loc = ensure_dir(parent)
        loc = (fs.new_inode(), fs.new_dir_block())
        layout.dirs[path] = loc
        fs.dirty_block(parent_loc[1])
        fs.dirty_block(loc[1])
        fs.dirty_inode(loc[0])
        fs.dirty_alloc()
        fs.dirty_ialloc()
        return loc

    for e in layer.entries:
        parent = e.path.rsplit("/", 1)[0] or "/"
        parent_loc = ensure_dir(parent)
        if e.type == "dir":
            ino = ensure_dir(e.path, fresh=e.opaque)[0]
            fs.dirty_inode(ino)
            continue
        fs.dirty_block(parent_loc[1])
        if e.type == "whiteout":
            if has_dir(layout, e.path):
                layout.dirs[e.path] = None
            fs.dirty_alloc()
            fs.dirty_ialloc()
        elif e.type == "hardlink":
            fs.dirty_inode(inodes.get(e.target, parent_loc[0]))
        elif e.type == "symlink":
            fs.dirty_inode(fs.new_inode())
            fs.dirty_ialloc()
        else:
            ino = inodes[e.path] = fs.new_inode()
            extents = tuple(fs.alloc(round_up(e.size, FS_BLOCK))) if e.size else ()
            layout.files[state.next_image_ino] = FileRec(ino, extents)
            state.next_image_ino += 1
            fs.dirty_inode(ino)
            fs.dirty_ialloc()
            if extents:
                fs.dirty_alloc()
                fs.write(RangeSet((d, d + n) for d, n in extents))
    fs.commit()


__all__ = ["FS_BLOCK", "FileMap", "FileRec", "FsState", "Geometry", "Layout", "ThinFs", "build_layer", "mkfs"]
