"""``layerbench bench``'s output: the headline figures against issue 7's targets, the text a
person reads, and the JSON document in pytest-benchmark's ``--benchmark-json`` layout
(machine_info, commit_info, benchmarks[] with stats and extra_info, datetime, version), so
that ``pytest-benchmark compare`` reads it next to ``benchmarks/``'s own runs."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .bench import (BENCH_JSON_VERSION, FULL, TARGET_BYTES_PER_FILE, TARGET_CAMPAIGN_JOBS_RATIO,
                    TARGET_CAMPAIGN_SECONDS, TARGET_CONTAINERS_BYTES, TARGET_DEPTH_RATIO, TARGET_MEMORY_FILES,
                    TARGET_OPS_PER_SECOND, TARGET_TRACE_OPS_PER_SECOND, Result)
from .benchwall import CAMPAIGN_FULL


def summary(results: list[Result]) -> dict[str, Any]:
    """The headline figures and whether each target is met."""
    replay = [r.extra["ops_per_second"] for r in results if r.group == "throughput"]
    out: dict[str, Any] = {"min_ops_per_second": min(replay), "median_ops_per_second": statistics.median(replay)}
    for r in results:
        if r.group == "trace":
            out["trace_ops_per_second"] = r.extra["ops_per_second"]
        elif r.group == "depth":
            out["depth_ratio"] = max(out.get("depth_ratio", 0), r.extra["depth_ratio"])
        elif r.name == "bytes-per-file-entry":
            out["bytes_per_file"] = r.extra["bytes_per_file"]
            out["tree_bytes_per_file"] = r.extra["tree_bytes_per_file"]
            out["workloads_bytes_per_file"] = r.extra["workloads_bytes_per_file"]
            out["walked_bytes_per_file"] = r.extra["walked_bytes_per_file"]
        elif r.group == "memory":
            out["containers_bytes"] = r.extra["bytes"]
        elif r.group == "fleet":
            out["fleet_peak_rss_bytes"] = max(out.get("fleet_peak_rss_bytes", 0), r.extra["peak_rss_bytes"])
        elif r.group == "campaign":
            out[f"campaign_seconds_jobs{r.params['jobs']}"] = min(r.times)
            if "jobs_ratio" in r.extra:
                out["campaign_jobs_ratio"] = r.extra["jobs_ratio"]
        elif r.group == "real":
            label = r.params["label"]
            out[f"real_ratio_{label}"] = r.extra["real_ratio"]
            out[f"real_ratio_end_to_end_{label}"] = r.extra["real_ratio_end_to_end"]
    return out


def _stats(times: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for ``times`` (its Stats.as_dict fields)."""
    data = sorted(times)
    n = len(data)
    mean = sum(data) / n
    q1, median, q3 = (statistics.quantiles(data, n=4, method="inclusive") if n > 1 else (data[0],) * 3)
    iqr = q3 - q1
    stddev = statistics.stdev(data) if n > 1 else 0.0
    return {"min": data[0], "max": data[-1], "mean": mean, "stddev": stddev, "rounds": n, "median": median,
            "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": sum(x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr for x in data),
            "stddev_outliers": sum(abs(x - mean) > stddev for x in data) if stddev else 0, "outliers": "0;0",
            "ld15iqr": min(x for x in data if x >= q1 - 1.5 * iqr),
            "hd15iqr": max(x for x in data if x <= q3 + 1.5 * iqr),
            "ops": 1 / mean if mean else 0.0, "total": sum(data), "iterations": 1}


def _commit_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"id": git("rev-parse", "HEAD"), "time": git("log", "-1", "--format=%cI"),
            "author_time": git("log", "-1", "--format=%aI"), "dirty": bool(git("status", "--porcelain", "-uno")),
            "project": "layerbench", "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def to_benchmark_json(results: list[Result], quick: bool) -> dict[str, Any]:
    """The document ``pytest --benchmark-json`` writes, with our figures in ``extra_info``."""
    uname = platform.uname()
    machine = {"node": uname.node, "processor": uname.processor, "machine": uname.machine,
               "python_compiler": platform.python_compiler(),
               "python_implementation": platform.python_implementation(),
               "python_implementation_version": platform.python_version(),
               "python_version": platform.python_version(), "python_build": list(platform.python_build()),
               "release": uname.release, "system": uname.system,
               "cpu": {"count": os.cpu_count(), "brand_raw": uname.processor or uname.machine},
               "load_average": list(os.getloadavg())}
    benchmarks = []
    for r in results:
        benchmarks.append({
            "group": r.group, "name": r.name, "fullname": f"layerbench bench::{r.name}",
            "params": r.params, "param": "-".join(str(v) for v in r.params.values()),
            "extra_info": r.extra, "options": {"timer": r.extra.get("timer", "time.process_time"),
                                               "rounds": len(r.times), "quick": quick},
            "stats": _stats(r.times)})
    return {"machine_info": machine, "commit_info": _commit_info(), "benchmarks": benchmarks,
            "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": BENCH_JSON_VERSION, "layerbench_summary": summary(results)}


def _verdict(ok: bool, at_scale: bool = True) -> str:
    """Whether a target is met; a figure taken at another scale than the target's (``--quick``:
    a tenth of it) is not judged against it."""
    return ("met" if ok else "NOT met") if at_scale else "not measured at this scale"


def format_results(results: list[Result]) -> str:
    """The figures as a person reads them, with each target and whether it is met."""
    lines = ["throughput (ops/s, CPU time, best round):"]
    for r in results:
        if r.group == "throughput":
            lines.append(f"  {r.params['driver']:<13} {r.params['workload']:<42} {r.extra['ops']:>9,} ops "
                         f"{r.extra['ops_per_second']:>12,}")
    s = summary(results)
    full_image = all(r.extra["image"] == FULL.image for r in results if r.group in ("throughput", "trace"))
    lines.append(f"  slowest {s['min_ops_per_second']:,} ops/s, median {s['median_ops_per_second']:,.0f} "
                 f"(target {TARGET_OPS_PER_SECOND:,} on {FULL.image}: "
                 f"{_verdict(s['min_ops_per_second'] >= TARGET_OPS_PER_SECOND, full_image)})")
    lines.append(f"trace parse+replay: {s['trace_ops_per_second']:,} ops/s (target {TARGET_TRACE_OPS_PER_SECOND:,}: "
                 f"{_verdict(s['trace_ops_per_second'] >= TARGET_TRACE_OPS_PER_SECOND, full_image)})")
    ratios = ", ".join(f"{r.params['driver']} {r.extra['depth_ratio']}" for r in results if r.group == "depth")
    lines.append(f"depth ratio (time/op, 128 layers over 1; aufs 126): worst {s['depth_ratio']} ({ratios}) "
                 f"(target <= {TARGET_DEPTH_RATIO}: {_verdict(s['depth_ratio'] <= TARGET_DEPTH_RATIO)})")
    memory = next(r for r in results if r.name == "bytes-per-file-entry")
    verdict = _verdict(s["bytes_per_file"] <= TARGET_BYTES_PER_FILE, memory.extra["image_files"] >= TARGET_MEMORY_FILES)
    lines.append(f"bytes per file entry of a {memory.extra['image_files']:,}-file image: {s['bytes_per_file']} "
                 f"image+tree, {s['tree_bytes_per_file']} tree, {s['workloads_bytes_per_file']} after building the "
                 f"workloads, {s['walked_bytes_per_file']} once every directory is listed "
                 f"(target <= {TARGET_BYTES_PER_FILE} at {TARGET_MEMORY_FILES:,} files: {verdict})")
    for r in results:
        if r.group == "memory" and r.name != "bytes-per-file-entry":
            by = ", ".join(f"{d} {b:,}" for d, b in r.extra["bytes_per_container_by_driver"].items())
            lines.append(f"{r.extra['containers']} containers: at most {r.extra['bytes'] / 2**20:,.1f} MiB of their own "
                         f"(B each: {by}); process RSS with {r.extra['containers']} overlay containers up, image "
                         f"included: {r.extra['total_rss_bytes'] / 2**20:,.0f} MiB (target: 1,000 on 100k files in 1 GiB)")
    fleet = [r for r in results if r.group == "fleet"]
    if fleet:
        e = fleet[0].extra
        lines.append(f"fleet: {e['containers']:,} containers starting up ({fleet[0].params['workload']}, "
                     f"{e['ops'] // e['containers']:,} ops each) on {fleet[0].params['image']}, peak RSS of the "
                     f"process, replay and metrics (RSS each container added by its replay, and with the "
                     f"metrics; replay ops/s, CPU time):")
        for r in fleet:
            e = r.extra
            lines.append(f"  {r.params['driver']:<13} {e['peak_rss_bytes'] / 2**20:>7,.0f} MiB  "
                         f"({e['bytes_per_container'] / 1024:,.0f} KiB a container, "
                         f"{e['finished_bytes_per_container'] / 1024:,.0f} with the metrics; {e['ops_per_second']:,} ops/s)")
        peak = s["fleet_peak_rss_bytes"]
        verdict = _verdict(peak <= TARGET_CONTAINERS_BYTES, fleet[0].extra["containers"] >= FULL.fleet_containers)
        lines.append(f"  worst {peak / 2**20:,.0f} MiB (target: 1,000 containers in "
                     f"{TARGET_CONTAINERS_BYTES / 2**30:g} GiB: {verdict})")
    for r in results:
        if r.group == "campaign":
            lines.append(format_campaign(r))
        if r.group == "real":
            e = r.extra
            full = (r.params["label"], r.params["image"], r.params["workload"]) in {c[:3] for c in FULL.real_cells}
            lines.append(f"{r.name} ({e['ops']:,} ops): operations real {e['real_seconds']:.3f} s / sim "
                         f"{e['sim_seconds']:.4f} s = {e['real_ratio']}x; end to end real "
                         f"{e['real_end_to_end_seconds']:.2f} s / sim {e['sim_end_to_end_seconds']:.3f} s = "
                         f"{e['real_ratio_end_to_end']}x (target {e['target_ratio']}x: operations "
                         f"{_verdict(e['real_ratio'] >= e['target_ratio'], full)}, end to end "
                         f"{_verdict(e['real_ratio_end_to_end'] >= e['target_ratio'], full)})")
    return "\n".join(lines)


def format_campaign(r: Result) -> str:
    """One campaign run's line; the ``--jobs 2`` one also says the ratio and both targets."""
    e, jobs = r.extra, r.params["jobs"]
    full = r.params["campaign"] == CAMPAIGN_FULL  # the targets are the default campaign's
    line = (f"campaign {r.params['campaign']} --jobs {jobs}: {min(r.times):.1f} s wall best of {len(r.times)} "
            f"({e['cells']} cells, {e['cells_per_second']:.1f} cells/s; CPU {e['cpu_seconds']:.1f} s = "
            f"{e['parent_cpu_seconds']:.1f} coordinator + {e['workers_cpu_seconds']:.1f} workers; other processes "
            f"{e['others_cpu_seconds']:.1f} s; load before each round {e['load_average']})")
    if "jobs_ratio" in e:
        line += (f"\n  --jobs {jobs} over --jobs 1: {e['jobs_ratio']}x throughput (rounds: {e['jobs_ratio_rounds']}; "
                 f"CPU {e['cpu_ratio']}x; {e['cpu_bound_ratio']}x with a core per process) "
                 f"(target >= {TARGET_CAMPAIGN_JOBS_RATIO}: "
                 f"{_verdict(e['jobs_ratio'] >= TARGET_CAMPAIGN_JOBS_RATIO, full)}); {min(r.times):.1f} s "
                 f"(target <= {TARGET_CAMPAIGN_SECONDS} s: {_verdict(min(r.times) <= TARGET_CAMPAIGN_SECONDS, full)})")
    return line
