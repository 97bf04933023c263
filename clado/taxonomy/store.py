"""The project store: one SQLite file (WAL mode) holding runs, records, facets, embeddings, taxonomies and the LLM cache."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from clado.taxonomy.records import FacetValue, Record, Taxonomy
from clado.taxonomy.vector_file import VectorFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, config TEXT NOT NULL, summary TEXT
);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, body TEXT NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_hash ON records(content_hash);
CREATE TABLE IF NOT EXISTS facet_values (
    record_id TEXT NOT NULL, facet TEXT NOT NULL, key TEXT NOT NULL, items TEXT, error TEXT,
    transient INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (record_id, facet)
);
CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS embedding_rows (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, row INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stage_outputs (key TEXT PRIMARY KEY, stage TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    version INTEGER NOT NULL, id TEXT NOT NULL, parent_id TEXT, level INTEGER NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (version, id)
);
CREATE TABLE IF NOT EXISTS taxonomy_versions (
    version INTEGER PRIMARY KEY, created_at TEXT NOT NULL, run_id TEXT, fingerprint TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_cache (key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edits (seq INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, op TEXT NOT NULL, args TEXT NOT NULL);
"""


class VersionMismatch(RuntimeError):
    """A taxonomy (and so its exports) labelled with another version than the one the store would save."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


class Store:
    """Thread-safe access to one project's SQLite file; every write is one transaction."""

    def __init__(self, path: Path | str, *, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._conn.executescript(SCHEMA)
        self._add_column("facet_values", "transient INTEGER NOT NULL DEFAULT 0")  # stores of before it
        self._vectors: dict[int, VectorFile] = {}

    def _add_column(self, table: str, column: str) -> None:
        """Add `column` ("name TYPE ...") to a table of an older store that lacks it."""
        if column.split()[0] not in {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it meanwhile
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def vector_file(self, dim: int) -> VectorFile:
        """The row file of `dim`-dimensional embeddings beside the database."""
        if dim not in self._vectors:
            self._vectors[dim] = VectorFile(self.path.with_name(self.path.name + ".vectors") / f"d{dim}.f32", dim)
        return self._vectors[dim]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on error."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # runs
    def start_run(self, command: str, config: dict[str, Any]) -> str:
        run_id = str(uuid.uuid4())
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO runs (id, command, started_at, status, config) VALUES (?, ?, ?, 'running', ?)",
                (run_id, command, utcnow(), json.dumps(config, default=str)),
            )
        return run_id

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (utcnow(), status, json.dumps(summary, default=str), run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT id, command, started_at, finished_at, status, summary FROM runs ORDER BY started_at")
        keys = ("id", "command", "started_at", "finished_at", "status", "summary")
        return [dict(zip(keys, r)) | {"summary": json.loads(r[5]) if r[5] else None} for r in rows]

    # records
    def put_records(self, records: list[Record], *, batch: int = 10000) -> None:
        """Insert the records or replace the stored ones of the same id (text, repeats and all), `batch` per
        transaction."""
        for start in range(0, len(records), batch):
            with self.transaction() as cur:
                cur.executemany(
                    "INSERT INTO records (id, content_hash, body, duplicates) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET content_hash = excluded.content_hash, body = excluded.body, "
                    "duplicates = excluded.duplicates",
                    [
                        (r.id, r.content_hash, r.model_dump_json(), len(r.repeats))
                        for r in records[start : start + batch]
                    ],
                )

    def records(self) -> list[Record]:
        return [Record.model_validate_json(b) for (b,) in self._query("SELECT body FROM records ORDER BY rowid")]

    def known_hashes(self) -> set[str]:
        return {h for (h,) in self._query("SELECT content_hash FROM records")}

    # facets
    def put_facets(
        self,
        record_id: str,
        facet: str,
        key: str,
        values: list[FacetValue] | None,
        error: str | None,
        *,
        transient: bool = False,
    ) -> None:
        """Store one record's extracted facet values (or the error that prevented them, and whether it was
        transient: a timeout or a server error rather than an unusable answer)."""
        items = json.dumps([v.model_dump(mode="json") for v in values]) if values is not None else None
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO facet_values (record_id, facet, key, items, error, transient) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record_id, facet, key, items, error, int(transient and values is None)),
            )

    def transient_failures(self, facet: str) -> set[str]:
        """Ids of the records whose last extraction of `facet` failed transiently."""
        rows = self._query("SELECT record_id FROM facet_values WHERE facet = ? AND transient = 1", (facet,))
        return {record_id for (record_id,) in rows}

    def facets(self, facet: str) -> dict[str, tuple[str, list[FacetValue] | None, str | None]]:
        """record id → (cache key, values or None, error or None)."""
        rows = self._query("SELECT record_id, key, items, error FROM facet_values WHERE facet = ?", (facet,))
        out = {}
        for record_id, key, items, error in rows:
            values = [FacetValue.model_validate(v) for v in json.loads(items)] if items is not None else None
            out[record_id] = (key, values, error)
        return out

    # embeddings (implements clado.backends.embed.EmbeddingCache): key -> row of a memory-mapped row file
    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[int, list[tuple[str, int]]] = {}
        legacy: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, dim, row in self._query(f"SELECT key, dim, row FROM embedding_rows WHERE key IN ({marks})", chunk):
                found.setdefault(dim, []).append((key, row))
            for key, dim, blob in self._query(f"SELECT key, dim, vector FROM embeddings WHERE key IN ({marks})", chunk):
                legacy[key] = np.frombuffer(blob, dtype=np.float32, count=dim).copy()  # stores written before rows
        out = legacy
        for dim, pairs in found.items():
            vectors = self.vector_file(dim).rows(np.array([row for _, row in pairs], dtype=np.int64))
            out.update({key: vector for (key, _), vector in zip(pairs, vectors)})
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """Append the vectors to their dimension's row file, then commit their keys in one transaction."""
        by_dim: dict[int, list[str]] = {}
        for key, vector in items.items():
            by_dim.setdefault(int(np.shape(vector)[0]), []).append(key)
        rows = []
        for dim, keys in by_dim.items():
            first = self.vector_file(dim).append(np.stack([items[k] for k in keys]))
            rows += [(key, dim, first + i) for i, key in enumerate(keys)]
        with self.transaction() as cur:
            cur.executemany("INSERT OR REPLACE INTO embedding_rows (key, dim, row) VALUES (?, ?, ?)", rows)

    # generic stage outputs (clusters, names, hierarchy steps), keyed by the stage's input hash
    def put_output(self, key: str, stage: str, body: Any) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO stage_outputs (key, stage, body, created_at) VALUES (?, ?, ?, ?)",
                (key, stage, json.dumps(body, default=str), utcnow()),
            )

    def get_output(self, key: str) -> Any | None:
        rows = self._query("SELECT body FROM stage_outputs WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    # taxonomy versions
    def next_version(self) -> int:
        """The version number the next `put_taxonomy` will save (label the exports with it)."""
        (latest,) = self._query("SELECT COALESCE(MAX(version), 0) FROM taxonomy_versions")[0]
        return int(latest) + 1

    def put_taxonomy(self, taxonomy: Taxonomy, run_id: str | None) -> int:
        """Save a taxonomy as the next version, which `taxonomy.version` must already be (see `next_version`)."""
        with self.transaction() as cur:
            (latest,) = cur.execute("SELECT COALESCE(MAX(version), 0) FROM taxonomy_versions").fetchone()
            version = latest + 1
            if taxonomy.version != version:
                raise VersionMismatch(
                    f"{self.path}: the taxonomy is labelled version {taxonomy.version} but the store's next version "
                    f"is {version}"
                )
            cur.execute(
                "INSERT INTO taxonomy_versions (version, created_at, run_id, fingerprint, body) VALUES (?, ?, ?, ?, ?)",
                (version, utcnow(), run_id, json.dumps(taxonomy.fingerprint, default=str), taxonomy.model_dump_json()),
            )
            cur.executemany(
                "INSERT INTO nodes (version, id, parent_id, level, name, size, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(version, n.id, n.parent_id, n.level, n.name, n.size, n.model_dump_json()) for n in taxonomy.nodes],
            )
        return version

    def taxonomy(self, version: int | None = None) -> Taxonomy | None:
        """The given version, or the latest one."""
        if version is None:
            rows = self._query("SELECT body FROM taxonomy_versions ORDER BY version DESC LIMIT 1")
        else:
            rows = self._query("SELECT body FROM taxonomy_versions WHERE version = ?", (version,))
        return Taxonomy.model_validate_json(rows[0][0]) if rows else None

    # LLM cache
    def cache_get(self, key: str) -> str | None:
        rows = self._query("SELECT response FROM llm_cache WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def cache_put(self, key: str, model: str, response: str) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO llm_cache (key, model, response, created_at) VALUES (?, ?, ?, ?)",
                (key, model, response, utcnow()),
            )

    # analyst edits and version history (used by refresh, edit, diff and serve)
    def add_edit(self, op: str, args: dict[str, Any]) -> int:
        """Record one analyst edit; edits are replayed in `seq` order after every refresh and rebuild."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO edits (created_at, op, args) VALUES (?, ?, ?)",
                (utcnow(), op, json.dumps(args, default=str)),
            )
            seq = cur.lastrowid
        assert seq is not None, "an INSERT sets lastrowid"
        return seq

    def edits(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT seq, created_at, op, args FROM edits ORDER BY seq")
        return [{"seq": s, "created_at": c, "op": op, "args": json.loads(a)} for s, c, op, a in rows]

    def latest_config(self) -> dict[str, Any] | None:
        """The config recorded with the latest successful run (None before the first one)."""
        rows = self._query("SELECT config FROM runs WHERE status = 'ok' ORDER BY started_at DESC, rowid DESC LIMIT 1")
        return json.loads(rows[0][0]) if rows else None

    def record_hashes(self) -> dict[str, str]:
        """Record id → content hash."""
        return dict(self._query("SELECT id, content_hash FROM records"))

    def versions(self) -> list[dict[str, Any]]:
        """Every taxonomy version, oldest first, with the command of the run that wrote it."""
        rows = self._query(
            "SELECT v.version, v.created_at, r.command FROM taxonomy_versions v LEFT JOIN runs r ON r.id = v.run_id "
            "ORDER BY v.version"
        )
        return [{"version": v, "created_at": c, "command": cmd} for v, c, cmd in rows]

    def node_sizes(self) -> dict[int, dict[str, int]]:
        """Version → node id → size, from the nodes table (per-node trends across versions)."""
        out: dict[int, dict[str, int]] = {}
        for version, node_id, size in self._query("SELECT version, id, size FROM nodes"):
            out.setdefault(version, {})[node_id] = size
        return out
