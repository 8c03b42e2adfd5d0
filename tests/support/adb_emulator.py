"""A small ADB *device* (what adbd does) speaking the ADB wire protocol on a loopback TCP port.

No Android device or adbd exists on a CI machine, so the adb tests talk to this emulator. It is meant to be
faithful enough for both adb-shell and Debian's real ``adb`` client (``adb connect``, ``adb shell``,
``adb push``/``pull``):

- Transport messages: 24-byte little-endian header ``command, arg0, arg1, data_length, data_crc32 (sum of
  the payload bytes), magic = command ^ 0xffffffff`` followed by the payload. Commands CNXN, AUTH, OPEN,
  OKAY, WRTE, CLSE. Each WRTE is acknowledged by one OKAY before the sender may send the next one on that
  stream (the emulator enforces this on its side too). A CLSE from the host is answered by a CLSE.
- Connection: the host sends ``CNXN(version, maxdata, "host::...")``. Without keys the device answers
  ``CNXN(version, maxdata, "device::ro.product.name=...;...;features=shell_v2,stat_v2,...")``. With
  authorized keys it sends ``AUTH(TOKEN, 0, <20 random bytes>)``; the host answers ``AUTH(SIGNATURE)``
  (RSA PKCS#1 v1.5 over the token as a SHA-1 digest), checked against the authorized adb public keys
  (Android's binary RSA key format, base64); a bad signature gets a fresh token; then the host may send
  ``AUTH(RSAPUBLICKEY)``, which a real phone shows to the user: here it is accepted only if
  ``accept_new_keys`` (otherwise the connection is closed: "unauthorized").
- Services (OPEN payload): ``shell:CMD`` (v1: raw bytes, stdout+stderr merged, no exit code),
  ``shell,v2,...:CMD`` (shell protocol v2: packets ``id:u8 len:u32 data`` with stdin=0, stdout=1, stderr=2,
  exit=3, close-stdin=4), ``exec:CMD``, ``sync:`` (STAT, STA2, LST2, LIST, SEND, RECV, DATA, DONE, OKAY,
  FAIL, QUIT; requests may span WRTE packets) and ``tcp:PORT`` (a connection to this machine's loopback).
- Commands run with ``/bin/sh -c`` in the sandbox directory (cwd and ``$HOME``); sync access is confined to
  the sandbox (``permission denied`` outside, as adbd's SELinux would refuse).
- With ``root=`` (a device root file system, e.g. the emulated aarch64 device of ``tests/support/arm64.py``)
  the shell and sync services run *inside* that root, as a rooted phone's adbd would: commands are
  ``chroot ROOT /bin/sh -c CMD`` with a clean environment (the device's own PATH and Python), and ``sandbox``
  is a path on the device (e.g. ``/data/local/tmp``), stored under ``ROOT``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import secrets
import socket
import stat
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

A_VERSION = 0x01000001
A_VERSION_MIN = 0x01000000
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_DATA_MAX = 64 * 1024
FEATURES = ("shell_v2", "stat_v2", "fixed_push_mkdir")


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (_cmd(x) for x in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return struct.pack("<6I", command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                       command ^ 0xFFFFFFFF) + data


def decode_adb_pubkey(text: bytes) -> rsa.RSAPublicKey:
    """Android's ``RSAPublicKey`` struct (base64, then `` user@host``) -> a cryptography public key."""
    blob = base64.b64decode(text.strip().split()[0])
    words, _n0inv = struct.unpack_from("<II", blob, 0)
    size = words * 4
    n = int.from_bytes(blob[8:8 + size], "little")
    e = struct.unpack_from("<I", blob, 8 + 2 * size)[0]
    return rsa.RSAPublicNumbers(e, n).public_key()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


class _Stream:
    """One device-side stream: a service instance bound to (local_id, remote_id).

    Device->host data goes through a queue and a sender thread that waits for the host's OKAY after every
    WRTE, so the connection's reader thread (which receives those OKAYs) never blocks on flow control.
    """

    def __init__(self, conn: _Conn, local_id: int, remote_id: int) -> None:
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self._acked = threading.Event()
        self.closed = threading.Event()
        self._closing = False
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="adb-emu-send")
        self._sender.start()

    # device -> host
    def write(self, data: bytes) -> None:
        if data and not self.closed.is_set():
            self._out.put(data)

    def _send_loop(self) -> None:
        while True:
            item = self._out.get()
            if self.closed.is_set():
                return
            if item is None:  # device-side close, after all queued data
                self.closed.set()
                self.conn.send(CLSE, self.local_id, self.remote_id)
                self.conn.forget(self.local_id)
                return
            for i in range(0, len(item), self.conn.max_payload):
                self._acked.clear()
                self.conn.send(WRTE, self.local_id, self.remote_id, item[i:i + self.conn.max_payload])
                while not self._acked.wait(0.2):
                    if self.closed.is_set() or self.conn.dead.is_set():
                        return

    def ack(self) -> None:
        self._acked.set()

    def close_from_device(self) -> None:
        if not self._closing:
            self._closing = True
            self.on_close()
            self._out.put(None)

    def close_from_host(self) -> None:
        already = self.closed.is_set()
        self.closed.set()
        self._out.put(None)  # wake the sender so it exits
        if not already:
            self._closing = True
            self.on_close()
            self.conn.send(CLSE, self.local_id, self.remote_id)
        self.conn.forget(self.local_id)

    # to override
    def start(self) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_close(self) -> None: ...


class _ShellStream(_Stream):
    def __init__(self, conn: _Conn, local_id: int, remote_id: int, command: str, v2: bool) -> None:
        super().__init__(conn, local_id, remote_id)
        self.command, self.v2 = command or "sh", v2
        self.proc: subprocess.Popen[bytes] | None = None

    def _packet(self, kind: int, data: bytes) -> bytes:
        return struct.pack("<BI", kind, len(data)) + data

    def start(self) -> None:
        emu = self.conn.emu
        if emu.root is None:
            argv, cwd = ["/bin/sh", "-c", self.command], emu.sandbox
            env = dict(os.environ, HOME=str(emu.sandbox), PWD=str(emu.sandbox))
        else:  # inside the device's root: its /bin/sh, its PATH, cwd = the sandbox as the device sees it
            home = emu.device_path(emu.sandbox)
            argv = ["chroot", str(emu.root), "/bin/sh", "-c", 'cd "$1" || exit 1; exec /bin/sh -c "$2"', "sh",
                    home, self.command]
            cwd = emu.root
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", "HOME": home,
                   "PWD": home, "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if self.v2 else subprocess.STDOUT,
            start_new_session=True,
        )
        self._in_buf = b""
        readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, 1), daemon=True)]
        if self.v2:
            readers.append(threading.Thread(target=self._pump, args=(self.proc.stderr, 2), daemon=True))
        for t in readers:
            t.start()
        threading.Thread(target=self._wait, args=(readers,), daemon=True).start()

    def _pump(self, pipe: object, kind: int) -> None:
        assert pipe is not None
        while True:
            data = os.read(pipe.fileno(), SYNC_DATA_MAX)  # type: ignore[attr-defined]
            if not data:
                return
            self.write(self._packet(kind, data) if self.v2 else data)

    def _wait(self, readers: list[threading.Thread]) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        for t in readers:
            t.join()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.v2:
            self.write(self._packet(3, bytes([code & 0xFF])))
        self.close_from_device()

    def on_data(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        if not self.v2:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            return
        self._in_buf += data
        while len(self._in_buf) >= 5:
            kind, length = struct.unpack_from("<BI", self._in_buf)
            if len(self._in_buf) < 5 + length:
                break
            payload, self._in_buf = self._in_buf[5:5 + length], self._in_buf[5 + length:]
            with contextlib.suppress(OSError):
                if kind == 0:
                    self.proc.stdin.write(payload)
                    self.proc.stdin.flush()
                elif kind == 4:
                    self.proc.stdin.close()

    def on_close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)


class _TcpStream(_Stream):
    def __init__(self, conn: _Conn, local_id: int, remote_id: int, sock: socket.socket) -> None:
        super().__init__(conn, local_id, remote_id)
        self.sock = sock

    def start(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            while True:
                data = self.sock.recv(SYNC_DATA_MAX)
                if not data:
                    break
                self.write(data)
        except OSError:
            pass
        self.close_from_device()

    def on_data(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.close_from_device()

    def on_close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _SyncStream(_Stream):
    """The ``sync:`` file service; requests are parsed from a byte buffer (they may span WRTEs)."""

    def __init__(self, conn: _Conn, local_id: int, remote_id: int) -> None:
        super().__init__(conn, local_id, remote_id)
        self.buf = b""
        self.recv_file: tuple[Path, int, object] | None = None  # (final path, mode, open tmp file)
        self.lock = threading.Lock()

    def _path(self, raw: bytes) -> Path | None:
        emu = self.conn.emu
        sandbox = emu.sandbox
        p = Path(raw.decode("utf-8", "replace"))
        if emu.root is not None:  # a device path: relative to the sandbox as the device sees it
            p = emu.host_path(str(p if p.is_absolute() else Path(emu.device_path(sandbox)) / p))
        p = p if p.is_absolute() else sandbox / p
        resolved = Path(os.path.normpath(p))
        if resolved != sandbox and sandbox not in resolved.parents:
            return None
        return resolved

    def _fail(self, msg: str) -> None:
        m = msg.encode()
        self.write(b"FAIL" + struct.pack("<I", len(m)) + m)

    def on_data(self, data: bytes) -> None:
        with self.lock:
            self.buf += data
            while True:
                if self.recv_file is not None:
                    if len(self.buf) < 8:
                        return
                    ident, length = self.buf[:4], struct.unpack_from("<I", self.buf, 4)[0]
                    if ident == b"DATA":
                        if len(self.buf) < 8 + length:
                            return
                        self.recv_file[2].write(self.buf[8:8 + length])  # type: ignore[attr-defined]
                        self.buf = self.buf[8 + length:]
                        continue
                    if ident == b"DONE":
                        self.buf = self.buf[8:]
                        self._finish_send(mtime=length)
                        continue
                    self._fail(f"unexpected {ident!r} during SEND")
                    self.close_from_device()
                    return
                if len(self.buf) < 8:
                    return
                ident, length = self.buf[:4], struct.unpack_from("<I", self.buf, 4)[0]
                if ident == b"QUIT":
                    self.buf = b""
                    self.close_from_device()
                    return
                if len(self.buf) < 8 + length:
                    return
                arg, self.buf = self.buf[8:8 + length], self.buf[8 + length:]
                self._request(ident, arg)

    def _request(self, ident: bytes, arg: bytes) -> None:
        if ident == b"STAT":
            p = self._path(arg)
            try:
                st = os.lstat(p) if p else None
            except OSError:
                st = None
            if st is None:
                self.write(b"STAT" + struct.pack("<III", 0, 0, 0))
            else:
                self.write(b"STAT" + struct.pack("<III", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                                                 int(st.st_mtime)))
        elif ident in (b"STA2", b"LST2"):
            p = self._path(arg)
            err = 0
            st = None
            if p is None:
                err = 13  # EACCES
            else:
                try:
                    st = os.stat(p) if ident == b"STA2" else os.lstat(p)
                except OSError as exc:
                    err = exc.errno or 2
            if st is None:
                self.write(ident + struct.pack("<IQQIIIIQqqq", err, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
            else:
                self.write(ident + struct.pack("<IQQIIIIQqqq", 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                                               st.st_uid, st.st_gid, st.st_size, int(st.st_atime),
                                               int(st.st_mtime), int(st.st_ctime)))
        elif ident == b"LIST":
            p = self._path(arg)
            out = b""
            if p is not None and p.is_dir():
                for name in [".", ".."] + sorted(os.listdir(p)):
                    with contextlib.suppress(OSError):
                        st = os.lstat(p / name)
                        nb = name.encode()
                        out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF,
                                                     int(st.st_mtime), len(nb)) + nb
            self.write(out + b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))
        elif ident == b"SEND":
            spec = arg.decode("utf-8", "replace")
            path_s, _, mode_s = spec.rpartition(",")
            if not path_s:
                path_s, mode_s = spec, "33188"
            p = self._path(path_s.encode())
            if p is None:
                self._fail(f"couldn't create file: {path_s}: Permission denied")
                return
            try:
                mode = int(mode_s)
            except ValueError:
                mode = 0o100644
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = open(p.with_name(f".{p.name}.adbtmp"), "wb")  # noqa: SIM115
            except OSError as exc:
                self._fail(f"couldn't create file: {exc.strerror}")
                return
            self.recv_file = (p, mode, tmp)
        elif ident == b"RECV":
            p = self._path(arg)
            try:
                if p is None:
                    raise PermissionError(13, "Permission denied")
                data = p.read_bytes()
            except OSError as exc:
                self._fail(f"open failed: {exc.strerror}")
                return
            out = b"".join(b"DATA" + struct.pack("<I", len(data[i:i + SYNC_DATA_MAX])) + data[i:i + SYNC_DATA_MAX]
                           for i in range(0, len(data), SYNC_DATA_MAX))
            self.write(out + b"DONE" + struct.pack("<I", 0))
        else:
            self._fail(f"unknown sync request {ident!r}")
            self.close_from_device()

    def _finish_send(self, mtime: int) -> None:
        assert self.recv_file is not None
        p, mode, tmp = self.recv_file
        self.recv_file = None
        try:
            tmp.close()  # type: ignore[attr-defined]
            tmp_path = Path(tmp.name)  # type: ignore[attr-defined]
            os.chmod(tmp_path, stat.S_IMODE(mode) or 0o644)
            os.utime(tmp_path, (mtime, mtime))
            os.replace(tmp_path, p)
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror}")
            return
        self.write(b"OKAY" + struct.pack("<I", 0))

    def on_close(self) -> None:
        if self.recv_file is not None:
            tmp = self.recv_file[2]
            with contextlib.suppress(OSError):
                tmp.close()  # type: ignore[attr-defined]
                Path(tmp.name).unlink()  # type: ignore[attr-defined]
            self.recv_file = None


class _Conn(threading.Thread):
    def __init__(self, emu: AdbEmulator, sock: socket.socket) -> None:
        super().__init__(daemon=True, name="adb-emu-conn")
        self.emu, self.sock = emu, sock
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.online = False
        self.max_payload = 4096
        self.version = A_VERSION
        self.token = b""
        self.dead = threading.Event()

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self.lock:
            try:
                self.sock.sendall(pack_message(command, arg0, arg1, data))
            except OSError:
                self.dead.set()

    def forget(self, local_id: int) -> None:
        with self.lock:
            self.streams.pop(local_id, None)

    def banner(self) -> bytes:
        props = ";".join(f"{k}={v}" for k, v in self.emu.properties.items())
        return f"device::{props};features={','.join(self.emu.features)}".encode()

    def run(self) -> None:
        try:
            while not self.dead.is_set():
                header = _recv_exact(self.sock, 24)
                command, arg0, arg1, length, _crc, magic = struct.unpack("<6I", header)
                if magic != command ^ 0xFFFFFFFF:
                    break
                data = _recv_exact(self.sock, length) if length else b""
                self.handle(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.dead.set()
            for s in list(self.streams.values()):
                s.closed.set()
                s.on_close()
            with contextlib.suppress(OSError):
                self.sock.close()

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(20)
        self.send(AUTH, AUTH_TOKEN, 0, self.token)

    def _online(self) -> None:
        self.online = True
        self.send(CNXN, self.version, MAX_PAYLOAD, self.banner())

    def handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == CNXN:
            self.version = min(arg0, A_VERSION) if arg0 >= A_VERSION_MIN else A_VERSION_MIN
            self.max_payload = max(256, min(arg1, MAX_PAYLOAD))
            self.emu.host_banners.append(data.rstrip(b"\0").decode("utf-8", "replace"))
            if self.emu.authorized_keys is None:
                self._online()
            else:
                self._send_token()
            return
        if command == AUTH:
            if self.emu.authorized_keys is None or self.online:
                return
            if arg0 == AUTH_SIGNATURE:
                for key in self.emu.authorized_keys:
                    try:
                        decode_adb_pubkey(key).verify(data, self.token, padding.PKCS1v15(),
                                                      utils.Prehashed(hashes.SHA1()))
                    except (InvalidSignature, ValueError):
                        continue
                    self._online()
                    return
                self._send_token()
            elif arg0 == AUTH_RSAPUBLICKEY:
                if self.emu.accept_new_keys:
                    self.emu.authorized_keys.append(data.rstrip(b"\0"))
                    self._online()
                else:  # the user did not accept the key on the phone
                    self.emu.rejected_keys += 1
                    self.dead.set()
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_RDWR)
            return
        if not self.online:
            return
        if command == OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == WRTE:
            s = self.streams.get(arg1)
            if s is None:
                self.send(CLSE, 0, arg0)
                return
            s.on_data(data)
            self.send(OKAY, arg1, arg0)
        elif command == OKAY:
            s = self.streams.get(arg1)
            if s is not None:
                s.ack()
        elif command == CLSE:
            s = self.streams.get(arg1)
            if s is not None:
                s.close_from_host()

    def _open(self, remote_id: int, service: str) -> None:
        self.emu.services_opened.append(service)
        with self.lock:
            local_id = self.next_id
            self.next_id += 1
        stream: _Stream | None = None
        name, _, arg = service.partition(":")
        opts = name.split(",")
        try:
            if opts[0] == "shell":
                stream = _ShellStream(self, local_id, remote_id, arg, v2="v2" in opts[1:])
            elif opts[0] == "exec":
                stream = _ShellStream(self, local_id, remote_id, arg, v2=False)
            elif name == "sync":
                stream = _SyncStream(self, local_id, remote_id)
            elif name == "tcp":
                port = int(arg.rsplit(":", 1)[-1])
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.settimeout(None)
                stream = _TcpStream(self, local_id, remote_id, sock)
        except (OSError, ValueError):
            stream = None
        if stream is None:  # unknown service or refused connection: adbd closes without OKAY
            self.send(CLSE, 0, remote_id)
            return
        with self.lock:
            self.streams[local_id] = stream
        self.send(OKAY, local_id, remote_id)
        stream.start()


@dataclass
class AdbEmulator:
    """Serve the ADB device protocol on ``127.0.0.1:<port>`` (see module docstring)."""

    sandbox: Path | str  # with root=: a path on the device, e.g. "/data/local/tmp"
    authorized_keys: list[bytes] | None = None  # None = no authentication (like `adb` on an emulator image)
    accept_new_keys: bool = False
    features: tuple[str, ...] = FEATURES
    port: int = 0
    root: Path | None = None  # run shell and sync inside this device root file system (chroot)

    def __post_init__(self) -> None:
        if self.root is not None:
            self.root = Path(self.root).resolve()
            device_sandbox = Path("/") / Path(self.sandbox)
            self.sandbox = self.root / device_sandbox.relative_to("/")
        self.sandbox = Path(self.sandbox).resolve()
        self.sandbox.mkdir(parents=True, exist_ok=True)
        self.properties = {"ro.product.name": "nnf_emu", "ro.product.model": "NNF_ADB_Emulator",
                           "ro.product.device": "nnf_emu"}
        self.services_opened: list[str] = []
        self.host_banners: list[str] = []
        self.rejected_keys = 0
        self._conns: list[_Conn] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def device_path(self, host_path: Path) -> str:
        """A path under the sandbox as the device sees it (``/data/local/tmp/...`` with ``root=``)."""
        if self.root is None:
            return str(host_path)
        return "/" + host_path.relative_to(self.root).as_posix()

    def host_path(self, device_path: str) -> Path:
        """Where a device path lies on this machine (under ``root``)."""
        if self.root is None:
            return Path(device_path)
        return self.root / os.path.normpath("/" + device_path).lstrip("/")

    def start(self) -> AdbEmulator:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True, name="adb-emu")
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, sock)
            self._conns.append(conn)
            conn.start()

    def drop_connections(self) -> None:
        """Cut every host connection (a USB cable pulled / Wi-Fi dropped)."""
        for conn in list(self._conns):
            conn.dead.set()
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for conn in list(self._conns):
            conn.join(timeout=max(0.0, deadline - time.monotonic()))
        self._conns = [c for c in self._conns if c.is_alive()]

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AdbEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
