"""Process-level hardening of a measuring child (Linux): parent-death signal and a Landlock sandbox.

``die_with_parent()``: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` so a worker never outlives the process that
started it (the agent for a zygote, the zygote for a measuring child), checked against the expected
parent pid to close the race where the parent died before the call.

``restrict()``: a Landlock ruleset (Linux >= 5.13, unprivileged) applied to the measuring child after
the runtime is imported and before the model is loaded. The model's code (a TorchScript program, a
runtime parsing a hostile file) then cannot create, remove, rename or write any file (``/dev/null``
excepted), nor truncate one (ABI 3), nor bind or connect TCP sockets (ABI 4), nor signal processes or
reach abstract unix sockets outside the sandbox (ABI 6). Reading stays allowed (the runtime needs its
libraries and the artifact). What the kernel supports is applied and reported (``context.extra
["sandbox"]``, e.g. ``landlock-abi6``); where Landlock is missing the child runs unsandboxed and says so
(``none``). Landlock does not stop CPU or memory abuse: the deadline and the memory limit do.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture (syscalls added after 5.1)
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_WRITE_FILE = 1 << 1
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def die_with_parent(expected_parent: int) -> bool:
    """SIGKILL this process when its parent dies; False (after exiting) if the parent is already gone."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os._exit(70)
    return True


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 where Landlock is unavailable)."""
    v = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return int(v) if v > 0 else 0


def restrict(writable_files: tuple[str, ...] = ("/dev/null",)) -> str:
    """Apply the sandbox to this process (irreversible); returns what was applied ("landlock-abiN" or "none")."""
    abi = landlock_abi()
    if abi < 1:
        return "none"
    fs = (_FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_CHAR | _FS_MAKE_DIR | _FS_MAKE_REG
          | _FS_MAKE_SOCK | _FS_MAKE_FIFO | _FS_MAKE_BLOCK | _FS_MAKE_SYM)
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs, net)
    else:
        attr = struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return "none"
    try:
        file_rights = _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
        for path in writable_files:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", file_rights, pfd), 12)
                _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                              rule, ctypes.c_uint32(0))
            finally:
                os.close(pfd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "none"
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return "none"
    finally:
        os.close(ruleset)
    return f"landlock-abi{abi}"
