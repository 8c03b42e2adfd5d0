"""Running measuring children: a zygote per runtime (default) or a fresh process per request.

Why: a fresh ``python -m agent.worker`` per request pays the Python start and the runtime's import
(~1.3 s for torch on a 2-core x86 machine) on every request: two thirds of a profiling round trip for a
1 ms model. A *zygote* (``agent.zygote``) imports the runtime once and ``fork``s one child per request,
which keeps everything the fresh process gave:

* isolation: each model runs in its own process (crash, hang and out-of-memory stay there; the child
  exits after one model, so nothing a model left behind reaches the next measurement);
* the model's own peak memory: VmHWM of the child, whose baseline is made equal to a fresh process's
  (``agent.memory``; checked side by side in ``benchmarks/agent_overhead.py``);
* lifetime: zygotes and children die with the agent (``PR_SET_PDEATHSIG`` through the chain, and the
  zygote exits when its socket to the agent closes);
* the device lock: the locked descriptor is passed to the child (SCM_RIGHTS), which holds it until it
  exits, so the device stays locked while anything measures, whatever happens to the agent.

``isolation="process"`` keeps the fresh-process method (also used for the runtime probe of
``GetDeviceInfo``, which must never wait for a measurement).

One :class:`WorkerPool` per agent; :meth:`WorkerPool.start` returns a :class:`WorkerHandle` whose
``wait(timeout_s)`` gives a :class:`WorkerExit` and whose ``kill()`` may be called from any thread
(client cancelled, agent stopping). Callers serialise measurements (``agent.locks``); the pool runs one
child per zygote at a time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agent as agent_pkg
from agent import runtimes
from agent.errors import ProfileFailure
from agent.protocol import ErrorKind

log = logging.getLogger("nnf.agent")

STDERR_TAIL_BYTES = 4096
MAX_ANSWER_BYTES = 64 * 1024 * 1024
ZYGOTE_START_TIMEOUT_S = 300.0
KILL_GRACE_S = 5.0  # after a kill, how long to wait for the exit before giving up on the zygote
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class WorkerExit:
    """How a measuring child ended."""

    pid: int
    returncode: int | None  # like subprocess: < 0 = killed by that signal; None = unknown
    answer: dict[str, Any] | None  # the child's JSON answer, when it wrote one
    stderr_tail: str
    timed_out: bool = False
    cancelled: bool = False
    note: str = ""  # what else went wrong (e.g. the zygote died)
    kill_reason: str = ""  # why the agent killed it: "timeout", "cancelled", "shutdown", ... ("" = not killed)
    timings: dict[str, float] = field(default_factory=dict)


def _pythonpath() -> str:
    root = str(Path(agent_pkg.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")


def worker_env(extra: Mapping[str, str], threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = _pythonpath()
    env["NNF_AGENT_PARENT_PID"] = str(os.getpid())
    for var in THREAD_ENV:  # the measuring child sets its runtime's threads itself
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class _Tail:
    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self.limit = limit
        self.data = b""

    def add(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-self.limit:]

    def text(self) -> str:
        return self.data.decode(errors="replace").strip()


def _ctrl_message(ctrl: socket.socket, handle: WorkerHandle, on_ctrl: Any) -> tuple[bool, bool]:
    """Read one zygote message: (zygote gone, child exited)."""
    try:
        data = ctrl.recv(1 << 20)
    except OSError:
        data = b""
    if not data:
        handle.note = handle.note or "the runtime's zygote process died"
        return True, True
    try:
        msg = json.loads(data)
    except ValueError:
        return False, False
    return False, bool(on_ctrl(msg))


def _collect(res_r: int, err_r: int, ctrl: socket.socket | None, deadline: float, handle: WorkerHandle,
             on_ctrl: Any) -> tuple[bytes, _Tail, bool]:
    """Read the answer and stderr pipes (and the zygote's messages) until the child is done or the deadline.

    Returns (answer bytes, stderr tail, timed_out). ``on_ctrl(msg)`` returns True once the child exited.
    """
    sel = selectors.DefaultSelector()
    sel.register(res_r, selectors.EVENT_READ, "res")
    sel.register(err_r, selectors.EVENT_READ, "err")
    if ctrl is not None:
        sel.register(ctrl, selectors.EVENT_READ, "ctrl")
    answer = bytearray()
    tail = _Tail()
    open_pipes = 2
    exited = False  # known from the zygote's message; a fresh process is done when its pipes close
    timed_out = False
    drain_until: float | None = None
    try:
        while open_pipes or (ctrl is not None and not exited):
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                handle.kill("timeout")
                drain_until = now + KILL_GRACE_S
            if drain_until is not None and now >= drain_until:
                break  # killed but not gone in time (a grandchild may hold a pipe): stop waiting
            if exited and open_pipes and drain_until is None:
                drain_until = now + 1.0  # the child is gone; a grandchild it left may hold the pipes
            wait = (drain_until if drain_until is not None else deadline) - now
            for key, _ in sel.select(max(0.0, min(wait, 3600.0))):
                if key.data == "ctrl":
                    assert ctrl is not None  # only registered when there is one
                    gone, done = _ctrl_message(ctrl, handle, on_ctrl)
                    if gone:
                        sel.unregister(ctrl)
                    exited = exited or gone or done
                    continue
                fd = res_r if key.data == "res" else err_r
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    open_pipes -= 1
                elif key.data == "res":
                    if len(answer) + len(chunk) > MAX_ANSWER_BYTES:
                        handle.kill("oversized answer")
                        handle.note = f"the child's answer exceeded {MAX_ANSWER_BYTES} bytes"
                        sel.unregister(fd)
                        open_pipes -= 1
                    else:
                        answer += chunk
                else:
                    tail.add(chunk)
    finally:
        sel.close()
    return bytes(answer), tail, timed_out


class WorkerHandle:
    """One running measurement (either isolation)."""

    def __init__(self) -> None:
        self.pid = 0
        self.note = ""
        self.kill_reason = ""
        self._started = threading.Event()

    def kill(self, reason: str = "cancelled") -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def wait(self, timeout_s: float) -> WorkerExit:  # pragma: no cover - overridden
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ fresh process
class _ProcessHandle(WorkerHandle):
    def __init__(self, payload: dict[str, Any], env: dict[str, str], lock_fd: int | None) -> None:
        super().__init__()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, start_new_session=True,
            pass_fds=(lock_fd,) if lock_fd is not None else (),
        )
        self.pid = self.proc.pid
        self._payload = json.dumps(payload).encode()
        self._mutex = threading.Lock()

    def kill(self, reason: str = "cancelled") -> None:
        with self._mutex:
            if self.proc.poll() is None:
                self.kill_reason = self.kill_reason or reason
                self.proc.kill()

    def wait(self, timeout_s: float) -> WorkerExit:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        try:
            self.proc.stdin.write(self._payload)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        answer, tail, timed_out = _collect(self.proc.stdout.fileno(), self.proc.stderr.fileno(), None,
                                           time.monotonic() + timeout_s, self, lambda _m: False)
        try:
            rc = self.proc.wait(KILL_GRACE_S)  # pipes closed: the process is exiting (or left a grandchild)
        except subprocess.TimeoutExpired:
            self.kill("no exit")
            rc = self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return _exit(self, rc, answer, tail, timed_out)


# ------------------------------------------------------------------------------------------ zygote
class Zygote:
    """The agent's end of one ``agent.zygote`` process (one runtime)."""

    def __init__(self, runtime: int, env: dict[str, str], spawn: Any) -> None:
        self.runtime = runtime
        self.name = runtimes.runtime_name(runtime)
        self.last_used = time.monotonic()
        self.mutex = threading.Lock()  # one child at a time
        self._send_lock = threading.Lock()
        self._next_id = 0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        cmd = [sys.executable, "-m", "agent.zygote", "--runtime", str(runtime), "--ctrl-fd", str(theirs.fileno()),
               "--parent-pid", str(os.getpid())]
        try:
            # spawned from one long-lived thread: PR_SET_PDEATHSIG follows the *thread* that forked
            self.proc: subprocess.Popen[bytes] = spawn(lambda: subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, pass_fds=(theirs.fileno(),)))
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.ready: dict[str, Any] | None = None
        self.closed = False

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the zygote imported its runtime (ProfileFailure on error or timeout)."""
        if self.ready is not None:
            return
        self.sock.settimeout(max(0.01, timeout_s))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            raise ProfileFailure(ErrorKind.TIMEOUT, f"the {self.name} runtime did not finish importing within "
                                                    f"{timeout_s:.3g} s (first request for it on this agent)") from None
        except OSError:
            data = b""
        finally:
            self.sock.settimeout(None)
        msg: dict[str, Any] = json.loads(data) if data else {
            "op": "error", "message": f"the {self.name} zygote exited (code {self.proc.poll()})"}
        if msg.get("op") != "ready":
            self.close()
            raise ProfileFailure(ErrorKind.UNAVAILABLE, str(msg.get("message", msg))[:2000])
        self.ready = msg
        log.info("runtime %s: zygote pid %d ready (rss %.0f MiB)", self.name, self.pid,
                 msg.get("rss_bytes", 0) / 2**20)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, msg: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
        with self._send_lock:
            if fds:
                socket.send_fds(self.sock, [json.dumps(msg).encode()], list(fds))
            else:
                self.sock.send(json.dumps(msg).encode())

    def start(self, payload: dict[str, Any], lock_fd: int | None) -> _ZygoteHandle:
        self._next_id += 1
        return _ZygoteHandle(self, self._next_id, payload, lock_fd)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()  # the zygote sees EOF, kills its child and exits
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _ZygoteHandle(WorkerHandle):
    def __init__(self, zygote: Zygote, rid: int, payload: dict[str, Any], lock_fd: int | None) -> None:
        super().__init__()
        self.zygote = zygote
        self.rid = rid
        self.t0 = time.monotonic()
        self.status: int | None = None
        self.refused = ""
        res_r, res_w = os.pipe()
        err_r, err_w = os.pipe()
        self._res_r, self._err_r = res_r, err_r
        fds = [res_w, err_w] + ([lock_fd] if lock_fd is not None else [])
        try:
            zygote.send({"op": "run", "id": rid, "payload": payload}, fds)
        except OSError as exc:
            for fd in (res_r, err_r):
                os.close(fd)
            raise ProfileFailure(ErrorKind.CRASH, f"the {zygote.name} zygote is gone ({exc}); retry") from exc
        finally:
            os.close(res_w)
            os.close(err_w)

    def kill(self, reason: str = "cancelled") -> None:
        if self.status is not None:
            return
        self.kill_reason = self.kill_reason or reason
        with contextlib.suppress(OSError):
            self.zygote.send({"op": "kill", "id": self.rid})

    def _on_ctrl(self, msg: dict[str, Any]) -> bool:
        if msg.get("id") != self.rid:
            return False
        op = msg.get("op")
        if op == "started":
            self.pid = int(msg["pid"])
            self._started.set()
        elif op == "exited":
            self.pid = int(msg["pid"])
            self.status = int(msg["status"])
            return True
        elif op == "refused":
            self.refused = str(msg.get("message", ""))
            return True
        return False

    def wait(self, timeout_s: float) -> WorkerExit:
        try:
            answer, tail, timed_out = _collect(self._res_r, self._err_r, self.zygote.sock,
                                               time.monotonic() + timeout_s, self, self._on_ctrl)
        finally:
            os.close(self._res_r)
            os.close(self._err_r)
        if self.refused:
            raise ProfileFailure(ErrorKind.RUNTIME, f"the {self.zygote.name} zygote refused the request: "
                                                    f"{self.refused}")
        if self.status is None:  # the zygote died or hangs: it cannot be trusted with the next request
            self.note = self.note or "the runtime's zygote stopped answering"
            self.zygote.close()
            rc = None
        elif os.WIFSIGNALED(self.status):
            rc = -os.WTERMSIG(self.status)
        else:
            rc = os.WEXITSTATUS(self.status)
        return _exit(self, rc, answer, tail, timed_out)


def _exit(handle: WorkerHandle, rc: int | None, answer_bytes: bytes, tail: _Tail, timed_out: bool) -> WorkerExit:
    answer = None
    text = answer_bytes.decode(errors="replace").strip()
    if text:
        try:
            answer = json.loads(text.splitlines()[-1])
        except ValueError:
            answer = None
    return WorkerExit(pid=handle.pid, returncode=rc, answer=answer, stderr_tail=tail.text(),
                      timed_out=timed_out or handle.kill_reason == "timeout",
                      cancelled=handle.kill_reason == "cancelled", note=handle.note, kill_reason=handle.kill_reason,
                      timings={"worker_wall_s": time.monotonic() - getattr(handle, "t0", time.monotonic())})


# ------------------------------------------------------------------------------------------ the pool
class WorkerPool:
    """Starts measuring children for an agent (one zygote per runtime, started on first use)."""

    def __init__(self, *, isolation: str = "fork", env: Mapping[str, str] | None = None,
                 zygote_idle_s: float = 900.0) -> None:
        self.isolation = isolation
        self.extra_env = dict(env or {})
        self.zygote_idle_s = zygote_idle_s
        self._zygotes: dict[int, Zygote] = {}
        self._mutex = threading.Lock()
        self._spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnf-spawner")
        self._active: set[WorkerHandle] = set()
        self._closed = False
        self._wake = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="nnf-zygote-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        """Stop zygotes nobody used for ``zygote_idle_s`` (their memory goes back to the device)."""
        tick = max(1.0, min(60.0, self.zygote_idle_s / 4))
        while not self._wake.wait(tick):
            with self._mutex:
                if self._closed:
                    return
                self._reap_idle_locked()

    def _spawn(self, fn: Any) -> Any:
        return self._spawner.submit(fn).result()

    def _zygote(self, runtime: int) -> Zygote:
        with self._mutex:
            if self._closed:
                raise ProfileFailure(ErrorKind.SHUTTING_DOWN, "the agent is stopping")
            self._reap_idle_locked()
            z = self._zygotes.get(runtime)
            if z is not None and not z.alive():
                log.warning("runtime %s: zygote pid %d exited (code %s); starting a new one", z.name, z.pid,
                            z.proc.poll())
                z.close()
                z = None
            if z is None:
                z = Zygote(runtime, worker_env(self.extra_env), self._spawn)
                self._zygotes[runtime] = z
            return z

    def _reap_idle_locked(self) -> None:
        now = time.monotonic()
        for rt, z in list(self._zygotes.items()):
            if now - z.last_used > self.zygote_idle_s and z.mutex.acquire(blocking=False):
                try:
                    log.info("runtime %s: zygote pid %d idle for %.0f s; stopping it", z.name, z.pid,
                             now - z.last_used)
                    z.close()
                    del self._zygotes[rt]
                finally:
                    z.mutex.release()

    def run(self, payload: dict[str, Any], timeout_s: float, lock_fd: int | None,
            on_start: Any = None, startup_s: float | None = None) -> WorkerExit:
        """Measure ``payload`` in a child for at most ``timeout_s``.

        The first request for a runtime waits for its zygote to import it (once per agent) for up to
        ``startup_s`` (default: ``timeout_s``); that one-time import is not charged to the model's
        ``timeout_s``. ``on_start(handle)`` is called once the child is started (to register
        ``handle.kill`` as a cancellation callback).
        """
        deadline = time.monotonic() + timeout_s
        if self.isolation == "process" or payload.get("mode") == "probe":
            handle: WorkerHandle = self._spawn(lambda: _ProcessHandle(
                payload, worker_env(self.extra_env, int(payload.get("threads") or 1)), lock_fd))
            return self._track(handle, deadline, on_start)
        z = self._zygote(int(payload["runtime"]))
        with z.mutex:
            if z.closed:  # stopped for idleness just now: take a new one
                return self.run(payload, timeout_s, lock_fd, on_start, startup_s)
            if z.ready is None:
                t0 = time.monotonic()
                z.wait_ready(startup_s if startup_s is not None else timeout_s)
                deadline += time.monotonic() - t0
            z.last_used = time.monotonic()
            try:
                handle = z.start(payload, lock_fd)
                return self._track(handle, deadline, on_start)
            finally:
                z.last_used = time.monotonic()

    def _track(self, handle: WorkerHandle, deadline: float, on_start: Any) -> WorkerExit:
        with self._mutex:
            self._active.add(handle)
            closed = self._closed
        try:
            if closed:
                handle.kill("shutdown")
            if on_start is not None:
                on_start(handle)
            return handle.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with self._mutex:
                self._active.discard(handle)

    def probe(self, timeout_s: float, nice: int = 19) -> WorkerExit:
        """Run the runtime probe in a fresh, low-priority process (never waits for a measurement)."""
        env = worker_env(self.extra_env)

        def start() -> _ProcessHandle:
            h = _ProcessHandle({"mode": "probe"}, env, None)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, h.pid, nice)
            return h

        return self._track(self._spawn(start), time.monotonic() + timeout_s, None)

    def close(self) -> None:
        """Kill running children and stop every zygote (bounded: a few seconds at most)."""
        self._wake.set()
        with self._mutex:
            self._closed = True
            active = list(self._active)
            zygotes = list(self._zygotes.values())
            self._zygotes.clear()
        for h in active:
            h.kill("shutdown")
        for z in zygotes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(z.pid, signal.SIGKILL)  # its child gets SIGKILL too (parent-death signal)
            z.close()
        self._spawner.shutdown(wait=False)


def interpret(ex: WorkerExit, memory_limit_bytes: int) -> dict[str, Any]:
    """The result of a finished child, or the ProfileFailure that describes what went wrong."""
    tail = ex.stderr_tail[-1500:]
    if ex.cancelled:
        raise ProfileFailure(ErrorKind.CANCELLED, "the client cancelled the request")
    if ex.timed_out:
        raise ProfileFailure(ErrorKind.TIMEOUT, f"model did not finish within its deadline; the worker (pid "
                                                f"{ex.pid}) was killed")
    if ex.kill_reason and ex.kill_reason not in ("timeout", "cancelled"):
        raise ProfileFailure(ErrorKind.CRASH, f"worker (pid {ex.pid}) was stopped ({ex.kill_reason}): "
                                              f"{ex.note or 'no answer'}")
    if ex.returncode is None:
        raise ProfileFailure(ErrorKind.CRASH, f"worker (pid {ex.pid}) lost: {ex.note or 'no exit status'}; the "
                                              f"agent keeps serving. stderr: {tail}")
    if ex.returncode < 0:
        signum = -ex.returncode
        sig = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        if signum == signal.SIGKILL:
            raise ProfileFailure(ErrorKind.OOM, f"worker (pid {ex.pid}) was killed by SIGKILL, most likely by the "
                                                f"kernel's out-of-memory killer. stderr: {tail}")
        raise ProfileFailure(ErrorKind.CRASH, f"worker (pid {ex.pid}) crashed with signal {sig} while running the "
                                              f"model; the agent keeps serving. stderr: {tail}")
    if ex.returncode != 0 or ex.answer is None:
        raise ProfileFailure(ErrorKind.CRASH, f"worker (pid {ex.pid}) exited with code {ex.returncode} "
                                              f"{'without an answer' if ex.answer is None else ''}. stderr: {tail}")
    answer = ex.answer
    if answer.get("ok"):
        return answer["result"]
    kind = str(answer.get("kind", "runtime"))
    message = str(answer.get("message", ""))
    if kind == "oom":
        message = ("model ran out of memory" + (f" (it may add {memory_limit_bytes} bytes of address space on top "
                                                f"of the runtime; raise memory_limit_bytes up to the agent's cap)"
                                                if memory_limit_bytes else "") + f": {message}")
    try:
        ek = ErrorKind(kind)
    except ValueError:
        ek = ErrorKind.RUNTIME
    raise ProfileFailure(ek, message)
