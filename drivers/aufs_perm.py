"""aufs's branch permission checks on lookups (``aufs_permission``), remembered per path.

``aufs_permission`` on a directory checks every branch holding it unless ``dirperm1`` (and
returns -ECHILD to rcu-walk, so every lookup pays it); the aufs driver charges, per lookup,
the checks beyond one per directory over the chain from the root to the parent directory
(``tally.perm_checks``; ``drivers/aufs.py`` says where this comes from).  Walking that chain
at every lookup costs more than the rest of the lookup, so ``PermWalks``, a mixin of
``AufsMount``, remembers each path's count, and forgets exactly the walks a change can move:
kept apart from the driver's copy-up and lookup rules so that each module stays small.
"""

from __future__ import annotations

from typing import Any

from simulator.imagetree import ImageDir, ImageTree
from simulator.nodes import Dir

# Namespace changes after which every directory walk leads where it did: a new file, link
# or symlink takes a name no walk went through, attributes change no branch; and a file's or
# symlink's name removed or moved leaves every directory where it was (no directory appears
# either: rename(2) of a non-directory over a directory fails).
_WALKS_KEPT = frozenset({"create", "link", "symlink", "chmod", "chown", "utime", "setxattr"})
_WALKS_KEPT_FOR_FILES = frozenset({"unlink", "rename"})


def branch_span(d) -> int:
    """Branches holding directory ``d``: its lower stack, plus the rw branch if private."""
    if d.__class__ is ImageDir:
        return len(d.stack)
    base = d.base
    return 1 + (len(base.stack) if base is not None and not d.opaque else 0)


class PermWalks:
    """The remembered permission walks of one aufs container (see the module docstring)."""

    ns: Any  # the container's Namespace (BaseMount sets it)

    def _init_perm_walks(self, tree: ImageTree) -> None:
        self._perm_extra: dict[str, tuple[int, object]] = {}  # ``_perm_at``'s answers, per path
        self._perm_kids: dict[str, list[str]] = {}  # remembered paths by their parent's path
        self._image_perm_extra: dict[str, tuple[int, object]] = tree.derived("aufs-perm-walks", lambda _tree: {})

    def _forget_walks(self) -> None:
        self._perm_extra.clear()
        self._perm_kids.clear()

    def _walks_after(self, op: str, node) -> None:
        """A namespace change (``metadata``): forget every walk unless it moves none."""
        if op not in _WALKS_KEPT and not (op in _WALKS_KEPT_FOR_FILES and node.__class__ is not Dir
                                          and node.__class__ is not ImageDir):
            self._forget_walks()

    def _walks_after_copy_up(self, node) -> None:
        """A directory made private gains the rw branch: the walks through it (its image
        path and those below) change, no other.  Dropping only those keeps the rest: a
        create all over the image copies up a directory every few operations."""
        if node.__class__ is Dir and node.base is not None:
            cache, kids = self._perm_extra, self._perm_kids
            todo = [node.base.path]
            while todo:
                path = todo.pop()
                cache.pop(path, None)
                todo.extend(kids.pop(path, ()))
        else:
            self._forget_walks()

    def _perm_walk(self, parent) -> int:
        """Branch permission checks beyond one per directory, root to ``parent``.

        Remembered per path walked (an import storm looks up thousands of names in a dozen
        directories; start-up reads walk thousands of directories below a few hundred), each
        path from its parent's, until a directory on some walk may change: one made private
        (``_walks_after_copy_up``) or a name removed, renamed or made a directory
        (``_walks_after``); a file, link or attribute change leaves every walk as it was."""
        image_dir = parent if parent.__class__ is ImageDir else parent.base
        if image_dir is None:
            return branch_span(self.ns.root) - 1 + branch_span(parent) - 1
        return self._perm_at(image_dir.path)[0]

    def _perm_at(self, path: str) -> tuple[int, object]:
        """(checks beyond one per directory walking root to ``path``, the directory the walk
        reaches there, None where a component on the way is not a directory): from the
        deepest remembered ancestor down, each directory on the way remembered.

        A container with no directory of its own walks the image's directories
        (``Namespace.shares_image_walks``): its answers are then those of every such
        container on the tree, remembered once on the tree (``_image_perm_extra``, from
        ``ImageTree.derived``: no change ever invalidates them, the tree does not change) and
        no memory per container.  Its root entry holds the image's root, which leads to the
        same directories as any such container's root, and the container root's count (the
        rw branch included)."""
        shared = self.ns.shares_image_walks()
        cache = self._image_perm_extra if shared else self._perm_extra
        known = cache.get(path)
        if known is not None:
            return known
        head, todo = path, []
        while head != "/" and head not in cache:
            todo.append(head)
            head = head.rpartition("/")[0] or "/"
        known = cache.get(head)
        if known is None:  # the root
            root = self.ns.root
            known = cache["/"] = (branch_span(root) - 1, self.ns.tree.root if shared else root)
        extra, d = known
        kids = self._perm_kids
        for where in reversed(todo):
            parent, _, name = where.rpartition("/")
            d = self.ns.child(d, name) if d is not None else None
            if d.__class__ is Dir or d.__class__ is ImageDir:
                extra += branch_span(d) - 1
            else:
                d = None
            cache[where] = (extra, d)
            if not shared:  # (the tree's entries never go: only the container's own are dropped)
                kids.setdefault(parent or "/", []).append(where)
        return extra, d
