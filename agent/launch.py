"""Starting an agent on this machine as a subprocess: one launcher for the CLI, benchmarks and tests.

    with local_agent(cache_dir=tmp / "cache", state_dir=tmp / "state") as agent:
        client = AgentClient(agent.address, token=agent.token)   # host.client
        ...

:func:`start_local_agent` runs ``python -m agent serve --port 0`` (plus whatever options), waits for its
listening line (``agent.protocol.parse_listening_line``), reads the token it uses (the one given, or the
one it generated in its state directory) and returns a :class:`LocalAgent`; :func:`local_agent` does the
same as a context manager that stops the agent (SIGTERM, then SIGKILL) on exit. ``detach=True`` starts
it in its own session with its output in a log file, so it outlives the caller (``nnf agent start
--local``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import agent as agent_pkg
from agent.config import default_state_dir, read_token_file
from agent.protocol import ListeningLine, parse_listening_line


class LaunchError(RuntimeError):
    """The agent did not start (the message carries the end of its output)."""


@dataclass
class LocalAgent:
    address: str
    port: int
    pid: int
    token: str | None
    listening: ListeningLine
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code when it was our child."""
        if self.proc is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def agent_pythonpath() -> str:
    root = str(Path(agent_pkg.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")


def serve_command(*, host: str = "127.0.0.1", port: int = 0, cache_dir: Path | str | None = None,
                  state_dir: Path | str | None = None, token_file: Path | str | None = None, no_auth: bool = False,
                  extra_args: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "agent", "serve", "--host", host, "--port", str(port)]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir)]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    if no_auth:
        cmd.append("--no-auth")
    return cmd + [str(a) for a in extra_args]


def start_local_agent(*, host: str = "127.0.0.1", port: int = 0, cache_dir: Path | str | None = None,
                      state_dir: Path | str | None = None, token: str | None = None,
                      token_file: Path | str | None = None, no_auth: bool = False, extra_args: Sequence[str] = (),
                      env: Mapping[str, str] | None = None, detach: bool = False, log_path: Path | str | None = None,
                      wait_s: float = 120.0, python: str = sys.executable) -> LocalAgent:
    """Start ``python -m agent serve`` and wait until it listens (LaunchError when it does not).

    ``token`` is passed through the environment (never on the command line); without ``token``,
    ``token_file`` or ``no_auth`` the agent uses (and on first start generates) ``STATE_DIR/token``.
    """
    cmd = serve_command(host=host, port=port, cache_dir=cache_dir, state_dir=state_dir, token_file=token_file,
                        no_auth=no_auth, extra_args=extra_args, python=python)
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": agent_pythonpath(), "PYTHONUNBUFFERED": "1"}
    full_env.pop("NNF_AGENT_TOKEN", None)
    if token:
        full_env["NNF_AGENT_TOKEN"] = token
    deadline = time.monotonic() + wait_s
    if detach:
        if log_path is None:
            raise ValueError("detach=True needs a log_path")
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        start_size = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=full_env,
                                    start_new_session=True)
        line = _wait_in_log(proc, log, start_size, deadline)
    else:
        # stderr (the agent's log) goes to a file, never to a pipe nobody reads (it would fill and block)
        err = Path(log_path).open("ab") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
        with err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=full_env)
            line = _wait_on_stdout(proc, deadline, err)
    got_token = token
    if line.auth == "token" and got_token is None:
        path = Path(token_file) if token_file else (Path(state_dir) if state_dir else default_state_dir()) / "token"
        got_token = read_token_file(path)
    return LocalAgent(address=line.address, port=line.port, pid=line.pid, token=got_token if line.auth != "none"
                      else None, listening=line, log_path=Path(log_path) if log_path else None,
                      proc=None if detach else proc)


def _wait_on_stdout(proc: subprocess.Popen[bytes], deadline: float, err: BinaryIO) -> ListeningLine:
    assert proc.stdout is not None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for raw in buf.decode(errors="replace").splitlines():
                line = parse_listening_line(raw)
                if line is not None:
                    return line
    finally:
        sel.close()
    with contextlib.suppress(OSError):
        err.seek(0)
        buf += err.read()[-4000:]
    return _failed(proc, buf.decode(errors="replace"))


def _wait_in_log(proc: subprocess.Popen[bytes], log: Path, start: int, deadline: float) -> ListeningLine:
    text = ""
    while time.monotonic() < deadline:
        with log.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
        for raw in text.splitlines():
            line = parse_listening_line(raw)
            if line is not None and line.pid == proc.pid:  # the log may be shared with other agents
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    return _failed(proc, text)


def _failed(proc: subprocess.Popen[bytes], output: str) -> ListeningLine:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    tail = output[-2000:].strip()
    raise LaunchError(f"the agent exited with code {proc.returncode} before listening:\n{tail}")


@contextlib.contextmanager
def local_agent(**kwargs: object) -> Iterator[LocalAgent]:
    """:func:`start_local_agent` as a context manager: the agent is stopped when the block ends."""
    a = start_local_agent(**kwargs)  # type: ignore[arg-type]
    try:
        yield a
    finally:
        a.stop()
