"""Importers against third-party tools: the view of an imported image equals the tree that
``umoci unpack`` extracts (walked with lstat), for OCI layouts umoci built, layers written
with ``tarfile`` (whiteouts, opaque directories, hard links, symlinks) and added verbatim with
``umoci raw add-layer``, the ``docker save`` tar skopeo makes of them, and the layout as a tar.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from simulator.inputs import load_image
from helpers import view

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (apt-get install umoci)")


def walk_view(root: Path) -> dict[str, dict]:
    """The SPEC view shape of a real tree, from lstat."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
            out["/" + str(p.relative_to(root))] = {"type": kind, "size": st.st_size if kind == "file" else 0,
                                                  "mode": stat.S_IMODE(st.st_mode)}
    return dict(sorted(out.items()))


def image_view(spec: Path | str) -> dict[str, dict]:
    return view("vfs", load_image(str(spec)), [])


def umoci(*args: str) -> None:
    subprocess.run([UMOCI, *args], check=True, capture_output=True)


def umoci_view(layout: Path, tag: str, tmp: Path) -> dict[str, dict]:
    bundle = tmp / f"bundle-{tag}-{len(list(tmp.iterdir()))}"
    umoci("unpack", "--image", f"{layout}:{tag}", str(bundle))
    return walk_view(bundle / "rootfs")


def add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
        linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer_base(path: Path) -> None:
    with tarfile.open(path, "w") as t:
        add(t, "etc/", tarfile.DIRTYPE, mode=0o755)
        add(t, "etc/passwd", data=b"root:x:0:0\n")
        add(t, "etc/shadow", data=b"s" * 100, mode=0o600)
        add(t, "etc/alias", tarfile.LNKTYPE, linkname="etc/passwd")
        add(t, "usr/", tarfile.DIRTYPE, mode=0o755)
        add(t, "usr/bin/", tarfile.DIRTYPE, mode=0o755)
        add(t, "usr/bin/tool", data=b"\x7fELF" + b"\0" * 5000, mode=0o4755)
        add(t, "usr/bin/sh", tarfile.SYMTYPE, linkname="tool")
        add(t, "usr/bin/abs", tarfile.SYMTYPE, linkname="/usr/bin/tool")
        add(t, "var/cache/apt/", tarfile.DIRTYPE, mode=0o755)
        add(t, "var/cache/apt/pkgcache.bin", data=b"p" * 3000)
        add(t, "var/cache/apt/srcpkgcache.bin", data=b"q" * 2000)
        add(t, "opt/", tarfile.DIRTYPE, mode=0o755)
        add(t, "opt/old/", tarfile.DIRTYPE, mode=0o755)
        add(t, "opt/old/file", data=b"old")


def layer_changes(path: Path) -> None:
    with tarfile.open(path, "w") as t:
        add(t, "etc/", tarfile.DIRTYPE, mode=0o750)
        add(t, "etc/.wh.shadow")  # whiteout of a file
        add(t, "var/cache/apt/", tarfile.DIRTYPE, mode=0o700)
        add(t, "var/cache/apt/.wh..wh..opq")  # opaque: both caches vanish
        add(t, "var/cache/apt/new.bin", data=b"n" * 10)
        add(t, "opt/.wh.old")  # whiteout of a directory tree
        add(t, "usr/bin/tool", data=b"v2", mode=0o755)  # replaced file
        add(t, "home/", tarfile.DIRTYPE, mode=0o755)
        add(t, "home/u/", tarfile.DIRTYPE, mode=0o700)
        add(t, "home/u/a", data=b"a" * 7)
        add(t, "home/u/b", tarfile.LNKTYPE, linkname="home/u/a")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """An OCI layout: one umoci-made empty image, two tarfile layers, then a umoci repack."""
    if UMOCI is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    tmp = tmp_path_factory.mktemp("oci")
    oci = tmp / "oci"
    umoci("init", "--layout", str(oci))
    umoci("new", "--image", f"{oci}:t")
    layer_base(tmp / "l0.tar")
    layer_changes(tmp / "l1.tar")
    umoci("raw", "add-layer", "--image", f"{oci}:t", str(tmp / "l0.tar"))
    umoci("raw", "add-layer", "--image", f"{oci}:t", str(tmp / "l1.tar"))
    # A layer umoci computes itself from a changed tree (its own whiteouts, gzip blob).
    bundle = tmp / "work"
    umoci("unpack", "--image", f"{oci}:t", str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "etc" / "passwd").write_bytes(b"root:x:0:0\nuser:x:1000:1000\n")
    (rootfs / "home" / "u" / "a").unlink()
    shutil.rmtree(rootfs / "var" / "cache")
    (rootfs / "srv").mkdir(mode=0o711)
    (rootfs / "srv" / "data").write_bytes(b"d" * 12345)
    os.symlink("../etc/passwd", rootfs / "srv" / "pw")
    umoci("repack", "--image", f"{oci}:t2", str(bundle))
    return oci


@needs_umoci
def test_tarfile_layers_import_as_umoci_unpacks_them(layout, tmp_path):
    got = image_view(f"{layout}:t")
    assert got == umoci_view(layout, "t", tmp_path)
    # The OCI rules at work, written out: the whiteout, the opaque directory, the dir whiteout.
    assert "/etc/shadow" not in got and "/opt/old" not in got
    assert [p for p in got if p.startswith("/var/cache/apt/")] == ["/var/cache/apt/new.bin"]
    assert got["/usr/bin/tool"] == {"type": "file", "size": 2, "mode": 0o755}
    assert got["/etc/alias"] == {"type": "file", "size": 11, "mode": 0o644}
    assert got["/home/u/b"]["size"] == 7 and got["/etc"]["mode"] == 0o750


@needs_umoci
def test_umoci_repacked_layer_imports_as_umoci_unpacks_it(layout, tmp_path):
    img = load_image(f"{layout}:t2")
    assert len(img.layers) == 3  # two tarfile layers and umoci's own diff
    got = image_view(f"{layout}:t2")
    assert got == umoci_view(layout, "t2", tmp_path)
    assert got["/srv/data"] == {"type": "file", "size": 12345, "mode": 0o644}
    assert got["/srv/pw"]["type"] == "symlink" and "/var/cache" not in got and "/home/u/a" not in got


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt-get install skopeo)")
@needs_umoci
def test_docker_save_tar_from_skopeo_imports_to_the_same_view(layout, tmp_path):
    archive = tmp_path / "saved.tar"
    subprocess.run([SKOPEO, "copy", "--insecure-policy", f"oci:{layout}:t2", f"docker-archive:{archive}:test/img:t2"],
                   check=True, capture_output=True, timeout=120)
    with tarfile.open(archive) as t:
        assert "manifest.json" in t.getnames()
    assert image_view(archive) == umoci_view(layout, "t2", tmp_path)


@needs_umoci
def test_oci_layout_packed_in_a_tar_imports_to_the_same_view(layout, tmp_path):
    single = tmp_path / "single"
    shutil.copytree(layout, single)
    umoci("rm", "--image", f"{single}:t")  # one manifest left: no tag needed
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w") as t:
        for child in sorted(single.iterdir()):
            t.add(child, child.name)
    assert image_view(archive) == umoci_view(layout, "t2", tmp_path)


@needs_umoci
def test_layout_with_two_tags_needs_one_named(layout):
    from simulator.errors import BadInput

    with pytest.raises(BadInput, match="name one as LAYOUT:TAG"):
        load_image(str(layout))


def test_plain_directory_is_one_layer_equal_to_its_walk(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"x" * 4097)
    (root / "a" / "f").chmod(0o640)
    os.link(root / "a" / "f", root / "a" / "g")
    os.symlink("b", root / "a" / "s")
    (root / "a" / "b").chmod(0o700)
    img = load_image(str(root))
    assert len(img.layers) == 1
    kinds = {e.path: e.type for e in img.layers[0].entries}
    assert sorted(kinds.values()) == ["dir", "dir", "file", "hardlink", "symlink"]
    assert image_view(root) == walk_view(root)


def test_cli_runs_on_an_imported_directory(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "big").write_bytes(b"z" * 10000)
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"op":"write","path":"/big","offset":0,"length":10}\n')
    out = subprocess.run([sys.executable, "-m", "simulator", "run", "--driver", "overlay", "--image", str(root),
                          "--workload", str(trace), "--json"], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    import json

    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["copyup_bytes"] == 10000  # overlay copies the whole 10000-byte file up
