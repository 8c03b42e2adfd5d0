"""What every call passes through before the service sees it: safe decoding, authentication, caps.

One server interceptor (:class:`Guard`) rewrites the handler of *every* method (the agent's service, the
health service and reflection alike):

* **Decoding never fails inside grpcio.** grpcio 1.85 leaks ~19 KB per message whose protobuf decoding
  raises in its own deserialization path (and a bidirectional stream that took such messages can wedge
  ``server.stop``). Every request deserializer is wrapped so a decode error returns an
  :class:`Undecodable` sentinel instead; the wrapped behaviour answers INVALID_ARGUMENT
  (kind ``undecodable``). This holds before authentication too: a caller without a token gets
  UNAUTHENTICATED, never a leak.
* **Authentication.** With a token, a call whose ``authorization`` metadata is not ``Bearer <token>``
  (compared in constant time) is answered UNAUTHENTICATED (kind ``auth``) at once, without waiting for
  its request message and without reaching the service.
* **No call waits forever for its client.** grpcio runs a unary handler in a server thread that waits,
  without a timeout, for the request message; a client that opens calls and sends nothing would hold
  every thread. So every method is served as a request *stream*, and each wait for a client message
  (the single message of a unary call, the next chunk of an upload, the next request of a profile
  stream) is watched by :class:`IdleWatchdog`: a call that sends nothing for ``idle_timeout_s`` (5 s
  for a unary call's one message) is cancelled (the client sees CANCELLED) and its thread freed.
  Waiting for the *device* is not idle time.
* **Concurrency caps per method** (``caps``): long-lived calls (uploads, profile streams, health
  ``Watch``, reflection) may hold at most so many server threads; the next one is answered
  RESOURCE_EXHAUSTED (kind ``busy``) at once, so they can never take every thread and lock out quick
  calls.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import grpc

from agent.protocol import (
    AUTH_METADATA_KEY,
    BEARER_PREFIX,
    ERROR_KIND_KEY,
    ErrorKind,
    clip_message,
    status_for,
)

log = logging.getLogger("nnf.agent")

UNARY_MESSAGE_TIMEOUT_S = 5.0  # a unary call's message comes with the call; waiting longer means a stalling client


class IdleWatchdog:
    """Cancels calls that wait longer than ``idle_timeout_s`` for a message from their client."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = float(idle_timeout_s)
        self._armed: dict[int, tuple[float, grpc.ServicerContext, str]] = {}
        self._ids = itertools.count()
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.cancelled = 0

    def arm(self, context: grpc.ServicerContext, method: str, timeout_s: float | None = None) -> int:
        key = next(self._ids)
        with self._mutex:
            self._armed[key] = (time.monotonic() + (timeout_s or self.idle_timeout_s), context, method)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="nnf-idle-watchdog", daemon=True)
                self._thread.start()
        return key

    def disarm(self, key: int) -> None:
        with self._mutex:
            self._armed.pop(key, None)

    def _run(self) -> None:
        tick = min(1.0, max(0.05, self.idle_timeout_s / 4))
        while not self._wake.wait(tick):
            now = time.monotonic()
            with self._mutex:
                expired = [(k, v) for k, v in self._armed.items() if v[0] <= now]
                for k, _ in expired:
                    del self._armed[k]
            for _, (_, context, method) in expired:
                self.cancelled += 1
                log.warning("%s: its client sent nothing in time: call cancelled", method.rsplit("/", 1)[-1])
                context.cancel()

    def stop(self) -> None:
        with self._mutex:
            self._stopped = True
        self._wake.set()


class Undecodable:
    """Stands for a request whose bytes are not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf raises DecodeError, but any failure means "bad bytes"
            return Undecodable(f"{type(exc).__name__}: {str(exc)[:120]}")

    return decode


def abort(context: grpc.ServicerContext, kind: ErrorKind, message: str,
          code: grpc.StatusCode | None = None) -> NoReturn:
    """End the call with ``code`` (default: the kind's), ``nnf-error-kind: kind`` and a short message.

    Never returns: ``context.abort`` raises, and the handler's remaining code does not run.
    """
    context.set_trailing_metadata(((ERROR_KIND_KEY, str(kind)),))
    context.abort(code or status_for(kind), clip_message(message))
    raise RuntimeError("grpc context.abort returned")  # pragma: no cover - it always raises


def _undecodable(context: grpc.ServicerContext, method: str, what: Undecodable) -> None:
    abort(context, ErrorKind.UNDECODABLE, f"the request bytes are not a valid {method.rsplit('/', 1)[-1]} "
                                          f"message ({what.error}); is the client speaking this protocol?")


def checked_stream(request_iterator: Iterator[Any], context: grpc.ServicerContext, method: str,
                   watchdog: IdleWatchdog, first_timeout_s: float | None = None) -> Iterator[Any]:
    """The client's messages, each waited for under the watchdog; an undecodable one ends the call.

    ``first_timeout_s``: a shorter wait for the first message (a unary call's client sends it with the
    call itself; only a stalling client makes the agent wait).
    """
    timeout = first_timeout_s
    while True:
        key = watchdog.arm(context, method, timeout)
        timeout = None
        try:
            msg = next(request_iterator)
        except StopIteration:
            return
        finally:
            watchdog.disarm(key)
        if isinstance(msg, Undecodable):
            _undecodable(context, method, msg)
        yield msg


class Guard(grpc.ServerInterceptor):
    """Safe decoding + bearer-token check + idle watchdog + per-method concurrency caps (module docstring)."""

    def __init__(self, token: str | None, caps: Mapping[str, int], watchdog: IdleWatchdog) -> None:
        self._expected = f"{BEARER_PREFIX}{token}".encode() if token else None
        self._caps = {method: threading.BoundedSemaphore(n) for method, n in caps.items()}
        self._cap_sizes = dict(caps)
        self.watchdog = watchdog

    def _authorized(self, metadata: Any) -> tuple[bool, str]:
        if self._expected is None:
            return True, ""
        got = b""
        for key, value in metadata or ():
            if key == AUTH_METADATA_KEY:
                got = value.encode() if isinstance(value, str) else bytes(value)
        if hmac.compare_digest(got, self._expected):
            return True, ""
        if not got:
            return False, "missing bearer token (metadata 'authorization: Bearer <token>')"
        return False, "wrong bearer token"

    def _enter(self, requests: Iterator[Any], context: grpc.ServicerContext, method: str,
               sem: threading.BoundedSemaphore | None, cap: int, req_stream: bool) -> tuple[Any, bool]:
        """(the argument for the service's handler, whether a cap slot is held)."""
        if sem is not None and not sem.acquire(blocking=False):
            abort(context, ErrorKind.BUSY, f"agent busy: {cap} {method.rsplit('/', 1)[-1]} calls already "
                                           f"open (the most it serves at once); retry later")
        stream = checked_stream(requests, context, method, self.watchdog,
                                None if req_stream else min(UNARY_MESSAGE_TIMEOUT_S, self.watchdog.idle_timeout_s))
        if req_stream:
            return stream, sem is not None
        try:
            first = next(stream, None)
        except BaseException:
            if sem is not None:
                sem.release()
            raise
        if first is None:
            if sem is not None:
                sem.release()
            abort(context, ErrorKind.INVALID, f"{method.rsplit('/', 1)[-1]} takes exactly one request message; "
                                              f"none was sent")
        return first, sem is not None

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        ok, why = self._authorized(handler_call_details.invocation_metadata)
        kw = {"request_deserializer": safe_deserializer(handler.request_deserializer),
              "response_serializer": handler.response_serializer}
        if not ok:
            def deny(_requests: Any, context: grpc.ServicerContext) -> Any:
                abort(context, ErrorKind.AUTH, why)
            return grpc.stream_unary_rpc_method_handler(deny, **kw)  # answers without reading any message
        sem = self._caps.get(method)
        cap = self._cap_sizes.get(method, 0)
        req_stream, resp_stream = handler.request_streaming, handler.response_streaming
        inner = (handler.stream_stream if req_stream and resp_stream else handler.stream_unary if req_stream
                 else handler.unary_stream if resp_stream else handler.unary_unary)

        def enter(requests: Iterator[Any], context: grpc.ServicerContext) -> tuple[Any, bool]:
            return self._enter(requests, context, method, sem, cap, req_stream)

        if resp_stream:
            def behaviour_stream(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                argument, held = enter(requests, context)
                try:
                    yield from inner(argument, context)
                finally:
                    if held:
                        sem.release()  # type: ignore[union-attr]
            return grpc.stream_stream_rpc_method_handler(behaviour_stream, **kw)

        def behaviour_unary(requests: Any, context: grpc.ServicerContext) -> Any:
            argument, held = enter(requests, context)
            try:
                return inner(argument, context)
            finally:
                if held:
                    sem.release()  # type: ignore[union-attr]
        return grpc.stream_unary_rpc_method_handler(behaviour_unary, **kw)
