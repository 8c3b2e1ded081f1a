"""The conformance suite every registered driver runs (moby's graphtest is the model).

Views and refusals are Linux's and must not depend on the driver, except where a real
driver refuses what Linux allows (listed per driver in ``DRIVER_REFUSALS`` and asserted in
that driver's own tests).  New drivers are picked up from the registry automatically.
"""

import pytest

from drivers import REGISTRY, driver_names, make_driver
from helpers import d, f, image, ops, run, view
from simulator.costmodel import CostModel
from simulator.harness import Run
from simulator.image import Image
from simulator.imagetree import ImageTree
from simulator.metrics import METRIC_KEYS
from simulator.view import view_of

DRIVERS = driver_names()

IMG = image(
    [d("/etc"), f("/etc/passwd", 100), f("/bin/busybox", 1000, 0o755),
     {"path": "/bin/sh", "type": "symlink", "target": "busybox"},
     {"path": "/bin/ls", "type": "hardlink", "target": "/bin/busybox"}, f("/var/cache/a", 5)],
    [{"path": "/etc/passwd", "type": "whiteout"}, d("/var/cache", 0o700, opaque=True), f("/var/cache/b", 7),
     f("/etc/motd", 3, 0o600)],
)
IMG_VIEW = {
    "/bin": {"type": "dir", "size": 0, "mode": 0o755},
    "/bin/busybox": {"type": "file", "size": 1000, "mode": 0o755},
    "/bin/ls": {"type": "file", "size": 1000, "mode": 0o755},
    "/bin/sh": {"type": "symlink", "size": 0, "mode": 0o777},
    "/etc": {"type": "dir", "size": 0, "mode": 0o755},
    "/etc/motd": {"type": "file", "size": 3, "mode": 0o600},
    "/var": {"type": "dir", "size": 0, "mode": 0o755},
    "/var/cache": {"type": "dir", "size": 0, "mode": 0o700},
    "/var/cache/b": {"type": "file", "size": 7, "mode": 0o644},
}


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_view_of_an_untouched_container_is_the_merged_image(driver):
    assert view(driver, IMG, []) == IMG_VIEW


# (operation, refused?) on IMG, each replayed alone on a fresh container.
CASES = [
    ({"op": "stat", "path": "/etc/passwd"}, True),  # whited out
    ({"op": "stat", "path": "/bin/sh"}, False),  # lstat of the link itself
    ({"op": "read", "path": "/bin/sh", "offset": 0, "length": 10}, False),  # follows the link
    ({"op": "unlink", "path": "/bin"}, True),  # EISDIR
    ({"op": "rmdir", "path": "/var"}, True),  # ENOTEMPTY
    ({"op": "rmdir", "path": "/var/cache/b"}, True),  # ENOTDIR
    ({"op": "mkdir", "path": "/etc"}, True),  # EEXIST
    ({"op": "mkdir", "path": "/bin/sh"}, True),  # EEXIST: a symlink is there
    ({"op": "mkdir", "path": "/nope/x"}, True),  # ENOENT
    ({"op": "create", "path": "/etc/motd/x", "size": 1}, True),  # ENOTDIR
    ({"op": "write", "path": "/missing", "offset": 0, "length": 1}, True),  # ENOENT
    ({"op": "write", "path": "/etc", "offset": 0, "length": 1}, True),  # EISDIR
    ({"op": "truncate", "path": "/var", "size": 0}, True),  # EISDIR
    ({"op": "read", "path": "/var/cache", "offset": 0, "length": 1}, True),  # EISDIR
    ({"op": "rename", "src": "/var/cache", "dst": "/var/cache/b/x"}, True),  # ENOTDIR
    ({"op": "rename", "src": "/etc/motd", "dst": "/etc"}, True),  # EISDIR
    ({"op": "rename", "src": "/bin/busybox", "dst": "/bin/ls"}, False),  # same inode: no-op
    ({"op": "rename", "src": "/missing", "dst": "/x"}, True),  # ENOENT
    ({"op": "link", "src": "/etc", "dst": "/x"}, True),  # EPERM
    ({"op": "link", "src": "/etc/motd", "dst": "/bin/sh"}, True),  # EEXIST
    ({"op": "symlink", "target": "x", "path": "/etc"}, True),  # EEXIST
    ({"op": "remove_tree", "path": "/nope"}, False),  # rm -f ignores a missing operand
    ({"op": "setxattr", "path": "/etc/motd", "name": "user.x", "size": 70000}, True),  # E2BIG
    ({"op": "setxattr", "path": "/etc/motd", "name": "os2.x", "size": 1}, True),  # EOPNOTSUPP
    ({"op": "open", "path": "/missing", "mode": "r"}, True),
    ({"op": "open", "path": "/etc", "mode": "r"}, False),
    ({"op": "open", "path": "/etc", "mode": "w"}, True),  # EISDIR
    ({"op": "chmod", "path": "/etc/passwd", "mode": 0o600}, True),  # ENOENT
    ({"op": "fsync", "path": "/etc/motd"}, False),
    ({"op": "utime", "path": "/bin/sh"}, False),  # follows to busybox
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("case, refused", CASES, ids=[f"{c['op']}-{i}" for i, (c, _) in enumerate(CASES)])
def test_refusals_are_linuxs(driver, case, refused):
    m = run(driver, IMG, ops(case))
    assert m["failed_ops"] == int(refused)
    assert m["ops"] == 1


SYMLINK_TRACE = ops(
    {"op": "mkdir", "path": "/w"},
    {"op": "symlink", "target": "../etc", "path": "/w/up"},  # relative, with ..
    {"op": "create", "path": "/w/up/new", "size": 11},  # lands in /etc/new
    {"op": "symlink", "target": "/var/cache", "path": "/w/abs"},  # absolute: from the container root
    {"op": "append", "path": "/w/abs/b", "length": 3},
    {"op": "symlink", "target": "dangling-target", "path": "/w/dangle"},
    {"op": "create", "path": "/w/dangle", "size": 2},  # O_CREAT through a dangling link creates the target
    {"op": "symlink", "target": "loop2", "path": "/w/loop1"},
    {"op": "symlink", "target": "loop1", "path": "/w/loop2"},
    {"op": "read", "path": "/w/loop1", "offset": 0, "length": 1},  # ELOOP
    {"op": "unlink", "path": "/w/up"},  # removes the link, not /etc
    {"op": "stat", "path": "/etc/new"},
)


@pytest.mark.parametrize("driver", DRIVERS)
def test_paths_resolve_as_the_kernel_resolves_them(driver):
    v = view(driver, IMG, SYMLINK_TRACE)
    assert v["/etc/new"] == {"type": "file", "size": 11, "mode": 0o644}
    assert v["/var/cache/b"]["size"] == 10
    assert v["/w/dangling-target"] == {"type": "file", "size": 2, "mode": 0o644}
    assert "/w/up" not in v and v["/etc"]["type"] == "dir"
    assert run(driver, IMG, SYMLINK_TRACE)["failed_ops"] == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_metric_is_reported_and_consistent(driver):
    trace = ops({"op": "append", "path": "/bin/busybox", "length": 10},
                {"op": "create", "path": "/tmp.bin", "size": 5000},
                {"op": "read", "path": "/etc/motd", "offset": 0, "length": 3},
                {"op": "unlink", "path": "/etc/motd"},
                {"op": "stat", "path": "/nope"})
    m = run(driver, IMG, trace)
    assert set(m) == set(METRIC_KEYS) - {"sim_seconds", "sim_peak_rss_bytes"}
    for key, value in m.items():
        assert value is None or value >= 0, key
    assert m["physical_bytes"] == m["image_physical_bytes"] + m["container_physical_bytes"]
    assert (m["ops"], m["failed_ops"], m["written_bytes"], m["read_bytes"]) == (5, 1, 5010, 3)
    assert m["ideal_bytes"] == 1000 + 3 + 7 + 10 + 5000
    assert m["space_amplification"] == m["physical_bytes"] / m["ideal_bytes"]
    assert m["lookups"] == 5
    for key in ("ops", "failed_ops", "written_bytes", "copyup_bytes", "container_files", "physical_bytes",
                "device_write_bytes", "lookups", "page_cache_bytes"):
        assert isinstance(m[key], int), key


@pytest.mark.parametrize("driver", DRIVERS)
def test_graphdriver_protocol(driver):
    drv = make_driver(driver)
    for i, layer in enumerate(IMG.layers):
        drv.create(layer.id, IMG.layers[i - 1].id if i else None, layer)
    drv.create_read_write("c", "l1")
    assert drv.exists("l0") and drv.exists("c") and not drv.exists("nope")
    mount = drv.get("c")
    assert drv.get("c") is mount
    from simulator.operations import OPERATIONS

    for op in ops({"op": "create", "path": "/new", "size": 42}, {"op": "unlink", "path": "/etc/motd"}):
        OPERATIONS[op.kind](mount.ns, op)
    kinds = {c.path: c.kind for c in drv.changes("c", "l1")}
    assert kinds["/new"] == "A" and kinds["/etc/motd"] == "D"
    assert drv.diff_size("c", "l1") == 42
    layer = drv.diff("c", "l1")
    assert drv.apply_diff("step", "l1", layer) == 42
    assert dict(drv.status())["Driver"] == driver
    drv.put("c")
    drv.put("c")
    drv.remove("c")
    assert not drv.exists("c")


@pytest.mark.parametrize("driver", DRIVERS)
def test_commit_keeps_the_view_and_the_layer_reproduces_it(driver):
    trace = ops({"op": "append", "path": "/bin/busybox", "length": 10},
                {"op": "mkdir", "path": "/opt"}, {"op": "create", "path": "/opt/x", "size": 9},
                {"op": "unlink", "path": "/etc/motd"}, {"op": "remove_tree", "path": "/var/cache"},
                {"op": "mkdir", "path": "/var/cache"}, {"op": "chmod", "path": "/bin", "mode": 0o700})
    r = Run(make_driver(driver), IMG, 1)
    for op in trace:
        r.apply(op)
    before = view_of(r.namespace(0))
    drv = r.driver
    layer = drv.diff(r.mounts[0].id)
    replayed = view_of(Run(make_driver("vfs"), Image("x", IMG.layers + (layer,)), 1).namespace(0))
    assert r.apply(ops({"op": "commit", "layer": "step1"})[0])
    assert view_of(r.namespace(0)) == before
    assert replayed == before
    assert r.namespace(0).tree.depth == 3
    m = r.finish(CostModel())
    assert m["commit_bytes"] >= 1010 + 9 and m["commit_files_scanned"] > 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_page_cache_sharing_is_what_the_driver_declares(driver):
    img = image([f("/lib.so", 10 * 4096)])
    trace = ops(*({"op": "read", "path": "/lib.so", "offset": 0, "length": 10 * 4096, "container": c}
                  for c in range(4)))
    copies = 1 if REGISTRY[driver].page_cache_shared else 4
    assert run(driver, img, trace, containers=4)["page_cache_bytes"] == copies * 10 * 4096


@pytest.mark.parametrize("driver", DRIVERS)
def test_sizes_are_symbolic(driver):
    img = image([f("/huge", 1 << 40)])
    m = run(driver, img, ops({"op": "write", "path": "/huge", "offset": (1 << 40) - 1, "length": 1},
                             {"op": "create", "path": "/new", "size": 1 << 40},
                             {"op": "read", "path": "/huge", "offset": 0, "length": 1 << 40}))
    assert m["written_bytes"] == (1 << 40) + 1
    assert m["read_bytes"] == 1 << 40
    assert m["container_data_bytes"] >= 1 << 40


def test_image_tree_counts_levels():
    tree = ImageTree.build(IMG)
    # l0: passwd, busybox (= ls), cache/a; l1: - passwd - cache/a (opaque) + cache/b + motd
    assert [s.files for s in tree.level_stats] == [3, 3]
    assert tree.level_stats[0].links == 4
    assert tree.stats.file_bytes == 1000 + 3 + 7
