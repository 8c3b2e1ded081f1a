"""``report.html``: one static page per campaign -- charts, a sortable table, provenance.

The page opens from the file system with no server: charts are relative ``charts/*.png``
links, the table sorts with a few lines of inline JavaScript (by the raw value, not the
formatted text), and nothing is fetched from the network.  Once every chart has loaded the
page sets ``data-charts-loaded="N/M"`` on ``<html>``, which the headless-Chromium test reads.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..metrics import METRIC_KEYS
from ..units import format_bytes

AXES = ("driver", "image", "workload", "containers", "seed")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{color:#555;font-size:13px}
.scroll{overflow-x:auto;max-height:70vh;border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;white-space:nowrap}
th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:right} th{position:sticky;top:0;background:#f4f4f4;
cursor:pointer;user-select:none} td.t,th.t{text-align:left} th.asc:after{content:" ▲"} th.desc:after{content:" ▼"}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:12px} .fail{color:#a00}
"""

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], rows = Array.from(body.rows);
    var asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' && y !== '') return 1; if (y === '' && x !== '') return -1;
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
function chartsLoaded() {
  var imgs = Array.from(document.querySelectorAll('img.chart'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.documentElement.dataset.chartsLoaded = ok + '/' + imgs.length;
}
window.addEventListener('load', chartsLoaded);
"""


def _cell(value: Any, column: str) -> tuple[str, str]:
    """(raw value for sorting, text shown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("<NA>", "nan"):
        return "", "–"
    if isinstance(value, bool):
        return str(value).lower(), str(value).lower()
    if isinstance(value, (int, float)):
        raw = repr(value)
        if column.endswith("_bytes") and value >= 1024:
            return raw, format_bytes(value)
        if column.endswith("_seconds"):
            return raw, f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
        if isinstance(value, float):
            return raw, f"{value:.4g}"
        return raw, f"{value:,}"
    return str(value), str(value)


def _table(df: Any) -> str:
    metrics = [m for m in METRIC_KEYS if m in df.columns]
    params = [c for c in df.columns if c.startswith(("opt.", "image.", "workload."))]
    columns = [c for c in AXES if c in df.columns] + params + metrics
    head = "".join(f'<th class="{"t" if c in ("driver", "image", "workload") else ""}">{html.escape(c)}</th>'
                   for c in columns)
    rows = []
    for record in df[columns].astype(object).to_dict("records"):
        cells = []
        for c in columns:
            raw, shown = _cell(record[c], c)
            cls = ' class="t"' if c in ("driver", "image", "workload") else ""
            cells.append(f'<td{cls} data-v="{html.escape(raw)}">{html.escape(shown)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _failures(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "<p>No cell failed.</p>"
    items = "".join(f'<li class="fail"><code>{html.escape(f["cell_id"])}</code>: {html.escape(str(f.get("error_type")))}'
                    f': {html.escape(str(f.get("error")))}</li>' for f in failures)
    return f"<p>{len(failures)} cell(s) failed; they are retried when the campaign runs again.</p><ul>{items}</ul>"


def write_report(out: str | Path) -> Path:
    """Charts into ``out/charts/`` and ``out/report.html``; returns the page's path."""
    from ..campaign.execute import read_failures
    from ..campaign.results import load_results, read_manifest
    from .charts import write_charts

    out = Path(out)
    df = load_results(out)
    manifest = read_manifest(out) or {}
    failures = read_failures(out / "failures.jsonl")
    charts = write_charts(df, out / "charts")
    figures = "\n".join(
        f'<figure><img class="chart" src="charts/{html.escape(c.path.name)}" alt="{html.escape(c.title)}">'
        f"<figcaption>{html.escape(c.caption)}</figcaption></figure>" for c in charts)
    name = manifest.get("name", out.name)
    cells = manifest.get("cells", {})
    runs = manifest.get("runs", [])
    when = f"{runs[0].get('started')} – {runs[-1].get('finished')}" if runs else ""
    provenance = {k: v for k, v in manifest.items() if k not in ("campaign",)}
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layerbench campaign {html.escape(name)}</title>
<style>{STYLE}</style></head><body>
<h1>Campaign <code>{html.escape(name)}</code></h1>
<p class="sub">{html.escape(manifest.get("description", ""))}</p>
<p>{len(df)} of {cells.get("total", len(df))} cells done, {len(failures)} failed · {html.escape(when)} ·
status {html.escape(str(manifest.get("status", "unknown")))} · results in <code>results.parquet</code></p>
<h2>Charts</h2>
{figures or "<p>No charts: no cell has finished.</p>"}
<h2>Results</h2>
<p>One row per cell; click a column to sort.</p>
{_table(df)}
<h2>Failures</h2>
{_failures(failures)}
<h2>Provenance</h2>
<pre>{html.escape(json.dumps(provenance, indent=1, default=str))}</pre>
<h3>Campaign file ({html.escape(str(manifest.get("campaign", {}).get("source", "")))})</h3>
<pre>{html.escape(str(manifest.get("campaign", {}).get("text", "")))}</pre>
<script>{SCRIPT}</script>
</body></html>
"""
    path = out / "report.html"
    tmp = out / ".tmp-report.html"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
