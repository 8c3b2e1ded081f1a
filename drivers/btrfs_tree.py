"""Where an image's objects sit in its btrfs fs tree, and which leaves a container CoWs.

A container's qgroup-exclusive metadata is the tree blocks its subvolume no longer shares
with the image: every leaf its changes rewrote, every leaf it added, and the internal
nodes above them.  Which leaves those are depends on *key order*, not on the directory
walk: btrfs keys every item by ``(objectid, type, offset)``, so an object's items
(``INODE_ITEM``, ``INODE_REF``, extents) sit together at its inode number, and a
directory's entries sit under the *directory's* number (``DIR_ITEM`` by name hash, then
``DIR_INDEX`` by link order) (``include/uapi/linux/btrfs_tree.h``, ``fs/btrfs/dir-item.c``).
Inode numbers are handed out in creation order, per subvolume, from 257 (the root is 256),
and a snapshot continues its source's count (``btrfs_get_free_objectid``).  A tree laid
layer by layer (``simulator.real.btrfs.apply_layer``) therefore spreads one directory's
files over as many stretches of the key space as there are layers that touched it.

Measured here (kernel 6.18, ``btrfs inspect-internal dump-tree``; ``tests/test_real_btrfs.py``
checks the inode numbers and name hashes): the top layer of a 4-layer, 300-file image had
9 leaves, 83-99% full; ``rm -rf`` of one of its trees CoW'd 8 of them (the deleted
objects' numbers were spread over all four layers), where placing objects in walk order
had said 3.  Leaves are assumed evenly filled (the splits that fill them depend on the
order the kernel flushed delayed items, which the model does not see).  A leaf left less
than a third full by deletions is pushed into a neighbour with room (``btrfs_del_items``),
which CoWs that neighbour and frees the leaf; a leaf grown past a node splits.
"""

from __future__ import annotations

import bisect
import itertools
import posixpath
from dataclasses import dataclass, field

import crc32c

from simulator.image import Image
from simulator.imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree
from simulator.nodes import Dir, FileInode, Symlink

from .btrfs_layout import (DIR_ITEM_BYTES, INODE_ITEM_BYTES, INODE_REF_BYTES, ITEM_HEADER_BYTES, KEY_PTR_BYTES,
                           LEAF_HEADER_BYTES, ROOT_ITEM_BYTES, inline_item_bytes)

FIRST_FREE_OBJECTID = 256  # BTRFS_FIRST_FREE_OBJECTID: a subvolume's root directory
NAME_HASH_SEED = 0xFFFFFFFE  # btrfs_name_hash(): crc32c((u32)~1, name), no final inversion
# How full a laid image's leaves are, on average: measured here (kernel 6.18, dump-tree of
# the top layer) on 10 image trees of 2 to 177 leaves, laid by simulator.real.btrfs:
# 0.75-0.83, mean 0.79 (splits halve a leaf; later pushes refill it only partly).
LAID_LEAF_FILL = 0.79
LEAF_MIN_FILL_DIVISOR = 3  # btrfs_del_items: a leaf under a third full is pushed to neighbours
MIN_PUSH_BYTES = ITEM_HEADER_BYTES + INODE_ITEM_BYTES  # room for one item: an inode item, typically


def name_hash(name: str) -> int:
    """``btrfs_name_hash``: the offset of a ``DIR_ITEM`` key.  The ``crc32c`` package
    computes the standard (inverted) CRC-32C; the kernel's raw register is its inverse
    started from the inverse seed."""
    return crc32c.crc32c(name.encode("utf-8", "surrogateescape"), NAME_HASH_SEED ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def entry_bytes(name: str) -> int:
    """Leaf bytes of one directory entry: its ``DIR_ITEM`` or its ``DIR_INDEX``."""
    return ITEM_HEADER_BYTES + DIR_ITEM_BYTES + len(name.encode("utf-8", "surrogateescape"))


def inode_numbers(image: Image) -> dict[str, int]:
    """The inode number of every path the top layer's subvolume holds, as the real backend
    makes them: layers in order, each applied on a snapshot of the one below; whiteouts and
    opaque directories first, then each entry (implicit parents by ``makedirs``, top down;
    a directory that exists keeps its inode; anything else is removed and made anew; a hard
    link takes its target's number)."""
    ino: dict[str, int] = {"/": FIRST_FREE_OBJECTID}
    children: dict[str, dict[str, None]] = {"/": {}}
    counter = [FIRST_FREE_OBJECTID + 1]

    def remove(path: str) -> None:
        if path not in ino:
            return
        below = children.get(path)
        if below is not None:
            for name in list(below):
                remove(posixpath.join(path, name))
            del children[path]
        del ino[path]
        parent = children.get(posixpath.dirname(path))
        if parent is not None:
            parent.pop(posixpath.basename(path), None)

    def make(path: str, number: int | None = None, is_dir: bool = False) -> None:
        ino[path] = counter[0] if number is None else number
        if number is None:
            counter[0] += 1
        children[posixpath.dirname(path)][posixpath.basename(path)] = None
        if is_dir:
            children[path] = {}

    def makedirs(path: str) -> None:
        if path in children:
            return
        makedirs(posixpath.dirname(path))
        remove(path)
        make(path, is_dir=True)

    for layer in image.layers:
        entries = layer.entries
        for e in entries:
            if e.type == "whiteout":
                remove(e.path)
            elif e.type == "dir" and e.opaque and e.path in children:
                for name in list(children[e.path]):
                    remove(posixpath.join(e.path, name))
        for e in entries:
            makedirs(posixpath.dirname(e.path))  # a whiteout's directory too: it is in the layer
            if e.type == "whiteout":
                continue
            if e.type == "dir":
                if e.path not in children:
                    remove(e.path)
                    make(e.path, is_dir=True)
                continue
            remove(e.path)
            make(e.path, ino.get(e.target) if e.type == "hardlink" else None)  # type: ignore[arg-type]
    return ino


@dataclass
class TreeLayout:
    """An image's fs tree in key order: each object's first byte (its ``INODE_ITEM``) and
    end, counted from the first leaf, and the leaves they fill evenly."""

    ino: dict[int, int]  # id(image node) -> inode number
    start: dict[int, int]  # inode number -> offset of its first item
    end: dict[int, int]  # inode number -> offset past its last item
    head: dict[int, int]  # inode number -> bytes before its first DIR_ITEM (inode item, refs)
    total: int
    usable: int  # leaf bytes for items: node size less the header
    _dirs: dict[int, tuple[list[int], list[int], dict[str, int]]] = field(default_factory=dict)

    @property
    def leaves(self) -> int:
        """A tree that fits one leaf is one leaf; a bigger one has split into leaves
        ``LAID_LEAF_FILL`` full on average."""
        fitted = -(-self.total // self.usable)
        return fitted if fitted <= 1 else max(fitted, round(self.total / (self.usable * LAID_LEAF_FILL)))

    def leaf(self, offset: int) -> int:
        return min(self.leaves - 1, max(0, offset) * self.leaves // max(1, self.total))

    def object_start(self, node) -> int | None:
        number = self.ino.get(id(node))
        return None if number is None else self.start[number]

    def object_span(self, node) -> tuple[int, int] | None:
        number = self.ino.get(id(node))
        return None if number is None else (self.start[number], self.end[number])

    def entry_offsets(self, directory: ImageDir, name: str) -> tuple[int, int]:
        """Offsets of the ``DIR_ITEM`` and ``DIR_INDEX`` of ``name`` in ``directory`` (a new
        name: where its items would go; a new index is the directory's highest)."""
        number = self.ino[id(directory)]
        head = self.start[number] + self.head[number]
        hashes, before, index_of = self._entries(directory)
        at = head + before[bisect.bisect_left(hashes, name_hash(name))]
        index = index_of.get(name)
        return at, (self.end[number] if index is None else head + before[-1] + index)

    def _entries(self, directory: ImageDir) -> tuple[list[int], list[int], dict[str, int]]:
        """The directory's name hashes in key order with the bytes of the entries before
        each, and each name's offset among the ``DIR_INDEX`` items (link order, which is
        inode-number order for the names a layer made)."""
        got = self._dirs.get(id(directory))
        if got is None:
            children, ino = directory.children, self.ino
            by_hash = sorted((name_hash(n), entry_bytes(n)) for n in children)
            hashes, before = [h for h, _ in by_hash], list(itertools.accumulate((b for _, b in by_hash), initial=0))
            index_of, at = {}, 0
            for n in sorted(children, key=lambda n: ino.get(id(children[n]), 0)):
                index_of[n] = at
                at += entry_bytes(n)
            got = self._dirs[id(directory)] = (hashes, before, index_of)
        return got


def _ref_bytes(name: str) -> int:
    """An ``INODE_REF`` item naming an object in its parent directory."""
    return ITEM_HEADER_BYTES + INODE_REF_BYTES + len(name.encode("utf-8", "surrogateescape"))


def build_layout(tree: ImageTree, numbers: dict[str, int], node_size: int, extent_bytes) -> TreeLayout:
    """The layout of ``tree`` given each path's inode number (``inode_numbers``)."""
    sizes: dict[int, int] = {FIRST_FREE_OBJECTID: ROOT_ITEM_BYTES}
    head = dict(sizes)
    ids: dict[int, int] = {id(tree.root): FIRST_FREE_OBJECTID}
    seen: set[int] = set()
    refs: set[tuple[int, int]] = set()  # (object, parent directory) pairs with an INODE_REF item
    stack: list[tuple[str, ImageDir, int]] = [("", tree.root, FIRST_FREE_OBJECTID)]
    while stack:
        prefix, directory, parent = stack.pop()
        for name, child in directory.children.items():
            path = f"{prefix}/{name}"
            number = numbers[path]
            ids[id(child)] = number
            sizes[parent] += 2 * entry_bytes(name)  # its DIR_ITEM and DIR_INDEX, under the parent
            own = _ref_bytes(name)
            if (number, parent) in refs:
                own -= ITEM_HEADER_BYTES  # another name in the same directory: one INODE_REF item
            refs.add((number, parent))
            if number not in seen:
                seen.add(number)
                own += ITEM_HEADER_BYTES + INODE_ITEM_BYTES
                cls = child.__class__
                if cls is ImageFile:
                    own += extent_bytes(child.size)
                elif cls is ImageSymlink:
                    own += inline_item_bytes(len(child.target))
            sizes[number] = sizes.get(number, 0) + own
            if child.__class__ is ImageDir:
                head[number] = own
                stack.append((path, child, number))
    start, end, offset = {}, {}, 0
    for number in sorted(sizes):
        start[number] = offset
        offset += sizes[number]
        end[number] = offset
    return TreeLayout(ids, start, end, head, offset, node_size - LEAF_HEADER_BYTES)


@dataclass
class LeafChanges:
    """What a container did to the image's items, as offsets in the layout."""

    touched: set[int] = field(default_factory=set)  # offsets of items rewritten in place
    removed: list[tuple[int, int]] = field(default_factory=list)  # byte ranges deleted
    added: dict[int, int] = field(default_factory=dict)  # offset -> bytes inserted there
    appended: int = 0  # bytes of new objects: the highest numbers, after every image object


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


def _identity(node):
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


def container_changes(ns, layout: TreeLayout, touched: set[int], new_object_bytes) -> LeafChanges:
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
            ident = _identity(node) if node is not None else None
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
        ident = _identity(node)
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
    if old.__class__ is ImageDir:
        for child in old.children.values():
            _drop(layout, child, alive, out)
