"""fuse-overlayfs: a second, user-space implementation of overlay, checked like the kernel's.

Same layout as the kernel backend (``overlay.py``: lower layers in overlay form on a scratch
tmpfs, one upper/work/merged triple per container), mounted with ``fuse-overlayfs -o
lowerdir=...,upperdir=...,workdir=...``.  Each merged dir is recorded in the run's state
file before ``fuse-overlayfs`` runs (``scratch.ScratchDir.will_mount``) and released with
umount2(2), which for root is what ``fusermount3 -u`` does (lazily when busy); the daemon
then exits by itself (checked here: gone within 0.2 s).  The daemon is not our child and
survives a SIGKILL of the run, holding its mount; ``layerbench cleanup`` unmounts it like
any listed mount, the FUSE mount before the tmpfs below it.  What differs from the kernel
(REAL_KERNEL.md section 2, fuse-overlayfs 1.10 here):

* there is no metacopy and no redirect_dir: only the overlay model's *default* option set
  is comparable (a directory rename of a lower dir fails with EXDEV, as the kernel's does);
* an opaque directory gets ``trusted.overlay.opaque="y"`` *and* an AUFS-style ``.wh..opq``
  char 0/0 device plus an empty ``.wh..wh..opq`` file: every ``.wh..*`` name is a marker,
  not a whiteout or a file, and is left out of the counts;
* copy-up I/O is charged to the daemon, not the workload, so no device bytes are reported.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from simulator.errors import BackendUnavailable, LayerbenchError
from simulator.image import Image
from simulator.metrics import METRIC_KEYS
from simulator.trace import Op

from .requirements import require_tools
from .overlay import (TMPFS_SHARE_OF_AVAILABLE, Scratch, image_data_bytes, materialize_image, terminate_raises,
                      tree_view, upper_stats)
from .replay import ReplayResult, bytes_to_write, replay

MARKER_PREFIX = ".wh."  # fuse-overlayfs's AUFS-style opaque markers (.wh..opq, .wh..wh..opq)


def check_available() -> None:
    if os.geteuid() != 0:
        raise BackendUnavailable("the fuse-overlayfs backend needs root (tmpfs, chroot, trusted.* xattrs)")
    require_tools(("fuse-overlayfs", "fusermount3"), "fuse-overlayfs and fuse3")
    if not os.path.exists("/dev/fuse"):
        raise BackendUnavailable("no /dev/fuse; try 'modprobe fuse'")


def measure_fuse(image: Image, ops: list[Op], containers: int,
                 views: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """SPEC section 5 metrics on fuse-overlayfs, null where it does not tell."""
    check_available()
    import psutil

    written = bytes_to_write(ops)
    room = psutil.virtual_memory().available // TMPFS_SHARE_OF_AVAILABLE
    if image_data_bytes(image) + written > room:
        raise BackendUnavailable("the image and workload do not fit in the tmpfs that can be spared here")
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    totals = ReplayResult()
    space = dict(container_files=0, container_data_bytes=0, container_alloc_bytes=0, whiteouts=0, opaque_dirs=0)
    seconds = 0.0
    with terminate_raises():
        scratch = Scratch(room)
        try:
            lowers = [os.path.join(scratch.path, rel) for rel in materialize_image(image, scratch.path)]
            for c in range(containers):
                base = os.path.join(scratch.path, "c", str(c))
                os.makedirs(base)
                u, w, m = (os.path.join(base, p) for p in ("u", "w", "m"))
                for p in (u, w, m):
                    os.mkdir(p, 0o755)
                start = time.perf_counter()
                scratch.dir.will_mount(m)  # before the daemon mounts: see scratch.py
                done = subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={':'.join(lowers)},upperdir={u},"
                                       f"workdir={w}", m], capture_output=True, text=True)
                if done.returncode:
                    raise LayerbenchError(f"fuse-overlayfs: {done.stderr.strip()}")
                seconds += time.perf_counter() - start
                result = replay(m, [op for op in ops if op.container == c])
                seconds += result.seconds
                totals.add_counts(result)
                if views is not None:
                    views[c] = tree_view(m)
                scratch.umount(m)
                found = upper_stats(u, skip_prefix=MARKER_PREFIX)
                for key in space:  # metacopy and redirects are the kernel's xattrs: not told
                    space[key] += found[key]
        finally:
            scratch.close()  # the FUSE mounts still listed first, then the tmpfs
    metrics.update(ops=totals.ops, failed_ops=totals.failed_ops, written_bytes=totals.written_bytes,
                   read_bytes=totals.read_bytes, real_seconds=seconds, **space)
    return metrics
