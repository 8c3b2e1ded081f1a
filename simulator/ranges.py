"""Sets of byte ranges, kept symbolic so that a 1 TiB file costs a few integers.

Files track which of their bytes were written since they left the image, which pages were
read, and which bytes await writeback; block drivers track which chunks a container owns.
All of these are unions of half-open intervals ``[start, end)``, stored as two sorted lists of
disjoint, non-touching intervals.  Every operation is exact integer arithmetic.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Iterable, Iterator

import numpy as np

# ``update`` adds k intervals to a set of n one by one (a bisection and a list splice in C
# each) while k <= max(8, n / 8), and merges more in one sort of all n + k.  Measured here
# (timeit, random intervals): adding 16 to 100 costs 11.5 us one by one and 14.4 us merged;
# 64 to 1,000: 53 and 103 us; 64 to 10,000: 208 and 1,152 us.
UPDATE_BY_BISECTION, UPDATE_BY_BISECTION_SHIFT = 8, 3
# ``add_many`` merges in numpy from this many intervals (the run's and the set's) on, where
# integers fit int64.  Measured here (timeit, random intervals): 128 cost 21 us sorted and
# merged in Python, 20 us in numpy; 1,000: 202 and 69 us; 100,000: 84 and 14 ms.
MERGE_IN_NUMPY = 256
INT64_MAX = 2**63 - 1


class RangeSet:
    """A union of half-open integer intervals, normalised (sorted, disjoint, non-adjacent)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, ranges: Iterable[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        if ranges is not None:  # every new file makes two empty sets: keep that path short
            for start, end in ranges:
                self.add(start, end)

    # -- queries -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def __len__(self) -> int:
        """Number of disjoint intervals (not bytes: see ``total``)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._starts == other._starts and self._ends == other._ends

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    @staticmethod
    def span(start: int, end: int) -> RangeSet:
        """The set of one non-empty interval ``[start, end)``, built directly: a new file's
        first write makes two of these (``Namespace.write_range``)."""
        new = _new(RangeSet)
        new._starts = [start]
        new._ends = [end]
        return new

    @staticmethod
    def from_bounds(starts: list[int], ends: list[int]) -> RangeSet:
        """The set whose intervals are ``[starts[i], ends[i])``, already normalised (sorted,
        disjoint, non-adjacent: ``merge_arrays``'s result), taking the lists as they are."""
        new = _new(RangeSet)
        new._starts = starts
        new._ends = ends
        return new

    @staticmethod
    def of_run(starts: list[int], ends: list[int]) -> RangeSet:
        """The union of a run of writes, ``[starts[i], ends[i])``, each non-empty, at least
        one.  A run where each write starts where the one before ended (appends, a file
        written front to back) is one interval, found by comparing two lists in C, not by
        sorting them; any other run takes ``add_many``'s sort and merge."""
        if starts[1:] == ends[:-1]:
            return RangeSet.span(starts[0], ends[-1])
        out = RangeSet()
        out.add_many(starts, ends)
        return out

    @staticmethod
    def of_units(units: Iterable[int], unit: int) -> RangeSet:
        """The bytes of the distinct ``unit``-sized blocks numbered ``units``, in any order:
        one sort and one pass (a journal commit's hundreds of dirty blocks, which ``add``
        one by one cost a bisection each)."""
        starts: list[int] = []
        ends: list[int] = []
        for u in sorted(units):
            start = u * unit
            if ends and start <= ends[-1]:
                if start + unit > ends[-1]:
                    ends[-1] = start + unit
            else:
                starts.append(start)
                ends.append(start + unit)
        return RangeSet.from_bounds(starts, ends)

    def bounds(self) -> tuple[list[int], list[int]]:
        """The interval starts and ends, sorted: the set's own lists, to read, never change
        (``ThinDevice`` queues them to union them later, in one ``add_many``)."""
        return self._starts, self._ends

    def copy(self) -> RangeSet:
        new = RangeSet()
        new._starts = self._starts.copy()
        new._ends = self._ends.copy()
        return new

    def total(self) -> int:
        """Number of integers covered."""
        return sum(self._ends) - sum(self._starts)

    def end(self) -> int:
        """One past the highest covered integer (0 when empty)."""
        return self._ends[-1] if self._ends else 0

    def overlap(self, start: int, end: int) -> int:
        """How many integers of ``[start, end)`` are covered."""
        if start >= end or not self._starts:
            return 0
        i = max(bisect_right(self._ends, start), 0)
        covered = 0
        while i < len(self._starts) and self._starts[i] < end:
            covered += min(end, self._ends[i]) - max(start, self._starts[i])
            i += 1
        return covered

    def covers(self, start: int, end: int) -> bool:
        """True when every integer of ``[start, end)`` is in the set."""
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def within(self, start: int, end: int) -> list[tuple[int, int]]:
        """The set's intervals that meet ``[start, end)``, clipped to it."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        out = []
        while i < len(starts) and starts[i] < end:
            out.append((max(start, starts[i]), min(end, ends[i])))
            i += 1
        return out

    def gaps(self, start: int, end: int) -> RangeSet:
        """The parts of ``[start, end)`` not in the set."""
        out = RangeSet()
        cursor = start
        i = max(bisect_right(self._ends, start), 0)
        while i < len(self._starts) and self._starts[i] < end:
            if self._starts[i] > cursor:
                out._append(cursor, self._starts[i])
            cursor = max(cursor, self._ends[i])
            i += 1
        if cursor < end:
            out._append(cursor, end)
        return out

    def units(self, unit: int) -> RangeSet:
        """The set of unit indices (blocks, chunks, pages) that intersect the set.  The
        intervals come sorted, so each one's units either reach the last ones found (and
        merge with them) or start beyond: one comparison each, no bisection."""
        starts: list[int] = []
        ends: list[int] = []
        for start, end in zip(self._starts, self._ends):
            first, last = start // unit, -(-end // unit)
            if ends and first <= ends[-1]:
                if last > ends[-1]:
                    ends[-1] = last
            else:
                starts.append(first)
                ends.append(last)
        out = _new(RangeSet)
        out._starts, out._ends = starts, ends
        return out

    def count_units(self, unit: int) -> int:
        """How many distinct ``unit``-sized aligned blocks intersect the set."""
        return self.units(unit).total()

    # -- updates -----------------------------------------------------------------------
    def _append(self, start: int, end: int) -> None:
        self._starts.append(start)
        self._ends.append(end)

    def add(self, start: int, end: int) -> None:
        """Union with ``[start, end)``."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # Fast paths: at or after the end (logs, sequential writes), or within/extending the
        # last interval (rewrites of a file's tail, appends that touch it).
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return
        if start >= starts[-1]:
            if end > ends[-1]:
                ends[-1] = end
            return
        lo = bisect_left(ends, start)  # first interval that ends at or after start
        hi = bisect_right(starts, end)  # intervals before hi start at or before end
        if lo < hi:
            start = min(start, starts[lo])
            end = max(end, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [end]

    def update(self, other: RangeSet) -> None:
        """Union with another set: a bisection per interval for a few, one merge for many
        (``UPDATE_BY_BISECTION``)."""
        starts, ends = other._starts, other._ends
        if not self._starts:
            self._starts, self._ends = starts.copy(), ends.copy()
        elif len(starts) <= max(UPDATE_BY_BISECTION, len(self._starts) >> UPDATE_BY_BISECTION_SHIFT):
            for start, end in zip(starts, ends):
                self.add(start, end)
        else:
            self.add_many(starts, ends)

    def add_many(self, starts: list[int], ends: list[int]) -> None:
        """Union with every ``[starts[i], ends[i])`` (the ranges of a run of writes): one sort
        and one merge instead of a bisection and a list splice per range; in numpy from
        ``MERGE_IN_NUMPY`` intervals on."""
        if len(starts) < 3:
            for start, end in zip(starts, ends):
                self.add(start, end)
            return
        starts, ends = starts + self._starts, ends + self._ends
        if len(starts) >= MERGE_IN_NUMPY and max(ends) <= INT64_MAX:
            self._starts, self._ends = _merge_numpy(starts, ends)
            return
        pairs = sorted(zip(starts, ends))
        new_starts: list[int] = []
        new_ends: list[int] = []
        cur_start, cur_end = pairs[0]
        for start, end in pairs:
            if start > cur_end:
                if cur_start < cur_end:
                    new_starts.append(cur_start)
                    new_ends.append(cur_end)
                cur_start, cur_end = start, end
            elif end > cur_end:
                cur_end = end
        if cur_start < cur_end:
            new_starts.append(cur_start)
            new_ends.append(cur_end)
        self._starts, self._ends = new_starts, new_ends

    def remove(self, start: int, end: int) -> None:
        """Difference with ``[start, end)``."""
        if start >= end or not self._starts:
            return
        starts, ends = self._starts, self._ends
        lo = bisect_right(ends, start)  # first interval ending after start
        hi = bisect_left(starts, end)  # intervals before hi start before end
        if lo >= hi:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if starts[lo] < start:
            keep_s.append(starts[lo])
            keep_e.append(start)
        if ends[hi - 1] > end:
            keep_s.append(end)
            keep_e.append(ends[hi - 1])
        starts[lo:hi] = keep_s
        ends[lo:hi] = keep_e

    def truncate(self, size: int) -> None:
        """Drop everything at or beyond ``size`` (what ``truncate(2)`` does to data)."""
        if self._ends and self._ends[-1] > size:
            self.remove(size, self._ends[-1])

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()


_new = object.__new__


def _merge_numpy(starts: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
    """``add_many``'s sort and merge (``merge_arrays``), from lists and back to lists."""
    s, e = merge_arrays(np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))
    return s.tolist(), e.tolist()


def merge_arrays(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normalised union of the intervals ``[s[i], e[i])`` (int64, any order, empties
    allowed), as sorted start and end arrays: sorted by start, a running maximum of the
    ends, and a new interval wherever a start lies beyond every end before it (touching
    intervals join, as ``RangeSet.add`` joins them)."""
    nonempty = s < e
    if not nonempty.all():
        s, e = s[nonempty], e[nonempty]
    if not len(s):
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    first = np.empty(len(s), dtype=bool)
    first[0] = True
    np.greater(s[1:], reach[:-1], out=first[1:])
    heads = np.flatnonzero(first)
    tails = np.empty_like(heads)
    tails[:-1] = heads[1:] - 1
    tails[-1] = len(s) - 1
    return s[heads], reach[tails]


class _EmptyRangeSet(RangeSet):
    """The shared empty set a new ``FileInode`` starts with (``EMPTY_RANGES``).

    Most files a workload creates are written once, or never: allocating two empty sets
    per file (six objects) was a fifth of a create's cost.  Readers see an ordinary empty
    set; the namespace swaps in a set of its own on the first write.  Any mutation that
    would change it raises, so a writer that forgets the swap fails loudly instead of
    writing into every file at once (``remove``, ``truncate`` and ``clear`` of an empty set
    change nothing and stay allowed)."""

    __slots__ = ()

    def _frozen(self, *args: object) -> None:
        raise TypeError("EMPTY_RANGES is shared: replace it with a RangeSet of its own first")

    add = add_many = update = _append = _frozen  # type: ignore[assignment]

    # Copies and pickles stay the one shared object: the namespace tells it by identity.
    def __reduce__(self) -> str:
        return "EMPTY_RANGES"

    def __copy__(self) -> RangeSet:
        return self

    def __deepcopy__(self, memo: dict) -> RangeSet:
        return self


EMPTY_RANGES: RangeSet = _EmptyRangeSet()
