"""Open-set evaluation: the class split, the detection figures, and a small leave-classes-out run on real MiniLM."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clado.eval.open_set import detection_at, evaluate_open_set, expected_calibration_error, split_classes

DATA = Path(os.environ.get("CLADO_EVAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
INTENTS = 15


def test_split_holds_back_a_share_of_known_classes_and_all_of_the_others():
    gold = [f"c{i % 10}" for i in range(200)]
    build, held, known = split_classes(gold, known_share=0.8, holdout_share=0.2, seed=3)
    assert len(known) == 8 and sorted(build + held) == list(range(200)) and not set(build) & set(held)
    assert {gold[i] for i in build} == known, "the build sees known classes only"
    for label in known:
        assert sum(gold[i] == label for i in held) == 4, "20% of each known class is held back"
    assert all(gold[i] in known or i in held for i in range(200))
    assert split_classes(gold, known_share=0.8, holdout_share=0.2, seed=3) == (build, held, known)
    assert split_classes(gold, known_share=0.8, holdout_share=0.2, seed=4)[2] != known


def test_detection_and_calibration_error_on_known_answers():
    novelty = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.95, 0.35])
    unseen = np.array([False, False, False, False, True, True, True])
    assert detection_at(novelty, unseen, false_alarm=0.0) == pytest.approx(2 / 3)
    assert expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0.95, 0.95]), np.array([0, 0])) == pytest.approx(0.95)


@pytest.fixture(scope="module")
def banking_subset(tmp_path_factory):
    """Banking77 test items of its first 15 intents (600 queries), read from the shared data at run time."""
    if not (DATA / "banking77.jsonl").exists():
        pytest.skip("shared evaluation data not present")
    rows = [json.loads(line) for line in (DATA / "banking77.jsonl").read_text(encoding="utf-8").splitlines()]
    intents = sorted({r["label"] for r in rows})[:INTENTS]
    path = tmp_path_factory.mktemp("openset") / "banking15.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "test" and r["label"] in intents))
    return path


def test_leaving_intents_out_real_minilm(banking_subset):
    """A --no-llm build on 12 of 15 Banking77 intents: τ keeps the false alarms near the 5% set, routing tells
    the 3 unseen intents from the known ones far better than chance, and known queries reach their intent's leaf."""
    report = evaluate_open_set(banking_subset, labels="label", split="test", seed=0)
    s = report["unseen_intents"]
    assert report["known_classes"] == 12 and report["build_items"] == 12 * 32 and s["unseen"] == 3 * 40
    assert s["known"] == 12 * 8
    assert report["build_flagged_share"] <= 0.05 and report["new_rate"] == 0.05
    assert s["at_tau"]["false_alarms"] <= 0.15
    assert s["auroc"] >= 0.75 and s["detection_at_5pct_false_alarms"] >= 0.2
    assert s["known_routing_accuracy"] >= 0.8
