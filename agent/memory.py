"""Making a forked child's peak-memory baseline equal to a fresh process's (Linux).

A measuring child forked from a zygote (``agent.zygote``) inherits the zygote's memory. ``fork`` copies
the page-table entries of anonymous memory, so the child's RSS counts the Python heap and the runtime's
data just as a fresh process would; but it does *not* copy them for file-backed mappings that were never
written (the runtime's code and read-only data: "a page fault will fill them"). Those pages are resident
in the zygote, counted in a fresh process's baseline after ``import torch``, yet absent from the child's
RSS until touched again: the model's first runs would fault them back in and their ~20 MiB would be
counted as the model's own peak (measured: ResNet subnets 55 MiB forked vs 36 MiB fresh).

So the zygote records, once after importing the runtime, which pages of its file-backed mappings are
resident (:func:`resident_file_ranges`, from the present bit of ``/proc/self/pagemap``), and each child
maps exactly those pages again before it takes its baseline (:func:`populate`:
``madvise(MADV_POPULATE_READ)``, Linux >= 5.14; else reading them through ``/proc/self/mem``, which
faults them in too). Then the child's RSS before the model equals the zygote's, and the model's peak
matches the fresh-process figure (checked side by side in ``benchmarks/agent_overhead.py``).
"""

from __future__ import annotations

import ctypes
import errno
import os

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_POPULATE_READ = 22
_SCRATCH_BYTES = 1 << 20

Range = tuple[int, int]  # (start address, length in bytes)


def resident_file_ranges() -> list[Range]:
    """Resident pages of this process's readable file-backed mappings, as contiguous ranges.

    Empty where ``/proc/self/pagemap`` is unreadable (then children simply skip :func:`populate`).
    """
    import numpy as np

    out: list[Range] = []
    try:
        maps = open("/proc/self/maps")  # noqa: SIM115 - closed below with pagemap
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)  # noqa: SIM115
    except OSError:
        return out
    with maps, pagemap:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) < 6 or "r" not in parts[1]:
                continue
            path = parts[5].strip()
            if not path.startswith("/") or path.startswith(("/dev/", "/proc/", "/sys/")):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            n = (end - start) // PAGE_BYTES
            try:
                pagemap.seek(start // PAGE_BYTES * 8)
                data = pagemap.read(n * 8)
            except OSError:
                continue
            if len(data) != n * 8:
                continue
            present = (np.frombuffer(data, dtype=np.uint64) >> np.uint64(63)).astype(np.int8)
            if not present.any():
                continue
            edges = np.diff(np.concatenate(([0], present, [0])))
            for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
                out.append((start + int(s) * PAGE_BYTES, int(e - s) * PAGE_BYTES))
    return out


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def populate(ranges: list[Range]) -> str:
    """Map the pages of ``ranges`` into this process's page tables; returns the method used.

    "madvise" (MADV_POPULATE_READ), "procmem" (reads through /proc/self/mem), or "none" (nothing to do,
    or neither works here).
    """
    if not ranges:
        return "none"
    libc = _libc()
    if libc is not None:
        ok = True
        for addr, length in ranges:
            if (libc.madvise(addr, length, MADV_POPULATE_READ) != 0
                    and ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM)):
                ok = False  # kernel older than 5.14: fall back for everything
                break
        if ok:
            return "madvise"
    return _populate_procmem(ranges)


def _populate_procmem(ranges: list[Range]) -> str:
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return "none"
    scratch = bytearray(_SCRATCH_BYTES)
    view = memoryview(scratch)
    try:
        for addr, length in ranges:
            pos, end = addr, addr + length
            while pos < end:
                n = min(_SCRATCH_BYTES, end - pos)
                try:
                    os.preadv(fd, [view[:n]], pos)
                except OSError:
                    break
                pos += n
    finally:
        os.close(fd)
    return "procmem"


def vm_size_bytes() -> int:
    """This process's address-space size (VmSize), 0 where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class HwmResetter:
    """Resets VmHWM through a descriptor opened once (it keeps working inside the Landlock sandbox)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self._fd = None

    def reset(self) -> bool:
        if self._fd is None:
            return False
        try:
            os.write(self._fd, b"5")
            return True
        except OSError:
            return False


def tune_allocator(mmap_threshold_bytes: int = 256 * 1024, arenas: int = 2) -> bool:
    """Keep a long-running agent's RSS flat under bursts of large messages (glibc only; False elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so after a few megabyte-sized
    messages such blocks come from the heap instead and stay resident as fragmentation; and every thread
    of the gRPC pool may get its own arena. A fixed threshold (large blocks always mmapped, returned on
    free) and few arenas keep what a burst of hostile traffic leaves behind small.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_mmap_threshold, m_arena_max = -3, -8
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold_bytes))) and bool(mallopt(m_arena_max, int(arenas)))
