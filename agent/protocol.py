"""The wire contract of the profiling agent, imported by both sides (the agent and ``host.client``).

The ``.proto`` (``protos/nnfactory/agent/v1/agent.proto``) defines the messages; this module holds
everything else a client and an agent must agree on, in one place (TVM's ``rpc/base.py`` is the model):

* :data:`PROTOCOL` / :data:`PROTOCOL_VERSION`: the protocol an agent speaks (``DeviceInfo.protocol``);
* :class:`ErrorKind`: the values of the trailing metadata key :data:`ERROR_KIND_KEY`
  (``nnf-error-kind``) that refine a gRPC status code, and the code each kind travels with
  (:data:`KIND_STATUS`);
* metadata keys: :data:`AUTH_METADATA_KEY` (``authorization: Bearer <token>``);
* size caps both sides configure their channels with (:data:`MAX_CHUNK_BYTES`,
  :data:`MAX_RECEIVE_MESSAGE_BYTES`, :data:`MAX_STATUS_MESSAGE_CHARS`);
* the *listening line* an agent prints once it is bound (:func:`format_listening_line`,
  :func:`parse_listening_line`), so a launcher can start it on port 0 and read the port back;
* agent addresses (:func:`parse_address`, :func:`format_address`, :func:`is_loopback`).

Nothing here imports a runtime, ``host`` or anything beyond the standard library and ``grpc``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

import grpc

PROTOCOL = "nnfactory.agent.v1"
PROTOCOL_VERSION = 1
SERVICE_NAME = f"{PROTOCOL}.ProfilingAgent"

# ------------------------------------------------------------------------------------------ metadata
ERROR_KIND_KEY = "nnf-error-kind"
AUTH_METADATA_KEY = "authorization"
BEARER_PREFIX = "Bearer "

# ------------------------------------------------------------------------------------------ sizes
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # largest upload chunk an agent accepts (the client sends 1 MiB)
MAX_RECEIVE_MESSAGE_BYTES = MAX_CHUNK_BYTES + 64 * 1024  # the agent's gRPC receive cap
MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024  # a result with 100k samples is ~1.5 MB; room to spare
# Status details travel in trailing metadata (grpc-message); clients reject trailers over 8 KiB.
MAX_STATUS_MESSAGE_CHARS = 1500
MAX_ECHO_CHARS = 80  # a client-supplied value quoted in an error message is cut to this many characters


class ErrorKind(StrEnum):
    """Refines a gRPC status code (trailing metadata ``nnf-error-kind``; ``ProfileError.kind``)."""

    INVALID = "invalid"  # a field of the request is wrong (the message names it)
    UNDECODABLE = "undecodable"  # the bytes on the wire are not the method's protobuf message
    INPUT = "input"  # the requested inputs do not fit the model (the message lists its real inputs)
    LOAD = "load"  # the runtime could not load the artifact
    NOT_FOUND = "not_found"  # unknown artifact hash: upload it first
    UNAVAILABLE = "unavailable"  # runtime or device not available on this agent
    DISABLED = "disabled"  # the operator has not enabled this artifact format (pickle-bearing .pt2)
    OFFSET = "offset"  # an upload resumed at the wrong offset: ask HasArtifact again
    HASH_MISMATCH = "hash_mismatch"  # the uploaded bytes do not hash to the announced SHA-256
    TOO_LARGE = "too_large"  # over a size cap (artifact, input, cache quota)
    BUSY = "busy"  # a queue or a concurrency limit is full: retry later
    OOM = "oom"  # the model ran out of memory (its own limit or the kernel's)
    CRASH = "crash"  # the worker died (signal) while running the model
    RUNTIME = "runtime"  # the runtime failed in an unexpected way
    TIMEOUT = "timeout"  # the request's deadline passed (queued or running)
    CANCELLED = "cancelled"  # the client went away
    IDLE = "idle"  # a stream sent nothing for too long and was closed
    AUTH = "auth"  # missing or wrong bearer token
    SHUTTING_DOWN = "shutting_down"  # the agent is stopping


# The status code each kind is sent with (the client maps codes + kinds to its exception classes).
KIND_STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNDECODABLE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.LOAD: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.DISABLED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.OFFSET: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.HASH_MISMATCH: grpc.StatusCode.DATA_LOSS,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.OOM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.CRASH: grpc.StatusCode.INTERNAL,
    ErrorKind.RUNTIME: grpc.StatusCode.INTERNAL,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.IDLE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.AUTH: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
}


def status_for(kind: ErrorKind | str) -> grpc.StatusCode:
    """The gRPC status code a kind travels with (UNKNOWN for a kind this side does not know)."""
    try:
        return KIND_STATUS[ErrorKind(kind)]
    except ValueError:
        return grpc.StatusCode.UNKNOWN


def status_code_from_value(value: int) -> grpc.StatusCode:
    """``grpc.StatusCode`` from its integer value (``ProfileError.code``); UNKNOWN when out of range."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting client-supplied values in errors."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} chars" if isinstance(value, str | bytes) else "cut"
    return f"{text[:limit]}… ({size})"


def clip_message(message: str, limit: int = MAX_STATUS_MESSAGE_CHARS) -> str:
    """A status message short enough for any client's metadata limit."""
    return message if len(message) <= limit else message[: limit - 12] + " …(clipped)"


# ------------------------------------------------------------------------------------------ listening line
LISTENING_PREFIX = "NNF_AGENT_LISTENING"
_LISTENING_RE = re.compile(rf"^{LISTENING_PREFIX}((?: [a-z_]+=\S*)+)\s*$")


@dataclass(frozen=True)
class ListeningLine:
    """What an agent prints on stdout once it is bound: ``NNF_AGENT_LISTENING host=H port=P pid=N ...``."""

    host: str
    port: int
    pid: int
    auth: str = ""  # "token" or "none" (agents before protocol version 1.1 leave it out)
    protocol_version: int = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` a client on this machine connects to (a wildcard bind is reached via loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::", "[::]") else self.host
        return format_address(host, self.port)


def format_listening_line(host: str, port: int, pid: int, auth: bool) -> str:
    return (f"{LISTENING_PREFIX} host={host} port={port} pid={pid} auth={'token' if auth else 'none'} "
            f"protocol_version={PROTOCOL_VERSION}")


def parse_listening_line(line: str) -> ListeningLine | None:
    """The :class:`ListeningLine` in ``line``, or None when the line is something else."""
    m = _LISTENING_RE.match(line.strip())
    if m is None:
        return None
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    try:
        return ListeningLine(host=fields["host"], port=int(fields["port"]), pid=int(fields["pid"]),
                             auth=fields.get("auth", ""), protocol_version=int(fields.get("protocol_version", 0)))
    except (KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ addresses
def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def parse_address(addr: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` or ``[V6]:PORT``; ValueError naming the problem otherwise.

    A missing port is an error (gRPC would silently pick 443): agents have no default port.
    """
    text = addr.strip()
    if not text:
        raise ValueError("empty agent address: use HOST:PORT, e.g. 127.0.0.1:50051")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        host = f"[{host}]"
    else:
        if text.count(":") > 1:
            raise ValueError(f"agent address {echo(text)}: write an IPv6 address in brackets, e.g. [::1]:50051")
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not port:
        raise ValueError(f"agent address {echo(text)} has no port: use HOST:PORT, e.g. {host or '127.0.0.1'}:50051 "
                         f"(`nnf agent start --local` prints the address of the agent it starts)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"agent address {echo(text)}: port {echo(port)} is not a number in 0..65535")
    if not host.strip("[]"):
        raise ValueError(f"agent address {echo(text)} has no host: use HOST:PORT, e.g. 127.0.0.1:{port}")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
