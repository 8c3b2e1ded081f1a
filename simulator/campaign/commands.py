"""The ``campaign``, ``report`` and ``compare`` commands (registered by ``simulator.cli``).

Thin: parse, call the library functions a notebook calls, print where things are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="run a benchmark campaign (TOML file or built-in name) and write its report")
    p.add_argument("campaign", metavar="FILE.toml", help="campaign file, or a built-in campaign name (default)")
    p.add_argument("--out", help="output directory (default results/<name>/)")
    p.add_argument("--jobs", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on Dask: tcp://scheduler:8786, or 'local' for a LocalCluster")
    p.add_argument("--resume", action="store_true",
                   help="reuse an output directory made by a different version of the campaign file")
    p.add_argument("--no-report", action="store_true", help="skip the charts and report.html")
    r = sub.add_parser("report", help="(re)write the charts and report.html of a campaign directory")
    r.add_argument("dir", metavar="DIR")
    c = sub.add_parser("compare", help="per-cell, per-metric differences between two campaign directories")
    c.add_argument("dir_a", metavar="DIR_A")
    c.add_argument("dir_b", metavar="DIR_B")
    c.add_argument("--metric", action="append", help="compare only this metric (repeatable)")
    c.add_argument("--include-timings", action="store_true", help="also compare sim_seconds and sim_peak_rss_bytes")
    c.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: exact)")
    c.add_argument("--json", action="store_true", help="print JSON only")


def cmd_campaign(args: argparse.Namespace) -> int:
    from .run import run_campaign

    out = run_campaign(args.campaign, args.out, jobs=args.jobs, dask=args.dask, resume=args.resume,
                       report=not args.no_report)
    manifest = json.loads((out / "manifest.json").read_text())
    cells = manifest["cells"]
    print(f"{manifest['name']}: {cells['done']}/{cells['total']} cells done, {cells['failed']} failed this run")
    print(f"results: {out / 'results.parquet'}")
    if cells["failed"]:
        print(f"failures: {out / 'failures.jsonl'} (run the same command again to retry them)")
    if not args.no_report:
        print(f"report: {(out / 'report.html').resolve()}")
    return 0 if cells["done"] == cells["total"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    print(f"report: {write_report(Path(args.dir)).resolve()}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_campaigns

    result = compare_campaigns(args.dir_a, args.dir_b, metrics=args.metric, include_timings=args.include_timings,
                               rtol=args.rtol)
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=1, default=str)
        print()
    else:
        print(result.summary())
    return 0 if result.equal else 1


COMMANDS = {"campaign": cmd_campaign, "report": cmd_report, "compare": cmd_compare}
