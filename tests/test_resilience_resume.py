"""A `clado build` killed with SIGKILL during extraction, then again after extraction (while naming), and started a
third time with the same command repeats no LLM call whose answer had been committed, asks for exactly the missing
ones, loses no record, and ends with the tree of an uninterrupted build given the same answers. LLM requests are
seen at a pass-through proxy in front of the real server. (The comparison is with an uninterrupted build from the
same answers, not with a fresh run: llama.cpp's answers can differ between runs, see test_resilience_repro.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from clado.taxonomy.store import Store
from tests.fault_proxy import FaultProxy, ProxiedRequest
from tests.resilience_data import (
    EXAMPLE_IDS,
    INJECTIONS,
    ROOT,
    SAMPLE_SIZE,
    cache_keys,
    cli_args,
    last_summary,
    leaf_assignments,
    replay_build,
    request_key,
    run_cli,
    table_count,
    tree_signature,
    write_config,
    write_sample,
)

pytestmark = pytest.mark.server
INPUT_IDS = (*EXAMPLE_IDS, *INJECTIONS)
DEADLINE = 1200  # seconds; generous for busy CI machines


def kill_when(args: list[str], condition, what: str, *, log: Path) -> None:
    """Start `args`, SIGKILL it as soon as `condition()` holds; fail if it ends first."""
    with log.open("w") as stderr:
        process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + DEADLINE
    try:
        while not condition():
            if process.poll() is not None:
                pytest.fail(f"the build ended (code {process.returncode}) before {what}: {log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


def answered_keys(requests: list[ProxiedRequest], model: str) -> set[str]:
    """Cache keys of the first asks among `requests` (a re-ask carries the model's bad answer: no key of its own; a
    request the kill cut off mid-body reaches the proxy without messages and was never answered)."""
    return {
        request_key(r, model)
        for r in requests
        if "messages" in r.body and not any(m["role"] == "assistant" for m in r.body["messages"])
    }


def test_killed_twice_resumes_without_repeating_calls_or_losing_records(llm_server, tmp_path_factory):
    model = llm_server.model_name
    workdir = tmp_path_factory.mktemp("resume")
    out = workdir / "out"
    db = out / "clado.db"
    facets_done = lambda: table_count(db, "SELECT COUNT(*) FROM facet_values WHERE items IS NOT NULL")  # noqa: E731
    answers_cached = lambda: table_count(db, "SELECT COUNT(*) FROM llm_cache")  # noqa: E731

    with FaultProxy(llm_server.base_url) as proxy:
        sample = write_sample(workdir / "sample.jsonl")
        args = cli_args(
            [sample],
            out,
            "-c",
            str(write_config(workdir / "config.toml")),
            "--llm-url",
            proxy.base_url,
            "--llm-model",
            model,
        )
        some_extracted = lambda: 0 < facets_done() < SAMPLE_SIZE  # noqa: E731
        kill_when(args, some_extracted, "some but not all records were extracted", log=workdir / "run1.log")
        extracted_1, committed_1 = facets_done(), cache_keys(db)
        mark_2 = proxy.mark()
        naming = lambda: facets_done() == SAMPLE_SIZE and answers_cached() > SAMPLE_SIZE  # noqa: E731
        kill_when(args, naming, "a later stage had answers", log=workdir / "run2.log")
        committed_2 = cache_keys(db)
        mark_3 = proxy.mark()
        done = run_cli(args)
        assert done.returncode == 0, done.stderr[-3000:]
        run_2, run_3 = proxy.since(mark_2)[: mark_3 - mark_2], proxy.since(mark_3)

    assert 0 < extracted_1 < SAMPLE_SIZE
    assert committed_1 <= answered_keys(proxy.requests[:mark_2], model), "keys are recomputed as clado files them"
    # No call whose answer had been committed is made again.
    assert not answered_keys(run_2, model) & committed_1
    assert not answered_keys(run_3, model) & committed_2
    assert not [r for r in run_3 if r.schema_title == "ReviewIssues"], "the third run extracted nothing again"
    # The third run asked exactly for the answers still missing, and reused the naming answers of the second.
    final_answers = cache_keys(db)
    assert answered_keys(run_3, model) == final_answers - committed_2
    summary = last_summary(out)
    assert summary["llm"]["calls"] == len(run_3) and summary["llm"]["cache_hits"] > 0, summary["llm"]
    # Nothing lost.
    assert summary["records"] == summary["inputs"] == SAMPLE_SIZE and not summary["extraction_errors"]
    with Store(db) as store:
        assert {rid for rid, (_, values, _) in store.facets("issues").items() if values} == set(INPUT_IDS)
    # An uninterrupted build given the same answers needs every one of them, asks for nothing else and ends with
    # the same tree.
    replay = workdir / "replay"
    replayed = replay_build(out, [sample], replay, model=model)
    assert replayed["llm"]["calls"] == 0 and replayed["llm"]["cache_hits"] == len(final_answers), replayed["llm"]
    assert leaf_assignments(replay) == leaf_assignments(out)
    assert tree_signature(replay) == tree_signature(out)
