"""``package-install``: what ``dpkg -i`` (and so ``apt-get install``) does to a file system.

dpkg's unpack (src/main/archives.c, ``tarobject`` and ``tar_deferred_extract``) writes every
file of the package as ``PATH.dpkg-new``, then in a deferred pass fsyncs them all and renames
each over its final name, so an upgrade replaces files atomically; before replacing an
existing file it keeps a hard-linked backup ``PATH.dpkg-tmp``, removed once the package is
in.  It records the package in ``/var/lib/dpkg/info/PKG.list`` and ``PKG.md5sums`` and
rewrites the whole status database (src/main/dbmodify.c, ``modstatdb_checkpoint``): write
``status-new``, fsync it, hard-link the old ``status`` to ``status-old``, rename
``status-new`` over ``status``.

For a copy-on-write driver every step matters: replacing a file by rename never copies the
old data up (only the parent directory and a whiteout-free rename), while the status
database is rewritten whole for each package.
"""

from __future__ import annotations

import numpy as np

from simulator.imagetree import ImageTree
from simulator.paths import join
from simulator.trace import Op

from .common import exists, per_container, sample, tree_index
from .layout import DPKG_STATUS, EXTENSIONS, lognormal_sizes

DPKG_DIR = "/var/lib/dpkg"
DPKG_INFO = f"{DPKG_DIR}/info"
STATUS_STANZA_BYTES = 1024  # assumed: one package's status stanza, ~1 KiB
LIST_LINE_BYTES = 48  # assumed: one path line in PKG.list (~48 bytes average)
MD5SUMS_LINE_BYTES = 80  # 32 hex digits, two spaces, a path of ~46 bytes


class _Dpkg:
    """What the generator knows of dpkg's database while it writes the op list."""

    def __init__(self, tree: ImageTree, status_bytes: int):
        self.tree = tree
        status = tree.resolve_dir(DPKG_DIR)
        node = status.children.get("status") if status is not None else None
        size = getattr(node, "size", 0)
        self.status_size = status_bytes or size
        self.have_status = node is not None
        self.have_old = exists(tree, f"{DPKG_DIR}/status-old")

    def setup(self, c: int) -> list[Op]:
        """``mkdir -p`` of the database directories the image lacks."""
        ops = []
        for d in ("/var", "/var/lib", DPKG_DIR, DPKG_INFO):
            if self.tree.resolve_dir(d) is None and not exists(self.tree, d):
                ops.append(Op("mkdir", d, container=c))
        return ops

    def checkpoint(self, c: int, name: str, files: int) -> list[Op]:
        """Record package ``name`` and rewrite the status database."""
        self.status_size += STATUS_STANZA_BYTES
        ops = [Op("create", f"{DPKG_INFO}/{name}.list", container=c, size=files * LIST_LINE_BYTES),
               Op("create", f"{DPKG_INFO}/{name}.md5sums", container=c, size=files * MD5SUMS_LINE_BYTES),
               Op("create", f"{DPKG_STATUS}-new", container=c, size=self.status_size),
               Op("fsync", f"{DPKG_STATUS}-new", container=c)]
        if self.have_status:
            if self.have_old:
                ops.append(Op("unlink", f"{DPKG_STATUS}-old", container=c))
            ops.append(Op("link", DPKG_STATUS, f"{DPKG_STATUS}-old", container=c))
            self.have_old = True
        ops.append(Op("rename", f"{DPKG_STATUS}-new", DPKG_STATUS, container=c))
        self.have_status = True
        return ops


def unpack(c: int, name: str, new: list[tuple[str, int]], replaced: list[tuple[str, int]],
           doc_dir: str) -> list[Op]:
    """One package's unpack: ``.dpkg-new`` files, fsync pass, backups, renames, cleanup."""
    files = new + replaced
    ops = [Op("mkdir", doc_dir, container=c)]
    ops += [Op("create", f"{p}.dpkg-new", container=c, size=size) for p, size in files]
    ops += [Op("fsync", f"{p}.dpkg-new", container=c) for p, _ in files]
    ops += [Op("link", p, f"{p}.dpkg-tmp", container=c) for p, _ in replaced]
    ops += [Op("rename", f"{p}.dpkg-new", p, container=c) for p, _ in files]
    ops += [Op("unlink", f"{p}.dpkg-tmp", container=c) for p, _ in replaced]
    return ops


def package_install(rng: np.random.Generator, tree: ImageTree, packages: int, files: int, replace: float,
                    size_median: int, size_sigma: float, status_bytes: int, containers: int) -> list[Op]:
    """Installing ``packages`` packages of ``files`` files each, one after the other as
    ``apt-get install`` does: a fraction ``replace`` of each package's files replace
    existing image files (an upgrade), the others are new files in existing image
    directories, plus one new ``/usr/share/doc``-style directory per package; then dpkg's
    database update.  ``status_bytes`` 0 keeps the image's status file size (a new one
    starts empty).  Every replica installs the same packages."""
    index = tree_index(tree)
    image_files = [(p, size) for p, size in zip(index.files, index.sizes) if not p.startswith(DPKG_DIR + "/")]
    image_dirs = [p for p in index.dirs if not p.startswith(DPKG_DIR)] or ["/"]
    n_replace = int(round(replace * files))
    pool = sample(rng, image_files, min(len(image_files), n_replace * packages))
    pool = [pool[i] for i in rng.permutation(len(pool)).tolist()]
    plan = []
    for k in range(packages):
        name = f"pkg{k}"
        replaced = [(p, int(s)) for (p, _), s in zip(pool[k * n_replace:(k + 1) * n_replace],
                                                      lognormal_sizes(rng, size_median, size_sigma, n_replace))]
        n_new = files - len(replaced)
        dirs = rng.integers(len(image_dirs), size=n_new).tolist()
        sizes = lognormal_sizes(rng, size_median, size_sigma, n_new).tolist()
        new = [(join(image_dirs[d], f"{name}-file{i}{EXTENSIONS[i % len(EXTENSIONS)]}"), s)
               for i, (d, s) in enumerate(zip(dirs, sizes))]
        doc_parent = image_dirs[int(rng.integers(len(image_dirs)))]
        plan.append((name, new, replaced, join(doc_parent, f"{name}-doc")))

    def one(c: int) -> list[Op]:
        dpkg = _Dpkg(tree, status_bytes)
        ops = dpkg.setup(c)
        for name, new, replaced, doc in plan:
            ops += unpack(c, name, new, replaced, doc)
            ops += dpkg.checkpoint(c, name, len(new) + len(replaced))
        return ops

    return per_container(containers, one)

