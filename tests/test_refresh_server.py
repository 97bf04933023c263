"""Refresh against the real llama.cpp server (small model) and MiniLM on STAR dialogues ordered by start time:
build on the first 70 % of a small sample, refresh with the rest plus a few dialogues seen before. Dialogues are
cut to their first turns (what is tested is the refresh, not long inputs; that keeps the test a few minutes)."""

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from clado.agents.facets import FACET_SETS
from clado.backends.embed import EmbedSettings, make_embedder
from clado.backends.llm import LLMClient, LLMSettings
from clado.config import Config, FacetSettings
from clado.pipeline.build import build_async
from clado.pipeline.refresh import LazyLLM, refresh_async
from clado.taxonomy.store import Store

pytestmark = pytest.mark.server

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "star_dialogues.jsonl"
SAMPLE, BUILD, SEEN_AGAIN, TURNS = 30, 21, 3, 6
REQUEST = FACET_SETS["conversations"][0]


def ordered_sample(n):
    """`n` dialogues (first `TURNS` messages) spread evenly over the file's time range, oldest first, without the gold labels."""
    rows = sorted((json.loads(line) for line in DATA.open()), key=lambda r: (r["started_at"], r["id"]))
    step = len(rows) // n
    return [
        {"id": r["id"], "messages": r["messages"][:TURNS], "created_at": r["started_at"], "user_id": r["user_id"]}
        for r in rows[::step][:n]
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Recorder:
    """Keeps the body of every request the LLM client sends."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, request):
        self.bodies.append(json.loads(request.content))

    def facet_prompts(self):
        return [b["messages"][-1]["content"] for b in self.bodies if REQUEST.question in b["messages"][-1]["content"]]


@asynccontextmanager
async def recording_client(settings, store, recorder):
    client = LLMClient(settings, store=store, http_client=httpx.AsyncClient(event_hooks={"request": [recorder]}))
    try:
        yield client
    finally:
        await client.aclose()


def quoted(prompt):
    """The record text a facet prompt quotes between its <data> delimiters."""
    return prompt.split("<data>\n", 1)[1].split("\n</data>", 1)[0]


def transcript(row):
    return "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])


def test_refresh_on_time_ordered_dialogues(llm_server, tmp_path):
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing (the shared evaluation data)")
    rows = ordered_sample(SAMPLE)
    old_rows, new_rows = rows[:BUILD], rows[BUILD:]
    build_file = write_jsonl(tmp_path / "first.jsonl", old_rows)
    refresh_file = write_jsonl(tmp_path / "rest.jsonl", old_rows[:SEEN_AGAIN] + new_rows)
    settings = LLMSettings(
        base_url=llm_server.base_url, model=llm_server.model_name, schema_dialect="json_object", max_concurrency=2
    )
    config = Config(llm=settings, facets=FacetSettings(custom=[REQUEST], max_failed_share=0.5))  # 0.5B: tolerate a few
    config.output.map = False
    embedder = make_embedder(EmbedSettings())
    out = tmp_path / "out"
    built_calls, refresh_calls = Recorder(), Recorder()

    async def run():
        with Store(out / "clado.db") as store:
            async with recording_client(settings, store, built_calls) as llm:
                built = await build_async([build_file], out=out, config=config, store=store, embedder=embedder, llm=llm)
            lazy = LazyLLM(lambda: recording_client(settings, store, refresh_calls))
            try:
                refreshed = await refresh_async(
                    [refresh_file],
                    out=out,
                    config=config,
                    store=store,
                    embedder=embedder,
                    llm=lazy,
                )
            finally:
                await lazy.aclose()
            return built, refreshed

    built, refreshed = asyncio.run(run())
    before, after, s = built.taxonomy, refreshed.taxonomy, refreshed.summary

    # only the new records were extracted, each once
    assert (s["records_known"], s["records_new"]) == (SEEN_AGAIN, len(new_rows))
    extracted = sorted(quoted(p) for p in set(refresh_calls.facet_prompts()))  # a retried request repeats its prompt
    assert extracted == sorted(transcript(r) for r in new_rows)
    assert s["llm"]["calls"] == len(refresh_calls.bodies) < len(built_calls.bodies)

    # existing node IDs, names and members unchanged
    index = after.by_id()
    for node in before.nodes:
        assert node.id in index and index[node.id].name == node.name
        assert set(node.member_ids) <= set(index[node.id].member_ids)

    # the diff agrees with the counts
    diff = refreshed.diff
    leaf_growth = sum(c.delta for c in diff.grown if c.level == 0)
    added = sum(n.size for n in diff.added if n.level == 0)
    assert leaf_growth == s["assigned_existing"] + s["joined_existing"]
    assert diff.items["new"] - diff.items["old"] == leaf_growth + added
    assert s["items_new"] == s["assigned_existing"] + s["pooled_new"]
    assert diff.unassigned["new"] == len(after.unassigned_ids)
    assert not (diff.removed or diff.merged or diff.shrunk)
    assert (out / "diff.md").exists() and (out / "taxonomy.html").exists()
