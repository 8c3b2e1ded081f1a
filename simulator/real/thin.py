"""The real devicemapper stand-in: thin snapshots as reflinked guest-fs images (REAL_KERNEL.md 4a).

This kernel has no device-mapper, so a dm-thin snapshot chain is emulated by block-level
copy-on-write one level down: each thin device is a guest file system *image file* on a
reflink-capable host file system, and a snapshot is ``cp --reflink=always`` of its origin.
The host then shares every 4 KiB block until the guest writes it, exactly as a pool shares
data blocks of 4 KiB (``chunk_size=4096``, the model's reference granularity)::

    <scratch>/            fresh scratch directory (``scratch.ScratchDir``) on whatever fs /tmp is
        host.img          sparse loop file, mkfs.xfs -m reflink=1
        h/                its mount
            base.img      truncate -s base_size; mkfs.<fs> (ext4: lazy init off, journal
                          only with journal=true), i.e. the base device
            L0 .. L<k>.img  layer k: reflink copy of layer k-1 (L0: of base.img), loop
                          mounted, the layer's entries applied (a snapshot holds a full fs,
                          so whiteouts and opaque dirs are deletions), unmounted
            C0 .. C<n-1>.img  container i: reflink copy of the top layer; its ops replayed
        g/                where a guest image is mounted (one at a time)

Measuring: after ``umount`` + ``losetup -d`` + ``syncfs`` of the host fs (``scratch.sync_fs``:
not sync(2), which also flushes other runs' guests early), the FS_IOC_FIEMAP ioctl (with
FIEMAP_FLAG_SYNC) gives every image's (logical, physical, length) extents.  A container's
*new* bytes are the parts of its map whose physical blocks are not in its origin's map
(REAL_KERNEL's ``new_vs_base``, plain interval arithmetic; it needs no SHARED flag and
stays right if the origin is later changed).  Reported under the SPEC section 5 names:

* ``container_physical_bytes``: those new bytes, summed over containers (host 4 KiB blocks);
* ``cow_blocks``: distinct ``chunk_size`` chunks of each container image's *logical*
  address space holding new bytes, i.e. the pool blocks dm-thin with that block size would
  have provisioned (REAL_KERNEL 4a's ``--chunk``; an estimate above 4 KiB, since real dm-thin
  also depends on its own metadata); ``container_alloc_bytes = cow_blocks * chunk_size``;
* ``image_physical_bytes``: host bytes of the union of the image files' physical extents.
* ``device_write_bytes``: bytes written to the containers' guest loop devices
  (/proc/diskstats via psutil, REAL_KERNEL section 6), from mount to after umount.
The model adds 48 B of pool metadata per chunk to its physical bytes; the host has none.

Every mount and loop device is undone on every path out (``try/finally``; SIGTERM raised
as SystemExit by ``scratch.guard_signals``); the cwd is never inside a mount.  Each loop
file (host.img, and every guest image while it is attached) and each mount point (h/, g/)
is recorded in the run's state file before ``losetup``/``mount`` (``scratch.ScratchDir``),
so ``layerbench cleanup`` releases them after a SIGKILL too: the guest's mount, then its
loop device (its file lies on h/, so it goes before h/ is unmounted), then h/ and host.img's
loop device.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator

import psutil

from drivers.ext4alloc import EXT4_HASH_SEED
from simulator.errors import BackendUnavailable, LayerbenchError
from simulator.image import Image
from simulator.metrics import METRIC_KEYS
from simulator.ranges import RangeSet
from simulator.trace import Op

from .requirements import require_root, require_filesystems, require_tools
from .btrfs import apply_layer
from .replay import ReplayResult, bytes_to_write, replay
from .scratch import ScratchDir, guard_signals, sync_fs

TOOLS = ("mkfs.xfs", "mkfs.ext4", "losetup", "mount", "umount", "cp")
HOST_SLACK = 512 << 20  # host xfs room beyond the guest data (xfs log, AG headers)
SECTOR = 512  # /proc/diskstats counts 512-byte sectors
# linux/fiemap.h and linux/fs.h
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap), sizeof(struct fiemap) = 32
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_HEADER = struct.Struct("=QQLLLL")  # fm_start, fm_length, fm_flags, mapped, count, reserved
FIEMAP_EXTENT = struct.Struct("=QQQQQLLLL")  # logical, physical, length, 2 reserved, flags, 3 reserved
FIEMAP_BATCH = 512  # extents asked for per ioctl
FIEMAP_MAX = (1 << 64) - 1


def check_available(geteuid=os.geteuid, filesystems: str = "/proc/filesystems") -> None:
    """Raise BackendUnavailable (exit 3) with the reason when this cannot run here."""
    require_root("devicemapper", "loop devices, mount", geteuid)
    require_filesystems(("xfs", "ext4"), filesystems)
    require_tools(TOOLS, "xfsprogs, e2fsprogs, util-linux and coreutils")
    if not os.path.exists("/dev/loop-control"):
        raise BackendUnavailable("no loop devices (/dev/loop-control missing); try 'modprobe loop'")


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise LayerbenchError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# -- FIEMAP ------------------------------------------------------------------------------------

def fiemap(path: str) -> list[tuple[int, int, int, int]]:
    """Every extent of ``path`` as ``(logical, physical, length, flags)``, flushed first."""
    out: list[tuple[int, int, int, int]] = []
    start = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            buf = bytearray(FIEMAP_HEADER.size + FIEMAP_BATCH * FIEMAP_EXTENT.size)
            FIEMAP_HEADER.pack_into(buf, 0, start, FIEMAP_MAX - start, FIEMAP_FLAG_SYNC, 0, FIEMAP_BATCH, 0)
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
            mapped = FIEMAP_HEADER.unpack_from(buf, 0)[3]
            last = False
            for i in range(mapped):
                logical, physical, length, _, _, flags, *_ = FIEMAP_EXTENT.unpack_from(
                    buf, FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size)
                out.append((logical, physical, length, flags))
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if mapped == 0 or last:
                return out
            start = out[-1][0] + out[-1][2]
    finally:
        os.close(fd)


def physical(extents: list[tuple[int, int, int, int]]) -> RangeSet:
    return RangeSet((p, p + n) for _, p, n, _ in extents)


def new_vs_origin(extents: list[tuple[int, int, int, int]], origin: RangeSet) -> RangeSet:
    """Logical ranges of an image whose physical blocks its origin's map does not hold."""
    out = RangeSet()
    for logical, phys, length, _ in extents:
        for s, e in origin.gaps(phys, phys + length):
            out.add(logical + s - phys, logical + e - phys)
    return out


# -- the session -------------------------------------------------------------------------------

class ThinSession:
    """A reflink-capable host fs holding the image as a chain of guest-fs image files."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.scratch = ScratchDir("layerbench-thin-")
        self.path = self.scratch.path
        self.host = os.path.join(self.path, "h")
        self.guest = os.path.join(self.path, "g")
        self.top = ""

    # -- mounting: each recorded in the state file before it exists (scratch.py) --
    def _attach(self, img: str) -> str:
        self.scratch.will_attach(img)
        dev = _run("losetup", "-f", "--show", img).strip()
        self.scratch.attached(dev)
        return dev

    def _mount(self, dev: str, target: str, fstype: str) -> None:
        self.scratch.will_mount(target)
        _run("mount", "-t", fstype, dev, target)

    def open(self, host_size: int) -> None:
        """Host loop file, mkfs.xfs with reflink, mount; ``close`` undoes any part done."""
        os.mkdir(self.host)
        os.mkdir(self.guest)
        img = os.path.join(self.path, "host.img")
        with open(img, "wb") as f:
            f.truncate(host_size)
        dev = self._attach(img)
        _run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", dev)
        self._mount(dev, self.host, "xfs")

    def mkfs(self) -> str:
        """base.img: the base device, made as Docker's devicemapper makes it (DRIVERS.md 3)."""
        base = os.path.join(self.host, "base.img")
        with open(base, "wb") as f:
            f.truncate(int(self.options["base_size"]))
        if self.options["fs"] == "ext4":
            features = "has_journal" if self.options.get("journal", True) else "^has_journal"
            # the model's directory-hash seed: it places top-level directories (drivers/ext4alloc.py)
            _run("mkfs.ext4", "-q", "-F", "-O", features, "-E",
                 f"lazy_itable_init=0,lazy_journal_init=0,nodiscard,hash_seed={EXT4_HASH_SEED}", "-b", "4096", base)
        else:
            _run("mkfs.xfs", "-q", "-f", "-K", base)  # -K: no discard, as Docker's -E nodiscard
        sync_fs(self.host)
        self.top = base
        return base

    def snapshot(self, name: str) -> str:
        img = os.path.join(self.host, name + ".img")
        _run("cp", "--reflink=always", self.top, img)
        return img

    @contextmanager
    def mounted(self, img: str) -> Iterator[tuple[str, str]]:
        """``img`` loop-mounted on the guest mount point: (mount point, loop device).  On the
        way out: umount, detach, sync of the host fs (REAL_KERNEL 4a: before FIEMAP)."""
        dev = self._attach(img)
        try:
            self._mount(dev, self.guest, str(self.options["fs"]))
            try:
                yield self.guest, dev
            finally:
                self.scratch.release_mount(self.guest)
        finally:
            self.scratch.release_loop(img)
            sync_fs(self.host)

    def lay_image(self, image: Image) -> list[str]:
        images = [self.mkfs()]
        for k, layer in enumerate(image.layers):
            img = self.snapshot(f"L{k}")
            with self.mounted(img) as (root, _):
                apply_layer(layer, root)
            self.top = img
            images.append(img)
        return images

    def close(self) -> None:
        """Unmount, detach, delete the scratch, innermost first (``ScratchDir.close``)."""
        self.scratch.close()


def _loop_write_bytes(dev: str) -> int:
    name = os.path.basename(dev)
    counters = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
    return counters[name].write_bytes if name in counters else 0


@contextmanager
def thin_session(image: Image, options: dict[str, Any], extra_bytes: int = 0) -> Iterator[ThinSession]:
    """A host xfs with ``image`` laid down as reflinked guest images; torn down on every way out."""
    check_available()
    data = sum(e.size for layer in image.layers for e in layer.entries if e.type == "file")
    base = int(options["base_size"])
    with guard_signals():
        session = ThinSession(options)
        try:
            # sparse: room for mkfs's inode tables (1/64 of the device) and journal, the data
            # of every layer and what the containers write, each possibly unshared twice
            session.open(base // 8 + 4 * (data + extra_bytes) + HOST_SLACK)
            session.lay_image(image)
            yield session
        finally:
            session.close()


def measure_thin(image: Image, ops: list[Op], containers: int, options: dict[str, Any],
                 views: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """SPEC section 5 metrics of a workload on reflinked guest images, null where unobserved.
    ``views``, if given, receives each container's view after its operations."""
    from .overlay import tree_view

    written = bytes_to_write(ops)
    chunk = int(options["chunk_size"])
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    totals = ReplayResult()
    new_bytes = chunks = device_writes = 0
    seconds = 0.0  # reflink copy + guest mount + the operations: what est_seconds predicts
    with thin_session(image, options, written) as session:
        image_phys = RangeSet()
        for img in [os.path.join(session.host, "base.img")] + [
                os.path.join(session.host, f"L{k}.img") for k in range(len(image.layers))]:
            image_phys.update(physical(fiemap(img)))
        for c in range(containers):
            start = time.perf_counter()
            img = session.snapshot(f"C{c}")
            with session.mounted(img) as (root, dev):
                seconds += time.perf_counter() - start
                before = _loop_write_bytes(dev)
                result = replay(root, [op for op in ops if op.container == c])
                seconds += result.seconds
                if views is not None:
                    views[c] = tree_view(root)
                sync_fs(root)
            device_writes += _loop_write_bytes(dev) - before
            totals.add_counts(result)
            new = new_vs_origin(fiemap(img), image_phys)
            new_bytes += new.total()
            chunks += new.count_units(chunk)
    metrics.update(ops=totals.ops, failed_ops=totals.failed_ops, written_bytes=totals.written_bytes,
                   read_bytes=totals.read_bytes, cow_blocks=chunks, container_alloc_bytes=chunks * chunk,
                   container_physical_bytes=new_bytes, image_physical_bytes=image_phys.total(),
                   physical_bytes=new_bytes + image_phys.total(), device_write_bytes=device_writes,
                   real_seconds=seconds)
    return metrics


def view_thin(image: Image, ops: list[Op], container: int, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container ``container``'s view after its operations, read from its mounted image."""
    from .overlay import tree_view

    with thin_session(image, options) as session:
        with session.mounted(session.snapshot(f"C{container}")) as (root, _):
            replay(root, [op for op in ops if op.container == container])
            return tree_view(root)
