"""Benchmark campaigns (SPEC section 8): a grid of cells, run once, resumed after any crash.

``spec`` parses and validates the TOML file and expands the grid; ``execute`` runs cells on
a local process pool or Dask and writes each finished cell atomically; ``results``
consolidates them into ``results.parquet`` with a manifest; ``compare`` diffs two campaigns.
"""


from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compare import compare_campaigns
    from .results import load_results
    from .run import run_campaign
    from .spec import Campaign, CampaignCell, load_campaign

__all__ = ["Campaign", "CampaignCell", "compare_campaigns", "load_campaign", "load_results", "run_campaign"]

# Where each name lives: imported on first use, since ``results`` and ``compare`` load pyarrow
# and pandas (a quarter of a second and ~60 MiB), which the command line's parser, built
# for every command, must not pay for a simulated ``run``.
_HOMES = {"Campaign": "spec", "CampaignCell": "spec", "load_campaign": "spec", "compare_campaigns": "compare",
          "load_results": "results", "run_campaign": "run"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
