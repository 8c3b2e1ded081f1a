"""Running campaigns: one row per cell, every metric, failures retried, resume, Dask, compare, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from drivers import driver_names
from simulator import METRIC_KEYS, load_results, run_campaign, run_cell
from simulator.campaign import compare_campaigns, load_campaign
from simulator.campaign.spec import builtin_campaign_path
from simulator.cli import main
from workloads.builtin import WORKLOADS

# Two drivers x (demo workload + a trace that needs 2 containers) x containers [1, 2] x seeds [0, 1].
SMALL = """
name = "small"
seeds = [0, 1]
containers = [1, 2]

[[images]]
name = "demo"

[[drivers]]
name = "overlay"

[[drivers]]
name = "vfs"

[[workloads]]
name = "demo"

[[workloads]]
trace = "two.jsonl"
label = "two-containers"
"""
# Container 1 does not exist in a one-container cell: the harness refuses the trace (BadInput),
# so the c1 cells of this workload fail and the c2 cells succeed.
TWO = '{"op": "create", "path": "/x", "size": 5000}\n{"op": "append", "path": "/etc/passwd", "length": 10, "container": 1}\n'
TIMINGS = ("sim_seconds", "sim_peak_rss_bytes")


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    (tmp_path / "two.jsonl").write_text(TWO)
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def deterministic(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=list(TIMINGS)).sort_values("cell_id").reset_index(drop=True)


def test_results_one_row_per_done_cell_with_every_metric_and_failures_kept_apart(small, tmp_path):
    out = run_campaign(small, tmp_path / "out", jobs=2, report=False, progress=None)
    campaign = load_campaign(small)
    assert len(campaign.cells) == 1 * 2 * 2 * 2 * 2 == 16
    df = load_results(out)
    failed = [c for c in campaign.cells if c.workload.label == "two-containers" and c.containers == 1]
    assert len(failed) == 2 * 2  # two drivers x two seeds
    assert len(df) == 16 - 4 and df["cell_id"].is_unique
    assert set(df["cell_id"]) == {c.id for c in campaign.cells} - {c.id for c in failed}
    assert list(df.columns[-len(METRIC_KEYS) - 1:-1]) == list(METRIC_KEYS)
    assert str(df["physical_bytes"].dtype) == "Int64" and str(df["space_amplification"].dtype) == "Float64"
    assert isinstance(df["driver"].dtype, pd.CategoricalDtype)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["cell_id"] for f in failures) == sorted(c.id for c in failed)
    assert all(f["error_type"] == "BadInput" and f["attempt"] == 1 for f in failures)
    assert len(list((out / "cells").glob("*.parquet"))) == 12  # failures are never cached as done
    # Each row is what run_cell gives for the same inputs (the campaign adds no arithmetic of its own).
    cell = next(c for c in campaign.cells if c.workload.label == "two-containers" and c.containers == 2)
    direct = run_cell(cell.runner_cell())["metrics"]
    row = df.set_index("cell_id").loc[cell.id]
    assert {k: row[k] for k in METRIC_KEYS if k not in TIMINGS and direct[k] is not None} == \
        {k: v for k, v in direct.items() if k not in TIMINGS and v is not None}
    assert direct["written_bytes"] == 5000 + 10  # create 5000 bytes + append 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cells"] == {"total": 16, "done": 12, "failed": 4} and manifest["status"] == "incomplete"
    for key in ("packages", "python", "kernel", "cpu", "git_commit"):
        assert key in manifest["provenance"]
    assert manifest["campaign"]["text"] == SMALL and manifest["runs"][0]["finished"]

    # A rerun computes nothing that is done, and retries the failures (attempt 2).
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}
    run_campaign(small, out, jobs=1, report=False, progress=None)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")} == before
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 4 and all(f["attempt"] == 2 for f in failures)
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [(r["computed"], r["failed"]) for r in runs] == [(12, 4), (0, 4)]


def test_grid_order_and_executor_do_not_change_results(small, tmp_path):
    a = run_campaign(small, tmp_path / "a", jobs=2, report=False, progress=None)
    reordered = SMALL.replace("seeds = [0, 1]", "seeds = [1, 0]").replace('name = "vfs"', 'name = "vfs"\nlabel = "v"')
    (small.parent / "re.toml").write_text(reordered.replace('"overlay"\n\n[[drivers]]\nname = "vfs"',
                                                            '"vfs"\n\n[[drivers]]\nname = "overlay"'))
    b = run_campaign(small.parent / "re.toml", tmp_path / "b", jobs=1, report=False, progress=None)
    da, db = deterministic(load_results(a)), deterministic(load_results(b))
    assert (da["cell_id"] == db["cell_id"]).all()
    pd.testing.assert_frame_equal(da.drop(columns=["driver"]), db.drop(columns=["driver"]), check_categorical=False)
    comparison = compare_campaigns(a, b)
    assert comparison.equal and comparison.cells_compared == 12


def test_dask_local_cluster_gives_the_same_results_as_the_pool(small, tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'layerbench[dask]')")
    pool = run_campaign(small, tmp_path / "pool", jobs=2, report=False, progress=None)
    dask = run_campaign(small, tmp_path / "dask", jobs=2, dask="local", report=False, progress=None)
    pd.testing.assert_frame_equal(deterministic(load_results(pool)), deterministic(load_results(dask)))
    assert json.loads((dask / "manifest.json").read_text())["runs"][0]["executor"] == "dask local"
    assert sorted(json.loads(x)["cell_id"] for x in (dask / "failures.jsonl").read_text().splitlines()) == \
        sorted(json.loads(x)["cell_id"] for x in (pool / "failures.jsonl").read_text().splitlines())


def test_compare_reports_cells_and_metrics_that_differ(small, tmp_path):
    a = run_campaign(small, tmp_path / "a", jobs=2, report=False, progress=None)
    b = tmp_path / "b"
    b.mkdir()
    df = pq.read_table(a / "results.parquet").to_pandas()
    changed = df.iloc[1:].copy()  # drop the first cell, change one metric of the next
    changed.loc[changed.index[0], "physical_bytes"] += 4096
    changed.to_parquet(b / "results.parquet", index=False)
    result = compare_campaigns(a, b)
    assert result.only_a == [df["cell_id"].iloc[0]] and result.only_b == []
    assert [(d["cell_id"], d["metric"], d["b"] - d["a"]) for d in result.differences] == \
        [(df["cell_id"].iloc[1], "physical_bytes", 4096)]
    assert main(["compare", str(a), str(a)]) == 0
    assert main(["compare", str(a), str(b), "--json"]) == 1


def test_cli_bad_campaign_exit_2_and_writes_nothing(small, tmp_path, capsys):
    small.write_text(SMALL.replace('name = "vfs"', 'name = "vfss"'))
    out = tmp_path / "never"
    assert main(["campaign", str(small), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"layerbench: error: {small}:13: drivers[1].name: unknown driver 'vfss' "
                   f"(known: {', '.join(driver_names())})"]
    assert not out.exists()
    assert main(["campaign", str(tmp_path / "absent.toml")]) == 2
    assert main(["campaign", "nosuchbuiltin"]) == 2


def test_cli_refuses_a_directory_of_an_edited_campaign_unless_resume(small, tmp_path, capsys):
    out = tmp_path / "o"
    run_campaign(small, out, jobs=1, report=False, progress=None)
    small.write_text(SMALL.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    assert main(["campaign", str(small), "--out", str(out), "--no-report"]) == 2
    assert "different campaign file" in capsys.readouterr().err
    assert main(["campaign", str(small), "--out", str(out), "--no-report", "--resume"]) == 1  # c1 trace cells fail
    assert len(load_results(out)) == 18  # 24 cells, 6 of them fail; the 12 old ones were kept
    assert json.loads((out / "manifest.json").read_text())["runs"][-1]["computed"] == 6


def test_default_campaign_with_the_registered_drivers(tmp_path):
    """The built-in campaign (one image, seed and container count), restricted to what is registered."""
    raw = tomllib.loads(builtin_campaign_path("default").read_text())
    raw["drivers"] = [d for d in raw["drivers"] if d["name"] in driver_names()]
    raw["workloads"] = [w for w in raw["workloads"] if w["name"] in WORKLOADS]
    raw["seeds"], raw["containers"], raw["images"] = [0], [1], raw["images"][:1]  # keep the suite quick
    out = run_campaign(raw, tmp_path / "default", jobs=2, report=False, progress=None)
    df = load_results(out)
    assert len(df) == len(raw["drivers"]) * len(raw["workloads"]) * len(raw["images"])
    assert (out / "failures.jsonl").read_text() == ""
    assert set(METRIC_KEYS) <= set(df.columns)
    assert df["ops"].gt(0).all() and df["physical_bytes"].gt(0).all()


def test_console_command_runs_a_campaign_end_to_end(small, tmp_path):
    small.write_text(SMALL.split("[[workloads]]\ntrace")[0])  # the demo workload only: no failing cells
    proc = subprocess.run([sys.executable, "-m", "simulator", "campaign", str(small), "--out", str(tmp_path / "r"),
                           "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {(tmp_path / 'r' / 'report.html').resolve()}" in proc.stdout
    assert "small: 8/8 cells done, 0 failed" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "cells", "charts", "failures.jsonl", "manifest.json", "report.html", "results.parquet"]


def test_a_worker_killed_mid_chunk_loses_only_the_cell_it_was_computing(tmp_path, monkeypatch):
    """A worker SIGKILLed (as by the OOM killer) in the middle of a chunk of cells: the cells
    it finished are done, the one it was computing is failed (WorkerDied, retried next run),
    the rest of its chunk is computed by a new pool in the same run."""
    import os
    import signal

    import simulator.runner

    path = tmp_path / "k.toml"
    path.write_text(SMALL.split("[[workloads]]\ntrace")[0])  # demo only: 2 drivers x c1, c2 x s0, s1 = 8 cells
    campaign = load_campaign(path)
    victim = next(c for c in campaign.cells if c.driver.name == "vfs" and c.containers == 1 and c.seed == 0)
    doomed = victim.runner_cell()
    real_run_cell = simulator.runner.run_cell

    def run_cell(cell, *args, **kwargs):
        if (cell.driver, cell.containers, cell.seed) == (doomed.driver, doomed.containers, doomed.seed):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(simulator.runner, "run_cell", run_cell)  # forked workers inherit it
    out = run_campaign(path, tmp_path / "killed", jobs=1, report=False, progress=None)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["cell_id"], f["error_type"]) for f in failures] == [(victim.id, "WorkerDied")]
    assert sorted(p.stem for p in (out / "cells").glob("*")) == sorted(c.digest for c in campaign.cells if c != victim)
    assert json.loads((out / "manifest.json").read_text())["runs"][0] | {"started": 0, "finished": 0} == \
        {"started": 0, "finished": 0, "executor": "local pool, 1 processes", "computed": 7, "failed": 1}

    monkeypatch.setattr(simulator.runner, "run_cell", real_run_cell)
    run_campaign(path, out, jobs=2, report=False, progress=None)
    straight = run_campaign(path, tmp_path / "straight", jobs=2, report=False, progress=None)
    comparison = compare_campaigns(straight, out)
    assert comparison.equal and comparison.cells_compared == 8


def test_consolidating_joins_cell_files_as_pandas_concat_of_each_would():
    """``results._concat`` (Arrow) against ``pd.concat`` of each file's frame, the way it was
    done before: missing columns, nulls, and types that disagree between cells."""
    import pyarrow as pa

    from simulator.campaign.results import _concat, _nullable, _order_columns, _tidy

    cases = {
        "missing columns": [pa.table({"cell_id": ["a"], "image.x": [1], "z": [True]}),
                            pa.table({"cell_id": ["b"], "image.y": ["s"]})],
        "a null metric": [pa.table({"cell_id": ["a"], "m": pa.array([None], type=pa.int64())}),
                          pa.table({"cell_id": ["b"], "m": [3]})],
        "int and text": [pa.table({"cell_id": ["a"], "workload.x": [1]}),
                         pa.table({"cell_id": ["b"], "workload.x": ["q"]})],
        "int and float": [pa.table({"cell_id": ["a"], "image.x": [1]}), pa.table({"cell_id": ["b"], "image.x": [2.5]})],
        "bool and int": [pa.table({"cell_id": ["a"], "opt.x": [True]}), pa.table({"cell_id": ["b"], "opt.x": [3]})],
    }
    expected_types = {"missing columns": {"image.x": "Int64", "image.y": "string", "z": "boolean"},
                      "a null metric": {"m": "Int64"}, "int and text": {"workload.x": "string"},
                      "int and float": {"image.x": "Float64"}, "bool and int": {"opt.x": "string"}}
    for case, tables in cases.items():
        before = _order_columns(_tidy(pd.concat([t.to_pandas(types_mapper=_nullable) for t in tables],
                                                ignore_index=True)))
        now = _order_columns(_tidy(_concat(tables)))
        pd.testing.assert_frame_equal(now, before)
        assert {k: str(v) for k, v in now.dtypes.items() if k != "cell_id"} == expected_types[case], case


def test_a_chunk_stops_at_its_first_failed_cell(small, tmp_path):
    """``execute_chunk`` (a pool worker's task): cells before a failure are written, the failed
    one is reported, the cells after it come back not run (the coordinator queues them again),
    so the first cell of a chunk without a file is always the one its worker was on."""
    from simulator.campaign.execute import execute_chunk

    campaign = load_campaign(small)
    good = [c for c in campaign.cells if c.workload.label == "demo"]
    bad = next(c for c in campaign.cells if c.workload.label == "two-containers" and c.containers == 1)
    cells_dir = tmp_path / "cells"
    cells_dir.mkdir()
    outcomes = execute_chunk(str(cells_dir), [good[0], bad, good[1], good[2]])
    assert [(o["digest"], o.get("ok"), o.get("written"), o.get("ran", True)) for o in outcomes] == [
        (good[0].digest, True, True, True), (bad.digest, False, None, True),
        (good[1].digest, None, None, False), (good[2].digest, None, None, False)]
    assert outcomes[1]["error_type"] == "BadInput"
    assert sorted(p.name for p in cells_dir.iterdir()) == [f"{good[0].digest}.parquet"]
