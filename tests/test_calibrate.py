"""Calibration: the fit recovers known parameters, the shipped file loads and drives
est_seconds, bad files are refused, and a real calibration reports its held-out error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from simulator.calibration import default_calibration, load_calibration, parse_calibration
from simulator.costmodel import CostModel
from simulator.errors import BackendUnavailable, BadInput
from simulator.fidelity.calibrate import FEATURES, TERMS, UNMEASURABLE_BANDWIDTH, fit, nnls, params_from
from simulator.runner import Cell, run_cell


def test_nnls_hand_example():
    # min (x1-1)^2 + (x2+1)^2 + (x1+x2)^2 with x >= 0: x2 wants to be negative, so x2 = 0,
    # then d/dx1 [(x1-1)^2 + x1^2] = 0 gives x1 = 1/2.
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([1.0, -1.0, 0.0])
    assert nnls(a, b) == pytest.approx([0.5, 0.0], abs=1e-12)


def test_fit_recovers_known_parameters_exactly():
    rng = np.random.default_rng(7)
    truth = CostModel(syscall_seconds=3e-6, probe_seconds=1.5e-6, copy_bytes_per_second=2e9, copyup_seconds=40e-6,
                      write_bytes_per_second=1e9, metadata_seconds=9e-6, fsync_seconds=2e-3, mount_seconds=4e-3,
                      mount_layer_seconds=20e-6, cache_write_bytes_per_second=3e9, read_bytes_per_second=5e9,
                      open_seconds=6e-6, dirent_seconds=15e-6, new_file_write_seconds=120e-6,
                      image_read_seconds=30e-6, cold_read_byte_seconds=2e-9, image_change_seconds=5e-6,
                      data_unlink_seconds=20e-6, dirty_range_seconds=25e-6, cold_lookup_seconds=8e-6,
                      cold_dir_layer_seconds=2e-6, dirent_layer_seconds=3e-6, fsync_dir_seconds=400e-6,
                      rename_seconds=50e-6, synced_byte_seconds=1e-9)
    rows = []
    for _ in range(60):  # random event counts of realistic magnitude, exact times from the truth
        counts = {f: int(rng.integers(0, 10 ** (7 if f.endswith("bytes") else 3))) for f in FEATURES}
        seconds = truth.estimate(**counts, diff_files=0)
        rows.append((np.array([counts[f] for f in FEATURES], dtype=float), seconds))
    params = params_from(fit(rows))
    for feature in FEATURES:
        name = TERMS[feature][0]
        assert params[name] == pytest.approx(getattr(truth, name), rel=1e-6), name


def test_a_cost_the_data_never_shows_is_free_not_zero_bandwidth():
    coef = np.zeros(len(FEATURES))
    params = params_from(coef)
    assert params["copy_bytes_per_second"] == UNMEASURABLE_BANDWIDTH  # never a division by zero
    assert params["syscall_seconds"] == 0.0
    CostModel.from_mapping(params).estimate(**dict.fromkeys(FEATURES, 1), diff_files=0)


def test_shipped_calibration_loads_with_a_section_per_calibrated_driver():
    cal = default_calibration()
    assert set(cal.drivers) >= {"overlay", "btrfs"}
    for driver in ("overlay", "btrfs", "zfs"):
        model = cal.for_driver(driver)
        assert all(v >= 0 for v in model.as_dict().values())
    assert cal.for_driver("btrfs") != cal.for_driver("overlay")  # measured separately


def test_shipped_calibration_reports_held_out_error():
    from importlib import resources

    raw = json.loads((resources.files("simulator.calibration") / "default.json").read_text())
    held = raw["fit"]["held_out"]
    assert {h["driver"] for h in held} >= {"overlay", "btrfs"}
    for h in held:
        assert h["rel_error"] == pytest.approx(abs(h["est_seconds"] - h["real_seconds"]) / h["real_seconds"])
    fitted = {m["name"] for m in raw["fit"]["microbenchmarks"]}
    assert not fitted & {h["workload"] for h in held}  # held out: never fitted on


def test_est_seconds_uses_the_shipped_calibration_by_default():
    cell = Cell("btrfs", "demo", "demo")
    default = run_cell(cell)["metrics"]["est_seconds"]
    explicit = run_cell(cell, default_calibration().for_driver("btrfs"))["metrics"]["est_seconds"]
    plain = run_cell(cell, CostModel())["metrics"]["est_seconds"]
    assert default == explicit and default != plain


def test_calibration_file_on_the_command_line(tmp_path):
    cal = {"schema": 1, "params": {"syscall_seconds": 1.0}, "drivers": {"vfs": {"mount_seconds": 100.0}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    out = subprocess.run([sys.executable, "-m", "simulator", "run", "--driver", "vfs", "--image", "demo",
                          "--workload", "demo", "--calibration", str(path), "--json"],
                         capture_output=True, text=True, check=True)
    est = json.loads(out.stdout)["metrics"]["est_seconds"]
    # 10 operations at 1 s each and one container start at 100 s dominate everything else
    assert 110.0 <= est < 110.1


@pytest.mark.parametrize("raw, fault", [
    ({"schema": 2}, "'schema' must be 1"),
    ({"schema": 1, "params": {"warp_seconds": 1}}, "warp_seconds"),
    ({"schema": 1, "params": {"syscall_seconds": -1}}, "non-negative"),
    ({"schema": 1, "drivers": {"btrfs": []}}, "drivers.btrfs"),
    ({"schema": 1, "extra": 1}, "unknown key"),
])
def test_bad_calibration_files_are_refused(raw, fault):
    with pytest.raises(BadInput, match=fault):
        parse_calibration(raw, "cal.json")


def test_bad_calibration_file_exits_2(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "simulator", "run", "--driver", "vfs", "--image", "demo",
                           "--workload", "demo", "--calibration", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "not JSON" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(BadInput, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


@pytest.mark.kernel
def test_calibrate_on_the_kernel_reports_held_out_error(tmp_path):
    from simulator.fidelity.calibrate import calibrate
    from simulator.real.overlay import check_available

    try:
        check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"real overlay backend unavailable: {exc}")
    run = calibrate(["overlay"], repeats=1, held_out=["append-log:files=2,appends=300,length=512"])
    params = run.calibration.drivers["overlay"]
    assert params["mount_seconds"] > 0 and params["probe_seconds"] > 0  # mounts and lookups cost time
    (held,) = run.held_out
    assert held["real_seconds"] > 0
    assert held["rel_error"] == pytest.approx(abs(held["est_seconds"] - held["real_seconds"]) / held["real_seconds"])
    report = run.report()
    assert len(report["fit"]["microbenchmarks"]) == len(run.fit_samples) >= 15


# -- the counts behind the calibrated terms (hand-computed on small scenarios) ----------------

def _counts(driver: str, entries: list, ops: list) -> dict[str, int]:
    from drivers import make_driver
    from simulator.fidelity.calibrate import _Capture
    from simulator.harness import Run
    from simulator.image import Image, Layer
    from simulator.imagetree import ImageTree

    image = Image("t", (Layer("l0", tuple(entries)),))
    run = Run(make_driver(driver, {}), image, 1, ImageTree.build(image))
    for op in ops:
        run.apply(op)
    cost = _Capture()
    run.finish(cost)
    return cost.counts  # type: ignore[attr-defined]


def test_rm_rf_counts_every_entry_it_lists_and_unlinks_of_files_with_data():
    from simulator.image import Entry
    from simulator.trace import Op

    entries = [Entry("/t", "dir"), Entry("/t/a", "dir"), Entry("/t/a/x", "file", size=8192),
               Entry("/t/a/y", "file", size=100), Entry("/t/b", "file", size=4097), Entry("/t/c", "file", size=4096)]
    counts = _counts("overlay", entries, [Op("remove_tree", "/t")])
    # /t lists a, b, c (3) and /t/a lists x, y (2): 5 entries read
    assert counts["dirents"] == 5
    # files of more than a page (4096 bytes) lose their last name: x (8192) and b (4097); c is exactly a page
    assert counts["data_unlinks"] == 2
    assert counts["image_files_changed"] == 0  # removed, never changed first


def test_new_file_writebacks_image_reads_and_dirty_ranges():
    from simulator.image import Entry
    from simulator.trace import Op

    entries = [Entry("/d", "dir"), Entry("/d/big", "file", size=3 * 4096), Entry("/d/small", "file", size=10)]
    ops = [Op("create", "/d/n1", size=10), Op("create", "/d/n2", size=0),  # n2 has no data: no writeback
           Op("read", "/d/big", offset=0, length=4096), Op("read", "/d/big", offset=4096, length=100),
           Op("read", "/d/small", offset=0, length=10),
           Op("write", "/d/big", offset=0, length=10), Op("write", "/d/big", offset=8192, length=10),
           Op("fsync", "/d/big")]
    counts = _counts("btrfs", entries, ops)
    assert counts["new_file_writebacks"] == 1  # n1 only (written back at the end: still counted)
    assert counts["image_files_read"] == 1  # big, once; small is not more than a page
    assert counts["image_first_read_bytes"] == 4096  # the first read of big only
    assert counts["image_files_changed"] == 1  # big, on its first write
    # the fsync wrote back big's two disjoint dirty ranges ([0,10) and [8192,8202)); n1's writeback
    # after the workload is not timed and so not counted
    assert counts["dirty_ranges"] == 2
    assert counts["synced_bytes"] == 10 + 10  # their bytes
    assert counts["fsync_dirs"] == 1  # the one fsync, in /d
    assert counts["renames"] == 0
    assert _counts("btrfs", entries, [Op("rename", "/d/small", dst="/d/s2"), Op("rename", "/d/s2", dst="/d/s2"),
                                      Op("rename", "/d/none", dst="/d/s3")])["renames"] == 1  # a no-op, a failure


def test_new_terms_default_to_zero_cost():
    # drivers without a calibrated section keep the est_seconds they had before these terms
    base = dict(ops=3, probes=2, copyup_bytes=0, copyups=0, device_write_bytes=0, metadata_ops=1, fsyncs=0,
                mounts=1, mounted_layers=1, diff_files=0)
    extra = dict(dirents=7, new_file_writebacks=5, image_files_read=4, image_first_read_bytes=1 << 20,
                 image_files_changed=3, data_unlinks=2, dirty_ranges=9, cold_lookups=11, cold_dir_layers=6,
                 dirent_layers=4, fsync_dirs=2, renames=3,
                 synced_bytes=1 << 20)
    assert CostModel().estimate(**base, **extra) == CostModel().estimate(**base)


def test_cold_lookups_count_each_name_and_directory_once_per_container():
    from drivers import make_driver
    from simulator.fidelity.calibrate import _Capture
    from simulator.harness import Run
    from simulator.image import Entry, Image, Layer
    from simulator.imagetree import ImageTree
    from simulator.trace import Op

    image = Image("t", (Layer("l0", (Entry("/a", "dir"), Entry("/a/b", "dir"), Entry("/a/b/f", "file", size=10))),
                        Layer("l1", (Entry("/a", "dir"), Entry("/a/b", "dir"), Entry("/a/b/g", "file", size=10)))))
    ops = [Op("stat", "/a/b/f"),  # a/b/f, and the directories a and a/b walked through: 3
           Op("stat", "/a/b/g"),  # a/b/g: 1 (its directories were walked)
           Op("stat", "/a/b/f"), Op("stat", "/a/b"),  # looked up before: 0
           Op("stat", "/a/missing"),  # a negative lookup is cold too: 1
           Op("create", "/a/new", size=0), Op("stat", "/a/new"),  # the create's lookup: 1, then warm
           Op("stat", "/a/b/f", container=1)]  # another container's mount: a/b/f, a, a/b: 3
    for driver in ("overlay", "btrfs"):
        run = Run(make_driver(driver, {}), image, 2, ImageTree.build(image))
        for op in ops:
            run.apply(op)
        assert run.namespace(0).exists("/a/b/g") is not None  # a look that is no lookup...
        cost = _Capture()
        run.finish(cost)
        counts = cost.counts  # type: ignore[attr-defined]
        assert counts["cold_lookups"] == (3 + 1 + 0 + 1 + 1) + 3  # ...counts nothing
        # a and a/b are each in both layers, walked through once per container: (2 + 2) * 2
        assert counts["cold_dir_layers"] == 8


def test_files_above_max_inline_have_data_on_btrfs_only():
    from simulator.image import Entry
    from simulator.trace import Op

    # 3000 bytes: more than btrfs's max_inline (2048), so a data extent there; less than a page
    entries = [Entry("/d", "dir"), Entry("/d/m", "file", size=3000), Entry("/d/i", "file", size=2048)]
    ops = [Op("read", "/d/m", offset=0, length=3000), Op("read", "/d/i", offset=0, length=2048),
           Op("unlink", "/d/m"), Op("unlink", "/d/i")]
    btrfs, overlay = _counts("btrfs", entries, ops), _counts("overlay", entries, ops)
    assert (btrfs["image_files_read"], btrfs["image_first_read_bytes"], btrfs["data_unlinks"]) == (1, 3000, 1)
    assert (overlay["image_files_read"], overlay["image_first_read_bytes"], overlay["data_unlinks"]) == (0, 0, 0)


def test_rm_rf_counts_the_layers_its_lookups_by_name_probe():
    from drivers import make_driver
    from simulator.fidelity.calibrate import _Capture
    from simulator.harness import Run
    from simulator.image import Entry, Image, Layer
    from simulator.imagetree import ImageTree
    from simulator.trace import Op

    image = Image("t", (Layer("l0", (Entry("/t", "dir"), Entry("/t/a", "file", size=1), Entry("/t/s", "dir"))),
                        Layer("l1", (Entry("/t", "dir"), Entry("/t/b", "file", size=1), Entry("/t/s", "dir"),
                                     Entry("/t/s/c", "file", size=1)))))
    run = Run(make_driver("overlay", {}), image, 1, ImageTree.build(image))
    run.apply(Op("remove_tree", "/t"))
    cost = _Capture()
    run.finish(cost)
    counts = cost.counts  # type: ignore[attr-defined]
    assert counts["dirents"] == 4  # /t lists a, b, s; /t/s lists c
    # probed from the top layer down: b (top) 1, a (bottom) 2, s (a directory: every layer) 2,
    # c (top) 1
    assert counts["dirent_layers"] == 1 + 2 + 2 + 1


def test_check_prices_remeasured_held_out_workloads_with_the_given_calibration():
    """``calibrate --check``: held-out workloads timed on the real overlay, priced with the
    shipped parameters as they are; the row's error is what its two figures say."""
    from simulator.fidelity.calibrate import check

    try:
        rows = check(default_calibration(), ["overlay"], repeats=1, held_out=["append-log:files=2,appends=50"])
    except BackendUnavailable as exc:
        pytest.skip(f"real overlay backend unavailable: {exc}")
    (row,) = rows
    assert row["driver"] == "overlay" and row["real_seconds"] > 0 and row["est_seconds"] > 0
    assert row["rel_error"] == pytest.approx(abs(row["est_seconds"] - row["real_seconds"]) / row["real_seconds"])
