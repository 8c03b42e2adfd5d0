"""The campaign store: one device's campaign in one SQLite file, durable and resumable.

SQLite in WAL mode with ``synchronous=FULL``; each finished measurement is one transaction, committed
before the next request is sent. Rows are keyed by ``(kind, pass, index, seq)`` with a primary key, so a
job is never stored twice; a crash (host killed, agent killed) loses at most the measurement in flight, and
re-running measures exactly the missing jobs.

A job is *done* when it has a measurement or a **final** failure (the model itself failed: load error,
out of memory, crash). Transient failures (queue timeout, busy agent, agent unavailable, deadline while
queued) are kept with ``final = 0`` and an attempt count, and are measured again on the next run.

Schema versions (``meta.schema_version``) and their migrations, applied in order in one transaction each:

1. measurements, failures, artifacts, meta.
2. ``measurements.source`` (uniform / stratified / generated / reference; version-1 rows were uniform),
   ``failures.final`` and ``failures.attempts`` (version-1 failures whose gRPC status says the request,
   not the model, failed become transient and are re-measured), and the ``generated`` table (the gates
   of generated samples, stored when first drawn).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host.errors import CampaignError
from host.gates import GateLayout
from host.profiling.plan import CampaignPlan, Job, Sample

STORE_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class MeasurementRow:
    """One stored measurement (the ``measurements`` table's columns besides the job key)."""

    counts: str  # JSON list: active modules per gated layer
    gates_sha256: str
    source: str
    latency_median_us: float
    latency_min_us: float | None
    latency_mean_us: float | None
    latency_p90_us: float | None
    latency_std_us: float | None
    runs: int | None
    peak_bytes: int | None
    peak_method: str | None
    param_bytes: int | None
    peak_activation_bytes: int | None
    macs: int | None
    artifact_sha256: str | None
    artifact_bytes: int | None
    bytes_sent: int | None
    wire_bytes: int | None
    host_seconds: float | None
    profile_seconds: float | None
    measured_unix: float
    context: str | None  # JSON object
    samples_us: str | None  # JSON list: every timed run, in order


_COLUMNS = [f.name for f in fields(MeasurementRow)]
_COLUMN_TYPES = {
    "counts": "TEXT NOT NULL", "gates_sha256": "TEXT NOT NULL", "source": "TEXT", "latency_median_us": "REAL NOT NULL",
    "latency_min_us": "REAL", "latency_mean_us": "REAL", "latency_p90_us": "REAL", "latency_std_us": "REAL",
    "runs": "INTEGER", "peak_bytes": "INTEGER", "peak_method": "TEXT", "param_bytes": "INTEGER",
    "peak_activation_bytes": "INTEGER", "macs": "INTEGER", "artifact_sha256": "TEXT", "artifact_bytes": "INTEGER",
    "bytes_sent": "INTEGER", "wire_bytes": "INTEGER", "host_seconds": "REAL", "profile_seconds": "REAL",
    "measured_unix": "REAL NOT NULL", "context": "TEXT", "samples_us": "TEXT",
}
assert set(_COLUMN_TYPES) == set(_COLUMNS)

_V1_SCHEMA = """
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
)
"""

# version-1 failures recorded with these gRPC statuses (or the fakes' "crashed") were the model's own
_FINAL_V1_MARKERS = ("INTERNAL:", "RESOURCE_EXHAUSTED:", "INVALID_ARGUMENT:", "crash", "out of memory")


def _statements(script: str) -> list[str]:
    return [s for s in (x.strip() for x in script.split(";")) if s]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    have = _columns(conn, "measurements")
    for col in _COLUMNS:  # version-1 stores gained samples_us / wire_bytes late: add whatever is missing
        if col not in have:
            nullable = _COLUMN_TYPES[col].replace(" NOT NULL", "")
            conn.execute(f"ALTER TABLE measurements ADD COLUMN {col} {nullable}")
    conn.execute("UPDATE measurements SET source = CASE kind WHEN 'ref' THEN 'reference' ELSE 'uniform' END "
                 "WHERE source IS NULL")
    have = _columns(conn, "failures")
    if "final" not in have:
        conn.execute("ALTER TABLE failures ADD COLUMN final INTEGER NOT NULL DEFAULT 1")
    if "attempts" not in have:
        conn.execute("ALTER TABLE failures ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
    rows = conn.execute("SELECT kind, pass, idx, seq, message FROM failures").fetchall()
    for kind, pass_no, idx, seq, message in rows:
        final = any(m in message for m in _FINAL_V1_MARKERS)
        conn.execute("UPDATE failures SET final = ? WHERE kind = ? AND pass = ? AND idx = ? AND seq = ?",
                     (int(final), kind, pass_no, idx, seq))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS generated (idx INTEGER PRIMARY KEY, task TEXT NOT NULL, limit_value REAL NOT NULL, "
        "gates TEXT NOT NULL, generator TEXT NOT NULL)"
    )


#: ``MIGRATIONS[v]`` brings a version-``v`` store to version ``v + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}


class Bind(Enum):
    """What :meth:`CampaignStore.bind_plan` did."""

    NEW = "new"
    RESUMED = "resumed"
    GROWN = "grown"
    REPLANNED = "replanned"


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
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise CampaignError(
                f"campaign store {self.path} is corrupt or not a campaign store ({exc}); move it away and re-run "
                "to start over, or pass another --store"
            ) from exc
        self._lock = threading.Lock()

    def _open_schema(self) -> None:
        with self.transaction() as c:  # a new store, or one written before versions existed, starts as version 1
            for stmt in _statements(_V1_SCHEMA):
                c.execute(stmt)
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        version = int(self.get_meta("schema_version"))
        if version > STORE_SCHEMA_VERSION:
            raise CampaignError(
                f"campaign store {self.path} has schema version {version}; this NN-Factory reads up to version "
                f"{STORE_SCHEMA_VERSION}: use a newer NN-Factory or start a new store (--store)"
            )
        while version < STORE_SCHEMA_VERSION:
            with self.transaction() as c:
                MIGRATIONS[version](c)
                version += 1
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))

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
    def bind_plan(self, plan: CampaignPlan, layout: GateLayout) -> tuple[CampaignPlan, Bind]:
        """Store the plan on first use; afterwards the same command must describe the same campaign.

        A larger ``samples`` grows the stored campaign (:meth:`CampaignPlan.grown_to`); a store that holds
        no measurement yet takes the new plan as it is.
        """
        stored = self.get_meta("plan")
        if stored is not None:
            old = CampaignPlan.from_json(stored)
            if plan == old:
                return old, Bind.RESUMED
            diff = old.same_campaign(plan)
            if not diff and plan.samples >= old.samples and not plan.grown_from:
                grown = old.grown_to(plan.samples)
                if grown == old:
                    return old, Bind.RESUMED
                self._write_plan(grown, layout)
                return grown, Bind.GROWN
            if self.holds_results():
                if diff:
                    raise CampaignError(
                        f"campaign store {self.path} holds a different campaign (differs in: {', '.join(diff)}); "
                        "re-run with the original options to resume it, or pass a new --store"
                    )
                old.grown_to(plan.samples)  # raises: a campaign never shrinks
            with self.transaction() as c:  # nothing measured yet: the new plan replaces the old one
                c.execute("DELETE FROM generated")
                c.execute("DELETE FROM failures")
            self._write_plan(plan, layout)
            return plan, Bind.REPLANNED
        self._write_plan(plan, layout)
        return plan, Bind.NEW

    def _write_plan(self, plan: CampaignPlan, layout: GateLayout) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('plan', ?)",
                      (json.dumps(plan.to_json(), sort_keys=True),))
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('layout', ?)",
                      (json.dumps(layout.to_json(), sort_keys=True),))

    def holds_results(self) -> bool:
        """Whether any measurement or final failure is stored (a store without either can be re-planned)."""
        n = self.conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
        return bool(n or self.conn.execute("SELECT count(*) FROM failures WHERE final = 1").fetchone()[0])

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

    # generated samples ---------------------------------------------------------------------------
    def generated(self, index: int, layout: GateLayout) -> Sample | None:
        """The stored gates of generated sample ``index`` (None when not drawn yet)."""
        row = self.conn.execute("SELECT task, limit_value, gates, generator FROM generated WHERE idx = ?",
                                (index,)).fetchone()
        if row is None:
            return None
        task, limit, blob, generator = row
        return Sample(unpack_gates(json.loads(blob), layout), "generated", task, float(limit), generator)

    def remember_generated(self, index: int, sample: Sample) -> None:
        with self._lock, self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO generated (idx, task, limit_value, gates, generator) VALUES (?, ?, ?, ?, ?)",
                      (index, sample.task, sample.limit, json.dumps(pack_gates(sample.gates)), sample.generator))

    def generators(self) -> dict[str, int]:
        """Generated samples drawn so far, per generator identity."""
        return dict(self.conn.execute("SELECT generator, count(*) FROM generated GROUP BY generator").fetchall())

    # rows ----------------------------------------------------------------------------------------
    def done_keys(self) -> set[tuple[str, int, int, int]]:
        """Jobs with a measurement or a final failure (transient failures are not done)."""
        rows = self.conn.execute("SELECT kind, pass, idx, seq FROM measurements").fetchall()
        rows += self.conn.execute("SELECT kind, pass, idx, seq FROM failures WHERE final = 1").fetchall()
        return {tuple(r) for r in rows}  # type: ignore[misc]

    def record(self, job: Job, row: MeasurementRow) -> None:
        """Store one measurement (and forget an earlier transient failure of the same job)."""
        cols = ["kind", "pass", "idx", "seq", *_COLUMNS]
        vals = [job.kind, job.pass_no, job.index, job.seq, *astuple(row)]
        with self._lock, self.transaction() as c:
            c.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
            c.execute("DELETE FROM failures WHERE kind = ? AND pass = ? AND idx = ? AND seq = ?",
                      (job.kind, job.pass_no, job.index, job.seq))

    def record_failure(self, job: Job, message: str, *, final: bool) -> int:
        """Store a failure of ``job``; returns how many times it has failed."""
        with self._lock, self.transaction() as c:
            c.execute(
                "INSERT INTO failures (kind, pass, idx, seq, message, at_unix, final, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (kind, pass, idx, seq) DO UPDATE SET "
                "message = excluded.message, at_unix = excluded.at_unix, final = excluded.final, "
                "attempts = failures.attempts + 1",
                (job.kind, job.pass_no, job.index, job.seq, message[:2000], time.time(), int(final)),
            )
            return int(c.execute("SELECT attempts FROM failures WHERE kind = ? AND pass = ? AND idx = ? AND seq = ?",
                                 (job.kind, job.pass_no, job.index, job.seq)).fetchone()[0])

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

    def failures(self, *, final: bool | None = None) -> list[dict]:
        """Stored failures: all, only final (``final=True``) or only transient ones (``final=False``)."""
        where = "" if final is None else f" WHERE final = {int(final)}"
        cur = self.conn.execute(f"SELECT * FROM failures{where} ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def pack_gates(gates: list[torch.Tensor]) -> list[str]:
    """Hard gates as one hex string of packed bits per layer."""
    return [np.packbits((g.detach().cpu().numpy() > 0.5).astype(np.uint8)).tobytes().hex() for g in gates]


def unpack_gates(packed: list[str], layout: GateLayout) -> list[torch.Tensor]:
    if len(packed) != layout.num_layers:
        raise CampaignError(f"stored gates have {len(packed)} layers, the layout {layout.config} has {layout.num_layers}")
    out = []
    for hexed, layer in zip(packed, layout.layers, strict=True):
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(hexed), dtype=np.uint8))[: layer.modules]
        out.append(torch.from_numpy(bits.astype(np.float32)))
    return out


def default_store_path(root: str | Path, device: str, backbone: str, runtime: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device)
    return Path(root) / safe / f"{backbone}-{runtime}.sqlite"
