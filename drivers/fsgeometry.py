"""The on-disk geometry of a freshly made filesystem on a thin device: where mkfs puts the
inode tables, the allocation headers and the journal or log, as byte offsets of the device.
Pure arithmetic; ``drivers.thinfs`` lays files down and writes on top of it.

Names and numbers:

* ext4: ``mke2fs.conf`` inode_ratio 16384 and inode_size 256; Docker runs ``mkfs.ext4 -E
  nodiscard,lazy_itable_init=0,lazy_journal_init=0`` [U: moby deviceset.go createFilesystem,
  from memory; LXD's LVM backend uses the same flags], so mkfs writes the whole inode table
  and journal.  Journal size: e2fsprogs ``ext2fs_default_journal_size``.  jbd2 journals
  whole metadata blocks: per commit a descriptor block per 255 tags, the blocks, a commit
  block.
* xfs: 512-byte inodes in chunks of 64 (mkfs.xfs v5 defaults); 4 allocation groups, each
  with its headers (SB, AGF, AGI, AGFL share block 0, btree roots follow: bnobt, cntbt,
  inobt, finobt, refcountbt), the log in the middle one (``drivers.xfsalloc``, measured
  with xfs_db).  mkfs zeroes the log.  Delayed logging writes log items, not blocks: a
  record header plus an item per dirtied buffer or inode [U: XFS_LOG_ITEM_BYTES is not
  calibrated].
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.units import KiB, MiB, ceil_div, round_up

from .xfsalloc import XFS_AG_COUNT, XFS_CHUNK_BLOCKS, XFS_LOG_AG_START, XFS_LOG_BLOCKS, XFS_ROOT_INO

FS_BLOCK = 4 * KiB  # mkfs.ext4 / mkfs.xfs default block size
EXT4_INODE_RATIO = 16384  # mke2fs.conf: inode_ratio = 16384 (one inode per 16 KiB)
EXT4_INODE_SIZE = 256  # mke2fs.conf: inode_size = 256
XFS_INODE_SIZE = 512  # mkfs.xfs: isize=512 (v5 format default)
XFS_ROOT_CHUNK_BLOCK = 16  # AG 0's first chunk, holding the root: measured (inode 128 = block 16)
XFS_HEADER_BLOCKS = 6  # each AG's block 0 and the roots of its five btrees (xfs_db: bnoroot 1 ... refcntroot 5)
XFS_MOUNT_LOG_CLEAR = 2 * MiB  # xlog_clear_stale_blocks; REAL_KERNEL 4a: 2105344 = 2 MiB + 8 KiB
XLOG_HEADER_BYTES = 512  # xlog_rec_header: one basic block
XFS_LOG_ITEM_BYTES = 512  # one logged inode/buffer item with its format header [U]
JBD2_TAGS_PER_DESCRIPTOR = (FS_BLOCK - 12) // 16  # journal_header 12 B, tag3 16 B
ROOT_INODE = 2  # EXT2_ROOT_INO; xfs's root is its first inode
FIRST_FREE_INODE = 12  # ext4: 11 is lost+found (xfs starts lower; immaterial here)


EXT4_BLOCKS_PER_GROUP = 32768  # mke2fs: 8 * block size bits per bitmap block
EXT4_FLEX_BG = 16  # mke2fs.conf flex_bg_size
EXT4_DESC_SIZE = 64  # 64bit feature: 64-byte group descriptors
EXT4_MAX_RESERVED_GDT = FS_BLOCK // 4  # EXT2_ADDR_PER_BLOCK: the resize inode's limit
EXT4_RESIZE_FACTOR = 1024  # mke2fs calc_reserved_gdt_blocks: room to grow 1024-fold


@dataclass(frozen=True)
class Ext4Layout:
    """mke2fs's placement for a given size (e2fsprogs; measured with dumpe2fs here for 1, 3, 4,
    10 and 20 GiB: every number below matched).  Group 0 holds the superblock, the group
    descriptors and the reserved GDT blocks, then flex group 0's block bitmaps, inode bitmaps
    and inode tables (one slot per group of the flex group); each later flex group keeps its
    own at its first block; backup superblocks sit in groups 1 and powers of 3, 5 and 7."""

    groups: int
    gdt: int
    reserved_gdt: int

    @classmethod
    def make(cls, fs_blocks: int) -> Ext4Layout:
        groups = ceil_div(fs_blocks, EXT4_BLOCKS_PER_GROUP)
        per_block = FS_BLOCK // EXT4_DESC_SIZE
        gdt = ceil_div(groups, per_block)
        grow = ceil_div(min(fs_blocks * EXT4_RESIZE_FACTOR, 2**32 - 1), EXT4_BLOCKS_PER_GROUP)
        return cls(groups, gdt, min(EXT4_MAX_RESERVED_GDT, max(ceil_div(grow, per_block) - gdt, 0)))

    @property
    def inodes_per_group(self) -> int:
        return EXT4_BLOCKS_PER_GROUP * FS_BLOCK // EXT4_INODE_RATIO

    @property
    def table_blocks(self) -> int:
        return self.inodes_per_group * EXT4_INODE_SIZE // FS_BLOCK

    def flex_members(self, leader: int) -> int:
        return min(EXT4_FLEX_BG, self.groups - leader)

    def backup(self, group: int) -> bool:
        if group <= 1:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def used(self, group: int) -> int:
        """Blocks at the start of ``group`` that mkfs gave to metadata."""
        n = 1 + self.gdt + self.reserved_gdt if self.backup(group) else 0
        if group % EXT4_FLEX_BG == 0:
            members = self.flex_members(group)
            n += 2 * members + members * self.table_blocks
        return n

    def table_block(self, group: int) -> int:
        """First block of ``group``'s inode table."""
        leader = group - group % EXT4_FLEX_BG
        start = leader * EXT4_BLOCKS_PER_GROUP + (1 + self.gdt + self.reserved_gdt if leader == 0 else 0)
        return start + 2 * self.flex_members(leader) + (group - leader) * self.table_blocks

    def journal_block(self, fs_blocks: int) -> int:
        """e2fsprogs get_midpoint_journal_block: the middle group (rounded down to its flex
        group past the first), or the freest of it and its neighbours; after its metadata."""
        free = [min(EXT4_BLOCKS_PER_GROUP, fs_blocks - g * EXT4_BLOCKS_PER_GROUP) - self.used(g)
                for g in range(self.groups)]
        group = fs_blocks // 2 // EXT4_BLOCKS_PER_GROUP
        if group > EXT4_FLEX_BG:
            group &= ~(EXT4_FLEX_BG - 1)
            while group < self.groups and free[group] == 0:
                group += 1
            group = start = group if group < self.groups else 0
        else:
            start = max(group - 1, 0)
        end = min(group + 1, self.groups - 1)
        group = start
        for g in range(start + 1, end + 1):
            if free[g] > free[group]:
                group = g
        return group * EXT4_BLOCKS_PER_GROUP + self.used(group)


def ext4_journal_blocks(fs_blocks: int) -> int:
    """e2fsprogs lib/ext2fs/mkjournal.c ext2fs_default_journal_size (4 KiB blocks)."""
    for limit, size in ((32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192), (4096 * 1024, 16384),
                        (8192 * 1024, 32768), (16384 * 1024, 65536), (32768 * 1024, 131072)):
        if fs_blocks < limit:
            return size
    return 262144


@dataclass(frozen=True)
class Geometry:
    """Where a freshly made filesystem keeps things on its device."""

    fs: str
    base_size: int
    inode_size: int
    inode_start: int
    data_start: int
    log_start: int
    log_bytes: int
    mkfs_inode_bytes: int  # inode table bytes mkfs writes
    header_blocks: int  # blocks mkfs writes at the start (ext4: group 0's; xfs: each AG's)
    root_ino: int
    ext4: Ext4Layout | None = None

    @classmethod
    def make(cls, fs: str, base_size: int, journal: bool = True) -> Geometry:
        if fs == "ext4":  # measured layout (Ext4Layout); the flat picture keeps flex group 0's
            blocks = base_size // FS_BLOCK
            lay = Ext4Layout.make(blocks)
            bitmaps = 1 + lay.gdt + lay.reserved_gdt  # group 0's first block bitmap
            members = lay.flex_members(0)
            start = lay.table_block(0) * FS_BLOCK
            data = start + members * lay.table_blocks * FS_BLOCK  # the root directory's block
            return cls(fs, base_size, EXT4_INODE_SIZE, start, data,
                       lay.journal_block(blocks) * FS_BLOCK,
                       ext4_journal_blocks(blocks) * FS_BLOCK if journal else 0, members * lay.table_blocks * FS_BLOCK,
                       header_blocks=bitmaps + 2 * members, root_ino=ROOT_INODE, ext4=lay)
        agblocks = ceil_div(base_size // FS_BLOCK, XFS_AG_COUNT)
        start = XFS_ROOT_CHUNK_BLOCK * FS_BLOCK
        return cls(fs, base_size, XFS_INODE_SIZE, start, start + XFS_CHUNK_BLOCKS * FS_BLOCK,
                   (XFS_AG_COUNT // 2 * agblocks + XFS_LOG_AG_START) * FS_BLOCK, XFS_LOG_BLOCKS * FS_BLOCK,
                   XFS_CHUNK_BLOCKS * FS_BLOCK, header_blocks=XFS_HEADER_BLOCKS, root_ino=XFS_ROOT_INO)

    def inode_block(self, ino: int) -> int:
        """The ext4 inode-table block holding inode ``ino``: slot ``ino - 1`` of the tables,
        group by group (xfs numbers inodes by where they are: ``XfsGroups.inode_block``)."""
        assert self.ext4 is not None, "xfs inodes: XfsGroups.inode_block"
        group, slot = divmod(ino - 1, self.ext4.inodes_per_group)
        return self.ext4.table_block(group) + slot * self.inode_size // FS_BLOCK

    def log_write_bytes(self, items: int) -> int:
        """Bytes one journal/log commit of ``items`` dirtied metadata blocks writes."""
        if not self.log_bytes:
            return 0
        if self.fs == "ext4":
            return (items + ceil_div(items, JBD2_TAGS_PER_DESCRIPTOR) + 1) * FS_BLOCK
        return round_up(XLOG_HEADER_BYTES + items * XFS_LOG_ITEM_BYTES, FS_BLOCK)
