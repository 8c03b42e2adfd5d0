"""Serialising measurements: one agent's FIFO queue and the device-wide ``flock`` all agents share.

:class:`FifoLock` orders one agent's profile requests (arrival order, timeouts, a cap on waiters: a full
queue answers *busy*). :class:`DeviceFileLock` keeps two agents on one device (a forgotten one, one per
user) from timing models at the same moment. The locked file descriptor is handed to the process that
measures (``agent.workers``): an ``flock`` belongs to the open file, so it stays held as long as the
measuring process lives, even if the agent that took it dies first.
"""

from __future__ import annotations

import collections
import fcntl
import os
import threading
from pathlib import Path

from agent.errors import ProfileFailure
from agent.protocol import ErrorKind


class FifoLock:
    """A lock granted in arrival order, with timeouts and a cap on how many may wait."""

    def __init__(self, max_waiting: int) -> None:
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._held = False
        self.max_waiting = max_waiting

    def acquire(self, timeout_s: float) -> bool:
        """True once granted; False when ``timeout_s`` passed; ProfileFailure(busy) when the queue is full."""
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            if len(self._waiters) >= self.max_waiting:
                raise ProfileFailure(ErrorKind.BUSY, f"agent busy: {len(self._waiters)} requests already queued; "
                                                     f"retry later")
            ev = threading.Event()
            self._waiters.append(ev)
        if ev.wait(max(0.0, timeout_s)):
            return True
        with self._mutex:
            if ev.is_set():  # granted just as we timed out: keep it
                return True
            self._waiters.remove(ev)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # hand over directly; _held stays True
            else:
                self._held = False

    def queued(self) -> int:
        with self._mutex:
            return len(self._waiters)


class DeviceFileLock:
    """An advisory ``flock`` on a file shared by every agent on this device (None path = disabled).

    Waiting is a blocking ``flock`` in a helper thread (woken by the kernel the moment the other agent
    releases, so a busy agent cannot starve this one, and nothing polls while the other agent measures).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._fd: int | None = None

    @property
    def fd(self) -> int | None:
        """The locked descriptor while held (to hand to the measuring process), else None."""
        return self._fd

    def acquire(self, timeout_s: float) -> bool:
        if self.path is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
            return True
        except BlockingIOError:
            pass
        got = threading.Event()
        mutex = threading.Lock()
        abandoned = [False]

        def wait_for_lock() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with mutex:
                if abandoned[0]:
                    os.close(fd)  # the requester gave up: drop the lock at once
                    return
                got.set()

        threading.Thread(target=wait_for_lock, name="nnf-device-lock", daemon=True).start()
        if got.wait(max(0.0, timeout_s)):
            self._fd = fd
            return True
        with mutex:
            if got.is_set():
                self._fd = fd
                return True
            abandoned[0] = True
        return False

    def release(self) -> None:
        """Close this agent's descriptor (the lock is free once the measuring process has exited too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
