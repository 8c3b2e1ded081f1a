"""The driver protocol, in the vocabulary of moby's graphdriver (``daemon/graphdriver``).

A driver keeps read-only image layers (``create``) and writable container layers
(``create_read_write``), mounts them (``get``/``put``, reference counted), diffs them
(``diff``, ``changes``, ``diff_size``, ``apply_diff``) and reports its storage (``space``).
While a container runs, its mount receives the cost hooks of ``simulator.hooks``: that is
where a driver says what each operation costs it.

``BaseDriver`` does the bookkeeping every driver shares (layer chains, mounts, the commit
flow, the layer limit) and ``BaseMount`` the neutral hooks; a driver module overrides only
what its real counterpart does differently.  The differ is chosen by composition
(``naive_diff``), as moby wraps drivers in ``NaiveDiffDriver`` rather than subclassing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar, Mapping, Protocol

from simulator.diff import Change, DiffResult, container_diff
from simulator.errors import BadInput
from simulator.image import Image, Layer
from simulator.imagetree import ImageTree
from simulator.treeextend import extend_tree
from simulator.metrics import Space, Tally
from simulator.namespace import FsError, Namespace
from simulator.nodes import Dir
from simulator.pagecache import PageCache
from simulator.units import round_up
from simulator.viewstats import ImageTotals

from .options import Option, parse_options

# On-disk metadata of a file-level layer on its backing ext4 (mke2fs.conf defaults):
INODE_BYTES = 256  # inode_size = 256
DIR_BLOCK_BYTES = 4096  # a directory's first block (blocksize = 4096)
METADATA_WRITE_BYTES = 4096  # one inode-table or directory block written back per metadata change


class GraphDriver(Protocol):
    """What the harness, the CLI and the real backends rely on."""

    name: ClassVar[str]
    options: dict[str, Any]
    tally: Tally

    def create(self, id: str, parent: str | None, layer: Layer | None = None) -> None: ...
    def create_read_write(self, id: str, parent: str) -> None: ...
    def remove(self, id: str) -> None: ...
    def get(self, id: str) -> BaseMount: ...
    def put(self, id: str) -> None: ...
    def exists(self, id: str) -> bool: ...
    def status(self) -> list[tuple[str, str]]: ...
    def diff(self, id: str, parent: str | None = None) -> Layer: ...
    def changes(self, id: str, parent: str | None = None) -> list[Change]: ...
    def apply_diff(self, id: str, parent: str | None, layer: Layer) -> int: ...
    def diff_size(self, id: str, parent: str | None = None) -> int: ...
    def space(self) -> Space: ...


def layer_footprint(layer: Layer, block: int) -> tuple[int, int, int]:
    """(data bytes allocated, inodes, directories) of one layer stored as a directory tree:
    every entry an inode (hard links once), implicit parent directories included."""
    return layer.derived(("footprint", block), lambda _: _footprint(layer, block))


def _footprint(layer: Layer, block: int) -> tuple[int, int, int]:
    columns = layer.columns()
    if columns is not None:
        return columns.footprint(block)
    data = inodes = 0
    dirs: set[str] = set()
    for e in layer.entries:
        if e.type == "dir":
            dirs.add(e.path)
        elif e.type == "file":
            data += round_up(e.size, block)
        if e.type != "hardlink":
            inodes += e.type != "dir"
        parent = e.path.rsplit("/", 1)[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rsplit("/", 1)[0]
    return data, inodes + len(dirs), len(dirs)


class BaseMount:
    """A mounted container layer: its namespace and neutral cost hooks."""

    keeps_hardlinks: bool = True
    opaque_new_dirs: bool = False
    opaque_moved_dirs: bool = False
    indexes_hardlinks: bool = False
    notes_close: bool = False  # set per subclass: True where it overrides ``closed``
    notes_entries: bool = False  # likewise for ``entry``
    notes_links: bool = False  # and for ``followed``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every create, write, read and fsync ends with a ``closed`` call; most drivers do
        # nothing there, and the namespace skips the call for them (``StorageHooks``).
        super().__init_subclass__(**kwargs)
        cls.notes_close = cls.closed is not BaseMount.closed
        cls.notes_entries = cls.entry is not BaseMount.entry
        cls.notes_links = cls.followed is not BaseMount.followed
        cls.lookup_is_one = cls.lookup is BaseMount.lookup

    def __init__(self, driver: BaseDriver, id: str, tree: ImageTree):
        self.driver = driver
        self.id = id
        self.tally = driver.tally
        self.block = driver.block_size
        self.ns = Namespace(tree, self, driver.depth_hist)
        # The cache ``read`` fills: the driver's, or one of this container's own
        self.page_cache = driver.page_cache if driver.page_cache_shared else driver.page_cache.owned(id)

    # -- semantics --
    def rename_refused(self, node) -> bool:
        return False

    # -- costs --
    def lookup(self, parent, name: str) -> int:
        return 1  # one filesystem per container: one tree walk whatever the image depth

    lookup_is_one = True  # ``lookup`` is BaseMount's: one probe, no state (set per subclass)

    def lookup_many(self, parents: list, groups: list, depths: Counter) -> None:
        if self.lookup_is_one:
            depths[1] += sum(map(len, groups))
        else:
            lookup = self.lookup
            depths.update(lookup(parent, name) for parent, group in zip(parents, groups) for name in group)

    def lookup_table(self, parent) -> tuple | None:
        return None  # lookups go to ``lookup_many``

    def tabled_lookups(self, parents: list, counts: list[int], depths: Counter, found: list) -> None:
        pass

    def meta_copy_up(self, node) -> None:
        pass

    def copy_up(self, inode, need: str) -> None:
        pass

    def write(self, inode, offset: int, length: int) -> None:
        pass

    # -- runs of writes (``simulator.writeruns``); a driver opts in with ``batchable`` and
    # then answers a run with its own ``write_run`` --
    # ``lookup`` only reads the driver's state, or resets the same per-operation state each
    # time: ``count`` lookups of one name then cost what one does.
    idempotent_lookup = False
    runs_pass: frozenset[str] = frozenset()  # (simulator.hooks) every operation flushes queued runs

    def batchable(self, inode) -> bool:
        return False

    def lookup_run(self, parent, name: str, count: int) -> int:
        if self.idempotent_lookup:
            return self.lookup(parent, name)
        for _ in range(count):
            probes = self.lookup(parent, name)
        return probes

    def truncate(self, inode, old_size: int, new_size: int) -> None:
        pass

    def cache_key(self, node) -> object:
        """What a read of ``node`` fills in ``self.page_cache`` (the container's own cache
        unless the driver shares one: ``BaseDriver.page_cache_shared``)."""
        return node

    def read(self, node, offset: int, length: int) -> None:
        self.page_cache.touch(self.cache_key(node), offset, length)

    def writeback(self, inode, ranges) -> None:
        self.tally.device_write_bytes += ranges.count_units(self.block) * self.block

    def fsync(self, node) -> None:
        self.tally.fsyncs += 1

    def closed(self, node, op: str) -> None:
        pass

    def metadata(self, op: str, node) -> None:
        self.tally.metadata_ops += 1
        self.tally.device_write_bytes += METADATA_WRITE_BYTES

    def entry(self, parent: Dir, name: str, added: bool) -> None:
        pass

    def followed(self, parent, name: str, link) -> None:
        pass

    def remove(self, node, last_link: bool) -> None:
        pass

    # -- state at the end --
    def space(self) -> Space:
        raise NotImplementedError


class BaseDriver:
    """Layer and mount bookkeeping shared by every driver."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    naive_diff: ClassVar[bool] = True
    mount_class: ClassVar[type[BaseMount]] = BaseMount
    page_cache_shared: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None):
        self.options = parse_options(self.name, self.OPTIONS, options)
        self.tally = Tally()
        self.page_cache = PageCache()
        self.depth_hist: Counter = Counter()
        self.images: dict[str, Image] = {}  # layer id -> the image ending at that layer
        self.parents: dict[str, str | None] = {}
        self._trees: dict[str, ImageTree] = {}
        self.containers: dict[str, BaseMount] = {}
        self.refs: Counter = Counter()
        self.counting = False  # True once the workload runs: device writes count from then on
        self.image_totals: dict[int, ImageTotals] = {}

    # -- properties drivers refine --
    @property
    def block_size(self) -> int:
        return int(self.options.get("block_size", 4096))

    def layer_limit(self) -> int | None:
        """Most image layers a container may stack on (None: no limit)."""
        return None

    def layer_cost(self, id: str) -> int:
        """On-disk bytes of image layer ``id``; the default stores it as a directory tree."""
        data, inodes, dirs = layer_footprint(self.images[id].layers[-1], self.block_size)
        return data + inodes * INODE_BYTES + dirs * DIR_BLOCK_BYTES

    # -- layers --
    def create(self, id: str, parent: str | None, layer: Layer | None = None) -> None:
        if id in self.images or id in self.containers:
            raise FsError("EEXIST")
        if parent is not None and parent not in self.images:
            raise BadInput(f"driver {self.name}: parent layer {parent!r} does not exist")
        layer = layer or Layer(id, ())
        base = self.images[parent] if parent else Image(id, ())
        self.images[id] = base.with_layer(layer)
        self.parents[id] = parent
        if self.counting:
            self.tally.device_write_bytes += self.layer_cost(id)

    def apply_diff(self, id: str, parent: str | None, layer: Layer) -> int:
        """Create layer ``id`` holding ``layer``'s changes; return its data bytes."""
        self.create(id, parent, layer)
        return sum(e.size for e in layer.entries if e.type == "file")

    def tree(self, id: str) -> ImageTree:
        tree = self._trees.get(id)
        if tree is None:
            below = self._trees.get(self.parents.get(id) or "")
            if below is not None:  # a committed layer: apply it to the tree below (treeextend)
                tree = self._trees[id] = extend_tree(below, self.images[id])
            else:
                tree = self._trees[id] = ImageTree.build(self.images[id])
        return tree

    def use_tree(self, id: str, tree: ImageTree) -> None:
        """Adopt an already built merged view of layer ``id`` (shared between drivers)."""
        self._trees[id] = tree

    def totals(self) -> ImageTotals:
        block = self.block_size
        if block not in self.image_totals:
            self.image_totals[block] = ImageTotals(block)
        return self.image_totals[block]

    # -- containers --
    def create_read_write(self, id: str, parent: str) -> None:
        if id in self.images or id in self.containers:
            raise FsError("EEXIST")
        if parent not in self.images:
            raise BadInput(f"driver {self.name}: parent layer {parent!r} does not exist")
        depth = len(self.images[parent].layers)
        limit = self.layer_limit()
        if limit is not None and depth > limit:
            raise BadInput(f"{self.images[parent].source}: {depth} layers exceed driver {self.name}'s "
                           f"limit of {limit}")
        self.containers[id] = self.mount_class(self, id, self.tree(parent))
        self.parents[id] = parent

    def get(self, id: str) -> BaseMount:
        if id not in self.containers:
            raise BadInput(f"driver {self.name}: no container layer {id!r}")
        self.refs[id] += 1
        return self.containers[id]

    def put(self, id: str) -> None:
        if self.refs[id] <= 0:
            raise BadInput(f"driver {self.name}: {id!r} is not mounted")
        self.refs[id] -= 1

    def exists(self, id: str) -> bool:
        return id in self.images or id in self.containers

    def remove(self, id: str) -> None:
        if self.refs[id] > 0:
            raise BadInput(f"driver {self.name}: {id!r} is still mounted")
        self.containers.pop(id, None)
        self.images.pop(id, None)
        self._trees.pop(id, None)
        self.parents.pop(id, None)

    def status(self) -> list[tuple[str, str]]:
        return [("Driver", self.name), ("Layers", str(len(self.images))),
                ("Containers", str(len(self.containers))),
                ("Options", ",".join(f"{k}={v}" for k, v in self.options.items()))]

    # -- diffs --
    def _diff(self, id: str) -> DiffResult:
        mount = self.containers.get(id)
        if mount is None:
            raise BadInput(f"driver {self.name}: no container layer {id!r}")
        mount.ns.flush()
        return container_diff(mount.ns, f"{id}-diff", self.naive_diff, self.totals())

    def diff(self, id: str, parent: str | None = None) -> Layer:
        return self._diff(id).layer

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        return self._diff(id).changes

    def diff_size(self, id: str, parent: str | None = None) -> int:
        return self._diff(id).size

    def commit(self, id: str, layer_id: str, new_id: str) -> BaseMount:
        """``docker commit``: the container's diff becomes layer ``layer_id`` and the
        container goes on in a fresh writable layer ``new_id`` above it."""
        if layer_id in self.images or layer_id in self.containers:
            raise FsError("EEXIST")
        parent = self.parents[id]
        result = self._diff(id)
        layer = Layer(layer_id, result.layer.entries)
        limit = self.layer_limit()
        if limit is not None and len(self.images[parent].layers) + 1 > limit:
            raise FsError("EMLINK")  # moby: "max depth exceeded"
        self.tally.commit_bytes += result.size
        self.tally.commit_files_scanned += result.files_scanned
        self.tally.commits += 1
        self.apply_diff(layer_id, parent, layer)
        self.refs[id] = 0
        self.remove(id)
        self.create_read_write(new_id, layer_id)
        return self.get(new_id)

    # -- accounting --
    def image_bytes(self) -> int:
        """On-disk bytes of every image layer the driver holds."""
        return sum(self.layer_cost(id) for id in self.images)

    def space(self) -> Space:
        parts = [m.space() for m in self.containers.values()]

        def total(key: str) -> int | None:
            values = [getattr(p, key) for p in parts]
            return None if any(v is None for v in values) else sum(values)

        return Space(
            whiteouts=total("whiteouts"), opaque_dirs=total("opaque_dirs"),
            container_files=total("container_files") or 0,
            container_data_bytes=total("container_data_bytes") or 0,
            container_alloc_bytes=total("container_alloc_bytes") or 0,
            image_physical_bytes=self.image_bytes(),
            container_physical_bytes=total("container_physical_bytes") or 0,
            page_cache_bytes=self.page_cache.bytes(),
            cow_blocks=total("cow_blocks"),
        )

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "summary": cls.summary, "options": [o.describe() for o in cls.OPTIONS],
                "diff": "naive" if cls.naive_diff else "native", "page_cache_shared": cls.page_cache_shared}
