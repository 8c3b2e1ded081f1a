"""A fleet's operations without a copy per container: ``Replicas``.

A built-in workload with ``containers=N`` runs the same operations in N containers,
round-robin (``workloads.common.per_container``).  As a list, that is N copies of every
``Op``, differing only in ``container``: 1,000 containers of ``read-startup`` on the bench
image are 6.2M tuples of 168 B, about 1 GB before any container state (measured: a
``layerbench run`` of that fleet on devicemapper peaked at 4.5 GB RSS).  ``Replicas`` keeps
container 0's operations once and makes each other container's ``Op`` when it is asked
for, at about 0.3 us each, and the replay drops it right after.

It is a read-only ``Sequence``: ``len``, iteration and indexing (a slice gives a list) see
exactly the operations, and in the order, of the list ``per_container`` would build, and it
compares equal to that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import eq
from typing import Iterator, overload

from .trace import Op

_make = tuple.__new__
_CONTAINER = Op._fields.index("container")


class Replicas(Sequence[Op]):
    """``ops`` (all of container 0) run by containers ``0..replicas-1``, round-robin:
    operation ``i`` is ``ops[i // replicas]`` for container ``i % replicas``."""

    __slots__ = ("ops", "replicas")

    def __init__(self, ops: Sequence[Op], replicas: int):
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        if any(op.container for op in ops):
            raise ValueError("replicated operations must all be container 0's")
        self.ops, self.replicas = ops, replicas

    def __len__(self) -> int:
        return len(self.ops) * self.replicas

    def __iter__(self) -> Iterator[Op]:
        others = range(1, self.replicas)
        for op in self.ops:
            yield op
            head, tail = op[:_CONTAINER], op[_CONTAINER + 1:]
            for c in others:
                yield _make(Op, head + (c,) + tail)

    @overload
    def __getitem__(self, index: int) -> Op: ...

    @overload
    def __getitem__(self, index: slice) -> list[Op]: ...

    def __getitem__(self, index: int | slice) -> Op | list[Op]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("Replicas index out of range")
        op = self.ops[index // self.replicas]
        c = index % self.replicas
        return op if not c else _make(Op, op[:_CONTAINER] + (c,) + op[_CONTAINER + 1:])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Replicas, list, tuple)):
            return NotImplemented
        return len(other) == len(self) and all(map(eq, self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Replicas({len(self.ops)} operations x {self.replicas} containers)"
