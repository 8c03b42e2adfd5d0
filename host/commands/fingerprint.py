"""``nnf devices fingerprint NAME``: is the device still the one its profile describes?

    nnf devices fingerprint local-cpu --agent 127.0.0.1:PORT
    nnf devices fingerprint phone                      # inventory device: tunnel + token opened here

Re-measures the profile's reference subnets (the full model, 50 % and 25 % of the modules) on the device's
agent, a few seconds, and compares them with the values stored at profiling time (``host.profiling.drift``):
``proceed`` (within tolerance), ``rescaled`` (a uniform change: predictions would be multiplied by one
factor) or ``refused`` (the references moved unevenly or by more than 2x: re-profile, or search with
``--live``). ``nnf generate --device`` runs the same check by default whenever the agent is reachable.
Exit code 0 unless refused (1).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from host.commands.options import add_agent_arg, add_runtime_arg

    p = sub.add_parser("fingerprint", help="re-measure a device's reference subnets and compare them with its profile",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="device name (its profile, and its inventory entry unless --agent is given)")
    add_agent_arg(p, help="the device's agent (default: the inventory's deployed agent, tunnel and token opened here)")
    p.add_argument("--token", default=None, help="agent bearer token for --agent (default: $NNF_AGENT_TOKEN)")
    p.add_argument("--inventory", default=None, help="device inventory TOML (default $NNF_INVENTORY or ./devices.toml)")
    p.add_argument("--profile", default=None, help="device profile id (default: NAME)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="device profiles directory")
    p.add_argument("--backbone", default=None, help="supernet config of the profile entry (needed if it has several)")
    add_runtime_arg(p, help="runtime of the profile entry (needed if it has several)")
    p.add_argument("--percentile", default="90", choices=["50", "90", "99"],
                   help="statistic of the reference runs to compare (default 90)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _entry(profile: str, backbone: str | None, runtime: str | None, root: Path | None) -> dict:
    from host.errors import ConfigError
    from host.profiling.device_profile import read_profile

    entries = [e for e in read_profile(profile, root)["profiles"].values()
               if (backbone is None or e.get("config") == backbone) and (runtime is None or e.get("runtime") == runtime)]
    if len(entries) != 1:
        have = ", ".join(f"{e.get('config')}/{e.get('runtime')}" for e in read_profile(profile, root)["profiles"].values())
        raise ConfigError(f"profile {profile!r} has {'no' if not entries else 'several'} matching entries (it has: "
                          f"{have or 'none'}): pass --backbone and/or --runtime")
    return entries[0]


def run(args: argparse.Namespace) -> int:
    import torch

    from host.cli import print_json
    from host.profiling.data import percentile_name
    from host.profiling.device_profile import safe_device_id
    from host.profiling.drift import fingerprint
    from host.profiling.measurers import open_agent
    from host.supernets import build_supernet

    name = safe_device_id(args.name)
    profile = safe_device_id(args.profile or name)
    pct = percentile_name(args.percentile)
    from host.commands.options import agent_runtime

    entry = _entry(profile, args.backbone, agent_runtime(args.runtime), args.profiles_dir)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = build_supernet(entry["config"])
    with open_agent(name, args.agent, token=args.token, inventory=args.inventory) as (measurer, link):
        check = fingerprint(entry, net.gate_layout(), net, measurer, percentile=pct, agent=link.address)
    out = {"device": name, "profile": profile, "config": entry["config"], "runtime": entry["runtime"],
           "profiled_at": entry.get("fitted_at"), **check.to_json()}
    if args.json:
        print_json(out)
    else:
        print(f"device {name} vs profile {profile} ({entry['config']}/{entry['runtime']}, fitted {entry.get('fitted_at')}):"
              f" {check.status}")
        print(f"  {check.message}")
        print(f"  reference {pct} latency measured/profiled: {', '.join(f'{x:.3f}' for x in check.latency_ratios)}"
              f"   peak memory: {', '.join(f'{x:.3f}' for x in check.memory_ratios) or 'n/a'}"
              f"   ({check.seconds:.1f} s)")
    return 1 if check.status == "refused" else 0
