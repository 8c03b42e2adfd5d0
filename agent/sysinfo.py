"""What the OS exposes about the device: CPU, memory, frequency governor, temperature, process memory.

Everything reads ``/proc`` and ``/sys`` (Linux and Android); where a file is missing or unreadable the
value is simply left out, never guessed. :func:`platform_notes` says in words what could not be known, and
when the userland runs under user-mode emulation (an aarch64 root through qemu-user on an x86-64 kernel):
then the kernel release, frequencies and temperatures are the host's and latencies are not the hardware's.

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


# MIDR implementer -> vendor, (implementer, part) -> core: what ARM Linux's /proc/cpuinfo gives as numbers
_ARM_VENDORS = {0x00: "software implementation", 0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x48: "HiSilicon",
                0x4E: "NVIDIA", 0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple", 0xC0: "Ampere"}
_ARM_CORES = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2", (0x4E, 0x004): "Carmel",
    (0x00, 0x051): "QEMU emulated CPU",  # qemu's "max" CPU: implementer 0 (software), part 'Q'
}


def _arm_cores(text: str) -> str | None:
    """'4x ARM Cortex-A55 + 4x ARM Cortex-A76' from the CPU implementer/part lines of ARM Linux."""
    counts: dict[str, int] = {}
    impl = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        try:
            if key == "cpu implementer":
                impl = int(value, 16)
            elif key == "cpu part" and impl is not None:
                part = int(value, 16)
                name = _ARM_CORES.get((impl, part))
                vendor = _ARM_VENDORS.get(impl, f"implementer 0x{impl:02x}")
                label = f"{vendor} {name}" if name else f"{vendor} part 0x{part:03x}"
                if impl == 0x00:
                    label = f"{name or 'software CPU'} (implementer 0x00, part 0x{part:03x})"
                counts[label] = counts.get(label, 0) + 1
        except ValueError:
            continue
    if not counts:
        return None
    return " + ".join(f"{n}x {label}" for label, n in counts.items())


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "hardware", "processor") and ":" in line:
            value = line.split(":", 1)[1].strip()
            if value and not value.isdigit():
                return value
    return _arm_cores(text) or platform.processor() or platform.machine()


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


# a 32-bit userland on its own 64-bit kernel is native (compat mode), not emulation
_NATIVE_COMPAT = {("aarch64", "armv7l"), ("aarch64", "armv8l"), ("x86_64", "i686"), ("x86_64", "i386")}


def platform_notes() -> dict[str, str]:
    """What this device cannot report, and emulation, in words (``DeviceInfo.extra``); nothing is guessed.

    ``/proc/sys/kernel/arch`` is the running kernel's architecture (Linux >= 6.1; user-mode emulators pass it
    through): an aarch64 userland (``uname -m`` as the emulator reports it) on an x86_64 kernel is emulated.
    """
    notes: dict[str, str] = {}
    machine = platform.machine()
    kernel_arch = _read("/proc/sys/kernel/arch")
    if kernel_arch:
        notes["kernel_arch"] = kernel_arch
        if machine and kernel_arch != machine and (kernel_arch, machine) not in _NATIVE_COMPAT:
            notes["emulation"] = (
                f"user-mode emulation: a {machine} userland on a {kernel_arch} kernel (e.g. qemu-user through "
                f"binfmt_misc); os_release, memory, CPU frequencies and temperatures are the host's, "
                f"latencies are not those of {machine} hardware, peak memory includes the emulator's own, and "
                f"qemu-user does not enforce address-space limits (RLIMIT_AS)")
    cpus = allowed_cpus()
    if not temperatures_c():
        notes["temperature"] = "unknown: no readable thermal zone in /sys/class/thermal"
    if not governors(cpus) and not cpu_freq_khz(cpus):
        notes["cpu_frequency"] = "unknown: no cpufreq governor or frequency in /sys/devices/system/cpu"
    return notes


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
        "extra": platform_notes(),
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
