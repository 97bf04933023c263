"""Ingest: formats, field names, duplicates, truncation and every bad-input case with file:line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clado.pipeline.ingest import IngestError, IngestResult, IngestSettings, ingest
from clado.taxonomy.records import Message, Record

DEFAULT = IngestSettings()
SKIP = IngestSettings(skip_bad=True)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def generated_id(prefix: str, text: str | None = None, n: int = 1, messages: list[dict] | None = None) -> str:
    """The default id of the n-th row with this content in a file with this id prefix."""
    convo = [Message(**m) for m in messages] if messages else None
    return f"{prefix}:{Record(id='', text=text, messages=convo).content_hash[:12]}.{n}"


def assert_accounted(result: IngestResult) -> None:
    assert result.inputs == result.ingested + result.duplicates + len(result.skipped)
    assert result.ingested == len(result.records)


def test_jsonl_text_records_keep_fields_and_source(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"id": "r1", "text": "Great battery", "rating": 5, "user_id": 42},
            {"text": "Screen cracked", "rating": 1},
        ],
    )
    result = ingest(path, settings=DEFAULT)
    first, second = result.records
    assert (first.id, first.text, first.user_id, first.metadata) == ("r1", "Great battery", "42", {"rating": 5})
    assert (first.source_file, first.source_line) == (str(path), 1)
    assert second.id == generated_id("reviews", "Screen cracked") and second.source_line == 2
    assert (result.inputs, result.ingested, result.duplicates, result.skipped) == (2, 2, 0, [])


def test_jsonl_messages_records(tmp_path: Path) -> None:
    convo = [{"role": "user", "content": "Hi, my card is lost"}, {"role": "assistant", "content": "I can help."}]
    path = write_jsonl(tmp_path / "chats.jsonl", [{"id": 7, "messages": convo, "label": "lost_card"}])
    (record,) = ingest([path], settings=DEFAULT).records
    assert record.id == "7" and record.kind == "conversation"
    assert record.as_text() == "user: Hi, my card is lost\nassistant: I can help."
    assert record.metadata == {"label": "lost_card"}


def test_field_names_are_configurable(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"key": "a", "body": "hello", "when": 1588000000, "who": "u1", "text": "kept as metadata"}],
    )
    settings = IngestSettings(
        text_field="body", id_field="key", created_at_field="when", user_id_field="who", messages_field="turns"
    )
    (record,) = ingest(path, settings=settings).records
    assert (record.id, record.text, record.user_id) == ("a", "hello", "u1")
    assert record.created_at == datetime.fromtimestamp(1588000000, tz=UTC)
    assert record.metadata == {"text": "kept as metadata"}


def test_conversation_field_name_is_configurable(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"turns": [{"role": "user", "content": "hey"}]}])
    (record,) = ingest(path, settings=IngestSettings(messages_field="turns")).records
    assert record.messages is not None and record.messages[0].content == "hey"


def test_csv_with_quoted_multiline_row_reports_start_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('id,text,rating\n1,"Good, solid",5\n\n2,"two\nlines",3\n3,last,1\n', encoding="utf-8")
    result = ingest(path, settings=DEFAULT)
    assert [(r.id, r.text, r.source_line) for r in result.records] == [
        ("1", "Good, solid", 2),
        ("2", "two\nlines", 4),
        ("3", "last", 6),
    ]
    assert result.records[0].metadata == {"rating": "5"}
    assert result.inputs == 3


def test_csv_messages_column_is_metadata_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,messages\nhello,3\n", encoding="utf-8")
    (record,) = ingest(path, settings=IngestSettings(csv_delimiter=",")).records
    assert (record.text, record.metadata) == ("hello", {"messages": "3"})


def test_csv_semicolon_delimiter_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text;rating\nGreat, really;5\nBad, broken;1\nok;3\n", encoding="utf-8")
    result = ingest(path, settings=DEFAULT)
    assert [r.text for r in result.records] == ["Great, really", "Bad, broken", "ok"]
    assert [r.metadata["rating"] for r in result.records] == ["5", "1", "3"]


def test_csv_wrong_delimiter_hints_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text;rating\nGreat;5\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"r\.csv:1: .*'text;rating'.*did you mean delimiter ';'\?") as info:
        ingest(path, settings=IngestSettings(csv_delimiter=","))
    assert info.value.line == 1


def test_csv_missing_text_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("review,rating\nGreat,5\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"no 'text' column .*columns found: 'review', 'rating'"):
        ingest(path, settings=DEFAULT)


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,rating\nfine,5\nextra,5,oops\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"r\.csv:3: row has 3 fields but the header has 2"):
        ingest(path, settings=IngestSettings(csv_delimiter=","))
    result = ingest(path, settings=IngestSettings(csv_delimiter=",", skip_bad=True))
    assert [(s.line, s.reason) for s in result.skipped] == [(3, "row has 3 fields but the header has 2")]
    assert_accounted(result)


def test_text_lines_one_item_per_non_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_text("how do I reset my pin\n\n   \n  where is my card  \n", encoding="utf-8")
    result = ingest(path, settings=DEFAULT)
    assert [(r.id, r.text) for r in result.records] == [
        (generated_id("queries", "how do I reset my pin"), "how do I reset my pin"),
        (generated_id("queries", "where is my card"), "where is my card"),
    ]
    assert result.inputs == 2


def test_format_override_reads_txt_as_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text('{"text": "a"}\n', encoding="utf-8")
    assert ingest(path, settings=IngestSettings(format="jsonl")).records[0].text == "a"
    assert ingest(path, settings=DEFAULT).records[0].text == '{"text": "a"}'


def test_duplicates_collapse_onto_first_and_are_counted(tmp_path: Path) -> None:
    convo = [{"role": "user", "content": "hi"}]
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [{"id": "x", "text": "same"}, {"id": "y", "text": "other"}, {"id": "z", "text": "same"}, {"messages": convo}],
    )
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "same"}, {"messages": convo}])
    result = ingest([a, b], settings=DEFAULT)
    a4, b1, b2 = generated_id("a", messages=convo), generated_id("b", "same"), generated_id("b", messages=convo)
    assert [r.id for r in result.records] == ["x", "y", a4]
    assert [(o.id, o.source_file, o.source_line) for o in result.records[0].repeats] == [
        ("z", str(a), 3),
        (b1, str(b), 1),
    ]
    assert [o.id for o in result.records[2].repeats] == [b2]
    assert result.records[1].repeats == []
    assert result.duplicate_of == {"z": "x", b1: "x", b2: a4}
    assert (result.inputs, result.ingested, result.duplicates) == (6, 3, 3)
    assert_accounted(result)


def test_duplicate_id_with_different_content_names_both_lines(tmp_path: Path) -> None:
    rows = [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}, {"id": "1", "text": "c"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expected = r"d\.jsonl:3: duplicate id '1' with different content \(first at .*d\.jsonl:1\)"
    with pytest.raises(IngestError, match=expected):
        ingest(path, settings=DEFAULT)
    result = ingest(path, settings=SKIP)
    assert [r.text for r in result.records] == ["a", "b"]
    assert [s.line for s in result.skipped] == [3]
    assert_accounted(result)


def test_same_id_same_content_is_a_duplicate_not_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "a"}, {"id": "1", "text": "a"}])
    result = ingest(path, settings=DEFAULT)
    assert (result.ingested, result.duplicates) == (1, 1)


def test_generated_ids_stay_unique_when_files_share_a_stem(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write_jsonl(tmp_path / "x" / "d.jsonl", [{"text": "one"}])
    b = write_jsonl(tmp_path / "y" / "d.jsonl", [{"text": "two"}])
    result = ingest([a, b], settings=DEFAULT)
    assert [r.id for r in result.records] == [generated_id(str(a), "one"), generated_id(str(b), "two")]


BAD_JSONL_LINES = [
    ('{"text": "a" "b"}', r"invalid JSON: Expecting ',' delimiter \(col 14\)"),
    ('["text", "a"]', r"expected a JSON object, got array"),
    ('"just a string"', r"expected a JSON object, got string"),
    ('{"body": "no text here"}', r"missing 'text' or 'messages' \(fields: 'body'\)"),
    ('{"text": "   "}', r"field 'text' is empty"),
    ('{"text": null}', r"field 'text' is null"),
    ('{"text": 5}', r"field 'text' must be a string, got integer"),
    ('{"messages": "hello"}', r"field 'messages' must be a list of \{role, content\}, got string"),
    ('{"messages": []}', r"field 'messages' is an empty conversation"),
    ('{"messages": [{"role": "user"}]}', r"message 1 has no 'content'"),
    ('{"messages": [{"content": "hi"}]}', r"message 1 has no 'role'"),
    ('{"messages": [{"role": "user", "content": 3}]}', r"message 1 'content' must be a string, got integer"),
    ('{"messages": ["hi"]}', r"message 1 must be an object, got string"),
    ('{"messages": [{"role": "user", "content": " "}]}', r"field 'messages' is an empty conversation \(every"),
    ('{"text": "a", "messages": [{"role": "user", "content": "b"}]}', r"has both 'text' and 'messages'"),
    ('{"text": "a", "id": [1]}', r"field 'id' must be a string or integer, got array"),
    ('{"text": "a", "user_id": {"x": 1}}', r"field 'user_id' must be a string or integer, got object"),
    ('{"text": "a", "created_at": "yesterday"}', r"field 'created_at': cannot read 'yesterday'"),
    ('{"text": "a", "created_at": true}', r"field 'created_at' must be an ISO 8601 string or unix .*, got boolean"),
]


@pytest.mark.parametrize(("bad_line", "reason"), BAD_JSONL_LINES)
def test_bad_jsonl_line_raises_with_file_and_line_or_is_skipped(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(f'{{"text": "fine"}}\n\n{bad_line}\n{{"text": "also fine"}}\n', encoding="utf-8")
    with pytest.raises(IngestError, match=re.escape(f"{path}:3: ") + reason) as info:
        ingest(path, settings=DEFAULT)
    assert (info.value.path, info.value.line) == (str(path), 3)

    result = ingest(path, settings=SKIP)
    assert [r.text for r in result.records] == ["fine", "also fine"]
    assert len(result.skipped) == 1
    assert (result.skipped[0].file, result.skipped[0].line) == (str(path), 3)
    assert re.match(reason, result.skipped[0].reason)
    assert (result.inputs, result.ingested) == (3, 2)
    assert_accounted(result)
    assert "skipped 1" in result.report() and f"{path}:3:" in result.report()


def test_invalid_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xff"}\n{"text": "fine"}\n')
    expected = r"x\.jsonl:2: invalid utf-8: byte 0xff at byte offset 28 \(offset 13 in the line\)"
    with pytest.raises(IngestError, match=expected):
        ingest(path, settings=DEFAULT)
    result = ingest(path, settings=SKIP)
    assert [r.text for r in result.records] == ["ok", "fine"]
    assert [s.line for s in result.skipped] == [2]
    assert_accounted(result)


def test_invalid_utf8_in_csv_row(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"text,n\nok,1\nbad \xc3(,2\nfine,3\n")
    with pytest.raises(IngestError, match=r"x\.csv:3: invalid utf-8"):
        ingest(path, settings=IngestSettings(csv_delimiter=","))
    result = ingest(path, settings=IngestSettings(csv_delimiter=",", skip_bad=True))
    assert [(r.text, r.source_line) for r in result.records] == [("ok", 2), ("fine", 4)]
    assert_accounted(result)


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes("\ufefftext,n\nhé,1\n".encode())
    assert ingest(path, settings=DEFAULT).records[0].text == "hé"


def test_long_text_is_truncated_and_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": "x" * 1_000_000}, {"text": "short"}])
    result = ingest(path, settings=DEFAULT)
    assert len(result.records[0].text or "") == 20000
    assert result.records[0].metadata["truncated_from_chars"] == 1_000_000
    assert result.records[1].text == "short"
    assert result.truncated == 1
    assert "truncated 1" in result.report()


def test_long_csv_field_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("text\n" + "y" * 300_000 + "\n", encoding="utf-8")
    result = ingest(path, settings=IngestSettings(max_chars=50))
    assert result.records[0].text == "y" * 50 and result.truncated == 1


def test_long_conversation_transcript_is_truncated(tmp_path: Path) -> None:
    convo = [{"role": "user", "content": "a" * 30}, {"role": "assistant", "content": "b" * 30}]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": convo}])
    (record,) = ingest(path, settings=IngestSettings(max_chars=50)).records
    assert record.as_text() == "user: " + "a" * 30 + "\nassistant: " + "b" * 2
    assert len(record.as_text()) == 50


def test_texts_differing_only_after_the_cut_are_not_duplicates(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a" * 10 + "1"}, {"text": "a" * 10 + "2"}])
    result = ingest(path, settings=IngestSettings(max_chars=5))
    assert (result.ingested, result.duplicates, result.truncated) == (2, 0, 2)


def test_empty_file_is_an_error_unless_other_files_have_records(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"no records in .*empty\.jsonl"):
        ingest(empty, settings=DEFAULT)
    full = write_jsonl(tmp_path / "full.jsonl", [{"text": "a"}])
    result = ingest([empty, full], settings=DEFAULT)
    assert (result.inputs, result.ingested) == (1, 1)


def test_all_lines_skipped_is_no_records(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"no records in .*bad\.jsonl \(1 lines skipped, first: invalid JSON"):
        ingest(path, settings=SKIP)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(IngestError, match=r"nope\.jsonl: file not found") as info:
        ingest(missing, settings=DEFAULT)
    assert info.value.line is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-01T12:30:00Z", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        ("2024-03-01T12:30:00+02:00", datetime(2024, 3, 1, 10, 30, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        (1709296200, datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        (1709296200.5, datetime(2024, 3, 1, 12, 30, 0, 500000, tzinfo=UTC)),
        ("1709296200", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        (None, None),
    ],
)
def test_created_at_parsing(tmp_path: Path, value: object, expected: datetime | None) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "created_at": value}])
    (record,) = ingest(path, settings=DEFAULT).records
    assert record.created_at == expected
    assert record.created_at is None or record.created_at.tzinfo is not None


def test_settings_reject_unusable_encoding_and_delimiter() -> None:
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        IngestSettings(encoding="utf-16")
    with pytest.raises(ValueError, match="unknown encoding"):
        IngestSettings(encoding="no-such-codec")
    with pytest.raises(ValueError, match="one character"):
        IngestSettings(csv_delimiter=";;")


def test_report_lists_first_reasons_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n{"text": "a"}\n' + "junk\n" * 7, encoding="utf-8")
    result = ingest(path, settings=SKIP)
    report = result.report()
    assert report.splitlines()[0] == "inputs 9: ingested 1, duplicates 1, skipped 7, truncated 0"
    assert f"{path}:3: invalid JSON" in report and "and 2 more skipped" in report
    assert_accounted(result)


def unbalanced_csv(path: Path, rows_after: int) -> Path:
    lines = ["id,text", '1,"this quote never closes', *(f"{k},row {k}" for k in range(2, rows_after + 2))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_unbalanced_csv_quote_is_an_error_at_its_line_not_one_giant_record(tmp_path: Path) -> None:
    """#18.2: the open quote on line 2 would swallow every later row into one record."""
    path = unbalanced_csv(tmp_path / "r.csv", rows_after=1500)  # over csv_max_row_lines
    with pytest.raises(IngestError, match=r"r\.csv:2: a CSV row starting here spans more than 1000 lines") as info:
        ingest(path, settings=DEFAULT)
    assert info.value.line == 2
    result = ingest(path, settings=SKIP)
    assert [s.line for s in result.skipped] == [2]
    assert [r.text for r in result.records] == [f"row {k}" for k in range(2, 1502)]  # every later row read again
    assert_accounted(result)


def test_a_quote_still_open_at_the_end_of_the_file_is_a_bad_row(tmp_path: Path) -> None:
    """#18.2: fewer lines than the bound left: the field runs to the end of the file, which is no row either."""
    path = unbalanced_csv(tmp_path / "r.csv", rows_after=3)
    with pytest.raises(IngestError, match=r"r\.csv:2: a quoted CSV field opened in this row is never closed"):
        ingest(path, settings=DEFAULT)
    result = ingest(path, settings=SKIP)
    assert [r.text for r in result.records] == ["row 2", "row 3", "row 4"] and [s.line for s in result.skipped] == [2]


def test_a_csv_row_over_the_character_bound_is_bad_at_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('text\n"open\n' + "x" * 500 + "\nfine\n", encoding="utf-8")
    settings = IngestSettings(csv_max_row_chars=200, skip_bad=True)
    result = ingest(path, settings=settings)
    reason = "a CSV row starting here spans more than 1000 lines or 200 characters"
    # the row opened on line 2 is bad; read again, the 500-character line 3 alone is over the bound too
    assert [(s.line, s.reason.split(" (")[0]) for s in result.skipped] == [(2, reason), (3, reason)]
    assert [r.text for r in result.records] == ["fine"]
    assert_accounted(result)


def test_an_over_long_line_is_cut_while_reading(tmp_path: Path) -> None:
    """#18.2: a JSONL line over max_line_bytes is a bad line; a text line is cut; nothing holds the whole line."""
    long_text = "é" * 5000  # 10000 bytes: the cut falls inside a character
    jsonl = write_jsonl(tmp_path / "d.jsonl", [{"text": "short"}, {"text": long_text}, {"text": "after"}])
    settings = IngestSettings(max_line_bytes=1001)
    with pytest.raises(IngestError, match=r"d\.jsonl:2: line longer than max_line_bytes \(1001 bytes\)"):
        ingest(jsonl, settings=settings)
    skipped = ingest(jsonl, settings=settings.model_copy(update={"skip_bad": True}))
    assert [r.text for r in skipped.records] == ["short", "after"]
    text = tmp_path / "q.txt"
    text.write_text(f"short\n{long_text}\nafter\n", encoding="utf-8")
    cut = ingest(text, settings=settings)
    assert [r.text for r in cut.records] == ["short", "é" * 500, "after"]
    assert [r.source_line for r in cut.records] == [1, 2, 3]


def test_a_lone_surrogate_escape_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    """Found by the property tests: half of an escaped pair decodes to a string no store can encode."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "cut \\ud83d here"}\n', encoding="utf-8")
    with pytest.raises(IngestError, match=r"d\.jsonl:2: invalid JSON string: a lone surrogate \\ud83d"):
        ingest(path, settings=DEFAULT)
    assert [r.text for r in ingest(path, settings=SKIP).records] == ["ok"]
