"""The real overlay backend: the image and the workload on kernel overlayfs, measured exactly.

Layout, all inside one scratch tmpfs (REAL_KERNEL.md section 1: tmpfs supports trusted.*
xattrs and file handles, so ``index=on`` works, and its block counts are exact, with no
xattr blocks and no reflinks)::

    <scratch>/            tmpfs, mounted on a fresh ``mkdtemp`` directory
        l/<k>/            image layer k (0 = bottom) in overlay on-disk form: files with real
                          non-zero data, whiteouts as char 0/0, opaque dirs with
                          trusted.overlay.opaque=y (moby's overlayWhiteoutConverter)
                          (k >= the image's layers: a committed container layer)
        c/<i>/u  w  m     container i: upperdir, workdir, merged mount point
        c/<i>/lv          during a commit: read-only overlay of container i's lowers

Every container mounts ``lowerdir=l/<top>:...:l/0`` with its own upper and work dirs, as
Docker's overlay2 does.  Options are short paths relative to the scratch root (the mount
call runs with that as its cwd) because mount(2) keeps only 4095 bytes of option data and
drops the rest silently (REAL_KERNEL.md section 1, pitfall 1); 500 layers need ~3 KB.

``commit`` (``OverlaySession.commit``, ``overlay_commit``): the container's mount is read
into a new layer directory ``l/<k>``, then unmounted, and remounted with ``l/<k>`` on top of
its lowers and an empty upperdir, as ``docker commit`` leaves a container.

A whiteout that hides nothing (no visible entry of that name in the layers below, after
the layer's own opaque dirs) is not written: the image model says it does nothing, but
overlayfs passes readdir of a directory that only one layer has straight to that layer
(``ovl_dir_is_real``), so the whiteout would show up as a name that lstat cannot find
(measured on kernel 6.18 here: a layer-2 dir /x/c/b holding whiteouts c and etc, nothing
below it, listed both; lstat gave ENOENT).  Docker writes such whiteouts as they come.

Metrics: ``container_*``, ``whiteouts`` and ``opaque_dirs`` come from walking each upperdir
(like REAL_KERNEL's ovlstat.py); ops and bytes from the replay.  ``device_write_bytes`` is
null: /proc/self/io ``write_bytes`` counts block-device writeback, and a tmpfs has none
(measured here: appending 1 byte to an 8 MiB lower file copies it up and shows a delta
of 0).  Everything the kernel does not expose (lookups, copy-up counts, ideal bytes) is null.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
from contextlib import contextmanager
from typing import Any, Iterator

from simulator.errors import BackendUnavailable, BadInput
from simulator.image import DEFAULT_DIR_MODE, Image, Layer
from simulator.paths import components

from .requirements import require_root, require_filesystems
from .overlay_commit import LayerWriter
from .replay import create_filled
from .scratch import ScratchDir, guard_signals

OPTION_DATA_LIMIT = 4095  # mount(2) copies one page of options and keeps 4095 bytes
KERNEL_MAX_LOWERS = 500  # fs/overlayfs/params.h OVL_MAX_STACK
XATTR_OPAQUE = "trusted.overlay.opaque"
XATTR_METACOPY = "trusted.overlay.metacopy"
XATTR_REDIRECT = "trusted.overlay.redirect"
TMPFS_SHARE_OF_AVAILABLE = 2  # the scratch tmpfs may fill at most 1/2 of available memory

_libc = ctypes.CDLL(None, use_errno=True)


def check_available(filesystems: str = "/proc/filesystems") -> None:
    """Raise BackendUnavailable (exit 3) with the reason when this machine cannot run it."""
    require_root("overlay", "mount(2), trusted.* xattrs")
    require_filesystems(("overlay", "tmpfs"), filesystems)


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    if len(data.encode()) > OPTION_DATA_LIMIT:
        raise BadInput(f"{fstype} mount options of {len(data)} bytes exceed the kernel's "
                       f"{OPTION_DATA_LIMIT}-byte limit")
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise BackendUnavailable(f"mount -t {fstype} -o {data[:200]} {target}: {os.strerror(err)} "
                                 f"(see dmesg)")


class Scratch:
    """A tmpfs on a fresh scratch directory (``scratch.ScratchDir``: recorded in a state file
    before each mount, so even a SIGKILLed run is cleaned up); ``close`` undoes every mount."""

    def __init__(self, size: int):
        self.dir = ScratchDir("layerbench-ovl-")
        self.path = self.dir.path
        try:
            _mount("tmpfs", self.dir.will_mount(""), "tmpfs", f"size={size},mode=0755")
        except BaseException:
            self.dir.close()
            raise

    def overlay(self, target: str, lowers: list[str], upper: str, work: str, options: dict[str, bool]) -> None:
        """Mount an overlay at ``target``; every path relative to the scratch root."""
        flags = ",".join(f"{k}={'on' if v else 'off'}" for k, v in options.items())
        data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},{flags}"
        self.dir.will_mount(target)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(self.path)
            _mount("overlay", target, "overlay", data)
        finally:
            os.fchdir(cwd)
            os.close(cwd)

    def lower_view(self, target: str, lowers: list[str]) -> None:
        """A read-only overlay of ``lowers`` alone (the image a container started from)."""
        self.dir.will_mount(target)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(self.path)
            _mount("overlay", target, "overlay", f"lowerdir={':'.join(lowers)}")
        finally:
            os.fchdir(cwd)
            os.close(cwd)

    def umount(self, target: str) -> None:
        self.dir.release_mount(target)

    def close(self) -> None:
        self.dir.close()


terminate_raises = guard_signals  # the name btrfs (and later backends) import from here


# -- laying an image down in overlay form ----------------------------------------------------

class _MergedDirs:
    """Mode/owner of every directory in the merged view of the layers laid so far (OCI
    rules, as ``ImageTree`` applies them), so an implicit parent keeps them (SPEC section 3):
    overlayfs takes a merged directory's attributes from its topmost layer."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {"attrs": (DEFAULT_DIR_MODE, 0, 0), "children": {}}

    def _node(self, path: str) -> dict[str, Any] | None:
        node = self.root
        for name in components(path) if path != "/" else ():
            child = node["children"].get(name) if node else None
            if not isinstance(child, dict):
                return None
            node = child
        return node

    def attrs(self, path: str) -> tuple[int, int, int]:
        node = self._node(path)
        return node["attrs"] if node else (DEFAULT_DIR_MODE, 0, 0)

    def visible(self, path: str) -> bool:
        parent = self._node(path.rsplit("/", 1)[0] or "/")
        return parent is not None and path.rsplit("/", 1)[1] in parent["children"]

    def clear_opaque(self, layer: Layer) -> None:
        """A layer's opaque dirs hide their lower contents before its entries apply."""
        for e in layer.entries:
            if e.type == "dir" and e.opaque:
                node = self._node(e.path)
                if node:
                    node["children"].clear()

    def apply(self, layer: Layer) -> None:
        """The layer's entries, after ``clear_opaque``."""
        for e in layer.entries:
            parent = self.root
            for name in components(e.path)[:-1]:
                child = parent["children"].get(name)
                if not isinstance(child, dict):
                    child = parent["children"][name] = {"attrs": (DEFAULT_DIR_MODE, 0, 0), "children": {}}
                parent = child
            name = e.path.rsplit("/", 1)[1]
            if e.type == "whiteout":
                parent["children"].pop(name, None)
            elif e.type == "dir":
                child = parent["children"].get(name)
                if isinstance(child, dict):
                    child["attrs"] = (e.mode, e.uid, e.gid)
                else:
                    parent["children"][name] = {"attrs": (e.mode, e.uid, e.gid), "children": {}}
            else:
                parent["children"][name] = e.type


def _set_attrs(path: str, mode: int, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)  # chown first: it clears set-id bits
    os.chmod(path, mode)


def materialize_layer(layer: Layer, dest: str, below: _MergedDirs) -> None:
    """Write ``layer`` under ``dest`` as overlay's on-disk form of a lower layer."""
    explicit = {e.path: e for e in layer.entries if e.type == "dir"}
    made: set[str] = {"/"}
    below.clear_opaque(layer)
    os.mkdir(dest, 0o755)

    def ensure_dir(path: str) -> None:
        if path in made:
            return
        ensure_dir(path.rsplit("/", 1)[0] or "/")
        real = dest + path
        e = explicit.get(path)
        os.mkdir(real, 0o700)
        if e is not None:
            _set_attrs(real, e.mode, e.uid, e.gid)
            if e.opaque:
                os.setxattr(real, XATTR_OPAQUE, b"y")
        else:
            _set_attrs(real, *below.attrs(path))
        made.add(path)

    for e in layer.entries:
        ensure_dir(e.path.rsplit("/", 1)[0] or "/")  # a tar extractor makes them for a whiteout too
        if e.type == "whiteout" and not below.visible(e.path):
            continue  # hides nothing; written, it would show in readdir (see module docstring)
        real = dest + e.path
        if e.type == "dir":
            ensure_dir(e.path)
        elif e.type == "file":
            create_filled(real, e.size, e.uid, e.gid, e.mode)
        elif e.type == "hardlink":
            os.link(dest + e.target, real)  # type: ignore[operator]
        elif e.type == "symlink":
            os.symlink(e.target, real)  # type: ignore[arg-type]
            os.chown(real, e.uid, e.gid, follow_symlinks=False)
        else:  # whiteout: moby's overlayWhiteoutConverter makes a char 0/0 device
            os.mknod(real, stat.S_IFCHR, os.makedev(0, 0))
    below.apply(layer)


def materialize_image(image: Image, root: str) -> list[str]:
    """All layers under ``root/l``; the lowerdir list, top first, relative to ``root``."""
    os.mkdir(os.path.join(root, "l"))
    below = _MergedDirs()
    for k, layer in enumerate(image.layers):
        materialize_layer(layer, os.path.join(root, "l", str(k)), below)
    return [f"l/{k}" for k in range(len(image.layers) - 1, -1, -1)]


def image_data_bytes(image: Image, page: int = 4096) -> int:
    return sum(-(-e.size // page) * page for layer in image.layers for e in layer.entries if e.type == "file")


# -- measuring -------------------------------------------------------------------------------

def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def upper_stats(upper: str, skip_prefix: str | None = None) -> dict[str, int]:
    """Exact accounting of one upperdir (REAL_KERNEL.md section 1, ovlstat.py); names that
    start with ``skip_prefix`` are left out (fuse-overlayfs's own markers).  Also the
    regular files of any tree (a vfs copy), which has none of the rest."""
    out = dict(container_files=0, container_data_bytes=0, container_alloc_bytes=0, whiteouts=0,
               opaque_dirs=0, metacopy_files=0, redirect_dirs=0)
    seen: set[int] = set()
    todo = [upper]
    while todo:
        d = todo.pop()
        with os.scandir(d) as it:
            for entry in it:
                if skip_prefix is not None and entry.name.startswith(skip_prefix):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                    out["container_files"] += 1
                    out["container_data_bytes"] += st.st_size
                    out["container_alloc_bytes"] += st.st_blocks * 512
                    out["metacopy_files"] += _xattr(entry.path, XATTR_METACOPY) is not None
                elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    out["whiteouts"] += 1
                elif stat.S_ISDIR(st.st_mode):
                    out["opaque_dirs"] += _xattr(entry.path, XATTR_OPAQUE) == b"y"
                    out["redirect_dirs"] += _xattr(entry.path, XATTR_REDIRECT) is not None
                    todo.append(entry.path)
    return out


def tree_view(root: str) -> dict[str, dict[str, int | str]]:
    """``simulator.view.view_of``'s shape, from ``lstat`` of a real directory tree."""
    out: dict[str, dict[str, int | str]] = {}
    todo = [("", root)]
    while todo:
        prefix, d = todo.pop()
        with os.scandir(d) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                path = f"{prefix}/{entry.name}"
                if stat.S_ISDIR(st.st_mode):
                    kind, size = "dir", 0
                    todo.append((path, entry.path))
                elif stat.S_ISLNK(st.st_mode):
                    kind, size = "symlink", 0
                elif stat.S_ISREG(st.st_mode):
                    kind, size = "file", st.st_size
                else:
                    kind, size = "other", st.st_size  # never in a container's view: shows a bug
                out[path] = {"type": kind, "size": size, "mode": st.st_mode & 0o7777}
    return dict(sorted(out.items()))


def mount_options(options: dict[str, Any]) -> dict[str, bool]:
    """The driver's options as overlay mount flags, each explicit; metacopy=on needs
    redirect_dir=on (the kernel refuses 'metacopy=on,redirect_dir=off')."""
    metacopy = bool(options["metacopy"])
    return {"redirect_dir": bool(options["redirect_dir"]) or metacopy, "metacopy": metacopy,
            "index": bool(options["index"])}


# -- a whole run -----------------------------------------------------------------------------

class OverlaySession:
    """The image laid down once, and one overlay mount per container on top of it."""

    def __init__(self, scratch: Scratch, lowers: list[str], options: dict[str, bool]):
        self.scratch, self.lowers, self.options = scratch, lowers, options
        self.container_lowers: dict[int, list[str]] = {}  # top first; grows with each commit
        self.next_layer = len(lowers)  # the directory number of the next committed layer
        os.mkdir(os.path.join(scratch.path, "c"))

    def path(self, container: int, part: str) -> str:
        return os.path.join(self.scratch.path, "c", str(container), part)

    def start(self, container: int) -> str:
        """Make container ``container``'s upper, work and mount dirs and mount it."""
        base = os.path.join(self.scratch.path, "c", str(container))
        os.mkdir(base)
        for part in ("u", "w", "m"):
            os.mkdir(os.path.join(base, part), 0o755)
        self.container_lowers[container] = list(self.lowers)
        return self._mount(container)

    def _mount(self, container: int) -> str:
        rel = f"c/{container}"
        self.scratch.overlay(f"{rel}/m", self.container_lowers[container], f"{rel}/u", f"{rel}/w", self.options)
        return self.path(container, "m")

    def commit(self, container: int) -> str:
        """``docker commit`` (``overlay_commit``): the upperdir's diff becomes a new lower
        layer ``l/<k>``, and the container is remounted on it with an empty upperdir."""
        lowers = self.container_lowers[container]
        layer = f"l/{self.next_layer}"
        self.next_layer += 1
        view = self.path(container, "lv")
        if len(lowers) > 1:  # overlayfs needs two lowers to mount without an upper
            os.mkdir(view)
            self.scratch.lower_view(f"c/{container}/lv", lowers)
        try:
            LayerWriter(self.path(container, "u"), self.path(container, "m"),
                        view if len(lowers) > 1 else os.path.join(self.scratch.path, lowers[0]),
                        os.path.join(self.scratch.path, layer), self.options["index"],
                        naive=self.options["metacopy"] or self.options["redirect_dir"]).write()
        finally:
            if len(lowers) > 1:
                self.scratch.umount(f"c/{container}/lv")
                os.rmdir(view)
        self.scratch.umount(f"c/{container}/m")
        for part in ("u", "w"):  # the old layer goes, as docker removes the container's
            shutil.rmtree(self.path(container, part))
            os.mkdir(self.path(container, part), 0o755)
        self.container_lowers[container] = [layer, *lowers]
        return self._mount(container)


@contextmanager
def overlay_session(image: Image, driver_options: dict[str, Any], extra_bytes: int) -> Iterator[OverlaySession]:
    """Scratch tmpfs + image layers; torn down on every way out (SIGTERM included)."""
    check_available()
    if len(image.layers) > KERNEL_MAX_LOWERS:
        raise BadInput(f"{image.source}: {len(image.layers)} layers exceed overlayfs's limit of {KERNEL_MAX_LOWERS}")
    import psutil

    room = psutil.virtual_memory().available // TMPFS_SHARE_OF_AVAILABLE
    need = image_data_bytes(image) + extra_bytes
    if need > room:
        raise BackendUnavailable(f"the image and workload need about {need} bytes of tmpfs, "
                                 f"but only {room} bytes can be spared here")
    with terminate_raises():
        scratch = Scratch(room)
        try:
            lowers = materialize_image(image, scratch.path)
            yield OverlaySession(scratch, lowers, mount_options(driver_options))
        finally:
            scratch.close()
