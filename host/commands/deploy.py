"""``nnf deploy|undeploy|logs|tunnel NAME``: put the agent on a device, remove it, read its log, reach it.

- ``deploy NAME``    package the agent (a reproducible tarball: same code = same release = nothing copied),
                     verify the device's Python and requirements, copy over SFTP / adb sync, start the agent
                     on the device's loopback and health-check it through an ssh/adb tunnel
- ``undeploy NAME``  stop the agent and remove everything deploy created on the device
- ``logs NAME``      print the agent's log (``--lines N`` for the tail)
- ``tunnel NAME``    keep a tunnel open (``127.0.0.1:<port>`` on this host -> the agent) until Ctrl-C,
                     reconnecting after drops; ``--print-token`` also prints the agent's bearer token
(These four verbs share this module because they share the device/transport plumbing.)
"""

from __future__ import annotations

import argparse
import sys
import time

from host.cli import print_json
from host.commands.devices import add_host_key_arg, add_inventory_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    specs = (
        ("deploy", "deploy the agent to a device over ssh/adb (or locally) and start it"),
        ("undeploy", "stop the agent on a device and remove what deploy copied"),
        ("logs", "print the agent's log from a device"),
        ("tunnel", "hold a tunnel from a local port to a device's agent (Ctrl-C to stop)"),
    )
    for name, help_text in specs:
        p = subparsers.add_parser(name, help=help_text, description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("name", help="device name from the inventory")
        add_inventory_arg(p)
        add_host_key_arg(p)
        if name != "logs":
            p.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "deploy":
            p.add_argument("--restart", action="store_true", help="restart the agent even if this release runs")
        if name == "logs":
            p.add_argument("--lines", type=int, default=None, help="only the last N lines")
        if name == "tunnel":
            p.add_argument("--local-port", type=int, default=0, help="local port (default: any free port)")
            p.add_argument("--print-token", action="store_true", help="also print the agent's bearer token")
            p.add_argument("--duration-s", type=float, default=None, help="close after this many seconds")
        p.set_defaults(func=_HANDLERS[name])


def _device(args: argparse.Namespace):
    from host.deploy.inventory import load_inventory

    return load_inventory(args.inventory).get(args.name)


def _deploy(args: argparse.Namespace) -> int:
    from host.deploy.deployer import deploy
    from host.deploy.transport import connect

    device = _device(args)
    with connect(device, accept_new_host_key=args.accept_new_host_key) as t:
        report = deploy(t, restart=args.restart)
    if args.json:
        print_json(report.to_json())
    else:
        copied = (f"copied {report.copied_bytes} bytes" if report.copied_bytes
                  else "release already on the device, nothing copied")
        state = "started" if report.started else "already running"
        print(f"{device.name}: agent {report.release_id} {state} (pid {report.pid}, device loopback port "
              f"{report.port}); {copied}; {report.elapsed_s:.1f} s")
    return 0


def _undeploy(args: argparse.Namespace) -> int:
    from host.deploy.deployer import undeploy
    from host.deploy.transport import connect

    device = _device(args)
    with connect(device, accept_new_host_key=args.accept_new_host_key) as t:
        out = undeploy(t)
    if args.json:
        print_json(out)
    elif out["removed"]:
        print(f"{device.name}: agent {'stopped and ' if out['stopped'] else ''}removed ({out['workdir']})")
    else:
        print(f"{device.name}: nothing deployed in {out['workdir']}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from host.deploy.deployer import fetch_log
    from host.deploy.transport import connect

    device = _device(args)
    with connect(device, accept_new_host_key=args.accept_new_host_key) as t:
        sys.stdout.write(fetch_log(t, args.lines))
    return 0


def _tunnel(args: argparse.Namespace) -> int:
    from host.deploy.session import DeviceSession

    device = _device(args)
    with DeviceSession(device, local_port=args.local_port, accept_new_host_key=args.accept_new_host_key) as s:
        info = {"device": device.name, "address": s.address, "agent_port_on_device": s.state.port}
        if args.print_token:
            info["token"] = s.token
        if args.json:
            print_json(info)
        else:
            print(f"{device.name}: agent reachable at {s.address} (Ctrl-C to close)", flush=True)
            if args.print_token:
                print(f"token: {s.token}", flush=True)
        deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


_HANDLERS = {"deploy": _deploy, "undeploy": _undeploy, "logs": _logs, "tunnel": _tunnel}
