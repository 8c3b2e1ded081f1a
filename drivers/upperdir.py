"""What a file-level writable layer holds: overlay's upperdir, aufs's rw branch.

Both drivers keep a container's changes as a plain directory tree on the backing
filesystem, so their space is counted the same way, from the container's private nodes:
a whiteout per hidden lower name, a directory per private directory (some opaque), a
regular file per distinct private inode (hard links once) with its allocated blocks, and an
inode for each of these.  The drivers differ only in how many blocks a file allocates (what
was copied up), whether a whiteout costs an inode, and which files are not there at all.
"""

from __future__ import annotations

from typing import Callable

from simulator.metrics import Space
from simulator.namespace import Namespace
from simulator.nodes import Dir, FileInode
from simulator.viewstats import walk_private

from .base import DIR_BLOCK_BYTES, INODE_BYTES


def upper_space(ns: Namespace, block: int, blocks: Callable[[FileInode], int], *,
                whiteout_inodes: bool = True, absent: Callable[[FileInode], bool] | None = None,
                extra_inodes: int = 0, extra_dirs: int = 0) -> Space:
    """The ``Space`` of one container's writable directory tree.

    ``blocks(inode)``: allocation units a private file holds; ``absent(inode)``: the file has
    no entry in the layer at all; ``extra_*``: the driver's own bookkeeping entries.
    """
    whiteouts = opaque = files = data = alloc = 0
    inodes, dirs = extra_inodes, extra_dirs
    seen: set[int] = set()
    for _path, _parent, _name, node in walk_private(ns):
        if node is None:
            whiteouts += 1
            inodes += whiteout_inodes
        elif node.__class__ is Dir:
            dirs += 1
            inodes += 1
            opaque += node.opaque  # type: ignore[union-attr]
        elif node.__class__ is FileInode:
            if id(node) in seen or (absent is not None and absent(node)):  # type: ignore[arg-type]
                continue
            seen.add(id(node))
            files += 1
            inodes += 1
            data += node.size  # type: ignore[union-attr]
            alloc += blocks(node) * block  # type: ignore[arg-type]
        else:
            inodes += 1
    return Space(whiteouts=whiteouts, opaque_dirs=opaque, container_files=files,
                 container_data_bytes=data, container_alloc_bytes=alloc, image_physical_bytes=0,
                 container_physical_bytes=alloc + inodes * INODE_BYTES + dirs * DIR_BLOCK_BYTES,
                 page_cache_bytes=0, cow_blocks=None)
