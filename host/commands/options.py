"""The vocabulary of the ``nnf`` command line, and the option helpers every command uses.

One name per concept. Every command that needs one of these concepts adds it through the helper below
(so the name, the parsing and the help text are the same everywhere); a new command or option follows
this table, and a new concept is added here first.

======================  =====================================  ==============================================
concept                 option and values                      old spellings (deprecated: still accepted,
                                                               with a note on stderr; removed in 0.3)
======================  =====================================  ==============================================
runtime / format        ``--runtime``, ``--format``:           ``torch_export``, ``onnxruntime``, ``litert``,
                        ``torchscript``, ``torch-export``,     ``torch`` (and a few more, see
                        ``onnx``, ``tflite`` (one name for     ``host.exports.formats.ALIASES``)
                        an artifact format and the runtime
                        that loads it; the table is
                        ``host/exports/formats.py``)
inventory device        ``--device NAME``: a device of the     (``profile-model --device cpu|cuda`` meant the
                        inventory (``devices.toml``), or the   execution device: now ``--target``)
                        device id of campaigns and profiles
execution device        ``--target cpu|cuda[:N]`` (on the      ``profile-model --device``
                        agent)
warm-up runs            ``--warmup-runs N``                    ``--warmup``
input shapes            ``--input-shape 1,3,32,32`` (or        ``--input``
                        ``1x3x32x32``; repeat per input)
agent address           ``--agent HOST:PORT`` (the port is
                        required)
output                  ``--out PATH``
machine-readable        ``--json``: exactly one JSON object
                        on stdout's last line, errors included
                        (``{"error", "type", "hint"}``, exit 2)
progress                ``--no-progress``; progress always
                        goes to stderr
======================  =====================================  ==============================================

Units are part of option names (``--latency-ms``, ``--memory-mb``, ``--min-time-s``, ``--deadline-s``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from host.errors import ConfigError
from host.exports.formats import FORMATS, resolve_format

#: The runtime/format names users type (``host/exports/formats.py`` holds what each one means).
RUNTIME_NAMES: tuple[str, ...] = tuple(FORMATS)

_noted: set[str] = set()


def note(message: str) -> None:
    """A one-line note for the user on stderr (never on stdout, which belongs to ``--json``)."""
    print(f"nnf: note: {message}", file=sys.stderr)


def deprecated(old: str, new: str) -> None:
    """Say once per process that ``old`` is a deprecated spelling of ``new``."""
    if old in _noted:
        return
    _noted.add(old)
    note(f"{old} is deprecated and will be removed in NN-Factory 0.3; use {new}")


# ---- runtime / format -----------------------------------------------------------------------------


def runtime_type(text: str) -> str:
    """argparse ``type=`` for ``--runtime``/``--format``: the canonical name of any accepted spelling."""
    try:
        fmt, alias = resolve_format(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if alias:
        deprecated(repr(text), repr(fmt.name))
    return fmt.name


def agent_runtime(name: str | None) -> str | None:
    """The agent's wire name for a runtime/format name (``tflite`` -> ``litert``); None stays None."""
    return None if name is None else resolve_format(name)[0].agent_runtime


def add_runtime_arg(p: argparse.ArgumentParser, *, default: str | None = None, help: str | None = None) -> None:
    """``--runtime {torchscript,torch-export,onnx,tflite}`` (old spellings accepted)."""
    p.add_argument("--runtime", type=runtime_type, default=default, metavar="RUNTIME",
                   help=(help or "runtime on the device, named by the format it loads") +
                   f": {', '.join(RUNTIME_NAMES)}" + (" (default: %(default)s)" if default else ""))


def add_format_arg(p: argparse.ArgumentParser, *, required: bool = False, help: str | None = None) -> None:
    """``--format {torchscript,torch-export,onnx,tflite}`` (old spellings accepted)."""
    p.add_argument("--format", type=runtime_type, required=required, default=None, metavar="FORMAT",
                   help=(help or "artifact format") + f": {', '.join(RUNTIME_NAMES)}")


# ---- deprecated option spellings ------------------------------------------------------------------


class _DeprecatedOption(argparse.Action):
    """An old option spelling: notes the deprecation, then acts like the new option."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, inner: str = "store",
                 **kwargs: Any) -> None:
        self.new, self.inner = new, inner
        if inner in ("store_true", "store_false"):
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        deprecated(option_string or self.option_strings[0], self.new)
        if self.inner == "append":
            items = list(getattr(namespace, self.dest, None) or [])
            items.append(values)
            setattr(namespace, self.dest, items)
        elif self.inner == "store_true":
            setattr(namespace, self.dest, True)
        else:
            setattr(namespace, self.dest, values)


def add_deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, *, dest: str, inner: str = "store",
                         **kwargs: Any) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of option ``new`` (same ``dest``)."""
    p.add_argument(old, action=_DeprecatedOption, new=new, inner=inner, dest=dest, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS, **kwargs)


# ---- measurement settings -------------------------------------------------------------------------


def add_warmup_runs_arg(p: argparse.ArgumentParser, *, default: int | None = None, help: str | None = None) -> None:
    """``--warmup-runs N`` (old spelling ``--warmup``)."""
    text = help or "untimed runs before measuring"
    text += " (default: %(default)s)" if default is not None else " (default: the agent's, 10)"
    p.add_argument("--warmup-runs", type=int, default=default, metavar="N", help=text)
    add_deprecated_alias(p, "--warmup", "--warmup-runs", dest="warmup_runs", type=int)


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """``1,3,32,32`` or ``1x3x32x32`` -> (1, 3, 32, 32); a ConfigError naming ``option`` otherwise."""
    try:
        dims = tuple(int(x) for x in str(text).lower().replace("x", ",").replace(" ", "").split(",") if x)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"{option} {text!r}: expected positive dimensions like 1,3,32,32 (or 1x3x32x32)")
    return dims


def add_input_shape_arg(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--input-shape D0,D1,...`` repeatable, one per model input (old spelling ``--input``)."""
    p.add_argument("--input-shape", action="append", default=[], metavar="D0,D1,...",
                   help=help or "input shape incl. batch, e.g. 1,3,32,32 (repeat once per input)")
    add_deprecated_alias(p, "--input", "--input-shape", dest="input_shape", inner="append", metavar="SHAPE")


def sidecar_inputs(artifact: str | Path) -> list[dict[str, Any]]:
    """The inputs (``name``, ``shape``, ``dtype``) recorded in ``ARTIFACT.json`` by ``nnf export``, or [].

    Lets ``--input-shape`` be omitted for exports whose format does not record shapes (TorchScript).
    A sidecar that exists but does not match the artifact is an error, not silently ignored.
    """
    from host.exports.export import read_sidecar, sidecar_path

    if not sidecar_path(Path(artifact)).is_file():
        return []
    return [dict(i) for i in read_sidecar(artifact).get("inputs") or []]


def add_target_arg(p: argparse.ArgumentParser, *, old_device_alias: bool = False) -> None:
    """``--target cpu|cuda[:N]``: where the agent runs the model. ``old_device_alias``: also the old
    ``--device cpu|cuda`` of ``profile-model``."""
    p.add_argument("--target", type=target_type, default="cpu", metavar="cpu|cuda[:N]",
                   help="execution device on the agent (default: %(default)s)")
    if old_device_alias:
        add_deprecated_alias(p, "--device", "--target", dest="target", type=target_type)


def target_type(text: str) -> str:
    t = str(text).strip().lower()
    if t == "cpu" or t == "cuda" or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise argparse.ArgumentTypeError(f"{text!r} is not an execution device; use cpu, cuda or cuda:N")


# ---- addresses, output, JSON ----------------------------------------------------------------------


def agent_address(text: str) -> str:
    """argparse ``type=`` for ``--agent``: ``HOST:PORT`` with an explicit port (``[::1]:PORT`` for IPv6)."""
    t = str(text).strip()
    host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or (
            ":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT; give the agent's port too, e.g. 127.0.0.1:50051 (the port "
            "`nnf agent start` or `nnf tunnel` printed)")
    return t


def add_agent_arg(p: argparse.ArgumentParser, *, required: bool = False, action: str = "store",
                  help: str | None = None) -> None:
    """``--agent HOST:PORT``."""
    kw: dict[str, Any] = {"default": [] if action == "append" else None}
    p.add_argument("--agent", type=agent_address, required=required, action=action, metavar="HOST:PORT",
                   help=help or "address of a running agent (port required)", **kw)


def check_out(path: str | Path, *, directory: bool, option: str = "--out") -> Path:
    """Check before any work that ``path`` can be written; a ConfigError saying what to do otherwise.

    ``directory``: the command writes a directory there (else a file). Catches a path under a file, a
    directory where a file is meant (and the reverse), and a location nothing can be created in
    (read-only, ``/proc``, no permission) by creating and removing a temporary file in the nearest
    existing directory. Nothing is left behind.
    """
    import tempfile

    p = Path(path).expanduser()
    if p.exists() and directory and not p.is_dir():
        raise ConfigError(f"{option} {p} is an existing file; give a directory path (new or existing)")
    if p.exists() and not directory and p.is_dir():
        raise ConfigError(f"{option} {p} is a directory; give a file path")
    anchor = p if p.is_dir() else p.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ConfigError(f"{option} {p} lies under {anchor}, which is a file, not a directory; choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {p}: nothing can be written in {anchor} ({exc.strerror or exc}); choose a "
                          f"writable location for {option}") from None
    return p


def add_json_arg(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: one JSON object on stdout's last line (errors as ``{"error", "type", "hint"}``)."""
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as one JSON object on stdout (errors too, as {{\"error\", \"type\", \"hint\"}})")


__all__ = [
    "RUNTIME_NAMES",
    "add_agent_arg",
    "add_deprecated_alias",
    "add_format_arg",
    "add_input_shape_arg",
    "add_json_arg",
    "add_runtime_arg",
    "add_target_arg",
    "add_warmup_runs_arg",
    "agent_address",
    "check_out",
    "agent_runtime",
    "deprecated",
    "note",
    "parse_shape",
    "runtime_type",
    "sidecar_inputs",
    "target_type",
]
