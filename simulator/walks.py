"""Path walks of a container's view that the namespace's remembered walks do not answer.

``Namespace._walk`` answers most paths with one dictionary probe for the directory part
(``Namespace._dirs``) and one for the name.  What is left lives here: a directory not walked
before (``walk_dirs``: from its deepest remembered ancestor down, remembering each directory
on the way) and any walk with a symbolic link on it (``resolve_links``: relative and absolute
targets, ``..``, loops).  Both count nothing: ``Namespace.resolve`` counts the lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .imagetree import ImageDir
from .nodes import DIR_TYPES, LINK_TYPES, Dir, DirNode, Node

if TYPE_CHECKING:
    from .namespace import Namespace

MAXSYMLINKS = 40  # fs/namei.c: ELOOP after 40 links in one resolution
# Directories remembered per container (``walk_dirs``): a chain of names and a node each,
# about 250 B, so at most ~4 MiB a container, for runs that walk thousands of directories.
# The bench image (100,000 files, 32 layers) has 6,253 directories: at 4,096 entries a
# create or read all over it cleared the map every few thousand directories and walked
# each directory 2.5 times (small-files:files=50000: 15,017 walks of 6,141 directories).
# A container that walks that many directories keeps each one's key in
# ``CostCounts.looked_up`` anyway.
DIR_CACHE_ENTRIES = 16384


class FsError(Exception):
    """The operation fails as Linux would fail it; ``args[0]`` is the errno name."""


class Resolved:
    """Where a path led: the directory chain from the root, the last name and its node."""

    __slots__ = ("names", "parent", "name", "node", "key", "dir_key")

    def __init__(self, names: list[str], parent: DirNode | None, name: str, node: Node | None,
                 key: str | None = None, dir_key: str | None = None):
        self.names, self.parent, self.name, self.node = names, parent, name, node
        # The resolved path and its directory's, as "/a/b" ("" the root), when the walk
        # has them at hand (the path as given, no link on the way): ``note_cold``'s keys,
        # hashed already by the walk's own dictionary probes.
        self.key, self.dir_key = key, dir_key


def walk_dirs(ns: Namespace, dir_path: str) -> tuple[list[str], DirNode, str] | None:
    """The chain, node and key of the directory ``dir_path``, walked from its deepest
    remembered ancestor, every directory on the way remembered too: a run reads files
    all over the image (start-up reads, imports, a build), and their directories share
    their upper levels, so most new directories cost one probe below a known parent.
    None when a symbolic link is on the way; FsError where a component is missing or
    not a directory."""
    dirs = ns._dirs
    head, parts = dir_path, []
    while head:
        head, _, part = head.rpartition("/")
        parts.append(part)
        if head and head in dirs:
            break
    names, d, _ = dirs[head] if head else ([], ns.root, "")
    if len(dirs) + len(parts) > DIR_CACHE_ENTRIES:
        dirs.clear()
    while parts:
        part = parts.pop()
        if d.__class__ is Dir:  # child() inlined: this loop is the simulator's hot path
            own = d.own  # type: ignore[union-attr]
            if part in own:
                node = own[part]
            else:
                base = d.base  # type: ignore[union-attr]
                node = base.children.get(part) if base is not None else None
        else:
            node = d.children.get(part)  # type: ignore[union-attr]
        cls = node.__class__
        if cls is ImageDir or cls is Dir:
            d = node  # type: ignore[assignment]
        elif node is None:
            raise FsError("ENOENT")
        elif cls in LINK_TYPES:
            return None
        else:
            raise FsError("ENOTDIR")
        head = f"{head}/{part}"
        names = names + [part]
        entry = dirs[head] = (names, d, head)
    return entry

def resolve_links(ns: Namespace, path: str, follow: bool) -> Resolved:
    """The general walk: symbolic links (relative, absolute, with ``..``) and loops."""
    todo = path[1:].split("/")
    todo.reverse()
    chain: list[DirNode] = [ns.root]
    names: list[str] = []
    links = 0
    while True:
        name = todo.pop()
        if name == "." or name == "..":  # only from symlink targets
            if name == ".." and len(chain) > 1:
                chain.pop()
                names.pop()
            if not todo:
                node = chain[-1]
                if len(chain) == 1:
                    return Resolved([], None, "", node)
                return Resolved(names[:-1], chain[-2], names[-1], node)
            continue
        d = chain[-1]
        node = ns.child(d, name)
        if node is not None and node.__class__ in LINK_TYPES and (todo or follow):
            links += 1
            if links > MAXSYMLINKS:
                raise FsError("ELOOP")
            if ns.notes_links and not ns._quiet:
                ns.hooks.followed(d, name, node)
            target = node.target  # type: ignore[union-attr]
            if target.startswith("/"):
                chain, names = [ns.root], []
            parts = [p for p in target.split("/") if p]
            if not parts:  # the link points at "/"
                if not todo:
                    return Resolved([], None, "", ns.root)
                continue
            parts.reverse()
            todo.extend(parts)
            continue
        if not todo:
            return Resolved(names, d, name, node)
        if node is None:
            raise FsError("ENOENT")
        if node.__class__ not in DIR_TYPES:
            raise FsError("ENOTDIR")
        chain.append(node)  # type: ignore[arg-type]
        names.append(name)
