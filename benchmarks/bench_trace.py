"""Loading a JSONL trace: the columnar path (``load_trace``) against the line parser.

The trace is ``simulator.bench.bench_trace``'s: every throughput workload of
``simulator.bench.FULL`` on its 100,000-file, 32-layer synthetic image, one after the other
(452,493 operations, 31.6 MB).  Issue 7 asks 500,000 operations per second of parse and
replay together.  Both loaders run in the same rounds, alternately (the machine is shared:
alternating spreads another process's load over both), with the garbage collector paused as
``bench_trace`` pauses it; ``extra_info`` holds each one's rate from its fastest round in
CPU time (``time.process_time``).

    python3 -m pytest benchmarks/bench_trace.py --benchmark-columns=min,mean,rounds
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulator.bench import FULL
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_trace, load_workload
from simulator.runner import gc_paused
from simulator.trace import dump_trace, parse_trace_lines

ROUNDS = 5


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    image = load_image(FULL.image, 0)
    tree = ImageTree.build(image)
    ops = [op for w in FULL.workloads for op in load_workload(w, tree, 0)]
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    path.write_text(dump_trace(ops), encoding="utf-8")
    return path


def _line_by_line(path: Path) -> list:
    with path.open(encoding="utf-8") as fh:
        return list(parse_trace_lines(fh, str(path)))


def _cpu(load, path: Path) -> tuple[float, list]:
    with gc_paused():
        start = time.process_time()
        ops = load(path)
        return time.process_time() - start, ops


def test_load_trace_columnar_against_line_by_line(benchmark, trace_file: Path) -> None:
    columnar: list[float] = []
    lines: list[float] = []
    expected = _line_by_line(trace_file)

    def one_round() -> None:
        seconds, ops = _cpu(load_trace, trace_file)
        columnar.append(seconds)
        assert ops == expected
        lines.append(_cpu(_line_by_line, trace_file)[0])

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    n = len(expected)
    benchmark.extra_info.update(ops=n, columnar_ops_per_second=round(n / min(columnar)),
                                line_ops_per_second=round(n / min(lines)),
                                speedup=round(min(lines) / min(columnar), 2))
    assert n > 400_000  # bench_trace's trace at FULL scale
