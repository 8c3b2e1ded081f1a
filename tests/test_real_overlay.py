"""The overlay model against kernel overlayfs: hand-computed scenarios and a differential test.

Every scenario asserts three things agree: the number worked out by hand (arithmetic in the
test), the real kernel's upperdir, and the simulator.  The differential test replays seeded
random images and traces (``workloads.random``) on both and requires the same view and the
same upperdir counts.  All need root and overlayfs; they skip, with the reason, elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from drivers import make_driver
from helpers import d, f, image, ops, run, view
from simulator.errors import BackendUnavailable
from simulator.imagetree import ImageTree
from simulator.runner import Cell, Prepared, run_cell, view_cell

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
PAGE = 4096  # tmpfs allocates whole pages
SCRATCH_PREFIX = "layerbench-ovl-"
COMPARED = ("container_files", "container_data_bytes", "container_alloc_bytes", "whiteouts", "opaque_dirs",
            "failed_ops")
OPTION_SETS = {
    "default": {},
    "metacopy+redirect_dir": {"metacopy": True, "redirect_dir": True},
    "index": {"index": True},
    "metacopy+redirect_dir+index": {"metacopy": True, "redirect_dir": True, "index": True},
}
RANDOM_CASES = 60  # per option set; each case is two mounts of ~5 ms plus the replays
BIG_CASES = 30  # per option set, two containers; 300 seeds each agreed on kernel 6.18 here
COMMIT_CASES = 8  # per option set, big cases with commits


def _overlay_or_skip() -> None:
    from simulator.real.overlay import check_available

    try:
        check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"real overlay backend unavailable: {exc}")


pytestmark = pytest.mark.kernel


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path, monkeypatch):
    """Every test: the backend's scratch goes under this test's own tmp_path (other suites
    may run real backends at the same time), and nothing of it is left: no mount, no dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield
    assert not _mounts_under(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(SCRATCH_PREFIX)]


def real(img, trace, containers: int = 1, **options) -> tuple[dict, dict]:
    """(metrics, view of the last container) from the kernel."""
    from simulator.real import measure_prepared, view_prepared

    _overlay_or_skip()
    prepared = Prepared(make_driver("overlay", options), img, ImageTree.build(img), list(trace))
    return measure_prepared(prepared, containers), view_prepared(prepared, containers - 1)


def agree(img, trace, expected: dict, **options) -> tuple[dict, dict]:
    """Kernel, simulator and the hand-computed ``expected`` agree; views are equal."""
    metrics, real_view = real(img, trace, **options)
    sim = run("overlay", img, trace, **options)
    for key, value in expected.items():
        assert metrics[key] == value, f"kernel {key}"
        if key in sim:
            assert sim[key] == value, f"simulator {key}"
    assert real_view == view("overlay", img, trace, **options)
    return metrics, real_view


BIG = 8 * MiB
BIG_IMAGE = image([d("/data"), f("/data/big", BIG)])


def test_append_one_byte_copies_the_whole_file_up():
    # 8 MiB + 1 byte, allocated in pages: ceil(8388609 / 4096) = 2049 pages = 8392704 bytes
    agree(BIG_IMAGE, ops({"op": "append", "path": "/data/big", "length": 1}),
          {"container_files": 1, "container_data_bytes": BIG + 1, "container_alloc_bytes": 2049 * PAGE,
           "whiteouts": 0, "opaque_dirs": 0, "failed_ops": 0})


@pytest.mark.parametrize("workload, data, pages, failed", [
    # One file of each of 1, 8, 32, 128 MiB, 5 bytes appended to each: k MiB + 5 takes 256 k + 1 pages.
    ("append-each", 169 * MiB + 4 * 5, 169 * 256 + 4, 0),
    # The tree's 4 leaves, 8 + 5 bytes each: one page each; [ -f oh-hi ] fails in the 3 inner dirs.
    ("tree-walk", 4 * (8 + 5), 4, 3)])
def test_docker_storage_benchmark_append_tests(workload, data, pages, failed):
    """chriskuehl/docker-storage-benchmark's append-to-big-files and append-to-file-tree,
    on a small instance of its image (``workloads.storage_benchmark``)."""
    from simulator.inputs import load_image, load_workload

    img = load_image("storage-benchmark:copies=1,small_files=3,tree_depth=2", 0)
    trace = load_workload(workload, ImageTree.build(img), 0)
    agree(img, trace, {"container_files": 4, "container_data_bytes": data, "container_alloc_bytes": pages * PAGE,
                       "whiteouts": 0, "opaque_dirs": 0, "failed_ops": failed})


def test_open_trunc_copies_no_data():
    agree(BIG_IMAGE, ops({"op": "create", "path": "/data/big", "size": 0}),
          {"container_files": 1, "container_data_bytes": 0, "container_alloc_bytes": 0, "failed_ops": 0})


def test_truncate_copies_everything_then_cuts():
    # truncate(2) to 1 MiB: full copy-up, then 1 MiB left = 256 pages
    agree(BIG_IMAGE, ops({"op": "truncate", "path": "/data/big", "size": MiB}),
          {"container_files": 1, "container_data_bytes": MiB, "container_alloc_bytes": 256 * PAGE})


def test_chmod_with_metacopy_copies_metadata_only():
    metrics, _ = agree(BIG_IMAGE, ops({"op": "chmod", "path": "/data/big", "mode": 0o600}),
                       {"container_files": 1, "container_data_bytes": BIG, "container_alloc_bytes": 0},
                       metacopy=True)
    assert metrics["metacopy_files"] == 1
    # without metacopy the same chmod copies all 8 MiB = 2048 pages
    metrics, _ = agree(BIG_IMAGE, ops({"op": "chmod", "path": "/data/big", "mode": 0o600}),
                       {"container_files": 1, "container_data_bytes": BIG, "container_alloc_bytes": 2048 * PAGE})
    assert metrics["metacopy_files"] == 0


def test_write_after_metacopy_copies_the_data():
    trace = ops({"op": "chmod", "path": "/data/big", "mode": 0o600},
                {"op": "write", "path": "/data/big", "offset": 0, "length": 1})
    metrics, _ = agree(BIG_IMAGE, trace, {"container_files": 1, "container_alloc_bytes": 2048 * PAGE}, metacopy=True)
    assert metrics["metacopy_files"] == 0


DIR_IMAGE = image([d("/d"), f("/d/f", 10_000)])


def test_dir_rename_is_exdev_without_redirect_dir():
    _, v = agree(DIR_IMAGE, ops({"op": "rename", "src": "/d", "dst": "/e"}),
                 {"failed_ops": 1, "container_files": 0, "whiteouts": 0})
    assert "/d/f" in v and "/e" not in v


def test_dir_rename_succeeds_with_redirect_dir():
    # the dir moves (redirect xattr, no data); its old name is whited out
    metrics, v = agree(DIR_IMAGE, ops({"op": "rename", "src": "/d", "dst": "/e"}),
                       {"failed_ops": 0, "container_files": 0, "whiteouts": 1}, redirect_dir=True)
    assert metrics["redirect_dirs"] == 1
    assert v["/e/f"] == {"type": "file", "size": 10_000, "mode": 0o644} and "/d" not in v


def test_move_falls_back_to_a_copy_without_redirect_dir():
    # mv copies /d/f (10000 bytes = 3 pages) to /e/f, then rm -rf /d leaves one whiteout
    _, v = agree(DIR_IMAGE, ops({"op": "move", "src": "/d", "dst": "/e"}),
                 {"failed_ops": 0, "container_files": 1, "container_data_bytes": 10_000,
                  "container_alloc_bytes": 3 * PAGE, "whiteouts": 1, "opaque_dirs": 0})
    assert "/e/f" in v and "/d" not in v


LINK_IMAGE = image([f("/a", 10_000), {"path": "/b", "type": "hardlink", "target": "/a"}])


def test_hard_links_break_on_copy_up_without_index():
    _, v = agree(LINK_IMAGE, ops({"op": "append", "path": "/a", "length": 1}),
                 {"container_files": 1, "container_data_bytes": 10_001})
    assert (v["/a"]["size"], v["/b"]["size"]) == (10_001, 10_000)


def test_hard_links_survive_copy_up_with_index():
    _, v = agree(LINK_IMAGE, ops({"op": "append", "path": "/a", "length": 1}),
                 {"container_files": 1, "container_data_bytes": 10_001}, index=True)
    assert (v["/a"]["size"], v["/b"]["size"]) == (10_001, 10_001)


def test_delete_and_recreate_dir_is_opaque():
    # rm -rf /d whites out /d (1), mkdir /d makes it opaque in place of the whiteout (0 left)
    agree(DIR_IMAGE, ops({"op": "remove_tree", "path": "/d"}, {"op": "mkdir", "path": "/d"}),
          {"whiteouts": 0, "opaque_dirs": 1, "container_files": 0})


def test_new_dir_in_merged_dir_is_opaque_with_index():
    # ovl_create_upper marks it opaque unless ovl_allow_offline_changes(): 1 with index, 0 without
    trace = ops({"op": "mkdir", "path": "/d/new"})
    agree(DIR_IMAGE, trace, {"opaque_dirs": 0})
    agree(DIR_IMAGE, trace, {"opaque_dirs": 1}, index=True)


def test_implicit_parent_keeps_the_lower_attributes():
    img = image([d("/a", 0o700, uid=5)], [f("/a/f", 1)])  # layer 1 lists /a only implicitly
    _, v = agree(img, [], {"container_files": 0})
    assert v["/a"]["mode"] == 0o700


def test_absolute_symlinks_stay_inside_the_container():
    img = image([{"path": "/up", "type": "symlink", "target": "/../../../.."}])
    name = f"layerbench-escape-{os.getpid()}"
    _, v = agree(img, ops({"op": "create", "path": f"/up/{name}", "size": 1}), {"failed_ops": 0})
    assert v[f"/{name}"]["size"] == 1
    assert not os.path.exists(f"/{name}")


# -- regressions: each found by the big differential runs, minimised (seed in the name) ---------

def test_truncate_keeps_the_page_holding_the_new_end():
    # big seed 111.  /a (4096 B) is copied up whole = page 0; the write covers bytes
    # 10000..75535 = pages 2..18; truncate(10000) frees pages 3..18 but keeps page 2, which
    # holds the new end (its tail zeroed), though only bytes beyond 10000 were written there.
    # Page 1 stays a hole.  Pages 0 and 2: 2 * 4096 = 8192.
    agree(image([f("/a", PAGE)]), ops({"op": "write", "path": "/a", "offset": 10_000, "length": 65_536},
                                      {"op": "truncate", "path": "/a", "size": 10_000}),
          {"container_files": 1, "container_data_bytes": 10_000, "container_alloc_bytes": 2 * PAGE})
    # a cut on a page boundary keeps nothing beyond it: 8192 -> pages 0 and 1, and page 1 is a hole
    agree(image([f("/a", PAGE)]), ops({"op": "write", "path": "/a", "offset": 10_000, "length": 100},
                                      {"op": "truncate", "path": "/a", "size": 2 * PAGE}),
          {"container_files": 1, "container_data_bytes": 2 * PAGE, "container_alloc_bytes": PAGE})


def test_own_dir_moved_into_a_merged_dir_becomes_opaque():
    # big seed 127, default options (so mkdir alone makes nothing opaque).  /n is the
    # container's own; renamed into /d (a lower dir, copied up: a merge dir) it gets the opaque
    # xattr (ovl_rename).  /p/q renamed inside the container's own /p stays plain: 1 opaque dir.
    trace = ops({"op": "mkdir", "path": "/n"}, {"op": "rename", "src": "/n", "dst": "/d/n"},
                {"op": "mkdir", "path": "/p"}, {"op": "mkdir", "path": "/p/q"},
                {"op": "rename", "src": "/p/q", "dst": "/p/r"})
    _, v = agree(DIR_IMAGE, trace, {"opaque_dirs": 1, "whiteouts": 0, "container_files": 0, "failed_ops": 0})
    assert v["/d/f"]["size"] == 10_000 and "/d/n" in v and "/p/r" in v


SYMLINK_LOOP_IMAGE = image([d("/a/b"), f("/a/b/f", 100), {"path": "/a/b/up", "type": "symlink", "target": "/a"}])


def test_rm_rf_through_a_symlink_it_deletes_keeps_the_operand():
    # big seeds 193 and 226.  "/a/b/up/b" is /a/b, reached through /a/b/up.  rm -rf empties it
    # by directory fd (f and up: 2 whiteouts), then rmdir("/a/b/up/b") by path: up is gone,
    # ENOENT, which rm -f ignores.  So /a/b stays, empty, and nothing failed.
    _, v = agree(SYMLINK_LOOP_IMAGE, ops({"op": "remove_tree", "path": "/a/b/up/b"}),
                 {"whiteouts": 2, "opaque_dirs": 0, "container_files": 0, "failed_ops": 0})
    assert sorted(v) == ["/a", "/a/b"]
    # mv of the lower dir by that path: EXDEV, copy to /c (f: 100 B = 1 page, up, b), then rm as above
    _, v = agree(SYMLINK_LOOP_IMAGE, ops({"op": "move", "src": "/a/b/up/b", "dst": "/c"}),
                 {"whiteouts": 2, "container_files": 1, "container_data_bytes": 100,
                  "container_alloc_bytes": PAGE, "failed_ops": 0})
    assert sorted(v) == ["/a", "/a/b", "/c", "/c/f", "/c/up"]


def test_mkdir_in_a_setgid_dir_inherits_the_bit():
    # big seed 237.  chmod /d 02755, then mkdir /d/n 0755 -> 02755 (inode_init_owner); mkdir
    # drops set-id bits it is asked for: 06755 & 01777 = 0755; a file keeps the mode it asks.
    _, v = agree(DIR_IMAGE, ops({"op": "chmod", "path": "/d", "mode": 0o2755}, {"op": "mkdir", "path": "/d/n"},
                                {"op": "mkdir", "path": "/m", "mode": 0o6755},
                                {"op": "create", "path": "/d/g", "size": 0, "mode": 0o640}),
                 {"failed_ops": 0, "container_files": 1})
    assert (v["/d/n"]["mode"], v["/m"]["mode"], v["/d/g"]["mode"]) == (0o2755, 0o755, 0o640)


HARDLINK3_IMAGE = image([f("/a", 10_000), {"path": "/b", "type": "hardlink", "target": "/a"},
                         {"path": "/c", "type": "hardlink", "target": "/a"}])


def test_setxattr_on_another_name_does_not_link_it_up():
    # big index seed 173.  chmod /a copies the inode up (index) and links /a into the upper;
    # setxattr /b goes to that upper inode without linking /b up (ovl_xattr_set), chown /c
    # links /c up (ovl_setattr -> ovl_copy_up -> ovl_link_up).  unlink /a: a whiteout.
    # setxattr case: the data stays in workdir/index only: 0 files in the upperdir.
    base = ({"op": "chmod", "path": "/a", "mode": 0o600},)
    agree(HARDLINK3_IMAGE, ops(*base, {"op": "setxattr", "path": "/b", "name": "user.t", "size": 1},
                               {"op": "unlink", "path": "/a"}),
          {"container_files": 0, "container_data_bytes": 0, "whiteouts": 1, "failed_ops": 0}, index=True)
    # chown case: /c holds the inode: 1 file, 10000 B = 3 pages
    agree(HARDLINK3_IMAGE, ops(*base, {"op": "chown", "path": "/c", "uid": 1, "gid": 1},
                               {"op": "unlink", "path": "/a"}),
          {"container_files": 1, "container_data_bytes": 10_000, "container_alloc_bytes": 3 * PAGE,
           "whiteouts": 1}, index=True)


def test_unlinking_a_lower_hard_link_copies_it_to_the_index():
    # big index seed 39.  With index, unlink /a first copies the inode up into workdir/index
    # (ovl_nlink_start keeps the union nlink there), then whites /a out.  setxattr /b then
    # finds the inode up: no copy-up into the upperdir, 0 files.  Without index, setxattr /b
    # copies /b up whole: 1 file, 10000 B = 3 pages.
    trace = ops({"op": "unlink", "path": "/a"}, {"op": "setxattr", "path": "/b", "name": "user.t", "size": 1})
    agree(LINK_IMAGE, trace, {"container_files": 0, "whiteouts": 1, "failed_ops": 0}, index=True)
    agree(LINK_IMAGE, trace, {"container_files": 1, "container_data_bytes": 10_000,
                              "container_alloc_bytes": 3 * PAGE, "whiteouts": 1, "failed_ops": 0})


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_differential_random_cases(options):
    """RANDOM_CASES seeded images and traces: the kernel and the simulator agree exactly."""
    _overlay_or_skip()
    from simulator.real import run_real, view_real

    failures = []
    for seed in range(RANDOM_CASES):
        cell = Cell("overlay", "random:layers=3,entries=12", "random:ops=40", options=OPTION_SETS[options], seed=seed)
        sim, kernel = run_cell(cell)["metrics"], run_real(cell)["metrics"]
        wrong = {k: (sim[k], kernel[k]) for k in COMPARED if sim[k] != kernel[k]}
        if wrong or view_cell(cell) != view_real(cell):
            failures.append((seed, wrong))
    assert not failures, f"simulator vs kernel (seed, {{metric: (sim, kernel)}}): {failures}"


@pytest.mark.parametrize("options", ["default", "metacopy+redirect_dir+index"])
def test_differential_two_containers(options):
    """Containers share the lower dirs; each has its own upper.  Deeper images, longer traces."""
    _overlay_or_skip()
    from simulator.real import run_real, view_real

    failures = []
    for seed in range(1000, 1000 + BIG_CASES):
        cell = Cell("overlay", "random:layers=5,entries=25", "random:ops=150,containers=2",
                    options=OPTION_SETS[options], containers=2, seed=seed)
        sim, kernel = run_cell(cell)["metrics"], run_real(cell)["metrics"]
        wrong = {k: (sim[k], kernel[k]) for k in COMPARED if sim[k] != kernel[k]}
        if wrong or any(view_cell(cell, c) != view_real(cell, c) for c in (0, 1)):
            failures.append((seed, wrong))
    assert not failures, f"simulator vs kernel: {failures}"


# -- commit: docker commit on the real backend (simulator/real/overlay_commit.py) -----------------

COMMIT_OPS = ({"op": "append", "path": "/d/f", "length": 10}, {"op": "unlink", "path": "/a"},
              {"op": "mkdir", "path": "/n"}, {"op": "commit"})


def test_commit_moves_the_changes_into_a_layer_and_starts_a_fresh_upper():
    # /d/f copied up (10010 B), /a whited out, /n made: all go into the new layer; the
    # container goes on in an empty upperdir, so its counts start from 0 again.
    img = image([d("/d"), f("/d/f", 10_000), f("/a", 5_000)])
    _, v = agree(img, ops(*COMMIT_OPS), {"container_files": 0, "container_data_bytes": 0, "whiteouts": 0,
                                         "opaque_dirs": 0, "failed_ops": 0})
    assert v["/d/f"]["size"] == 10_010 and "/a" not in v and v["/n"]["type"] == "dir"
    # appending again copies up /d/f from the committed layer: 10010 + 10 = 10020 B = 3 pages;
    # rm -rf /n needs a whiteout now that /n is in a lower layer
    _, v = agree(img, ops(*COMMIT_OPS, {"op": "append", "path": "/d/f", "length": 10},
                          {"op": "remove_tree", "path": "/n"}),
                 {"container_files": 1, "container_data_bytes": 10_020, "container_alloc_bytes": 3 * PAGE,
                  "whiteouts": 1, "failed_ops": 0})
    assert "/n" not in v


def test_commit_expands_a_redirected_dir_and_fails_past_the_layer_limit():
    # redirect_dir: /d renamed to /e is a redirect in the upper; the layer holds /e whole (/e/f),
    # and a whiteout for /d.  After the commit, writing /e/f copies 10000 + 1 B = 3 pages up.
    trace = ops({"op": "rename", "src": "/d", "dst": "/e"}, {"op": "commit"},
                {"op": "append", "path": "/e/f", "length": 1})
    metrics, v = agree(DIR_IMAGE, trace, {"container_files": 1, "container_data_bytes": 10_001,
                                          "container_alloc_bytes": 3 * PAGE, "whiteouts": 0, "failed_ops": 0},
                       redirect_dir=True)
    assert metrics["redirect_dirs"] == 0 and "/d" not in v
    # max_layers=2 and a 1-layer image: the first commit makes 2 layers, the second is refused
    agree(DIR_IMAGE, ops({"op": "commit"}, {"op": "commit"}), {"failed_ops": 1, "ops": 2}, max_layers=2)


def _with_commits(trace: list, containers: int, seed: int, count: int) -> list:
    """``trace`` with ``count`` commits by random containers at random places (seeded)."""
    from simulator.trace import Op

    rng = np.random.default_rng(seed)
    out = list(trace)
    for _ in range(count):
        out.insert(int(rng.integers(len(out) + 1)), Op("commit", "/", container=int(rng.integers(containers))))
    return out


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_differential_random_cases_with_commits(options):
    """Big random cases with 6 commits spread over 2 containers: views and counts agree."""
    _overlay_or_skip()
    from simulator.real import measure_prepared, view_prepared
    from simulator.runner import prepare

    failures = []
    for seed in range(2000, 2000 + COMMIT_CASES):
        cell = Cell("overlay", "random:layers=5,entries=25", "random:ops=150,containers=2",
                    options=OPTION_SETS[options], containers=2, seed=seed)
        prepared = prepare(cell)
        prepared.ops = _with_commits(prepared.ops, 2, seed, 6)
        kernel = measure_prepared(prepared, 2)
        sim = run("overlay", prepared.image, prepared.ops, 2, **OPTION_SETS[options])
        wrong = {k: (sim[k], kernel[k]) for k in (*COMPARED, "ops") if sim[k] != kernel[k]}
        views = [view_prepared(prepared, c) == view("overlay", prepared.image, prepared.ops, c, 2,
                                                     **OPTION_SETS[options]) for c in (0, 1)]
        if wrong or not all(views):
            failures.append((seed, wrong, views))
    assert not failures, f"simulator vs kernel (seed, metrics, views equal): {failures}"


# -- command line and cleanup ------------------------------------------------------------------

def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp)}  # the child's scratch lands in this test's tmp_path


def test_cli_real_run_prints_json_and_leaves_no_mount(tmp_path):
    _overlay_or_skip()
    p = subprocess.run([sys.executable, "-m", "simulator", "run", "--backend", "real", "--driver", "overlay",
                        "--image", "demo", "--workload", "demo", "--json"], cwd=ROOT, capture_output=True,
                       text=True, env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["backend"] == "real" and out["driver"] == "overlay"
    sim = run_cell(Cell("overlay", "demo", "demo"))["metrics"]
    assert {k: out["metrics"][k] for k in COMPARED} == {k: sim[k] for k in COMPARED}


def test_not_root_is_exit_3(monkeypatch, capsys):
    from simulator import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = cli.main(["run", "--backend", "real", "--driver", "overlay", "--image", "demo", "--workload", "demo"])
    assert code == 3
    assert "needs root" in capsys.readouterr().err


def test_missing_overlay_is_unavailable(tmp_path, monkeypatch):
    from simulator.real.overlay import check_available

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    fake = tmp_path / "filesystems"
    fake.write_text("nodev\ttmpfs\n\text4\n")
    with pytest.raises(BackendUnavailable, match="no overlay"):
        check_available(str(fake))


def test_other_driver_has_no_real_backend_yet():
    from simulator.real import run_real

    with pytest.raises(BackendUnavailable, match="no real backend for driver vfs"):
        run_real(Cell("vfs", "demo", "demo"))


def test_exception_mid_run_unmounts_everything(monkeypatch):
    _overlay_or_skip()
    import simulator.real as real_backend

    def boom(root, trace):
        assert SCRATCH_PREFIX in Path("/proc/mounts").read_text()  # mounted at this point
        raise RuntimeError("replay failed")

    monkeypatch.setattr(real_backend, "replay", boom)
    with pytest.raises(RuntimeError):
        real_backend.run_real(Cell("overlay", "demo", "demo"))


def test_sigterm_mid_run_unmounts_everything(tmp_path):
    _overlay_or_skip()
    trace = tmp_path / "slow.jsonl"
    trace.write_text("".join(json.dumps({"op": "create", "path": f"/f{i}", "size": 4096}) + "\n"
                             for i in range(200_000)))
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "run", "--backend", "real", "--driver", "overlay",
                             "--image", "demo", "--workload", str(trace), "--json"], cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_mounts_under(tmp_path)) < 2:  # the tmpfs and the container's overlay
        assert proc.poll() is None and time.monotonic() < deadline, "the run never mounted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    # the autouse fixture checks that no mount and no scratch dir is left under tmp_path
