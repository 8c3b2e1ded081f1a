"""Differential fuzz past the seeds CI runs: the simulator against the real kernel, and its
fast replay against one operation at a time, on seeded random cases (docs/fidelity.md).

    python3 scripts/fuzz.py overlay --first 50000 --count 1500        # root, overlayfs
    python3 scripts/fuzz.py overlay --first 60000 --count 300 --big
    python3 scripts/fuzz.py btrfs --first 70000 --count 300            # root, btrfs-progs
    python3 scripts/fuzz.py thin --first 90000 --count 600             # root, xfsprogs
    python3 scripts/fuzz.py thin-xfs --first 95000 --count 200         # the driver's default fs
    python3 scripts/fuzz.py thin-journal --first 95000 --count 200     # ext4 with its journal
    python3 scripts/fuzz.py replay --first 0 --count 3

Each case that differs is one line; the last line counts them (for btrfs, the qgroup's
difference in nodes; for thin, the unshared bytes' in 4 KiB blocks).  Exit 1 if an exact
figure differed.  The cases are those of the tests (``workloads.random``), other seeds.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers import make_driver  # noqa: E402
from simulator.costmodel import CostModel  # noqa: E402
from simulator.harness import Run  # noqa: E402
from simulator.imagetree import ImageTree  # noqa: E402
from simulator.inputs import load_image, load_workload  # noqa: E402
from simulator.runner import Cell, run_cell, view_cell  # noqa: E402
from workloads.random import random_image, random_trace  # noqa: E402

OVERLAY_OPTIONS = ({}, {"metacopy": True, "redirect_dir": True}, {"index": True},
                   {"metacopy": True, "redirect_dir": True, "index": True})
OVERLAY_COMPARED = ("container_files", "container_data_bytes", "container_alloc_bytes", "whiteouts", "opaque_dirs",
                    "failed_ops")
REPLAY_DRIVERS = (("overlay", {}), ("overlay", {"metacopy": True, "index": True}), ("aufs", {}),
                  ("devicemapper", {}), ("devicemapper", {"chunk_size": 4096}), ("btrfs", {}),
                  ("btrfs", {"max_inline": 0}), ("zfs", {}), ("vfs", {}))
REPLAY_IMAGES = ("synthetic:layers=4,files=300", "deep:layers=6,files=3", "dockerhub:files=200",
                 "synthetic:layers=2,files=100,delete=0.3,overwrite=0.3")
REPLAY_WORKLOADS = ("mixed:scale=0.2", "package-install", "chmod-tree", "delete-tree", "rename-dirs", "build",
                    "import-scan:modules=200", "small-files:files=300", "overwrite-random:writes=500",
                    "append-log:appends=500", "read-startup", "random:ops=400")
THIN_OPTIONS = {"chunk_size": 4096, "fs": "ext4", "journal": False, "base_size": 1 << 30}
THIN_XFS_OPTIONS = {"chunk_size": 4096}  # devicemapper's default xfs on its default 10 GiB
THIN_JOURNAL_OPTIONS = {**THIN_OPTIONS, "journal": True}  # ext4 as Docker's mkfs makes it
NODE, BLOCK = 16384, 4096


# (layers, entries, operations, containers) of the tests' random cases
BTRFS_CASE, THIN_CASE, BIG_CASE = (3, 12, 40, 2), (3, 25, 80, 2), (4, 25, 150, 3)


def _random_case(seed: int, size: tuple[int, int, int, int]) -> tuple:
    """The tests' random case of ``seed`` (tests/test_real_btrfs.py, tests/test_real_thin.py)."""
    rng = np.random.default_rng(seed)
    layers, entries, ops, containers = size
    img = random_image(rng, layers=layers, entries=entries)
    paths = [p for p, _ in ImageTree.build(img).walk()]
    return img, random_trace(rng, paths, ops=ops, containers=containers), containers


def _model(driver: str, options: dict, img, trace, containers: int) -> tuple[dict, Run]:
    run = Run(make_driver(driver, options), img, containers)
    for op in trace:
        run.apply(op)
    return run.finish(CostModel()), run


def fuzz_overlay(seed: int, big: bool, say) -> tuple[int, Counter]:
    from simulator.real import run_real, view_real

    image, workload, n = (("random:layers=6,entries=40", "random:ops=300,containers=3", 3) if big
                          else ("random:layers=3,entries=12", "random:ops=60", 1))
    bad = 0
    for options in OVERLAY_OPTIONS:
        cell = Cell("overlay", image, workload, options=options, containers=n, seed=seed)
        sim, kernel = run_cell(cell)["metrics"], run_real(cell)["metrics"]
        wrong = {k: (sim[k], kernel[k]) for k in OVERLAY_COMPARED if sim[k] != kernel[k]}
        views = [c for c in range(n) if view_cell(cell, c) != view_real(cell, c)]
        if wrong or views:
            bad += 1
            say(f"seed {seed} {options}: {wrong} views differ: {views}")
    return bad, Counter()


def fuzz_btrfs(seed: int, big: bool, say) -> tuple[int, Counter]:
    from simulator.real.btrfs import measure_btrfs

    img, trace, n = _random_case(seed, BIG_CASE if big else BTRFS_CASE)
    bad, nodes = 0, Counter()
    for max_inline in (0, 2048):
        options = {"max_inline": max_inline}
        sim, run = _model("btrfs", options, img, trace, n)
        real = measure_btrfs(img, trace, n, make_driver("btrfs", options).options)
        exact = ("failed_ops", "written_bytes", "container_alloc_bytes")
        wrong = {k: (sim[k], real[k]) for k in exact if sim[k] != real[k]}
        off = (sum(m.usage()["qgroup_exclusive"] for m in run.mounts) - real["qgroup_exclusive_bytes"]) // NODE
        nodes[off] += 1
        bad += bool(wrong)
        if wrong or off:
            say(f"seed {seed} max_inline={max_inline}: {wrong} qgroup {off:+d} nodes")
    return bad, nodes


def fuzz_thin(seed: int, big: bool, say, options: dict = THIN_OPTIONS) -> tuple[int, Counter]:
    from simulator.real.thin import measure_thin

    img, trace, n = _random_case(seed, BIG_CASE if big else THIN_CASE)
    sim, _ = _model("devicemapper", options, img, trace, n)
    real = measure_thin(img, trace, n, make_driver("devicemapper", options).options)
    exact = ("ops", "failed_ops", "written_bytes", "read_bytes")
    wrong = {k: (sim[k], real[k]) for k in exact if sim[k] != real[k]}
    off = (sim["container_alloc_bytes"] - real["container_physical_bytes"]) // BLOCK
    if wrong or off:
        say(f"seed {seed}: {wrong} unshared {off:+d} blocks")
    return bool(wrong), Counter({off: 1})


def fuzz_replay(seed: int, big: bool, say) -> tuple[int, Counter]:
    every_term = CostModel(**{name: 1.0 for name in CostModel().as_dict()})  # every count priced
    bad = 0
    for image_name in REPLAY_IMAGES:
        image = load_image(image_name, seed)
        tree = ImageTree.build(image)
        for workload in REPLAY_WORKLOADS:
            ops = load_workload(workload, tree, seed)
            n = 1 + max((op.container for op in ops), default=0)
            for driver, options in REPLAY_DRIVERS:
                batched, single = Run(make_driver(driver, options), image, n, tree), \
                    Run(make_driver(driver, options), image, n, tree)
                batched.replay(ops)
                for op in ops:
                    single.apply(op)
                a, b = batched.finish(every_term), single.finish(every_term)
                if a != b:
                    bad += 1
                    say(f"seed {seed} {image_name} {workload} {driver} {options}: "
                        f"{ {k: (a[k], b[k]) for k in a if a[k] != b[k]} }")
    return bad, Counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=("overlay", "btrfs", "thin", "thin-xfs", "thin-journal", "replay"))
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--count", type=int, default=10, help="seeds")
    parser.add_argument("--big", action="store_true", help="more layers, entries, operations and containers")
    args = parser.parse_args()
    fuzz = {"overlay": fuzz_overlay, "btrfs": fuzz_btrfs, "thin": fuzz_thin, "replay": fuzz_replay,
            "thin-xfs": lambda seed, big, say: fuzz_thin(seed, big, say, THIN_XFS_OPTIONS),
            "thin-journal": lambda seed, big, say: fuzz_thin(seed, big, say, THIN_JOURNAL_OPTIONS)}[args.target]
    bad, offsets = 0, Counter()
    for seed in range(args.first, args.first + args.count):
        b, off = fuzz(seed, args.big, lambda line: print(line, flush=True))
        bad += b
        offsets += off
    spread = ", ".join(f"{k:+d}: {v}" for k, v in sorted(offsets.items())) if offsets else ""
    print(f"{args.target}: seeds {args.first}-{args.first + args.count - 1}, {bad} with an exact figure off"
          + (f"; off by (nodes or blocks: cases) {spread}" if spread else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
