"""The merged, read-only view of an image, built once and shared by every container.

Building applies the layers bottom-up with the OCI rules (whiteouts, opaque directories
applied before the layer's own entries, hard links inside a layer share one inode) and, at
the same time, records what overlayfs needs for lookups: for every visible directory its
*stack*, the layers (top first) whose directory of that name is merged into it, and for each
name how many of those layers a cold lookup probes before it stops (SPEC section 5).

Nodes are plain slotted objects; an ``ImageFile`` object *is* the inode, so hard links are
two names for one object.  Nothing here changes after ``build`` returns.

Layout (issue 7: at most 200 B of RAM a file entry for the image and its tree together): the
builder below makes the object tree, which keeps the OCI rules in one readable place, and
``ImageTree.build`` then keeps it as numpy columns (``simulator.treestore``), making node
objects again only for the directories a run opens; readers still see the same objects and
dicts (``d.children.get(name)`` is a plain dict lookup once the directory is open).  A tree
made by ``simulator.treeextend`` shares its base's columns and holds only what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import BadInput
from .image import DEFAULT_DIR_MODE, Image
from .paths import components
from .units import PAGE_SIZE, ceil_div

# What a layer holds at a path, as a lookup sees it (REAL_KERNEL.md section 1, overlayfs.rst).
DIR, OPAQUE, NONDIR, WHITEOUT = "dir", "opaque", "nondir", "whiteout"


class ImageFile:
    """A regular file's inode in the image; hard links share the object."""

    __slots__ = ("size", "mode", "uid", "gid", "layer", "digest", "nlink", "ino")

    def __init__(self, size: int, mode: int, uid: int, gid: int, layer: int, digest: str | None, ino: int):
        self.size, self.mode, self.uid, self.gid = size, mode, uid, gid
        self.layer, self.digest, self.nlink, self.ino = layer, digest, 0, ino


class ImageSymlink:
    __slots__ = ("target", "mode", "uid", "gid", "layer")

    def __init__(self, target: str, uid: int, gid: int, layer: int):
        self.target, self.mode, self.uid, self.gid, self.layer = target, 0o777, uid, gid, layer


class ImageDir:
    """A merged directory: its visible children, its layer stack and lookup probe counts."""

    __slots__ = ("children", "mode", "uid", "gid", "layer", "stack", "probes", "path")

    def __init__(self, mode: int, uid: int, gid: int, layer: int, path: str):
        self.children: dict[str, ImageNode] = {}
        self.mode, self.uid, self.gid, self.layer, self.path = mode, uid, gid, layer, path
        self.stack: tuple[int, ...] = ()
        self.probes: dict[str, int] = {}

    def lookup_probes(self, name: str) -> int:
        """Layers a cold overlayfs lookup of ``name`` probes in this merged directory."""
        return self.probes.get(name, len(self.stack))


ImageNode = ImageFile | ImageSymlink | ImageDir


@dataclass(frozen=True, slots=True)
class TreeStats:
    """Totals of a merged view: what a full copy of it (vfs) stores."""

    files: int = 0  # distinct regular-file inodes
    file_bytes: int = 0
    file_pages: int = 0  # 4 KiB blocks the file data fills
    dirs: int = 0
    symlinks: int = 0
    links: int = 0  # names of regular files (>= files when hard links exist)


@dataclass
class ImageTree:
    image: Image
    root: ImageDir
    level_stats: list[TreeStats] = field(default_factory=list)  # the view after layer k
    link_names: dict[ImageFile, list[str]] = field(default_factory=dict)  # hard-linked inodes' names
    next_ino: int = 0  # the inode number a file of one more layer gets (simulator.treeextend)
    store: TreeStore | None = None  # simulator.treestore.TreeStore of a built tree (None: an extension's objects)
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def derived(self, key: Any, compute: Callable[[ImageTree], Any]) -> Any:
        """``compute(self)``, once per ``key``: what a driver derives from the whole merged
        tree (btrfs's key order) serves every run on it, as ``Layer.derived`` does a layer's."""
        memo = self._derived
        if key not in memo:
            memo[key] = compute(self)
        return memo[key]

    def __getstate__(self) -> dict[str, Any]:
        """A pickled tree leaves its memos behind: they key node objects by ``id``, which the
        copy's nodes do not have."""
        return {**self.__dict__, "_derived": {}}

    @property
    def depth(self) -> int:
        return len(self.image.layers)

    @property
    def stats(self) -> TreeStats:
        return self.level_stats[-1]

    @classmethod
    def build(cls, image: Image) -> ImageTree:
        store, stats, links_differ = _Builder(image).build()
        # The builder's object tree is freed now; everything the tree keeps is made from here
        # on, so that it packs into fresh memory (simulator.treestore.TreeStore.copy).
        store = store.copy()
        rows = stats.tolist()
        next_ino = rows.pop()[0]
        tree = ImageTree(image, store.directory(0, "/"), [TreeStats(*row) for row in rows], next_ino=next_ino,
                         store=store)
        if links_differ:  # some visible inode has several names: index them (from the columns)
            tree.link_names = treelisting.link_names(tree)
        return tree

    def resolve_dir(self, path: str) -> ImageDir | None:
        """The visible directory at ``path`` (no symlinks followed), or None."""
        node: ImageNode = self.root
        if path != "/":
            for name in components(path):
                if not isinstance(node, ImageDir):
                    return None
                node = node.children.get(name)  # type: ignore[assignment]
                if node is None:
                    return None
        return node if isinstance(node, ImageDir) else None

    def walk(self, node: ImageDir | None = None, prefix: str = ""):
        """Yield ``(path, node)`` for every visible entry below ``node`` (default: all)."""
        stack = [(prefix, node or self.root)]
        while stack:
            base, d = stack.pop()
            for name, child in d.children.items():
                path = f"{base}/{name}"
                yield path, child
                if isinstance(child, ImageDir):
                    stack.append((path, child))


class _Builder:
    def __init__(self, image: Image):
        self.image = image
        self.root = ImageDir(DEFAULT_DIR_MODE, 0, 0, 0, "/")
        self.layer_kinds: list[dict[str, str]] = []
        self.layer_names: list[dict[str, set[str]]] = []  # per layer: dir path -> names in it
        self.next_ino = 1
        self.files = self.file_bytes = self.file_pages = self.dirs = self.symlinks = self.links = 0

    # -- counters of the merged view (kept incrementally for per-level vfs copies) -----------
    def _count(self, node: ImageNode, sign: int) -> None:
        if isinstance(node, ImageFile):
            self.links += sign
            node.nlink += sign
            if (sign > 0 and node.nlink == 1) or (sign < 0 and node.nlink == 0):
                self.files += sign
                self.file_bytes += sign * node.size
                self.file_pages += sign * ceil_div(node.size, PAGE_SIZE)
        elif isinstance(node, ImageDir):
            self.dirs += sign
            for child in node.children.values():
                self._count(child, sign)
        else:
            self.symlinks += sign

    def _detach(self, parent: ImageDir, name: str) -> None:
        old = parent.children.pop(name, None)
        if old is not None:
            self._count(old, -1)

    def _attach(self, parent: ImageDir, name: str, node: ImageNode) -> None:
        self._detach(parent, name)
        parent.children[name] = node
        self._count(node, +1)

    def _parent_dir(self, path: str, k: int, where: str, create: bool = True) -> ImageDir | None:
        """The directory holding ``path``'s last component, creating missing parents (0755)."""
        node = self.root
        parts = components(path)[:-1]
        walked = ""
        for name in parts:
            walked = f"{walked}/{name}"
            child = node.children.get(name)
            if child is None:
                if not create:
                    return None
                child = ImageDir(DEFAULT_DIR_MODE, 0, 0, k, walked)
                self._attach(node, name, child)
            elif not isinstance(child, ImageDir):
                raise BadInput(f"{where}: {path} lies below {walked}, which is not a directory in the layers below")
            else:
                child = self._enter(node, name, child)
            node = child
        return node

    def _enter(self, parent: ImageDir, name: str, d: ImageDir) -> ImageDir:
        """The existing directory ``d`` as the walk goes through it (a tree extension copies it)."""
        return d

    @staticmethod
    def layer_maps(entries) -> tuple[dict[str, str], dict[str, set[str]]]:
        """One layer's path -> kind map and dir path -> names map (implicit parents included)."""
        kinds: dict[str, str] = {}
        names: dict[str, set[str]] = {}
        for e in entries:
            path = e.path
            kinds[path] = {"dir": OPAQUE if e.opaque else DIR, "whiteout": WHITEOUT}.get(e.type, NONDIR)
            # Register each (parent, name) pair up the path; stop at a parent already
            # known, whose ancestors are registered (O(new components), not O(depth^2)).
            while True:
                cut = path.rfind("/")
                parent = path[:cut] or "/"
                in_parent = names.get(parent)
                if in_parent is None:
                    names[parent] = {path[cut + 1:]}
                else:
                    in_parent.add(path[cut + 1:])
                if parent == "/" or parent in kinds:
                    break
                kinds[parent] = DIR
                path = parent
        return kinds, names

    def build(self) -> tuple[TreeStore, np.ndarray, bool]:
        """The merged view as a ``TreeStore``; a row of counters (``TreeStats``) per layer and
        a last one holding ``next_ino``; whether some inode has several visible names.  Kept
        in arrays: see ``ImageTree.build``."""
        layers = self.image.layers
        stats = np.zeros((len(layers) + 1, 6), dtype=np.int64)
        for k, layer in enumerate(layers):
            where = f"{self.image.source}: layer {k} '{layer.id}'"
            entries = layer.entries
            kinds, names = self.layer_maps(entries)
            self.layer_kinds.append(kinds)
            self.layer_names.append(names)
            # OCI: an opaque directory hides its lower contents before the layer's entries apply.
            for e in entries:
                if e.type == "dir" and e.opaque:
                    parent = self._parent_dir(e.path, k, where, create=False)
                    existing = parent.children.get(e.path.rsplit("/", 1)[1]) if parent else None
                    if isinstance(existing, ImageDir):
                        for child in list(existing.children):
                            self._detach(existing, child)
            layer_inodes: dict[str, ImageFile] = {}
            for e in entries:
                self._apply(e, k, where, layer_inodes)
            stats[k] = (self.files, self.file_bytes, self.file_pages, self.dirs, self.symlinks, self.links)
        stats[-1, 0] = self.next_ino
        self.root.stack = tuple(range(len(layers) - 1, -1, -1))
        self._compute_stacks()
        # The per-layer path -> kind maps served the stacks and probe counts only: the tree
        # does not keep them (they were 30% of its memory: 141 B a file, tracemalloc).
        return compact(self.root), stats, self.links != self.files

    def _apply(self, e, k: int, where: str, layer_inodes: dict[str, ImageFile]) -> None:
        parent = self._parent_dir(e.path, k, where)
        name = e.path.rsplit("/", 1)[1]
        existing = parent.children.get(name)
        if e.type == "whiteout":
            self._detach(parent, name)
        elif e.type == "dir":
            if isinstance(existing, ImageDir):
                existing.mode, existing.uid, existing.gid, existing.layer = e.mode, e.uid, e.gid, k
            else:
                self._attach(parent, name, ImageDir(e.mode, e.uid, e.gid, k, e.path))
        elif e.type == "file":
            inode = ImageFile(e.size, e.mode, e.uid, e.gid, k, e.digest, self.next_ino)
            self.next_ino += 1
            layer_inodes[e.path] = inode
            self._attach(parent, name, inode)
        elif e.type == "symlink":
            self._attach(parent, name, ImageSymlink(e.target, e.uid, e.gid, k))
        else:  # hardlink: OCI tars link only to a file earlier in the same layer
            inode = layer_inodes.get(e.target)
            if inode is None:
                raise BadInput(f"{where}: hardlink {e.path} -> {e.target}: the target must be a regular "
                               f"file listed earlier in the same layer")
            layer_inodes[e.path] = inode
            self._attach(parent, name, inode)

    def _compute_stacks(self) -> None:
        """Each visible dir's layer stack and the probe count of every name in it."""
        todo = [self.root]
        while todo:
            d = todo.pop()
            path = d.path
            names: set[str] = set()
            for k in d.stack:
                names |= self.layer_names[k].get(path, set())
            depth = len(d.stack)
            for name in names:
                child_path = f"/{name}" if path == "/" else f"{path}/{name}"
                probes = 0
                for k in d.stack:
                    probes += 1
                    kind = self.layer_kinds[k].get(child_path)
                    if kind is not None and kind != DIR:
                        break
                else:
                    probes = depth
                if probes != depth:
                    d.probes[name] = probes
            for name, child in d.children.items():
                if isinstance(child, ImageDir):
                    child.stack = self._child_stack(d.stack, child.path)
                    child.layer = child.stack[0]
                    todo.append(child)

    def _child_stack(self, parent_stack: tuple[int, ...], path: str) -> tuple[int, ...]:
        stack: list[int] = []
        for k in parent_stack:
            kind = self.layer_kinds[k].get(path)
            if kind is None:
                continue
            if kind in (NONDIR, WHITEOUT):
                break
            stack.append(k)
            if kind == OPAQUE:
                break
        return tuple(stack)


# Imported here, not inside ``build``: it uses the node classes above, and an import during a
# build would leave its module objects among the builder's garbage (``TreeStore.copy``).
from .treestore import TreeStore, compact  # noqa: E402
from . import treelisting  # noqa: E402  (it imports this module: only the module object here)
