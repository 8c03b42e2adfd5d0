"""Settings of one agent (:class:`AgentConfig`), the limits derived from the device, and the agent's files.

Files of an agent run by ``nnf-agent serve`` on a user's machine (overridable with flags)::

    $XDG_STATE_HOME/nnf-agent/      (default ~/.local/state/nnf-agent; mode 0700)   --state-dir
        token                        the bearer token (0600), generated on first start
    $XDG_CACHE_HOME/nnf-agent/      (default ~/.cache/nnf-agent; mode 0700)          --cache-dir
    $TMPDIR/nnf-agent-device-<uid>.lock   flock shared by every agent of this user   --device-lock

The state directory and cache directory must belong to the agent's user and nobody else may write
into them: a directory another user could write into would let them plant links the agent then writes
through, so the agent refuses to start with one (:func:`check_private_dir`); one that others can only
read is closed to mode 0700.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent import sysinfo

MiB = 1024 * 1024
GiB = 1024 * MiB

# Requests may lower the memory limit, never below this: the worker itself needs room to report.
MIN_MEMORY_LIMIT_BYTES = 64 * MiB


class ConfigProblem(ValueError):
    """A setting or an agent file that cannot be used (the message says what to do)."""


# ------------------------------------------------------------------------------------------ paths
def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def default_state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "nnf-agent"


def default_cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "nnf-agent"


def default_token_path(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir()) / "token"


def default_device_lock_path() -> Path:
    return Path(tempfile.gettempdir()) / f"nnf-agent-device-{os.getuid()}.lock"


def check_private_dir(path: Path, what: str, *, create: bool = True) -> Path:
    """Create ``path`` (mode 0700) or check that an existing one is a real directory of ours that nobody else
    can write (one only others can *read* is closed to 0700; one others can write is refused)."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise ConfigProblem(f"{what} {path} does not exist") from exc
    if stat.S_ISLNK(st.st_mode):
        raise ConfigProblem(f"{what} {path} is a symbolic link; refusing it (someone else may control the "
                            f"target): give a real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigProblem(f"{what} {path} is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigProblem(f"{what} {path} belongs to uid {st.st_uid}, not to this agent's user (uid "
                            f"{os.getuid()}); another user could plant files in it. Use a directory of your own")
    if st.st_mode & 0o022:
        raise ConfigProblem(f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: other users may write into it "
                            f"(and may have planted files or links already). Check its contents, then run "
                            f"`chmod 700 {path}`, or choose another directory")
    if st.st_mode & 0o077:  # readable by others but not writable: close it (nothing can have been planted)
        os.chmod(path, 0o700)
    return path


def read_token_file(path: Path) -> str:
    """The token in ``path``: a file of ours with no group/other permissions, non-empty."""
    try:
        st = os.stat(path)
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigProblem(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    if st.st_uid != os.getuid():
        raise ConfigProblem(f"token file {path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & 0o077:
        raise ConfigProblem(f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}: others may read it. "
                            f"Run `chmod 600 {path}`")
    if not text:
        raise ConfigProblem(f"token file {path} is empty")
    return text


def ensure_token_file(path: Path) -> tuple[str, bool]:
    """The token in ``path``, generating one (0600, atomically) when the file does not exist.

    Returns ``(token, created)``.
    """
    if path.exists():
        return read_token_file(path), False
    check_private_dir(path.parent, "agent state directory")
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another agent created it meanwhile: then use theirs
    except FileExistsError:
        os.unlink(tmp)
        return read_token_file(path), False
    os.unlink(tmp)
    return token, True


# ------------------------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class Limits:
    """Caps applied to every request, derived from the device unless the operator set them."""

    worker_memory_bytes: int  # address space a model may add on top of the runtime (RLIMIT_AS)
    max_threads: int  # intra-op threads a request may ask for
    max_input_bytes: int  # all of a request's inputs together
    cache_quota_bytes: int  # artifact cache (complete + partial); LRU eviction above it
    max_artifact_bytes: int


def derived_limits(*, worker_memory_bytes: int | None = None, max_threads: int | None = None,
                   max_input_bytes: int | None = None, cache_quota_bytes: int | None = None,
                   max_artifact_bytes: int = 512 * MiB, cache_dir: Path | None = None) -> Limits:
    """Fill the caps left None from the device: a quarter of its memory per model, one thread per CPU the
    agent may use, a quarter of the model's memory for inputs, and a cache of at most a quarter of the
    free disk (between 256 MiB and 4 GiB)."""
    total = sysinfo.meminfo_bytes("MemTotal") or 4 * GiB
    if worker_memory_bytes is None:
        worker_memory_bytes = max(256 * MiB, total // 4)
    if max_threads is None:
        max_threads = max(1, len(sysinfo.allowed_cpus()))
    if max_input_bytes is None:
        max_input_bytes = max(16 * MiB, min(1 * GiB, worker_memory_bytes // 4))
    if cache_quota_bytes is None:
        free = 0
        if cache_dir is not None:
            probe = cache_dir
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            try:
                st = os.statvfs(probe)
                free = st.f_bavail * st.f_frsize
            except OSError:
                free = 0
        cache_quota_bytes = min(4 * GiB, max(256 * MiB, free // 4)) if free else 1 * GiB
    cache_quota_bytes = max(int(cache_quota_bytes), int(max_artifact_bytes))  # one artifact always fits
    return Limits(int(worker_memory_bytes), int(max_threads), int(max_input_bytes), int(cache_quota_bytes),
                  int(max_artifact_bytes))


# ------------------------------------------------------------------------------------------ config
ISOLATIONS = ("fork", "process")


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent server needs (``create_server(config)``).

    ``token=None`` needs ``no_auth=True``: serving without authentication is always an explicit choice
    (``nnf-agent serve --no-auth``), logged at start. Caps left None are derived from the device
    (:func:`derived_limits`).
    """

    cache_dir: Path
    address: str = "127.0.0.1:0"
    token: str | None = None
    no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_pickle_formats: bool = False  # torch.export .pt2: unpickled by torch.export.load
    max_artifact_bytes: int = 512 * MiB
    cache_quota_bytes: int | None = None
    partial_expiry_s: float = 3600.0  # unfinished uploads untouched this long are deleted
    worker_memory_bytes: int | None = None
    max_threads: int | None = None
    max_input_bytes: int | None = None
    default_deadline_s: float = 600.0
    max_queue: int = 16  # profile requests allowed to wait for the device (then: busy)
    max_uploads: int = 4  # concurrent UploadArtifact streams (then: busy)
    max_profile_streams: int = 4  # concurrent ProfileStream calls (then: busy)
    stream_idle_timeout_s: float = 30.0  # a stream that sends nothing this long is closed
    rpc_threads: int = 48
    worker_env: Mapping[str, str] = field(default_factory=dict)
    device_lock_path: Path | None = None  # None: only this agent's own queue serialises measurements
    worker_nice: int | None = None  # nice of measuring workers (negative needs privileges); None = inherit
    isolation: str = "fork"  # "fork": a zygote per runtime forks one child per request; "process": fresh process
    zygote_idle_s: float = 900.0  # a runtime's zygote unused this long exits (memory back to the device)
    sandbox: bool = True  # Landlock: measuring children may not create/write files or use TCP (where supported)
    shutdown_grace_s: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.token is not None and not self.token.strip():
            raise ConfigProblem("empty token: give a non-empty token, or none at all with no_auth=True (--no-auth)")
        if self.token is None and not self.no_auth:
            raise ConfigProblem("no token: give one (--token-file, $NNF_AGENT_TOKEN; `nnf-agent serve` generates one "
                                "in its state directory) or opt out explicitly with --no-auth")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigProblem("TLS needs both --tls-cert and --tls-key")
        if self.isolation not in ISOLATIONS:
            raise ConfigProblem(f"isolation {self.isolation!r}: use one of {ISOLATIONS}")
        for name in ("max_queue", "max_uploads", "max_profile_streams", "rpc_threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigProblem(f"{name} must be >= 1")
        if self.rpc_threads < self.max_queue + self.max_uploads + self.max_profile_streams + 8:
            raise ConfigProblem(f"rpc_threads={self.rpc_threads} leaves no room for quick calls: it must exceed "
                                f"max_queue + max_uploads + max_profile_streams + 8")
        if self.worker_memory_bytes is not None and self.worker_memory_bytes < MIN_MEMORY_LIMIT_BYTES:
            raise ConfigProblem(f"worker memory limit {self.worker_memory_bytes} bytes is below the minimum "
                                f"{MIN_MEMORY_LIMIT_BYTES}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def limits(self) -> Limits:
        return derived_limits(worker_memory_bytes=self.worker_memory_bytes, max_threads=self.max_threads,
                              max_input_bytes=self.max_input_bytes, cache_quota_bytes=self.cache_quota_bytes,
                              max_artifact_bytes=self.max_artifact_bytes, cache_dir=self.cache_dir)
