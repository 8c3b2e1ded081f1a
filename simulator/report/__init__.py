"""Campaign reports: the charts (``charts``) and the static page (``html``) that shows them."""

from .charts import driver_ranks, plot_bars, plot_rank_heatmap, plot_sweep, swept_axes, write_charts
from .html import write_report

__all__ = ["driver_ranks", "plot_bars", "plot_rank_heatmap", "plot_sweep", "swept_axes", "write_charts",
           "write_report"]
