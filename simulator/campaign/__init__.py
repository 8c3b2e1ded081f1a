"""Benchmark campaigns (SPEC section 8): a grid of cells, run once, resumed after any crash.

``spec`` parses and validates the TOML file and expands the grid; ``execute`` runs cells on
a local process pool or Dask and writes each finished cell atomically; ``results``
consolidates them into ``results.parquet`` with a manifest; ``compare`` diffs two campaigns.
"""

from .compare import compare_campaigns
from .results import load_results
from .run import run_campaign
from .spec import Campaign, CampaignCell, load_campaign

__all__ = ["Campaign", "CampaignCell", "compare_campaigns", "load_campaign", "load_results", "run_campaign"]
