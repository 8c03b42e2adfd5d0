"""What the deployer needs from a device connection (the base; it knows no implementation).

A :class:`Transport` runs POSIX shell commands on the device (exit code always checked by the caller or by
:meth:`Transport.check`), copies bytes to and from device paths, and opens a byte stream to a TCP port on the
device's loopback interface (the tunnel to the agent). Implementations, registered by name in
:data:`TRANSPORTS` and imported only when :func:`connect` needs one: ``local``
(:class:`host.deploy.local.LocalTransport`, this machine), ``ssh`` (:class:`host.deploy.ssh.SshTransport`:
paramiko exec channels, SFTP, ``direct-tcpip``) and ``adb`` (:class:`host.deploy.adb.AdbTransport`: ADB
``shell``, ``sync``, ``tcp:<port>`` streams).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from host.deploy.inventory import Device
from host.errors import DeployError


class Stream(Protocol):
    """A bidirectional byte stream (a socket, an ssh channel, an adb stream)."""

    def recv(self, n: int) -> bytes: ...  # b"" at end of stream

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    def tail(self, n_lines: int = 8) -> str:
        text = (self.stderr.strip() + "\n" + self.stdout.strip()).strip()
        return "\n".join(text.splitlines()[-n_lines:])


class Transport(ABC):
    """A connection to one device."""

    def __init__(self, device: Device) -> None:
        self.device = device

    @classmethod
    def open(cls, device: Device, *, accept_new_host_key: bool = False) -> Transport:
        """Connect to ``device``. ``accept_new_host_key`` matters only to transports that verify host keys."""
        return cls(device)

    @abstractmethod
    def run(self, command: str, *, timeout_s: float = 120.0) -> CommandResult:
        """Run ``command`` with ``/bin/sh -c`` semantics on the device; never raises on a non-zero exit."""

    def check(self, command: str, what: str, *, timeout_s: float = 120.0) -> CommandResult:
        """Run ``command``; a non-zero exit raises :class:`DeployError` naming the device and the step."""
        res = self.run(command, timeout_s=timeout_s)
        if res.exit_code != 0:
            detail = res.tail() or "(no output)"
            raise DeployError(
                f"device {self.device.name!r}: {what} failed (exit code {res.exit_code}):\n{detail}"
            )
        return res

    @abstractmethod
    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` on the device (parent must exist)."""

    @abstractmethod
    def get(self, remote_path: str) -> bytes:
        """Read a whole file from the device."""

    @abstractmethod
    def open_stream(self, port: int) -> Stream:
        """Open a byte stream to ``127.0.0.1:port`` *on the device*."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether the connection still works (cheap check)."""

    @abstractmethod
    def close(self) -> None: ...

    def home(self) -> str:
        res = self.check('printf "%s" "$HOME"', "reading $HOME", timeout_s=30)
        home = res.stdout.strip()
        if not home.startswith("/"):
            raise DeployError(f"device {self.device.name!r}: $HOME is not an absolute path ({home!r}); "
                              f"set an absolute workdir in the inventory")
        return home

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Transport implementations by the inventory's ``transport = ...`` name, as "module:Class". This module
#: imports none of them: :func:`connect` imports the one a device names, so a missing optional dependency
#: of one transport (paramiko, adb-shell) never breaks the others.
TRANSPORTS: dict[str, str] = {
    "local": "host.deploy.local:LocalTransport",
    "ssh": "host.deploy.ssh:SshTransport",
    "adb": "host.deploy.adb:AdbTransport",
}


def transport_class(name: str) -> type[Transport]:
    """The :class:`Transport` subclass registered as ``name`` (imported on first use)."""
    try:
        target = TRANSPORTS[name]
    except KeyError:
        raise DeployError(f"unknown transport {name!r}; choose one of {', '.join(TRANSPORTS)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def connect(device: Device, *, accept_new_host_key: bool = False) -> Transport:
    """Open a transport to ``device`` (raises :class:`DeployError` with what to do on failure)."""
    try:
        cls = transport_class(device.transport)
    except DeployError as exc:
        raise DeployError(f"device {device.name!r}: {exc}") from None
    return cls.open(device, accept_new_host_key=accept_new_host_key)
