"""A fleet of LLM endpoints: least outstanding requests, a failing endpoint left out and brought back.

The unit tests route two fake servers by host; the server test runs two real llama.cpp servers (the 0.5B
model) and kills one mid-run.
"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from pydantic import BaseModel

from clado.backends.llm import LLMClient, LLMSettings, endpoint_urls
from clado.taxonomy.store import Store
from tests.fakes import FakeServer


class Echo(BaseModel):
    answer: str


def fleet(servers: dict[str, FakeServer], *, store=None, **settings) -> LLMClient:
    """An LLMClient over one fake server per host."""

    async def route(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # a request takes a while, so several are in flight at once
        return servers[request.url.host].handle(request)

    urls = [f"http://{host}/v1" for host in servers]
    base = {"base_url": urls, "model": "fake-model", "schema_dialect": "json_object", "max_retries": 3}
    transport = httpx.MockTransport(route)
    return LLMClient(LLMSettings(**(base | settings)), store=store, http_client=httpx.AsyncClient(transport=transport))


def echo_server() -> FakeServer:
    return FakeServer(responder=lambda body: {"answer": body["messages"][-1]["content"]})


def test_base_url_takes_one_url_or_a_list():
    assert endpoint_urls("http://a/v1") == ["http://a/v1"]
    assert endpoint_urls(["http://a/v1", "http://b/v1"]) == ["http://a/v1", "http://b/v1"]
    assert LLMSettings(base_url=["http://a/v1", "http://b/v1"]).base_url == ["http://a/v1", "http://b/v1"]


async def test_requests_spread_over_the_endpoints_by_requests_in_flight():
    servers = {"a.invalid": echo_server(), "b.invalid": echo_server()}
    llm = fleet(servers, max_concurrency=2)
    answers = await asyncio.gather(*(llm.structured(f"q{i}", Echo) for i in range(12)))
    assert [a.answer for a in answers] == [f"q{i}" for i in range(12)]
    # Four in flight at once over two endpoints: least-outstanding sends every other request to b.
    assert len(servers["a.invalid"].history) == len(servers["b.invalid"].history) == 6
    assert sum(len(s.history) for s in servers.values()) == 12


async def test_a_failing_endpoint_is_left_out_then_brought_back():
    clock = [1000.0]
    down = FakeServer(responder=lambda body: httpx.Response(503, json={"error": "down"}))
    servers = {"a.invalid": down, "b.invalid": echo_server()}
    llm = fleet(servers, endpoint_cooldown=30)
    llm.pool.clock = lambda: clock[0]
    first = await llm.structured("one", Echo)  # a first, fails with 503, retried on b
    assert first.answer == "one" and len(down.history) == 1 and llm.stats.retries == 1
    for i in range(3):
        await llm.structured(f"more {i}", Echo)
    assert len(down.history) == 1  # left out during the cooldown
    servers["a.invalid"] = echo_server()
    clock[0] += 31
    await llm.structured("back", Echo)
    assert len(servers["a.invalid"].history) == 1  # after the cooldown it is tried again, and answers


async def test_all_endpoints_down_is_one_failure_of_the_request():
    failing = {h: FakeServer(responder=lambda body: httpx.Response(500, json={})) for h in ("a.invalid", "b.invalid")}
    llm = fleet(failing, max_retries=2, endpoint_cooldown=30)
    with pytest.raises(Exception, match="500"):
        await llm.structured("x", Echo)
    assert llm.stats.failures == 1 and sum(len(s.history) for s in failing.values()) == 3


@pytest.mark.server
@pytest.mark.slow
async def test_two_real_servers_one_killed_mid_run_loses_nothing_and_repeats_nothing(llm_server, tmp_path):
    """Two llama.cpp servers (the session's and a second one); the second is killed while requests run.

    Every prompt is answered, every answer is cached once, and a second pass sends no request at all.
    """
    from clado.backends.local_server import LocalServer

    second = LocalServer(llm_server.model_path, log_path=tmp_path / "second.log").start()
    try:
        store = Store(tmp_path / "c.db")
        settings = LLMSettings(
            base_url=[llm_server.base_url, second.base_url], model=llm_server.model_name, max_concurrency=2,
            schema_dialect="json_object", max_tokens=16, max_retries=4,
        )  # fmt: skip
        llm = LLMClient(settings, store=store)
        prompts = [f"Reply with the word number {i} as JSON answer." for i in range(16)]

        async def kill_when_busy() -> None:
            while llm.pool.endpoints[1].answered < 2:
                await asyncio.sleep(0.05)
            os.kill(second.process.pid, signal.SIGKILL)

        killer = asyncio.create_task(kill_when_busy())
        answers = await asyncio.gather(*(llm.structured(p, Echo) for p in prompts))
        await killer
        assert len(answers) == len(prompts) and all(isinstance(a, Echo) for a in answers)
        first, killed = llm.pool.endpoints
        assert killed.answered >= 2 and killed.failures >= 1 and first.answered >= 1
        assert first.answered + killed.answered == len(prompts) + llm.stats.reasks  # each finished call once
        calls = llm.stats.calls
        again = await asyncio.gather(*(llm.structured(p, Echo) for p in prompts))
        assert again == answers and llm.stats.calls == calls  # all from the cache: no call repeated
        await llm.aclose()
    finally:
        second.stop()
