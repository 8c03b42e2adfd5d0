"""A real OpenSSH server (Debian's ``openssh-server``) on a loopback port, for the ssh deploy tests.

Temporary host key, client key, ``authorized_keys`` and config (``UsePAM no``, ``StrictModes no``); runs
in the foreground (``sshd -D -e``) as the current user, which must be root unless only that same user
logs in. ``kill_connections()`` kills the per-connection sshd children (a dropped network connection);
``restart()`` stops and starts the server on the same port (a device that rebooted).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for p in SSHD_CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "nnf-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class SshServer:
    root: Path
    sshd: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.root / "ssh_host_ed25519_key")
        self.client_key = keygen(self.root / "client_key")
        self.other_key = keygen(self.root / "other_key")  # never authorized
        (self.root / "authorized_keys").write_text((self.root / "client_key.pub").read_text())
        os.chmod(self.root / "authorized_keys", 0o600)
        self.user = getpass.getuser()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file that trusts this server's host key."""
        path = self.root / "known_hosts"
        pub = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        path.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        return path

    def _config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPidFile {self.root / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\nClientAliveInterval 0\n"
        )
        return cfg

    def start(self) -> SshServer:
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            cfg = self._config()
            with open(self.root / "sshd.log", "ab") as log:  # the child keeps its own copy of the fd
                self.proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(cfg)],
                                             stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                        if s.recv(4).startswith(b"SSH"):
                            return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            self.port = 0
        raise RuntimeError(f"sshd did not start; see {self.root / 'sshd.log'}:\n"
                           f"{(self.root / 'sshd.log').read_text()[-2000:]}")

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def kill_connections(self) -> int:
        """Kill every per-connection sshd process: established ssh connections drop."""
        pids = self.children()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        self.kill_connections()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
