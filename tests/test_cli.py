"""The command line without an LLM: build --no-llm on the shipped examples, bad input, eval's JSON, config."""

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clado.cli import app
from clado.taxonomy.records import Taxonomy

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()
BUILD_STDERR: dict[Path, str] = {}  # the progress and report lines of each fixture build


@pytest.fixture(scope="module")
def no_llm_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("nollm")
    result = runner.invoke(app, ["build", str(EXAMPLES / "reviews.jsonl"), "--out", str(out), "--no-llm"])
    assert result.exit_code == 0, result.output
    BUILD_STDERR[out] = result.stderr
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_no_llm_build_writes_every_output(no_llm_build):
    out, summary = no_llm_build
    for name in ("taxonomy.json", "taxonomy.html", "report.md", "assignments.csv", "map.png", "clado.db"):
        assert (out / name).stat().st_size > 0, name
    body = json.loads((out / "taxonomy.json").read_text())
    tax = Taxonomy.model_validate(body | {"items": None})
    assert summary["ok"] and summary["clusters"] == len(tax.leaves()) >= 2
    assert tax.summary["duplicates"] == 2, "the two duplicate reviews in examples/ collapse and are counted"
    assert tax.summary["inputs"] == tax.summary["records"] + tax.summary["duplicates"]
    assigned = sum(n.size for n in tax.roots())
    assert assigned + sum(body["items"][m]["count"] for m in tax.unassigned_ids) == tax.summary["inputs"]
    assert tax.fingerprint["llm_model"] is None


def test_build_ends_with_the_top_level_topics_and_the_html_path(no_llm_build):
    out, _ = no_llm_build
    tax = Taxonomy.model_validate(json.loads((out / "taxonomy.json").read_text()) | {"items": None})
    lines = BUILD_STDERR[out].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("top-level topics"))
    roots = sorted(tax.roots(), key=lambda n: (-n.size, n.name))  # sizes count every row, the duplicates too
    assert lines[start].strip() == f"top-level topics ({len(roots)}):"
    for line, node in zip(lines[start + 1 :], roots):  # largest first, with its size and share
        assert line.split()[0] == f"{node.size:,}" and line.rstrip().endswith(node.name)
    assert any(line.split() == ["html", str(out / "taxonomy.html")] for line in lines)


def test_no_llm_build_is_deterministic(no_llm_build, tmp_path):
    out, _ = no_llm_build
    result = runner.invoke(app, ["build", str(EXAMPLES / "reviews.jsonl"), "--out", str(tmp_path), "--no-llm"])
    assert result.exit_code == 0
    first = {n["id"] for n in json.loads((out / "taxonomy.json").read_text())["nodes"]}
    second = {n["id"] for n in json.loads((tmp_path / "taxonomy.json").read_text())["nodes"]}
    assert first == second


def test_malformed_input_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken}\n')
    result = runner.invoke(app, ["build", str(bad), "--out", str(tmp_path / "o"), "--no-llm"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output


def test_eval_writes_the_documented_json(tmp_path):
    data = tmp_path / "labelled.jsonl"
    topics = {
        "card": ["my card was declined", "card payment failed", "card not working"],
        "refund": ["I want my money back", "refund has not arrived", "how do I get a refund"],
    }
    with data.open("w") as handle:
        for i in range(30):
            label = "card" if i % 2 else "refund"
            handle.write(
                json.dumps({"id": str(i), "text": topics[label][i % 3] + f" #{i}", "label": label, "split": "test"})
                + "\n"
            )
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["eval", str(data), "--labels", "label", "--split", "test", "--no-llm", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"dataset", "split", "n", "mode", "models", "leaf", "top", "baselines", "seconds"}
    assert set(report["leaf"]) >= {"nmi", "ari", "acc", "n_clusters", "n_gold", "unassigned_share", "purity"}
    assert report["n"] == 30 and report["mode"] == "no-llm" and report["top"] is None
    assert set(report["baselines"]) == {"kmeans_true_k", "hdbscan_raw", "bertopic_recipe"}
    assert "clado leaf" in result.stdout


def test_config_prints_valid_toml():
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout)["cluster"]["method"] == "auto"
