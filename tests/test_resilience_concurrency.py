"""Two `clado build` processes on one out dir: one proceeds, a second stops with a clear message, a third
waits with --wait; afterwards the store passes SQLite's integrity check and the runs did not overlap.

The LLM is a schema-filling fake HTTP server behind the fault proxy, paused to hold the first build inside
its write lock for as long as the test needs: the point here is processes, the lock and SQLite.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from clado.taxonomy.store import Store
from tests.fault_proxy import FaultProxy
from tests.local_server import json_server
from tests.resilience_data import ROOT, SAMPLE_SIZE, cli_args, write_config, write_sample

DEADLINE = 600  # seconds for any one wait below (busy 2-core machines are slow)


def schema_answer(schema: dict[str, Any], seed: str) -> Any:
    """A value of the JSON schema `schema`; strings vary with `seed` (the prompt) so names differ."""
    defs = schema.get("$defs", {})

    def fill(node: dict[str, Any], key: str) -> Any:
        if "$ref" in node:
            return fill(defs[node["$ref"].split("/")[-1]], key)
        if "anyOf" in node:
            return fill(node["anyOf"][0], key)
        if "enum" in node:
            return node["enum"][0]
        kind = node.get("type")
        if kind == "object":
            return {k: fill(v, k) for k, v in node.get("properties", {}).items()}
        if kind == "array":
            return [fill(node.get("items", {}), key)]
        if kind in ("integer", "number"):
            return 0
        if kind == "boolean":
            return False
        return f"{key} {hashlib.sha256((seed + key).encode()).hexdigest()[:6]}"

    return fill(schema, "answer")


def fake_llm(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    content = json.dumps(schema_answer(body["response_format"]["schema"], json.dumps(body["messages"])))
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return 200, {"id": "fake", "object": "chat.completion", "model": "fake", "choices": [choice], "usage": usage}


class Build:
    """A `clado build` subprocess whose stderr is collected as it comes."""

    def __init__(self, args: list[str]):
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr += line

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while text not in self.stderr:
            assert self.process.poll() is None, f"exited {self.process.returncode}: {self.stderr[-2000:]}"
            assert time.monotonic() < deadline, f"no {text!r} on stderr: {self.stderr[-2000:]}"
            time.sleep(0.1)

    def finish(self) -> int:
        code = self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=10)
        return code


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_second_writer_stops_third_waits_and_the_store_stays_sound(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "sample.jsonl")
    config = write_config(tmp_path / "config.toml")
    out = tmp_path / "out"
    owner = out / "clado.db.owner"
    with json_server(fake_llm) as upstream, FaultProxy(upstream.url + "/v1") as proxy:
        args = cli_args([sample], out, "-c", str(config), "--llm-url", proxy.base_url, "--llm-model", "fake")
        proxy.pause()  # the first build blocks at its first LLM call, inside the write lock
        first = Build(args)
        try:
            holds_lock = lambda: owner.exists() and owner.read_text().strip() == str(first.process.pid)  # noqa: E731
            wait_until(holds_lock, "the first build's lock")
            second = Build(args)
            third = Build([*args, "--wait", str(DEADLINE)])
            assert second.finish() == 3, second.stderr[-2000:]  # 3: store busy
            assert f"is being written by another clado process (pid {first.process.pid})" in second.stderr
            third.wait_for("is being written by another clado process; waiting for it")
            assert first.process.poll() is None and third.process.poll() is None
        finally:
            proxy.resume()
        assert first.finish() == 0, first.stderr[-3000:]
        assert third.finish() == 0, third.stderr[-3000:]

    with closing(sqlite3.connect(out / "clado.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Store(out / "clado.db") as store:
        runs = store.runs()
        records = store.records()
    assert [r["status"] for r in runs] == ["ok", "ok"], runs  # the stopped build never touched the store
    assert runs[1]["started_at"] >= runs[0]["finished_at"], "the waiting build ran after the first, not alongside"
    assert len(records) == SAMPLE_SIZE
    assert not owner.exists()
