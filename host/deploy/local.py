"""The ``local`` transport: the device is this machine (subprocesses, files, loopback sockets)."""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

from host.deploy.transport import CommandResult, Stream, Transport
from host.errors import DeployError
from host.fileio import atomic_write_bytes


class LocalTransport(Transport):
    """The device is this machine: subprocesses, files and loopback sockets."""

    def run(self, command: str, *, timeout_s: float = 120.0) -> CommandResult:
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise DeployError(f"device {self.device.name!r}: command timed out after {timeout_s:.0f} s: "
                              f"{shlex.split(command)[0] if command else command}") from None
        return CommandResult(command, proc.returncode, proc.stdout, proc.stderr)

    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        atomic_write_bytes(remote_path, data, mode=mode)

    def get(self, remote_path: str) -> bytes:
        return Path(remote_path).read_bytes()

    def open_stream(self, port: int) -> Stream:
        sock = socket.create_connection(("127.0.0.1", port), timeout=self.device.connect_timeout_s)
        sock.settimeout(None)
        return sock

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass
