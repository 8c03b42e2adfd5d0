"""What the OS exposes about the device: CPU, memory, frequency governor, temperature, process memory.

Everything reads ``/proc`` and ``/sys`` (Linux and Android); where a file is missing or unreadable the
value is simply left out, never guessed.

Peak-memory helpers used by the measurement worker (the method is in docs/design.md, "Measured on this machine"):
``VmHWM`` in ``/proc/self/status`` is the process's resident high-water mark. Writing ``5`` to
``/proc/self/clear_refs`` resets it to the current RSS; before that, ``malloc_trim(0)`` hands memory that
the allocator kept back to the OS, so what an earlier phase freed does not hide in the new baseline.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import socket
from pathlib import Path
from typing import Any


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (e.g. VmRSS, VmHWM) in bytes, None where unavailable."""
    text = _read("/proc/self/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def maxrss_bytes() -> int:
    """getrusage's ru_maxrss (kB on Linux) in bytes."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (glibc only); False where not available."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    fn(0)
    return True


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "hardware", "processor") and ":" in line:
            value = line.split(":", 1)[1].strip()
            if value and not value.isdigit():
                return value
    return platform.processor() or platform.machine()


def meminfo_bytes(field: str) -> int:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def governors(cpus: list[int]) -> dict[str, str]:
    out = {}
    for c in cpus:
        v = _read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
        if v:
            out[str(c)] = v
    return out


def cpu_freq_khz(cpus: list[int]) -> dict[str, int]:
    out = {}
    for c in cpus:
        v = _read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")
        if v and v.isdigit():
            out[str(c)] = int(v)
    return out


def temperatures_c() -> dict[str, float]:
    out: dict[str, float] = {}
    base = Path("/sys/class/thermal")
    if not base.is_dir():
        return out
    for zone in sorted(base.glob("thermal_zone*")):
        kind = _read(zone / "type") or zone.name
        raw = _read(zone / "temp")
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        key = kind if kind not in out else f"{kind}:{zone.name}"
        out[key] = value / 1000.0 if abs(value) > 1000 else float(value)
    return out


def host_facts() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "os": uname.system,
        "os_release": uname.release,
        "machine": uname.machine,
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "allowed_cpus": allowed_cpus(),
        "total_memory_bytes": meminfo_bytes("MemTotal"),
        "available_memory_bytes": meminfo_bytes("MemAvailable"),
        "python_version": platform.python_version(),
    }


def autogroup_nice() -> int | None:
    """The nice value of this process's scheduler autogroup (None where autogroups are off/absent)."""
    text = _read("/proc/self/autogroup")
    if not text or "nice" not in text:
        return None
    try:
        return int(text.rsplit("nice", 1)[1])
    except ValueError:
        return None


def set_autogroup_nice(nice: int) -> bool:
    """Set the nice value of this process's autogroup (the whole session: call it in a process that
    started its own session). With ``sched_autogroup_enabled`` the CPU is shared between sessions first,
    so a per-process nice alone does not protect a measurement from other sessions' processes."""
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(int(nice)))
        return True
    except OSError:
        return False
