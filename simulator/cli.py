"""The ``layerbench`` command line: parse arguments, call the library, print.

Every command calls the same functions a notebook calls; heavy imports happen inside the
command that needs them.  Errors become exit codes here and only here: ``BadInput`` -> 2
with one line on stderr, ``BackendUnavailable`` -> 3, anything else -> 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from .errors import BadInput, LayerbenchError
from .units import format_bytes


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (SPEC section 6)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{self.prog}: {message}")


def _cell_arguments(p: argparse.ArgumentParser, many_drivers: bool) -> None:
    p.add_argument("--driver", required=True, action="append" if many_drivers else "store",
                   help="storage driver" + (" (repeat to compare drivers side by side)" if many_drivers else ""))
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="driver option (repeatable); DRIVER.KEY=VALUE applies to that driver only")
    p.add_argument("--image", required=True, help="image JSON file or built-in NAME[:k=v,...]")
    p.add_argument("--workload", required=True, help="trace .jsonl file or built-in NAME[:k=v,...]")
    p.add_argument("--containers", type=int, default=1, help="containers started from the image (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of built-in generators (default 0)")
    p.add_argument("--backend", choices=("sim", "real"), default="sim",
                   help="sim: the simulator; real: the real kernel (root)")
    p.add_argument("--json", action="store_true", help="print JSON only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerbench", description="Benchmark and simulate container storage drivers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="replay a workload on a driver and print its metrics")
    _cell_arguments(run, many_drivers=True)
    view = sub.add_parser("view", help="print a container's file tree after the workload")
    _cell_arguments(view, many_drivers=False)
    view.add_argument("--container", type=int, default=0, help="which container (default 0)")
    for name, what in (("drivers", "storage drivers"), ("workloads", "built-in workloads"),
                       ("images", "built-in image builders")):
        listing = sub.add_parser(name, help=f"list the {what} with their options")
        listing.add_argument("--json", action="store_true", help="print JSON only")
    from .campaign.commands import add_parsers as add_campaign_parsers

    add_campaign_parsers(sub)
    from .fidelity.commands import add_parsers as add_fidelity_parsers

    add_fidelity_parsers(sub)
    run.add_argument("--calibration", metavar="FILE",
                     help="cost-model calibration file for est_seconds (default: the shipped one)")
    _trace_arguments(sub)
    diff = sub.add_parser("diff", help="write a container's changes as an OCI layer tar (AUFS whiteouts)")
    _cell_arguments(diff, many_drivers=False)
    diff.add_argument("--container", type=int, default=0, help="which container (default 0)")
    diff.add_argument("--output", required=True, help="layer tar to write")
    bench = sub.add_parser("bench", help="measure the simulator's own speed and memory (issue 7's targets)")
    bench.add_argument("--json", action="store_true", help="print the pytest-benchmark JSON document only")
    bench.add_argument("--output", metavar="FILE", help="also write the pytest-benchmark JSON document to FILE")
    bench.add_argument("--quick", action="store_true", help="a tenth of the scale (seconds, not minutes)")
    bench.add_argument("--vs-real", action="store_true", help="also time the real overlay backend (root)")
    bench.add_argument("--driver", action="append", help="drivers to time (default: all; repeatable)")
    clean = sub.add_parser("cleanup", help="release mounts, loop devices and scratch dirs of killed real runs")
    clean.add_argument("--dry-run", action="store_true", help="only list what would be released")
    clean.add_argument("--json", action="store_true", help="print JSON only")
    return parser


def _trace_arguments(sub) -> None:
    """``trace record`` and ``trace convert`` (SPEC section 6)."""
    trace = sub.add_parser("trace", help="record a real program's file operations as a trace")
    tsub = trace.add_subparsers(dest="trace_command", required=True, parser_class=_Parser)
    rec = tsub.add_parser("record", help="run COMMAND under strace and write its operations under --root")
    rec.add_argument("--root", default=".", help="directory whose operations are kept (default: .); "
                     "the command runs there")
    rec.add_argument("--output", help="trace file to write (default: stdout)")
    rec.add_argument("--log", help="keep the strace log in this file")
    rec.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    conv = tsub.add_parser("convert", help="convert an existing 'strace -f -y -X raw' log")
    conv.add_argument("log", metavar="STRACE_LOG")
    conv.add_argument("--root", default=".", help="directory whose operations are kept (default: .)")
    conv.add_argument("--output", help="trace file to write (default: stdout)")
    conv.add_argument("--image", help="ROOT before the run, as any IMAGE (default: ROOT as it is now)")
    conv.add_argument("--cwd", help="the traced program's first working directory (default: ROOT)")
    conv.add_argument("--umask", default="022", help="the traced program's first umask, octal (default 022)")


def _cell(args: argparse.Namespace, driver: str):
    from drivers.options import options_for, parse_opt_strings

    from .runner import Cell

    if args.seed < 0:
        raise BadInput(f"--seed {args.seed}: must not be negative")
    return Cell(driver=driver, image=args.image, workload=args.workload,
                options=options_for(driver, parse_opt_strings(args.opt)), containers=args.containers,
                seed=args.seed)


def _run_one(args: argparse.Namespace, driver: str, calibration) -> dict[str, Any]:
    cell = _cell(args, driver)
    if args.backend == "real":
        from .real import run_real

        return run_real(cell)
    from .runner import run_cell

    return run_cell(cell, calibration.for_driver(driver))


def _format_metric(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.endswith("_bytes") and isinstance(value, int):
        return format_bytes(value) if value >= 1024 else f"{value} B"
    if key.endswith("_seconds"):
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if isinstance(value, float):
        return f"{value:.3g}"
    return f"{value:,}"


def format_side_by_side(records: list[dict[str, Any]]) -> str:
    """Metrics as a table, one column per run, as a person reads a comparison."""
    headers = [r["driver"] + (f" ({r['backend']})" if r["backend"] != "sim" else "") for r in records]
    keys = list(records[0]["metrics"])
    rows = [[key] + [_format_metric(key, r["metrics"].get(key)) for r in records] for key in keys]
    widths = [max(len(row[i]) for row in rows + [["metric"] + headers]) for i in range(len(headers) + 1)]
    first = records[0]
    lines = [f"image {first['image']}  workload {first['workload']}  containers {first['containers']}  "
             f"seed {first['seed']}", ""]
    lines.append("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                           for i, h in enumerate(["metric"] + headers)))
    for row in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .calibration import load_calibration, uncalibrated_note

    calibration = load_calibration(args.calibration)  # the shipped one without --calibration
    records = [_run_one(args, d, calibration) for d in args.driver]
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1))
    else:
        print(format_side_by_side(records))
        note = uncalibrated_note([r["driver"] for r in records if "est_seconds" in r["metrics"]], calibration)
        if note:
            print(f"\n{note}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    cell = _cell(args, args.driver)
    if args.backend == "real":
        from .real import view_real

        view = view_real(cell, args.container)
    else:
        from .runner import view_cell

        view = view_cell(cell, args.container)
    print(json.dumps(view, indent=1 if not args.json else None))
    return 0


def _print_listing(items: list[dict[str, Any]], as_json: bool, params_key: str) -> None:
    if as_json:
        print(json.dumps(items, indent=1))
        return
    for item in items:
        print(f"{item['name']}: {item['summary']}")
        for p in item[params_key]:
            bounds = "".join(f", {k} {p[k]}" for k in ("minimum", "maximum", "multiple_of") if k in p)
            choices = f", one of {'/'.join(p['choices'])}" if "choices" in p else ""
            print(f"    {p['name']} = {p['default']!r:<8} {p['doc']}{bounds}{choices}")


def cmd_drivers(args: argparse.Namespace) -> int:
    from drivers import describe_drivers

    _print_listing(describe_drivers(), args.json, "options")
    return 0


def cmd_builtins(args: argparse.Namespace) -> int:
    from workloads.builtin import IMAGES, WORKLOADS

    table = IMAGES if args.command == "images" else WORKLOADS
    _print_listing([b.describe() for b in table.values()], args.json, "params")
    return 0


def _campaign_command(args: argparse.Namespace) -> int:
    from .campaign.commands import COMMANDS as CAMPAIGN_COMMANDS

    return CAMPAIGN_COMMANDS[args.command](args)


def cmd_trace(args: argparse.Namespace) -> int:
    from workloads.strace import convert_log, record, summary

    from .trace import dump_trace

    if args.trace_command == "record":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        rec = record(cmd, args.root, args.log)
        conversion, code = rec.conversion, rec.returncode
    else:
        from .inputs import load_image

        try:
            umask = int(args.umask, 8)
        except ValueError:
            raise BadInput(f"--umask {args.umask!r}: not an octal number") from None
        image = load_image(args.image) if args.image else None
        conversion, code = convert_log(args.log, args.root, image, args.cwd, umask), 0
    text = dump_trace(conversion.ops)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(f"layerbench: trace: {summary(conversion)}", file=sys.stderr)
    if code:
        print(f"layerbench: trace: the command exited with status {code}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from workloads.oci_export import diff_cell

    if args.backend != "sim":
        raise BadInput("diff: only the simulator's diff is exported (--backend sim)")
    out = diff_cell(_cell(args, args.driver), args.container, args.output)
    print(json.dumps(out) if args.json else f"{out['output']}: {out['members']} members, {out['digest']}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """What real runs killed by SIGKILL left (simulator.real.stale); 1 if some could not go."""
    from .real.scratch import state_dir
    from .real.stale import cleanup_stale

    reports = cleanup_stale(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(reports, indent=1))
    for r in [] if args.json else reports:
        held = ", ".join(r.get("mounts", []) + r.get("loops", [])) or "no mount or loop device"
        verb = "would release" if args.dry_run else "released"
        print(f"pid {r.get('pid')}: {verb} {held}; scratch {r.get('scratch')}"
              + "".join(f"\n  error: {e}" for e in r["errors"]))
    if not reports and not args.json:
        print(f"nothing to clean up ({state_dir()} lists no dead run)")
    return 1 if any(r["errors"] for r in reports) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench
    from .benchreport import format_results, to_benchmark_json

    if args.driver:
        from drivers import make_driver

        for name in args.driver:
            make_driver(name)  # unknown driver: exit 2 before any work
    say = None if args.json else (lambda what: print(f"layerbench: bench: {what}...", file=sys.stderr))
    results = run_bench(quick=args.quick, vs_real=args.vs_real, drivers=args.driver, progress=say)
    doc = to_benchmark_json(results, args.quick)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=1) if args.json else format_results(results))
    return 0


def _fidelity_command(args: argparse.Namespace) -> int:
    from .fidelity.commands import COMMANDS as FIDELITY_COMMANDS

    return FIDELITY_COMMANDS[args.command](args)


COMMANDS = {"validate": _fidelity_command, "calibrate": _fidelity_command,
            "run": cmd_run, "view": cmd_view, "drivers": cmd_drivers, "workloads": cmd_builtins,
            "images": cmd_builtins, "campaign": _campaign_command, "report": _campaign_command,
            "compare": _campaign_command, "trace": cmd_trace, "cleanup": cmd_cleanup,
            "diff": cmd_diff, "bench": cmd_bench}


def error_line(exc: BaseException) -> str:
    """The one stderr line of an error: a newline or other control character inside a name
    from the input (a JSON key, a member name) is shown escaped, so the message stays one
    line (found by fuzzing)."""
    text = str(exc)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"layerbench: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader gone shows here, not in the interpreter's exit
        return code
    except LayerbenchError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("layerbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``layerbench workloads | head``): stop quietly, as ``ls``
        # does, and point stdout at /dev/null so the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal
