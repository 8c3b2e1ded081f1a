"""The real vfs backend: every container a full copy of the image, on a scratch tmpfs.

moby's vfs driver makes each layer and container with ``copy.DirCopy(parent, new)``: a
complete, independent tree.  Here the image's merged view is laid down once as a plain
directory (OCI rules applied layer by layer, as the btrfs backend does inside its
snapshots), and each container starts as ``cp -a`` of it, timed as the container's start.
The workload then runs in the copy with the shared replayer.  Measured on the copy (tmpfs:
exact page counts, no xattr blocks, no reflinks, REAL_KERNEL.md section 1)::

    <scratch>/            tmpfs on a fresh scratch directory (``overlay.Scratch``: recorded
                          in a state file before the mount, see ``scratch.py``)
        image/            the merged image view
        c/<i>/            container i: cp -a image c/<i>

``container_files`` (distinct inodes: a hard link once), ``container_data_bytes`` (their
apparent sizes) and ``container_alloc_bytes`` (``st_blocks * 512``) come from walking the
copies after the workload; ops and bytes from the replay.  ``cp -a`` keeps hard links and
would keep holes, but image files are written densely, so a copy holds every page, as
``DirCopy`` (``copyRegular`` falls back to a plain copy on tmpfs, which has no FICLONE).
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator

from simulator.errors import BackendUnavailable, LayerbenchError
from simulator.image import Image
from simulator.metrics import METRIC_KEYS
from simulator.trace import Op

from .requirements import require_root
from .btrfs import apply_layer
from .overlay import TMPFS_SHARE_OF_AVAILABLE, Scratch, image_data_bytes, terminate_raises, tree_view, upper_stats
from .replay import ReplayResult, bytes_to_write, replay


def check_available() -> None:
    require_root("vfs", "tmpfs mount, chroot, chown")


class VfsSession:
    """The image laid down once; ``start`` copies it for a container."""

    def __init__(self, scratch: Scratch):
        self.scratch = scratch
        self.image = os.path.join(scratch.path, "image")
        os.mkdir(self.image, 0o755)
        os.mkdir(os.path.join(scratch.path, "c"))

    def lay_image(self, image: Image) -> None:
        for layer in image.layers:
            apply_layer(layer, self.image)

    def start(self, container: int) -> str:
        root = os.path.join(self.scratch.path, "c", str(container))
        done = subprocess.run(["cp", "-a", self.image, root], capture_output=True, text=True)
        if done.returncode:
            raise LayerbenchError(f"cp -a {self.image} {root}: {done.stderr.strip()}")
        return root


@contextmanager
def vfs_session(image: Image, extra_bytes: int) -> Iterator[VfsSession]:
    """Scratch tmpfs with the image's merged view; torn down on every way out."""
    check_available()
    import psutil

    room = psutil.virtual_memory().available // TMPFS_SHARE_OF_AVAILABLE
    need = image_data_bytes(image) + extra_bytes
    if need > room:
        raise BackendUnavailable(f"the image copies and workload need about {need} bytes of tmpfs, "
                                 f"but only {room} bytes can be spared here")
    with terminate_raises():
        scratch = Scratch(room)
        try:
            session = VfsSession(scratch)
            session.lay_image(image)
            yield session
        finally:
            scratch.close()


def measure_vfs(image: Image, ops: list[Op], containers: int,
                views: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """SPEC section 5 metrics of the workload on full copies, null where not observed;
    ``views`` (if given) receives each container's view after its operations."""
    written = bytes_to_write(ops)
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    totals = ReplayResult()
    space = dict(container_files=0, container_data_bytes=0, container_alloc_bytes=0)
    seconds = 0.0  # the copy (the container's start) + the operations
    with vfs_session(image, containers * image_data_bytes(image) + written) as session:
        for c in range(containers):
            start = time.perf_counter()
            root = session.start(c)
            seconds += time.perf_counter() - start
            result = replay(root, [op for op in ops if op.container == c])
            seconds += result.seconds
            totals.add_counts(result)
            if views is not None:
                views[c] = tree_view(root)
            found = upper_stats(root)  # a plain tree: its regular files are what counts
            for key in space:
                space[key] += found[key]
    metrics.update(ops=totals.ops, failed_ops=totals.failed_ops, written_bytes=totals.written_bytes,
                   read_bytes=totals.read_bytes, real_seconds=seconds, **space)
    return metrics
