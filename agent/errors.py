"""The agent's one exception for a failed request: a kind (``agent.protocol.ErrorKind``) and a message."""

from __future__ import annotations

import grpc

from agent.protocol import ErrorKind, clip_message, status_for


class ProfileFailure(Exception):
    """A request failed: ``kind`` refines ``code`` (sent as trailing metadata ``nnf-error-kind``)."""

    def __init__(self, kind: ErrorKind, message: str, code: grpc.StatusCode | None = None) -> None:
        message = clip_message(message)
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.code = code or status_for(self.kind)
        self.message = message


def invalid(message: str) -> ProfileFailure:
    return ProfileFailure(ErrorKind.INVALID, message)
