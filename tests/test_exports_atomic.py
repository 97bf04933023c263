"""Exports are replaced whole and only after the store commits the version they are labelled with."""

import json
import os
import re

import pytest

from clado.taxonomy import export
from clado.taxonomy.staging import staged_files
from clado.taxonomy.store import Store
from tests.test_build import fake_build

DATA_SCRIPT = re.compile(r'<script type="application/json" id="clado-data">(.*?)</script>', re.S)


def snapshot(out):
    """Every file in `out` but the store, by name."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith("clado.db")}


def crash(*args, **kwargs):
    raise RuntimeError("injected crash")


def test_a_failed_build_leaves_the_previous_exports_whole_and_a_second_build_is_labelled_2(tmp_path, monkeypatch):
    """A crash half-way through the exports or between exports and commit changes no file and leaves no
    temporary one; the next build's exports carry the store's version 2 (one record more than the first build,
    so that the build cache cannot answer it)."""
    out = tmp_path / "out"
    fake_build(tmp_path, n=24)
    before = snapshot(out)
    assert set(before) == {"taxonomy.json", "taxonomy.html", "report.md", "assignments.csv"}
    for target, name in ((export, "write_html"), (Store, "put_taxonomy")):
        with monkeypatch.context() as patch:
            patch.setattr(target, name, crash)
            with pytest.raises(RuntimeError, match="injected crash"):
                fake_build(tmp_path, n=25)
        assert snapshot(out) == before, name
    result = fake_build(tmp_path, n=25)
    with Store(out / "clado.db") as store:
        assert [v["version"] for v in store.versions()] == [1, 2] and result.taxonomy.version == 2
    assert json.loads((out / "taxonomy.json").read_text())["version"] == 2
    (page,) = DATA_SCRIPT.findall((out / "taxonomy.html").read_text())
    assert json.loads(page)["version"] == 2


def test_files_of_a_dead_writer_are_cleared_and_a_live_ones_kept(tmp_path):
    dead, live = tmp_path / ".taxonomy.html.999999999-0123456789ab.tmp", tmp_path / ".report.md.1-0123456789ab.tmp"
    dead.write_text("half a page")
    live.write_text("in progress")
    with staged_files(tmp_path) as staged:
        staged.path("report.md").write_text("whole")
        assert os.listdir(tmp_path).count("report.md") == 0
    assert sorted(os.listdir(tmp_path)) == [live.name, "report.md"] and (tmp_path / "report.md").read_text() == "whole"
