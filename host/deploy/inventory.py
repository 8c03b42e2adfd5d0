"""The device inventory: one TOML file naming every device the host can deploy the agent to.

Each ``[devices.NAME]`` table says how to reach the device (``transport = "local" | "ssh" | "adb"``), where
its credentials are (a key *file* path or the name of an environment variable, never a secret itself), which
Python interpreter and runtime the agent uses there, how many threads / which cores it may use, and the working
directory the agent is deployed into. Example::

    [devices.jetson]
    transport = "ssh"
    host = "192.168.1.40"          # port = 22, user = "nvidia"
    user = "nvidia"
    key_file = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"
    python = "/usr/bin/python3"
    runtime = "torchscript"       # or torch-export, onnx, tflite, auto (any the device has)
    threads = 4
    affinity = [4, 5, 6, 7]
    workdir = "nnf-agent"          # relative paths are relative to the remote home directory

    [devices.phone]
    transport = "adb"
    serial = "192.168.1.23:5555"   # host:port = adb over TCP; anything else = a USB serial number
    adb_key = "~/.android/adbkey"
    python = "/data/local/tmp/python/bin/python3"
    runtime = "tflite"
    workdir = "/data/local/tmp/nnf-agent"

Unknown keys are errors (with a "did you mean" hint), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from host.errors import ConfigError, suggest
from host.exports.formats import FORMATS, resolve_format

TRANSPORTS: tuple[str, ...] = ("local", "ssh", "adb")
#: ``runtime = ...``: "auto" or a runtime/format name (host/exports/formats.py; older spellings such as
#: "torch" or "litert" are accepted and stored under their current name).
RUNTIMES: tuple[str, ...] = ("auto", *FORMATS)
DEFAULT_INVENTORY = "devices.toml"
INVENTORY_ENV = "NNF_INVENTORY"


@dataclass(frozen=True)
class Device:
    """One device of the inventory (see the module docstring for the TOML form)."""

    name: str
    transport: str = "local"
    # ssh
    host: str | None = None
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    key_passphrase_env: str | None = None  # name of an env var holding the key's passphrase (never the value)
    known_hosts: str | None = None  # default: ~/.ssh/known_hosts
    accept_new_host_key: bool = False  # trust-on-first-use; a *changed* key is always refused
    # adb
    serial: str | None = None  # "host:port" (TCP) or a USB serial number
    adb_key: str | None = None  # default: ~/.android/adbkey
    # agent on the device
    python: str = "python3"
    runtime: str = "auto"
    threads: int | None = None
    affinity: tuple[int, ...] = ()
    workdir: str = "nnf-agent"
    agent_port: int = 0  # port the agent binds on the device's loopback; 0 = any free port
    connect_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runtime != "auto":  # any accepted spelling ("torch", "litert", ...) is stored under its current name
            try:
                object.__setattr__(self, "runtime", resolve_format(str(self.runtime))[0].name)
            except ConfigError:
                raise ConfigError(f"device {self.name!r}: runtime must be one of {', '.join(RUNTIMES)}, "
                                  f"got {self.runtime!r}.{suggest(str(self.runtime), RUNTIMES)}") from None

    @property
    def address(self) -> str:
        """Human-readable address of the device (for messages and ``devices list``)."""
        if self.transport == "ssh":
            user = f"{self.user}@" if self.user else ""
            return f"{user}{self.host}:{self.port}"
        if self.transport == "adb":
            return f"adb:{self.serial}"
        return "local"

    @property
    def runtime_family(self) -> str:
        """The runtime package the agent needs ("torch", "onnx", "litert"), or "auto"."""
        return "auto" if self.runtime == "auto" else FORMATS[self.runtime].runtime_family

    @property
    def adb_over_tcp(self) -> bool:
        return self.serial is not None and ":" in self.serial

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["address"] = self.address
        return out


_FIELD_NAMES = tuple(f.name for f in fields(Device) if f.name != "name")


def expand_local_path(path: str | None) -> Path | None:
    """Expand ``~`` and environment variables in a host-side path from the inventory."""
    if path is None:
        return None
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _check_type(dev: str, key: str, value: Any, kinds: tuple[type, ...]) -> None:
    ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"device {dev!r}: {key} must be {names}, got {value!r}")


def device_from_table(name: str, table: dict[str, Any]) -> Device:
    """Validate one ``[devices.NAME]`` table and build a :class:`Device`."""
    for key in table:
        if key not in _FIELD_NAMES:
            raise ConfigError(
                f"device {name!r}: unknown key {key!r}.{suggest(key, _FIELD_NAMES)} "
                f"Known keys: {', '.join(_FIELD_NAMES)}"
            )
    kw: dict[str, Any] = dict(table)
    str_keys = ("transport", "host", "user", "key_file", "key_passphrase_env", "known_hosts", "serial",
                "adb_key", "python", "runtime", "workdir")
    for key in str_keys:
        if key in kw:
            _check_type(name, key, kw[key], (str,))
    for key in ("port", "agent_port"):
        if key in kw:
            _check_type(name, key, kw[key], (int,))
            if not 0 <= kw[key] <= 65535:
                raise ConfigError(f"device {name!r}: {key} must be in 0..65535, got {kw[key]}")
    if "threads" in kw:
        _check_type(name, "threads", kw["threads"], (int,))
        if kw["threads"] < 1:
            raise ConfigError(f"device {name!r}: threads must be >= 1, got {kw['threads']}")
    for key in ("connect_timeout_s", "start_timeout_s"):
        if key in kw:
            _check_type(name, key, kw[key], (int, float))
            if kw[key] <= 0:
                raise ConfigError(f"device {name!r}: {key} must be > 0")
            kw[key] = float(kw[key])
    if "accept_new_host_key" in kw:
        _check_type(name, "accept_new_host_key", kw["accept_new_host_key"], (bool,))
    if "affinity" in kw:
        aff = kw["affinity"]
        if not isinstance(aff, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                for c in aff):
            raise ConfigError(f"device {name!r}: affinity must be a list of CPU indices, got {aff!r}")
        kw["affinity"] = tuple(aff)
    if "env" in kw:
        env = kw["env"]
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError(f"device {name!r}: env must be a table of string values")
    transport = kw.get("transport", "local")
    if transport not in TRANSPORTS:
        raise ConfigError(f"device {name!r}: transport must be one of {', '.join(TRANSPORTS)}, "
                          f"got {transport!r}.{suggest(transport, TRANSPORTS)}")
    if transport == "ssh" and not kw.get("host"):
        raise ConfigError(f"device {name!r}: an ssh device needs host = \"...\"")
    if transport == "adb" and not kw.get("serial"):
        raise ConfigError(f"device {name!r}: an adb device needs serial = \"host:port\" or a USB serial")
    if not kw.get("workdir", "nnf-agent").strip("/ "):
        raise ConfigError(f"device {name!r}: workdir must not be empty or '/'")
    return Device(name=name, **kw)


@dataclass(frozen=True)
class Inventory:
    """All devices of one inventory file, by name."""

    path: Path | None
    devices: dict[str, Device]

    def get(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            known = ", ".join(sorted(self.devices)) or "none"
            raise ConfigError(
                f"no device named {name!r}{where}.{suggest(name, self.devices)} Known devices: {known}"
            ) from None


def parse_inventory(text: str, path: Path | None = None) -> Inventory:
    """Parse inventory TOML text (``path`` only labels error messages)."""
    where = str(path) if path else "<inventory>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"devices"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}; devices go under [devices.NAME]")
    tables = data.get("devices", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: 'devices' must be a table of [devices.NAME] tables")
    devices: dict[str, Device] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: devices.{name} must be a table")
        devices[name] = device_from_table(name, table)
    return Inventory(path=path, devices=devices)


def default_inventory_path() -> Path:
    """``$NNF_INVENTORY`` if set, else ``./devices.toml`` if it exists, else ``$XDG_CONFIG_HOME/nn-factory/devices.toml``."""
    from host.paths import user_config_dir

    env = os.environ.get(INVENTORY_ENV)
    if env:
        return Path(env)
    here = Path(DEFAULT_INVENTORY)
    return here if here.is_file() else user_config_dir() / DEFAULT_INVENTORY


def load_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """Load an inventory file (default: :func:`default_inventory_path`)."""
    p = Path(path) if path is not None else default_inventory_path()
    if not p.is_file():
        raise ConfigError(
            f"device inventory {p} not found; create it (see docs/deploy.md; ./{DEFAULT_INVENTORY} in the current "
            f"directory is used too) or pass --inventory PATH (or set {INVENTORY_ENV})"
        )
    return parse_inventory(p.read_text(encoding="utf-8"), p)
