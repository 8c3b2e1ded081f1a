"""``layerbench validate``: the quick suite against the real kernel, the table's shape, and
the fidelity the issue requires (overlay exact on every count and the view under all four
option sets; btrfs exclusive data exact and data + metadata within 10%; qcow2 clusters
exact; the reflink thin emulation's unshared bytes within 5%, or 4 blocks on the small ext4
cases).  Kernel cases skip, with the reason, where a backend cannot run (not root, missing
tool)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simulator.fidelity.backends import BACKENDS, Side, backends_for
from simulator.fidelity.suites import Case, suite
from simulator.fidelity.validate import ROW_KEYS, compare, errors, validate, view_difference, write_outputs

OVERLAY_COUNTS = ("failed_ops", "written_bytes", "read_bytes", "container_files", "container_data_bytes",
                  "container_alloc_bytes", "whiteouts", "opaque_dirs", "view")
QGROUP_TOLERANCE = 0.10
THIN_TOLERANCE = 0.05
THIN_FLOOR = 4 * 4096


def test_errors_and_view_difference_by_hand():
    assert errors(110, 100) == (10, 0.1)
    assert errors(0, 0) == (0, 0.0)
    assert errors(5, 0) == (5, None)  # no relative error against a zero
    a = {"/x": {"type": "file", "size": 1, "mode": 0o644}, "/d": {"type": "dir", "size": 0, "mode": 0o755}}
    b = {"/x": {"type": "file", "size": 2, "mode": 0o644}, "/e": {"type": "dir", "size": 0, "mode": 0o755}}
    assert view_difference(a, a) == 0
    assert view_difference(a, b) == 3  # /x differs in size, /d only in a, /e only in b


def test_unobservable_metrics_are_left_out_not_zero():
    case = Case("overlay", "demo", "demo")
    sim = Side({"container_files": 3, "lookups": 12, "cow_blocks": None}, None, 0.1)
    real = Side({"container_files": 3, "lookups": None, "cow_blocks": 4}, None, 0.2)
    rows = compare(case, "kernel-overlay", ("container_files", "lookups", "cow_blocks"), sim, real)
    assert [r["metric"] for r in rows] == ["container_files"]  # lookups: real None; cow_blocks: sim None
    assert list(rows[0]) == list(ROW_KEYS)


def test_backends_per_driver_and_options():
    names = lambda d, o: {b.name for b in backends_for(d, o)}  # noqa: E731
    assert names("overlay", {}) == {"kernel-overlay", "fuse-overlayfs"}
    assert names("overlay", {"metacopy": True}) == {"kernel-overlay"}  # fuse-overlayfs has no metacopy
    assert names("devicemapper", {"chunk_size": 65536}) == {"qcow2"}
    assert names("devicemapper", {"chunk_size": 4096}) == {"reflink-thin"}
    assert names("zfs", {}) == set()
    assert "lookups" not in BACKENDS["kernel-overlay"].metrics  # the kernel does not count them


def test_suites_cover_every_overlay_option_set_and_random_cases():
    quick, full = suite("quick"), suite("full")
    overlay_sets = {json.dumps(c.options, sort_keys=True) for c in quick if c.driver == "overlay"}
    assert len(overlay_sets) == 4
    assert any(c.image.startswith("random") for c in quick)
    assert len(full) > len(quick)
    assert {c.driver for c in quick} == {"overlay", "btrfs", "vfs", "devicemapper"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    import os

    if os.geteuid() != 0:
        pytest.skip("the real backends need root")
    result = validate(suite("quick"))
    if not result.rows:
        pytest.skip(f"no real backend available: {result.skipped}")
    write_outputs(result, tmp_path_factory.mktemp("fidelity"))
    return result




def _rows(result, **match):
    return [r for r in result.rows if all(r[k] == v for k, v in match.items())]


@pytest.mark.kernel
def test_quick_suite_table_shape(quick):
    assert not quick.failures, quick.failures
    for row in quick.rows:
        assert list(row) == list(ROW_KEYS)
        assert row["abs_error"] == abs(row["sim"] - row["real"]) or row["metric"] == "view"
        assert row["sim_seconds"] > 0 and row["real_seconds"] > 0
    df = quick.frame()
    assert set(df.columns) == set(ROW_KEYS)
    assert not df[["sim", "real", "abs_error"]].isna().any().any()  # never a null compared value


@pytest.mark.kernel
@pytest.mark.parametrize("options", ['{}', '{"metacopy": true, "redirect_dir": true}', '{"index": true}',
                                     '{"index": true, "metacopy": true, "redirect_dir": true}'])
def test_overlay_exact_on_every_count_and_the_view(quick, options):
    if "kernel-overlay" in quick.skipped:
        pytest.skip(quick.skipped["kernel-overlay"])
    rows = [r for r in _rows(quick, backend="kernel-overlay")
            if json.dumps(r["options"], sort_keys=True) == options]
    assert {r["metric"] for r in rows} >= set(OVERLAY_COUNTS)
    wrong = [(r["workload"], r["metric"], r["sim"], r["real"]) for r in rows
             if r["metric"] in OVERLAY_COUNTS and r["abs_error"] != 0]
    assert not wrong


@pytest.mark.kernel
def test_btrfs_exclusive_data_exact_and_qgroup_within_10_percent(quick):
    if "btrfs" in quick.skipped:
        pytest.skip(quick.skipped["btrfs"])
    rows = _rows(quick, backend="btrfs")
    data = [r for r in rows if r["metric"] == "container_alloc_bytes"]
    assert data and all(r["abs_error"] == 0 for r in data)
    assert all(r["abs_error"] == 0 for r in rows if r["metric"] in ("failed_ops", "view"))
    qgroup = [r for r in rows if r["metric"] == "qgroup_exclusive_bytes"]
    assert qgroup
    for r in qgroup:
        assert r["rel_error"] <= QGROUP_TOLERANCE, (r["workload"], r["sim"], r["real"])


@pytest.mark.kernel
def test_devicemapper_references(quick):
    qcow2 = _rows(quick, backend="qcow2")
    if "qcow2" not in quick.skipped:
        assert qcow2 and all(r["abs_error"] == 0 for r in qcow2)  # cluster counts exact
        assert not [r for r in qcow2 if r["metric"] in ("view", "failed_ops")]  # qcow2 sees neither
    thin = _rows(quick, backend="reflink-thin", metric="unshared_bytes")
    if "reflink-thin" not in quick.skipped:
        # within 5%, or 4 blocks on the small journal-less ext4 cases (tests/test_real_thin.py)
        assert thin and all(r["rel_error"] <= THIN_TOLERANCE or r["abs_error"] <= THIN_FLOOR for r in thin)


@pytest.mark.kernel
def test_vfs_copies_agree_on_operations_and_view(quick):
    if "vfs-copy" in quick.skipped:
        pytest.skip(quick.skipped["vfs-copy"])
    rows = _rows(quick, backend="vfs-copy")
    assert all(r["abs_error"] == 0 for r in rows if r["metric"] in ("failed_ops", "written_bytes", "read_bytes",
                                                                      "view"))
    builtin = [r for r in rows if not r["image"].startswith("random")]
    assert builtin and all(r["abs_error"] == 0 for r in builtin)


@pytest.mark.kernel
def test_cli_one_cell_json_rows(tmp_path):
    import os

    if os.geteuid() != 0:
        pytest.skip("the real backends need root")
    done = subprocess.run([sys.executable, "-m", "simulator", "validate", "--driver", "overlay", "--opt",
                           "metacopy=true", "--image", "demo", "--workload", "demo", "--out", str(tmp_path),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows and all(list(r) == list(ROW_KEYS) for r in rows)
    assert {r["backend"] for r in rows} == {"kernel-overlay"}
    assert rows[0]["options"] == {"metacopy": True}
    assert all(r["abs_error"] == 0 for r in rows if r["metric"] in OVERLAY_COUNTS)
    for name in ("fidelity.parquet", "fidelity.json", "fidelity.html", "charts/fidelity-errors.png"):
        assert (tmp_path / name).exists(), name


def test_cli_validate_needs_a_cell_or_a_suite():
    done = subprocess.run([sys.executable, "-m", "simulator", "validate", "--image", "demo"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--suite" in done.stderr
    done = subprocess.run([sys.executable, "-m", "simulator", "validate", "--driver", "zfs", "--image", "demo",
                           "--workload", "demo", "--json"], capture_output=True, text=True)
    assert done.returncode == 3 and "no real counterpart of zfs" in done.stderr
