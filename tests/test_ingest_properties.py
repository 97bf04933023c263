"""Property tests of ingest (#18): JSONL, CSV and plain text made of random, broken and hostile lines give either
a clear error naming a line, or records plus a skip report where input lines = ingested + duplicates + skipped,
and no record ever holds the text of two input rows."""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clado.pipeline.ingest import IngestError, IngestResult, IngestSettings, ingest

LIMIT = 200  # max_line_bytes in these tests: long lines are cheap to make
ROW_LINES = 5  # csv_max_row_lines
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

WORD = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)
HOSTILE = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\n"), max_size=40)
RAW = st.binary(max_size=30).filter(lambda b: b"\n" not in b)  # often not UTF-8
LONG = st.integers(LIMIT + 1, 3 * LIMIT)
BLANK = st.sampled_from([b"", b"   ", b"\t"])


@st.composite
def with_repeats(draw, line: st.SearchStrategy[bytes]) -> list[bytes]:
    """Lines drawn from a small pool, so exact duplicates are common."""
    pool = draw(st.lists(line, min_size=1, max_size=10))
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=25))


def write(path: Path, lines: list[bytes], header: bytes | None = None) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in ([header] if header else []) + lines))
    return path


def decoded(raw: bytes, number: int) -> str | None:
    """The line as ingest reads it (None when over-long or not UTF-8)."""
    if len(raw) > LIMIT:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.removeprefix("\ufeff") if number == 1 else text


def run(path: Path, ingest_settings: IngestSettings) -> IngestResult | IngestError:
    try:
        return ingest(path, settings=ingest_settings)
    except IngestError as error:
        return error


def assert_accounted(result: IngestResult, expected_inputs: int) -> None:
    assert result.inputs == expected_inputs
    assert result.inputs == result.ingested + result.duplicates + len(result.skipped)
    assert result.ingested == len(result.records) == len({r.content_hash for r in result.records})
    assert result.duplicates == sum(len(r.repeats) for r in result.records)


def assert_error_names_a_line(error: IngestError, path: Path, bad_lines: set[int]) -> None:
    assert error.line in bad_lines, (error, bad_lines)
    assert str(error).startswith(f"{path}:{error.line}: ")


# plain text: one record per non-blank line, so the expected outcome is known exactly

TEXT_LINE = st.one_of(
    HOSTILE.map(lambda s: s.encode("utf-8")),
    RAW,
    BLANK,
    WORD.map(lambda w: ("\ufeff" + w).encode("utf-8")),
    LONG.map(lambda n: b"x" * n),
)


@SETTINGS
@given(lines=with_repeats(TEXT_LINE), skip_bad=st.booleans())
def test_text_lines_are_records_duplicates_or_skipped_exactly(tmp_path_factory, lines, skip_bad):
    path = write(tmp_path_factory.mktemp("t") / "q.txt", lines)
    texts: list[tuple[int, str]] = []
    bad: list[int] = []
    for number, raw in enumerate(lines, start=1):
        text = decoded(raw[:LIMIT], number)  # a text line over the bound is cut, not rejected
        if text is None:
            bad.append(number)
        elif text.strip():
            texts.append((number, text.strip()))
    first = {}
    for number, text in texts:
        first.setdefault(text, number)
    outcome = run(path, IngestSettings(format="text", max_line_bytes=LIMIT, skip_bad=skip_bad))
    if isinstance(outcome, IngestError):
        if bad and not skip_bad:
            assert_error_names_a_line(outcome, path, {bad[0]})
        else:
            assert not first and outcome.line is None and "no records" in str(outcome)
        return
    assert not bad or skip_bad
    assert [(r.source_line, r.text) for r in outcome.records] == [(n, t) for t, n in first.items()]
    assert [s.line for s in outcome.skipped] == bad
    assert_accounted(outcome, len(texts) + len(bad))


@SETTINGS
@given(lines=with_repeats(TEXT_LINE), where=st.integers(0, 25))
def test_default_ids_do_not_move_when_a_line_is_inserted(tmp_path_factory, lines, where):
    """#18.1: the generated id of a record depends on its content and occurrence number, not its line."""
    folder = tmp_path_factory.mktemp("t")
    loose = IngestSettings(format="text", max_line_bytes=LIMIT, skip_bad=True)
    before = run(write(folder / "q.txt", lines), loose)
    inserted = lines[:where] + [b"a line inserted later"] + lines[where:]
    after = run(write(folder / "q.txt", inserted), loose)
    if isinstance(before, IngestError):
        return
    assert isinstance(after, IngestResult)
    ids = {r.text: r.id for r in after.records}
    assert all(ids[r.text] == r.id for r in before.records if r.source_line != 1 or where != 0)


# JSONL: every non-blank line is an input; a record always comes from the one line it names

HOSTILE_JSON = [
    '[{"text": "a"}]',
    "null",
    "5",
    '"text"',
    '{"text": 5}',
    '{"text": " "}',
    '{"messages": []}',
    '{"text": "a", "messages": []}',
    '{"messages": [{"role": "user"}]}',
    '{"id": {}, "text": "b"}',
    '{"text": "c", "created_at": "yesterday"}',
]
GOOD_JSON = HOSTILE.filter(str.strip).map(lambda t: json.dumps({"text": t}).encode("utf-8"))
JSON_LINE = st.one_of(
    GOOD_JSON,
    st.builds(lambda t, u: json.dumps({"text": t, "user_id": u, "id": u[:1]}), HOSTILE, WORD).map(str.encode),
    HOSTILE.map(lambda t: json.dumps({"messages": [{"role": "user", "content": t}]}).encode("utf-8")),
    st.tuples(GOOD_JSON, st.integers(0, 10), st.integers(1, 5)).map(lambda g: g[0][: g[1]] + g[0][g[1] + g[2] :]),
    st.sampled_from(HOSTILE_JSON).map(str.encode),
    HOSTILE.map(lambda s: s.encode("utf-8")),
    RAW,
    BLANK,
    GOOD_JSON.map(lambda g: "\ufeff".encode() + g),
    LONG.map(lambda n: json.dumps({"text": "y" * n}).encode()),
)


def content(record) -> object:
    return record.text if record.messages is None else [m.model_dump() for m in record.messages]


def line_content(obj: dict) -> object:
    return obj["messages"] if "messages" in obj else obj["text"]


def plain_lines(lines: list[bytes]) -> set[int]:
    """Numbers of the lines that are a plain `{"text": non-blank}` object: always valid, never an id clash."""
    plain = set()
    for number, raw in enumerate(lines, start=1):
        if not raw.startswith(b'{"text"') or len(raw) > LIMIT:
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            json.dumps(obj, ensure_ascii=False).encode("utf-8")  # no lone surrogate escape
        except (UnicodeError, json.JSONDecodeError):
            continue
        if list(obj) == ["text"] and isinstance(obj["text"], str) and obj["text"].strip():
            plain.add(number)
    return plain


@SETTINGS
@given(lines=with_repeats(JSON_LINE), skip_bad=st.booleans())
def test_jsonl_lines_give_a_line_error_or_accounted_records_each_from_one_line(tmp_path_factory, lines, skip_bad):
    path = write(tmp_path_factory.mktemp("j") / "d.jsonl", lines)
    texts = {n: decoded(raw, n) for n, raw in enumerate(lines, start=1)}
    inputs = [n for n, text in texts.items() if text is None or text.strip()]
    plain = plain_lines(lines)
    outcome = run(path, IngestSettings(format="jsonl", max_line_bytes=LIMIT, skip_bad=skip_bad))
    if isinstance(outcome, IngestError):
        if outcome.line is None:
            assert not plain and (skip_bad or not inputs) and "no records" in str(outcome)
        else:
            assert not skip_bad
            assert_error_names_a_line(outcome, path, set(inputs) - plain)
        return
    assert_accounted(outcome, len(inputs))
    for record in outcome.records:
        line = texts[record.source_line]
        assert line is not None and content(record) == line_content(json.loads(line))
    kept = [content(r) for r in outcome.records]
    assert all(json.loads(lines[n - 1])["text"] in kept for n in plain)


# CSV: a quote that never closes (within the row bounds, or before the end) is one bad row at its line, and the
# lines it took in are read again, so every line is counted once and every record is the row of one line

CELL = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters='\n\r",\x00'), min_size=1, max_size=20
).filter(str.strip)
GOOD_ROW = st.tuples(CELL, st.integers(0, 9)).map(lambda c: f"{c[0]},{c[1]}".encode())
CSV_LINE = st.one_of(
    GOOD_ROW,
    WORD.map(lambda w: f'"{w}'.encode()),  # an unbalanced quote opening the text field
    WORD.map(lambda w: f'x,"{w}'.encode()),  # … or the second one
    CELL.map(lambda c: f"{c},1,2".encode()),  # too many fields
    HOSTILE.filter(lambda t: '"' not in t).map(lambda t: t.encode("utf-8")),  # NUL, \r, commas, anything
    RAW.filter(lambda b: b'"' not in b),
    BLANK,
    LONG.map(lambda n: b"y" * n + b",1"),
)


def alone(raw: bytes) -> list[str] | None:
    """The line parsed as a CSV row on its own (None when it is over-long, not UTF-8 or not a row by itself)."""
    text = decoded(raw, 2)
    if text is None:
        return None
    try:
        return next(csv.reader([text + "\n"], strict=True), [])
    except csv.Error:
        return None


@SETTINGS
@given(lines=with_repeats(CSV_LINE), skip_bad=st.booleans())
def test_csv_rows_give_a_line_error_or_accounted_records_each_from_one_line(tmp_path_factory, lines, skip_bad):
    path = write(tmp_path_factory.mktemp("c") / "r.csv", lines, header=b"text,n")
    rows = {n: alone(raw) for n, raw in enumerate(lines, start=2)}
    inputs = [n for n, row in rows.items() if row is None or any(cell.strip() for cell in row)]
    good = {n for n, raw in enumerate(lines, start=2) if _is_good_row(raw)}
    config = IngestSettings(
        format="csv", csv_delimiter=",", max_line_bytes=LIMIT, csv_max_row_lines=ROW_LINES, skip_bad=skip_bad
    )
    outcome = run(path, config)
    if isinstance(outcome, IngestError):
        if outcome.line is None:
            assert not good and (skip_bad or not inputs) and "no records" in str(outcome)
        else:
            assert not skip_bad
            assert_error_names_a_line(outcome, path, set(inputs) - good)
        return
    assert_accounted(outcome, len(inputs))
    for record in outcome.records:
        row = rows[record.source_line]
        assert row is not None and record.text == row[0] and record.metadata == {"n": row[1]}
    kept = {r.text for r in outcome.records}
    assert all(rows[n][0] in kept for n in good)


def _is_good_row(raw: bytes) -> bool:
    row = alone(raw)
    return row is not None and len(row) == 2 and bool(row[0].strip()) and b'"' not in raw
