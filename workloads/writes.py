"""Write workloads: logging, database page writes, and many small new files.

These are the three write patterns the storage-driver literature contrasts: appends to files
inherited from the image (the first append copies a whole file up on file-level drivers),
aligned random writes into big image files (block-level drivers copy one chunk, file-level
ones the whole file), and creation of many small files (metadata-bound on every driver).
"""

from __future__ import annotations

import numpy as np

from simulator.imagetree import ImageTree
from simulator.trace import Op

from .common import TreeIndex, per_container, sample, tree_index
from .layout import lognormal_sizes

POSTGRES_BLOCK_BYTES = 8192  # PostgreSQL BLCKSZ default (pg_config.h)


def log_files(index: TreeIndex, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` image files to append to: ``*.log`` files first, then files in directories
    called ``log``/``logs``, then (if the image has too few) other regular files at random."""
    logs = [p for p in index.files if p.endswith(".log")]
    in_log_dirs = [p for p in index.files if not p.endswith(".log")
                   and p.rsplit("/", 2)[-2] in ("log", "logs")]
    chosen = sample(rng, logs, count)
    chosen += sample(rng, in_log_dirs, count - len(chosen))
    if len(chosen) < count:
        taken = set(chosen)
        rest = [p for p in index.files if p not in taken]
        chosen += sample(rng, rest, count - len(chosen))
    return chosen


def append_log(rng: np.random.Generator, tree: ImageTree, files: int, appends: int, length: int,
               fsync_every: int, containers: int) -> list[Op]:
    """A service logging into the log files its image ships with (syslog, an application's
    ``/var/log/app.log``): ``appends`` records of ``length`` bytes, each to a random one of
    ``files`` existing log files, with an ``fsync`` of that file every ``fsync_every`` records
    (0: never, the page cache writes back at the end).  On overlay the first append to each
    log copies the whole file up; block-level drivers copy only the last chunk."""
    targets = log_files(tree_index(tree), files, rng)  # one program: the same logs in every replica

    def one(c: int) -> list[Op]:
        if not targets:
            return []
        picks = rng.integers(len(targets), size=appends).tolist()
        ops: list[Op] = []
        for i, t in enumerate(picks, 1):
            ops.append(Op("append", targets[t], container=c, length=length))
            if fsync_every and i % fsync_every == 0:
                ops.append(Op("fsync", targets[t], container=c))
        return ops

    return per_container(containers, one)


def overwrite_random(rng: np.random.Generator, tree: ImageTree, files: int, writes: int, page: int,
                     fsync_every: int, containers: int) -> list[Op]:
    """A database updating pages in place in data files it finds in the image (PostgreSQL
    heap files, SQLite databases): ``writes`` page-aligned writes of ``page`` bytes at random
    pages of the ``files`` largest image files, with an ``fsync`` every ``fsync_every`` writes
    (a checkpoint).  Writes stay inside each file (files smaller than a page get their first
    page rewritten), so files never grow: the pure copy-on-write cost of in-place updates."""
    index = tree_index(tree)
    ranked = sorted(index.distinct_files(), key=lambda item: (-item[1], item[0]))[:files]
    targets = [(p, max(1, size // page)) for p, size in ranked]

    def one(c: int) -> list[Op]:
        if not targets:
            return []
        which = rng.integers(len(targets), size=writes).tolist()
        fractions = rng.random(writes).tolist()
        ops: list[Op] = []
        for i, (t, u) in enumerate(zip(which, fractions), 1):
            path, pages = targets[t]
            ops.append(Op("write", path, container=c, offset=int(u * pages) * page, length=page))
            if fsync_every and i % fsync_every == 0:
                ops.append(Op("fsync", path, container=c))
        return ops

    return per_container(containers, one)


def small_files(rng: np.random.Generator, tree: ImageTree, files: int, dirs: int, existing: float,
                size_median: int, size_sigma: float, containers: int) -> list[Op]:
    """Unpacking or generating many small files (a source checkout, a cache, node_modules):
    ``mkdir`` of ``dirs`` new directories under random image directories, then ``files``
    files with lognormal sizes; a fraction ``existing`` of them lands directly in existing
    image directories (copying those directories up on overlay), the rest in the new ones."""
    index = tree_index(tree)
    image_dirs = index.dirs or ["/"]

    def one(c: int) -> list[Op]:
        ops: list[Op] = []
        parents = rng.integers(len(image_dirs), size=dirs).tolist()
        new_dirs = []
        for j, k in enumerate(parents):
            path = f"{image_dirs[k].rstrip('/')}/newdir{j}"
            new_dirs.append(path)
            ops.append(Op("mkdir", path, container=c))
        sizes = lognormal_sizes(rng, size_median, size_sigma, files).tolist()
        into_existing = (rng.random(files) < existing).tolist() if new_dirs else [True] * files
        picks_old = rng.integers(len(image_dirs), size=files).tolist()
        picks_new = rng.integers(max(1, len(new_dirs)), size=files).tolist()
        for i, (size, old, a, b) in enumerate(zip(sizes, into_existing, picks_old, picks_new)):
            parent = image_dirs[a].rstrip("/") if old else new_dirs[b]
            ops.append(Op("create", f"{parent}/small{i}.dat", container=c, size=size))
        return ops

    return per_container(containers, one)
