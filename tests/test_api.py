"""The Python API (`clado.build`, `refresh`, `classify`, `evaluate`, `load`) does what its command does, with the
fake LLM and embedder; `import clado` stays cheap."""

import json
import pydoc
import shutil
import subprocess
import sys
from contextlib import asynccontextmanager

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import clado
from clado.backends import embed as embed_module
from clado.cli import app
from clado.eval import evaluate as evaluate_module
from clado.eval.metrics import score_labels
from clado.pipeline import build as build_module
from clado.pipeline import classify as classify_module
from clado.pipeline import refresh as refresh_module
from clado.serve.app import RoutingService, create_app
from clado.serve.settings import ServeSettings
from clado.taxonomy.store import Store
from tests.fakes import FakeEmbedder, FakeServer, fake_llm
from tests.test_build import responder, write_reviews
from tests.test_evaluate import write_labelled
from tests.test_refresh import NEW_DAY, build_fake, write_jsonl
from tests.test_serve import topic_of, worded

API = ("build", "refresh", "classify", "evaluate", "load")
runner = CliRunner()


@pytest.fixture
def fakes(monkeypatch):
    """Every flow gets the fake embedder and an LLM client on a fake server (returned, to count its calls)."""
    server = FakeServer(responder=responder)

    @asynccontextmanager
    async def fake_client(settings, *, seed, store):
        client = fake_llm(server, store=store, seed=seed)
        try:
            yield client
        finally:
            await client.aclose()

    for module in (build_module, refresh_module, evaluate_module, embed_module, classify_module):
        monkeypatch.setattr(module, "make_embedder", lambda settings: FakeEmbedder())
    for module in (build_module, refresh_module, evaluate_module):
        monkeypatch.setattr(module, "llm_client", fake_client)
    return server


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_fake(tmp_path_factory.mktemp("api"))


def tree(out):
    """The nodes, unassigned ids and items of the taxonomy.json in `out` (what two equal builds share)."""
    body = json.loads((out / "taxonomy.json").read_text())
    return body["nodes"], body["unassigned_ids"], body["items"]


def test_import_is_cheap_and_help_lists_every_function_with_an_example():
    """`import clado` loads no numeric or model library and none of the flows."""
    code = "import json, sys; import clado; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    heavy = [m for m in loaded if m.split(".")[0] in {"numpy", "torch", "pydantic", "sklearn"} or m.startswith(
        ("clado.config", "clado.pipeline", "clado.taxonomy", "clado.serve")
    )]  # fmt: skip
    assert not heavy, heavy
    page = pydoc.render_doc(clado, renderer=pydoc.plaintext)
    for name in API:
        assert f"\n    {name}(" in page, name
        assert "Example:\n        >>> " in getattr(clado, name).__doc__, name
    assert set(API) <= set(clado.__all__)


def test_build_writes_what_clado_build_writes(fakes, tmp_path):
    data = tmp_path / "reviews.jsonl"
    write_reviews(data)
    config = tmp_path / "clado.toml"
    config.write_text('[output]\nmap = false\ntitle = "From the API"\n')
    result = clado.build(data, out=tmp_path / "api", config=config)
    cli = runner.invoke(app, ["build", str(data), "--out", str(tmp_path / "cli"), "--config", str(config)])
    assert cli.exit_code == 0, cli.output
    assert tree(tmp_path / "api") == tree(tmp_path / "cli")
    assert (tmp_path / "api" / "assignments.csv").read_text() == (tmp_path / "cli" / "assignments.csv").read_text()
    assert {p.name for p in (tmp_path / "api").iterdir()} == {p.name for p in (tmp_path / "cli").iterdir()}
    assert {path.parent for path in result.outputs.values()} == {tmp_path / "api"}
    assert "From the API" in (tmp_path / "api" / "report.md").read_text(), "the TOML config was read"
    assert not (tmp_path / "api" / "map.png").exists()
    assert result.taxonomy.fingerprint["llm_model"] == "fake-model" and fakes.history, "the LLM was used"
    assert {n["id"] for n in tree(tmp_path / "api")[0]} == {n.id for n in result.taxonomy.nodes}


def test_refresh_does_what_clado_refresh_does(fakes, built, tmp_path):
    for name in ("api", "cli"):
        shutil.copytree(built, tmp_path / name)
    new = write_jsonl(tmp_path / "day2.jsonl", NEW_DAY)
    result = clado.refresh([new], store=tmp_path / "api")
    cli = runner.invoke(app, ["refresh", str(new), "--store", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert tree(tmp_path / "api") == tree(tmp_path / "cli")
    for name in ("diff.json", "assignments.csv"):
        assert (tmp_path / "api" / name).read_text() == (tmp_path / "cli" / name).read_text(), name
    summary = json.loads(cli.stdout.splitlines()[-1])
    assert result.taxonomy.version == summary["version"] == 2
    assert result.summary["records_new"] == summary["records_new"] == len(NEW_DAY) - 6, "six rows were seen before"
    assert result.diff.counts() == summary["diff"]


def test_classify_answers_what_the_serve_api_answers(fakes, built):
    texts = [worded("battery", "battery drains fast"), "quantum zebra migration", worded("strap", "strap snapped off"),
             worded("delivery", "delivery took weeks")]  # fmt: skip
    hits = clado.classify(texts, store=built)
    with Store(built / "clado.db") as store:
        config = refresh_module.stored_config(store)
        service = RoutingService(store, embedder=FakeEmbedder(), settings=ServeSettings(), embed=config.embed)
        served = TestClient(create_app(service, token=None, settings=ServeSettings())).post(
            "/v1/classify", json={"texts": texts}
        )
    assert [h.model_dump() for h in hits] == served.json()["results"]
    battery, stranger, strap, _ = hits
    leaf = clado.load(built).by_id()[battery.path[-1].id]
    assert {topic_of(m) for m in leaf.member_ids} == {"battery"} and not battery.is_new
    assert stranger.is_new and strap.path[-1].id != battery.path[-1].id


def test_evaluate_reports_what_clado_eval_reports(fakes, tmp_path, monkeypatch):
    """Same report from both; the baselines (tested in test_baselines.py) are replaced by the gold labels themselves,
    which report what they were given."""
    data = tmp_path / "labelled.jsonl"
    write_labelled(data)

    def gold_baseline(X, gold, *, seed):
        return {"gold": score_labels(list(gold), gold) | {"rows": len(X), "seed": seed}}

    monkeypatch.setattr(evaluate_module, "run_baselines", gold_baseline)
    report = clado.evaluate(data, labels="label", parent_field="parent", no_llm=True, seed=3)
    cli = runner.invoke(
        app, ["eval", str(data), "--labels", "label", "--parent-field", "parent", "--no-llm", "--seed", "3",
              "--json", str(tmp_path / "report.json")],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    from_cli = json.loads((tmp_path / "report.json").read_text())
    for timed in (report, from_cli):
        timed.pop("seconds")
    assert report == from_cli
    assert report["n"] == 48 and report["mode"] == "no-llm" and report["top"] is not None
    assert report["baselines"]["gold"]["rows"] == 48 and report["baselines"]["gold"]["seed"] == 3
    assert not fakes.history, "--no-llm asks no LLM"


def test_load_returns_the_stored_versions_and_names_what_is_missing(fakes, built, tmp_path):
    with Store(built / "clado.db") as store:
        assert clado.load(built) == store.taxonomy()
    shutil.copytree(built, tmp_path / "out")
    clado.refresh([write_jsonl(tmp_path / "day2.jsonl", NEW_DAY)], store=tmp_path / "out")
    assert clado.load(tmp_path / "out").version == 2
    assert clado.load(tmp_path / "out", version=1) == clado.load(built)
    with pytest.raises(LookupError, match="no version 7"):
        clado.load(tmp_path / "out", version=7)
    with pytest.raises(FileNotFoundError, match="nowhere/clado.db not found"):
        clado.load(tmp_path / "nowhere")
