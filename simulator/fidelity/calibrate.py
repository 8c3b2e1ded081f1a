"""``layerbench calibrate``: measure this machine's real costs, fit the cost model, check it.

Method.  ``est_seconds`` is linear in event counts the simulator tallies (operations,
lookup probes, copy-up bytes and count, page-cache bytes written and read, device writes,
metadata updates, fsyncs, container starts, mounted layers: ``CostModel.estimate``).  For
each driver with a real backend (overlay, btrfs) we run *microbenchmarks*, each stressing
one cost (copy-up bandwidth, per-file and per-directory metadata, cold negative lookups per
layer, mount cost against layer count, snapshot cost, fsync, chunk allocation by large
writes, reads), on the simulator for the counts and on the real backend for the time
(``real_seconds``: container start + the operations timed in the replaying child; the median
of ``repeats`` runs, each on a fresh image, mount and snapshot).  Non-negative least squares on the rows, each scaled by 1/time so the
fit minimises *relative* error, gives one coefficient per cost; bandwidths are their
inverses.  The fit never sees the *held-out* workloads (the built-in workload families on a
synthetic image); their relative error is the reported quality of the calibration.

Parameters with no microbenchmark (diff files, aufs permission checks) keep the defaults;
so does any coefficient the data leaves at zero for a bandwidth (a bandwidth of 0 is
meaningless; it is stored as ``UNMEASURABLE_BANDWIDTH``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from simulator.calibration import Calibration
from simulator.costmodel import CostModel
from simulator.image import Image
from simulator.trace import Op

from .microbench import micro_benchmarks

# feature (estimate() keyword) -> CostModel parameter; "per_byte" params are bandwidths
TERMS: dict[str, tuple[str, bool]] = {
    "ops": ("syscall_seconds", False), "probes": ("probe_seconds", False),
    "copyup_bytes": ("copy_bytes_per_second", True), "copyups": ("copyup_seconds", False),
    "device_write_bytes": ("write_bytes_per_second", True), "metadata_ops": ("metadata_seconds", False),
    "fsyncs": ("fsync_seconds", False), "mounts": ("mount_seconds", False),
    "mounted_layers": ("mount_layer_seconds", False), "written_bytes": ("cache_write_bytes_per_second", True),
    "read_bytes": ("read_bytes_per_second", True), "opens": ("open_seconds", False),
    "dirents": ("dirent_seconds", False), "new_file_writebacks": ("new_file_write_seconds", False),
    "image_files_read": ("image_read_seconds", False), "image_first_read_bytes": ("cold_read_byte_seconds", False), "image_files_changed": ("image_change_seconds", False),
    "data_unlinks": ("data_unlink_seconds", False), "dirty_ranges": ("dirty_range_seconds", False),
    "cold_lookups": ("cold_lookup_seconds", False), "cold_dir_layers": ("cold_dir_layer_seconds", False),
    "dirent_layers": ("dirent_layer_seconds", False), "fsync_dirs": ("fsync_dir_seconds", False),
    "renames": ("rename_seconds", False), "synced_bytes": ("synced_byte_seconds", False),
}
FEATURES = tuple(TERMS)
UNMEASURABLE_BANDWIDTH = 1.0e15  # B/s: "free" at this scale, where the fit found no cost
CALIBRATED_DRIVERS = ("overlay", "btrfs")


class _Capture(CostModel):
    """A cost model that records the counts ``Run.finish`` prices."""

    def estimate(self, **counts: int) -> float:  # type: ignore[override]
        object.__setattr__(self, "counts", counts)
        return super().estimate(**counts)


def features_of(counts: dict[str, int]) -> np.ndarray:
    return np.array([float(counts.get(f, 0)) for f in FEATURES])


def params_from(coef: np.ndarray, base: CostModel | None = None) -> dict[str, float]:
    """Coefficients (seconds per unit) -> named parameters; unmeasured ones keep ``base``."""
    base = base or CostModel()
    out: dict[str, float] = {}
    for value, feature in zip(coef, FEATURES):
        name, per_byte = TERMS[feature]
        out[name] = (1.0 / value if value > 0 else UNMEASURABLE_BANDWIDTH) if per_byte else float(value)
    return out


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """min ||a x - b|| with x >= 0 (Lawson & Hanson 1974, the active-set algorithm).
    Exact on consistent data; used so the project needs no scipy."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    tol = 10 * np.finfo(float).eps * np.linalg.norm(a, 1) * max(m, n)
    for _ in range(max_iter):
        if passive.all() or (w[~passive] <= tol).all():
            break
        j = int(np.argmax(np.where(~passive, w, -np.inf)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            bad = passive & (z <= 0)
            alpha = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + alpha * (z - x)
            passive &= x > tol
        w = a.T @ (b - a @ x)
    return x


def fit(rows: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Coefficients minimising the relative error of the predicted times (rows / time)."""
    a = np.array([f / t for f, t in rows])
    b = np.ones(len(rows))
    scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)  # columns of one magnitude
    return nnls(a / scale, b) / scale



HELD_OUT_IMAGE = "synthetic:layers=6,files=2000,size_median=8192,logs=8"
HELD_OUT = (  # built-in workload families the fit never sees
    "append-log:files=8,appends=3000,length=512", "small-files:files=1500",
    "chmod-tree:entries=1500", "delete-tree:entries=1500", "package-install:packages=4,files=150",
    "read-startup:fraction=0.2", "import-scan:modules=600", "overwrite-random:files=4,writes=3000",
    "mixed:scale=0.25",
)


# -- measuring ---------------------------------------------------------------------------------

@dataclass
class Sample:
    driver: str
    name: str
    counts: np.ndarray
    seconds: float  # median real_seconds of the repeats
    spread: float  # (max - min) / median over repeats


@dataclass
class _Case:
    """One microbenchmark or held-out workload of one driver: its counts and its timings."""

    driver: str
    name: str
    image: Image
    ops: list[Op]
    containers: int
    held_out: bool
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES)))
    times: list[float] = field(default_factory=list)
    tree: Any = None

    def count(self) -> None:
        """The simulator's event counts (what ``Run.finish`` prices)."""
        from drivers import make_driver
        from simulator.harness import Run
        from simulator.imagetree import ImageTree

        self.tree = ImageTree.build(self.image)
        cost = _Capture()
        run = Run(make_driver(self.driver, DRIVER_OPTIONS.get(self.driver, {})), self.image, self.containers,
                  self.tree)
        for op in self.ops:
            run.apply(op)
        run.finish(cost)
        self.counts = features_of(cost.counts)

    def time_once(self) -> float:
        """One real run on a fresh image, mount or snapshot: its ``real_seconds``."""
        from drivers import make_driver
        from simulator.real import measure_prepared
        from simulator.runner import Prepared

        prepared = Prepared(make_driver(self.driver, DRIVER_OPTIONS.get(self.driver, {})), self.image, self.tree,
                            list(self.ops))
        seconds = measure_prepared(prepared, self.containers)["real_seconds"]
        self.times.append(seconds)
        return seconds

    @property
    def seconds(self) -> float:
        # The median, not the least: on this shared 2-core VM the least of 5 was often one
        # lucky run (single held-out families moved 10-20% between calibrations minutes
        # apart); both the fit and the held-out check use the same statistic.
        return float(np.median(self.times))

    @property
    def spread(self) -> float:
        mid = self.seconds
        return (max(self.times) - min(self.times)) / mid if mid else 0.0


def _held_out_inputs(workload: str, seed: int = 0) -> tuple[Image, list[Op]]:
    from simulator.imagetree import ImageTree
    from simulator.inputs import load_image, load_workload

    image = load_image(HELD_OUT_IMAGE, seed)
    return image, load_workload(workload, ImageTree.build(image), seed)


def _held_out_cases(drivers: Iterable[str], held_out: Iterable[str]) -> list[_Case]:
    return [_Case(driver, workload, *_held_out_inputs(workload), 1, True)
            for driver in drivers for workload in held_out]


def _measure(cases: list[_Case], repeats: int, say: Callable[[str], None]) -> None:
    """Count every case, then time them all ``repeats`` times, in rounds (see ``calibrate``)."""
    for case in cases:
        case.count()
    for r in range(repeats):
        for case in cases:
            seconds = case.time_once()
            say(f"round {r + 1}/{repeats} {case.driver} {case.name}: {seconds * 1e3:.1f} ms")


DRIVER_OPTIONS = {"overlay": {}, "btrfs": {}}


@dataclass
class CalibrationRun:
    calibration: Calibration
    fit_samples: list[Sample] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        return {"machine": machine(), "fit": {
            "method": "NNLS on relative error, median of repeats",
            "microbenchmarks": [{"driver": s.driver, "name": s.name, "seconds": s.seconds, "spread": s.spread}
                                for s in self.fit_samples],
            "held_out": self.held_out, "seconds": self.seconds}}


def machine() -> dict[str, Any]:
    import os

    return {"kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def calibrate(drivers: Iterable[str] = CALIBRATED_DRIVERS, repeats: int = 7, held_out: Iterable[str] = HELD_OUT,
              progress: Callable[[str], None] | None = None) -> CalibrationRun:
    """Measure, fit per driver, evaluate on the held-out workloads.

    The repeats are rounds over every case (microbenchmarks and held-out workloads of every
    driver), not back-to-back runs of one case: other sessions' load on this shared VM
    comes and goes over minutes, and round-robin spreads it over the fit and the check
    alike instead of inflating whichever cases it happened to coincide with."""
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    drivers, held_out = list(drivers), list(held_out)
    cases: list[_Case] = []
    for driver in drivers:
        for bench in micro_benchmarks():
            image = bench.image()
            cases.append(_Case(driver, bench.name, image, bench.ops(image), bench.containers, False))
        cases += _held_out_cases([driver], held_out)
    _measure(cases, repeats, say)
    per_driver: dict[str, dict[str, float]] = {}
    run = CalibrationRun(Calibration())
    for driver in drivers:
        mine = [c for c in cases if c.driver == driver]
        samples = [Sample(driver, c.name, c.counts, c.seconds, c.spread) for c in mine if not c.held_out]
        per_driver[driver] = params_from(fit([(s.counts, s.seconds) for s in samples]))
        run.fit_samples += samples
        model = CostModel.from_mapping(per_driver[driver])
        for c in mine:
            if not c.held_out:
                continue
            est = model.estimate(**dict(zip(FEATURES, (int(x) for x in c.counts))), diff_files=0)
            run.held_out.append({"driver": driver, "workload": c.name, "est_seconds": est,
                                 "real_seconds": c.seconds, "rel_error": abs(est - c.seconds) / c.seconds,
                                 "spread": c.spread, "min_seconds": min(c.times)})
            say(f"{driver} held-out {c.name}: est {est * 1e3:.1f} ms, real {c.seconds * 1e3:.1f} ms")
    run.calibration = Calibration({}, per_driver, "calibrate")
    run.seconds = time.perf_counter() - start
    return run


def check(calibration: Calibration, drivers: Iterable[str] = CALIBRATED_DRIVERS, repeats: int = 7,
          held_out: Iterable[str] = HELD_OUT, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Re-measure the held-out workloads and price them with ``calibration`` as it is (no
    fit): whether a shipped calibration still holds on this machine, now."""
    from simulator.calibration import cost_for

    cases = _held_out_cases(drivers, held_out)
    _measure(cases, repeats, progress or (lambda _msg: None))
    rows = []
    for c in cases:
        est = cost_for(c.driver, calibration).estimate(**dict(zip(FEATURES, (int(x) for x in c.counts))),
                                                       diff_files=0)
        rows.append({"driver": c.driver, "workload": c.name, "est_seconds": est, "real_seconds": c.seconds,
                     "rel_error": abs(est - c.seconds) / c.seconds, "spread": c.spread,
                     "min_seconds": min(c.times)})
    return rows
