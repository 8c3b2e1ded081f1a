"""One container's file system view, carrying out trace operations with Linux semantics.

The view is the same for every driver: only the hooks (``simulator.hooks``) differ.  Each
operation first resolves and checks everything without changing anything, and raises
``FsError`` (an errno name) where Linux would refuse it, so a refused operation changes
nothing (SPEC section 4).  Only then does it make the parent directories private (as a
copy-up of the ancestors would) and apply the change.

Paths resolve as the kernel resolves them: symbolic links are followed in every intermediate
component, and in the last one unless the operation acts on the link itself.  We run as root,
so permission bits never refuse anything.  What happens to a file's bytes once its name is
resolved (writes, truncates, writebacks, reads) is ``simulator.filedata``'s, a mixin.
"""

from __future__ import annotations

from collections import Counter

from . import hooks as need
from .hooks import StorageHooks
from .imagetree import ImageDir, ImageFile, ImageSymlink, ImageTree
from .costcounts import CostCounts
from .filedata import FileData
from .nodes import DIR_TYPES, FILE_TYPES, LINK_TYPES, Dir, DirNode, FileInode, Node, Symlink
from .walks import FsError, Resolved, resolve_links, walk_dirs

RESOLVE_CACHE_ENTRIES = 128  # paths remembered per container and kind of walk: the hot files (a few KiB)
XATTR_SIZE_MAX = 65536  # linux/limits.h
XATTR_NAMESPACES = ("user.", "trusted.", "security.")
S_ISUID, S_ISGID, S_IXGRP = 0o4000, 0o2000, 0o010


def image_dirs(tree: ImageTree) -> dict[str, tuple[list[str], DirNode, str]]:
    """The directory walks of ``tree`` itself, remembered once for every container on it
    that has no directory of its own (``Namespace._dirs``): a thousand containers starting
    up walk the same image directories, each of which then costs one probe, not a walk, and
    no memory per container.  It is a memo of the immutable tree, as its directory objects
    are (``simulator.treestore``), and like them it outlives the run that filled it."""
    return tree.derived("image-dirs", lambda _tree: {})


class Namespace(FileData):
    """A container's view: its private nodes over a shared ``ImageTree``."""

    def __init__(self, tree: ImageTree, hooks: StorageHooks, depth_hist: Counter | None = None):
        self.tree = tree
        self.hooks = hooks
        self.notes_close: bool = getattr(hooks, "notes_close", True)  # see StorageHooks
        self.notes_entries: bool = getattr(hooks, "notes_entries", False)
        self.notes_links: bool = getattr(hooks, "notes_links", False)
        self.root = Dir.from_image(tree.root)  # the upper root always exists: no copy-up
        self.promoted: dict[ImageFile, FileInode] = {}  # image inode -> its private inode
        self.image_unlinks: Counter = Counter()  # names of hard-linked image files removed
        self.dirty: dict[FileInode, None] = {}  # insertion-ordered set awaiting writeback
        self.depth_hist: Counter = depth_hist if depth_hist is not None else Counter()
        self.lookups = 0
        self.written_bytes = 0
        self.read_bytes = 0
        self.cost = CostCounts(hooks)  # what est_seconds prices beyond the metrics
        self._quiet = False  # exists(): a look that is no lookup
        # Where each path led, by ``follow``: valid until the next change of any name, which
        # every mutation below reports through ``changed()``.  Workloads hit a few paths
        # many times (logs, data files); the walk is skipped, the lookup still counts.
        self._walked: tuple[dict[str, Resolved], dict[str, Resolved]] = ({}, {})
        # Where each directory part of a path led (its chain of names and its node), under
        # the same rule: most paths a workload names sit in a few directories (a log dir, the
        # sys.path entries an import scan probes, the dirs a build fills), so a path never
        # seen before still costs one dictionary probe for its directory and one for its name.
        # While the container has no directory of its own, every directory walk ends where
        # it ends in the image itself: the map is then the tree's, shared by every such
        # container on it (``image_dirs``), until ``own_dirs`` gives the namespace its own.
        self._image_dirs = image_dirs(tree)
        # Each entry keeps its key string too: ``CostCounts.note_cold`` remembers that one
        # object rather than a copy per container.
        self._dirs: dict[str, tuple[list[str], DirNode, str]] = self._image_dirs
        # The last ``peek`` that found something, as (follow, path, Resolved): a write the
        # replay could not queue (``simulator.writeruns``) resolves the path it just peeked.
        self._peeked: tuple[bool, str, Resolved] | None = None

    def changed(self) -> None:
        """A name now leads elsewhere (removed, renamed, made private): forget walks.

        A name that did not exist before and now does (``new_file``, ``new_dir``) needs no
        call: every remembered walk went through names that existed, and none ended at it."""
        self._walked[0].clear()
        self._walked[1].clear()
        if self._dirs is self._image_dirs:
            self._dirs = {}
        else:
            self._dirs.clear()
        self._peeked = None

    def shares_image_walks(self) -> bool:
        """True while the container has no directory of its own: every directory walk then
        ends where it ends in the image (drivers may share what they derive from those
        walks across containers too: ``AufsMount._perm_at``)."""
        return self._dirs is self._image_dirs

    def own_dirs(self) -> None:
        """A directory of the container's own is about to exist (copied up, made): from now
        on its walks may end elsewhere than the image's, so they are remembered apart."""
        if self._dirs is self._image_dirs:
            self._dirs = {}

    def file_changed(self) -> None:
        """A name that is not a directory changed (a file made private, linked, removed; a
        symlink made): forget remembered paths, keep remembered directories (no directory
        walk goes through a file, nor is one through a symlink remembered)."""
        self._walked[0].clear()
        self._walked[1].clear()
        self._peeked = None

    # -- lookup ---------------------------------------------------------------------------
    def child(self, d: DirNode, name: str) -> Node | None:
        if d.__class__ is Dir:
            own = d.own  # type: ignore[union-attr]
            if name in own:
                return own[name]
            base = d.base  # type: ignore[union-attr]
            if base is None:
                return None
            node = base.children.get(name)
        else:
            node = d.children.get(name)  # type: ignore[union-attr]
        if node.__class__ is ImageFile and self.promoted:
            return self.promoted.get(node, node)  # type: ignore[arg-type]
        return node

    def resolve(self, path: str, follow: bool) -> Resolved:
        """Walk ``path``; raise ENOENT/ENOTDIR/ELOOP for a missing or bad intermediate.

        Every call counts one lookup and asks the driver for its depth (``hooks.lookup``:
        the probes depend on the driver's state, and some drivers note the lookup), whether
        or not the walk itself is remembered from an earlier call.
        """
        walked = self._walked[follow]
        r = walked.get(path)
        if r is None:
            peeked = self._peeked
            if peeked is not None and peeked[1] == path and peeked[0] == follow:
                r = peeked[2]  # found just now: a name added since cannot change it
            else:
                r = self._walk(path, follow)
            if not self._quiet:  # a remembered walk was noted when it was made
                self.cost.note_cold(self, r)
                if r.node is not None:  # a missing name is mostly created next, or never asked again
                    if len(walked) >= RESOLVE_CACHE_ENTRIES:
                        walked.clear()
                    walked[path] = r
        self.lookups += 1
        parent = r.parent
        self.depth_hist[self.hooks.lookup(parent, r.name) if parent is not None else 1] += 1
        return r

    def _walk(self, path: str, follow: bool) -> Resolved:
        """The walk of ``resolve``, uncounted.  The common case (no symbolic link on the way)
        takes one dictionary probe for the directory part of the path and one for the last
        name; a directory not walked before costs one probe per component below its deepest
        remembered ancestor (``walks.walk_dirs``).  A link sends it to ``walks.resolve_links``."""
        dir_path, _, name = path.rpartition("/")
        if dir_path:
            known = self._dirs.get(dir_path)
            if known is None:
                known = walk_dirs(self, dir_path)
                if known is None:
                    return resolve_links(self, path, follow)
            names, d, _ = known
        else:
            names, d = [], self.root
        if d.__class__ is Dir:  # child() inlined
            own = d.own  # type: ignore[union-attr]
            if name in own:
                node = own[name]
            else:
                base = d.base  # type: ignore[union-attr]
                node = base.children.get(name) if base is not None else None
        else:
            node = d.children.get(name)  # type: ignore[union-attr]
        if node.__class__ is ImageFile and self.promoted:  # (a name in ``own`` is never an ImageFile)
            node = self.promoted.get(node, node)  # type: ignore[arg-type]
        if follow and node is not None and node.__class__ in LINK_TYPES:
            return resolve_links(self, path, follow)
        return Resolved(names, d, name, node, path, dir_path)

    def peek(self, path: str, follow: bool) -> Resolved | None:
        """Where ``path`` leads now, uncounted (no lookup, no hook); None where it fails."""
        r = self._walked[follow].get(path)
        if r is not None:
            return r
        peeked = self._peeked
        if peeked is not None and peeked[1] == path and peeked[0] == follow:
            return peeked[2]  # peeked just now (a run of writes, then whether it may pass)
        try:
            r = self._walk(path, follow)
        except FsError:
            return None
        if r.node is not None:
            self._peeked = (follow, path, r)
        return r

    def exists(self, path: str, follow: bool = False) -> Node | None:
        """The node at ``path`` or None, without counting a lookup (for tests and views)."""
        saved = (self.lookups, self.depth_hist.copy())
        self._quiet = True
        try:
            return self.resolve(path, follow).node
        except FsError:
            return None
        finally:
            self.lookups, self.depth_hist = saved
            self._quiet = False

    # -- making things private ------------------------------------------------------------
    def private_dir(self, names: list[str]) -> Dir:
        """The private directory at the chain ``names``, copying up every image ancestor."""
        d = self.root
        for i, name in enumerate(names):
            node = self.child(d, name)
            if node.__class__ is ImageDir:
                self.own_dirs()
                node = Dir.from_image(node)  # type: ignore[arg-type]
                d.own[name] = node
                # Only this directory's own remembered walk led to the image node, and it now
                # leads to the private one (the same chain of names): a write all over the
                # image copies up thousands of directories, each walked again soon after.
                # The walks below it still find the same image directories through its
                # ``base``.
                self.file_changed()
                key = "/" + "/".join(names[:i + 1])
                known = self._dirs.get(key)
                if known is not None:
                    self._dirs[key] = (known[0], node, known[2])
                self.hooks.meta_copy_up(node)
            d = node  # type: ignore[assignment]
        return d

    def private_file(self, parent: Dir, name: str, node: Node, why: str) -> FileInode:
        """The private inode behind ``parent/name`` (a file), telling the driver ``why``."""
        if node.__class__ is ImageFile:
            image_file: ImageFile = node  # type: ignore[assignment]
            if image_file.size > self.cost.inline_limit:
                self.cost.image_files_changed += 1
            inode = FileInode.from_image(image_file)
            if image_file.nlink > 1 and self.hooks.keeps_hardlinks:
                self.promoted[image_file] = inode
                inode.nlink = image_file.nlink - self.image_unlinks[image_file]
            else:
                inode.nlink = 1
            parent.own[name] = inode
            self.file_changed()
            node = inode
        elif name not in parent.own:
            # Another image name of an already promoted inode (index=on): the kernel links it
            # up (ovl_link_up) into this directory before the change.
            parent.own[name] = node  # type: ignore[assignment]
            self.file_changed()
        inode = node  # type: ignore[assignment]
        if inode.origin is not None:
            self.hooks.copy_up(inode, why)
        return inode

    def index_copy_up(self, image_file: ImageFile) -> FileInode:
        """The private inode of an image hard link, under no name yet (overlay's index dir)."""
        inode = FileInode.from_image(image_file)
        self.promoted[image_file] = inode
        self.file_changed()
        inode.nlink = image_file.nlink - self.image_unlinks[image_file]
        self.hooks.copy_up(inode, need.NEED_META)  # ovl_copy_up(dentry): flags 0
        return inode

    def private_node(self, r: Resolved, why: str) -> Node:
        """Make the resolved node itself private (attribute changes)."""
        if r.parent is None:
            return self.root
        parent = self.private_dir(r.names)
        node = r.node
        if node.__class__ in FILE_TYPES:
            return self.private_file(parent, r.name, node, why)  # type: ignore[arg-type]
        if node.__class__ is ImageDir:
            return self.private_dir(r.names + [r.name])
        if node.__class__ is ImageSymlink:
            base = parent.base  # the image directory the link was found in (moved or not)
            link = Symlink(node.target, node.uid, node.gid,  # type: ignore[union-attr]
                           f"{base.path.rstrip('/')}/{r.name}" if base is not None else None)
            link.nlink = 1
            parent.own[r.name] = link
            self.file_changed()
            self.hooks.meta_copy_up(link)
            return link
        return node  # type: ignore[return-value]

    # -- helpers --------------------------------------------------------------------------
    def is_empty(self, d: DirNode) -> bool:
        if d.__class__ is ImageDir:
            return not d.children  # type: ignore[union-attr]
        own = d.own  # type: ignore[union-attr]
        if any(v is not None for v in own.values()):
            return False
        base = d.base  # type: ignore[union-attr]
        return base is None or all(name in own for name in base.children)

    def _lower_has(self, parent: Dir, name: str) -> bool:
        return parent.base is not None and name in parent.base.children

    def add_name(self, parent: Dir, name: str, node: Node) -> None:
        """``name`` now leads to ``node`` in ``parent`` (made, linked, moved there)."""
        parent.own[name] = node  # type: ignore[assignment]
        if self.notes_entries:
            self.hooks.entry(parent, name, True)

    def drop_name(self, parent: Dir, name: str) -> None:
        """``name`` leaves ``parent``: a whiteout where the image has that name below."""
        if self._lower_has(parent, name):
            parent.own[name] = None
        else:
            parent.own.pop(name, None)
        if self.notes_entries:
            self.hooks.entry(parent, name, False)

    def unlink_name(self, parent: Dir, name: str, node: Node) -> None:
        """Remove one name; the hooks learn whether it was the node's last link."""
        if node.__class__ is ImageFile and node.size > self.cost.inline_limit and node.nlink <= 1:  # type: ignore[union-attr]
            self.cost.data_unlinks += 1
        if node.__class__ is ImageFile and node.nlink > 1 and self.hooks.indexes_hardlinks:
            node = self.index_copy_up(node)  # type: ignore[arg-type]
        self.drop_name(parent, name)
        if node.__class__ in DIR_TYPES:
            self.changed()
        else:
            self.file_changed()
        last = True
        if node.__class__ is FileInode or node.__class__ is Symlink:
            node.nlink -= 1  # type: ignore[union-attr]
            last = node.nlink <= 0  # type: ignore[union-attr]
            if last and node.__class__ is FileInode and node.size > self.cost.inline_limit:  # type: ignore[union-attr]
                self.cost.data_unlinks += 1
            if last and node.__class__ is FileInode:
                self.dirty.pop(node, None)  # type: ignore[arg-type]
        elif node.__class__ is ImageFile:
            self.image_unlinks[node] += 1
        self.hooks.remove(node, last)
        self.hooks.metadata("unlink" if node.__class__ not in DIR_TYPES else "rmdir", node)

    def new_dir(self, parent: Dir, name: str, mode: int) -> Dir:
        # Opaque where a lower entry of that name is hidden; overlay with index, metacopy or
        # redirect_dir also marks every new directory of a merged parent (``opaque_new_dirs``).
        opaque = self._lower_has(parent, name) or (self.hooks.opaque_new_dirs and parent.base is not None)
        self.own_dirs()
        d = Dir(mode | (parent.mode & S_ISGID), 0, self.new_gid(parent), None, opaque=opaque)
        self.add_name(parent, name, d)  # a new name: no remembered walk changes (``changed``)
        self.hooks.metadata("mkdir", d)
        return d

    @staticmethod
    def new_gid(parent: Dir) -> int:
        """fs/inode.c inode_init_owner: in a set-group-ID directory a new inode takes the
        directory's group, and a new directory the S_ISGID bit too (``new_dir``)."""
        return parent.gid if parent.mode & S_ISGID else 0

    def new_file(self, parent: Dir, name: str, mode: int) -> FileInode:
        inode = FileInode(0, mode, 0, self.new_gid(parent), None)
        inode.nlink = 1
        self.add_name(parent, name, inode)  # a new name: no remembered walk changes (``changed``)
        self.hooks.metadata("create", inode)
        return inode
