"""``Replicas``: a fleet's operations kept once, seen as the round-robin list of every
container's copy (``simulator.replicas``, ``workloads.common.replicated``)."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest

from simulator.errors import BadInput
from simulator.harness import check_workload
from simulator.imagetree import ImageTree
from simulator.inputs import load_image, load_workload
from simulator.replicas import Replicas
from simulator.trace import Op
from workloads.common import per_container, replicated

BASE = [Op("read", "/a", offset=0, length=10), Op("stat", "/b"), Op("chmod", "/c", mode=0o700)]
# Written out by hand: operation i is BASE[i // 3] for container i % 3.
EXPANDED = [
    Op("read", "/a", offset=0, length=10), Op("read", "/a", container=1, offset=0, length=10),
    Op("read", "/a", container=2, offset=0, length=10),
    Op("stat", "/b"), Op("stat", "/b", container=1), Op("stat", "/b", container=2),
    Op("chmod", "/c", mode=0o700), Op("chmod", "/c", container=1, mode=0o700), Op("chmod", "/c", container=2, mode=0o700),
]


def test_replicas_are_the_round_robin_list_of_every_containers_copy():
    r = Replicas(BASE, 3)
    assert len(r) == 9
    assert list(r) == EXPANDED
    assert r == EXPANDED and EXPANDED == r
    assert r == per_container(3, lambda c: [op._replace(container=c) for op in BASE])
    assert [r[i] for i in range(9)] == EXPANDED
    assert r[-1] == EXPANDED[-1] and r[-9] == EXPANDED[0]
    assert r[2:7] == EXPANDED[2:7] and r[::-2] == EXPANDED[::-2]
    assert type(r[4]) is Op and r[4].container == 1
    assert r != EXPANDED[:-1] and r != EXPANDED[:-1] + [Op("stat", "/x", container=2)]


def test_replicas_refuse_what_they_cannot_represent():
    with pytest.raises(IndexError):
        Replicas(BASE, 3)[9]
    with pytest.raises(IndexError):
        Replicas(BASE, 3)[-10]
    with pytest.raises(ValueError):
        Replicas([Op("stat", "/b", container=1)], 2)
    with pytest.raises(ValueError):
        Replicas(BASE, 0)


def test_one_container_keeps_the_plain_list_and_replicas_survive_pickling():
    assert replicated(1, BASE) is BASE
    r = replicated(3, BASE)
    assert isinstance(r, Replicas)
    assert pickle.loads(pickle.dumps(r)) == EXPANDED


def test_check_workload_words_replicas_as_it_words_their_list():
    for containers in (1, 2):
        with pytest.raises(BadInput) as listed:
            check_workload(EXPANDED, containers, "w")
        with pytest.raises(BadInput) as replicas:
            check_workload(Replicas(BASE, 3), containers, "w")
        assert str(replicas.value) == str(listed.value)
        assert f"operation {containers + 1} (read) names container {containers}" in str(replicas.value)
    check_workload(Replicas(BASE, 3), 3, "w")


def test_a_fleets_workload_holds_its_operations_once():
    """1,000 replicas of read-startup cost what one does (a list would hold 1,000 copies)."""
    tree = ImageTree.build(load_image("synthetic:layers=4,files=2000", 0))

    def built_bytes(spec: str) -> tuple[int, int]:
        tracemalloc.start()
        ops = load_workload(spec, tree, 0)
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size, len(ops)

    one, n_one = built_bytes("read-startup")
    fleet, n_fleet = built_bytes("read-startup:containers=1000")
    assert n_fleet == 1000 * n_one > 0
    assert fleet < 2 * one + 4096
