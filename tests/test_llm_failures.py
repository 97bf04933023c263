"""Failures that stop the LLM client (issue #18 points 3 and 4): a refused key or model and no server abort at once
with one message naming the server; a total per-request deadline; a circuit breaker over the whole fleet;
settings validated. Real HTTP servers on 127.0.0.1 (tests/stub_servers.py) unless the fleet needs fakes."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from clado.backends.llm import LLMClient, LLMSettings
from clado.backends.llm_errors import DeadlineExceeded, LLMConfigError, LLMUnavailable
from clado.config import Config, ConfigError
from tests.fakes import FakeServer, fake_llm
from tests.stub_servers import StubServer, closed_port_url
from tests.test_llm_fleet import echo_server, fleet


class Echo(BaseModel):
    answer: str


def client(base_url: str | list[str], **settings) -> LLMClient:
    base = {"base_url": base_url, "model": "no-such-model", "schema_dialect": "json_object", "max_retries": 3}
    return LLMClient(LLMSettings(**(base | settings)))


@pytest.mark.parametrize(
    ("status", "dialect", "requests", "hint"),
    [
        (401, "auto", 1, "CLADO_LLM_API_KEY"),
        (403, "json_object", 1, "CLADO_LLM_API_KEY"),
        (404, "auto", 2, "'no-such-model'"),  # the json_schema probe's 404 may be a refusal: json_object is tried
    ],
)
async def test_a_refused_key_or_model_stops_every_call_at_once(status, dialect, requests, hint):
    with StubServer.status_of(status, "server says no") as server:
        llm = client(server.base_url, schema_dialect=dialect)
        started = time.monotonic()
        with pytest.raises(LLMConfigError, match=f"{server.base_url}.*HTTP {status}") as error:
            await llm.structured("q", Echo)
        assert hint in str(error.value) and "server says no" in str(error.value)
        assert len(server.requests) == requests and llm.stats.retries == 0
        with pytest.raises(LLMConfigError, match=server.base_url):
            await llm.structured("another question", Echo)
        assert len(server.requests) == requests, "a stopped client sends nothing more"
        assert time.monotonic() - started < 5
        await llm.aclose()


async def test_no_server_at_the_url_stops_at_once():
    url = closed_port_url()
    llm = client(url)
    started = time.monotonic()
    with pytest.raises(LLMConfigError, match=f"cannot connect to the LLM server at {url}"):
        await llm.structured("q", Echo)
    assert llm.stats.retries == 0 and time.monotonic() - started < 2


async def test_a_fleet_member_refusing_connections_is_left_out_not_fatal():
    with StubServer.answer('{"answer": "fine"}') as up:
        llm = client([closed_port_url(), up.base_url])
        answers = [await llm.structured(f"q{i}", Echo) for i in range(3)]
        assert [a.answer for a in answers] == ["fine"] * 3 and len(up.requests) == 3
        assert llm.pool.endpoints[0].refused and llm.stats.retries == 1
        await llm.aclose()


async def test_a_refused_connection_after_answers_is_retried():
    server = FakeServer([{"answer": "one"}, httpx.ConnectError("refused"), {"answer": "two"}])
    llm = fake_llm(server)
    assert (await llm.structured("a", Echo)).answer == "one"
    assert (await llm.structured("b", Echo)).answer == "two" and llm.stats.retries == 1


async def test_the_timeout_is_a_deadline_for_the_whole_answer_not_per_read():
    """The body arrives one byte every 50 ms (over 10 s in all): every read is quick, the request is not."""
    with StubServer.answer('{"answer": "slow"}', interval=0.05) as server:
        llm = client(server.base_url, timeout=0.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=f"{server.base_url} within 0.5 s"):
            await llm.structured("q", Echo)
        assert time.monotonic() - started < 5
        await llm.aclose()


async def test_a_hung_server_hits_the_deadline_then_the_breaker():
    with StubServer.hung() as server:
        llm = client(server.base_url, timeout=0.3, max_retries=5, breaker_failures=3)
        started = time.monotonic()
        with pytest.raises(LLMUnavailable, match=f"server at {server.base_url} failed 3 requests in a row") as error:
            await llm.structured("q", Echo)
        assert "DeadlineExceeded" in str(error.value)
        # 3 x 0.3 s + backoff 0.5 + 1 s (the stub may not have read the last request before it was abandoned)
        assert llm.stats.calls == 3 and len(server.requests) <= 3 and time.monotonic() - started < 10
        again = time.monotonic()
        with pytest.raises(LLMUnavailable):
            await llm.structured("another question", Echo)
        assert llm.stats.calls == 3 and time.monotonic() - again < 0.5
        await llm.aclose()


async def test_the_breaker_counts_failures_of_the_whole_fleet_and_an_answer_resets_it():
    failing = {h: FakeServer(responder=lambda body: httpx.Response(500, json={})) for h in ("a.invalid", "b.invalid")}
    llm = fleet(failing, max_retries=1, breaker_failures=3)
    with pytest.raises(Exception, match="500"):
        await llm.structured("x", Echo)  # a, then b: two failures in a row
    with pytest.raises(LLMUnavailable, match="servers at http://a.invalid/v1, http://b.invalid/v1 failed 3"):
        await llm.structured("y", Echo)
    assert sum(len(s.history) for s in failing.values()) == 3

    flaky = FakeServer([httpx.Response(500, json={}), httpx.Response(500, json={}), {"answer": "ok"}])
    flaky.responder = lambda body: httpx.Response(500, json={})
    llm = fake_llm(flaky, max_retries=1, breaker_failures=3)
    with pytest.raises(Exception, match="500"):
        await llm.structured("x", Echo)
    assert (await llm.structured("y", Echo)).answer == "ok"  # resets the count
    with pytest.raises(Exception, match="500"):
        await llm.structured("z", Echo)  # two more failures: still below 3 in a row
    assert llm.breaker.error is None


async def test_the_fleet_still_routes_around_one_failing_endpoint():
    down = FakeServer(responder=lambda body: httpx.Response(503, json={}))
    llm = fleet({"a.invalid": down, "b.invalid": echo_server()}, breaker_failures=2)
    for i in range(5):
        assert (await llm.structured(f"q{i}", Echo)).answer == f"q{i}"
    assert llm.breaker.error is None and len(down.history) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"max_concurrency": 0},
        {"timeout": 0},
        {"timeout": -1},
        {"max_retries": -1},
        {"max_retries": 100},
        {"breaker_failures": 0},
        {"endpoint_cooldown": 0},
        {"base_url": []},
        {"base_url": "localhost:8000/v1"},
        {"base_url": ["http://a/v1", "gpu-b:8000"]},
    ],
)
def test_llm_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValidationError, match=next(iter(bad))):
        LLMSettings(**bad)


def test_a_zero_concurrency_in_the_config_file_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "clado.toml"
    path.write_text("[llm]\nmax_concurrency = 0\n")
    with pytest.raises(
        ConfigError, match=r"clado\.toml: llm\.max_concurrency \(line 2\): Input should be greater than or eq"
    ):
        Config.load(path)
    with pytest.raises(ConfigError, match=r"command line: llm\.base_url: .*not an http"):
        Config().with_overrides(**{"llm.base_url": "gpu-box:8000"})
