"""The ``nnf`` command line: one entry point, one subcommand per verb.

Each subcommand lives in ``host/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code). The vocabulary shared
by all commands (option names, runtime names, ``--json``) is decided in ``host/commands/options.py``.

The contract every command keeps:

- ``--json``: exactly one JSON object on stdout's last line, and nothing else on stdout. An error, too,
  is one object ``{"error": ..., "type": ..., "hint": ...}`` (exit code 2); the same message goes to
  stderr for humans.
- Progress bars, notes and third-party logs go to stderr. Third-party logs are silenced unless ``-v``.
- Exit codes: 0 success, 1 a check that ran and failed (e.g. ``devices check``), 2 an error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from host import __version__
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

#: Loggers of third-party libraries that talk on import or conversion (quiet unless -v).
NOISY_LOGGERS: tuple[str, ...] = ("torch", "tensorflow", "absl", "jax", "jax._src", "torchao", "litert_torch",
                                  "ai_edge_litert", "onnxscript", "onnx_ir", "torch.onnx", "torch._export",
                                  "torch.export", "torch._dynamo", "torch._inductor", "paramiko", "adb_shell")


VERBOSE_HELP = "show third-party logs (TensorFlow, JAX, torch exporters, ...), silenced by default"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors keep the ``--json`` contract (one JSON object on stdout)."""

    def error(self, message: str) -> NoReturn:
        if _json_requested(sys.argv[1:] if _ARGV is None else _ARGV):
            _print_json_error(message, "UsageError", f"see `{self.prog} --help`")
        super().error(message)


_ARGV: list[str] | None = None


def _json_requested(argv: Sequence[str]) -> bool:
    return "--json" in argv


def _tidy(text: str | None) -> str | None:
    """Help text without reST markup: ``x`` -> `x`, :func:`x` -> `x`."""
    if not text or text == argparse.SUPPRESS:
        return text
    text = re.sub(r":(?:func|class|meth|mod|data|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _tidy_parser(p: argparse.ArgumentParser, *, top: bool = True) -> None:
    """Tidy help texts; give every subcommand ``-v`` too (``nnf export ... -v`` works like ``nnf -v export``)."""
    if not top and not any("--verbose" in a.option_strings for a in p._actions):
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    p.description = _tidy(p.description)
    p.epilog = _tidy(p.epilog)
    for a in p._actions:
        a.help = _tidy(a.help)
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                _tidy_parser(sp, top=False)
            for choice in a._choices_actions:
                choice.help = _tidy(choice.help)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nnf",
        description="NN-Factory: generate compact task- and device-specific models from a gated supernet.",
        epilog="Every command has --help; commands that print a result take --json. Docs: docs/ in the "
               "source tree (docs/cli.md lists every command).",
    )
    parser.add_argument("--version", action="version", version=f"nnf (NN-Factory) {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    _tidy_parser(parser)
    return parser


def print_json(obj: object) -> None:
    """Print one JSON object on its own line (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _print_json_error(message: str, kind: str, hint: str | None) -> None:
    print_json({"error": message, "type": kind, "hint": hint})


def error_hint(exc: BaseException, command: str) -> str:
    """What to do next about ``exc`` (its own ``hint`` when it has one)."""
    own = getattr(exc, "hint", None)
    if own:
        return str(own)
    from host import errors

    by_type: list[tuple[type, str]] = [
        (errors.MissingExtraError, "install the extra named in the error, then run the command again"),
        (errors.AgentError, "check the agent: `nnf agent info --agent HOST:PORT` (or `nnf devices check NAME`)"),
        (errors.DeployError, "`nnf devices check NAME` says what the device lacks"),
        (errors.CampaignError, "see `nnf profile --help`; a campaign store is resumed by running the same command"),
        (errors.SearchError, "relax the budgets (--latency-ms/--memory-mb) or check the device's profile"),
        (errors.SpecError, "regenerate or re-export the file named in the error"),
        (errors.ArtifactError, "regenerate or re-export the file named in the error"),
        (OSError, "check the path in the error: it must exist (inputs) or be in a writable directory (--out)"),
    ]
    for kind, hint in by_type:
        if isinstance(exc, kind):
            return hint
    return f"see `nnf {command} --help`"


def quiet_third_party(verbose: bool) -> None:
    """Silence third-party logs and C++ log lines unless ``verbose`` (``-v``); never touches user settings."""
    if verbose:
        return
    # C++ logs of TensorFlow / XLA / glog read these at import; respect values the user already set.
    for var, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "2"), ("ABSL_MIN_LOG_LEVEL", "3"),
                       ("TF_ENABLE_ONEDNN_OPTS", "0"), ("LITERT_TORCH_SHOW_PROGRESS", "n")):
        os.environ.setdefault(var, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be replaced, e.g. by tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_progress_logs() -> None:
    """NN-Factory's own INFO logs (``host.*`` loggers: progress of long steps) go to stderr, one line each."""
    logger = logging.getLogger("host")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("nnf: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _run(args: argparse.Namespace) -> int:
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(_ARGV)
    except SystemExit as exc:  # usage errors return their exit code (2) like every other error; --help exits
        if exc.code in (0, None):
            raise
        return int(exc.code) if isinstance(exc.code, int) else 2
    finally:
        _ARGV = None
    quiet_third_party(bool(getattr(args, "verbose", False)))
    show_progress_logs()
    want_json = bool(getattr(args, "json", False))
    command = " ".join(x for x in (args.command, *(getattr(args, k, None) for k in _SUBCOMMAND_DESTS)) if x)
    try:
        return _run(args)
    except (NNFactoryError, OSError) as exc:
        return _fail(exc, command, want_json)
    except KeyboardInterrupt:
        print(f"nnf {command}: interrupted", file=sys.stderr)
        if want_json:
            _print_json_error("interrupted", "KeyboardInterrupt", "run the command again; resumable work resumes")
        return 130


_SUBCOMMAND_DESTS = ("agent_command", "devices_command")


def _fail(exc: BaseException, command: str, want_json: bool) -> int:
    message = str(exc) if not isinstance(exc, OSError) else _os_message(exc)
    hint = error_hint(exc, command)
    print(f"nnf {command}: error: {message}", file=sys.stderr)
    if want_json:
        _print_json_error(message, type(exc).__name__, hint)
    return 2


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{what}: {exc.filename!s}" + (f" -> {exc.filename2!s}" if exc.filename2 else "")
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
