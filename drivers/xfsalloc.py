"""xfs's allocation groups on a thin device: which inode number a new entry gets, where
inode chunks and data blocks go, and which headers each change dirties.

Measured here (mkfs.xfs 6.1.0 defaults, kernel 6.18, ``xfs_db`` and inode numbers of laid
images; docs/fidelity.md).  The kernel functions named are where fs/xfs does each thing, as
recalled, not read line by line: the measurements, not the names, are the evidence.

* mkfs makes 4 allocation groups of equal size (1, 3, 10, 20 and 100 GiB alike); each AG
  starts with its headers (block 0: superblock, AGF, AGI and AGFL sectors; then the roots
  of the bnobt 1, cntbt 2, inobt 3, finobt 4 and refcountbt 5) and 4 free-list blocks
  (6-9), so free space starts at block 10.  The log is the middle AG's (AG 2), from its
  block 6, 16,384 blocks, the free list after it.  The root directory is inode 128, in AG
  0's first chunk (128-191: 129 and 130 hold the realtime inodes), at block 16.
* An inode number is ``(AG << agblklog | block) << 3 | slot``: 8 inodes of 512 bytes a
  block.  Inodes come in chunks of 64 (8 blocks), written in clusters of 32 (16 KiB,
  4 blocks): logging one inode writes its whole cluster home.
* ``xfs_dialloc``: a new directory takes the next AG in turn (``xfs_ialloc_next_ag``,
  a rotor that each mount starts at 0), anything else its parent's AG.  In that AG
  ``xfs_dialloc_ag`` takes the free-inode record nearest the parent (same AG) or the one
  holding the newest chunk, else the lowest (other AG), and its lowest free inode.
  Measured: ``/a /b /c /d /e /a/s`` are in AGs 0 1 2 3 0 1, ``/a/x`` in 0, ``/a/s/z`` in 1.
* A full AG gets a new chunk (``xfs_ialloc_ag_alloc``): right after the newest chunk if
  those 8 blocks are free, else the lowest free 8 blocks aligned to 8 (near the inobt
  root): block 16 of an empty AG, 16,400 in the log's AG.  Its clusters are initialised
  (``xfs_ialloc_inode_init``): all 8 blocks written.
* Blocks for an inode come from its own AG, the lowest free run that holds them all (else
  the lowest pieces).  Measured: 70 one-block files after a 70-entry directory took blocks
  10-14 then 32 on; a 25-block file in AG 1, block 24, past the chunk at 16.  [U: the
  kernel's near-the-inode search; the unshared count depends only on the AG.]
* An unlinked inode is freed by background inactivation (``xfs_inodegc``, flushed by
  sync), so its number is not taken again before the next commit (``settle``).  A chunk whose last inode
  is freed is freed itself (``xfs_ifree_cluster``): its cluster buffers go stale and are
  never written.  Measured: ``rm -rf`` of an image tree whose inodes filled chunks of
  their own in AGs 1-3 wrote none of those clusters.
* Freed blocks are busy until the transaction that freed them reaches the log
  (``xfs_extent_busy``): a file truncated and rewritten before then gets new blocks.
  Measured: a 200,000-byte file flushed, truncated by ``O_TRUNC`` and flushed again
  unshared 98 data blocks, not 49.
* Allocating or freeing blocks in an AG dirties its block 0 (AGF), bnobt and cntbt roots;
  an inode, its block 0 (AGI), inobt and finobt roots.  Measured: a container that wrote
  one new data block in AG 3 unshared AG 3's blocks 0, 1 and 2.
* A directory keeps its entries in its inode (shortform) while they fit the inode's
  literal area: a 6-byte header and 8 bytes plus the name per entry
  (``xfs_dir2_sf_entsize``: name length, offset, file type, 4-byte inode number), 336
  bytes in all.  One more entry moves them to a block of their own
  (``xfs_dir2_sf_to_block``); removing entries until they fit moves them back
  (``xfs_dir2_block_to_sf``), and the block is freed.  [U: larger directories (leaf and
  node forms, several blocks) keep one block in this model.]
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from simulator.ranges import RangeSet

XFS_AG_COUNT = 4  # mkfs.xfs calc_default_ag_geometry, measured for 1-100 GiB
XFS_AG_FREE_START = 10  # headers 0-5 (sb/agf/agi/agfl, bnobt, cntbt, inobt, finobt, refcountbt), AGFL 6-9
XFS_LOG_AG_START = 6  # the internal log starts at block 6 of the middle AG (sb_logstart)
XFS_LOG_BLOCKS = 16384  # sb_logblocks for 1, 10 and 100 GiB
XFS_AGFL_BLOCKS = 4  # the free list mkfs fills (flcount = 4), after the log in the log's AG
XFS_ROOT_INO = 128  # sb_rootino: slot 0 of AG 0's first chunk
XFS_MKFS_INODES = 3  # root, realtime bitmap and summary inodes (128, 129, 130)
XFS_INOPB_LOG = 3  # sb_inopblog: 8 inodes of 512 bytes a 4 KiB block
XFS_CHUNK_INODES = 64  # XFS_INODES_PER_CHUNK
XFS_CHUNK_BLOCKS = XFS_CHUNK_INODES >> XFS_INOPB_LOG
XFS_CHUNK_ALIGN = 8  # sb_inoalignmt (blocks)
FULL_CHUNK = (1 << XFS_CHUNK_INODES) - 1
XFS_CLUSTER_BLOCKS = 4  # inode cluster buffer: 16 KiB of 512-byte inodes (xfs_ialloc_setup_geometry)
XFS_DIR_SF_MAX = 336  # XFS_LITINO: a 512-byte inode less its 176-byte v3 core
XFS_DIR_SF_HEADER = 6  # xfs_dir2_sf_hdr: count, i8count, 4-byte parent
XFS_DIR_SF_ENTRY = 8  # xfs_dir2_sf_entsize less the name: namelen, offset[2], ftype, 4-byte inumber
NO_BLOCK = -1  # a shortform directory's block: none
AGF_HEADERS = (0, 1, 2)  # block 0 (AGF sector), bnobt root, cntbt root
AGI_HEADERS = (0, 3, 4)  # block 0 (AGI sector), inobt root, finobt root


def sf_entry_bytes(name: str) -> int:
    """Bytes entry ``name`` takes in a shortform directory."""
    return XFS_DIR_SF_ENTRY + len(name.encode("utf-8", "surrogateescape"))


class _AG:
    """One allocation group: free blocks (device block numbers), inode chunks (first block
    -> bitmask of used inodes), the chunks with a free inode (sorted) and the newest chunk."""

    __slots__ = ("free", "chunks", "open", "newest")

    def __init__(self, free: RangeSet, chunks: dict[int, int], open_chunks: list[int], newest: int | None):
        self.free, self.chunks, self.open, self.newest = free, chunks, open_chunks, newest

    def copy(self) -> _AG:
        return _AG(self.free.copy(), dict(self.chunks), list(self.open), self.newest)


@dataclass
class XfsGroups:
    """The allocation groups, shared with the device this one was snapshotted from until
    changed (an AG is copied on its first change: a container of a 100,000-file image
    copies the one or two it writes in), and the directory rotor of the current mount."""

    agblocks: int
    agblklog: int
    fs_blocks: int
    ags: list[_AG]
    owned: list[bool]
    rotor: int = 0
    overflow: int = 0  # blocks handed out past the device's end once every AG is full
    busy: list[tuple[int, int]] = field(default_factory=list)  # freed, not yet committed
    freed_inodes: list[int] = field(default_factory=list)  # unlinked, not yet inactivated
    fresh: list[int] = field(default_factory=list)  # chunks allocated, for ThinFs to write
    _headers: dict[tuple[int, tuple[int, ...]], tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def make(cls, fs_blocks: int) -> XfsGroups:
        agblocks = -(-fs_blocks // XFS_AG_COUNT)
        ags = []
        for ag in range(XFS_AG_COUNT):
            start, end = ag * agblocks, min((ag + 1) * agblocks, fs_blocks)
            first = start + XFS_AG_FREE_START
            if ag == XFS_AG_COUNT // 2:
                first = start + XFS_LOG_AG_START + XFS_LOG_BLOCKS + XFS_AGFL_BLOCKS
            ags.append(_AG(RangeSet([(first, end)]), {}, [], None))
        groups = cls(agblocks, (agblocks - 1).bit_length(), fs_blocks, ags, [True] * XFS_AG_COUNT)
        root_chunk = groups._new_chunk(0)
        groups.ags[0].chunks[root_chunk] = (1 << XFS_MKFS_INODES) - 1
        groups.fresh.clear()
        return groups

    def snapshot(self) -> XfsGroups:
        return XfsGroups(self.agblocks, self.agblklog, self.fs_blocks, list(self.ags), [False] * len(self.ags),
                         overflow=self.overflow)

    def _own(self, ag: int) -> _AG:
        """AG ``ag``, about to change: this device's own copy."""
        if not self.owned[ag]:
            self.ags[ag] = self.ags[ag].copy()
            self.owned[ag] = True
        return self.ags[ag]

    # -- geometry --
    def group_of(self, ino: int) -> int:
        return ino >> (self.agblklog + XFS_INOPB_LOG)

    def inode_block(self, ino: int) -> int:
        ag = self.group_of(ino)
        return ag * self.agblocks + ((ino >> XFS_INOPB_LOG) & ((1 << self.agblklog) - 1))

    def cluster(self, ino: int) -> int:
        """The first block of the inode cluster holding ``ino`` (written whole): chunks
        start 8-block aligned from their AG's start (or right after an aligned one), so
        clusters are 4-block aligned in the AG."""
        agbno = ino >> XFS_INOPB_LOG & (1 << self.agblklog) - 1
        return self.group_of(ino) * self.agblocks + (agbno & -XFS_CLUSTER_BLOCKS)

    def _chunk_of(self, ino: int) -> int:
        """The chunk holding ``ino``: chunks start at multiples of 8 blocks from the AG's
        start (aligned, or right after an aligned one)."""
        block = self.inode_block(ino)
        ag_first = self.group_of(ino) * self.agblocks
        return ag_first + (block - ag_first) // XFS_CHUNK_BLOCKS * XFS_CHUNK_BLOCKS

    def _ino(self, chunk: int, slot: int) -> int:
        ag, agbno = divmod(chunk, self.agblocks)
        return ((ag << self.agblklog | agbno) << XFS_INOPB_LOG) + slot

    def headers(self, ag: int, which: tuple[int, ...]) -> tuple[int, ...]:
        key = (ag, which)
        found = self._headers.get(key)
        if found is None:
            found = self._headers[key] = tuple(ag * self.agblocks + b for b in which)
        return found

    # -- mounting --
    def mount(self) -> None:
        """A fresh mount: the directory rotor starts at AG 0 (``m_agirotor``)."""
        self.rotor = 0

    # -- inodes --
    def new_inode(self, parent: int, name: str, is_dir: bool) -> int:
        """The inode number ``xfs_dialloc`` gives a new entry of directory ``parent``."""
        parent_ag = parent >> (self.agblklog + XFS_INOPB_LOG)
        if is_dir:
            ag = self.rotor
            self.rotor = (self.rotor + 1) % XFS_AG_COUNT
        else:
            ag = parent_ag
        st = self.ags[ag] if self.owned[ag] else self._own(ag)
        if not st.open:
            chunk = self._new_chunk(ag)
        elif parent_ag == ag:  # xfs_dialloc_ag_finobt_near: the record nearest the parent
            near = self.inode_block(parent)
            opened = st.open
            i = bisect_left(opened, near)
            chunk = opened[i] if i < len(opened) else opened[-1]
            if i and chunk != near:  # the one before may hold it, or be nearer
                before = opened[i - 1]
                if max(near - before - XFS_CHUNK_BLOCKS + 1, 0) <= abs(chunk - near):
                    chunk = before
        elif st.newest is not None and _contains(st.open, st.newest):
            chunk = st.newest  # xfs_dialloc_ag_finobt_newino
        else:
            chunk = st.open[0]
        used = st.chunks[chunk]
        slot = (~used & (used + 1)).bit_length() - 1  # the lowest clear bit
        used |= 1 << slot
        st.chunks[chunk] = used
        if used == FULL_CHUNK:
            st.open.remove(chunk)
        return self._ino(chunk, slot)

    def free_inode(self, ino: int, is_dir: bool) -> None:
        """An inode unlinked: freed when the background inactivation gets to it (``settle``)."""
        self.freed_inodes.append(ino)

    def _free_inode(self, ino: int) -> int | None:
        """Free ``ino``; a chunk left with no inode in use is freed too (``xfs_difree``:
        ``xfs_ifree_cluster``): return its first block."""
        chunk = self._chunk_of(ino)
        slot = (self.inode_block(ino) - chunk) << XFS_INOPB_LOG | ino & ((1 << XFS_INOPB_LOG) - 1)
        st = self._own(self.group_of(ino))
        used = st.chunks.get(chunk, 0)
        if not used >> slot & 1:
            return None  # freed already: a model error, none known (fuzz seed 95142's, a renamed
            # image symlink's inode looked up by its new name, was fixed in 0.2.9)
        if used == FULL_CHUNK:
            insort(st.open, chunk)
        used &= ~(1 << slot)
        if used:
            st.chunks[chunk] = used
            return None
        del st.chunks[chunk]
        st.open.remove(chunk)
        self.busy.append((chunk, XFS_CHUNK_BLOCKS))
        return chunk

    def _new_chunk(self, ag: int) -> int:
        """``xfs_ialloc_ag_alloc``: after the newest chunk if free, else aligned and lowest."""
        st = self._own(ag)
        ag_first = ag * self.agblocks
        chunk = None
        if st.newest is not None and st.free.covers(st.newest + XFS_CHUNK_BLOCKS, st.newest + 2 * XFS_CHUNK_BLOCKS):
            chunk = st.newest + XFS_CHUNK_BLOCKS
        else:
            for start, end in st.free:
                first = ag_first + -(-(start - ag_first) // XFS_CHUNK_ALIGN) * XFS_CHUNK_ALIGN
                if first + XFS_CHUNK_BLOCKS <= end:
                    chunk = first
                    break
        if chunk is None:
            raise OSError("ENOSPC")
        st.free.remove(chunk, chunk + XFS_CHUNK_BLOCKS)
        st.chunks[chunk] = 0
        insort(st.open, chunk)
        st.newest = chunk
        self.fresh.append(chunk)
        return chunk

    # -- blocks --
    def alloc(self, blocks: int, regular: bool, near: int) -> list[tuple[int, int]]:
        """``blocks`` fresh blocks for an inode of AG ``near``: the lowest free run that
        holds them all, else the lowest pieces, then the next AGs; past the device's end
        once all are full (sizes stay symbolic: a 1 TiB file on a 10 GiB device is not
        refused).  Returns (first block, count)."""
        out: list[tuple[int, int]] = []
        for i in range(XFS_AG_COUNT):
            ag = (near + i) % XFS_AG_COUNT
            free = self.ags[ag].free
            if not free:
                continue
            free = self._own(ag).free
            fit = next((start for start, end in free if end - start >= blocks), None)
            if fit is not None:
                free.remove(fit, fit + blocks)
                return out + [(fit, blocks)]
            for start, end in list(free):
                n = min(blocks, end - start)
                free.remove(start, start + n)
                out.append((start, n))
                blocks -= n
                if not blocks:
                    return out
        out.append((self.fs_blocks + self.overflow, blocks))
        self.overflow += blocks
        return out

    def release(self, first: int, count: int) -> list[int]:
        """Blocks freed: busy until the next commit (``settle``); return the AGs whose
        free-space btrees change."""
        ag = first // self.agblocks
        if ag >= len(self.ags):
            return []  # past the device's end
        self.busy.append((first, count))
        return [ag]

    def settle(self) -> list[int]:
        """A commit: busy blocks are free again, and the unlinked inodes are inactivated
        (``xfs_inodegc_flush`` at sync); return the chunks that freed (busy in turn)."""
        for first, count in self.busy:
            self._own(first // self.agblocks).free.add(first, first + count)
        self.busy.clear()
        chunks = [c for c in map(self._free_inode, self.freed_inodes) if c is not None]
        self.freed_inodes.clear()
        return chunks


def _contains(sorted_list: list[int], value: int) -> bool:
    i = bisect_left(sorted_list, value)
    return i < len(sorted_list) and sorted_list[i] == value
