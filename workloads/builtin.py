"""The built-in images and workloads: the registry table ``layerbench images`` and
``layerbench workloads`` list, with every parameter's default and bounds.

``demo`` is the small example shipped with the package (``workloads/examples/``): the
README's first command runs it.  ``random`` is the seeded generator of ``workloads.random``.
The generators live in their own modules (``images``, ``writes``, ``reads``,
``namespace_ops``, ``packages``, ``build``); this module only names them and declares their
parameters.  Every workload takes ``containers`` (the replicas it drives, numbered
0..N-1; ``--containers`` must be at least that).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Sequence

import numpy as np

from simulator.image import Image, image_from_dict
from simulator.imagetree import ImageTree
from simulator.trace import Op, parse_trace_lines
from simulator.treelisting import listing

from . import build, images, namespace_ops, packages, reads, storage_benchmark, writes
from .common import replicated
from .random import random_image, random_trace
from .registry import Builtin, Param

EXAMPLES = resources.files("workloads") / "examples"


def _demo_image(rng: np.random.Generator) -> Image:
    return image_from_dict(json.loads((EXAMPLES / "demo-image.json").read_text()), "demo-image.json")


def _demo_trace(rng: np.random.Generator, tree: ImageTree, containers: int = 1) -> Sequence[Op]:
    """The example trace, replayed by each of ``containers`` replicas (round-robin)."""
    ops = list(parse_trace_lines((EXAMPLES / "demo-trace.jsonl").read_text().splitlines(), "demo-trace.jsonl"))
    return replicated(containers, ops)


def _random_image(rng: np.random.Generator, layers: int, entries: int) -> Image:
    return random_image(rng, layers=layers, entries=entries)


def _random_trace(rng: np.random.Generator, tree: ImageTree, ops: int, containers: int) -> list[Op]:
    paths = sorted(listing(tree).paths)  # the columns' paths: a walk would make every node (issue 7)
    return random_trace(rng, paths, ops=ops, containers=containers)


MAX_FILES = 10_000_000
MAX_LAYERS = 500  # the kernel's overlayfs limit on lower layers (OVL_MAX_STACK)
MAX_OPS = 10_000_000


def _fraction(name: str, default: float, doc: str) -> Param:
    return Param(name, default, doc, 0.0, 1.0)


def _containers() -> Param:
    return Param("containers", 1, "replicas running the workload, containers 0..N-1 (--containers >= N)",
                 1, 100_000)


IMAGES: dict[str, Builtin] = {
    "demo": Builtin("demo", "the example image shipped with layerbench (3 layers, 9 files)", (), _demo_image),
    "random": Builtin("random", "a small random image (the differential tests' generator)", (
        Param("layers", 3, "number of layers", 1, 500),
        Param("entries", 12, "entries tried per layer", 0, 100_000),
    ), _random_image),
    "synthetic": Builtin("synthetic", "files spread over layers and a directory tree, lognormal sizes, "
                         "some overwritten or deleted by later layers", (
        Param("layers", 8, "number of layers", 1, MAX_LAYERS),
        Param("files", 10_000, "regular files created (before later layers delete some)", 0, MAX_FILES),
        Param("dirs", 0, "directories (0: files / 16)", 0, MAX_FILES),
        Param("depth", 4, "deepest directory level of the generated tree", 1, 64),
        Param("size_median", 4096, "median file size, bytes (lognormal)", 0, 2**40),
        Param("size_sigma", 1.5, "sigma of the lognormal file size", 0.0, 5.0),
        _fraction("overwrite", 0.1, "fraction of files a later layer overwrites"),
        _fraction("delete", 0.05, "fraction of files a later layer deletes (whiteout)"),
        _fraction("symlinks", 0.01, "symbolic links to random files, as a fraction of files"),
        Param("logs", 8, "log files in /var/log (append-log's targets)", 0, 10_000),
    ), images.synthetic),
    "dockerhub": Builtin("dockerhub", "layers, files and sizes sampled from the Docker Hub distributions "
                         "(Zhao et al. CLUSTER '19; fitted lognormals, see workloads/images.py)", (
        Param("layers", 0, "number of layers (0: sampled: half < 8, p90 < 18, max 120)", 0, MAX_LAYERS),
        Param("files", 0, "regular files (0: sampled, median 1,090)", 0, MAX_FILES),
        Param("depth", 5, "deepest directory level (assumed; not published)", 1, 64),
        _fraction("overwrite", images.HUB_OVERWRITE, "fraction of files a later layer overwrites (assumed)"),
        _fraction("delete", images.HUB_DELETE, "fraction of files a later layer deletes (assumed)"),
        Param("logs", 8, "log files in /var/log", 0, 10_000),
    ), images.dockerhub),
    "deep": Builtin("deep", "N layers that all add files to the same directories (lookup-depth sweeps)", (
        Param("layers", 32, "number of layers", 1, MAX_LAYERS),
        Param("dirs", 4, "directories every layer writes into", 1, 10_000),
        Param("depth", 3, "directory level of those directories", 1, 64),
        Param("files", 8, "files each layer adds to each directory", 0, 100_000),
        Param("size", 4096, "size of every file, bytes", 0, 2**40),
        Param("logs", 4, "log files in /var/log", 0, 10_000),
    ), images.deep),
    "storage-benchmark": Builtin("storage-benchmark", "the /test tree of chriskuehl/docker-storage-benchmark: "
                                 "big files of 1, 8, 32 and 128 MiB, 512-byte files, a binary directory tree", (
        Param("copies", 10, "big files of each size (1,690 MiB in all at 10)", 0, 1000),
        Param("small_files", 10_001, "512-byte files in /test/small-files", 0, MAX_FILES),
        Param("tree_depth", 14, "levels of /test/tree-of-files (2^depth leaves)", 0, 20),
    ), storage_benchmark.storage_benchmark),
}

WORKLOADS: dict[str, Builtin] = {
    "demo": Builtin("demo", "the example trace shipped with layerbench (appends, a rename, a delete)",
                    (_containers(),), _demo_trace),
    "random": Builtin("random", "random operations over the image's paths, failures included", (
        Param("ops", 40, "number of operations", 0, 10_000_000),
        _containers(),
    ), _random_trace),
    "append-log": Builtin("append-log", "append records to log files the image ships", (
        Param("files", 8, "log files appended to (*.log first)", 1, 100_000),
        Param("appends", 2000, "records appended per container", 0, MAX_OPS),
        Param("length", 512, "bytes per record", 0, 2**30),
        Param("fsync_every", 0, "fsync after every N records (0: never)", 0, MAX_OPS),
        _containers(),
    ), writes.append_log),
    "overwrite-random": Builtin("overwrite-random", "database-style aligned page writes into the largest "
                                "image files", (
        Param("files", 4, "largest image files written into", 1, 100_000),
        Param("writes", 2000, "page writes per container", 0, MAX_OPS),
        Param("page", writes.POSTGRES_BLOCK_BYTES, "bytes per write and alignment (PostgreSQL BLCKSZ)",
              512, 2**30),
        Param("fsync_every", 200, "fsync after every N writes (a checkpoint; 0: never)", 0, MAX_OPS),
        _containers(),
    ), writes.overwrite_random),
    "small-files": Builtin("small-files", "create many small files in new and existing directories", (
        Param("files", 1000, "files created per container", 0, MAX_OPS),
        Param("dirs", 10, "new directories made first", 0, 100_000),
        _fraction("existing", 0.5, "fraction of files put in existing image directories"),
        Param("size_median", 2048, "median file size, bytes (lognormal)", 0, 2**40),
        Param("size_sigma", 1.0, "sigma of the lognormal size", 0.0, 5.0),
        _containers(),
    ), writes.small_files),
    "chmod-tree": Builtin("chmod-tree", "chmod -R over an image subtree", (
        Param("path", "", "directory to chmod (empty: one with about `entries` entries)"),
        Param("entries", 1000, "subtree size sought when path is empty", 1, MAX_FILES),
        Param("mode", 0o755, "mode set on every file and directory (decimal; 493 = 0755)", 0, 0o7777),
        _containers(),
    ), namespace_ops.chmod_tree),
    "delete-tree": Builtin("delete-tree", "rm -rf of image subtrees", (
        Param("path", "", "directory to remove (empty: pick subtrees of about `entries` entries)"),
        Param("entries", 1000, "subtree size sought when path is empty", 1, MAX_FILES),
        Param("trees", 1, "subtrees removed when path is empty", 1, 10_000),
        _containers(),
    ), namespace_ops.delete_tree),
    "rename-dirs": Builtin("rename-dirs", "mv of image directories to DIR.old (copy fallback on EXDEV)", (
        Param("dirs", 4, "disjoint directories moved", 1, 10_000),
        Param("entries", 200, "entries sought in each moved subtree", 1, MAX_FILES),
        _containers(),
    ), namespace_ops.rename_dirs),
    "package-install": Builtin("package-install", "dpkg-like unpack: .dpkg-new files renamed into place, "
                               "backups, status database rewrite", (
        Param("packages", 4, "packages installed, one after the other", 1, 10_000),
        Param("files", 100, "files per package", 1, 1_000_000),
        _fraction("replace", 0.2, "fraction of a package's files replacing existing image files"),
        Param("size_median", 16384, "median file size, bytes (lognormal)", 0, 2**40),
        Param("size_sigma", 1.5, "sigma of the lognormal size", 0.0, 5.0),
        Param("status_bytes", 0, "status database size before the first package (0: the image's)", 0, 2**40),
        _containers(),
    ), packages.package_install),
    "read-startup": Builtin("read-startup", "read a fraction of the image's bytes, whole files "
                            "(Slacker: 6.4% at startup)", (
        _fraction("fraction", reads.SLACKER_READ_FRACTION, "fraction of the image's file bytes read"),
        _containers(),
    ), reads.read_startup),
    "import-scan": Builtin("import-scan", "a stat storm of mostly negative lookups (Python 2 import path "
                           "search)", (
        Param("modules", 300, "modules imported", 0, 1_000_000),
        Param("path_dirs", 6, "image directories on the search path", 1, 10_000),
        _fraction("missing", 0.1, "fraction of imports no directory satisfies"),
        _containers(),
    ), namespace_ops.import_scan),
    "build": Builtin("build", "Dockerfile-like steps, each writing files then committed as a layer", (
        Param("steps", 5, "steps, each ending in a commit", 1, 1000),
        Param("files", 100, "files each step creates", 0, 1_000_000),
        Param("modify", 10, "image files each step rewrites (sed -i)", 0, 1_000_000),
        Param("delete", 10, "image files each step deletes", 0, 1_000_000),
        Param("size_median", 8192, "median created file size, bytes (lognormal)", 0, 2**40),
        Param("size_sigma", 2.0, "sigma of the lognormal size", 0.0, 5.0),
        _containers(),
    ), build.build),
    "append-each": Builtin("append-each", "append a line to every file in a directory (docker-storage-"
                           "benchmark's append tests: echo ohai >> f)", (
        Param("path", storage_benchmark.BIG, "image directory whose files are appended to"),
        Param("length", storage_benchmark.ECHO_OHAI_BYTES, "bytes per append ('ohai\\n')", 0, 2**30),
        _containers(),
    ), storage_benchmark.append_each),
    "read-each": Builtin("read-each", "read every file in a directory whole (docker-storage-benchmark's "
                         "read tests: cat f)", (
        Param("path", storage_benchmark.BIG, "image directory whose files are read"),
        _containers(),
    ), storage_benchmark.read_each),
    "tree-walk": Builtin("tree-walk", "bash's depth-first walk of a directory tree, appending to or reading "
                         "a leaf file in each leaf directory (docker-storage-benchmark's tree tests)", (
        Param("path", storage_benchmark.TREE, "image directory the walk starts in"),
        Param("leaf", storage_benchmark.LEAF_NAME, "file whose presence makes a directory a leaf"),
        Param("action", "append", "what is done to each leaf file: append or read"),
        Param("length", storage_benchmark.ECHO_OHAI_BYTES, "bytes per append", 0, 2**30),
        Param("cwd", storage_benchmark.ROOT, "directory the walk starts from and returns to (/: none)"),
        _containers(),
    ), storage_benchmark.tree_walk),
    "mixed": Builtin("mixed", "startup reads, imports, logging, page writes, small files, a package install "
                     "and a chmod, interleaved", (
        Param("scale", 0.25, "each component's size relative to its default", 0.0, 100.0),
        _containers(),
    ), build.mixed),
}

# The workloads a default campaign sweeps (moderate sizes: one cell simulates in well under
# a second on a default ``synthetic`` image).
MAIN_WORKLOADS = ("append-log", "overwrite-random", "small-files", "package-install", "read-startup",
                  "delete-tree", "rename-dirs", "chmod-tree")
