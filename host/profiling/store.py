"""The campaign store: one device's campaign in one SQLite file, durable and resumable.

SQLite in WAL mode with ``synchronous=FULL``; each finished measurement is one transaction, committed
before the next request is sent. Rows are keyed by ``(kind, pass, index, seq)`` with a primary key, so a
job is never stored twice; a crash (host killed, agent killed) loses at most the measurement in flight, and
re-running measures exactly the missing jobs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from host.errors import CampaignError
from host.gates import GateLayout
from host.profiling.plan import CampaignPlan, Job

STORE_SCHEMA_VERSION = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    kind TEXT NOT NULL, pass INTEGER NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL,
    counts TEXT NOT NULL, gates_sha256 TEXT NOT NULL,
    latency_median_us REAL NOT NULL, latency_min_us REAL, latency_mean_us REAL, latency_p90_us REAL,
    latency_std_us REAL, runs INTEGER,
    peak_bytes INTEGER, peak_method TEXT,
    param_bytes INTEGER, peak_activation_bytes INTEGER, macs INTEGER,
    artifact_sha256 TEXT, artifact_bytes INTEGER, bytes_sent INTEGER, wire_bytes INTEGER,
    host_seconds REAL, profile_seconds REAL, measured_unix REAL NOT NULL, context TEXT, samples_us TEXT,
    PRIMARY KEY (kind, pass, idx, seq)
);
CREATE TABLE IF NOT EXISTS failures (
    kind TEXT NOT NULL, pass INTEGER NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL,
    message TEXT NOT NULL, at_unix REAL NOT NULL, PRIMARY KEY (kind, pass, idx, seq)
);
CREATE TABLE IF NOT EXISTS artifacts (
    gates_sha256 TEXT NOT NULL, runtime TEXT NOT NULL, artifact_sha256 TEXT NOT NULL, artifact_bytes INTEGER,
    param_bytes INTEGER, peak_activation_bytes INTEGER, macs INTEGER, PRIMARY KEY (gates_sha256, runtime)
);
"""


class CampaignStore:
    """One device's campaign in one SQLite file (WAL, synchronous=FULL, one transaction per result)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            ok = self.conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            with self.transaction():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(measurements)")}
            for col, kind in (("samples_us", "TEXT"), ("wire_bytes", "INTEGER")):  # nullable columns added later
                if col not in have:
                    self.conn.execute(f"ALTER TABLE measurements ADD COLUMN {col} {kind}")
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", STORE_SCHEMA_VERSION)
            elif int(version) != STORE_SCHEMA_VERSION:
                raise CampaignError(
                    f"campaign store {self.path} has schema version {version}; this NN-Factory reads version "
                    f"{STORE_SCHEMA_VERSION}: use a matching NN-Factory or start a new store (--store)"
                )
        except sqlite3.DatabaseError as exc:
            raise CampaignError(
                f"campaign store {self.path} is corrupt or not a campaign store ({exc}); move it away and re-run "
                "to start over, or pass another --store"
            ) from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # plan ----------------------------------------------------------------------------------------
    def bind_plan(self, plan: CampaignPlan, layout: GateLayout) -> CampaignPlan:
        """Store the plan on first use; afterwards the same command must describe the same campaign."""
        stored = self.get_meta("plan")
        if stored is None:
            with self.transaction() as c:
                c.execute("INSERT INTO meta (key, value) VALUES ('plan', ?)", (json.dumps(plan.to_json(), sort_keys=True),))
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('layout', ?)",
                    (json.dumps(layout.to_json(), sort_keys=True),),
                )
            return plan
        old = CampaignPlan.from_json(stored)
        if old != plan:
            diff = [k for k in plan.to_json() if plan.to_json()[k] != old.to_json()[k]]
            raise CampaignError(
                f"campaign store {self.path} holds a different campaign (differs in: {', '.join(diff)}); "
                "re-run with the original options to resume it, or pass a new --store"
            )
        return old

    def plan(self) -> CampaignPlan:
        stored = self.get_meta("plan")
        if stored is None:
            raise CampaignError(f"campaign store {self.path} has no campaign yet: run `nnf profile` first")
        return CampaignPlan.from_json(stored)

    def layout(self) -> GateLayout:
        stored = self.get_meta("layout")
        if stored is None:
            raise CampaignError(f"campaign store {self.path} has no gate layout: run `nnf profile` first")
        return GateLayout.from_json(stored)

    # rows ----------------------------------------------------------------------------------------
    def done_keys(self) -> set[tuple[str, int, int, int]]:
        rows = self.conn.execute("SELECT kind, pass, idx, seq FROM measurements").fetchall()
        rows += self.conn.execute("SELECT kind, pass, idx, seq FROM failures").fetchall()
        return {tuple(r) for r in rows}  # type: ignore[misc]

    def record(self, job: Job, row: dict) -> None:
        cols = ["kind", "pass", "idx", "seq", *row.keys()]
        vals = [job.kind, job.pass_no, job.index, job.seq, *row.values()]
        with self._lock, self.transaction() as c:
            c.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)

    def record_failure(self, job: Job, message: str) -> None:
        with self._lock, self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO failures (kind, pass, idx, seq, message, at_unix) VALUES (?, ?, ?, ?, ?, ?)",
                (job.kind, job.pass_no, job.index, job.seq, message[:2000], time.time()),
            )

    def artifact(self, gates_sha: str, runtime: str) -> dict | None:
        row = self.conn.execute(
            "SELECT artifact_sha256, artifact_bytes, param_bytes, peak_activation_bytes, macs FROM artifacts "
            "WHERE gates_sha256 = ? AND runtime = ?",
            (gates_sha, runtime),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("artifact_sha256", "artifact_bytes", "param_bytes", "peak_activation_bytes", "macs"), row, strict=True))

    def remember_artifact(self, gates_sha: str, runtime: str, built: dict) -> None:
        with self._lock, self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gates_sha, runtime, built["artifact_sha256"], built["artifact_bytes"], built["param_bytes"],
                 built["peak_activation_bytes"], built["macs"]),
            )

    def rows(self, kind: str = "sample") -> list[dict]:
        cur = self.conn.execute("SELECT * FROM measurements WHERE kind = ? ORDER BY seq", (kind,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def failures(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM failures ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def default_store_path(root: str | Path, device: str, backbone: str, runtime: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device)
    return Path(root) / safe / f"{backbone}-{runtime}.sqlite"
