"""Which leaves of an image's btrfs fs tree a container owns at the end: its qgroup-exclusive
metadata, in nodes.

The image's items sit in key order (``drivers.btrfs_tree``).  A container's changes are
found by comparing each of its private directories with the image directory it extends
(``container_changes``): entries removed, added or moved (a ``DIR_ITEM`` and a
``DIR_INDEX`` under the directory's number, an ``INODE_REF`` under the object's), objects
and subtrees deleted, and the inode items the driver's hooks saw rewritten in place (data,
attributes, the relatime update of a first read).  Then ``cow_nodes`` counts the leaves
those offsets land in, as the tree reshapes: items added to an object stay in its leaf (8
logs appended 25 x 512 B each CoW'd 1-2 leaves and the root, measured), new objects take
the highest numbers (the last leaf), a leaf grown past a node splits, and a deletion that
leaves a leaf under a third full rebalances it at once (``btrfs_del_items``: as many items
as fit go to the left neighbour, then all the rest to the right one, each neighbour that
takes items CoW'd, an emptied leaf freed).  A directory made private only because
something below it changed rewrites none of its items.  An image inode that loses its last
name (unlink, rmdir, a rename over it) CoWs the last leaf as well, for the orphan item btrfs
keeps there until eviction (measured: ``tests/test_real_btrfs.py``, 5 nodes for an unlink in
a 300-file directory where the model without it said 4).  What the final state no longer
shows is added by ``btrfs_usage.metadata_nodes`` from the names the container added to or
removed from each image directory along the way (``BtrfsMount.entry``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

from simulator.imagetree import ImageDir, ImageFile, ImageSymlink
from simulator.nodes import Dir, FileInode, Symlink

from .btrfs_layout import INODE_ITEM_BYTES, ITEM_HEADER_BYTES, KEY_PTR_BYTES
from .btrfs_tree import TreeLayout, entry_bytes

LEAF_MIN_FILL_DIVISOR = 3  # btrfs_del_items: a leaf under a third full is pushed to neighbours
MIN_PUSH_BYTES = ITEM_HEADER_BYTES + INODE_ITEM_BYTES  # room for one item: an inode item, typically


@dataclass
class LeafChanges:
    """What a container did to the image's items, as offsets in the layout."""

    touched: set[int] = field(default_factory=set)  # offsets of items rewritten in place
    removed: list[tuple[int, int]] = field(default_factory=list)  # byte ranges deleted
    added: dict[int, int] = field(default_factory=dict)  # offset -> bytes inserted there
    appended: int = 0  # bytes of new objects: the highest numbers, after every image object
    # The last leaf was rewritten though nothing of it may be left by the end: an inode lost
    # its last name (btrfs_orphan_add keeps an ORPHAN_ITEM under objectid -5, after every
    # inode, until eviction), or the container made an object (the highest number) that it
    # may have removed again.
    last_leaf: bool = False


def cow_nodes(layout: TreeLayout, changes: LeafChanges) -> int:
    """Tree blocks the container owns: leaves it rewrote or added, and the internal nodes
    above them (at least the root, CoW'd by the snapshot's first change)."""
    leaves = _Leaves(layout)
    for at in changes.touched:
        leaves.dirty.add(layout.leaf(at))
    for at, size in changes.added.items():
        k = layout.leaf(at)
        leaves.fill[k] += size
        leaves.dirty.add(k)
    if changes.appended:
        leaves.fill[-1] += changes.appended
    if changes.appended or changes.last_leaf:
        leaves.dirty.add(len(leaves.fill) - 1)
    for a, b in changes.removed:  # in the order the container made them, each leaf rebalanced
        leaves.remove(a, b)
    usable, fill, alive = layout.usable, leaves.fill, leaves.alive
    owned = [k for k in leaves.dirty if alive[k] and fill[k] > 0]
    count = sum(max(1, -(-fill[k] // usable)) for k in owned)  # an overfull leaf split
    total_leaves = sum(max(1, -(-fill[k] // usable)) for k in range(len(fill)) if alive[k] and fill[k] > 0)
    if total_leaves <= 1:
        return 1  # the root is the only leaf
    fanout, level, internal = usable // KEY_PTR_BYTES, sorted(owned), 0
    while total_leaves > 1:
        level = sorted({k // fanout for k in level})
        internal += max(1, len(level))
        total_leaves = -(-total_leaves // fanout)
    return count + internal


class _Leaves:
    """The image's leaves as a container's deletions reshape them: each leaf's key range (in
    layout offsets) and the bytes it holds.  A deletion that leaves a leaf under a third
    full rebalances it at once, as ``btrfs_del_items`` does: as many of its items as fit go
    to the left neighbour (CoW'd if it has room for one), then all the rest to the right
    one (CoW'd only if all fit), and a leaf emptied so is freed.  Items moved keep their
    offsets; a leaf's boundary moves by the share of its range they held."""

    def __init__(self, layout: TreeLayout):
        count, total = layout.leaves, layout.total
        self.usable = layout.usable
        self.lo = [total * k // count for k in range(count)]
        self.hi = self.lo[1:] + [max(total, 1)]
        self.fill = [self.hi[k] - self.lo[k] for k in range(count)]
        self.alive = [True] * count
        self.dirty: set[int] = set()

    def _find(self, offset: int) -> int:
        k = max(0, bisect.bisect_right(self.lo, offset) - 1)
        while not self.alive[k] and k > 0:
            k -= 1
        return k

    def remove(self, a: int, b: int) -> None:
        while a < b:
            k = self._find(a)
            end = min(b, self.hi[k]) if self.hi[k] > a else b
            self.fill[k] = max(0, self.fill[k] - (end - a))
            self.dirty.add(k)
            if self.fill[k] < self.usable // LEAF_MIN_FILL_DIVISOR:
                self._rebalance(k)
            a = end

    def _neighbour(self, k: int, step: int) -> int | None:
        j = k + step
        while 0 <= j < len(self.alive) and not self.alive[j]:
            j += step
        return j if 0 <= j < len(self.alive) else None

    def _rebalance(self, k: int) -> None:
        fill, usable = self.fill, self.usable
        left, right = self._neighbour(k, -1), self._neighbour(k, 1)
        if fill[k] and left is not None and usable - fill[left] >= MIN_PUSH_BYTES:
            moved = min(fill[k], usable - fill[left])
            self.lo[k] += (self.hi[k] - self.lo[k]) * moved // fill[k]
            self.hi[left] = self.lo[k]
            fill[left] += moved
            fill[k] -= moved
            self.dirty.add(left)
        if fill[k] and right is not None and fill[right] + fill[k] <= usable:
            fill[right] += fill[k]
            fill[k] = 0
            self.dirty.add(right)
        if not fill[k] and (left is not None or right is not None):
            self.alive[k] = False  # freed; its key range joins a neighbour's
            if right is not None:  # ``lo`` stays sorted: the freed leaves take the new start
                for j in range(k, right + 1):
                    self.lo[j] = self.lo[k]
            else:
                self.hi[left] = self.hi[k]  # type: ignore[index]


def image_identity(node):
    """The image object a container node is, if any: a private directory over an image
    directory, a written image file (btrfs rewrites the same inode), or an image object
    itself (renamed, or a name left as it was)."""
    cls = node.__class__
    if cls is Dir:
        return node.base
    if cls is FileInode:
        return node.origin
    if cls in (ImageDir, ImageFile, ImageSymlink):
        return node
    return None


def container_changes(ns, layout: TreeLayout, touched: Iterable[int], new_object_bytes) -> LeafChanges:
    """The container's changes to the image's items, found by comparing each of its private
    directories with the image directory it extends.  ``touched``: image objects (``id``)
    whose items the hooks saw rewritten in place (data, attributes, atime);
    ``new_object_bytes(name, node)``: leaf bytes of an object the container made, its
    directory entries included."""
    out = LeafChanges()
    changed: list[tuple[ImageDir | None, str, object, object]] = []  # (image dir, name, old, new)
    alive: set[int] = set()
    todo = [ns.root]
    while todo:
        d = todo.pop()
        base = d.base
        for name, node in d.own.items():
            old = base.children.get(name) if base is not None else None
            ident = image_identity(node) if node is not None else None
            if ident is not None:
                alive.add(id(ident))
            if node.__class__ is Dir:
                todo.append(node)
            if old is not None and ident is old:
                continue  # the same object under the same name; what changed inside is below
            if _same_symlink(old, node):
                out.touched.add(layout.start[layout.ino[id(old)]])  # its owner changed in place
                continue
            changed.append((base, name, old, node))
    for key in touched:
        at = layout.start.get(layout.ino.get(key, -1))
        if at is not None:
            out.touched.add(at)
    for base, name, old, node in changed:
        if base is not None:
            item_at, index_at = layout.entry_offsets(base, name)
            size = entry_bytes(name)
            if old is not None:  # its DIR_ITEM and DIR_INDEX go
                out.removed += [(item_at, item_at + size), (index_at, index_at + size)]
            if node is not None:
                out.added[item_at] = out.added.get(item_at, 0) + size
                out.added[index_at] = out.added.get(index_at, 0) + size
        if old is not None:
            _drop(layout, old, alive, out)
        if node is None:
            continue
        ident = image_identity(node)
        span = layout.object_span(ident) if ident is not None else None
        if span is not None:
            out.touched.add(span[0])  # moved here: its INODE_REF is rewritten
        else:
            out.appended += new_object_bytes(name, node) - (2 * entry_bytes(name) if base is not None else 0)
    return out


def _same_symlink(old, node) -> bool:
    """An image symlink whose owner the container changed: the model gives it a new
    private node, but the file system rewrites the same inode."""
    return old.__class__ is ImageSymlink and node.__class__ is Symlink and node.target == old.target


def _drop(layout: TreeLayout, old, alive: set[int], out: LeafChanges) -> None:
    """An image object no longer under its old name: its reference goes; if no name of it
    is left, all its items go, and a directory's whole subtree with it."""
    span = layout.object_span(old)
    if span is None:
        return
    if id(old) in alive or (old.__class__ is ImageFile and old.nlink > 1):
        out.touched.add(span[0])
        return
    out.removed.append(span)
    out.last_leaf = True
    if old.__class__ is ImageDir:
        for child in old.children.values():
            _drop(layout, child, alive, out)
