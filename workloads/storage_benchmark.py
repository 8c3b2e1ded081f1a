"""Chris Kuehl's docker-storage-benchmark, reproduced: its image and its tests (DRIVERS.md 8.5).

github.com/chriskuehl/docker-storage-benchmark builds one image (its ``Dockerfile``) and runs
small shell tests in a container of it, on tmpfs for every driver so that the device does
not count.  Its published medians (DRIVERS.md 8.5) are the copy-up results most often quoted:
appending one line to each of 40 big files copies 1,690 MiB up on overlay and aufs

The image, ``storage-benchmark``, is the Dockerfile's ``/test`` tree, layer by layer:

* ``RUN for i in $(seq 0 9); do for size in 1M 8M 32M 128M; do dd if=/dev/urandom
  of=/test/big-files/${size}-${i}.bin bs=${size} count=1``: ``copies`` (10) files of each of
  1, 8, 32 and 128 MiB (dd's ``M`` is MiB), 1,690 MiB (1.65 GiB) in all;
* ``for i in $(seq 0 10000); do dd ... of=/test/small-files/$i bs=512 count=1``: 10,001
  files of 512 bytes (``small_files``);
* ``make_tree /test/tree-of-files 14``: a binary tree of directories ``0`` and ``1``, 14
  levels below its root (``tree_depth``), each leaf holding ``oh-hi`` ("oh, hi!\\n", 8 bytes):
  16,384 files in 32,767 directories.

Below them stand what ``FROM debian:jessie`` ships that the built-in workloads look for (log
files, dpkg's status database: ``workloads.layout.add_system_files``), then the layers of
``WORKDIR /test`` and of ``mkdir -p /test/big-files /test/small-files``.  The apt-get and
dumb-init layers are left out: they hold nothing under ``/test`` and nothing the tests touch.

The tests are two workloads that work on any image:

* ``append-each``: ``for f in DIR/*; do echo ohai >> "$f"; done`` (``append-to-big-files``,
  ``append-to-small-files``; ``append-to-file-tree`` appends to every leaf of the tree in
  the same depth-first order): one append of ``length`` bytes ("ohai\\n": 5) to every regular
  file under ``path``, in sorted order, which is both the glob's order and the tree test's
  depth-first order (``0`` before ``1`` at every level).
* ``read-each``: ``cat "$f" > /dev/null`` for each file (``read-big-files``,
  ``read-small-files``, ``read-file-tree``): every regular file read whole.

Left out: the tree tests' shell walk (``pushd`` into every directory, ``[ -f oh-hi ]`` and
``readlink -f`` at every level) is a stat storm of its own; ``import-scan`` models such
storms, these workloads only the data operations.  The published tests run N copies at once
in one container: ``containers`` runs them in N containers instead (the copies of one
container would share what the first one copied up).
"""

from __future__ import annotations

import numpy as np

from simulator.image import Image
from simulator.imagetree import ImageTree
from simulator.layercols import ColumnsBuilder
from simulator.trace import Op
from simulator.units import MiB

from .common import TreeIndex, per_container
from .layout import SYSTEM_DIRS, add_system_files

# The Dockerfile: ``for size in 1M 8M 32M 128M``, dd with ``bs=${size} count=1``.
BIG_FILE_SIZES = (("1M", 1 * MiB), ("8M", 8 * MiB), ("32M", 32 * MiB), ("128M", 128 * MiB))
SMALL_FILE_BYTES = 512  # ``dd ... bs=512 count=1``
LEAF_NAME, LEAF_BYTES = "oh-hi", len("oh, hi!\n")  # ``echo "oh, hi!" > "${cur}/oh-hi"``
ECHO_OHAI_BYTES = len("ohai\n")  # ``echo ohai >> "$f"``
ROOT = "/test"
BIG, SMALL, TREE = f"{ROOT}/big-files", f"{ROOT}/small-files", f"{ROOT}/tree-of-files"
DEBIAN_LOGS = 8  # log files the stand-in for debian:jessie ships (as the synthetic images)
# The layers, bottom first: FROM debian:jessie (its system files), WORKDIR /test, mkdir -p,
# then the three RUN lines that fill /test.
BASE, WORKDIR, MKDIR, BIG_LAYER, SMALL_LAYER, TREE_LAYER = range(6)


def storage_benchmark(rng: np.random.Generator, copies: int, small_files: int, tree_depth: int) -> Image:
    """The ``/test`` tree of docker-storage-benchmark's Dockerfile over a Debian stand-in (see
    the module docstring); ``copies`` big files of each size, ``small_files`` small files,
    a binary tree ``tree_depth`` levels deep.  File contents are random bytes in the original
    (``/dev/urandom``): nothing here depends on them."""
    out = ColumnsBuilder(TREE_LAYER + 1)
    for d in SYSTEM_DIRS:
        out.add(BASE, d, "dir", mode=0o755)
    add_system_files(out, rng, DEBIAN_LOGS)
    out.add(WORKDIR, ROOT, "dir", mode=0o755)
    for d in (BIG, SMALL):
        out.add(MKDIR, d, "dir", mode=0o755)
    for i in range(copies):
        for label, size in BIG_FILE_SIZES:
            out.add(BIG_LAYER, f"{BIG}/{label}-{i}.bin", "file", size, 0o644)
    for i in range(small_files):
        out.add(SMALL_LAYER, f"{SMALL}/{i}", "file", SMALL_FILE_BYTES, 0o644)
    level = [TREE]
    for _ in range(tree_depth + 1):  # make_tree's mkdir at every level, the leaves last
        for d in level:
            out.add(TREE_LAYER, d, "dir", mode=0o755)
        if len(level) < 1 << tree_depth:
            level = [f"{d}/{bit}" for d in level for bit in "01"]
    for d in level:
        out.add(TREE_LAYER, f"{d}/{LEAF_NAME}", "file", LEAF_BYTES, 0o644)
    return Image("storage-benchmark", out.layers("layer"))


def _files_under(tree: ImageTree, path: str, where: str) -> list[tuple[str, int]]:
    """(path, size) of every regular file below the image directory ``path``, sorted."""
    index = TreeIndex(tree)
    index.require_dir(path, where)
    prefix = path.rstrip("/") + "/"
    return [(p, size) for p, size in zip(index.files, index.sizes) if p.startswith(prefix)]


def append_each(rng: np.random.Generator, tree: ImageTree, path: str, length: int, containers: int) -> list[Op]:
    """One append of ``length`` bytes to every regular file under ``path``, in sorted order:
    on a file-level driver, one whole-file copy-up each."""
    files = _files_under(tree, path, "append-each")
    return per_container(containers, lambda c: [Op("append", p, container=c, length=length) for p, _ in files])


def read_each(rng: np.random.Generator, tree: ImageTree, path: str, containers: int) -> list[Op]:
    """Every regular file under ``path`` read whole, in sorted order (``cat f > /dev/null``)."""
    files = _files_under(tree, path, "read-each")
    return per_container(containers, lambda c: [Op("read", p, container=c, length=size) for p, size in files])
