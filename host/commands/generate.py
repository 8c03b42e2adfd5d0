"""``nnf generate``: generate a compact task-specific model for ``<task, activation limit>``.

No training and no data: the module assembler of a trained checkpoint (by default the one shipped in
the package) picks the gates, and the inactive modules are physically removed. The output directory
gets ``spec.json`` + ``model.safetensors`` (load with ``host.artifact.load_compact``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a compact model for a task and activation limit",
                       description=__doc__)
    p.add_argument("--space", default="numvqa", help="task space name or .toml path (default: %(default)s)")
    p.add_argument("--task", required=True,
                   help="task name (see `nnf tasks`), or attributes joined by '+', e.g. 'exactly+two+0'")
    p.add_argument("--activation-limit", required=True, type=float,
                   help="largest fraction of gated modules to keep, in (0, 1], e.g. 0.3")
    p.add_argument("--out", required=True, type=Path, help="output directory for the compact model")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint or training-run directory (default: the checkpoint shipped for --space)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from host.cli import print_json
    from host.generate import ModelFactory

    t0 = time.perf_counter()
    factory = ModelFactory.load(space=args.space, checkpoint=args.checkpoint)
    load_s = time.perf_counter() - t0
    _, summary = factory.generate(args.task, args.activation_limit, args.out)
    summary["seconds_load_checkpoint"] = round(load_s, 4)
    if args.json:
        print_json(summary)
        return 0
    print(f"task              {summary['task']}  ({' + '.join(summary['attributes'])}; {summary['task_split']})")
    print(f"activation limit  {summary['activation_limit']:g}")
    print(f"activation ratio  {summary['activation_ratio']:.4f}  ({summary['trimmed_modules']} modules trimmed to fit)")
    print(f"params            {summary['params']:,}")
    print(f"MACs              {summary['macs']:,}")
    print(f"seconds           {summary['seconds']:.3f}  (+ {load_s:.2f} s loading the checkpoint)")
    print(f"written to        {summary['out']}")
    return 0
