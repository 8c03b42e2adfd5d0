"""adb transport: shell commands, sync push/pull and ``tcp:<port>`` streams over one ADB connection.

Built on adb-shell's transports (``TcpTransport`` for ``host:port`` serials, ``UsbTransport`` for USB serials,
imported lazily: ``pip install 'nn-factory[adb-usb]'``, i.e. ``adb-shell[usb]``) and its RSA signers/key generation, with a small
stream multiplexer of our own on top. Why not ``AdbDevice`` itself: its read loop is request/response
(it drops packets of the current stream that it is not waiting for, and one reader holds the transport
lock), so it cannot carry a long-lived bidirectional stream such as a gRPC connection to ``tcp:<port>``
while other commands run. Here one reader thread dispatches every incoming packet to its stream, every
WRTE is acknowledged with OKAY, and a sender waits for the peer's OKAY before its next WRTE (ADB flow
control). A USB device accepts only one host connection at a time, so shell, sync and tunnels all share it.

Exit codes: with the device feature ``shell_v2`` (Android 7+), commands run as ``shell,v2,raw:CMD`` and the
exit packet gives the exit code, stdout and stderr separately; without it (``shell:CMD``, v1) the command
is wrapped to print a unique marker with ``$?`` and the code is parsed from the output.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import struct
import threading
import time
from pathlib import Path
from typing import Any

from host.deploy.inventory import Device, expand_local_path
from host.deploy.transport import CommandResult, Stream, Transport
from host.errors import DeployError, MissingExtraError

A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_DATA_MAX = 64 * 1024


def _c(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (_c(x) for x in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
_NAMES = {CNXN: "CNXN", AUTH: "AUTH", OPEN: "OPEN", OKAY: "OKAY", CLSE: "CLSE", WRTE: "WRTE"}


class AdbStream:
    """One ADB stream (a :class:`~host.deploy.transport.Stream`)."""

    def __init__(self, link: AdbLink, local_id: int) -> None:
        self.link = link
        self.local_id = local_id
        self.remote_id = 0
        self.opened = threading.Event()
        self.refused = False
        self._acked = threading.Event()
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._pending = b""
        self.closed = False
        self._send_lock = threading.Lock()

    # called by the reader thread
    def _on_okay(self, remote_id: int) -> None:
        if not self.opened.is_set():
            self.remote_id = remote_id
            self.opened.set()
        else:
            self._acked.set()

    def _on_data(self, data: bytes) -> None:
        self._inbox.put(data)

    def _on_close(self) -> None:
        if not self.opened.is_set():
            self.refused = True
            self.opened.set()
        self.closed = True
        self._acked.set()
        self._inbox.put(None)

    # public
    def recv(self, n: int) -> bytes:
        if not self._pending:
            item = self._inbox.get()
            if item is None:
                self._inbox.put(None)  # stay at EOF
                return b""
            self._pending = item
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("adb stream closed")
            buf += chunk
        return buf

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            step = self.link.max_payload
            for i in range(0, len(data), step):
                if self.closed or self.link.dead.is_set():
                    raise ConnectionError("adb stream closed")
                self._acked.clear()
                self.link.send(WRTE, self.local_id, self.remote_id, data[i:i + step])
                while not self._acked.wait(0.5):
                    if self.link.dead.is_set() or self.closed:
                        raise ConnectionError("adb stream closed")
                if self.closed and i + step < len(data):  # closed after the last chunk = delivered
                    raise ConnectionError("adb stream closed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._acked.set()  # wake a sender waiting for an OKAY that will not come
            if self.remote_id and not self.link.dead.is_set():
                self.link.send(CLSE, self.local_id, self.remote_id)
            self._inbox.put(None)
        self.link.forget(self.local_id)


class AdbLink:
    """An authenticated ADB connection with a reader thread multiplexing streams."""

    def __init__(self, transport: Any, signers: list[Any], *, name: str, timeout_s: float = 10.0) -> None:
        self._t = transport
        self.name = name
        self.timeout_s = timeout_s
        self._write_lock = threading.Lock()
        self._streams: dict[int, AdbStream] = {}
        self._ids_lock = threading.Lock()
        self._next_id = 1
        self.dead = threading.Event()
        self.max_payload = 4096
        self.features: set[str] = set()
        self.banner = ""
        self._t.connect(timeout_s)
        try:
            self._handshake(signers)
        except BaseException:
            self._t.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name=f"nnf-adb-{name}")
        self._reader.start()

    # -- framing ------------------------------------------------------------------------------------------
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        msg = struct.pack("<6I", command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self._write_lock:
            try:
                buf = memoryview(msg + data)
                while buf:
                    n = self._t.bulk_write(bytes(buf), self.timeout_s)  # TCP may write partially
                    if not isinstance(n, int):  # USB: the whole buffer
                        break
                    buf = buf[n:]
            except Exception as exc:  # adb-shell raises its own exception types per transport
                self.dead.set()
                raise ConnectionError(f"adb write failed: {exc}") from exc

    def _read_exact(self, n: int, timeout_s: float | None) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._t.bulk_read(n - len(buf), timeout_s)
            if not chunk:
                raise ConnectionError("adb connection closed by the device")
            buf += chunk
        return buf

    def _read_message(self, timeout_s: float | None) -> tuple[int, int, int, bytes]:
        header = self._read_exact(24, timeout_s)
        command, arg0, arg1, length, _crc, magic = struct.unpack("<6I", header)
        if magic != command ^ 0xFFFFFFFF or command not in _NAMES:
            raise ConnectionError(f"adb protocol error: bad message header {header.hex()}")
        data = self._read_exact(length, timeout_s) if length else b""
        return command, arg0, arg1, data

    # -- connection ---------------------------------------------------------------------------------------
    def _handshake(self, signers: list[Any]) -> None:
        banner = b"host::features=shell_v2,stat_v2,fixed_push_mkdir\0"
        self.send(CNXN, A_VERSION, MAX_PAYLOAD, banner)
        tried = 0
        sent_pubkey = False
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                command, arg0, arg1, data = self._read_message(self.timeout_s)
            except Exception as exc:  # adb-shell timeout/transport errors, ConnectionError
                if sent_pubkey:
                    raise DeployError(
                        f"device {self.name!r}: the device did not accept this host's adb key; unlock the phone "
                        f"and allow USB debugging for this computer (check 'Always allow'), then retry"
                    ) from None
                raise DeployError(f"device {self.name!r}: adb handshake failed ({exc})") from None
            if command == CNXN:
                self.max_payload = max(256, min(arg1, MAX_PAYLOAD))
                self.banner = data.rstrip(b"\0").decode("utf-8", "replace")
                for part in self.banner.split("::", 1)[-1].split(";"):
                    if part.startswith("features="):
                        self.features = set(part[len("features="):].split(","))
                return
            if command != AUTH or arg0 != AUTH_TOKEN:
                raise DeployError(f"device {self.name!r}: unexpected adb message {_NAMES.get(command)} during "
                                  f"the handshake")
            if tried < len(signers):
                self.send(AUTH, AUTH_SIGNATURE, 0, signers[tried].Sign(data))
                tried += 1
            elif signers and not sent_pubkey:
                pub = signers[0].GetPublicKey()
                pub = pub.encode() if isinstance(pub, str) else bytes(pub)
                self.send(AUTH, AUTH_RSAPUBLICKEY, 0, pub + b"\0")
                sent_pubkey = True
            else:
                raise DeployError(f"device {self.name!r}: the device requires adb authentication and no adb key "
                                  f"was accepted; set adb_key in the inventory")
            if time.monotonic() > deadline and not sent_pubkey:
                raise DeployError(f"device {self.name!r}: adb authentication timed out")

    def _read_loop(self) -> None:
        try:
            while not self.dead.is_set():
                command, arg0, arg1, data = self._read_message(None)
                with self._ids_lock:
                    stream = self._streams.get(arg1)
                if command == OKAY and stream is not None:
                    stream._on_okay(arg0)
                elif command == WRTE:
                    if stream is None:
                        self.send(CLSE, arg1, arg0)
                        continue
                    stream._on_data(data)
                    self.send(OKAY, arg1, arg0)
                elif command == CLSE and stream is not None:
                    stream._on_close()
                    with self._ids_lock:
                        self._streams.pop(arg1, None)
        except Exception:
            pass
        finally:
            self.dead.set()
            with self._ids_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for s in streams:
                s._on_close()

    def forget(self, local_id: int) -> None:
        with self._ids_lock:
            self._streams.pop(local_id, None)

    def open(self, service: str) -> AdbStream:
        if self.dead.is_set():
            raise ConnectionError(f"device {self.name!r}: the adb connection is closed")
        with self._ids_lock:
            local_id = self._next_id
            self._next_id += 1
            stream = AdbStream(self, local_id)
            self._streams[local_id] = stream
        self.send(OPEN, local_id, 0, service.encode() + b"\0")
        if not stream.opened.wait(self.timeout_s):
            self.forget(local_id)
            raise ConnectionError(f"device {self.name!r}: adb service {service.split(':')[0]!r} did not answer")
        if stream.refused:
            self.forget(local_id)
            raise ConnectionRefusedError(f"device {self.name!r}: the device refused adb service {service!r}")
        return stream

    def close(self) -> None:
        self.dead.set()
        with contextlib.suppress(Exception):
            self._t.close()
        self._reader.join(timeout=5)


def _load_signers(device: Device) -> list[Any]:
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_cryptography import CryptographySigner

    key = expand_local_path(device.adb_key) or Path.home() / ".android" / "adbkey"
    if not key.is_file():
        if device.adb_key:
            raise DeployError(f"device {device.name!r}: adb_key {key} does not exist; fix adb_key in the inventory")
        key.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(key))  # like `adb` does on first use: a new 2048-bit key pair
        os.chmod(key, 0o600)
    if not Path(str(key) + ".pub").is_file():
        from adb_shell.auth.keygen import write_public_keyfile

        write_public_keyfile(str(key), str(key) + ".pub")
    return [CryptographySigner(str(key))]


def _adb_transport(device: Device) -> Any:
    assert device.serial is not None
    if device.adb_over_tcp:
        from adb_shell.transport.tcp_transport import TcpTransport

        host, _, port = device.serial.rpartition(":")
        return TcpTransport(host, int(port))
    try:
        from adb_shell.transport.usb_transport import UsbTransport
    except ImportError:
        raise MissingExtraError("adb over USB", "adb-usb", package="adb-shell[usb]") from None
    try:
        return UsbTransport.find_adb(serial=device.serial)
    except Exception as exc:  # adb-shell raises DeviceNotFoundError / libusb errors
        raise DeployError(f"device {device.name!r}: no USB adb device with serial {device.serial!r} ({exc}); "
                          f"plug it in, enable USB debugging, and check `lsusb`") from None


class AdbTransport(Transport):
    """Deploy over adb (TCP ``host:port`` or USB serial)."""

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        signers = _load_signers(device)
        try:
            transport = _adb_transport(device)
            self.link = AdbLink(transport, signers, name=device.name, timeout_s=device.connect_timeout_s)
        except DeployError:
            raise
        except Exception as exc:  # socket errors, adb-shell transport errors
            raise DeployError(
                f"device {device.name!r}: cannot reach adb at {device.serial} ({exc.__class__.__name__}: {exc}); "
                f"check that the device is on, `adb tcpip 5555` was run (for Wi-Fi) and the address is right"
            ) from None

    def alive(self) -> bool:
        return not self.link.dead.is_set()

    def close(self) -> None:
        self.link.close()

    def run(self, command: str, *, timeout_s: float = 120.0) -> CommandResult:
        if "shell_v2" in self.link.features:
            return self._run_v2(command, timeout_s)
        return self._run_v1(command, timeout_s)

    def _collect(self, stream: AdbStream, timeout_s: float) -> bytes:
        out = bytearray()
        done = threading.Event()

        def reader() -> None:
            while True:
                chunk = stream.recv(SYNC_DATA_MAX)
                if not chunk:
                    break
                out.extend(chunk)
            done.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        if not done.wait(timeout_s):
            stream.close()
            raise DeployError(f"device {self.device.name!r}: remote command timed out after {timeout_s:.0f} s")
        return bytes(out)

    def _run_v2(self, command: str, timeout_s: float) -> CommandResult:
        try:
            stream = self.link.open(f"shell,v2,raw:{command}")
        except ConnectionError as exc:
            raise DeployError(f"{exc}; the adb connection may have dropped") from None
        raw = self._collect(stream, timeout_s)
        stream.close()
        stdout, stderr, code = bytearray(), bytearray(), None
        i = 0
        while i + 5 <= len(raw):
            kind, length = struct.unpack_from("<BI", raw, i)
            payload = raw[i + 5:i + 5 + length]
            i += 5 + length
            if kind == 1:
                stdout += payload
            elif kind == 2:
                stderr += payload
            elif kind == 3 and payload:
                code = payload[0]
        if code is None:
            raise DeployError(f"device {self.device.name!r}: the command got no exit status (connection lost?)")
        return CommandResult(command, code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def _run_v1(self, command: str, timeout_s: float) -> CommandResult:
        marker = f"__NNF_EXIT_{secrets.token_hex(8)}__"
        # stderr is merged into stdout by a v1 shell; the marker line carries the exit code
        wrapped = f"( {command}\n) 2>&1; nnf_rc=$?; echo; echo {marker}$nnf_rc"
        try:
            stream = self.link.open(f"shell:{wrapped}")
        except ConnectionError as exc:
            raise DeployError(f"{exc}; the adb connection may have dropped") from None
        raw = self._collect(stream, timeout_s).decode("utf-8", "replace").replace("\r\n", "\n")
        stream.close()
        head, sep, tail = raw.rpartition(marker)
        if not sep or not tail.strip().isdigit():
            raise DeployError(f"device {self.device.name!r}: the command got no exit status (connection lost?)")
        out = head[:-1] if head.endswith("\n") else head  # the extra echo
        return CommandResult(command, int(tail.strip()), out, "")

    # -- sync ---------------------------------------------------------------------------------------------
    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        try:
            s = self.link.open("sync:")
        except ConnectionError as exc:
            raise DeployError(f"{exc}") from None
        try:
            spec = f"{remote_path},{0o100000 | mode}".encode()
            buf = b"SEND" + struct.pack("<I", len(spec)) + spec
            for i in range(0, len(data), SYNC_DATA_MAX):
                chunk = data[i:i + SYNC_DATA_MAX]
                buf += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                if len(buf) >= self.link.max_payload:
                    s.sendall(buf)
                    buf = b""
            s.sendall(buf + b"DONE" + struct.pack("<I", int(time.time())))
            ident = s.recv_exact(4)
            length = struct.unpack("<I", s.recv_exact(4))[0]
            if ident == b"FAIL":
                msg = s.recv_exact(length).decode("utf-8", "replace")
                raise DeployError(f"device {self.device.name!r}: writing {remote_path} failed: {msg}")
            if ident != b"OKAY":
                raise DeployError(f"device {self.device.name!r}: unexpected sync reply {ident!r}")
            with contextlib.suppress(ConnectionError):
                s.sendall(b"QUIT" + struct.pack("<I", 0))
        except ConnectionError as exc:
            raise DeployError(f"device {self.device.name!r}: writing {remote_path} failed: {exc}") from None
        finally:
            s.close()

    def get(self, remote_path: str) -> bytes:
        try:
            s = self.link.open("sync:")
        except ConnectionError as exc:
            raise DeployError(f"{exc}") from None
        try:
            path = remote_path.encode()
            s.sendall(b"RECV" + struct.pack("<I", len(path)) + path)
            out = bytearray()
            while True:
                ident = s.recv_exact(4)
                length = struct.unpack("<I", s.recv_exact(4))[0]
                if ident == b"DATA":
                    out += s.recv_exact(length)
                elif ident == b"DONE":
                    break
                elif ident == b"FAIL":
                    msg = s.recv_exact(length).decode("utf-8", "replace")
                    raise DeployError(f"device {self.device.name!r}: reading {remote_path} failed: {msg}")
                else:
                    raise DeployError(f"device {self.device.name!r}: unexpected sync reply {ident!r}")
            with contextlib.suppress(ConnectionError):
                s.sendall(b"QUIT" + struct.pack("<I", 0))
            return bytes(out)
        except ConnectionError as exc:
            raise DeployError(f"device {self.device.name!r}: reading {remote_path} failed: {exc}") from None
        finally:
            s.close()

    # -- tunnel -------------------------------------------------------------------------------------------
    def open_stream(self, port: int) -> Stream:
        return self.link.open(f"tcp:{port}")
