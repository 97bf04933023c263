"""The LLM client: validation with one re-ask, retries, dialect fallback, cache, logprobs."""

import asyncio

import httpx
import pytest
from pydantic import BaseModel

from clado.backends.llm import InvalidOutput
from clado.taxonomy.store import Store
from tests.fakes import FakeServer, completion, fake_llm


class Pair(BaseModel):
    aspect: str
    issue: str


async def test_valid_answer_is_parsed_and_cached(tmp_path):
    store = Store(tmp_path / "c.db")
    server = FakeServer([{"aspect": "battery", "issue": "drains fast"}])
    llm = fake_llm(server, store=store)
    first = await llm.structured("review: battery dies", Pair)
    second = await llm.structured("review: battery dies", Pair)
    assert first == second == Pair(aspect="battery", issue="drains fast")
    assert len(server.history) == 1 and llm.stats.cache_hits == 1
    assert server.history[0]["temperature"] == 0
    assert server.history[0]["response_format"]["type"] == "json_object"
    assert server.history[0]["response_format"]["schema"]["required"] == ["aspect", "issue"]


async def test_cache_key_changes_with_prompt_and_model(tmp_path):
    store = Store(tmp_path / "c.db")
    server = FakeServer([{"aspect": "a", "issue": "b"}] * 3)
    llm = fake_llm(server, store=store)
    await llm.structured("one", Pair)
    await llm.structured("two", Pair)
    other = fake_llm(server, store=store, model="other-model")
    await other.structured("one", Pair)
    assert len(server.history) == 3


async def test_invalid_answer_is_reasked_once_with_the_error():
    server = FakeServer(["not json at all", {"aspect": "screen", "issue": "cracked"}])
    llm = fake_llm(server)
    answer = await llm.structured("x", Pair)
    assert answer.issue == "cracked"
    assert llm.stats.reasks == 1
    reask = server.history[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "not json at all"}
    assert "could not be used" in reask[-1]["content"]


async def test_invalid_twice_raises_invalid_output():
    server = FakeServer([{"aspect": "only"}, {"issue": "only"}])
    llm = fake_llm(server)
    with pytest.raises(InvalidOutput, match="Pair"):
        await llm.structured("x", Pair)
    assert llm.stats.invalid == 1


async def test_an_answer_invalid_after_the_reask_is_cached_as_such(tmp_path):
    store = Store(tmp_path / "c.db")
    server = FakeServer([{"aspect": "only"}, {"issue": "only"}, {"aspect": "a", "issue": "b"}])
    llm = fake_llm(server, store=store)
    for _ in range(2):  # the second ask is answered from the cache: same failure, no request
        with pytest.raises(InvalidOutput, match="Pair") as failure:
            await llm.structured("x", Pair)
        assert failure.value.raw == '{"issue": "only"}'
    assert len(server.history) == 2 and llm.stats.cache_hits == 1
    # A caller that keeps its own failure record asks again, and the valid answer replaces the failure.
    assert await llm.structured("x", Pair, reuse_invalid=False) == Pair(aspect="a", issue="b")
    assert await llm.structured("x", Pair) == Pair(aspect="a", issue="b")
    assert len(server.history) == 3


async def test_server_errors_and_malformed_bodies_are_retried():
    server = FakeServer(
        [
            httpx.Response(500, json={"error": "boom"}),
            httpx.Response(200, content=b"{not json"),
            httpx.ConnectError("refused"),
            {"aspect": "fit", "issue": "too small"},
        ]
    )
    llm = fake_llm(server)
    answer = await llm.structured("x", Pair)
    assert answer.aspect == "fit"
    assert llm.stats.retries == 3 and llm.stats.failures == 0


async def test_retries_are_bounded_and_counted():
    server = FakeServer([httpx.Response(503, json={"error": "down"})] * 10)
    llm = fake_llm(server, max_retries=2)
    with pytest.raises(Exception):
        await llm.structured("x", Pair)
    assert len(server.history) == 3 and llm.stats.failures == 1


async def test_client_errors_are_not_retried():
    server = FakeServer([httpx.Response(401, json={"error": "no"})])
    llm = fake_llm(server)
    with pytest.raises(Exception):
        await llm.structured("x", Pair)
    assert len(server.history) == 1


async def test_auto_dialect_falls_back_to_json_object_and_sticks():
    server = FakeServer(
        [
            httpx.Response(500, json={"error": {"message": "Internal Server Error"}}),
            {"aspect": "a", "issue": "b"},
            {"aspect": "c", "issue": "d"},
        ]
    )
    llm = fake_llm(server, schema_dialect="auto")
    await llm.structured("one", Pair)
    await llm.structured("two", Pair)
    kinds = [body["response_format"]["type"] for body in server.history]
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert server.history[0]["response_format"]["json_schema"]["schema"]["title"] == "Pair"


async def test_auto_dialect_keeps_json_schema_when_accepted():
    server = FakeServer([{"aspect": "a", "issue": "b"}, {"aspect": "c", "issue": "d"}])
    llm = fake_llm(server, schema_dialect="auto")
    await llm.structured("one", Pair)
    await llm.structured("two", Pair)
    assert [b["response_format"]["type"] for b in server.history] == ["json_schema", "json_schema"]


async def test_top_logprobs_are_read_and_cached(tmp_path):
    store = Store(tmp_path / "c.db")
    response = httpx.Response(200, json=completion("yes", logprobs={"yes": -0.1, "no": -2.5}))
    server = FakeServer([response])
    llm = fake_llm(server, store=store)
    top = await llm.top_logprobs("same?")
    again = await llm.top_logprobs("same?")
    assert top == again == {"yes": -0.1, "no": -2.5}
    assert server.history[0]["logprobs"] is True and server.history[0]["max_tokens"] == 1
    assert len(server.history) == 1


async def test_concurrency_is_bounded():
    import asyncio

    in_flight = 0
    peak = 0

    async def slow_handler(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200, json=completion('{"aspect": "a", "issue": "b"}'))

    from clado.backends.llm import LLMClient, LLMSettings

    settings = LLMSettings(
        base_url="http://fake.invalid/v1", model="m", schema_dialect="json_object", max_concurrency=3
    )
    llm = LLMClient(settings, http_client=httpx.AsyncClient(transport=httpx.MockTransport(slow_handler)))
    await asyncio.gather(*(llm.structured(f"p{i}", Pair) for i in range(12)))
    assert peak == 3


async def test_calls_and_tokens_are_split_by_kind():
    """Each call kind counts its requests and the server's tokens; a re-ask counts as `<kind>_reask`; the kinds add
    up to the totals; concurrent calls of different kinds do not mix."""
    server = FakeServer(responder=lambda body: {"aspect": "a", "issue": "b"})
    llm = fake_llm(server)
    await asyncio.gather(
        llm.structured("one", Pair, kind="facet_issues"),
        llm.structured("two", Pair, kind="facet_issues"),
        llm.structured("three", Pair, kind="namer"),
        llm.structured("four", Pair),
    )
    bad = FakeServer(["not json", {"aspect": "a", "issue": "b"}])
    llm_bad = fake_llm(bad)
    await llm_bad.structured("x", Pair, kind="hierarchy_assign")
    per = {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5}
    assert llm.stats.by_kind == {"facet_issues": {k: 2 * v for k, v in per.items()}, "namer": per, "Pair": per}
    assert llm_bad.stats.by_kind == {"hierarchy_assign": per, "hierarchy_assign_reask": per}
    for stats in (llm.stats, llm_bad.stats):
        for key in ("calls", "prompt_tokens", "completion_tokens"):
            assert sum(k[key] for k in stats.by_kind.values()) == getattr(stats, key)
