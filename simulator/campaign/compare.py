"""``layerbench compare DIR_A DIR_B``: what changed between two campaigns, cell by cell.

Made for regression checks in CI: cells are matched by their id (not by row order), every
metric is compared, and the simulator's own timings (``sim_seconds``,
``sim_peak_rss_bytes``), which differ from run to run, are left out unless asked for.
Counts and bytes are exact, so the default tolerance is zero; ratios and times may be given
a relative tolerance (``--rtol``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..metrics import METRIC_KEYS
from .results import NONDETERMINISTIC, load_results

ID_COLUMNS = ("driver", "image", "workload", "containers", "seed")


@dataclass
class Comparison:
    cells_compared: int
    only_a: list[str]
    only_b: list[str]
    differences: list[dict[str, Any]] = field(default_factory=list)  # one per (cell, metric) that differs
    metrics: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_a or self.only_b or self.differences)

    def as_dict(self) -> dict[str, Any]:
        return {"equal": self.equal, "cells_compared": self.cells_compared, "only_a": self.only_a,
                "only_b": self.only_b, "metrics": self.metrics, "differences": self.differences}

    def summary(self) -> str:
        lines = [f"{self.cells_compared} cells in both, {len(self.only_a)} only in A, {len(self.only_b)} only in B; "
                 f"{len(self.differences)} metric values differ"]
        lines += [f"  only in A: {c}" for c in self.only_a[:20]]
        lines += [f"  only in B: {c}" for c in self.only_b[:20]]
        by_metric: dict[str, int] = {}
        for d in self.differences:
            by_metric[d["metric"]] = by_metric.get(d["metric"], 0) + 1
        if by_metric:
            lines.append("  differing cells per metric: " + ", ".join(f"{k} {v}" for k, v in by_metric.items()))
        for d in self.differences[:40]:
            rel = f" ({d['rel_diff']:+.3g})" if d["rel_diff"] is not None else ""
            lines.append(f"  {d['cell_id']}  {d['metric']}: {d['a']} -> {d['b']}{rel}")
        if len(self.differences) > 40:
            lines.append(f"  ... {len(self.differences) - 40} more (use --json)")
        return "\n".join(lines)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is getattr(__import__("pandas"), "NA")


def _plain(v: Any) -> Any:
    if _missing(v):
        return None
    return v.item() if hasattr(v, "item") else v


def _differs(a: Any, b: Any, rtol: float, atol: float) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) != _missing(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    return a != b


def compare_campaigns(dir_a: str | Path, dir_b: str | Path, metrics: Iterable[str] | None = None,
                      include_timings: bool = False, rtol: float = 0.0, atol: float = 0.0) -> Comparison:
    """Per-cell, per-metric differences between two campaign directories."""
    a, b = load_results(dir_a), load_results(dir_b)
    if metrics is None:
        present = [m for m in METRIC_KEYS if m in a.columns or m in b.columns]
        metrics = [m for m in present if include_timings or m not in NONDETERMINISTIC]
    metrics = list(metrics)
    rows_a = {r["cell_id"]: r for r in a.to_dict("records")}
    rows_b = {r["cell_id"]: r for r in b.to_dict("records")}
    common = [c for c in rows_a if c in rows_b]
    out = Comparison(len(common), [c for c in rows_a if c not in rows_b], [c for c in rows_b if c not in rows_a],
                     metrics=metrics)
    for cid in common:
        ra, rb = rows_a[cid], rows_b[cid]
        for m in metrics:
            va, vb = _plain(ra.get(m)), _plain(rb.get(m))
            if _differs(va, vb, rtol, atol):
                rel = (vb - va) / abs(va) if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va \
                    else None
                out.differences.append({"cell_id": cid, **{k: _plain(ra.get(k)) for k in ID_COLUMNS},
                                        "metric": m, "a": va, "b": vb, "rel_diff": rel})
    return out
