"""Read workloads: what a container reads from its image when it starts.

Harter et al., "Slacker: Fast Distribution with Lazy Docker Containers" (FAST '16; DRIVERS.md
section 8.1): across the 57 HelloBench images, "only 6.4% of [the pulled] data is read" at
startup.  ``read-startup`` reproduces that fraction exactly by bytes; which files it reads
is random (Starlight, NSDI '22, finds startup touches few files, but no published
distribution says which), so the workload measures read cost and page-cache sharing, not a
particular program's access pattern.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simulator.imagetree import ImageTree
from simulator.trace import Op

from .common import TreeIndex, replicated, tree_index

SLACKER_READ_FRACTION = 0.064  # Harter et al. FAST '16, abstract: 6.4 % of image data read at startup


def startup_reads(rng: np.random.Generator, index: TreeIndex, fraction: float) -> list[tuple[str, int]]:
    """(path, bytes) reads totalling exactly ``floor(fraction * image file bytes)``: files in
    random order, each read whole when it fits in what is left, and the last one read only
    as far as needed (a program reading a file's head).  Hard links count once."""
    files = [(p, size) for p, size in index.distinct_files() if size > 0]
    total = sum(size for _, size in files)
    remaining = int(fraction * total)
    reads: list[tuple[str, int]] = []
    partial: tuple[str, int] | None = None
    for i in rng.permutation(len(files)).tolist():
        if not remaining:
            break
        path, size = files[i]
        if size <= remaining:
            reads.append((path, size))
            remaining -= size
        elif partial is None:
            partial = (path, remaining)
    if remaining and partial is not None:
        reads.append((partial[0], remaining))
    return reads


def read_startup(rng: np.random.Generator, tree: ImageTree, fraction: float, containers: int) -> Sequence[Op]:
    """Container start: read ``fraction`` (default Slacker's 6.4 %) of the image's file
    bytes, whole files from offset 0.  Every replica reads the same files, as N copies of
    one program do: drivers that share the page cache between containers (overlay) hold
    those pages once, the others once per container."""
    reads = startup_reads(rng, tree_index(tree), fraction)
    return replicated(containers, [Op("read", p, offset=0, length=n) for p, n in reads])
