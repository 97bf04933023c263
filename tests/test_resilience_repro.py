"""The same input, config and seed give the same tree on two runs into two fresh out dirs (no shared LLM cache):
temperature 0 and a fixed seed on the real llama.cpp server make every answer, hence every node, the same.
"""

from __future__ import annotations

import json

import pytest

from clado.pipeline.build import build
from tests.resilience_data import leaf_assignments, reference_build, sample_config, tree_signature, write_sample

pytestmark = pytest.mark.server


def test_two_fresh_builds_give_identical_leaves_and_node_ids(llm_server, tmp_path_factory):
    reference = reference_build(llm_server, tmp_path_factory)  # a CLI build in its own out dir
    workdir = tmp_path_factory.mktemp("repro")
    out = workdir / "out"
    config = sample_config(base_url=llm_server.base_url, model=llm_server.model_name)
    build([write_sample(workdir / "sample.jsonl")], out=out, config=config)

    assert leaf_assignments(out) == leaf_assignments(reference.out)
    assert tree_signature(out) == tree_signature(reference.out)
    assert node_names(out) == node_names(reference.out)


def node_names(out) -> dict[str, str]:
    return {node["id"]: node["name"] for node in json.loads((out / "taxonomy.json").read_text())["nodes"]}
