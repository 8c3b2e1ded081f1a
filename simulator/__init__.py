"""layerbench: a benchmark and simulation suite for container storage drivers.

The public library API; notebooks and other programs import from here::

    from simulator import Cell, run_cell, load_image, simulate
    from simulator import run_campaign, load_results   # campaigns (imported on first use)
"""

from .costmodel import CostModel
from .errors import BackendUnavailable, BadInput, LayerbenchError
from .harness import Run, simulate
from .image import Entry, Image, Layer, image_from_dict
from .imagetree import ImageTree
from .inputs import load_image, load_image_json, load_trace, load_workload
from .metrics import METRIC_KEYS
from .runner import Cell, run_cell, view_cell
from .trace import Op

__all__ = ["BackendUnavailable", "BadInput", "Cell", "CostModel", "Entry", "Image", "ImageTree", "Layer",
           "LayerbenchError", "METRIC_KEYS", "Op", "Run", "image_from_dict", "load_image", "load_image_json",
           "load_trace", "load_workload", "run_cell", "simulate", "view_cell", "run_campaign", "load_results"]

_CAMPAIGN_API = ("run_campaign", "load_results")


def __getattr__(name: str):
    """Campaign functions load pyarrow and friends: import them only when asked for."""
    if name in _CAMPAIGN_API:
        from . import campaign

        return getattr(campaign, name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
