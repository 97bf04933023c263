"""A build whose LLM fails is never "ok" (issue #18 points 3 and 4): a refused key or model and a hung server stop
it within seconds with one message and exit codes 2 and 4; more than `facets.max_failed_share` failed records
stop it after errors.json is written; the next plain build asks again only the records that failed transiently."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from clado.cli import app
from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.failures import ExtractionFailed
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm
from tests.resilience_data import ROOT
from tests.stub_servers import StubServer
from tests.test_build import responder, write_reviews

TRANSIENT = {"(1)", "(2)", "(3)"}  # records r1..r3: HTTP 500 on every attempt while the server is down
INVALID = "(4)"  # record r4: never a valid answer
PROGRESS = re.compile(r"^extract \w+: \d+/\d+ \(\d+ s(, about \d+ s left)?\)$")


def extraction_of(body: dict) -> str | None:
    """The "(i)" marker of the review an extraction request is about (None for other requests)."""
    if body["response_format"]["schema"].get("title") != "ReviewIssues":
        return None
    prompt = body["messages"][1]["content"]  # the first user message: a re-ask adds others after it
    return next((m for m in [*TRANSIENT, INVALID] if m in prompt), "other")


def flaky_responder(down: dict[str, bool]):
    def respond(body: dict):
        marker = extraction_of(body)
        if marker in TRANSIENT and down["now"]:
            return httpx.Response(500, json={"error": "overloaded"})
        if marker == INVALID:
            return "not json"
        return responder(body)

    return respond


def run_build(tmp_path, server: FakeServer, *, retry_failed: bool = False):
    config = Config()
    config.output.map = False

    async def run():
        with Store(tmp_path / "out" / "clado.db") as store:
            llm = fake_llm(server, store=store, max_retries=1)
            return await build_async(
                [tmp_path / "reviews.jsonl"], out=tmp_path / "out", config=config, store=store,
                embedder=FakeEmbedder(), llm=llm, retry_failed=retry_failed,
            )  # fmt: skip

    return asyncio.run(run())


def extraction_requests(server: FakeServer, since: int) -> list[str]:
    return sorted(m for body in server.history[since:] if (m := extraction_of(body)) not in (None, "other"))


def test_too_many_failed_records_stop_the_build_and_the_next_build_retries_the_transient_ones(tmp_path):
    write_reviews(tmp_path / "reviews.jsonl", n=20)
    out = tmp_path / "out"
    down = {"now": True}
    server = FakeServer(responder=flaky_responder(down))
    with pytest.raises(ExtractionFailed, match=r"4 of 20 records \(20%\) failed extraction.*errors\.json"):
        run_build(tmp_path, server)
    report = json.loads((out / "errors.json").read_text())
    assert (report["records"], report["failed"], report["transient"]) == (20, 4, 3)
    rows = {row["record_id"]: row for row in report["errors"]}
    assert {rid: row["transient"] for rid, row in rows.items()} == {"r1": True, "r2": True, "r3": True, "r4": False}
    assert "InternalServerError" in rows["r1"]["error"] and rows["r4"]["error"].startswith("invalid answer")
    assert rows["r1"]["source"].endswith("reviews.jsonl:2")
    assert not (out / "taxonomy.json").exists(), "nothing is published from a failed extraction"
    with Store(out / "clado.db") as store:
        [run] = store.runs()
    assert run["status"] == "failed: ExtractionFailed" and report["run_id"] == run["id"]

    down["now"] = False  # the server is back: a plain build asks again r1..r3, not r4 (failed for good)
    mark = len(server.history)
    result = run_build(tmp_path, server)
    assert extraction_requests(server, mark) == sorted(TRANSIENT)
    assert list(result.summary["extraction_errors"]) == ["r4"] and result.summary["transient_errors"] == 0
    assert [row["record_id"] for row in json.loads((out / "errors.json").read_text())["errors"]] == ["r4"]
    assert (out / "taxonomy.json").exists()

    mark = len(server.history)
    run_build(tmp_path, server, retry_failed=True)  # asked: r4 too (the build cache is keyed by retry_failed)
    assert extraction_requests(server, mark) == [INVALID, INVALID]  # the answer and its re-ask


def cli_build(tmp_path, url: str, *extra: str):
    data = tmp_path / "in.jsonl"
    write_reviews(data, n=6)
    args = ["build", str(data), "--out", str(tmp_path / "out"), "--llm-url", url, "--llm-model", "no-such-model"]
    started = time.monotonic()
    result = CliRunner().invoke(app, [*args, *extra])
    return result, time.monotonic() - started


def one_error(result, code: int) -> dict:
    """The run failed with `code`: on stderr one error line beside the progress lines, on stdout one JSON line;
    that line."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    [line] = result.stdout.splitlines()
    summary = json.loads(line)
    assert summary["ok"] is False and summary["exit_code"] == code
    messages = [line for line in result.stderr.splitlines() if not PROGRESS.match(line)]
    assert messages == [f"error: {summary['error']}"], result.stderr
    return summary


@pytest.mark.parametrize(("status", "hint"), [(401, "CLADO_LLM_API_KEY"), (404, "llm.model")])
def test_a_build_against_a_server_refusing_the_key_or_model_exits_2_at_once(tmp_path, status, hint):
    with StubServer.status_of(status, "refused by the test server") as server:
        result, seconds = cli_build(tmp_path, server.base_url)
    summary = one_error(result, 2)
    assert server.base_url in summary["error"] and f"HTTP {status}" in summary["error"] and hint in summary["error"]
    # 401 stops the json_schema probe; a 404 there may mean "no json_schema", so the requests in flight then
    # (at most max_concurrency) ask in json_object and get 404 too
    assert seconds < 10 and len(server.requests) <= (1 if status == 401 else 1 + Config().llm.max_concurrency)
    assert not (tmp_path / "out" / "taxonomy.json").exists()


def test_a_build_against_a_hung_server_exits_4_after_the_deadline_and_the_breaker(tmp_path):
    config = tmp_path / "clado.toml"
    config.write_text(
        '[llm]\ntimeout = 0.3\nmax_retries = 1\nbreaker_failures = 2\nmax_concurrency = 1\nschema_dialect = "json_object"\n'
    )
    with StubServer.hung() as server:
        result, seconds = cli_build(tmp_path, server.base_url, "-c", str(config))
    summary = one_error(result, 4)
    assert f"server at {server.base_url} failed 2 requests in a row" in summary["error"]
    assert "DeadlineExceeded" in summary["error"] and len(server.requests) <= 2 and seconds < 10


def test_a_build_whose_every_answer_is_unusable_exits_4_after_writing_its_error_report(tmp_path):
    with StubServer.answer("I am not JSON") as server:
        result, _ = cli_build(tmp_path, server.base_url)
    summary = one_error(result, 4)
    assert "6 of 6 records (100%) failed extraction" in summary["error"]
    report = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert report["failed"] == 6 and not any(row["transient"] for row in report["errors"])


def test_the_clado_command_exits_2_with_one_message_for_a_refused_key(tmp_path):
    """The installed command, in its own process: exit code, one line on stderr, the JSON line on stdout."""
    data = tmp_path / "in.jsonl"
    write_reviews(data, n=3)
    with StubServer.status_of(401, "invalid api key") as server:
        done = subprocess.run(
            [sys.executable, "-m", "clado.cli", "build", str(data), "--out", str(tmp_path / "out"),
             "--llm-url", server.base_url, "--llm-model", "m"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [f"error: {json.loads(done.stdout)['error']}"], done.stderr
    assert server.base_url in done.stderr and "HTTP 401" in done.stderr and len(server.requests) == 1


def test_a_build_with_a_few_transient_failures_is_not_replayed_from_the_build_cache(tmp_path):
    """Below the share the build succeeds; its transient failures keep the next plain build from reusing it."""
    write_reviews(tmp_path / "reviews.jsonl", n=20)
    down = {"now": True}

    def respond(body: dict):
        if extraction_of(body) == "(1)" and down["now"]:
            return httpx.Response(503, json={"error": "busy"})
        return responder(body)

    server = FakeServer(responder=respond)
    first = run_build(tmp_path, server)
    assert list(first.summary["extraction_errors"]) == ["r1"] and first.summary["transient_errors"] == 1
    down["now"] = False
    mark = len(server.history)
    second = run_build(tmp_path, server)
    assert extraction_requests(server, mark) == ["(1)"] and not second.summary.get("cached")
    assert not second.summary["extraction_errors"] and not (tmp_path / "out" / "errors.json").exists()
