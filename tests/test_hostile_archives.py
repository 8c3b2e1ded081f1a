"""Hostile image archives are refused through the command line: exit code 2, one line on
stderr, no traceback, and nothing written anywhere (the archives are read, never extracted).
Each case is a layer tar inside a hand-made OCI layout tar (and one as a docker save tar)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from simulator.errors import BadInput

REPO = Path(__file__).parent.parent


def _member(t: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
            size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if size is None else size
    t.addfile(info, io.BytesIO(data) if data else None)


def layer_bytes(build) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        build(t)
    return buf.getvalue()


def _blob(t: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def oci_tar(path: Path, layer: bytes) -> Path:
    with tarfile.open(path, "w") as t:
        layer_digest = _blob(t, layer)
        config = _blob(t, b"{}")
        manifest = json.dumps({"schemaVersion": 2, "config": {"digest": config, "size": 2},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": layer_digest, "size": len(layer)}]}).encode()
        index = {"schemaVersion": 2, "manifests": [{"digest": _blob(t, manifest), "size": len(manifest)}]}
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


CASES = {
    "absolute name": (lambda t: _member(t, "/etc/evil", data=b"x"), "absolute name"),
    "dotdot name": (lambda t: _member(t, "a/../../evil", data=b"x"), "'..' component"),
    "symlink escaping": (lambda t: _member(t, "a/b/up", tarfile.SYMTYPE, linkname="../../../etc/passwd"),
                         "points outside the image root"),
    "hardlink escaping": (lambda t: _member(t, "h", tarfile.LNKTYPE, linkname="../../etc/passwd"), "'..' component"),
    "hardlink absolute": (lambda t: _member(t, "h", tarfile.LNKTYPE, linkname="/etc/passwd"), "absolute name"),
    "hardlink to nothing": (lambda t: _member(t, "h", tarfile.LNKTYPE, linkname="etc/passwd"), "earlier in the same layer"),
    "char device": (lambda t: _member(t, "dev/null", tarfile.CHRTYPE), "device node"),
    "block device": (lambda t: _member(t, "dev/sda", tarfile.BLKTYPE), "device node"),
    "fifo": (lambda t: _member(t, "run/fifo", tarfile.FIFOTYPE), "FIFO"),
    "duplicate member": (lambda t: (_member(t, "a", data=b"1"), _member(t, "a", data=b"2")), "two members for /a"),
    "declared size past the archive": (lambda t: _member(t, "huge", size=2**40), "but the archive ends"),
    "declared size past off_t": (lambda t: _member(t, "huge", size=2**64), "maximum 9223372036854775807"),
    "whiteout name as content": (lambda t: _member(t, "a/.wh..wh..opq/x", data=b"1"), "reserved"),
}


def run_cli(image: Path, tmp: Path) -> subprocess.CompletedProcess:
    trace = tmp / "empty.jsonl"
    if not trace.exists():
        trace.write_text("")
    return subprocess.run([sys.executable, "-m", "simulator", "view", "--driver", "vfs", "--image", str(image),
                           "--workload", str(trace)], capture_output=True, text=True, cwd=tmp,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_layer_is_refused_with_exit_2_and_nothing_written(case, tmp_path):
    build, fragment = CASES[case]
    image = oci_tar(tmp_path / "hostile.tar", layer_bytes(build))
    (tmp_path / "empty.jsonl").write_text("")
    before = snapshot(tmp_path)
    out = run_cli(image, tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert fragment in lines[0] and str(image) in lines[0]
    assert snapshot(tmp_path) == before
    assert not Path("/evil").exists() and not (tmp_path.parent / "evil").exists()


def test_docker_save_manifest_naming_a_path_outside_the_archive_is_refused(tmp_path):
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as t:
        data = json.dumps([{"Config": "c.json", "RepoTags": ["x:y"], "Layers": ["../../etc/passwd"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    out = run_cli(archive, tmp_path)
    assert out.returncode == 2 and "bad blob name" in out.stderr and len(out.stderr.splitlines()) == 1


def test_bad_digest_in_an_oci_index_is_refused(tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"manifests": [{"digest": "sha256:../../../etc/passwd"}]}))
    out = run_cli(layout, tmp_path)
    assert out.returncode == 2 and "bad digest" in out.stderr


def test_gzip_layer_lying_about_its_size_is_refused(tmp_path):
    import gzip

    layer = gzip.compress(layer_bytes(lambda t: _member(t, "huge", size=2**40)))
    out = run_cli(oci_tar(tmp_path / "gz.tar", layer), tmp_path)
    assert out.returncode == 2 and "damaged tar" in out.stderr and "Traceback" not in out.stderr


def test_entry_and_byte_bounds_are_enforced(monkeypatch):
    from workloads import oci_layer

    layer = layer_bytes(lambda t: [_member(t, f"f{i}", data=b"x" * 10) for i in range(5)])
    monkeypatch.setattr(oci_layer, "MAX_ENTRIES", 4)
    with pytest.raises(BadInput, match="more than 4 entries"):
        oci_layer.read_layer_tar(io.BytesIO(layer), "l", oci_layer.Budget("l"))
    monkeypatch.setattr(oci_layer, "MAX_ENTRIES", 100)
    monkeypatch.setattr(oci_layer, "MAX_DECLARED_BYTES", 49)  # 5 files x 10 bytes = 50 > 49
    with pytest.raises(BadInput, match="more than 49 bytes"):
        oci_layer.read_layer_tar(io.BytesIO(layer), "l", oci_layer.Budget("l"))
    monkeypatch.setattr(oci_layer, "MAX_DECLARED_BYTES", 50)
    assert len(oci_layer.read_layer_tar(io.BytesIO(layer), "l", oci_layer.Budget("l"))) == 5


def test_plain_directory_with_a_fifo_is_refused(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    os.mkfifo(root / "pipe")
    out = run_cli(root, tmp_path)
    assert out.returncode == 2 and "is a FIFO" in out.stderr
