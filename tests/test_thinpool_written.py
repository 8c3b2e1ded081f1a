"""``ThinDevice.written`` folds its batches late (issue 7): the same set as folding each one.

A device queues each batch's byte ranges and unions them into ``written`` only when it is
read or the queue outgrows the set (``drivers.thinpool``).  The reference is the
straightforward version: one ``RangeSet`` that takes every batch as it comes, interval by
interval.  Random batches (overlapping, touching, scattered, repeated) are compared after
every batch, read at random moments so that folds happen both on reads and on the size
threshold.  The write costs are checked against the plain definition too, chunk by chunk:
a chunk the batch touches and the device does not own is new; a new chunk the batch does
not cover whole and the origin maps is copied (``ThinDevice.write`` skips owned intervals
by bisection and the copy check when nothing is new).
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers import thinpool
from drivers.thinpool import ThinDevice
from simulator.ranges import RangeSet


def _batch(rng: np.random.Generator, span: int) -> RangeSet:
    out = RangeSet()
    for _ in range(int(rng.integers(1, 12))):
        start = int(rng.integers(0, span))
        out.add(start, start + int(rng.integers(1, 3 * 4096)))
    return out


class _PlainDevice:
    """dm-thin's write costs by definition, one chunk at a time."""

    def __init__(self, chunk: int, origin_mapped: RangeSet):
        self.chunk, self.shared, self.own = chunk, origin_mapped, RangeSet()

    def write(self, ranges: RangeSet) -> tuple[int, int, int]:
        chunk, new, copied = self.chunk, 0, 0
        for c in sorted({c for s, e in ranges for c in range(s // chunk, -(-e // chunk))}):
            if not self.own.covers(c, c + 1):
                new += 1
                if not ranges.covers(c * chunk, (c + 1) * chunk) and self.shared.covers(c, c + 1):
                    copied += 1
                self.own.add(c, c + 1)
        return new, copied, ranges.total()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fold_min", [1, 7, thinpool.PENDING_FOLD_MIN])
def test_written_matches_folding_every_batch(seed: int, fold_min: int, monkeypatch) -> None:
    monkeypatch.setattr(thinpool, "PENDING_FOLD_MIN", fold_min)
    rng = np.random.default_rng(seed)
    chunk = 64 * 1024
    base = ThinDevice("base", chunk)
    base.write(RangeSet([(0, 10 * chunk)]))
    dev = ThinDevice("c", chunk, base)
    plain = _PlainDevice(chunk, base.mapped)
    reference = RangeSet()
    copies = 0
    for step in range(300):
        batch = _batch(rng, 4 << 20)
        cost = dev.write(batch)
        reference.update(batch)
        assert (cost.new_chunks, cost.copied_chunks, cost.bytes_written) == plain.write(batch)
        copies += cost.copied_chunks
        if rng.random() < 0.1 or step == 299:
            assert dev.written == reference
            assert dev.written_bytes() == reference.total()
    assert dev.written.total() == reference.total() > 0
    assert dev.own == plain.own and copies > 0  # some partial writes landed on shared chunks


def test_written_is_folded_before_any_read() -> None:
    """A read between batches sees every batch so far (4 KiB writes at 0, 8192 and 4096:
    the third fills the gap, so one interval of 12,288 bytes)."""
    dev = ThinDevice("c", 64 * 1024)
    dev.write(RangeSet([(0, 4096)]))
    dev.write(RangeSet([(8192, 12288)]))
    assert list(dev.written) == [(0, 4096), (8192, 12288)]
    dev.write(RangeSet([(4096, 8192)]))
    assert list(dev.written) == [(0, 12288)]
    assert dev.written.total() == 12288
