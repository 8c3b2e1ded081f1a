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

Measured here (kernel 6.18, ``btrfs inspect-internal dump-tree``): the inode numbers and
every object's leaf bytes this module computes equal the real tree's, object by object
(``tests/test_btrfs_tree.py``); the top layer of a 4-layer, 300-file image had 9 leaves in
one run and 10 in the next, 83-99% full; ``rm -rf`` of one of its trees CoW'd 8 of them
(the deleted objects' numbers were spread over all four layers), where placing objects in
walk order had said 4.  Leaves are assumed evenly filled, at the mean fill measured: the
splits that fill them depend on when the kernel flushed its delayed items, which the model
does not see.  What a container CoWs in this layout: ``drivers.btrfs_cow``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import posixpath
from dataclasses import dataclass, field

import google_crc32c

from simulator.image import Image
from simulator.imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree

from .btrfs_layout import (DIR_ITEM_BYTES, INODE_ITEM_BYTES, INODE_REF_BYTES, ITEM_HEADER_BYTES, LEAF_HEADER_BYTES,
                           ROOT_ITEM_BYTES, inline_item_bytes)

FIRST_FREE_OBJECTID = 256  # BTRFS_FIRST_FREE_OBJECTID: a subvolume's root directory
NAME_HASH_SEED = 0xFFFFFFFE  # btrfs_name_hash(): crc32c((u32)~1, name), no final inversion
# How full a laid image's leaves are, on average: measured here (kernel 6.18, dump-tree of
# the top layer) on 10 image trees of 2 to 177 leaves, laid by simulator.real.btrfs:
# 0.75-0.83, mean 0.79 (splits halve a leaf; later pushes refill it only partly).
LAID_LEAF_FILL = 0.79


def name_hash(name: str) -> int:
    """``btrfs_name_hash``: the offset of a ``DIR_ITEM`` key.  ``google_crc32c.extend``
    continues a standard (inverted) CRC-32C; the kernel's raw register is its inverse,
    continued from the inverse seed."""
    return google_crc32c.extend(NAME_HASH_SEED ^ 0xFFFFFFFF, name.encode("utf-8", "surrogateescape")) ^ 0xFFFFFFFF


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

    @functools.cached_property
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


def tree_layout(tree: ImageTree, node_size: int, sector: int, max_inline: int, extent_bytes) -> TreeLayout:
    """The layout of ``tree`` for these options, once per merged tree and options (every
    container and run on it shares it); its inode numbers once per image."""
    def build(tree: ImageTree) -> TreeLayout:
        layers = tree.image.layers
        key = ("btrfs-inode-numbers", tuple(id(layer) for layer in layers))
        numbers = layers[-1].derived(key, lambda _top: inode_numbers(tree.image)) if layers else {"/": 256}
        return build_layout(tree, numbers, node_size, extent_bytes)

    return tree.derived(("btrfs-layout", node_size, sector, max_inline), build)


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
