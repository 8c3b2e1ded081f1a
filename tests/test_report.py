"""Charts and report.html: files written, units on axes, and the page loads in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from matplotlib.ticker import Formatter

from simulator import load_results, run_campaign
from simulator.report import driver_ranks, plot_bars, plot_sweep, swept_axes
from simulator.report.charts import BytesFormatter, axis_label

CAMPAIGN = """
name = "rep"
seeds = [0, 1]
containers = [1, 2]

[[images]]
name = "random"
params = { layers = [2, 5], entries = 10 }

[[drivers]]
name = "overlay"

[[drivers]]
name = "vfs"

[[workloads]]
name = "random"
params = { ops = 40 }

[[workloads]]
name = "demo"
"""


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    (base / "rep.toml").write_text(CAMPAIGN)
    return run_campaign(base / "rep.toml", base / "out", jobs=2, progress=None)


def test_charts_cover_metrics_sweeps_and_ranks(campaign_dir):
    names = sorted(p.name for p in (campaign_dir / "charts").glob("*.png"))
    assert "bars-physical_bytes.png" in names and "bars-est_seconds.png" in names
    assert "sweep-image-layers-lookup_depth_mean.png" in names  # layers -> lookup depth
    assert "sweep-containers-physical_bytes.png" in names and "sweep-containers-page_cache_bytes.png" in names
    assert "rank-est_seconds.png" in names
    for name in names:
        assert (campaign_dir / "charts" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = load_results(campaign_dir)
    assert swept_axes(df) == ["containers", "image.layers"]


def test_sweep_axis_is_log_scaled_with_byte_labels_when_values_span_decades(campaign_dir):
    df = load_results(campaign_dir)
    df["workload.size"] = df["seed"].map({0: 4096, 1: 1 << 30})  # 4 KiB and 1 GiB: 18 doublings apart
    fig = plot_sweep(df, "workload.size", "physical_bytes")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "workload size (bytes)"
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert len(labels) >= 4 and all(re.fullmatch(r"\d+ (B|KiB|MiB|GiB)", t) for t in labels), labels
    assert any(t.endswith("KiB") for t in labels) and any(t.endswith("MiB") for t in labels)
    assert axis_label("est_seconds") == "seconds" and axis_label("image.layers") == "image layers"


def _zeros_where(df):
    """page_cache_bytes of ``df`` made 0 for every demo cell and for vfs's random cells, and
    4 or 8 KiB for overlay's random cells (by seed)."""
    df = df.copy()
    df.loc[df["workload"] == "demo", "page_cache_bytes"] = 0
    random = df["workload"] == "random"
    df.loc[random & (df["driver"] == "vfs"), "page_cache_bytes"] = 0
    df.loc[random & (df["driver"] == "overlay"), "page_cache_bytes"] = 4096 * (1 + df["seed"])
    return df


def test_sweep_names_its_zeros_and_draws_no_panel_of_zeros_only(campaign_dir):
    df = _zeros_where(load_results(campaign_dir))
    fig = plot_sweep(df, "containers", "page_cache_bytes")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2  # two images x random; both demo panels are zeros only
    assert all(ax.get_title(loc="left").endswith("\n0 on vfs") for ax in panels)
    legend = [t.get_text() for t in panels[-1].get_legend().get_texts()]
    assert legend == ["overlay", "vfs"]  # the drivers, not one panel's "(all 0)"
    notes = [t.get_text() for t in fig.texts if t.get_text().startswith("0 on every driver")]
    assert len(notes) == 1 and notes[0].replace("\n", " ").count(", demo") == 2
    for ax in panels:  # overlay's 4 and 8 KiB alone: a linear axis with its ticks, not one log tick
        assert ax.get_yscale() == "linear"


def test_a_swept_image_parameter_is_the_x_axis_not_one_panel_per_value(campaign_dir):
    df = load_results(campaign_dir)
    assert sorted(df["image"].astype(str).unique()) == ["random[layers=2]", "random[layers=5]"]
    fig = plot_sweep(df, "image.layers", "lookup_depth_mean")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left").split("\n")[0] for ax in panels] == ["random", "demo"]  # one per workload
    for ax in panels:  # overlay's line and vfs's (an errorbar container each), over both layer counts
        assert [sorted(c.lines[0].get_xdata()) for c in ax.containers] == [[2, 5], [2, 5]]


def test_bars_mark_each_zero(campaign_dir):
    df = _zeros_where(load_results(campaign_dir))
    fig = plot_bars(df, "page_cache_bytes")
    means = df.groupby(["image", "containers", "workload", "driver"], observed=True)["page_cache_bytes"].mean()
    zeros = means[means == 0].groupby(["image", "containers"], observed=True).size()
    marks = [sum(1 for t in ax.texts if t.get_text() == "0") for ax in fig.axes if ax.get_visible()]
    # facets by image and container count: 2 x 2, each with demo on both drivers and random on vfs
    assert marks == [3, 3, 3, 3] and zeros.tolist() == [3, 3, 3, 3]


def test_est_seconds_charts_say_which_drivers_were_not_calibrated(campaign_dir):
    captions = re.findall(r'src="charts/([^"]+)".*?<figcaption>([^<]*)', (campaign_dir / "report.html").read_text(),
                          flags=re.S)
    notes = {name: caption for name, caption in captions if "not fitted" in caption}
    assert set(notes) == {"bars-est_seconds.png", "rank-est_seconds.png", "sweep-image-layers-est_seconds.png"}
    assert all("est_seconds of vfs: the cost model" in caption for caption in notes.values())  # overlay is fitted


def test_linear_byte_ticks_use_one_binary_unit():
    class Axis:
        def get_scale(self):
            return "linear"

        def get_view_interval(self):
            return (0, 3 * 1024 * 1024)

    f: Formatter = BytesFormatter()
    f.axis = Axis()  # type: ignore[assignment]
    # 3 MiB top: below 4 MiB, so ticks stay in KiB (no '0.5 MiB'): 512 KiB = 524288 bytes.
    assert f(524288) == "512 KiB" and f(0) == "0"


def test_driver_ranks_are_one_for_the_least(campaign_dir):
    df = load_results(campaign_dir)
    ranks = driver_ranks(df, "lookup_depth_mean")
    # vfs has one filesystem per container: depth 1 everywhere, never more than overlay's.
    assert (ranks.loc["vfs"] == 1).all()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_without_a_server_and_every_chart_loads(campaign_dir):
    page = campaign_dir / "report.html"
    html = page.read_text()
    charts = sorted(p.name for p in (campaign_dir / "charts").glob("*.png"))
    assert sorted(re.findall(r'src="charts/([^"]+)"', html)) == charts
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    assert html.count("<tr>") == 1 + len(load_results(campaign_dir))  # header + one row per cell
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<html[^>]*data-charts-loaded="(\d+)/(\d+)"', proc.stdout)
    assert match, proc.stdout[:500]
    assert int(match.group(1)) == int(match.group(2)) == len(charts) > 0
