"""``StorageHooks.followed``: every symbolic link a counted walk goes through, in order, and
none for quiet looks (views, ``Namespace.exists``).  devicemapper writes a followed link's
inode once a mount (relatime), checked against the kernel in tests/test_real_thin.py."""

from drivers import make_driver
from drivers.devicemapper import DevicemapperMount
from helpers import d, f, image, ops
from simulator.harness import Run

IMG = image([d("/t"), f("/t/f", 10), {"path": "/l", "type": "symlink", "target": "t"},
             {"path": "/m", "type": "symlink", "target": "/l"}])
EXT4 = {"fs": "ext4", "journal": False, "chunk_size": 4096, "base_size": 1 << 30}


def test_followed_links_are_reported_in_order_and_not_for_quiet_looks(monkeypatch):
    seen = []
    monkeypatch.setattr(DevicemapperMount, "followed", lambda self, parent, name, link: seen.append(name))
    r = Run(make_driver("devicemapper", EXT4), IMG, 1)
    assert r.apply(ops({"op": "read", "path": "/m/f", "offset": 0, "length": 1})[0])
    assert seen == ["m", "l"]  # /m -> /l -> t
    r.namespace(0).exists("/m/f")
    assert seen == ["m", "l"]
    assert r.apply(ops({"op": "read", "path": "/m/f", "offset": 0, "length": 1})[0])  # a remembered walk
    assert seen == ["m", "l"]
    assert r.apply(ops({"op": "stat", "path": "/m/f"})[0])  # lstat: its own walk, the links again
    assert seen == ["m", "l", "m", "l"]


def test_devicemapper_writes_a_followed_links_inode_once():
    r = Run(make_driver("devicemapper", EXT4), IMG, 1)
    mount = r.driver.get("container-0")
    links = {mount.fs.layout.link("/l"), mount.fs.layout.link("/m")}
    assert len(links) == 2 and None not in links
    for _ in range(2):
        r.apply(ops({"op": "stat", "path": "/m/f"})[0])
    assert links <= set(mount.atime_fresh)
    blocks = {mount.fs.geometry.inode_block(ino) for ino in links}
    assert blocks <= set(mount.fs.pending)
