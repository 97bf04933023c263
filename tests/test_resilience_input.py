"""Bad input through `clado build`: exit code 2 and `file:line: reason` on stderr, or with --skip-bad a report
and input = processed + duplicates + skipped; very long texts are truncated and counted.

The matrix runs the command in-process (typer's runner: same code, exit codes and stderr as the console
script, without re-importing torch for every case); the --skip-bad run is a real subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clado.cli import app
from clado.pipeline.build import build
from clado.taxonomy.store import Store
from tests.fault_proxy import FaultProxy
from tests.resilience_data import cli_args, json_line, last_summary, run_cli, sample_config

GOOD = [
    {"id": "g1", "text": "The battery died after two days."},
    {"id": "g2", "text": "The parcel arrived a week late."},
]


def jsonl(*rows: dict | str | bytes) -> bytes:
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    return b"".join(line + b"\n" for line in lines)


# name → (file name, content, extra CLI args, expected line or None, expected reason)
BAD_INPUTS = {
    "malformed_json": ("in.jsonl", jsonl(*GOOD, '{"id": "b1", "text": "cut off'), [], 3, "invalid JSON"),
    "empty_text": ("in.jsonl", jsonl(GOOD[0], {"id": "b1", "text": "   "}), [], 2, "field 'text' is empty"),
    "invalid_utf8": ("in.jsonl", jsonl(*GOOD, b'{"id": "b1", "text": "caf\xe9 au lait"}'), [], 3, "invalid utf-8: byte 0xe9"),
    "duplicate_id": ("in.jsonl", jsonl(*GOOD, {"id": "g1", "text": "Other text, same id."}), [], 3,
                     "duplicate id 'g1' with different content"),
    "missing_fields": ("in.jsonl", jsonl(GOOD[0], {"id": "b1", "body": "no text field"}), [], 2,
                       "missing 'text' or 'messages'"),
    "not_an_object": ("in.jsonl", jsonl(GOOD[0], "[1, 2]"), [], 2, "expected a JSON object, got array"),
    "empty_file": ("in.jsonl", b"", [], None, "no records in"),
    "csv_wrong_delimiter": ("in.csv", b"id;text\n1;The zip broke.\n2;Too small.\n", ["--config", "comma.toml"], 1,
                            "no 'text' column (read with delimiter ','"),
}  # fmt: skip


def clado(*args: str | Path) -> tuple[int, str, str]:
    """`clado …` in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stops_with_file_and_line(tmp_path: Path, case: str) -> None:
    name, content, extra, line, reason = BAD_INPUTS[case]
    # A long path with brackets: the message must survive line wrapping and console markup.
    folder = tmp_path / ("a-rather-long-folder-name-[v2]-" + "x" * 60)
    folder.mkdir()
    path = folder / name
    path.write_bytes(content)
    (tmp_path / "comma.toml").write_text('[ingest]\ncsv_delimiter = ","\n')
    extra = [str(tmp_path / a) if a.endswith(".toml") else a for a in extra]
    code, stdout, stderr = clado("build", path, "--out", tmp_path / "out", "--no-llm", *extra)
    assert code == 2, (stdout, stderr)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert where in stderr, stderr
    assert reason in stderr, stderr
    [line] = stdout.splitlines()  # one JSON line per run, as refresh and the other commands print
    assert json.loads(line) | {"error": ""} == {"ok": False, "command": "build", "exit_code": 2, "error": ""}
    assert not (tmp_path / "out" / "taxonomy.json").exists()


def test_skip_bad_reports_every_line_and_accounts_for_every_input(tmp_path: Path) -> None:
    """Good lines, every kind of bad line and an exact duplicate: input = processed + duplicates + skipped."""
    a = tmp_path / "a.jsonl"
    a.write_bytes(
        jsonl(
            *GOOD,
            '{"id": "b1", "text": "cut off',  # 3
            {"id": "b2", "text": ""},  # 4
            b'{"id": "b3", "text": "caf\xe9"}',  # 5
            {"id": "g1", "text": "Other text, same id."},  # 6
            {"id": "b5", "body": "no text"},  # 7
            {"id": "d1", "text": GOOD[0]["text"]},  # 8: same content as g1 → a duplicate, not an error
            {"id": "g3", "text": "Zipper broke on the first trip."},  # 9
        )
    )
    b = tmp_path / "b.jsonl"
    b.write_bytes(b"")
    out = tmp_path / "out"
    done = run_cli(cli_args([a, b], out, "--no-llm", "--skip-bad"))
    assert done.returncode == 0, done.stderr[-3000:]
    line = json_line(done.stdout)
    summary = last_summary(out)
    assert line["records"] == summary["records"] == 3
    assert (line["inputs"], line["duplicates"], line["skipped"]) == (9, 1, 5)
    assert summary["inputs"] == summary["records"] + summary["duplicates"] + len(summary["skipped"])
    skipped = {(s["file"], s["line"]): s["reason"] for s in summary["skipped"]}
    assert sorted(line for _, line in skipped) == [3, 4, 5, 6, 7]
    for (file, number), reason in skipped.items():
        assert f"skipped {file}:{number}: {reason}" in " ".join(done.stderr.split()), done.stderr
    with Store(out / "clado.db") as store:
        assert sorted(r.id for r in store.records()) == ["g1", "g2", "g3"]
        assert next(r for r in store.records() if r.id == "g1").repeats[0].id == "d1"


def test_one_megabyte_text_is_truncated_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    huge = ("The strap broke again and support never answered my emails. " * 17000)[:1_000_000]
    path.write_bytes(jsonl(*GOOD, {"id": "huge", "text": huge}))
    code, stdout, stderr = clado("build", path, "--out", tmp_path / "out", "--no-llm")
    assert code == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["truncated_input"] == 1
    with Store(tmp_path / "out" / "clado.db") as store:
        record = next(r for r in store.records() if r.id == "huge")
    assert len(record.text) == 20000 and record.metadata["truncated_from_chars"] == 1_000_000


@pytest.mark.server
def test_long_text_reaches_the_model_cut_to_its_context(llm_server, tmp_path: Path) -> None:
    """The 1 MB text is cut to the configured context (head and tail kept) before it is sent, and counted once."""
    path = tmp_path / "in.jsonl"
    huge = "START " + ("The strap broke again and support never answered my emails. " * 17000)[:1_000_000] + " END"
    path.write_bytes(jsonl(*GOOD, {"id": "huge", "text": huge}))
    n_ctx = 2048
    with FaultProxy(llm_server.base_url) as proxy:
        config = sample_config(base_url=proxy.base_url, model=llm_server.model_name, n_ctx=n_ctx)
        result = build([path], out=tmp_path / "out", config=config)
    assert result.summary["truncated_input"] == 1 and not result.summary["extraction_errors"]
    facet_requests = [r for r in proxy.requests if r.schema_title == "ReviewIssues"]
    assert len(facet_requests) == 3
    long_request = next(r for r in facet_requests if "START The strap" in r.user_prompt)
    ingested = huge[:20000]  # ingest keeps the head; the prompt keeps the head and tail of that
    assert "[…]" in long_request.user_prompt and ingested[:40] in long_request.user_prompt
    assert ingested[-40:] in long_request.user_prompt
    assert len(long_request.user_prompt) < 4 * n_ctx, "never sent whole"
    assert long_request.usage["prompt_tokens"] + config.llm.max_tokens <= n_ctx, long_request.usage
