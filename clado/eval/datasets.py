"""Load a labelled JSONL data set for evaluation: records for the builder, gold labels kept apart.

The records carry no gold information (no label in metadata), so the builder cannot read it;
only evaluation code looks at `LabelledSet.gold` and `LabelledSet.gold_parent`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clado.taxonomy.records import Message, Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSet:
    """Records with their gold labels, aligned by position."""

    name: str
    split: str | None
    records: list[Record]
    gold: list[str]
    gold_parent: list[str] | None
    skipped_unlabelled: int = 0


def _single(value: Any, *, field: str, where: str) -> str:
    """A label value as a string; a one-element list (SemEval `entity`) counts as its element."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"{where}: field {field!r} holds {len(value)} values, expected one")
        value = value[0]
    if value is None or isinstance(value, (dict, list)):
        raise ValueError(f"{where}: field {field!r} is {value!r}, expected a label")
    return str(value)


def _messages(value: Any, *, field: str, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} objects")
    try:
        return [Message(role=m["role"], content=m["content"]) for m in value]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: field {field!r} has a message without role/content ({exc})") from exc


def _record(
    item: dict[str, Any], *, path: Path, line: int, text_field: str | None, messages_field: str | None
) -> Record:
    where = f"{path}:{line}"
    text = item.get(text_field) if text_field else None
    messages = _messages(item.get(messages_field), field=messages_field, where=where) if messages_field else None
    if text is None and messages is None:
        raise ValueError(f"{where}: no text (field {text_field!r}) and no messages (field {messages_field!r})")
    started_at = item.get("started_at")
    user_id = item.get("user_id")
    return Record(
        id=str(item.get("id", f"{path.stem}-{line}")),
        text=None if text is None else str(text),
        messages=messages,
        created_at=None if started_at is None else datetime.fromtimestamp(started_at, tz=UTC),
        user_id=None if user_id is None else str(user_id),
        source_file=str(path),
        source_line=line,
    )


def load_labelled(
    path: str | Path,
    *,
    labels: str,
    parent_field: str | None = None,
    text_field: str | None = "text",
    messages_field: str | None = None,
    split: str | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> LabelledSet:
    """Read a JSONL file of labelled items.

    `labels` names the gold label field and `parent_field` the optional parent label field.
    Items whose label is null (e.g. STAR multi-task dialogues) are skipped and counted.
    `split` keeps only items whose `split` field equals it. `sample` keeps a seeded random
    subset of that size, in file order.
    """
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    path = Path(path)
    records: list[Record] = []
    gold: list[str] = []
    parents: list[str] = []
    skipped = orphans = 0
    with path.open(encoding="utf-8") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line}"
            try:
                item = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
            if split is not None and item.get("split") != split:
                continue
            if labels not in item:
                raise ValueError(f"{where}: missing label field {labels!r}")
            if item[labels] is None:
                skipped += 1
                continue
            gold.append(_single(item[labels], field=labels, where=where))
            if parent_field is not None:
                parent = item.get(parent_field)
                if parent is None:  # a label outside every domain is its own top-level group
                    orphans += 1
                    parent = item[labels]
                parents.append(_single(parent, field=parent_field, where=where))
            records.append(_record(item, path=path, line=line, text_field=text_field, messages_field=messages_field))

    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise ValueError(f"{path}:{record.source_line}: duplicate id {record.id!r}")
        seen.add(record.id)
    if skipped:
        log.info("%s: skipped %d items with a null %r", path, skipped, labels)
    if orphans:
        log.info("%s: %d items with a null %r take their label as parent", path, orphans, parent_field)
    if sample is not None and sample < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), sample))
        records = [records[i] for i in keep]
        gold = [gold[i] for i in keep]
        parents = [parents[i] for i in keep] if parent_field is not None else parents
    return LabelledSet(
        name=path.stem,
        split=split,
        records=records,
        gold=gold,
        gold_parent=parents if parent_field is not None else None,
        skipped_unlabelled=skipped,
    )
