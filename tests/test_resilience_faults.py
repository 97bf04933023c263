"""A build against the real server behind a proxy that fails 20% of requests (half in the retry run; HTTP 500,
timeouts, dropped connections, malformed bodies) and every extraction request of two chosen records: the build
completes, every record ends with facets or an error saying why, the summary counts retries and failures, and
`clado build --retry-failed` retries only the failed records and ends with the tree a fault-free build given the
same answers makes (llama.cpp's answers can differ between runs, see test_resilience_repro).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from clado.pipeline.build import build
from clado.taxonomy.store import Store
from tests.fault_proxy import FAULT_KINDS, FaultProxy, ProxiedRequest
from tests.resilience_data import (
    ROOT,
    SAMPLE_SIZE,
    cli_args,
    json_line,
    last_summary,
    leaf_assignments,
    reference_build,
    replay_build,
    run_cli,
    sample_config,
    tree_signature,
    write_config,
    write_sample,
)

pytestmark = pytest.mark.server
FORCED = ("r063", "r064")  # every extraction request of these records fails in the first run
ARTIFACT = ROOT / "test-artifacts" / "resilience_faults.json"


def record_of(request: ProxiedRequest, texts: dict[str, str]) -> str | None:
    """The record an extraction request is about (None for other requests)."""
    if request.schema_title != "ReviewIssues":
        return None
    return next((rid for rid, text in texts.items() if text[-30:] in request.user_prompt), None)


def assert_counted(llm: dict[str, int], proxy: Counter) -> None:
    """The client's stats match what the proxy saw: one call per request, and every failed attempt (a fault, or
    a forwarded request the client gave up on) was either retried or ended the call as a failure."""
    assert llm["calls"] == proxy["requests"], (llm, proxy)
    failed_attempts = sum(proxy[k] for k in (*FAULT_KINDS, "forced_500")) + proxy["abandoned"]
    assert llm["retries"] + llm["failures"] == failed_attempts, (llm, proxy)


def test_build_survives_faults_and_retry_failed_recovers(llm_server, tmp_path_factory):
    reference = reference_build(llm_server, tmp_path_factory)
    workdir = tmp_path_factory.mktemp("faults")
    sample = write_sample(workdir / "sample.jsonl")
    texts = {r["id"]: r["text"] for r in map(json.loads, sample.read_text().splitlines())}
    # The client gives up well after the slowest answer of the fault-free run (queueing included). Each injected
    # timeout costs that long, so the first run has one, early (extraction goes on beside it). The first run
    # schedules at least 10 requests (8 records' extraction and its retries), so one in 5 failing gives it the
    # timeout and a malformed body; the --retry-failed run makes only a few requests, so one in 2 fails there, the
    # two quick kinds the first run did not reach first.
    timeout = max(10.0, 2 * max(r.seconds for r in reference.requests))

    def forced(body: dict) -> bool:
        return record_of(ProxiedRequest(number=-1, path="", body=body), texts) in FORCED

    out = workdir / "out"

    kinds = ("timeout", "malformed", "http_500", "drop")
    with FaultProxy(llm_server.base_url, rate=0.2, seed=8, kinds=kinds, fail_when=forced) as proxy:
        config = sample_config(base_url=proxy.base_url, model=llm_server.model_name, timeout=timeout)
        first = build([sample], out=out, config=config)
        with Store(out / "clado.db") as store:
            stored = store.facets("issues")
        proxy.wait_idle()
        counts_1 = proxy.counts()
        run_1 = proxy.since(0)

        proxy.set_faults(fail_when=None, kinds=("http_500", "drop", "malformed"), rate=0.5)
        toml = write_config(workdir / "config.toml", timeout=timeout)
        args = cli_args(
            [sample], out, "-c", str(toml), "--llm-url", proxy.base_url, "--llm-model", llm_server.model_name
        )
        done = run_cli([*args, "--retry-failed"])
        assert done.returncode == 0, done.stderr[-3000:]
        proxy.wait_idle()
        run_2 = proxy.since(len(run_1))
        counts_2 = proxy.counts() - counts_1

    # First run: complete, every record accounted for, the reason kept for each failure.
    summary_1, llm_1 = first.summary, first.summary["llm"]
    errors_1 = summary_1["extraction_errors"]
    assert summary_1["records"] == SAMPLE_SIZE
    assert set(FORCED) <= set(errors_1)
    assert all("InternalServerError" in errors_1[rid] and "500" in errors_1[rid] for rid in FORCED), errors_1
    # Every request the client made reached the proxy, and every failed attempt was retried or counted as a failure.
    assert_counted(llm_1, counts_1)
    assert llm_1["failures"] >= len(FORCED) and llm_1["retries"] >= 4 * len(FORCED)
    assert counts_1["forced_500"] == 5 * len(FORCED), "1 attempt + 4 retries per forced record"
    assert set(stored) == set(texts)
    for rid, (_, values, error) in stored.items():
        assert (values is None) == (rid in errors_1) and (error is None) == (rid not in errors_1)
        assert values is None or values, f"{rid}: facets or an error"

    # --retry-failed: extraction requests only for the failed records, and every record recovered.
    retried = {record_of(r, texts) for r in run_2} - {None}
    assert retried == set(errors_1), (retried, errors_1)
    summary_2 = last_summary(out)
    errors_2 = summary_2["extraction_errors"]
    assert not errors_2 and json_line(done.stdout)["extraction_errors"] == 0, errors_2
    assert_counted(summary_2["llm"], counts_2)
    assert all(counts_1[kind] + counts_2[kind] >= 1 for kind in FAULT_KINDS), (counts_1, counts_2)
    # The result is the one an uninterrupted, fault-free build given the same answers makes.
    replay = workdir / "replay"
    replayed = replay_build(out, [sample], replay, model=llm_server.model_name)
    assert replayed["llm"]["calls"] == 0 and not replayed["extraction_errors"], replayed["llm"]
    assert leaf_assignments(replay) == leaf_assignments(out)
    assert tree_signature(replay) == tree_signature(out)

    report = {
        "client_timeout_s": timeout,
        "first_run": {"proxy": dict(counts_1), "llm": llm_1, "extraction_errors": len(errors_1)},
        "retry_failed_run": {
            "proxy": dict(counts_2),
            "llm": summary_2["llm"],
            "records_recovered": len(errors_1) - len(errors_2),
        },
        "faults_by_kind": dict(Counter(r.fault for r in run_1 + run_2 if r.fault)),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
