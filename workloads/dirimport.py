"""A plain directory as a one-layer image: what ``COPY dir /`` would make of it.

The tree is walked with ``lstat`` (symlinks are never followed, and the walk stays on the
directory's own file system, as ``docker build`` contexts and ``tar --one-file-system``
do), so the image is exactly what ``ls -lR`` shows: regular files with their sizes and
permission bits, directories, symlinks with their text, and hard links (several names for
one inode) as a file plus ``hardlink`` entries.  File data is not read unless digests are
asked for, and then in chunks.

Refused like hostile archive members (``workloads.oci_layer``): device nodes, FIFOs,
sockets, relative symlinks that climb above the directory, names starting with ``.wh.``
(reserved for whiteouts), non-UTF-8 names, and trees past the image bounds.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from simulator.errors import BadInput
from simulator.image import Image, image_from_dict

from .oci_layer import HASH_CHUNK, Budget, LayerBuilder, check_symlink

PLAIN_LAYER_ID = "dir"


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def dir_entries(root: Path, digests: bool = False, budget: Budget | None = None) -> list[dict[str, Any]]:
    """The SPEC section 3 entries of the tree under ``root`` (which itself is not an entry)."""
    where = str(root)
    layer = LayerBuilder(where, budget or Budget(where))
    try:
        top = os.lstat(root)
    except OSError as exc:
        raise BadInput(f"{root}: cannot read: {exc.strerror}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise BadInput(f"{root}: not a directory")
    inodes: dict[tuple[int, int], str] = {}  # (dev, ino) -> first path: hard links
    todo = [(str(root), "")]
    while todo:
        real, rel = todo.pop()
        try:
            with os.scandir(real) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BadInput(f"{real}: cannot list: {exc.strerror}") from None
        for child in children:
            try:
                child.name.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(f"{child.path}: name is not UTF-8") from None
            path = f"{rel}/{child.name}"
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise BadInput(f"{child.path}: cannot stat: {exc.strerror}") from None
            owner = {"uid": st.st_uid, "gid": st.st_gid} if (st.st_uid or st.st_gid) else {}
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                layer.add(path, {"type": "dir", "mode": mode, **owner})
                if st.st_dev == top.st_dev:
                    todo.append((child.path, path))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    layer.add(path, {"type": "hardlink", "target": inodes[key]})
                    continue
                inodes[key] = path
                entry: dict[str, Any] = {"type": "file", "size": st.st_size, "mode": mode, **owner}
                if digests:
                    entry["digest"] = _file_digest(child.path)
                layer.add(path, entry)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(child.path)
                check_symlink(path, target, where)
                layer.add(path, {"type": "symlink", "target": target, **owner})
            else:
                kind = "device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else (
                    "FIFO" if stat.S_ISFIFO(st.st_mode) else "socket")
                raise BadInput(f"{child.path}: is a {kind}, which an image may not carry here")
    return layer.finish()


def load_dir(root: Path, digests: bool = False) -> Image:
    """``root`` as a one-layer image named after the directory."""
    entries = dir_entries(root, digests)
    return image_from_dict({"name": root.resolve().name or "root", "layers": [{"id": PLAIN_LAYER_ID, "entries": entries}]},
                           str(root))
