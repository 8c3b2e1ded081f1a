"""Issue 7's other targets as pytest-benchmark benchmarks: a JSONL trace parsed and replayed,
the cost of image depth, and memory per file entry and per container.

The same measurements ``layerbench bench`` makes (``simulator.bench``), at its ``--quick``
scale so that a benchmark run stays short; ``layerbench bench`` is the full-scale run.
Figures are in ``extra_info``; timings are pytest-benchmark's own (wall clock).

    python3 -m pytest benchmarks/bench_targets.py --benchmark-columns=min,mean,rounds
"""

from __future__ import annotations

import pytest

from drivers import make_driver
from simulator import bench
from simulator.harness import Run
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_trace, load_workload
from simulator.runner import gc_paused
from simulator.trace import dump_trace

SIZES = bench.QUICK


@pytest.fixture(scope="module")
def image_and_tree():
    image = load_image(SIZES.image, 0)
    return image, ImageTree.build(image)


def test_trace_parse_and_replay(benchmark, image_and_tree, tmp_path) -> None:
    image, tree = image_and_tree
    ops = [op for w in SIZES.workloads for op in load_workload(w, tree, 0)]
    path = tmp_path / "trace.jsonl"
    path.write_text(dump_trace(ops), encoding="utf-8")

    def parse_and_replay() -> None:
        with gc_paused():
            Run(make_driver("overlay"), image, 1, tree).replay(load_trace(path))

    benchmark.pedantic(parse_and_replay, rounds=3, iterations=1)
    benchmark.extra_info.update(ops=len(ops), target_ops_per_second=bench.TARGET_TRACE_OPS_PER_SECOND)
    if benchmark.stats is not None:
        benchmark.extra_info["ops_per_second_wall"] = round(len(ops) / benchmark.stats.stats.min)
    assert len(ops) > 10_000


@pytest.mark.parametrize("layers", [1, 128])
def test_depth(benchmark, layers: int) -> None:
    """Time per operation at 1 and 128 layers: compare the two ``seconds_per_op``."""
    image = load_image(f"synthetic:layers={layers},files={SIZES.depth_files}", 0)
    tree = ImageTree.build(image)
    ops = [op for w in SIZES.depth_workloads for op in load_workload(w, tree, 0)]

    def replay() -> None:
        with gc_paused():
            Run(make_driver("overlay"), image, 1, tree).replay(ops)

    benchmark.pedantic(replay, rounds=3, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["seconds_per_op"] = benchmark.stats.stats.min / len(ops)
    assert len(ops) > 1000


def test_memory(benchmark) -> None:
    """Bytes per file entry of an image and its tree, and per container (fresh processes)."""
    results = benchmark.pedantic(bench.bench_memory, args=(SIZES, ["overlay", "devicemapper"]), rounds=1, iterations=1)
    per_file, containers = results
    benchmark.extra_info.update(bytes_per_file=per_file.extra["bytes_per_file"],
                                tree_bytes_per_file=per_file.extra["tree_bytes_per_file"],
                                bytes_per_container=containers.extra["bytes_per_container"],
                                target_bytes_per_file=bench.TARGET_BYTES_PER_FILE)
    assert per_file.extra["files"] > 50_000 and containers.extra["containers"] == SIZES.containers
