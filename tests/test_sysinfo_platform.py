"""The agent's device facts on ARM and under user-mode emulation: decoded, or said to be unknown, never guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import sysinfo

BIG_LITTLE = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    f"CPU variant\t: 0x{v}\nCPU part\t: 0x{part}\nCPU revision\t: 0\n\n"
    for i, (part, v) in enumerate([("d05", 2)] * 4 + [("d0b", 4)] * 4)
)


def fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str], machine: str) -> None:
    def read(path: str | Path) -> str | None:
        return files.get(str(path))

    monkeypatch.setattr(sysinfo, "_read", read)
    monkeypatch.setattr(sysinfo.platform, "machine", lambda: machine)
    monkeypatch.setattr(sysinfo.platform, "processor", lambda: "")


def test_arm_cores_decoded_from_midr_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_files(monkeypatch, {"/proc/cpuinfo": BIG_LITTLE}, "aarch64")
    assert sysinfo.cpu_model() == "4x ARM Cortex-A55 + 4x ARM Cortex-A76"


def test_unknown_arm_part_is_shown_as_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x805\n"
    fake_files(monkeypatch, {"/proc/cpuinfo": text}, "aarch64")
    assert sysinfo.cpu_model() == "1x Qualcomm part 0x805"


def test_qemu_cpu_and_emulation_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "processor\t: 0\nCPU implementer\t: 0x00\nCPU part\t: 0x051\n\nprocessor\t: 1\nCPU implementer\t: 0x00\nCPU part\t: 0x051\n"
    fake_files(monkeypatch, {"/proc/cpuinfo": text, "/proc/sys/kernel/arch": "x86_64"}, "aarch64")
    assert sysinfo.cpu_model() == "2x QEMU emulated CPU (implementer 0x00, part 0x051)"
    notes = sysinfo.platform_notes()
    assert notes["kernel_arch"] == "x86_64"
    assert "aarch64 userland on a x86_64 kernel" in notes["emulation"]
    assert "not those of aarch64 hardware" in notes["emulation"]
    assert notes["temperature"].startswith("unknown") and notes["cpu_frequency"].startswith("unknown")


def test_native_and_compat_userlands_are_not_called_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    for kernel, machine in (("aarch64", "aarch64"), ("aarch64", "armv7l"), ("x86_64", "x86_64")):
        fake_files(monkeypatch, {"/proc/sys/kernel/arch": kernel}, machine)
        assert "emulation" not in sysinfo.platform_notes()
    fake_files(monkeypatch, {}, "aarch64")  # an older kernel without kernel.arch: nothing is claimed
    notes = sysinfo.platform_notes()
    assert "kernel_arch" not in notes and "emulation" not in notes


def test_readings_present_means_no_unknown_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {"/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "schedutil"}
    fake_files(monkeypatch, files, "aarch64")
    monkeypatch.setattr(sysinfo, "allowed_cpus", lambda: [0])
    monkeypatch.setattr(sysinfo, "temperatures_c", lambda: {"cpu-thermal": 41.0})
    notes = sysinfo.platform_notes()
    assert "temperature" not in notes and "cpu_frequency" not in notes


def test_host_facts_carry_the_notes() -> None:
    facts = sysinfo.host_facts()
    assert facts["extra"] == sysinfo.platform_notes()
