"""Campaign charts (matplotlib, PNG): bars per metric, sweeps, and a driver-rank heatmap.

Each function takes the tidy DataFrame of ``load_results`` and returns a ``Figure``, so a
notebook can show the same chart the report embeds.  Conventions a storage engineer
expects: byte axes in KiB/MiB/GiB (binary), times in ms or s, a log scale when the values
shown span two decades or more, and error bars that are the standard deviation across seeds
(shown only where there is more than one seed).
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written headless; notebooks pick their own backend first

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import Formatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from ..units import format_bytes  # noqa: E402

LOG_SPAN = 100.0  # max/min of the positive values shown at which an axis turns logarithmic
PANEL_LOG_SPAN = 4.0  # ... and of a sweep panel's own: two doublings, so a log axis has two ticks
MAX_PANELS = 6  # facets per figure; more would be unreadable at report width
SWEEP_COLUMNS = 5  # panels per row in a sweep chart: wider stops being readable
BAR_METRICS = ("physical_bytes", "container_physical_bytes", "copyup_bytes", "device_write_bytes",
               "write_amplification", "space_amplification", "page_cache_bytes", "lookup_depth_mean", "est_seconds")
RANK_METRICS = ("est_seconds", "physical_bytes", "device_write_bytes")
SWEEP_METRICS = {  # which metrics a swept axis is about (matched on the axis name)
    "layers": ("lookup_depth_mean", "lookup_depth_max", "est_seconds"),
    "containers": ("physical_bytes", "page_cache_bytes"),
    "size": ("copyup_bytes", "device_write_bytes", "est_seconds"),
}
NO_RATIO = {"write_amplification": "; no bar where the workload wrote nothing (the ratio is null: metrics.ratio)"}
SWEEP_DEFAULT = ("physical_bytes", "est_seconds")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # big to small, so overlapping lines stay visible
LINESTYLES = ("-", "--", "-.", ":")
TITLES = {
    "physical_bytes": "Physical bytes on disk (image + containers)", "ideal_bytes": "Ideal bytes",
    "container_physical_bytes": "Container physical bytes", "image_physical_bytes": "Image physical bytes",
    "copyup_bytes": "Copy-up bytes", "device_write_bytes": "Bytes written to the device",
    "write_amplification": "Write amplification", "space_amplification": "Space amplification",
    "page_cache_bytes": "Page cache needed", "lookup_depth_mean": "Mean lookup depth",
    "lookup_depth_max": "Max lookup depth", "lookup_depth_p99": "p99 lookup depth", "est_seconds": "Estimated time",
    "cow_blocks": "CoW blocks allocated", "copyup_count": "Files copied up", "container_alloc_bytes": "Allocated bytes",
}


@dataclass(frozen=True)
class Chart:
    path: Path
    title: str
    caption: str


def unit_of(column: str) -> str:
    if column.endswith("_bytes") or re.search(r"(size|length|bytes)$", column):
        return "bytes"
    if column.endswith("_seconds"):
        return "seconds"
    if column.endswith("_amplification"):
        return "ratio"
    if column.startswith("lookup_depth") or column.endswith("layers"):
        return "layers"
    return "count"


UNIT_LABELS = {"bytes": "bytes", "seconds": "seconds", "ratio": "ratio (×)", "layers": "layers", "count": "count"}


def axis_label(column: str) -> str:
    """``image.layers`` -> 'image layers'; ``workload.size`` -> 'workload size (bytes)'."""
    unit = unit_of(column)
    if "." in column or column == "containers":
        name = column.replace(".", " ").replace("_", " ")
        return name if unit in ("layers", "count") else f"{name} ({UNIT_LABELS[unit]})"
    return UNIT_LABELS[unit] if column in TITLES else f"{column.replace('_', ' ')} ({UNIT_LABELS[unit]})"


BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _byte_scale(vmin: float, vmax: float) -> int:
    """Power of 1024 a linear byte axis is shown in: at least 4 units at the top (no '0.8 MiB')."""
    k = 0
    while max(abs(vmin), abs(vmax)) / 1024 ** k >= 4 * 1024 and k < len(BYTE_UNITS) - 1:
        k += 1
    return k


class BytesLocator(MaxNLocator):
    """Linear ticks at round numbers of the binary unit the axis is shown in (200 KiB, not 195 KiB)."""

    def tick_values(self, vmin: float, vmax: float):  # type: ignore[override]
        scale = 1024 ** _byte_scale(vmin, vmax)
        return np.asarray(super().tick_values(vmin / scale, vmax / scale)) * scale


class BytesFormatter(Formatter):
    """Tick labels in the axis's one binary unit (linear) or each tick's own (log)."""

    def __call__(self, x: float, pos: Any = None) -> str:
        if self.axis is not None and self.axis.get_scale() == "log":
            return format_bytes(x) if x >= 1 else ""
        vmin, vmax = self.axis.get_view_interval() if self.axis is not None else (0, x)
        k = _byte_scale(vmin, vmax)
        return f"{x / 1024 ** k:g} {BYTE_UNITS[k]}" if x else "0"


def _seconds(v: float, _pos: Any = None) -> str:
    if v == 0:
        return "0"
    return f"{v * 1e6:.3g} µs" if v < 1e-3 else f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def _span(values: np.ndarray) -> float:
    """Largest over smallest of the positive values (1 where fewer than two)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.max() / positive.min()) if positive.size > 1 else 1.0


def format_axis(ax: Any, which: str, column: str, values: np.ndarray, panel: np.ndarray | None = None) -> None:
    """Units, human-readable ticks, and a log scale where the values span decades.  ``panel``:
    this panel's own values, where panels scale apart: it stays linear unless they span
    ``PANEL_LOG_SPAN`` too (one value and zeros on a log axis showed a single tick)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    log = _span(values) >= LOG_SPAN and (panel is None or _span(panel) >= PANEL_LOG_SPAN)
    if log and which == "y" and not any(v > 0 for line in ax.get_lines()
                                        for v in np.asarray(line.get_ydata(), float).ravel()) \
            and not any(p.get_height() > 0 for p in ax.patches):
        log = False  # this panel has nothing positive to show on a log axis
    unit = unit_of(column)
    if log:
        base = 2 if unit in ("bytes", "layers", "count") else 10
        (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
        axis.set_major_locator(LogLocator(base=base, numticks=6 if which == "x" else 9))  # x labels are wide
        axis.set_minor_formatter(NullFormatter())
        if unit != "bytes":
            axis.set_major_formatter(FuncFormatter(_seconds if unit == "seconds" else lambda v, _p: f"{v:g}"))
    elif unit == "bytes":
        axis.set_major_locator(BytesLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    elif unit in ("layers", "count") and not log:
        axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    if unit == "bytes":
        axis.set_major_formatter(BytesFormatter())
    elif unit == "seconds" and not log:
        axis.set_major_formatter(FuncFormatter(_seconds))


def _stats(df: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    values = df[keys + [metric]].copy()
    values[metric] = pd.to_numeric(values[metric], errors="coerce").astype(float)
    grouped = values.groupby(keys, observed=True, sort=False)[metric]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _facets(df: pd.DataFrame, columns: list[str], limit: int | None = MAX_PANELS) -> list[tuple[str, pd.DataFrame]]:
    varying = [c for c in columns if c in df.columns and df[c].nunique(dropna=False) > 1]
    if not varying:
        return [("", df)]
    groups = df.groupby(varying, observed=True, sort=False)
    out = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(f"{c} {k}" if c == "containers" else str(k) for c, k in zip(varying, key)), part))
    return out[:limit]


def plot_bars(df: pd.DataFrame, metric: str) -> Figure:
    """Grouped bars: workloads along x, one bar per driver; one panel per image (and container count)."""
    facets = _facets(df, ["image", "containers"])
    drivers = list(dict.fromkeys(df["driver"].astype(str)))
    workloads = list(dict.fromkeys(df["workload"].astype(str)))
    width = min(16.0, 1.5 + len(workloads) * (0.22 * len(drivers) + 0.5))
    ncols = 2 if width < 8 and len(facets) > 1 else 1
    nrows = -(-len(facets) // ncols)
    width = max(width, 6.0) * ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.0 * nrows + 1.2), squeeze=False)
    for ax in axes.flat[len(facets):]:
        ax.set_visible(False)
    colors = plt.get_cmap("tab10")
    bar_w = 0.8 / max(1, len(drivers))
    facet_keys = [c for c in ("image", "containers") if c in df.columns]
    all_values = _stats(df, facet_keys + ["workload", "driver"], metric)["mean"].to_numpy()  # what is drawn
    for ax, (title, part) in zip(axes.flat, facets):
        stats = _stats(part.assign(driver=part["driver"].astype(str), workload=part["workload"].astype(str)),
                       ["workload", "driver"], metric)
        for i, driver in enumerate(drivers):
            s = stats[stats["driver"] == driver].set_index("workload").reindex(workloads)
            x = np.arange(len(workloads)) + (i - (len(drivers) - 1) / 2) * bar_w
            err = np.where(s["count"].fillna(0) > 1, s["std"], np.nan)
            ax.bar(x, s["mean"], bar_w, yerr=err, capsize=2, label=driver, color=colors(i % 10),
                   error_kw={"elinewidth": 0.8})
            for at in x[(s["mean"] == 0).to_numpy()]:  # a bar of height 0 (none on a log axis): say so
                ax.annotate("0", (at, 0), xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color=colors(i % 10))
        ax.set_xticks(np.arange(len(workloads)), workloads, rotation=25, ha="right")
        ax.set_ylabel(axis_label(metric))
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        format_axis(ax, "y", metric, all_values)
    fig.suptitle(TITLES.get(metric, metric), x=0.01, ha="left", fontweight="bold")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, title="driver", fontsize=8, ncols=min(len(drivers), 6), loc="upper right",
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    return fig


def swept_axes(df: pd.DataFrame) -> list[str]:
    """Numeric axes that take more than one value: candidates for the x of a line chart."""
    out = []
    for col in df.columns:
        if col == "containers" or col.startswith(("image.", "workload.", "opt.")):
            values = df[col].dropna()
            if values.nunique() > 1 and pd.api.types.is_numeric_dtype(values) \
                    and not pd.api.types.is_bool_dtype(values):
                out.append(col)
    return out


def sweep_metrics(axis: str) -> tuple[str, ...]:
    name = axis.split(".")[-1]
    for key, metrics in SWEEP_METRICS.items():
        if key in name or (key == "size" and name in ("length", "bytes")):
            return metrics
    return SWEEP_DEFAULT


def _without(label: str, param: str) -> str:
    """A campaign's image or workload label without one parameter: ``deep[layers=4,size=4096]``
    less ``size`` is ``deep[layers=4]`` (``campaign.spec``'s labels name the swept values)."""
    name, bracket, inner = label.partition("[")
    if not bracket or not inner.endswith("]"):
        return label
    kept = [kv for kv in re.split(r",(?=[\w.-]+=)", inner[:-1]) if kv.partition("=")[0] != param]
    return f"{name}[{','.join(kept)}]" if kept else name


def plot_sweep(df: pd.DataFrame, axis: str, metric: str) -> Figure:
    """``metric`` against the swept ``axis``, one line per driver (mean ± std over seeds).

    Zeros are said, not left for the eye to miss: a panel names the drivers at 0 throughout
    (on a log axis their lines cannot be drawn), and a panel where every driver is at 0 is
    not drawn but listed under the figure (an axis of nothing but zeros has no scale to
    show: it read "0.02 B")."""
    # Never average over an axis the chart does not show: one panel per image and workload,
    # each named without the swept parameter (its values are the x axis, not panels).
    part_df = df[df[axis].notna()]
    kind, _, param = axis.partition(".")
    if kind in ("image", "workload") and param:
        part_df = part_df.assign(**{kind: part_df[kind].astype(str).map(lambda label: _without(label, param))})
    facet_by = ["image", "workload"]
    drivers = list(dict.fromkeys(part_df["driver"].astype(str)))
    panels = [(title, _stats(part.assign(driver=part["driver"].astype(str)), ["driver", axis], metric))
              for title, part in _facets(part_df, facet_by, limit=None)]  # a grid of small panels: show them all
    drawn = [bool((stats["mean"].fillna(0) != 0).any()) for _, stats in panels]
    if not any(drawn):  # nothing but zeros anywhere: draw them all rather than nothing
        drawn = [True] * len(panels)
    shown = [panel for panel, draw in zip(panels, drawn) if draw]
    blank = [title for (title, _), draw in zip(panels, drawn) if not draw]
    nrows = -(-len(shown) // SWEEP_COLUMNS)
    ncols = -(-len(shown) // nrows)  # rows as full as each other: 6 panels are 2 rows of 3, not 5 and 1
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.5, 3.6 * nrows + 0.3 * bool(blank)), squeeze=False)
    for ax in grid.flat[len(shown):]:
        ax.set_visible(False)
    colors = plt.get_cmap("tab10")
    x_all = pd.to_numeric(part_df[axis]).astype(float).to_numpy()
    y_all = pd.to_numeric(part_df[metric], errors="coerce").astype(float).to_numpy()
    handles: dict[str, Any] = {}
    for ax, (title, stats) in zip(grid.flat, shown):
        at_zero = []
        for i, driver in enumerate(drivers):
            s = stats[stats["driver"] == driver].sort_values(axis)
            if s["mean"].notna().any():
                if (s["mean"].fillna(0) == 0).all():
                    at_zero.append(driver)
                handles.setdefault(driver, ax.errorbar(
                    s[axis].astype(float), s["mean"], yerr=np.where(s["count"] > 1, s["std"], np.nan),
                    marker=MARKERS[i % len(MARKERS)], ms=max(3.0, 9.0 - 1.2 * i), capsize=2,
                    linestyle=LINESTYLES[i % len(LINESTYLES)], label=driver, color=colors(i % 10), alpha=0.9))
        ax.set_xlabel(axis_label(axis))
        ax.set_ylabel(axis_label(metric))
        ax.set_title(title + (f"\n0 on {', '.join(at_zero)}" if at_zero else ""), fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        format_axis(ax, "x", axis, x_all)
        format_axis(ax, "y", metric, y_all, stats["mean"].to_numpy(dtype=float))
    ordered = [d for d in drivers if d in handles]
    grid[0, -1].legend([handles[d] for d in ordered], ordered, title="driver", fontsize=8, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{TITLES.get(metric, metric)} vs {axis_label(axis).split(' (')[0]}", x=0.01, ha="left",
                 fontweight="bold")
    bottom = 0.0
    if blank:
        note = textwrap.fill("0 on every driver (not drawn): " + "; ".join(blank), width=int(fig.get_figwidth() * 15))
        fig.text(0.01, 0.05 / fig.get_figheight(), note, fontsize=9, color="0.3", va="bottom")
        bottom = (0.25 + 0.16 * note.count("\n")) / fig.get_figheight()  # inches of 9-point lines
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def driver_ranks(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rank of each driver per workload (1 = least), averaged over images and container counts."""
    keys = [c for c in ("image", "containers", "workload") if c in df.columns]
    means = _stats(df.assign(driver=df["driver"].astype(str), workload=df["workload"].astype(str)),
                   keys + ["driver"], metric).dropna(subset=["mean"])
    means["rank"] = means.groupby(keys, observed=True)["mean"].rank(method="min")
    table = means.groupby(["driver", "workload"], sort=False)["rank"].mean().unstack("workload")
    drivers = [d for d in dict.fromkeys(df["driver"].astype(str)) if d in table.index]
    workloads = [w for w in dict.fromkeys(df["workload"].astype(str)) if w in table.columns]
    return table.loc[drivers, workloads]


def plot_rank_heatmap(df: pd.DataFrame, metric: str) -> Figure:
    ranks = driver_ranks(df, metric)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.8 + 0.9 * ranks.shape[1]), 1.8 + 0.45 * ranks.shape[0]))
    image = ax.imshow(ranks.to_numpy(dtype=float), cmap="RdYlGn_r", vmin=1, vmax=max(2, len(ranks)), aspect="auto")
    for (r, c), value in np.ndenumerate(ranks.to_numpy(dtype=float)):
        if not math.isnan(value):
            ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(ranks.shape[1]), ranks.columns, rotation=30, ha="right")
    ax.set_yticks(range(ranks.shape[0]), ranks.index)
    ax.set_xlabel("workload")
    fig.colorbar(image, ax=ax, label="rank (1 = least)")
    fig.suptitle(f"Driver rank per workload: {TITLES.get(metric, metric).lower()}", x=0.01, ha="left",
                 fontweight="bold")
    fig.tight_layout()
    return fig


def _useful(df: pd.DataFrame, metric: str) -> bool:
    if metric not in df.columns:
        return False
    values = pd.to_numeric(df[metric], errors="coerce").dropna()
    return bool(len(values)) and bool((values != 0).any())


def _sentence(note: str | None) -> str:
    return f" Note: {note}." if note else ""


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_charts(df: pd.DataFrame, charts_dir: Path) -> list[Chart]:
    """Every chart the report shows, as PNG files in ``charts_dir``."""
    charts_dir.mkdir(parents=True, exist_ok=True)
    for old in charts_dir.glob("*.png"):
        old.unlink()
    out: list[Chart] = []
    if df.empty:
        return out
    seeds = df["seed"].nunique() if "seed" in df.columns else 1
    spread = f"mean of {seeds} seeds, error bars: standard deviation" if seeds > 1 else "one seed"
    from ..calibration import uncalibrated_note  # campaigns price est_seconds with the shipped calibration

    notes = {"est_seconds": uncalibrated_note(list(dict.fromkeys(df["driver"].astype(str))))}
    for metric in BAR_METRICS:
        if _useful(df, metric):
            path = charts_dir / f"bars-{metric}.png"
            _save(plot_bars(df, metric), path)
            undefined = NO_RATIO.get(metric, "")
            out.append(Chart(path, TITLES.get(metric, metric), f"{axis_label(metric)} per workload; {spread}; a 0 in "
                             f"a bar's place marks a value of 0{undefined}." + _sentence(notes.get(metric))))
    for axis in swept_axes(df):
        for metric in sweep_metrics(axis):
            if _useful(df, metric):
                path = charts_dir / f"sweep-{axis.replace('.', '-')}-{metric}.png"
                _save(plot_sweep(df, axis, metric), path)
                out.append(Chart(path, f"{TITLES.get(metric, metric)} vs {axis}",
                                 f"{spread}." + _sentence(notes.get(metric))))
    if df["driver"].nunique() > 1:
        for metric in RANK_METRICS:
            if _useful(df, metric):
                path = charts_dir / f"rank-{metric}.png"
                _save(plot_rank_heatmap(df, metric), path)
                out.append(Chart(path, f"Driver rank by {metric}", "Rank of the mean over seeds within each "
                                 "workload, image and container count (1 = least), averaged over images and counts."
                                 + _sentence(notes.get(metric))))
    return out
