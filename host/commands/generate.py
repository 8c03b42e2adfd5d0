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

    add_format_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    from host.commands.options import add_agent_arg

    # device budgets (host.profiling.budget): search the largest limit whose model fits the device
    p.add_argument("--device", default=None, help="device whose fitted profile (`nnf fit`, or shipped) sets the limit")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="latency budget on --device (milliseconds), held at --percentile of the model's runs")
    p.add_argument("--memory-mb", type=float, default=None, help="memory budget on --device (MB = 10^6 bytes)")
    p.add_argument("--percentile", default="90", choices=["50", "90", "99"],
                   help="which share of inferences must meet --latency-ms: 90 (default, for shipping: 9 of 10 runs "
                        "at most that slow), 50 (the median) or 99 (a tail budget); the profile predicts that "
                        "percentile and adds its calibrated safety margin")
    p.add_argument("--live", action="store_true",
                   help="measure candidates on the device's agent instead of predicting them (--agent, or the "
                        "device's deployed agent from the inventory)")
    add_agent_arg(p, help="the device's agent (default: the inventory's deployed agent, tunnel and token opened "
                          "here): used for the drift check, to measure the chosen model, and by --live")
    p.add_argument("--token", default=None, help="agent bearer token for --agent (default: $NNF_AGENT_TOKEN)")
    p.add_argument("--inventory", default=None, help="device inventory TOML (default: $NNF_INVENTORY, ./devices.toml, ~/.config/nn-factory/devices.toml)")
    p.add_argument("--drift-check", default="auto", choices=["auto", "on", "off"],
                   help="re-measure the profile's reference subnets before a predicted search: auto (default: when "
                        "the device's agent is reachable), on (required), off")
    from host.commands.options import add_runtime_arg

    add_runtime_arg(p, help="runtime the budget is priced on and --live measures with (default: --format's, else "
                            "the device profile's, else torchscript); e.g. onnx for a device without PyTorch")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up runs per measurement on the device (default: the device profile's campaign settings)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement on the device, with no minimum time (e.g. 3 on a slow device)")
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
    """Device-budget generation (owned by the profiling package; see host/profiling/budget.py)."""
    import contextlib

    from host.cli import print_json
    from host.errors import ConfigError
    from host.profiling.budget import Budget, generate_for_device
    from host.profiling.device_profile import safe_device_id

    budget = Budget(latency_ms=args.latency_ms, memory_mb=args.memory_mb)
    device = safe_device_id(args.device)
    from host.commands.options import agent_runtime

    runtime = agent_runtime(args.runtime)
    if args.format is not None:
        if args.int8:
            raise ConfigError("device budgets are profiled on float32 artifacts; an int8 model runs at another cost: "
                              "drop --int8, or generate with --activation-limit and profile the int8 model yourself")
        fmt_runtime = agent_runtime(args.format)  # the budget must be priced on the runtime that will run it
        if runtime is not None and runtime != fmt_runtime:
            raise ConfigError(f"--runtime {args.runtime} prices the budget on another runtime than --format "
                              f"{args.format} runs on: drop --runtime, or make them the same")
        runtime = fmt_runtime
    measure = _measure_settings(args)

    with contextlib.ExitStack() as stack:
        measurer, agent, note = _device_agent(stack, device, args)
        if note and args.drift_check == "on":
            raise ConfigError(f"--drift-check on: {note}")
        _, report = generate_for_device(
            factory, args.task, device, budget, percentile=args.percentile, runtime=runtime, live=args.live,
            measurer=measurer, agent=agent, drift_check=args.drift_check, method=args.search, out_dir=args.out,
            profiles_root=args.profiles_dir, measure_settings=measure, meta={"checkpoint": str(factory.checkpoint)},
        )
    if note and report["drift_check"]["status"] == "skipped":
        report["drift_check"]["message"] = note
    report["seconds_load_checkpoint"] = round(load_s, 4)
    from host.commands.export import export_after_generate

    exported = export_after_generate(args, args.out)  # --format: the artifact for the device
    if exported is not None:
        report["export"] = exported
    if args.json:
        print_json(report)
        return 0
    s = report["search"]
    d = report["drift_check"]
    print(f"task              {report['task']}")
    print(f"device            {report['device']}  budget: {budget.describe()} at p{args.percentile} "
          f"({report['runtime']})")
    print(f"drift check       {d['status']}: {d['message']}")
    print(f"search            {s['method']}: {s['rounds']} rounds, {s['assembler_calls']} assembler call(s), "
          f"{report['seconds_search']:.3f} s")
    print(f"activation limit  {report['limit']:g}  (ratio {report['activation_ratio']:.4f})")
    if "predicted" in report:
        p, m = report["predicted"], report["margin"]
        print(f"predicted         {p['latency_ms']:.3f} ms, {p['memory_mb']:.2f} MB (p{args.percentile}); with the "
              f"safety margin (+{100 * m['latency']:.1f} % latency, +{100 * m['memory']:.1f} % memory) "
              f"{p['latency_bound_ms']:.3f} ms, {p['memory_bound_mb']:.2f} MB")
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


def _measure_settings(args: argparse.Namespace):
    """MeasureSettings from --warmup/--repeats (None: the device profile's campaign settings)."""
    if args.warmup is None and args.repeats is None:
        return None
    from dataclasses import replace

    from host.errors import ConfigError
    from host.profiling.plan import MeasureSettings

    for name in ("warmup", "repeats"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise ConfigError(f"--{name} must be at least {0 if name == 'warmup' else 1}, got {value}")
    measure = MeasureSettings()
    if args.warmup is not None:
        measure = replace(measure, warmup_runs=args.warmup)
    if args.repeats is not None:
        measure = replace(measure, repeats=args.repeats, min_time_s=0.0)
    return measure


def _device_agent(stack, device: str, args: argparse.Namespace):
    """(measurer, agent address, note) for the device: --agent, else its inventory entry. For --live (or
    --drift-check on) an unreachable agent is an error; otherwise the note says why there is none."""
    from host.errors import AgentError, ConfigError, DeployError
    from host.profiling.measurers import open_agent

    need = args.live or args.drift_check == "on"
    if args.agent is None and not need:
        if args.drift_check == "off":
            return None, None, None
        from host.deploy.inventory import default_inventory_path, load_inventory

        inv = args.inventory or default_inventory_path()
        try:
            if device not in load_inventory(inv).devices:
                return None, None, f"no agent given (--agent) and {device!r} is not in the device inventory {inv}"
        except ConfigError:
            return None, None, f"no agent given (--agent) and no device inventory ({inv})"
    try:
        measurer, link = stack.enter_context(open_agent(device, args.agent, token=args.token, inventory=args.inventory))
        measurer.device_info()  # reachable?
    except (AgentError, DeployError) as exc:
        if need:
            raise
        return None, None, f"the agent of {device} is not reachable ({exc}): the profile is used as it is"
    return measurer, link.address, None
