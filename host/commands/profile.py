"""``nnf profile``: run (or resume) a profiling campaign of random subnets on one or more devices.

    nnf profile --device local-cpu --agent 127.0.0.1:50051 --backbone resnet_numvqa --samples 400
    nnf profile --device a --agent HOST1:PORT --device b --agent HOST2:PORT --backbone resnet18

Each device gets its own durable store (``<campaigns-dir>/<device>/<backbone>-<runtime>.sqlite``); running the
same command again resumes where it stopped. The measuring protocol: docs/campaigns.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from host.commands.options import (
    add_agent_arg,
    add_runtime_arg,
    add_target_arg,
    add_warmup_runs_arg,
    agent_runtime,
)
from host.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def default_campaigns_dir() -> Path:
    """``$NNF_CAMPAIGNS_DIR``, else ``$XDG_DATA_HOME/nn-factory/campaigns`` (see ``host.paths``)."""
    from host.paths import user_data_dir

    env = os.environ.get("NNF_CAMPAIGNS_DIR")
    return Path(env) if env else user_data_dir() / "campaigns"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="profile random subnets of a supernet on device agents (durable, resumable campaign)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", action="append", required=True, metavar="NAME",
                   help="device name (repeat for several devices, each with its --agent)")
    add_agent_arg(p, action="append",
                  help="address of the device's agent (one per --device, same order); without it each device is "
                        "looked up in the device inventory and reached through its deployed agent")
    p.add_argument("--inventory", default=None,
                   help="device inventory TOML (default: $NNF_INVENTORY, ./devices.toml, ~/.config/nn-factory/devices.toml)")
    p.add_argument("--token", default=None, help="agent bearer token (default: $NNF_AGENT_TOKEN)")
    p.add_argument("--backbone", required=True, help="supernet config name, e.g. resnet_numvqa, resnet18")
    p.add_argument("--samples", type=int, default=2000, help="random subnets to measure (default 2000)")
    add_runtime_arg(p, default="torchscript")
    add_target_arg(p)
    p.add_argument("--passes", type=int, default=1,
                   help="measure every subnet this many times in independently shuffled orders (3 = median of three)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (gate vectors and order)")
    p.add_argument("--reference-every", type=int, default=50,
                   help="re-measure the reference subnets every N samples to track drift (0 = never)")
    p.add_argument("--ratio-min", type=float, default=0.05,
                   help="smallest fraction of modules a random subnet keeps (default 0.05)")
    p.add_argument("--ratio-max", type=float, default=1.0,
                   help="largest fraction of modules a random subnet keeps (default 1.0)")
    p.add_argument("--jitter", type=float, default=0.3, help="per-layer keep-ratio spread around each sample's ratio")
    p.add_argument("--threads", type=int, default=1, help="threads the agent runs each subnet with (default 1)")
    add_warmup_runs_arg(p, default=5, help="untimed runs before measuring each subnet")
    p.add_argument("--repeats", type=int, default=30, help="minimum timed runs per subnet")
    p.add_argument("--min-time-s", type=float, default=0.5, help="minimum timed seconds per subnet")
    p.add_argument("--deadline-s", type=float, default=120.0, help="per-subnet deadline on the agent")
    p.add_argument("--clock", default="wall", choices=["wall", "thread_cpu"],
                   help="wall: wall-clock time per run (default); thread_cpu: the worker thread's CPU time per run "
                        "(threads=1), robust when other work shares the device")
    p.add_argument("--weights", default="real", choices=["real", "constant"],
                   help="weights in the artifacts: the supernet's (default) or all zero: the same architecture and "
                        "cost, and with --compression gzip a few KB per subnet instead of MBs (slow links)")
    p.add_argument("--compression", default="none", choices=["none", "gzip", "deflate"],
                   help="compress uploads on the wire (pays off with --weights constant)")
    p.add_argument("--store", default=None, help="campaign store path (one device only)")
    p.add_argument("--campaigns-dir", default=None, help="where stores live (default $NNF_CAMPAIGNS_DIR, else ~/.local/share/nn-factory/campaigns)")
    p.add_argument("--remote", action="store_true",
                   help="the agents do not share this machine even if reached over loopback (e.g. an ssh tunnel): "
                        "host work may then overlap their measurements")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(func=run)


def open_device_session(name: str, inventory: str | None) -> tuple:
    """(DeviceSession, Device) for an inventory device with a deployed agent (host.deploy)."""
    try:
        from host.deploy.inventory import load_inventory
        from host.deploy.session import DeviceSession
    except ImportError as exc:  # the deploy package is optional in a partial install
        raise ConfigError(
            f"no --agent given for device {name!r} and no device inventory support here; give --agent HOST:PORT "
            "(start a local agent with `nnf agent start --local`)"
        ) from exc
    dev = load_inventory(inventory).get(name)
    return DeviceSession(dev), dev


def run(args: argparse.Namespace) -> int:
    import torch

    from host.cli import print_json
    from host.profiling.build import ExtractingBuilder
    from host.profiling.device_profile import safe_device_id
    from host.profiling.measurers import AgentMeasurer
    from host.profiling.plan import CampaignPlan, MeasureSettings
    from host.profiling.runner import CampaignRunner, DeviceTarget
    from host.profiling.store import CampaignStore, default_store_path
    from host.supernets import build_supernet

    devices = [safe_device_id(d) for d in args.device]
    args.runtime = agent_runtime(args.runtime)  # stores, plans and the wire use the agent's runtime names
    if args.agent and len(args.agent) != len(devices):
        raise ConfigError(f"{len(devices)} --device but {len(args.agent)} --agent: give one agent per device, same order")
    if args.store and len(devices) > 1:
        raise ConfigError("--store names one store; with several devices use --campaigns-dir")
    torch.manual_seed(args.seed)  # deterministic weights: identical subnets give identical artifacts (dedup)
    torch.set_num_threads(1)
    net = build_supernet(args.backbone)
    layout = net.gate_layout()
    plan = CampaignPlan(
        backbone=args.backbone, layout_fingerprint=layout.fingerprint(), runtime=args.runtime,
        input_shape=tuple(net.input_shape), samples=args.samples, seed=args.seed, ratio_min=args.ratio_min,
        ratio_max=args.ratio_max, jitter=args.jitter, passes=args.passes, reference_every=args.reference_every,
        weights=args.weights,
        measure=MeasureSettings(threads=args.threads, warmup_runs=args.warmup_runs, repeats=args.repeats,
                                min_time_s=args.min_time_s, deadline_s=args.deadline_s,
                                clock=args.clock),
    )
    root = Path(args.campaigns_dir) if args.campaigns_dir else default_campaigns_dir()
    token = args.token if args.token is not None else os.environ.get("NNF_AGENT_TOKEN")
    targets: list[DeviceTarget] = []
    sessions: list = []
    try:
        for i, name in enumerate(devices):
            if args.agent:
                addr, tok = args.agent[i], token
                local = (not args.remote) and addr.rsplit(":", 1)[0] in LOOPBACK
            else:
                session, dev = open_device_session(name, args.inventory)
                sessions.append(session)
                addr, tok = session.address, session.token
                local = dev.transport == "local" and not args.remote
            path = Path(args.store) if args.store else default_store_path(root, name, args.backbone, args.runtime)
            store = CampaignStore(path)
            measurer = AgentMeasurer(addr, token=tok, device=args.target,
                                     compression=None if args.compression == "none" else args.compression)
            targets.append(DeviceTarget(name, measurer, store, local=local))
            measurer.device_info()  # an unreachable agent fails now, before the builder's calibration
        builder = ExtractingBuilder(net, args.runtime, constant_weights=args.weights == "constant")
        runner = CampaignRunner(plan, layout, builder, progress=not args.no_progress and not args.json)
        summaries = runner.run(targets, stop_after=args.stop_after)
    finally:
        for t in targets:
            t.measurer.close()  # type: ignore[attr-defined]
            t.store.close()
        for session in sessions:
            session.close()
    out = {"backbone": args.backbone, "runtime": args.runtime, "samples": args.samples, "passes": args.passes,
           "devices": [s.to_json() | {"store": str(t.store.path)} for s, t in zip(summaries, targets, strict=True)]}
    if args.json:
        print_json(out)
        return 0
    for s, t in zip(summaries, targets, strict=True):
        print(f"device {s.device}: {s.measured_now} measured now, {s.already_done} already stored, "
              f"{s.failed_now} failed, of {s.jobs_total} jobs ({s.seconds:.1f} s)")
        print(f"  store            {t.store.path}")
        print(f"  median latency   {s.latency_median_us / 1000:.3f} ms over samples")
        print(f"  host s/subnet    {s.host_seconds_per_subnet:.3f}  (extraction + export + bookkeeping)")
        print(f"  profile s/subnet {s.profile_seconds_per_subnet:.3f}")
        print(f"  bytes sent/meas. {s.bytes_sent_per_sample:,.0f} payload, {s.wire_bytes_per_sample:,.0f} on the wire "
              f"(artifact mean {s.artifact_bytes_mean:,.0f})")
        print(f"  drift            {100 * s.drift['range']:.1f} % range over {s.drift['reference_rounds']} reference rounds "
              f"(first {s.drift['first']:.3f}, last {s.drift['last']:.3f})")
    print(f"next: nnf fit --device {devices[0]} --backbone {args.backbone}")
    return 0
