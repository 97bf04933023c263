"""Ingest stage: read JSONL, CSV or plain-text files into Records.

Every non-blank input line (or CSV row) is accounted for: it becomes a record, is collapsed into an
earlier exact duplicate (kept in the record's `repeats`, with its own id, user and time), or (with `skip_bad`)
is listed in `IngestResult.skipped` with its reason. Otherwise a bad line raises `IngestError` naming the
file and line. Lines are read with a bounded length, and a CSV row may span only a bounded number of lines
and characters, so an unbalanced quote is a bad row at the line where it opened, not the rest of the file.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clado.taxonomy.records import Message, Occurrence, Record

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
SNIFF_DELIMITERS = ",;\t|"
SNIFF_SAMPLE_BYTES = 64 * 1024
REPORT_REASONS = 5
CSV_FIELD_SIZE_LIMIT = 2**31 - 1  # the row bounds below apply first; long texts are truncated after parsing


class IngestSettings(BaseModel):
    """How input files are read."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "jsonl", "csv", "text"] = Field(
        default="auto",
        description="auto: .jsonl/.json/.ndjson → jsonl, .csv/.tsv → csv, else text (one item per line)",
    )
    text_field: str = Field(default="text", description="JSONL key / CSV column holding the text")
    messages_field: str = Field(default="messages", description="JSONL key holding a list of {role, content}")
    id_field: str = Field(
        default="id",
        description="Record id; when absent '<file stem>:<12 hex of the content hash>.<occurrence number>', "
        "stable when lines are inserted or moved",
    )
    created_at_field: str = Field(default="created_at", description="ISO 8601 string or unix seconds")
    user_id_field: str = Field(default="user_id")
    csv_delimiter: str | None = Field(
        default=None, description="None: sniffed among , ; tab | (fallback ',' or tab for .tsv)"
    )
    encoding: str = Field(default="utf-8", description="Any ASCII-compatible codec; decoded line by line")
    max_chars: int = Field(
        default=20000, gt=0, description="Longer texts/transcripts are truncated to this many characters"
    )
    skip_bad: bool = Field(default=False, description="Skip and list bad lines instead of raising IngestError")
    max_line_bytes: int = Field(
        default=16 * 2**20, gt=0, description="Longer lines are cut while reading: a bad line in JSONL/CSV, cut text"
    )
    csv_max_row_lines: int = Field(
        default=1000, gt=0, description="A CSV row (a quoted field with newlines) may span at most this many lines"
    )
    csv_max_row_chars: int = Field(default=2_000_000, gt=0, description="… and at most this many characters")

    @field_validator("encoding")
    @classmethod
    def _line_decodable(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        if "\n".encode(value) != b"\n":
            raise ValueError(f"encoding {value!r} is not ASCII-compatible; convert the file to UTF-8")
        return value

    @field_validator("csv_delimiter")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"csv_delimiter must be one character, got {value!r}")
        return value


class SkippedLine(BaseModel):
    file: str
    line: int
    reason: str


class IngestResult(BaseModel):
    """Records plus an account of every input: inputs == ingested + duplicates + len(skipped)."""

    records: list[Record]
    inputs: int = Field(description="Non-blank input lines / CSV data rows seen")
    ingested: int
    duplicates: int
    skipped: list[SkippedLine] = Field(default_factory=list)
    truncated: int = 0
    duplicate_of: dict[str, str] = Field(default_factory=dict, description="duplicate record id → kept record id")

    def report(self) -> str:
        """A short human summary."""
        lines = [
            f"inputs {self.inputs}: ingested {self.ingested}, duplicates {self.duplicates}, "
            f"skipped {len(self.skipped)}, truncated {self.truncated}"
        ]
        for skip in self.skipped[:REPORT_REASONS]:
            lines.append(f"  skipped {skip.file}:{skip.line}: {skip.reason}")
        if len(self.skipped) > REPORT_REASONS:
            lines.append(f"  … and {len(self.skipped) - REPORT_REASONS} more skipped")
        return "\n".join(lines)


class IngestError(ValueError):
    """A bad input, located as `path:line: reason` (line is None for file-level problems)."""

    def __init__(self, reason: str, *, path: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


class _BadLine(Exception):
    """Internal: the current line is bad for `reason`."""

    def __init__(self, reason: str, *, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def ingest(paths: list[Path] | Path, *, settings: IngestSettings) -> IngestResult:
    """Read `paths` into records, collapsing exact duplicates (same content hash, first kept)."""
    path_list = [paths] if isinstance(paths, Path) else list(paths)
    if not path_list:
        raise IngestError("no input files", path="<none>")
    collector = _Collector(settings=settings)
    stems = [p.stem for p in path_list]
    for path in path_list:
        # Generated ids use the stem unless two inputs share it; then the full path keeps them unique.
        id_prefix = path.stem if stems.count(path.stem) == 1 else str(path)
        collector.read_file(path, id_prefix=id_prefix)
    return collector.result(path_list)


class _Collector:
    """Accumulates records, duplicates and skipped lines across files."""

    def __init__(self, *, settings: IngestSettings) -> None:
        self.settings = settings
        self.records: list[Record] = []
        self.inputs = 0
        self.skipped: list[SkippedLine] = []
        self.truncated = 0
        self.duplicate_of: dict[str, str] = {}
        self._kept_by_hash: dict[str, Record] = {}
        self._ids: dict[str, tuple[str, str, int]] = {}  # id → (content hash, file, line)
        self._occurrence: Counter[tuple[str, str]] = Counter()  # (id prefix, content hash) → rows seen

    def read_file(self, path: Path, *, id_prefix: str) -> None:
        name = str(path)
        if not path.exists():
            raise IngestError("file not found", path=name)
        if not path.is_file():
            raise IngestError("not a regular file", path=name)
        fmt = self.settings.format if self.settings.format != "auto" else _format_for(path)
        if fmt == "csv":
            self._read_csv(path, id_prefix=id_prefix)
            return
        for number, line in self._decoded_lines(path, cut_long=fmt == "text"):
            if not line.strip():
                continue
            self.inputs += 1
            try:
                fields = _json_object(line, line=number) if fmt == "jsonl" else {self.settings.text_field: line.strip()}
                self._add(self._build(fields, file=name, line=number, id_prefix=id_prefix, from_csv=False))
            except _BadLine as bad:
                self._bad(name, bad)

    def _decoded_lines(self, path: Path, *, cut_long: bool) -> Iterator[tuple[int, str]]:
        """(line number, text) pairs, each line read with at most `max_line_bytes`: a longer one is cut
        (`cut_long`, plain text) or reported as bad; an undecodable line is reported with its byte offsets."""
        name = str(path)
        s = self.settings
        offset = 0
        with path.open("rb") as handle:
            for number, (raw, size, cut) in enumerate(_bounded_lines(handle, s.max_line_bytes), start=1):
                start, offset = offset, offset + size
                if cut and not cut_long:
                    self._bad_input(name, f"line longer than max_line_bytes ({s.max_line_bytes} bytes)", number)
                    continue
                try:
                    text = _decode(raw, s.encoding, cut=cut)
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 1].hex()
                    reason = (
                        f"invalid {s.encoding}: byte 0x{bad} at byte offset {start + exc.start} "
                        f"(offset {exc.start} in the line): {exc.reason}"
                    )
                    self._bad_input(name, reason, number)
                    continue
                yield number, text.removeprefix("\ufeff") if number == 1 else text

    def _read_csv(self, path: Path, *, id_prefix: str) -> None:
        name = str(path)
        s = self.settings
        delimiter = s.csv_delimiter or _sniff_delimiter(path, encoding=s.encoding)
        lines = _LineSource(
            self._decoded_lines(path, cut_long=False), max_lines=s.csv_max_row_lines, max_chars=s.csv_max_row_chars
        )
        csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            lines.start_row()
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, _UnbalancedRow) as exc:
                reason = str(exc) if isinstance(exc, _UnbalancedRow) else f"bad CSV row: {exc}"
                if header is None:
                    raise IngestError(f"bad CSV header: {reason}", path=name, line=lines.row_start) from exc
                self.inputs += 1
                self._bad(name, _BadLine(reason, line=lines.row_start or 0))
                lines.replay_after_start()  # the lines a bad row took in are read again as rows of their own
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
                continue
            start = lines.row_start or 0
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _csv_header(row, path=name, line=start, delimiter=delimiter, settings=s)
                continue
            self.inputs += 1
            try:
                if len(row) != len(header):
                    raise _BadLine(f"row has {len(row)} fields but the header has {len(header)}", line=start)
                fields = dict(zip(header, row, strict=True))
                self._add(self._build(fields, file=name, line=start, id_prefix=id_prefix, from_csv=True))
            except _BadLine as bad:
                self._bad(name, bad)

    def _build(self, fields: dict[str, Any], *, file: str, line: int, id_prefix: str, from_csv: bool) -> Record:
        """A Record from one object/row; raises _BadLine on a missing or ill-typed field."""
        s = self.settings
        text_value = fields.get(s.text_field)
        messages_value = None if from_csv else fields.get(s.messages_field)
        if text_value is not None and messages_value is not None:
            raise _BadLine(
                f"has both {s.text_field!r} and {s.messages_field!r}; set text_field or messages_field to choose one",
                line=line,
            )
        text: str | None = None
        messages: list[Message] | None = None
        if messages_value is not None:
            messages = _messages(messages_value, field=s.messages_field, line=line)
        elif text_value is not None:
            if not isinstance(text_value, str):
                raise _BadLine(f"field {s.text_field!r} must be a string, got {_type_name(text_value)}", line=line)
            if not text_value.strip():
                raise _BadLine(f"field {s.text_field!r} is empty", line=line)
            text = text_value
        elif s.text_field in fields:
            raise _BadLine(f"field {s.text_field!r} is null", line=line)
        else:
            wanted = repr(s.text_field) if from_csv else f"{s.text_field!r} or {s.messages_field!r}"
            raise _BadLine(f"missing {wanted} (fields: {', '.join(map(repr, fields)) or 'none'})", line=line)
        used = {s.text_field, s.id_field, s.created_at_field, s.user_id_field}
        if not from_csv:
            used.add(s.messages_field)
        record = Record(
            id="",
            text=text,
            messages=messages,
            created_at=_created_at(fields.get(s.created_at_field), field=s.created_at_field, line=line),
            user_id=_identifier(fields.get(s.user_id_field), field=s.user_id_field, line=line),
            source_file=file,
            source_line=line,
            metadata={k: v for k, v in fields.items() if k not in used},
        )
        record.id = _identifier(fields.get(s.id_field), field=s.id_field, line=line) or self._default_id(
            record, id_prefix
        )
        return record

    def _default_id(self, record: Record, id_prefix: str) -> str:
        """`<prefix>:<content hash prefix>.<n>` for the n-th row of this content: unmoved by other lines."""
        key = (id_prefix, record.content_hash)
        self._occurrence[key] += 1
        return f"{id_prefix}:{record.content_hash[:12]}.{self._occurrence[key]}"

    def _add(self, record: Record) -> None:
        """Keep `record`, or count it as a duplicate of an earlier one; ids must not be reused for other content."""
        content_hash = record.content_hash  # of the full content: truncation does not create duplicates
        seen = self._ids.get(record.id)
        if seen is not None and seen[0] != content_hash:
            raise _BadLine(
                f"duplicate id {record.id!r} with different content (first at {seen[1]}:{seen[2]})",
                line=record.source_line,
            )
        if seen is None:
            self._ids[record.id] = (content_hash, record.source_file, record.source_line)
        kept = self._kept_by_hash.get(content_hash)
        if kept is not None:
            kept.repeats.append(occurrence_of(record))
            self.duplicate_of[record.id] = kept.id
            return
        if _truncate(record, max_chars=self.settings.max_chars):
            self.truncated += 1
        self._kept_by_hash[content_hash] = record
        self.records.append(record)

    def _bad_input(self, file: str, reason: str, line: int) -> None:
        """A line that is bad before it is parsed: counted as an input, then raised or skipped."""
        self.inputs += 1
        self._bad(file, _BadLine(reason, line=line))

    def _bad(self, file: str, bad: _BadLine) -> None:
        if not self.settings.skip_bad:
            raise IngestError(bad.reason, path=file, line=bad.line)
        self.skipped.append(SkippedLine(file=file, line=bad.line, reason=bad.reason))

    def result(self, paths: list[Path]) -> IngestResult:
        if not self.records:
            names = ", ".join(str(p) for p in paths)
            detail = f" ({len(self.skipped)} lines skipped, first: {self.skipped[0].reason})" if self.skipped else ""
            raise IngestError(f"no records in {names}{detail}", path=names)
        result = IngestResult(
            records=self.records,
            inputs=self.inputs,
            ingested=len(self.records),
            duplicates=sum(len(r.repeats) for r in self.records),
            skipped=self.skipped,
            truncated=self.truncated,
            duplicate_of=self.duplicate_of,
        )
        assert result.inputs == result.ingested + result.duplicates + len(result.skipped), result.report()
        return result


def occurrence_of(record: Record) -> Occurrence:
    """The occurrence a duplicate row of `record` adds to the record it collapses into."""
    return Occurrence(
        id=record.id,
        created_at=record.created_at,
        user_id=record.user_id,
        source_file=record.source_file,
        source_line=record.source_line,
    )


class _UnbalancedRow(Exception):
    """Internal: the CSV row being read has a quote that does not close within the bounds or the file."""


class _LineSource:
    """Feeds decoded lines to csv.reader, remembers where the current row started and bounds its length.

    The lines of the current row are kept (at most `max_lines`), so after a bad row (over its bounds, a quote
    never closed, a stray quote) the lines after its first can be read again."""

    def __init__(self, lines: Iterator[tuple[int, str]], *, max_lines: int, max_chars: int) -> None:
        self._lines = lines
        self._max_lines = max_lines
        self._max_chars = max_chars
        self._row: list[tuple[int, str]] = []
        self._replay: deque[tuple[int, str]] = deque()
        self.row_start: int | None = None

    def start_row(self) -> None:
        self._row = []
        self.row_start = None

    def replay_after_start(self) -> None:
        """Read the current row's lines again, all but the first."""
        self._replay.extendleft(reversed(self._row[1:]))
        self.start_row()

    def _next(self) -> tuple[int, str] | None:
        if self._replay:
            return self._replay.popleft()
        return next(self._lines, None)

    def __iter__(self) -> Iterator[str]:
        # csv.reader asks for another line within a row only while a quoted field is open.
        chars = 0
        while (line := self._next()) is not None or self._row:
            if line is None:
                raise _UnbalancedRow("a quoted CSV field opened in this row is never closed: an unbalanced quote?")
            number, text = line
            if self.row_start is None:
                self.row_start, chars = number, 0
            chars += len(text)
            self._row.append(line)
            if len(self._row) > self._max_lines or chars > self._max_chars:
                raise _UnbalancedRow(
                    f"a CSV row starting here spans more than {self._max_lines} lines or {self._max_chars} "
                    f"characters (csv_max_row_lines, csv_max_row_chars): an unbalanced quote?"
                )
            yield text


def _bounded_lines(handle: BinaryIO, limit: int) -> Iterator[tuple[bytes, int, bool]]:
    """(the first `limit` bytes of each line, the line's full size, whether it was cut); the rest of a long
    line is read and dropped in chunks, never held."""
    for raw in iter(lambda: handle.readline(limit + 1), b""):
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield raw[:limit], len(raw) + _skip_line(handle), True
        else:
            yield raw, len(raw), False


def _decode(raw: bytes, encoding: str, *, cut: bool) -> str:
    """`raw` decoded; a cut line may end inside a character, which is dropped."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if cut and exc.end == len(raw) and exc.reason == "unexpected end of data":
            return raw[: exc.start].decode(encoding)
        raise


def _skip_line(handle: BinaryIO) -> int:
    """Read and drop the rest of the current line (up to and including its newline); returns the bytes dropped."""
    dropped = 0
    while chunk := handle.readline(1 << 16):
        dropped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return dropped


def _format_for(path: Path) -> Literal["jsonl", "csv", "text"]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    return "text"


def _sniff_delimiter(path: Path, *, encoding: str) -> str:
    with path.open("rb") as handle:
        sample = handle.read(SNIFF_SAMPLE_BYTES).decode(encoding, errors="replace")
    if len(sample) == SNIFF_SAMPLE_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # drop a possibly cut last line
    try:
        return csv.Sniffer().sniff(sample.removeprefix("\ufeff"), delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_header(row: list[str], *, path: str, line: int, delimiter: str, settings: IngestSettings) -> list[str]:
    header = [cell.strip() for cell in row]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise IngestError(f"repeated CSV columns: {', '.join(map(repr, repeated))}", path=path, line=line)
    if settings.text_field not in header:
        message = (
            f"CSV has no {settings.text_field!r} column (read with delimiter {delimiter!r}; "
            f"columns found: {', '.join(map(repr, header))})"
        )
        if len(header) == 1:
            hint = next((d for d in ";\t|," if d != delimiter and d in header[0]), None)
            if hint is not None:
                message += f"; did you mean delimiter {hint!r}?"
        raise IngestError(message, path=path, line=line)
    return header


def _json_object(text: str, *, line: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadLine(f"invalid JSON: {exc.msg} (col {exc.colno})", line=line) from exc
    if not isinstance(value, dict):
        hint = " (JSON Lines needs one object per line)" if isinstance(value, list) else ""
        raise _BadLine(f"expected a JSON object, got {_type_name(value)}{hint}", line=line)
    if "\\u" in text:  # an escaped lone surrogate (half of a \ud83d\ude00 pair) is no character: not storable
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _BadLine(
                f"invalid JSON string: a lone surrogate \\u{ord(exc.object[exc.start]):04x}", line=line
            ) from exc
    return value


def _messages(value: Any, *, field: str, line: int) -> list[Message]:
    if not isinstance(value, list):
        raise _BadLine(f"field {field!r} must be a list of {{role, content}}, got {_type_name(value)}", line=line)
    if not value:
        raise _BadLine(f"field {field!r} is an empty conversation", line=line)
    messages = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise _BadLine(f"message {index} must be an object, got {_type_name(item)}", line=line)
        for key in ("role", "content"):
            if key not in item:
                raise _BadLine(f"message {index} has no {key!r}", line=line)
            if not isinstance(item[key], str):
                raise _BadLine(f"message {index} {key!r} must be a string, got {_type_name(item[key])}", line=line)
        messages.append(Message(role=item["role"], content=item["content"]))
    if not any(m.content.strip() for m in messages):
        raise _BadLine(f"field {field!r} is an empty conversation (every message is blank)", line=line)
    return messages


def _identifier(value: Any, *, field: str, line: int) -> str | None:
    """An id or user id as a string; None when absent or blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadLine(f"field {field!r} must be a string or integer, got {_type_name(value)}", line=line)
    return str(value)


def _created_at(value: Any, *, field: str, line: int) -> datetime | None:
    """ISO 8601 string or unix seconds; times without an offset are taken as UTC so all are comparable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _BadLine(
            f"field {field!r} must be an ISO 8601 string or unix seconds, got {_type_name(value)}", line=line
        )
    try:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                parsed = datetime.fromtimestamp(float(value), tz=UTC)
        else:
            parsed = datetime.fromtimestamp(value, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise _BadLine(f"field {field!r}: cannot read {value!r} as ISO 8601 or unix seconds", line=line) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _truncate(record: Record, *, max_chars: int) -> bool:
    """Cut the record so `as_text()` has at most `max_chars` characters; True if it was cut."""
    length = len(record.as_text())
    if length <= max_chars:
        return False
    record.metadata["truncated_from_chars"] = length
    if record.messages is None:
        record.text = (record.text or "")[:max_chars]
        return True
    budget = max_chars
    kept: list[Message] = []
    for message in record.messages:
        overhead = len(message.role) + 2 + (1 if kept else 0)  # "role: " and the joining newline
        if budget <= overhead:
            break
        content = message.content[: budget - overhead]
        kept.append(Message(role=message.role, content=content))
        budget -= overhead + len(content)
    first = record.messages[0]
    record.messages = kept or [Message(role=first.role, content=first.content[:max_chars])]
    return True


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
