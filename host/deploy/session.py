"""A live connection to a deployed agent: transport + tunnel, healing itself after a dropped connection.

``DeviceSession(device)`` connects, finds the running agent (``W/run/agent.json``, checked against the live
process) and opens a :class:`~host.deploy.forward.Forwarder`; ``session.address`` (``127.0.0.1:<port>``) is
what the gRPC client (``host.client.AgentClient``) connects to, with ``session.token`` (read from the
device, never stored on the host); ``session.client()`` builds that client. When the ssh/adb connection drops, the next
stream the forwarder needs reconnects the transport (bounded retries with backoff). When the agent is no
longer running after a reconnect (the device rebooted, or the agent was killed), the session restarts it
from the release already on the device if ``restart_agent=True``; otherwise it raises a
:class:`DeployError` telling the user to run ``nnf deploy NAME``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from host.deploy.deployer import AgentState, RemoteStatus, remote_status, start_agent
from host.deploy.forward import Forwarder
from host.deploy.inventory import Device
from host.deploy.transport import Stream, Transport, connect
from host.errors import DeployError

if TYPE_CHECKING:
    from host.client import AgentClient


class DeviceSession:
    """Tunnel to the agent of one device (use as a context manager)."""

    def __init__(self, device: Device, *, local_port: int = 0, restart_agent: bool = True,
                 reconnect_attempts: int = 5, reconnect_backoff_s: float = 0.5,
                 accept_new_host_key: bool = False) -> None:
        self.device = device
        self.restart_agent = restart_agent
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff_s = reconnect_backoff_s
        self._accept_new = accept_new_host_key
        self._lock = threading.Lock()
        self.reconnects = 0
        self.fail_fast_s = 5.0
        self._failed_at: float | None = None
        self._failure = ""
        self.agent_restarts = 0
        self.transport: Transport = connect(device, accept_new_host_key=accept_new_host_key)
        try:
            st = remote_status(self.transport)
            self.workdir = st.workdir
            self.token = st.token
            self.state = self._require_agent(st)
            self.forwarder = Forwarder(self._open, port=local_port, name=device.name)
        except BaseException:
            self.transport.close()
            raise

    def client(self, **kwargs: Any) -> AgentClient:
        """A :class:`host.client.AgentClient` connected through the tunnel, with the device's token.

        ``kwargs`` are those of ``AgentClient`` (``timeout_s``, ``retries``, ``compression``, ...).
        """
        from host.client import AgentClient

        return AgentClient(self.address, token=self.token, **kwargs)

    @property
    def address(self) -> str:
        """``host:port`` of the local end of the tunnel."""
        return self.forwarder.address

    def _require_agent(self, st: RemoteStatus | None = None) -> AgentState:
        st = st or remote_status(self.transport)
        self.token = st.token
        state = st.agent
        if state.running:
            return state
        if state.release is None:
            raise DeployError(f"device {self.device.name!r}: no agent is deployed in {self.workdir}; run "
                              f"`nnf deploy {self.device.name}` first")
        if not self.restart_agent:
            raise DeployError(f"device {self.device.name!r}: the agent (release {state.release}) is not running "
                              f"(the device may have rebooted); run `nnf deploy {self.device.name}`")
        pid, port = start_agent(self.transport, self.workdir, state.release)
        self.agent_restarts += 1
        return AgentState(running=True, release=state.release, pid=pid, port=port)

    def _reconnect(self) -> None:
        last: Exception | None = None
        for attempt in range(self.reconnect_attempts):
            with contextlib.suppress(OSError):
                self.transport.close()
            try:
                self.transport = connect(self.device, accept_new_host_key=self._accept_new)
                self.reconnects += 1
                self.state = self._require_agent()
                return
            except DeployError as exc:
                last = exc
                if "no agent is deployed" in str(exc) or "not running" in str(exc):
                    raise
                time.sleep(self.reconnect_backoff_s * (2 ** attempt))
        raise DeployError(f"device {self.device.name!r}: could not reconnect after {self.reconnect_attempts} "
                          f"attempts: {last}")

    def _open(self) -> Stream:
        with self._lock:
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.fail_fast_s:
                raise DeployError(self._failure)  # the device was unreachable moments ago: do not wait again
            if not self.transport.alive():
                try:
                    self._reconnect()
                except DeployError as exc:
                    self._failed_at, self._failure = time.monotonic(), str(exc)
                    raise
                self._failed_at = None
            try:
                return self.transport.open_stream(self.state.port or 0)
            except (ConnectionError, OSError):
                # refused: the agent may be gone (killed, device rebooted) or the connection half-dead
                if self.transport.alive():
                    self.state = self._require_agent()
                else:
                    self._reconnect()
                return self.transport.open_stream(self.state.port or 0)

    def close(self) -> None:
        self.forwarder.close()
        self.transport.close()

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
