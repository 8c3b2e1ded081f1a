"""The data side of a container's view: its files' written, dirty and read bytes.

``Namespace`` (``simulator.namespace``) decides what names lead to and makes things private;
what happens to a private file's bytes once it is found (the ranges a write covers, what
awaits writeback, a truncate, a read of an image or private file) lives here, as a mixin of
``Namespace``, so that each module stays about one thing.  Sizes stay symbolic
(``RangeSet``).  The methods read the namespace's ``dirty``, ``hooks``, ``cost`` and its byte
counters, which ``Namespace.__init__`` sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .imagetree import ImageFile
from .nodes import FileInode, Node
from .ranges import EMPTY_RANGES, RangeSet

if TYPE_CHECKING:
    from .costcounts import CostCounts


class FileData:
    """Writes, truncates, writebacks and reads of a container's files (see the module docstring)."""

    dirty: dict[FileInode, None]  # insertion-ordered set awaiting writeback
    hooks: Any  # the driver's mount (simulator.hooks.StorageHooks)
    cost: CostCounts
    written_bytes: int
    read_bytes: int

    def write_range(self, inode: FileInode, offset: int, length: int) -> None:
        if length:
            end = offset + length
            if end > inode.size:
                inode.size = end
            written, dirty = inode.written, inode.dirty
            if written is EMPTY_RANGES:  # the first write: one set for both (nodes.FileInode)
                inode.written = inode.dirty = RangeSet.span(offset, end)
            else:
                written.add(offset, end)
                if dirty is EMPTY_RANGES:  # the first write since a writeback
                    inode.dirty = RangeSet.span(offset, end)
                elif dirty is not written:
                    dirty.add(offset, end)
            self.dirty[inode] = None
            self.written_bytes += length
            self.hooks.write(inode, offset, length)
        inode.modified = True

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int]) -> None:
        """The writes ``[starts[i], ends[i])`` of a run, in order, each non-empty, to a
        private file the driver called ``batchable``: what ``write_range`` does for each,
        at once.  Their union is computed once (``RangeSet.of_run``: one interval for a
        run of appends) and handed to the driver's ``write_run`` with the writes."""
        run = RangeSet.of_run(starts, ends)
        end = run.end()
        if end > inode.size:
            inode.size = end
        written, dirty = inode.written, inode.dirty
        if written is EMPTY_RANGES:  # one set for both, as write_range's first write
            inode.written = inode.dirty = run
        else:
            written.update(run)
            if dirty is EMPTY_RANGES:
                inode.dirty = run
            elif dirty is not written:
                dirty.update(run)
        self.dirty[inode] = None
        self.written_bytes += sum(ends) - sum(starts)
        inode.modified = True
        self.hooks.write_run(inode, starts, ends, run)

    def set_size(self, inode: FileInode, size: int) -> None:
        old = inode.size
        inode.size = size
        inode.written.truncate(size)
        if inode.dirty is not inode.written:
            inode.dirty.truncate(size)
        inode.modified = True
        self.hooks.truncate(inode, old, size)

    def writeback(self, inode: FileInode, timed: bool = True) -> None:
        """``timed``: during the workload (fsync, flush on close, commit), not the writeback
        that follows its end (which no measured wall time includes)."""
        if inode.dirty:
            self._write_out(inode, inode.dirty, timed)
            inode.dirty = EMPTY_RANGES  # not clear(): it may be ``written`` too
        self.dirty.pop(inode, None)

    def _write_out(self, inode: FileInode, ranges: RangeSet, timed: bool) -> None:
        """Hand dirty ``ranges`` of ``inode`` to the driver, counting what the cost model prices."""
        if inode.origin is None:
            self.cost.new_file_writebacks += 1  # its cost is paid at write time (delalloc)
        if timed:
            self.cost.dirty_ranges += len(ranges)
            self.cost.synced_bytes += ranges.total()
        self.hooks.writeback(inode, ranges)

    def writeback_from(self, inode: FileInode, start: int) -> None:
        """Write back the dirty bytes of ``inode`` at ``start`` and after, now, and leave those
        before it dirty (xfs: a truncate that grows a file first writes what lies past its
        size on disk, ``filemap_write_and_wait_range``)."""
        dirty = inode.dirty
        if dirty.end() <= start:
            return
        if not dirty.overlap(0, start):
            self.writeback(inode)
            return
        rest = RangeSet(dirty.within(0, start))  # a new set: ``dirty`` may be ``written`` too
        self._write_out(inode, RangeSet(dirty.within(start, dirty.end())), True)
        inode.dirty = rest

    def flush(self, timed: bool = True) -> None:
        """Write back everything dirty (commit, end of the workload: ``timed=False``)."""
        for inode in list(self.dirty):
            self.writeback(inode, timed)

    def read_node(self, node: Node, offset: int, length: int) -> int:
        n = max(0, min(length, node.size - offset))  # type: ignore[union-attr]
        if n:
            self.read_bytes += n
            if node.__class__ is ImageFile and node.size > self.cost.inline_limit \
                    and node.ino not in self.cost.image_reads:  # type: ignore[union-attr]
                self.cost.image_reads.add(node.ino)  # type: ignore[union-attr]
                self.cost.image_first_read_bytes += n
            self.hooks.read(node, offset, n)
        return n
