"""Content-addressed artifact cache of the agent.

Layout under the cache directory::

    artifacts/<sha256>        complete, verified artifacts (read-only to the workers)
    partial/<sha256>.part     bytes of an upload that has not finished yet (kept to resume)

An artifact becomes visible only after its bytes hashed to its name; the move from ``partial/`` to
``artifacts/`` is an atomic ``os.replace``. A hash is a 64-character lowercase hex string and is the
only thing ever used to build a path (client file names are informational), so no path traversal.
One upload per hash at a time (a second concurrent one is told to retry).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class StoreError(Exception):
    """Base of the store's errors; ``kind`` maps to a gRPC status in the server."""

    kind = "invalid"


class BadHash(StoreError):
    kind = "invalid"


class TooLarge(StoreError):
    kind = "too_large"


class OffsetMismatch(StoreError):
    kind = "offset"


class HashMismatch(StoreError):
    kind = "hash_mismatch"


class UploadBusy(StoreError):
    kind = "busy"


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise BadHash(f"artifact hash {sha!r} is not a 64-character lowercase hex SHA-256")
    return sha


@dataclass
class ArtifactState:
    present: bool
    size_bytes: int
    partial_bytes: int


class ArtifactStore:
    """The agent's artifact cache (thread-safe)."""

    def __init__(self, root: str | Path, max_artifact_bytes: int) -> None:
        self.root = Path(root)
        self.max_artifact_bytes = int(max_artifact_bytes)
        self.complete_dir = self.root / "artifacts"
        self.partial_dir = self.root / "partial"
        self.complete_dir.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._uploading: set[str] = set()

    def path(self, sha: str) -> Path:
        return self.complete_dir / check_sha(sha)

    def _partial(self, sha: str) -> Path:
        return self.partial_dir / f"{check_sha(sha)}.part"

    def state(self, sha: str) -> ArtifactState:
        p = self.path(sha)
        if p.is_file():
            return ArtifactState(True, p.stat().st_size, 0)
        part = self._partial(sha)
        return ArtifactState(False, 0, part.stat().st_size if part.is_file() else 0)

    def begin(self, sha: str) -> None:
        """Claim the right to write ``sha`` (raises UploadBusy while another upload of it runs)."""
        check_sha(sha)
        with self._lock:
            if sha in self._uploading:
                raise UploadBusy(f"another upload of artifact {sha[:12]}… is in progress; retry when it ends")
            self._uploading.add(sha)

    def end(self, sha: str) -> None:
        with self._lock:
            self._uploading.discard(sha)

    def open_partial(self, sha: str, total_size: int, offset: int):  # noqa: ANN201 - a binary file object
        """Open the partial file for appending at ``offset`` (which must equal the bytes kept so far)."""
        if total_size <= 0:
            raise StoreError(f"total_size_bytes must be positive (got {total_size})")
        if total_size > self.max_artifact_bytes:
            raise TooLarge(
                f"artifact of {total_size} bytes exceeds this agent's cap of {self.max_artifact_bytes} bytes "
                f"(start the agent with a larger --max-artifact-mb)"
            )
        part = self._partial(sha)
        have = part.stat().st_size if part.is_file() else 0
        if have > total_size:
            part.unlink()
            have = 0
        if offset != have:
            raise OffsetMismatch(
                f"upload of {sha[:12]}… starts at offset {offset} but the agent holds {have} bytes of it; "
                f"ask HasArtifact and resume from partial_bytes"
            )
        return part.open("ab")

    def finish(self, sha: str, total_size: int) -> bool:
        """Verify the partial file; move it into place when complete. Returns True when stored."""
        part = self._partial(sha)
        size = part.stat().st_size if part.is_file() else 0
        if size < total_size:
            return False
        if size > total_size:
            part.unlink()
            raise StoreError(f"received {size} bytes for an artifact announced as {total_size} bytes; discarded")
        h = hashlib.sha256()
        with part.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        if digest != sha:
            part.unlink()
            raise HashMismatch(
                f"uploaded bytes hash to {digest}, not to the announced {sha}: the artifact was corrupted in "
                f"transit or the hash is wrong; the partial upload was discarded, upload again"
            )
        os.chmod(part, 0o444)
        os.replace(part, self.path(sha))
        return True

    def delete(self, shas: list[str], everything: bool = False) -> tuple[list[str], int]:
        deleted: list[str] = []
        freed = 0
        targets = set(shas)
        if everything:
            targets |= {p.name for p in self.complete_dir.iterdir() if SHA_RE.match(p.name)}
            targets |= {p.name[:-5] for p in self.partial_dir.glob("*.part") if SHA_RE.match(p.name[:-5])}
        for sha in sorted(targets):
            check_sha(sha)
            with self._lock:
                if sha in self._uploading:
                    continue
                removed = False
                for p in (self.path(sha), self._partial(sha)):
                    if p.is_file():
                        freed += p.stat().st_size
                        p.unlink()
                        removed = True
                if removed:
                    deleted.append(sha)
        return deleted, freed
