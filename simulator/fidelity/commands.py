"""The ``validate`` and ``calibrate`` commands (registered by ``simulator.cli``).

Thin: parse, call the library functions a notebook calls, print.  Errors go up to the CLI's
one handler (``BadInput`` exit 2, ``BackendUnavailable`` exit 3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_VALIDATE_OUT = "results/fidelity"
DEFAULT_CALIBRATION_OUT = "calibration.json"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="run cases on the simulator and on every real counterpart; "
                       "write the error table")
    v.add_argument("--suite", choices=("quick", "full"), help="a built-in suite instead of one cell")
    v.add_argument("--driver", help="storage driver (one cell)")
    v.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="driver option (repeatable)")
    v.add_argument("--image", help="image JSON file or built-in NAME[:k=v,...] (one cell)")
    v.add_argument("--workload", help="trace .jsonl file or built-in NAME[:k=v,...] (one cell)")
    v.add_argument("--containers", type=int, default=1, help="containers started from the image (default 1)")
    v.add_argument("--seed", type=int, default=0, help="seed of built-in generators (default 0)")
    v.add_argument("--backend", action="append", metavar="NAME",
                   help="only this real backend (repeatable): kernel-overlay, fuse-overlayfs, btrfs, vfs-copy, "
                        "qcow2, reflink-thin")
    v.add_argument("--calibration", metavar="FILE", help="cost-model calibration for est_seconds "
                   "(default: the shipped one)")
    v.add_argument("--out", default=DEFAULT_VALIDATE_OUT,
                   help=f"directory for fidelity.parquet/.json/.html and charts (default {DEFAULT_VALIDATE_OUT})")
    v.add_argument("--json", action="store_true", help="print the rows as JSON only")
    c = sub.add_parser("calibrate", help="measure this machine's real costs and fit the cost model")
    c.add_argument("--driver", action="append", help="driver to calibrate (repeatable; default overlay and btrfs)")
    c.add_argument("--repeats", type=int, default=7, help="runs per benchmark; the median time is kept (default 7)")
    c.add_argument("--out", default=DEFAULT_CALIBRATION_OUT,
                   help=f"calibration file to write (default {DEFAULT_CALIBRATION_OUT})")
    c.add_argument("--json", action="store_true", help="print the fit report as JSON only")
    c.add_argument("--check", nargs="?", const="", metavar="FILE",
                   help="fit nothing: re-measure the held-out workloads and price them with FILE "
                        "(default: the shipped calibration); writes nothing")


def _cases(args: argparse.Namespace):
    from simulator.errors import BadInput

    from .suites import Case, suite

    single = [args.driver, args.image, args.workload]
    if args.suite:
        if any(single) or args.opt:
            raise BadInput("validate: give either --suite or --driver/--image/--workload, not both")
        return suite(args.suite)
    if not all(single):
        raise BadInput("validate: give --suite quick|full, or all of --driver, --image and --workload")
    if args.seed < 0:
        raise BadInput(f"--seed {args.seed}: must not be negative")
    from drivers.options import parse_opt_strings

    return [Case(args.driver, args.image, args.workload, parse_opt_strings(args.opt), args.containers, args.seed)]


def cmd_validate(args: argparse.Namespace) -> int:
    from simulator.calibration import load_calibration

    from .validate import summary, validate, write_outputs

    cases = _cases(args)
    calibration = load_calibration(args.calibration) if args.calibration else None

    def progress(i: int, n: int, case) -> None:
        if not args.json:
            print(f"\rvalidate: {i}/{n} cases", end="", file=sys.stderr, flush=True)

    result = validate(cases, calibration, args.backend, progress)
    if not args.json:
        print(file=sys.stderr)
    if not result.rows and not result.failures and len(cases) == 1:
        from simulator.errors import BackendUnavailable

        why = "; ".join(f"{b}: {w}" for b, w in result.skipped.items())
        raise BackendUnavailable(f"validate: no real counterpart of {cases[0].driver} with these options "
                                 f"can run here" + (f" ({why})" if why else ""))
    paths = write_outputs(result, args.out)
    if args.json:
        json.dump(result.rows, sys.stdout, indent=1, default=str)
        print()
        return 0
    table = summary(result.frame())
    if table.empty:
        print("no comparison ran: " + ("; ".join(f"{b}: {w}" for b, w in result.skipped.items()) or
                                       "no real backend for this driver and options"))
    else:
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for backend, why in result.skipped.items():
        print(f"skipped {backend}: {why}")
    for failure in result.failures:
        print(f"failed on {failure['backend']}: {failure['error']}")
    print(f"{len(result.rows)} rows in {result.seconds:.1f} s; report: {Path(paths['html']).resolve()}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from simulator.calibration import write_calibration
    from simulator.errors import BadInput

    from .calibrate import CALIBRATED_DRIVERS, calibrate

    drivers = args.driver or list(CALIBRATED_DRIVERS)
    unknown = set(drivers) - set(CALIBRATED_DRIVERS)
    if unknown:
        raise BadInput(f"--driver {', '.join(sorted(unknown))}: only {', '.join(CALIBRATED_DRIVERS)} have "
                       f"a real backend to calibrate on")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats}: must be at least 1")
    say = None if args.json else (lambda m: print(m, file=sys.stderr))
    if args.check is not None:
        from simulator.calibration import load_calibration

        from .calibrate import check

        rows = check(load_calibration(args.check or None), drivers, args.repeats, progress=say)
        if args.json:
            json.dump({"held_out": rows, "load_average": os.getloadavg()}, sys.stdout, indent=1)
            print()
        else:
            _print_held_out(rows)
        return 0
    run = calibrate(drivers, args.repeats, progress=say)
    report = run.report()
    path = write_calibration(args.out, run.calibration, report)
    if args.json:
        json.dump({"calibration": str(path), **run.calibration.as_dict(), **report}, sys.stdout, indent=1)
        print()
        return 0
    print(f"calibration written to {path}")
    _print_held_out(run.held_out)
    return 0


HELD_OUT_TOLERANCE = 0.25  # issue 6: est_seconds within 25% of the measured wall time


def _print_held_out(rows: list[dict]) -> None:
    for h in rows:
        print(f"held-out {h['driver']:8} {h['workload']:45} est {h['est_seconds'] * 1e3:8.2f} ms  "
              f"real {h['real_seconds'] * 1e3:8.2f} ms  error {h['rel_error']:6.1%}")
    for driver in dict.fromkeys(h["driver"] for h in rows):
        errors = [h["rel_error"] for h in rows if h["driver"] == driver]
        print(f"{driver}: {sum(e <= HELD_OUT_TOLERANCE for e in errors)} of {len(errors)} within "
              f"{HELD_OUT_TOLERANCE:.0%}, worst {max(errors):.1%}; load average {os.getloadavg()[0]:.2f}")


COMMANDS = {"validate": cmd_validate, "calibrate": cmd_calibrate}
