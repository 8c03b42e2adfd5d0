"""The emulated aarch64 Linux device (``scripts/arm64_device.sh``) as a pytest fixture.

One device per test session (``arm64_device``): the script unpacks the cached Debian arm64 root (building it
once, ~7-10 minutes, when no tarball is cached), mounts what it needs, and starts the root's own sshd on a
loopback port with throwaway keys. Teardown runs ``down`` and then checks ``/proc/mounts``: nothing the
fixture mounted may survive the run, and binfmt_misc is left as it was found. Tests that need the device are
marked ``arm64``; they skip with the reason when this machine cannot host it (not root, no qemu-user-static,
no binfmt_misc in the kernel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host.deploy.inventory import Device

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "arm64_device.sh"
QEMU = ("/usr/bin/qemu-aarch64-static", "/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
BINFMT = "/proc/sys/fs/binfmt_misc"
DEVICE_PYTHON = "/opt/nnf-venv/bin/python"
DEVICE_USER = "device"


def unavailable_reason() -> str | None:
    """Why this machine cannot host the emulated device (None when it can)."""
    if os.geteuid() != 0:
        return "the emulated aarch64 device needs root (chroot, mounts); run the tests as root"
    if not any(os.access(q, os.X_OK) for q in QEMU):
        return ("qemu-user-static is not installed (scripts/test.sh installs qemu-user-static binfmt-support "
                "debootstrap)")
    if not os.path.isdir(BINFMT):
        return "this kernel has no binfmt_misc (CONFIG_BINFMT_MISC), so aarch64 binaries cannot run here"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (scripts/test.sh installs it)"
    return None


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path`` (from /proc/mounts, escapes decoded)."""
    root = os.path.realpath(path)
    out = []
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            mnt = line.split()[1].encode().decode("unicode_escape")
            if mnt == root or mnt.startswith(root + "/"):
                out.append(mnt)
    return out


def binfmt_mounted() -> bool:
    with open("/proc/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == BINFMT for line in f)


def script(*args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False)


@dataclass
class Arm64Device:
    """A running emulated device: its directory, root file system and ssh coordinates."""

    dir: Path
    port: int

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def home(self) -> Path:
        """The device user's home directory, seen from the host."""
        return self.root / "home" / DEVICE_USER

    def table(self, **overrides: Any) -> dict[str, Any]:
        """The ``[devices.NAME]`` inventory table of this device."""
        base: dict[str, Any] = {
            "transport": "ssh", "host": "127.0.0.1", "port": self.port, "user": DEVICE_USER,
            "key_file": str(self.client_key), "known_hosts": str(self.known_hosts), "python": DEVICE_PYTHON,
            "workdir": "nnf-agent", "connect_timeout_s": 30.0, "start_timeout_s": 300.0,
        }
        base.update(overrides)
        return base

    def device(self, name: str = "arm64", **overrides: Any) -> Device:
        return Device(name=name, **self.table(**overrides))

    def run(self, command: str, *, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``/bin/sh -c command`` inside the root as root (not over ssh)."""
        return subprocess.run(["chroot", str(self.root), "/bin/sh", "-c", command], capture_output=True,
                              text=True, timeout=timeout_s, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def processes(self) -> list[int]:
        """Host pids of the processes whose root directory is this device's root."""
        root = os.path.realpath(self.root)
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/root") == root:
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def stop_sshd(self) -> None:
        """Kill the device's sshd and every ssh session (the agent, in its own session, keeps running)."""
        res = script("stop-sshd", "--dir", str(self.dir), timeout_s=120)
        assert res.returncode == 0, res.stderr

    def start_sshd(self) -> None:
        res = script("start-sshd", "--dir", str(self.dir), timeout_s=120)
        assert res.returncode == 0, res.stderr


OWNER = "owner"  # beside the device directory: "PID START_TICKS" of the test process that brought it up


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot; None when it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def sweep_stale(temp_root: Path) -> list[Path]:
    """Take down devices left by test runs that were killed before their teardown (their owner is gone).

    ``temp_root``: pytest's directory of base temp dirs (``pytest-of-USER``). Devices without an owner file, or
    whose owner still runs, are left alone. Returns the device directories taken down.
    """
    swept = []
    for owner in sorted(temp_root.glob(f"pytest-*/arm64*/{OWNER}")):
        where = owner.parent / "device"
        try:
            pid, start = owner.read_text().split()
        except (OSError, ValueError):
            continue
        if not where.exists() or _process_start(int(pid)) == start:
            continue
        res = script("down", "--dir", str(where), timeout_s=300)
        if res.returncode == 0:
            owner.unlink(missing_ok=True)
            swept.append(where)
    return swept


def device_up(where: Path) -> Iterator[Arm64Device]:
    """Bring a device up in ``where`` (a fresh directory), yield it, take it down and check the mounts."""
    binfmt_before = binfmt_mounted()
    (where.parent / OWNER).write_text(f"{os.getpid()} {_process_start(os.getpid())}")
    res = script("up", "--dir", str(where))
    try:
        if res.returncode != 0:
            raise RuntimeError(f"scripts/arm64_device.sh up failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
        yield Arm64Device(where.resolve(), int((where / "port").read_text()))
    finally:
        down = script("down", "--dir", str(where), timeout_s=300)
        left = mounts_under(where)
        assert down.returncode == 0, f"scripts/arm64_device.sh down failed:\n{down.stderr[-4000:]}"
        assert left == [], f"mounts left behind by the arm64 device: {left}"
        assert not where.exists(), f"{where} was not removed"
        assert binfmt_mounted() == binfmt_before, "binfmt_misc was not left as it was found"
        (where.parent / OWNER).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def arm64_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm64Device]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.getbasetemp()
    sweep_stale(base.parent)  # devices of killed earlier runs (a SIGKILL skips every teardown)
    yield from device_up(tmp_path_factory.mktemp("arm64") / "device")
