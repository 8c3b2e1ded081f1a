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
    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[Hashable, RangeSet] = {}

    def touch(self, key: Hashable, offset: int, length: int) -> None:
        """Bring the pages holding ``[offset, offset + length)`` of ``key`` into the cache."""
        if length <= 0:
            return
        pages = self._pages.get(key)
        if pages is None:
            pages = self._pages[key] = RangeSet()
        pages.add(offset // PAGE_SIZE, -(-(offset + length) // PAGE_SIZE))

    def bytes(self) -> int:
        return sum(p.total() for p in self._pages.values()) * PAGE_SIZE
