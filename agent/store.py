"""Content-addressed artifact cache of the agent: bounded, private, verified before use.

Layout under the cache directory (mode 0700, checked at start: it must be ours and closed to others)::

    artifacts/<sha256>        complete, verified artifacts (mode 0444)
    partial/<sha256>.part     bytes of an upload that has not finished yet (kept to resume)

* An artifact becomes visible only after its bytes hashed to its name; the move from ``partial/`` to
  ``artifacts/`` is an atomic ``os.replace``. A hash is exactly 64 lowercase hex characters (``fullmatch``:
  no trailing newline) and is the only thing ever used to build a path, so no path traversal.
* **Quota.** Complete and partial bytes together stay under ``quota_bytes``: before an upload starts, the
  least recently used complete artifacts (last upload or profile; kept in the file's mtime) are evicted
  until the announced size fits. Artifacts being measured or uploaded are never evicted; when the rest
  cannot make room the upload is refused (RESOURCE_EXHAUSTED, kind ``too_large``).
* **Expiry.** Partial uploads untouched for ``partial_expiry_s`` are deleted (at start and whenever an
  upload begins).
* **Verified before use.** :meth:`verify` re-hashes an artifact before it is run; one that no longer
  matches its name (disk corruption, tampering) is deleted and reported as missing.
* One upload per hash at a time (a second concurrent one is told to retry).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.config import check_private_dir
from agent.protocol import echo

SHA_RE = re.compile(r"[0-9a-f]{64}")


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


class Corrupted(StoreError):
    kind = "not_found"


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise BadHash(f"artifact hash {echo(sha)} is not a 64-character lowercase hex SHA-256")
    return sha


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ArtifactState:
    present: bool
    size_bytes: int
    partial_bytes: int


@dataclass
class CacheStats:
    cache_dir: str
    artifacts: int
    artifact_bytes: int
    partials: int
    partial_bytes: int
    quota_bytes: int
    max_artifact_bytes: int
    evicted: int  # artifacts evicted for space since the agent started
    expired_partials: int  # partial uploads expired since the agent started


class ArtifactStore:
    """The agent's artifact cache (thread-safe)."""

    def __init__(self, root: str | Path, max_artifact_bytes: int, *, quota_bytes: int | None = None,
                 partial_expiry_s: float = 3600.0) -> None:
        self.root = check_private_dir(Path(root), "artifact cache directory")
        self.max_artifact_bytes = int(max_artifact_bytes)
        self.quota_bytes = int(quota_bytes) if quota_bytes else 1 << 62
        self.partial_expiry_s = float(partial_expiry_s)
        self.complete_dir = check_private_dir(self.root / "artifacts", "artifact cache directory")
        self.partial_dir = check_private_dir(self.root / "partial", "artifact cache directory")
        self._lock = threading.Lock()
        self._uploading: set[str] = set()
        self._pinned: dict[str, int] = {}
        self.evicted = 0
        self.expired = 0
        self.expire_partials()

    # ------------------------------------------------------------------ paths and state
    def path(self, sha: str) -> Path:
        return self.complete_dir / check_sha(sha)

    def _partial(self, sha: str) -> Path:
        return self.partial_dir / f"{check_sha(sha)}.part"

    def state(self, sha: str) -> ArtifactState:
        p = self.path(sha)
        try:
            st = p.stat()
            return ArtifactState(True, st.st_size, 0)
        except FileNotFoundError:
            pass
        part = self._partial(sha)
        try:
            return ArtifactState(False, 0, part.stat().st_size)
        except FileNotFoundError:
            return ArtifactState(False, 0, 0)

    def touch(self, sha: str) -> None:
        """Mark ``sha`` as just used (LRU order)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(sha))

    # ------------------------------------------------------------------ uploads
    def begin(self, sha: str) -> None:
        """Claim the right to write ``sha`` (raises UploadBusy while another upload of it runs)."""
        check_sha(sha)
        with self._lock:
            if sha in self._uploading:
                raise UploadBusy(f"another upload of artifact {sha[:12]}… is in progress; retry when it ends")
            self._uploading.add(sha)
        self.expire_partials()

    def end(self, sha: str) -> None:
        with self._lock:
            self._uploading.discard(sha)

    def open_partial(self, sha: str, total_size: int, offset: int) -> BinaryIO:
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
        self._make_room(total_size - have, keep=sha)
        fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "ab")

    def finish(self, sha: str, total_size: int) -> bool:
        """Verify the partial file; move it into place when complete. Returns True when stored."""
        part = self._partial(sha)
        size = part.stat().st_size if part.is_file() else 0
        if size < total_size:
            return False
        if size > total_size:
            part.unlink()
            raise StoreError(f"received {size} bytes for an artifact announced as {total_size} bytes; discarded")
        digest = sha256_file(part)
        if digest != sha:
            part.unlink()
            raise HashMismatch(
                f"uploaded bytes hash to {digest}, not to the announced {sha}: the artifact was corrupted in "
                f"transit or the hash is wrong; the partial upload was discarded, upload again"
            )
        os.chmod(part, 0o444)
        os.replace(part, self.path(sha))
        return True

    # ------------------------------------------------------------------ use
    @contextlib.contextmanager
    def pinned(self, sha: str) -> Iterator[Path]:
        """Verify ``sha`` (re-hash) and keep it from eviction while the block runs; yields its path."""
        path = self.path(sha)
        with self._lock:
            self._pinned[sha] = self._pinned.get(sha, 0) + 1
        try:
            try:
                digest = sha256_file(path)
            except FileNotFoundError:
                raise Corrupted(f"artifact {sha} is not on this agent: upload it first") from None
            if digest != sha:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise Corrupted(f"artifact {sha} on the agent's disk no longer hashes to its name (corrupted or "
                                f"modified); it was deleted: upload it again")
            self.touch(sha)
            yield path
        finally:
            with self._lock:
                n = self._pinned.get(sha, 0) - 1
                if n > 0:
                    self._pinned[sha] = n
                else:
                    self._pinned.pop(sha, None)

    # ------------------------------------------------------------------ bounds
    def _entries(self) -> tuple[list[tuple[float, int, str]], int]:
        """(complete artifacts as (mtime, size, sha) oldest first, bytes of all partials)."""
        complete = []
        for p in self.complete_dir.iterdir():
            if SHA_RE.fullmatch(p.name):
                with contextlib.suppress(FileNotFoundError):
                    st = p.stat()
                    complete.append((st.st_mtime, st.st_size, p.name))
        partial = 0
        for p in self.partial_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                partial += p.stat().st_size
        complete.sort()
        return complete, partial

    def _make_room(self, need: int, keep: str) -> None:
        with self._lock:
            complete, partial = self._entries()
            used = sum(s for _, s, _ in complete) + partial
            if used + need <= self.quota_bytes:
                return
            for _, size, sha in complete:
                if sha == keep or sha in self._pinned or sha in self._uploading:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    (self.complete_dir / sha).unlink()
                    self.evicted += 1
                    used -= size
                if used + need <= self.quota_bytes:
                    return
        raise TooLarge(f"the agent's artifact cache cannot make room for {need} more bytes: quota "
                       f"{self.quota_bytes} bytes, {used} in use by artifacts being measured or uploaded; retry "
                       f"later or start the agent with a larger --cache-quota-mb")

    def expire_partials(self) -> int:
        """Delete partial uploads untouched for ``partial_expiry_s`` (not the ones being uploaded)."""
        now = time.time()
        n = 0
        for p in self.partial_dir.iterdir():
            sha = p.name.removesuffix(".part")
            with self._lock:
                if sha in self._uploading:
                    continue
                try:
                    if now - p.stat().st_mtime > self.partial_expiry_s or not SHA_RE.fullmatch(sha):
                        p.unlink()
                        n += 1
                except FileNotFoundError:
                    continue
        self.expired += n
        return n

    def stats(self) -> CacheStats:
        complete, _ = self._entries()
        partials = [p.stat().st_size for p in self.partial_dir.iterdir() if p.is_file()]
        return CacheStats(str(self.root), len(complete), sum(s for _, s, _ in complete), len(partials),
                          sum(partials), self.quota_bytes, self.max_artifact_bytes, self.evicted, self.expired)

    def delete(self, shas: list[str], everything: bool = False) -> tuple[list[str], int]:
        deleted: list[str] = []
        freed = 0
        targets = {check_sha(s) for s in shas}
        if everything:
            targets |= {p.name for p in self.complete_dir.iterdir() if SHA_RE.fullmatch(p.name)}
            targets |= {p.name[:-5] for p in self.partial_dir.glob("*.part") if SHA_RE.fullmatch(p.name[:-5])}
        for sha in sorted(targets):
            with self._lock:
                if sha in self._uploading or sha in self._pinned:
                    continue
                removed = False
                for p in (self.path(sha), self._partial(sha)):
                    try:
                        size = p.stat().st_size
                        p.unlink()
                    except FileNotFoundError:
                        continue
                    freed += size
                    removed = True
                if removed:
                    deleted.append(sha)
        return deleted, freed
