"""The trace operations of SPEC section 4, each a function ``(Namespace, Op) -> None``.

Every function checks first and changes after, raising ``FsError`` before any change where
Linux refuses the call (so ``failed_ops`` counts it and nothing moves).  The errno chosen is
the one Linux returns; it only matters for readers of the code: any refusal counts the same.
A refusal that changed nothing and needs no errno may instead return False (``op_stat``: an
import storm is mostly negative lookups, and raising costs more than the lookup itself).
"""

from __future__ import annotations

from typing import Callable

from . import hooks as need
from .imagetree import ImageDir, ImageFile
from .namespace import S_ISGID, S_ISUID, S_IXGRP, XATTR_NAMESPACES, XATTR_SIZE_MAX, FsError, Namespace, Resolved
from .nodes import DIR_TYPES, FILE_TYPES, LINK_TYPES, Dir, FileInode, Node, Symlink
from .trace import Op

DEFAULT_CREATE_MODE = 0o644  # open(O_CREAT, 0644) with umask 0
DEFAULT_MKDIR_MODE = 0o755
MKDIR_MODE_BITS = 0o1777  # fs/namei.c vfs_mkdir: S_IRWXUGO | S_ISVTX (set-id bits dropped; measured)


def _existing(r: Resolved) -> Node:
    if r.node is None:
        raise FsError("ENOENT")
    return r.node


def _file(ns: Namespace, path: str, why: str) -> FileInode:
    """The private inode of an existing regular file, opened for writing."""
    r = ns.resolve(path, follow=True)
    node = _existing(r)
    if node.__class__ in DIR_TYPES:
        raise FsError("EISDIR")
    parent = r.parent
    if parent is None:
        raise FsError("EISDIR")
    if parent.__class__ is not Dir:  # a private parent's ancestors are all private already
        parent = ns.private_dir(r.names)
    return ns.private_file(parent, r.name, node, why)  # type: ignore[arg-type]


def op_create(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=True)
    if r.node is not None and r.node.__class__ in DIR_TYPES or r.parent is None:
        raise FsError("EISDIR")
    parent = r.parent if r.parent.__class__ is Dir else ns.private_dir(r.names)
    if r.node is None:
        inode = ns.new_file(parent, r.name, DEFAULT_CREATE_MODE if op.mode < 0 else op.mode)
    else:
        inode = ns.private_file(parent, r.name, r.node, need.NEED_TRUNC_OPEN)
        if inode.size:
            ns.set_size(inode, 0)
    ns.write_range(inode, 0, op.size)
    if ns.notes_close:
        ns.hooks.closed(inode, op.kind)


def op_write(ns: Namespace, op: Op) -> None:
    inode = _file(ns, op.path, need.NEED_DATA)
    ns.write_range(inode, op.offset, op.length)
    if ns.notes_close:
        ns.hooks.closed(inode, op.kind)


def op_append(ns: Namespace, op: Op) -> None:
    inode = _file(ns, op.path, need.NEED_DATA)
    ns.write_range(inode, inode.size, op.length)
    if ns.notes_close:
        ns.hooks.closed(inode, op.kind)


def op_truncate(ns: Namespace, op: Op) -> None:
    inode = _file(ns, op.path, need.NEED_TRUNCATE)
    ns.set_size(inode, op.size)


def op_open(ns: Namespace, op: Op) -> None:
    if op.access == "r":
        node = _existing(ns.resolve(op.path, follow=True))
    else:
        node = _file(ns, op.path, need.NEED_DATA)  # overlayfs copies up at open for write
    if ns.notes_close:
        ns.hooks.closed(node, op.kind)


def op_read(ns: Namespace, op: Op) -> None:
    node = _existing(ns.resolve(op.path, follow=True))
    if node.__class__ in DIR_TYPES:
        raise FsError("EISDIR")
    ns.read_node(node, op.offset, op.length)
    if ns.notes_close:  # a read of 0 bytes ends before the filesystem's read, and its atime
        # update (generic_file_read_iter: "skip atime"; filemap_read): it closes as an open
        ns.hooks.closed(node, op.kind if op.length else "open")


def op_stat(ns: Namespace, op: Op) -> bool:
    return ns.resolve(op.path, False).node is not None  # False: ENOENT (no raise: see the docstring)


def op_unlink(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=False)
    node = _existing(r)
    if node.__class__ in DIR_TYPES:
        raise FsError("EISDIR")
    ns.unlink_name(ns.private_dir(r.names), r.name, node)


def op_mkdir(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=False)
    if r.node is not None:
        raise FsError("EEXIST")
    mode = DEFAULT_MKDIR_MODE if op.mode < 0 else op.mode & MKDIR_MODE_BITS
    ns.new_dir(ns.private_dir(r.names), r.name, mode)


def op_rmdir(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=False)
    node = _existing(r)
    if node.__class__ not in DIR_TYPES:
        raise FsError("ENOTDIR")
    if r.parent is None:
        raise FsError("EBUSY")
    if not ns.is_empty(node):  # type: ignore[arg-type]
        raise FsError("ENOTEMPTY")
    ns.unlink_name(ns.private_dir(r.names), r.name, node)


def remove_tree(ns: Namespace, names: list[str], name: str, node: Node) -> None:
    """``rm -rf``: unlink every entry depth-first, making each non-empty directory private
    before emptying it, exactly as the unlink/rmdir calls rm makes would."""
    if node.__class__ in DIR_TYPES and not ns.is_empty(node):  # type: ignore[arg-type]
        d = ns.private_dir(names + [name])
        listed = d.names()
        ns.cost.note_listed(d, listed)
        for child_name in listed:
            child = ns.child(d, child_name)
            remove_tree(ns, names + [name], child_name, child)  # type: ignore[arg-type]
        node = d
    ns.unlink_name(ns.private_dir(names), name, node)


def _resolve_operand(ns: Namespace, path: str) -> Resolved | None:
    """rm -f's lookup of an operand: None where it is missing (ENOENT or ENOTDIR: coreutils
    ``ignorable_missing``; rm 9.1 here: 'rm -rf file/x' and 'rm -rf missing/x' exit 0)."""
    try:
        r = ns.resolve(path, follow=False)
    except FsError as exc:
        if exc.args[0] in ("ENOENT", "ENOTDIR"):
            return None
        raise  # ELOOP fails
    return r if r.node is not None else None


def remove_operand(ns: Namespace, path: str, r: Resolved) -> None:
    """``rm -rf path`` for a resolved, existing operand.  rm (fts) empties a directory
    through directory fds, then removes the operand itself *by its path*: when that path runs
    through a symbolic link the emptying deleted, the lookup fails, ENOENT is ignored, and
    the emptied directory stays (coreutils 9.1 here, strace'd; ``simulator/real/replay.py``)."""
    if r.node.__class__ not in DIR_TYPES or ns.is_empty(r.node):  # type: ignore[arg-type]
        remove_tree(ns, r.names, r.name, r.node)  # type: ignore[arg-type]
        return
    d = ns.private_dir(r.names + [r.name])
    listed = d.names()
    ns.cost.note_listed(d, listed)
    for child_name in listed:
        remove_tree(ns, r.names + [r.name], child_name, ns.child(d, child_name))  # type: ignore[arg-type]
    again = _resolve_operand(ns, path)
    if again is not None:  # emptying only unbinds names: the same, now empty, directory
        ns.unlink_name(ns.private_dir(again.names), again.name, again.node)  # type: ignore[arg-type]


def op_remove_tree(ns: Namespace, op: Op) -> None:
    r = _resolve_operand(ns, op.path)
    if r is None:
        return  # rm -f: a missing operand is not an error
    if r.parent is None:
        raise FsError("EBUSY")
    remove_operand(ns, op.path, r)


def _check_rename(ns: Namespace, src: Resolved, dst: Resolved) -> bool:
    """Linux's checks for rename(2); False when it is a successful no-op."""
    node = _existing(src)
    if src.parent is None or dst.parent is None:
        raise FsError("EBUSY")
    same_name = src.parent is dst.parent and src.name == dst.name
    if dst.node is node and (same_name or node.__class__ is not ImageFile or ns.hooks.keeps_hardlinks):
        return False  # same inode: rename does nothing
    # (Two image names of one file are two inodes to overlayfs without index: ovl_hash_bylower
    # refuses to hash a lower hard link that copy-up would break, so the rename goes ahead.)
    if node.__class__ in DIR_TYPES:
        if dst.node is not None:
            if dst.node.__class__ not in DIR_TYPES:
                raise FsError("ENOTDIR")
            if not ns.is_empty(dst.node):  # type: ignore[arg-type]
                raise FsError("ENOTEMPTY")
        walk: object = ns.root
        for name in dst.names:  # the destination may not lie inside the source
            walk = ns.child(walk, name)  # type: ignore[arg-type]
            if walk is node:
                raise FsError("EINVAL")
    elif dst.node is not None and dst.node.__class__ in DIR_TYPES:
        raise FsError("EISDIR")
    return True


def _do_rename(ns: Namespace, src: Resolved, dst: Resolved) -> None:
    ns.cost.renames += 1  # cost model: a rename rewrites two names (and inode refs) at once
    src_parent = ns.private_dir(src.names)
    node = ns.child(src_parent, src.name)
    if node.__class__ in FILE_TYPES:
        node = ns.private_file(src_parent, src.name, node, need.NEED_RENAME)  # type: ignore[arg-type]
    else:
        node = ns.private_node(Resolved(src.names, src_parent, src.name, node), need.NEED_RENAME)
        if node.__class__ is Dir and node.base is not None:  # type: ignore[union-attr]
            node.moved = True  # type: ignore[union-attr]
    dst_parent = ns.private_dir(dst.names)
    if node.__class__ is Dir and node.base is None and dst_parent.base is not None \
            and ns.hooks.opaque_moved_dirs:  # overlay: a merged parent's newcomer hides below
        node.opaque = True  # type: ignore[union-attr]
    old = ns.child(dst_parent, dst.name)
    if old is not None:
        ns.unlink_name(dst_parent, dst.name, old)
    # Detach from the source name without counting a removal: the node lives on.
    ns.drop_name(src_parent, src.name)
    ns.add_name(dst_parent, dst.name, node)
    if node.__class__ is Dir:
        ns.changed()
    else:  # a file or symlink moved over another (or none): no remembered directory changes
        ns.file_changed()
    ns.hooks.metadata("rename", node)


def op_rename(ns: Namespace, op: Op) -> None:
    src = ns.resolve(op.path, follow=False)
    dst = ns.resolve(op.dst, follow=False)
    if not _check_rename(ns, src, dst):
        return
    if ns.hooks.rename_refused(src.node):  # type: ignore[arg-type]
        raise FsError("EXDEV")
    _do_rename(ns, src, dst)


def copy_tree(ns: Namespace, node: Node, parent: Dir, name: str, links: dict) -> None:
    """What ``mv`` does after EXDEV: copy ``node`` to ``parent/name`` keeping modes, owners,
    symlinks and the hard links inside the tree (as ``cp -a``)."""
    if node.__class__ in DIR_TYPES:
        d = ns.new_dir(parent, name, node.mode)  # type: ignore[union-attr]
        d.mode, d.uid, d.gid = node.mode, node.uid, node.gid  # type: ignore[union-attr]
        listed = _names(ns, node)  # type: ignore[arg-type]
        ns.cost.note_listed(node, listed)  # type: ignore[arg-type]
        for child_name in listed:
            copy_tree(ns, ns.child(node, child_name), d, child_name, links)  # type: ignore[arg-type]
    elif node.__class__ in LINK_TYPES:
        link = Symlink(node.target, node.uid, node.gid)  # type: ignore[union-attr]
        link.nlink = 1
        ns.add_name(parent, name, link)
        ns.file_changed()
        ns.hooks.metadata("symlink", link)
    elif node in links:
        inode = links[node]
        inode.nlink += 1
        ns.add_name(parent, name, inode)
        ns.file_changed()
        ns.hooks.metadata("link", inode)
    else:
        inode = ns.new_file(parent, name, node.mode)  # type: ignore[union-attr]
        inode.uid, inode.gid = node.uid, node.gid  # type: ignore[union-attr]
        links[node] = inode
        ns.read_node(node, 0, node.size)  # type: ignore[union-attr]
        ns.write_range(inode, 0, node.size)  # type: ignore[union-attr]


def _names(ns: Namespace, d) -> list[str]:
    return list(d.children) if d.__class__ is ImageDir else d.names()


def op_move(ns: Namespace, op: Op) -> None:
    src = ns.resolve(op.path, follow=False)
    dst = ns.resolve(op.dst, follow=False)
    if not _check_rename(ns, src, dst):
        return
    if not ns.hooks.rename_refused(src.node):  # type: ignore[arg-type]
        _do_rename(ns, src, dst)
        return
    dst_parent = ns.private_dir(dst.names)
    if dst.node is not None:  # an empty directory (checked above): mv replaces it
        ns.unlink_name(dst_parent, dst.name, dst.node)
    copy_tree(ns, src.node, dst_parent, dst.name, {})  # type: ignore[arg-type]
    src_node = ns.child(ns.private_dir(src.names), src.name)
    remove_operand(ns, op.path, Resolved(src.names, src.parent, src.name, src_node))  # mv's rm


def _attribute_target(ns: Namespace, path: str) -> Node:
    r = ns.resolve(path, follow=True)
    _existing(r)
    node = ns.private_node(r, need.NEED_META)
    node.modified = True  # type: ignore[union-attr]
    return node


def op_chmod(ns: Namespace, op: Op) -> None:
    node = _attribute_target(ns, op.path)
    node.mode = op.mode  # type: ignore[union-attr]
    ns.hooks.metadata("chmod", node)


def op_chown(ns: Namespace, op: Op) -> None:
    node = _attribute_target(ns, op.path)
    node.uid, node.gid = op.uid, op.gid  # type: ignore[union-attr]
    if node.__class__ not in DIR_TYPES:  # fs/open.c chown_common: ATTR_KILL_SUID | ATTR_KILL_SGID
        mode = node.mode & ~S_ISUID  # type: ignore[union-attr]
        if mode & S_IXGRP:
            mode &= ~S_ISGID
        node.mode = mode  # type: ignore[union-attr]
    ns.hooks.metadata("chown", node)


def op_utime(ns: Namespace, op: Op) -> None:
    ns.hooks.metadata("utime", _attribute_target(ns, op.path))


def op_setxattr(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=True)
    _existing(r)
    if op.size > XATTR_SIZE_MAX:
        raise FsError("E2BIG")
    if not op.name.startswith(XATTR_NAMESPACES):
        raise FsError("EOPNOTSUPP")
    node = r.node
    named = r.parent.__class__ is Dir and r.parent.own.get(r.name) is node  # type: ignore[union-attr]
    if node.__class__ is not FileInode or named:
        node = ns.private_node(r, need.NEED_META)
    # else: another image name of an inode already up (index): overlayfs sets the xattr on
    # its upper inode (ovl_xattr_set: ovl_i_dentry_upper), with no link-up, unlike chmod.
    if op.name == "security.capability":  # the only xattr moby's naive diff compares
        node.modified = True  # type: ignore[union-attr]
    ns.hooks.metadata("setxattr", node)


def op_link(ns: Namespace, op: Op) -> None:
    src = ns.resolve(op.path, follow=False)
    node = _existing(src)
    dst = ns.resolve(op.dst, follow=False)
    if node.__class__ in DIR_TYPES:
        raise FsError("EPERM")
    if dst.node is not None:
        raise FsError("EEXIST")
    if dst.parent is None or src.parent is None:
        raise FsError("EEXIST")
    node = ns.private_node(src, need.NEED_LINK)
    dst_parent = ns.private_dir(dst.names)
    node.nlink += 1  # type: ignore[union-attr]
    ns.add_name(dst_parent, dst.name, node)
    ns.file_changed()
    ns.hooks.metadata("link", node)


def op_symlink(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=False)
    if r.node is not None or r.parent is None:
        raise FsError("EEXIST")
    parent = ns.private_dir(r.names)
    link = Symlink(op.target, 0, ns.new_gid(parent))
    link.nlink = 1
    ns.add_name(parent, r.name, link)
    ns.file_changed()
    ns.hooks.metadata("symlink", link)


def op_fsync(ns: Namespace, op: Op) -> None:
    r = ns.resolve(op.path, follow=True)
    node = _existing(r)
    ns.cost.fsync_dirs.add("/".join(r.names))  # cost model: the first fsync in a directory logs it
    if node.__class__ is FileInode:
        ns.writeback(node)  # type: ignore[arg-type]
    ns.hooks.fsync(node)
    if ns.notes_close:
        ns.hooks.closed(node, op.kind)


OPERATIONS: dict[str, Callable[[Namespace, Op], bool | None]] = {
    "create": op_create, "write": op_write, "append": op_append, "truncate": op_truncate,
    "open": op_open, "read": op_read, "stat": op_stat, "unlink": op_unlink, "mkdir": op_mkdir,
    "rmdir": op_rmdir, "remove_tree": op_remove_tree, "rename": op_rename, "move": op_move,
    "chmod": op_chmod, "chown": op_chown, "utime": op_utime, "setxattr": op_setxattr,
    "link": op_link, "symlink": op_symlink, "fsync": op_fsync,
}
