"""btrfs on-disk bookkeeping for the driver model: extents, per-file state, leaf bytes.

Kept apart from ``drivers/btrfs.py`` (the hooks) so each stays small.  Sizes are symbolic:
sector indices live in ``RangeSet``s and a run of extents written at once is one object,
so a 1 TiB file costs a few integers.  Item sizes are those of the on-disk format
(``fs/btrfs/ctree.h``, ``include/uapi/linux/btrfs_tree.h``); measured here, the fs tree
of a random 4-layer image held 18598 bytes in its leaves, and this model said 18598.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from simulator.nodes import FileInode
from simulator.ranges import RangeSet
from simulator.units import MiB, ceil_div
from simulator.viewstats import private_inodes

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
KEY_PTR_BYTES = 33  # struct btrfs_key_ptr: an internal node's fan-out is node / 33
ROOT_ITEM_BYTES = 2 * ITEM_HEADER_BYTES + INODE_ITEM_BYTES + INODE_REF_BYTES + 2  # the root: ref ".."
BEYOND_EOF = 1 << 63  # past any sector index: "to the end of the file"


class Extents:
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


class FileState:
    """Where one container file's data lives, in sector indices.

    ``runs`` are the container's own extents, in the order they were written; the sectors
    each still references (``Extents.refs``) never overlap another run's, so they are also
    kept together, sorted, in one index (``_ref_starts``/``_ref_ends``/``_ref_runs``): a
    rewrite finds the runs it takes sectors from by bisection, not by visiting every run.
    A file rewritten at random pages gathers a run per page: visiting them all at each
    writeback made 100,000 page writes into one file cost 3.6 s (25,000: 0.51 s); with the
    index, rebuilt in one pass per writeback, 0.71 s (0.17 s; ``benchmarks/bench_replay.py``)."""

    __slots__ = ("size", "shared", "runs", "pending", "dirty", "inline", "flush_on_close",
                 "_ref_starts", "_ref_ends", "_ref_runs")

    def __init__(self, inode: FileInode, inline_limit: int, sector: int):
        origin = inode.origin
        self.size = origin.size if origin is not None else inode.size
        image_inline = origin is not None and 0 < origin.size <= inline_limit and origin.size < sector
        self.shared = RangeSet()  # sectors still mapped to image extents
        if origin is not None and not image_inline and origin.size:
            self.shared.add(0, ceil_div(origin.size, sector))
        self.runs: dict[Extents, None] = {}  # the container's own extents (a dict: ordered, O(1) removal)
        self.pending = RangeSet()  # sectors the kernel dirtied itself (tail zeroing)
        self.dirty = RangeSet()  # sectors written since the last writeback (dirty pages)
        self.inline = "shared" if image_inline else ""  # "", "shared" or "private"
        self.flush_on_close = False  # truncated to 0: written back at the next close
        self._ref_starts: list[int] = []
        self._ref_ends: list[int] = []
        self._ref_runs: list[Extents] = []

    def private(self) -> RangeSet:
        out = RangeSet()
        for run in self.runs:
            out.update(run.refs)
        return out

    def rewrite(self, sectors: RangeSet, chunk: int) -> None:
        """Written back: ``sectors`` leave the image's extents and every run that referenced
        them, and new extents take them, one run per interval."""
        self._take(sectors, chunk)

    def drop(self, start: int, end: int) -> None:
        """Sectors ``[start, end)`` no longer reference what they did."""
        self._take(((start, end),), 0)

    def _take(self, intervals, chunk: int) -> None:
        """The sorted, disjoint ``intervals`` leave ``shared`` and whichever runs referenced
        them (the runs left with nothing go); with a ``chunk``, a new run takes each.  The
        index is rebuilt in one pass, copying the stretches between the intervals whole:
        inserting each new run moved the index's tail once per run, a cost that grows with
        the runs a file has."""
        shared = self.shared
        starts, ends, runs = self._ref_starts, self._ref_ends, self._ref_runs
        out_s: list[int] = []
        out_e: list[int] = []
        out_r: list[Extents] = []
        pos = 0
        for start, end in intervals:
            shared.remove(start, end)
            lo = bisect_right(ends, start, pos)  # the first interval ending after start
            hi = bisect_left(starts, end, lo)  # [lo, hi) meet [start, end)
            out_s += starts[pos:lo]
            out_e += ends[pos:lo]
            out_r += runs[pos:lo]
            if lo < hi and starts[lo] < start:  # the part before it stays
                out_s.append(starts[lo])
                out_e.append(start)
                out_r.append(runs[lo])
            for old in set(runs[lo:hi]):
                refs = old.refs
                refs.remove(start, end)
                if not refs:
                    del self.runs[old]
            if chunk:
                run = Extents(start, end - start, chunk)
                self.runs[run] = None
                out_s.append(start)
                out_e.append(end)
                out_r.append(run)
            pos = hi
            if lo < hi and ends[hi - 1] > end:  # the part after it may meet the next interval
                starts[hi - 1] = end
                pos = hi - 1
        out_s += starts[pos:]
        out_e += ends[pos:]
        out_r += runs[pos:]
        self._ref_starts, self._ref_ends, self._ref_runs = out_s, out_e, out_r


def live_inodes(ns) -> list[FileInode]:
    """Distinct private files still linked: those under private directories and promoted
    hard-linked image files, which may be reachable only through image directories."""
    out = dict.fromkeys(private_inodes(ns))
    for inode in ns.promoted.values():
        if inode.nlink > 0:
            out[inode] = None
    return list(out)


def object_item_bytes(name_len: int, first_name: bool = True) -> int:
    """Leaf bytes of one name of an inode (inode ref, dir item and dir index), plus its
    inode item for the first name."""
    name = 3 * ITEM_HEADER_BYTES + INODE_REF_BYTES + name_len + 2 * (DIR_ITEM_BYTES + name_len)
    return name + (ITEM_HEADER_BYTES + INODE_ITEM_BYTES if first_name else 0)


def inline_item_bytes(size: int) -> int:
    """An inline file extent item: a small file's data or a symlink's target."""
    return ITEM_HEADER_BYTES + INLINE_EXTENT_HEADER + size


def extent_item_bytes(size: int, inline_limit: int) -> int:
    """Leaf bytes of the extent items of a file of ``size`` bytes, written at once: inline
    up to ``inline_limit``, else one item per ``BTRFS_MAX_EXTENT_SIZE``."""
    if 0 < size <= inline_limit:
        return inline_item_bytes(size)
    return (ITEM_HEADER_BYTES + FILE_EXTENT_BYTES) * ceil_div(size, BTRFS_MAX_EXTENT_SIZE)
