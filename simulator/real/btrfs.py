"""The real btrfs backend: the image as subvolume snapshots on a loop file, measured.

Layout (REAL_KERNEL.md section 3), in a fresh scratch directory (``scratch.ScratchDir``) on
tmpfs (``/dev/shm``) when memory allows, else on the host fs::

    <scratch>/bt.img      sparse loop file, mkfs.btrfs -s sector -n node -m dup|single
    <scratch>/m/          its mount (-o max_inline=N); quotas on only to measure space
        L0 .. L<k>        layer k: a snapshot of layer k-1 with layer k's entries applied
                          (whiteouts and opaque dirs become deletions: btrfs layers are
                          full snapshots, not overlay form)
        C0 .. C<n-1>      container i: a snapshot of the top layer; its ops replayed there

Measuring (each pitfall measured on kernel 6.18 here): ``syncfs`` of the btrfs mount first
(``scratch.sync_fs``), since qgroups change only at transaction commit; then ``btrfs
filesystem du --raw -s C<i>`` gives the exclusive *data* bytes (referenced part of unshared
extents, at sector granularity; inline files are 0) and ``btrfs qgroup show -re --raw``
the exclusive data extents (whole, bookends included) plus metadata tree blocks (node size,
counted once although DUP).

Why tmpfs under the loop file (measured here, kernel 6.18, a 2-core VM other sessions
share): on the host's ext4 (``/tmp``, a virtio disk) every btrfs flush (fsync, commit)
reaches the loop driver as a flush of ``bt.img``, i.e. an ext4 fsync and a flush of the
virtual disk, whose latency is the other sessions' I/O, not btrfs's.  The held-out
package-install (604 fsyncs) took a median 609-713 ms there (two runs of 5) against 423 ms
with the loop file on tmpfs, and the 9 held-out workloads spread 4-248% ((max - min) / min
over 5 runs) against 9-52%.  ``real_seconds`` should price btrfs's own work, as the overlay backend (upper on
tmpfs) prices overlayfs's; ``LAYERBENCH_SCRATCH`` or ``TMPDIR``, when set, still decide.

Every mount and loop device is undone on every path out: ``try/finally`` and SIGTERM
raised as ``SystemExit`` (``scratch.guard_signals``); the cwd is never inside the mount.
The loop file and the mount are recorded in a state file before they exist
(``scratch.ScratchDir``), so ``layerbench cleanup`` releases them after a SIGKILL too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator

from simulator.errors import BackendUnavailable, LayerbenchError
from simulator.image import Image, Layer
from simulator.metrics import METRIC_KEYS
from simulator.trace import Op

from .requirements import require_root, require_filesystems, require_tools
from .replay import ReplayResult, bytes_to_write, create_filled, replay
from .scratch import SCRATCH_ENV, ScratchDir, guard_signals, sync_fs

MIN_LOOP_BYTES = 1 << 30  # sparse: mkfs.btrfs wants room for DUP metadata chunks
SETTLE_TRIES = 20  # sync + re-read qgroups until two reads agree, at most this often
SETTLE_SECONDS = 0.02  # let the cleaner thread run delayed iputs between two syncs
TOOLS = ("mkfs.btrfs", "btrfs", "losetup", "mount", "umount")
MEMORY_SCRATCH = "/dev/shm"  # a tmpfs on every systemd/Debian host: the loop file's home (above)
MEMORY_SHARE_OF_AVAILABLE = 2  # the loop file may fill at most 1/2 of available memory
LOOP_METADATA_BYTES = 64 << 20  # mkfs + DUP metadata chunks + trees, beyond twice the data


def _memory_scratch(data_bytes: int, mounts: str = "/proc/self/mounts") -> str | None:
    """A fresh scratch path on tmpfs for a loop file holding ``data_bytes``, or None (the
    usual scratch) when ``LAYERBENCH_SCRATCH`` or ``TMPDIR`` says where scratch goes, there
    is no tmpfs, or too little memory."""
    if os.environ.get(SCRATCH_ENV) or os.environ.get("TMPDIR"):
        return None
    try:
        with open(mounts) as f:
            if not any(line.split()[1:3] == [MEMORY_SCRATCH, "tmpfs"] for line in f):
                return None
    except OSError:
        return None
    import psutil

    if 2 * data_bytes + LOOP_METADATA_BYTES > psutil.virtual_memory().available // MEMORY_SHARE_OF_AVAILABLE:
        return None
    return os.path.join(MEMORY_SCRATCH, f"layerbench-btrfs-{secrets.token_hex(8)}")


def check_available(geteuid=os.geteuid, filesystems: str = "/proc/filesystems") -> None:
    """Raise BackendUnavailable (exit 3) with the reason when btrfs cannot run here."""
    require_root("btrfs", "loop devices, mount", geteuid)
    require_filesystems(("btrfs",), filesystems)
    require_tools(TOOLS, "btrfs-progs and util-linux")


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise LayerbenchError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _rm_rf(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(layer: Layer, root: str) -> None:
    """Make the snapshot at ``root`` the merged view with ``layer`` on top (OCI rules:
    whiteouts and opaque directories hide lower entries before the layer's own entries)."""
    for e in layer.entries:
        if e.type == "whiteout":
            _rm_rf(root + e.path)
        elif e.type == "dir" and e.opaque and os.path.isdir(root + e.path):
            for name in os.listdir(root + e.path):
                _rm_rf(os.path.join(root + e.path, name))
    for e in layer.entries:
        real = root + e.path
        parent = os.path.dirname(e.path)
        if parent != "/" and not os.path.isdir(root + parent):
            # implicit parents, of a whiteout too: mode 0o755 (SPEC section 3); the layer's tar
            # holds the directory the whiteout sits in, so the merged view has it
            os.makedirs(root + parent, 0o755)
        if e.type == "whiteout":
            continue
        if e.type == "dir":
            if not os.path.isdir(real) or os.path.islink(real):
                _rm_rf(real)
                os.mkdir(real)
            _set_attrs(real, e.mode, e.uid, e.gid)
            continue
        _rm_rf(real)
        if e.type == "file":
            create_filled(real, e.size, e.uid, e.gid, e.mode)
        elif e.type == "hardlink":
            os.link(root + e.target, real)  # type: ignore[operator]
        else:
            os.symlink(e.target, real)  # type: ignore[arg-type]
            os.chown(real, e.uid, e.gid, follow_symlinks=False)


def _set_attrs(path: str, mode: int, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)  # chown first: it clears set-id bits
    os.chmod(path, mode)


class BtrfsSession:
    """A loop-mounted btrfs holding the image as snapshots; containers snapshot its top."""

    def __init__(self, options: dict[str, Any], data_bytes: int = 0):
        self.options = options
        self.scratch = ScratchDir("layerbench-btrfs-", _memory_scratch(data_bytes))
        self.path = self.scratch.path
        self.mnt = os.path.join(self.path, "m")
        self.img = os.path.join(self.path, "bt.img")
        self.top = ""

    def open(self, size: int) -> None:
        """Loop file, mkfs, mount; ``close`` undoes whatever part was done."""
        options = self.options
        page = os.sysconf("SC_PAGE_SIZE")
        if int(options["sector_size"]) > page:
            raise BackendUnavailable(f"btrfs with sector_size={options['sector_size']} cannot be mounted on "
                                     f"this kernel (page size {page}); use --backend sim")
        os.mkdir(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(max(MIN_LOOP_BYTES, size))
        self.scratch.will_attach(self.img)  # recorded before it exists: see scratch.py
        device = _run("losetup", "-f", "--show", self.img).strip()
        self.scratch.attached(device)
        _run("mkfs.btrfs", "-q", "-f", "-s", str(options["sector_size"]), "-n", str(options["node_size"]),
             "-m", "dup" if options["metadata_dup"] else "single", device)
        self.scratch.will_mount("m")
        _run("mount", "-t", "btrfs", "-o", f"max_inline={options['max_inline']}", device, self.mnt)

    def lay_image(self, image: Image) -> None:
        for k, layer in enumerate(image.layers):
            sub = os.path.join(self.mnt, f"L{k}")
            if k:
                _run("btrfs", "subvolume", "snapshot", self.top, sub)
            else:
                _run("btrfs", "subvolume", "create", sub)
            apply_layer(layer, sub)
            self.top = sub

    def start(self, container: int) -> str:
        sub = os.path.join(self.mnt, f"C{container}")
        _run("btrfs", "subvolume", "snapshot", self.top, sub)
        return sub

    def usage(self, containers: int) -> list[dict[str, int]]:
        """Per container: fi du total/exclusive and qgroup referenced/exclusive, after sync.

        Quotas are enabled only here, after the timed part: with quotas on, every delayed
        extent reference runs qgroup accounting (a backref walk over the snapshots), which
        made the same chmod of 844 image files take 16-20 ms or 27-51 ms, and rm -rf of
        them 40 ms or 63-70 ms (measured here, kernel 6.18); Docker's btrfs driver enables
        quotas only for a size limit.  The figures are a rescan's (below), which recomputes
        them from the committed trees, so enabling late reads the same numbers."""
        _run("btrfs", "quota", "enable", self.mnt)
        qgroups = self._settled_qgroups()
        out = []
        for c in range(containers):
            sub = os.path.join(self.mnt, f"C{c}")
            total, exclusive = (int(x) for x in _run("btrfs", "filesystem", "du", "--raw", "-s", sub)
                                .splitlines()[1].split()[:2])
            ref, excl = qgroups[f"C{c}"]
            out.append({"du_total": total, "du_exclusive": exclusive, "qgroup_referenced": ref,
                        "qgroup_exclusive": excl})
        return out

    def _qgroups(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for line in _run("btrfs", "qgroup", "show", "-re", "--raw", self.mnt).splitlines()[2:]:
            fields = line.split()
            if len(fields) >= 6:
                out[fields[-1]] = (int(fields[1]), int(fields[2]))
        return out

    def _settled_qgroups(self) -> dict[str, tuple[int, int]]:
        """qgroups after ``sync`` once nothing changes between two commits.  One sync is
        not always enough (measured here): a file unlinked while the writeback that a
        flush-on-close started was in flight is freed by a delayed iput, in the *next*
        transaction, so its extent showed in the qgroup until a second sync."""
        sync_fs(self.mnt)
        last = self._qgroups()
        for _ in range(SETTLE_TRIES):
            time.sleep(SETTLE_SECONDS)
            sync_fs(self.mnt)
            now = self._qgroups()
            if now == last:
                break
            last = now
        # The live counters are not the figure (measured here, kernel 6.18): identical runs
        # of one append workload read 2, 3 or 7 metadata nodes exclusive per container, while
        # the container's fs tree owned 6 blocks every time; a rescan, which recomputes each
        # extent's referencing roots from the committed trees, read those 6 every time.
        _run("btrfs", "quota", "rescan", "-w", self.mnt)
        return self._qgroups()

    def close(self) -> None:
        """Unmount, detach the loop device, delete the scratch (``ScratchDir.close``)."""
        self.scratch.close()


@contextmanager
def btrfs_session(image: Image, options: dict[str, Any], extra_bytes: int = 0) -> Iterator[BtrfsSession]:
    """A btrfs loop file with ``image`` laid down; torn down on every way out."""
    check_available()
    data = sum(e.size for layer in image.layers for e in layer.entries if e.type == "file")
    with guard_signals():
        session = BtrfsSession(options, data + extra_bytes)
        try:
            session.open(2 * (data + extra_bytes) + MIN_LOOP_BYTES)
            session.lay_image(image)
            # Commit the image before any container starts (measured here, kernel 6.18): a
            # snapshot flushes the source subvolume's delalloc and commits the transaction,
            # so without this the first container's start wrote the whole top layer's data
            # (45-70 ms instead of 6-10 ms on a 16 MB image) and real_seconds priced laying
            # the image, which est_seconds does not and an image pulled long ago never costs.
            sync_fs(session.mnt)
            yield session
        finally:
            session.close()


def measure_btrfs(image: Image, ops: list[Op], containers: int, options: dict[str, Any],
                  views: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """SPEC section 5 metrics of a workload on the real btrfs, null where btrfs does not
    tell; ``qgroup_exclusive_bytes`` (data extents whole + metadata once) is added.
    ``views``, if given, receives each container's view after its operations."""
    from .overlay import tree_view

    written = bytes_to_write(ops)
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    totals = ReplayResult()
    seconds = 0.0  # snapshot of the top layer + the operations: what est_seconds predicts
    with btrfs_session(image, options, written) as session:
        for c in range(containers):
            start = time.perf_counter()
            root = session.start(c)
            seconds += time.perf_counter() - start
            result = replay(root, [op for op in ops if op.container == c])
            seconds += result.seconds
            totals.add_counts(result)
        usage = session.usage(containers)
        if views is not None:  # after measuring: listing a directory updates its atime (relatime),
            for c in range(containers):  # which CoWs its inode's leaf (measured: +4 nodes each)
                views[c] = tree_view(os.path.join(session.mnt, f"C{c}"))
    metrics.update(ops=totals.ops, failed_ops=totals.failed_ops, written_bytes=totals.written_bytes,
                   read_bytes=totals.read_bytes,
                   container_alloc_bytes=sum(u["du_exclusive"] for u in usage), real_seconds=seconds,
                   qgroup_exclusive_bytes=sum(u["qgroup_exclusive"] for u in usage))
    return metrics


def view_btrfs(image: Image, ops: list[Op], container: int, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container ``container``'s view after its operations, read from its snapshot."""
    from .overlay import tree_view

    with btrfs_session(image, options) as session:
        root = session.start(container)
        replay(root, [op for op in ops if op.container == container])
        return tree_view(root)
