"""Seeded random images and traces: the cases nobody tuned the model for.

The differential tests replay these on the simulator and on the real kernel and require the
same view and counts; the CLI exposes them as the ``random`` image and workload so a user
can reproduce any failing case from its seed.  Every choice comes from the explicit
``numpy.random.Generator``: the same seed gives the same image and trace everywhere.

The image generator avoids what OCI layers cannot express (hard links across layers) and
what the kernel refuses to mount; the trace generator deliberately includes operations that
fail (missing paths, non-empty rmdir, renames into themselves) so refusals are compared too.
"""

from __future__ import annotations

import numpy as np

from simulator.image import Entry, Image, Layer
from simulator.paths import join
from simulator.trace import Op

NAMES = ("a", "b", "c", "d", "etc", "lib", "x")
SIZES = (0, 1, 100, 4095, 4096, 4097, 10_000, 65_536, 200_000)
MODES = (0o644, 0o600, 0o755, 0o4755, 0o2755, 0o640)


def random_image(rng: np.random.Generator, layers: int = 3, entries: int = 12, name: str = "random") -> Image:
    """A small image of ``layers`` layers with about ``entries`` entries each."""
    built: list[Layer] = []
    files: set[str] = set()  # paths that are files somewhere below (avoid nesting under them)
    dirs: set[str] = {"/"}
    for k in range(layers):
        layer_entries: list[Entry] = []
        used: set[str] = set()
        layer_files: list[str] = []
        blocked: set[str] = set()  # non-directories of this layer: nothing may go below them
        for _ in range(entries):
            parent = sorted(dirs)[int(rng.integers(len(dirs)))]
            path = join(parent, NAMES[int(rng.integers(len(NAMES)))])
            if path in used or any(a in blocked or a in files for a in _ancestors(path)):
                continue
            roll = float(rng.random())
            if k and roll < 0.15:
                entry = Entry(path, "whiteout")
            elif roll < 0.45 and path not in files:
                opaque = bool(k and rng.random() < 0.2)
                entry = Entry(path, "dir", mode=int(rng.choice([0o755, 0o700, 0o750])), opaque=opaque)
                dirs.add(path)
            elif roll < 0.55 and layer_files:
                entry = Entry(path, "hardlink", target=layer_files[int(rng.integers(len(layer_files)))])
            elif roll < 0.62:
                entry = Entry(path, "symlink", mode=0o777, target=str(rng.choice(["a", "../b", "/etc", "x/y"])))
            else:
                entry = Entry(path, "file", size=int(rng.choice(SIZES)), mode=int(rng.choice(MODES)))
            if entry.type != "dir" and path in dirs:
                continue  # keep later layers from turning a directory into a file (simpler cases)
            if entry.type == "file":
                layer_files.append(path)  # only now: a skipped entry must not become a link target
            if entry.type in ("file", "hardlink", "symlink"):
                files.add(path)
            if entry.type != "dir":
                blocked.add(path)
            used.add(path)
            layer_entries.append(entry)
        built.append(Layer(f"layer{k}", tuple(layer_entries)))
    return Image(name, tuple(built))


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def random_trace(rng: np.random.Generator, paths: list[str], ops: int = 40, containers: int = 1) -> list[Op]:
    """``ops`` operations over ``paths`` (the image's paths) and names they create."""
    pool = list(paths) or ["/a"]
    out: list[Op] = []
    for _ in range(ops):
        c = int(rng.integers(containers))
        path = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.3:
            path = join(path if rng.random() < 0.5 else "/", NAMES[int(rng.integers(len(NAMES)))])
            pool.append(path)
        other = pool[int(rng.integers(len(pool)))]
        kind = str(rng.choice(KINDS, p=WEIGHTS))
        size = int(rng.choice(SIZES))
        op = {
            "create": lambda: Op("create", path, container=c, size=size),
            "write": lambda: Op("write", path, container=c, offset=int(rng.choice(SIZES)), length=size),
            "append": lambda: Op("append", path, container=c, length=size),
            "truncate": lambda: Op("truncate", path, container=c, size=size),
            "open": lambda: Op("open", path, container=c, access=str(rng.choice(["r", "w", "rw"]))),
            "read": lambda: Op("read", path, container=c, offset=0, length=size),
            "stat": lambda: Op("stat", path, container=c),
            "unlink": lambda: Op("unlink", path, container=c),
            "mkdir": lambda: Op("mkdir", path, container=c),
            "rmdir": lambda: Op("rmdir", path, container=c),
            "remove_tree": lambda: Op("remove_tree", path, container=c),
            "rename": lambda: Op("rename", path, other, container=c),
            "move": lambda: Op("move", path, other, container=c),
            "chmod": lambda: Op("chmod", path, container=c, mode=int(rng.choice(MODES))),
            "chown": lambda: Op("chown", path, container=c, uid=int(rng.integers(3)), gid=int(rng.integers(3))),
            "utime": lambda: Op("utime", path, container=c),
            "setxattr": lambda: Op("setxattr", path, container=c, name="user.test", size=int(rng.integers(64))),
            "link": lambda: Op("link", path, other, container=c),
            "symlink": lambda: Op("symlink", path, container=c, target=str(rng.choice(["a", "../b", "/etc"]))),
            "fsync": lambda: Op("fsync", path, container=c),
        }[kind]()
        out.append(op)
    return out


_MIX = {"create": 8, "write": 10, "append": 6, "truncate": 5, "open": 5, "read": 5, "stat": 4,
        "unlink": 6, "mkdir": 6, "rmdir": 4, "remove_tree": 4, "rename": 7, "move": 4, "chmod": 5,
        "chown": 3, "utime": 3, "setxattr": 2, "link": 4, "symlink": 3, "fsync": 2}
KINDS = list(_MIX)
WEIGHTS = np.array(list(_MIX.values()), dtype=float) / sum(_MIX.values())
