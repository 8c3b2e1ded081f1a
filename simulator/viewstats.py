"""Totals over a container's whole view without walking the whole image.

A full-copy driver (vfs) stores every file of the view, and a naive diff stats every entry
of both trees; both need totals of the *view*, which is the image minus what the container
hid plus what it owns.  Walking only the container's private directories, and taking image
subtrees' totals from a cache filled once per image, keeps this proportional to the
container's changes (the performance issue's "a container costs memory in proportion to
what it changes").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .imagetree import ImageDir, ImageFile, ImageSymlink
from .namespace import Namespace
from .nodes import Dir, FileInode, Node, Symlink
from .units import ceil_div


@dataclass
class ViewTotals:
    """Distinct regular files (hard links once), their bytes and blocks, dirs, symlinks."""

    files: int = 0
    file_bytes: int = 0
    file_blocks: int = 0
    dirs: int = 0
    symlinks: int = 0
    shared_links: set = field(default_factory=set)  # inodes with nlink > 1, deduplicated

    def add(self, other: ViewTotals) -> None:
        self.files += other.files
        self.file_bytes += other.file_bytes
        self.file_blocks += other.file_blocks
        self.dirs += other.dirs
        self.symlinks += other.symlinks
        self.shared_links |= other.shared_links

    def entries(self) -> int:
        return self.files + len(self.shared_links) + self.dirs + self.symlinks


class ImageTotals:
    """Per-``ImageDir`` subtree totals at one block size, computed on first use."""

    def __init__(self, block: int):
        self.block = block
        self._cache: dict[int, ViewTotals] = {}

    def file(self, f: ImageFile, into: ViewTotals) -> None:
        if f.nlink > 1:
            into.shared_links.add(f)
        else:
            into.files += 1
            into.file_bytes += f.size
            into.file_blocks += ceil_div(f.size, self.block)

    def subtree(self, d: ImageDir) -> ViewTotals:
        """Totals of everything below ``d`` (not ``d`` itself)."""
        cached = self._cache.get(id(d))
        if cached is not None:
            return cached
        out = ViewTotals()
        for child in d.children.values():
            self.node(child, out)
        self._cache[id(d)] = out
        return out

    def node(self, node: ImageDir | ImageFile | ImageSymlink, into: ViewTotals) -> None:
        if isinstance(node, ImageFile):
            self.file(node, into)
        elif isinstance(node, ImageDir):
            into.dirs += 1
            into.add(self.subtree(node))
        else:
            into.symlinks += 1

    def resolve_links(self, totals: ViewTotals) -> ViewTotals:
        """Fold the deduplicated hard-linked inodes into the counts."""
        out = ViewTotals(totals.files, totals.file_bytes, totals.file_blocks, totals.dirs, totals.symlinks)
        for f in totals.shared_links:
            size = f.size
            out.files += 1
            out.file_bytes += size
            out.file_blocks += ceil_div(size, self.block)
        return out


def walk_private(ns: Namespace) -> Iterator[tuple[str, Dir, str, Node | None]]:
    """``(path, parent, name, node)`` for every name a container's private dirs own."""
    todo: list[tuple[str, Dir]] = [("", ns.root)]
    while todo:
        prefix, d = todo.pop()
        for name, node in d.own.items():
            path = f"{prefix}/{name}"
            yield path, d, name, node
            if node.__class__ is Dir:
                todo.append((path, node))  # type: ignore[arg-type]


def private_inodes(ns: Namespace) -> dict[FileInode, str]:
    """Distinct private regular files of a container, with one path of each."""
    out: dict[FileInode, str] = {}
    for path, _parent, _name, node in walk_private(ns):
        if node.__class__ is FileInode and node not in out:
            out[node] = path  # type: ignore[index]
    return out


def view_totals(ns: Namespace, totals: ImageTotals, data_blocks) -> ViewTotals:
    """Totals of the container's whole view; ``data_blocks(inode)`` counts a private file."""
    out = ViewTotals()
    seen: set[int] = set()
    todo: list[Dir] = [ns.root]
    while todo:
        d = todo.pop()
        own = d.own
        if d.base is not None:
            for name, child in d.base.children.items():
                if name not in own:
                    if child.__class__ is ImageFile and ns.promoted and child in ns.promoted:
                        child = ns.promoted[child]  # type: ignore[index]
                    else:
                        totals.node(child, out)
                        continue
                    _private_node(child, out, seen, data_blocks)
        for node in own.values():
            if node is None:
                continue
            if node.__class__ is Dir:
                out.dirs += 1
                todo.append(node)  # type: ignore[arg-type]
            else:
                _private_node(node, out, seen, data_blocks)
    # The cached image subtrees know nothing of this container: a hard-linked image file it
    # made private (through another name) is its private inode now, counted once.
    for f in [f for f in out.shared_links if f in ns.promoted]:
        out.shared_links.discard(f)
        _private_node(ns.promoted[f], out, seen, data_blocks)
    return totals.resolve_links(out)


def _private_node(node: Node, out: ViewTotals, seen: set[int], data_blocks) -> None:
    if node.__class__ is FileInode:
        if id(node) in seen:
            return
        seen.add(id(node))
        out.files += 1
        out.file_bytes += node.size  # type: ignore[union-attr]
        out.file_blocks += data_blocks(node)
    elif node.__class__ in (Symlink, ImageSymlink):
        out.symlinks += 1
    elif node.__class__ is ImageDir:
        out.dirs += 1
