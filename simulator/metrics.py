"""The SPEC section 5 metrics: the counters a run accumulates and how they become a record.

Everything is an exact integer except the ratios, the depth mean and the timings.  A value
that means nothing for a driver is ``None`` (JSON ``null``), never 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

METRIC_KEYS = (
    "ops", "failed_ops", "written_bytes", "read_bytes",
    "copyup_count", "copyup_meta_count", "copyup_bytes", "cow_blocks",
    "whiteouts", "opaque_dirs",
    "container_files", "container_data_bytes", "container_alloc_bytes",
    "image_physical_bytes", "container_physical_bytes", "physical_bytes",
    "ideal_bytes", "space_amplification",
    "device_write_bytes", "write_amplification",
    "lookups", "lookup_depth_mean", "lookup_depth_p50", "lookup_depth_p99", "lookup_depth_max",
    "page_cache_bytes", "commit_bytes", "commit_files_scanned",
    "est_seconds", "sim_seconds", "sim_peak_rss_bytes",
)


@dataclass
class Tally:
    """What the hooks accumulate while a workload runs (all drivers share one shape).

    The ``*_ops``, ``probes`` (lookups beyond the depth histogram's), ``remounts`` and
    ``perm_checks`` fields are event counts the cost model prices.
    """

    copyup_count: int = 0
    copyup_meta_count: int = 0
    copyup_bytes: int = 0
    device_write_bytes: int = 0
    commit_bytes: int = 0
    commit_files_scanned: int = 0
    metadata_ops: int = 0
    fsyncs: int = 0
    probes: int = 0
    commits: int = 0
    cow_copy_bytes: int = 0  # block drivers: bytes read-modify-written (also in copyup_bytes)
    remounts: int = 0  # mount(2) calls beyond one per container mount (aufs append: remounts)
    perm_checks: int = 0  # permission checks beyond one per directory walked (aufs without dirperm1)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Space:
    """What a driver reports about its storage at the end of a run (state, not history)."""

    whiteouts: int | None
    opaque_dirs: int | None
    container_files: int
    container_data_bytes: int
    container_alloc_bytes: int
    image_physical_bytes: int
    container_physical_bytes: int
    page_cache_bytes: int
    cow_blocks: int | None = None


def depth_stats(hist: Counter) -> dict[str, float | int | None]:
    """Mean, nearest-rank p50 and p99, and max of a histogram ``{depth: count}``."""
    n = sum(hist.values())
    if not n:
        return {"lookup_depth_mean": None, "lookup_depth_p50": None,
                "lookup_depth_p99": None, "lookup_depth_max": None}
    ordered = sorted(hist.items())

    def rank(p: int) -> int:
        target = -(-p * n // 100)  # nearest rank: ceil(p/100 * n)
        seen = 0
        for depth, count in ordered:
            seen += count
            if seen >= target:
                return depth
        return ordered[-1][0]

    return {
        "lookup_depth_mean": sum(d * c for d, c in ordered) / n,
        "lookup_depth_p50": rank(50),
        "lookup_depth_p99": rank(99),
        "lookup_depth_max": ordered[-1][0],
    }


def ratio(num: int, den: int) -> float | None:
    return num / den if den else None
