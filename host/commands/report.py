"""``nnf report``: the paper's evaluation as one HTML page with figures, from what this checkout holds.

    nnf report --out DIR [--results benchmarks/results] [--profiles-dir DIR] [--checkpoint DIR ...] [--json]

Writes ``DIR/index.html`` and one PNG per figure (paper Tables 2-4, Figs. 10-15 and the predictor's
predicted-vs-measured scatter), reading the shipped generator checkpoints, the device profiles and the
benchmark result files (``benchmarks/results/NAME.json``). Inputs that do not exist yet are shown as missing
with the command that produces them. Open ``DIR/index.html`` in a browser; it needs no server.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the evaluation report (HTML + PNG figures) to a directory",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory (created; an earlier report is replaced)")
    p.add_argument("--results", type=Path, default=None,
                   help="benchmark result files (default: benchmarks/results of this checkout)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="device profiles (default: yours from `nnf fit`, then the shipped ones)")
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="generator checkpoint to report on (repeatable; default: every shipped one)")
    p.add_argument("--json", action="store_true", help="print a summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.cli import print_json
    from host.report import build_report

    report = build_report(args.out, results_dir=args.results, profiles_dir=args.profiles_dir,
                          checkpoints=args.checkpoint)
    if args.json:
        print_json(report.to_json())
        return 0
    print(f"report written to {report.index} ({len(report.figures)} figures)")
    for m in report.missing:
        print(f"missing: {m['what']} ({m['path']}); produce it with: {m['command']}")
    for f in report.failed:
        print(f"could not produce {f['figure']}: {f['error']}")
    return 0
