"""ssh transport (paramiko): exec channels for commands, SFTP for files, ``direct-tcpip`` for the tunnel.

Security rules:

- The server's host key is checked against the device's ``known_hosts`` file (default ``~/.ssh/known_hosts``).
  An unknown host is refused unless the user opted in (``accept_new_host_key = true`` in the inventory or
  ``--accept-new-host-key``), which then records the key in that file (OpenSSH's ``accept-new``); a host key
  that *differs* from the recorded one is always refused (possible man-in-the-middle).
- Authentication is by key file only (``key_file``); a key passphrase comes from the environment variable
  named by ``key_passphrase_env``; no password or passphrase is ever written to disk. ssh-agent and
  ``~/.ssh/id_*`` discovery are off so the inventory says exactly which key is used.
- The agent listens on the device's loopback only; the host reaches it through a ``direct-tcpip`` channel
  of this ssh connection.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import paramiko

from host.deploy.inventory import Device, expand_local_path
from host.deploy.transport import CommandResult, Stream, Transport
from host.errors import DeployError

KEEPALIVE_S = 5


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Trust-on-first-use: record an unknown host's key in the known_hosts file."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with open(self.known_hosts, "a", encoding="utf-8") as f:
            f.write(line)


class _ChannelStream:
    """A paramiko channel as a :class:`~host.deploy.transport.Stream`."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def recv(self, n: int) -> bytes:
        try:
            return self.chan.recv(n)
        except (OSError, EOFError, paramiko.SSHException):
            return b""

    def sendall(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError(f"ssh channel closed: {exc}") from exc

    def close(self) -> None:
        self.chan.close()


class SshTransport(Transport):
    """A connected, authenticated ssh session to one device."""

    @classmethod
    def open(cls, device: Device, *, accept_new_host_key: bool = False) -> SshTransport:
        return cls(device, accept_new_host_key=accept_new_host_key)

    def __init__(self, device: Device, *, accept_new_host_key: bool = False) -> None:
        super().__init__(device)
        self._lock = threading.Lock()
        self.client = self._connect(accept_new_host_key or device.accept_new_host_key)
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection -------------------------------------------------------------------------------------
    def _connect(self, accept_new: bool) -> paramiko.SSHClient:
        d = self.device
        known_hosts = expand_local_path(d.known_hosts) or Path.home() / ".ssh" / "known_hosts"
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            try:
                client.load_host_keys(str(known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise DeployError(f"device {d.name!r}: cannot read known_hosts {known_hosts}: {exc}") from None
        elif not accept_new:
            raise DeployError(
                f"device {d.name!r}: known_hosts file {known_hosts} does not exist, so the host key of "
                f"{d.host}:{d.port} cannot be verified; add the key (ssh-keyscan -p {d.port} {d.host} >> "
                f"{known_hosts}, after checking its fingerprint) or pass --accept-new-host-key"
            )
        client.set_missing_host_key_policy(_AcceptNewPolicy(known_hosts) if accept_new else paramiko.RejectPolicy())
        key_file = expand_local_path(d.key_file)
        if key_file is not None and not key_file.is_file():
            raise DeployError(f"device {d.name!r}: key_file {key_file} does not exist; fix key_file in the inventory")
        passphrase = None
        if d.key_passphrase_env:
            passphrase = os.environ.get(d.key_passphrase_env)
            if passphrase is None:
                raise DeployError(f"device {d.name!r}: environment variable {d.key_passphrase_env} "
                                  f"(key_passphrase_env) is not set")
        where = f"{d.user + '@' if d.user else ''}{d.host}:{d.port}"
        try:
            client.connect(
                d.host, port=d.port, username=d.user, key_filename=str(key_file) if key_file else None,
                passphrase=passphrase, timeout=d.connect_timeout_s, banner_timeout=d.connect_timeout_s,
                auth_timeout=d.connect_timeout_s, channel_timeout=d.connect_timeout_s,
                allow_agent=False, look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise DeployError(
                f"device {d.name!r}: the host key of {where} does NOT match the one in {known_hosts} "
                f"(got {exc.key.get_name()} {exc.key.fingerprint}); someone may be intercepting the connection, "
                f"or the device was reinstalled. Check the key, then remove the old line from {known_hosts}"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise DeployError(
                f"device {d.name!r}: authentication to {where} failed ({exc}); check user and key_file in the "
                f"inventory and that the public key is in the device's ~/.ssh/authorized_keys"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise DeployError(
                    f"device {d.name!r}: the host key of {where} is unknown ({known_hosts} has no entry); "
                    f"verify its fingerprint and add it, or pass --accept-new-host-key to trust it on first use"
                ) from None
            raise DeployError(f"device {d.name!r}: ssh to {where} failed: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise DeployError(
                f"device {d.name!r}: cannot reach {where} ({exc.__class__.__name__}: {exc}); check that the "
                f"device is on, the address and port are right and sshd is running"
            ) from None
        transport = client.get_transport()
        if transport is None:
            client.close()
            raise DeployError(f"device {d.name!r}: ssh connection to {where} closed during setup")
        transport.set_keepalive(KEEPALIVE_S)
        return client

    def _transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None or not t.is_active():
            raise DeployError(f"device {self.device.name!r}: the ssh connection dropped; reconnect")
        return t

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._sftp.close()
            self._sftp = None
        self.client.close()

    # -- commands ---------------------------------------------------------------------------------------
    def run(self, command: str, *, timeout_s: float = 120.0) -> CommandResult:
        try:
            chan = self._transport().open_session(timeout=self.device.connect_timeout_s)
            chan.settimeout(timeout_s)
            chan.exec_command(command)
            stdout = chan.makefile("rb")
            stderr = chan.makefile_stderr("rb")
            err_box: list[bytes] = []
            # drain stderr concurrently: a command filling the stderr window must not block its stdout
            def drain() -> None:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    err_box.append(stderr.read())

            t = threading.Thread(target=drain, daemon=True)
            t.start()
            out = stdout.read()
            t.join(timeout_s)
            err = err_box[0] if err_box else b""
            code = chan.recv_exit_status()
            chan.close()
        except TimeoutError:
            raise DeployError(f"device {self.device.name!r}: remote command timed out after {timeout_s:.0f} s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeployError(f"device {self.device.name!r}: ssh command failed: {exc}; the connection "
                              f"may have dropped") from None
        if code == -1:  # paramiko: no exit status (connection lost)
            raise DeployError(f"device {self.device.name!r}: the command got no exit status (connection lost)")
        return CommandResult(command, code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- files ------------------------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = self.client.open_sftp()
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    raise DeployError(f"device {self.device.name!r}: cannot open SFTP ({exc}); is the sftp "
                                      f"subsystem enabled in sshd_config?") from None
            return self._sftp

    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        sftp = self.sftp()
        try:
            with sftp.open(remote_path, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            sftp.chmod(remote_path, mode)
        except OSError as exc:
            raise DeployError(f"device {self.device.name!r}: writing {remote_path} failed: {exc}") from None

    def get(self, remote_path: str) -> bytes:
        sftp = self.sftp()
        try:
            with sftp.open(remote_path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise DeployError(f"device {self.device.name!r}: reading {remote_path} failed: {exc}") from None

    # -- tunnel -----------------------------------------------------------------------------------------
    def open_stream(self, port: int) -> Stream:
        try:
            chan = self._transport().open_channel(
                "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=self.device.connect_timeout_s
            )
        except paramiko.ChannelException as exc:
            raise ConnectionRefusedError(
                f"device {self.device.name!r}: nothing accepts connections on the device's 127.0.0.1:{port} "
                f"({exc})"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError(f"device {self.device.name!r}: ssh tunnel failed: {exc}") from None
        return _ChannelStream(chan)

