"""The microbenchmarks ``layerbench calibrate`` fits the cost model on: one or a few per
cost, at sizes of 10-200 ms, each a small image and a trace (split out of ``calibrate``).

Each is timed on the real backend and counted by the simulator; none is a held-out workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from simulator.image import Entry, Image, Layer
from simulator.trace import Op

KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Bench:
    name: str
    cost: str  # what it is there to measure
    image: Callable[[], Image]
    ops: Callable[[Image], list[Op]]
    containers: int = 1


# Image files sit in this many directories of /d, as in real images (and unlike one flat
# directory): on btrfs the first lookup of each directory in a fresh snapshot reads its inode.
FILE_DIRS = 40


def _f(i: int) -> str:
    """Path of image file ``i`` of ``_files``."""
    return f"/d/s{i % FILE_DIRS}/f{i}"


def _files(n: int, size: int, layers: int = 1) -> Image:
    per = [list() for _ in range(layers)]
    for i in range(n):
        per[i % layers].append(Entry(_f(i), "file", size=size, mode=0o644))
    dirs = tuple(Entry(f"/d/s{k}", "dir", mode=0o755) for k in range(min(n, FILE_DIRS)))
    return Image("calib", tuple(Layer(f"l{k}", (Entry("/d", "dir", mode=0o755),) + (dirs if k == 0 else ()) + tuple(e))
                                for k, e in enumerate(per)))


def _trees(trees: int, files: int, size: int = 100) -> Image:
    entries = [Entry(f"/t{k}/s{j % 10}/f{j}", "file", size=size) for k in range(trees) for j in range(files)]
    return Image("calib-trees", (Layer("l0", tuple(entries)),))


def _spread(dirs: int, layers: int, files: int = 2, size: int = 100) -> Image:
    """``dirs`` directories each present in every one of ``layers`` layers (as /usr/lib is in
    most layers of a real image), their ``files`` files in the top one."""
    out = []
    for k in range(layers):
        entries = [Entry("/w", "dir", mode=0o755)] + [Entry(f"/w/d{j}", "dir", mode=0o755) for j in range(dirs)]
        if k == layers - 1:
            entries += [Entry(f"/w/d{j}/f{i}", "file", size=size, mode=0o644) for j in range(dirs) for i in range(files)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-spread", tuple(out))


def _layered_tree(layers: int, dirs: int, files: int, size: int = 8 * KiB) -> Image:
    """/t/s<j>/f<i>: every directory in every layer, the files spread over the layers."""
    out = []
    for k in range(layers):
        entries = [Entry("/t", "dir", mode=0o755)] + [Entry(f"/t/s{j}", "dir", mode=0o755) for j in range(dirs)]
        entries += [Entry(f"/t/s{i % dirs}/f{i}", "file", size=size, mode=0o644) for i in range(k, files, layers)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-layered", tuple(out))


def _scattered(files: int = 3000, layers: int = 6, size: int = 8 * KiB) -> Image:
    """A larger image, its files in 300 directories two levels deep (/x/a<k>/b<m>), spread
    over ``layers`` layers, as in a real image: a btrfs tree of many leaves."""
    out = []
    for k in range(layers):
        entries = [Entry("/x", "dir", mode=0o755)] + [Entry(f"/x/a{a}", "dir", mode=0o755) for a in range(20)]
        entries += [Entry(f"/x/a{a}/b{b}", "dir", mode=0o755) for a in range(20) for b in range(15)]
        entries += [Entry(_scattered_path(i), "file", size=size, mode=0o644) for i in range(k, files, layers)]
        out.append(Layer(f"l{k}", tuple(entries)))
    return Image("calib-scattered", tuple(out))


def _scattered_path(i: int) -> str:
    return f"/x/a{i % 20}/b{i // 20 % 15}/f{i}"


def _scattered_order(n: int, files: int = 3000) -> list[int]:
    """``n`` of the files in a fixed random order (seeded): lookups that hop between leaves."""
    return np.random.default_rng(6).permutation(files)[:n].tolist()


def micro_benchmarks() -> list[Bench]:
    """One per cost ``calibrate`` must fit (the issue's list), at sizes of 10-200 ms."""
    b: list[Bench] = []
    for size in (256 * KiB, 4 * MiB):
        n = 8 * MiB // size * 4
        b.append(Bench(f"copyup-{size // KiB}k", "copy bandwidth on copy-up", lambda n=n, s=size: _files(n, s),
                       lambda img, n=n: [Op("append", _f(i), length=1) for i in range(n)]))
    b.append(Bench("create-empty", "per-file metadata", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/n{i}", size=0) for i in range(1500)]))
    b.append(Bench("create-small", "per-file cost of small data files", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/n{i}", size=(1 + i % 8) * 1024) for i in range(1000)]))
    b.append(Bench("mkdir", "per-directory metadata", lambda: _files(0, 0),
                   lambda img: [Op("mkdir", f"/d/m{i}") for i in range(1500)]))
    b.append(Bench("chmod-small", "copy-up of small files (fixed cost)", lambda: _files(1000, 100),
                   lambda img: [Op("chmod", _f(i), mode=0o600) for i in range(1000)]))
    # Files of 8 KiB where the cost depends on it: on btrfs, unlinking a file with a data
    # extent drops the extent's reference (a file <= max_inline has none), and most image
    # files have one (the held-out image's median is 8 KiB; so is Debian's /usr).
    b.append(Bench("chmod-8k", "first change of image files with data extents", lambda: _files(1000, 8 * KiB),
                   lambda img: [Op("chmod", _f(i), mode=0o600) for i in range(1000)]))
    b.append(Bench("unlink", "whiteouts / unlinks", lambda: _files(1000, 8 * KiB),
                   lambda img: [Op("unlink", _f(i)) for i in range(1000)]))
    b.append(Bench("remove-tree", "per-file metadata without per-file operations",
                   lambda: _trees(6, 250, 8 * KiB), lambda img: [Op("remove_tree", f"/t{k}") for k in range(6)]))
    b.append(Bench("remove-tree-6", "rm -rf of directories merged from 6 layers (lookups probe layers)",
                   lambda: _layered_tree(6, 40, 800), lambda img: [Op("remove_tree", "/t")]))
    b.append(Bench("stat", "an operation with no open", lambda: _files(1000, 100),
                   lambda img: [Op("stat", _f(i % 1000)) for i in range(3000)]))
    b.append(Bench("open-read-small", "open + close around a small read", lambda: _files(1000, 100),
                   lambda img: [Op("read", _f(i % 1000), offset=0, length=100) for i in range(3000)]))
    for layers in (1, 16, 64):
        b.append(Bench(f"negative-lookup-{layers}", "cold lookup cost per layer", lambda n=layers: _files(n, 0, n),
                       lambda img: [Op("stat", f"/d/missing{i}") for i in range(1500)]))
    for layers in (1, 24, 96):
        b.append(Bench(f"start-{layers}", "mount / snapshot cost against layer count",
                       lambda n=layers: _files(n, 0, n), lambda img: [], containers=4))
    b.append(Bench("fsync", "fsync cost", lambda: _files(0, 0),
                   lambda img: [o for i in range(60) for o in (Op("create", f"/d/s{i}", size=8 * KiB),
                                                               Op("fsync", f"/d/s{i}"))]))
    b.append(Bench("fsync-dirs", "fsync of new files in 40 image directories (each logged once)",
                   lambda: _files(400, 8 * KiB), lambda img: [o for i in range(120) for o in (
                       Op("create", f"/d/s{i % FILE_DIRS}/n{i}", size=8 * KiB),
                       Op("fsync", f"/d/s{i % FILE_DIRS}/n{i}"))]))
    b.append(Bench("fsync-many", "many fsyncs of new files in one directory", lambda: _files(0, 0),
                   lambda img: [o for i in range(300) for o in (Op("create", f"/d/m{i}", size=8 * KiB),
                                                                Op("fsync", f"/d/m{i}"))]))
    b.append(Bench("fsync-large", "fsync of new 1 MiB files (bytes written back while waiting)", lambda: _files(0, 0),
                   lambda img: [o for i in range(30) for o in (Op("create", f"/d/L{i}", size=MiB),
                                                               Op("fsync", f"/d/L{i}"))]))
    b.append(Bench("rename", "renames of image files (two names rewritten)", lambda: _files(400, 8 * KiB),
                   lambda img: [Op("rename", _f(i), dst=_f(i) + ".old") for i in range(400)]))
    b.append(Bench("write-fsync-rename", "dpkg's unpack: new file, fsync, rename into place",
                   lambda: _files(400, 8 * KiB), lambda img: [o for i in range(200) for o in (
                       Op("create", f"/d/s{i % FILE_DIRS}/p{i}.new", size=8 * KiB),
                       Op("fsync", f"/d/s{i % FILE_DIRS}/p{i}.new"),
                       Op("rename", f"/d/s{i % FILE_DIRS}/p{i}.new", dst=_f(i) if i % 2 else f"/d/s{i % FILE_DIRS}/p{i}"))]))
    b.append(Bench("write-large", "per-chunk allocation / page-cache write", lambda: _files(0, 0),
                   lambda img: [Op("create", f"/d/big{i}", size=24 * MiB) for i in range(4)]))
    b.append(Bench("fsync-dirty", "fsync of scattered overwrites (CoW of many small ranges)",
                   lambda: _files(4, MiB), lambda img: [Op("fsync", _f(i // 100 % 4)) if i % 100 == 99 else
                                                         Op("write", _f(i // 100 % 4),
                                                            offset=(i * 40960) % MiB, length=4096)
                                                         for i in range(1200)]))
    b.append(Bench("write-small", "many small writes", lambda: _files(4, MiB),
                   lambda img: [Op("write", _f(i % 4), offset=(i * 8192) % MiB, length=4096)
                                for i in range(2000)]))
    b.append(Bench("read-once", "first read of image files (btrfs: the snapshot's page cache is cold)",
                   lambda: _files(1000, 8 * KiB), lambda img: [Op("read", _f(i), offset=0, length=8 * KiB)
                                                               for i in range(1000)]))
    b.append(Bench("read-once-64k", "first read of larger image files (cold bytes)", lambda: _files(300, 64 * KiB),
                   lambda img: [Op("read", _f(i), offset=0, length=64 * KiB) for i in range(300)]))
    b.append(Bench("read-once-512k", "first read of large image files (cold bytes, readahead)",
                   lambda: _files(40, 512 * KiB), lambda img: [Op("read", _f(i), offset=0, length=512 * KiB)
                                                              for i in range(40)]))
    # Cold lookups: the first stat through each of 400 directories that span 1, 6 or 24
    # layers, then a second file of each directory (cold name, warm directory), then both
    # again (warm): cold_lookups against cold_dir_layers against plain stats.
    for layers in (1, 6, 24):
        b.append(Bench(f"walk-dirs-{layers}", "cold lookups of directories spanning layers",
                       lambda n=layers: _spread(400, n),
                       lambda img: [Op("stat", f"/w/d{j}/f{i}") for r in range(2) for i in range(2)
                                    for j in range(400)]))
    b.append(Bench("stat-scattered", "cold lookups in random order over a larger, deeper image",
                   _scattered, lambda img: [Op("stat", _scattered_path(i)) for i in _scattered_order(1000)]))
    b.append(Bench("read-scattered", "first reads in random order over a larger, deeper image",
                   _scattered, lambda img: [Op("read", _scattered_path(i), offset=0, length=8 * KiB)
                                            for i in _scattered_order(500)]))
    b.append(Bench("read", "page-cache reads", lambda: _files(16, 4 * MiB),
                   lambda img: [Op("read", _f(i % 16), offset=0, length=4 * MiB) for i in range(48)]))
    return b
