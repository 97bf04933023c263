import math

import pytest

from clado.eval.confusion_png import render_confusion_png
from clado.eval.metrics import UNMATCHED, aligned_labels, per_class_scores, score_labels, tree_consistency

GOLD = ["a", "a", "a", "b", "b", "b"]


def test_perfect_clustering_scores_one():
    scores = score_labels(GOLD, GOLD)
    assert scores == {
        "nmi": pytest.approx(1.0),
        "ari": pytest.approx(1.0),
        "acc": 1.0,
        "n_clusters": 2,
        "n_gold": 2,
        "unassigned_share": 0.0,
        "purity": 1.0,
    }


def test_relabelled_permutation_scores_one():
    gold = ["x", "y", "z", "x", "y", "z", "z"]
    pred = [7, 0, 3, 7, 0, 3, 3]
    scores = score_labels(pred, gold)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["ari"] == pytest.approx(1.0)
    assert scores["acc"] == 1.0
    assert scores["purity"] == 1.0
    assert scores["n_clusters"] == 3


def test_known_confusion_matches_hand_computed_scores():
    # Contingency (pred rows, gold columns): c1 = {a: 2}, c2 = {a: 1, b: 3}.
    pred = [1, 1, 2, 2, 2, 2]
    scores = score_labels(pred, GOLD)

    # ARI: sum C(n_ij, 2) = 1 + 0 + 3 = 4; rows C(2,2) + C(4,2) = 7; columns 3 + 3 = 6; C(6, 2) = 15.
    expected_index = 7 * 6 / 15
    ari = (4 - expected_index) / ((7 + 6) / 2 - expected_index)
    assert ari == pytest.approx(12 / 37)
    assert scores["ari"] == pytest.approx(ari)

    # NMI with arithmetic-mean normalisation: MI / ((H(pred) + H(gold)) / 2).
    mi = (
        (2 / 6) * math.log((2 / 6) / ((2 / 6) * (3 / 6)))
        + (1 / 6) * math.log((1 / 6) / ((4 / 6) * (3 / 6)))
        + (3 / 6) * math.log((3 / 6) / ((4 / 6) * (3 / 6)))
    )
    h_pred = -(2 / 6) * math.log(2 / 6) - (4 / 6) * math.log(4 / 6)
    h_gold = math.log(2)
    assert scores["nmi"] == pytest.approx(mi / ((h_pred + h_gold) / 2))

    assert scores["acc"] == pytest.approx(5 / 6)  # c1 -> a (2 right), c2 -> b (3 right)
    assert scores["purity"] == pytest.approx((2 / 2 + 3 / 4) / 2)


def test_unassigned_items_count_as_wrong_in_acc():
    pred = [1, 1, -1, 2, 2, -1]
    scores = score_labels(pred, GOLD)
    assert scores["acc"] == pytest.approx(4 / 6)
    assert scores["unassigned_share"] == pytest.approx(2 / 6)
    assert scores["n_clusters"] == 2
    assert scores["purity"] == 1.0


def test_noise_is_never_matched_to_a_gold_label():
    pred = [-1, -1, -1, 5, 5, 5]
    as_noise = score_labels(pred, GOLD)
    as_cluster = score_labels(pred, GOLD, noise=None)
    assert as_noise["acc"] == 0.5
    assert as_cluster["acc"] == 1.0
    # NMI and ARI count all noise as one cluster, so they do not change.
    assert as_noise["nmi"] == pytest.approx(as_cluster["nmi"])
    assert as_noise["ari"] == pytest.approx(as_cluster["ari"])
    assert (as_noise["n_clusters"], as_cluster["n_clusters"]) == (1, 2)


def test_all_noise_with_string_labels():
    scores = score_labels([None] * 4, ["p", "q", "p", "q"], noise=None)
    assert scores["acc"] == 0.0
    assert scores["n_clusters"] == 0
    assert scores["purity"] == 0.0
    assert scores["unassigned_share"] == 1.0


def test_length_mismatch_and_empty_input_are_errors():
    with pytest.raises(ValueError, match="pred has 2 labels but gold has 3"):
        score_labels([1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        score_labels([], [])


def test_tree_consistency_hand_case():
    gold = ["a", "a", "a", "b", "b"]
    top = ["X", "X", "Y", "Y", -1]
    # Same-gold pairs: C(3,2) + C(2,2) = 4; kept together: the two a's under X.
    assert tree_consistency(top, gold) == pytest.approx(1 / 4)
    assert tree_consistency(["X", "X", "X", "Y", "Y"], gold) == 1.0


def test_tree_consistency_never_counts_unassigned_pairs():
    assert tree_consistency([-1, -1, "X", "X"], ["a", "a", "b", "b"]) == 0.5
    assert tree_consistency([None, None], ["a", "a"], noise=None) == 0.0


def test_tree_consistency_without_same_gold_pairs_is_nan():
    assert math.isnan(tree_consistency(["X", "Y"], ["a", "b"]))


def test_per_class_scores_after_the_hungarian_alignment():
    """Cluster 7 (a, a, c) is matched to "a", 8 (a, b, b) to "b", 9 (b) to what is left, "c"; -1 is unassigned."""
    gold = ["a", "a", "a", "b", "b", "b", "c", "c"]
    pred = [7, 7, 8, 8, 8, 9, -1, 7]
    assert aligned_labels(pred, gold) == ["a", "a", "b", "b", "b", "c", UNMATCHED, "a"]
    scores = per_class_scores(pred, gold)
    a, b, c = (scores["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (pytest.approx(2 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4))
    assert (b["precision"], b["recall"], b["support"]) == (pytest.approx(2 / 3, abs=1e-4),) * 2 + (3,)
    assert c == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    confusion = scores["confusion"]
    assert confusion["rows"] == ["a", "b", "c"] and confusion["columns"] == ["a", "b", "c", UNMATCHED]
    assert confusion["matrix"] == [[2, 1, 0, 0], [0, 2, 1, 0], [1, 0, 0, 1]]


def test_perfect_clustering_has_macro_f1_one_and_a_diagonal_confusion(tmp_path):
    gold = ["x", "y", "z"] * 4
    scores = per_class_scores([{"x": 5, "y": 3, "z": 1}[g] for g in gold], gold)
    assert scores["macro_f1"] == 1.0
    assert scores["confusion"]["matrix"] == [[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0]]
    png = render_confusion_png(scores["confusion"], tmp_path / "c.png", title="perfect")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
