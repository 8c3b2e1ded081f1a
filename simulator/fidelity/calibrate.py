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
from simulator.image import Entry, Image, Layer
from simulator.trace import Op

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
KiB, MiB = 1 << 10, 1 << 20


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


# -- the benchmarks ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Bench:
    name: str
    cost: str  # what it is there to measure
    image: Callable[[], Image]
    ops: Callable[[Image], list[Op]]
    containers: int = 1


# Image files sit in this many directories of /d, as in real images (and unlike one flat
# directory): on btrfs the first lookup of each directory in a fresh snapshot reads its inode.
FILE_DIRS = 40


def _f(i: int) -> str:
    """Path of image file ``i`` of ``_files``."""
    return f"/d/s{i % FILE_DIRS}/f{i}"


def _files(n: int, size: int, layers: int = 1) -> Image:
    per = [list() for _ in range(layers)]
    for i in range(n):
        per[i % layers].append(Entry(_f(i), "file", size=size, mode=0o644))
    dirs = tuple(Entry(f"/d/s{k}", "dir", mode=0o755) for k in range(min(n, FILE_DIRS)))
    return Image("calib", tuple(Layer(f"l{k}", (Entry("/d", "dir", mode=0o755),) + (dirs if k == 0 else ()) + tuple(e))
                                for k, e in enumerate(per)))


def _trees(trees: int, files: int, size: int = 100) -> Image:
    entries = [Entry(f"/t{k}/s{j % 10}/f{j}", "file", size=size) for k in range(trees) for j in range(files)]
    return Image("calib-trees", (Layer("l0", tuple(entries)),))


def _spread(dirs: int, layers: int, files: int = 2, size: int = 100) -> Image:
    """``dirs`` directories each present in every one of ``layers`` layers (as /usr/lib is in
    most layers of a real image), their ``files`` files in the top one."""
    out = []
    for k in range(layers):
        entries = [Entry("/w", "dir", mode=0o755)] + [Entry(f"/w/d{j}", "dir", mode=0o755) for j in range(dirs)]
        if k == layers - 1:
            entries += [Entry(f"/w/d{j}/f{i}", "file", size=size, mode=0o644) for j in range(dirs) for i in range(files)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-spread", tuple(out))


def _layered_tree(layers: int, dirs: int, files: int, size: int = 8 * KiB) -> Image:
    """/t/s<j>/f<i>: every directory in every layer, the files spread over the layers."""
    out = []
    for k in range(layers):
        entries = [Entry("/t", "dir", mode=0o755)] + [Entry(f"/t/s{j}", "dir", mode=0o755) for j in range(dirs)]
        entries += [Entry(f"/t/s{i % dirs}/f{i}", "file", size=size, mode=0o644) for i in range(k, files, layers)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-layered", tuple(out))


def _scattered(files: int = 3000, layers: int = 6, size: int = 8 * KiB) -> Image:
    """A larger image, its files in 300 directories two levels deep (/x/a<k>/b<m>), spread
    over ``layers`` layers, as in a real image: a btrfs tree of many leaves."""
    out = []
    for k in range(layers):
        entries = [Entry("/x", "dir", mode=0o755)] + [Entry(f"/x/a{a}", "dir", mode=0o755) for a in range(20)]
        entries += [Entry(f"/x/a{a}/b{b}", "dir", mode=0o755) for a in range(20) for b in range(15)]
        entries += [Entry(_scattered_path(i), "file", size=size, mode=0o644) for i in range(k, files, layers)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-scattered", tuple(out))


def _scattered_path(i: int) -> str:
    return f"/x/a{i % 20}/b{i // 20 % 15}/f{i}"


def _scattered_order(n: int, files: int = 3000) -> list[int]:
    """``n`` of the files in a fixed random order (seeded): lookups that hop between leaves."""
    return np.random.default_rng(6).permutation(files)[:n].tolist()


def micro_benchmarks() -> list[Bench]:
    """One per cost ``calibrate`` must fit (the issue's list), at sizes of 10-200 ms."""
    b: list[Bench] = []
    for size in (256 * KiB, 4 * MiB):
        n = 8 * MiB // size * 4
        b.append(Bench(f"copyup-{size // KiB}k", "copy bandwidth on copy-up", lambda n=n, s=size: _files(n, s),
                       lambda img, n=n: [Op("append", _f(i), length=1) for i in range(n)]))
    b.append(Bench("create-empty", "per-file metadata", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/n{i}", size=0) for i in range(1500)]))
    b.append(Bench("create-small", "per-file cost of small data files", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/n{i}", size=(1 + i % 8) * 1024) for i in range(1000)]))
    b.append(Bench("mkdir", "per-directory metadata", lambda: _files(0, 0),
                   lambda img: [Op("mkdir", f"/d/m{i}") for i in range(1500)]))
    b.append(Bench("chmod-small", "copy-up of small files (fixed cost)", lambda: _files(1000, 100),
                   lambda img: [Op("chmod", _f(i), mode=0o600) for i in range(1000)]))
    # Files of 8 KiB where the cost depends on it: on btrfs, unlinking a file with a data
    # extent drops the extent's reference (a file <= max_inline has none), and most image
    # files have one (the held-out image's median is 8 KiB; so is Debian's /usr).
    b.append(Bench("chmod-8k", "first change of image files with data extents", lambda: _files(1000, 8 * KiB),
                   lambda img: [Op("chmod", _f(i), mode=0o600) for i in range(1000)]))
    b.append(Bench("unlink", "whiteouts / unlinks", lambda: _files(1000, 8 * KiB),
                   lambda img: [Op("unlink", _f(i)) for i in range(1000)]))
    b.append(Bench("remove-tree", "per-file metadata without per-file operations",
                   lambda: _trees(6, 250, 8 * KiB), lambda img: [Op("remove_tree", f"/t{k}") for k in range(6)]))
    b.append(Bench("remove-tree-6", "rm -rf of directories merged from 6 layers (lookups probe layers)",
                   lambda: _layered_tree(6, 40, 800), lambda img: [Op("remove_tree", "/t")]))
    b.append(Bench("stat", "an operation with no open", lambda: _files(1000, 100),
                   lambda img: [Op("stat", _f(i % 1000)) for i in range(3000)]))
    b.append(Bench("open-read-small", "open + close around a small read", lambda: _files(1000, 100),
                   lambda img: [Op("read", _f(i % 1000), offset=0, length=100) for i in range(3000)]))
    for layers in (1, 16, 64):
        b.append(Bench(f"negative-lookup-{layers}", "cold lookup cost per layer", lambda n=layers: _files(n, 0, n),
                       lambda img: [Op("stat", f"/d/missing{i}") for i in range(1500)]))
    for layers in (1, 24, 96):
        b.append(Bench(f"start-{layers}", "mount / snapshot cost against layer count",
                       lambda n=layers: _files(n, 0, n), lambda img: [], containers=4))
    b.append(Bench("fsync", "fsync cost", lambda: _files(0, 0),
                   lambda img: [o for i in range(60) for o in (Op("create", f"/d/s{i}", size=8 * KiB),
                                                               Op("fsync", f"/d/s{i}"))]))
    b.append(Bench("fsync-dirs", "fsync of new files in 40 image directories (each logged once)",
                   lambda: _files(400, 8 * KiB), lambda img: [o for i in range(120) for o in (
                       Op("create", f"/d/s{i % FILE_DIRS}/n{i}", size=8 * KiB),
                       Op("fsync", f"/d/s{i % FILE_DIRS}/n{i}"))]))
    b.append(Bench("fsync-many", "many fsyncs of new files in one directory", lambda: _files(0, 0),
                   lambda img: [o for i in range(300) for o in (Op("create", f"/d/m{i}", size=8 * KiB),
                                                                Op("fsync", f"/d/m{i}"))]))
    b.append(Bench("fsync-large", "fsync of new 1 MiB files (bytes written back while waiting)", lambda: _files(0, 0),
                   lambda img: [o for i in range(30) for o in (Op("create", f"/d/L{i}", size=MiB),
                                                               Op("fsync", f"/d/L{i}"))]))
    b.append(Bench("rename", "renames of image files (two names rewritten)", lambda: _files(400, 8 * KiB),
                   lambda img: [Op("rename", _f(i), dst=_f(i) + ".old") for i in range(400)]))
    b.append(Bench("write-fsync-rename", "dpkg's unpack: new file, fsync, rename into place",
                   lambda: _files(400, 8 * KiB), lambda img: [o for i in range(200) for o in (
                       Op("create", f"/d/s{i % FILE_DIRS}/p{i}.new", size=8 * KiB),
                       Op("fsync", f"/d/s{i % FILE_DIRS}/p{i}.new"),
                       Op("rename", f"/d/s{i % FILE_DIRS}/p{i}.new", dst=_f(i) if i % 2 else f"/d/s{i % FILE_DIRS}/p{i}"))]))
    b.append(Bench("write-large", "per-chunk allocation / page-cache write", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/big{i}", size=24 * MiB) for i in range(4)]))
    b.append(Bench("fsync-dirty", "fsync of scattered overwrites (CoW of many small ranges)",
                   lambda: _files(4, MiB), lambda img: [Op("fsync", _f(i // 100 % 4)) if i % 100 == 99 else
                                                         Op("write", _f(i // 100 % 4),
                                                            offset=(i * 40960) % MiB, length=4096)
                                                         for i in range(1200)]))
    b.append(Bench("write-small", "many small writes", lambda: _files(4, MiB),
                   lambda img: [Op("write", _f(i % 4), offset=(i * 8192) % MiB, length=4096)
                                for i in range(2000)]))
    b.append(Bench("read-once", "first read of image files (btrfs: the snapshot's page cache is cold)",
                   lambda: _files(1000, 8 * KiB), lambda img: [Op("read", _f(i), offset=0, length=8 * KiB)
                                                               for i in range(1000)]))
    b.append(Bench("read-once-64k", "first read of larger image files (cold bytes)", lambda: _files(300, 64 * KiB),
                   lambda img: [Op("read", _f(i), offset=0, length=64 * KiB) for i in range(300)]))
    b.append(Bench("read-once-512k", "first read of large image files (cold bytes, readahead)",
                   lambda: _files(40, 512 * KiB), lambda img: [Op("read", _f(i), offset=0, length=512 * KiB)
                                                              for i in range(40)]))
    # Cold lookups: the first stat through each of 400 directories that span 1, 6 or 24
    # layers, then a second file of each directory (cold name, warm directory), then both
    # again (warm): cold_lookups against cold_dir_layers against plain stats.
    for layers in (1, 6, 24):
        b.append(Bench(f"walk-dirs-{layers}", "cold lookups of directories spanning layers",
                       lambda n=layers: _spread(400, n),
                       lambda img: [Op("stat", f"/w/d{j}/f{i}") for r in range(2) for i in range(2)
                                    for j in range(400)]))
    b.append(Bench("stat-scattered", "cold lookups in random order over a larger, deeper image",
                   _scattered, lambda img: [Op("stat", _scattered_path(i)) for i in _scattered_order(1000)]))
    b.append(Bench("read-scattered", "first reads in random order over a larger, deeper image",
                   _scattered, lambda img: [Op("read", _scattered_path(i), offset=0, length=8 * KiB)
                                            for i in _scattered_order(500)]))
    b.append(Bench("read", "page-cache reads", lambda: _files(16, 4 * MiB),
                   lambda img: [Op("read", _f(i % 16), offset=0, length=4 * MiB) for i in range(48)]))
    return b


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
        for workload in held_out:
            image, ops = _held_out_inputs(workload)
            cases.append(_Case(driver, workload, image, ops, 1, True))
    for case in cases:
        case.count()
    for r in range(repeats):
        for case in cases:
            seconds = case.time_once()
            say(f"round {r + 1}/{repeats} {case.driver} {case.name}: {seconds * 1e3:.1f} ms")
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
