"""Replay a workload on a driver and compute every metric: the pure core of a run.

``simulate`` takes a constructed driver (so this module imports no driver), lays the image
down as the driver's read-only layers, starts N containers on it, replays the operations
and reads the driver's state at the end.  It does no I/O and reads no clock: wall time and
memory are measured one layer up (``simulator.runner``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .costcounts import estimate_counts
from .costmodel import CostModel
from .errors import BadInput
from .image import Image
from .imagetree import ImageFile, ImageTree
from .metrics import depth_stats, ratio
from .namespace import FsError, Namespace
from .operations import OPERATIONS
from .replicas import Replicas
from .statruns import stat_run
from .trace import Op
from .treelisting import walk_opened
from .viewstats import private_inodes
from .writeruns import WRITE_KINDS, WriteRuns

MAX_CONTAINERS = 100_000
OPENING_OPS = frozenset({"create", "write", "append", "read", "open", "fsync"})  # open + close a file


def container_id(index: int, generation: int = 0) -> str:
    return f"container-{index}" if not generation else f"container-{index}.{generation}"


def check_workload(ops: Sequence[Op], containers: int, source: str = "workload") -> None:
    """Refuse, before any work, operations addressed to containers that do not exist."""
    if not 1 <= containers <= MAX_CONTAINERS:
        raise BadInput(f"--containers {containers}: must be between 1 and {MAX_CONTAINERS}")
    if isinstance(ops, Replicas):
        ops = ops[:ops.replicas]  # every container it addresses, first to last
    for i, op in enumerate(ops, 1):
        if op.container >= containers:
            raise BadInput(f"{source}: operation {i} ({op.kind}) names container {op.container}, "
                           f"but only {containers} run (numbered 0..{containers - 1})")


class Run:
    """The state of one replay: the driver, its containers and the running totals."""

    def __init__(self, driver, image: Image, containers: int, tree: ImageTree | None = None):
        self.driver = driver
        self.image = image
        parent = None
        for layer in image.layers:
            driver.create(layer.id, parent, layer)
            parent = layer.id
        self.top = parent
        if tree is not None:
            driver.use_tree(parent, tree)
        self.generation = [0] * containers
        self.mounts = []
        for c in range(containers):
            driver.create_read_write(container_id(c), parent)
            self.mounts.append(driver.get(container_id(c)))
        self.base_tree = self.mounts[0].ns.tree
        self.ops = self.failed = self.opens = 0
        self.retired: list[Namespace] = []  # namespaces replaced by a commit
        driver.counting = True

    def namespace(self, container: int) -> Namespace:
        return self.mounts[container].ns

    def apply(self, op: Op) -> bool:
        """Replay one operation; False when it was refused."""
        self.ops += 1
        self.opens += op.kind in OPENING_OPS
        try:
            if op.kind == "commit":
                self._commit(op)
            elif OPERATIONS[op.kind](self.mounts[op.container].ns, op) is False:
                self.failed += 1
                return False
            return True
        except FsError:
            self.failed += 1
            return False

    def replay(self, ops: Iterable[Op]) -> None:
        """Replay ``ops`` in order (refused ones count in ``failed_ops``): ``apply`` for each,
        with the lookups it repeats per operation hoisted out of the loop, writes to
        files the container already owns queued and answered per file
        (``simulator.writeruns``), and runs of stats answered together
        (``simulator.statruns``); each module says why that is exact."""
        operations, opening, mounts = OPERATIONS, OPENING_OPS, self.mounts
        spaces = [m.ns for m in mounts]
        runs = WriteRuns(len(mounts))
        hot = runs.hot
        stats: list[str] = []  # a run of stats of container ``stat_container`` (simulator.statruns)
        stat_container = 0
        n = failed = opens = 0
        try:
            for n, op in enumerate(ops, 1):
                kind = op.kind
                if kind == "stat":
                    if stats and op.container == stat_container:
                        stats.append(op.path)
                        continue
                    if stats:
                        failed += stat_run(spaces[stat_container], stats)
                    elif runs.active and not runs.passes(spaces[op.container], op):
                        runs.flush()
                    stats = [op.path]
                    stat_container = op.container
                    continue
                if stats:
                    failed += stat_run(spaces[stat_container], stats)
                    stats = []
                if kind in opening:
                    opens += 1
                    length = op.length
                    if kind in WRITE_KINDS and length:
                        path_run = hot[op.container].get(op.path) \
                            or runs.remember(op.container, spaces[op.container], op.path)
                        if path_run is not None:
                            path_run.count += 1
                            file = path_run.file
                            start = file.size if kind == "append" else op.offset
                            end = start + length
                            if end > file.size:
                                file.size = end
                            file.starts.append(start)
                            file.ends.append(end)
                            file.kind = kind
                            continue
                if runs.active and not runs.passes(spaces[op.container], op):
                    runs.flush()
                try:
                    if kind == "commit":
                        self._commit(op)
                        spaces[op.container] = mounts[op.container].ns
                    elif operations[kind](spaces[op.container], op) is False:
                        failed += 1
                except FsError:
                    failed += 1
        finally:
            if stats:
                failed += stat_run(spaces[stat_container], stats)
            if runs.active:
                runs.flush()
            self.ops += n
            self.failed += failed
            self.opens += opens

    def _commit(self, op: Op) -> None:
        c = op.container
        old = self.mounts[c]
        self.generation[c] += 1
        gen = self.generation[c]
        layer_id = op.layer or f"{container_id(c)}-commit-{gen}"
        try:
            self.mounts[c] = self.driver.commit(old.id, layer_id, container_id(c, gen))
        except FsError:
            self.generation[c] -= 1
            raise
        self.retired.append(old.ns)

    def finish(self, cost: CostModel) -> dict[str, Any]:
        for mount in self.mounts:
            mount.ns.flush(timed=False)
        driver, tally = self.driver, self.driver.tally
        space = driver.space()
        namespaces = self.retired + [m.ns for m in self.mounts]
        written = sum(ns.written_bytes for ns in namespaces)
        read = sum(ns.read_bytes for ns in namespaces)
        lookups = sum(ns.lookups for ns in namespaces)
        ideal = self._ideal_bytes()
        physical = space.image_physical_bytes + space.container_physical_bytes
        depth = depth_stats(driver.depth_hist)
        probes = sum(d * n for d, n in driver.depth_hist.items()) + tally.probes
        mounts = len(self.mounts) + tally.commits + tally.remounts
        mounted_layers = sum(m.ns.tree.depth for m in self.mounts) + tally.commits
        metrics: dict[str, Any] = {
            "ops": self.ops, "failed_ops": self.failed, "written_bytes": written, "read_bytes": read,
            "copyup_count": tally.copyup_count, "copyup_meta_count": tally.copyup_meta_count,
            "copyup_bytes": tally.copyup_bytes, "cow_blocks": space.cow_blocks,
            "whiteouts": space.whiteouts, "opaque_dirs": space.opaque_dirs,
            "container_files": space.container_files, "container_data_bytes": space.container_data_bytes,
            "container_alloc_bytes": space.container_alloc_bytes,
            "image_physical_bytes": space.image_physical_bytes,
            "container_physical_bytes": space.container_physical_bytes,
            "physical_bytes": physical, "ideal_bytes": ideal, "space_amplification": ratio(physical, ideal),
            "device_write_bytes": tally.device_write_bytes,
            "write_amplification": ratio(tally.device_write_bytes, written),
            "lookups": lookups, **depth,
            "page_cache_bytes": space.page_cache_bytes,
            "commit_bytes": tally.commit_bytes, "commit_files_scanned": tally.commit_files_scanned,
        }
        metrics["est_seconds"] = cost.estimate(
            ops=self.ops, probes=probes, copyup_bytes=tally.copyup_bytes,
            copyups=tally.copyup_count + tally.copyup_meta_count,
            device_write_bytes=tally.device_write_bytes, metadata_ops=tally.metadata_ops,
            fsyncs=tally.fsyncs, mounts=mounts, mounted_layers=mounted_layers,
            diff_files=tally.commit_files_scanned, perm_checks=tally.perm_checks,
            written_bytes=written, read_bytes=read, opens=self.opens,
            **estimate_counts(ns.cost for ns in namespaces))
        return metrics

    def _ideal_bytes(self) -> int:
        """The image's visible bytes once, plus each container's still-visible own bytes:
        new files whole, inherited files only their written ranges.  Files of a layer the
        container committed count whole, as that layer stores them."""
        base_depth = self.base_tree.depth
        ideal = self.base_tree.stats.file_bytes
        for mount in self.mounts:
            ns = mount.ns
            for inode in private_inodes(ns):
                origin = inode.origin
                if origin is None or origin.layer >= base_depth:
                    ideal += inode.size
                else:
                    ideal += inode.written.overlap(0, inode.size)
            if ns.tree.depth > base_depth:
                seen: set[int] = set()
                for path, node in walk_opened(ns.tree):  # unopened directories hold only image files
                    if node.__class__ is ImageFile and node.layer >= base_depth and id(node) not in seen:
                        if ns.exists(path) is node:
                            seen.add(id(node))
                            ideal += node.size
        return ideal


def simulate(driver, image: Image, ops: Iterable[Op], containers: int = 1,
             cost: CostModel | None = None, tree: ImageTree | None = None) -> dict[str, Any]:
    """Every SPEC section 5 metric but the simulator's own time and memory."""
    run = Run(driver, image, containers, tree)
    run.replay(ops)
    return run.finish(cost or CostModel())
