"""``sim_peak_rss_bytes`` is the peak of the run it belongs to (``runner.peak_rss_bytes``).

A campaign worker runs hundreds of cells in one process; with ``ru_maxrss`` every cell after
the largest reported that cell's peak.  The figures here are RSS, which the allocator moves
in whole arenas, so each margin is half the 256 MiB the test touches.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from simulator.runner import Cell, peak_rss_bytes, reset_peak_rss, run_cell

BIG = 256 << 20
PAGE = 4096


def _touch_and_free(size: int) -> None:
    block = bytearray(size)  # a large block is its own mapping: freeing it unmaps it
    block[::PAGE] = b"\x01" * (size // PAGE)  # touch every page, so that it is resident
    del block


pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="no /proc/self/clear_refs (not Linux)")


def test_the_peak_counts_what_ran_since_the_reset():
    reset_peak_rss()
    before = psutil.Process().memory_info().rss
    _touch_and_free(BIG)
    assert psutil.Process().memory_info().rss < before + BIG // 2  # gone again
    assert peak_rss_bytes() >= before + BIG // 2  # but the peak saw it


def test_a_cell_does_not_report_an_earlier_peak_of_its_process():
    _touch_and_free(BIG)
    assert peak_rss_bytes() >= psutil.Process().memory_info().rss + BIG // 2  # the process's peak so far
    rss = psutil.Process().memory_info().rss
    cell = Cell("overlay", "synthetic:layers=2,files=50", "append-log:appends=10")
    peak = run_cell(cell)["metrics"]["sim_peak_rss_bytes"]
    assert rss // 2 < peak < rss + BIG // 2
