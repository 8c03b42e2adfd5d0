"""``nnf profile``: run (or resume, or grow) a profiling campaign on one or more devices.

    nnf profile --device local-cpu --agent 127.0.0.1:50051 --backbone resnet_numvqa --samples 400
    nnf profile --device local-cpu --agent 127.0.0.1:50051 --backbone resnet_numvqa --samples 2000   # grows it
    nnf profile --device a --agent HOST1:PORT --device b --agent HOST2:PORT --backbone resnet18
    nnf profile --device phone --backbone resnet_numvqa          # inventory device: tunnel + token opened here

Each device gets its own durable store (``<campaigns-dir>/<device>/<backbone>-<runtime>.sqlite``); running the
same command again resumes where it stopped, and a larger --samples extends the campaign. The subnets mix
uniform random gates, stratified per-layer fractions and the generator's own models (the module assembler
of the checkpoint shipped for the backbone, or --checkpoint): see ``host.profiling.plan`` and docs/campaigns.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from pathlib import Path

from host.commands.options import (
    add_agent_arg,
    add_runtime_arg,
    add_target_arg,
    add_warmup_runs_arg,
    agent_runtime,
)
from host.errors import ConfigError

DEFAULT_MIX_WITH_GENERATOR = "uniform=0.4,stratified=0.2,generated=0.4"
DEFAULT_MIX_WITHOUT_GENERATOR = "uniform=0.7,stratified=0.3"


def default_campaigns_dir() -> Path:
    """``$NNF_CAMPAIGNS_DIR``, else ``$XDG_DATA_HOME/nn-factory/campaigns`` (see ``host.paths``)."""
    from host.paths import user_data_dir

    env = os.environ.get("NNF_CAMPAIGNS_DIR")
    return Path(env) if env else user_data_dir() / "campaigns"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="profile subnets of a supernet on device agents (durable, resumable, growable campaign)",
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
    p.add_argument("--token", default=None, help="agent bearer token for --agent (default: $NNF_AGENT_TOKEN)")
    p.add_argument("--backbone", required=True, help="supernet config name, e.g. resnet_numvqa, resnet18")
    p.add_argument("--samples", type=int, default=2000,
                   help="subnets to measure (default 2000); more than a store holds grows its campaign")
    p.add_argument("--mix", default=None, metavar="SOURCE=W,...",
                   help="sample mix: weights of uniform (random gates), stratified (per-layer fractions cover each "
                        f"layer's range) and generated (the generator's models). Default: {DEFAULT_MIX_WITH_GENERATOR} "
                        f"when a generator for the backbone is at hand, else {DEFAULT_MIX_WITHOUT_GENERATOR}; a stored "
                        "campaign keeps its own")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="generator checkpoint (or training run) whose models to sample (default: the one shipped "
                        "for the backbone)")
    p.add_argument("--space", default=None, help="task space of the generator (default: the checkpoint's)")
    add_runtime_arg(p, default="torchscript")
    add_target_arg(p)
    p.add_argument("--passes", type=int, default=1,
                   help="measure every subnet this many times in independently shuffled orders (3 = median of three)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (gate vectors and order)")
    p.add_argument("--reference-every", type=int, default=50,
                   help="re-measure the reference subnets every N samples to track drift (0 = never)")
    p.add_argument("--ratio-min", type=float, default=0.05,
                   help="smallest fraction of modules a uniform sample keeps (default 0.05)")
    p.add_argument("--ratio-max", type=float, default=1.0,
                   help="largest fraction of modules a uniform sample keeps (default 1.0)")
    p.add_argument("--jitter", type=float, default=0.3, help="per-layer keep-ratio spread around each sample's ratio")
    p.add_argument("--threads", type=int, default=1, help="threads the agent runs each subnet with (default 1)")
    add_warmup_runs_arg(p, default=5, help="untimed runs before measuring each subnet")
    p.add_argument("--repeats", type=int, default=30, help="minimum timed runs per subnet")
    p.add_argument("--min-time-s", type=float, default=1.0,
                   help="minimum timed seconds per subnet (default 1.0: a steadier high percentile than 0.5)")
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


def shipped_generator_for(backbone: str) -> Path | None:
    """The checkpoint shipped in the package whose supernet is ``backbone`` (None when there is none)."""
    import json

    from host.checkpoint import SHIPPED_DIR

    for ckpt in sorted(SHIPPED_DIR.glob("*/checkpoint.json")) if SHIPPED_DIR.is_dir() else []:
        try:
            if json.loads(ckpt.read_text(encoding="utf-8")).get("backbone") == backbone:
                return ckpt.parent
        except (OSError, ValueError):
            continue
    return None


def load_generator(backbone: str, layout, checkpoint: Path | None, space: str | None):
    """The generator to sample (``host.profiling.budget.FactoryGenerator``), checked against the supernet."""
    from host.generate import ModelFactory
    from host.profiling.budget import factory_generator

    path = checkpoint
    if path is None and space is None:
        path = shipped_generator_for(backbone)
        if path is None:
            raise ConfigError(
                f"the sample mix draws generated models, but no checkpoint for {backbone!r} ships with NN-Factory: "
                "pass --checkpoint DIR (a trained generator of this supernet), or drop 'generated' from --mix"
            )
    factory = ModelFactory.load(space=space, checkpoint=path)
    if factory.models.supernet.gate_layout().fingerprint() != layout.fingerprint():
        raise ConfigError(f"checkpoint {factory.checkpoint} generates gates for another supernet than {backbone!r}: "
                          "pass a checkpoint of this backbone")
    return factory_generator(factory)


def _stored_mix(paths: list[Path]):
    from host.profiling.store import CampaignStore

    for path in paths:
        if path.exists():
            with CampaignStore(path) as store:
                if store.get_meta("plan") is not None:
                    return store.plan().mix
    return None


def run(args: argparse.Namespace) -> int:
    import torch

    from host.cli import print_json
    from host.profiling.build import ExtractingBuilder
    from host.profiling.device_profile import safe_device_id
    from host.profiling.measurers import open_agent
    from host.profiling.plan import CampaignPlan, MeasureSettings, SampleMix
    from host.profiling.runner import CampaignRunner, DeviceTarget
    from host.profiling.store import CampaignStore, default_store_path
    from host.supernets import build_supernet

    devices = [safe_device_id(d) for d in args.device]
    user_runtime = args.runtime
    args.runtime = agent_runtime(args.runtime)  # stores, plans and the wire use the agent's runtime names
    if args.agent and len(args.agent) != len(devices):
        raise ConfigError(f"{len(devices)} --device but {len(args.agent)} --agent: give one agent per device, same order")
    if args.store and len(devices) > 1:
        raise ConfigError("--store names one store; with several devices use --campaigns-dir")
    torch.manual_seed(args.seed)  # deterministic weights: identical subnets give identical artifacts (dedup)
    torch.set_num_threads(1)
    net = build_supernet(args.backbone)
    layout = net.gate_layout()
    root = Path(args.campaigns_dir) if args.campaigns_dir else default_campaigns_dir()
    paths = [Path(args.store) if args.store else default_store_path(root, n, args.backbone, args.runtime) for n in devices]
    if args.mix is not None:
        mix = SampleMix.parse(args.mix)
    else:
        stored = _stored_mix(paths)
        has_generator = args.checkpoint is not None or args.space is not None or shipped_generator_for(args.backbone)
        mix = stored or SampleMix.parse(DEFAULT_MIX_WITH_GENERATOR if has_generator else DEFAULT_MIX_WITHOUT_GENERATOR)
    plan = CampaignPlan(
        backbone=args.backbone, layout_fingerprint=layout.fingerprint(), runtime=args.runtime,
        input_shape=tuple(net.input_shape), samples=args.samples, seed=args.seed, ratio_min=args.ratio_min,
        ratio_max=args.ratio_max, jitter=args.jitter, passes=args.passes, reference_every=args.reference_every,
        weights=args.weights, mix=mix,
        measure=MeasureSettings(threads=args.threads, warmup_runs=args.warmup_runs, repeats=args.repeats,
                                min_time_s=args.min_time_s, deadline_s=args.deadline_s,
                                clock=args.clock),
    )
    targets: list[DeviceTarget] = []
    with contextlib.ExitStack() as stack:
        for i, name in enumerate(devices):
            measurer, link = stack.enter_context(open_agent(
                name, args.agent[i] if args.agent else None, token=args.token, inventory=args.inventory,
                target=args.target, compression=args.compression, remote=args.remote))
            store = stack.enter_context(CampaignStore(paths[i]))
            targets.append(DeviceTarget(name, measurer, store, local=link.local))
            measurer.device_info()  # an unreachable agent fails now, before the slow preparations below
        generator = load_generator(args.backbone, layout, args.checkpoint, args.space) if mix.generated > 0 else None
        builder = ExtractingBuilder(net, args.runtime, constant_weights=args.weights == "constant")
        runner = CampaignRunner(plan, layout, builder, generator=generator,
                                progress=not args.no_progress and not args.json)
        summaries = runner.run(targets, stop_after=args.stop_after)
        stores = [str(t.store.path) for t in targets]
    hints = [fit_hint(d, args, user_runtime) for d in devices]
    out = {"backbone": args.backbone, "runtime": args.runtime, "samples": args.samples, "passes": args.passes,
           "mix": mix.fractions(), "next": hints,
           "devices": [s.to_json() | {"store": path} for s, path in zip(summaries, stores, strict=True)]}
    if args.json:
        print_json(out)
        return 0
    for s, path in zip(summaries, stores, strict=True):
        grown = {"grown": f" (campaign grown to {s.samples} samples)", "replanned": " (empty store: re-planned)"}
        print(f"device {s.device}: {s.measured_now} measured now, {s.already_done} already stored, "
              f"{s.failed_now} failed (model), {s.transient_now} transient failure(s), of {s.jobs_total} jobs "
              f"({s.seconds:.1f} s){grown.get(s.plan, '')}")
        if s.left_to_retry:
            print(f"  to retry         {s.left_to_retry} job(s) failed transiently (deadline, busy agent): re-run the "
                  "same command to measure them")
        print(f"  store            {path}")
        print(f"  mix measured     {', '.join(f'{k} {v}' for k, v in s.mix.items()) or 'nothing yet'}  "
              f"(planned {mix.describe()})")
        print(f"  median latency   {s.latency_median_us / 1000:.3f} ms over samples")
        print(f"  host s/subnet    {s.host_seconds_per_subnet:.3f}  (extraction + export + bookkeeping)")
        print(f"  profile s/subnet {s.profile_seconds_per_subnet:.3f}")
        print(f"  bytes sent/meas. {s.bytes_sent_per_sample:,.0f} payload, {s.wire_bytes_per_sample:,.0f} on the wire "
              f"(artifact mean {s.artifact_bytes_mean:,.0f})")
        print(f"  drift            {100 * s.drift['range']:.1f} % range over {s.drift['reference_rounds']} reference rounds "
              f"(first {s.drift['first']:.3f}, last {s.drift['last']:.3f})")
    for hint in hints:
        print(f"next: {hint}")
    return 0


def fit_hint(device: str, args: argparse.Namespace, runtime: str) -> str:
    """The ``nnf fit`` command for one device of this campaign, with every option it needs."""
    parts = ["nnf", "fit", "--device", device, "--backbone", args.backbone, "--runtime", runtime]
    if args.store:
        parts += ["--store", args.store]
    elif args.campaigns_dir:
        parts += ["--campaigns-dir", args.campaigns_dir]
    return shlex.join(parts)
