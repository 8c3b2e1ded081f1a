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
switches.  A directory whose children were opened already (and every directory a
``simulator.treeextend`` extension made) is listed from its ``children`` dict, whose objects
exist; one never opened, from its store's rows, and stays closed.

Memory once a builder returns (``bench_image_memory``, 100,000 files): tracemalloc finds
under 1 B a file kept, but RSS keeps ~140 B a file more than at rest: the builder's
transient path strings filled fresh pymalloc arenas, and the few objects made meanwhile
that live on (directories a builder opened, ``exists`` look-ups) pin some of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .imagetree import ImageDir, ImageFile
from .treestore import DIR, FILE, SYMLINK, TreeStore, _Lazy, loaded

if TYPE_CHECKING:
    from .imagetree import ImageNode, ImageTree

__all__ = ["DIR", "FILE", "SYMLINK", "Listing", "link_names", "listing"]


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
    """The listing of ``tree`` (see the module docstring).  Directories whose children were
    never opened are read from their store's rows; opened ones (and a tree extension's own)
    from their ``children`` dicts, whose objects exist already."""
    paths: list[str] = []
    parents: list[int] = []
    chunks: list[tuple] = []  # per directory listed: (store, first row, count) or its objects' columns
    stack: list[tuple[str, ImageDir | None, TreeStore | None, int, int]] = [("", tree.root, None, 0, -1)]
    while stack:
        base, d, store, row, index = stack.pop()
        prefix = base + "/"
        if d is not None:
            children = d.children
            if children.__class__ is _Lazy and children.value is None:  # type: ignore[attr-defined]
                store, row = children.store, children.row  # type: ignore[attr-defined]
            else:
                _list_objects(loaded(children), prefix, index, paths, parents, chunks, stack)
                continue
        n = int(store.count[row])  # type: ignore[union-attr]
        if not n:
            continue
        a = int(store.first[row])  # type: ignore[union-attr]
        at = len(paths)
        names = [prefix + name for name in store.names(a, a + n)]  # type: ignore[union-attr]
        paths += names
        parents += [index] * n
        chunks.append((store, a, n))
        for j in np.flatnonzero(store.kind[a:a + n] == DIR).tolist():  # type: ignore[union-attr]
            stack.append((names[j], None, store, a + j, at + j))
    return Listing(paths, *_columns(chunks), np.array(parents, dtype=np.int64))


def _list_objects(children: dict[str, ImageNode], prefix: str, index: int, paths: list[str], parents: list[int],
                  chunks: list[tuple], stack: list) -> None:
    kinds, sizes, inodes, nlinks = [], [], [], []
    for name, child in children.items():
        path = prefix + name
        cls = child.__class__
        if cls is ImageFile:
            kinds.append(FILE)
            sizes.append(child.size)  # type: ignore[union-attr]
            inodes.append(child.ino)  # type: ignore[union-attr]
            nlinks.append(child.nlink)  # type: ignore[union-attr]
        else:
            kinds.append(DIR if cls is ImageDir else SYMLINK)
            sizes.append(0)
            inodes.append(0)
            nlinks.append(0)
            if cls is ImageDir:
                stack.append((path, child, None, 0, len(paths)))
        paths.append(path)
        parents.append(index)
    chunks.append((kinds, sizes, inodes, nlinks))


def _columns(chunks: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """kind, size, inode, nlink of the listed directories' children, in listing order."""
    stores = {id(c[0]): c[0] for c in chunks if len(c) == 3}
    if len(stores) == 1 and all(len(c) == 3 for c in chunks):  # one store, nothing opened: one gather
        store = next(iter(stores.values()))
        starts = np.array([c[1] for c in chunks], dtype=np.int64)
        lens = np.array([c[2] for c in chunks], dtype=np.int64)
        rows = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()), dtype=np.int64)
        return store.kind[rows], store.size[rows], store.ino[rows].astype(np.int64), store.nlink[rows].astype(np.int64)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for c in chunks:
        if len(c) == 3:
            store, a, n = c
            cols = (store.kind[a:a + n], store.size[a:a + n], store.ino[a:a + n], store.nlink[a:a + n])
        else:
            cols = c
        for part, col in zip(parts, cols):
            part.append(np.asarray(col, dtype=np.int64))
    if not chunks:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))  # type: ignore[return-value]
    kind, size, inode, nlink = (np.concatenate(part) for part in parts)
    return kind.astype(np.uint8), size, inode, nlink


def link_names(tree: ImageTree) -> dict[ImageFile, list[str]]:
    """Hard-linked inodes' names in walk order (``ImageTree.link_names``), opening only the
    directories that hold such a name."""
    entries = listing(tree)
    out: dict[ImageFile, list[str]] = {}
    for i in np.flatnonzero((entries.kind == FILE) & (entries.nlink > 1)).tolist():
        path = entries.paths[i]
        parent, _, name = path.rpartition("/")
        node = tree.resolve_dir(parent or "/").children[name]  # type: ignore[union-attr]
        out.setdefault(node, []).append(path)  # type: ignore[arg-type]
    return out


def walk_opened(tree: ImageTree):
    """``tree.walk()`` without entering directories whose children were never opened (their
    entries are all a store's, so older than any layer an extension added on top): for
    readers that want only what later layers made, and must not open the whole image."""
    stack = [("", tree.root)]
    while stack:
        base, d = stack.pop()
        children = d.children
        if children.__class__ is _Lazy:
            if children.value is None:  # type: ignore[attr-defined]
                continue
            children = children.value  # type: ignore[attr-defined]
        for name, child in children.items():
            path = f"{base}/{name}"
            yield path, child
            if child.__class__ is ImageDir:
                stack.append((path, child))
