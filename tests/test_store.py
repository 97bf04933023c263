"""The SQLite store: WAL, transactions, round trips, a reader during a write."""

import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

from clado.taxonomy.records import FacetValue, Node, Record, Taxonomy
from clado.taxonomy.store import Store, VersionMismatch


def test_wal_mode_and_tables(tmp_path):
    store = Store(tmp_path / "clado.db")
    (mode,) = store._query("PRAGMA journal_mode")[0]
    assert mode == "wal"
    tables = {name for (name,) in store._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "records", "facet_values", "embeddings", "nodes", "taxonomy_versions", "llm_cache"} <= tables


def test_failed_transaction_rolls_back(tmp_path):
    store = Store(tmp_path / "clado.db")
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cur.execute("INSERT INTO llm_cache VALUES ('k', 'm', 'r', 'now')")
        raise RuntimeError("crash mid-write")
    assert store.cache_get("k") is None


def test_reader_sees_committed_data_while_a_write_is_open(tmp_path):
    path = tmp_path / "clado.db"
    store = Store(path)
    store.cache_put("a", "m", "first")
    with store.transaction() as cur:
        cur.execute("INSERT INTO llm_cache VALUES ('b', 'm', 'second', 'now')")
        reader = sqlite3.connect(path, timeout=1)
        rows = reader.execute("SELECT key FROM llm_cache ORDER BY key").fetchall()
        reader.close()
    assert rows == [("a",)]
    assert store.cache_get("b") == "second"


def test_records_facets_embeddings_round_trip(tmp_path):
    store = Store(tmp_path / "clado.db")
    record = Record(id="r1", text="Battery dies fast", source_file="x.jsonl", source_line=3, metadata={"rating": 2})
    store.put_records([record])
    assert store.records() == [record]
    assert store.known_hashes() == {record.content_hash}
    value = FacetValue(record_id="r1", facet="issues", value={"aspect": "battery"}, text="Issue: dies")
    store.put_facets("r1", "issues", "key1", [value], None)
    store.put_facets("r2", "issues", "key1", None, "timeout")
    facets = store.facets("issues")
    assert facets["r1"] == ("key1", [value], None)
    assert facets["r2"] == ("key1", None, "timeout")
    vectors = {"a": np.arange(4, dtype=np.float32), "b": np.ones(4, dtype=np.float32)}
    store.put_many(vectors)
    got = store.get_many(["b", "a", "missing"])
    assert set(got) == {"a", "b"} and np.array_equal(got["a"], vectors["a"])


def test_taxonomy_versions_increase(tmp_path):
    store = Store(tmp_path / "clado.db")
    node = Node(id=Node.make_id(0, ["x"]), level=0, name="n", size=1, member_ids=["x"])
    for version in (1, 2):
        assert store.next_version() == version
        store.put_taxonomy(Taxonomy(created_at=datetime.now(UTC), nodes=[node], version=version), run_id=None)
    assert store.taxonomy().version == 2
    with pytest.raises(VersionMismatch, match="labelled version 2 but the store's next version is 3"):
        store.put_taxonomy(Taxonomy(created_at=datetime.now(UTC), nodes=[node], version=2), run_id=None)
    assert store.taxonomy(1).nodes == [node]
    assert store.taxonomy(7) is None


def test_runs_are_recorded(tmp_path):
    store = Store(tmp_path / "clado.db")
    run = store.start_run("build", {"seed": 0})
    store.finish_run(run, "ok", {"records": 3})
    (row,) = store.runs()
    assert row["status"] == "ok" and row["summary"] == {"records": 3} and row["finished_at"]


def test_node_ids_are_deterministic_and_membership_based():
    assert Node.make_id(0, ["b", "a"]) == Node.make_id(0, ["a", "b"])
    assert Node.make_id(0, ["a"]) != Node.make_id(1, ["a"])
    assert Node.make_id(0, ["a"]) != Node.make_id(0, ["a", "b"])


def test_embeddings_live_in_a_row_file_and_survive_reopen_legacy_blobs_and_a_torn_write(tmp_path):
    path = tmp_path / "clado.db"
    store = Store(path)
    store.put_many({"a": np.arange(4, dtype=np.float32), "b": np.ones(4, dtype=np.float32)})
    store.put_many({"c": np.full(3, 2.0, dtype=np.float32)})  # another dimension, another file
    with store.transaction() as cur:  # a store written before row files: one blob per key
        cur.execute("INSERT INTO embeddings VALUES ('old', 2, ?)", (np.array([5, 6], dtype=np.float32).tobytes(),))
    rows_file = path.with_name("clado.db.vectors") / "d4.f32"
    assert rows_file.stat().st_size == 2 * 4 * 4 and len(store.vector_file(4)) == 2
    store.close()
    with rows_file.open("ab") as handle:
        handle.write(b"\0\0")  # a crash mid-append left half a float
    store = Store(path)
    got = store.get_many(["a", "b", "c", "old", "missing"])
    assert set(got) == {"a", "b", "c", "old"}
    assert got["a"].tolist() == [0, 1, 2, 3] and got["c"].tolist() == [2, 2, 2] and got["old"].tolist() == [5, 6]
    store.put_many({"d": np.full(4, 7.0, dtype=np.float32), "a": np.zeros(4, dtype=np.float32)})
    got = store.get_many(["a", "b", "d"])
    assert got["d"].tolist() == [7] * 4 and got["a"].tolist() == [0] * 4 and got["b"].tolist() == [1] * 4
    assert rows_file.stat().st_size == 4 * 4 * 4  # the torn half row was dropped, two rows appended
