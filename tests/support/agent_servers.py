"""In-process agent servers for tests: real gRPC on loopback, port 0, a temporary cache (no token unless given)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from agent.config import AgentConfig
from agent.server import create_server, shutdown


def config(cache_dir: Path, **kw: Any) -> AgentConfig:
    kw.setdefault("no_auth", kw.get("token") is None)
    return AgentConfig(cache_dir=cache_dir, **kw)


@contextlib.contextmanager
def agent_server(cache_dir: Path, **kw: Any) -> Iterator[tuple[str, grpc.Server]]:
    """``(address, server)`` of a started agent; stopped (bounded) when the block ends."""
    server, port = create_server(config(cache_dir, **kw))
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        shutdown(server, 0.5)
