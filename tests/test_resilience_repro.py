"""The same input, config, seed and LLM answers give identical leaf assignments, node IDs and names.

llama.cpp's server is not deterministic across runs at temperature 0 with a fixed seed: it reuses the KV cache
of the previous prompt's common prefix, so the same prompt can get a different answer after a different
request (seen here: one cluster description, hence a parent name). Reproducibility therefore rests on the
LLM cache in the store: a build given the same answers (another out dir holding only the first build's
answers, or the same out dir again) makes no LLM call and ends with the same tree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fault_proxy import FaultProxy
from tests.resilience_data import (
    cache_keys,
    cli_args,
    json_line,
    leaf_assignments,
    reference_build,
    replay_build,
    run_cli,
    tree_signature,
    write_config,
    write_sample,
)

pytestmark = pytest.mark.server


def node_names(out: Path) -> dict[str, str]:
    return {node["id"]: node["name"] for node in json.loads((out / "taxonomy.json").read_text())["nodes"]}


def assert_same_tree(out: Path, reference: Path) -> None:
    assert leaf_assignments(out) == leaf_assignments(reference)
    assert tree_signature(out) == tree_signature(reference)
    assert node_names(out) == node_names(reference)


def test_another_out_dir_with_the_same_answers_gives_the_same_tree(llm_server, tmp_path_factory):
    reference = reference_build(llm_server, tmp_path_factory)  # a CLI build in its own process and out dir
    workdir = tmp_path_factory.mktemp("repro")
    out = workdir / "out"
    summary = replay_build(reference.out, [write_sample(workdir / "sample.jsonl")], out, model=llm_server.model_name)
    assert summary["llm"]["calls"] == 0
    assert summary["llm"]["cache_hits"] == len(cache_keys(reference.out / "clado.db")), "every answer was used"
    assert_same_tree(out, reference.out)


def test_the_same_command_again_asks_nothing_and_gives_the_same_tree(llm_server, tmp_path_factory):
    reference = reference_build(llm_server, tmp_path_factory)
    workdir = tmp_path_factory.mktemp("again")
    out = workdir / "out"
    shutil.copytree(reference.out, out)
    sample, config = write_sample(workdir / "sample.jsonl"), write_config(workdir / "config.toml")
    with FaultProxy(llm_server.base_url) as proxy:
        done = run_cli(
            cli_args(
                [sample], out, "-c", str(config), "--llm-url", proxy.base_url, "--llm-model", llm_server.model_name
            )
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert proxy.requests == []
    assert json_line(done.stdout)["records"] == reference.summary["records"]
    assert_same_tree(out, reference.out)
