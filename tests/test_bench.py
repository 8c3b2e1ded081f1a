"""``layerbench bench``: it runs, and its JSON is pytest-benchmark's schema with our figures.

No timing is asserted (speed is for benchmarks, never tests): only that every figure the
issue asks for is there, of the right kind, and that the document has the fields
``pytest-benchmark compare`` reads.
"""

from __future__ import annotations

import json
import re

from simulator.cli import main

SUMMARY_KEYS = ("min_ops_per_second", "median_ops_per_second", "trace_ops_per_second", "depth_ratio",
                "bytes_per_file", "tree_bytes_per_file", "containers_bytes")
STATS_KEYS = ("min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "ops", "total")


def test_bench_quick_json(capsys, tmp_path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", "--driver", "overlay", "--driver", "vfs", "--output", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == doc
    for key in ("machine_info", "commit_info", "benchmarks", "datetime", "version"):
        assert key in doc
    summary = doc["layerbench_summary"]
    for key in SUMMARY_KEYS:
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, key
    groups = {b["group"] for b in doc["benchmarks"]}
    assert groups == {"throughput", "trace", "depth", "memory", "fleet", "campaign"}
    campaign = {b["params"]["jobs"]: b for b in doc["benchmarks"] if b["group"] == "campaign"}
    assert sorted(campaign) == [1, 2] and all(b["extra_info"]["cells"] == 48 for b in campaign.values())
    ratio = campaign[2]["extra_info"]["jobs_ratio"]
    assert ratio == summary["campaign_jobs_ratio"] and campaign[2]["extra_info"]["cpu_bound_ratio"] > 0
    assert ratio == round(campaign[1]["stats"]["min"] / campaign[2]["stats"]["min"], 3)
    assert summary["campaign_seconds_jobs2"] == campaign[2]["stats"]["min"]
    for b in campaign.values():
        e = b["extra_info"]
        assert b["options"]["timer"] == "time.perf_counter" and len(e["load_average"]) == b["stats"]["rounds"]
        assert e["cpu_seconds"] > 0
        assert abs(e["cpu_seconds"] - e["parent_cpu_seconds"] - e["workers_cpu_seconds"]) <= 0.011  # rounding
    assert {b["params"]["driver"] for b in doc["benchmarks"] if b["group"] == "depth"} == {"overlay", "vfs"}
    fleet = {b["params"]["driver"]: b["extra_info"] for b in doc["benchmarks"] if b["group"] == "fleet"}
    assert sorted(fleet) == ["overlay", "vfs"]
    for e in fleet.values():
        # 100 replicas of read-startup; each keeps what it looked up and read: more than nothing
        assert e["containers"] == 100 and e["ops"] % 100 == 0 and e["ops"] > 0
        assert e["bytes_per_container"] > 0 and e["finished_bytes_per_container"] > 0
        assert e["peak_rss_bytes"] >= max(e["rss_bytes"], e["replayed_rss_bytes"]) > e["input_rss_bytes"]
    assert summary["fleet_peak_rss_bytes"] == max(e["peak_rss_bytes"] for e in fleet.values())
    replays = [b for b in doc["benchmarks"] if b["group"] == "throughput"]
    assert {b["params"]["driver"] for b in replays} == {"overlay", "vfs"}
    for b in doc["benchmarks"]:
        assert all(k in b["stats"] for k in STATS_KEYS)
        assert b["stats"]["min"] <= b["stats"]["mean"] <= b["stats"]["max"]
    for b in replays:
        assert b["extra_info"]["ops_per_second"] == round(b["extra_info"]["ops"] / b["stats"]["min"])


def test_bench_text_names_each_target_and_judges_only_figures_at_its_scale(monkeypatch) -> None:
    from simulator import benchreport
    from simulator.bench import QUICK, run_bench
    from simulator.benchwall import CAMPAIGN_QUICK

    results = run_bench(quick=True, drivers=["overlay"])
    text = benchreport.format_results(results)
    for phrase in ("ops/s", "trace parse+replay", "depth ratio", "bytes per file entry", "containers",
                   "fleet:", "containers starting up",
                   "--jobs 2 over --jobs 1"):
        assert phrase in text
    # --quick is a tenth of each target's scale: its figures are shown, not judged; the depth
    # ratio, a ratio of two images it builds alike, is
    memory = next(line for line in text.splitlines() if line.startswith("bytes per file entry"))
    assert memory.startswith("bytes per file entry of a 100,000-file image:")
    assert memory.endswith("(target <= 200 at 1,000,000 files: not measured at this scale)")
    verdicts = re.findall(r": (met|NOT met|not measured at this scale)\)", text)
    assert len(verdicts) == 7 and verdicts.count("not measured at this scale") == 6, verdicts
    depth = next(line for line in text.splitlines() if line.startswith("depth ratio"))
    assert depth.endswith(": met)") or depth.endswith(": NOT met)")
    # the same figures, were --quick's sizes the targets' own, are judged, each of them
    monkeypatch.setattr(benchreport, "FULL", QUICK)
    monkeypatch.setattr(benchreport, "CAMPAIGN_FULL", CAMPAIGN_QUICK["name"])
    monkeypatch.setattr(benchreport, "TARGET_MEMORY_FILES", QUICK.memory_files)
    judged = re.findall(r": (met|NOT met|not measured at this scale)\)", benchreport.format_results(results))
    assert len(judged) == 7 and "not measured at this scale" not in judged, judged


def test_bench_unknown_driver_exits_2(capsys) -> None:
    assert main(["bench", "--quick", "--driver", "nope"]) == 2
    assert "unknown driver" in capsys.readouterr().err
