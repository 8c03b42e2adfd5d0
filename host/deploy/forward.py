"""A small local port forwarder: ``127.0.0.1:<local port>`` on the host -> a stream into the device.

Each accepted TCP connection gets a fresh device stream from ``open_stream()`` (an ssh ``direct-tcpip``
channel or an adb ``tcp:<port>`` stream) and two pump threads copy bytes both ways until either side ends.
``open_stream`` may reconnect the underlying transport first, which is how a dropped connection heals: the
gRPC client sees one failed connection, retries, and the next accepted connection gets a new stream.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from host.deploy.transport import Stream
from host.errors import DeployError

BUFFER_BYTES = 64 * 1024


class Forwarder:
    """Listen on the host's loopback and bridge every connection to ``open_stream()``."""

    def __init__(self, open_stream: Callable[[], Stream], *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "device") -> None:
        self._open_stream = open_stream
        self.name = name
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.bind((host, port))
        except OSError as exc:
            self._listener.close()
            raise DeployError(f"device {name!r}: cannot listen on {host}:{port} on this host ({exc}); "
                              f"the port is probably in use: pick another --local-port or use 0") from None
        self._listener.listen(16)
        self.host, self.port = self._listener.getsockname()[:2]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, Stream]] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.failed_opens = 0
        self.last_error: str | None = None
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"nnf-fwd-{name}", daemon=True)
        self._accept_thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                stream = self._open_stream()
            except (OSError, DeployError, ConnectionError) as exc:
                self.failed_opens += 1
                self.last_error = str(exc)
                conn.close()
                continue
            self.connections += 1
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    stream.close()
                    return
                self._pairs.append((conn, stream))
                for target, args in ((self._pump_up, (conn, stream)), (self._pump_down, (stream, conn))):
                    t = threading.Thread(target=target, args=args, daemon=True, name=f"nnf-pump-{self.name}")
                    self._threads.append(t)
                    t.start()
                self._threads = [t for t in self._threads if t.is_alive()]

    def _end(self, conn: socket.socket, stream: Stream) -> None:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()
        with contextlib.suppress(OSError, ConnectionError):
            if isinstance(stream, socket.socket):  # close() alone does not wake a recv() in another thread
                stream.shutdown(socket.SHUT_RDWR)
            stream.close()
        with self._lock, contextlib.suppress(ValueError):
            self._pairs.remove((conn, stream))

    def _pump_up(self, conn: socket.socket, stream: Stream) -> None:
        """host socket -> device stream"""
        try:
            while True:
                data = conn.recv(BUFFER_BYTES)
                if not data:
                    break
                stream.sendall(data)
        except (OSError, ConnectionError):
            pass
        finally:
            self._end(conn, stream)

    def _pump_down(self, stream: Stream, conn: socket.socket) -> None:
        """device stream -> host socket"""
        try:
            while True:
                data = stream.recv(BUFFER_BYTES)
                if not data:
                    break
                conn.sendall(data)
        except (OSError, ConnectionError):
            pass
        finally:
            self._end(conn, stream)

    def drop_connections(self) -> None:
        """Close every bridged connection (the listener stays)."""
        with self._lock:
            pairs = list(self._pairs)
        for conn, stream in pairs:
            self._end(conn, stream)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop_connections()
        self._accept_thread.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
