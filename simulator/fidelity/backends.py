"""Both sides of a fidelity case: the simulator, and each real counterpart of a driver.

A *backend* here is one real thing a driver's numbers can be checked against on this
machine, with the metrics it can observe; a metric it cannot observe is not compared (never
reported as zero).  What each backend is, and why those metrics:

========================  ==============  ====================================================
backend                   driver          compared (besides failed_ops, written/read bytes)
========================  ==============  ====================================================
``kernel-overlay``        overlay (all)   upperdir files, data, allocation, whiteouts, opaque
                                          dirs (exact, tmpfs upper); the view; est_seconds
``fuse-overlayfs``        overlay (plain) the same counts, ``.wh..*`` marker names excluded
``btrfs``                 btrfs           fi du exclusive data (exact); qgroup exclusive data
                                          + metadata; the view; est_seconds
``vfs-copy``              vfs             files, data, allocation of full copies; the view
``qcow2``                 devicemapper    clusters each device of the chain allocates for the
                                          model's own block writes (64 KiB chunks only)
``reflink-thin``          devicemapper    unshared host bytes of reflinked guest images
                                          (4 KiB chunks: the host's block)
========================  ==============  ====================================================

``est_seconds`` is compared with ``real_seconds``: the container start (mount, snapshot)
plus the operations timed inside the replaying child (``simulator.real``), which is exactly
what the cost model prices; laying the image down, sync and measuring are excluded.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.runner import Prepared
from simulator.view import view_of

COMMON = ("failed_ops", "written_bytes", "read_bytes")
BTRFS_RUNS = 3  # real btrfs runs per case, their mean compared (see _btrfs)
OVERLAY_COUNTS = ("container_files", "container_data_bytes", "container_alloc_bytes", "whiteouts", "opaque_dirs")


@dataclass
class Side:
    """What one side measured: metrics (None: not observed), views, wall time of the run."""

    metrics: dict[str, Any]
    views: dict[int, dict[str, Any]] | None
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def simulate_case(prepared: Prepared, containers: int, cost: CostModel) -> Side:
    """The simulator's side, with what the real references need beyond SPEC section 5."""
    start = time.perf_counter()
    run = Run(prepared.driver, prepared.image, containers, prepared.tree)
    for op in prepared.ops:
        run.apply(op)
    metrics = run.finish(cost)
    seconds = time.perf_counter() - start
    views = {c: view_of(run.namespace(c)) for c in range(containers)}
    extras: dict[str, Any] = {}
    name = prepared.driver.name
    if name == "btrfs":
        metrics["qgroup_exclusive_bytes"] = sum(m.usage()["qgroup_exclusive"] for m in run.mounts)
    if name == "devicemapper":
        driver = run.driver
        chain = [driver.base.device] + [driver.layer_fs[layer.id].device for layer in prepared.image.layers]
        extras["chain"] = [dev.written for dev in chain]
        extras["containers"] = [m.fs.device.written for m in run.mounts]
        metrics["image_cow_blocks"] = sum(dev.own_chunks() for dev in chain)
        metrics["unshared_bytes"] = metrics["container_alloc_bytes"]
    return Side(metrics, views, seconds, extras)


@dataclass(frozen=True)
class Backend:
    name: str
    driver: str
    metrics: tuple[str, ...]
    run: Callable[[Prepared, int, Side], Side]
    check: Callable[[], None]
    accepts: Callable[[dict[str, Any]], bool] = lambda options: True
    views: bool = True


def _timed(fn: Callable[[], tuple[dict[str, Any], dict[int, Any] | None]]) -> Side:
    start = time.perf_counter()
    metrics, views = fn()
    return Side(metrics, views, time.perf_counter() - start)


def _overlay(prepared: Prepared, containers: int, sim: Side) -> Side:
    from simulator.real import measure_prepared

    views: dict[int, Any] = {}
    return _timed(lambda: (measure_prepared(prepared, containers, views), views))


def _overlay_check() -> None:
    from simulator.real.overlay import check_available

    check_available()


def _fuse(prepared: Prepared, containers: int, sim: Side) -> Side:
    from simulator.real.fuse_overlay import measure_fuse

    views: dict[int, Any] = {}
    return _timed(lambda: (measure_fuse(prepared.image, prepared.ops, containers, views), views))


def _fuse_check() -> None:
    from simulator.real.fuse_overlay import check_available

    check_available()


def _btrfs(prepared: Prepared, containers: int, sim: Side) -> Side:
    """The mean of ``BTRFS_RUNS`` runs, each on a fresh file system (the median for the
    time): btrfs does not lay the same image into the same leaves twice (measured here: one
    4-layer image's top layer had 9 leaves in one run and 10 in the next, its boundaries
    moved by when the kernel flushed its delayed items), so one run's metadata is one draw
    of a distribution, a 16 KiB leaf either way on a small tree (read-startup on it: 7 nodes
    in 6 of 10 runs, 8 in 4).  The model predicts its mean.  Everything else is equal from
    run to run, so its mean is its value."""
    from simulator.real.btrfs import measure_btrfs

    views: dict[int, Any] = {}
    start, runs = time.perf_counter(), []
    for k in range(BTRFS_RUNS):
        runs.append(measure_btrfs(prepared.image, prepared.ops, containers, prepared.driver.options,
                                  views if k == 0 else None))
    metrics = {key: _mean([run[key] for run in runs]) for key in runs[0]}
    metrics["real_seconds"] = statistics.median([run["real_seconds"] for run in runs])
    return Side(metrics, views, (time.perf_counter() - start) / BTRFS_RUNS)


def _mean(values: list[Any]) -> Any:
    """The mean; the value itself when every run agrees (integers stay integers)."""
    if any(v is None for v in values):
        return None
    if all(v == values[0] for v in values):
        return values[0]
    return statistics.fmean(values)


def _btrfs_check() -> None:
    from simulator.real.btrfs import check_available

    check_available()


def _vfs(prepared: Prepared, containers: int, sim: Side) -> Side:
    from simulator.real.vfs import measure_vfs

    views: dict[int, Any] = {}
    return _timed(lambda: (measure_vfs(prepared.image, prepared.ops, containers, views), views))


def _vfs_check() -> None:
    from simulator.real.vfs import check_available

    check_available()


def _qcow2(prepared: Prepared, containers: int, sim: Side) -> Side:
    from simulator.real.qcow2 import chain_clusters

    def measure() -> tuple[dict[str, Any], None]:
        own, tops = chain_clusters(sim.extras["chain"], sim.extras["containers"])
        return {"cow_blocks": sum(tops), "image_cow_blocks": sum(own)}, None

    return _timed(measure)


def _qcow2_check() -> None:
    from simulator.real.qcow2 import check_available

    check_available()


def _thin(prepared: Prepared, containers: int, sim: Side) -> Side:
    from simulator.real.thin import measure_thin

    def measure() -> tuple[dict[str, Any], None]:
        m = measure_thin(prepared.image, prepared.ops, containers, prepared.driver.options)
        m["unshared_bytes"] = m.get("container_physical_bytes")
        return m, None

    return _timed(measure)


def _thin_check() -> None:
    from simulator.real.thin import check_available  # an ImportError: not built yet

    check_available()


def _plain_overlay(options: dict[str, Any]) -> bool:
    return not any(options.get(k) for k in ("metacopy", "redirect_dir", "index"))


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("kernel-overlay", "overlay", COMMON + OVERLAY_COUNTS + ("est_seconds",), _overlay, _overlay_check),
    Backend("fuse-overlayfs", "overlay", COMMON + OVERLAY_COUNTS, _fuse, _fuse_check, _plain_overlay),
    Backend("btrfs", "btrfs", COMMON + ("container_alloc_bytes", "qgroup_exclusive_bytes", "est_seconds"),
            _btrfs, _btrfs_check),
    Backend("vfs-copy", "vfs", COMMON + ("container_files", "container_data_bytes", "container_alloc_bytes"),
            _vfs, _vfs_check, lambda o: not o.get("reflink")),
    Backend("qcow2", "devicemapper", ("cow_blocks", "image_cow_blocks"), _qcow2, _qcow2_check,
            lambda o: int(o.get("chunk_size", 65536)) == 65536, views=False),
    Backend("reflink-thin", "devicemapper", COMMON + ("unshared_bytes",), _thin, _thin_check,
            lambda o: int(o.get("chunk_size", 65536)) == 4096, views=False),
)}


def backends_for(driver: str, options: dict[str, Any]) -> list[Backend]:
    """Every backend that can check ``driver`` with these (user-given) options."""
    return [b for b in BACKENDS.values() if b.driver == driver and b.accepts(options)]
