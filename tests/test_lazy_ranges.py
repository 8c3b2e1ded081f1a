"""A new file's range sets start as the shared ``EMPTY_RANGES`` (issue 7: creates).

``FileInode`` no longer allocates its ``written`` and ``dirty`` sets up front; the namespace
gives a file one set for both on its first write, parted at its first writeback
(``Namespace.write_range``/``write_run``/``writeback``), and overlay builds a new file's block set from that first write directly.  The reference is
the straightforward version: every inode with two fresh ``RangeSet`` from the start.  Every
metric and cost count must be equal on every driver, for random traces (creates, writes,
truncates to zero, fsyncs, links, renames, failures) and for the create-heavy built-ins.
"""

from __future__ import annotations

import copy
import pickle

import pytest

from drivers import make_driver
from simulator.harness import Run
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_workload
from simulator.nodes import FileInode
from simulator.ranges import EMPTY_RANGES, RangeSet
from simulator.trace import Op
from test_writeruns import DRIVERS, IDS, random_write_case
from test_writeruns import metrics as replay_metrics

ORIGINAL_INIT = FileInode.__init__


def _eager_init(self: FileInode, *args) -> None:
    ORIGINAL_INIT(self, *args)
    self.written = RangeSet()
    self.dirty = RangeSet()


def metrics(driver: str, options: dict, image, ops, containers: int, lazy: bool,
            monkeypatch: pytest.MonkeyPatch, tree: ImageTree | None = None) -> dict:
    with monkeypatch.context() as patch:
        if not lazy:
            patch.setattr(FileInode, "__init__", _eager_init)
        return replay_metrics(driver, options, image, ops, containers, False, tree)


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("seed", range(6))
def test_shared_empty_sets_cost_what_fresh_sets_cost(driver: str, options: dict, seed: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    containers = 1 + seed % 2
    image, ops = random_write_case(300 + seed, containers)
    lazy = metrics(driver, options, image, ops, containers, True, monkeypatch)
    assert lazy == metrics(driver, options, image, ops, containers, False, monkeypatch)
    assert lazy["written_bytes"] > 0


@pytest.mark.parametrize("driver,options", DRIVERS, ids=IDS)
@pytest.mark.parametrize("workload", ["small-files:files=400", "mixed:scale=0.2"])
def test_builtin_create_workloads(driver: str, options: dict, workload: str, small_image,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    image, tree = small_image
    ops = load_workload(workload, tree, 0)
    lazy = metrics(driver, options, image, ops, 1, True, monkeypatch, tree)
    assert lazy == metrics(driver, options, image, ops, 1, False, monkeypatch, tree)
    assert lazy["container_files"] > 0


def test_empty_ranges_refuses_changes() -> None:
    for change in (lambda: EMPTY_RANGES.add(0, 1), lambda: EMPTY_RANGES.add_many([0, 5, 9], [1, 6, 10]),
                   lambda: EMPTY_RANGES.update(RangeSet([(0, 1)]))):
        with pytest.raises(TypeError):
            change()
    EMPTY_RANGES.truncate(0)  # changes nothing: allowed
    EMPTY_RANGES.remove(0, 10)
    assert not EMPTY_RANGES and EMPTY_RANGES.total() == 0 and EMPTY_RANGES == RangeSet()
    assert pickle.loads(pickle.dumps(EMPTY_RANGES)) is EMPTY_RANGES  # identity is what counts
    assert copy.deepcopy(EMPTY_RANGES) is EMPTY_RANGES and copy.copy(EMPTY_RANGES) is EMPTY_RANGES
    assert EMPTY_RANGES.copy() is not EMPTY_RANGES  # RangeSet.copy: a set of one's own to change


def test_files_get_sets_of_their_own_by_hand() -> None:
    """Two new files: a 100-byte create and an empty one.  The first has [0, 100) written and
    dirty, one set for both until a writeback; the empty one still shares the empty set.
    10 bytes at 50 into the empty file (a hole below) give it [50, 60); its fsync leaves
    written alone and dirty empty.  Then 10 bytes at 0 into the first file: [0, 100) written
    (the set held 0-100 already), and dirty is still that same set; its fsync parts them:
    written [0, 100), dirty empty; a write of 5 bytes at 200 then dirties only [200, 205)."""
    image = load_image("synthetic:layers=1,files=10")
    run = Run(make_driver("overlay"), image, 1)
    run.replay([Op("create", "/a", size=100), Op("create", "/b", size=0)])
    ns = run.namespace(0)
    a, b = ns.exists("/a"), ns.exists("/b")
    assert list(a.written) == [(0, 100)] and a.written is a.dirty
    assert b.written is EMPTY_RANGES and b.dirty is EMPTY_RANGES
    run.replay([Op("write", "/b", offset=50, length=10), Op("fsync", "/b")])
    assert list(b.written) == [(50, 60)] and b.dirty is EMPTY_RANGES and b.size == 60
    run.replay([Op("write", "/a", offset=0, length=10)])
    assert list(a.written) == [(0, 100)] and a.dirty is a.written
    run.replay([Op("fsync", "/a"), Op("write", "/a", offset=200, length=5)])
    assert list(a.written) == [(0, 100), (200, 205)] and list(a.dirty) == [(200, 205)]
    run.replay([Op("truncate", "/a", size=50)])  # cuts both: dirty [200, 205) goes entirely
    assert list(a.written) == [(0, 50)] and not a.dirty
