"""Progress on long stages: a line per 10% when stderr is not a terminal, nothing with CLADO_QUIET=1."""

import re

from clado.progress import progress_bar
from tests.test_build import fake_build


def test_log_lines_every_tenth_and_at_the_end(capsys, monkeypatch):
    monkeypatch.delenv("CLADO_QUIET", raising=False)
    with progress_bar("work", total=25) as advance:
        for _ in range(25):
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"work: {n}/25" for n in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)
    ]
    # Every line but the last estimates the time left; the last gives the total time.
    assert all(re.search(r"\(\d+ s, about \d+ s left\)$", line) for line in lines[:-1])
    assert re.fullmatch(r"work: 25/25 \(\d+ s\)", lines[-1])


def test_quiet_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv("CLADO_QUIET", "1")
    with progress_bar("work", total=5) as advance:
        advance(5)
    assert capsys.readouterr().err == ""


def test_a_build_reports_extraction_naming_and_every_hierarchy_level(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLADO_QUIET", raising=False)
    result = fake_build(tmp_path, n=24)
    err = capsys.readouterr().err
    assert "extract issues: 24/24" in err
    assert f"name clusters: {len(result.taxonomy.leaves())}/{len(result.taxonomy.leaves())}" in err
    for level in range(1, result.taxonomy.depth):
        assert f"hierarchy level {level}: 3/3" in err
