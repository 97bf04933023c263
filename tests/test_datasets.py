import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clado.eval.datasets import load_labelled

SHARED_DATA = Path(os.environ.get("CLADO_EVAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
    return path


def test_text_items_with_split_and_parent(tmp_path):
    path = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {"id": "q1", "text": "lost card", "label": "card_lost", "parent": "cards", "split": "test"},
            {"id": "q2", "text": "top up failed", "label": "top_up", "parent": "money", "split": "train"},
            {"id": "q3", "text": "card stolen", "label": "card_lost", "parent": "cards", "split": "test"},
        ],
    )
    data = load_labelled(path, labels="label", parent_field="parent", split="test")
    assert [r.id for r in data.records] == ["q1", "q3"]
    assert [r.text for r in data.records] == ["lost card", "card stolen"]
    assert [r.source_line for r in data.records] == [1, 3]
    assert data.gold == ["card_lost", "card_lost"]
    assert data.gold_parent == ["cards", "cards"]
    assert (data.name, data.split) == ("queries", "test")
    assert all(r.metadata == {} for r in data.records)
    assert "card_lost" not in data.records[0].model_dump_json()


def test_dialogues_skip_null_labels_and_keep_time_and_user(tmp_path, caplog):
    path = write_jsonl(
        tmp_path / "star.jsonl",
        [
            {
                "id": "1",
                "messages": [{"role": "user", "content": "book a flat"}, {"role": "assistant", "content": "ok"}],
                "started_at": 1589375697,
                "user_id": "u-1",
                "label": "apartment_search",
                "labels": ["apartment_search"],
                "parent": "apartment",
            },
            {
                "id": "2",
                "messages": [{"role": "user", "content": "two things"}],
                "started_at": 1589375700,
                "user_id": "u-2",
                "label": None,
                "labels": ["a", "b"],
                "parent": None,
            },
        ],
    )
    with caplog.at_level(logging.INFO, logger="clado.eval.datasets"):
        data = load_labelled(path, labels="label", parent_field="parent", text_field=None, messages_field="messages")
    assert data.skipped_unlabelled == 1
    assert "skipped 1 items" in caplog.text
    (record,) = data.records
    assert record.kind == "conversation"
    assert record.as_text() == "user: book a flat\nassistant: ok"
    assert record.created_at == datetime(2020, 5, 13, 13, 14, 57, tzinfo=UTC)
    assert record.user_id == "u-1"
    assert data.gold == ["apartment_search"]
    assert data.gold_parent == ["apartment"]


def test_a_null_parent_takes_the_label(tmp_path, caplog):
    """STAR's trivia dialogues have no domain: the task is its own top-level group."""
    rows = [
        {"id": "1", "text": "a", "label": "trivia", "parent": None},
        {"id": "2", "text": "b", "label": "bank_fraud", "parent": "bank"},
    ]
    with caplog.at_level(logging.INFO, logger="clado.eval.datasets"):
        data = load_labelled(write_jsonl(tmp_path / "d.jsonl", rows), labels="label", parent_field="parent")
    assert data.gold_parent == ["trivia", "bank"]
    assert "1 items with a null 'parent' take their label" in caplog.text


def test_one_element_list_parent_is_unwrapped(tmp_path):
    path = write_jsonl(
        tmp_path / "reviews.jsonl",
        [{"id": "r1", "text": "great food", "label": "FOOD#QUALITY", "entity": ["FOOD"]}],
    )
    assert load_labelled(path, labels="label", parent_field="entity").gold_parent == ["FOOD"]


def test_sample_is_seeded_and_in_file_order(tmp_path):
    items = [{"id": f"i{n}", "text": f"t{n}", "label": str(n % 3)} for n in range(50)]
    path = write_jsonl(tmp_path / "many.jsonl", items)
    first = load_labelled(path, labels="label", sample=10, seed=1)
    again = load_labelled(path, labels="label", sample=10, seed=1)
    other = load_labelled(path, labels="label", sample=10, seed=2)
    lines = [r.source_line for r in first.records]
    assert len(lines) == 10 and lines == sorted(lines)
    assert lines == [r.source_line for r in again.records]
    assert lines != [r.source_line for r in other.records]
    assert first.gold == [str((line - 1) % 3) for line in lines]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "ok", "label": "x"}\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON"):
        load_labelled(path, labels="label")


def test_missing_label_field_and_text_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "nolabel.jsonl", [{"id": "a", "text": "ok"}])
    with pytest.raises(ValueError, match=r"nolabel\.jsonl:1: missing label field 'intent'"):
        load_labelled(path, labels="intent")
    path = write_jsonl(tmp_path / "notext.jsonl", [{"id": "a", "label": "x"}])
    with pytest.raises(ValueError, match=r"notext\.jsonl:1: no text"):
        load_labelled(path, labels="label")


def test_duplicate_ids_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "text": "x", "label": "l"}] * 2)
    with pytest.raises(ValueError, match=r"dup\.jsonl:2: duplicate id 'a'"):
        load_labelled(path, labels="label")


@pytest.mark.skipif(not (SHARED_DATA / "banking77.jsonl").exists(), reason="shared evaluation data not present")
def test_banking77_test_split_has_documented_size():
    data = load_labelled(SHARED_DATA / "banking77.jsonl", labels="label", split="test")
    assert len(data.records) == len(data.gold) == 3080
    assert len(set(data.gold)) == 77
    assert data.gold_parent is None
