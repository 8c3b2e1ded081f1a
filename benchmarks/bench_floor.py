"""The ceiling of any per-operation replay in Python, on the bench image (issue 7).

Issue 7 asks 2,000,000 operations per second (0.5 us each) of every built-in workload.
These loops keep only the bare state an operation must touch, with none of the model
around it: no driver, no cost counts, no walks of unknown directories, nothing a metric
needs beyond what is named.  What they reach is the most a replay built of Python objects
per node can reach on this image, and is set beside what the model reaches
(``bench_replay.py``) in the README's performance section.

* start-up reads (``read-startup``, 6,210 reads of image files): per read one
  remembered-walk probe, one name probe, one depth probe, a cold-lookup set insert, the
  bytes read, the first-read bitmap and a page count;
* small files (``small-files:files=50000``): per create one directory probe, one name
  check, one object made and inserted, its size added.

Each loop's result is checked against the model's own on the same operations, so that the
loop is known to do the work it stands for.

    python3 -m pytest benchmarks/bench_floor.py --benchmark-columns=min,rounds
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from pyroaring import BitMap64

from drivers import make_driver
from simulator.harness import Run, simulate
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_workload
from simulator.metrics import depth_stats
from simulator.runner import gc_paused
from simulator.treestore import loaded
from simulator.units import PAGE_SIZE

IMAGE = "synthetic:layers=32,files=100000"  # bench_replay.IMAGE


@pytest.fixture(scope="module")
def big():
    image = load_image(IMAGE, seed=0)
    return image, ImageTree.build(image)


def _image_dirs(image, tree, paths: list[str]) -> dict:
    """Directory path -> the image's directory node, for every parent of ``paths`` (set-up:
    the remembered walks a replay would have)."""
    ns = Run(make_driver("vfs"), image, 1, tree).namespace(0)
    return {d: ns.exists(d) for d in {p.rpartition("/")[0] for p in paths}}


def _bare_reads(ops, dirs: dict, cpu: list[float]) -> tuple[int, int, dict[int, int], int]:
    with gc_paused():
        start = time.process_time()
        seen: set[str] = set()
        first = BitMap64()
        pages: dict = {}
        depths: dict[int, int] = {}
        read = 0
        for op in ops:
            path = op.path
            dir_path, _, name = path.rpartition("/")
            d = dirs[dir_path]
            node = d.children.get(name)
            seen.add(path)
            depth = loaded(d.probes).get(name, len(d.stack))
            depths[depth] = depths.get(depth, 0) + 1
            n = min(op.length, node.size - op.offset)
            read += n
            if node.size > PAGE_SIZE and node.ino not in first:
                first.add(node.ino)
            pages[node] = -(-n // PAGE_SIZE)
        cpu.append(time.process_time() - start)
    return read, len(seen), depths, sum(pages.values()) * PAGE_SIZE


def test_bare_start_up_reads(benchmark, big) -> None:
    image, tree = big
    ops = load_workload("read-startup", tree, seed=0)
    assert {op.kind for op in ops} == {"read"} and all(op.offset == 0 for op in ops)
    dirs = _image_dirs(image, tree, [op.path for op in ops])
    cpu: list[float] = []
    read, keys, depths, cached = benchmark.pedantic(_bare_reads, args=(ops, dirs, cpu), rounds=5, iterations=1)
    model = simulate(make_driver("overlay"), image, ops, 1, None, tree)
    assert (read, cached) == (model["read_bytes"], model["page_cache_bytes"])
    assert depth_stats(Counter(depths)) == {k: model[k] for k in depth_stats(Counter(depths))}
    assert keys == len({op.path for op in ops})
    benchmark.extra_info.update(ops=len(ops), ops_per_second=round(len(ops) / min(cpu)))


class _File:
    __slots__ = ("size", "mode", "nlink")

    def __init__(self, size: int, mode: int) -> None:
        self.size, self.mode, self.nlink = size, mode, 1


def _bare_creates(ops, dirs: dict, cpu: list[float]) -> tuple[int, int]:
    for own in dirs.values():
        own.clear()
    with gc_paused():
        start = time.process_time()
        made = written = 0
        for op in ops:
            dir_path, _, name = op.path.rpartition("/")
            own = dirs[dir_path]
            if name not in own:
                own[name] = _File(op.size, 0o644)
                made += 1
                written += op.size
        cpu.append(time.process_time() - start)
    return made, written


def test_bare_creates(benchmark, big) -> None:
    image, tree = big
    workload = load_workload("small-files:files=50000", tree, seed=0)
    ops = [op for op in workload if op.kind == "create"]
    dirs: dict[str, dict] = {op.path.rpartition("/")[0]: {} for op in ops}
    cpu: list[float] = []
    made, written = benchmark.pedantic(_bare_creates, args=(ops, dirs, cpu), rounds=5, iterations=1)
    model = simulate(make_driver("overlay"), image, workload, 1, None, tree)
    assert (made, written) == (model["container_files"], model["written_bytes"])
    benchmark.extra_info.update(ops=len(ops), ops_per_second=round(len(ops) / min(cpu)))
