"""Chris Kuehl's docker-storage-benchmark, reproduced: its image and its tests (DRIVERS.md 8.5).

github.com/chriskuehl/docker-storage-benchmark builds one image (its ``Dockerfile``) and runs
small shell tests in a container of it, on tmpfs for every driver so that the device does
not count.  Its published medians (DRIVERS.md 8.5) are the copy-up results most often quoted:
appending one line to each of 40 big files copies 1,690 MiB up on overlay and aufs.

The image, ``storage-benchmark``, is the Dockerfile's ``/test`` tree, layer by layer:

* big files written with dd from ``/dev/urandom``: ``copies`` (10) of each of 1, 8, 32 and
  128 MiB (dd's ``M`` is MiB), named ``<size>-<i>.bin`` in ``/test/big-files``: 1,690 MiB
  (1.65 GiB) in all;
* 10,001 files of 512 bytes named ``0`` to ``10000`` in ``/test/small-files``
  (``small_files``);
* a binary tree of directories ``0`` and ``1`` under ``/test/tree-of-files``, 14 levels
  below its root (``tree_depth``), each leaf holding a file ``oh-hi`` of 8 bytes ("oh, hi!"
  and a newline): 16,384 files in 32,767 directories.

Below them stand what ``FROM debian:jessie`` ships that the built-in workloads look for (log
files, dpkg's status database: ``workloads.layout.add_system_files``), then the layers of
``WORKDIR /test`` and of the ``mkdir`` of the two file directories.  The apt-get and
dumb-init layers are left out: they hold nothing under ``/test`` and nothing the tests touch.

The tests are three workloads that work on any image:

* ``append-each`` (``append-to-big-files``, ``append-to-small-files``: a shell loop over the
  glob ``DIR/*`` that appends "ohai" and a newline to each file): the glob opens the
  directory, then one append of ``length`` bytes (5) to each file in it, in the glob's order
  (bytewise, in the C locale a container starts with);
* ``read-each`` (``read-big-files``, ``read-small-files``: the same loop running ``cat``):
  every file read whole;
* ``tree-walk`` (``append-to-file-tree``, ``read-file-tree``): the tree tests' recursive bash
  function, ``pushd`` into each directory, a ``-f`` test of ``oh-hi``, then an append to or a
  read of that leaf file, or the same for each subdirectory, and ``popd``: the stats bash
  makes on the way are most of its operations (16,384 appends among 999,424 operations at
  depth 14).

Each generator was checked by recording, with ``layerbench trace record`` under strace, a
shell loop that does what the benchmark's script does, on the same tree laid out on disk:
``tests/test_storage_benchmark.py`` requires the generator to give the recorded operations
exactly (``read-file-tree`` less its ``readlink -f`` calls: another program's
canonicalisation, left out).  The published tests run N copies at once in one container:
``containers`` runs them in N containers instead (the copies of one container would share
what the first one copied up).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simulator.errors import BadInput
from simulator.image import Image
from simulator.imagetree import ImageTree
from simulator.layercols import ColumnsBuilder
from simulator.trace import Op
from simulator.units import MiB

from .common import below, replicated, tree_index
from .layout import SYSTEM_DIRS, add_system_files

# The Dockerfile's big files: one dd block of each of these sizes (dd's M: MiB) per copy.
BIG_FILE_SIZES = (("1M", 1 * MiB), ("8M", 8 * MiB), ("32M", 32 * MiB), ("128M", 128 * MiB))
SMALL_FILE_BYTES = 512  # one dd block of 512 bytes each
LEAF_NAME, LEAF_BYTES = "oh-hi", len("oh, hi!\n")  # the tree's leaf file and what echo writes into it
ECHO_OHAI_BYTES = len("ohai\n")  # the line the append tests echo onto each file
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
    for _ in range(tree_depth + 1):  # a mkdir at every level, the leaves' files last
        for d in level:
            out.add(TREE_LAYER, d, "dir", mode=0o755)
        if len(level) < 1 << tree_depth:
            level = [f"{d}/{bit}" for d in level for bit in "01"]
    for d in level:
        out.add(TREE_LAYER, f"{d}/{LEAF_NAME}", "file", LEAF_BYTES, 0o644)
    return Image("storage-benchmark", out.layers("layer"))


def _listed_files(tree: ImageTree, path: str, where: str) -> list[tuple[str, int]]:
    """(path, size) of the regular files directly in the image directory ``path``, in the
    order bash's ``DIR/*`` lists them (sorted bytewise in the C locale; no dot files)."""
    index = tree_index(tree)
    index.require_dir(path, where)
    skip = len(path.rstrip("/")) + 1
    at = below(index.files, path)
    return [(p, size) for p, size in zip(index.files[at], index.sizes[at])
            if "/" not in p[skip:] and p[skip] != "."]


def append_each(rng: np.random.Generator, tree: ImageTree, path: str, length: int, containers: int) -> Sequence[Op]:
    """The append tests' loop over ``DIR/*``: the glob opens the directory, then one append of
    ``length`` bytes to each regular file in it (on a file-level driver, one whole-file
    copy-up each)."""
    files = _listed_files(tree, path, "append-each")
    return replicated(containers, [Op("open", path, access="r")] + [
        Op("append", p, length=length) for p, _ in files])


def read_each(rng: np.random.Generator, tree: ImageTree, path: str, containers: int) -> Sequence[Op]:
    """The read tests' loop over ``DIR/*``, ``cat`` of each file: the glob opens the
    directory, then each regular file in it is read whole."""
    files = _listed_files(tree, path, "read-each")
    return replicated(containers, [Op("open", path, access="r")] + [
        Op("read", p, length=size) for p, size in files])


def _cd(path: str) -> list[Op]:
    """bash's ``cd`` (pushd, popd) to an absolute ``path``: it checks each leading directory
    of the logical path with stat(2), from the top (measured: see ``tree_walk``)."""
    parts = [part for part in path.split("/") if part]
    return [Op("stat", "/" + "/".join(parts[:i])) for i in range(1, len(parts) + 1)]


def tree_walk(rng: np.random.Generator, tree: ImageTree, path: str, leaf: str, action: str, length: int,
              cwd: str, containers: int) -> Sequence[Op]:
    """The tree tests' bash walk (``append-to-file-tree``, ``read-file-tree``): in each
    directory, ``pushd`` into it, test for the file ``leaf``; where it is there, append
    ``length`` bytes to it or read it with ``cat``, else walk each subdirectory (``0`` and
    ``1`` in the benchmark's tree; here every one, sorted); then ``popd`` back where it came
    from (``cwd`` at the end: the image's ``WORKDIR /test``).

    Recorded with ``layerbench trace record`` running the same loop (kernel 6.18, bash 5.2):
    each ``cd`` is a stat of every leading directory of the path under the root, the failed
    ``[ -f ]`` of an inner directory a failing ``open`` for reading (how a failed stat that
    follows links converts), the successful one a ``stat``; and before the first ``cat``, a
    stat of the working directory: bash stats ``.`` whenever it searches ``$PATH`` for a
    command it has not hashed yet (strace: once per command name).  ``read-file-tree``'s
    two ``readlink -f`` per directory (another program's canonicalisation) are left out."""
    where = "tree-walk"
    if action not in ("append", "read"):
        raise BadInput(f"{where}: parameter 'action' is 'append' or 'read', not {action!r}")
    if not leaf or "/" in leaf or leaf in (".", ".."):
        raise BadInput(f"{where}: parameter 'leaf' must be a file name, not {leaf!r}")
    index = tree_index(tree)
    index.require_dir(path, where)
    if cwd != "/":
        index.require_dir(cwd, f"{where}: parameter 'cwd'")
    sizes = dict(zip(index.files, index.sizes))
    subdirs: dict[str, list[str]] = {}
    for d in index.dirs:  # sorted: each list comes out sorted
        subdirs.setdefault(d.rpartition("/")[0] or "/", []).append(d)

    def walk() -> list[Op]:
        ops: list[Op] = []
        cat_found = False

        def explore(d: str, back: str) -> None:
            nonlocal cat_found
            ops.extend(_cd(d))
            file = f"{d}/{leaf}"
            if file in sizes:
                ops.append(Op("stat", file))
                if action == "append":
                    ops.append(Op("append", file, length=length))
                else:
                    if not cat_found:  # bash stats "." as it first looks cat up in $PATH
                        ops.append(Op("stat", d))
                        cat_found = True
                    ops.append(Op("read", file, length=sizes[file]))
            else:
                ops.append(Op("open", file, access="r"))  # fails: no such file
                for sub in subdirs.get(d, ()):
                    explore(sub, d)
            ops.extend(_cd(back))

        explore(path.rstrip("/"), cwd)
        return ops

    return replicated(containers, walk())
