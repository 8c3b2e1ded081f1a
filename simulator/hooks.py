"""What the model tells a driver while a container runs: the cost hooks.

``Namespace`` carries out every operation with Linux semantics on the shared view and calls
these hooks on the container's storage (the object ``driver.get(id)`` returns), so that each
driver can charge what the operation costs *it*: copy-ups, chunk allocations, metadata
writes, page cache.  The hooks never change the view; the only semantic questions a driver
answers are ``rename_refused`` (overlay's EXDEV) and ``keeps_hardlinks`` (overlay without
``index`` breaks hard links on copy-up).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Protocol, Sequence

from .nodes import Dir, DirNode, FileInode, Node
from .ranges import RangeSet

# Why a file that still comes from the image must now be private (``StorageHooks.copy_up``):
NEED_DATA = "data"  # open for write, write, append: the data must be private
NEED_TRUNCATE = "truncate"  # truncate(2): private data, then cut (overlay copies it all first)
NEED_TRUNC_OPEN = "trunc_open"  # open(O_TRUNC): the old data is discarded, none is needed
NEED_META = "meta"  # chmod, chown, utime, setxattr: attributes only
NEED_RENAME = "rename"  # the file gets a new name
NEED_LINK = "link"  # a new hard link to it


class StorageHooks(Protocol):
    """The per-container cost sink a driver implements (one per mounted container)."""

    keeps_hardlinks: bool
    opaque_new_dirs: bool  # a new directory in a merged parent gets the opaque marker
    opaque_moved_dirs: bool  # a container's own directory renamed into a merged parent does too
    indexes_hardlinks: bool  # removing one name of an image hard link copies the inode up first
    notes_close: bool  # False when ``closed`` does nothing: the namespace may skip the call
    notes_entries: bool  # True when ``entry`` does something: the namespace skips it otherwise
    notes_links: bool  # True when ``followed`` does something: the walk skips it otherwise
    # Operation kinds (of ``simulator.writeruns.PASSING_KINDS``) that may run while other
    # files' writes are queued: their hooks touch, besides their own file's state, only what
    # ``batchable`` files' hooks touch in an order-free way (empty: every operation flushes).
    runs_pass: frozenset[str]

    def rename_refused(self, node: DirNode | Node) -> bool:
        """True when the real driver fails this rename with EXDEV."""

    def lookup(self, parent: DirNode, name: str) -> int:
        """A cold lookup of ``name`` in ``parent``: return the layers it probes."""

    def lookup_many(self, parents: list[DirNode], groups: list[Sequence[str]], depths: Counter) -> None:
        """``lookup(parents[i], name)`` for each ``name`` of ``groups[i]``, for each ``i``,
        in that order, with nothing else between them (a run of stats:
        ``simulator.statruns``; a group is a stretch of names in one directory); count each
        one's probes in ``depths``."""

    def lookup_table(self, parent: DirNode) -> tuple[Callable[[str, int], int], int] | None:
        """(get, default) where ``lookup(parent, name)`` is ``get(name, default)`` for every
        name and does nothing else but what ``tabled_lookups`` does, as long as neither the
        view nor the driver changes; None where it is not so (a run of stats answers the
        lookups in ``parent`` with ``get`` then: ``simulator.statruns``)."""

    def tabled_lookups(self, parents: list[DirNode], counts: list[int], depths: Counter, found: list) -> None:
        """The rest of what ``lookup`` would do for lookups a run of stats answered from
        ``lookup_table``: ``counts[i]`` names looked up in ``parents[i]`` (a stretch of them;
        a directory may come back in a later stretch), ``depths`` the count of each depth
        they had, ``found`` the nodes they found (the parents' children, not yet promoted),
        in order.  Those effects must commute with every other lookup's: they are not in
        order with ``lookup_many``'s."""

    def meta_copy_up(self, node: Dir | Node) -> None:
        """A directory (or symlink) from the image became private to the container."""

    def copy_up(self, inode: FileInode, need: str) -> None:
        """An operation needs ``inode`` (which has an image origin) private, for ``need``."""

    def write(self, inode: FileInode, offset: int, length: int) -> None: ...

    # -- runs of writes (``simulator.writeruns``): the replay's fast path --
    def batchable(self, inode: FileInode) -> bool:
        """True when writes and appends to this private file, with nothing else happening
        between them, may be answered later and together: their ``lookup``, ``copy_up``
        (need data), ``write`` and ``closed`` hooks then touch only this file's state, or
        the driver's in an order-free way (flags set, sums, sets), so that runs of several
        files, each in its own order, cost what the interleaved operations cost."""

    def lookup_run(self, parent: DirNode, name: str, count: int) -> int:
        """``count`` lookups of ``name`` in ``parent`` with no change between them; return
        the layers each probes (the same for all).  The last call's state is what stays."""

    def write_run(self, inode: FileInode, starts: list[int], ends: list[int], union: RangeSet) -> None:
        """The writes of a run, after the file took them all (size, ranges): what ``write``
        for each, in order, would have done.  ``union`` is the set of bytes they wrote, to
        read during the call only (the file may keep it as its own).  Every driver that
        calls a file ``batchable`` implements it (btrfs keeps the per-write order where it
        matters)."""

    def truncate(self, inode: FileInode, old_size: int, new_size: int) -> None: ...

    def read(self, node: Node, offset: int, length: int) -> None: ...

    def writeback(self, inode: FileInode, ranges: RangeSet) -> None:
        """Dirty ranges of ``inode`` go to disk (fsync, commit, end of workload)."""

    def fsync(self, node: Node) -> None: ...

    def closed(self, node: Node, op: str) -> None:
        """Operation ``op`` (create, write, append, open, read, fsync) opened ``node`` and
        has closed it: btrfs flushes some files at close (``drivers/btrfs.py``)."""

    def metadata(self, op: str, node: Node | None) -> None:
        """A namespace or attribute change: create, mkdir, unlink, rename, chmod, ..."""

    def entry(self, parent: Dir, name: str, added: bool) -> None:
        """``name`` was added to or removed from ``parent`` (a rename does both, a copy-up
        neither): btrfs rewrites the parent's items even where the name is back by the end."""

    def followed(self, parent: DirNode, name: str, link: Node) -> None:
        """A walk went through the symbolic link ``name`` of ``parent`` (its target read:
        relatime may write the link's atime).  Not called for quiet walks (views, tests)."""

    def remove(self, node: Node, last_link: bool) -> None:
        """A name of ``node`` was removed; ``last_link``: its storage can be freed."""
