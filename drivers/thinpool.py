"""dm-thin pool arithmetic: which chunks a thin device provisions, and which it must copy.

A pool hands out ``chunk``-sized data blocks (dm-thin's ``data_block_size``).  Every thin
device maps chunk indices of its own address space to pool blocks; a snapshot starts by
sharing every mapping of its origin (one btree, metadata only: ``create_snap``).  What a
write costs, from ``drivers/md/dm-thin.c`` (DRIVERS.md section 3):

* a chunk the device already owns: written in place, nothing allocated;
* a chunk still shared with the origin: ``break_sharing`` allocates a new block, and unless
  the bio overwrites the whole block (``io_overwrites_block``) ``dm_kcopyd_copy`` first
  copies the old block into it - a read-modify-write of one whole chunk;
* a chunk no device of the chain ever mapped: ``provision_block`` allocates a block, zeroed
  only without ``skip_block_zeroing`` - Docker's loop pool table sets it, so no copy and no
  zeroing are modelled.

dm-thin breaks sharing once: the new block is the device's own, later writes to it are in
place.  Everything is kept as ``RangeSet`` of chunk indices, so a 1 TiB write costs a few
integers.  A batch of writes (one writeback of a file, one journal commit) counts as one set
of bios: dm-thin splits bios at chunk boundaries, so a chunk is overwritten whole when the
batch covers it whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.ranges import RangeSet, merge_arrays
from simulator.units import GiB, KiB

DM_THIN_MIN_CHUNK = 64 * KiB  # thin-provisioning.rst: data_block_size >= 128 sectors
DM_THIN_MAX_CHUNK = 1 * GiB  # thin-provisioning.rst: data_block_size <= 2097152 sectors
DM_THIN_CHUNK_STEP = 64 * KiB  # thin-provisioning.rst: "a multiple of 128 sectors (64KB)"
DOCKER_DEFAULT_CHUNK = 64 * KiB  # moby deviceset.go defaultThinpBlockSize = 128 sectors
REFERENCE_CHUNK_4K = 4 * KiB  # not real dm-thin: for checks against 4 KiB-granular references
# thin-provisioning.rst sizing guide: metadata = 48 * data_dev_size / data_block_size bytes,
# i.e. 48 bytes of pool metadata per data block (btree mapping entry + space-map reference).
METADATA_BYTES_PER_CHUNK = 48
# Pending written intervals a device holds before folding them into ``written`` (at least):
# folding costs a sort of set plus pending, so folding only once pending outnumbers the set
# keeps the amortised cost per interval logarithmic; the floor keeps small sets from folding
# on every batch.  A tuning figure, not a kernel one.
PENDING_FOLD_MIN = 16384
_NO_INTERVALS = np.empty(0, dtype=np.int64)  # shared by every device that wrote nothing yet
_NO_INTERVALS.flags.writeable = False


@dataclass
class WriteCost:
    """What one batch of writes cost a thin device."""

    new_chunks: int = 0  # pool blocks newly provisioned for the device
    copied_chunks: int = 0  # of those, shared blocks read-modify-written by a partial write
    bytes_written: int = 0  # bytes the bios wrote (not the copies)

    def add(self, other: WriteCost) -> None:
        self.new_chunks += other.new_chunks
        self.copied_chunks += other.copied_chunks
        self.bytes_written += other.bytes_written


class ThinDevice:
    """One thin device of the pool: the base device, an image layer or a container.

    ``own`` holds the chunks this device provisioned itself; ``mapped`` every chunk it maps
    (its own and those it still shares with its origin chain).  ``written`` records the byte
    ranges written to it, which is what a reference (qcow2) needs to replay the same writes.

    ``written`` is byte-granular and scattered (data, log and inode-table blocks), so it
    grows to thousands of intervals in a run (mixed:scale=4: ~3,300 on average), and nothing
    reads it before the end of the run.  Folding each batch into it interval by interval
    cost a list splice of the whole set per interval, i.e. work proportional to everything
    written so far on every fsync (19% of devicemapper's replay).  A batch is appended to
    ``_pending`` instead, and folded in one sort-and-merge (``RangeSet.add_many``) when
    ``written`` is read or the pending intervals outnumber the set: the same union, at a cost
    proportional to what changed.
    """

    __slots__ = ("id", "chunk", "origin", "own", "mapped", "_written_starts", "_written_ends", "_pending_starts",
                 "_pending_ends")

    def __init__(self, id: str, chunk: int, origin: ThinDevice | None = None):
        self.id = id
        self.chunk = chunk
        self.origin = origin
        self.own = RangeSet()
        # A snapshot maps all its origin maps (create_snap shares the btree root); the origin
        # never changes after a snapshot is taken of it (image layers are read-only).
        self.mapped = origin.mapped.copy() if origin is not None else RangeSet()
        # The folded union as int64 arrays, 16 B an interval: a container's written ranges
        # outlive the run (its final sync wrote ~3,200 scattered inode-table blocks in a
        # read-startup fleet: 252 KiB as a RangeSet's lists of ints, 52 KiB here).
        self._written_starts = self._written_ends = _NO_INTERVALS
        self._pending_starts: list[int] = []
        self._pending_ends: list[int] = []

    @property
    def written(self) -> RangeSet:
        """Every byte range written to this device (pending batches folded in first)."""
        if self._pending_starts:
            self._fold()
        return RangeSet.from_bounds(self._written_starts.tolist(), self._written_ends.tolist())

    def written_bytes(self) -> int:
        """``written.total()``, without making the set."""
        if self._pending_starts:
            self._fold()
        return int((self._written_ends - self._written_starts).sum())

    def _fold(self) -> None:
        self._written_starts, self._written_ends = merge_arrays(
            np.concatenate((self._written_starts, np.array(self._pending_starts, dtype=np.int64))),
            np.concatenate((self._written_ends, np.array(self._pending_ends, dtype=np.int64))))
        self._pending_starts = []
        self._pending_ends = []

    def shared(self) -> RangeSet:
        """Chunks mapped by the origin chain that this device has not broken away from."""
        return self.origin.mapped if self.origin is not None else RangeSet()

    def own_chunks(self) -> int:
        return self.own.total()

    def write(self, ranges: RangeSet) -> WriteCost:
        """Apply one batch of device writes (byte ranges); return what it cost."""
        cost = WriteCost(bytes_written=ranges.total())
        if not ranges:
            return cost
        chunk = self.chunk
        own = self.own
        new = RangeSet()
        for start, end in ranges.units(chunk):
            if own.covers(start, end):
                continue  # owned already (the usual case: log, inode table, rewrites)
            for s, e in own.gaps(start, end):
                new.add(s, e)
        if not new:  # nothing provisioned, so nothing copied: only the bytes to remember
            self._remember(ranges)
            return cost
        cost.new_chunks = new.total()
        shared = self.shared()
        # Only chunks at the ends of a written interval can be partly covered: the set is
        # normalised, so an interior chunk of an interval is overwritten whole.
        # And no other interval can cover the rest of such a chunk (they are disjoint and
        # do not touch), so a chunk is whole exactly when this interval holds all of it.
        partial: set[int] = set()
        for start, end in ranges:
            c = start // chunk
            if start != c * chunk or end < (c + 1) * chunk:
                partial.add(c)
            c = (end - 1) // chunk
            if start > c * chunk or end < (c + 1) * chunk:
                partial.add(c)
        for c in partial:
            if new.covers(c, c + 1) and shared.covers(c, c + 1):
                cost.copied_chunks += 1
        own.update(new)
        self.mapped.update(new)
        self._remember(ranges)
        return cost

    def _remember(self, ranges: RangeSet) -> None:
        starts, ends = ranges.bounds()
        self._pending_starts.extend(starts)
        self._pending_ends.extend(ends)
        if len(self._pending_starts) > max(len(self._written_starts), PENDING_FOLD_MIN):
            self._fold()  # keeps the pending lists within a constant factor of the set


def chunk_physical_bytes(chunks: int, chunk: int) -> int:
    """Pool bytes for ``chunks`` data blocks: the blocks plus their pool metadata."""
    return chunks * (chunk + METADATA_BYTES_PER_CHUNK)


def check_chunk_size(n: int) -> bool:
    """True for a chunk size dm-thin accepts, or the 4 KiB reference granularity."""
    return n == REFERENCE_CHUNK_4K or (
        DM_THIN_MIN_CHUNK <= n <= DM_THIN_MAX_CHUNK and n % DM_THIN_CHUNK_STEP == 0)
