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
    p.add_argument("--activation-limit", type=float, default=None,
                   help="largest fraction of gated modules to keep, in (0, 1], e.g. 0.3 (or give --device + budgets)")
    p.add_argument("--out", required=True, type=Path, help="output directory for the compact model")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint or training-run directory (default: the checkpoint shipped for --space)")
    from host.commands.export import add_format_arguments  # --format/--int8/--calibration
    from host.commands.options import agent_address

    add_format_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    # device budgets (host.profiling.budget): search the largest limit whose model fits the device
    p.add_argument("--device", default=None, help="device whose fitted profile (`nnf fit`, or shipped) sets the limit")
    p.add_argument("--latency-ms", type=float, default=None, help="latency budget on --device (milliseconds)")
    p.add_argument("--memory-mb", type=float, default=None, help="memory budget on --device (MB = 10^6 bytes)")
    p.add_argument("--live", action="store_true",
                   help="measure candidates on the device's agent (--agent) instead of predicting them")
    p.add_argument("--agent", default=None, metavar="HOST:PORT", type=agent_address,
                   help="the device's agent: with --live candidates are measured there; otherwise the chosen model "
                        "is measured there too (predicted vs. measured in the report)")
    p.add_argument("--token", default=None, help="agent bearer token (default: $NNF_AGENT_TOKEN)")
    p.add_argument("--inventory", default=None,
                   help="device inventory: with --live and no --agent, --device names an inventory device whose "
                        "deployed agent is reached through its ssh/adb tunnel (default $NNF_INVENTORY or ./devices.toml)")
    p.add_argument("--warmup", type=int, default=None,
                   help="with --live: warm-up runs per candidate (default: the device profile's campaign settings)")
    p.add_argument("--repeats", type=int, default=None,
                   help="with --live: timed runs per candidate, with no minimum time (e.g. 3 on a slow device)")
    p.add_argument("--runtime", default=None, choices=["torchscript", "torch_export", "onnxruntime", "litert"],
                   help="runtime to measure candidates with on the agent (default: the device profile's, else "
                        "torchscript); e.g. onnxruntime for a device without PyTorch")
    p.add_argument("--search", default="batched", choices=["batched", "algorithm1"],
                   help="predictor search: one batched pass (default) or the paper's Algorithm 1 (same answer)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="device profiles directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from host.cli import print_json
    from host.commands.options import check_out
    from host.errors import ConfigError
    from host.generate import ModelFactory

    device_mode = args.device is not None or args.latency_ms is not None or args.memory_mb is not None or args.live
    if device_mode and args.activation_limit is not None:
        raise ConfigError("give either --activation-limit or a device budget (--device with --latency-ms/--memory-mb)")
    if not device_mode and args.activation_limit is None:
        raise ConfigError("give --activation-limit (e.g. 0.3), or --device NAME with --latency-ms and/or --memory-mb")
    if device_mode and args.device is None:
        raise ConfigError("--latency-ms/--memory-mb/--live need --device NAME (whose profile or agent to use)")
    from host.commands.export import check_format_arguments, export_after_generate

    check_format_arguments(args)  # --format/--int8 mistakes and a missing extra fail before any work
    check_out(args.out, directory=True)
    t0 = time.perf_counter()
    factory = ModelFactory.load(space=args.space, checkpoint=args.checkpoint)
    load_s = time.perf_counter() - t0
    if device_mode:
        return _run_device(args, factory, load_s)
    import sys
    import warnings

    from host.errors import GenerationWarning

    with warnings.catch_warnings():  # printed below as one line each, not as Python warnings
        warnings.simplefilter("ignore", GenerationWarning)
        _, summary = factory.generate(args.task, args.activation_limit, args.out)
    for note in summary["warnings"]:
        print(f"warning: {note}", file=sys.stderr)
    summary["seconds_load_checkpoint"] = round(load_s, 4)
    exported = export_after_generate(args, args.out)  # None without --format
    if exported is not None:
        summary["export"] = exported
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
    if exported is not None:
        from host.commands.export import export_line

        print(f"exported to       {export_line(exported)}")
    return 0


def _run_device(args: argparse.Namespace, factory, load_s: float) -> int:
    """Device-budget generation (owned by the campaigns feature; see host/profiling/budget.py)."""
    import os

    from host.cli import print_json
    from host.profiling.budget import Budget, generate_for_device
    from host.profiling.device_profile import safe_device_id

    budget = Budget(latency_ms=args.latency_ms, memory_mb=args.memory_mb)
    token = args.token if args.token is not None else os.environ.get("NNF_AGENT_TOKEN")
    measure = None
    if args.warmup is not None or args.repeats is not None:
        from dataclasses import replace

        from host.profiling.plan import MeasureSettings

        measure = MeasureSettings()
        if args.warmup is not None:
            measure = replace(measure, warmup_runs=args.warmup)
        if args.repeats is not None:
            measure = replace(measure, repeats=args.repeats, min_time_s=0.0)
    agent, session = args.agent, None
    if args.live and agent is None:  # an inventory device: its deployed agent, through the ssh/adb tunnel
        from host.commands.profile import open_device_session

        session, _ = open_device_session(args.device, args.inventory)
        agent, token = session.address, session.token
    try:
        _, report = generate_for_device(
            factory, args.task, safe_device_id(args.device), budget, live=args.live, agent=agent, token=token,
            method=args.search, out_dir=args.out, profiles_root=args.profiles_dir, runtime=args.runtime,
            measure_settings=measure,
        )
    finally:
        if session is not None:
            session.close()
    report["seconds_load_checkpoint"] = round(load_s, 4)
    from host.commands.export import export_after_generate

    exported = export_after_generate(args, args.out)  # --format: the artifact for the device
    if exported is not None:
        report["export"] = exported
    if args.json:
        print_json(report)
        return 0
    s = report["search"]
    print(f"task              {report['task']}")
    print(f"device            {report['device']}  budget: {budget.describe()}")
    print(f"search            {s['method']}: {s['rounds']} rounds, {s['assembler_calls']} assembler call(s), "
          f"{report['seconds_search']:.3f} s")
    print(f"activation limit  {report['limit']:g}  (ratio {report['activation_ratio']:.4f})")
    if "predicted" in report:
        p = report["predicted"]
        print(f"predicted         {p['latency_ms']:.3f} ms, {p['memory_mb']:.2f} MB ({p['latency_statistic']} latency)")
    if "measured" in report:
        m = report["measured"]
        print(f"measured          {m['latency_ms']:.3f} ms, {m['memory_mb']:.2f} MB on {m['agent']} "
              f"({m['measurements']} measurement(s); fits: {m['fits']})")
    print(f"param bytes       {report['param_bytes']:,}  (peak activation {report['peak_activation_bytes']:,} bytes)")
    print(f"seconds           {report['seconds']:.3f}  (+ {load_s:.2f} s loading the checkpoint)")
    print(f"written to        {report['out']}")
    if exported is not None:
        from host.commands.export import export_line

        print(f"exported to       {export_line(exported)}")
    return 0
