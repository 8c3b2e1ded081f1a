"""The fidelity suites: which cases ``layerbench validate --suite quick|full`` runs.

A case is one cell (driver, options, image, workload, containers, seed) to run on the
simulator and on every real backend of that driver (``backends.backends_for``).  Two kinds:

* built-in images and workloads at sizes that take well under a second on the kernel, so
  every workload family (appends, page overwrites, small files, chmod -R, rm -rf, mv of
  directories, a dpkg-like install, startup reads, import scans) is covered;
* seeded random images and traces (``workloads.random``, the differential tests'
  generator): cases nobody tuned the model for, failures and odd renames included.

Overlay runs under all four option sets the kernel tests use.  The quick suite is sized for
CI (measured: see docs/fidelity.md); the full suite adds seeds and larger sizes.  Workloads
with ``commit`` are left out: no real backend can commit yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.errors import BadInput

OVERLAY_OPTION_SETS: tuple[dict[str, Any], ...] = (
    {}, {"metacopy": True, "redirect_dir": True}, {"index": True},
    {"metacopy": True, "redirect_dir": True, "index": True})
QCOW2_CHUNK = {"chunk_size": 65536}  # dm-thin's default block = qcow2's cluster
THIN_CHUNK = {"chunk_size": 4096}  # the reflink host's block: the emulation's granularity
# tests/test_real_thin.py's reference: journal-less ext4 (REAL_KERNEL.md 4a) on a 1 GiB device
THIN_EXT4 = {**THIN_CHUNK, "fs": "ext4", "journal": False, "base_size": 1 << 30}


@dataclass(frozen=True)
class Case:
    driver: str
    image: str
    workload: str
    options: dict[str, Any] = field(default_factory=dict)
    containers: int = 1
    seed: int = 0
    backends: tuple[str, ...] | None = None  # None: every backend of the driver


SMALL_IMAGE = "synthetic:layers=4,files=300,size_median=8192,logs=8"
BUILTINS = (  # (workload, containers); every parameter sized for a sub-second kernel run
    ("demo", 1),
    ("append-log:files=8,appends=200,length=512,containers=2", 2),
    ("overwrite-random:files=4,writes=200,containers=1", 1),
    ("small-files:files=200,containers=1", 1),
    ("chmod-tree:containers=1", 1),
    ("delete-tree:containers=1", 1),
    ("rename-dirs:containers=1", 1),
    ("package-install:files=100,containers=1", 1),
    ("read-startup:containers=1", 1),
    ("import-scan:containers=1", 1),
    # docker-storage-benchmark's tests (full suite only), on a small instance of its image.
    ("append-each:path=/test/big-files", 1),
    ("tree-walk", 1),
    ("read-each:path=/test/small-files", 1),
)
# One big file of each size (169 MiB), 100 small files, a tree of 31 directories and 16 leaves.
STORAGE_BENCHMARK_IMAGE = "storage-benchmark:copies=1,small_files=100,tree_depth=4"


def _image_for(workload: str) -> str:
    if workload.startswith(("append-each", "read-each", "tree-walk")):
        return STORAGE_BENCHMARK_IMAGE
    return "demo" if workload == "demo" else SMALL_IMAGE


def _random(seed: int, layers: int, entries: int, ops: int, containers: int) -> tuple[str, str, int, int]:
    return (f"random:layers={layers},entries={entries}", f"random:ops={ops},containers={containers}",
            containers, seed)


def _driver_cases(driver: str, options: dict[str, Any], builtins: tuple, randoms: list) -> list[Case]:
    cases = [Case(driver, _image_for(w), w, dict(options), c) for w, c in builtins]
    cases += [Case(driver, img, wl, dict(options), c, s) for img, wl, c, s in randoms]
    return cases


def suite(name: str) -> list[Case]:
    """The cases of suite ``name`` (``quick`` or ``full``)."""
    if name not in ("quick", "full"):
        raise BadInput(f"--suite {name!r}: one of quick, full")
    full = name == "full"
    seeds = range(20 if full else 5)
    randoms = [_random(s, 3, 12, 40, 2) for s in seeds]
    if full:
        randoms += [_random(100 + s, 4, 25, 150, 3) for s in range(10)]
    builtins = BUILTINS if full else BUILTINS[:4] + BUILTINS[7:9]
    cases: list[Case] = []
    for options in OVERLAY_OPTION_SETS:
        cases += _driver_cases("overlay", options, builtins, randoms)
    cases += _driver_cases("btrfs", {"max_inline": 0}, builtins if full else builtins[:3], randoms[:3 if not full else None])
    if full:
        cases += _driver_cases("btrfs", {}, builtins[:3], randoms[:10])
    cases += _driver_cases("vfs", {}, builtins, randoms)
    dm_randoms = randoms if full else randoms[:2]
    cases += _driver_cases("devicemapper", QCOW2_CHUNK, builtins[:3], dm_randoms)
    cases += _driver_cases("devicemapper", THIN_CHUNK, builtins[:3] if full else builtins[:2], dm_randoms)
    cases += _driver_cases("devicemapper", THIN_EXT4, builtins if full else builtins[:2], dm_randoms)
    return cases
