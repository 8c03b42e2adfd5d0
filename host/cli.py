"""The ``nnf`` command line: one entry point, one subcommand per verb.

Each subcommand lives in ``host/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code). Commands that print a
result accept ``--json`` and then print exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from host.errors import NNFactoryError

# Order = order in --help. Add a module here when adding a subcommand.
COMMAND_MODULES: tuple[str, ...] = (
    "host.commands.demo",
    "host.commands.tasks",
    "host.commands.train",
    "host.commands.generate",
    "host.commands.eval",
    "host.commands.export",
    "host.commands.agent",
    "host.commands.profile",
    "host.commands.fit",
    "host.commands.devices",
    "host.commands.deploy",
    "host.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnf",
        description="NN-Factory: generate compact task- and device-specific models from a gated supernet.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def print_json(obj: object) -> None:
    """Print one JSON object on its own line (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NNFactoryError as exc:
        print(f"nnf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
