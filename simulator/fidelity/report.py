"""Charts and the HTML section of a validation: the error table a person reads.

Reuses the campaign report's pieces (``simulator.report``: its stylesheet, sortable-table
script, value formatting and chart conventions) so a fidelity page looks and behaves like a
campaign page.  Two charts: a heatmap of the largest relative error per backend/option set
and metric (0 is printed as "exact"), and predicted ``est_seconds`` against the measured
``real_seconds`` on log axes with the ±25% band the calibration must meet.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from simulator.report.charts import _save, plt
from simulator.report.html import SCRIPT, STYLE, _cell
from simulator.units import format_bytes

ERROR_CHART = "fidelity-errors.png"
TIME_CHART = "fidelity-est-seconds.png"
TIME_BAND = 0.25  # the calibration's target: est_seconds within 25% of the measured time


def _label(driver: str, options: str, backend: str) -> str:
    """A row's name: the backend, the driver and its options as a person reads them (a flag
    set by its name, one turned off as ``=false``, sizes in binary units)."""
    flags = ",".join(_option(k, v) for k, v in json.loads(options).items())
    return f"{backend} ({driver}{' ' + flags if flags else ''})"


def _option(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return key if value else f"{key}=false"
    if key.endswith("_size") and isinstance(value, int):
        return f"{key}={format_bytes(value)}"
    return f"{key}={value}"


def plot_errors(summary) -> Any:
    """Heatmap: rows backend/options, columns metrics, cells the max relative error."""
    summary = summary.assign(row=[_label(d, o, b) for d, o, b in
                                  zip(summary["driver"], summary["options"], summary["backend"])])
    table = summary.pivot_table(index="row", columns="metric", values="max_rel_error", aggfunc="max")
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * table.shape[1] + 4), 0.45 * table.shape[0] + 1.8))
    shown = np.where(np.isnan(values), np.nan, np.log10(np.clip(values, 1e-4, None)))
    image = ax.imshow(shown, cmap="RdYlGn_r", vmin=-4, vmax=0, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isnan(v):
                ax.text(j, i, "exact" if v == 0 else f"{v:.1%}" if v >= 0.001 else f"{v:.1e}",
                        ha="center", va="center", fontsize=8)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=35, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    fig.colorbar(image, ax=ax, label="log10 max relative error")
    fig.suptitle("Simulator vs real: largest relative error per metric (blank: not observable)",
                 x=0.01, ha="left", fontweight="bold")
    fig.tight_layout()
    return fig


def plot_times(df) -> Any:
    """est_seconds (model) against real_seconds (measured), one point per case."""
    rows = df[df["metric"] == "est_seconds"]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for (driver, backend), part in rows.groupby(["driver", "backend"]):
        ax.scatter(part["real"] * 1e3, part["sim"] * 1e3, label=f"{backend} ({driver})", s=18)
    if len(rows):
        lo, hi = float(min(rows["real"].min(), rows["sim"].min())) * 1e3, \
            float(max(rows["real"].max(), rows["sim"].max())) * 1e3
        xs = np.geomspace(max(lo, 1e-3), hi, 50)
        ax.plot(xs, xs, color="k", lw=1)
        ax.fill_between(xs, xs * (1 - TIME_BAND), xs * (1 + TIME_BAND), color="grey", alpha=0.2,
                        label=f"±{TIME_BAND:.0%}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 1, 2, 5, 10, 20 ms: matplotlib's own labels of the
            # minor ticks read "3×10⁰4×10⁰" where two of them met
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax.set_xlabel("measured: container start + operations (ms)")
    ax.set_ylabel("est_seconds (ms)")
    fig.suptitle("Predicted vs measured time", x=0.01, ha="left", fontweight="bold")
    fig.tight_layout()
    return fig


def _table(frame) -> str:
    columns = list(frame.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for record in frame.astype(object).to_dict("records"):
        cells = []
        for c in columns:
            raw, shown = _cell(record[c], c)
            if c in ("max_rel_error", "mean_rel_error", "rel_error") and raw:
                shown = "exact" if float(raw) == 0 else f"{float(raw):.3%}"
            cells.append(f'<td class="t" data-v="{html.escape(raw)}">{html.escape(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def fidelity_section(result, summary, charts: list[str]) -> str:
    """The ``<section>`` a page embeds: charts, the summary table, skips and failures."""
    figures = "".join(f'<figure><img class="chart" src="{html.escape(c)}" alt="{html.escape(c)}"></figure>'
                      for c in charts)
    skipped = "".join(f"<li><code>{html.escape(b)}</code>: {html.escape(w)}</li>" for b, w in result.skipped.items())
    failed = "".join(f'<li class="fail"><code>{html.escape(f["backend"])}</code> '
                     f'{html.escape(json.dumps(f["case"], default=str))}: {html.escape(f["error"])}</li>'
                     for f in result.failures)
    return (f'<section id="fidelity"><h2>Fidelity: simulator vs real kernel</h2>'
            f"<p>{len(result.rows)} compared values in {result.seconds:.1f} s. Relative error = "
            f"|sim − real| / |real|; metrics a backend cannot observe are left out.</p>{figures}"
            f"<h3>Per backend, option set and metric</h3>{_table(summary)}"
            f"<h3>Backends not available here</h3><ul>{skipped or '<li>none</li>'}</ul>"
            f"<h3>Failed cases</h3><ul>{failed or '<li>none</li>'}</ul></section>")


def write_fidelity_page(result, out: Path) -> dict[str, Path]:
    """Charts under ``out/charts`` and ``out/fidelity.html``; their paths."""
    from .validate import summary as summarize

    charts_dir = out / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    df = result.frame()
    table = summarize(df)
    paths: dict[str, Path] = {}
    charts = []
    if not table.empty:
        _save(plot_errors(table), charts_dir / ERROR_CHART)
        paths["chart"] = charts_dir / ERROR_CHART
        charts.append(f"charts/{ERROR_CHART}")
        if (df["metric"] == "est_seconds").any():
            _save(plot_times(df), charts_dir / TIME_CHART)
            paths["time_chart"] = charts_dir / TIME_CHART
            charts.append(f"charts/{TIME_CHART}")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>layerbench fidelity</title>'
            f"<style>{STYLE}</style></head><body><h1>layerbench fidelity</h1>"
            f"{fidelity_section(result, table, charts)}<script>{SCRIPT}</script></body></html>\n")
    paths["html"] = out / "fidelity.html"
    tmp = out / ".tmp-fidelity.html"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(paths["html"])
    return paths
