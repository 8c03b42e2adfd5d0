"""``nnf devices list|show|check|profile``: the device inventory and what each device can do.

- ``list``     every device of the inventory (name, transport, address, runtime, workdir)
- ``show``     one device's settings
- ``check``    connect and report: reachable, Python + agent requirements + runtime present, free disk,
               agent deployable, agent running (exit code 1 when not deployable)
- ``profile``  upload an artifact to the device's running agent through the tunnel and profile it
- ``fingerprint``  re-measure the reference subnets of the device's profile and compare (drift check)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from host.cli import print_json
from host.commands.options import (
    add_input_shape_arg,
    add_json_arg,
    add_runtime_arg,
    add_warmup_runs_arg,
    agent_runtime,
    parse_shape,
    sidecar_inputs,
)


def add_inventory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inventory", default=None,
                   help="device inventory TOML (default: $NNF_INVENTORY, ./devices.toml, "
                        "~/.config/nn-factory/devices.toml)")


def add_host_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="ssh: trust an unknown host key on first use and record it in known_hosts "
                        "(a changed key is still refused)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="list, show and check the devices of the inventory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    sub.required = True
    for name, help_text in (("list", "list the devices"), ("show", "show one device's settings"),
                            ("check", "connect and check that the agent can be deployed and runs"),
                            ("profile", "profile an artifact on the device's deployed agent")):
        sp = sub.add_parser(name, help=help_text)
        add_inventory_arg(sp)
        add_json_arg(sp)
        if name != "list":
            sp.add_argument("name", help="device name from the inventory")
        if name in ("check", "profile"):
            add_host_key_arg(sp)
        if name == "profile":
            sp.add_argument("artifact", help="model artifact (.onnx, .pt, .pt2, .tflite)")
            add_input_shape_arg(sp, help="input shape incl. batch, e.g. 1,3,224,224 (repeat once per input; "
                                         "default: from the artifact's sidecar or the model itself)")
            add_runtime_arg(sp, help="runtime (default: from the file suffix)")
            sp.add_argument("--threads", type=int, default=None, help="threads (default: the device's threads or 1)")
            sp.add_argument("--repeats", type=int, default=None, help="minimum timed runs (default: the agent's, 30)")
            add_warmup_runs_arg(sp)
            sp.add_argument("--min-time-s", type=float, default=None,
                            help="minimum timed seconds (default: the agent's, 1)")
        sp.set_defaults(func=_handler)
    from host.commands.fingerprint import add_parser as add_fingerprint  # drift check (host.profiling.drift)

    add_fingerprint(sub)


def _handler(args: argparse.Namespace) -> int:
    from host.deploy.inventory import load_inventory

    inv = load_inventory(args.inventory)
    action = args.devices_command
    if action == "list":
        rows = [d.to_json() for d in inv.devices.values()]
        if args.json:
            print_json({"inventory": str(inv.path), "devices": rows})
        else:
            if not rows:
                print(f"no devices in {inv.path}")
            for d in inv.devices.values():
                print(f"{d.name:<16} {d.transport:<6} {d.address:<28} runtime={d.runtime:<7} workdir={d.workdir}")
        return 0
    device = inv.get(args.name)
    if action == "show":
        if args.json:
            print_json(device.to_json())
        else:
            for k, v in device.to_json().items():
                print(f"{k:<20} {v}")
        return 0
    if action == "check":
        return _check(device, args)
    return _profile(device, args)


def _check(device: Any, args: argparse.Namespace) -> int:
    from host.deploy.deployer import check_device
    from host.deploy.transport import connect
    from host.errors import DeployError

    try:
        with connect(device, accept_new_host_key=args.accept_new_host_key) as t:
            report = check_device(t)
    except DeployError as exc:
        report = {"device": device.name, "reachable": False, "deployable": False, "problems": [str(exc)],
                  "agent_running": False}
    if args.json:
        print_json(report)
    else:
        print(f"device {device.name} ({device.address}): "
              f"{'reachable' if report['reachable'] else 'NOT reachable'}")
        if report.get("python"):
            print(f"  {report.get('machine') or 'unknown architecture'}, {report.get('cpu_count') or '?'} CPUs, "
                  f"python {'.'.join(map(str, report['python']))}, runtimes: "
                  f"{', '.join(report.get('runtimes', {})) or 'none'}, free {report['free_bytes'] >> 20} MiB")
            for runtime, how in report.get("runtimes_missing", {}).items():
                print(f"  runtime {runtime} not installed (to add it: {how})")
        for problem in report["problems"]:
            print(f"  problem: {problem}")
        print(f"  deployable: {'yes' if report['deployable'] else 'no'}; agent running: "
              f"{'yes (release ' + str(report.get('agent_release')) + ')' if report['agent_running'] else 'no'}")
    return 0 if report["deployable"] else 1


def _profile(device: Any, args: argparse.Namespace) -> int:
    from host.client import ProfileRequest, TensorSpec
    from host.deploy.session import DeviceSession

    inputs = [TensorSpec(parse_shape(s)) for s in args.input_shape] or [
        TensorSpec(tuple(i["shape"]), str(i.get("dtype", "float32")))
        for i in sidecar_inputs(args.artifact)]
    threads = args.threads or device.threads or 1
    kw: dict[str, Any] = {"inputs": inputs, "threads": threads, "repeats": args.repeats,
                          "warmup_runs": args.warmup_runs, "min_time_s": args.min_time_s,
                          "cpu_affinity": tuple(device.affinity)}
    with DeviceSession(device, accept_new_host_key=args.accept_new_host_key) as session, \
            session.client() as client:
        if args.runtime:
            req = ProfileRequest(artifact_sha256="", runtime=agent_runtime(args.runtime), **kw)
            res = client.upload_and_profile(args.artifact, req)
        else:
            res = client.upload_and_profile(args.artifact, **kw)
    out = {"device": device.name, "artifact": str(args.artifact), "sha256": res.artifact_sha256,
           "runtime": res.runtime, "median_latency_us": res.median_latency_us, "p90_latency_us": res.p90_latency_us,
           "min_latency_us": res.min_latency_us, "samples": len(res.samples_ns), "peak_bytes": res.peak_bytes,
           "peak_method": res.peak_method, "threads": threads}
    if args.json:
        print_json(out)
    else:
        print(json.dumps(out, indent=2, sort_keys=True))
    return 0
