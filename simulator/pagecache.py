"""Page cache accounting: which 4 KiB pages the containers' reads pull into memory.

A driver decides the *key* of what it reads: drivers that share the page cache between
containers (overlay, aufs: the lower file's inode is the same; zfs: the single-copy ARC)
key shared data by the image object, the others key it by container too.  Sizes stay
symbolic: each key holds a ``RangeSet`` of page numbers.
"""

from __future__ import annotations

from typing import Hashable

from .ranges import RangeSet
from .units import PAGE_SIZE


class PageCache:
    """Pages per key: one run of pages as a ``(first, last)`` tuple, more as a ``RangeSet``.

    Most files are read once, whole (start-up reads, imports): a tuple costs one object
    where a ``RangeSet`` costs three, and a key grows into a ``RangeSet`` only when a
    second read leaves a gap."""

    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[Hashable, tuple[int, int] | RangeSet] = {}

    def touch(self, key: Hashable, offset: int, length: int) -> None:
        """Bring the pages holding ``[offset, offset + length)`` of ``key`` into the cache."""
        if length <= 0:
            return
        first, last = offset // PAGE_SIZE, -(-(offset + length) // PAGE_SIZE)
        pages = self._pages.get(key)
        if pages is None:
            self._pages[key] = (first, last)
        elif pages.__class__ is tuple:
            a, b = pages  # type: ignore[misc]
            if first <= b and last >= a:  # overlapping or touching: still one run
                if first < a or last > b:
                    self._pages[key] = (min(a, first), max(b, last))
            else:
                self._pages[key] = RangeSet(sorted([(a, b), (first, last)]))
        else:
            pages.add(first, last)  # type: ignore[union-attr]

    def bytes(self) -> int:
        pages = 0
        for p in self._pages.values():
            pages += p[1] - p[0] if p.__class__ is tuple else p.total()  # type: ignore[union-attr,index]
        return pages * PAGE_SIZE
