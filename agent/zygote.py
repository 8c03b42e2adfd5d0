"""A zygote: a process that has imported one runtime and forks one measuring child per request.

``python -m agent.zygote --runtime N --ctrl-fd FD --parent-pid PID`` is started by the agent
(``agent.workers.Zygote``) the first time a runtime is asked for. It imports the runtime (~1.3 s for
torch, once), freezes the garbage collector's view of everything imported (``gc.freeze``: children do
not touch those objects and their pages stay shared), records which runtime pages are resident
(``agent.memory``), says ``ready``, and then serves requests over a ``SOCK_SEQPACKET`` unix socket pair:

    agent -> zygote   {"op": "run", "id": N, "payload": {...}}   + fds [result_w, stderr_w(, lock_fd)]
                      {"op": "kill", "id": N}
    zygote -> agent   {"op": "ready", "pid": P, ...}   {"op": "error", "message": ...}
                      {"op": "started", "id": N, "pid": C}
                      {"op": "exited", "id": N, "pid": C, "status": S}   (S: os.waitpid status)

Each request is one ``fork``: the child makes itself die with the zygote (PR_SET_PDEATHSIG; the zygote
dies with the agent the same way and when its socket closes), starts its own session (so it can set
its scheduler autogroup's nice), points stdout/stderr at the request's stderr pipe, maps the recorded
runtime pages back (so its memory baseline equals a fresh process's), measures (``agent.worker``),
writes one JSON answer to the result pipe and leaves with ``os._exit``. It keeps the device-lock
descriptor it was given until it exits, so the device stays locked as long as something measures.

The zygote itself runs no model code, holds no lock and never measures; one child at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from agent import memory, runtimes, sandbox, sysinfo, worker

MAX_MESSAGE_BYTES = 1 << 20
MAX_FDS = 4


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the agent is gone: the next recv sees EOF and the zygote exits
        sock.send(json.dumps(msg).encode())


def _child(sock: socket.socket, wake: tuple[int, int], zygote_pid: int, msg: dict[str, Any], fds: list[int],
           ranges: list[memory.Range]) -> None:
    """In the forked child: never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        sandbox.die_with_parent(zygote_pid)
        result_fd, err_fd = fds[0], fds[1]
        with contextlib.suppress(OSError):
            os.setsid()  # own session: its autogroup's nice can be set without touching the zygote's
        os.dup2(err_fd, 2)
        os.dup2(err_fd, 1)
        os.close(err_fd)
        sys.stdout = sys.stderr
        populated = memory.populate(ranges)
        answer = worker.run_request(msg["payload"], isolation="fork", populated=populated)
        worker.write_answer(result_fd, answer)
        sys.stderr.flush()
    except BaseException as exc:  # the child must leave with _exit whatever happened
        with contextlib.suppress(OSError):
            os.write(2, f"zygote child failed: {type(exc).__name__}: {exc}\n".encode())
        code = 70
    os._exit(code)


class _Loop:
    """The zygote's single-threaded event loop: requests from the agent, SIGCHLD from its child."""

    def __init__(self, sock: socket.socket, ranges: list[memory.Range]) -> None:
        self.sock = sock
        self.ranges = ranges
        self.pid = os.getpid()
        self.child: tuple[int, int] | None = None  # (request id, pid)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: None)  # the agent ends us by closing the socket

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and self.child[1] == pid:
                _send(self.sock, {"op": "exited", "id": self.child[0], "pid": pid, "status": status})
                self.child = None

    def drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass
        self.reap()

    def run(self, msg: dict[str, Any], fds: list[int]) -> None:
        if self.child is not None or len(fds) < 2:
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"op": "refused", "id": msg.get("id"),
                              "message": "a child is still running" if self.child else "missing descriptors"})
            return
        pid = os.fork()
        if pid == 0:
            _child(self.sock, (self.wake_r, self.wake_w), self.pid, msg, fds, self.ranges)
        for fd in fds:
            os.close(fd)
        self.child = (int(msg["id"]), pid)
        _send(self.sock, {"op": "started", "id": self.child[0], "pid": pid})
        self.reap()  # a child that died at once

    def kill(self, rid: object) -> None:
        if self.child is not None and self.child[0] == rid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child[1], signal.SIGKILL)

    def on_message(self) -> bool:
        """Handle one message from the agent; False when the agent is gone (socket closed)."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE_BYTES, MAX_FDS)
        except OSError:
            data, fds = b"", []
        if not data:  # the agent closed the socket or died: take the child along
            self.kill(self.child[0] if self.child else None)
            return False
        try:
            msg = json.loads(data)
        except ValueError:
            msg = {}
        op = msg.get("op")
        if op == "run":
            self.run(msg, fds)
            return True
        for fd in fds:
            os.close(fd)
        if op == "kill":
            self.kill(msg.get("id"))
        elif op == "ping":
            _send(self.sock, {"op": "pong", "time": time.time()})
        return True

    def serve(self) -> int:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "ctrl")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in sel.select():
                if key.data == "wake":
                    self.drain_wake()
                elif not self.on_message():
                    return 0


def serve(sock: socket.socket, runtime: int, parent_pid: int) -> int:
    try:
        runtimes.import_runtime(runtime)
    except BaseException as exc:  # report any import failure to the agent
        _send(sock, {"op": "error", "message": f"importing runtime {runtimes.runtime_name(runtime)!r} failed: "
                                               f"{type(exc).__name__}: {exc}"[:2000]})
        return 3
    gc.collect()
    gc.freeze()  # children's gc.collect() leaves everything imported alone: no copy-on-write storm
    sysinfo.malloc_trim()
    ranges = memory.resident_file_ranges()
    loop = _Loop(sock, ranges)
    _send(sock, {"op": "ready", "pid": os.getpid(), "rss_bytes": sysinfo.proc_status_bytes("VmRSS") or 0,
                 "resident_runtime_bytes": sum(n for _, n in ranges)})
    return loop.serve()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.zygote")
    ap.add_argument("--runtime", type=int, required=True)
    ap.add_argument("--ctrl-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, required=True)
    args = ap.parse_args(argv)
    sandbox.die_with_parent(args.parent_pid)
    os.dup2(2, 1)  # runtimes that print go to the agent's log, never into the protocol
    sys.stdout = sys.stderr
    sock = socket.socket(fileno=args.ctrl_fd)
    return serve(sock, args.runtime, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
