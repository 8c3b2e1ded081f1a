"""Real-kernel backends: the same cell on the real thing, for checking the simulator.

``run_real`` and ``view_real`` mirror ``simulator.runner.run_cell`` and ``view_cell``: the
same inputs, validated the same way before any work, and the same record shape with
``backend: "real"``.  overlay, btrfs and devicemapper (``thin.py``) have one.  The record's
``sim_seconds`` is the wall time of the whole real run; ``real_seconds`` only that of starting
the containers (overlay: the mount) and of their operations (timed inside the replaying
child), which is what ``est_seconds`` predicts; metrics the kernel does not expose
are null.  Two extra keys say what the upperdirs hold: ``metacopy_files``, ``redirect_dirs``.
"""

from __future__ import annotations

import time
from typing import Any

from simulator.errors import BackendUnavailable, BadInput
from simulator.metrics import METRIC_KEYS
from simulator.runner import Cell, Prepared, prepare, record

from .replay import ReplayResult, bytes_to_write, replay

REAL_DRIVERS = ("overlay", "btrfs", "devicemapper")
UPPER_KEYS = ("container_files", "container_data_bytes", "container_alloc_bytes", "whiteouts", "opaque_dirs",
              "metacopy_files", "redirect_dirs")


def _prepared(cell: Cell) -> Prepared:
    prepared = prepare(cell)  # bad input first: exit 2 beats exit 3
    if cell.driver not in REAL_DRIVERS:
        raise BackendUnavailable(f"no real backend for driver {cell.driver} yet")
    for i, op in enumerate(prepared.ops, 1):
        if op.kind == "commit" and cell.driver != "overlay":
            raise BadInput(f"{cell.workload}: operation {i} is a commit, which the real {cell.driver} "
                           f"backend does not support (use --backend sim)")
    return prepared


def run_real(cell: Cell) -> dict[str, Any]:
    """Run ``cell`` on the real kernel; the record ``layerbench run --backend real`` prints."""
    start = time.perf_counter()
    prepared = _prepared(cell)
    metrics = measure_prepared(prepared, cell.containers)
    metrics["sim_seconds"] = time.perf_counter() - start
    return record(cell, prepared.driver.options, metrics, backend="real")


def measure_prepared(prepared: Prepared, containers: int,
                     views: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The metrics of already validated inputs (the tests shrink failing traces with it);
    ``views``, if given, receives each container's view after its operations."""
    if prepared.driver.name == "btrfs":
        from .btrfs import measure_btrfs

        return measure_btrfs(prepared.image, prepared.ops, containers, prepared.driver.options, views)
    if prepared.driver.name == "devicemapper":
        from .thin import measure_thin

        return measure_thin(prepared.image, prepared.ops, containers, prepared.driver.options, views)
    from .overlay import overlay_session, tree_view, upper_stats

    totals = ReplayResult()
    space = dict.fromkeys(UPPER_KEYS, 0)
    seconds = 0.0
    with overlay_session(prepared.image, prepared.driver.options, bytes_to_write(prepared.ops)) as session:
        for c in range(containers):
            start = time.perf_counter()
            root = session.start(c)
            seconds += time.perf_counter() - start
            root, result = _replay_overlay(session, prepared, c, root)
            seconds += result.seconds
            totals.add_counts(result)
            if views is not None:
                views[c] = tree_view(root)
            session.scratch.umount(f"c/{c}/m")  # the upperdir is final once unmounted
            for key, value in upper_stats(session.path(c, "u")).items():
                space[key] += value
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    metrics.update(ops=totals.ops, failed_ops=totals.failed_ops, written_bytes=totals.written_bytes,
                   read_bytes=totals.read_bytes, real_seconds=seconds, **space)
    return metrics


def view_real(cell: Cell, container: int = 0) -> dict[str, dict[str, Any]]:
    """Container ``container``'s view after the workload, read from the real mount."""
    prepared = _prepared(cell)
    if not 0 <= container < cell.containers:
        raise BadInput(f"--container {container}: only {cell.containers} container(s) run")
    return view_prepared(prepared, container)


def view_prepared(prepared: Prepared, container: int = 0) -> dict[str, dict[str, Any]]:
    if prepared.driver.name == "btrfs":
        from .btrfs import view_btrfs

        return view_btrfs(prepared.image, prepared.ops, container, prepared.driver.options)
    if prepared.driver.name == "devicemapper":
        from .thin import view_thin

        return view_thin(prepared.image, prepared.ops, container, prepared.driver.options)
    from .overlay import overlay_session, tree_view

    with overlay_session(prepared.image, prepared.driver.options, bytes_to_write(prepared.ops)) as session:
        root = session.start(container)  # containers are independent: replay only this one
        root, _ = _replay_overlay(session, prepared, container, root)
        return tree_view(root)


def _replay_overlay(session, prepared: Prepared, container: int, root: str) -> tuple[str, ReplayResult]:
    """Replay one container's operations, committing (``OverlaySession.commit``) where the
    trace says; which commits fail is planned over the whole trace (``plan_commits``)."""
    from .overlay_commit import plan_commits

    plan = plan_commits(prepared.ops, 1 + max((op.container for op in prepared.ops), default=0),
                        [layer.id for layer in prepared.image.layers], len(prepared.image.layers),
                        prepared.driver.layer_limit())
    total = ReplayResult()
    segment: list = []
    for i, op in enumerate(prepared.ops):
        if op.container != container:
            continue
        if op.kind != "commit":
            segment.append(op)
            continue
        if segment:
            _add(total, replay(root, segment))
        segment = []
        total.ops += 1
        if plan[i] is None:
            total.failed_ops += 1
        else:
            root = session.commit(container)
    if segment:
        _add(total, replay(root, segment))
    return root, total


def _add(total: ReplayResult, part: ReplayResult) -> None:
    for key, value in vars(part).items():
        setattr(total, key, getattr(total, key) + value)
