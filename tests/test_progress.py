"""Progress on long stages: a line per 10% when stderr is not a terminal, nothing with CLADO_QUIET=1."""

import asyncio

from clado.config import Config
from clado.pipeline.build import build_async
from clado.pipeline.progress import progress_bar
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm
from tests.test_build import responder, write_reviews


def test_log_lines_every_tenth_and_at_the_end(capsys, monkeypatch):
    monkeypatch.delenv("CLADO_QUIET", raising=False)
    with progress_bar("work", total=25) as advance:
        for _ in range(25):
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"work: {n}/25" for n in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)]


def test_quiet_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv("CLADO_QUIET", "1")
    with progress_bar("work", total=5) as advance:
        advance(5)
    assert capsys.readouterr().err == ""


def test_a_build_reports_extraction_naming_and_every_hierarchy_level(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLADO_QUIET", raising=False)
    data = tmp_path / "reviews.jsonl"
    write_reviews(data, n=24)
    config = Config()
    config.output.map = False

    async def run():
        with Store(tmp_path / "out" / "clado.db") as store:
            llm = fake_llm(FakeServer(responder=responder), store=store)
            return await build_async([data], out=tmp_path / "out", config=config, store=store, embedder=FakeEmbedder(), llm=llm)

    result = asyncio.run(run())
    err = capsys.readouterr().err
    assert "extract issues: 24/24" in err
    assert f"name clusters: {len(result.taxonomy.leaves())}/{len(result.taxonomy.leaves())}" in err
    for level in range(1, result.taxonomy.depth):
        assert f"hierarchy level {level}: 3/3" in err
