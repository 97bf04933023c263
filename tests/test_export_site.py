"""A large taxonomy's explorer: the examples split into per-topic files beside taxonomy.html, staged like every
export (one folder after a publish, none after a discard or a later single-page build)."""

import json
import re

import numpy as np
import pytest

from clado.config import Config
from clado.taxonomy.export import SITE_FILES, write_outputs
from clado.taxonomy.export_html import write_html
from clado.taxonomy.staging import staged_files
from tests.test_exports import sample_taxonomy


def page_json(path) -> dict:
    body = path.read_text()
    return json.loads(re.search(r'<script type="application/json" id="clado-data">(.*?)</script>', body, re.S)[1])


def chunk_entries(path) -> tuple[int, list]:
    match = re.fullmatch(r"cladoChunk\((\d+), (.*)\);\n", path.read_text(), re.S)
    assert match, path
    return int(match[1]), json.loads(match[2])


def test_examples_go_to_one_file_per_top_topic_and_each_node_names_its_own(tmp_path):
    taxonomy, items = sample_taxonomy()
    single = page_json(write_html(taxonomy, items, tmp_path / "one.html", title="t"))
    folder = tmp_path / SITE_FILES / "v"
    folder.mkdir(parents=True)
    split = page_json(write_html(taxonomy, items, tmp_path / "taxonomy.html", title="t", chunks_in=folder))
    assert split["examples"] is None and single["examples"]
    assert split["site"] == {"folder": f"{SITE_FILES}/v", "examples": len(single["examples"]), "chunks": 4}
    loaded: dict[int, dict] = {}
    for path in sorted(folder.iterdir()):
        k, entries = chunk_entries(path)
        assert path.name == f"chunk-{k}.js"
        for index, example in entries:
            assert single["examples"][index] == example and index not in loaded
            loaded[index] = k
    assert sorted(loaded) == list(range(len(single["examples"])))  # every example in exactly one file
    nodes = split["nodes"]
    for i, node in enumerate(nodes):
        root = i
        while nodes[root]["parent"] >= 0:
            root = nodes[root]["parent"]
        assert node["chunk"] == split["roots"].index(root)
        assert all(loaded[k] == node["chunk"] for k in node["examples"])
    assert all(loaded[k] == 3 for k in split["unassigned"]["examples"]) and split["unassigned"]["chunk"] == 3
    # Hostile text stays inside a JSON string of the script file.
    assert "</script>" not in "".join(p.read_text() for p in folder.iterdir())
    assert "script-src 'self' 'sha256-" in (tmp_path / "taxonomy.html").read_text()


def write(taxonomy, items, out, *, site_min_items: int):
    config = Config.model_validate({"output": {"map": False, "site_min_items": site_min_items}})
    with staged_files(out) as staged:
        return write_outputs(
            taxonomy, items, np.zeros((len(items), 4)), staged=staged, config=config, conversations=False
        )


def test_a_rebuild_replaces_the_folder_and_a_smaller_one_removes_it(tmp_path):
    taxonomy, items = sample_taxonomy()
    first = write(taxonomy, items, tmp_path, site_min_items=5)
    folders = list((tmp_path / SITE_FILES).iterdir())
    assert first["site"] == tmp_path / SITE_FILES and len(folders) == 1
    assert page_json(tmp_path / "taxonomy.html")["site"]["folder"] == f"{SITE_FILES}/{folders[0].name}"
    write(taxonomy, items, tmp_path, site_min_items=5)
    again = list((tmp_path / SITE_FILES).iterdir())
    assert len(again) == 1 and again != folders
    assert page_json(tmp_path / "taxonomy.html")["site"]["folder"] == f"{SITE_FILES}/{again[0].name}"
    assert "site" not in write(taxonomy, items, tmp_path, site_min_items=1000)
    assert not (tmp_path / SITE_FILES).exists() and page_json(tmp_path / "taxonomy.html")["examples"]


def test_a_failed_export_leaves_the_published_site_alone(tmp_path):
    taxonomy, items = sample_taxonomy()
    write(taxonomy, items, tmp_path, site_min_items=5)
    before = list((tmp_path / SITE_FILES).iterdir())
    with pytest.raises(RuntimeError), staged_files(tmp_path) as staged:
        staged.folder(SITE_FILES)
        raise RuntimeError("killed mid-export")
    assert list((tmp_path / SITE_FILES).iterdir()) == before
