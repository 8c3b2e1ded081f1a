"""What every workload generator shares: a sorted index of the image, subtree picking, and
spreading work over containers.

Generators choose real image paths, and choose them reproducibly: the index lists paths in
sorted order (``ImageTree.walk`` follows dict order, which depends on how layers were
applied), so a seed picks the same paths on every machine and Python version.

Containers: every container starts from the same image, so a workload with ``containers=N``
is N instances of the same program, each in its own container (N replicas starting, logging,
installing), each drawing its own random choices; their operations are interleaved
round-robin, as concurrent processes would be.
"""

from __future__ import annotations

from bisect import bisect_left
from contextlib import contextmanager
from itertools import chain, zip_longest
from typing import Callable, Iterator, Sequence

import numpy as np

from simulator.errors import BadInput
from simulator.imagetree import ImageDir, ImageTree
from simulator.paths import path_problem
from simulator.replicas import Replicas
from simulator.trace import Op
from simulator.treelisting import DIR, FILE, listing

_MISSING = object()


class TreeIndex:
    """The image's regular files and directories, sorted by path, with subtree sizes.

    Paths and sizes only, read from the tree's columns (``simulator.treelisting``): node
    objects made here would stay attached to the image tree after the builder returns
    (issue 7's bytes per file entry).  ``files``/``sizes`` and ``dirs`` are parallel lists."""

    def __init__(self, tree: ImageTree):
        self.tree = tree
        entries = listing(tree)
        paths = entries.paths
        self.files, file_at = _sorted_paths(paths, np.flatnonzero(entries.kind == FILE))
        self.sizes: list[int] = entries.size[file_at].tolist()
        self._inodes = entries.inode[file_at]
        self.dirs, dir_at = _sorted_paths(paths, np.flatnonzero(entries.kind == DIR))
        self._dir_subtree = entries.subtree_sizes()[dir_at]
        self._subtree: dict[str, int] | None = None

    def distinct_files(self) -> list[tuple[str, int]]:
        """(path, size) of one (first-sorted) name per inode: hard links counted once, as
        bytes are."""
        _, first = np.unique(self._inodes, return_index=True)
        files, sizes = self.files, self.sizes
        return [(files[i], sizes[i]) for i in np.sort(first).tolist()]

    def subtree_sizes(self) -> dict[str, int]:
        """Directory path -> number of entries below it (all depths)."""
        if self._subtree is None:
            self._subtree = dict(zip(self.dirs, self._dir_subtree.tolist()))
        return self._subtree

    def pick_subtrees(self, rng: np.random.Generator, target: int, count: int = 1) -> list[str]:
        """Up to ``count`` disjoint directories whose subtrees hold between a quarter and four
        times ``target`` entries (else the closest ones), chosen at random in sorted order."""
        sizes = self.subtree_sizes()
        lo, hi = target / 4, target * 4
        candidates = [p for p in self.dirs if lo <= sizes[p] <= hi]
        if len(candidates) < count:
            ranked = sorted((abs(sizes[p] - target), p) for p in self.dirs if sizes[p] > 0)
            extra = [p for _, p in ranked if p not in set(candidates)]
            candidates += extra[: count - len(candidates)]
            candidates.sort()
        chosen: list[str] = []
        for i in rng.permutation(len(candidates)).tolist():
            path = candidates[i]
            if any(_overlaps(path, c) for c in chosen):
                continue
            chosen.append(path)
            if len(chosen) == count:
                break
        return sorted(chosen)

    def require_dir(self, path: str, where: str) -> ImageDir:
        problem = path_problem(path)
        if problem:
            raise BadInput(f"{where}: parameter 'path': {problem}")
        d = self.tree.resolve_dir(path)
        if d is None or path == "/":
            raise BadInput(f"{where}: {path!r} is not a directory of the image (the root is not allowed)")
        return d


def below(paths: list[str], root: str) -> slice:
    """Where the sorted ``paths`` hold the ones strictly below the directory ``root``: one
    contiguous range, found by bisection (``/a/`` and ``/a0`` bound it: ``0`` follows ``/``)."""
    prefix = root.rstrip("/") + "/"
    return slice(bisect_left(paths, prefix), bisect_left(paths, prefix[:-1] + chr(ord("/") + 1)))


_SHARED: dict[int, TreeIndex] = {}  # id(tree) -> its index, while ``sharing_index`` holds it


@contextmanager
def sharing_index(tree: ImageTree) -> Iterator[None]:
    """Every builder called inside gets one ``TreeIndex`` of ``tree`` (``tree_index``): a
    composite workload's components each want one (``mixed`` builds seven: 0.9 of its 1.6 s
    on a 100,000-file image went to indexing the same tree seven times).  Dropped on exit,
    so nothing of it stays on the image (issue 7's bytes per file entry)."""
    key = id(tree)
    if key in _SHARED:
        yield
        return
    _SHARED[key] = TreeIndex(tree)
    try:
        yield
    finally:
        del _SHARED[key]


def tree_index(tree: ImageTree) -> TreeIndex:
    """The shared index of ``tree`` inside ``sharing_index``, else a new one.  Builders only
    read an index (its lazily computed subtree sizes aside), so sharing one changes nothing
    they choose."""
    return _SHARED.get(id(tree)) or TreeIndex(tree)


def _sorted_paths(paths: list[str], at: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The paths of entries ``at``, sorted, and the entries in that order."""
    chosen = [paths[i] for i in at.tolist()]
    order = sorted(range(len(chosen)), key=chosen.__getitem__)
    return [chosen[i] for i in order], at[np.array(order, dtype=np.int64)]


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def exists(tree: ImageTree, path: str) -> bool:
    """Whether the image holds ``path`` (no symlinks followed)."""
    parent, _, name = path.rpartition("/")
    d = tree.resolve_dir(parent or "/")
    return d is not None and d.children.get(name, _MISSING) is not _MISSING


def replicated(containers: int, ops: list[Op]) -> Sequence[Op]:
    """``ops`` (container 0's) run by every container, interleaved round-robin as
    ``per_container`` interleaves: replicas of one program that draws nothing of its own.
    One copy of the operations whatever the count (``simulator.replicas``)."""
    return ops if containers == 1 else Replicas(ops, containers)


def per_container(containers: int, make: Callable[[int], list[Op]]) -> list[Op]:
    """``make(c)`` for every container, interleaved round-robin."""
    streams = [make(c) for c in range(containers)]
    if len(streams) == 1:
        return streams[0]
    return [op for op in chain.from_iterable(zip_longest(*streams)) if op is not None]


def interleave(rng: np.random.Generator, streams: list[list[Op]]) -> list[Op]:
    """A random merge of ``streams`` that keeps each stream's own order."""
    labels = np.repeat(np.arange(len(streams)), [len(s) for s in streams])
    order = rng.permutation(labels).tolist()
    cursors = [0] * len(streams)
    out = []
    for s in order:
        out.append(streams[s][cursors[s]])
        cursors[s] += 1
    return out


def sample(rng: np.random.Generator, items: list, count: int) -> list:
    """``count`` distinct items (all when fewer), in their original (sorted) order."""
    if count >= len(items):
        return list(items)
    picked = np.sort(rng.choice(len(items), size=count, replace=False))
    return [items[i] for i in picked.tolist()]
