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

from itertools import chain, zip_longest
from typing import Callable

import numpy as np

from simulator.errors import BadInput
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.paths import path_problem
from simulator.trace import Op

_MISSING = object()


class TreeIndex:
    """The image's regular files and directories, sorted by path, with subtree sizes."""

    def __init__(self, tree: ImageTree):
        self.tree = tree
        files: list[tuple[str, ImageFile]] = []
        dirs: list[tuple[str, ImageDir]] = []
        for path, node in tree.walk():
            cls = node.__class__
            if cls is ImageFile:
                files.append((path, node))  # type: ignore[arg-type]
            elif cls is ImageDir:
                dirs.append((path, node))  # type: ignore[arg-type]
        files.sort(key=lambda item: item[0])
        dirs.sort(key=lambda item: item[0])
        self.files = files
        self.dirs = dirs
        self._subtree: dict[str, int] | None = None

    def distinct_files(self) -> list[tuple[str, ImageFile]]:
        """One (first-sorted) name per inode: hard links counted once, as bytes are."""
        seen: set[int] = set()
        out = []
        for path, node in self.files:
            if id(node) not in seen:
                seen.add(id(node))
                out.append((path, node))
        return out

    def subtree_sizes(self) -> dict[str, int]:
        """Directory path -> number of entries below it (all depths)."""
        if self._subtree is None:
            sizes: dict[str, int] = {}
            for path, d in reversed(self.dirs):  # children sort after their parent
                base = path
                sizes[path] = sum(1 + (sizes.get(f"{base}/{n}", 0) if c.__class__ is ImageDir else 0)
                                  for n, c in d.children.items())
            self._subtree = sizes
        return self._subtree

    def pick_subtrees(self, rng: np.random.Generator, target: int, count: int = 1) -> list[str]:
        """Up to ``count`` disjoint directories whose subtrees hold between a quarter and four
        times ``target`` entries (else the closest ones), chosen at random in sorted order."""
        sizes = self.subtree_sizes()
        lo, hi = target / 4, target * 4
        candidates = [p for p, _ in self.dirs if lo <= sizes[p] <= hi]
        if len(candidates) < count:
            ranked = sorted((abs(sizes[p] - target), p) for p, _ in self.dirs if sizes[p] > 0)
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


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def exists(tree: ImageTree, path: str) -> bool:
    """Whether the image holds ``path`` (no symlinks followed)."""
    parent, _, name = path.rpartition("/")
    d = tree.resolve_dir(parent or "/")
    return d is not None and d.children.get(name, _MISSING) is not _MISSING


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
