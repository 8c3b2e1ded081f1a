"""Every visible name of a merged image, as columns: what whole-tree readers need, no nodes.

Why: the workload builders choose among *all* of an image's files (``workloads.common.
TreeIndex``), and ``ImageTree.walk`` hands them node objects.  On a columnar tree
(``simulator.treestore``) a walk makes every directory's node objects and leaves them
attached to their directories for good: 529 B a file entry at 100,000 files once walked,
against 282 B at rest (``layerbench bench``).  Builders need a path, a kind, a size and
which names share an inode, all of which the store's columns already hold; ``listing``
reads them there, so the only memory a builder adds is its own and goes when it returns.

Order: ``walk``'s, exactly (the same directory stack, children in ``children`` order), so
that a reader that depends on walk order (hard links' ``link_names``) is unchanged when it
switches.  A tree without a store (a ``simulator.treeextend`` extension: objects it made
plus its base's) is listed by walking its objects, which exist already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .imagetree import ImageDir, ImageFile
from .treestore import DIR, FILE, SYMLINK

if TYPE_CHECKING:
    from .imagetree import ImageNode, ImageTree

__all__ = ["DIR", "FILE", "SYMLINK", "Listing", "listing"]


@dataclass(frozen=True)
class Listing:
    """Entry ``i`` of a tree's ``walk``: its path and columns (index ``i`` in each)."""

    paths: list[str]
    kind: np.ndarray  # FILE, DIR or SYMLINK (simulator.treestore)
    size: np.ndarray  # int64; 0 for directories and symbolic links
    inode: np.ndarray  # int64; equal for two names exactly when they name one inode
    nlink: np.ndarray  # int64; a file's names in the merged view (0 for others)
    parent: np.ndarray  # int64; index of the directory holding the entry, -1 for the root

    def __len__(self) -> int:
        return len(self.paths)

    def subtree_sizes(self) -> np.ndarray:
        """Per entry, the number of entries below it (all depths; 0 for non-directories).
        Walk order lists a directory before its children, so one pass back up the list
        adds every directory's total into its parent's."""
        parent = self.parent
        has_parent = parent >= 0
        sizes = np.bincount(parent[has_parent], minlength=len(self.paths)).astype(np.int64)
        dirs = np.flatnonzero(self.kind == DIR)
        up = parent[dirs].tolist()
        total = sizes.tolist()
        for i, p in zip(reversed(dirs.tolist()), reversed(up)):
            if p >= 0:
                total[p] += total[i]
        return np.array(total, dtype=np.int64)


def listing(tree: ImageTree) -> Listing:
    """The listing of ``tree`` (see the module docstring)."""
    store = tree.store
    if store is None:
        return _from_objects(tree)
    count, first, kind = store.count, store.first, store.kind
    paths: list[str] = []
    starts: list[int] = []
    lengths: list[int] = []
    parents: list[int] = []
    stack = [("", 0, -1)]  # (path, row, listing index) of directories to list, as walk's stack
    while stack:
        base, row, index = stack.pop()
        n = int(count[row])
        if not n:
            continue
        a = int(first[row])
        at = len(paths)
        prefix = base + "/"
        names = [prefix + name for name in store.names(a, a + n)]
        paths += names
        starts.append(a)
        lengths.append(n)
        parents.append(index)
        for j in np.flatnonzero(kind[a:a + n] == DIR).tolist():
            stack.append((names[j], a + j, at + j))
    lens = np.array(lengths, dtype=np.int64)
    offsets = np.cumsum(lens) - lens
    rows = np.repeat(np.array(starts, dtype=np.int64) - offsets, lens) + np.arange(len(paths), dtype=np.int64)
    return Listing(paths, kind[rows], store.size[rows], store.ino[rows].astype(np.int64),
                   store.nlink[rows].astype(np.int64), np.repeat(np.array(parents, dtype=np.int64), lens))


def _from_objects(tree: ImageTree) -> Listing:
    """``walk``'s own loop, also noting each entry's parent."""
    paths: list[str] = []
    nodes: list[ImageNode] = []
    parents: list[int] = []
    stack: list[tuple[str, ImageDir, int]] = [("", tree.root, -1)]
    while stack:
        base, d, index = stack.pop()
        for name, child in d.children.items():
            path = f"{base}/{name}"
            if child.__class__ is ImageDir:
                stack.append((path, child, len(paths)))  # type: ignore[arg-type]
            paths.append(path)
            nodes.append(child)
            parents.append(index)
    kinds = [FILE if n.__class__ is ImageFile else DIR if n.__class__ is ImageDir else SYMLINK for n in nodes]
    files = [n if n.__class__ is ImageFile else None for n in nodes]
    return Listing(paths, np.array(kinds, dtype=np.uint8),
                   np.array([0 if f is None else f.size for f in files], dtype=np.int64),
                   np.array([0 if f is None else id(f) for f in files], dtype=np.int64),
                   np.array([0 if f is None else f.nlink for f in files], dtype=np.int64),
                   np.array(parents, dtype=np.int64))
